//! The Docker backend: the Engine API over its unix socket, no docker CLI needed.
//!
//! `POST /images/load` takes the archive as a streamed (chunked) body. Docker 20.10 loads only
//! docker-archives (`manifest.json`), so an OCI layout without one is given one on the fly:
//! the tar entries pass through unchanged and a `manifest.json` naming the blob files is
//! appended before the end-of-archive blocks (Docker reads the whole tar before it reads
//! `manifest.json`). Archives that carry `manifest.json` pass through byte for byte, unless a
//! name in it or in `index.json` would make Docker refuse it or name an image short: then a
//! corrected `manifest.json` or `index.json` is appended the same way (the last one wins).
//!
//! `forward` passes the archive on to Docker, `answer` reads what dockerd answers (the one
//! place its words are read), `undo` puts back what a load that failed half-way changed, and
//! `layers` says which layers the store holds by chain, which an archive need not carry.

mod answer;
mod forward;
mod layers;
mod undo;

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;

use self::answer::{message_of, read_load_answer, refusal, uses_containerd_store};
use self::forward::Forward;
use super::http::{truncate, Client, Request};
use super::{Imported, Present, Runtime};
use crate::archive::{inspect_stream_detailed, Compression, Limits, Platform};
use crate::failure::{self, Kind};

/// The newest API version this backend has been tested against (Docker 20.10).
const API_TESTED: (u32, u32) = (1, 41);
/// The oldest API version with everything used here (`/images/load?quiet`, `RepoTags`).
const API_OLDEST: (u32, u32) = (1, 24);
/// The first API version whose `POST /images/load` takes a `platform`.
const API_LOAD_PLATFORM: (u32, u32) = (1, 48);
/// Most bytes read from an error answer or a small document.
const SMALL_ANSWER: u64 = 1 << 20;
/// `GET /images/json` on a node with thousands of images is a few MiB.
const IMAGE_LIST_MAX: u64 = 256 << 20;

/// A Docker daemon, reached through its API socket.
#[derive(Debug)]
pub struct Docker {
    client: Client,
    /// The API version every request is made with, e.g. `1.41`.
    api: String,
    /// The daemon's version, e.g. `20.10.24+dfsg1`.
    version: String,
    /// Images are kept in containerd (Docker 24+ with the containerd image store): image IDs
    /// are manifest or index digests, not config digests.
    containerd_store: bool,
    /// The node's machine (`GET /info` `Architecture`, e.g. `x86_64`).
    architecture: String,
    /// The newest API version the daemon speaks (`api` is it capped at the newest tested).
    daemon_api: (u32, u32),
    /// The layers the classic store holds, as last asked (`layers`), forgotten after each
    /// load: the check of an archive's left-out layers and its completion ask once.
    chains: std::sync::Mutex<Option<layers::Chains>>,
}

/// Connect to the Docker daemon at `socket`, agree on an API version (`GET /_ping`), and ask
/// its version (`GET /version`).
pub fn connect(socket: &Path) -> Result<Docker> {
    let client = Client::new(socket, "Docker");
    let peer = client.describe_peer();
    let mut ping = client.get("/_ping")?;
    if ping.status != 200 {
        // Docker sets Api-Version on every answer, errors included; another server does not.
        let docker = ping.header("Api-Version").is_some();
        let body = ping.text(SMALL_ANSWER).unwrap_or_default();
        bail!(
            "{peer}: {}GET /_ping answered HTTP {} {}: {}",
            if docker { "" } else { "not a Docker API: " },
            ping.status,
            ping.reason,
            message_of(&body)
        );
    }
    let offered = ping.header("Api-Version").map(str::to_string);
    let server = ping.header("Server").unwrap_or("").to_string();
    let body = ping.text(1024).unwrap_or_default();
    let offered = offered.ok_or_else(|| {
        anyhow!(
            "{peer}: not a Docker API: GET /_ping answered without an Api-Version header (server {:?}, body {:?})",
            server,
            truncate(body.trim(), 80)
        )
    })?;
    let daemon_api = parse_api_version(&offered).ok_or_else(|| {
        anyhow!("{peer}: not a Docker API: GET /_ping gave the API version {offered:?}")
    })?;
    let api = negotiate(daemon_api).map_err(|e| anyhow!("{peer}: {e}"))?;
    let api = format!("{}.{}", api.0, api.1);

    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Version {
        #[serde(default)]
        version: String,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Info {
        #[serde(default)]
        driver_status: Option<Vec<Vec<String>>>,
        #[serde(default)]
        architecture: String,
    }
    let docker = Docker {
        client,
        api,
        version: String::new(),
        containerd_store: false,
        architecture: String::new(),
        daemon_api,
        chains: std::sync::Mutex::new(None),
    };
    let v: Version = docker.get_json("/version", SMALL_ANSWER)?;
    let info: Info = docker.get_json("/info", SMALL_ANSWER)?;
    Ok(Docker {
        version: if v.version.is_empty() {
            "(version unknown)".into()
        } else {
            v.version
        },
        containerd_store: uses_containerd_store(info.driver_status.as_deref().unwrap_or(&[])),
        architecture: info.architecture,
        ..docker
    })
}

/// `s` as a URL query value: every byte but the unreserved ones percent-encoded.
fn query_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `1.41` -> (1, 41).
fn parse_api_version(s: &str) -> Option<(u32, u32)> {
    let (major, minor) = s.trim().split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// The version to speak: the daemon's, capped at the newest one tested.
fn negotiate(daemon: (u32, u32)) -> Result<(u32, u32)> {
    if daemon < API_OLDEST {
        bail!(
            "the daemon speaks Docker API {}.{}, older than {}.{}, the oldest this importer speaks",
            daemon.0,
            daemon.1,
            API_OLDEST.0,
            API_OLDEST.1
        );
    }
    Ok(daemon.min(API_TESTED))
}

impl Docker {
    /// The API version requests are made with, e.g. `1.41`.
    pub fn api_version(&self) -> &str {
        &self.api
    }

    /// The daemon's own version, e.g. `20.10.24+dfsg1`.
    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn socket(&self) -> &Path {
        self.client.socket()
    }

    fn path(&self, p: &str) -> String {
        format!("/v{}{p}", self.api)
    }

    /// `POST /images/load`. The containerd image store reads an archive's index and loads
    /// every platform it lists, failing on those whose blobs the archive lacks (`ctr export`
    /// without `--all-platforms`); from API 1.48 (Docker 28) a `platform` parameter makes it
    /// load the node's alone, as containerd's own import does.
    fn load_path(&self, platform: &Platform) -> String {
        if !self.containerd_store || self.daemon_api < API_LOAD_PLATFORM {
            return self.path("/images/load?quiet=1");
        }
        let json = serde_json::json!({
            "os": platform.os,
            "architecture": platform.architecture,
            "variant": platform.variant,
        });
        let (major, minor) = API_LOAD_PLATFORM;
        format!(
            "/v{major}.{minor}/images/load?quiet=1&platform={}",
            query_escape(&json.to_string())
        )
    }

    fn get_json<T: for<'de> Deserialize<'de>>(&self, p: &str, max: u64) -> Result<T> {
        let peer = self.client.describe_peer();
        let mut resp = self.client.get(&self.path(p))?;
        // The image list exists on every Docker, yet the containerd image store answers it
        // 404 ("content digest … not found") while an image is being removed or loaded beside
        // the listing: asked again, a moment later, it answers.
        let mut tries = 1;
        while resp.status == 404 && p == "/images/json" && tries < LIST_TRIES {
            std::thread::sleep(std::time::Duration::from_millis(250 * tries));
            tries += 1;
            resp = self.client.get(&self.path(p))?;
        }
        if resp.status != 200 {
            return Err(refusal(&peer, &format!("GET {p}"), &mut resp));
        }
        let mut data = Vec::new();
        (&mut resp.body)
            .take(max)
            .read_to_end(&mut data)
            .map_err(|e| anyhow!("{peer}: reading the answer to GET {p}: {e}"))?;
        serde_json::from_slice(&data).map_err(|e| {
            anyhow!(
                "{peer}: GET {p} answered something unexpected ({e}): {:?}",
                truncate(&String::from_utf8_lossy(&data), 200)
            )
        })
    }
}

impl Docker {
    /// The one line that says the classic store cannot serve an archive's digest references.
    fn digest_names_warning(&self, info: &crate::archive::ArchiveInfo) -> Option<String> {
        let digests: Vec<&String> = info
            .images
            .iter()
            .flat_map(|i| &i.names)
            .filter(|n| n.contains('@'))
            .collect();
        if digests.is_empty() || self.containerd_store {
            return None;
        }
        Some(format!(
            "Docker's classic image store cannot serve digest references: {} not loaded by digest \
             (only by tag); pods that name an image by digest need containerd, or Docker 25+ with \
             the containerd image store",
            digests
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }
}

/// How many times the image list is asked for when the containerd image store answers 404.
const LIST_TRIES: u64 = 5;

impl Runtime for Docker {
    /// On the containerd image store, a load that fails is tried once more from the file: that
    /// store can lose a load to a removal or a garbage collection running beside it on the
    /// same daemon ("content digest … not found"), and the same archive then loads.
    fn import_file(
        &self,
        path: &Path,
        tar: &mut dyn Read,
        platform: &Platform,
    ) -> Result<Imported> {
        let first = match self.import(tar, platform) {
            Err(e) if self.containerd_store && failure::kind_of(&e) == Kind::Import => e,
            done => return done,
        };
        let mut again = crate::archive::open_ahead(path)?.reader;
        match self.import(&mut again, platform) {
            Ok(mut imported) => {
                imported.detail = Some(format!(
                    "the first load failed ({first:#}); loaded when tried again"
                ));
                Ok(imported)
            }
            Err(e) => Err(e.context(format!("tried twice; the first time: {first:#}"))),
        }
    }

    fn kind(&self) -> &'static str {
        "docker"
    }

    fn describe(&self) -> String {
        format!(
            "docker {} (API {}{}) at {}",
            self.version,
            self.api,
            if self.containerd_store {
                ", containerd image store"
            } else {
                ""
            },
            self.client.socket().display()
        )
    }

    fn present(&self) -> Result<Vec<Present>> {
        Ok(self
            .images()?
            .into_iter()
            .map(|(name, id, labels)| Present {
                name,
                // The containerd store's IDs are manifest digests: the config is not known.
                config_digest: Some(id).filter(|s| !s.is_empty() && !self.containerd_store),
                labels,
            })
            .collect())
    }

    fn target_digests(&self) -> Result<BTreeMap<String, String>> {
        if !self.containerd_store {
            return Ok(BTreeMap::new());
        }
        Ok(self
            .images()?
            .into_iter()
            .map(|(name, id, _)| (name, id))
            .collect())
    }

    fn keeps_labels(&self) -> bool {
        false
    }

    /// Docker names images by tag: the classic store has no place for a digest name after a
    /// load, and the containerd image store lists one among `RepoDigests`, not as a name.
    fn lists_digest_names(&self) -> bool {
        false
    }

    fn node_architecture(&self) -> Option<String> {
        (!self.architecture.is_empty()).then(|| super::oci_architecture(&self.architecture))
    }

    fn holds_chains(&self, chains: &[&str]) -> Result<Option<std::collections::BTreeSet<String>>> {
        self.chains_held(chains)
    }

    fn import(&self, tar: &mut dyn Read, platform: &Platform) -> Result<Imported> {
        let peer = self.client.describe_peer();
        let mut request = self.client.start(
            "POST",
            &self.load_path(platform),
            &[("Content-Type", "application/x-tar")],
            None,
        )?;
        // Docker takes the body as fast as it can unpack it; a large layer is not a hang.
        request.no_write_timeout()?;
        let mut forward = Forward::new(tar, &mut request);
        let inspected = inspect_stream_detailed(&mut forward, Compression::None, Limits::default());
        let sink_error = forward.sink_error.take();
        let mut inspected = match (inspected, sink_error) {
            (_, Some(write_error)) => {
                drop(forward);
                return Err(stopped_reading(&peer, request, &write_error));
            }
            // Dropping the request without its last chunk makes Docker drop what it read.
            // The reader's own words, as every backend, `list` and `verify` give them.
            (Err(e), None) => return Err(e),
            (Ok(i), None) => i,
        };
        self.complete_by_chain(&mut inspected, platform)?;
        let mut info = inspected.info.clone();
        // A later manifest.json or index.json replaces the first in every Docker's load.
        let fixes = docker_fixes(&inspected)?;
        // Docker names images only once it has read the end of the archive, held back until
        // now: what the archive's names stand for before then is what a failed load undoes to.
        let before = self.before_load(&info).context(
            "cannot list Docker's images before the load (needed to undo a load that fails \
             half-way); nothing of the archive was loaded",
        )?;
        let finished = if inspected.has_docker_manifest && fixes.is_empty() {
            forward.pass_through_end()
        } else {
            let mut entries = fixes;
            if !inspected.has_docker_manifest {
                let manifest = inspected.docker_manifest_for(platform)?;
                if let Some(w) = self.digest_names_warning(&info) {
                    info.warnings.push(w);
                }
                entries.insert(0, ("manifest.json", manifest));
            }
            forward.append_entries(inspected.end_of_entries, &entries)
        };
        if let Err(e) = finished {
            if forward.sink_error.is_some() {
                drop(forward);
                // Docker's own reason, when it gave one, says more than the broken pipe.
                if let Ok(mut resp) = request.response_after_failed_write() {
                    read_load_answer(&peer, &mut resp)?.result(&peer)?;
                }
            }
            return Err(e);
        }
        drop(forward);
        *crate::sync::lock(&self.chains) = None;
        let names = self.await_load(&peer, request, &before, &info)?;
        Ok(Imported {
            info,
            names,
            detail: None,
        })
    }
}

/// Docker stopped taking the archive: the error it gave, or else what the write met. Docker
/// names nothing before it has read the archive's end, so nothing is left to undo.
impl Docker {
    /// An image whose archive leaves out layers (a delivery's or an upgrade bundle's, named as
    /// carried and checked before the import) is complete when the store holds each of them by
    /// chain: Docker's load looks a layer's chain up before it opens its file.
    fn complete_by_chain(
        &self,
        inspected: &mut crate::archive::Inspected,
        platform: &Platform,
    ) -> Result<()> {
        let images = &inspected.info.images;
        if images.iter().all(|i| i.for_platform(platform).is_some()) {
            return Ok(());
        }
        if let Some(held) = self.held_chains()?.as_ref() {
            inspected.complete_by_chain(&|chain| held.contains(chain));
        }
        Ok(())
    }
}

fn stopped_reading(peer: &str, request: Request, write_error: &io::Error) -> anyhow::Error {
    match request.response_after_failed_write() {
        Ok(mut resp) => match read_load_answer(peer, &mut resp).and_then(|a| a.result(peer)) {
            Err(e) => e,
            Ok(_) => anyhow!(
                "{peer} stopped reading the archive before its end ({write_error}) and reported no error"
            ),
        },
        // No answer at all: the daemon went away (restarted, killed) mid-archive.
        Err(_) => anyhow!(
            "{peer} closed the connection before the end of the archive \
             ({write_error}): was dockerd restarted? The archive was not loaded; \
             run the import again"
        ),
    }
}

/// Entries to add to an archive so that every Docker loads it under the names it holds: a
/// `manifest.json` whose bare `RepoTags` have their tag (Docker refuses them as "invalid
/// tag"), an `index.json` that lists and fully names the images when the archive's lists none
/// or names them short (the containerd image store reads only the index).
fn docker_fixes(inspected: &crate::archive::Inspected) -> Result<Vec<(&'static str, Vec<u8>)>> {
    let mut fixes = Vec::new();
    if let Some(m) = inspected.docker_manifest_retagged()? {
        fixes.push(("manifest.json", m));
    }
    if let Some(i) = inspected.oci_index_for_containerd()? {
        fixes.push(("index.json", i));
    }
    Ok(fixes)
}

/// The socket path in a `DOCKER_HOST` value: `unix:///run/docker.sock` -> `/run/docker.sock`.
/// Other schemes (tcp, ssh) are refused: the importer talks only to a node's local socket.
pub fn socket_from_host(host: &str) -> Result<PathBuf> {
    match host.strip_prefix("unix://") {
        Some(path) if path.starts_with('/') => Ok(PathBuf::from(path)),
        Some(_) => bail!("DOCKER_HOST {host:?} must name an absolute socket path (unix:///run/docker.sock)"),
        None if host.starts_with('/') => Ok(PathBuf::from(host)),
        None => bail!(
            "DOCKER_HOST {host:?} is not a unix socket; the importer talks only to the node's local Docker socket (unix:///run/docker.sock)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_version_is_the_daemons_capped_at_the_newest_tested() {
        assert_eq!(negotiate((1, 41)).unwrap(), (1, 41));
        assert_eq!(negotiate((1, 45)).unwrap(), (1, 41));
        assert_eq!(negotiate((1, 40)).unwrap(), (1, 40));
        assert!(negotiate((1, 12))
            .unwrap_err()
            .to_string()
            .contains("older"));
        assert_eq!(parse_api_version("1.41"), Some((1, 41)));
        assert_eq!(parse_api_version("one"), None);
    }

    #[test]
    fn docker_host_values_give_the_socket_path() {
        assert_eq!(
            socket_from_host("unix:///run/docker.sock").unwrap(),
            PathBuf::from("/run/docker.sock")
        );
        assert!(socket_from_host("tcp://1.2.3.4:2375").is_err());
    }
}
