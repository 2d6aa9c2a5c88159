//! What the certificate checks share: an extension read, a CA, a link of a chain, and ECDSA
//! P-256 or P-384 signatures by a certificate's key. The signatures are checked by ring, which
//! the registry client's TLS already links: no second P-384 implementation in the binary.

use ring::signature::{self as ring_sig, UnparsedPublicKey, VerificationAlgorithm};
use x509_cert::der::{Decode, Encode};
use x509_cert::ext::pkix::BasicConstraints;
use x509_cert::Certificate;

pub const ECDSA_SHA256: &str = "1.2.840.10045.4.3.2";
pub const ECDSA_SHA384: &str = "1.2.840.10045.4.3.3";

/// The extension `oid` of `cert`, decoded; `None` when it has none.
pub fn extension<'a, T: Decode<'a>>(
    cert: &'a Certificate,
    oid: &str,
) -> std::result::Result<Option<T>, String> {
    let Some(ext) = cert
        .tbs_certificate
        .extensions
        .iter()
        .flatten()
        .find(|e| e.extn_id.to_string() == oid)
    else {
        return Ok(None);
    };
    T::from_der(ext.extn_value.as_bytes())
        .map(Some)
        .map_err(|e| format!("its certificate's extension {oid}: {e}"))
}

/// Whether `cert` may issue certificates (basic constraints: a CA).
pub fn is_ca(cert: &Certificate) -> std::result::Result<(), String> {
    match extension::<BasicConstraints>(cert, "2.5.29.19")? {
        Some(b) if b.ca => Ok(()),
        _ => Err(format!(
            "{} is not a CA certificate",
            cert.tbs_certificate.subject
        )),
    }
}

/// Whether `issuer` issued `cert`: its subject is `cert`'s issuer, and its key made `cert`'s
/// signature.
pub fn issued(issuer: &Certificate, cert: &Certificate) -> bool {
    let (Ok(a), Ok(b)) = (
        issuer.tbs_certificate.subject.to_der(),
        cert.tbs_certificate.issuer.to_der(),
    ) else {
        return false;
    };
    if a != b {
        return false;
    }
    let Ok(tbs) = cert.tbs_certificate.to_der() else {
        return false;
    };
    let Some(sig) = cert.signature.as_bytes() else {
        return false;
    };
    match Hash::of(&cert.signature_algorithm.oid.to_string()) {
        Some(hash) => verifies_with(issuer, hash, &tbs, sig),
        None => false,
    }
}

/// The digest an ECDSA signature is made over.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Hash {
    Sha256,
    Sha384,
}

impl Hash {
    /// The digest of the signature algorithm `oid` (ecdsa-with-SHA256 or -SHA384).
    pub fn of(oid: &str) -> Option<Hash> {
        match oid {
            ECDSA_SHA256 => Some(Hash::Sha256),
            ECDSA_SHA384 => Some(Hash::Sha384),
            _ => None,
        }
    }
}

const P256: &str = "1.2.840.10045.3.1.7";
const P384: &str = "1.3.132.0.34";

/// The curve of `cert`'s ECDSA key, and the key's point.
fn key(cert: &Certificate) -> Option<(&'static str, &[u8])> {
    let spki = &cert.tbs_certificate.subject_public_key_info;
    let curve = spki
        .algorithm
        .parameters
        .as_ref()?
        .decode_as::<x509_cert::der::asn1::ObjectIdentifier>()
        .ok()?
        .to_string();
    let curve = match curve.as_str() {
        P256 => P256,
        P384 => P384,
        _ => return None,
    };
    Some((curve, spki.subject_public_key.as_bytes()?))
}

/// Whether `cert`'s key made `signature` (DER ECDSA) over the `hash` of `message`.
pub fn verifies_with(cert: &Certificate, hash: Hash, message: &[u8], signature: &[u8]) -> bool {
    let Some((curve, point)) = key(cert) else {
        return false;
    };
    let alg: &'static dyn VerificationAlgorithm = match (curve, hash) {
        (P256, Hash::Sha256) => &ring_sig::ECDSA_P256_SHA256_ASN1,
        (P256, Hash::Sha384) => &ring_sig::ECDSA_P256_SHA384_ASN1,
        (_, Hash::Sha256) => &ring_sig::ECDSA_P384_SHA256_ASN1,
        (_, Hash::Sha384) => &ring_sig::ECDSA_P384_SHA384_ASN1,
    };
    UnparsedPublicKey::new(alg, point)
        .verify(message, signature)
        .is_ok()
}

/// Whether the key of `cert` made `signature` (DER ECDSA) over `message`: SHA-256 with a
/// P-256 key; SHA-384, else SHA-256, with a P-384 key.
pub fn verifies(cert: &Certificate, message: &[u8], signature: &[u8]) -> bool {
    match key(cert) {
        Some((P256, _)) => verifies_with(cert, Hash::Sha256, message, signature),
        Some(_) => {
            verifies_with(cert, Hash::Sha384, message, signature)
                || verifies_with(cert, Hash::Sha256, message, signature)
        }
        None => false,
    }
}

/// The certificates of a Sigstore trusted root's `certChain` (`certificates[].rawBytes`, base64
/// DER); `what` names the chain's owner in an error.
pub fn cert_chain(chain: &serde_json::Value, what: &str) -> Result<Vec<Certificate>, String> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let certs = chain["certificates"].as_array().into_iter().flatten();
    certs
        .map(|c| {
            let der = b64
                .decode(c["rawBytes"].as_str().unwrap_or_default())
                .map_err(|e| format!("a certificate of {what} is not base64: {e}"))?;
            Certificate::from_der(&der).map_err(|e| format!("a certificate of {what}: {e}"))
        })
        .collect()
}
