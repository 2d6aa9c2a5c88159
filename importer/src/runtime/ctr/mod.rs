//! containerd, driven through the node's own `ctr` (or `k3s ctr` / `k0s ctr`).
//!
//! With `--host-root` the node's `ctr` is found under that directory and run chrooted into
//! it, so it uses the node's own libraries and speaks the node's containerd version; it is
//! given the socket's node path. The archive reaches `ctr images import -` on its stdin,
//! already decompressed, while the same bytes pass through the archive reader (one pass:
//! `feed`), and containerd's socket is watched meanwhile (`watch`). ctr's stdout is read in
//! `output`, its words on stderr in `said` alone.

pub(crate) mod feed;
mod output;
mod said;
pub(crate) mod watch;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use self::feed::{feed, Fed};
use self::said::CtrSaid;
use self::watch::{read_capped, SocketWatch, GONE_AFTER};
use super::{chroot, content, socket, Container, Imported, Present, Runtime, Unreachable};
use crate::archive::{ArchiveInfo, Platform};
use crate::child::Helper;
use crate::failure::{Failure, Kind};

/// Where nodes keep `ctr`: distribution packages, RKE2, k3s, MicroK8s, k0s, Flatcar/Talos-like
/// layouts. Searched under `--host-root` in this order.
pub const NODE_BIN_DIRS: &[&str] = &[
    "/usr/local/bin",
    "/usr/bin",
    "/bin",
    "/usr/local/sbin",
    "/usr/sbin",
    "/sbin",
    "/var/lib/rancher/rke2/bin",
    "/var/lib/rancher/k3s/data/current/bin",
    "/snap/microk8s/current/bin",
    "/var/lib/k0s/bin",
    "/opt/bin",
    "/opt/containerd/bin",
];

/// How long ctr may take to exit once its stdin is closed, before it is killed. Generous: a
/// finished import unpacks the layers before ctr exits.
const CTR_EXIT_WAIT: Duration = Duration::from_secs(3600);

/// How long to wait for a failed import's partial uploads to be cleared.
const INGEST_SETTLE: Duration = Duration::from_secs(15);

pub struct Containerd {
    /// Socket as this process sees it (for probing).
    socket: PathBuf,
    /// Socket as `ctr` sees it (the node path when chrooted).
    node_socket: PathBuf,
    namespace: String,
    host_root: Option<PathBuf>,
    /// Program (a node path when chrooted) and leading arguments, e.g. `k3s ctr`.
    program: PathBuf,
    leading: Vec<OsString>,
    /// Where the program was found, as this process sees it.
    found_at: PathBuf,
    version: String,
    platform: Platform,
}

impl Containerd {
    /// Find `ctr` for the containerd at `socket` (`node_socket` on the node).
    pub fn new(
        socket: &Path,
        node_socket: &Path,
        namespace: &str,
        host_root: Option<&Path>,
    ) -> Result<Containerd> {
        let (found_at, leading) = find_ctr(host_root)?;
        let program = match host_root {
            Some(root) => Path::new("/").join(found_at.strip_prefix(root).unwrap_or(&found_at)),
            None => found_at.clone(),
        };
        let mut c = Containerd {
            socket: socket.to_path_buf(),
            node_socket: node_socket.to_path_buf(),
            namespace: namespace.to_string(),
            host_root: host_root.map(Path::to_path_buf),
            program,
            leading,
            found_at,
            version: String::new(),
            platform: Platform::host(),
        };
        c.version = match c.output(&["version"]) {
            Ok(out) => output::server_version(&out).unwrap_or_else(|| "version unknown".into()),
            Err(e) if super::is_unreachable(&e) => return Err(e),
            Err(e) => return Err(e.context("ctr cannot talk to containerd")),
        };
        Ok(c)
    }

    /// `ctr -a SOCK -n NS`, chrooted into the host root when there is one.
    fn command(&self) -> Command {
        let mut cmd = match &self.host_root {
            Some(root) => chroot::command(root, &self.program),
            None => Command::new(&self.program),
        };
        cmd.args(&self.leading)
            .arg("-a")
            .arg(&self.node_socket)
            .arg("-n")
            .arg(&self.namespace);
        cmd
    }

    fn ctr_name(&self) -> String {
        let mut s = self.found_at.display().to_string();
        for a in &self.leading {
            s.push(' ');
            s.push_str(&a.to_string_lossy());
        }
        s
    }

    /// A quick check before each `ctr` run: ctr itself waits 10 s before it gives up on a
    /// socket that is gone.
    fn reachable(&self) -> Result<()> {
        match socket::probe_socket(&self.socket) {
            None => Ok(()),
            Some(problem) => Err(Unreachable(format!(
                "containerd socket {} {problem}",
                self.socket.display()
            ))
            .into()),
        }
    }

    /// Run a short `ctr` command and return its stdout.
    fn output(&self, args: &[&str]) -> Result<String> {
        self.reachable()?;
        let mut cmd = self.command();
        cmd.args(args).stdin(Stdio::null());
        let out = cmd
            .output()
            .with_context(|| format!("cannot run {}", self.ctr_name()))?;
        if !out.status.success() {
            return Err(self.ctr_error(
                args.first().copied().unwrap_or(""),
                out.status,
                &out.stderr,
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// What `ctr` said when it failed, classified: an unreachable socket is worth a retry.
    fn ctr_error(&self, what: &str, status: ExitStatus, stderr: &[u8]) -> anyhow::Error {
        let text = String::from_utf8_lossy(stderr);
        let text = text.trim().trim_start_matches("ctr: ");
        let said = if text.is_empty() {
            format!("ctr {what} exited with {status} and printed nothing")
        } else {
            format!("ctr {what}: {text}")
        };
        match said::classify(text) {
            CtrSaid::PartialUploadLost { race } => {
                let msg = format!(
                    "{said} (containerd may still have held a partial upload of this layer from an \
                     interrupted import; running the import again usually succeeds)"
                );
                if race {
                    Failure::error(Kind::Race, msg)
                } else {
                    anyhow!(msg)
                }
            }
            CtrSaid::ConnectionClosed => Failure::error(
                Kind::Unreachable,
                format!(
                    "containerd at {} closed the connection during the import (was it restarted \
                     or killed?); nothing of this archive was kept, run the import again: {said}",
                    self.socket.display()
                ),
            ),
            CtrSaid::DiskFull => Failure::error(
                Kind::Disk,
                format!(
                    "the disk holding containerd's root is full (no space left on device): free \
                     space on the node and run the import again; {said}"
                ),
            ),
            CtrSaid::Unreachable => Unreachable(format!(
                "containerd at {} is unreachable ({said})",
                self.socket.display()
            ))
            .into(),
            CtrSaid::LostRace(_) => Failure::error(Kind::Race, said),
            CtrSaid::AlreadyExists | CtrSaid::Other => anyhow!(said),
        }
    }

    /// After a failed import, wait (a few seconds at most) for containerd to drop the partial
    /// uploads ("ingests") that ctr left. ctr names them after the archive's entries and a
    /// later import of the same archive would resume one of them, which ctr 1.6 gets wrong
    /// ("content digest ...: not found"). A ctr that fails on its own releases them at once;
    /// containerd removes them at its next garbage collection, moments later.
    fn settle_ingests(&self) {
        let active = || -> Vec<String> {
            self.output(&["content", "active"])
                .map(|out| output::archive_ingests(&out))
                .unwrap_or_default()
        };
        let left = active();
        let end = Instant::now() + INGEST_SETTLE;
        while !left.is_empty() && Instant::now() < end {
            thread::sleep(Duration::from_millis(200));
            let now = active();
            if !left.iter().any(|r| now.contains(r)) {
                return;
            }
        }
    }

    /// `ctr` keeps an OCI archive's `org.opencontainers.image.ref.name` as it is (e.g.
    /// `oi/app:1`), but kubelet asks for `docker.io/oi/app:1`: such an image is re-tagged
    /// under its normalised name, and the short name removed.
    fn normalized(&self, name: &str) -> Result<String> {
        if name.contains('@') && !name.contains('/') {
            // `import-2026-01-01@sha256:…`: the name ctr gives an untagged image.
            return Ok(name.to_string());
        }
        let Ok(full) = crate::reference::normalize(name) else {
            return Ok(name.to_string());
        };
        if full == name {
            return Ok(full);
        }
        self.output(&["images", "tag", "--force", name, &full])
            .with_context(|| format!("cannot tag {name} as {full}"))?;
        self.output(&["images", "rm", name])
            .with_context(|| format!("cannot remove the short name {name}"))?;
        Ok(full)
    }

    /// After a successful import: the names ctr gave (normalised), less the digest records it
    /// added beside them.
    fn after_import(
        &self,
        info: ArchiveInfo,
        stdout: &[u8],
        before: &HashSet<String>,
    ) -> Result<Imported> {
        let mut names = Vec::new();
        for name in output::unpacking_names(stdout) {
            names.push(self.normalized(name)?);
        }
        let dropped = self.drop_digest_records(&info, before)?;
        names.retain(|n| !dropped.contains(n));
        Ok(Imported {
            info,
            names,
            detail: None,
        })
    }

    /// After a failed import: the error to report, once what ctr left has been cleared.
    fn after_failure(
        &self,
        e: anyhow::Error,
        archive_at_fault: bool,
        stdout: &[u8],
        stderr: &[u8],
    ) -> anyhow::Error {
        // ctr's words for a containerd that went away vary ("EOF", "transport is closing",
        // ...): a socket that no longer answers says it plainly.
        if !archive_at_fault {
            if let Some(problem) = socket::probe_socket(&self.socket) {
                return anyhow!(
                    "containerd at {} went away during the import (its socket {problem}); \
                     nothing of this archive was kept, run the import again once containerd \
                     is back: {e:#}",
                    self.socket.display()
                );
            }
        }
        self.settle_ingests();
        // Another import created the same name at the same moment ("already exists"): the
        // name is that import's image, not a half-imported one of this archive.
        if said::classify(&String::from_utf8_lossy(stderr)).made_by_another() {
            return e;
        }
        // ctr creates the image before it unpacks it: an unpack that fails (a full disk)
        // leaves the name listed, pointing to an image that was never unpacked, and holding
        // its content. Such names are removed, so that nothing half imported is listed and
        // containerd can free the space.
        let mut removed = Vec::new();
        // --sync: containerd has collected the content before the next archive starts.
        for name in output::unpacking_names(stdout) {
            if self.output(&["images", "rm", "--sync", name]).is_ok() {
                removed.push(name.to_string());
            }
        }
        if removed.is_empty() {
            return e;
        }
        e.context(format!(
            "the image ctr had created before failing ({}) was removed",
            removed.join(", ")
        ))
    }

    /// The image names listed now.
    fn image_names(&self) -> HashSet<String> {
        self.output(&["images", "ls", "-q"])
            .map(|o| o.lines().map(str::to_string).collect())
            .unwrap_or_default()
    }

    /// ctr 2.x's `--skip-digest-for-named` no longer skips images named by a docker-archive's
    /// `manifest.json`: beside each name it leaves an `import-<date>@sha256:…` record of the
    /// same image. Those records the archive did not ask for are removed (the named record
    /// keeps the content); an untagged image's digest record stays, as it is its only name.
    fn drop_digest_records(
        &self,
        info: &ArchiveInfo,
        before: &HashSet<String>,
    ) -> Result<Vec<String>> {
        let named: Vec<String> = info.images.iter().flat_map(|i| i.names.clone()).collect();
        if named.is_empty() {
            return Ok(Vec::new());
        }
        let listing = self.output(&["images", "ls"])?;
        let extra = output::digest_records_to_drop(&listing, &named, before);
        for name in &extra {
            self.output(&["images", "rm", name])
                .with_context(|| format!("cannot remove the image record {name} ctr added"))?;
        }
        Ok(extra)
    }

    /// Content labels by digest (`ctr content ls`): manifests carry their config's digest.
    fn content_labels(&self) -> Result<content::Labels> {
        Ok(output::content_labels(&self.output(&["content", "ls"])?))
    }
}

/// Find the node's `ctr`: `ctr` itself, else a `k3s` or `k0s` binary that embeds it.
fn find_ctr(host_root: Option<&Path>) -> Result<(PathBuf, Vec<OsString>)> {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    let search = match host_root {
        Some(root) => Some(std::env::join_paths(
            NODE_BIN_DIRS
                .iter()
                .map(|d| socket::local_path(Some(root), Path::new(d))),
        )?),
        None => None,
    };
    let lookup = |name: &str| -> Option<PathBuf> {
        match &search {
            Some(paths) => which::which_in(name, Some(paths), &cwd).ok(),
            None => which::which(name).ok(),
        }
    };
    if let Some(p) = lookup("ctr") {
        return Ok((p, Vec::new()));
    }
    for multi in ["k3s", "k0s"] {
        if let Some(p) = lookup(multi) {
            return Ok((p, vec![OsString::from("ctr")]));
        }
    }
    match host_root {
        Some(root) => bail!(
            "containerd answers, but no ctr (nor k3s/k0s) was found on the node under {} in {}",
            root.display(),
            NODE_BIN_DIRS.join(", ")
        ),
        None => bail!(
            "containerd answers, but no ctr (nor k3s/k0s) is on PATH; \
             give --host-root with the node's root mounted to use the node's own ctr"
        ),
    }
}

impl Runtime for Containerd {
    fn kind(&self) -> &'static str {
        "containerd"
    }

    fn describe(&self) -> String {
        format!(
            "{} via {} (socket {}, namespace {})",
            self.version,
            self.ctr_name(),
            self.node_socket.display(),
            self.namespace
        )
    }

    fn present(&self) -> Result<Vec<Present>> {
        let images = self.output(&["images", "ls"])?;
        let content = self.content_labels()?;
        let mut out = Vec::new();
        for row in output::image_rows(&images) {
            out.push(Present {
                name: row.name.to_string(),
                config_digest: content::config_of(row.target, &content, &self.platform, |d| {
                    self.output(&["content", "get", d])
                        .ok()
                        .map(String::into_bytes)
                }),
                labels: row.labels,
            });
        }
        Ok(out)
    }

    /// From `ctr content ls`, which lists the namespace's blobs.
    fn holds(&self, digests: &[&str]) -> Result<Option<BTreeSet<String>>> {
        let content = self.content_labels()?;
        Ok(Some(
            digests
                .iter()
                .filter(|d| content.contains_key(**d))
                .map(|d| d.to_string())
                .collect(),
        ))
    }

    fn import(&self, tar: &mut dyn Read, platform: &Platform) -> Result<Imported> {
        self.reachable()?;
        // The records before the import: only those ctr adds now may be dropped after it.
        let before = self.image_names();
        let mut cmd = self.command();
        cmd.args(["images", "import", "--digests", "--skip-digest-for-named"])
            .arg("--platform")
            .arg(platform.to_string())
            .arg("-")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot run {}", self.ctr_name()))?;
        let stdin = child.stdin.take().expect("stdin is piped");
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let ctr = Helper::new(child);
        let (out_reader, err_reader) = (
            thread::spawn(move || read_capped(stdout)),
            thread::spawn(move || read_capped(stderr)),
        );
        let watch = SocketWatch::start(&self.socket, ctr.killer());
        // By now ctr's stdin is closed in every case: it finishes, or fails on its own.
        // Looked up only for an image whose layers are not all in the archive (an upgrade
        // bundle's): containerd must have the others already.
        let content = std::cell::OnceCell::new();
        let held = |digest: &str| {
            content
                .get_or_init(|| self.content_labels().unwrap_or_default())
                .contains_key(digest)
        };
        let result = feed(stdin, tar, platform, &held);
        let status = ctr.wait_or_kill(CTR_EXIT_WAIT);
        let gone = watch.stop();
        drop(ctr);
        let stdout = out_reader.join().unwrap_or_default();
        let stderr = err_reader.join().unwrap_or_default();
        let status = status.context("cannot wait for ctr")?;
        if let Some(problem) = gone {
            return Err(anyhow!(
                "containerd at {} stopped answering during the import (its socket {problem} for \
                 {} s), so ctr was stopped; nothing of this archive was kept, run the import again \
                 once containerd is back",
                self.socket.display(),
                GONE_AFTER.as_secs()
            ));
        }
        let archive_at_fault = matches!(result, Err(Fed::Archive(_)));
        let outcome = match result {
            Err(Fed::Archive(e)) => Err(e),
            // ctr stopped reading: its stderr says why (never a bare "broken pipe").
            Err(Fed::CtrStopped) => Err(self.ctr_error("images import", status, &stderr)),
            Ok(_) if !status.success() => Err(self.ctr_error("images import", status, &stderr)),
            Ok(info) => Ok(info),
        };
        match outcome {
            Ok(info) => self.after_import(info, &stdout, &before),
            Err(e) => Err(self.after_failure(e, archive_at_fault, &stdout, &stderr)),
        }
    }

    fn label(&self, names: &[String], labels: &BTreeMap<String, String>) -> Result<()> {
        let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        for name in names {
            let mut args = vec!["images", "label", name.as_str()];
            args.extend(pairs.iter().map(String::as_str));
            self.output(&args)
                .with_context(|| format!("cannot label {name}"))?;
        }
        Ok(())
    }

    fn containers(&self) -> Result<Vec<Container>> {
        let out = self
            .output(&["containers", "ls"])
            .context("cannot list containers")?;
        Ok(output::parse_containers(&out))
    }

    fn unlabel(&self, name: &str, keys: &[String]) -> Result<()> {
        // `ctr images label NAME key=` clears the label.
        let mut args = vec!["images".to_string(), "label".into(), name.into()];
        args.extend(keys.iter().map(|k| format!("{k}=")));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.output(&args)
            .with_context(|| format!("cannot remove labels of {name}"))?;
        Ok(())
    }

    fn remove(&self, name: &str) -> Result<()> {
        self.output(&["images", "rm", name])
            .with_context(|| format!("cannot remove {name}"))?;
        Ok(())
    }
}
