use super::*;

#[test]
fn an_identity_names_the_three_files_of_a_layout_and_two_of_archives() {
    let dir = std::env::temp_dir().join(format!("oi-identity-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("images.json"), b"{}").unwrap();
    std::fs::write(dir.join("SHA256SUMS"), b"").unwrap();
    let archives = identity_of(&dir).unwrap();
    let lines = parse_identity(&archives).unwrap();
    assert_eq!(
        lines.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        ["images.json", "SHA256SUMS"]
    );
    assert_eq!(
        lines[0].1,
        format!("sha256:{}", hex(&Sha256::digest(b"{}")))
    );
    std::fs::write(dir.join("index.json"), b"{\"manifests\":[]}").unwrap();
    let layout = String::from_utf8(identity_of(&dir).unwrap()).unwrap();
    assert!(layout.starts_with("offline-images bundle identity 1\nsha256:"));
    assert_eq!(layout.lines().count(), 4);
    assert!(parse_identity(b"something else\n").is_err());
    assert!(parse_identity(format!("{HEADER}\nindex.json sha256:x\n").as_bytes()).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_signature_is_checked_against_every_key_and_named_when_none_signed_it() {
    use p256::ecdsa::signature::Signer as _;
    use p256::ecdsa::{Signature, SigningKey};
    let mine = SigningKey::from_slice(&[7u8; 32]).unwrap();
    let other = SigningKey::from_slice(&[9u8; 32]).unwrap();
    let key = |k: &SigningKey, name: &str| PublicKey {
        path: PathBuf::from(name),
        key: *k.verifying_key(),
    };
    let sig: Signature = mine.sign(b"identity");
    let text = base64ct::Base64::encode_string(sig.to_der().as_bytes());
    use base64ct::Encoding;
    let keys = [key(&other, "other.pub"), key(&mine, "mine.pub")];
    assert_eq!(
        keys::verify_any(&keys, b"identity", text.as_bytes()).unwrap(),
        Path::new("mine.pub")
    );
    let refused = keys::verify_any(&keys[..1], b"identity", text.as_bytes()).unwrap_err();
    assert!(refused.contains("other.pub"), "{refused}");
    assert!(keys::verify_any(&keys, b"changed", text.as_bytes()).is_err());
    assert!(keys::verify_any(&keys, b"identity", b"not base64!").is_err());
}

#[test]
fn a_public_key_must_be_a_p256_pem_public_key() {
    use p256::pkcs8::{EncodePublicKey, LineEnding};
    let k = p256::ecdsa::SigningKey::from_slice(&[5u8; 32]).unwrap();
    let pem = k.verifying_key().to_public_key_pem(LineEnding::LF).unwrap();
    assert!(keys::parse_public_key(&pem).is_ok());
    assert!(keys::parse_public_key("-----BEGIN PRIVATE KEY-----\n").is_err());
    let broken = pem.replace("MFkw", "MFkx");
    assert!(keys::parse_public_key(&broken).is_err());
}

#[cfg(feature = "export")]
#[test]
fn a_private_key_is_read_from_pkcs8_or_sec1_and_cosigns_asks_for_its_password() {
    use p256::pkcs8::{EncodePrivateKey, LineEnding};
    let secret = p256::SecretKey::from_slice(&[3u8; 32]).unwrap();
    let pkcs8 = secret.to_pkcs8_pem(LineEnding::LF).unwrap();
    let sec1 = secret.to_sec1_pem(LineEnding::LF).unwrap();
    let want = p256::ecdsa::SigningKey::from(&secret);
    for pem in [pkcs8.as_str(), sec1.as_str()] {
        assert_eq!(sign::parse_private_key(pem, None).unwrap(), want);
    }
    let cosign = "-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\ne30=\n-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n";
    let why = sign::parse_private_key(cosign, None).unwrap_err();
    assert!(why.contains("set COSIGN_PASSWORD"), "{why}");
    // `{}`: a document with no scrypt parameters.
    let why = sign::parse_private_key(cosign, Some(String::new())).unwrap_err();
    assert!(why.contains("encrypted key document"), "{why}");
    let why = sign::parse_private_key("-----BEGIN ENCRYPTED PRIVATE KEY-----\n", None).unwrap_err();
    assert!(why.contains("openssl pkcs8"), "{why}");
}
