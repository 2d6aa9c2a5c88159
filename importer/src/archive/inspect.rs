//! Reading what an archive holds from one sequential pass over its tar stream.
//!
//! Only small JSON documents (manifests, indexes, configs) are kept in memory, each under a
//! cap; layer data is skipped (seeked over in a plain tar file, read and dropped in a
//! compressed stream), so memory stays flat whatever the archive's size.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::{open, ArchiveInfo, Compression, Format, Image, Platform, PlatformImage};
use crate::failure::{Failure, Kind};
use crate::reference;
use crate::stop::stop_signal;
use crate::units::human_bytes;

/// Caps on what is held in memory while reading an archive.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// `manifest.json`, `index.json`, `repositories`, `oci-layout`.
    pub metadata_max: u64,
    /// A blob small enough to be a manifest or a config is kept when it is JSON.
    pub blob_json_max: u64,
    /// All JSON kept for one archive together.
    pub total_json_max: u64,
    /// Tar entries of one archive (files, links and directories alike). Only the names of the
    /// entries are kept, so this bounds the memory one archive can take whatever it holds.
    pub entries_max: u64,
    /// Images one archive may hold (index entries, `manifest.json` entries).
    pub images_max: usize,
    /// Names one image may have.
    pub names_per_image_max: usize,
    /// Names all the images of one archive may have together: each is an image record to
    /// write and label in the runtime.
    pub names_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            metadata_max: 8 << 20,
            blob_json_max: 4 << 20,
            total_json_max: 32 << 20,
            // docker save writes 3 or 4 entries per layer, an OCI archive one per blob: 400
            // images of a hundred layers stay inside, and the entries' names take some 25 MiB.
            entries_max: 200_000,
            // Each name is an image record to write and label, a few milliseconds each: 2,000
            // keep a whole archive's naming inside the 30 s a stopped pod is given.
            images_max: 2_000,
            names_per_image_max: 1_000,
            names_max: 2_000,
        }
    }
}

const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";
const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
const METADATA_FILES: &[&str] = &["manifest.json", "index.json", "oci-layout", "repositories"];

/// Inspect an archive file. A plain tar is read by seeking over layer data; a compressed one
/// is decompressed once, as a stream.
pub fn inspect_path(path: &Path, limits: Limits) -> Result<ArchiveInfo> {
    inspect_path_into(path, limits, &mut NoSink)
}

/// [`inspect_path`], handing every file and link to `sink` (layer data it leaves unread is
/// seeked over in a plain tar).
pub fn inspect_path_into(
    path: &Path,
    limits: Limits,
    sink: &mut dyn EntrySink,
) -> Result<ArchiveInfo> {
    let opened = open(path)?;
    if opened.compression == Compression::None {
        drop(opened);
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        let mut archive = tar::Archive::new(file);
        let entries = archive.entries_with_seek().map_err(tar_error)?;
        let scan = scan(entries, limits, sink)?;
        // Seeking past the end of a file is no error, and the tar reader takes the end of the
        // file for the end of the archive: a file cut inside an entry's data reads as a shorter
        // archive unless its last entry is checked against the file's size.
        if scan.end_of_entries > size {
            bail!(
                "the tar stream is truncated: the file ends at {size} bytes, inside its last entry \
                 (whose data runs to {} bytes)",
                scan.end_of_entries
            );
        }
        return resolve(&scan, Compression::None, size, limits);
    }
    inspect_stream_into(opened.reader, opened.compression, limits, sink).map(|i| i.info)
}

/// Inspect a decompressed tar stream, reading it to its very end (so a caller that tees the
/// stream into a runtime has passed on every byte when this returns).
pub fn inspect_stream<R: Read>(
    reader: R,
    compression: Compression,
    limits: Limits,
) -> Result<ArchiveInfo> {
    inspect_stream_detailed(reader, compression, limits).map(|i| i.info)
}

/// [`inspect_stream`], keeping what a caller needs to re-describe the archive (for a runtime
/// that reads only one of the layouts) and where its entries end.
pub fn inspect_stream_detailed<R: Read>(
    reader: R,
    compression: Compression,
    limits: Limits,
) -> Result<Inspected> {
    inspect_stream_into(reader, compression, limits, &mut NoSink)
}

/// A reader of the archive's files, called during the one pass over the tar stream (for a
/// runtime that stores blobs as they stream by).
pub trait EntrySink {
    /// A regular file. `data` is its content: in memory when the scan keeps it (small JSON
    /// candidates), else a stream the sink may read (what it leaves unread is skipped).
    fn file(&mut self, name: &str, size: u64, data: EntryData<'_>) -> Result<()>;
    /// A symlink or hard link `name` to the file `target` (both normalised archive names).
    fn link(&mut self, _name: &str, _target: &str) {}
}

/// The content of one tar entry, as [`EntrySink::file`] gets it.
pub enum EntryData<'a> {
    Bytes(&'a [u8]),
    Stream(&'a mut dyn Read),
}

struct NoSink;

impl EntrySink for NoSink {
    fn file(&mut self, _: &str, _: u64, _: EntryData<'_>) -> Result<()> {
        Ok(())
    }
}

/// [`inspect_stream_detailed`], handing every file and link to `sink` as it streams by.
pub fn inspect_stream_into<R: Read>(
    reader: R,
    compression: Compression,
    limits: Limits,
    sink: &mut dyn EntrySink,
) -> Result<Inspected> {
    let mut counted = Counting {
        inner: reader,
        count: 0,
    };
    let scan = {
        let mut archive = tar::Archive::new(&mut counted);
        let entries = archive.entries().map_err(tar_error)?;
        scan(entries, limits, sink)?
    };
    // Past the end-of-archive blocks there may be padding; a tee must see it all.
    io::copy(&mut counted, &mut io::sink()).map_err(tar_error)?;
    let end_of_entries = scan.end_of_entries;
    let has_docker_manifest = scan.json_of("manifest.json").is_some();
    let info = resolve(&scan, compression, counted.count, limits)?;
    Ok(Inspected {
        info,
        end_of_entries,
        has_docker_manifest,
        scan,
    })
}

/// What one pass over an archive learned, beyond [`ArchiveInfo`].
pub struct Inspected {
    pub info: ArchiveInfo,
    /// Offset in the tar stream where the last entry's data (and its padding) ends: the
    /// end-of-archive blocks start here.
    pub end_of_entries: u64,
    /// The archive carries a docker-archive `manifest.json` (docker save, podman, skopeo
    /// docker-archive), which every Docker version loads.
    pub has_docker_manifest: bool,
    scan: Scan,
}

impl Inspected {
    /// A docker-archive `manifest.json` describing this OCI layout, for a loader that reads only
    /// docker-archives: one entry per image, for the manifest of `node`'s platform, whose
    /// `Config` and `Layers` are the blob files already in the archive. Images with no complete
    /// manifest for `node` are left out (the import names them, for every backend); an error
    /// when none is left.
    pub fn docker_manifest_for(&self, node: &Platform) -> Result<Vec<u8>> {
        let mut entries = Vec::new();
        for image in &self.info.images {
            let Some(chosen) = image.for_platform(node) else {
                continue;
            };
            let manifest_digest = chosen.manifest_digest.as_deref().ok_or_else(|| {
                anyhow!(
                    "{} has no image manifest in this archive",
                    image.display_names()
                )
            })?;
            let path = blob_path(manifest_digest);
            let data = self
                .scan
                .json_of(&path)
                .ok_or_else(|| anyhow!("the manifest {manifest_digest} is not in the archive"))?;
            let manifest: Manifest = parse(&path, data)?;
            // A tag names an image in Docker; a digest reference cannot be a RepoTag.
            let tags: Vec<String> = image
                .names
                .iter()
                .filter(|n| reference::Reference::parse(n).is_ok_and(|r| r.digest.is_none()))
                .cloned()
                .collect();
            entries.push(serde_json::json!({
                "Config": blob_path(&manifest.config.digest),
                "RepoTags": if tags.is_empty() { serde_json::Value::Null } else { tags.into() },
                "Layers": manifest.layers.iter().map(|l| blob_path(&l.digest)).collect::<Vec<_>>(),
            }));
        }
        if entries.is_empty() {
            bail!("{}", self.info.no_image_for(node));
        }
        serde_json::to_vec(&entries).map_err(|e| anyhow!("manifest.json: {e}"))
    }
}

impl Inspected {
    /// A `manifest.json` that Docker loads, when the archive's own has a `RepoTags` entry that
    /// Docker refuses ("invalid tag"): a bare name such as `test_image_2` becomes its
    /// normalised form with `:latest` (the name containerd gives it), and a digest reference,
    /// which cannot be a tag, is left out. None when the archive's own will do.
    pub fn docker_manifest_retagged(&self) -> Result<Option<Vec<u8>>> {
        let Some(data) = self.scan.json_of("manifest.json") else {
            return Ok(None);
        };
        let mut entries: Vec<serde_json::Value> = parse("manifest.json", data)?;
        let mut changed = false;
        for entry in &mut entries {
            let Some(tags) = entry.get_mut("RepoTags").and_then(|t| t.as_array_mut()) else {
                continue;
            };
            let mut fixed = Vec::new();
            for tag in tags.iter() {
                let raw = tag.as_str().unwrap_or_default();
                if docker_takes_repo_tag(raw) {
                    fixed.push(tag.clone());
                    continue;
                }
                changed = true;
                if let Ok(r) = reference::Reference::parse(raw) {
                    if r.digest.is_none() {
                        fixed.push(r.to_string().into());
                    }
                }
            }
            *tags = fixed;
        }
        if !changed {
            return Ok(None);
        }
        serde_json::to_vec(&entries)
            .map(Some)
            .map_err(|e| anyhow!("manifest.json: {e}"))
    }
}

impl Inspected {
    /// An `index.json` for a loader that names images from the index alone (ctr, and Docker's
    /// containerd image store), when the archive's own would not give them the names this
    /// reading gives: one entry per name with that name as `io.containerd.image.name`.
    /// - An index with no manifests (`"manifests": null` beside a valid `manifest.json`, as
    ///   Docker 25+ can write): the entries point to each named image's OCI manifest blob.
    /// - An index whose entries carry a short name (`oi/app:1` as a `ref.name`, as skopeo
    ///   writes it), or none beside the names `manifest.json` gives: the same entries, named.
    ///
    /// The last `index.json` of a tar stream is the one those loaders read. None when the
    /// archive's own index will do.
    pub fn oci_index_for_containerd(&self) -> Result<Option<Vec<u8>>> {
        let Some(index) = self.scan.json_of("index.json") else {
            return Ok(None);
        };
        let doc: serde_json::Value = parse("index.json", index)?;
        let entries = doc["manifests"].as_array().cloned().unwrap_or_default();
        let manifests = if entries.is_empty() {
            if !self.has_docker_manifest {
                return Ok(None);
            }
            self.entries_from_docker_manifest()
        } else {
            match self.renamed_entries(&entries) {
                Some(m) => m,
                None => return Ok(None),
            }
        };
        if manifests.is_empty() {
            return Ok(None);
        }
        let mut out = doc.clone();
        out["manifests"] = manifests.into();
        if out.get("schemaVersion").is_none() {
            out["schemaVersion"] = 2.into();
        }
        serde_json::to_vec(&out)
            .map(Some)
            .map_err(|e| anyhow!("index.json: {e}"))
    }

    /// The index's entries with each image's names as `io.containerd.image.name`, one entry per
    /// name; None when every entry already carries exactly its one name.
    fn renamed_entries(&self, entries: &[serde_json::Value]) -> Option<Vec<serde_json::Value>> {
        let mut changed = false;
        let mut out = Vec::new();
        for (entry, image) in entries.iter().zip(&self.info.images) {
            let given = entry["annotations"][ANNOTATION_CONTAINERD_NAME].as_str();
            if image.names.is_empty() {
                out.push(entry.clone());
                continue;
            }
            if image.names.len() != 1 || given != Some(image.names[0].as_str()) {
                changed = true;
            }
            for name in &image.names {
                let mut e = entry.clone();
                if !e["annotations"].is_object() {
                    e["annotations"] = serde_json::json!({});
                }
                e["annotations"][ANNOTATION_CONTAINERD_NAME] = name.as_str().into();
                out.push(e);
            }
        }
        changed.then_some(out)
    }

    /// Index entries for the images `manifest.json` names: each points to the OCI manifest
    /// blob of the image's config.
    fn entries_from_docker_manifest(&self) -> Vec<serde_json::Value> {
        let mut manifests = Vec::new();
        for image in &self.info.images {
            let Some(config) = image.platforms.iter().find_map(|p| p.config_digest.clone()) else {
                continue;
            };
            let Some((path, media_type)) = self.manifest_blob_of(&config) else {
                continue;
            };
            let desc = |name: Option<&String>| {
                let mut d = serde_json::json!({
                    "mediaType": media_type,
                    "digest": path.trim_start_matches("blobs/").replacen('/', ":", 1),
                    "size": self.scan.size_of(&path).unwrap_or(0),
                });
                if let Some(n) = name {
                    d["annotations"] = serde_json::json!({ ANNOTATION_CONTAINERD_NAME: n });
                }
                d
            };
            if image.names.is_empty() {
                manifests.push(desc(None));
            }
            manifests.extend(image.names.iter().map(|n| desc(Some(n))));
        }
        manifests
    }

    /// The blob path and media type of the image manifest whose config is `config`.
    fn manifest_blob_of(&self, config: &str) -> Option<(String, String)> {
        #[derive(Deserialize)]
        struct Doc {
            #[serde(rename = "mediaType", default)]
            media_type: String,
            config: Descriptor,
        }
        self.scan.json.iter().find_map(|(path, data)| {
            let doc: Doc = serde_json::from_slice(data).ok()?;
            (is_blob_name(path) && doc.config.digest == config).then(|| {
                let t = if doc.media_type.is_empty() {
                    "application/vnd.oci.image.manifest.v1+json".to_string()
                } else {
                    doc.media_type
                };
                (path.clone(), t)
            })
        })
    }
}

/// Docker loads a `RepoTags` entry only when it names a tag: `name:tag`, not `name` alone nor
/// `name@digest`.
fn docker_takes_repo_tag(raw: &str) -> bool {
    let last = raw.rsplit('/').next().unwrap_or(raw);
    !raw.contains('@') && last.contains(':') && reference::Reference::parse(raw).is_ok()
}

struct Counting<R> {
    inner: R,
    count: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // A stream's reading (a layer skipped by reading through it, a whole decompression)
        // ends at the next read once the run is asked to stop.
        if let Some(sig) = stop_signal() {
            return Err(io::Error::other(format!("aborted by {sig}")));
        }
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

/// What one pass over the tar entries collected.
#[derive(Default)]
struct Scan {
    /// Regular files: name -> size.
    files: HashMap<String, u64>,
    /// Symlinks and hard links: name -> target name.
    links: HashMap<String, String>,
    /// Small JSON documents kept for resolving: name -> bytes.
    json: HashMap<String, Vec<u8>>,
    json_total: u64,
    /// Where the last entry's data, padded to a whole block, ends.
    end_of_entries: u64,
}

impl Scan {
    /// Follow links (a few hops at most) to the regular file a name stands for.
    fn resolve_name<'a>(&'a self, mut name: &'a str) -> Option<&'a str> {
        for _ in 0..8 {
            if self.files.contains_key(name) {
                return Some(name);
            }
            name = self.links.get(name)?;
        }
        None
    }

    fn size_of(&self, name: &str) -> Option<u64> {
        self.resolve_name(name)
            .and_then(|n| self.files.get(n).copied())
    }

    fn json_of(&self, name: &str) -> Option<&[u8]> {
        self.resolve_name(name)
            .and_then(|n| self.json.get(n))
            .map(Vec::as_slice)
    }
}

fn tar_error(e: io::Error) -> anyhow::Error {
    // Decompression errors already say what is wrong; tar's own need the word "tar".
    if super::open::is_decompress_error(&e) {
        anyhow!("{e}")
    } else {
        anyhow!("the tar stream is corrupt or truncated: {e}")
    }
}

fn scan<R: Read>(
    entries: tar::Entries<'_, R>,
    limits: Limits,
    sink: &mut dyn EntrySink,
) -> Result<Scan> {
    let mut scan = Scan::default();
    let mut count: u64 = 0;
    for entry in entries {
        if let Some(sig) = stop_signal() {
            bail!("aborted by {sig}");
        }
        count += 1;
        if count > limits.entries_max {
            bail!(
                "the archive has more than {} tar entries, over the limit for one archive: \
                 this is not an image archive (or one to split)",
                limits.entries_max
            );
        }
        let mut entry = entry.map_err(tar_error)?;
        scan.end_of_entries = entry.raw_file_position() + entry.size().div_ceil(512) * 512;
        let name = normalize_name(&entry.path_bytes())?;
        if name.is_empty() {
            continue;
        }
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            let target = entry
                .link_name_bytes()
                .ok_or_else(|| anyhow!("link {name:?} has no target"))?;
            let target = String::from_utf8_lossy(&target).into_owned();
            let target = link_target(&name, &target, kind.is_symlink())?;
            sink.link(&name, &target);
            scan.links.insert(name, target);
            continue;
        }
        if !(kind.is_file() || kind.is_contiguous()) {
            continue;
        }
        let size = entry.size();
        scan.files.insert(name.clone(), size);
        let is_metadata = METADATA_FILES.contains(&name.as_str());
        let may_be_json = is_metadata || is_blob_name(&name) || is_legacy_config_name(&name);
        if !may_be_json {
            sink.file(&name, size, EntryData::Stream(&mut entry))?;
            continue;
        }
        let cap = if is_metadata {
            limits.metadata_max
        } else {
            limits.blob_json_max
        };
        if size > cap {
            if is_metadata {
                bail!(
                    "{name} is {} long, over the {} limit for image metadata: this is not an image archive's {name}",
                    human_bytes(size),
                    human_bytes(cap)
                );
            }
            sink.file(&name, size, EntryData::Stream(&mut entry))?;
            continue;
        }
        let mut data = Vec::with_capacity(size as usize);
        (&mut entry)
            .take(size)
            .read_to_end(&mut data)
            .map_err(tar_error)?;
        if (data.len() as u64) < size {
            bail!(
                "the tar stream is truncated: {name} has {} of its {size} bytes",
                data.len()
            );
        }
        sink.file(&name, size, EntryData::Bytes(&data))?;
        scan.keep_json(name, data, limits)?;
    }
    Ok(scan)
}

impl Scan {
    /// Keep a small entry that is JSON (a blob's checked against its name), within the cap on
    /// all JSON of one archive; anything else read whole is dropped.
    fn keep_json(&mut self, name: String, data: Vec<u8>, limits: Limits) -> Result<()> {
        let first = data.iter().find(|b| !b.is_ascii_whitespace());
        if first != Some(&b'{') && first != Some(&b'[') {
            return Ok(());
        }
        if let Some(hex) = name.strip_prefix("blobs/sha256/") {
            let actual = hex_sha256(&data);
            if actual != hex {
                bail!("blob sha256:{hex} is corrupt: its content hashes to sha256:{actual}");
            }
        }
        self.json_total += data.len() as u64;
        if self.json_total > limits.total_json_max {
            bail!(
                "the archive holds more than {} of JSON metadata: refusing it",
                human_bytes(limits.total_json_max)
            );
        }
        self.json.insert(name, data);
        Ok(())
    }
}

/// `./a/b` -> `a/b`. Absolute names and `..` are refused: no image archive has them.
fn normalize_name(raw: &[u8]) -> Result<String> {
    let s = String::from_utf8_lossy(raw);
    if s.starts_with('/') {
        bail!("the archive has an entry with an absolute name ({s:?}); refusing it");
    }
    let mut parts = Vec::new();
    for part in s.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                bail!("the archive has an entry that climbs out with '..' ({s:?}); refusing it")
            }
            p => parts.push(p),
        }
    }
    Ok(parts.join("/"))
}

/// The entry a link named `name` stands for. A symlink's target is relative to the link's own
/// directory (docker save before 25 stores a layer shared by several images once and links the
/// others to it as `../<id>/layer.tar`), a hard link's to the archive's root. `..` is resolved
/// lexically, inside the archive: a target that climbs above its root, or an absolute one,
/// points outside the archive and is refused.
fn link_target(name: &str, target: &str, symlink: bool) -> Result<String> {
    let outside =
        || anyhow!("the archive has a link {name} -> {target} that points outside it; refusing it");
    if target.starts_with('/') {
        return Err(outside());
    }
    let mut parts: Vec<&str> = Vec::new();
    if symlink {
        parts.extend(name.split('/'));
        parts.pop();
    }
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop().ok_or_else(outside)?;
            }
            p => parts.push(p),
        }
    }
    Ok(parts.join("/"))
}

fn is_blob_name(name: &str) -> bool {
    name.starts_with("blobs/") && name.matches('/').count() == 2
}

fn is_legacy_config_name(name: &str) -> bool {
    !name.contains('/') && name.ends_with(".json") && !METADATA_FILES.contains(&name)
}

fn hex_sha256(data: &[u8]) -> String {
    crate::digest::hex(&Sha256::digest(data))
}

// ---- the documents we read -------------------------------------------------------------

#[derive(Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    /// What the descriptor claims the blob's size is (the OCI spec requires it).
    #[serde(default)]
    size: Option<u64>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Deserialize)]
struct Index {
    /// Docker 25+ can write `"manifests": null` beside a valid `manifest.json`.
    #[serde(default, deserialize_with = "null_as_empty")]
    manifests: Vec<Descriptor>,
}

fn null_as_empty<'de, D, T>(d: D) -> std::result::Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

#[derive(Deserialize)]
struct Manifest {
    config: Descriptor,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifestEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    #[serde(default)]
    layers: Vec<String>,
}

#[derive(Deserialize)]
struct ConfigPlatform {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    variant: Option<String>,
}

fn parse<'a, T: Deserialize<'a>>(name: &str, data: &'a [u8]) -> Result<T> {
    serde_json::from_slice(data).map_err(|e| anyhow!("{name} is not valid: {e}"))
}

fn blob_path(digest: &str) -> String {
    format!("blobs/{}", digest.replacen(':', "/", 1))
}

fn config_platform(data: &[u8]) -> Option<Platform> {
    let p: ConfigPlatform = serde_json::from_slice(data).ok()?;
    if p.os.is_empty() || p.architecture.is_empty() {
        return None;
    }
    Some(Platform {
        os: p.os,
        architecture: p.architecture,
        variant: p.variant.filter(|v| !v.is_empty()),
    })
}

/// Whether a manifest-or-index document is an index: it has `manifests` and no `config`.
fn document_is_index(path: &str, data: &[u8]) -> Result<bool> {
    #[derive(Deserialize)]
    struct Shape {
        #[serde(default)]
        manifests: Option<serde_json::Value>,
        #[serde(default)]
        config: Option<serde_json::Value>,
    }
    let shape: Shape = parse(path, data)?;
    match (shape.manifests.is_some(), shape.config.is_some()) {
        (true, true) => bail!("{path} has both a manifests list and a config: it is neither an image index nor an image manifest"),
        (false, false) => bail!("{path} has neither a manifests list nor a config: it is neither an image index nor an image manifest"),
        (is_index, _) => Ok(is_index),
    }
}

/// A descriptor's size against the blob's in the archive, when both are known: a descriptor
/// that claims another size than its blob's is refused (the OCI spec requires them equal, and
/// a reader trusting the claim would report or reserve what is not there).
fn check_size(scan: &Scan, desc: &Descriptor, path: &str) -> Result<()> {
    match (desc.size, scan.size_of(path)) {
        (Some(claimed), Some(actual)) if claimed != actual => bail!(
            "a descriptor says {} is {claimed} bytes, but the archive's blob is {actual} bytes",
            desc.digest
        ),
        _ => Ok(()),
    }
}

fn is_index_type(media_type: &str) -> bool {
    media_type == "application/vnd.oci.image.index.v1+json"
        || media_type == "application/vnd.docker.distribution.manifest.list.v2+json"
}

// ---- resolving the images ----------------------------------------------------------------

fn resolve(
    scan: &Scan,
    compression: Compression,
    tar_size: u64,
    limits: Limits,
) -> Result<ArchiveInfo> {
    let mut warnings = Vec::new();
    let index = scan.json_of("index.json");
    let manifest = scan.json_of("manifest.json");
    let (format, mut images) = match (index, manifest) {
        (None, None) => {
            if scan.files.is_empty() {
                bail!("the archive holds no files");
            }
            bail!("it has no manifest.json or index.json: this tar is not a docker-archive or OCI image archive");
        }
        (Some(index), manifest) => {
            let index: Index = parse("index.json", index)?;
            check_count(
                "index.json",
                "images",
                index.manifests.len(),
                limits.images_max,
            )?;
            let mut images = Vec::new();
            for desc in &index.manifests {
                images.push(oci_image(scan, desc)?);
            }
            let format = if let Some(m) = manifest {
                merge_docker_names(scan, m, &mut images, limits)?;
                Format::DockerOci
            } else {
                Format::Oci
            };
            for (desc, image) in index.manifests.iter().zip(&images) {
                if let (true, Some(tag)) = (image.names.is_empty(), bare_tag(desc)) {
                    warnings.push(format!(
                        "image {} is named only by the tag {tag:?} (no repository); it is imported without a name",
                        desc.digest
                    ));
                }
            }
            (format, images)
        }
        (None, Some(manifest)) => {
            let entries = docker_entries(manifest, limits)?;
            let mut images = Vec::new();
            for entry in &entries {
                images.push(docker_image(scan, entry)?);
            }
            (Format::DockerArchive, images)
        }
    };
    if images.is_empty() {
        bail!("the archive's index lists no images");
    }
    for image in &mut images {
        image.names.dedup();
    }
    let names: usize = images.iter().map(|i| i.names.len()).sum();
    check_count("the archive", "image names", names, limits.names_max)?;
    let mut seen = HashSet::new();
    for name in images.iter().flat_map(|i| &i.names) {
        if !seen.insert(name) {
            warnings.push(format!(
                "{name} is named twice in this archive; the last one wins"
            ));
        }
    }
    Ok(ArchiveInfo {
        format,
        compression,
        tar_size,
        images,
        warnings,
    })
}

/// A count from the archive against its limit: past it, the archive is refused, naming both.
fn check_count(whose: &str, what: &str, count: usize, max: usize) -> Result<()> {
    if count > max {
        bail!(
            "{whose} gives {count} {what}, over the limit of {max} for one archive: refusing it \
             before any of them is imported"
        );
    }
    Ok(())
}

/// The entries of a docker-archive `manifest.json`, each with no more names than one image may
/// have (checked before a name is parsed, so a hostile list costs no time).
fn docker_entries(data: &[u8], limits: Limits) -> Result<Vec<DockerManifestEntry>> {
    let entries: Vec<DockerManifestEntry> = parse("manifest.json", data)?;
    check_count("manifest.json", "images", entries.len(), limits.images_max)?;
    for entry in &entries {
        let tags = entry.repo_tags.as_ref().map_or(0, Vec::len);
        if tags > limits.names_per_image_max {
            bail!(
                "manifest.json gives the image {} {tags} names (RepoTags), over the limit of {} \
                 for one image: refusing the archive before any of them is imported",
                entry.config,
                limits.names_per_image_max
            );
        }
    }
    Ok(entries)
}

/// The names as Docker and containerd write them, each once (in linear time), in their first
/// order. A name that is not a reference by Docker's rules (see `reference`) refuses the whole
/// archive: Docker would load the images named before it and then fail, and the kubelet could
/// never ask for it.
fn normalize_names<'a>(
    names: impl IntoIterator<Item = &'a str>,
    source: &str,
) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for n in names {
        match reference::normalize(n) {
            Ok(r) => {
                if seen.insert(r.clone()) {
                    out.push(r)
                }
            }
            Err(e) => {
                return Err(Failure::error(
                    Kind::Archive,
                    format!("{source}: {e}; no image of this archive is imported"),
                ))
            }
        }
    }
    Ok(out)
}

/// Name precedence, as containerd's importer has it: `io.containerd.image.name`, then
/// `org.opencontainers.image.ref.name` when it is a whole reference (not just a tag).
fn oci_names(desc: &Descriptor) -> Result<Vec<String>> {
    if let Some(n) = desc.annotations.get(ANNOTATION_CONTAINERD_NAME) {
        return normalize_names(
            [n.as_str()],
            &format!("index.json {ANNOTATION_CONTAINERD_NAME}"),
        );
    }
    match desc.annotations.get(ANNOTATION_REF_NAME) {
        Some(n) if n.contains('/') || n.contains(':') => {
            normalize_names([n.as_str()], &format!("index.json {ANNOTATION_REF_NAME}"))
        }
        _ => Ok(Vec::new()),
    }
}

/// The bare tag an OCI index gives an image that has no whole name, e.g. `latest`.
fn bare_tag(desc: &Descriptor) -> Option<&str> {
    desc.annotations
        .get(ANNOTATION_REF_NAME)
        .filter(|n| !n.contains('/') && !n.contains(':'))
        .map(String::as_str)
}

fn oci_image(scan: &Scan, desc: &Descriptor) -> Result<Image> {
    let names = oci_names(desc)?;
    let mut platforms = Vec::new();
    collect_platforms(scan, desc, None, 0, &mut platforms)?;
    Ok(Image {
        names,
        digest: Some(desc.digest.clone()),
        platforms,
    })
}

fn collect_platforms(
    scan: &Scan,
    desc: &Descriptor,
    platform: Option<Platform>,
    depth: usize,
    out: &mut Vec<PlatformImage>,
) -> Result<()> {
    if depth > 4 {
        bail!("the archive's indexes nest more than 4 deep");
    }
    let path = blob_path(&desc.digest);
    check_size(scan, desc, &path)?;
    let Some(data) = scan.json_of(&path) else {
        if let Some(size) = scan.size_of(&path) {
            bail!(
                "{} points to {}, which is in the archive but is no image manifest or index \
                 (a blob of {size} bytes that is not a JSON document)",
                if depth == 0 {
                    "index.json"
                } else {
                    "an image index"
                },
                desc.digest
            );
        }
        if depth == 0 {
            bail!(
                "index.json points to {}, which is not in the archive",
                desc.digest
            );
        }
        // Another platform's manifest, left out of a single-platform export: fine.
        out.push(PlatformImage {
            manifest_digest: Some(desc.digest.clone()),
            platform,
            config_digest: None,
            layers: 0,
            size: 0,
            complete: false,
        });
        return Ok(());
    };
    if document_is_index(&path, data)? {
        if !desc.media_type.is_empty() && !is_index_type(&desc.media_type) {
            bail!(
                "{} is an image index, but the descriptor that points to it says {}",
                desc.digest,
                desc.media_type
            );
        }
        let index: Index = parse(&path, data)?;
        for child in &index.manifests {
            if child
                .annotations
                .get("vnd.docker.reference.type")
                .map(String::as_str)
                == Some("attestation-manifest")
            {
                continue;
            }
            collect_platforms(scan, child, child.platform.clone(), depth + 1, out)?;
        }
        return Ok(());
    }
    out.push(manifest_platform(scan, desc, &path, data, platform)?);
    Ok(())
}

/// The image manifest `desc` points to, read from `data`, for `platform` (or its config's).
fn manifest_platform(
    scan: &Scan,
    desc: &Descriptor,
    path: &str,
    data: &[u8],
    platform: Option<Platform>,
) -> Result<PlatformImage> {
    if is_index_type(&desc.media_type) {
        bail!(
            "{} is an image manifest, but the descriptor that points to it says {}",
            desc.digest,
            desc.media_type
        );
    }
    let manifest: Manifest = parse(path, data)?;
    check_size(scan, &manifest.config, &blob_path(&manifest.config.digest))?;
    let config = scan.json_of(&blob_path(&manifest.config.digest));
    let mut size = 0;
    let mut complete = config.is_some();
    for layer in &manifest.layers {
        check_size(scan, layer, &blob_path(&layer.digest))?;
        match scan.size_of(&blob_path(&layer.digest)) {
            Some(s) => size += s,
            None => complete = false,
        }
    }
    Ok(PlatformImage {
        manifest_digest: Some(desc.digest.clone()),
        platform: platform.or_else(|| config.and_then(config_platform)),
        config_digest: Some(manifest.config.digest.clone()),
        layers: manifest.layers.len(),
        size,
        complete,
    })
}

/// docker save 25+ writes `manifest.json` beside the OCI index; its `RepoTags` name images too.
fn merge_docker_names(
    scan: &Scan,
    manifest: &[u8],
    images: &mut Vec<Image>,
    limits: Limits,
) -> Result<()> {
    let entries = docker_entries(manifest, limits)?;
    for entry in &entries {
        let tags = entry.repo_tags.iter().flatten().map(String::as_str);
        let names = normalize_names(tags, "manifest.json RepoTags")?;
        let config_digest = entry
            .config
            .strip_prefix("blobs/")
            .map(|rest| rest.replacen('/', ":", 1));
        let existing = images.iter_mut().find(|img| {
            img.platforms
                .iter()
                .any(|p| p.config_digest.is_some() && p.config_digest == config_digest)
        });
        match existing {
            Some(img) => {
                for n in names {
                    if !img.names.contains(&n) {
                        img.names.push(n);
                    }
                }
            }
            None => images.push(docker_image(scan, entry)?),
        }
    }
    Ok(())
}

fn docker_image(scan: &Scan, entry: &DockerManifestEntry) -> Result<Image> {
    let config_name = normalize_name(entry.config.as_bytes())?;
    let config = scan.json_of(&config_name).ok_or_else(|| {
        anyhow!("manifest.json names the config {config_name}, which is not in the archive")
    })?;
    let mut size = 0;
    let mut sizes = Vec::new();
    for layer in &entry.layers {
        let name = normalize_name(layer.as_bytes())?;
        let s = scan.size_of(&name).ok_or_else(|| {
            anyhow!("manifest.json names the layer {name}, which is not in the archive")
        })?;
        size += s;
        sizes.push(s);
    }
    let tags = entry.repo_tags.iter().flatten().map(String::as_str);
    Ok(Image {
        names: normalize_names(tags, "manifest.json RepoTags")?,
        digest: None,
        platforms: vec![PlatformImage {
            manifest_digest: converted_manifest_digest(config, &sizes),
            platform: config_platform(config),
            config_digest: Some(format!("sha256:{}", hex_sha256(config))),
            layers: entry.layers.len(),
            size,
            complete: true,
        }],
    })
}

/// The digest of the manifest containerd writes for a docker-archive image when it imports it
/// (ctr, and Docker's containerd image store, whose image ID it is): a Docker schema 2
/// manifest of the config and of each `layer.tar`, whose digest is the layer's diff ID when
/// it is an uncompressed tar, as docker save writes it. None when the config lists a
/// different number of diff IDs than there are layers.
fn converted_manifest_digest(config: &[u8], layer_sizes: &[u64]) -> Option<String> {
    #[derive(Deserialize)]
    struct RootFs {
        #[serde(default)]
        diff_ids: Vec<String>,
    }
    #[derive(Deserialize)]
    struct Config {
        rootfs: RootFs,
    }
    let diff_ids = serde_json::from_slice::<Config>(config)
        .ok()?
        .rootfs
        .diff_ids;
    if diff_ids.len() != layer_sizes.len() {
        return None;
    }
    // Field by field in the order containerd writes them.
    let layers: Vec<String> = diff_ids
        .iter()
        .zip(layer_sizes)
        .map(|(d, size)| {
            format!(
                r#"{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar","digest":{},"size":{size}}}"#,
                serde_json::Value::from(d.as_str())
            )
        })
        .collect();
    let doc = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"sha256:{}","size":{}}},"layers":[{}]}}"#,
        hex_sha256(config),
        config.len(),
        layers.join(",")
    );
    Some(format!("sha256:{}", hex_sha256(doc.as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::archive::tar_of;

    #[test]
    fn a_cut_compressed_stream_is_named_by_its_compression_and_a_cut_tar_as_tar() {
        use std::io::Write;
        let tar = tar_of(&[("manifest.json", &vec![b' '; 200_000][..])]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let mut gz = gz.finish().unwrap();
        gz.truncate(gz.len() / 2);
        let (c, r) = crate::archive::decompress(io::Cursor::new(gz)).unwrap();
        let err = format!("{:#}", inspect_stream(r, c, Limits::default()).unwrap_err());
        assert!(err.contains("the gzip stream is truncated"), "{err}");
        assert!(!err.contains("tar stream"), "{err}");
        let cut = tar[..tar.len() / 2].to_vec();
        let err = format!(
            "{:#}",
            inspect_stream(&cut[..], Compression::None, Limits::default()).unwrap_err()
        );
        assert!(err.contains("tar stream"), "{err}");
    }

    #[test]
    fn a_legacy_docker_archive_gives_names_config_digest_and_platform() {
        let config =
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
        let manifest =
            br#"[{"Config":"abc.json","RepoTags":["demo:1"],"Layers":["l1/layer.tar"]}]"#;
        let tar = tar_of(&[
            ("l1/layer.tar", b"xx"),
            ("abc.json", config),
            ("manifest.json", manifest),
        ]);
        let info = inspect_stream(&tar[..], Compression::None, Limits::default()).unwrap();
        assert_eq!(info.format, Format::DockerArchive);
        assert_eq!(info.images[0].names, vec!["docker.io/library/demo:1"]);
        let p = &info.images[0].platforms[0];
        assert_eq!(
            p.config_digest.as_deref(),
            Some(format!("sha256:{}", hex_sha256(config)).as_str())
        );
        assert_eq!(p.platform.as_ref().unwrap().to_string(), "linux/amd64");
        assert_eq!(info.tar_size, tar.len() as u64);
    }

    #[test]
    fn an_index_with_null_manifests_is_read_through_manifest_json() {
        let config =
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
        let cfg = format!("blobs/sha256/{}", hex_sha256(config));
        let layer = format!("blobs/sha256/{}", hex_sha256(b"xx"));
        let manifest =
            format!(r#"[{{"Config":"{cfg}","RepoTags":["demo:1"],"Layers":["{layer}"]}}]"#);
        let index = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":null}"#;
        let tar = tar_of(&[
            (&layer, b"xx"),
            (&cfg, config),
            ("index.json", index),
            ("manifest.json", manifest.as_bytes()),
        ]);
        let info = inspect_stream(&tar[..], Compression::None, Limits::default()).unwrap();
        assert_eq!(info.images.len(), 1);
        assert_eq!(info.images[0].names, vec!["docker.io/library/demo:1"]);
        assert!(info.images[0].platforms[0].complete);
    }

    #[test]
    fn a_bare_repo_tag_is_given_latest_for_docker_and_the_rest_left_as_they_are() {
        let config = br#"{"architecture":"amd64","os":"linux"}"#;
        let tags = |t: &str| {
            let manifest =
                format!(r#"[{{"Config":"c.json","RepoTags":{t},"Layers":["l/layer.tar"]}}]"#);
            let tar = tar_of(&[
                ("l/layer.tar", b"xx"),
                ("c.json", config),
                ("manifest.json", manifest.as_bytes()),
            ]);
            let i =
                inspect_stream_detailed(&tar[..], Compression::None, Limits::default()).unwrap();
            i.docker_manifest_retagged().unwrap().map(|m| {
                serde_json::from_slice::<serde_json::Value>(&m).unwrap()[0]["RepoTags"].clone()
            })
        };
        assert_eq!(
            tags(r#"["test_image_2", "oi/app:1"]"#),
            Some(serde_json::json!([
                "docker.io/library/test_image_2:latest",
                "oi/app:1"
            ]))
        );
        assert_eq!(
            tags(r#"["localhost:5000/app"]"#),
            Some(serde_json::json!(["localhost:5000/app:latest"]))
        );
        assert_eq!(tags(r#"["oi/app:1", "registry:5000/app:2"]"#), None);
        assert_eq!(tags("null"), None);
    }

    #[test]
    fn a_manifest_naming_an_absent_layer_is_refused_naming_the_layer() {
        let manifest =
            br#"[{"Config":"abc.json","RepoTags":["demo:1"],"Layers":["gone/layer.tar"]}]"#;
        let tar = tar_of(&[("abc.json", b"{}"), ("manifest.json", manifest)]);
        let err = inspect_stream(&tar[..], Compression::None, Limits::default()).unwrap_err();
        assert!(err.to_string().contains("gone/layer.tar"), "{err}");
    }

    #[test]
    fn entries_climbing_out_are_refused() {
        let tar = {
            let mut data = tar_of(&[("manifest.json", b"[]")]);
            // tar::Builder refuses '..', so write the name into the header by hand.
            data[..100].fill(0);
            data[..16].copy_from_slice(b"../manifest.json");
            let mut h = tar::Header::from_byte_slice(&data[..512]).clone();
            h.set_cksum();
            data[..512].copy_from_slice(h.as_bytes());
            data
        };
        let err = inspect_stream(&tar[..], Compression::None, Limits::default()).unwrap_err();
        assert!(err.to_string().contains(".."), "{err}");
    }

    #[test]
    fn link_targets_are_resolved_lexically_inside_the_archive() {
        let shared = link_target("dc86/layer.tar", "../3245/layer.tar", true).unwrap();
        assert_eq!(shared, "3245/layer.tar");
        assert_eq!(
            link_target("a/b/layer.tar", "./../c/./layer.tar", true).unwrap(),
            "a/c/layer.tar"
        );
        // A hard link names its target from the archive's root.
        assert_eq!(
            link_target("b/layer.tar", "a/layer.tar", false).unwrap(),
            "a/layer.tar"
        );
        for (name, target, symlink) in [
            ("dc86/layer.tar", "../../etc/shadow", true),
            ("layer.tar", "../layer.tar", true),
            ("dc86/layer.tar", "/etc/shadow", true),
            ("dc86/layer.tar", "../x", false),
        ] {
            let err = link_target(name, target, symlink).unwrap_err().to_string();
            assert!(
                err.contains("points outside it"),
                "{name} -> {target}: {err}"
            );
        }
    }

    #[test]
    fn an_oversized_manifest_is_refused_not_buffered() {
        let big = vec![b' '; 2048];
        let tar = tar_of(&[("manifest.json", &big)]);
        let limits = Limits {
            metadata_max: 1024,
            ..Limits::default()
        };
        let err = inspect_stream(&tar[..], Compression::None, limits).unwrap_err();
        assert!(err.to_string().contains("over the"), "{err}");
    }

    #[test]
    fn a_plain_tar_with_no_image_metadata_is_named_for_what_it_is() {
        let tar = tar_of(&[("etc/hosts", b"127.0.0.1 localhost")]);
        let err = inspect_stream(&tar[..], Compression::None, Limits::default()).unwrap_err();
        assert!(
            err.to_string().contains("not a docker-archive or OCI"),
            "{err}"
        );
    }

    #[test]
    fn a_multi_platform_index_with_only_one_platforms_blobs_is_usable_for_that_platform() {
        let config = br#"{"architecture":"amd64","os":"linux"}"#;
        let cfg_d = hex_sha256(config);
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{cfg_d}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:{}","size":2}}]}}"#,
            config.len(),
            hex_sha256(b"xx")
        );
        let man_d = hex_sha256(manifest.as_bytes());
        let other = "0".repeat(64);
        let idx = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{man_d}","size":{},"platform":{{"os":"linux","architecture":"amd64"}}}},{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{other}","size":1,"platform":{{"os":"linux","architecture":"arm64"}}}}]}}"#,
            manifest.len()
        );
        let idx_d = hex_sha256(idx.as_bytes());
        let top = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"sha256:{idx_d}","size":{},"annotations":{{"io.containerd.image.name":"example.com/multi:1","org.opencontainers.image.ref.name":"1"}}}}]}}"#,
            idx.len()
        );
        let files: Vec<(String, Vec<u8>)> = vec![
            (
                "oci-layout".into(),
                br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
            ),
            (
                format!("blobs/sha256/{}", hex_sha256(b"xx")),
                b"xx".to_vec(),
            ),
            (format!("blobs/sha256/{cfg_d}"), config.to_vec()),
            (format!("blobs/sha256/{man_d}"), manifest.into_bytes()),
            (format!("blobs/sha256/{idx_d}"), idx.into_bytes()),
            ("index.json".into(), top.into_bytes()),
        ];
        let refs: Vec<(&str, &[u8])> = files
            .iter()
            .map(|(n, d)| (n.as_str(), d.as_slice()))
            .collect();
        let tar = tar_of(&refs);
        let info = inspect_stream(&tar[..], Compression::None, Limits::default()).unwrap();
        assert_eq!(info.format, Format::Oci);
        let image = &info.images[0];
        assert_eq!(image.names, vec!["example.com/multi:1"]);
        assert_eq!(image.platforms.len(), 2);
        let amd64 = image
            .for_platform(&Platform::parse("linux/amd64").unwrap())
            .unwrap();
        assert_eq!(
            amd64.config_digest.as_deref(),
            Some(format!("sha256:{cfg_d}").as_str())
        );
        assert!(image
            .for_platform(&Platform::parse("linux/arm64").unwrap())
            .is_none());

        // The same archive described as a docker-archive, for a loader that reads only those.
        let inspected =
            inspect_stream_detailed(&tar[..], Compression::None, Limits::default()).unwrap();
        assert!(!inspected.has_docker_manifest);
        assert_eq!(inspected.end_of_entries, tar.len() as u64 - 1024);
        let json = inspected
            .docker_manifest_for(&Platform::parse("linux/amd64").unwrap())
            .unwrap();
        let m: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(
            m,
            serde_json::json!([{
                "Config": format!("blobs/sha256/{cfg_d}"),
                "RepoTags": ["example.com/multi:1"],
                "Layers": [format!("blobs/sha256/{}", hex_sha256(b"xx"))],
            }])
        );
        let err = inspected
            .docker_manifest_for(&Platform::parse("linux/arm64").unwrap())
            .unwrap_err();
        assert!(
            err.to_string()
                == "the archive holds no complete image for this node's platform linux/arm64 \
                    (it has: linux/amd64)",
            "{err}"
        );
    }

    /// A one-layer OCI archive whose `index.json` has the one entry `entry` (with `{man}`,
    /// `{man_size}` and `{layer}` replaced by the manifest's and layer's digests and size).
    fn oci_archive_with_entry(entry: &str) -> Vec<u8> {
        let config = br#"{"architecture":"amd64","os":"linux"}"#;
        let layer_d = hex_sha256(b"xx");
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:{layer_d}","size":2}}]}}"#,
            hex_sha256(config),
            config.len()
        );
        let man_d = hex_sha256(manifest.as_bytes());
        let entry = entry
            .replace("{man}", &format!("sha256:{man_d}"))
            .replace("{man_size}", &manifest.len().to_string())
            .replace("{layer}", &format!("sha256:{layer_d}"));
        let index = format!(r#"{{"schemaVersion":2,"manifests":[{entry}]}}"#);
        let files: Vec<(String, Vec<u8>)> = vec![
            (
                "oci-layout".into(),
                br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
            ),
            (format!("blobs/sha256/{layer_d}"), b"xx".to_vec()),
            (
                format!("blobs/sha256/{}", hex_sha256(config)),
                config.to_vec(),
            ),
            (format!("blobs/sha256/{man_d}"), manifest.into_bytes()),
            ("index.json".into(), index.into_bytes()),
        ];
        let refs: Vec<(&str, &[u8])> = files.iter().map(|(n, d)| (n.as_str(), &d[..])).collect();
        tar_of(&refs)
    }

    fn refusal(tar: &[u8], limits: Limits) -> String {
        format!(
            "{:#}",
            inspect_stream(tar, Compression::None, limits).unwrap_err()
        )
    }

    #[test]
    fn two_hundred_thousand_repo_tags_are_refused_by_count_before_any_is_parsed() {
        let tags: Vec<String> = (0..200_000).map(|i| format!("chaos.test/t:{i}")).collect();
        let manifest = serde_json::to_vec(&serde_json::json!([
            {"Config": "c.json", "RepoTags": tags, "Layers": []}
        ]))
        .unwrap();
        let config = br#"{"architecture":"amd64","os":"linux","rootfs":{"diff_ids":[]}}"#;
        let tar = tar_of(&[("c.json", config), ("manifest.json", &manifest)]);
        let err = refusal(&tar, Limits::default());
        assert!(
            err.contains("manifest.json gives the image c.json 200000 names (RepoTags), over the limit of 1000"),
            "{err}"
        );
    }

    #[test]
    fn an_archive_over_the_entry_limit_is_refused_at_the_entry_past_it() {
        let files: Vec<(String, Vec<u8>)> =
            (0..11).map(|i| (format!("f{i}"), Vec::new())).collect();
        let refs: Vec<(&str, &[u8])> = files.iter().map(|(n, d)| (n.as_str(), &d[..])).collect();
        let limits = Limits {
            entries_max: 10,
            ..Limits::default()
        };
        let err = refusal(&tar_of(&refs), limits);
        assert!(err.contains("more than 10 tar entries"), "{err}");
        let refs = &refs[..10];
        let err = refusal(&tar_of(refs), limits);
        assert!(err.contains("not a docker-archive or OCI"), "{err}");
    }

    #[test]
    fn an_index_of_more_images_than_the_limit_is_refused_by_count() {
        let entry = r#"{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{man}","size":{man_size}}"#;
        let many = [entry; 11].join(",");
        let tar = oci_archive_with_entry(&many);
        let limits = Limits {
            images_max: 10,
            ..Limits::default()
        };
        let err = refusal(&tar, limits);
        assert!(
            err.contains("index.json gives 11 images, over the limit of 10"),
            "{err}"
        );
        let names = |n: usize| {
            (0..n)
                .map(|i| format!(r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{{man}}","size":{{man_size}},"annotations":{{"io.containerd.image.name":"chaos.test/n:{i}"}}}}"#))
                .collect::<Vec<_>>()
                .join(",")
        };
        let limits = Limits {
            names_max: 3,
            ..Limits::default()
        };
        let err = refusal(&oci_archive_with_entry(&names(4)), limits);
        assert!(
            err.contains("the archive gives 4 image names, over the limit of 3"),
            "{err}"
        );
        assert!(inspect_stream(
            &oci_archive_with_entry(&names(3))[..],
            Compression::None,
            limits
        )
        .is_ok());
    }

    #[test]
    fn an_index_entry_pointing_at_a_layer_is_told_it_is_no_manifest_not_that_it_is_absent() {
        let tar = oci_archive_with_entry(
            r#"{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{layer}","size":2}"#,
        );
        let err = refusal(&tar, Limits::default());
        assert!(
            err.contains("is in the archive but is no image manifest or index (a blob of 2 bytes"),
            "{err}"
        );
    }

    #[test]
    fn an_index_typed_entry_that_is_a_manifest_is_named_for_what_it_is() {
        let tar = oci_archive_with_entry(
            r#"{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"{man}","size":{man_size}}"#,
        );
        let err = refusal(&tar, Limits::default());
        assert!(
            err.contains("is an image manifest, but the descriptor that points to it says application/vnd.oci.image.index.v1+json"),
            "{err}"
        );
    }

    #[test]
    fn a_descriptor_claiming_a_terabyte_for_a_small_blob_is_refused() {
        let tar = oci_archive_with_entry(
            r#"{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{man}","size":1099511627776}"#,
        );
        let err = refusal(&tar, Limits::default());
        assert!(
            err.contains("is 1099511627776 bytes, but the archive's blob is"),
            "{err}"
        );
        let ok = oci_archive_with_entry(
            r#"{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{man}","size":{man_size}}"#,
        );
        inspect_stream(&ok[..], Compression::None, Limits::default()).unwrap();
    }
}
