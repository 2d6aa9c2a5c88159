//! The daemons scripts/test.sh started: the default pair and the version matrix, and what a
//! test does when one it needs is missing.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use super::containerd::against_containerd;
use super::run::{offline_images, stdout_of};

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
        for (i, d) in all.iter().enumerate() {
            check_sockets(
                d,
                &if i == 0 {
                    "OI".into()
                } else {
                    format!("OI_MATRIX_{i}")
                },
            );
        }
        all
    })
}

/// Whether this is a CI run (`CI` set), where every precondition must be met.
fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty())
}

/// `d`'s containerd and dockerd each have a socket where the variables (`{prefix}_...`) say:
/// in CI one that is absent fails every test that reaches the daemons, naming it; outside CI
/// it is a warning, and only the tests that use that daemon fail.
fn check_sockets(d: &Daemons, prefix: &str) {
    use std::os::unix::fs::FileTypeExt;
    let docker = Path::new(
        d.docker_host
            .strip_prefix("unix://")
            .unwrap_or(&d.docker_host),
    );
    for (daemon, var, path) in [
        ("containerd", "CONTAINERD_SOCK", d.containerd_sock.as_path()),
        ("dockerd", "DOCKER_HOST", docker),
    ] {
        let socket = std::fs::metadata(path).is_ok_and(|m| m.file_type().is_socket());
        if !socket {
            let what = format!(
                "the {daemon} of {} has no socket at {} ({prefix}_{var}): scripts/test.sh starts it",
                d.label,
                path.display()
            );
            if in_ci() {
                missing_precondition(&what);
            }
            eprintln!("warning: {what}");
        }
    }
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

/// [`matrix`] for a test that must hold on every version: every version line scripts/test.sh
/// knows (`OI_MATRIX_KNOWN`, set by scripts/lib.sh's `oi_start_matrix` whatever `OI_VERSIONS`
/// chose) that this run did not start is a [`missing_precondition`], so in CI a test "on every
/// version" never passes on fewer; a narrowed run says so and runs on what it has.
pub fn every_version() -> &'static [Daemons] {
    let all = matrix();
    let known = std::env::var("OI_MATRIX_KNOWN").ok();
    let started: Vec<&str> = all.iter().map(|d| d.label.as_str()).collect();
    let absent: Vec<&str> = known
        .as_deref()
        .unwrap_or_default()
        .split_whitespace()
        .filter(|label| !started.contains(label))
        .collect();
    let chosen = std::env::var("OI_VERSIONS").unwrap_or_else(|_| "unset".into());
    if known.is_none() {
        missing_precondition(&format!(
            "the version matrix is unknown (OI_MATRIX_KNOWN is unset: scripts/test.sh sets it); \
             this run has {} only",
            started.join(", ")
        ));
    } else if !absent.is_empty() {
        missing_precondition(&format!(
            "versions of the matrix not started in this run (OI_VERSIONS={chosen}): {}; this run \
             has {} only",
            absent.join(", "),
            started.join(", ")
        ));
    }
    all
}

/// A test whose precondition is missing (a daemon version, a tool the run did not fetch)
/// fails in CI (`CI` set), naming what is missing, so a shrunk matrix is never a pass; when a
/// developer narrowed the run on purpose (`OI_VERSIONS`, `OI_PODMAN` unset), it says so on
/// stderr and the caller returns.
pub fn missing_precondition(what: &str) {
    if in_ci() {
        panic!("missing precondition in CI: {what}");
    }
    eprintln!("SKIPPED (narrowed run): {what}");
}
