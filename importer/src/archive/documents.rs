//! The documents of an image archive as they are read: OCI descriptors, indexes and
//! manifests, docker-archive `manifest.json` entries, and the platform of an image config.

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Result};
use serde::Deserialize;

use super::Platform;

pub(super) const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";
pub(super) const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

#[derive(Deserialize)]
pub(super) struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub(super) media_type: String,
    pub(super) digest: String,
    /// What the descriptor claims the blob's size is (the OCI spec requires it).
    #[serde(default)]
    pub(super) size: Option<u64>,
    #[serde(default)]
    pub(super) annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub(super) platform: Option<Platform>,
}

#[derive(Deserialize)]
pub(super) struct Index {
    /// Docker 25+ can write `"manifests": null` beside a valid `manifest.json`.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub(super) manifests: Vec<Descriptor>,
}

fn null_as_empty<'de, D, T>(d: D) -> std::result::Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

#[derive(Deserialize)]
pub(super) struct Manifest {
    pub(super) config: Descriptor,
    #[serde(default)]
    pub(super) layers: Vec<Descriptor>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct DockerManifestEntry {
    pub(super) config: String,
    #[serde(default)]
    pub(super) repo_tags: Option<Vec<String>>,
    #[serde(default)]
    pub(super) layers: Vec<String>,
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

pub(super) fn parse<'a, T: Deserialize<'a>>(name: &str, data: &'a [u8]) -> Result<T> {
    serde_json::from_slice(data).map_err(|e| anyhow!("{name} is not valid: {e}"))
}

pub(super) fn blob_path(digest: &str) -> String {
    format!("blobs/{}", digest.replacen(':', "/", 1))
}

pub(super) fn config_platform(data: &[u8]) -> Option<Platform> {
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
pub(super) fn document_is_index(path: &str, data: &[u8]) -> Result<bool> {
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

pub(super) fn is_index_type(media_type: &str) -> bool {
    media_type == "application/vnd.oci.image.index.v1+json"
        || media_type == "application/vnd.docker.distribution.manifest.list.v2+json"
}
