//! From stored blobs to images the kubelet can run: the manifest each image is named by, the
//! garbage-collection labels that tie index, manifest, config and layers together, the
//! layers unpacked into the snapshotter (keyed by chain ID, existing snapshots skipped), and
//! the image records.

use std::collections::{BTreeMap, HashMap, HashSet};

use anyhow::{anyhow, bail, Context, Result};
use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::diff_client::DiffClient;
use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{
    CommitSnapshotRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
};
use containerd_client::services::v1::{
    ApplyRequest, CreateImageRequest, Image as ImageRecord, Info, InfoRequest, UpdateImageRequest,
    UpdateRequest,
};
use containerd_client::types::Descriptor;
use prost_types::FieldMask;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::client::{label_paths, CallError, Conn};
use super::ingest::Ingest;
use crate::archive::{ArchiveInfo, EntryData, Format, Platform};

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// A content descriptor, as manifests and indexes write them.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct Desc {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: String,
    #[serde(default)]
    pub size: i64,
}

impl Desc {
    fn proto(&self) -> Descriptor {
        Descriptor {
            media_type: self.media_type.clone(),
            digest: self.digest.clone(),
            size: self.size,
            annotations: HashMap::new(),
        }
    }
}

#[derive(Deserialize)]
pub struct IndexDoc {
    /// Docker 25+ writes `"manifests": null` for an index without entries.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub manifests: Vec<Desc>,
}

/// A list that may be absent or `null`: empty either way.
fn null_as_empty<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Vec<T>, D::Error> {
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

#[derive(Deserialize)]
pub struct ManifestDoc {
    pub config: Desc,
    #[serde(default)]
    pub layers: Vec<Desc>,
}

#[derive(Deserialize)]
pub struct RootFs {
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

#[derive(Deserialize)]
pub struct ConfigDoc {
    pub rootfs: RootFs,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DockerEntry {
    pub config: String,
    #[serde(default)]
    pub layers: Vec<String>,
}

/// One image of the archive to create, for the node's platform.
#[derive(Debug)]
pub struct Plan {
    /// Names to create; for an untagged image, a digest name is made up.
    pub names: Vec<String>,
    /// What the names point to: an index or a manifest.
    pub target: Desc,
    pub manifest: Desc,
    pub config: Desc,
    pub layers: Vec<Desc>,
    pub diff_ids: Vec<String>,
}

impl Plan {
    /// Chain IDs of the layers, bottom first: the snapshot names.
    pub fn chain_ids(&self) -> Vec<String> {
        Plan::chain_of(&self.diff_ids)
    }

    /// Chain IDs of layers with these diff IDs, bottom first.
    pub fn chain_of(diff_ids: &[String]) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for d in diff_ids {
            let next = match out.last() {
                None => d.clone(),
                Some(parent) => format!(
                    "sha256:{}",
                    crate::digest::hex(&Sha256::digest(format!("{parent} {d}").as_bytes()))
                ),
            };
            out.push(next);
        }
        out
    }
}

pub fn blob_path(digest: &str) -> String {
    format!("blobs/{}", digest.replacen(':', "/", 1))
}

pub fn parse<'a, T: Deserialize<'a>>(name: &str, data: &'a [u8]) -> Result<T> {
    serde_json::from_slice(data).map_err(|e| anyhow!("{name} is not valid: {e}"))
}

/// The images of the archive to create on `platform`, with the manifests a docker-archive
/// lacks written to the content store.
pub fn plans(
    ingest: &mut Ingest<'_>,
    info: &ArchiveInfo,
    platform: &Platform,
) -> Result<Vec<Plan>> {
    let plans = match info.format {
        Format::DockerArchive => docker_plans(ingest, info, platform)?,
        // A Docker 25+ archive whose index.json lists nothing is read through manifest.json,
        // as the archive reader does.
        Format::DockerOci if index_is_empty(ingest)? => docker_plans(ingest, info, platform)?,
        Format::Oci | Format::DockerOci => oci_plans(ingest, info, platform)?,
    };
    if plans.is_empty() {
        bail!("{}", info.no_image_for(platform));
    }
    Ok(plans)
}

fn index_is_empty(ingest: &Ingest<'_>) -> Result<bool> {
    let Some(data) = ingest.doc("index.json") else {
        return Ok(true);
    };
    let index: IndexDoc = parse("index.json", data)?;
    Ok(index.manifests.is_empty())
}

fn oci_plans(ingest: &Ingest<'_>, info: &ArchiveInfo, platform: &Platform) -> Result<Vec<Plan>> {
    let index: IndexDoc = parse(
        "index.json",
        ingest
            .doc("index.json")
            .context("the archive has no index.json")?,
    )?;
    let mut plans = Vec::new();
    for (desc, image) in index.manifests.iter().zip(&info.images) {
        let Some(chosen) = image.for_platform(platform) else {
            continue;
        };
        let manifest_digest = chosen
            .manifest_digest
            .clone()
            .context("an image of the archive has no manifest")?;
        let path = blob_path(&manifest_digest);
        let data = ingest
            .doc(&path)
            .with_context(|| format!("the manifest {manifest_digest} is not in the archive"))?;
        let doc: ManifestDoc = parse(&path, data)?;
        let mut target = desc.clone();
        if target.media_type.is_empty() {
            let top = ingest.doc(&blob_path(&desc.digest)).unwrap_or_default();
            target.media_type = if serde_json::from_slice::<ManifestDoc>(top).is_ok() {
                OCI_MANIFEST.into()
            } else {
                OCI_INDEX.into()
            };
        }
        let media_type = serde_json::from_slice::<serde_json::Value>(data)
            .ok()
            .and_then(|v| v["mediaType"].as_str().map(str::to_string))
            .unwrap_or_else(|| OCI_MANIFEST.into());
        let manifest = Desc {
            media_type,
            digest: manifest_digest,
            size: data.len() as i64,
        };
        plans.push(plan_of(ingest, image.names.clone(), target, manifest, doc)?);
    }
    Ok(plans)
}

fn plan_of(
    ingest: &Ingest<'_>,
    names: Vec<String>,
    target: Desc,
    manifest: Desc,
    doc: ManifestDoc,
) -> Result<Plan> {
    let config_path = blob_path(&doc.config.digest);
    let config = ingest.doc(&config_path).with_context(|| {
        format!(
            "the image config {} is not in the archive",
            doc.config.digest
        )
    })?;
    let config: ConfigDoc = parse(&config_path, config)?;
    if config.rootfs.diff_ids.len() != doc.layers.len() {
        bail!(
            "the image config {} lists {} layers, its manifest {}",
            doc.config.digest,
            config.rootfs.diff_ids.len(),
            doc.layers.len()
        );
    }
    Ok(Plan {
        names,
        target,
        manifest,
        config: doc.config,
        layers: doc.layers,
        diff_ids: config.rootfs.diff_ids,
    })
}

fn layer_type(head: &[u8]) -> &'static str {
    if head.starts_with(&[0x1f, 0x8b]) {
        DOCKER_LAYER_GZIP
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        OCI_LAYER_ZSTD
    } else {
        DOCKER_LAYER
    }
}

/// A docker-archive names config and layers by file: a manifest is made for each image, as
/// containerd's own importer does, and stored.
fn docker_plans(
    ingest: &mut Ingest<'_>,
    info: &ArchiveInfo,
    platform: &Platform,
) -> Result<Vec<Plan>> {
    let entries: Vec<DockerEntry> = parse(
        "manifest.json",
        ingest
            .doc("manifest.json")
            .context("the archive has no manifest.json")?,
    )?;
    let mut plans = Vec::new();
    for (entry, image) in entries.iter().zip(&info.images) {
        if image.for_platform(platform).is_none() {
            continue;
        }
        let config = ingest
            .blob(&entry.config)
            .with_context(|| format!("{} is not in the archive", entry.config))?
            .clone();
        let mut layers = Vec::new();
        for l in &entry.layers {
            let b = ingest
                .blob(l)
                .with_context(|| format!("the layer {l} is not in the archive"))?;
            layers.push(Desc {
                media_type: layer_type(&b.head).into(),
                digest: b.digest.clone(),
                size: b.size as i64,
            });
        }
        let doc = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": DOCKER_CONFIG, "digest": config.digest, "size": config.size},
            "layers": layers,
        });
        let bytes = serde_json::to_vec(&doc).map_err(|e| anyhow!("a manifest: {e}"))?;
        let digest = format!("sha256:{}", crate::digest::hex(&Sha256::digest(&bytes)));
        ingest.store_known(
            "the image manifest",
            &digest,
            bytes.len() as u64,
            EntryData::Bytes(&bytes),
        )?;
        let manifest = Desc {
            media_type: DOCKER_MANIFEST.into(),
            digest,
            size: bytes.len() as i64,
        };
        ingest.keep_doc(blob_path(&manifest.digest), bytes.clone());
        let parsed: ManifestDoc = parse("manifest", &bytes)?;
        let config_doc = ingest.doc(&entry.config).map(<[u8]>::to_vec);
        if let Some(c) = config_doc {
            ingest.keep_doc(blob_path(&config.digest), c);
        }
        plans.push(plan_of(
            ingest,
            image.names.clone(),
            manifest.clone(),
            manifest,
            parsed,
        )?);
    }
    Ok(plans)
}

/// Set labels on a blob, keeping its others.
/// A blob shared by several repositories keeps every one of them in its
/// `containerd.io/distribution.source.*` labels.
pub fn label_content(conn: &Conn, digest: &str, mut labels: HashMap<String, String>) -> Result<()> {
    if labels.is_empty() {
        return Ok(());
    }
    let mut content = ContentClient::new(conn.channel.clone());
    if labels.keys().any(|k| k.starts_with(SOURCE_PREFIX)) {
        let req = conn.req(
            InfoRequest {
                digest: digest.to_string(),
            },
            None,
        );
        let had = conn
            .call("a content lookup", content.info(req))
            .map_err(anyhow::Error::from)
            .with_context(|| format!("cannot read the labels of {digest}"))?
            .info
            .map(|i| i.labels)
            .unwrap_or_default();
        for (k, v) in labels.iter_mut() {
            if let Some(old) = had.get(k).filter(|_| k.starts_with(SOURCE_PREFIX)) {
                *v = merge_sources(old, v);
            }
        }
    }
    let paths = label_paths(&labels);
    let req = conn.req(
        UpdateRequest {
            info: Some(Info {
                digest: digest.to_string(),
                labels,
                ..Default::default()
            }),
            update_mask: Some(FieldMask { paths }),
        },
        None,
    );
    conn.call("labelling content", content.update(req))
        .map_err(anyhow::Error::from)
        .with_context(|| format!("cannot label {digest}"))?;
    Ok(())
}

const SOURCE_PREFIX: &str = "containerd.io/distribution.source.";

/// `a,b` and `b,c` -> `a,b,c`.
fn merge_sources(old: &str, new: &str) -> String {
    let mut all: Vec<&str> = old.split(',').filter(|s| !s.is_empty()).collect();
    for r in new.split(',') {
        if !r.is_empty() && !all.contains(&r) {
            all.push(r);
        }
    }
    all.join(",")
}

/// `containerd.io/distribution.source.HOST=REPO[,REPO]` for the names of an image, so a
/// node-local mirror can serve its blobs.
fn source_labels(names: &[String]) -> HashMap<String, String> {
    let mut by_host: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for n in names {
        if let Ok(r) = crate::reference::Reference::parse(n) {
            let repos = by_host.entry(r.domain.clone()).or_default();
            if !repos.contains(&r.path) {
                repos.push(r.path.clone());
            }
        }
    }
    by_host
        .into_iter()
        .map(|(h, r)| {
            (
                format!("containerd.io/distribution.source.{h}"),
                r.join(","),
            )
        })
        .collect()
}

/// The labels containerd's garbage collector and its unpacker expect, on every blob of `plan`.
pub fn label_plan(conn: &Conn, ingest: &Ingest<'_>, plan: &Plan, snapshotter: &str) -> Result<()> {
    let source = source_labels(&plan.names);
    if plan.target.digest != plan.manifest.digest {
        if let Some(doc) = ingest.doc(&blob_path(&plan.target.digest)) {
            let index: IndexDoc = parse(&plan.target.digest, doc)?;
            let mut l = source.clone();
            for (i, m) in index.manifests.iter().enumerate() {
                l.insert(
                    format!("containerd.io/gc.ref.content.m.{i}"),
                    m.digest.clone(),
                );
            }
            label_content(conn, &plan.target.digest, l)?;
        }
    }
    let mut l = source.clone();
    l.insert(
        "containerd.io/gc.ref.content.config".into(),
        plan.config.digest.clone(),
    );
    for (i, layer) in plan.layers.iter().enumerate() {
        l.insert(
            format!("containerd.io/gc.ref.content.l.{i}"),
            layer.digest.clone(),
        );
    }
    label_content(conn, &plan.manifest.digest, l)?;
    let mut l = source.clone();
    if let Some(top) = plan.chain_ids().last() {
        l.insert(
            format!("containerd.io/gc.ref.snapshot.{snapshotter}"),
            top.clone(),
        );
    }
    label_content(conn, &plan.config.digest, l)?;
    for (layer, diff_id) in plan.layers.iter().zip(&plan.diff_ids) {
        let mut l = source.clone();
        l.insert("containerd.io/uncompressed".into(), diff_id.clone());
        label_content(conn, &layer.digest, l)?;
    }
    Ok(())
}

/// Whether snapshot `key` exists in `snapshotter`.
pub fn snapshot_exists(conn: &Conn, snapshotter: &str, key: &str) -> Result<bool> {
    let mut snapshots = SnapshotsClient::new(conn.channel.clone());
    let req = conn.req(
        StatSnapshotRequest {
            snapshotter: snapshotter.to_string(),
            key: key.to_string(),
        },
        None,
    );
    match conn.call("a snapshot lookup", snapshots.stat(req)) {
        Ok(_) => Ok(true),
        Err(CallError::NotFound(_)) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// What unpacking an archive's images did, counted per layer: one image under several names
/// (a tag and digest names: one plan each) and images on one base count each layer once.
#[derive(Debug, Default)]
pub struct Unpacked {
    /// Layers unpacked now.
    pub applied: usize,
    /// Layers whose snapshot was there before this archive.
    pub present: usize,
    /// Chain IDs an earlier image of this archive already handled.
    seen: HashSet<String>,
}

/// Unpack the layers of `plan` that have no snapshot yet: Prepare on the parent's chain ID,
/// Apply the layer, Commit under the layer's chain ID. A layer an earlier image of the archive
/// handled is neither looked up nor counted again.
pub fn unpack(
    conn: &Conn,
    ingest: &Ingest<'_>,
    lease: &str,
    plan: &Plan,
    snapshotter: &str,
    counts: &mut Unpacked,
) -> Result<()> {
    let chain = plan.chain_ids();
    for (i, id) in chain.iter().enumerate() {
        if !counts.seen.insert(id.clone()) {
            continue;
        }
        if snapshot_exists(conn, snapshotter, id)? {
            ingest.hold(id, &format!("snapshots/{snapshotter}"))?;
            counts.present += 1;
            continue;
        }
        let parent = if i == 0 { "" } else { chain[i - 1].as_str() };
        let step = Step {
            layer: &plan.layers[i],
            diff_id: &plan.diff_ids[i],
            parent,
            chain_id: id,
        };
        apply_layer(conn, lease, snapshotter, step)?;
        counts.applied += 1;
    }
    Ok(())
}

/// One layer to unpack: onto `parent`'s snapshot, committed as `chain_id`.
struct Step<'a> {
    layer: &'a Desc,
    diff_id: &'a str,
    parent: &'a str,
    chain_id: &'a str,
}

/// Whether the snapshot committed was ours, or one made meanwhile by someone else (the CRI,
/// another tool), which stays.
enum Committed {
    Ours,
    Theirs,
}

fn apply_layer(conn: &Conn, lease: &str, snapshotter: &str, step: Step<'_>) -> Result<()> {
    let mut snapshots = SnapshotsClient::new(conn.channel.clone());
    let key = format!("offline-images-extract-{lease} {}", step.chain_id);
    let req = conn.req(
        PrepareSnapshotRequest {
            snapshotter: snapshotter.to_string(),
            key: key.clone(),
            parent: step.parent.to_string(),
            labels: HashMap::new(),
        },
        Some(lease),
    );
    let mounts = conn
        .call("preparing a snapshot", snapshots.prepare(req))
        .map_err(anyhow::Error::from)
        .with_context(|| {
            format!(
                "cannot prepare a snapshot in {snapshotter} for {}",
                step.layer.digest
            )
        })?
        .mounts;
    let committed = apply_and_commit(conn, lease, snapshotter, &step, &key, mounts);
    if !matches!(committed, Ok(Committed::Ours)) {
        let req = conn.req(
            RemoveSnapshotRequest {
                snapshotter: snapshotter.to_string(),
                key,
            },
            Some(lease),
        );
        let _ = conn.call("removing a snapshot", snapshots.remove(req));
    }
    committed.map(|_| ())
}

fn apply_and_commit(
    conn: &Conn,
    lease: &str,
    snapshotter: &str,
    step: &Step<'_>,
    key: &str,
    mounts: Vec<containerd_client::types::Mount>,
) -> Result<Committed> {
    let mut diff = DiffClient::new(conn.channel.clone());
    let req = conn.req(
        ApplyRequest {
            diff: Some(step.layer.proto()),
            mounts,
            ..Default::default()
        },
        Some(lease),
    );
    let applied = conn
        .call_long("unpacking a layer", diff.apply(req))
        .map_err(anyhow::Error::from)
        .with_context(|| format!("cannot unpack the layer {}", step.layer.digest))?;
    let got = applied.applied.map(|d| d.digest).unwrap_or_default();
    if got != step.diff_id {
        bail!(
            "the layer {} unpacks to {got}, but the image config says {}",
            step.layer.digest,
            step.diff_id
        );
    }
    let mut snapshots = SnapshotsClient::new(conn.channel.clone());
    let req = conn.req(
        CommitSnapshotRequest {
            snapshotter: snapshotter.to_string(),
            name: step.chain_id.to_string(),
            key: key.to_string(),
            labels: HashMap::new(),
        },
        Some(lease),
    );
    match conn.call("committing a snapshot", snapshots.commit(req)) {
        Ok(_) => Ok(Committed::Ours),
        Err(CallError::Exists(_)) => Ok(Committed::Theirs),
        Err(e) => {
            Err(anyhow::Error::from(e)
                .context(format!("cannot commit the snapshot {}", step.chain_id)))
        }
    }
}

/// Create image `name` pointing at `target`, or point the existing one there; `labels` are
/// set, the image's other labels kept.
pub fn put_image(
    conn: &Conn,
    name: &str,
    target: &Desc,
    labels: HashMap<String, String>,
) -> Result<()> {
    let mut images = ImagesClient::new(conn.channel.clone());
    let record = ImageRecord {
        name: name.to_string(),
        labels: labels.clone(),
        target: Some(target.proto()),
        ..Default::default()
    };
    let req = conn.req(
        CreateImageRequest {
            image: Some(record.clone()),
            ..Default::default()
        },
        None,
    );
    match conn.call("creating an image", images.create(req)) {
        Ok(_) => return Ok(()),
        Err(CallError::Exists(_)) => {}
        Err(e) => return Err(anyhow::Error::from(e).context(format!("cannot create {name}"))),
    }
    let mut paths = label_paths(&labels);
    paths.push("target".into());
    let req = conn.req(
        UpdateImageRequest {
            image: Some(record),
            update_mask: Some(FieldMask { paths }),
            ..Default::default()
        },
        None,
    );
    conn.call("updating an image", images.update(req))
        .map_err(anyhow::Error::from)
        .with_context(|| format!("cannot update {name}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_repositories_a_blob_comes_from_are_merged_not_replaced() {
        assert_eq!(merge_sources("oi/a", "oi/b"), "oi/a,oi/b");
        assert_eq!(merge_sources("oi/a,oi/b", "oi/b"), "oi/a,oi/b");
        assert_eq!(merge_sources("", "oi/b"), "oi/b");
    }
}
