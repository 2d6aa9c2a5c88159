//! One image of the bundle as the push sends it: its names in the site registry, its blobs
//! (configs and layers), and its manifests in the order a registry accepts them (children
//! before the index that names them), each kept as the bundle's bytes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;

use anyhow::{anyhow, bail, Result};
use serde::Deserialize;

use super::naming::{site_names, Target};
use crate::bundle::CarriedBlob;
use crate::layout::{Blob, Graph};
use crate::mirror::Site;
use crate::reference::Reference;

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";
const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// A manifest or index to put, as the bundle holds it.
#[derive(Debug, Clone)]
pub(crate) struct Manifest {
    pub(crate) digest: String,
    pub(crate) media_type: String,
    pub(crate) bytes: Vec<u8>,
    /// Manifests an index names that the bundle does not hold (platforms left out at export).
    pub(crate) absent_children: Vec<String>,
}

/// An image's names in the site registry: the references in each repository.
type Targets = BTreeMap<String, Vec<String>>;

/// One image, planned.
pub(crate) struct Planned {
    /// The name the log gives it: its first reference.
    pub(crate) name: String,
    /// The upstream registries its names come from.
    pub(crate) upstreams: Vec<String>,
    /// Its names in the site registry, by repository.
    pub(crate) targets: Targets,
    /// The top manifest or index (what the tags name).
    pub(crate) top: Manifest,
    /// For an index that names platforms the bundle left out: the manifest its tags name
    /// instead where the registry takes no such index (the first platform the bundle holds).
    pub(crate) fallback: Option<Manifest>,
    /// Every manifest, children before parents (the top last).
    pub(crate) manifests: Vec<Manifest>,
    /// Configs and layers.
    pub(crate) blobs: Vec<Blob>,
    /// Layers an earlier bundle carried: the registry must have them already.
    pub(crate) carried: Vec<CarriedBlob>,
    /// A signature, attestation, SBOM or referrers index, not an image.
    pub(crate) artifact: bool,
    /// For an image of an archive: its configs and layers, read from the archive.
    pub(crate) archive: Option<Held>,
    /// What its line says whatever happens (a manifest digest push made).
    pub(crate) notes: Vec<String>,
}

/// One blob of an archive, as push sends it.
#[derive(Debug, Clone)]
pub(crate) struct Member {
    pub(crate) digest: String,
    pub(crate) size: u64,
    /// The regular file of the archive that holds it (links followed).
    pub(crate) name: String,
}

/// The blobs of one image of an archive: the configs (whose bytes the first pass kept) and
/// the layers (read in a second pass, only when the registry lacks one).
#[derive(Debug, Clone)]
pub(crate) struct Held {
    pub(crate) path: PathBuf,
    pub(crate) members: Vec<Member>,
    /// Bytes kept by the first pass, by digest.
    pub(crate) bytes: HashMap<String, Vec<u8>>,
}

/// A descriptor as a manifest, an index or an archive's documents give one.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Desc {
    pub(super) digest: String,
    #[serde(default)]
    pub(super) media_type: Option<String>,
    #[serde(default)]
    pub(super) size: Option<u64>,
    #[serde(default)]
    pub(super) annotations: BTreeMap<String, String>,
}

/// A manifest or an index, as far as push reads one.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Doc {
    #[serde(default)]
    pub(super) media_type: Option<String>,
    #[serde(default)]
    pub(super) manifests: Option<Vec<Desc>>,
    #[serde(default)]
    pub(super) config: Option<Desc>,
    #[serde(default)]
    pub(super) layers: Vec<Desc>,
}

/// The references an `index.json` entry gives its image: its full name (the containerd
/// annotation, else a `ref.name` that is a whole reference). A bare tag (skopeo's
/// `oci:DIR:1.0`) names no repository.
fn entry_reference(entry: &serde_json::Value) -> Option<Result<Reference>> {
    let desc: Desc = serde_json::from_value(entry.clone()).ok()?;
    let name = [ANNOTATION_CONTAINERD_NAME, ANNOTATION_REF_NAME]
        .iter()
        .find_map(|k| desc.annotations.get(*k).filter(|v| v.contains('/')))?;
    Some(Reference::parse(name).map_err(|e| anyhow!("{e}")))
}

/// Every manifest the top descriptor reaches, children before parents, with its media type
/// (the document's own, else the descriptor's, else what its fields say).
fn manifests(graph: &Graph, top: &Desc) -> Result<Vec<Manifest>> {
    let docs: HashMap<&str, &Vec<u8>> = graph
        .docs
        .iter()
        .map(|(b, d)| (b.digest.as_str(), d))
        .collect();
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut stack = vec![(top.digest.clone(), top.media_type.clone(), false)];
    while let Some((digest, given, children_done)) = stack.pop() {
        let Some(bytes) = docs.get(digest.as_str()) else {
            continue;
        };
        let doc: Doc = serde_json::from_slice(bytes)
            .map_err(|e| anyhow!("{digest} is not an image manifest or index: {e}"))?;
        let children = doc.manifests.unwrap_or_default();
        if !children_done {
            if !seen.insert(digest.clone()) {
                continue;
            }
            stack.push((digest.clone(), given.clone(), true));
            for c in children.iter().rev() {
                stack.push((c.digest.clone(), c.media_type.clone(), false));
            }
            continue;
        }
        let inferred = if doc.config.is_some() {
            OCI_MANIFEST
        } else {
            OCI_INDEX
        };
        let absent_children = children
            .iter()
            .filter(|c| !docs.contains_key(c.digest.as_str()))
            .map(|c| c.digest.clone())
            .collect();
        out.push(Manifest {
            media_type: doc.media_type.or(given).unwrap_or(inferred.to_string()),
            digest,
            bytes: bytes.to_vec(),
            absent_children,
        });
    }
    Ok(out)
}

/// The name the log gives an image, the upstream registries of its names, and its names in
/// the site registry by repository (each also by the image's own digest, so a pinned
/// reference resolves).
fn names(
    unit_name: &str,
    entries: &[serde_json::Value],
    site: &Site,
    digest: &str,
) -> Result<(String, Vec<String>, Targets)> {
    let mut targets = Targets::new();
    let mut name = None;
    let mut upstreams = Vec::new();
    for entry in entries {
        let Some(reference) = entry_reference(entry) else {
            continue;
        };
        let reference = reference?;
        if !upstreams.contains(&reference.domain) {
            upstreams.push(reference.domain.clone());
        }
        name.get_or_insert_with(|| reference.to_string());
        for Target { repo, reference } in site_names(site, &reference)? {
            let refs = targets.entry(repo).or_default();
            if !refs.contains(&reference) {
                refs.push(reference);
            }
        }
    }
    let Some(name) = name else {
        bail!(
            "{unit_name} names no repository (no io.containerd.image.name or whole \
             org.opencontainers.image.ref.name annotation): push cannot place it"
        );
    };
    // Every name also by the image's own digest, so a pinned reference resolves.
    for refs in targets.values_mut() {
        if !refs.iter().any(|r| r == digest) {
            refs.push(digest.to_string());
        }
    }
    Ok((name, upstreams, targets))
}

/// The image `entries` (its `index.json` entries) and `graph` name, placed in `site`.
pub(crate) fn plan(
    unit_name: &str,
    entries: &[serde_json::Value],
    graph: Graph,
    site: &Site,
) -> Result<Planned> {
    let top: Desc = serde_json::from_value(
        entries
            .first()
            .cloned()
            .ok_or_else(|| anyhow!("{unit_name} has no index.json entry"))?,
    )
    .map_err(|e| anyhow!("{unit_name}: the index.json entry is no descriptor: {e}"))?;
    let (name, upstreams, targets) = names(unit_name, entries, site, &top.digest)?;
    let manifests = manifests(&graph, &top)?;
    let top_manifest = manifests
        .iter()
        .find(|m| m.digest == top.digest)
        .cloned()
        .ok_or_else(|| {
            anyhow!(
                "{name}: the bundle does not hold its manifest {}",
                top.digest
            )
        })?;
    let is_manifest: HashSet<&str> = manifests.iter().map(|m| m.digest.as_str()).collect();
    let blobs = graph
        .docs
        .iter()
        .map(|(b, _)| b)
        .filter(|b| !is_manifest.contains(b.digest.as_str()))
        .chain(&graph.layers)
        .cloned()
        .collect();
    let fallback = match top_manifest.absent_children.is_empty() {
        true => None,
        false => manifests
            .iter()
            .find(|m| {
                m.digest != top_manifest.digest
                    && m.media_type != OCI_INDEX
                    && !m.media_type.contains("list")
            })
            .cloned(),
    };
    Ok(Planned {
        name,
        upstreams,
        targets,
        top: top_manifest,
        fallback,
        manifests,
        blobs,
        carried: graph.carried,
        artifact: false,
        archive: None,
        notes: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_whole_reference_names_an_image_and_a_bare_tag_does_not() {
        let e = serde_json::json!({"digest": "sha256:00", "annotations": {
            ANNOTATION_REF_NAME: "1.0"}});
        assert!(entry_reference(&e).is_none());
        let e = serde_json::json!({"digest": "sha256:00", "annotations": {
            ANNOTATION_REF_NAME: "1.0",
            ANNOTATION_CONTAINERD_NAME: "docker.io/library/busybox:1.0"}});
        assert_eq!(
            entry_reference(&e).unwrap().unwrap().to_string(),
            "docker.io/library/busybox:1.0"
        );
    }
}
