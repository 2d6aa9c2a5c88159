//! The archives of an images path as push reads them (`export --format archives`, `docker
//! save`, `skopeo copy` to `docker-archive:`/`oci-archive:`, `ctr export`, `podman save`;
//! plain, gzip or zstd), in two passes over each archive.
//!
//! The first pass is the archive reader's (`archive::inspect_path_into`): it finds the images
//! and their names, and keeps every JSON document (indexes, manifests, configs), so each image
//! is planned from them alone. The second pass, only when the registry lacks a layer, streams
//! the archive once more and uploads each missing layer as its entry goes by (`archive_send`).
//! A compressed archive is so decompressed twice at most, and never spooled to disk.
//!
//! An archive that carries its manifests (OCI archives, Docker 25+ saves, `ctr export`) is
//! pushed with every digest kept. A legacy docker-archive carries none: its image gets an OCI
//! manifest made of its config and its layers as stored (uncompressed tars), whose digest is
//! new, and its line says so.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use anyhow::{anyhow, bail, Result};
use serde::Deserialize;
use serde_json::json;

use super::image::{Doc, Held, Manifest, Member, Planned};
use super::naming::site_names;
use crate::archive::{self, EntryData, EntrySink, Image, Limits};
use crate::bundle::BundleImage;
use crate::mirror::Site;
use crate::reference::Reference;

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";

/// What the first pass keeps: every file's size, every link, the JSON documents.
#[derive(Default)]
struct Kept {
    files: HashMap<String, u64>,
    links: HashMap<String, String>,
    json: HashMap<String, Vec<u8>>,
}

impl EntrySink for Kept {
    fn file(&mut self, name: &str, size: u64, data: EntryData<'_>) -> Result<()> {
        self.files.insert(name.to_string(), size);
        if let EntryData::Bytes(b) = data {
            self.json.insert(name.to_string(), b.to_vec());
        }
        Ok(())
    }

    fn link(&mut self, name: &str, target: &str) {
        self.links.insert(name.to_string(), target.to_string());
    }
}

impl Kept {
    /// The regular file `name` stands for, links followed (a few hops at most).
    fn file_of<'a>(&'a self, mut name: &'a str) -> Option<&'a str> {
        for _ in 0..8 {
            if self.files.contains_key(name) {
                return Some(name);
            }
            name = self.links.get(name)?;
        }
        None
    }

    fn json_of(&self, name: &str) -> Option<&Vec<u8>> {
        self.file_of(name).and_then(|n| self.json.get(n))
    }

    fn member(&self, name: &str, digest: &str) -> Result<Member> {
        let file = self
            .file_of(name)
            .ok_or_else(|| anyhow!("the archive does not hold {digest} ({name})"))?;
        Ok(Member {
            digest: digest.to_string(),
            size: self.files[file],
            name: file.to_string(),
        })
    }
}

fn blob_name(digest: &str) -> String {
    format!("blobs/{}", digest.replacen(':', "/", 1))
}

fn sha256(data: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{:x}", sha2::Sha256::digest(data))
}

/// Every image of the archives under `root` (not the packs `layouts` reads), planned, `jobs`
/// archives at a time; what cannot be read or planned fails by name, the rest go on. Also how
/// many archives there are.
pub(crate) fn plan_all(
    root: &Path,
    layouts: &crate::layout::LayoutSource,
    site: &Site,
    jobs: usize,
) -> Result<(Vec<Planned>, Vec<String>, usize)> {
    let (found, rejected) = archive::discover(root)?;
    let name = |p: &Path| crate::bundle::relative_name(root, p);
    let mut failed: Vec<String> = rejected
        .iter()
        .map(|r| format!("{}: {}", name(&r.path), r.reason))
        .collect();
    let promised: Vec<BundleImage> = crate::bundle::read_index(root)
        .ok()
        .flatten()
        .map(|i| i.archives.into_iter().flat_map(|a| a.images).collect())
        .unwrap_or_default();
    let found: Vec<_> = found.iter().filter(|f| !layouts.holds(&f.path)).collect();
    // The first pass reads every archive whole (a compressed one decompressed): `jobs` at a
    // time, the results kept in the archives' order.
    let next = AtomicUsize::new(0);
    let results: Vec<Mutex<Option<Result<PlannedArchive>>>> =
        found.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..jobs.clamp(1, found.len().max(1)) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(f) = found.get(i) else { break };
                let r = plan(&f.path, &name(&f.path), &promised, site);
                *crate::sync::lock(&results[i]) = Some(r);
            });
        }
    });
    let mut planned = Vec::new();
    for (f, r) in found.iter().zip(results) {
        match crate::sync::into_inner(r) {
            Some(Ok((p, e))) => {
                planned.extend(p);
                failed.extend(e);
            }
            Some(Err(e)) => failed.push(format!("{}: {e:#}", name(&f.path))),
            None => failed.push(format!("{}: not read", name(&f.path))),
        }
    }
    Ok((planned, failed, found.len() + rejected.len()))
}

/// Every image of the archive at `path` (`file` its name in the images path), planned; an
/// image that cannot be planned fails on its own, named with the archive.
pub(crate) fn plan(
    path: &Path,
    file: &str,
    promised: &[BundleImage],
    site: &Site,
) -> Result<PlannedArchive> {
    let mut kept = Kept::default();
    let info = archive::inspect_path_into(path, Limits::default(), &mut kept)?;
    let (mut planned, mut failed) = (Vec::new(), Vec::new());
    for image in &info.images {
        let what = format!("{file} ({})", image.display_names());
        let p = match &image.digest {
            Some(digest) => kept_digests(&kept, digest),
            None => legacy(&kept, image),
        }
        .and_then(|(held, manifests, note)| {
            let names = names_of(image, promised);
            placed(file, &names, site, held, manifests, note, path)
        });
        match p {
            Ok(p) => planned.push(p),
            Err(e) => failed.push(format!("{what}: {e:#}")),
        }
    }
    if info.images.is_empty() {
        failed.push(format!("{file}: the archive holds no image"));
    }
    Ok((planned, failed))
}

/// The image's names: the archive's own, else those `images.json` gives its config.
fn names_of(image: &Image, promised: &[BundleImage]) -> Vec<String> {
    if !image.names.is_empty() {
        return image.names.clone();
    }
    let configs: Vec<&str> = image
        .platforms
        .iter()
        .filter_map(|p| p.config_digest.as_deref())
        .collect();
    promised
        .iter()
        .filter(|b| configs.contains(&b.config_digest.as_str()))
        .flat_map(|b| b.names.iter().cloned())
        .collect()
}

type Parts = (Held, Vec<Manifest>, Option<String>);

/// One archive's images planned, and its images that could not be.
type PlannedArchive = (Vec<Planned>, Vec<String>);

/// An image whose manifests the archive carries: every manifest the top one reaches (children
/// before parents, the top last), its configs and layers, each digest kept.
fn kept_digests(kept: &Kept, top: &str) -> Result<Parts> {
    let mut held = Held {
        path: PathBuf::new(),
        members: Vec::new(),
        bytes: HashMap::new(),
    };
    let mut manifests = Vec::new();
    walk(kept, top, None, &mut held, &mut manifests)?;
    Ok((held, manifests, None))
}

fn walk(
    kept: &Kept,
    digest: &str,
    given: Option<String>,
    held: &mut Held,
    out: &mut Vec<Manifest>,
) -> Result<bool> {
    let Some(bytes) = kept.json_of(&blob_name(digest)) else {
        return Ok(false);
    };
    if out.iter().any(|m| m.digest == digest) {
        return Ok(true);
    }
    let doc: Doc = serde_json::from_slice(bytes)
        .map_err(|e| anyhow!("{digest} is not an image manifest or index: {e}"))?;
    let mut absent_children = Vec::new();
    for c in doc.manifests.iter().flatten() {
        if !walk(kept, &c.digest, c.media_type.clone(), held, out)? {
            absent_children.push(c.digest.clone());
        }
    }
    if let Some(config) = &doc.config {
        let data = kept
            .json_of(&blob_name(&config.digest))
            .ok_or_else(|| anyhow!("the archive does not hold the config {}", config.digest))?;
        held.bytes.insert(config.digest.clone(), data.clone());
        held.members
            .push(kept.member(&blob_name(&config.digest), &config.digest)?);
    }
    for layer in &doc.layers {
        let m = kept.member(&blob_name(&layer.digest), &layer.digest)?;
        if layer.size.is_some_and(|s| s != m.size) {
            bail!(
                "the layer {} is {} bytes in the archive, its manifest says {}",
                layer.digest,
                m.size,
                layer.size.unwrap_or_default()
            );
        }
        if !held.members.iter().any(|h| h.digest == m.digest) {
            held.members.push(m);
        }
    }
    let inferred = if doc.config.is_some() {
        OCI_MANIFEST
    } else {
        OCI_INDEX
    };
    out.push(Manifest {
        digest: digest.to_string(),
        media_type: doc.media_type.or(given).unwrap_or(inferred.to_string()),
        bytes: bytes.clone(),
        absent_children,
    });
    Ok(true)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    layers: Vec<String>,
}

/// A legacy docker-archive image: an OCI manifest of its config and its layers as stored
/// (uncompressed tars, each named by its diff_id, which the config gives before any layer is
/// read).
fn legacy(kept: &Kept, image: &Image) -> Result<Parts> {
    let config_digest = image
        .platforms
        .first()
        .and_then(|p| p.config_digest.clone())
        .ok_or_else(|| anyhow!("the archive gives no config for it"))?;
    let entries: Vec<DockerEntry> = serde_json::from_slice(
        kept.json_of("manifest.json")
            .ok_or_else(|| anyhow!("the archive has neither manifests nor a manifest.json"))?,
    )
    .map_err(|e| anyhow!("manifest.json: {e}"))?;
    let (entry, config) = entries
        .iter()
        .find_map(|e| {
            let data = kept.json_of(&e.config)?;
            (sha256(data) == config_digest).then_some((e, data))
        })
        .ok_or_else(|| anyhow!("manifest.json names no config {config_digest}"))?;
    let parsed: serde_json::Value =
        serde_json::from_slice(config).map_err(|e| anyhow!("{}: {e}", entry.config))?;
    let diff_ids: Vec<String> = parsed["rootfs"]["diff_ids"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|d| d.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    if diff_ids.len() != entry.layers.len() {
        bail!(
            "its config names {} layer(s) (rootfs.diff_ids), manifest.json {}",
            diff_ids.len(),
            entry.layers.len()
        );
    }
    let mut held = Held {
        path: PathBuf::new(),
        members: vec![kept.member(&entry.config, &config_digest)?],
        bytes: HashMap::from([(config_digest.clone(), config.clone())]),
    };
    let mut layers = Vec::new();
    for (name, diff_id) in entry.layers.iter().zip(&diff_ids) {
        let m = kept.member(name, diff_id)?;
        layers.push(json!({"mediaType": OCI_LAYER_TAR, "digest": diff_id, "size": m.size}));
        if !held.members.iter().any(|h| h.digest == m.digest) {
            held.members.push(m);
        }
    }
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config.len()},
        "layers": layers,
    });
    let bytes = serde_json::to_vec(&manifest)?;
    let digest = sha256(&bytes);
    let note = format!(
        "the manifest digest {digest} is new: a legacy docker-archive carries no manifest, so \
         push made one of its config and its layers as stored (uncompressed); export the \
         layout bundle to keep the upstream digest for digest-pinned pods"
    );
    let m = Manifest {
        digest,
        media_type: OCI_MANIFEST.to_string(),
        bytes,
        absent_children: Vec::new(),
    };
    Ok((held, vec![m], Some(note)))
}

/// The image placed in `site` under every one of `names` (and by its digest).
fn placed(
    file: &str,
    names: &[String],
    site: &Site,
    mut held: Held,
    manifests: Vec<Manifest>,
    note: Option<String>,
    path: &Path,
) -> Result<Planned> {
    let top = manifests
        .last()
        .cloned()
        .ok_or_else(|| anyhow!("the archive does not hold its manifest"))?;
    let mut targets = std::collections::BTreeMap::<String, Vec<String>>::new();
    let mut upstreams = Vec::new();
    for name in names {
        let reference = Reference::parse(name).map_err(|e| anyhow!("{name}: {e}"))?;
        if !upstreams.contains(&reference.domain) {
            upstreams.push(reference.domain.clone());
        }
        for t in site_names(site, &reference)? {
            let refs = targets.entry(t.repo).or_default();
            if !refs.contains(&t.reference) {
                refs.push(t.reference);
            }
        }
    }
    let Some(first) = names.first() else {
        bail!("names no repository (no RepoTags, no whole ref.name, nothing in images.json)");
    };
    for refs in targets.values_mut() {
        if !refs.contains(&top.digest) {
            refs.push(top.digest.clone());
        }
    }
    let fallback = match top.absent_children.is_empty() {
        true => None,
        false => manifests
            .iter()
            .find(|m| m.digest != top.digest && m.media_type != OCI_INDEX)
            .filter(|m| !m.media_type.contains("list"))
            .cloned(),
    };
    held.path = path.to_path_buf();
    Ok(Planned {
        name: format!("{first} (in {file})"),
        upstreams,
        targets,
        top,
        fallback,
        manifests,
        blobs: Vec::new(),
        carried: Vec::new(),
        artifact: false,
        archive: Some(held),
        notes: note.into_iter().collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A legacy docker-archive of one image `example.com/team/app:1` whose config names
    /// `diff_ids` layers (the archive holds two), written to a file of its own.
    fn legacy_archive(label: &str, diff_ids: usize) -> (PathBuf, String, Vec<u8>) {
        let layers: [&[u8]; 2] = [b"layer one", b"layer two"];
        let ids: Vec<String> = layers.iter().take(diff_ids).map(|l| sha256(l)).collect();
        let config = serde_json::to_vec(&json!({"architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": ids}}))
        .unwrap();
        let config_digest = sha256(&config);
        let config_name = format!("{}.json", &config_digest[7..]);
        let manifest = serde_json::to_vec(&json!([{"Config": config_name,
            "RepoTags": ["example.com/team/app:1"], "Layers": ["a/layer.tar", "b/layer.tar"]}]))
        .unwrap();
        let tar = crate::archive::tar_of(&[
            ("manifest.json", &manifest),
            (&config_name, &config),
            ("a/layer.tar", layers[0]),
            ("b/layer.tar", layers[1]),
        ]);
        let path = std::env::temp_dir().join(format!(
            "oi-push-archive-{label}-{}.tar",
            std::process::id()
        ));
        std::fs::write(&path, tar).unwrap();
        (path, config_digest, config)
    }

    #[test]
    fn a_legacy_archive_gets_a_manifest_of_its_config_and_its_layers_named_by_diff_id() {
        let (path, config_digest, config) = legacy_archive("ok", 2);
        let site = Site::parse("site.example/m", false).unwrap();
        let (planned, failed) = plan(&path, "app.tar", &[], &site).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(failed.is_empty(), "{failed:?}");
        let p = &planned[0];
        assert_eq!(p.name, "example.com/team/app:1 (in app.tar)");
        let m: serde_json::Value = serde_json::from_slice(&p.top.bytes).unwrap();
        assert_eq!(p.top.digest, sha256(&p.top.bytes));
        assert_eq!(m["config"]["digest"], config_digest.as_str());
        assert_eq!(m["layers"][1]["digest"], sha256(b"layer two").as_str());
        assert_eq!(m["layers"][1]["mediaType"], OCI_LAYER_TAR);
        assert_eq!(m["layers"][1]["size"], 9);
        let refs = &p.targets["m/example.com/team/app"];
        assert_eq!(refs, &vec!["1".to_string(), p.top.digest.clone()]);
        let held = p.archive.as_ref().unwrap();
        assert_eq!(held.members.len(), 3);
        assert_eq!(held.members[2].name, "b/layer.tar");
        assert_eq!(held.bytes[&config_digest], config);
        assert!(p.notes[0].contains("carries no manifest"), "{:?}", p.notes);
    }

    #[test]
    fn a_legacy_image_whose_config_and_manifest_json_disagree_fails_by_archive_and_name() {
        let (path, _, _) = legacy_archive("bad", 1);
        let site = Site::parse("site.example/m", false).unwrap();
        let (planned, failed) = plan(&path, "app.tar", &[], &site).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(planned.is_empty());
        assert_eq!(
            failed,
            vec![
                "app.tar (example.com/team/app:1): its config names 1 layer(s) \
                 (rootfs.diff_ids), manifest.json 2"
                    .to_string()
            ]
        );
    }

    #[test]
    fn an_oci_archive_keeps_its_documents_and_an_index_with_a_platform_left_out_falls_back() {
        let layer: &[u8] = b"layer";
        let config = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers"}}"#;
        let manifest = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": sha256(config), "size": config.len()},
            "layers": [{"mediaType": OCI_LAYER_TAR, "digest": sha256(layer), "size": 5}]}))
        .unwrap();
        let absent = format!("sha256:{}", "0".repeat(64));
        let index = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX,
            "manifests": [
                {"mediaType": OCI_MANIFEST, "digest": sha256(&manifest), "size": manifest.len(),
                 "platform": {"os": "linux", "architecture": "amd64"}},
                {"mediaType": OCI_MANIFEST, "digest": absent, "size": 9,
                 "platform": {"os": "linux", "architecture": "arm64"}}]}))
        .unwrap();
        let top = serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": [
            {"mediaType": OCI_INDEX, "digest": sha256(&index), "size": index.len(),
             "annotations": {"org.opencontainers.image.ref.name": "quay.io/org/app:2"}}]}))
        .unwrap();
        let names: Vec<(String, &[u8])> = vec![
            ("oci-layout".into(), br#"{"imageLayoutVersion":"1.0.0"}"#),
            ("index.json".into(), &top),
            (blob_name(&sha256(layer)), layer),
            (blob_name(&sha256(config)), config),
            (blob_name(&sha256(&manifest)), &manifest),
            (blob_name(&sha256(&index)), &index),
        ];
        let files: Vec<(&str, &[u8])> = names.iter().map(|(n, d)| (n.as_str(), *d)).collect();
        let path = std::env::temp_dir().join(format!("oi-push-oci-{}.tar", std::process::id()));
        std::fs::write(&path, crate::archive::tar_of(&files)).unwrap();
        let site = Site::parse("site.example", false).unwrap();
        let (planned, failed) = plan(&path, "app.tar", &[], &site).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(failed.is_empty(), "{failed:?}");
        let p = &planned[0];
        assert_eq!(p.top.digest, sha256(&index));
        assert!(p.top.bytes == index);
        assert_eq!(p.top.absent_children, vec![absent]);
        assert_eq!(p.manifests.len(), 2);
        assert_eq!(p.manifests[0].digest, sha256(&manifest));
        assert_eq!(p.fallback.as_ref().unwrap().digest, sha256(&manifest));
        assert!(p.notes.is_empty());
        let held = p.archive.as_ref().unwrap();
        let members: Vec<&str> = held.members.iter().map(|m| m.digest.as_str()).collect();
        assert_eq!(members, [sha256(config), sha256(layer)]);
        assert!(held.bytes.contains_key(&sha256(config)));
        assert!(!held.bytes.contains_key(&sha256(layer)));
        assert_eq!(
            p.targets["quay.io/org/app"],
            ["2".to_string(), sha256(&index)]
        );
    }
}
