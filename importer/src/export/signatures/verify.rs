//! `export --verify-key KEY.pub` (repeatable), and `--verify-trusted-root` with the
//! certificate identity and issuer it asks for (`certificate`): an image is taken only when
//! one of its signatures, carried with it, is by one of the keys or by a certificate the
//! policy takes, and names the digest its reference resolved to; else it is refused by name
//! and the rest go on.
//!
//! What is checked, with no network: the signature itself (ECDSA P-256 over SHA-256, the
//! keys `cosign generate-key-pair` makes, read from their PEM; or by the key of the
//! certificate the signature carries) and that what it signs names the image's digest. Two
//! forms, as cosign writes them:
//! - cosign's tag scheme (`sha256-<hex>.sig`, cosign 2 by default): each layer is a "simple
//!   signing" payload whose `critical.image.docker-manifest-digest` names the image, signed
//!   as it is, the signature (DER, base64) in the layer's `dev.cosignproject.cosign/signature`
//!   annotation, a certificate (PEM) and its chain in `dev.sigstore.cosign/certificate` and
//!   `dev.sigstore.cosign/chain`;
//! - Sigstore bundles among the OCI 1.1 referrers (cosign 3 by default): a DSSE envelope whose
//!   in-toto statement has the predicate type `https://sigstore.dev/cosign/sign/v1` and the
//!   image's digest as its subject, signed over the envelope's PAE, a certificate in its
//!   `verificationMaterial` (and, among the referrers too, cosign 2's simple-signing manifest
//!   when it was told to write OCI 1.1 referrers).
//!
//! A transparency-log entry (Rekor's) and RFC 3161 timestamps are read only for a certificate:
//! the time they give is when the certificate had to be valid (`tlog`, `timestamp`).
//! Attestations are carried, not verified.

use std::path::PathBuf;
use std::time::SystemTime;

use anyhow::{anyhow, Context, Result};
use base64::Engine as _;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::certificate::{self, Policy};
use super::{timestamp, tlog};
use crate::export::registry::artifacts::Artifact;
use crate::export::registry::layout::Blob;
use crate::signing::keys::{decode_signature, signer, PublicKey};

const ANNOTATION_SIGNATURE: &str = "dev.cosignproject.cosign/signature";
const ANNOTATION_CERTIFICATE: &str = "dev.sigstore.cosign/certificate";
const ANNOTATION_CHAIN: &str = "dev.sigstore.cosign/chain";
const ANNOTATION_LOG_ENTRY: &str = "dev.sigstore.cosign/bundle";
const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
const SIGSTORE_BUNDLE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
const COSIGN_SIGN_PREDICATE: &str = "https://sigstore.dev/cosign/sign/v1";
/// A signature payload or bundle larger than this is not read.
const PAYLOAD_MAX: u64 = 1 << 20;

/// What an export takes a signature by: public keys, a certificate policy, or both.
pub struct Verifier {
    keys: Vec<PublicKey>,
    certificates: Option<Policy>,
    /// The time certificates are checked at: the export's start.
    now: SystemTime,
}

/// Read each key (a PEM public key, SPKI, of an ECDSA P-256 key, as `cosign.pub` is, read as
/// `import --verify-key` reads it: `signing::keys`) and the certificate policy's trust file.
pub fn load(
    paths: &[PathBuf],
    certificates: Option<&crate::export::CertificatePolicy>,
) -> Result<Verifier> {
    let keys = paths
        .iter()
        .map(|p| PublicKey::load(p))
        .collect::<Result<_>>()?;
    let certificates = certificates
        .map(|c| Policy::load(&c.trusted_root, &c.identities, &c.issuer))
        .transpose()?;
    Ok(Verifier {
        keys,
        certificates,
        now: SystemTime::now(),
    })
}

/// The certificate a signature carries (DER), the chain it names (DER, untrusted) and the
/// transparency-log entry it carries.
struct Carried {
    leaf: Vec<u8>,
    chain: Vec<Vec<u8>>,
    entry: Option<tlog::Entry>,
    /// RFC 3161 timestamps of the signature (DER).
    timestamps: Vec<Vec<u8>>,
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

/// Who of `v` made `sig_b64` (base64 of DER, or of the 64-byte fixed form) over `message`
/// (for a DSSE envelope, its PAE of `payload`; else `payload` itself): a key's file, or the
/// certificate `cert` the signature carries. Why a certificate was not taken goes into
/// `refusals`.
fn signed_by(
    v: &Verifier,
    message: &[u8],
    payload: &[u8],
    sig_b64: &str,
    cert: Option<&Carried>,
    refusals: &mut Vec<String>,
) -> Option<String> {
    if let Ok(sig) = decode_signature(sig_b64.as_bytes()) {
        if let Some(key) = signer(&v.keys, message, &sig) {
            return Some(format!("the key {}", key.display()));
        }
    }
    let (Some(policy), Some(cert)) = (&v.certificates, cert) else {
        return None;
    };
    let raw = base64::engine::general_purpose::STANDARD
        .decode(sig_b64.trim())
        .ok()?;
    let signed = tlog::Signed {
        message,
        payload,
        signature: &raw,
        leaf: &cert.leaf,
    };
    match policy.check(
        &signed,
        &cert.chain,
        cert.entry.as_ref(),
        &cert.timestamps,
        v.now,
    ) {
        Ok(who) => Some(who),
        Err(why) => {
            refusals.push(why);
            None
        }
    }
}

/// A simple-signing payload of the manifest `manifest` that names `subject`, signed by one
/// of `v`'s keys or a certificate it takes.
fn simple_signing(
    v: &Verifier,
    a: &Artifact,
    manifest: &[u8],
    subject: &str,
    refusals: &mut Vec<String>,
) -> Result<Option<String>> {
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
        let cert = layer
            .annotations
            .get(ANNOTATION_CERTIFICATE)
            .and_then(|pem| {
                let leaf = certificate::pem_chain(pem).into_iter().next()?;
                let chain = layer
                    .annotations
                    .get(ANNOTATION_CHAIN)
                    .map(|c| certificate::pem_chain(c))
                    .unwrap_or_default();
                let entry = layer
                    .annotations
                    .get(ANNOTATION_LOG_ENTRY)
                    .and_then(|e| tlog::Entry::from_cosign_annotation(e));
                Some(Carried {
                    leaf,
                    chain,
                    entry,
                    timestamps: Vec::new(),
                })
            });
        if let Some(who) = signed_by(v, &payload, &payload, sig, cert.as_ref(), refusals) {
            return Ok(Some(who));
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

/// The certificate a Sigstore bundle's verification material holds: `certificate` (v0.3),
/// or the first of `x509CertificateChain` and the rest as its chain (v0.1, v0.2).
fn bundle_certificate(material: &serde_json::Value) -> Option<Carried> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let der = |c: &serde_json::Value| b64.decode(c["rawBytes"].as_str()?).ok();
    let entry = tlog::Entry::from_bundle(material);
    let timestamps = timestamp::of_bundle(material);
    if let Some(leaf) = der(&material["certificate"]) {
        return Some(Carried {
            leaf,
            chain: Vec::new(),
            entry,
            timestamps,
        });
    }
    let mut certs = material["x509CertificateChain"]["certificates"]
        .as_array()?
        .iter()
        .filter_map(der);
    Some(Carried {
        leaf: certs.next()?,
        chain: certs.collect(),
        entry,
        timestamps,
    })
}

/// A Sigstore bundle among the referrers whose DSSE statement signs `subject` as cosign's
/// image signature, signed by one of `v`'s keys or a certificate it takes.
fn sigstore_bundle(
    v: &Verifier,
    a: &Artifact,
    subject: &str,
    refusals: &mut Vec<String>,
) -> Result<Option<String>> {
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
            let cert = bundle_certificate(&bundle["verificationMaterial"]);
            for s in env["signatures"].as_array().into_iter().flatten() {
                let Some(sig) = s["sig"].as_str() else {
                    continue;
                };
                if let Some(who) = signed_by(v, &message, &body, sig, cert.as_ref(), refusals) {
                    return Ok(Some(who));
                }
            }
        }
    }
    Ok(None)
}

/// Who signed `subject` among the image's `artifacts` (a key's file, or a certificate's
/// identity), or why none did.
pub fn check(v: &Verifier, subject: &str, artifacts: &[Artifact]) -> Result<String> {
    let mut seen = 0;
    let mut refusals = Vec::new();
    for a in artifacts.iter().filter(|a| a.subject == subject) {
        let found = match a.kind {
            "sig" => simple_signing(v, a, &a.documents[0].bytes, subject, &mut refusals),
            "referrers" => match sigstore_bundle(v, a, subject, &mut refusals) {
                Ok(Some(who)) => Ok(Some(who)),
                // cosign 2's `--registry-referrers-mode=oci-1-1`: its `.sig` as a referrer.
                Ok(None) => a.documents[1..]
                    .iter()
                    .try_fold(None, |found, d| match found {
                        Some(who) => Ok(Some(who)),
                        None => simple_signing(v, a, &d.bytes, subject, &mut refusals),
                    }),
                Err(e) => Err(e),
            },
            _ => continue,
        };
        seen += 1;
        match found.with_context(|| format!("its signature {}", a.tag))? {
            Some(who) => return Ok(who),
            None => continue,
        }
    }
    let mut by: Vec<String> = v
        .keys
        .iter()
        .map(|k| format!("--verify-key {}", k.path.display()))
        .collect();
    if let Some(p) = &v.certificates {
        by.push(p.describe());
    }
    let by = by.join(", ");
    Err(anyhow!(if seen == 0 {
        format!("refused: it has no cosign signature (none for {subject}; {by})")
    } else if refusals.is_empty() {
        format!("refused: none of its signatures of {subject} is by {by}")
    } else {
        refusals.dedup();
        format!(
            "refused: none of its signatures of {subject} is by {by}: {}",
            refusals.join("; ")
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

    fn keys(of: &[&SigningKey]) -> Verifier {
        Verifier {
            keys: of
                .iter()
                .enumerate()
                .map(|(i, k)| PublicKey {
                    path: PathBuf::from(format!("k{i}.pub")),
                    key: *k.verifying_key(),
                })
                .collect(),
            certificates: None,
            now: SystemTime::now(),
        }
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
        assert_eq!(check(&k, &subject, &good).unwrap(), "the key k1.pub");
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

    /// Sigstore's own data, a cosign 3 image signature made with the public Fulcio and
    /// logged by the public Rekor, and the trusted root of both: `OI_SIGSTORE_DATA`, the
    /// `tests/data` of the Rust `sigstore` crate 0.15.0 that scripts/test.sh fetches from
    /// crates.io. None (and a note) outside CI when it is not given.
    fn sigstore_data() -> Option<(Vec<u8>, std::path::PathBuf)> {
        let Some(dir) = std::env::var_os("OI_SIGSTORE_DATA") else {
            assert!(
                std::env::var_os("CI").is_none_or(|v| v.is_empty()),
                "missing precondition in CI: OI_SIGSTORE_DATA (scripts/test.sh fetches it)"
            );
            eprintln!("SKIPPED (narrowed run): no OI_SIGSTORE_DATA");
            return None;
        };
        let dir = std::path::PathBuf::from(dir);
        let bundle = std::fs::read(dir.join("bundle_v03.json")).unwrap();
        Some((bundle, dir.join("sigstore_trusted_root.json")))
    }

    /// A referrers artifact of `subject` holding the Sigstore bundle `bundle`.
    fn referrers(subject: &str, bundle: Vec<u8>) -> Artifact {
        let manifest = serde_json::json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"digest": digest(b"{}"), "size": 2},
            "layers": [{"mediaType": SIGSTORE_BUNDLE, "digest": digest(&bundle), "size": bundle.len()}]})
        .to_string()
        .into_bytes();
        let index = b"{}".to_vec();
        Artifact {
            kind: "referrers",
            subject: subject.to_string(),
            tag: "sha256-x".into(),
            documents: [index, manifest]
                .into_iter()
                .map(|bytes| Fetched {
                    digest: digest(&bytes),
                    bytes,
                    media_type: OCI_MANIFEST.into(),
                })
                .collect(),
            blobs: vec![(digest(&bundle), bundle.len() as u64, Blob::Bytes(bundle))],
        }
    }

    #[test]
    fn a_public_sigstore_signature_is_taken_at_the_time_its_log_entry_or_timestamp_gives() {
        let Some((bundle, root)) = sigstore_data() else {
            return;
        };
        const SUBJECT: &str =
            "sha256:c811d58de79c92f03214e63aa339484e488d694ae8a6283b5f3f17a9faf50172";
        const IDENTITY: &str = "https://github.com/kubewarden/kubewarden-controller/.github/workflows/release.yml@refs/tags/v1.34.0";
        const ISSUER: &str = "https://token.actions.githubusercontent.com";
        let verifier = |root: &std::path::Path, identity: &str| {
            let policy = crate::export::CertificatePolicy {
                trusted_root: root.to_path_buf(),
                identities: vec![identity.to_string()],
                issuer: ISSUER.to_string(),
            };
            load(&[], Some(&policy)).unwrap()
        };
        let good = verifier(&root, IDENTITY);
        let who = check(&good, SUBJECT, &[referrers(SUBJECT, bundle.clone())]).unwrap();
        assert!(
            who.contains(&format!("a certificate of {IDENTITY} (issuer {ISSUER}"))
                && who.ends_with(
                    "valid at 2026-04-09T07:23:29Z, when the log recorded the signature)"
                ),
            "{who}"
        );

        let e = check(
            &verifier(&root, "https://github.com/other"),
            SUBJECT,
            &[referrers(SUBJECT, bundle.clone())],
        )
        .unwrap_err();
        assert!(
            format!("{e}").contains(&format!("its certificate is for {IDENTITY}")),
            "{e}"
        );

        // The log's promise covers the time: a later one is not promised.
        let mut doc: serde_json::Value = serde_json::from_slice(&bundle).unwrap();
        doc["verificationMaterial"]["tlogEntries"][0]["integratedTime"] = "1775719410".into();
        let moved = serde_json::to_vec(&doc).unwrap();
        let e = check(&good, SUBJECT, &[referrers(SUBJECT, moved)]).unwrap_err();
        assert!(
            format!("{e}").contains("is not promised by https://rekor.sigstore.dev's key"),
            "{e}"
        );

        // Without its log entry, the timestamp of Sigstore's authority gives the time.
        let edit = |change: &dyn Fn(&mut serde_json::Value)| {
            let mut doc: serde_json::Value = serde_json::from_slice(&bundle).unwrap();
            change(&mut doc["verificationMaterial"]);
            serde_json::to_vec(&doc).unwrap()
        };
        let unlogged = edit(&|m| m["tlogEntries"] = serde_json::json!([]));
        let who = check(&good, SUBJECT, &[referrers(SUBJECT, unlogged.clone())]).unwrap();
        assert!(
            who.ends_with(
                "valid at 2026-04-09T07:23:29Z, when https://timestamp.sigstore.dev/api/v1/timestamp timestamped the signature)"
            ),
            "{who}"
        );
        // A timestamp changed (its TSTInfo's time) is refused: it is the authority's word.
        let b64 = base64::engine::general_purpose::STANDARD;
        let stamp = |m: &serde_json::Value| {
            let t = m["timestampVerificationData"]["rfc3161Timestamps"][0]["signedTimestamp"]
                .as_str()
                .unwrap()
                .to_string();
            b64.decode(t).unwrap()
        };
        let mut doc: serde_json::Value = serde_json::from_slice(&unlogged).unwrap();
        let mut der = stamp(&doc["verificationMaterial"]);
        let at = der
            .windows(15)
            .position(|w| w == b"20260409072329Z")
            .unwrap();
        der[at + 13] = b'8';
        doc["verificationMaterial"]["timestampVerificationData"]["rfc3161Timestamps"][0]
            ["signedTimestamp"] = b64.encode(&der).into();
        let moved = serde_json::to_vec(&doc).unwrap();
        let e = check(&good, SUBJECT, &[referrers(SUBJECT, moved)]).unwrap_err();
        assert!(
            format!("{e}").contains("its timestamp's signed attributes name another TSTInfo"),
            "{e}"
        );

        // With neither, or with a trust file that names no log and no authority, the
        // ten-minute certificate can only be checked against now.
        let bare = edit(&|m| {
            m["tlogEntries"] = serde_json::json!([]);
            m["timestampVerificationData"] = serde_json::json!({});
        });
        let e = check(&good, SUBJECT, &[referrers(SUBJECT, bare)]).unwrap_err();
        assert!(
            format!("{e}")
                .contains("is valid from 2026-04-09T07:23:29Z to 2026-04-09T07:33:29Z, not now"),
            "{e}"
        );
        let mut trust: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&root).unwrap()).unwrap();
        trust["tlogs"] = serde_json::json!([]);
        trust["timestampAuthorities"] = serde_json::json!([]);
        let dir = std::env::temp_dir().join(format!("oi-sigstore-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let no_logs = dir.join("trusted_root.json");
        std::fs::write(&no_logs, serde_json::to_vec(&trust).unwrap()).unwrap();
        let e = check(
            &verifier(&no_logs, IDENTITY),
            SUBJECT,
            &[referrers(SUBJECT, bundle.clone())],
        )
        .unwrap_err();
        assert!(format!("{e}").contains("not now"), "{e}");
        // A certificate authority the trusted root says was retired before the signature.
        let mut trust: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&root).unwrap()).unwrap();
        for ca in trust["certificateAuthorities"].as_array_mut().unwrap() {
            ca["validFor"]["end"] = "2025-01-01T00:00:00Z".into();
        }
        let retired = dir.join("retired.json");
        std::fs::write(&retired, serde_json::to_vec(&trust).unwrap()).unwrap();
        let e = check(
            &verifier(&retired, IDENTITY),
            SUBJECT,
            &[referrers(SUBJECT, bundle.clone())],
        )
        .unwrap_err();
        assert!(
            format!("{e}").contains("was not in use at 2026-04-09T07:23:29Z"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();

        // Another image's digest: the statement names this one only.
        let other = format!("sha256:{}", "d".repeat(64));
        assert!(check(&good, &other, &[referrers(&other, bundle)]).is_err());
    }
}
