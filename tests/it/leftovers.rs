//! Nothing left after any kill (issue 31, finding 4: "SIGKILL leaves data that a successful
//! re-run never reclaims"). An importer killed at any point (an OOM kill, an evicted pod)
//! leaves its leases, which hold for 24 hours whatever it had stored, its partial uploads
//! (containerd ingests, kept on disk whatever happens to their lease) and the snapshot of the
//! layer it was unpacking. The next import removes them, naming each, and never what a live
//! importer or another tool holds. Each test has a containerd of its own.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::harness::*;

/// Any run here that takes longer than this is a hang.
const BOUND: u64 = 300;

/// Kills per containerd version.
const KILLS: u32 = 20;

/// The 400 MB import: two docker-archives, three layers of 128 MiB of random bytes (so that
/// nothing is smaller on disk than it is sent), made once.
struct BigBundle {
    dir: PathBuf,
    /// The image names it holds, as containerd names them.
    names: BTreeSet<String>,
}

fn big_bundle() -> &'static BigBundle {
    static B: OnceLock<BigBundle> = OnceLock::new();
    B.get_or_init(|| {
        let dir = temp_dir("kill-bundle");
        random_docker_archive(&dir.join("a-two-layers.tar"), "oi-test/kill-a:1", 2);
        random_docker_archive(&dir.join("b-one-layer.tar"), "oi-test/kill-b:1", 1);
        let names = ["oi-test/kill-a:1", "oi-test/kill-b:1"]
            .iter()
            .map(|n| format!("docker.io/{n}"))
            .collect();
        BigBundle { dir, names }
    })
}

/// A docker-archive of one image named `name` with `layers` layers of 128 MiB of random bytes.
fn random_docker_archive(dst: &Path, name: &str, layers: usize) {
    let work = temp_dir("kill-layers");
    let mut entries = Vec::new();
    for i in 0..layers {
        let layer = work.join(format!("layer-{i}.tar"));
        let mut b = tar::Builder::new(std::fs::File::create(&layer).unwrap());
        let mut h = tar::Header::new_ustar();
        h.set_size(128 << 20);
        h.set_mode(0o644);
        h.set_cksum();
        let random = std::fs::File::open("/dev/urandom").unwrap();
        let data = std::io::Read::take(random, 128 << 20);
        b.append_data(&mut h, format!("data-{i}"), data).unwrap();
        b.finish().unwrap();
        let sum = stdout_of(Command::new("sha256sum").arg(&layer));
        let hex = sum.split_whitespace().next().unwrap().to_string();
        entries.push((layer, hex));
    }
    let diff_ids: Vec<String> = entries
        .iter()
        .map(|(_, h)| format!("\"sha256:{h}\""))
        .collect();
    let paths: Vec<String> = entries
        .iter()
        .map(|(_, h)| format!("\"{h}/layer.tar\""))
        .collect();
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{}},"rootfs":{{"type":"layers","diff_ids":[{}]}}}}"#,
        diff_ids.join(",")
    );
    let manifest = format!(
        r#"[{{"Config":"config.json","RepoTags":["{name}"],"Layers":[{}]}}]"#,
        paths.join(",")
    );
    let mut b = tar::Builder::new(std::fs::File::create(dst).unwrap());
    for (layer, hex) in &entries {
        b.append_path_with_name(layer, format!("{hex}/layer.tar"))
            .unwrap();
        std::fs::remove_file(layer).unwrap();
    }
    for (n, data) in [("config.json", config), ("manifest.json", manifest)] {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, n, data.as_bytes()).unwrap();
    }
    b.finish().unwrap();
}

/// `import` of `dir` into `ns` of `cd` by the native client, with the release build.
fn import_cmd(cd: &PrivateContainerd, dir: &Path, ns: &str) -> Command {
    let mut c = in_release(&cd.import(dir, ns));
    c.env("CONTAINERD_CLIENT", "native")
        .env("PATH", empty_path());
    c
}

/// What is ours in `ns`: leases, uploads in progress, snapshots of an unpack, and the disk
/// the content store's ingest directory takes.
#[derive(Debug, Default)]
struct Ours {
    leases: Vec<String>,
    uploads: Vec<String>,
    extracts: Vec<String>,
    ingest_bytes: u64,
}

impl Ours {
    fn of(cd: &PrivateContainerd, ns: &str) -> Ours {
        let leases = stdout_of(cd.ctr(ns).args(["leases", "ls", "-q"]));
        Ours {
            leases: leases
                .lines()
                .filter(|l| l.starts_with("offline-images-"))
                .map(str::to_string)
                .collect(),
            uploads: our_uploads(cd, ns),
            extracts: our_extracts(cd, ns),
            ingest_bytes: disk_usage(&cd.root.join("io.containerd.content.v1.content/ingest")),
        }
    }

    fn is_empty(&self) -> bool {
        self.leases.is_empty() && self.uploads.is_empty() && self.extracts.is_empty()
    }
}

/// Refs of the uploads of ours in progress in `ns`.
fn our_uploads(cd: &PrivateContainerd, ns: &str) -> Vec<String> {
    stdout_of(cd.ctr(ns).args(["content", "active"]))
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .filter(|r| r.starts_with("offline-images-"))
        .map(str::to_string)
        .collect()
}

/// Keys of the snapshots of unpacks of ours in `ns`: `offline-images-extract-LEASE
/// sha256:CHAIN` (a key with a space).
fn our_extracts(cd: &PrivateContainerd, ns: &str) -> Vec<String> {
    stdout_of(cd.ctr(ns).args(["snapshots", "ls"]))
        .lines()
        .filter(|l| l.starts_with("offline-images-extract-"))
        .map(|l| l.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
        .collect()
}

/// Bytes of disk the files under `dir` take.
fn disk_usage(dir: &Path) -> u64 {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.blocks() * 512)
        .sum()
}

/// Everything in `ns`: image names, blobs, snapshots.
#[derive(Debug, PartialEq, Eq)]
struct Store {
    images: BTreeSet<String>,
    content: BTreeSet<String>,
    snapshots: BTreeSet<String>,
}

impl Store {
    fn of(cd: &PrivateContainerd, ns: &str) -> Store {
        let lines = |args: &[&str]| -> BTreeSet<String> {
            stdout_of(cd.ctr(ns).args(args))
                .lines()
                .map(|l| l.trim().to_string())
                .filter(|l| !l.is_empty())
                .collect()
        };
        Store {
            images: lines(&["images", "ls", "-q"]),
            content: lines(&["content", "ls", "-q"]),
            snapshots: stdout_of(cd.ctr(ns).args(["snapshots", "ls"]))
                .lines()
                .skip(1)
                .map(|l| l.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
                .collect(),
        }
    }
}

/// Every image of `ns` complete (every blob there) and unpacked, as `ctr images check` says.
fn assert_complete(cd: &PrivateContainerd, ns: &str, names: &BTreeSet<String>, why: &str) {
    let check = stdout_of(cd.ctr(ns).args(["images", "check"]));
    for name in names {
        let line = check
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name.as_str()))
            .unwrap_or_else(|| panic!("{why}: {name} is not there:\n{check}"));
        assert!(
            line.contains("complete (") && line.trim_end().ends_with("true"),
            "{why}: {name} is not complete and unpacked:\n{check}"
        );
    }
}

/// A small xorshift generator: kill points differ from run to run, and the seed is printed.
struct Random(u64);

impl Random {
    fn seeded() -> Random {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        Random(u64::from(nanos) | 1)
    }

    /// In [0, 1).
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// SIGKILL a running command's process group, as an OOM kill would, and reap it.
fn sigkill(importer: Running) {
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(importer.pid() as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    let _ = importer.finish(30);
}

/// How the kills of one version landed.
#[derive(Debug, Default)]
struct Tally {
    in_upload: u32,
    in_unpack: u32,
    after_the_end: u32,
    max_ingest_bytes: u64,
}

/// Where a kill lands.
#[derive(Debug, Clone, Copy)]
enum KillAt {
    /// This long after the start.
    Time(Duration),
    /// This long after the `n`-th upload of ours (from 1) shows.
    Upload(usize, Duration),
    /// This long after the `n`-th unpack of ours (from 1) shows.
    Unpack(usize, Duration),
}

/// Wait for the point `at` of `importer`'s run, or for its end.
fn wait_for(cd: &PrivateContainerd, ns: &str, importer: &Running, at: KillAt) {
    let started = Instant::now();
    let mut seen = BTreeSet::new();
    while !importer.text().contains("summary:") {
        let (n, delay, now) = match at {
            KillAt::Time(d) if started.elapsed() >= d => return,
            KillAt::Time(_) => {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            KillAt::Upload(n, delay) => (n, delay, our_uploads(cd, ns)),
            KillAt::Unpack(n, delay) => (n, delay, our_extracts(cd, ns)),
        };
        seen.extend(now);
        if seen.len() >= n {
            return std::thread::sleep(delay);
        }
    }
}

/// One kill and the next run on `cd`: the killed run starts from an empty namespace, is
/// killed `at`, and the next run must leave exactly what a run never killed leaves (`clean`),
/// with every image complete and every leftover named in its log. How long the next run took,
/// when it imported every archive.
fn kill_then_rerun(
    cd: &PrivateContainerd,
    ns: &str,
    at: KillAt,
    clean: &Store,
    t: &mut Tally,
) -> Option<Duration> {
    let bundle = big_bundle();
    remove_images(cd, ns);
    let empty = Store::of(cd, ns);
    assert!(
        empty.content.is_empty() && empty.snapshots.is_empty(),
        "{empty:?}"
    );
    let importer = Running::spawn(&mut import_cmd(cd, &bundle.dir, ns));
    wait_for(cd, ns, &importer, at);
    sigkill(importer);
    let left = Ours::of(cd, ns);
    t.in_upload += u32::from(!left.uploads.is_empty());
    t.in_unpack += u32::from(!left.extracts.is_empty());
    t.after_the_end += u32::from(left.is_empty());
    t.max_ingest_bytes = t.max_ingest_bytes.max(left.ingest_bytes);

    let out = run_bounded(&import_cmd(cd, &bundle.dir, ns), BOUND);
    let why = format!("killed at {at:?}, then the next run:\n{}", out.stderr);
    assert_eq!(out.code, 0, "{why}");
    let after = Ours::of(cd, ns);
    assert!(after.is_empty(), "left behind: {after:?}\n{why}");
    assert_eq!(
        after.ingest_bytes, 0,
        "the ingest directory is not empty\n{why}"
    );
    assert_eq!(&Store::of(cd, ns), clean, "{why}");
    assert_complete(cd, ns, &bundle.names, &why);
    for lease in &left.leases {
        let said = format!("removed lease {lease}");
        assert!(out.stderr.contains(&said), "{lease} is not named\n{why}");
    }
    for upload in &left.uploads {
        let said = format!("removed partial upload {upload} ");
        assert!(out.stderr.contains(&said), "{upload} is not named\n{why}");
    }
    for key in &left.extracts {
        let said = format!("removed snapshot \"{key}\"");
        assert!(out.stderr.contains(&said), "{key} is not named\n{why}");
    }
    let imported = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("imported"))
        .count();
    (imported == 2).then_some(out.elapsed)
}

/// The `k`-th of [`KILLS`] kill points: a third at a time spread over the whole import
/// (stratified: each in its own slice of a run's length `estimate`, at random within it), a
/// third during an upload, a third during an unpack (a random one of the three layers, a
/// random time after it shows).
fn kill_point(k: u32, estimate: Duration, random: &mut Random) -> KillAt {
    let (slot, slots) = (k / 3, KILLS.div_ceil(3));
    let layer = (slot % 3) as usize + 1;
    let delay = Duration::from_millis((random.next() * 500.0) as u64);
    match k % 3 {
        0 => KillAt::Time(estimate.mul_f64((f64::from(slot) + random.next()) / f64::from(slots))),
        1 => KillAt::Upload(layer, delay),
        _ => KillAt::Unpack(layer, delay),
    }
}

/// [`KILLS`] kills of a 400 MB import on containerd `d`, each followed by a run that must
/// leave nothing of the killed one.
fn kills_on(d: &Daemons) {
    let bundle = big_bundle();
    let cd = PrivateContainerd::start_version(&format!("kills-{}", d.label), d);
    let ns = "kills";
    let out = run_bounded(&import_cmd(&cd, &bundle.dir, ns), BOUND);
    assert_eq!(out.code, 0, "{}: {}", d.label, out.stderr);
    let mut estimate = out.elapsed;
    let clean = Store::of(&cd, ns);
    assert_eq!(clean.images, bundle.names, "{}", d.label);
    assert!(Ours::of(&cd, ns).is_empty(), "{}", d.label);
    let mut random = Random::seeded();
    let seed = random.0;
    let mut tally = Tally::default();
    let started = Instant::now();
    for k in 0..KILLS {
        let at = kill_point(k, estimate, &mut random);
        if let Some(took) = kill_then_rerun(&cd, ns, at, &clean, &mut tally) {
            // The machine's load changes: the latest whole run says how long one takes now.
            estimate = took;
        }
    }
    let summary = format!(
        "containerd {}: {KILLS} kills (seed {seed}) in {:.0} s, a whole run taking {:.1} s at \
         the end: {} during an upload, {} during an unpack, {} after the run had ended; the \
         largest partial upload left {:.1} MiB in the ingest directory, and every next run \
         left it empty",
        d.containerd_version,
        started.elapsed().as_secs_f64(),
        estimate.as_secs_f64(),
        tally.in_upload,
        tally.in_unpack,
        tally.after_the_end,
        tally.max_ingest_bytes as f64 / f64::from(1 << 20)
    );
    eprintln!("{summary}");
    // The kill points must have met both halves of an import, or the test proved little.
    assert!(tally.in_upload >= 3 && tally.in_unpack >= 3, "{summary}");
}

#[test]
fn sigkill_leaves_data_that_a_successful_rerun_never_reclaims() {
    let _ = big_bundle();
    // One private containerd per version of the matrix (a version twice is run once).
    let mut versions: Vec<&Daemons> = Vec::new();
    for d in matrix() {
        if !versions
            .iter()
            .any(|v| v.containerd_version == d.containerd_version)
        {
            versions.push(d);
        }
    }
    let minors: Vec<String> = versions
        .iter()
        .map(|d| {
            d.containerd_version
                .split('.')
                .take(2)
                .collect::<Vec<_>>()
                .join(".")
        })
        .collect();
    if std::env::var("CI").as_deref() == Ok("true") {
        for want in ["1.6", "1.7", "2.1"] {
            assert!(
                minors.iter().any(|m| m == want),
                "containerd {want} is not among {minors:?}: run with OI_VERSIONS=containerd-1.7,containerd-2.1"
            );
        }
    }
    std::thread::scope(|s| {
        let handles: Vec<_> = versions
            .iter()
            .map(|d| s.spawn(move || kills_on(d)))
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    });
}

/// Wait until `importer` has an upload of ours in flight in `ns` (looked at as often as one
/// `ctr` allows, so that the first upload is caught while nothing is committed yet).
fn wait_for_upload(cd: &PrivateContainerd, ns: &str, importer: &Running) {
    wait_for_upload_but(cd, ns, importer, &[]);
}

/// [`wait_for_upload`], not counting the uploads `but` names (another tool's, named like ours).
fn wait_for_upload_but(cd: &PrivateContainerd, ns: &str, importer: &Running, but: &[String]) {
    let started = Instant::now();
    while our_uploads(cd, ns).iter().all(|u| but.contains(u)) {
        assert!(
            !importer.text().contains("summary:") && started.elapsed().as_secs() < 120,
            "no upload in flight:\n{}",
            importer.text()
        );
    }
}

/// `cmd` as the chart runs it, in a pod of its own: a mount namespace where the containerd
/// socket alone is bind-mounted into a directory of the pod's own (so each pod's node lock,
/// taken on that directory, is its own), and with `pid_ns` a pid namespace of its own too,
/// with its own `/proc` (the importer is its pid 1).
fn in_pod(cmd: &Command, socket: &Path, pid_ns: bool) -> Command {
    let dir = temp_dir("pod");
    let mut c = Command::new("unshare");
    c.args(["--mount", "--propagation", "private"]);
    if pid_ns {
        c.args(["--pid", "--fork", "--mount-proc", "--kill-child"]);
    }
    c.args([
        "sh",
        "-c",
        r#"d=$0; s=$1; p=$OI_POD_PATH; shift; mount -t tmpfs pod "$d" &&
           touch "$d/containerd.sock" && mount --bind "$s" "$d/containerd.sock" &&
           exec env -u OI_POD_PATH PATH="$p" "$@""#,
    ]);
    c.arg(&dir).arg(socket).arg(cmd.get_program());
    let args: Vec<&std::ffi::OsStr> = cmd.get_args().collect();
    for (i, a) in args.iter().enumerate() {
        if i > 0 && args[i - 1] == "--containerd-address" {
            c.arg(dir.join("containerd.sock"));
        } else {
            c.arg(a);
        }
    }
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    // The importer's PATH (which may hold nothing) once in the pod; the system's until then.
    let path = cmd
        .get_envs()
        .find(|(k, _)| *k == "PATH")
        .and_then(|(_, v)| v.map(ToOwned::to_owned))
        .or_else(|| std::env::var_os("PATH"))
        .unwrap_or_default();
    c.env("OI_POD_PATH", path)
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    c
}

/// The pid, seen from here, of the importer a pod with a pid namespace of its own runs: the
/// child `unshare` forked.
fn pod_pid(pod: &Running) -> u32 {
    let children = format!("/proc/{0}/task/{0}/children", pod.pid());
    for _ in 0..500 {
        let text = std::fs::read_to_string(&children).unwrap_or_default();
        if let Some(pid) = text.split_whitespace().next() {
            return pid.parse().unwrap();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("unshare forked nothing:\n{}", pod.text());
}

fn signal(pid: u32, signal: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal).unwrap();
}

/// Every image of `ns` removed, and with them everything they held.
fn remove_images(cd: &PrivateContainerd, ns: &str) {
    for name in &Store::of(cd, ns).images {
        run(cd.ctr(ns).args(["images", "rm", "--sync", name]));
    }
}

#[test]
fn a_live_importers_lease_is_kept_and_a_killed_pods_is_removed_by_the_next_pod() {
    let bundle = big_bundle();
    let cd = PrivateContainerd::start("pods", None);
    let ns = "pods";
    let cmd = import_cmd(&cd, &bundle.dir, ns);
    // A: a pod in this pid namespace, stopped in the middle of an upload: alive.
    let a = Running::spawn(&mut in_pod(&cmd, &cd.socket, false));
    wait_for_upload(&cd, ns, &a);
    signal(a.pid(), nix::sys::signal::Signal::SIGSTOP);
    let alive = Ours::of(&cd, ns);
    assert!(
        !alive.leases.is_empty() && !alive.uploads.is_empty(),
        "{alive:?}"
    );
    // B: a pod with a pid namespace of its own cannot see A's process, but A holds the
    // presence lock; C, in A's pid namespace, sees A's process.
    for (pod, own_pid_ns) in [("B", true), ("C", false)] {
        let out = run_bounded(&in_pod(&cmd, &cd.socket, own_pid_ns), BOUND);
        assert_eq!(out.code, 0, "{pod}: {}", out.stderr);
        assert_complete(&cd, ns, &bundle.names, &out.stderr);
        for lease in &alive.leases {
            let kept = format!("kept lease {lease} ");
            assert_eq!(
                out.stderr.contains(&kept),
                own_pid_ns,
                "{pod}: {}",
                out.stderr
            );
            assert!(!out.stderr.contains(&format!("removed lease {lease}")));
        }
        let now = Ours::of(&cd, ns);
        assert!(
            alive.leases.iter().all(|l| now.leases.contains(l))
                && alive.uploads.iter().all(|u| now.uploads.contains(u)),
            "{pod} took A's lease or upload: {now:?}\n{}",
            out.stderr
        );
    }
    // A goes on, and finishes its import.
    signal(a.pid(), nix::sys::signal::Signal::SIGCONT);
    let (code, log) = a.finish(BOUND);
    assert_eq!(code, 0, "A: {log}");
    assert!(Ours::of(&cd, ns).is_empty(), "{:?}", Ours::of(&cd, ns));

    // D: a pod killed in the middle of its first upload, as an OOM kill does, with nothing
    // stored yet; E, the Job's next pod, has another pid namespace and removes what D left.
    // E's archives are all present, so it removes no content: containerd's garbage collector
    // never sweeps the ingest directory, and only an upload abandoned frees that disk.
    let small = scratch_dir("kill-small");
    random_docker_archive(&small.join("d-one-layer.tar"), "oi-test/kill-d:1", 1);
    let d = Running::spawn(&mut in_pod(&import_cmd(&cd, &small, ns), &cd.socket, true));
    let _ = pod_pid(&d);
    wait_for_upload(&cd, ns, &d);
    sigkill(d);
    let left = Ours::of(&cd, ns);
    assert!(
        !left.leases.is_empty() && !left.uploads.is_empty(),
        "{left:?}"
    );
    let e = run_bounded(&in_pod(&cmd, &cd.socket, true), BOUND);
    assert_eq!(e.code, 0, "E: {}", e.stderr);
    assert_eq!(
        e.stderr
            .lines()
            .filter(|l| l.starts_with("skipped"))
            .count(),
        2,
        "{}",
        e.stderr
    );
    for lease in &left.leases {
        assert!(
            e.stderr.contains(&format!("removed lease {lease} ")),
            "{}",
            e.stderr
        );
    }
    for upload in &left.uploads {
        let said = format!("removed partial upload {upload} ");
        assert!(e.stderr.contains(&said), "{}", e.stderr);
    }
    let after = Ours::of(&cd, ns);
    assert!(
        after.is_empty() && after.ingest_bytes == 0,
        "{after:?}\n{}",
        e.stderr
    );
    assert_complete(&cd, ns, &bundle.names, &e.stderr);
}

/// An upload of `reference` that `ctr content ingest` was killed in the middle of.
fn interrupted_ingest(cd: &PrivateContainerd, ns: &str, reference: &str) {
    use std::io::Write;
    let mut ctr = cd
        .ctr(ns)
        .args(["content", "ingest", reference])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = ctr.stdin.take().unwrap();
    stdin.write_all(&vec![7u8; 4 << 20]).unwrap();
    stdin.flush().unwrap();
    let showed = (0..500).any(|_| {
        let active = stdout_of(cd.ctr(ns).args(["content", "active"]));
        std::thread::sleep(Duration::from_millis(10));
        active
            .lines()
            .any(|l| l.starts_with(&format!("{reference}\t")))
    });
    let _ = ctr.kill();
    let _ = ctr.wait();
    assert!(showed, "ctr content ingest {reference} never showed");
}

/// Lease IDs and upload refs in `ns`, whoever made them, sorted.
fn all_leases_and_uploads(cd: &PrivateContainerd, ns: &str) -> (Vec<String>, Vec<String>) {
    let leases = stdout_of(cd.ctr(ns).args(["leases", "ls", "-q"]));
    let active = stdout_of(cd.ctr(ns).args(["content", "active"]));
    let mut leases: Vec<String> = leases.lines().map(str::to_string).collect();
    let mut uploads: Vec<String> = active
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect();
    leases.sort();
    uploads.sort();
    (leases, uploads)
}

#[test]
fn only_an_import_removes_a_killed_runs_leftovers_and_never_another_tools() {
    let bundle = big_bundle();
    let cd = PrivateContainerd::start("foreign", None);
    let ns = "foreign";
    // Another tool's: a lease, one named as ours but unlabelled (as importers before this
    // change named theirs), and uploads it was killed in the middle of, one named as ours
    // under that lease.
    run(cd.ctr(ns).args(["leases", "create", "--id", "other-tool"]));
    run(cd
        .ctr(ns)
        .args(["leases", "create", "--id", "offline-images-999-1"]));
    interrupted_ingest(&cd, ns, "other-tool-upload");
    interrupted_ingest(&cd, ns, "offline-images-999-1-1");
    let foreign = all_leases_and_uploads(&cd, ns);
    // Ours: an import killed in the middle of an upload.
    let importer = Running::spawn(&mut import_cmd(&cd, &bundle.dir, ns));
    // The foreign upload named like ours is there already: wait for the importer's own.
    wait_for_upload_but(&cd, ns, &importer, &foreign.1);
    sigkill(importer);
    let mut ours = Ours::of(&cd, ns);
    ours.leases.retain(|l| !foreign.0.contains(l));
    ours.uploads.retain(|u| !foreign.1.contains(u));
    assert!(!ours.leases.is_empty(), "{ours:?}");
    let before = all_leases_and_uploads(&cd, ns);
    // Neither verify nor a dry run removes anything.
    let import = import_cmd(&cd, &bundle.dir, ns);
    let mut verify = Command::new(import.get_program());
    verify.arg("verify").args(import.get_args().skip(1));
    verify.envs(import.get_envs().filter_map(|(k, v)| Some((k, v?))));
    let mut dry_run = import_cmd(&cd, &bundle.dir, ns);
    dry_run.arg("--dry-run");
    for cmd in [&verify, &dry_run] {
        let out = run_bounded(cmd, BOUND);
        assert!(!out.stderr.contains("removed "), "{cmd:?}: {}", out.stderr);
        assert_eq!(
            all_leases_and_uploads(&cd, ns),
            before,
            "{cmd:?}: {}",
            out.stderr
        );
    }
    // An import removes ours, naming each, and nothing else.
    let out = run_bounded(&import, BOUND);
    assert_eq!(out.code, 0, "{}", out.stderr);
    for lease in &ours.leases {
        assert!(
            out.stderr.contains(&format!("removed lease {lease} ")),
            "{}",
            out.stderr
        );
    }
    for upload in &ours.uploads {
        let said = format!("removed partial upload {upload} ");
        assert!(out.stderr.contains(&said), "{}", out.stderr);
    }
    assert_eq!(all_leases_and_uploads(&cd, ns), foreign, "{}", out.stderr);
    assert_complete(&cd, ns, &bundle.names, &out.stderr);
}
