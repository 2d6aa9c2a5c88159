//! `export --sign-key`: the bundle's identity signed with a P-256 private key, written as
//! cosign's signature file and as a Sigstore bundle. Keys: PKCS#8 ("PRIVATE KEY"), SEC1 ("EC
//! PRIVATE KEY", as `openssl ecparam -genkey` writes), or cosign's own encrypted key
//! ("ENCRYPTED SIGSTORE PRIVATE KEY": scrypt and NaCl secretbox, the password from
//! `COSIGN_PASSWORD` as cosign reads it). Connected side only.

use std::path::{Path, PathBuf};

use anyhow::Result;
use base64ct::{Base64, Encoding};
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::{DecodePrivateKey, EncodePublicKey};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::{hex, identity_of, path, IDENTITY, SIGNATURE, SIGSTORE_BUNDLE};
use crate::bundle;
use crate::exit;

const COSIGN_LABEL: &str = "ENCRYPTED SIGSTORE PRIVATE KEY";

/// A signing key and the file it came from.
pub(crate) struct Signer {
    path: PathBuf,
    key: SigningKey,
}

impl Signer {
    /// The private key in `path`, opened (cosign's with `COSIGN_PASSWORD`).
    pub(crate) fn load(path: &Path) -> Result<Signer> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            exit::usage(format!(
                "--sign-key {}: cannot be read: {e}",
                path.display()
            ))
        })?;
        let key = parse_private_key(&text, std::env::var("COSIGN_PASSWORD").ok())
            .map_err(|why| exit::usage(format!("--sign-key {}: {why}", path.display())))?;
        Ok(Signer {
            path: path.to_path_buf(),
            key,
        })
    }

    /// The bundle in `dir` signed: its identity, cosign's signature file and the Sigstore
    /// bundle written under `.offline-images/`, each atomically. Logs what was signed.
    pub(crate) fn sign_bundle(&self, dir: &Path) -> Result<()> {
        let identity = identity_of(dir)?;
        let sig: Signature = self.key.sign(&identity);
        let der = sig.to_der();
        let sig_b64 = Base64::encode_string(der.as_bytes());
        let spki = self
            .key
            .verifying_key()
            .to_public_key_der()
            .map_err(|e| anyhow::anyhow!("{}: {e}", self.path.display()))?;
        let sigstore = serde_json::json!({
            "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
            "verificationMaterial": {
                "publicKey": { "hint": Base64::encode_string(&Sha256::digest(spki.as_bytes())) }
            },
            "messageSignature": {
                "messageDigest": {
                    "algorithm": "SHA2_256",
                    "digest": Base64::encode_string(&Sha256::digest(&identity)),
                },
                "signature": sig_b64,
            }
        });
        std::fs::create_dir_all(path(dir, ""))?;
        bundle::write_atomic(&path(dir, IDENTITY), &identity)?;
        bundle::write_atomic(&path(dir, SIGNATURE), sig_b64.as_bytes())?;
        bundle::write_atomic(
            &path(dir, SIGSTORE_BUNDLE),
            serde_json::to_string(&sigstore)?.as_bytes(),
        )?;
        eprintln!(
            "offline-images: signed the bundle's identity (sha256:{}) with {}: {}",
            hex(&Sha256::digest(&identity)),
            self.path.display(),
            path(dir, SIGNATURE).display()
        );
        Ok(())
    }
}

/// A P-256 private key from its PEM text, or why not; `password` opens cosign's key.
pub(crate) fn parse_private_key(
    text: &str,
    password: Option<String>,
) -> std::result::Result<SigningKey, String> {
    let text = text.trim();
    if text.contains(&format!("-----BEGIN {COSIGN_LABEL}-----")) {
        let password = password.ok_or(
            "is cosign's encrypted key: set COSIGN_PASSWORD to its password (empty when it has \
             none)",
        )?;
        return open_cosign_key(text, &password);
    }
    if text.contains("-----BEGIN PRIVATE KEY-----") {
        return SigningKey::from_pkcs8_pem(text)
            .map_err(|e| format!("not an ECDSA P-256 PKCS#8 key: {e}"));
    }
    if text.contains("-----BEGIN EC PRIVATE KEY-----") {
        return p256::SecretKey::from_sec1_pem(text)
            .map(SigningKey::from)
            .map_err(|e| format!("not an ECDSA P-256 SEC1 key: {e}"));
    }
    Err(format!(
        "not a P-256 private key in PEM (\"PRIVATE KEY\", \"EC PRIVATE KEY\" or cosign's \
         \"{COSIGN_LABEL}\"); an encrypted PKCS#8 key must be decrypted first (openssl pkcs8)"
    ))
}

/// cosign's encrypted key file, as `cosign generate-key-pair` writes it.
#[derive(Deserialize)]
struct Encrypted {
    kdf: Kdf,
    cipher: Cipher,
    ciphertext: String,
}

#[derive(Deserialize)]
struct Kdf {
    name: String,
    params: KdfParams,
    salt: String,
}

#[derive(Deserialize)]
#[allow(non_snake_case)]
struct KdfParams {
    N: u64,
    r: u32,
    p: u32,
}

#[derive(Deserialize)]
struct Cipher {
    name: String,
    nonce: String,
}

/// cosign's encrypted key opened: scrypt derives the secretbox key from the password, and the
/// box holds the PKCS#8 DER of the key.
fn open_cosign_key(text: &str, password: &str) -> std::result::Result<SigningKey, String> {
    use crypto_secretbox::aead::{Aead, KeyInit};
    let body: String = text
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .concat();
    let json = Base64::decode_vec(body.trim()).map_err(|e| format!("its PEM body: {e}"))?;
    let enc: Encrypted =
        serde_json::from_slice(&json).map_err(|e| format!("its encrypted key document: {e}"))?;
    if enc.kdf.name != "scrypt" || enc.cipher.name != "nacl/secretbox" {
        return Err(format!(
            "its key is sealed with {} and {}; only scrypt and nacl/secretbox are known",
            enc.kdf.name, enc.cipher.name
        ));
    }
    let n = enc.kdf.params.N;
    if !n.is_power_of_two() || n < 2 {
        return Err(format!("its scrypt N {n} is not a power of two"));
    }
    let params = scrypt::Params::new(
        n.trailing_zeros() as u8,
        enc.kdf.params.r,
        enc.kdf.params.p,
        32,
    )
    .map_err(|e| format!("its scrypt parameters: {e}"))?;
    let decode =
        |what: &str, s: &str| Base64::decode_vec(s).map_err(|e| format!("its {what}: {e}"));
    let salt = decode("salt", &enc.kdf.salt)?;
    let nonce = decode("nonce", &enc.cipher.nonce)?;
    let sealed = decode("ciphertext", &enc.ciphertext)?;
    if nonce.len() != 24 {
        return Err(format!("its nonce is {} bytes, not 24", nonce.len()));
    }
    let mut key = [0u8; 32];
    scrypt::scrypt(password.as_bytes(), &salt, &params, &mut key)
        .map_err(|e| format!("scrypt: {e}"))?;
    let cipher = crypto_secretbox::XSalsa20Poly1305::new(&key.into());
    let der = cipher
        .decrypt(
            crypto_secretbox::Nonce::from_slice(&nonce),
            sealed.as_slice(),
        )
        .map_err(|_| "cannot be opened with COSIGN_PASSWORD: a wrong password?".to_string())?;
    SigningKey::from_pkcs8_der(&der).map_err(|e| format!("its sealed key is not ECDSA P-256: {e}"))
}
