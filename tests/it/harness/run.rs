//! Running commands: the binary under test, the daemons' CLIs, bounded and background runs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use super::daemons::{daemons, missing_precondition};

/// A fresh directory under the test temp dir.
pub fn temp_dir(label: &str) -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = daemons().tmp.join(format!(
        "{label}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A [`temp_dir`] removed when it goes out of scope, for a test that writes hundreds of MB:
/// a whole run's test files otherwise outgrow a CI machine's disk. A test that fails (its
/// thread panicking) keeps it for the post-mortem.
pub struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = PathBuf;
    fn deref(&self) -> &PathBuf {
        &self.0
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<std::ffi::OsStr> for Scratch {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.0.as_os_str()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        remove_unless_panicking(&self.0);
    }
}

/// A fresh directory under the test temp dir, removed with what it holds when dropped.
pub fn scratch_dir(label: &str) -> Scratch {
    Scratch(temp_dir(label))
}

/// Lazily unmount whatever is still mounted under `dir` (a daemon killed with SIGKILL leaves
/// its mounts), deepest first.
pub fn unmount_under(dir: &Path) {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let under = format!("{}/", dir.display());
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(1))
        .filter(|p| p.starts_with(&under))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = Command::new("umount").arg("-l").arg(p).status();
    }
}

/// Remove `dir` and what it holds, unless the thread is panicking (a failed test keeps its
/// files) or something is still mounted under it (a daemon's leftover mount: removing
/// around it would fail half-way).
pub fn remove_unless_panicking(dir: &Path) {
    if std::thread::panicking() {
        return;
    }
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let prefix = format!("{} ", dir.display());
    let under = format!("{}/", dir.display());
    if mounts.lines().any(|l| {
        let point = l.split(' ').nth(1).unwrap_or("");
        format!("{point} ").starts_with(&prefix) || point.starts_with(&under)
    }) {
        return;
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// The binary under test.
pub fn offline_images() -> Command {
    with_suite_lock_timeout(Command::new(env!("CARGO_BIN_EXE_offline-images")))
}

/// The release build of the binary under test (scripts/test.sh builds it as OI_STATIC_BIN),
/// for tests that stream gigabytes, where a debug build's decompression would be the
/// bottleneck; the debug build when it is not set.
pub fn offline_images_release() -> Command {
    match std::env::var_os("OI_STATIC_BIN") {
        Some(p) => with_suite_lock_timeout(Command::new(p)),
        None => offline_images(),
    }
}

/// Every test's importer takes the node lock of the one shared containerd or dockerd: on a
/// busy machine one may wait for many others longer than an operator's default. The tests of
/// the timeout give `--lock-timeout`, which wins over the environment.
fn with_suite_lock_timeout(mut c: Command) -> Command {
    c.env("LOCK_TIMEOUT", "3600");
    c
}

/// `cmd` (a command of the binary under test) run by the release build instead.
pub fn in_release(cmd: &Command) -> Command {
    let mut c = offline_images_release();
    c.args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    c
}

/// Run a command; panic with its output when it fails.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{cmd:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

pub fn stdout_of(cmd: &mut Command) -> String {
    String::from_utf8(run(cmd).stdout).unwrap()
}

/// The docker CLI, pointed at the test dockerd.
pub fn docker() -> Command {
    let d = daemons();
    let mut c = Command::new(&d.docker_cli);
    c.env("DOCKER_HOST", &d.docker_host)
        .env("DOCKER_BUILDKIT", "0");
    c
}

/// ctr, pointed at the test containerd, in namespace `ns`.
pub fn ctr(ns: &str) -> Command {
    let mut c = Command::new("ctr");
    c.arg("-a")
        .arg(&daemons().containerd_sock)
        .arg("-n")
        .arg(ns);
    c
}

pub fn skopeo() -> Command {
    Command::new("skopeo")
}

/// crane 0.20 (Debian forky's, `OI_CRANE`: scripts/test.sh fetches it), or None once a
/// [`missing_precondition`] said so (in CI that fails the test).
pub fn crane() -> Option<Command> {
    let Some(bin) = std::env::var_os("OI_CRANE") else {
        missing_precondition("no crane 0.20 in this run (OI_CRANE): scripts/test.sh fetches it");
        return None;
    };
    Some(Command::new(bin))
}

/// The test dockerd's socket path (OI_DOCKER_HOST without `unix://`).
pub fn docker_socket() -> PathBuf {
    let host = &daemons().docker_host;
    PathBuf::from(host.strip_prefix("unix://").unwrap_or(host))
}

/// A 127.0.0.1 port nothing listens on (bound, then released).
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// `offline-images export` with the test dockerd as the engine's daemon, and the same docker
/// CLI as the harness first on PATH.
pub fn export_cmd(output: &Path) -> Command {
    let d = daemons();
    let cli_dir = Path::new(&d.docker_cli)
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let mut c = offline_images();
    c.env("DOCKER_HOST", &d.docker_host)
        .env("XDG_CACHE_HOME", d.tmp.join("export-cache"))
        .env(
            "PATH",
            format!("{cli_dir}:{}", std::env::var("PATH").unwrap_or_default()),
        )
        .args(["export", "--format", "archives", "--output"])
        .arg(output);
    c
}

/// Run a command with `input` on its stdin; its output, whatever its exit status.
pub fn run_with_stdin(cmd: &mut Command, input: &[u8]) -> Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// Run a command that may fail; returns (exit code, stdout, stderr).
pub fn outcome(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Wait until `file` contains `text`; panic with its content after `secs` seconds.
pub fn wait_for_text(file: &Path, text: &str, secs: u64) -> String {
    for _ in 0..secs * 20 {
        let got = std::fs::read_to_string(file).unwrap_or_default();
        if got.contains(text) {
            return got;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!(
        "{text:?} did not appear in {} within {secs} s:\n{}",
        file.display(),
        std::fs::read_to_string(file).unwrap_or_default()
    );
}

/// How a bounded run of a command ended.
pub struct Bounded {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    /// Peak resident memory of the command, in KiB (from `/usr/bin/time -f %M`).
    pub peak_rss_kib: u64,
    pub elapsed: std::time::Duration,
}

/// Run `cmd` under `/usr/bin/time` in a process group of its own; kill the group and panic if
/// it runs longer than `secs`. Output goes to files, so a chatty child never blocks on a pipe.
pub fn run_bounded(cmd: &Command, secs: u64) -> Bounded {
    use std::os::unix::process::CommandExt;
    let dir = temp_dir("bounded");
    let (out, err, rss) = (dir.join("stdout"), dir.join("stderr"), dir.join("peak-rss"));
    let mut timed = Command::new("/usr/bin/time");
    timed
        .arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(&rss)
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => timed.env(k, v),
            None => timed.env_remove(k),
        };
    }
    let started = std::time::Instant::now();
    let mut child = timed
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > std::time::Duration::from_secs(secs) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = child.wait();
            panic!(
                "{cmd:?} still ran after {secs} s and was killed; its stderr:\n{}",
                std::fs::read_to_string(&err).unwrap_or_default()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let elapsed = started.elapsed();
    let text =
        |p: &Path| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned();
    // time writes "Command exited with non-zero status N" before the number when it fails.
    let peak_rss_kib = text(&rss)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .next_back()
        .unwrap_or_else(|| panic!("no peak RSS from /usr/bin/time: {:?}", text(&rss)));
    Bounded {
        code: status.code().unwrap_or(-1),
        stdout: text(&out),
        stderr: text(&err),
        peak_rss_kib,
        elapsed,
    }
}

/// A command running in the background with its stderr in a file, for tests that act on a
/// daemon while it runs. Killed (with its process group) if dropped while still running.
pub struct Running {
    child: std::process::Child,
    pub log: PathBuf,
    started: std::time::Instant,
}

impl Running {
    pub fn spawn(cmd: &mut Command) -> Running {
        use std::os::unix::process::CommandExt;
        let log = temp_dir("running").join("stderr");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
        Running {
            child,
            log,
            started: std::time::Instant::now(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    /// Wait for `text` in its stderr; panic after `secs` or if it exits first.
    pub fn wait_for_text(&mut self, text: &str, secs: u64) -> String {
        let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            let got = self.text();
            if got.contains(text) {
                return got;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("exited ({status}) before printing {text:?}:\n{got}");
            }
            assert!(
                std::time::Instant::now() < end,
                "{text:?} not printed within {secs} s:\n{got}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Wait for the exit (at most `secs` seconds from the start, else kill and panic); the
    /// exit code and stderr.
    pub fn finish(mut self, secs: u64) -> (i32, String) {
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status.code().unwrap_or(-1), self.text());
            }
            if self.started.elapsed() > std::time::Duration::from_secs(secs) {
                panic!(
                    "still running after {secs} s (killed); stderr so far:\n{}",
                    self.text()
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(self.child.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = self.child.wait();
        }
    }
}
