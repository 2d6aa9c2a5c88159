//! podman and CRI-O: images go into containers-storage, the store CRI-O reads, through the
//! node's own podman. With `--host-root` podman is found under that directory and run
//! chrooted into it (as the `ctr` backend runs `ctr`), so it reads the node's
//! `/etc/containers/storage.conf` (graph root, run root, driver) and takes the storage's own
//! locks as CRI-O does; `--storage-root`, `--run-root` and `--storage-driver` override it.
//! podman itself says which storage that is (its debug lines as it starts, else `podman
//! info`), for the log and for the node lock.
//!
//! Each archive is written into a file under the node's /var/tmp while the same bytes are
//! inspected (the `ctr` backend's feed), and that file is podman's stdin for `pull
//! docker-archive:` or `load` (`spool`). An OCI archive's `index.json` is replaced by one with
//! the one entry of the image (podman loads no index of several), named in full: podman keeps
//! the manifest or index the entry names, so the image keeps the registry's digest
//! ([docs/decisions/0025](../../../../docs/decisions/0025-podman-runtime.md)).

mod labels;
mod output;
pub mod pinned;
mod spool;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use super::ctr::feed::{feed_into, Fed};
use super::ctr::watch::read_capped;
use super::{chroot, socket, Container, Imported, Present, Runtime};
use crate::archive::{ArchiveInfo, Format, Platform};
use crate::child::Helper;
use crate::failure::{Failure, Kind};
use crate::reference::Reference;

pub use self::output::Info;

/// CRI-O's sockets: a node that has one answering is a CRI-O node.
pub const CRIO_SOCKETS: &[&str] = &["/var/run/crio/crio.sock", "/run/crio/crio.sock"];

/// How long `podman load` may take once its stdin is closed.
const LOAD_EXIT_WAIT: Duration = Duration::from_secs(3600);

/// Storage settings that override the node's storage.conf (node paths).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Storage {
    pub root: Option<PathBuf>,
    pub run_root: Option<PathBuf>,
    pub driver: Option<String>,
}

pub struct Podman {
    host_root: Option<PathBuf>,
    /// The program as run (a node path when chrooted).
    program: PathBuf,
    /// Where it was found, as this process sees it.
    found_at: PathBuf,
    global: Vec<OsString>,
    info: Info,
    labels: labels::Labels,
    /// The images as podman listed them while it said which storage it uses, for the first
    /// [`Runtime::present`]; dropped by the next podman command, which may change them.
    listed: std::sync::Mutex<Option<Vec<output::Image>>>,
}

/// The first CRI-O socket that answers under `host_root`.
pub fn crio_socket(host_root: Option<&Path>) -> Option<PathBuf> {
    CRIO_SOCKETS
        .iter()
        .map(|s| socket::local_path(host_root, Path::new(s)))
        .find(|p| socket::probe_socket(p).is_none())
}

/// The node's podman: under `host_root` in the usual binary directories, else on PATH.
pub fn find(host_root: Option<&Path>) -> Option<PathBuf> {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    match host_root {
        Some(root) => {
            let dirs = super::ctr::NODE_BIN_DIRS
                .iter()
                .map(|d| socket::local_path(Some(root), Path::new(d)));
            let paths = std::env::join_paths(dirs).ok()?;
            which::which_in("podman", Some(paths), &cwd).ok()
        }
        None => which::which("podman").ok(),
    }
}

impl Podman {
    /// The node's podman on the storage `storage` asks for (the node's storage.conf where
    /// it says nothing), and what `podman info` says that storage is.
    pub fn new(host_root: Option<&Path>, storage: &Storage) -> Result<Podman> {
        let found_at = find(host_root).ok_or_else(|| match host_root {
            Some(root) => anyhow!(
                "no podman was found on the node under {} in {}",
                root.display(),
                super::ctr::NODE_BIN_DIRS.join(", ")
            ),
            None => anyhow!(
                "no podman is on PATH; give --host-root with the node's root mounted to use \
                 the node's own podman"
            ),
        })?;
        let program = match host_root {
            Some(root) => Path::new("/").join(found_at.strip_prefix(root).unwrap_or(&found_at)),
            None => found_at.clone(),
        };
        let mut global = Vec::new();
        if let Some(root) = &storage.root {
            global.extend([OsString::from("--root"), root.into()]);
            let run = storage.run_root.clone().unwrap_or_else(|| root.join("run"));
            global.extend([OsString::from("--runroot"), run.into()]);
        } else if let Some(run) = &storage.run_root {
            global.extend([OsString::from("--runroot"), run.into()]);
        }
        if let Some(driver) = &storage.driver {
            global.extend([OsString::from("--storage-driver"), driver.into()]);
        }
        let mut p = Podman {
            host_root: host_root.map(Path::to_path_buf),
            program,
            found_at,
            global,
            info: Info {
                version: String::new(),
                arch: String::new(),
                graph_root: String::new(),
                run_root: String::new(),
                driver: String::new(),
                config_file: String::new(),
            },
            labels: labels::Labels::beside(Path::new("/nonexistent")),
            listed: std::sync::Mutex::new(None),
        };
        let (info, listed) = p.ask()?;
        p.info = info;
        p.labels = labels::Labels::beside(&p.graph_root());
        *crate::sync::lock(&p.listed) = listed;
        Ok(p)
    }

    /// What podman and its storage are, from `podman version` and one `podman images` at debug
    /// level (about 0.1 s in all; the listing is kept for the first `present`). `podman info`
    /// says the same, but first asks the node's package manager for the versions of conmon,
    /// the OCI runtime and slirp4netns (0.3 to 0.5 s here): it is asked only when podman's
    /// debug lines do not name its storage.
    fn ask(&self) -> Result<(Info, Option<Vec<output::Image>>)> {
        let (version, arch) = output::version(&self.output(&["version", "--format", "json"])?)?;
        let out = self.run(&["--log-level=debug", "images", "--format", "json"])?;
        let Some((driver, graph_root, run_root)) =
            output::started(&String::from_utf8_lossy(&out.stderr))
        else {
            return Ok((
                output::info(&self.output(&["info", "--format", "json"])?)?,
                None,
            ));
        };
        let listed = output::images(&String::from_utf8_lossy(&out.stdout))?;
        let info = Info {
            version,
            arch,
            graph_root,
            run_root,
            driver,
            config_file: storage_conf(self.host_root.as_deref()),
        };
        Ok((info, Some(listed)))
    }

    /// The storage's graph root as this process sees it.
    pub fn graph_root(&self) -> PathBuf {
        socket::local_path(self.host_root.as_deref(), Path::new(&self.info.graph_root))
    }

    /// The file whose directory the node lock is taken on: the graph root's `storage.lock`.
    pub fn lock_file(&self) -> PathBuf {
        self.graph_root().join("storage.lock")
    }

    fn command(&self) -> Command {
        crate::sync::lock(&self.listed).take();
        let mut cmd = match &self.host_root {
            Some(root) => chroot::command(root, &self.program),
            None => Command::new(&self.program),
        };
        cmd.args(&self.global);
        cmd
    }

    /// Run a short podman command and return its stdout.
    fn output(&self, args: &[&str]) -> Result<String> {
        self.run(args)
            .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Run a short podman command that must succeed: its stdout and stderr. A failure is
    /// named after the command (the first argument that is not a flag).
    fn run(&self, args: &[&str]) -> Result<std::process::Output> {
        let out = self
            .command()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot run {}", self.found_at.display()))?;
        if !out.status.success() {
            let what = args.iter().find(|a| !a.starts_with('-')).copied();
            return Err(self.error(what.unwrap_or(""), &out.stderr, &[]));
        }
        Ok(out)
    }

    /// What podman said when it failed (`output::failure`: of a load, its attempt at the
    /// archive's `formats`), classified where the run branches on it. Refused an operation
    /// chrooted into a node, podman lacks a capability: the line says which are needed.
    fn error(&self, what: &str, stderr: &[u8], formats: &[&str]) -> anyhow::Error {
        let raw = String::from_utf8_lossy(stderr);
        let text = output::failure(&raw, formats);
        let said = if text.is_empty() {
            format!("podman {what} failed and printed nothing")
        } else {
            format!("podman {what}: {text}")
        };
        if raw.contains("no space left on device") {
            return Failure::error(
                Kind::Disk,
                format!(
                    "the disk holding the storage {} is full: free space on the node and run \
                     the import again; {said}",
                    self.info.graph_root
                ),
            );
        }
        if self.host_root.is_some() && raw.contains("operation not permitted") {
            return anyhow!(
                "{said} (podman was refused an operation: the importer runs without a \
                 capability podman needs to store this image. A file capability needs SETFCAP, \
                 a device node MKNOD, files of other owners CHOWN, FOWNER and FSETID; the \
                 chart adds them with imagePull.crioCapabilities)"
            );
        }
        anyhow!(said)
    }

    fn images(&self) -> Result<Vec<output::Image>> {
        output::images(&self.output(&["images", "--format", "json"])?)
    }

    /// One load of `tar` into the storage, its `index.json` chosen for image `which`: the
    /// archive written out and checked first, then given to podman (`spool`). An OCI archive
    /// of several images is refused unless `several` (the caller loads each in turn).
    fn load(
        &self,
        tar: &mut dyn Read,
        platform: &Platform,
        which: usize,
        several: bool,
    ) -> Result<ArchiveInfo> {
        let mut spooled = spool::Spool::create(&spool::dir(self.host_root.as_deref()))?;
        let fed = feed_into(&mut spooled, tar, platform, &|_| false, &|i| {
            let n = distinct(&i.info);
            if !several && n > 1 && i.info.format != Format::DockerArchive {
                bail!(
                    "the OCI archive holds {n} images and podman loads one at a time: put the \
                     archive in the images path as a file, so that it can be read once per image"
                );
            }
            i.oci_index_for_podman(which)
        });
        let info = match fed {
            Ok(info) => info,
            Err(Fed::Archive(e)) => return Err(e),
            Err(Fed::CtrStopped) => return Err(spooled.write_failed()),
        };
        let args = spool::podman_args(info.format, info.images.len());
        let file = spooled
            .reader()
            .context("cannot read back the copy of the archive for podman")?;
        let mut child = self
            .command()
            .args(&args)
            .stdin(Stdio::from(file))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot run {}", self.found_at.display()))?;
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        let podman = Helper::new(child);
        let out_reader = thread::spawn(move || read_capped(stdout));
        let err_reader = thread::spawn(move || read_capped(stderr));
        let status = podman.wait_or_kill(LOAD_EXIT_WAIT);
        drop(podman);
        let _ = out_reader.join();
        let stderr = err_reader.join().unwrap_or_default();
        drop(spooled);
        let status = status.with_context(|| format!("cannot wait for podman {}", args[0]))?;
        if !status.success() {
            return Err(self.error(&args[0], &stderr, spool::transports(info.format)));
        }
        Ok(info)
    }

    /// After a load: each image of `info` for `platform` is given every tag the archive
    /// gives it (podman names it from the archive by one, or as the archive spells it), and
    /// loses the `localhost/…` name podman 4 makes of a short `RepoTags` entry
    /// (`oi/app:1`, which the kubelet asks for as `docker.io/oi/app:1`), unless that name
    /// was there before (`before`: the images before the load).
    fn name(
        &self,
        info: &ArchiveInfo,
        platform: &Platform,
        before: &[output::Image],
    ) -> Result<Vec<String>> {
        let images = self.images()?;
        let mut named = Vec::new();
        for image in &info.images {
            let Some(config) = image
                .for_platform(platform)
                .and_then(|p| p.config_digest.as_deref())
            else {
                continue;
            };
            // A set: podman 4 lists an image once per name podman load gave it.
            let has: BTreeSet<&String> = images
                .iter()
                .filter(|i| i.config_digest() == config)
                .flat_map(|i| &i.names)
                .collect();
            let tags: Vec<&String> = image.names.iter().filter(|n| is_tag(n)).collect();
            let missing: Vec<&str> = tags
                .iter()
                .filter(|t| !has.contains(*t))
                .map(|t| t.as_str())
                .collect();
            // By the bare ID: podman 4 takes `sha256:<id>` for a digest, not for the image.
            let id = config.trim_start_matches("sha256:");
            if !missing.is_empty() {
                let mut args = vec!["tag", id];
                args.extend(&missing);
                self.output(&args)
                    .with_context(|| format!("cannot name {config} {}", missing.join(", ")))?;
            }
            let had = |n: &String| {
                before
                    .iter()
                    .any(|i| i.config_digest() == config && i.names.contains(n))
            };
            for name in has.iter().copied().filter(|n| !had(n)) {
                let Some(short) = name.strip_prefix("localhost/") else {
                    continue;
                };
                let meant = crate::reference::normalize(short).ok();
                if meant.is_some_and(|m| image.names.contains(&m)) {
                    self.output(&["untag", id, name])
                        .with_context(|| format!("cannot remove the name {name} podman gave"))?;
                }
            }
            named.extend(image.names.iter().cloned());
        }
        Ok(named)
    }

    /// A tag name is removed by `podman rmi` (the image goes with its last name); a digest
    /// name is no name of its own in containers-storage: it goes with the image's last tag,
    /// and only an image with no tag left is removed by it.
    fn remove_name(&self, name: &str) -> Result<()> {
        let images = self.images()?;
        let image = images
            .iter()
            .find(|i| i.names.iter().chain(&i.repo_digests).any(|n| n == name));
        let Some(image) = image else {
            return Ok(());
        };
        if is_tag(name) {
            return self.output(&["rmi", name]).map(drop);
        }
        if image.names.is_empty() {
            return self.output(&["rmi", &image.id]).map(drop);
        }
        Ok(())
    }
}

/// The storage.conf a rootful podman reads, as containers-storage chooses it:
/// `CONTAINERS_STORAGE_CONF`, else `/etc/containers/storage.conf` where the node has one,
/// else the packaged defaults in `/usr/share/containers/storage.conf`; empty when none is
/// there (podman then uses its built-in defaults).
fn storage_conf(host_root: Option<&Path>) -> String {
    if let Some(conf) = std::env::var_os("CONTAINERS_STORAGE_CONF").filter(|c| !c.is_empty()) {
        return conf.to_string_lossy().into_owned();
    }
    [
        "/etc/containers/storage.conf",
        "/usr/share/containers/storage.conf",
    ]
    .into_iter()
    .find(|f| socket::local_path(host_root, Path::new(f)).is_file())
    .unwrap_or_default()
    .to_string()
}

/// How many distinct images (manifests or indexes) an archive holds: an OCI index names one
/// image by several entries (its tag and its digest names).
fn distinct(info: &ArchiveInfo) -> usize {
    let mut digests: Vec<Option<&str>> = info.images.iter().map(|i| i.digest.as_deref()).collect();
    digests.sort();
    digests.dedup();
    digests.len()
}

/// `repo:tag`, not `repo@digest`.
fn is_tag(name: &str) -> bool {
    Reference::parse(name).is_ok_and(|r| r.digest.is_none())
}

impl Runtime for Podman {
    fn kind(&self) -> &'static str {
        "podman"
    }

    fn describe(&self) -> String {
        let how = match &self.host_root {
            Some(root) => format!(
                "{}, chrooted into {}",
                self.program.display(),
                root.display()
            ),
            None => self.found_at.display().to_string(),
        };
        let conf = if self.info.config_file.is_empty() {
            "storage.conf not reported".to_string()
        } else {
            format!("settings from {}", self.info.config_file)
        };
        format!(
            "podman {} ({how}), containers-storage {} (driver {}, run root {}; {conf}{})",
            self.info.version,
            self.info.graph_root,
            self.info.driver,
            self.info.run_root,
            if self.global.is_empty() {
                ""
            } else {
                ", overridden by the flags"
            }
        )
    }

    fn present(&self) -> Result<Vec<Present>> {
        let labels = self.labels.read()?;
        let mut out = Vec::new();
        let listed = crate::sync::lock(&self.listed).take();
        let images = match listed {
            Some(images) => images,
            None => self.images()?,
        };
        for image in images {
            let config = image.config_digest();
            for name in image.names.iter().chain(&image.repo_digests) {
                out.push(Present {
                    name: name.clone(),
                    config_digest: Some(config.clone()),
                    labels: labels::Labels::of(&labels, name, &config),
                });
            }
        }
        Ok(out)
    }

    fn node_architecture(&self) -> Option<String> {
        (!self.info.arch.is_empty()).then(|| super::oci_architecture(&self.info.arch))
    }

    fn import(&self, tar: &mut dyn Read, platform: &Platform) -> Result<Imported> {
        let before = self.images()?;
        let info = self.load(tar, platform, 0, false)?;
        let names = self.name(&info, platform, &before)?;
        Ok(Imported {
            info,
            names,
            detail: None,
        })
    }

    /// An OCI archive of several images is read once per image (podman loads one at a time).
    fn import_file(
        &self,
        path: &Path,
        tar: &mut dyn Read,
        platform: &Platform,
    ) -> Result<Imported> {
        let before = self.images()?;
        let info = self.load(tar, platform, 0, true)?;
        if info.format != Format::DockerArchive {
            for which in 1..info.images.len() {
                let image = &info.images[which];
                let loaded_before = info.images[..which]
                    .iter()
                    .any(|i| i.digest == image.digest);
                if loaded_before || image.for_platform(platform).is_none() {
                    continue;
                }
                let mut again = crate::archive::open(path)?.reader;
                self.load(&mut again, platform, which, true)
                    .with_context(|| info.images[which].display_names())?;
            }
        }
        let names = self.name(&info, platform, &before)?;
        let n = distinct(&info);
        let detail = (n > 1 && info.format != Format::DockerArchive)
            .then(|| format!("read {n} times, once per image"));
        Ok(Imported {
            info,
            names,
            detail,
        })
    }

    fn label(&self, names: &[String], labels: &BTreeMap<String, String>) -> Result<()> {
        let images = self.images()?;
        self.labels.update(|all| {
            for name in names {
                let Some(image) = images
                    .iter()
                    .find(|i| i.names.iter().chain(&i.repo_digests).any(|n| n == name))
                else {
                    continue;
                };
                let config = image.config_digest();
                let entry = all.entry(name.clone()).or_default();
                if entry.image != config {
                    *entry = labels::Entry {
                        image: config,
                        labels: BTreeMap::new(),
                    };
                }
                entry
                    .labels
                    .extend(labels.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
        })
    }

    fn containers(&self) -> Result<Vec<Container>> {
        let json = self
            .output(&["ps", "--all", "--external", "--format", "json"])
            .context("cannot list containers")?;
        Ok(output::containers(&json)?
            .into_iter()
            .map(|c| Container {
                id: c.id,
                image: if c.image_id.is_empty() {
                    c.image
                } else {
                    format!("sha256:{}", c.image_id.trim_start_matches("sha256:"))
                },
            })
            .collect())
    }

    fn unlabel(&self, name: &str, keys: &[String]) -> Result<()> {
        self.labels.update(|all| {
            if let Some(e) = all.get_mut(name) {
                e.labels.retain(|k, _| !keys.contains(k));
            }
        })
    }

    fn remove(&self, name: &str) -> Result<()> {
        self.remove_name(name)
            .with_context(|| format!("cannot remove {name}"))?;
        self.labels.update(|all| {
            all.remove(name);
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crio_socket_that_answers_under_the_host_root_marks_a_crio_node() {
        let root = std::env::temp_dir().join(format!("oi-crio-{}", std::process::id()));
        std::fs::create_dir_all(root.join("run/crio")).unwrap();
        assert_eq!(crio_socket(Some(&root)), None);
        let sock = root.join("run/crio/crio.sock");
        std::fs::write(&sock, b"").unwrap();
        assert_eq!(crio_socket(Some(&root)), None, "a file is no socket");
        std::fs::remove_file(&sock).unwrap();
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        assert_eq!(crio_socket(Some(&root)), Some(sock));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn an_index_names_one_image_by_every_entry_but_holds_it_once() {
        let image = |digest: &str, name: &str| crate::archive::Image {
            names: vec![name.to_string()],
            digest: Some(digest.to_string()),
            platforms: Vec::new(),
        };
        let info = ArchiveInfo {
            format: Format::Oci,
            compression: crate::archive::Compression::None,
            tar_size: 0,
            images: vec![
                image("sha256:aa", "docker.io/a/b:1"),
                image("sha256:aa", "docker.io/a/b@sha256:aa"),
                image("sha256:bb", "docker.io/a/c:1"),
            ],
            warnings: Vec::new(),
        };
        assert_eq!(distinct(&info), 2);
        let by_digest = format!("docker.io/a/b@sha256:{}", "a".repeat(64));
        assert!(Reference::parse(&by_digest).is_ok());
        assert!(is_tag("docker.io/a/b:1") && !is_tag(&by_digest));
    }
}
