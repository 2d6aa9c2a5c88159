//! Public keys as cosign writes them (`cosign.pub`: PEM "PUBLIC KEY", ECDSA P-256) and the
//! check of cosign's plain signature file: base64 of a DER ECDSA signature over the SHA-256 of
//! the signed bytes.

use std::path::{Path, PathBuf};

use anyhow::Result;
use base64ct::{Base64, Encoding};
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::DecodePublicKey;

use crate::exit;

/// A verification key and the file it came from.
pub(crate) struct PublicKey {
    pub(crate) path: PathBuf,
    pub(crate) key: VerifyingKey,
}

impl PublicKey {
    /// The key in `path`: a PEM "PUBLIC KEY" (SubjectPublicKeyInfo) on the P-256 curve.
    pub(crate) fn load(path: &Path) -> Result<PublicKey> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            exit::usage(format!(
                "--verify-key {}: cannot be read: {e}",
                path.display()
            ))
        })?;
        let key = parse_public_key(&text)
            .map_err(|why| exit::usage(format!("--verify-key {}: {why}", path.display())))?;
        Ok(PublicKey {
            path: path.to_path_buf(),
            key,
        })
    }
}

/// A P-256 public key from its PEM text, or why not.
pub(crate) fn parse_public_key(text: &str) -> std::result::Result<VerifyingKey, String> {
    if !text.contains("-----BEGIN PUBLIC KEY-----") {
        return Err(
            "not a public key in PEM (\"-----BEGIN PUBLIC KEY-----\", as cosign.pub is)"
                .to_string(),
        );
    }
    VerifyingKey::from_public_key_pem(text.trim())
        .map_err(|e| format!("not an ECDSA P-256 public key: {e}"))
}

/// Base64 text of an ECDSA P-256 signature, DER (as cosign writes it) or the 64-byte fixed
/// form, as the signature it encodes, or why not.
pub(crate) fn decode_signature(text: &[u8]) -> std::result::Result<Signature, String> {
    let text = std::str::from_utf8(text).map_err(|_| "is not base64 text".to_string())?;
    let raw = Base64::decode_vec(text.trim()).map_err(|e| format!("is not base64: {e}"))?;
    Signature::from_der(&raw)
        .or_else(|_| Signature::from_slice(&raw))
        .map_err(|e| format!("is not an ECDSA P-256 signature (DER or fixed): {e}"))
}

/// The file of the first of `keys` under which `signature` signs `message`.
pub(crate) fn signer<'a>(
    keys: &'a [PublicKey],
    message: &[u8],
    signature: &Signature,
) -> Option<&'a Path> {
    keys.iter()
        .find(|k| k.key.verify(message, signature).is_ok())
        .map(|k| k.path.as_path())
}

/// The first of `keys` under which `signature` (cosign's signature file) signs `message`, or
/// why none does.
pub(crate) fn verify_any<'a>(
    keys: &'a [PublicKey],
    message: &[u8],
    signature: &[u8],
) -> std::result::Result<&'a Path, String> {
    let sig = decode_signature(signature)?;
    signer(keys, message, &sig).ok_or_else(|| {
        let names: Vec<String> = keys.iter().map(|k| k.path.display().to_string()).collect();
        format!(
            "is not by any of the keys given ({}): signed by another key, or the identity \
                 was changed",
            names.join(", ")
        )
    })
}
