//! Signatures by a certificate (`export --verify-trusted-root FILE
//! --verify-certificate-identity ID --verify-certificate-oidc-issuer URL`): cosign's
//! "keyless" form, where the signature carries the X.509 certificate of the key that made it
//! (a `.sig` layer's `dev.sigstore.cosign/certificate` annotation, with its chain in
//! `dev.sigstore.cosign/chain`; a Sigstore bundle's `verificationMaterial`), issued by a CA
//! (Sigstore's Fulcio, or a site's own) for an identity that an OIDC issuer vouched for.
//!
//! Checked, with no network: the signature by the certificate's key (ECDSA P-256 or P-384);
//! the certificate is a code-signing one (extended key usage), names one of the identities (a
//! subject alternative name: email, URI, or Fulcio's username other name) and the issuer
//! (Fulcio's extension `1.3.6.1.4.1.57264.1.8`, or the older `.1.1`); and it chains, each
//! link's signature checked, to a certificate of the trust file, through CA certificates. The trust file is a
//! Sigstore trusted root (`trusted_root.json`: its certificate authorities' chains and its
//! transparency logs), as `cosign trusted-root create` writes it and as Sigstore's TUF
//! repository serves it, or PEM certificates (cosign's `--certificate-chain`).
//!
//! Every certificate is checked at the time the signature's transparency-log entry promises,
//! by a log the trust file names (`tlog`), else at the time an RFC 3161 timestamp of an
//! authority the trust file names gives (`timestamp`); without either, at now, as `cosign
//! verify --insecure-ignore-tlog` does, so an expired certificate is refused however valid it
//! was when it signed. Not checked: inclusion proofs, SCTs.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context, Result};
use x509_cert::der::asn1::Utf8StringRef;
use x509_cert::der::{Decode, Encode};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{ExtendedKeyUsage, SubjectAltName};
use x509_cert::Certificate;

use super::x509::{cert_chain, extension, is_ca, issued, verifies};
use super::{timestamp, tlog};

/// Fulcio's OIDC issuer: v2, a DER UTF8String; v1, the bare string.
const ISSUER_V2: &str = "1.3.6.1.4.1.57264.1.8";
const ISSUER_V1: &str = "1.3.6.1.4.1.57264.1.1";
const CODE_SIGNING: &str = "1.3.6.1.5.5.7.3.3";
/// Fulcio's username identity, an other name of the subject alternative names.
const USERNAME: &str = "1.3.6.1.4.1.57264.1.7";
/// Links above the signing certificate, at most.
const DEPTH: usize = 6;

/// What a certificate must be to be taken: issued under the trust file, for one of the
/// identities, vouched for by the issuer.
pub struct Policy {
    file: PathBuf,
    trusted: Vec<Anchor>,
    /// The transparency logs whose promises give a signature's time.
    logs: Vec<tlog::Log>,
    /// The timestamping authorities whose timestamps give it, when no log does.
    authorities: Vec<timestamp::Authority>,
    identities: Vec<String>,
    issuer: String,
}

impl Policy {
    /// The trust file's certificates and what a signing certificate must name; a file that
    /// cannot be read or holds no certificate is an error naming it.
    pub fn load(file: &Path, identities: &[String], issuer: &str) -> Result<Policy> {
        let text = std::fs::read(file)
            .with_context(|| format!("--verify-trusted-root {}: cannot be read", file.display()))?;
        let (trusted, logs, authorities) = trusted_certificates(&text)
            .map_err(|why| anyhow!("--verify-trusted-root {}: {why}", file.display()))?;
        Ok(Policy {
            file: file.to_path_buf(),
            trusted,
            logs,
            authorities,
            identities: identities.to_vec(),
            issuer: issuer.to_string(),
        })
    }

    /// The policy as the flags that made it: for a refusal.
    pub fn describe(&self) -> String {
        format!(
            "--verify-trusted-root {} for {} (issuer {})",
            self.file.display(),
            self.identities.join(" or "),
            self.issuer
        )
    }

    /// Who made `signed` under its certificate, `chain` (DER, as the signature carries it:
    /// untrusted links) helping to reach the trust file, at the time `entry` (the log entry
    /// the signature carries) proves, else the time one of `timestamps` (RFC 3161, DER) gives,
    /// else `now`; or why the certificate is not taken.
    pub fn check(
        &self,
        signed: &tlog::Signed,
        chain: &[Vec<u8>],
        entry: Option<&tlog::Entry>,
        timestamps: &[Vec<u8>],
        now: SystemTime,
    ) -> std::result::Result<String, String> {
        let cert =
            Certificate::from_der(signed.leaf).map_err(|e| format!("its certificate: {e}"))?;
        if !verifies(&cert, signed.message, signed.signature) {
            return Err("the signature is not by its certificate's key".into());
        }
        let identity = self.identity(&cert)?;
        let logged = match entry {
            Some(e) => tlog::time(&self.logs, e, signed)
                .map_err(|why| format!("the signature of {identity}: {why}"))?,
            None => None,
        };
        let at = match logged {
            Some(time) => At {
                time,
                by: Some("when the log recorded the signature".into()),
            },
            None => self
                .timestamped(timestamps, signed.signature)
                .map_err(|why| format!("the signature of {identity}: {why}"))?
                .unwrap_or(At {
                    time: now,
                    by: None,
                }),
        };
        valid_at(&cert, &at).map_err(|why| format!("the certificate of {identity} {why}"))?;
        let eku = extension::<ExtendedKeyUsage>(&cert, "2.5.29.37")?;
        if !eku.is_some_and(|e| e.0.iter().any(|o| o.to_string() == CODE_SIGNING)) {
            return Err(format!(
                "the certificate of {identity} is not for code signing"
            ));
        }
        let chain: Vec<Certificate> = chain
            .iter()
            .filter_map(|d| Certificate::from_der(d).ok())
            .collect();
        self.chains(&cert, &chain, &at)
            .map_err(|why| format!("the certificate of {identity}: {why}"))?;
        let when = match &at.by {
            Some(by) => format!("; valid at {}, {by}", at.display()),
            None => String::new(),
        };
        Ok(format!(
            "a certificate of {identity} (issuer {}, under {}{when})",
            self.issuer,
            self.file.display()
        ))
    }

    /// The time one of `timestamps` gives `signature`, by an authority of the trust file;
    /// None when there is none to check; an error when none of them holds.
    fn timestamped(
        &self,
        timestamps: &[Vec<u8>],
        signature: &[u8],
    ) -> std::result::Result<Option<At>, String> {
        if self.authorities.is_empty() || timestamps.is_empty() {
            return Ok(None);
        }
        let mut why = String::new();
        for t in timestamps {
            match timestamp::time(&self.authorities, t, signature) {
                Ok((time, name)) => {
                    return Ok(Some(At {
                        time,
                        by: Some(format!("when {name} timestamped the signature")),
                    }))
                }
                Err(e) => why = e,
            }
        }
        Err(why)
    }

    /// The identity of `cert` that the policy names, or what it names instead.
    fn identity(&self, cert: &Certificate) -> std::result::Result<String, String> {
        let names = identities(cert)?;
        let issuer = oidc_issuer(cert)?;
        let Some(name) = names.iter().find(|n| self.identities.contains(n)) else {
            return Err(format!(
                "its certificate is for {} (issuer {}), not {}",
                if names.is_empty() {
                    "no email, URI or username".to_string()
                } else {
                    names.join(", ")
                },
                issuer.as_deref().unwrap_or("not named"),
                self.identities.join(" or ")
            ));
        };
        match issuer {
            Some(i) if i == self.issuer => Ok(name.clone()),
            other => Err(format!(
                "its certificate for {name} was vouched for by {}, not {}",
                other.as_deref().unwrap_or("no OIDC issuer it names"),
                self.issuer
            )),
        }
    }

    /// Up from `cert` to a certificate of the trust file, through `chain`'s CA certificates.
    fn chains(
        &self,
        cert: &Certificate,
        chain: &[Certificate],
        at: &At,
    ) -> std::result::Result<(), String> {
        let mut link = cert.clone();
        for _ in 0..=DEPTH {
            if let Some(t) = self.trusted.iter().find(|t| issued(&t.cert, &link)) {
                is_ca(&t.cert)?;
                ca_valid_at(&t.cert, at)?;
                let secs = at
                    .time
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs();
                if t.from.is_some_and(|f| secs < f) || t.to.is_some_and(|e| secs > e) {
                    return Err(format!(
                        "{} of {} was not in use at {}",
                        t.cert.tbs_certificate.subject,
                        self.file.display(),
                        at.display()
                    ));
                }
                return Ok(());
            }
            let self_issued = link.tbs_certificate.subject == link.tbs_certificate.issuer;
            let up = chain.iter().find(|c| issued(c, &link));
            let (Some(up), false) = (up, self_issued) else {
                return Err(format!(
                    "it does not chain to a certificate of {} ({} {})",
                    self.file.display(),
                    match self_issued {
                        true => "its chain ends at",
                        false => "issued by",
                    },
                    link.tbs_certificate.issuer
                ));
            };
            is_ca(up)?;
            ca_valid_at(up, at)?;
            link = up.clone();
        }
        Err(format!("its chain is longer than {DEPTH} links"))
    }
}

/// A certificate of the trust file, and when its certificate authority was in use (a trusted
/// root's `validFor`, seconds since the epoch; PEM says nothing).
struct Anchor {
    cert: Certificate,
    from: Option<u64>,
    to: Option<u64>,
}

/// The certificates of a trust file, a Sigstore trusted root's certificate authorities or PEM
/// certificates, and the trusted root's transparency logs and timestamping authorities.
type Trust = (Vec<Anchor>, Vec<tlog::Log>, Vec<timestamp::Authority>);

fn trusted_certificates(text: &[u8]) -> std::result::Result<Trust, String> {
    let (mut logs, mut authorities) = (Vec::new(), Vec::new());
    let certs = if text.trim_ascii_start().starts_with(b"{") {
        let root: serde_json::Value = serde_json::from_slice(text)
            .map_err(|e| format!("not a Sigstore trusted root (JSON): {e}"))?;
        let mut out = Vec::new();
        for ca in root["certificateAuthorities"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let when = |k: &str| ca["validFor"][k].as_str().and_then(tlog::rfc3339_seconds);
            for cert in cert_chain(&ca["certChain"], "its chains")? {
                out.push(Anchor {
                    cert,
                    from: when("start"),
                    to: when("end"),
                });
            }
        }
        logs = tlog::logs(&root)?;
        authorities = timestamp::authorities(&root)?;
        out
    } else {
        Certificate::load_pem_chain(text)
            .map_err(|e| format!("not PEM certificates, nor a Sigstore trusted root: {e}"))?
            .into_iter()
            .map(|cert| Anchor {
                cert,
                from: None,
                to: None,
            })
            .collect()
    };
    if certs.is_empty() {
        return Err("holds no certificate authority's certificate".into());
    }
    Ok((certs, logs, authorities))
}

/// The DER of every certificate of PEM text (a signature's chain annotation).
pub fn pem_chain(text: &str) -> Vec<Vec<u8>> {
    Certificate::load_pem_chain(text.as_bytes())
        .unwrap_or_default()
        .iter()
        .filter_map(|c| c.to_der().ok())
        .collect()
}

/// The emails, URIs and usernames `cert` is for (subject alternative names; a username is
/// Fulcio's other name `1.3.6.1.4.1.57264.1.7`, a UTF8String).
fn identities(cert: &Certificate) -> std::result::Result<Vec<String>, String> {
    let san = extension::<SubjectAltName>(cert, "2.5.29.17")?;
    Ok(san
        .into_iter()
        .flat_map(|s| s.0)
        .filter_map(|n| match n {
            GeneralName::Rfc822Name(s) => Some(s.to_string()),
            GeneralName::UniformResourceIdentifier(s) => Some(s.to_string()),
            GeneralName::OtherName(o) if o.type_id.to_string() == USERNAME => o
                .value
                .decode_as::<Utf8StringRef>()
                .ok()
                .map(|s| s.as_str().to_string()),
            _ => None,
        })
        .collect())
}

/// The OIDC issuer `cert` names (Fulcio's extensions).
fn oidc_issuer(cert: &Certificate) -> std::result::Result<Option<String>, String> {
    let exts = || cert.tbs_certificate.extensions.iter().flatten();
    if let Some(e) = exts().find(|e| e.extn_id.to_string() == ISSUER_V2) {
        return Utf8StringRef::from_der(e.extn_value.as_bytes())
            .map(|s| Some(s.as_str().to_string()))
            .map_err(|e| format!("its certificate's OIDC issuer: {e}"));
    }
    Ok(exts()
        .find(|e| e.extn_id.to_string() == ISSUER_V1)
        .map(|e| String::from_utf8_lossy(e.extn_value.as_bytes()).into_owned()))
}

/// The time certificates are checked at: the one a log entry proves, else now.
struct At {
    time: SystemTime,
    /// What gives the time (`when the log recorded the signature`); None: now.
    by: Option<String>,
}

impl At {
    fn display(&self) -> String {
        let since = self.time.duration_since(UNIX_EPOCH).unwrap_or_default();
        x509_cert::der::DateTime::from_unix_duration(since)
            .map(|t| t.to_string())
            .unwrap_or_else(|_| format!("{} s after 1970", since.as_secs()))
    }
}

/// Whether the CA certificate `cert` is valid `at`, or when it is, named by its subject.
fn ca_valid_at(cert: &Certificate, at: &At) -> std::result::Result<(), String> {
    valid_at(cert, at).map_err(|why| format!("{} {why}", cert.tbs_certificate.subject))
}

/// Whether `cert` is valid `at`, or when it is valid.
fn valid_at(cert: &Certificate, at: &At) -> std::result::Result<(), String> {
    let v = &cert.tbs_certificate.validity;
    let t = at.time.duration_since(UNIX_EPOCH).unwrap_or_default();
    if t < v.not_before.to_unix_duration() || t > v.not_after.to_unix_duration() {
        let when = match &at.by {
            Some(by) => format!("not at {}, {by}", at.display()),
            None => "not now (the signature carries no entry of a log and no timestamp of an \
                      authority the trust file names, which would give the time it was made)"
                .to_string(),
        };
        return Err(format!(
            "is valid from {} to {}, {when}",
            v.not_before, v.not_after
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trust_file_without_a_certificate_is_refused_with_why() {
        let none = br#"{"mediaType":"application/vnd.dev.sigstore.trustedroot+json;version=0.1","tlogs":[]}"#;
        let e = trusted_certificates(none).map(|_| ()).unwrap_err();
        assert!(e.contains("holds no certificate authority"), "{e}");
        let e = trusted_certificates(b"{not json").map(|_| ()).unwrap_err();
        assert!(e.contains("not a Sigstore trusted root"), "{e}");
        let e =
            trusted_certificates(b"-----BEGIN PUBLIC KEY-----\nAA==\n-----END PUBLIC KEY-----\n")
                .map(|_| ())
                .unwrap_err();
        assert!(e.contains("not PEM certificates"), "{e}");
        let bad =
            br#"{"certificateAuthorities":[{"certChain":{"certificates":[{"rawBytes":"AAAA"}]}}]}"#;
        let e = trusted_certificates(bad).map(|_| ()).unwrap_err();
        assert!(e.contains("a certificate of its chains"), "{e}");
    }
}
