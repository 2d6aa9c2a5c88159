//! `export --verify-key KEY.pub` (repeatable): an image is taken only when one of its
//! signatures, carried with it, is by one of the keys and names the digest its reference
//! resolved to; else it is refused by name and the rest go on.
//!
//! What is checked, with no network: the signature itself (ECDSA P-256 over SHA-256, the
//! keys `cosign generate-key-pair` makes, read from their PEM) and that what it signs names
//! the image's digest. Two forms, as cosign writes them:
//! - cosign's tag scheme (`sha256-<hex>.sig`, cosign 2 by default): each layer is a "simple
//!   signing" payload whose `critical.image.docker-manifest-digest` names the image, signed
//!   as it is, the signature (DER, base64) in the layer's `dev.cosignproject.cosign/signature`
//!   annotation;
//! - Sigstore bundles among the OCI 1.1 referrers (cosign 3 by default): a DSSE envelope whose
//!   in-toto statement has the predicate type `https://sigstore.dev/cosign/sign/v1` and the
//!   image's digest as its subject, signed over the envelope's PAE (and, among the referrers
//!   too, cosign 2's simple-signing manifest when it was told to write OCI 1.1 referrers).
//!
//! Not checked: a transparency log entry (Rekor) or timestamp, and keyless (certificate)
//! signatures; attestations are carried, not verified.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use base64::Engine as _;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::export::registry::artifacts::Artifact;
use crate::export::registry::layout::Blob;
use crate::signing::keys::{decode_signature, signer, PublicKey};

const ANNOTATION_SIGNATURE: &str = "dev.cosignproject.cosign/signature";
const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
const SIGSTORE_BUNDLE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
const COSIGN_SIGN_PREDICATE: &str = "https://sigstore.dev/cosign/sign/v1";
/// A signature payload or bundle larger than this is not read.
const PAYLOAD_MAX: u64 = 1 << 20;

/// The public keys an export accepts signatures by.
pub struct Keys(Vec<PublicKey>);

/// Read each key: a PEM public key (SPKI) of an ECDSA P-256 key, as `cosign.pub` is, read as
/// `import --verify-key` reads it (`signing::keys`).
pub fn load(paths: &[PathBuf]) -> Result<Keys> {
    paths
        .iter()
        .map(|p| PublicKey::load(p))
        .collect::<Result<_>>()
        .map(Keys)
}

#[derive(Deserialize)]
struct Desc {
    #[serde(default, rename = "mediaType")]
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default)]
    annotations: std::collections::BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct Manifest {
    #[serde(default)]
    layers: Vec<Desc>,
}

/// The bytes of the artifact's blob `d`, checked against its digest.
fn blob_bytes(a: &Artifact, d: &Desc) -> Result<Vec<u8>> {
    if d.size > PAYLOAD_MAX {
        return Err(anyhow!(
            "{} is {} bytes, too large for a signature",
            d.digest,
            d.size
        ));
    }
    let (_, _, blob) = a
        .blobs
        .iter()
        .find(|(digest, _, _)| digest == &d.digest)
        .ok_or_else(|| anyhow!("{} was not fetched", d.digest))?;
    let data = match blob {
        Blob::Bytes(b) => b.clone(),
        Blob::File(p) | Blob::Verified(p) => {
            std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?
        }
    };
    let got = format!("sha256:{}", crate::bundle::hex(&Sha256::digest(&data)));
    if got != d.digest {
        return Err(anyhow!("{} does not match its digest ({got})", d.digest));
    }
    Ok(data)
}

/// Whether one key verifies `sig_b64` (base64 of DER, or of the 64-byte fixed form) over
/// `message`: the key's file.
fn signed_by<'k>(keys: &'k Keys, message: &[u8], sig_b64: &str) -> Option<&'k Path> {
    let sig = decode_signature(sig_b64.as_bytes()).ok()?;
    signer(&keys.0, message, &sig)
}

/// A simple-signing payload of the manifest `manifest` that names `subject`, signed by one
/// of `keys`.
fn simple_signing<'k>(
    keys: &'k Keys,
    a: &Artifact,
    manifest: &[u8],
    subject: &str,
) -> Result<Option<&'k Path>> {
    let m: Manifest = serde_json::from_slice(manifest)?;
    for layer in m.layers.iter().filter(|l| l.media_type == SIMPLE_SIGNING) {
        let Some(sig) = layer.annotations.get(ANNOTATION_SIGNATURE) else {
            continue;
        };
        let payload = blob_bytes(a, layer)?;
        let doc: serde_json::Value = serde_json::from_slice(&payload)?;
        if doc["critical"]["image"]["docker-manifest-digest"] != subject {
            continue;
        }
        if let Some(key) = signed_by(keys, &payload, sig) {
            return Ok(Some(key));
        }
    }
    Ok(None)
}

/// DSSE's pre-authentication encoding of a payload of `kind`.
fn pae(kind: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!("DSSEv1 {} {kind} {} ", kind.len(), body.len()).into_bytes();
    out.extend_from_slice(body);
    out
}

/// A Sigstore bundle among the referrers whose DSSE statement signs `subject` as cosign's
/// image signature, signed by one of `keys`.
fn sigstore_bundle<'k>(keys: &'k Keys, a: &Artifact, subject: &str) -> Result<Option<&'k Path>> {
    let hex = subject.trim_start_matches("sha256:");
    let b64 = base64::engine::general_purpose::STANDARD;
    for doc in &a.documents[1..] {
        let m: Manifest = serde_json::from_slice(&doc.bytes)?;
        for layer in m.layers.iter().filter(|l| l.media_type == SIGSTORE_BUNDLE) {
            let bundle: serde_json::Value = serde_json::from_slice(&blob_bytes(a, layer)?)?;
            let env = &bundle["dsseEnvelope"];
            let (Some(kind), Some(body)) = (env["payloadType"].as_str(), env["payload"].as_str())
            else {
                continue;
            };
            let Ok(body) = b64.decode(body) else { continue };
            let statement: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let names = statement["subject"].as_array().into_iter().flatten();
            let names_it = names.clone().any(|s| s["digest"]["sha256"] == hex);
            if statement["predicateType"] != COSIGN_SIGN_PREDICATE || !names_it {
                continue;
            }
            let message = pae(kind, &body);
            for s in env["signatures"].as_array().into_iter().flatten() {
                if let Some(key) = s["sig"].as_str().and_then(|s| signed_by(keys, &message, s)) {
                    return Ok(Some(key));
                }
            }
        }
    }
    Ok(None)
}

/// The key that signed `subject` among the image's `artifacts`, or why none did.
pub fn check<'k>(keys: &'k Keys, subject: &str, artifacts: &[Artifact]) -> Result<&'k Path> {
    let mut seen = 0;
    for a in artifacts.iter().filter(|a| a.subject == subject) {
        let found = match a.kind {
            "sig" => simple_signing(keys, a, &a.documents[0].bytes, subject),
            "referrers" => sigstore_bundle(keys, a, subject).and_then(|found| match found {
                Some(key) => Ok(Some(key)),
                // cosign 2's `--registry-referrers-mode=oci-1-1`: its `.sig` as a referrer.
                None => a.documents[1..]
                    .iter()
                    .try_fold(None, |found, d| match found {
                        Some(key) => Ok(Some(key)),
                        None => simple_signing(keys, a, &d.bytes, subject),
                    }),
            }),
            _ => continue,
        };
        seen += 1;
        match found.with_context(|| format!("its signature {}", a.tag))? {
            Some(key) => return Ok(key),
            None => continue,
        }
    }
    let keys: Vec<String> = keys
        .0
        .iter()
        .map(|k| k.path.display().to_string())
        .collect();
    Err(anyhow!(if seen == 0 {
        format!(
            "refused: it has no cosign signature (none for {subject}; --verify-key {})",
            keys.join(", ")
        )
    } else {
        format!(
            "refused: none of its signatures of {subject} is by --verify-key {}",
            keys.join(", ")
        )
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::registry::fetch::{Fetched, OCI_MANIFEST};
    use p256::ecdsa::signature::Signer;
    use p256::ecdsa::{Signature, SigningKey};

    fn digest(data: &[u8]) -> String {
        format!("sha256:{}", crate::bundle::hex(&Sha256::digest(data)))
    }

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32].into()).unwrap()
    }

    fn keys(of: &[&SigningKey]) -> Keys {
        Keys(
            of.iter()
                .enumerate()
                .map(|(i, k)| PublicKey {
                    path: PathBuf::from(format!("k{i}.pub")),
                    key: *k.verifying_key(),
                })
                .collect(),
        )
    }

    /// A `.sig` artifact whose payload names `named`, signed by `by` (over `signed`, the
    /// payload unless a test changes it).
    fn sig_artifact(subject: &str, named: &str, by: &SigningKey, tamper: bool) -> Artifact {
        let payload = serde_json::json!({"critical": {"identity": {"docker-reference": "r/a"},
            "image": {"docker-manifest-digest": named}, "type": "cosign container image signature"},
            "optional": null})
        .to_string()
        .into_bytes();
        let sig: Signature = by.sign(&payload);
        let mut stored = payload.clone();
        if tamper {
            stored.push(b' ');
        }
        let b64 = base64::engine::general_purpose::STANDARD.encode(sig.to_der().as_bytes());
        let manifest = serde_json::json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"digest": digest(b"{}"), "size": 2},
            "layers": [{"mediaType": SIMPLE_SIGNING, "digest": digest(&stored), "size": stored.len(),
                        "annotations": {ANNOTATION_SIGNATURE: b64}}]})
        .to_string()
        .into_bytes();
        Artifact {
            kind: "sig",
            subject: subject.to_string(),
            tag: "sha256-x.sig".into(),
            documents: vec![Fetched {
                digest: digest(&manifest),
                bytes: manifest,
                media_type: OCI_MANIFEST.into(),
            }],
            blobs: vec![(digest(&stored), stored.len() as u64, Blob::Bytes(stored))],
        }
    }

    #[test]
    fn a_simple_signing_payload_is_taken_only_by_its_key_for_its_digest_and_untouched() {
        let (mine, other) = (key(1), key(2));
        let subject = format!("sha256:{}", "a".repeat(64));
        let good = [sig_artifact(&subject, &subject, &mine, false)];
        let k = keys(&[&other, &mine]);
        assert_eq!(check(&k, &subject, &good).unwrap(), Path::new("k1.pub"));
        let e = check(&keys(&[&other]), &subject, &good).unwrap_err();
        assert!(format!("{e}").contains("none of its signatures"), "{e}");
        let elsewhere = format!("sha256:{}", "b".repeat(64));
        let moved = [sig_artifact(&subject, &elsewhere, &mine, false)];
        assert!(check(&k, &subject, &moved).is_err());
        let tampered = [sig_artifact(&subject, &subject, &mine, true)];
        assert!(check(&k, &subject, &tampered).is_err());
        let e = check(&k, &subject, &[]).unwrap_err();
        assert!(format!("{e}").contains("no cosign signature"), "{e}");
    }

    #[test]
    fn dsse_pae_is_as_the_spec_gives_it() {
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
    }
}
