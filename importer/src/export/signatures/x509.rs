//! What the certificate checks share: an extension read, a CA, a link of a chain, and ECDSA
//! P-256 or P-384 signatures by a certificate's key.

use p256::ecdsa::signature::hazmat::PrehashVerifier;
use p256::pkcs8::DecodePublicKey;
use sha2::{Digest, Sha256, Sha384};
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
    let prehash = match cert.signature_algorithm.oid.to_string().as_str() {
        ECDSA_SHA256 => Sha256::digest(&tbs).to_vec(),
        ECDSA_SHA384 => Sha384::digest(&tbs).to_vec(),
        _ => return false,
    };
    verifies_prehash(issuer, &prehash, sig)
}

/// The ECDSA key of a certificate.
enum Key {
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
}

impl Key {
    fn of(cert: &Certificate) -> Option<Key> {
        let spki = cert.tbs_certificate.subject_public_key_info.to_der().ok()?;
        p256::ecdsa::VerifyingKey::from_public_key_der(&spki)
            .map(Key::P256)
            .or_else(|_| p384::ecdsa::VerifyingKey::from_public_key_der(&spki).map(Key::P384))
            .ok()
    }

    /// Whether the key made `signature` (DER) over the digest `prehash`.
    fn verifies_prehash(&self, prehash: &[u8], signature: &[u8]) -> bool {
        match self {
            Key::P256(k) => p256::ecdsa::Signature::from_der(signature)
                .is_ok_and(|s| k.verify_prehash(prehash, &s).is_ok()),
            Key::P384(k) => p384::ecdsa::Signature::from_der(signature)
                .is_ok_and(|s| k.verify_prehash(prehash, &s).is_ok()),
        }
    }
}

/// Whether the key of `cert` made `signature` (DER ECDSA) over `message`: SHA-256 with a
/// P-256 key; SHA-384, else SHA-256, with a P-384 key.
pub fn verifies(cert: &Certificate, message: &[u8], signature: &[u8]) -> bool {
    match Key::of(cert) {
        Some(k @ Key::P256(_)) => k.verifies_prehash(&Sha256::digest(message), signature),
        Some(k @ Key::P384(_)) => {
            k.verifies_prehash(&Sha384::digest(message), signature)
                || k.verifies_prehash(&Sha256::digest(message), signature)
        }
        None => false,
    }
}

/// Whether the key of `cert` made `signature` (DER ECDSA) over the digest `prehash`.
pub fn verifies_prehash(cert: &Certificate, prehash: &[u8], signature: &[u8]) -> bool {
    Key::of(cert).is_some_and(|k| k.verifies_prehash(prehash, signature))
}
