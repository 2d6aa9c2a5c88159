//! containerd through its own gRPC API on the socket alone: no `ctr`, no node root.
//!
//! One lease per archive keeps everything written for it from containerd's garbage collector
//! until its images exist; a failed archive's lease is deleted, and with it what was written.
//! Blobs the archive names by digest are looked up first and sent only when missing; layers
//! are unpacked into the snapshotter only when their snapshot (by chain ID) is missing.
//! Leases are labelled with the importer that took them, so that the next import removes
//! those of a run that was killed, with its partial uploads (`reclaim`).

mod client;
mod cri;
mod disk;
mod image;
mod ingest;
mod owner;
mod preflight;
mod reclaim;

pub use cri::{certs_dir, CertsDir};

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{anyhow, Context, Result};
use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::leases_client::LeasesClient;
use containerd_client::services::v1::version_client::VersionClient;
use containerd_client::services::v1::{
    CreateRequest, DeleteImageRequest, DeleteRequest, GetImageRequest, ListContainersRequest,
    ListImagesRequest, ReadContentRequest, UpdateImageRequest,
};
use prost_types::FieldMask;

use self::client::{label_paths, Conn};
use self::ingest::{Ingest, Lookup};
use self::owner::{FileId, Owner, Presence};
use super::{
    content, socket, Container, Gate, Imported, Leftover, Present, Rest, Runtime, Unreachable,
};
use crate::archive::{inspect_stream_into, ArchiveInfo, Compression, Limits, Platform};
use crate::labels::{LABEL_MANAGED, LABEL_PINNED};

/// How long a lease outlives an importer that was killed before it could delete it, when no
/// later import removes it first (`reclaim`): what it held is then collected, except the data
/// of its partial uploads, which waits for a garbage collection that removes some content.
const LEASE_EXPIRES_SECS: u64 = 24 * 3600;

/// The snapshotter unpacked into when neither `--snapshotter` nor the CRI plugin names one.
pub const DEFAULT_SNAPSHOTTER: &str = "overlayfs";

pub struct Native {
    conn: Conn,
    /// The node's root as mounted here, where containerd's own paths are looked up.
    host_root: Option<PathBuf>,
    version: String,
    snapshotter: String,
    /// Why that snapshotter, for the log.
    snapshotter_from: &'static str,
    platform: Platform,
    /// This process, as its leases' labels name it.
    owner: Option<Owner>,
    /// The presence lock on containerd's content store, once taken (see `owner`).
    presence: Mutex<Option<Presence>>,
}

/// An archive whose content is in the content store: what unpacking and naming need.
struct Uploaded<'a> {
    ingest: Ingest<'a>,
    info: ArchiveInfo,
    plans: Vec<image::Plan>,
}

impl Native {
    /// Connect to the containerd at `socket`; `snapshotter` as asked, else the CRI plugin's,
    /// else [`DEFAULT_SNAPSHOTTER`].
    pub fn new(
        socket: &Path,
        namespace: &str,
        snapshotter: Option<&str>,
        host_root: Option<&Path>,
    ) -> Result<Native> {
        let mut conn = Conn::open(socket, namespace)?;
        let mut version = VersionClient::new(conn.channel.clone());
        let v = conn
            .call("the version query", version.version(conn.req((), None)))
            .map_err(anyhow::Error::from)?;
        conn.guard =
            preflight::plugin_root(&conn, host_root, "io.containerd.content.v1", None).ok();
        let (snapshotter, why) = match snapshotter.filter(|s| !s.is_empty()) {
            Some(s) => (s.to_string(), "--snapshotter"),
            None => match cri::snapshotter(&conn) {
                Some(s) => (s, "the CRI plugin's"),
                None => (
                    DEFAULT_SNAPSHOTTER.to_string(),
                    "the default; the CRI plugin did not say",
                ),
            },
        };
        Ok(Native {
            conn,
            host_root: host_root.map(Path::to_path_buf),
            version: format!("containerd {}", v.version.trim_start_matches('v')),
            snapshotter,
            snapshotter_from: why,
            platform: Platform::host(),
            owner: Owner::this_process(),
            presence: Mutex::new(None),
        })
    }

    pub fn socket(&self) -> &PathBuf {
        &self.conn.socket
    }

    /// A quick look at the socket before each piece of work: a connection made earlier may
    /// outlive the socket (a containerd being restarted), and the run should wait for it.
    fn reachable(&self) -> Result<()> {
        match socket::probe_socket(&self.conn.socket) {
            None => Ok(()),
            Some(problem) => Err(Unreachable(format!(
                "containerd socket {} {problem}",
                self.conn.socket.display()
            ))
            .into()),
        }
    }

    /// The presence lock, taken if not yet (exclusively when `exclusive` and no other importer
    /// holds it): the lock held, and the same when it was taken exclusively by this call.
    fn hold_presence(&self, exclusive: bool) -> (Option<FileId>, Option<FileId>) {
        let mut held = crate::sync::lock(&self.presence);
        if let Some(p) = held.as_ref() {
            return (Some(p.id), None);
        }
        let Some((p, alone)) = self
            .conn
            .guard
            .as_deref()
            .and_then(|dir| Presence::take(dir, exclusive))
        else {
            return (None, None);
        };
        let id = p.id;
        *held = Some(p);
        (Some(id), alone.then_some(id))
    }

    /// The presence lock from exclusive to shared, for the rest of the run.
    fn share_presence(&self) {
        if let Some(p) = crate::sync::lock(&self.presence).as_ref() {
            p.share();
        }
    }

    fn create_lease(&self) -> Result<String> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let id = format!(
            "offline-images-{}-{}",
            std::process::id(),
            now.as_nanos() % 1_000_000_000_000
        );
        let expires = rfc3339(now.as_secs() + LEASE_EXPIRES_SECS);
        let mut labels = HashMap::from([("containerd.io/gc.expire".to_string(), expires)]);
        if let Some(owner) = &self.owner {
            let owner = Owner {
                presence: self.hold_presence(false).0,
                ..owner.clone()
            };
            labels.extend(owner.labels());
        }
        let mut leases = LeasesClient::new(self.conn.channel.clone());
        let req = self.conn.req(
            CreateRequest {
                id: id.clone(),
                labels,
            },
            None,
        );
        self.conn
            .call("creating a lease", leases.create(req))
            .map_err(anyhow::Error::from)
            .context("cannot take a lease for the import")?;
        Ok(id)
    }

    /// Delete the lease; with `sync`, wait until containerd has collected what only it held.
    fn delete_lease(&self, id: &str, sync: bool) -> Result<()> {
        let mut leases = LeasesClient::new(self.conn.channel.clone());
        let req = self.conn.req(
            DeleteRequest {
                id: id.to_string(),
                sync,
            },
            None,
        );
        self.conn
            .call("deleting the import's lease", leases.delete(req))
            .map_err(anyhow::Error::from)?;
        Ok(())
    }

    /// The first step of an archive's import under `lease`: read it, and store in the
    /// content store what containerd lacks, passing `gate` before the first write (and at the
    /// end when nothing was written). What the rest needs is returned.
    fn upload<'a>(
        &'a self,
        lease: &str,
        tar: &mut dyn Read,
        platform: &Platform,
        path: Option<&Path>,
        gate: Option<Gate<'a>>,
    ) -> Result<Uploaded<'a>> {
        let lookup = match path {
            None => Lookup::Never,
            // Cheap on a plain tar: its headers and small documents only.
            Some(path) if crate::archive::open(path)?.compression == Compression::None => {
                Lookup::DiffIds(preflight::docker_layer_digests(path)?)
            }
            Some(_) => Lookup::BySize,
        };
        let mut ingest = Ingest::new(&self.conn, lease, gate, lookup);
        let mut inspected =
            inspect_stream_into(tar, Compression::None, Limits::default(), &mut ingest)?;
        if let Some(path) = path {
            ingest.send_left_out(path)?;
        }
        // An upgrade bundle's image: the layers it does not carry must be here already.
        inspected.complete_with(&|digest| ingest.exists(digest).unwrap_or(false));
        let info = inspected.info;
        let plans = image::plans(&mut ingest, &info, platform)?;
        // Nothing written: the turn and the preflight all the same, for what the unpack adds.
        ingest.open_gate()?;
        Ok(Uploaded {
            ingest,
            info,
            plans,
        })
    }

    /// The second step: unpack the layers that have no snapshot yet, and name the images.
    fn unpack_and_name(&self, lease: &str, up: Uploaded<'_>) -> Result<Imported> {
        let Uploaded {
            ingest,
            info,
            plans,
        } = up;
        let mut unpacked = image::Unpacked::default();
        for plan in &plans {
            image::unpack(
                &self.conn,
                &ingest,
                lease,
                plan,
                &self.snapshotter,
                &mut unpacked,
            )?;
            image::label_plan(&self.conn, &ingest, plan, &self.snapshotter)?;
        }
        let names = self.create_images(&plans)?;
        let detail = format!(
            "sent {} to containerd, {} it had already; {} layer(s) unpacked, {} already unpacked",
            crate::archive::human_bytes(ingest.sent()),
            crate::archive::human_bytes(ingest.skipped()),
            unpacked.applied,
            unpacked.present
        );
        Ok(Imported {
            info,
            names,
            detail: Some(detail),
        })
    }

    /// One archive under a lease of its own, in two steps (see [`Runtime::stage_file`]): the
    /// lease is deleted when either step fails, and with it what was written for the archive.
    fn stage_leased<'a>(
        &'a self,
        tar: &mut dyn Read,
        platform: &Platform,
        path: Option<&Path>,
        gate: Option<Gate<'a>>,
    ) -> Result<Rest<'a>> {
        self.reachable()?;
        let lease = self.create_lease()?;
        let uploaded = match self.upload(&lease, tar, platform, path, gate) {
            Ok(up) => up,
            Err(e) => return Err(self.drop_lease_after(&lease, e)),
        };
        Ok(Box::new(move || {
            match self.unpack_and_name(&lease, uploaded) {
                Ok(imported) => {
                    // The images now hold what they need; a lease left behind expires anyway.
                    let _ = self.delete_lease(&lease, false);
                    Ok(imported)
                }
                Err(e) => Err(self.drop_lease_after(&lease, e)),
            }
        }))
    }

    /// A failed archive's lease goes; the wait lets the space be free before the next archive.
    fn drop_lease_after(&self, lease: &str, e: anyhow::Error) -> anyhow::Error {
        let _ = self.delete_lease(lease, true);
        e
    }

    /// The image records of `plans`, pinned and managed: the names made.
    fn create_images(&self, plans: &[image::Plan]) -> Result<Vec<String>> {
        let labels = HashMap::from([
            (LABEL_PINNED.to_string(), "pinned".to_string()),
            (LABEL_MANAGED.to_string(), "true".to_string()),
        ]);
        let mut names = Vec::new();
        for plan in plans {
            let own = if plan.names.is_empty() {
                vec![format!("import-{}@{}", today(), plan.target.digest)]
            } else {
                plan.names.clone()
            };
            for name in own {
                image::put_image(&self.conn, &name, &plan.target, labels.clone())?;
                names.push(name);
            }
        }
        Ok(names)
    }

    /// Every blob's labels, by digest.
    fn content_labels(&self) -> Result<HashMap<String, HashMap<String, String>>> {
        let infos = self.conn.list_content()?;
        Ok(infos.into_iter().map(|i| (i.digest, i.labels)).collect())
    }

    fn read_blob(&self, digest: &str) -> Result<Vec<u8>> {
        let mut content = ContentClient::new(self.conn.channel.clone());
        let req = self.conn.req(
            ReadContentRequest {
                digest: digest.to_string(),
                offset: 0,
                size: 0,
            },
            None,
        );
        let data = self.conn.call("reading content", async {
            let mut stream = content.read(req).await?.into_inner();
            let mut data = Vec::new();
            while let Some(m) = stream.message().await? {
                data.extend(m.data);
                if data.len() > 8 << 20 {
                    break;
                }
            }
            Ok(tonic::Response::new(data))
        })?;
        Ok(data)
    }

    fn update_labels(
        &self,
        name: &str,
        labels: HashMap<String, String>,
        paths: Vec<String>,
    ) -> Result<()> {
        let mut images = ImagesClient::new(self.conn.channel.clone());
        // The image's own target goes along, though only labels change: containerd 2.1
        // dereferences it in every update, and crashes on an update without one.
        let req = self.conn.req(
            GetImageRequest {
                name: name.to_string(),
            },
            None,
        );
        let target = self
            .conn
            .call("reading an image", images.get(req))
            .map_err(anyhow::Error::from)?
            .image
            .and_then(|i| i.target);
        let req = self.conn.req(
            UpdateImageRequest {
                image: Some(containerd_client::services::v1::Image {
                    name: name.to_string(),
                    labels,
                    target,
                    ..Default::default()
                }),
                update_mask: Some(FieldMask { paths }),
                ..Default::default()
            },
            None,
        );
        self.conn
            .call("updating image labels", images.update(req))
            .map_err(anyhow::Error::from)?;
        Ok(())
    }
}

impl Runtime for Native {
    fn kind(&self) -> &'static str {
        "containerd"
    }

    fn describe(&self) -> String {
        format!(
            "{} via its gRPC API (socket {}, namespace {}, snapshotter {}: {})",
            self.version,
            self.conn.socket.display(),
            self.conn.namespace,
            self.snapshotter,
            self.snapshotter_from
        )
    }

    fn present(&self) -> Result<Vec<Present>> {
        self.reachable()?;
        let mut images = ImagesClient::new(self.conn.channel.clone());
        let req = self.conn.req(ListImagesRequest { filters: vec![] }, None);
        let list = self
            .conn
            .call("listing images", images.list(req))
            .map_err(anyhow::Error::from)?;
        let content = self.content_labels()?;
        Ok(list
            .images
            .into_iter()
            .map(|i| {
                let target = i.target.map(|t| t.digest).unwrap_or_default();
                Present {
                    name: i.name,
                    config_digest: content::config_of(&target, &content, &self.platform, |d| {
                        self.read_blob(d).ok()
                    }),
                    labels: i.labels.into_iter().collect(),
                }
            })
            .collect())
    }

    /// One `Content.Info` per digest, in the configured namespace.
    fn holds(&self, digests: &[&str]) -> Result<Option<BTreeSet<String>>> {
        let mut held = BTreeSet::new();
        for digest in digests {
            if self.conn.content_size(digest)?.is_some() {
                held.insert(digest.to_string());
            }
        }
        Ok(Some(held))
    }

    fn import(&self, tar: &mut dyn Read, platform: &Platform) -> Result<Imported> {
        self.stage_leased(tar, platform, None, None)?()
    }

    fn import_file(
        &self,
        path: &Path,
        tar: &mut dyn Read,
        platform: &Platform,
    ) -> Result<Imported> {
        self.stage_leased(tar, platform, Some(path), None)?()
    }

    fn stages(&self) -> bool {
        true
    }

    fn stage_file<'a>(
        &'a self,
        path: Option<&Path>,
        tar: &mut dyn Read,
        platform: &Platform,
        gate: Gate<'a>,
    ) -> Result<Rest<'a>> {
        self.stage_leased(tar, platform, path, Some(gate))
    }

    fn reclaim(&self) -> Result<Vec<Leftover>> {
        self.reclaim_leftovers()
    }

    fn preflight(&self, archive: &Path, platform: &Platform, max_used: u8) -> Result<()> {
        self.reachable()?;
        self.check_room(archive, platform, max_used)
    }
    fn label(&self, names: &[String], labels: &BTreeMap<String, String>) -> Result<()> {
        let labels: HashMap<String, String> = labels.clone().into_iter().collect();
        let paths = label_paths(&labels);
        for name in names {
            self.update_labels(name, labels.clone(), paths.clone())
                .with_context(|| format!("cannot label {name}"))?;
        }
        Ok(())
    }

    fn containers(&self) -> Result<Vec<Container>> {
        let mut containers = ContainersClient::new(self.conn.channel.clone());
        let req = self
            .conn
            .req(ListContainersRequest { filters: vec![] }, None);
        let list = self
            .conn
            .call("listing containers", containers.list(req))
            .map_err(anyhow::Error::from)
            .context("cannot list containers")?;
        Ok(list
            .containers
            .into_iter()
            .map(|c| Container {
                id: c.id,
                image: c.image,
            })
            .collect())
    }

    fn unlabel(&self, name: &str, keys: &[String]) -> Result<()> {
        let paths = keys.iter().map(|k| format!("labels.{k}")).collect();
        self.update_labels(name, HashMap::new(), paths)
            .with_context(|| format!("cannot remove labels of {name}"))
    }

    fn remove(&self, name: &str) -> Result<()> {
        let mut images = ImagesClient::new(self.conn.channel.clone());
        let req = self.conn.req(
            DeleteImageRequest {
                name: name.to_string(),
                sync: false,
                target: None,
            },
            None,
        );
        self.conn
            .call("removing an image", images.delete(req))
            .map_err(|e| anyhow!(e))
            .with_context(|| format!("cannot remove {name}"))?;
        Ok(())
    }
}

/// Days since 1970-01-01 as (year, month, day), proleptic Gregorian.
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn rfc3339(secs: u64) -> String {
    let (y, m, d) = civil((secs / 86_400) as i64);
    let s = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    rfc3339(secs)[..10].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_expiry_times_are_written_as_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_827_696), "2000-02-29T12:34:56Z");
        assert_eq!(rfc3339(1_798_761_599), "2026-12-31T23:59:59Z");
    }

    #[test]
    fn chain_ids_follow_the_oci_definition() {
        let plan = image::Plan {
            names: vec![],
            target: image::Desc {
                media_type: String::new(),
                digest: String::new(),
                size: 0,
            },
            manifest: image::Desc {
                media_type: String::new(),
                digest: String::new(),
                size: 0,
            },
            config: image::Desc {
                media_type: String::new(),
                digest: String::new(),
                size: 0,
            },
            layers: vec![],
            diff_ids: vec!["sha256:a".into(), "sha256:b".into()],
        };
        let chain = plan.chain_ids();
        assert_eq!(chain[0], "sha256:a");
        use sha2::{Digest, Sha256};
        let want = crate::digest::hex(&Sha256::digest(b"sha256:a sha256:b"));
        assert_eq!(chain[1], format!("sha256:{want}"));
    }
}
