//! The test harness: the daemons scripts/test.sh started, and fixture archives built on them.
//!
//! Fixtures are generated, never committed: tiny images are built FROM scratch around the
//! static busybox on the real dockerd, then saved in every archive flavour the importer reads.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// Addresses of the private daemons started by scripts/test.sh.
pub struct Daemons {
    pub containerd_sock: PathBuf,
    /// `unix:///path/docker.sock`
    pub docker_host: String,
    /// `127.0.0.1:PORT`
    pub registry: String,
    pub docker_cli: String,
    /// Scratch space that scripts/test.sh removes at the end.
    pub tmp: PathBuf,
    /// The `ctr` of this containerd version (the node's own ctr, for the ctr backend).
    pub ctr: PathBuf,
    /// containerd's version, e.g. `1.6.20~ds1`.
    pub containerd_version: String,
    /// dockerd's version, e.g. `20.10.24+dfsg1`.
    pub docker_version: String,
    /// A short name for this pair, e.g. `containerd-2.1+docker-28.5`.
    pub label: String,
}

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests through scripts/test.sh, which starts the daemons")
    })
}

/// The default pair (bookworm's containerd 1.6 and Docker 20.10), which the whole suite uses.
pub fn daemons() -> &'static Daemons {
    &matrix()[0]
}

fn default_pair() -> Daemons {
    let version = |name: &str| std::env::var(name).unwrap_or_else(|_| "unknown".into());
    let containerd_version = version("OI_DEFAULT_CONTAINERD_VERSION");
    let docker_version = version("OI_DEFAULT_DOCKER_VERSION");
    Daemons {
        containerd_sock: var("OI_CONTAINERD_SOCK").into(),
        docker_host: var("OI_DOCKER_HOST"),
        registry: var("OI_REGISTRY"),
        docker_cli: std::env::var("OI_DOCKER_CLI").unwrap_or_else(|_| "docker".into()),
        tmp: var("OI_TMP").into(),
        ctr: "ctr".into(),
        label: pair_label(&containerd_version, &docker_version),
        containerd_version,
        docker_version,
    }
}

/// `1.6.20~ds1`, `20.10.24+dfsg1` -> `containerd-1.6+docker-20.10`.
fn pair_label(containerd: &str, docker: &str) -> String {
    let minor = |v: &str| v.split('.').take(2).collect::<Vec<_>>().join(".");
    format!("containerd-{}+docker-{}", minor(containerd), minor(docker))
}

/// Every containerd and Docker version the tests run on: the default pair first, then the
/// versions scripts/test.sh started beside it (`OI_VERSIONS` chooses them; see
/// OFFLINE-IMAGES.md, "Versions tested"). Tests that must hold on every version iterate this.
pub fn matrix() -> &'static [Daemons] {
    static M: OnceLock<Vec<Daemons>> = OnceLock::new();
    M.get_or_init(|| {
        let mut all = vec![default_pair()];
        let n: usize = std::env::var("OI_MATRIX")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        for i in 1..=n {
            let v = |field: &str| var(&format!("OI_MATRIX_{i}_{field}"));
            all.push(Daemons {
                containerd_sock: v("CONTAINERD_SOCK").into(),
                docker_host: v("DOCKER_HOST"),
                registry: all[0].registry.clone(),
                docker_cli: v("DOCKER_CLI"),
                tmp: all[0].tmp.clone(),
                ctr: v("CTR").into(),
                containerd_version: v("CONTAINERD_VERSION"),
                docker_version: v("DOCKER_VERSION"),
                label: v("LABEL"),
            });
        }
        all
    })
}

impl Daemons {
    /// Held by a test while it loads, runs or removes images of the fixtures' names (alpha,
    /// beta, base) on this dockerd: two tests doing so at once remove each other's images
    /// (by tag, or by image ID, which takes every tag of it).
    pub fn docker_lock(&self) -> std::sync::MutexGuard<'static, ()> {
        type Locks =
            std::sync::Mutex<std::collections::HashMap<String, &'static std::sync::Mutex<()>>>;
        static LOCKS: OnceLock<Locks> = OnceLock::new();
        let lock = {
            let mut locks = LOCKS
                .get_or_init(Default::default)
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            *locks
                .entry(self.docker_host.clone())
                .or_insert_with(|| Box::leak(Box::default()))
        };
        // A test that failed holding it leaves nothing half-done the next one depends on.
        lock.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The docker CLI of this version, pointed at its dockerd.
    pub fn docker(&self) -> Command {
        let mut c = Command::new(&self.docker_cli);
        c.env("DOCKER_HOST", &self.docker_host)
            .env("DOCKER_BUILDKIT", "0");
        c
    }

    /// The ctr of this version, pointed at its containerd, in namespace `ns`.
    pub fn ctr(&self, ns: &str) -> Command {
        let mut c = Command::new(&self.ctr);
        c.arg("-a").arg(&self.containerd_sock).arg("-n").arg(ns);
        c
    }

    /// Whether this Docker keeps images in containerd (its image IDs are manifest digests).
    pub fn docker_containerd_store(&self) -> bool {
        self.label.ends_with("containerd-store")
    }

    /// `offline-images <command> --images-path DIR` against this containerd in `ns`, with this
    /// version's ctr first on PATH (the node's own ctr).
    pub fn against_containerd(&self, command: &str, images: &Path, ns: &str) -> Command {
        let mut c = against_containerd(command, images, ns);
        let args: Vec<std::ffi::OsString> = c.get_args().map(Into::into).collect();
        let mut own = offline_images();
        for (i, a) in args.iter().enumerate() {
            if i > 0 && args[i - 1] == "--containerd-address" {
                own.arg(&self.containerd_sock);
            } else {
                own.arg(a);
            }
        }
        // The settings of the suite's command (the client, the disk limit), but its PATH:
        // this version's own ctr goes first on the inherited one.
        for (k, v) in c.get_envs() {
            match v {
                None => {
                    own.env_remove(k);
                }
                Some(v) if k != "PATH" => {
                    own.env(k, v);
                }
                Some(_) => {}
            }
        }
        if let Some(dir) = self.ctr.parent().filter(|d| !d.as_os_str().is_empty()) {
            let path = std::env::var("PATH").unwrap_or_default();
            own.env("PATH", format!("{}:{path}", dir.display()));
        }
        c = own;
        c
    }

    /// `offline-images <command> --images-path DIR --runtime docker` against this dockerd.
    pub fn against_docker(&self, command: &str, images: &Path) -> Command {
        let mut c = offline_images();
        c.arg(command).arg("--images-path").arg(images).args([
            "--runtime",
            "docker",
            "--docker-host",
            &self.docker_host,
        ]);
        for v in [
            "IMAGE_RUNTIME",
            "CONTAINERD_ADDRESS",
            "DOCKER_HOST",
            "HOST_ROOT",
            "IMAGES_PATH",
            "LOG_FORMAT",
            "IMPORT_STRICT",
        ] {
            c.env_remove(v);
        }
        c
    }

    /// Image names in a containerd namespace of this version.
    pub fn ctr_images(&self, ns: &str) -> Vec<String> {
        stdout_of(self.ctr(ns).args(["images", "ls", "-q"]))
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// `docker image inspect --format {{.Id}}` on this dockerd, or None.
    pub fn docker_image_id(&self, image: &str) -> Option<String> {
        let out = self
            .docker()
            .args(["image", "inspect", "--format", "{{.Id}}", image])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

/// A test whose precondition is missing (a daemon version, a tool the run did not fetch)
/// fails in CI (`CI` set), naming what is missing, so a shrunk matrix is never a pass; when a
/// developer narrowed the run on purpose (`OI_VERSIONS`, `OI_PODMAN` unset), it says so on
/// stderr and the caller returns.
pub fn missing_precondition(what: &str) {
    if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
        panic!("missing precondition in CI: {what}");
    }
    eprintln!("SKIPPED (narrowed run): {what}");
}

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

/// Run `export` (a `ctr images export` that writes `out`) until tar can list what it wrote,
/// up to three times, each short archive logged: ctr 2.1, exporting through containerd's
/// transfer service, has exited 0 with an archive short of its last bytes.
pub fn ctr_export(export: impl Fn() -> Command, out: &Path, label: &str) {
    for attempt in 1..=3 {
        run(&mut export());
        let listed = Command::new("tar").arg("-tf").arg(out).output().unwrap();
        if listed.status.success() {
            return;
        }
        eprintln!(
            "{label}: ctr export wrote a truncated {} (attempt {attempt}): {}",
            out.display(),
            String::from_utf8_lossy(&listed.stderr).trim()
        );
    }
    panic!(
        "{label}: ctr export wrote a truncated {} three times",
        out.display()
    );
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

/// A test image as the daemon knows it.
#[derive(Debug, Clone)]
pub struct TestImage {
    /// As given to docker build, e.g. `oi-test/alpha:1`.
    pub tag: String,
    /// Normalised, e.g. `docker.io/oi-test/alpha:1`.
    pub reference: String,
    /// The config digest, as `docker image inspect` reports it (`.Id`).
    pub config_digest: String,
}

/// Build an image FROM scratch with the static busybox and a file of its own, so that each
/// image has a distinct config and a layer shared with the others (busybox).
pub fn build_image(tag: &str, message: &str) -> TestImage {
    let ctx = temp_dir("build");
    std::fs::copy("/bin/busybox", ctx.join("busybox")).expect("busybox-static is installed");
    std::fs::write(ctx.join("message"), format!("{message}\n")).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nCOPY message /message\n\
         ENTRYPOINT [\"/bin/busybox\"]\nCMD [\"cat\", \"/message\"]\n",
    )
    .unwrap();
    run(docker().args(["build", "-q", "-t", tag]).arg(&ctx));
    test_image(tag)
}

/// `skopeo copy` (the `skopeo` command given, with `extra` flags) of `tag` from the default
/// pair's dockerd to `dest` (`docker-archive:PATH:TAG`, `oci-archive:PATH`, …).
pub fn skopeo_from_daemon(mut skopeo: Command, extra: &[&str], tag: &str, dest: String) {
    run(skopeo
        .args(["copy", "--quiet"])
        .args(extra)
        .args(["--src-daemon-host", &daemons().docker_host])
        .arg(format!("docker-daemon:{tag}"))
        .arg(dest));
}

/// The image the default pair's dockerd holds under `tag`, with its config digest.
pub fn test_image(tag: &str) -> TestImage {
    let id = stdout_of(docker().args(["image", "inspect", "--format", "{{.Id}}", tag]));
    TestImage {
        tag: tag.to_string(),
        reference: offline_images::reference::normalize(tag).unwrap(),
        config_digest: id.trim().to_string(),
    }
}

/// Every archive flavour the importer reads, built once per test process.
pub struct Fixtures {
    pub alpha: TestImage,
    pub beta: TestImage,
    pub dir: PathBuf,
    /// (flavour, archive path, the image it holds)
    pub flavours: Vec<(&'static str, PathBuf, TestImage)>,
    /// `docker save` of alpha and beta together.
    pub two_images: PathBuf,
    /// `docker save` of alpha by image ID: no name inside.
    pub untagged: PathBuf,
}

pub fn fixtures() -> &'static Fixtures {
    static F: OnceLock<Fixtures> = OnceLock::new();
    F.get_or_init(build_fixtures)
}

fn build_fixtures() -> Fixtures {
    let alpha = build_image("oi-test/alpha:1", "hello from alpha");
    let beta = build_image("oi-test/beta:1", "hello from beta");
    let dir = temp_dir("fixtures");
    let p = |name: &str| dir.join(name);

    run(docker()
        .args(["save", "-o"])
        .arg(p("docker.tar"))
        .arg(&alpha.tag));
    gzip(&p("docker.tar"), &p("docker.tar.gz"));

    // ctr export writes an OCI layout; the image goes through containerd first.
    let ns = "oi-fixtures";
    run(ctr(ns).args(["images", "import"]).arg(p("docker.tar")));
    run(ctr(ns)
        .args(["images", "export", "--platform", "linux/amd64"])
        .arg(p("ctr-oci.tar"))
        .arg(&alpha.reference));

    for (dest, file) in [
        ("docker-archive", "skopeo-docker.tar"),
        ("oci-archive", "skopeo-oci.tar"),
    ] {
        let to = format!("{dest}:{}:{}", p(file).display(), alpha.tag);
        skopeo_from_daemon(skopeo(), &[], &alpha.tag, to);
    }

    run(docker()
        .args(["save", "-o"])
        .arg(p("two-images.tar"))
        .args([&alpha.tag, &beta.tag]));
    run(docker()
        .args(["save", "-o"])
        .arg(p("untagged.tar"))
        .arg(&alpha.config_digest));

    // skopeo converts the config to OCI media types when it writes an OCI archive, so that
    // image has a config digest of its own: take it from skopeo's own reading of the archive.
    let oci_manifest: serde_json::Value = serde_json::from_str(&stdout_of(
        skopeo()
            .args(["inspect", "--raw"])
            .arg(format!("oci-archive:{}", p("skopeo-oci.tar").display())),
    ))
    .unwrap();
    let alpha_oci = TestImage {
        config_digest: oci_manifest["config"]["digest"]
            .as_str()
            .unwrap()
            .to_string(),
        ..alpha.clone()
    };
    let flavours = vec![
        ("docker save", p("docker.tar"), alpha.clone()),
        ("docker save | gzip", p("docker.tar.gz"), alpha.clone()),
        ("ctr export", p("ctr-oci.tar"), alpha.clone()),
        (
            "skopeo docker-archive",
            p("skopeo-docker.tar"),
            alpha.clone(),
        ),
        ("skopeo oci-archive", p("skopeo-oci.tar"), alpha_oci),
    ];
    Fixtures {
        two_images: p("two-images.tar"),
        untagged: p("untagged.tar"),
        alpha,
        beta,
        dir,
        flavours,
    }
}

/// gzip a file with the system gzip, as operators' scripts do.
pub fn gzip(src: &Path, dst: &Path) {
    let out = std::fs::File::create(dst).unwrap();
    run(Command::new("gzip").arg("-c").arg(src).stdout(out));
}

/// The test dockerd's socket path (OI_DOCKER_HOST without `unix://`).
pub fn docker_socket() -> PathBuf {
    let host = &daemons().docker_host;
    PathBuf::from(host.strip_prefix("unix://").unwrap_or(host))
}

/// A name no other test uses, for images a test builds and removes on its own.
pub fn unique_tag(label: &str) -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "oi-test/{label}:{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Save `image` in one archive flavour (the names are those of `fixtures().flavours`), the
/// way `build_fixtures` does, into a fresh directory. Returns the archive and the image as
/// that archive holds it (skopeo's OCI archive has a config digest of its own).
pub fn save_as(flavour: &str, image: &TestImage) -> (PathBuf, TestImage) {
    let dir = temp_dir("flavour");
    let tar = dir.join("image.tar");
    let skopeo_to = |dest: &str| {
        let to = format!("{dest}:{}:{}", tar.display(), image.tag);
        skopeo_from_daemon(skopeo(), &[], &image.tag, to);
    };
    match flavour {
        "docker save" | "docker save | gzip" => {
            run(docker().args(["save", "-o"]).arg(&tar).arg(&image.tag));
            if flavour.ends_with("gzip") {
                let gz = dir.join("image.tar.gz");
                gzip(&tar, &gz);
                return (gz, image.clone());
            }
        }
        "ctr export" => {
            let saved = dir.join("saved.tar");
            run(docker().args(["save", "-o"]).arg(&saved).arg(&image.tag));
            let ns = format!("oi-save-{}", dir.file_name().unwrap().to_string_lossy());
            run(ctr(&ns).args(["images", "import"]).arg(&saved));
            run(ctr(&ns)
                .args(["images", "export", "--platform", "linux/amd64"])
                .arg(&tar)
                .arg(&image.reference));
            let _ = ctr(&ns).args(["images", "rm", &image.reference]).output();
        }
        "skopeo docker-archive" => skopeo_to("docker-archive"),
        "skopeo oci-archive" | "skopeo oci-archive, gzip layers" => {
            if flavour.ends_with("gzip layers") {
                // As images copied from a registry are stored: compressed layers.
                let to = format!("oci-archive:{}:{}", tar.display(), image.tag);
                skopeo_from_daemon(skopeo(), &["--dest-compress"], &image.tag, to);
            } else {
                skopeo_to("oci-archive");
            }
            let manifest: serde_json::Value = serde_json::from_str(&stdout_of(
                skopeo()
                    .args(["inspect", "--raw"])
                    .arg(format!("oci-archive:{}", tar.display())),
            ))
            .unwrap();
            if flavour.ends_with("gzip layers") {
                let layers = manifest["layers"].as_array().unwrap();
                assert!(
                    layers.iter().all(|l| l["mediaType"]
                        .as_str()
                        .is_some_and(|t| t.ends_with("+gzip"))),
                    "skopeo did not compress the layers: {manifest}"
                );
            }
            let config_digest = manifest["config"]["digest"].as_str().unwrap().to_string();
            return (
                tar,
                TestImage {
                    config_digest,
                    ..image.clone()
                },
            );
        }
        other => panic!("unknown archive flavour {other:?}"),
    }
    (tar, image.clone())
}

/// Remove an image (by tag or ID) from the test dockerd; absent is fine. Its untagged parents
/// stay: they are the build cache other tests' builds share.
pub fn docker_rmi(image: &str) {
    let _ = docker()
        .args(["image", "rm", "--force", "--no-prune", image])
        .stdin(Stdio::null())
        .output();
}

/// `docker image inspect --format {{.Id}}`, or None when the daemon has no such image.
pub fn docker_image_id(image: &str) -> Option<String> {
    let out = docker()
        .args(["image", "inspect", "--format", "{{.Id}}", image])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Build an image, push it to the test registry as `REGISTRY/oi-export/NAME:1`, and remove it
/// from the test dockerd, so that whoever wants it must pull it from the registry.
pub fn pushed_image(name: &str, message: &str) -> TestImage {
    let tag = format!("{}/oi-export/{name}:1", daemons().registry);
    let image = build_image(&tag, message);
    run(docker().args(["push", "-q", &tag]));
    // --no-prune: the untagged parent (the cached busybox step) may be the parent of an image
    // another test is building right now.
    run(docker().args(["rmi", "--no-prune", &tag]));
    image
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
        .arg("export")
        .arg("--output")
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

// ---- import and verify ----------------------------------------------------------------------

/// A containerd namespace of its own for one test, so tests can run in parallel.
pub fn unique_namespace(label: &str) -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "oi-{label}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The containerd client the containerd tests run with: `OI_CONTAINERD_CLIENT` (`native`,
/// the default, or `ctr`), so one suite covers both backends.
pub fn containerd_client() -> &'static str {
    static C: OnceLock<String> = OnceLock::new();
    C.get_or_init(|| {
        let c = std::env::var("OI_CONTAINERD_CLIENT").unwrap_or_else(|_| "native".into());
        assert!(
            c == "native" || c == "ctr",
            "OI_CONTAINERD_CLIENT={c}: native or ctr"
        );
        c
    })
}

/// A PATH with no program on it: the native client must need none (no `ctr`).
pub fn empty_path() -> &'static Path {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| temp_dir("empty-path"))
}

/// Whether a line of `ctr content active` is an upload of an importer (either client).
pub fn is_import_ingest(line: &str) -> bool {
    line.starts_with("tar-") || line.starts_with("offline-images-")
}

/// `offline-images <command> --images-path DIR` against the test containerd in `ns`, with no
/// runtime settings inherited from the environment, through [`containerd_client`].
pub fn against_containerd(command: &str, images: &Path, ns: &str) -> Command {
    let mut c = offline_images();
    c.env("CONTAINERD_CLIENT", containerd_client());
    if containerd_client() == "native" {
        c.env("PATH", empty_path());
    }
    // The test daemons' roots are on the machine's disk, however full it is: the disk
    // preflight refuses only what would overfill it (its own tests use a tmpfs and the
    // default limit).
    c.env("DISK_MAX_USED", "100");
    c.arg(command)
        .arg("--images-path")
        .arg(images)
        .arg("--containerd-address")
        .arg(&daemons().containerd_sock)
        .arg("--namespace")
        .arg(ns);
    for v in [
        "IMAGE_RUNTIME",
        "CONTAINERD_ADDRESS",
        "CONTAINERD_NAMESPACE",
        "DOCKER_HOST",
        "HOST_ROOT",
        "IMAGES_PATH",
        "LOG_FORMAT",
        "IMPORT_STRICT",
    ] {
        c.env_remove(v);
    }
    c
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

/// Image names in a containerd namespace, with their target digests.
pub fn ctr_images(ns: &str) -> Vec<(String, String)> {
    stdout_of(ctr(ns).args(["images", "ls"]))
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3).then(|| (f[0].to_string(), f[2].to_string()))
        })
        .collect()
}

/// The config digest containerd holds for `name` (the linux/amd64 one, for an index), read
/// from the stored manifest with `ctr content get`.
pub fn ctr_config_digest(ns: &str, name: &str) -> Option<String> {
    let (_, target) = ctr_images(ns).into_iter().find(|(n, _)| n == name)?;
    let mut digest = target;
    for _ in 0..3 {
        let doc: serde_json::Value =
            serde_json::from_str(&stdout_of(ctr(ns).args(["content", "get", &digest]))).unwrap();
        if let Some(config) = doc["config"]["digest"].as_str() {
            return Some(config.to_string());
        }
        digest = doc["manifests"]
            .as_array()?
            .iter()
            .find(|m| m["platform"]["architecture"] == "amd64")?["digest"]
            .as_str()?
            .to_string();
    }
    None
}

/// Labels of `name` in `ns`, as `ctr images ls` prints them (`k=v,k=v`).
pub fn ctr_labels(ns: &str, name: &str) -> String {
    stdout_of(ctr(ns).args(["images", "ls"]))
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.split_whitespace().last().map(str::to_string))
        .unwrap_or_default()
}

/// `ctr events` running in the background, its output collected in a file.
pub struct EventWatch {
    child: std::process::Child,
    file: PathBuf,
}

impl EventWatch {
    /// Start watching, and return once the watcher is seen to receive events.
    pub fn start(ns: &str, sentinel_image: &str) -> EventWatch {
        let file = temp_dir("events").join("events.txt");
        let child = Command::new("ctr")
            .arg("-a")
            .arg(&daemons().containerd_sock)
            .arg("events")
            .stdout(std::fs::File::create(&file).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let w = EventWatch { child, file };
        w.mark(ns, sentinel_image, "start");
        w
    }

    /// Change a label on `image` and wait until the watcher has seen it: everything the
    /// daemon published before is in the file by then.
    pub fn mark(&self, ns: &str, image: &str, value: &str) {
        let label = format!("oi-test.mark={value}");
        // Until `ctr events` has subscribed, events are not delivered to it: label again
        // until the mark shows.
        let seen = format!("\"oi-test.mark\":\"{value}\"");
        for _ in 0..30 {
            run(ctr(ns).args(["images", "label", image, &label]));
            for _ in 0..10 {
                if self.text().contains(&seen) {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
        panic!("ctr events never showed the mark {value}:\n{}", self.text());
    }

    pub fn text(&self) -> String {
        std::fs::read_to_string(&self.file).unwrap_or_default()
    }

    /// Image and content events in `ns` between the marks `from` and `to`, marks excluded.
    pub fn image_events_between(&self, ns: &str, from: &str, to: &str) -> Vec<String> {
        let text = self.text();
        let lines: Vec<&str> = text.lines().collect();
        let pos = |v: &str| {
            lines
                .iter()
                .position(|l| l.contains(&format!("\"oi-test.mark\":\"{v}\"")))
                .unwrap_or_else(|| panic!("mark {v} not in events:\n{text}"))
        };
        let (a, b) = (pos(from), pos(to));
        lines[a + 1..b]
            .iter()
            .filter(|l| {
                l.contains(&format!(" {ns} /images/")) || l.contains(&format!(" {ns} /content/"))
            })
            .map(|l| l.to_string())
            .collect()
    }
}

impl Drop for EventWatch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Rewrite the single-image OCI archive `src` (as `ctr export` writes it) into `dst`, whose
/// index.json names `name` and points to an index of two platforms: the archive's own
/// manifest (linux/amd64, every blob present) and a linux/arm64 manifest whose blobs are
/// absent, as `ctr export --platform linux/amd64` writes a multi-platform image.
pub fn multi_platform_oci(src: &Path, dst: &Path, name: &str) {
    use sha2::{Digest, Sha256};
    let hex = |d: &[u8]| offline_images::bundle::hex(&Sha256::digest(d));
    let mut files = tar_files(src);
    let index_at = files.iter().position(|(n, _)| n == "index.json").unwrap();
    let old: serde_json::Value = serde_json::from_slice(&files[index_at].1).unwrap();
    let mut amd64 = old["manifests"][0].clone();
    amd64.as_object_mut().unwrap().remove("annotations");
    amd64["platform"] = serde_json::json!({"os": "linux", "architecture": "amd64"});
    let inner = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            amd64,
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": format!("sha256:{}", hex(b"an arm64 manifest that is not in this archive")),
                "size": 500,
                "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}
            }
        ]
    }))
    .unwrap();
    let inner_hex = hex(&inner);
    files[index_at].1 = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": format!("sha256:{inner_hex}"),
            "size": inner.len(),
            "annotations": {"io.containerd.image.name": name}
        }]
    }))
    .unwrap();
    files.insert(index_at, (format!("blobs/sha256/{inner_hex}"), inner));
    let mut b = tar::Builder::new(std::fs::File::create(dst).unwrap());
    for (path, data) in &files {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, path, data.as_slice()).unwrap();
    }
    b.finish().unwrap();
}

/// A docker-archive holding one image whose single layer is `layer_mib` MiB of zeros: big
/// enough that importing it takes a while.
pub fn big_docker_archive(dst: &Path, name: &str, layer_mib: u64) {
    let dir = temp_dir("big");
    let layer = dir.join("layer.tar");
    {
        let mut b = tar::Builder::new(std::fs::File::create(&layer).unwrap());
        let mut h = tar::Header::new_ustar();
        h.set_size(layer_mib << 20);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(
            &mut h,
            "zeros",
            std::io::Read::take(std::io::repeat(0), layer_mib << 20),
        )
        .unwrap();
        b.finish().unwrap();
    }
    let layer_sha = stdout_of(Command::new("sha256sum").arg(&layer));
    let layer_sha = layer_sha.split_whitespace().next().unwrap();
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{}},"rootfs":{{"type":"layers","diff_ids":["sha256:{layer_sha}"]}}}}"#
    );
    let manifest = format!(
        r#"[{{"Config":"config.json","RepoTags":["{name}"],"Layers":["{layer_sha}/layer.tar"]}}]"#
    );
    let mut b = tar::Builder::new(std::fs::File::create(dst).unwrap());
    b.append_path_with_name(&layer, format!("{layer_sha}/layer.tar"))
        .unwrap();
    for (n, data) in [("config.json", config), ("manifest.json", manifest)] {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, n, data.as_bytes()).unwrap();
    }
    b.finish().unwrap();
    std::fs::remove_file(&layer).unwrap();
}

/// A unix-socket proxy in front of the test containerd, to take the "runtime" away and bring
/// it back while an importer runs.
pub struct SocketProxy {
    path: PathBuf,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SocketProxy {
    pub fn start(path: &Path) -> SocketProxy {
        use std::os::unix::net::{UnixListener, UnixStream};
        use std::sync::atomic::Ordering;
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let upstream = daemons().containerd_sock.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                let client = match listener.accept() {
                    Ok((c, _)) => c,
                    Err(_) => {
                        std::thread::sleep(std::time::Duration::from_millis(10));
                        continue;
                    }
                };
                client.set_nonblocking(false).unwrap();
                let Ok(server) = UnixStream::connect(&upstream) else {
                    continue;
                };
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Write);
                    });
                }
            }
        });
        SocketProxy {
            path: path.to_path_buf(),
            stop,
            thread: Some(thread),
        }
    }

    /// Stop accepting and remove the socket (connections already made carry on).
    pub fn stop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for SocketProxy {
    fn drop(&mut self) {
        self.stop();
    }
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

// ---- reliability: bounded runs, private daemons ---------------------------------------------

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

/// A containerd of a test's own (its own root, state and socket), to kill, restart or starve
/// of disk space without disturbing the daemons other tests use. Configured as
/// scripts/lib.sh's `oi_start_containerd` configures the shared one.
pub struct PrivateContainerd {
    pub dir: PathBuf,
    pub root: PathBuf,
    pub socket: PathBuf,
    child: Option<std::process::Child>,
    /// A tmpfs mounted as `root`, unmounted on drop.
    mounted: bool,
    /// The directory of the containerd and ctr of a version of the matrix; `None`: the
    /// machine's own.
    bin: Option<PathBuf>,
}

impl PrivateContainerd {
    /// Start one; with `root_mib`, its root is a tmpfs of that many MiB.
    pub fn start(label: &str, root_mib: Option<u64>) -> PrivateContainerd {
        let mut c = PrivateContainerd::configure(label, root_mib, None);
        c.restart();
        c
    }

    /// Its directories and configuration, not started yet; `bin`: see the field.
    fn configure(label: &str, root_mib: Option<u64>, bin: Option<PathBuf>) -> PrivateContainerd {
        let dir = temp_dir(label);
        let root = dir.join("root");
        std::fs::create_dir_all(&root).unwrap();
        let mut mounted = false;
        if let Some(mib) = root_mib {
            run(Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
                .arg(&root));
            mounted = true;
        }
        let socket = dir.join("containerd.sock");
        std::fs::write(
            dir.join("config.toml"),
            format!(
                "version = 2\nroot = \"{}\"\nstate = \"{}\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [grpc]\n  address = \"{}\"\n[ttrpc]\n  address = \"{}.ttrpc\"\n\
                 [debug]\n  address = \"\"\n[metrics]\n  address = \"\"\n",
                root.display(),
                dir.join("state").display(),
                socket.display(),
                socket.display()
            ),
        )
        .unwrap();
        PrivateContainerd {
            dir,
            root,
            socket,
            child: None,
            mounted,
            bin,
        }
    }

    /// Start one with the CRI plugin enabled, as on a Kubernetes node: its sandbox (pause)
    /// image is `sandbox_image`, its snapshotter `native` (not the default, so that a client
    /// that reads it can be told from one that does not), its CNI directories empty (pods use
    /// the host network), its streaming server on a free port of 127.0.0.1. With
    /// `restrict_oom_score_adj`, as containerd runs unprivileged or nested: this machine takes
    /// `CAP_SYS_RESOURCE` from its root, so runc cannot give a pod sandbox the OOM score of
    /// -998 the CRI asks for ("failed to update /proc/self/oom_score_adj: Permission denied",
    /// then "can't get final child's PID from pipe"); the CRI then keeps containerd's own.
    pub fn start_cri(label: &str, sandbox_image: &str) -> PrivateContainerd {
        let dir = temp_dir(label);
        let root = dir.join("root");
        for d in ["root", "cni-bin", "cni-conf"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        let socket = dir.join("containerd.sock");
        std::fs::write(
            dir.join("config.toml"),
            format!(
                "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n\
                 [grpc]\n  address = \"{sock}\"\n[ttrpc]\n  address = \"{sock}.ttrpc\"\n\
                 [debug]\n  address = \"\"\n[metrics]\n  address = \"\"\n\
                 [plugins.\"io.containerd.grpc.v1.cri\"]\n  sandbox_image = \"{sandbox_image}\"\n\
                 \x20 stream_server_address = \"127.0.0.1\"\n  stream_server_port = \"0\"\n\
                 \x20 restrict_oom_score_adj = true\n\
                 [plugins.\"io.containerd.grpc.v1.cri\".containerd]\n  snapshotter = \"native\"\n\
                 [plugins.\"io.containerd.grpc.v1.cri\".cni]\n  bin_dir = \"{bin}\"\n  conf_dir = \"{conf}\"\n",
                root = root.display(),
                state = dir.join("state").display(),
                sock = socket.display(),
                bin = dir.join("cni-bin").display(),
                conf = dir.join("cni-conf").display(),
            ),
        )
        .unwrap();
        let mut c = PrivateContainerd {
            dir,
            root,
            socket,
            child: None,
            mounted: false,
            bin: None,
        };
        c.restart();
        c
    }

    /// Start (again) on the same root and socket, and wait until it answers.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "containerd is still running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("containerd.log"))
            .unwrap();
        let mut containerd = Command::new("containerd");
        if let Some(bin) = &self.bin {
            // Its own shim too, found on PATH.
            let path = std::env::var_os("PATH").unwrap_or_default();
            let mut dirs = vec![bin.clone()];
            dirs.extend(std::env::split_paths(&path));
            containerd = Command::new(bin.join("containerd"));
            containerd.env("PATH", std::env::join_paths(dirs).unwrap());
        }
        self.child = Some(
            containerd
                .arg("--config")
                .arg(self.dir.join("config.toml"))
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("containerd is installed"),
        );
        wait_until_up("containerd", 30, &self.dir.join("containerd.log"), || {
            let mut c = self.ctr("default");
            c.arg("version");
            c
        });
    }

    /// SIGKILL, as a crash or an OOM kill would stop it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn ctr(&self, ns: &str) -> Command {
        let mut c = match &self.bin {
            Some(bin) => Command::new(bin.join("ctr")),
            None => Command::new("ctr"),
        };
        c.arg("-a").arg(&self.socket).arg("-n").arg(ns);
        c
    }

    /// [`PrivateContainerd::start`] (no tmpfs) with the containerd of `d`, a version of the
    /// matrix (the machine's own for the default pair).
    pub fn start_version(label: &str, d: &Daemons) -> PrivateContainerd {
        let bin = d.ctr.parent().filter(|p| !p.as_os_str().is_empty());
        let mut c = PrivateContainerd::configure(label, None, bin.map(Path::to_path_buf));
        c.restart();
        c
    }

    /// SIGSTOP for `how_long`, then SIGCONT: a containerd that answers nothing for a while (a
    /// starved node, a disk that stalls), and then goes on.
    pub fn pause(&self, how_long: std::time::Duration) {
        let pid = self
            .child
            .as_ref()
            .expect("containerd is running")
            .id()
            .to_string();
        run(Command::new("kill").args(["-STOP", &pid]));
        std::thread::sleep(how_long);
        run(Command::new("kill").args(["-CONT", &pid]));
    }

    /// Image names in `ns`.
    pub fn images(&self, ns: &str) -> Vec<String> {
        stdout_of(self.ctr(ns).args(["images", "ls", "-q"]))
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// `offline-images import` of `images` into `ns` of this containerd.
    pub fn import(&self, images: &Path, ns: &str) -> Command {
        let mut c = against_containerd("import", images, ns);
        // The same flags as against_containerd, with this daemon's socket.
        let args: Vec<std::ffi::OsString> = c.get_args().map(Into::into).collect();
        let mut own = offline_images();
        for (i, a) in args.iter().enumerate() {
            if i > 0 && args[i - 1] == "--containerd-address" {
                own.arg(&self.socket);
            } else {
                own.arg(a);
            }
        }
        for (k, v) in c.get_envs() {
            match v {
                None => own.env_remove(k),
                Some(v) => own.env(k, v),
            };
        }
        c = own;
        c
    }
}

impl Drop for PrivateContainerd {
    fn drop(&mut self) {
        self.kill();
        if self.mounted {
            let _ = Command::new("umount").arg("-l").arg(&self.root).status();
        }
    }
}

/// A dockerd of a test's own, on a private containerd, to restart during a run.
pub struct PrivateDockerd {
    pub containerd: PrivateContainerd,
    pub dir: PathBuf,
    pub socket: PathBuf,
    child: Option<std::process::Child>,
}

impl PrivateDockerd {
    pub fn start(label: &str) -> PrivateDockerd {
        let containerd = PrivateContainerd::start(&format!("{label}-containerd"), None);
        let dir = temp_dir(label);
        std::fs::write(dir.join("daemon.json"), "{}").unwrap();
        let mut d = PrivateDockerd {
            containerd,
            socket: dir.join("docker.sock"),
            dir,
            child: None,
        };
        d.restart();
        d
    }

    pub fn host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "dockerd is still running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("dockerd.log"))
            .unwrap();
        let d = &self.dir;
        self.child = Some(
            Command::new("dockerd")
                .arg("--host")
                .arg(self.host())
                .arg("--data-root")
                .arg(d.join("data"))
                .arg("--exec-root")
                .arg(d.join("exec"))
                .arg("--pidfile")
                .arg(d.join("docker.pid"))
                .arg("--containerd")
                .arg(&self.containerd.socket)
                .args(["--iptables=false", "--ip-masq=false", "--bridge=none"])
                .arg("--config-file")
                .arg(d.join("daemon.json"))
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("dockerd is installed"),
        );
        wait_until_up("dockerd", 60, &self.dir.join("dockerd.log"), || {
            let mut c = self.docker();
            c.arg("version");
            c
        });
    }

    /// SIGKILL dockerd (its containerd stays).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn docker(&self) -> Command {
        let mut c = Command::new(&daemons().docker_cli);
        c.env("DOCKER_HOST", self.host());
        c
    }

    /// `docker image inspect --format {{.Id}}` on this daemon.
    pub fn image_id(&self, image: &str) -> Option<String> {
        let out = self
            .docker()
            .args(["image", "inspect", "--format", "{{.Id}}", image])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// `offline-images import` of `images` into this dockerd.
    pub fn import(&self, images: &Path) -> Command {
        let mut c = offline_images();
        c.arg("import")
            .arg("--images-path")
            .arg(images)
            .args(["--runtime", "docker", "--docker-host"])
            .arg(self.host());
        for v in [
            "IMAGE_RUNTIME",
            "CONTAINERD_ADDRESS",
            "DOCKER_HOST",
            "HOST_ROOT",
            "IMAGES_PATH",
            "LOG_FORMAT",
            "IMPORT_STRICT",
        ] {
            c.env_remove(v);
        }
        c
    }
}

impl Drop for PrivateDockerd {
    fn drop(&mut self) {
        if let Some(c) = &self.child {
            // SIGTERM first: dockerd unmounts what it mounted.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        if let Some(mut c) = self.child.take() {
            for _ in 0..100 {
                if c.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Bytes of a tar archive holding `files`, names written as given (even `../x` or `/x`, which
/// the tar crate's own path setters refuse).
pub fn raw_tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_old();
        let field = &mut h.as_old_mut().name;
        field[..name.len()].copy_from_slice(name.as_bytes());
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap()
}

/// Every regular file of a tar archive, in order.
pub fn tar_files(path: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    let mut archive = tar::Archive::new(std::fs::File::open(path).unwrap());
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
        files.push((name, data));
    }
    files
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

/// Retry `probe` (a command that succeeds once the daemon answers) for up to `secs` seconds;
/// panic with the daemon's log if it never does.
fn wait_until_up(name: &str, secs: u64, log: &Path, probe: impl Fn() -> Command) {
    for _ in 0..secs * 10 {
        if probe()
            .stdin(Stdio::null())
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!(
        "the private {name} did not come up:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

// ---- the version matrix's archives ------------------------------------------------------------

/// An image FROM scratch holding only the static busybox: its one layer is the first layer of
/// every image `build_image` makes, so saving it with them shares that layer.
pub fn build_base_image(tag: &str) -> TestImage {
    let ctx = temp_dir("build-base");
    std::fs::copy("/bin/busybox", ctx.join("busybox")).expect("busybox-static is installed");
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nENTRYPOINT [\"/bin/busybox\"]\nCMD [\"echo\", \"hello from base\"]\n",
    )
    .unwrap();
    run(docker().args(["build", "-q", "-t", tag]).arg(&ctx));
    test_image(tag)
}

/// `docker save` of three images that share the busybox layer (base, alpha, beta), made by
/// the Docker of each version of the matrix (same index), and the images it holds with the
/// message each prints. Docker before 25 stores the shared layer once and links the other
/// `layer.tar` to it (`../<id>/layer.tar`).
pub struct SharedLayerSave {
    pub archive: PathBuf,
    pub images: Vec<(TestImage, &'static str)>,
}

pub fn shared_layer_saves() -> &'static [SharedLayerSave] {
    static S: OnceLock<Vec<SharedLayerSave>> = OnceLock::new();
    S.get_or_init(|| {
        let f = fixtures();
        let base = build_base_image("oi-test/base:1");
        let images = vec![
            (base, "hello from base"),
            (f.alpha.clone(), "hello from alpha"),
            (f.beta.clone(), "hello from beta"),
        ];
        let tags: Vec<&str> = images.iter().map(|(i, _)| i.tag.as_str()).collect();
        let dir = temp_dir("shared-layer");
        let first = dir.join("shared-0.tar");
        run(docker().args(["save", "-o"]).arg(&first).args(&tags));
        let mut out = vec![SharedLayerSave {
            archive: first.clone(),
            images: images.clone(),
        }];
        for (i, d) in matrix().iter().enumerate().skip(1) {
            // Each version's own docker save, of the same images loaded into it.
            run(d.docker().args(["load", "-q", "-i"]).arg(&first));
            let archive = dir.join(format!("shared-{i}.tar"));
            run(d.docker().args(["save", "-o"]).arg(&archive).args(&tags));
            for (img, _) in &images {
                let _ = d
                    .docker()
                    .args(["image", "rm", "--force", &img.tag])
                    .stdin(Stdio::null())
                    .output();
            }
            // The same configs, so the same config digests, whatever the version.
            out.push(SharedLayerSave {
                archive,
                images: images.clone(),
            });
        }
        out
    })
}

/// Symlinks in a tar archive: (name, target).
pub fn tar_symlinks(path: &Path) -> Vec<(String, String)> {
    let mut archive = tar::Archive::new(std::fs::File::open(path).unwrap());
    archive
        .entries()
        .unwrap()
        .filter_map(|e| {
            let e = e.unwrap();
            if !e.header().entry_type().is_symlink() {
                return None;
            }
            let name = e.path().unwrap().to_string_lossy().into_owned();
            let target = e.link_name().unwrap()?.to_string_lossy().into_owned();
            Some((name, target))
        })
        .collect()
}

// ---- registries of a test's own: TLS, htpasswd, token auth ----------------------------------

/// How a private registry authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistryAuth {
    Anonymous,
    /// htpasswd (bcrypt, from `htpasswd -B`), Basic auth.
    Htpasswd,
    /// Bearer tokens from tests/registry/token_server.py.
    Token,
}

/// A docker-registry started by a test (and its token server), stopped on drop.
pub struct PrivateRegistry {
    /// `127.0.0.1:PORT`
    pub addr: String,
    pub dir: PathBuf,
    /// The CA that signed its certificate, when it speaks TLS.
    pub ca: Option<PathBuf>,
    pub user: &'static str,
    pub password: &'static str,
    children: Vec<std::process::Child>,
}

/// A CA and a server certificate for 127.0.0.1 signed by it, made with openssl in `dir`.
/// Returns (ca.crt, server.crt, server.key).
pub fn make_tls(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let p = |n: &str| dir.join(n);
    run(Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=offline-images test CA"])
        .args(["-addext", "basicConstraints=critical,CA:TRUE"])
        .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
        .arg("-keyout")
        .arg(p("ca.key"))
        .arg("-out")
        .arg(p("ca.crt")));
    run(Command::new("openssl")
        .args([
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
        ])
        .arg("-keyout")
        .arg(p("server.key"))
        .arg("-out")
        .arg(p("server.csr")));
    std::fs::write(
        p("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(Command::new("openssl")
        .args(["x509", "-req", "-days", "2", "-CAcreateserial"])
        .arg("-in")
        .arg(p("server.csr"))
        .arg("-CA")
        .arg(p("ca.crt"))
        .arg("-CAkey")
        .arg(p("ca.key"))
        .arg("-extfile")
        .arg(p("ext.cnf"))
        .arg("-out")
        .arg(p("server.crt")));
    (p("ca.crt"), p("server.crt"), p("server.key"))
}

fn free_port() -> u16 {
    closed_port()
}

impl PrivateRegistry {
    pub fn start(label: &str, tls: bool, auth: RegistryAuth) -> PrivateRegistry {
        let dir = temp_dir(label);
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let (user, password) = ("oi-user", "oi-secret-pw");
        let mut children = Vec::new();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
             \x20 delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
            dir.join("data").display()
        );
        let mut ca = None;
        if tls {
            let (ca_crt, crt, key) = make_tls(&dir);
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                crt.display(),
                key.display()
            ));
            ca = Some(ca_crt);
        }
        match auth {
            RegistryAuth::Anonymous => {}
            RegistryAuth::Htpasswd => {
                let out = stdout_of(Command::new("htpasswd").args(["-Bbn", user, password]));
                std::fs::write(dir.join("htpasswd"), out).unwrap();
                config.push_str(&format!(
                    "auth:\n  htpasswd:\n    realm: offline-images-test\n    path: {}\n",
                    dir.join("htpasswd").display()
                ));
            }
            RegistryAuth::Token => {
                let (realm, child) = start_token_server(&dir, user, password);
                children.push(child);
                config.push_str(&format!(
                    "auth:\n  token:\n    realm: {realm}\n    service: oi-registry\n\
                     \x20   issuer: oi-token-issuer\n    rootcertbundle: {}\n",
                    dir.join("token.crt").display()
                ));
            }
        }
        std::fs::write(dir.join("config.yml"), config).unwrap();
        let log = std::fs::File::create(dir.join("registry.log")).unwrap();
        children.push(
            Command::new("docker-registry")
                .arg("serve")
                .arg(dir.join("config.yml"))
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("docker-registry is installed"),
        );
        let reg = PrivateRegistry {
            addr,
            dir,
            ca,
            user,
            password,
            children,
        };
        wait_until_up("registry", 30, &reg.dir.join("registry.log"), || {
            let mut c = Command::new("openssl");
            c.args(["s_client", "-connect"]).arg(&reg.addr);
            if !tls {
                // A plain TCP connect is enough: python is always there.
                c = Command::new("python3");
                c.args([
                    "-c",
                    &format!("import socket; socket.create_connection(('127.0.0.1', {port}))"),
                ]);
            }
            c
        });
        reg
    }

    /// A directory holding only `ca.crt`, as skopeo's `--dest-cert-dir` wants it (a `.key`
    /// there would be taken for a client key).
    pub fn cert_dir(&self) -> Option<PathBuf> {
        let ca = self.ca.as_ref()?;
        let dir = self.dir.join("skopeo-certs");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(ca, dir.join("ca.crt")).unwrap();
        Some(dir)
    }

    /// Copy `image` (a tag in the test dockerd) into this registry as `path:tag`, with skopeo
    /// and this registry's credentials and CA. Returns the reference in this registry.
    pub fn push(&self, image: &TestImage, path_tag: &str) -> String {
        let dest = format!("{}/{path_tag}", self.addr);
        let mut c = skopeo();
        c.args([
            "copy",
            "--quiet",
            "--src-daemon-host",
            &daemons().docker_host,
        ]);
        match self.cert_dir() {
            Some(d) => c.arg("--dest-cert-dir").arg(d),
            None => c.arg("--dest-tls-verify=false"),
        };
        c.arg(format!("--dest-creds={}:{}", self.user, self.password))
            .arg(format!("docker-daemon:{}", image.tag))
            .arg(format!("docker://{dest}"));
        run(&mut c);
        dest
    }

    /// The blob file of `digest` in this registry's storage.
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        blob_file(&self.dir.join("data"), digest)
    }
}

/// The data file of a blob in a docker-registry's filesystem storage rooted at `root`.
pub fn blob_file(root: &Path, digest: &str) -> PathBuf {
    let hex = digest.strip_prefix("sha256:").unwrap();
    root.join("docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data")
}

fn start_token_server(dir: &Path, user: &str, password: &str) -> (String, std::process::Child) {
    run(Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=offline-images test token issuer"])
        .arg("-keyout")
        .arg(dir.join("token.key"))
        .arg("-out")
        .arg(dir.join("token.crt")));
    let port_file = dir.join("token.port");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/registry/token_server.py");
    let log = std::fs::File::create(dir.join("token.log")).unwrap();
    let child = Command::new("python3")
        .arg(script)
        .arg(&port_file)
        .arg(dir.join("token.key"))
        .arg(dir.join("token.crt"))
        .args(["oi-token-issuer", "oi-registry", user, password])
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    for _ in 0..300 {
        if port_file.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let port = std::fs::read_to_string(&port_file).expect("the token server did not start");
    (format!("http://127.0.0.1:{}/token", port.trim()), child)
}

impl Drop for PrivateRegistry {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A docker config directory whose config.json is `json`, for `DOCKER_CONFIG`.
pub fn docker_config(json: &serde_json::Value) -> PathBuf {
    let dir = temp_dir("docker-config");
    std::fs::write(dir.join("config.json"), json.to_string()).unwrap();
    dir
}

/// A directory with only the programs `export` may need from PATH for the registry engine:
/// none of docker, podman or skopeo. `extra` are (name, script) pairs written into it.
pub fn bare_path(extra: &[(&str, &str)]) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = temp_dir("bare-path");
    for (name, script) in extra {
        let p = dir.join(name);
        std::fs::write(&p, script).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    dir
}

/// `offline-images export --engine registry` with PATH holding only `path` (no docker,
/// podman or skopeo) and a private, empty blob cache unless the caller sets one.
pub fn registry_export(output: &Path, path: &Path) -> Command {
    let mut c = offline_images();
    c.env("PATH", path)
        .env("HOME", temp_dir("home"))
        .env_remove("DOCKER_CONFIG")
        .env_remove("XDG_CACHE_HOME")
        .env_remove("DOCKER_HOST")
        .args(["export", "--engine", "registry", "--output"])
        .arg(output);
    c
}

/// An HTTP proxy on 127.0.0.1 in front of a plain-HTTP registry that misbehaves a set number
/// of times: the first `fail_manifests` manifest requests get `503`, and the first
/// `cut_blobs` blob downloads asked without `Range` are cut after `cut_after` body bytes.
/// Every request line (with its Range header, if any) is logged.
pub struct FlakyProxy {
    pub addr: String,
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl FlakyProxy {
    pub fn start(
        upstream: &str,
        fail_manifests: usize,
        cut_blobs: usize,
        cut_after: usize,
    ) -> FlakyProxy {
        use std::io::{Read, Write};
        use std::net::{TcpListener, TcpStream};
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        use std::sync::{Arc, Mutex};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (fails, cuts) = (
            Arc::new(AtomicUsize::new(fail_manifests)),
            Arc::new(AtomicUsize::new(cut_blobs)),
        );
        let (upstream, log2, stop2) = (upstream.to_string(), log.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                let Ok((mut client, _)) = listener.accept() else {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    continue;
                };
                let (upstream, log, fails, cuts) =
                    (upstream.clone(), log2.clone(), fails.clone(), cuts.clone());
                std::thread::spawn(move || {
                    client.set_nonblocking(false).unwrap();
                    // The request head (GET and HEAD requests only: no body).
                    let mut head = Vec::new();
                    let mut b = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        if client.read(&mut b).unwrap_or(0) == 0 {
                            return;
                        }
                        // A TLS handshake (a client trying HTTPS first): answered as a plain
                        // HTTP server answers it, as the registry behind does.
                        if head.is_empty() && b[0] == 0x16 {
                            let _ = client.write_all(b"HTTP/1.0 400 Bad Request\r\n\r\n");
                            return;
                        }
                        head.push(b[0]);
                    }
                    let text = String::from_utf8_lossy(&head).into_owned();
                    let line = text.lines().next().unwrap_or("").to_string();
                    let range = text
                        .lines()
                        .find(|l| l.to_ascii_lowercase().starts_with("range:"))
                        .map(str::to_string);
                    log.lock()
                        .unwrap()
                        .push(format!("{line} {}", range.clone().unwrap_or_default()));
                    let take = |n: &AtomicUsize| {
                        n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| v.checked_sub(1))
                            .is_ok()
                    };
                    if line.contains("/manifests/") && take(&fails) {
                        let _ = client.write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                        return;
                    }
                    let blob = line.contains("/blobs/sha256:") && range.is_none();
                    // One request per connection: the client opens a new one for the next.
                    let head = text.replacen("\r\n", "\r\nConnection: close\r\n", 1);
                    let Ok(mut server) = TcpStream::connect(&upstream) else {
                        return;
                    };
                    server.write_all(head.as_bytes()).unwrap();
                    let mut answer = Vec::new();
                    let _ = server.read_to_end(&mut answer);
                    // Only a body longer than the cut is cut (a small config passes whole).
                    let body_at = answer
                        .windows(4)
                        .position(|w| w == b"\r\n\r\n")
                        .map_or(0, |p| p + 4);
                    if blob && answer.len() > body_at + cut_after && take(&cuts) {
                        answer.truncate(body_at + cut_after);
                    }
                    let _ = client.write_all(&answer);
                });
            }
        });
        FlakyProxy { addr, log, stop }
    }

    pub fn requests(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for FlakyProxy {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}
