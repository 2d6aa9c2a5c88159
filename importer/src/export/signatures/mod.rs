//! Signatures, attestations and SBOMs carried with the images (`export`, unless
//! `--no-signatures`): for each image written into the layout, every artifact its registry
//! keeps for the digest it resolved to and for each platform's manifest
//! (`registry::artifacts`), stored in the layout as any blob is (once, checked against its
//! digest), its `index.json` entry and `images.json` record kept with the image's.

use anyhow::Result;
use serde_json::Value;

use super::layout::Layout;
pub(super) mod certificate;
pub(super) mod timestamp;
pub(super) mod tlog;
pub(super) mod verify;
pub(super) mod x509;

use super::registry::{self, artifacts::Artifact, layout::Blob, Exported};
use crate::bundle::BundleArtifact;
use crate::reference::Reference;

/// What carrying an image's artifacts wrote.
#[derive(Default)]
pub(super) struct Carried {
    pub(super) records: Vec<BundleArtifact>,
    pub(super) entries: Vec<Value>,
    /// Blobs new to the layout, and their bytes.
    pub(super) written: usize,
    pub(super) bytes: u64,
}

/// The digests an image's artifacts may be about: the one its reference resolved to, then
/// each platform's manifest.
fn subjects(e: &Exported) -> Vec<String> {
    let mut out = vec![e.digest.clone()];
    for p in &e.images {
        if !out.contains(&p.manifest_digest) {
            out.push(p.manifest_digest.clone());
        }
    }
    out
}

/// The artifacts of the image `r` (exported as `e`), fetched from its registry.
pub(super) fn fetch(
    reg: &registry::Registry,
    r: &Reference,
    e: &Exported,
    on_bytes: &(dyn Fn(u64) + Sync),
) -> Result<Vec<Artifact>> {
    reg.artifacts(r, &subjects(e), on_bytes)
}

/// Store `artifacts` of an image of `r` in `layout`.
pub(super) fn store(layout: &Layout, r: &Reference, artifacts: Vec<Artifact>) -> Result<Carried> {
    let repository = r.repository();
    let mut out = Carried::default();
    for a in artifacts {
        for d in &a.documents {
            if layout.put(&d.digest, d.bytes.len() as u64, &d.bytes[..])? {
                out.written += 1;
                out.bytes += d.bytes.len() as u64;
            }
        }
        for (digest, size, blob) in &a.blobs {
            let put = match blob {
                Blob::Bytes(data) => layout.put(digest, *size, &data[..])?,
                Blob::File(path) => layout.put_file(digest, *size, path, false)?,
                Blob::Verified(path) => layout.put_file(digest, *size, path, true)?,
            };
            if put {
                out.written += 1;
                out.bytes += size;
            }
        }
        out.records.push(a.record(&repository));
        out.entries.push(a.index_entry(&repository));
    }
    Ok(out)
}

/// How many of each kind, for the image's log line: `1 sig, 1 att, 1 referrers`.
pub(super) fn summary(records: &[BundleArtifact]) -> String {
    let mut kinds: Vec<(&str, usize)> = Vec::new();
    for r in records {
        match kinds.iter_mut().find(|(k, _)| *k == r.kind) {
            Some((_, n)) => *n += 1,
            None => kinds.push((&r.kind, 1)),
        }
    }
    kinds
        .iter()
        .map(|(k, n)| format!("{n} {k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `--verify-key`'s keys and `--verify-trusted-root`'s policy, read before anything is
/// fetched: a key or trust file that cannot be read, or nothing to check (`--no-signatures`,
/// `--format archives`), is a usage error.
pub(super) fn verifier(settings: &super::Settings) -> Result<Option<verify::Verifier>> {
    let certificates = settings.verify_certificates.as_ref();
    if settings.verify_keys.is_empty() && certificates.is_none() {
        return Ok(None);
    }
    let flag = match settings.verify_keys.is_empty() {
        true => "--verify-trusted-root",
        false => "--verify-key",
    };
    if settings.no_signatures {
        return Err(crate::exit::usage(format!(
            "{flag} checks the signatures export carries: leave out --no-signatures"
        )));
    }
    if settings.format != super::BundleFormat::Layout {
        return Err(crate::exit::usage(format!(
            "{flag} checks the signatures a layout bundle carries: leave out --format archives"
        )));
    }
    verify::load(&settings.verify_keys, certificates)
        .map(Some)
        .map_err(|e| crate::exit::usage(format!("{e:#}")))
}
