//! The Docker backend: the Engine API over its unix socket, no docker CLI needed.
//!
//! `POST /images/load` takes the archive as a streamed (chunked) body. Docker 20.10 loads only
//! docker-archives (`manifest.json`), so an OCI layout without one is given one on the fly:
//! the tar entries pass through unchanged and a `manifest.json` naming the blob files is
//! appended before the end-of-archive blocks (Docker reads the whole tar before it reads
//! `manifest.json`). Archives that carry `manifest.json` pass through byte for byte, unless a
//! name in it or in `index.json` would make Docker refuse it or name an image short: then a
//! corrected `manifest.json` or `index.json` is appended the same way (the last one wins).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;

use super::http::{truncate, Client, Request, Response, Wait};
use super::{Imported, Present, Runtime};
use crate::archive::{inspect_stream_detailed, Compression, Limits, Platform};
use crate::failure::{self, Kind};
use crate::reference;

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

/// `GET /info`'s `DriverStatus` of the containerd image store names its snapshotter as
/// `["driver-type", "io.containerd.snapshotter.v1"]`.
fn uses_containerd_store(driver_status: &[Vec<String>]) -> bool {
    driver_status.iter().any(|kv| {
        kv.len() == 2 && kv[0] == "driver-type" && kv[1].starts_with("io.containerd.snapshotter")
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
    /// Whether the daemon keeps images in containerd's store (Docker 25+ with the containerd
    /// image store): its `/info` says `driver-type io.containerd.snapshotter.v1`.
    fn containerd_store(&self) -> bool {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Info {
            #[serde(default)]
            driver_status: Option<Vec<Vec<String>>>,
        }
        self.get_json::<Info>("/info", SMALL_ANSWER)
            .ok()
            .and_then(|i| i.driver_status)
            .is_some_and(|s| {
                s.iter().any(|kv| {
                    kv.len() == 2 && kv[0] == "driver-type" && kv[1].contains("containerd")
                })
            })
    }

    /// The one line that says the classic store cannot serve an archive's digest references.
    fn digest_names_warning(&self, info: &crate::archive::ArchiveInfo) -> Option<String> {
        let digests: Vec<&String> = info
            .images
            .iter()
            .flat_map(|i| &i.names)
            .filter(|n| n.contains('@'))
            .collect();
        if digests.is_empty() || self.containerd_store() {
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

/// The error for a non-200 answer: the daemon's own `message`.
fn refusal(peer: &str, what: &str, resp: &mut Response) -> anyhow::Error {
    let body = resp.text(SMALL_ANSWER).unwrap_or_default();
    anyhow!(
        "{peer} refused {what} (HTTP {} {}): {}",
        resp.status,
        resp.reason,
        message_of(&body)
    )
}

/// Docker's error bodies are `{"message": "..."}`; anything else is shown as it came.
fn message_of(body: &str) -> String {
    #[derive(Deserialize)]
    struct Message {
        message: String,
    }
    match serde_json::from_str::<Message>(body) {
        Ok(m) => m.message,
        Err(_) if body.trim().is_empty() => "(no message)".into(),
        Err(_) => truncate(body.trim(), 500),
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
        let inspected = match (inspected, sink_error) {
            (_, Some(write_error)) => {
                drop(forward);
                return Err(stopped_reading(&peer, request, &write_error));
            }
            // Dropping the request without its last chunk makes Docker drop what it read.
            // The reader's own words, as every backend, `list` and `verify` give them.
            (Err(e), None) => return Err(e),
            (Ok(i), None) => i,
        };
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

/// A named image as `GET /images/json` lists it: (normalised name, image ID, labels).
type Listed = (String, String, BTreeMap<String, String>);

impl Docker {
    /// Every image: under each of its names, an untagged one under its ID (`sha256:…`), so
    /// that an untagged archive's image is found by its config (a re-run skips it, verify
    /// finds it).
    fn images(&self) -> Result<Vec<Listed>> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Summary {
            id: String,
            #[serde(default)]
            repo_tags: Option<Vec<String>>,
            #[serde(default)]
            labels: Option<BTreeMap<String, String>>,
        }
        let images: Vec<Summary> = self.get_json("/images/json", IMAGE_LIST_MAX)?;
        let mut out = Vec::new();
        for image in images {
            let named = out.len();
            for tag in image.repo_tags.iter().flatten() {
                if tag == "<none>:<none>" {
                    continue;
                }
                // Docker's own names are valid references; one that is not cannot match
                // anything an archive names, so it is left out.
                let Ok(name) = reference::normalize(tag) else {
                    continue;
                };
                out.push((
                    name,
                    image.id.clone(),
                    image.labels.clone().unwrap_or_default(),
                ));
            }
            if out.len() == named && !image.id.is_empty() {
                out.push((image.id.clone(), image.id, image.labels.unwrap_or_default()));
            }
        }
        Ok(out)
    }
}

/// Docker's names and images at one moment: what a failed load is undone to.
#[derive(Debug, Default)]
struct Listing {
    /// Every tag Docker lists, normalised, and the image ID it names.
    tags: BTreeMap<String, String>,
    /// Every image ID, named or not.
    ids: BTreeSet<String>,
    /// The archive's digest names (`repo@sha256:…`), on the containerd image store (the classic
    /// store loads none): the image ID each names, or None. The image list shows only tags.
    digests: BTreeMap<String, Option<String>>,
}

impl Listing {
    fn id_of(&self, name: &str) -> Option<&String> {
        match self.digests.get(name) {
            Some(id) => id.as_ref(),
            None => self.tags.get(name),
        }
    }

    /// No tag names `id`.
    fn unnamed(&self, id: &str) -> bool {
        self.ids.contains(id) && !self.tags.values().any(|t| t == id)
    }
}

impl Docker {
    /// What Docker has now, with the image each digest name of `info` stands for.
    fn before_load(&self, info: &crate::archive::ArchiveInfo) -> Result<Listing> {
        let digest_names = info.images.iter().flat_map(|i| &i.names);
        let digest_names = digest_names.filter(|n| self.containerd_store && n.contains('@'));
        self.listing(digest_names)
    }

    fn listing<'a>(&self, digest_names: impl IntoIterator<Item = &'a String>) -> Result<Listing> {
        let mut listing = Listing::default();
        for (name, id, _) in self.images()? {
            if name != id {
                listing.tags.insert(name, id.clone());
            }
            listing.ids.insert(id);
        }
        for name in digest_names {
            listing.digests.insert(name.clone(), self.image_id(name)?);
        }
        Ok(listing)
    }

    /// End the archive, wait for Docker's answer, and when the load failed, undo what it did:
    /// Docker names the images of an archive one after the other, and a failure after the first
    /// would leave it half-loaded.
    fn await_load(
        &self,
        peer: &str,
        request: Request,
        before: &Listing,
        info: &crate::archive::ArchiveInfo,
    ) -> Result<Vec<String>> {
        let answer = request
            .response(Wait::Unlimited)
            .and_then(|mut resp| read_load_answer(peer, &mut resp));
        let (error, answer) = match answer {
            Ok(a) if a.errors.is_empty() => return Ok(a.names),
            Ok(a) => (a.error(peer), a),
            Err(e) => (e, LoadAnswer::default()),
        };
        let mut claimed: BTreeSet<String> = info
            .images
            .iter()
            .flat_map(|i| i.names.iter().cloned())
            .collect();
        claimed.extend(answer.names.iter().cloned());
        let undo = self.undo_load(before, &claimed, &answer.ids);
        Err(match undo.describe() {
            Some(what) => error.context(what),
            None => error,
        })
    }

    /// Put every name of `claimed` back as it was in `before` (removed when it was not there,
    /// moved back to its image when the load moved it), then remove the images the load added
    /// that no name holds any more. Images that were there before are never removed.
    fn undo_load(&self, before: &Listing, claimed: &BTreeSet<String>, ids: &[String]) -> Undo {
        let mut undo = Undo::default();
        let digests = claimed.iter().filter(|n| before.digests.contains_key(*n));
        let after = match self.listing(digests) {
            Ok(l) => l,
            Err(e) => {
                undo.problems
                    .push(format!("cannot list Docker's images after the load: {e:#}"));
                return undo;
            }
        };
        let mut added: BTreeSet<String> = ids.iter().cloned().collect();
        for name in claimed {
            let Some(now) = after.id_of(name) else {
                continue;
            };
            added.insert(now.clone());
            let done = match before.id_of(name) {
                Some(was) if was == now => continue,
                Some(was) => self
                    .tag_image(was, name)
                    .map(|()| format!("{name} (put back on {was})")),
                None => self
                    .delete_image(name)
                    .map(|()| format!("{name} (removed)")),
            };
            match done {
                Ok(what) => undo.done.push(what),
                Err(e) => undo.problems.push(format!("{e:#}")),
            }
        }
        added.retain(|id| !before.ids.contains(id));
        if added.is_empty() {
            return undo;
        }
        let after = match self.listing([]) {
            Ok(l) => l,
            Err(e) => {
                undo.problems
                    .push(format!("cannot list Docker's images: {e:#}"));
                return undo;
            }
        };
        for id in added.iter().filter(|id| after.unnamed(id)) {
            match self.delete_image(id) {
                Ok(()) => undo.done.push(format!("the unnamed image {id} (removed)")),
                Err(e) => undo.problems.push(format!("{e:#}")),
            }
        }
        undo
    }

    /// `GET /images/NAME/json`: the image ID, or None when Docker has no such image.
    fn image_id(&self, name: &str) -> Result<Option<String>> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Inspect {
            id: String,
        }
        let p = format!("/images/{name}/json");
        let mut resp = self.client.get(&self.path(&p))?;
        match resp.status {
            200 => {}
            404 => return Ok(None),
            _ => {
                return Err(refusal(
                    &self.client.describe_peer(),
                    &format!("GET {p}"),
                    &mut resp,
                ))
            }
        }
        let body = resp.text(SMALL_ANSWER)?;
        let inspect: Inspect = serde_json::from_str(&body)
            .map_err(|e| anyhow!("GET {p} answered something unexpected ({e})"))?;
        Ok(Some(inspect.id))
    }

    /// `DELETE /images/NAME`: the name goes, and the image with it when no other name holds it
    /// (its parents stay). An image that is already gone is no error.
    fn delete_image(&self, name: &str) -> Result<()> {
        let p = format!("/images/{name}?noprune=1");
        let mut resp = self
            .client
            .start("DELETE", &self.path(&p), &[], Some(0))?
            .response(Wait::Short)?;
        match resp.status {
            200 | 404 => Ok(()),
            _ => Err(refusal(
                &self.client.describe_peer(),
                &format!("DELETE /images/{name}"),
                &mut resp,
            )),
        }
    }

    /// `POST /images/ID/tag`: `name` names the image `id` again.
    fn tag_image(&self, id: &str, name: &str) -> Result<()> {
        let r = reference::Reference::parse(name)?;
        let tag = r.tag.as_deref().unwrap_or("latest");
        let p = format!(
            "/images/{id}/tag?repo={}&tag={}",
            query_escape(&r.repository()),
            query_escape(tag)
        );
        let mut resp = self
            .client
            .start("POST", &self.path(&p), &[], Some(0))?
            .response(Wait::Short)?;
        match resp.status {
            200 | 201 => Ok(()),
            _ => Err(refusal(
                &self.client.describe_peer(),
                &format!("tagging {id} as {name}"),
                &mut resp,
            )),
        }
    }
}

/// What undoing a failed load did, for its error message.
#[derive(Debug, Default)]
struct Undo {
    /// What was put back: `NAME (removed)`, `NAME (put back on ID)`, `ID (removed)`.
    done: Vec<String>,
    problems: Vec<String>,
}

impl Undo {
    /// None when the load had changed nothing.
    fn describe(&self) -> Option<String> {
        let done = self.done.join(", ");
        let problems = self.problems.join("; ");
        match (done.is_empty(), problems.is_empty()) {
            (true, true) => None,
            (false, true) => Some(format!(
                "the load failed after Docker had changed {done}; all undone"
            )),
            (false, false) => Some(format!(
                "the load failed after Docker had changed {done}; undone but for: {problems}"
            )),
            (true, false) => Some(format!(
                "the load failed, and what Docker may have loaded could not be undone: {problems}"
            )),
        }
    }
}

/// What Docker's answer to a load said, line by line.
#[derive(Debug, Default)]
struct LoadAnswer {
    /// `Loaded image: NAME`, normalised.
    names: Vec<String>,
    /// `Loaded image ID: sha256:…`, for an image the archive does not name.
    ids: Vec<String>,
    /// `{"error": …}` lines, and the containerd image store's `Error unpacking image …`
    /// (it names the image, then fails to unpack it, and still answers as if all went well).
    errors: Vec<String>,
}

impl LoadAnswer {
    /// The names Docker loaded, or the error its answer holds.
    fn result(self, peer: &str) -> Result<Vec<String>> {
        if self.errors.is_empty() {
            Ok(self.names)
        } else {
            Err(self.error(peer))
        }
    }

    fn error(&self, peer: &str) -> anyhow::Error {
        anyhow!(
            "{peer} refused the image archive: {}",
            self.errors.join("; ")
        )
    }

    /// One line of the answer's `stream` text.
    fn stream_line(&mut self, text: &str) {
        let text = text.trim();
        if let Some(id) = text.strip_prefix("Loaded image ID: ") {
            self.ids.push(id.trim().to_string());
        } else if let Some(name) = text.strip_prefix("Loaded image: ") {
            let name =
                reference::normalize(name.trim()).unwrap_or_else(|_| name.trim().to_string());
            if !self.names.contains(&name) {
                self.names.push(name);
            }
        } else if text.starts_with("Error unpacking image ")
            && !self.errors.iter().any(|e| e == text)
        {
            self.errors.push(text.to_string());
        }
    }
}

/// Read every line of a load's answer. A failed load still answers HTTP 200, with an
/// `{"error": ...}` line; [`LoadAnswer::result`] makes it the error.
fn read_load_answer(peer: &str, resp: &mut Response) -> Result<LoadAnswer> {
    if resp.status != 200 {
        return Err(refusal(peer, "the image archive", resp));
    }
    #[derive(Deserialize)]
    struct Line {
        #[serde(default)]
        stream: Option<String>,
        #[serde(default)]
        error: Option<String>,
        #[serde(default, rename = "errorDetail")]
        error_detail: Option<ErrorDetail>,
    }
    #[derive(Deserialize)]
    struct ErrorDetail {
        #[serde(default)]
        message: Option<String>,
    }
    let mut answer = LoadAnswer::default();
    let mut odd: Vec<String> = Vec::new();
    let read = resp.body.for_each_line(1 << 20, |line| {
        let line = line.trim();
        if line.is_empty() {
            return Ok(());
        }
        match serde_json::from_str::<Line>(line) {
            Ok(l) => {
                let detail = l.error_detail.and_then(|d| d.message);
                if let Some(msg) = detail.or(l.error) {
                    if !answer.errors.contains(&msg) {
                        answer.errors.push(msg);
                    }
                }
                for text in l.stream.iter().flat_map(|s| s.lines()) {
                    answer.stream_line(text);
                }
            }
            Err(_) => {
                if odd.len() < 5 {
                    odd.push(truncate(line, 200));
                }
            }
        }
        Ok(())
    });
    let read = read.map_err(|e| anyhow!("{peer}: reading the answer to the load: {e}"))?;
    read?;
    if !odd.is_empty() && answer.errors.is_empty() {
        bail!(
            "{peer}: not a Docker API: the answer to the load has lines that are not JSON: {}",
            odd.join(" | ")
        );
    }
    Ok(answer)
}

const BLOCK: usize = 512;
static ZEROS: [u8; BLOCK] = [0; BLOCK];

/// Reads the archive for the inspector and passes every byte on to Docker, except that
/// all-zero tar blocks are held back (counted, not stored) until a non-zero block follows.
/// At the end of the stream the held blocks are the end-of-archive marker (and padding), so a
/// `manifest.json` entry can still be put in front of them.
struct Forward<'a, R: Read + ?Sized, W: Write> {
    inner: &'a mut R,
    out: &'a mut W,
    /// Stream offset of the first byte of `partial` (always a block boundary).
    pos: u64,
    /// The start of a block not yet complete.
    partial: Vec<u8>,
    /// Zero blocks held back, and where the run of them starts.
    zeros: u64,
    zeros_start: u64,
    /// Docker stopped taking the body.
    sink_error: Option<io::Error>,
}

impl<'a, R: Read + ?Sized, W: Write> Forward<'a, R, W> {
    fn new(inner: &'a mut R, out: &'a mut W) -> Self {
        Forward {
            inner,
            out,
            pos: 0,
            partial: Vec::with_capacity(BLOCK),
            zeros: 0,
            zeros_start: 0,
            sink_error: None,
        }
    }

    fn send(&mut self, data: &[u8]) -> io::Result<()> {
        if let Some(e) = &self.sink_error {
            return Err(io::Error::new(e.kind(), e.to_string()));
        }
        self.out.write_all(data).inspect_err(|e| {
            self.sink_error = Some(io::Error::new(e.kind(), e.to_string()));
        })
    }

    fn send_zeros(&mut self, mut bytes: u64) -> io::Result<()> {
        while bytes > 0 {
            let n = bytes.min(BLOCK as u64) as usize;
            self.send(&ZEROS[..n])?;
            bytes -= n as u64;
        }
        Ok(())
    }

    fn release_zeros(&mut self) -> io::Result<()> {
        let held = self.zeros * BLOCK as u64;
        self.zeros = 0;
        self.send_zeros(held)
    }

    /// Take in bytes read from the archive, block by block.
    fn take_in(&mut self, mut data: &[u8]) -> io::Result<()> {
        if !self.partial.is_empty() {
            let need = BLOCK - self.partial.len();
            let n = need.min(data.len());
            self.partial.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.partial.len() < BLOCK {
                return Ok(());
            }
            let block = std::mem::take(&mut self.partial);
            self.blocks(&block)?;
            self.partial = block;
            self.partial.clear();
        }
        let whole = data.len() / BLOCK * BLOCK;
        self.blocks(&data[..whole])?;
        self.partial.extend_from_slice(&data[whole..]);
        Ok(())
    }

    /// Whole blocks: runs of non-zero blocks go out in one write, zero blocks are held.
    fn blocks(&mut self, data: &[u8]) -> io::Result<()> {
        let mut run_start = 0;
        for (i, block) in data.chunks_exact(BLOCK).enumerate() {
            let offset = i * BLOCK;
            if block.iter().all(|&b| b == 0) {
                if run_start < offset {
                    self.send(&data[run_start..offset])?;
                }
                if self.zeros == 0 {
                    self.zeros_start = self.pos + offset as u64;
                }
                self.zeros += 1;
                run_start = offset + BLOCK;
            } else if self.zeros > 0 {
                if run_start < offset {
                    self.send(&data[run_start..offset])?;
                }
                self.release_zeros()?;
                run_start = offset;
            }
        }
        if run_start < data.len() {
            self.send(&data[run_start..])?;
        }
        self.pos += data.len() as u64;
        Ok(())
    }

    /// The archive already suits Docker: send the held bytes as they were.
    fn pass_through_end(&mut self) -> Result<()> {
        self.release_zeros()?;
        let tail = std::mem::take(&mut self.partial);
        self.send(&tail)?;
        Ok(())
    }

    /// Send the entry data held back, then `entries` (name, data), then the end-of-archive.
    fn append_entries(&mut self, end: u64, entries: &[(&str, Vec<u8>)]) -> Result<()> {
        let zeros_start = if self.zeros == 0 {
            self.pos
        } else {
            self.zeros_start
        };
        let held = self.zeros * BLOCK as u64;
        if end < zeros_start || end > zeros_start + held {
            bail!(
                "the archive has data after its end-of-archive blocks, so no manifest.json can be added for Docker"
            );
        }
        // Zero blocks that belong to the last entry's data.
        let of_entries = end - zeros_start;
        self.zeros = 0;
        self.send_zeros(of_entries)?;
        for (name, data) in entries {
            let mut header = tar::Header::new_ustar();
            header
                .set_path(name)
                .with_context(|| format!("cannot write the {name} header"))?;
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
            );
            header.set_entry_type(tar::EntryType::Regular);
            header.set_cksum();
            self.send(header.as_bytes())?;
            self.send(data)?;
            let pad = (BLOCK - data.len() % BLOCK) % BLOCK;
            self.send_zeros(pad as u64)?;
        }
        // The end-of-archive: two zero blocks at least, and the padding that followed.
        let rest = held - of_entries;
        self.send_zeros(rest.max(2 * BLOCK as u64))?;
        Ok(())
    }
}

impl<R: Read + ?Sized, W: Write> Read for Forward<'_, R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.take_in(&buf[..n]).map_err(|e| {
            io::Error::new(e.kind(), format!("Docker stopped reading the archive: {e}"))
        })?;
        Ok(n)
    }
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
    fn docker_error_bodies_give_their_message() {
        assert_eq!(
            message_of(r#"{"message":"no such image"}"#),
            "no such image"
        );
        assert_eq!(message_of("plain text\n"), "plain text");
        assert_eq!(message_of(""), "(no message)");
    }

    fn tar_of(files: &[(&str, &[u8])], trailing_zero_blocks: usize) -> Vec<u8> {
        let mut tar = crate::archive::tar_of(files);
        tar.extend(std::iter::repeat_n(0u8, trailing_zero_blocks * BLOCK));
        tar
    }

    /// Pass `tar` through a forwarder in reads of `step` bytes, as the inspector does.
    fn forward(tar: &[u8], step: usize, manifest: Option<&[u8]>) -> Vec<u8> {
        let mut input = tar;
        let mut out = Vec::new();
        let mut f = Forward::new(&mut input, &mut out);
        let mut buf = vec![0u8; step];
        while f.read(&mut buf).unwrap() > 0 {}
        match manifest {
            None => f.pass_through_end().unwrap(),
            Some(m) => {
                let end = {
                    let mut a = tar::Archive::new(tar);
                    let last = a.entries().unwrap().last().unwrap().unwrap();
                    last.raw_file_position() + last.size().div_ceil(512) * 512
                };
                f.append_entries(end, &[("manifest.json", m.to_vec())])
                    .unwrap()
            }
        }
        out
    }

    #[test]
    fn an_archive_passes_through_byte_for_byte_whatever_the_read_sizes() {
        // A last entry whose data ends in zero blocks, and extra padding after the end.
        let mut layer = vec![7u8; 700];
        layer.extend(vec![0u8; 3 * BLOCK]);
        let tar = tar_of(&[("a", b"x"), ("layer.tar", &layer)], 16);
        for step in [1, 100, 512, 513, 4096, 1 << 20] {
            assert_eq!(forward(&tar, step, None), tar, "read size {step}");
        }
    }

    #[test]
    fn a_manifest_goes_after_the_last_entrys_zero_data_and_before_the_end_blocks() {
        let mut layer = vec![7u8; 700];
        layer.extend(vec![0u8; 3 * BLOCK]);
        let tar = tar_of(&[("index.json", b"{}"), ("blobs/sha256/l", &layer)], 8);
        for step in [1, 512, 777, 1 << 20] {
            let out = forward(&tar, step, Some(b"[{}]"));
            let mut a = tar::Archive::new(&out[..]);
            let entries: Vec<(String, Vec<u8>)> = a
                .entries()
                .unwrap()
                .map(|e| {
                    let mut e = e.unwrap();
                    let mut data = Vec::new();
                    e.read_to_end(&mut data).unwrap();
                    (e.path().unwrap().display().to_string(), data)
                })
                .collect();
            let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
            assert_eq!(
                names,
                ["index.json", "blobs/sha256/l", "manifest.json"],
                "read size {step}"
            );
            assert_eq!(
                entries[1].1, layer,
                "the layer's own zero blocks stay in it"
            );
            assert_eq!(entries[2].1, b"[{}]");
            assert!(
                out.ends_with(&[0u8; 2 * BLOCK]),
                "end-of-archive blocks follow"
            );
            assert_eq!(out.len() % BLOCK, 0);
        }
    }

    /// A one-shot server on a unix socket that answers a load with `answer`.
    fn answer_load(answer: &'static str) -> Result<Vec<String>> {
        use std::os::unix::net::UnixListener;
        let dir = crate::runtime::http::tests::SocketDir::new("docker");
        let path = dir.0.join("docker.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut seen = Vec::new();
            let mut buf = [0u8; 1024];
            while !seen.ends_with(b"0\r\n\r\n") {
                let n = s.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                seen.extend_from_slice(&buf[..n]);
            }
            s.write_all(answer.as_bytes()).unwrap();
        });
        let client = Client::new(&path, "Docker");
        let mut req = client
            .start("POST", "/v1.41/images/load", &[], None)
            .unwrap();
        req.write_all(b"tar").unwrap();
        let mut resp = req.response(Wait::Short).unwrap();
        let result =
            read_load_answer("Docker at test.sock", &mut resp).and_then(|a| a.result("Docker"));
        server.join().unwrap();
        result
    }

    #[test]
    fn a_load_answered_with_200_and_an_error_line_is_an_error_with_dockers_words() {
        let err = answer_load(concat!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n",
            "{\"stream\":\"Loaded image: a:1\\n\"}\r\n",
            "{\"errorDetail\":{\"message\":\"open /var/lib/docker/tmp/x: no space left on device\"},",
            "\"error\":\"open /var/lib/docker/tmp/x: no space left on device\"}\r\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("refused the image archive"), "{err}");
        assert!(err.contains("no space left on device"), "{err}");
    }

    #[test]
    fn every_loaded_name_is_read_from_a_chunked_answer() {
        let names = answer_load(concat!(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            "2e\r\n{\"stream\":\"Loaded image: oi-test/alpha:1\\n\"}\r\n\r\n",
            "30\r\n{\"stream\":\"Loaded image: quay.io/o/beta:2\\n\"}\r\n\r\n",
            "0\r\n\r\n"
        ))
        .unwrap();
        assert_eq!(names, ["docker.io/oi-test/alpha:1", "quay.io/o/beta:2"]);
    }

    #[test]
    fn an_image_the_containerd_store_named_but_could_not_unpack_fails_the_load() {
        // Docker 28's containerd image store answers a load whose layer does not apply with
        // stream lines only: the image is named, yet no container can run from it.
        let err = answer_load(concat!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n",
            "{\"stream\":\"Loaded image: oi-test/a:1\\n\"}\r\n",
            "{\"stream\":\"Loaded image: oi-test/b:1\\n\"}\r\n",
            "{\"stream\":\"Error unpacking image oi-test/b:1: wrong diff id calculated on extraction\\n\"}\r\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("refused the image archive"), "{err}");
        assert!(err.contains("Error unpacking image oi-test/b:1"), "{err}");
    }

    #[test]
    fn what_a_failed_load_left_is_read_from_its_answer() {
        let mut answer = LoadAnswer::default();
        answer.stream_line("Loaded image: oi-test/a:1\n");
        answer.stream_line("The image oi-test/a:1 already exists, renaming the old one with ID sha256:00 to empty string");
        answer.stream_line("Loaded image ID: sha256:0123\n");
        assert_eq!(answer.names, ["docker.io/oi-test/a:1"]);
        assert_eq!(answer.ids, ["sha256:0123"]);
        assert!(answer.errors.is_empty());
    }

    #[test]
    fn an_undo_says_what_it_removed_and_what_it_could_not() {
        assert_eq!(Undo::default().describe(), None);
        let undo = Undo {
            done: vec!["docker.io/oi-test/a:1 (removed)".into()],
            problems: vec!["conflict".into()],
        };
        let text = undo.describe().unwrap();
        assert!(text.contains("docker.io/oi-test/a:1 (removed)"), "{text}");
        assert!(text.contains("undone but for: conflict"), "{text}");
    }

    #[test]
    fn a_load_refused_with_an_http_error_gives_dockers_message() {
        let err = answer_load(
            "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 29\r\n\r\n{\"message\":\"disk on fire\"}\n\r\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("HTTP 500") && err.contains("disk on fire"),
            "{err}"
        );
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
