//! A transparency-log entry a signature carries, and the time it proves, with no network:
//! Rekor's inclusion promise (the "signed entry timestamp", SET) is the log's signature over
//! the entry's body, index and the time the log integrated it. Checked against a log key of
//! the trust file (a Sigstore trusted root's `tlogs`), that time is when the signing
//! certificate had to be valid, as Sigstore's verifiers use it: the public Fulcio's
//! certificates live ten minutes, so without it they can only fail.
//!
//! The entry must be about this signature: its body names the signature, the signing
//! certificate and the digest of what was signed (kinds `hashedrekord` and `rekord`, 0.0.1,
//! cosign's `.sig` signatures; `dsse` 0.0.1, cosign 3's bundles). Other kinds, logs the trust
//! file does not name, and logs whose keys are not ECDSA P-256 (Rekor v2's Ed25519 logs make
//! no promises: their time comes from signed timestamps) give no time: the certificate is
//! then checked against now. Inclusion proofs and checkpoints are not checked: a promise is
//! the log's signed word that the entry is in it, which is what a verifier offline can check.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use p256::ecdsa::signature::Verifier as _;
use p256::pkcs8::DecodePublicKey;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// A log the trust file names: its ID (the SHA-256 of its key's DER, hex), its key, and when
/// the key was in use (seconds since the epoch).
pub struct Log {
    id: String,
    url: String,
    key: p256::ecdsa::VerifyingKey,
    from: Option<u64>,
    to: Option<u64>,
}

/// The ECDSA P-256 logs of a Sigstore trusted root (`tlogs`); none from PEM.
pub fn logs(root: &Value) -> Result<Vec<Log>, String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut out = Vec::new();
    for t in root["tlogs"].as_array().into_iter().flatten() {
        let key = &t["publicKey"];
        if key["keyDetails"] != "PKIX_ECDSA_P256_SHA_256" {
            continue;
        }
        let der = b64
            .decode(key["rawBytes"].as_str().unwrap_or_default())
            .map_err(|e| format!("a log's key is not base64: {e}"))?;
        let parsed = p256::ecdsa::VerifyingKey::from_public_key_der(&der)
            .map_err(|e| format!("a log's key is not ECDSA P-256: {e}"))?;
        let when = |k: &str| key["validFor"][k].as_str().and_then(rfc3339_seconds);
        out.push(Log {
            id: crate::bundle::hex(&Sha256::digest(&der)),
            url: t["baseUrl"].as_str().unwrap_or("a log").to_string(),
            key: parsed,
            from: when("start"),
            to: when("end"),
        });
    }
    Ok(out)
}

/// Seconds since the epoch of an RFC 3339 time in UTC (`2021-01-12T11:53:27Z`, fractions
/// allowed), as trusted roots write them.
pub fn rfc3339_seconds(text: &str) -> Option<u64> {
    let text = text.strip_suffix('Z')?;
    let (date, time) = text.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<u64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let time = time.split('.').next()?;
    let mut t = time.split(':').map(|p| p.parse::<u64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || y < 1970 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm, for years from 1970).
    let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y / 400;
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3_600 + mm * 60 + ss)
}

/// An entry as a signature carries it, with the log's promise.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The canonicalized body, base64, as the log signed it.
    body: String,
    integrated_time: u64,
    log_index: u64,
    /// The log's ID, hex.
    log_id: String,
    /// The promise: DER ECDSA.
    promise: Vec<u8>,
}

impl Entry {
    /// cosign's `dev.sigstore.cosign/bundle` annotation of a `.sig` layer:
    /// `{"SignedEntryTimestamp": b64, "Payload": {"body", "integratedTime", "logIndex", "logID"}}`.
    pub fn from_cosign_annotation(text: &str) -> Option<Entry> {
        let v: Value = serde_json::from_str(text).ok()?;
        let p = &v["Payload"];
        Some(Entry {
            body: p["body"].as_str()?.to_string(),
            integrated_time: p["integratedTime"].as_u64()?,
            log_index: p["logIndex"].as_u64()?,
            log_id: p["logID"].as_str()?.to_ascii_lowercase(),
            promise: base64::engine::general_purpose::STANDARD
                .decode(v["SignedEntryTimestamp"].as_str()?)
                .ok()?,
        })
    }

    /// The first entry of a Sigstore bundle's `verificationMaterial.tlogEntries` with an
    /// inclusion promise (its numbers are JSON strings there, its log ID base64).
    pub fn from_bundle(material: &Value) -> Option<Entry> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let number = |v: &Value| v.as_str().and_then(|s| s.parse().ok()).or(v.as_u64());
        material["tlogEntries"].as_array()?.iter().find_map(|e| {
            Some(Entry {
                body: e["canonicalizedBody"].as_str()?.to_string(),
                integrated_time: number(&e["integratedTime"])?,
                log_index: number(&e["logIndex"])?,
                log_id: crate::bundle::hex(&b64.decode(e["logId"]["keyId"].as_str()?).ok()?),
                promise: b64
                    .decode(e["inclusionPromise"]["signedEntryTimestamp"].as_str()?)
                    .ok()?,
            })
        })
    }

    /// The bytes the promise signs: the canonical JSON (RFC 8785: keys sorted, no spaces) of
    /// the body, the integrated time, the log's ID and the entry's index.
    fn promised(&self) -> Option<Vec<u8>> {
        let safe = |s: &str| {
            s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+/=-_".contains(&b))
        };
        if !safe(&self.body) || !safe(&self.log_id) {
            return None;
        }
        Some(
            format!(
                r#"{{"body":"{}","integratedTime":{},"logID":"{}","logIndex":{}}}"#,
                self.body, self.integrated_time, self.log_id, self.log_index
            )
            .into_bytes(),
        )
    }
}

/// What a signature signed: `message`, the bytes the signature is over, and for a DSSE
/// envelope `payload`, the bytes the envelope carries (else the message itself).
pub struct Signed<'a> {
    pub message: &'a [u8],
    pub payload: &'a [u8],
    pub signature: &'a [u8],
    /// The signing certificate, DER.
    pub leaf: &'a [u8],
}

/// When the log says `signed` was made, from `entry`'s promise by one of `logs`: `Ok(None)`
/// when no log of the trust file made it (or its kind is not read), an error when the promise
/// or the entry does not hold.
pub fn time(logs: &[Log], entry: &Entry, signed: &Signed) -> Result<Option<SystemTime>, String> {
    let Some(log) = logs.iter().find(|l| l.id == entry.log_id) else {
        return Ok(None);
    };
    let promised = entry
        .promised()
        .ok_or("its log entry's body or log ID is not base64 or hex")?;
    let promise = p256::ecdsa::Signature::from_der(&entry.promise)
        .map_err(|e| format!("its log entry's promise is not an ECDSA signature: {e}"))?;
    if log.key.verify(&promised, &promise).is_err() {
        return Err(format!(
            "its log entry {} is not promised by {}'s key (changed, or another log's)",
            entry.log_index, log.url
        ));
    }
    let t = entry.integrated_time;
    if log.from.is_some_and(|f| t < f) || log.to.is_some_and(|e| t > e) {
        return Err(format!(
            "its log entry {} was integrated when {}'s key was not in use",
            entry.log_index, log.url
        ));
    }
    let body = base64::engine::general_purpose::STANDARD
        .decode(&entry.body)
        .map_err(|e| format!("its log entry's body is not base64: {e}"))?;
    let body: Value = serde_json::from_slice(&body)
        .map_err(|e| format!("its log entry's body is not JSON: {e}"))?;
    if !about(&body, signed)? {
        return Ok(None);
    }
    Ok(Some(UNIX_EPOCH + Duration::from_secs(t)))
}

/// Whether the entry's `body` names this signature, its certificate and the digest of what it
/// signed: `Ok(false)` for a kind not read, an error when it names another.
fn about(body: &Value, signed: &Signed) -> Result<bool, String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let decoded = |v: &Value| v.as_str().and_then(|s| b64.decode(s).ok());
    let cert_is_leaf = |v: &Value| decoded(v).is_some_and(|pem| pem_is(&pem, signed.leaf));
    let sha256 = |data: &[u8]| crate::bundle::hex(&Sha256::digest(data));
    let spec = &body["spec"];
    let ok = match (body["kind"].as_str(), body["apiVersion"].as_str()) {
        (Some("hashedrekord" | "rekord"), Some("0.0.1")) => {
            spec["data"]["hash"]["algorithm"] == "sha256"
                && spec["data"]["hash"]["value"] == sha256(signed.message)
                && decoded(&spec["signature"]["content"]).as_deref() == Some(signed.signature)
                && cert_is_leaf(&spec["signature"]["publicKey"]["content"])
        }
        (Some("dsse"), Some("0.0.1")) => {
            spec["payloadHash"]["algorithm"] == "sha256"
                && spec["payloadHash"]["value"] == sha256(signed.payload)
                && spec["signatures"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|s| {
                        decoded(&s["signature"]).as_deref() == Some(signed.signature)
                            && cert_is_leaf(&s["verifier"])
                    })
        }
        _ => return Ok(false),
    };
    match ok {
        true => Ok(true),
        false => Err("its log entry is about another signature, certificate or payload".into()),
    }
}

/// Whether the first certificate of the PEM text `pem` is `der`.
fn pem_is(pem: &[u8], der: &[u8]) -> bool {
    use x509_cert::der::Encode;
    x509_cert::Certificate::load_pem_chain(pem)
        .ok()
        .and_then(|certs| certs.first()?.to_der().ok())
        .is_some_and(|first| first == der)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_times_are_read_as_trusted_roots_write_them() {
        assert_eq!(rfc3339_seconds("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(rfc3339_seconds("2021-01-12T11:53:27Z"), Some(1_610_452_407));
        assert_eq!(
            rfc3339_seconds("2022-12-31T23:59:59.999Z"),
            Some(1_672_531_199)
        );
        assert_eq!(rfc3339_seconds("2024-02-29T12:00:00Z"), Some(1_709_208_000));
        assert_eq!(rfc3339_seconds("2021-01-12T11:53:27+01:00"), None);
        assert_eq!(rfc3339_seconds("2021-13-12T11:53:27Z"), None);
    }

    #[test]
    fn the_promised_bytes_are_canonical_json_and_refuse_what_would_escape() {
        let e = Entry {
            body: "eyJhIjoxfQ==".into(),
            integrated_time: 1,
            log_index: 2,
            log_id: "c0d2".into(),
            promise: Vec::new(),
        };
        assert_eq!(
            e.promised().unwrap(),
            br#"{"body":"eyJhIjoxfQ==","integratedTime":1,"logID":"c0d2","logIndex":2}"#.to_vec()
        );
        let forged = Entry {
            body: "x\",\"integratedTime\":9".into(),
            ..e
        };
        assert!(forged.promised().is_none());
    }
}
