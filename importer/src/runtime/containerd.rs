//! containerd, driven through the node's own `ctr` (or `k3s ctr` / `k0s ctr`).
//!
//! With `--host-root` the node's `ctr` is found under that directory and run chrooted into
//! it, so it uses the node's own libraries and speaks the node's containerd version; it is
//! given the socket's node path. The archive reaches `ctr images import -` on its stdin,
//! already decompressed, while the same bytes pass through [`inspect_stream`] (one pass).

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use super::{chroot, content, socket, Container, Imported, Present, Runtime, Unreachable};
use crate::archive::{inspect_stream_detailed, ArchiveInfo, Compression, Limits, Platform};
use crate::child::{Helper, Killer};
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

/// The last bytes of an archive are held back from `ctr` until the whole archive has been
/// read and checked: `ctr` cannot finish an import before it has seen the end of the tar,
/// so a bad or unsuitable archive is stopped (ctr killed) before it creates any image.
const HOLD_BACK: usize = 64 * 1024;

/// Bytes are written to ctr's stdin in chunks at least this large.
const CHUNK: usize = 256 * 1024;

/// How long ctr may take to exit once its stdin is closed, before it is killed. Generous: a
/// finished import unpacks the layers before ctr exits.
const CTR_EXIT_WAIT: Duration = Duration::from_secs(3600);

/// How long to wait for a failed import's partial uploads to be cleared.
const INGEST_SETTLE: Duration = Duration::from_secs(15);

/// While an import runs, the socket is probed this often; when containerd has stopped
/// answering for [`GONE_AFTER`], ctr is killed: ctr's own calls may wait for a containerd that
/// never comes back, and the run must not hang with them.
const WATCH_EVERY: Duration = Duration::from_secs(1);
const GONE_AFTER: Duration = Duration::from_secs(5);

/// Keep at most this much of ctr's stderr for the error message.
const STDERR_MAX: usize = 16 * 1024;

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
            Ok(out) => server_version(&out).unwrap_or_else(|| "version unknown".into()),
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
        let unreachable = [
            "failed to dial",
            "error while dialing",
            "connection refused",
        ]
        .iter()
        .any(|s| text.contains(s));
        let race = lost_a_race(text);
        let as_race = |msg: String| {
            if race {
                Failure::error(Kind::Race, msg)
            } else {
                anyhow!(msg)
            }
        };
        if text.contains("failed to resolve layers") && text.contains("not found") {
            // Seen when a partial upload of the same layer, left by an import that was cut
            // short, was still held by containerd: ctr 1.6 resumes it and loses the layer.
            return as_race(format!(
                "{said} (containerd may still have held a partial upload of this layer from an \
                 interrupted import; running the import again usually succeeds)"
            ));
        }
        // containerd went away in the middle of the import (killed, crashed, restarted).
        let lost = [
            "transport is closing",
            "error reading from server",
            "connection reset",
            "code = Unavailable",
        ]
        .iter()
        .any(|s| text.contains(s));
        if lost && !unreachable {
            return Failure::error(
                Kind::Unreachable,
                format!(
                    "containerd at {} closed the connection during the import (was it restarted \
                     or killed?); nothing of this archive was kept, run the import again: {said}",
                    self.socket.display()
                ),
            );
        }
        if text.contains("no space left on device") {
            return Failure::error(
                Kind::Disk,
                format!(
                    "the disk holding containerd's root is full (no space left on device): free \
                     space on the node and run the import again; {said}"
                ),
            );
        }
        if unreachable {
            Unreachable(format!(
                "containerd at {} is unreachable ({said})",
                self.socket.display()
            ))
            .into()
        } else {
            as_race(said)
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
                .map(|out| {
                    out.lines()
                        .skip(1)
                        .filter_map(|l| l.split_whitespace().next())
                        .filter(|r| r.starts_with("tar-"))
                        .map(str::to_string)
                        .collect()
                })
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
        for name in unpacking_names(stdout) {
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
        if String::from_utf8_lossy(stderr).contains("already exists") {
            return e;
        }
        // ctr creates the image before it unpacks it: an unpack that fails (a full disk)
        // leaves the name listed, pointing to an image that was never unpacked, and holding
        // its content. Such names are removed, so that nothing half imported is listed and
        // containerd can free the space.
        let mut removed = Vec::new();
        // --sync: containerd has collected the content before the next archive starts.
        for name in unpacking_names(stdout) {
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
        let extra = digest_records_to_drop(&listing, &named, before);
        for name in &extra {
            self.output(&["images", "rm", name])
                .with_context(|| format!("cannot remove the image record {name} ctr added"))?;
        }
        Ok(extra)
    }

    /// Content labels by digest (`ctr content ls`): manifests carry their config's digest.
    fn content_labels(&self) -> Result<content::Labels> {
        let out = self.output(&["content", "ls"])?;
        Ok(out
            .lines()
            .skip(1)
            .filter_map(|line| {
                let mut it = line.split_whitespace();
                let digest = it.next()?;
                let labels = it.next_back()?;
                Some((
                    digest.to_string(),
                    parse_labels(labels).into_iter().collect(),
                ))
            })
            .collect())
    }
}

/// In a `ctr images ls` listing, the `import-…@sha256:D` records whose image is also listed
/// under one of `named`, that were not there `before` and carry no labels (an untagged
/// archive imported earlier keeps its digest record: it is labelled with that archive).
fn digest_records_to_drop(
    listing: &str,
    named: &[String],
    before: &HashSet<String>,
) -> Vec<String> {
    // (name, target, added by this import and unlabelled)
    let records: Vec<(&str, &str, bool)> = listing
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3).then(|| (f[0], f[2], !before.contains(f[0]) && f.last() == Some(&"-")))
        })
        .collect();
    let named_targets: Vec<&str> = records
        .iter()
        .filter(|(name, _, _)| named.iter().any(|n| n == name))
        .map(|(_, target, _)| *target)
        .collect();
    records
        .iter()
        .filter(|(name, target, new)| {
            *new && name.starts_with("import-")
                && name.split_once('@').map(|(_, d)| d) == Some(*target)
                && named_targets.contains(target)
        })
        .map(|(name, _, _)| name.to_string())
        .collect()
}

/// ctr 1.6's words when two imports at once trip over each other. Writing the same layer, one
/// can take the other's upload (ctr names an upload after the archive's entry): the loser
/// fails with "content digest ...: not found". Creating the same image name, both find it
/// absent and the second create fails with `image "...": already exists`. Nothing is wrong
/// with the archive.
fn lost_a_race(ctr_said: &str) -> bool {
    (ctr_said.contains("content digest") && ctr_said.contains("not found"))
        || (ctr_said.contains("image \"") && ctr_said.contains("\": already exists"))
}

/// `k=v,k=v` (or `-`) as `ctr` prints labels.
fn parse_labels(s: &str) -> BTreeMap<String, String> {
    if s == "-" {
        return BTreeMap::new();
    }
    s.split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The server version from `ctr version`.
fn server_version(out: &str) -> Option<String> {
    let server = out.split("Server:").nth(1)?;
    let line = server
        .lines()
        .find(|l| l.trim_start().starts_with("Version:"))?;
    Some(format!(
        "containerd {}",
        line.trim_start().trim_start_matches("Version:").trim()
    ))
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
        for line in images.lines().skip(1) {
            // REF TYPE DIGEST SIZE PLATFORMS LABELS; SIZE has a space in it ("1.9 MiB").
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 4 {
                continue;
            }
            let target = fields[2];
            out.push(Present {
                name: fields[0].to_string(),
                config_digest: content::config_of(target, &content, &self.platform, |d| {
                    self.output(&["content", "get", d])
                        .ok()
                        .map(String::into_bytes)
                }),
                labels: parse_labels(fields[fields.len() - 1]),
            });
        }
        Ok(out)
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
        let result = self.feed(stdin, tar, platform);
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
        Ok(parse_containers(&out))
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

/// `ctr containers ls`: CONTAINER IMAGE RUNTIME, with `-` for a container without image.
fn parse_containers(out: &str) -> Vec<Container> {
    out.lines()
        .skip(1)
        .filter_map(|line| {
            let mut it = line.split_whitespace();
            let id = it.next()?.to_string();
            let image = match it.next() {
                Some("-") | None => String::new(),
                Some(i) => i.to_string(),
            };
            Some(Container { id, image })
        })
        .collect()
}

/// Why feeding an archive to ctr stopped.
enum Fed {
    /// The archive is bad or unsuitable (our reading of it failed).
    Archive(anyhow::Error),
    /// ctr stopped reading its stdin.
    CtrStopped,
}

impl Containerd {
    /// Stream `tar` into ctr's stdin while inspecting it; release the held-back tail (and
    /// so let ctr finish) only when the archive read cleanly and has an image for `platform`.
    fn feed(
        &self,
        stdin: ChildStdin,
        tar: &mut dyn Read,
        platform: &Platform,
    ) -> Result<ArchiveInfo, Fed> {
        grow_pipe(&stdin);
        let mut tee = Tee {
            src: tar,
            sink: HoldBack::new(stdin),
            sink_failed: false,
        };
        // On failure ctr is made to fail on its own (see `HoldBack::abort`), so that it
        // cleans up after itself: a killed ctr leaves a half-written ingest behind that
        // makes the next import of the same layer fail.
        let inspected = inspect_stream_detailed(&mut tee, Compression::None, Limits::default());
        if tee.sink_failed {
            return Err(Fed::CtrStopped);
        }
        let (info, index) = match inspected.and_then(|i| {
            let index = i.oci_index_for_containerd()?.map(|x| (i.end_of_entries, x));
            Ok((i.info, index))
        }) {
            Ok(i) => i,
            Err(e) => {
                tee.sink.abort();
                return Err(Fed::Archive(e));
            }
        };
        if !info
            .images
            .iter()
            .any(|i| i.for_platform(platform).is_some())
        {
            tee.sink.abort();
            return Err(Fed::Archive(anyhow!("{}", info.no_image_for(platform))));
        }
        let committed = match index {
            Some((end, index)) => tee.sink.commit_with_entry(end, "index.json", &index),
            None => tee.sink.commit(),
        };
        match committed {
            Ok(()) => Ok(info),
            Err(_) => Err(Fed::CtrStopped),
        }
    }
}

/// Passes what it reads from `src` on to `sink`.
struct Tee<'a> {
    src: &'a mut dyn Read,
    sink: HoldBack<ChildStdin>,
    sink_failed: bool,
}

impl Read for Tee<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.src.read(buf)?;
        if n > 0 {
            if let Err(e) = self.sink.write(&buf[..n]) {
                self.sink_failed = true;
                return Err(io::Error::new(e.kind(), "ctr stopped reading the archive"));
            }
        }
        Ok(n)
    }
}

/// Writes through to `inner` all but the last [`HOLD_BACK`] bytes, until [`HoldBack::commit`].
/// Bytes are passed on in chunks of at least [`CHUNK`], so the pipe sees few large writes
/// whatever size the reads are.
struct HoldBack<W: Write> {
    inner: Option<W>,
    tail: VecDeque<u8>,
    /// Bytes passed on to `inner` so far.
    delivered: u64,
}

impl<W: Write> HoldBack<W> {
    fn new(inner: W) -> HoldBack<W> {
        HoldBack {
            inner: Some(inner),
            tail: VecDeque::with_capacity(HOLD_BACK + CHUNK * 2),
            delivered: 0,
        }
    }

    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        let total = self.tail.len() + data.len();
        if total < HOLD_BACK + CHUNK {
            self.tail.extend(data);
            return Ok(());
        }
        let inner = self.inner.as_mut().ok_or(io::ErrorKind::BrokenPipe)?;
        let out = total - HOLD_BACK;
        let from_tail = out.min(self.tail.len());
        let (a, b) = self.tail.as_slices();
        let from_a = from_tail.min(a.len());
        inner.write_all(&a[..from_a])?;
        inner.write_all(&b[..from_tail - from_a])?;
        self.tail.drain(..from_tail);
        inner.write_all(&data[..out - from_tail])?;
        self.tail.extend(&data[out - from_tail..]);
        self.delivered += out as u64;
        Ok(())
    }

    /// Send the held-back bytes and close the stream.
    fn commit(&mut self) -> io::Result<()> {
        let mut inner = self.inner.take().ok_or(io::ErrorKind::BrokenPipe)?;
        let (a, b) = self.tail.as_slices();
        inner.write_all(a)?;
        inner.write_all(b)?;
        self.tail.clear();
        inner.flush()
    }

    /// Send the held-back bytes up to `end` (where the archive's last entry ends), then an
    /// entry `name` holding `data`, then the end-of-archive blocks, and close the stream.
    fn commit_with_entry(&mut self, end: u64, name: &str, data: &[u8]) -> io::Result<()> {
        let held = self.tail.len() as u64;
        if end < self.delivered || end > self.delivered + held {
            self.abort();
            return Err(io::Error::other(
                "the archive's last entry ends outside the bytes held back",
            ));
        }
        self.tail.truncate((end - self.delivered) as usize);
        let mut header = tar::Header::new_ustar();
        header.set_path(name)?;
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        self.tail.extend(header.as_bytes());
        self.tail.extend(data);
        let pad = (512 - data.len() % 512) % 512 + 1024;
        self.tail.extend(std::iter::repeat_n(0u8, pad));
        self.commit()
    }

    /// End the stream so that the reader fails: tar entries and headers are 512-byte blocks,
    /// so a stream that stops short of a block boundary is always a truncated archive (an
    /// end exactly on a boundary could pass for a shorter, complete one). The held-back tail,
    /// which holds the archive's end, is never sent.
    fn abort(&mut self) {
        if let Some(mut inner) = self.inner.take() {
            if self.delivered % 512 == 0 {
                let _ = inner.write_all(&[0xff]);
            }
        }
        self.tail.clear();
    }
}

/// The names `ctr images import` said it was unpacking (`unpacking NAME (sha256:...)...`).
fn unpacking_names(stdout: &[u8]) -> Vec<&str> {
    std::str::from_utf8(stdout)
        .unwrap_or("")
        .lines()
        .filter_map(|l| l.strip_prefix("unpacking ")?.split_once(" ("))
        .map(|(name, _)| name)
        .collect()
}

/// Probes the socket while ctr runs, and kills ctr when containerd has been gone too long.
struct SocketWatch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: thread::JoinHandle<Option<String>>,
}

impl SocketWatch {
    fn start(socket: &Path, ctr: Killer) -> SocketWatch {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let socket = socket.to_path_buf();
        let thread = thread::spawn(move || {
            let mut since: Option<Instant> = None;
            while !flag.load(Ordering::SeqCst) {
                match socket::probe_socket(&socket) {
                    None => since = None,
                    Some(problem) => {
                        let t = *since.get_or_insert_with(Instant::now);
                        if t.elapsed() >= GONE_AFTER {
                            // Through ctr's owner: never a pid that was already reaped.
                            ctr.kill();
                            return Some(problem);
                        }
                    }
                }
                let end = Instant::now() + WATCH_EVERY;
                while Instant::now() < end && !flag.load(Ordering::SeqCst) {
                    thread::sleep(Duration::from_millis(50));
                }
            }
            None
        });
        SocketWatch { stop, thread }
    }

    /// Stop watching; what was wrong with the socket if ctr was killed for it.
    fn stop(self) -> Option<String> {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.thread.join().unwrap_or(None)
    }
}

fn read_capped(r: Option<impl Read>) -> Vec<u8> {
    let Some(mut r) = r else { return Vec::new() };
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match r.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if kept.len() < STDERR_MAX {
                    kept.extend_from_slice(&buf[..n.min(STDERR_MAX - kept.len())]);
                }
            }
        }
    }
    kept
}

/// Ask for a 1 MiB pipe to ctr instead of the default 64 KiB: fewer wake-ups of both sides
/// per archive (switching back in after each blocked write is a large share of the
/// importer's own time). Best effort: the kernel may cap it (`/proc/sys/fs/pipe-max-size`).
fn grow_pipe(pipe: &ChildStdin) {
    use std::os::fd::AsRawFd;
    let _ = nix::fcntl::fcntl(
        pipe.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETPIPE_SZ(1 << 20),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctr_losing_a_layer_or_name_race_to_a_parallel_import_is_told_apart() {
        assert!(lost_a_race("content digest sha256:ab: not found"));
        assert!(lost_a_race(
            "image \"docker.io/oi-test/dup:1\": already exists"
        ));
        assert!(!lost_a_race("failed to read: unexpected EOF"));
        assert!(!lost_a_race("image \"x\": not found"));
    }

    #[test]
    fn labels_are_read_as_ctr_prints_them() {
        let l = parse_labels("io.cri-containerd.pinned=pinned,a=b=c");
        assert_eq!(l["io.cri-containerd.pinned"], "pinned");
        assert_eq!(l["a"], "b=c");
        assert!(parse_labels("-").is_empty());
    }

    /// A writer the test can look into after the HoldBack has consumed it.
    #[derive(Clone, Default)]
    struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_end_of_the_stream_is_held_back_until_commit() {
        let out = Shared::default();
        let mut h = HoldBack::new(out.clone());
        let data: Vec<u8> = (0..HOLD_BACK * 5 + 123).map(|i| i as u8).collect();
        for chunk in data.chunks(10_000) {
            h.write(chunk).unwrap();
        }
        let passed = out.0.lock().unwrap().len();
        assert!(passed <= data.len() - HOLD_BACK, "{passed}");
        assert_eq!(&out.0.lock().unwrap()[..], &data[..passed]);
        h.commit().unwrap();
        assert_eq!(&out.0.lock().unwrap()[..], &data[..]);
    }

    #[test]
    fn an_aborted_stream_never_ends_on_a_tar_block_boundary() {
        for len in [
            HOLD_BACK + CHUNK,
            HOLD_BACK + CHUNK + 512 * 3,
            HOLD_BACK * 3 + 1,
        ] {
            let out = Shared::default();
            let mut h = HoldBack::new(out.clone());
            h.write(&vec![0u8; len]).unwrap();
            h.abort();
            let sent = out.0.lock().unwrap().len();
            assert!(sent < len, "the tail is never sent");
            assert_ne!(sent % 512, 0, "{len}: {sent} bytes end on a block boundary");
        }
    }

    #[test]
    fn containers_are_read_as_ctr_lists_them() {
        let out = "CONTAINER    IMAGE                              RUNTIME\n\
                   app          docker.io/library/nginx:1.27       io.containerd.runc.v2\n\
                   bare         -                                  io.containerd.runc.v2\n";
        let c = parse_containers(out);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].id, "app");
        assert_eq!(c[0].image, "docker.io/library/nginx:1.27");
        assert_eq!(c[1].image, "");
    }

    #[test]
    fn only_the_digest_records_of_named_images_are_dropped() {
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "b".repeat(64));
        let t = "application/vnd.docker.distribution.manifest.v2+json";
        let listing = format!(
            "REF TYPE DIGEST SIZE PLATFORMS LABELS\n\
             docker.io/oi/app:1 {t} {a} 1.9 MiB linux/amd64 -\n\
             import-2026-12-01@{a} {t} {a} 1.9 MiB linux/amd64 -\n\
             import-2026-12-01@{b} {t} {b} 1.9 MiB linux/amd64 -\n"
        );
        let named = ["docker.io/oi/app:1".to_string()];
        let none = HashSet::new();
        let dropped = digest_records_to_drop(&listing, &named, &none);
        assert_eq!(dropped, [format!("import-2026-12-01@{a}")]);
        assert!(digest_records_to_drop(&listing, &[], &none).is_empty());
        // One there before this import, or labelled by an earlier one, stays.
        let before = HashSet::from([format!("import-2026-12-01@{a}")]);
        assert!(digest_records_to_drop(&listing, &named, &before).is_empty());
        let labelled = listing.replace(
            &format!("import-2026-12-01@{a} {t} {a} 1.9 MiB linux/amd64 -"),
            &format!(
                "import-2026-12-01@{a} {t} {a} 1.9 MiB linux/amd64 io.offline-images.archive.f=1/x"
            ),
        );
        assert!(digest_records_to_drop(&labelled, &named, &none).is_empty());
    }

    #[test]
    fn the_server_version_is_read_from_ctr_version() {
        let out = "Client:\n  Version:  1.6.20~ds1\n\nServer:\n  Version:  1.6.21\n  UUID: x\n";
        assert_eq!(server_version(out).unwrap(), "containerd 1.6.21");
    }
}
