//! Disk preflight: before an archive is sent, what it would add to containerd's disk (the
//! blobs containerd lacks, plus the unpacked size of the layers it has no snapshot of) is
//! compared with the free space of the filesystems holding containerd's content store and
//! snapshotter. An archive that would leave one of them fuller than the limit is refused,
//! naming the numbers, before a byte is sent: a node whose disk fills up has its pods evicted.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use containerd_client::services::v1::introspection_client::IntrospectionClient;
use containerd_client::services::v1::PluginsRequest;
use sha2::{Digest, Sha256};

use super::client::Conn;
use super::disk::{statfs, Fs};
use super::image::{blob_path, parse, ConfigDoc, DockerEntry, IndexDoc, ManifestDoc, Plan};
use super::ingest::{Ingest, Lookup};
use super::Native;
use crate::archive::{
    human_bytes, inspect_path_into, EntryData, EntrySink, Format, Limits, Platform,
};
use crate::failure::{Failure, Kind};

/// When the free space exceeds this many times the archive's size beyond the limit, the
/// archive is not read twice: whatever it holds fits.
const SURE_TO_FIT: u64 = 10;

/// What an archive would add to containerd's disk.
#[derive(Debug, Default, Clone, Copy)]
pub struct Need {
    pub blobs: u64,
    pub unpacked: u64,
    /// Some unpacked sizes are estimates (compressed layers: twice their size).
    pub estimated: bool,
}

/// Where containerd keeps `plugin_type`'s data (as it reports it), seen from here.
pub fn plugin_root(
    conn: &Conn,
    host_root: Option<&Path>,
    plugin_type: &str,
    id: Option<&str>,
) -> Result<PathBuf> {
    let mut client = IntrospectionClient::new(conn.channel.clone());
    let mut filter = format!("type=={plugin_type}");
    if let Some(id) = id {
        filter.push_str(&format!(",id=={id}"));
    }
    let req = conn.req(
        PluginsRequest {
            filters: vec![filter],
        },
        None,
    );
    let plugins = conn
        .call("the plugin query", client.plugins(req))
        .map_err(anyhow::Error::from)?;
    let root = plugins
        .plugins
        .iter()
        .find_map(|p| p.exports.get("root"))
        .ok_or_else(|| {
            anyhow!(
                "containerd does not say where its {plugin_type} {} keeps its data",
                id.unwrap_or("")
            )
        })?;
    Ok(crate::runtime::socket::local_path(
        host_root,
        Path::new(root),
    ))
}

/// The archive's names and sizes, and its small documents, from one cheap pass.
#[derive(Default)]
struct Survey {
    docs: HashMap<String, Vec<u8>>,
    sizes: HashMap<String, u64>,
    links: HashMap<String, String>,
}

impl EntrySink for Survey {
    fn file(&mut self, name: &str, size: u64, data: EntryData<'_>) -> Result<()> {
        self.sizes.insert(name.to_string(), size);
        if let EntryData::Bytes(b) = data {
            if matches!(
                b.iter().find(|c| !c.is_ascii_whitespace()),
                Some(b'{' | b'[')
            ) {
                self.docs.insert(name.to_string(), b.to_vec());
            }
        }
        Ok(())
    }

    fn link(&mut self, name: &str, target: &str) {
        self.links.insert(name.to_string(), target.to_string());
    }
}

impl Survey {
    fn resolve<'a>(&'a self, mut name: &'a str) -> &'a str {
        for _ in 0..8 {
            match self.links.get(name) {
                Some(t) => name = t,
                None => break,
            }
        }
        name
    }

    fn doc(&self, name: &str) -> Option<&[u8]> {
        self.docs.get(self.resolve(name)).map(Vec::as_slice)
    }

    fn size(&self, name: &str) -> u64 {
        self.sizes.get(self.resolve(name)).copied().unwrap_or(0)
    }
}

/// One blob an image needs: (digest, size, compressed).
type BlobNeed = (String, u64, bool);

/// The blobs (manifest, config, layers) and the chain of each image of the archive for
/// `platform`, as the archive states them.
fn images_of(
    s: &Survey,
    format: Format,
    images: &[crate::archive::Image],
    platform: &Platform,
) -> Result<Vec<(Vec<BlobNeed>, Vec<String>)>> {
    let mut out = Vec::new();
    if format == Format::DockerArchive {
        let entries: Vec<DockerEntry> =
            parse("manifest.json", s.doc("manifest.json").unwrap_or(b"[]"))?;
        for (entry, image) in entries.iter().zip(images) {
            if image.for_platform(platform).is_none() {
                continue;
            }
            let config = s
                .doc(&entry.config)
                .context("the image config is not in the archive")?;
            let doc: ConfigDoc = parse(&entry.config, config)?;
            let digest = format!("sha256:{}", crate::digest::hex(&Sha256::digest(config)));
            let mut blobs = vec![(digest, config.len() as u64, false)];
            // docker save's layers are plain tars: their digest is the layer's diff ID.
            for (l, d) in entry.layers.iter().zip(&doc.rootfs.diff_ids) {
                blobs.push((d.clone(), s.size(l), false));
            }
            out.push((blobs, doc.rootfs.diff_ids));
        }
        return Ok(out);
    }
    let index: IndexDoc = parse("index.json", s.doc("index.json").unwrap_or(b"{}"))?;
    for (_, image) in index.manifests.iter().zip(images) {
        let Some(chosen) = image.for_platform(platform) else {
            continue;
        };
        let Some(m) = &chosen.manifest_digest else {
            continue;
        };
        let data = s
            .doc(&blob_path(m))
            .context("a manifest is not in the archive")?;
        let manifest: ManifestDoc = parse(m, data)?;
        let config = s
            .doc(&blob_path(&manifest.config.digest))
            .context("a config is not in the archive")?;
        let doc: ConfigDoc = parse(&manifest.config.digest, config)?;
        let mut blobs = vec![
            (m.clone(), data.len() as u64, false),
            (manifest.config.digest.clone(), config.len() as u64, false),
        ];
        for l in &manifest.layers {
            let compressed = l.media_type.contains("gzip") || l.media_type.contains("zstd");
            blobs.push((l.digest.clone(), s.size(&blob_path(&l.digest)), compressed));
        }
        out.push((blobs, doc.rootfs.diff_ids));
    }
    Ok(out)
}

/// The layers of the docker-archive in the plain tar at `path`, by file name: the diff ID its
/// image config gives each. One pass over the tar's headers: layer data is seeked over.
pub fn docker_layer_digests(path: &Path) -> Result<HashMap<String, String>> {
    let mut survey = Survey::default();
    let info = inspect_path_into(path, Limits::default(), &mut survey)?;
    let mut out = HashMap::new();
    if info.format != Format::DockerArchive {
        return Ok(out);
    }
    let entries: Vec<DockerEntry> = parse(
        "manifest.json",
        survey.doc("manifest.json").unwrap_or(b"[]"),
    )?;
    for entry in &entries {
        let Some(config) = survey.doc(&entry.config) else {
            continue;
        };
        let Ok(doc) = serde_json::from_slice::<ConfigDoc>(config) else {
            continue;
        };
        if doc.rootfs.diff_ids.len() != entry.layers.len() {
            continue;
        }
        for (layer, diff_id) in entry.layers.iter().zip(doc.rootfs.diff_ids) {
            out.insert(survey.resolve(layer).to_string(), diff_id);
        }
    }
    Ok(out)
}

impl Native {
    fn plugin_root(&self, plugin_type: &str, id: Option<&str>) -> Result<PathBuf> {
        plugin_root(&self.conn, self.host_root.as_deref(), plugin_type, id)
    }

    /// What importing the archive at `path` would add to containerd's disk.
    fn need_of(&self, path: &Path, platform: &Platform) -> Result<Need> {
        let mut survey = Survey::default();
        let info = inspect_path_into(path, Limits::default(), &mut survey)?;
        let images = images_of(&survey, info.format, &info.images, platform)?;
        let probe = Ingest::new(&self.conn, "", None, Lookup::Never);
        let mut need = Need::default();
        // A docker layer's digest is its diff ID, the chain ID of a bottom layer: two sets.
        let (mut seen, mut seen_snapshots) = (HashSet::new(), HashSet::new());
        for (blobs, diff_ids) in images {
            for (digest, size, _) in &blobs {
                if seen.insert(digest.clone()) && !probe.exists(digest)? {
                    need.blobs += size;
                }
            }
            let layers: Vec<&BlobNeed> = blobs.iter().skip(blobs.len() - diff_ids.len()).collect();
            let chain = Plan::chain_of(&diff_ids);
            for (id, (_, size, compressed)) in chain.iter().zip(layers) {
                if seen_snapshots.insert(id.clone())
                    && !super::image::snapshot_exists(&self.conn, &self.snapshotter, id)?
                {
                    need.unpacked += if *compressed { size * 2 } else { *size };
                    need.estimated |= compressed;
                }
            }
        }
        Ok(need)
    }

    /// Refuse the archive at `path` if importing it would leave containerd's disk more than
    /// `max_used` percent full.
    pub(super) fn check_room(&self, path: &Path, platform: &Platform, max_used: u8) -> Result<()> {
        let content_root = self.plugin_root("io.containerd.content.v1", None)?;
        // Not every snapshotter says where it keeps its data (`native` does not): by
        // containerd's layout, beside the content store.
        let snapshot_root = self
            .plugin_root("io.containerd.snapshotter.v1", Some(&self.snapshotter))
            .unwrap_or_else(|_| {
                let top = content_root.parent().unwrap_or(&content_root);
                top.join(format!("io.containerd.snapshotter.v1.{}", self.snapshotter))
            });
        let content = statfs(&content_root)?;
        let snapshots = statfs(&snapshot_root).or_else(|_| statfs(&content_root))?;
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        let room = |fs: &Fs| (fs.total / 100 * max_used as u64).saturating_sub(fs.total - fs.avail);
        if room(&content).min(room(&snapshots)) > size.saturating_mul(SURE_TO_FIT) {
            return Ok(());
        }
        let need = self.need_of(path, platform)?;
        let on = |fs: &Fs, bytes: u64, what: &str| -> Result<()> {
            let after = fs.total - fs.avail + bytes;
            if after <= fs.total / 100 * max_used as u64 {
                return Ok(());
            }
            Err(Failure::error(
                Kind::Disk,
                format!(
                "not enough disk space: this archive would add {} ({what}{}), but the filesystem \
                 of {} has {} free of {}, and importing it would leave it {}% full, over the \
                 {max_used}% limit (--disk-max-used); nothing of it was sent",
                human_bytes(bytes),
                if need.estimated { ", unpacked sizes of compressed layers estimated" } else { "" },
                fs.path.display(),
                human_bytes(fs.avail),
                human_bytes(fs.total),
                after * 100 / fs.total.max(1)
            ),
            ))
        };
        if content.id == snapshots.id {
            let what = format!(
                "{} of blobs containerd lacks, {} unpacked",
                human_bytes(need.blobs),
                human_bytes(need.unpacked)
            );
            return on(&content, need.blobs + need.unpacked, &what);
        }
        on(&content, need.blobs, "blobs containerd lacks")?;
        on(&snapshots, need.unpacked, "layers unpacked")
    }
}
