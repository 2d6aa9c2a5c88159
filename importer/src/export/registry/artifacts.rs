//! The supply-chain artifacts of an image, fetched with it so they cross the air gap: cosign's
//! tag scheme (`sha256-<hex>.sig`, `.att`, `.sbom` in the image's repository) and the OCI 1.1
//! referrers of each digest (the referrers API, else its fallback tag `sha256-<hex>`). A 404
//! is "none"; any other failure fails the image, so that a signature is never left out
//! without a word.
//!
//! Each artifact is its documents (the manifest a tag names, or the referrers' index and each
//! manifest it lists) and their configs and layers, downloaded through the blob cache as an
//! image's are. The bundle keeps it as an `index.json` entry named `repository:tag` and
//! annotated with its subject and kind (`crate::layout::artifacts`), which the importer skips.

use anyhow::{anyhow, bail, Context, Result};

use super::error::RegistryError;
use super::fetch::{is_index, Fetched, OnBytes, Repo};
use super::layout::Blob;
use super::{IndexDoc, ManifestDoc, Registry, ANNOTATION_REF_NAME};
use crate::bundle::BundleArtifact;
use crate::layout::artifacts::{ANNOTATION_KIND, ANNOTATION_SUBJECT, KIND_REFERRERS};
use crate::reference::Reference;

/// cosign's tag suffixes: signatures, attestations, SBOMs.
pub const COSIGN_KINDS: [&str; 3] = ["sig", "att", "sbom"];
/// More referrers than this for one digest are refused (a registry's answer gone wrong).
const REFERRERS_MAX: usize = 256;

/// One artifact as fetched.
pub struct Artifact {
    /// `sig`, `att`, `sbom` or `referrers`.
    pub kind: &'static str,
    /// The digest it is about.
    pub subject: String,
    /// Its tag in the image's repository.
    pub tag: String,
    /// The manifest (or the referrers' index) the tag names first, then the manifests an
    /// index lists.
    pub documents: Vec<Fetched>,
    /// Configs and layers: (digest, size, where the bytes are).
    pub blobs: Vec<(String, u64, Blob)>,
}

impl Artifact {
    /// The manifest or index the tag names.
    fn top(&self) -> &Fetched {
        &self.documents[0]
    }

    /// Its record in `images.json`, for an image of `repository`.
    pub fn record(&self, repository: &str) -> BundleArtifact {
        let mut blobs: Vec<String> = self
            .documents
            .iter()
            .map(|d| d.digest.clone())
            .chain(self.blobs.iter().map(|(d, _, _)| d.clone()))
            .collect();
        blobs.sort();
        blobs.dedup();
        BundleArtifact {
            kind: self.kind.to_string(),
            subject: self.subject.clone(),
            reference: format!("{repository}:{}", self.tag),
            digest: self.top().digest.clone(),
            blobs,
        }
    }

    /// Its entry in the layout's `index.json`, for an image of `repository`: named
    /// `repository:tag` (no containerd name: it is no image to import), with its subject and
    /// kind.
    pub fn index_entry(&self, repository: &str) -> serde_json::Value {
        let top = self.top();
        serde_json::json!({
            "mediaType": top.media_type,
            "digest": top.digest,
            "size": top.bytes.len(),
            "annotations": {
                ANNOTATION_REF_NAME: format!("{repository}:{}", self.tag),
                ANNOTATION_SUBJECT: self.subject,
                ANNOTATION_KIND: self.kind,
            },
        })
    }
}

/// Whether `e` is the registry's 404.
fn not_found(e: &anyhow::Error) -> bool {
    matches!(RegistryError::find(e), Some(RegistryError::NotFound { .. }))
}

/// The manifest `tag` names, `None` when the registry has no such tag (asked with a `HEAD`
/// first: most images have none).
fn tagged(repo: &Repo, tag: &str) -> Result<Option<Fetched>> {
    if !repo.has_manifest(tag)? {
        return Ok(None);
    }
    match repo.manifest(tag) {
        Ok(m) => Ok(Some(m)),
        Err(e) if not_found(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

impl Registry {
    /// Every artifact the registry keeps for the digests `subjects` of `r` (the digest it
    /// resolved to and each platform's manifest), from the first endpoint that answers.
    pub fn artifacts(
        &self,
        r: &Reference,
        subjects: &[String],
        on_bytes: OnBytes,
    ) -> Result<Vec<Artifact>> {
        self.on_endpoints(r, |repo| {
            let mut out = Vec::new();
            for subject in subjects {
                self.artifacts_of(repo, subject, on_bytes, &mut out)
                    .with_context(|| format!("the signatures and referrers of {subject}"))?;
            }
            Ok(out)
        })
    }

    /// The artifacts of one digest, added to `out`.
    fn artifacts_of(
        &self,
        repo: &Repo,
        subject: &str,
        on_bytes: OnBytes,
        out: &mut Vec<Artifact>,
    ) -> Result<()> {
        let hex = subject
            .strip_prefix("sha256:")
            .ok_or_else(|| anyhow!("{subject} is not a sha256 digest"))?;
        for kind in COSIGN_KINDS {
            let tag = format!("sha256-{hex}.{kind}");
            if let Some(top) = tagged(repo, &tag)? {
                out.push(self.artifact(repo, kind, subject, tag, top, on_bytes)?);
            }
        }
        let tag = format!("sha256-{hex}");
        let index = match repo.referrers(subject)? {
            Some(index) => Some(index),
            None => tagged(repo, &tag)?.filter(|m| is_index(&m.media_type)),
        };
        let Some(index) = index else {
            return Ok(());
        };
        let listed: IndexDoc = serde_json::from_slice(&index.bytes)
            .with_context(|| format!("the referrers index {} is not valid", index.digest))?;
        if !listed.manifests.is_empty() {
            out.push(self.artifact(repo, KIND_REFERRERS, subject, tag, index, on_bytes)?);
        }
        Ok(())
    }

    /// One artifact: `top`, the manifests it lists when it is an index, and their configs
    /// and layers through the cache.
    fn artifact(
        &self,
        repo: &Repo,
        kind: &'static str,
        subject: &str,
        tag: String,
        top: Fetched,
        on_bytes: OnBytes,
    ) -> Result<Artifact> {
        let mut manifests = Vec::new();
        if is_index(&top.media_type) {
            let index: IndexDoc = serde_json::from_slice(&top.bytes)
                .with_context(|| format!("the index {} of {tag} is not valid", top.digest))?;
            if index.manifests.len() > REFERRERS_MAX {
                bail!(
                    "{tag} lists {} manifests, over the limit of {REFERRERS_MAX}",
                    index.manifests.len()
                );
            }
            for d in index.manifests.iter().filter(|d| !is_index(&d.media_type)) {
                manifests.push(repo.manifest(&d.digest)?);
            }
        } else {
            manifests.push(Fetched {
                bytes: top.bytes.clone(),
                media_type: top.media_type.clone(),
                digest: top.digest.clone(),
            });
        }
        let mut blobs: Vec<(String, u64, Blob)> = Vec::new();
        for m in &manifests {
            let doc: ManifestDoc = serde_json::from_slice(&m.bytes)
                .with_context(|| format!("the manifest {} of {tag} is not valid", m.digest))?;
            for d in std::iter::once(&doc.config).chain(&doc.layers) {
                if blobs.iter().any(|(b, _, _)| b == &d.digest) {
                    continue;
                }
                let (path, fresh) = self.cache.ensure(&d.digest, d.size, |f| {
                    repo.blob(&d.digest, d.size, f, on_bytes)
                })?;
                let blob = if fresh {
                    Blob::Verified(path)
                } else {
                    Blob::File(path)
                };
                blobs.push((d.digest.clone(), d.size, blob));
            }
        }
        let own = top.digest.clone();
        let mut documents = vec![top];
        documents.extend(manifests.into_iter().filter(|m| m.digest != own));
        Ok(Artifact {
            kind,
            subject: subject.to_string(),
            tag,
            documents,
            blobs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fetched(bytes: &[u8], media_type: &str) -> Fetched {
        Fetched {
            bytes: bytes.to_vec(),
            media_type: media_type.into(),
            digest: format!("sha256:{}", crate::bundle::sha256_reader(bytes).unwrap()),
        }
    }

    #[test]
    fn an_artifact_is_named_by_its_tag_and_linked_to_its_subject() {
        let subject = format!("sha256:{}", "a".repeat(64));
        let top = fetched(b"{\"config\":{}}", super::super::fetch::OCI_MANIFEST);
        let config = format!("sha256:{}", "c".repeat(64));
        let a = Artifact {
            kind: "sig",
            subject: subject.clone(),
            tag: format!("sha256-{}.sig", "a".repeat(64)),
            documents: vec![top],
            blobs: vec![(config.clone(), 2, Blob::Bytes(b"{}".to_vec()))],
        };
        let e = a.index_entry("reg.example/app");
        assert_eq!(
            e["annotations"][ANNOTATION_REF_NAME],
            format!("reg.example/app:sha256-{}.sig", "a".repeat(64))
        );
        assert_eq!(e["annotations"][ANNOTATION_SUBJECT], subject.as_str());
        assert_eq!(e["annotations"][ANNOTATION_KIND], "sig");
        assert!(e["annotations"]["io.containerd.image.name"].is_null());
        let r = a.record("reg.example/app");
        assert_eq!(r.digest, a.documents[0].digest);
        assert_eq!(r.blobs.len(), 2);
        assert!(r.blobs.contains(&config));
    }
}
