//! The supply-chain artifacts a layout bundle carries beside its images: cosign's signatures,
//! attestations and SBOMs (its tags `sha256-<hex>.sig`, `.att`, `.sbom`) and the OCI 1.1
//! referrers of a digest. `export` writes each as an `index.json` entry named
//! `repository:tag` in `org.opencontainers.image.ref.name`, with no containerd name, and
//! annotated with the digest it is about ([`ANNOTATION_SUBJECT`]) and its kind
//! ([`ANNOTATION_KIND`]); `images.json` records it under its image (`BundleArtifact`).
//!
//! They are no images: the import skips them (never a unit, never a failure), `list` shows
//! them under the image they are about, and `push` sends them under the same tags, so the
//! site registry keeps them as the upstream one did.

use std::collections::BTreeSet;

use serde_json::Value;

use super::blobs::BlobDirs;
use super::image::{Descriptor, Graph};
use super::LayoutImage;
use crate::archive::Limits;

/// The digest of the manifest or index an artifact entry is about.
pub(crate) const ANNOTATION_SUBJECT: &str = "io.offline-images.artifact.subject";
/// `sig`, `att`, `sbom` (cosign's tags) or `referrers` (OCI 1.1).
pub(crate) const ANNOTATION_KIND: &str = "io.offline-images.artifact.kind";
pub(crate) const KIND_REFERRERS: &str = "referrers";

/// One artifact entry of a layout.
pub(crate) struct LayoutArtifact {
    /// `DIR/index.json#REF`, as units are named.
    #[cfg_attr(not(feature = "export"), allow(dead_code))]
    pub(crate) name: String,
    pub(crate) kind: String,
    pub(crate) subject: String,
    /// `repository:tag`.
    pub(crate) reference: String,
    dirs: BlobDirs,
    #[cfg_attr(not(feature = "export"), allow(dead_code))]
    entry: Value,
    #[cfg_attr(not(feature = "export"), allow(dead_code))]
    top: Descriptor,
}

/// Whether an `index.json` entry is an artifact, not an image.
pub(crate) fn is_artifact(entry: &Value) -> bool {
    entry["annotations"][ANNOTATION_SUBJECT].is_string()
}

impl LayoutArtifact {
    /// The artifact of `entry` (one [`is_artifact`] says is), `None` when it is no
    /// descriptor (then it is skipped as well: nothing imports it).
    pub(crate) fn new(dirs: &BlobDirs, index_name: &str, entry: Value) -> Option<LayoutArtifact> {
        let top: Descriptor = serde_json::from_value(entry.clone()).ok()?;
        let get = |k: &str| top.annotations.get(k).cloned().unwrap_or_default();
        let reference = get(super::ANNOTATION_REF_NAME);
        Some(LayoutArtifact {
            name: format!("{index_name}#{reference}"),
            kind: get(ANNOTATION_KIND),
            subject: get(ANNOTATION_SUBJECT),
            reference,
            dirs: dirs.clone(),
            entry,
            top,
        })
    }

    /// What it is, for a person.
    pub(crate) fn label(&self) -> &str {
        match self.kind.as_str() {
            "sig" => "cosign signature",
            "att" => "cosign attestation",
            "sbom" => "cosign SBOM",
            KIND_REFERRERS => "OCI referrers",
            _ => "artifact",
        }
    }

    /// Its `index.json` entry and every blob it reaches, the JSON documents read and
    /// checked: what `push` sends.
    #[cfg(feature = "export")]
    pub(crate) fn blobs(&self, limits: Limits) -> anyhow::Result<(Vec<Value>, Graph)> {
        let graph = Graph::of(&self.dirs, &self.top, limits, &super::Carried::new())?;
        Ok((vec![self.entry.clone()], graph))
    }

    /// Whether it is about `image` (its own digest, or a platform manifest it reaches) of the
    /// same layout.
    pub(super) fn is_about(&self, image: &LayoutImage, digests: &BTreeSet<String>) -> bool {
        self.dirs.layout == image.dirs.layout && digests.contains(&self.subject)
    }
}

/// The digests an image answers to: its entry's, and every document it reaches.
pub(super) fn digests_of(image: &LayoutImage, limits: Limits) -> BTreeSet<String> {
    let mut out = BTreeSet::from([image.top.digest.clone()]);
    if let Ok(g) = Graph::of(&image.dirs, &image.top, limits, &image.carried) {
        out.extend(g.docs.iter().map(|(b, _)| b.digest.clone()));
    }
    out
}
