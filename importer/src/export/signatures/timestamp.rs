//! The RFC 3161 timestamps a Sigstore bundle carries
//! (`verificationMaterial.timestampVerificationData.rfc3161Timestamps`): a timestamping
//! authority's signed word that the signature existed at a time, which is when the signing
//! certificate had to be valid. Rekor v2's entries make no promise of a time; their bundles
//! carry such a timestamp instead, and cosign 3 adds one beside Rekor v1's promise.
//!
//! Checked, with no network, against the authorities of the trusted root
//! (`timestampAuthorities`: each a chain of certificates, all trusted): the token is CMS
//! SignedData of a `TSTInfo`, its message imprint is the digest of this signature's bytes, its
//! signed attributes name the `TSTInfo` and its digest, the authority's certificate (from the
//! token or the trusted chain) signed them (ECDSA P-256 or P-384), is for time stamping, was
//! issued by or is one of that chain's certificates, and was valid at the time it gives, as was
//! the authority's `validFor`. The time is the token's `genTime`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use cms::cert::CertificateChoices;
use cms::content_info::ContentInfo;
use cms::signed_data::{SignedData, SignerIdentifier, SignerInfo};
use serde_json::Value;
use sha2::{Digest, Sha256, Sha384, Sha512};
use x509_cert::der::{Decode, Encode};
use x509_cert::ext::pkix::ExtendedKeyUsage;
use x509_cert::Certificate;
use x509_tsp::{TimeStampResp, TstInfo};

use super::x509::{cert_chain, extension, issued, verifies_with, Hash};

const SIGNED_DATA: &str = "1.2.840.113549.1.7.2";
const TST_INFO: &str = "1.2.840.113549.1.9.16.1.4";
const CONTENT_TYPE: &str = "1.2.840.113549.1.9.3";
const MESSAGE_DIGEST: &str = "1.2.840.113549.1.9.4";
const TIME_STAMPING: &str = "1.3.6.1.5.5.7.3.8";

/// A timestamping authority of the trusted root: its chain and when it was in use (seconds
/// since the epoch).
pub struct Authority {
    name: String,
    chain: Vec<Certificate>,
    from: Option<u64>,
    to: Option<u64>,
}

/// The timestamping authorities of a Sigstore trusted root (`timestampAuthorities`).
pub fn authorities(root: &Value) -> Result<Vec<Authority>, String> {
    let mut out = Vec::new();
    for a in root["timestampAuthorities"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let chain = cert_chain(&a["certChain"], "a timestamping authority")?;
        let when = |k: &str| {
            a["validFor"][k]
                .as_str()
                .and_then(super::tlog::rfc3339_seconds)
        };
        out.push(Authority {
            name: a["uri"]
                .as_str()
                .unwrap_or("a timestamping authority")
                .to_string(),
            chain,
            from: when("start"),
            to: when("end"),
        });
    }
    Ok(out)
}

/// The signed timestamps (DER, base64 in the bundle) of a Sigstore bundle's verification
/// material.
pub fn of_bundle(material: &Value) -> Vec<Vec<u8>> {
    let b64 = base64::engine::general_purpose::STANDARD;
    material["timestampVerificationData"]["rfc3161Timestamps"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| b64.decode(t["signedTimestamp"].as_str()?).ok())
        .collect()
}

/// The time one of `authorities` signed, in the timestamp `der` (a TimeStampResp, or its
/// token alone), that `signature` existed; or why it does not hold.
pub fn time(
    authorities: &[Authority],
    der: &[u8],
    signature: &[u8],
) -> Result<(SystemTime, String), String> {
    let token = match TimeStampResp::from_der(der) {
        Ok(resp) => {
            let status = resp.status.status as u8;
            if status > 1 {
                return Err(format!("its timestamp was not granted (status {status})"));
            }
            resp.time_stamp_token
                .ok_or("its timestamp response carries no token")?
        }
        Err(_) => {
            ContentInfo::from_der(der).map_err(|e| format!("its timestamp is not RFC 3161: {e}"))?
        }
    };
    if token.content_type.to_string() != SIGNED_DATA {
        return Err("its timestamp is not CMS signed data".into());
    }
    let signed: SignedData = token
        .content
        .decode_as()
        .map_err(|e| format!("its timestamp's signed data: {e}"))?;
    let info = &signed.encap_content_info;
    let content = match (&info.econtent, info.econtent_type.to_string() == TST_INFO) {
        (Some(c), true) => c.value(),
        _ => return Err("its timestamp holds no TSTInfo".into()),
    };
    let tst = TstInfo::from_der(content).map_err(|e| format!("its timestamp's TSTInfo: {e}"))?;
    let imprint = &tst.message_imprint;
    let digest = hash(&imprint.hash_algorithm.oid.to_string(), signature)
        .ok_or("its timestamp's imprint uses a digest other than SHA-2")?;
    if imprint.hashed_message.as_bytes() != digest.as_slice() {
        return Err("its timestamp is of another signature".into());
    }
    let signer = signed
        .signer_infos
        .0
        .iter()
        .next()
        .ok_or("its timestamp is signed by nobody")?;
    signed_attributes(signer, content)?;
    let at = UNIX_EPOCH + tst.gen_time.to_unix_duration();
    let (authority, cert) = authority_of(authorities, &signed, signer)?;
    let name = authority.name.clone();
    if !in_use(authority, at) {
        return Err(format!("its timestamp is of a time {name} was not in use"));
    }
    let attrs = signer
        .signed_attrs
        .as_ref()
        .and_then(|a| a.to_der().ok())
        .ok_or("its timestamp's signed attributes cannot be read")?;
    let algorithm = signer.signature_algorithm.oid.to_string();
    let hash = Hash::of(&algorithm)
        .ok_or_else(|| format!("its timestamp is signed with {algorithm}, not ECDSA"))?;
    if !verifies_with(&cert, hash, &attrs, signer.signature.as_bytes()) {
        return Err(format!(
            "its timestamp is not signed by {name}'s certificate"
        ));
    }
    let eku = extension::<ExtendedKeyUsage>(&cert, "2.5.29.37")?;
    if !eku.is_some_and(|e| e.0.iter().any(|o| o.to_string() == TIME_STAMPING)) {
        return Err(format!("{name}'s certificate is not for time stamping"));
    }
    let v = &cert.tbs_certificate.validity;
    let t = tst.gen_time.to_unix_duration();
    if t < v.not_before.to_unix_duration() || t > v.not_after.to_unix_duration() {
        return Err(format!(
            "{name}'s certificate was not valid at the time it gives"
        ));
    }
    Ok((at, name))
}

/// The digest of `data` by the SHA-2 algorithm `oid`.
fn hash(oid: &str, data: &[u8]) -> Option<Vec<u8>> {
    Some(match oid {
        "2.16.840.1.101.3.4.2.1" => Sha256::digest(data).to_vec(),
        "2.16.840.1.101.3.4.2.2" => Sha384::digest(data).to_vec(),
        "2.16.840.1.101.3.4.2.3" => Sha512::digest(data).to_vec(),
        _ => return None,
    })
}

/// The signer's signed attributes name a `TSTInfo` and the digest of `content`.
fn signed_attributes(signer: &SignerInfo, content: &[u8]) -> Result<(), String> {
    let attrs = signer
        .signed_attrs
        .as_ref()
        .ok_or("its timestamp has no signed attributes")?;
    let value = |oid: &str| {
        attrs
            .iter()
            .find(|a| a.oid.to_string() == oid)
            .and_then(|a| a.values.iter().next())
    };
    let kind = value(CONTENT_TYPE)
        .and_then(|v| v.decode_as::<x509_cert::der::asn1::ObjectIdentifier>().ok());
    if kind.map(|o| o.to_string()).as_deref() != Some(TST_INFO) {
        return Err("its timestamp's signed attributes do not name a TSTInfo".into());
    }
    let digest = hash(&signer.digest_alg.oid.to_string(), content)
        .ok_or("its timestamp is digested with other than SHA-2")?;
    let named =
        value(MESSAGE_DIGEST).and_then(|v| v.decode_as::<x509_cert::der::asn1::OctetString>().ok());
    if named.as_ref().map(|o| o.as_bytes()) != Some(digest.as_slice()) {
        return Err("its timestamp's signed attributes name another TSTInfo".into());
    }
    Ok(())
}

/// The authority whose certificate `signer` names, among the token's certificates and the
/// trusted chains, and that certificate: one of the authority's chain, or issued by one.
fn authority_of<'a>(
    authorities: &'a [Authority],
    signed: &SignedData,
    signer: &SignerInfo,
) -> Result<(&'a Authority, Certificate), String> {
    let carried = signed
        .certificates
        .iter()
        .flat_map(|s| s.0.iter())
        .filter_map(|c| match c {
            CertificateChoices::Certificate(c) => Some(c),
            _ => None,
        });
    let all: Vec<&Certificate> = carried
        .chain(authorities.iter().flat_map(|a| a.chain.iter()))
        .collect();
    let cert = all
        .into_iter()
        .find(|c| names(signer, c))
        .ok_or("its timestamp's signing certificate is neither in it nor in the trust file")?;
    let der = cert.to_der().map_err(|e| e.to_string())?;
    for a in authorities {
        let trusted = a
            .chain
            .iter()
            .any(|c| c.to_der().is_ok_and(|d| d == der) || issued(c, cert));
        if trusted {
            return Ok((a, cert.clone()));
        }
    }
    Err(format!(
        "its timestamp is by {}, which no timestamping authority of the trust file issued",
        cert.tbs_certificate.subject
    ))
}

/// Whether `signer` names `cert` (issuer and serial number, or subject key identifier).
fn names(signer: &SignerInfo, cert: &Certificate) -> bool {
    match &signer.sid {
        SignerIdentifier::IssuerAndSerialNumber(i) => {
            i.issuer == cert.tbs_certificate.issuer
                && i.serial_number == cert.tbs_certificate.serial_number
        }
        SignerIdentifier::SubjectKeyIdentifier(k) => {
            extension::<x509_cert::ext::pkix::SubjectKeyIdentifier>(cert, "2.5.29.14")
                .ok()
                .flatten()
                .is_some_and(|s| s == *k)
        }
    }
}

/// Whether `at` is in `authority`'s window.
fn in_use(authority: &Authority, at: SystemTime) -> bool {
    let t = at
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    !(authority.from.is_some_and(|f| t < f) || authority.to.is_some_and(|e| t > e))
}
