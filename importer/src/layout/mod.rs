//! OCI image layout directories (`oci-layout`, `index.json`, `blobs/<alg>/<hex>`) read in
//! place, as crane (`crane pull --format oci`), skopeo (`oci:DIR:REF`), Zarf (`images/`) and
//! Hauler write them: [`LayoutSource`], every layout under an images path.
//!
//! Each `index.json` entry is one image and one unit of the import, named for the log
//! `DIR/index.json#REF`. Opening it builds an OCI archive on the fly (`stream`) that every
//! runtime backend takes as it takes an `oci-archive`; nothing is written to disk. Reading
//! what it holds reads only the JSON documents (`image`), never the layers.
//!
//! The name an entry gives, as the tools write it: `io.containerd.image.name` (ctr, Hauler),
//! else `org.opencontainers.image.ref.name`, which skopeo sets to the REF of `oci:DIR:REF`
//! as given (often a bare tag such as `1.0`: the image is then imported without a name, as an
//! OCI archive's is) and `crane pull --format oci --annotate-ref` to the whole reference; Zarf
//! names its images in `org.opencontainers.image.base.name` alone, which the archive built
//! here gives as `org.opencontainers.image.ref.name` (as Zarf's own importer does).
//!
//! Safety: a bundle on a hostPath is input from elsewhere. Blobs are read only inside the
//! layout (or a shared blob directory of the images path), never through a symlink, and
//! checked against their digests (`blobs`); a layout's `index.json` over the archive reader's
//! limit on images is refused by name before anything of it is read, and a document that
//! names itself fails its image.
//!
//! A layout bundle packed into one file (`export --pack`: a `.tar`, a `.tar.zst`, or their
//! parts) is read as its directory is, in place (`pack`): its units are named
//! `FILE/index.json#REF`.

pub(crate) mod artifacts;
mod blobs;
mod image;
pub(crate) mod pack;
pub(crate) mod pack_check;
mod stream;

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use walkdir::WalkDir;

use crate::archive::{self, ArchiveInfo, Compression, Limits, Opened};
use crate::bundle::{self, BundleArchive, CarriedBlob};
use crate::source::{BlobRef, Checksum, ImageBlobs, Refused, Source, Unit};
use blobs::BlobDirs;
use image::Descriptor;
use stream::{blob_name, TarStream, OCI_LAYOUT};

pub(crate) use blobs::{sha256_hex, Blob};
pub(crate) use image::Graph;

pub(crate) const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";
pub(crate) const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
pub(crate) const ANNOTATION_BASE_NAME: &str = "org.opencontainers.image.base.name";

/// The layers a layout's `images.json` says earlier bundles carried (`export --since`), by
/// digest.
pub(crate) type Carried = HashMap<String, CarriedBlob>;

/// One image of a layout: where its blobs are, and its `index.json` entry.
struct LayoutImage {
    dirs: BlobDirs,
    carried: Arc<Carried>,
    /// The entries of `index.json` that point at this image, one per name it is given, as the
    /// layout gives them (unknown fields kept), Zarf's name moved.
    entries: Vec<serde_json::Value>,
    top: Descriptor,
}

/// Every OCI layout directory under an images path (the path itself when it is one).
pub(crate) struct LayoutSource {
    root: PathBuf,
    units: Vec<Unit>,
    images: Vec<LayoutImage>,
    by_name: HashMap<String, usize>,
    refused: Vec<Refused>,
    limits: Limits,
    /// The files of the packs read as layouts (not archives).
    packs: Vec<PathBuf>,
    /// Signatures, attestations, SBOMs and referrers: entries no import reads.
    artifacts: Vec<artifacts::LayoutArtifact>,
}

/// What the walk over an images path found: layouts, shared blob directories, and files that
/// may be packs.
#[derive(Default)]
struct Found {
    layouts: Vec<PathBuf>,
    shared: Vec<PathBuf>,
    packs: Vec<PathBuf>,
}

/// Layout directories (a directory holding `oci-layout`, not looked into further) and shared
/// blob directories (one holding `sha256/`, as skopeo's `--dest-shared-blob-dir` writes it)
/// under `root`, in path order. Hidden directories are passed over and symlinks not followed,
/// as the archives' discovery does.
fn walk(root: &Path) -> Found {
    let mut found = Found::default();
    if !root.is_dir() {
        return found;
    }
    let mut it = WalkDir::new(root)
        .follow_links(false)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| e.depth() == 0 || !e.file_name().to_string_lossy().starts_with('.'));
    while let Some(entry) = it.next() {
        let Ok(entry) = entry else { continue };
        if entry.file_type().is_file() {
            if pack::may_be(&entry.file_name().to_string_lossy()) {
                found.packs.push(entry.path().to_path_buf());
            }
            continue;
        }
        if !entry.file_type().is_dir() {
            continue;
        }
        let dir = entry.path();
        if fs::symlink_metadata(dir.join("oci-layout")).is_ok() {
            found.layouts.push(dir.to_path_buf());
            it.skip_current_dir();
        } else if entry.depth() > 0
            && fs::symlink_metadata(dir.join("sha256")).is_ok_and(|m| m.is_dir())
        {
            found.shared.push(dir.to_path_buf());
            it.skip_current_dir();
        }
    }
    found
}

/// A small file of the layout (`oci-layout`, `index.json`), never through a symlink.
fn read_small(path: &Path, max: u64) -> Result<Vec<u8>> {
    let meta =
        fs::symlink_metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if meta.file_type().is_symlink() {
        bail!(
            "{} is a symlink: a layout is read only inside it, refusing it",
            path.display()
        );
    }
    if !meta.is_file() {
        bail!("{} is not a regular file, refusing it", path.display());
    }
    if meta.len() > max {
        bail!(
            "{} is {}, over the {} limit for image metadata: refusing it",
            path.display(),
            crate::units::human_bytes(meta.len()),
            crate::units::human_bytes(max)
        );
    }
    let mut data = Vec::new();
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?
        .take(max + 1)
        .read_to_end(&mut data)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(data)
}

/// A small file of the layout at `dir`, or of the pack at `dir`.
fn read_root(dir: &Path, pack: Option<&pack::Pack>, name: &str, max: u64) -> Result<Vec<u8>> {
    match pack {
        Some(pack) => pack.read(name, max),
        None => read_small(&dir.join(name), max),
    }
}

/// The entries of the layout at `dir` (or of the pack at `dir`): its `oci-layout` version
/// checked, its `index.json` within the limit on images.
fn entries(
    dir: &Path,
    pack: Option<&pack::Pack>,
    limits: Limits,
) -> Result<Vec<serde_json::Value>> {
    #[derive(Deserialize)]
    struct OciLayout {
        #[serde(rename = "imageLayoutVersion")]
        version: String,
    }
    #[derive(Deserialize)]
    struct Index {
        #[serde(default)]
        manifests: Option<Vec<serde_json::Value>>,
    }
    let path = dir.join("oci-layout");
    let data = read_root(dir, pack, "oci-layout", limits.metadata_max)?;
    let layout: OciLayout = serde_json::from_slice(&data)
        .map_err(|e| anyhow!("{} is not valid: {e}", path.display()))?;
    if !layout.version.starts_with("1.") {
        bail!(
            "{} says imageLayoutVersion {:?}; this importer reads version 1 layouts",
            path.display(),
            layout.version
        );
    }
    let path = dir.join("index.json");
    let data = read_root(dir, pack, "index.json", limits.metadata_max)?;
    let index: Index = serde_json::from_slice(&data)
        .map_err(|e| anyhow!("{} is not valid: {e}", path.display()))?;
    let manifests = index.manifests.unwrap_or_default();
    if manifests.len() > limits.images_max {
        bail!(
            "{} gives {} images, over the limit of {} for one archive: refusing it before any \
             of them is imported",
            path.display(),
            manifests.len(),
            limits.images_max
        );
    }
    Ok(manifests)
}

/// The entries of an `index.json` grouped by the image they point at (their digest), in the
/// order each image first appears, with the index of its first entry: an image tagged
/// several times (a tag, and names by digest) is one unit with all its names. An entry
/// without a digest is a group of its own (and is refused as no descriptor).
fn by_image(list: Vec<serde_json::Value>) -> Vec<(usize, Vec<serde_json::Value>)> {
    let mut groups: Vec<(usize, Vec<serde_json::Value>)> = Vec::new();
    let mut at: HashMap<String, usize> = HashMap::new();
    for (i, entry) in list.into_iter().enumerate() {
        let key = entry
            .get("digest")
            .and_then(|d| d.as_str())
            .map_or_else(|| format!("#{i}"), str::to_string);
        match at.get(&key) {
            Some(&g) => groups[g].1.push(entry),
            None => {
                at.insert(key, groups.len());
                groups.push((i, vec![entry]));
            }
        }
    }
    groups
}

/// The name an entry gives its image, for the unit's name: see the module's documentation.
fn entry_ref(top: &Descriptor) -> &str {
    [
        ANNOTATION_CONTAINERD_NAME,
        ANNOTATION_REF_NAME,
        ANNOTATION_BASE_NAME,
    ]
    .iter()
    .find_map(|k| top.annotations.get(*k).filter(|v| !v.is_empty()))
    .map_or(top.digest.as_str(), String::as_str)
}

/// Zarf's name (`org.opencontainers.image.base.name`) as `org.opencontainers.image.ref.name`,
/// where the entry has no name of its own.
fn with_zarf_name(mut entry: serde_json::Value, top: &Descriptor) -> serde_json::Value {
    let named = [ANNOTATION_CONTAINERD_NAME, ANNOTATION_REF_NAME]
        .iter()
        .any(|k| top.annotations.get(*k).is_some_and(|v| !v.is_empty()));
    if let (false, Some(base)) = (named, top.annotations.get(ANNOTATION_BASE_NAME)) {
        if let Some(a) = entry.get_mut("annotations").and_then(|a| a.as_object_mut()) {
            a.insert(ANNOTATION_REF_NAME.into(), base.clone().into());
        }
    }
    entry
}

impl LayoutSource {
    /// Every layout under `root`. A layout that cannot be read (its `oci-layout` or
    /// `index.json`), or an entry that is no descriptor, is refused by name.
    pub(crate) fn find(root: &Path) -> LayoutSource {
        let limits = Limits::default();
        let found = walk(root);
        let mut source = LayoutSource {
            root: root.to_path_buf(),
            units: Vec::new(),
            images: Vec::new(),
            by_name: HashMap::new(),
            refused: Vec::new(),
            limits,
            packs: Vec::new(),
            artifacts: Vec::new(),
        };
        for dir in &found.layouts {
            let rel = bundle::relative_name(root, dir);
            let prefix = if rel.is_empty() {
                String::new()
            } else {
                format!("{rel}/")
            };
            let index_name = format!("{prefix}index.json");
            match entries(dir, None, limits) {
                Ok(list) => {
                    let dirs = BlobDirs {
                        layout: dir.clone(),
                        shared: found.shared.clone(),
                        pack: None,
                    };
                    let carried = Arc::new(carried_earlier(dir, None, limits));
                    for (i, group) in by_image(list) {
                        source.add(&dirs, &carried, &index_name, i, group);
                    }
                }
                Err(e) => source.refused.push(Refused {
                    name: index_name,
                    reason: format!("{e:#}"),
                }),
            }
        }
        for candidate in pack::candidates(found.packs) {
            source.add_pack(root, &candidate);
        }
        source
    }

    /// The images of `candidate` when it is a pack; refused by name when it is a pack that
    /// cannot be read (or parts that join into none).
    fn add_pack(&mut self, root: &Path, candidate: &pack::Candidate) {
        let rel = bundle::relative_name(root, &candidate.path);
        let refuse = |reason: String| Refused {
            name: rel.clone(),
            reason,
        };
        let pack = match candidate.open(self.limits) {
            Ok(None) => return,
            Ok(Some(pack)) => Arc::new(pack),
            Err(e) => {
                self.packs.extend(candidate.files());
                return self.refused.push(refuse(format!("{e:#}")));
            }
        };
        self.packs.extend(pack.files().map(Path::to_path_buf));
        for (member, why) in pack.refused() {
            self.refused
                .push(refuse(format!("the member {member:?} is {why}")));
        }
        let index_name = format!("{rel}/index.json");
        match entries(&pack.path, Some(&pack), self.limits) {
            Ok(list) => {
                let dirs = BlobDirs {
                    layout: pack.path.clone(),
                    shared: Vec::new(),
                    pack: Some(pack.clone()),
                };
                let carried = Arc::new(carried_earlier(&pack.path, Some(&pack), self.limits));
                for (i, group) in by_image(list) {
                    self.add(&dirs, &carried, &index_name, i, group);
                }
            }
            Err(e) => self.refused.push(refuse(format!("{e:#}"))),
        }
    }

    /// Whether `path` is (a part of) a pack these layouts read, so no archive.
    pub(crate) fn holds(&self, path: &Path) -> bool {
        self.packs.iter().any(|p| p == path)
    }

    /// The unit of one image of a layout's `index.json`: `group`, the entries that point at
    /// it, the first of them the `i`th entry.
    fn add(
        &mut self,
        dirs: &BlobDirs,
        carried: &Arc<Carried>,
        index_name: &str,
        i: usize,
        group: Vec<serde_json::Value>,
    ) {
        let (found, group): (Vec<_>, Vec<_>) = group.into_iter().partition(artifacts::is_artifact);
        let found = found
            .into_iter()
            .filter_map(|e| artifacts::LayoutArtifact::new(dirs, index_name, e));
        self.artifacts.extend(found);
        if group.is_empty() {
            return;
        }
        let mut named = Vec::with_capacity(group.len());
        for entry in group {
            match serde_json::from_value::<Descriptor>(entry.clone()) {
                Ok(top) => named.push((with_zarf_name(entry, &top), top)),
                Err(e) => {
                    return self.refused.push(Refused {
                        name: format!("{index_name}#{i}"),
                        reason: format!("entry {i} of {index_name} is no descriptor: {e}"),
                    })
                }
            }
        }
        let top = named[0].1.clone();
        let mut name = format!("{index_name}#{}", entry_ref(&top));
        if self.by_name.contains_key(&name) {
            name = format!("{name}~{i}");
        }
        let image = LayoutImage {
            dirs: dirs.clone(),
            carried: carried.clone(),
            entries: named.into_iter().map(|(entry, _)| entry).collect(),
            top,
        };
        // The size as the archive built from it has it; 0 when it cannot be built (opening
        // it says why).
        let size = image
            .graph(self.limits)
            .map(|g| TarStream::new(image.index_json(), &g).size())
            .unwrap_or(0);
        self.by_name.insert(name.clone(), self.units.len());
        self.units.push(Unit {
            name,
            size,
            path: dirs.layout.join("index.json"),
        });
        self.images.push(image);
    }

    /// Whether `unit` is one of these layouts' images.
    pub(crate) fn owns(&self, unit: &Unit) -> bool {
        self.image(unit).is_ok()
    }

    /// The `index.json` entries of `unit` (one per name it is given) and every blob its image
    /// reaches, the JSON documents read and checked: what `push` sends.
    #[cfg(feature = "export")]
    pub(crate) fn image_blobs(&self, unit: &Unit) -> Result<(Vec<serde_json::Value>, Graph)> {
        let image = self.image(unit)?;
        Ok((image.entries.clone(), image.graph(self.limits)?))
    }

    /// The signatures, attestations, SBOMs and referrers the layouts carry.
    #[cfg(feature = "export")]
    pub(crate) fn artifacts(&self) -> &[artifacts::LayoutArtifact] {
        &self.artifacts
    }

    /// The artifacts about the image of `unit`.
    pub(crate) fn artifacts_of(&self, unit: &Unit) -> Vec<&artifacts::LayoutArtifact> {
        let Ok(image) = self.image(unit) else {
            return Vec::new();
        };
        let digests = artifacts::digests_of(image, self.limits);
        self.artifacts
            .iter()
            .filter(|a| a.is_about(image, &digests))
            .collect()
    }

    fn image(&self, unit: &Unit) -> Result<&LayoutImage> {
        self.by_name
            .get(&unit.name)
            .and_then(|&i| self.images.get(i))
            .ok_or_else(|| anyhow!("{} is not an image of a layout", unit.name))
    }
}

/// What the layout's `images.json` names as carried by earlier bundles; nothing when it has
/// none (a layout another tool wrote) or cannot be read (the walk then names each missing
/// layer as missing).
fn carried_earlier(dir: &Path, pack: Option<&pack::Pack>, limits: Limits) -> Carried {
    let Some(index) = read_root(dir, pack, bundle::INDEX_FILE, limits.metadata_max)
        .ok()
        .and_then(|data| serde_json::from_slice::<bundle::BundleIndex>(&data).ok())
    else {
        return Carried::new();
    };
    index
        .layout
        .map(|l| l.carried_earlier)
        .unwrap_or_default()
        .into_iter()
        .map(|c| (c.digest.clone(), c))
        .collect()
}

impl LayoutImage {
    fn graph(&self, limits: Limits) -> Result<Graph> {
        Graph::of(&self.dirs, &self.top, limits, &self.carried)
    }

    /// The `index.json` of the archive built for this image: its entry alone.
    fn index_json(&self) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": self.entries,
        }))
        .expect("JSON values serialise")
    }
}

impl Source for LayoutSource {
    fn nothing_found(&self) -> String {
        format!(
            "no OCI image layouts in {}: nothing to import",
            self.root.display()
        )
    }

    fn units(&self) -> &[Unit] {
        &self.units
    }

    fn refused(&self) -> &[Refused] {
        &self.refused
    }

    fn absent(&self) -> &[Refused] {
        &[]
    }

    fn promised(&self) -> &[BundleArchive] {
        &[]
    }

    /// A layout's blobs are named by their digests, each checked as it is read.
    fn checksum(&self, _unit: &Unit) -> Checksum {
        Checksum::None
    }

    fn bytes(&self, unit: &Unit) -> Result<Box<dyn Read + Send>> {
        Ok(self.open(unit)?.reader)
    }

    /// From the JSON documents alone: the layers are found and sized, never read.
    fn inspect(&self, unit: &Unit) -> Result<ArchiveInfo> {
        let image = self.image(unit)?;
        let graph = image.graph(self.limits)?;
        let index = image.index_json();
        let tar_size = TarStream::new(index.clone(), &graph).size();
        let mut files = vec![
            ("oci-layout".to_string(), OCI_LAYOUT.len() as u64),
            ("index.json".to_string(), index.len() as u64),
        ];
        files.extend(graph.blobs().map(|b| (blob_name(&b.digest), b.size)));
        // Carried by an earlier bundle: the image is complete where the runtime has them,
        // which the import asks it before sending the image (`Source::carried`).
        files.extend(graph.carried.iter().map(|c| (blob_name(&c.digest), c.size)));
        let mut json = vec![
            ("oci-layout".to_string(), OCI_LAYOUT.to_vec()),
            ("index.json".to_string(), index),
        ];
        json.extend(
            graph
                .docs
                .into_iter()
                .map(|(b, d)| (blob_name(&b.digest), d)),
        );
        archive::inspect_listing(files, json, tar_size, self.limits)
    }

    fn open(&self, unit: &Unit) -> Result<Opened> {
        let image = self.image(unit)?;
        let graph = image.graph(self.limits)?;
        let stream = TarStream::new(image.index_json(), &graph);
        Ok(Opened {
            compression: Compression::None,
            file_size: stream.size(),
            reader: Box::new(stream),
        })
    }

    /// The digest the entry names: the image's content, every blob checked against it.
    fn stamp(&self, unit: &Unit) -> Option<String> {
        self.image(unit).ok().map(|i| i.top.digest.clone())
    }

    fn file<'a>(&self, _unit: &'a Unit) -> Option<&'a Path> {
        None
    }

    fn carried(&self, unit: &Unit) -> Result<Vec<CarriedBlob>> {
        let image = self.image(unit)?;
        if image.carried.is_empty() {
            return Ok(Vec::new());
        }
        Ok(image.graph(self.limits)?.carried)
    }

    fn image_blobs(&self, unit: &Unit) -> Option<Result<ImageBlobs>> {
        let image = self.image(unit).ok()?;
        let blobs = image.graph(self.limits).map(|graph| {
            let refs = |b: &Blob| BlobRef {
                digest: b.digest.clone(),
                size: b.size,
                data: Arc::new(b.clone()),
            };
            ImageBlobs {
                entries: image.entries.clone(),
                docs: graph.docs.iter().map(|(b, _)| refs(b)).collect(),
                layers: graph.layers.iter().map(refs).collect(),
                carried: graph.carried,
                chains: graph.chains,
                bundle: identity(&image.dirs, self.limits),
            }
        });
        Some(blobs)
    }
}

/// The identity of the bundle whose blobs `dirs` reads: its `images.json`'s, else the digest
/// of its `index.json` (a layout another tool wrote), exported at an unknown time.
fn identity(dirs: &BlobDirs, limits: Limits) -> bundle::BundleId {
    let read = |name| {
        read_root(
            &dirs.layout,
            dirs.pack.as_deref(),
            name,
            limits.metadata_max,
        )
    };
    if let Some(layout) = read(bundle::INDEX_FILE)
        .ok()
        .and_then(|d| serde_json::from_slice::<bundle::BundleIndex>(&d).ok())
        .and_then(|i| i.layout)
    {
        return layout.id();
    }
    let digest = read("index.json")
        .ok()
        .and_then(|d| bundle::sha256_reader(&d[..]).ok())
        .unwrap_or_default();
    bundle::BundleId {
        index_json_digest: format!("sha256:{digest}"),
        exported_at: "at an unknown time".into(),
    }
}

#[cfg(test)]
mod tests;
