//! The node lock: one importer at a time per runtime socket, whatever path reaches the socket,
//! and a wait with an upper bound (issue 31: a symlinked socket path bypassed the lock, and
//! waiting for it had no bound).

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::harness::*;

/// Whether process `pid` holds a `flock` on the file of inode `ino` (from /proc/locks).
fn holds_flock(pid: u32, ino: u64) -> bool {
    let locks = std::fs::read_to_string("/proc/locks").unwrap();
    locks.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() > 5
            && f[1] == "FLOCK"
            && f[4] == pid.to_string()
            && f[5].rsplit(':').next() == Some(ino.to_string().as_str())
    })
}

/// A directory whose `containerd.sock` is a symlink to the test containerd's socket.
fn socket_through_a_symlink() -> std::path::PathBuf {
    let dir = temp_dir("lock-link");
    let link = dir.join("containerd.sock");
    std::os::unix::fs::symlink(&daemons().containerd_sock, &link).unwrap();
    link
}

/// `import` of `dir` into `ns` through the socket at `socket`, with the suite's settings.
fn import_via(socket: &Path, dir: &Path, ns: &str) -> std::process::Command {
    let suite = against_containerd("import", dir, ns);
    let mut cmd = std::process::Command::new(suite.get_program());
    let args: Vec<&std::ffi::OsStr> = suite.get_args().collect();
    for (i, a) in args.iter().enumerate() {
        if i > 0 && args[i - 1] == "--containerd-address" {
            cmd.arg(socket);
        } else {
            cmd.arg(a);
        }
    }
    for (k, v) in suite.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    cmd
}

#[test]
fn a_socket_reached_through_a_symlink_takes_the_same_node_lock_and_the_wait_has_a_bound() {
    let f = fixtures();
    let real_dir = std::fs::canonicalize(daemons().containerd_sock.parent().unwrap()).unwrap();
    let ino = std::fs::metadata(&real_dir).unwrap().ino();
    let link = socket_through_a_symlink();

    // The first importer reaches the socket by its own path and is frozen once it holds the
    // lock (another test's importer may hold it first).
    let first_dir = temp_dir("lock-first");
    big_docker_archive(&first_dir.join("big.tar"), "oi-test/lock-big:1", 32);
    let first = Running::spawn(&mut against_containerd(
        "import",
        &first_dir,
        &unique_namespace("lock-first"),
    ));
    let waiting = Instant::now();
    while !holds_flock(first.pid(), ino) {
        assert!(
            waiting.elapsed() < Duration::from_secs(120),
            "the first importer never took the lock on {}:\n{}",
            real_dir.display(),
            first.text()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let pid = Pid::from_raw(first.pid() as i32);
    kill(pid, Signal::SIGSTOP).unwrap();

    // Through the symlink, with a small timeout: it waits, then gives up naming the lock and
    // the timeout, as an environment error, having imported nothing.
    let dir = temp_dir("lock-second");
    std::fs::copy(f.dir.join("docker.tar.gz"), dir.join("alpha.tar.gz")).unwrap();
    let ns = unique_namespace("lock-second");
    let out = run_bounded(
        import_via(&link, &dir, &ns).args(["--lock-timeout", "2"]),
        60,
    );
    let real = real_dir.display();
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!(
            "waiting for another importer on this node to finish (it holds the lock on {real}); \
             giving up after 2 s (--lock-timeout)"
        )),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .lines()
            .last()
            .unwrap_or_default()
            .contains(&format!(
                "gave up waiting for the node lock on {real} after 2 s (--lock-timeout 2)"
            )),
        "{}",
        out.stderr
    );
    assert!(out.elapsed >= Duration::from_secs(2), "{:?}", out.elapsed);
    assert!(ctr_images(&ns).is_empty(), "{:?}", ctr_images(&ns));

    // Through the symlink, with the default timeout: it waits for the first, then imports.
    let ns = unique_namespace("lock-third");
    let mut third = Running::spawn(&mut import_via(&link, &dir, &ns));
    third.wait_for_text("waiting for another importer on this node", 60);
    kill(pid, Signal::SIGCONT).unwrap();
    let (code, log) = first.finish(300);
    assert_eq!(code, 0, "{log}");
    let (code, log) = third.finish(300);
    assert_eq!(code, 0, "{log}");
    assert!(
        log.contains(&format!("lock on {real} taken after")),
        "{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.starts_with("imported") && l.contains("alpha.tar.gz")),
        "{log}"
    );
}
