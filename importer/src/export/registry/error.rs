//! What went wrong with a registry, as a type: made where it is found (the transport for an
//! answer or an endpoint out of reach, the verifier for bytes that are not what their digest
//! says) and carried inside the `anyhow` error, so that the engine decides by the variant
//! (an image the registry does not serve is looked for in the local engine; a damaged cached
//! blob is removed from the cache), never by the text of a message.

use std::fmt;
use std::io;

/// A registry's failure. `Display` gives the message the log shows.
#[derive(Debug, Clone)]
pub enum RegistryError {
    /// The registry answered 404: it does not serve what was asked.
    NotFound { url: String, said: String },
    /// The registry (or its token server) answered 401: credentials missing or refused.
    Unauthorized { url: String, said: String },
    /// Any other error answer (403, 400, a 5xx after the retries, ...).
    Http {
        status: u16,
        url: String,
        said: String,
    },
    /// No registry answered at the endpoint.
    Unreachable {
        /// The endpoint, `host[:port]`.
        registry: String,
        /// Why HTTPS failed.
        https: String,
        /// What plain HTTP gave.
        http: PlainHttp,
    },
    /// Bytes whose digest is not the one they were asked by.
    Digest {
        /// What the bytes are: `content` (a blob) or `manifest`.
        what: &'static str,
        expected: String,
        got: String,
    },
    /// A blob longer than its descriptor says.
    TooLong { digest: String, size: u64 },
    /// A blob that ended before its size.
    TooShort { digest: String, size: u64, got: u64 },
}

/// How plain HTTP went for an endpoint that HTTPS did not reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlainHttp {
    /// Not tried: plain HTTP is only for `--insecure-registry` hosts and loopback.
    NotAllowed,
    /// It answered, but not as a registry (an HTTPS server answers plain HTTP with 400): the
    /// TLS error is the cause.
    NotRegistry,
    /// It failed too, for this reason.
    Failed(String),
}

impl RegistryError {
    /// The variant for an error answer of status `status` to a request for `url`; `said` is
    /// the registry's own message, maybe empty.
    pub fn answered(url: &str, status: u16, said: String) -> RegistryError {
        let url = url.to_string();
        match status {
            404 => RegistryError::NotFound { url, said },
            401 => RegistryError::Unauthorized { url, said },
            _ => RegistryError::Http { status, url, said },
        }
    }

    /// Whether the registry does not serve what was asked: it answered 404, or could not be
    /// reached at all. Only such an image is looked for in a local engine: a refused login or
    /// a damaged blob stays a failure.
    pub fn not_served(&self) -> bool {
        matches!(
            self,
            RegistryError::NotFound { .. } | RegistryError::Unreachable { .. }
        )
    }

    /// The digest of a blob whose bytes are not what it says (its digest or its size).
    pub fn damaged_blob(&self) -> Option<&str> {
        match self {
            RegistryError::Digest {
                what: "content",
                expected,
                ..
            } => Some(expected),
            RegistryError::TooLong { digest, .. } | RegistryError::TooShort { digest, .. } => {
                Some(digest)
            }
            _ => None,
        }
    }

    /// The registry error an error carries, anywhere in its chain, also inside an
    /// `io::Error` (as the verifier's mismatches travel through readers and writers).
    pub fn find(err: &anyhow::Error) -> Option<&RegistryError> {
        err.chain().find_map(|cause| {
            cause.downcast_ref::<RegistryError>().or_else(|| {
                cause
                    .downcast_ref::<io::Error>()
                    .and_then(io::Error::get_ref)
                    .and_then(|inner| inner.downcast_ref::<RegistryError>())
            })
        })
    }

    /// As an `io::Error` of kind `InvalidData`, for a reader that meets it.
    pub fn into_io(self) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, self)
    }

    /// `err` at `url` (`URL: message`), keeping a registry error inside it findable.
    pub fn at(url: &str, err: io::Error) -> anyhow::Error {
        match err
            .get_ref()
            .and_then(|i| i.downcast_ref::<RegistryError>())
        {
            Some(r) => anyhow::Error::new(r.clone()).context(url.to_string()),
            None => anyhow::anyhow!("{url}: {err}"),
        }
    }
}

/// `URL: HTTP 404 Not Found` and, when the registry said why, `: ` and its words.
fn write_answer(f: &mut fmt::Formatter<'_>, url: &str, status: u16, said: &str) -> fmt::Result {
    let reason = ureq::http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    if said.is_empty() {
        write!(f, "{url}: HTTP {status} {reason}")
    } else {
        write!(f, "{url}: HTTP {status} {reason}: {said}")
    }
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegistryError::NotFound { url, said } => write_answer(f, url, 404, said),
            RegistryError::Unauthorized { url, said } => write_answer(f, url, 401, said),
            RegistryError::Http { status, url, said } => write_answer(f, url, *status, said),
            RegistryError::Unreachable {
                registry,
                https,
                http,
            } => match http {
                PlainHttp::NotAllowed => write!(
                    f,
                    "cannot reach the registry {registry} over HTTPS (plain HTTP only for \
                     --insecure-registry hosts and loopback): {https}"
                ),
                PlainHttp::NotRegistry => {
                    write!(
                        f,
                        "cannot reach the registry {registry} over HTTPS: {https}"
                    )
                }
                PlainHttp::Failed(plain) => write!(
                    f,
                    "cannot reach the registry {registry}: over HTTPS: {https}; over HTTP: \
                     {plain}"
                ),
            },
            RegistryError::Digest {
                what,
                expected,
                got,
            } => write!(
                f,
                "digest mismatch: the {what} should have the digest {expected} but has {got}"
            ),
            RegistryError::TooLong { digest, size } => {
                write!(f, "the blob {digest} is longer than its {size} bytes")
            }
            RegistryError::TooShort { digest, size, got } => {
                write!(f, "the blob {digest} ended after {got} of its {size} bytes")
            }
        }
    }
}

impl std::error::Error for RegistryError {}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "https://reg.example.com/v2/app/manifests/1";

    #[test]
    fn an_answers_status_chooses_the_variant_and_the_message_is_todays() {
        let e = RegistryError::answered(URL, 404, "MANIFEST_UNKNOWN: manifest unknown".into());
        assert!(matches!(e, RegistryError::NotFound { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            format!("{URL}: HTTP 404 Not Found: MANIFEST_UNKNOWN: manifest unknown")
        );
        let e = RegistryError::answered(URL, 401, String::new());
        assert!(matches!(e, RegistryError::Unauthorized { .. }), "{e:?}");
        assert_eq!(e.to_string(), format!("{URL}: HTTP 401 Unauthorized"));
        for status in [400, 403, 429, 500, 503] {
            let e = RegistryError::answered(URL, status, "no".into());
            assert!(
                matches!(e, RegistryError::Http { status: s, .. } if s == status),
                "{e:?}"
            );
        }
        assert_eq!(
            RegistryError::answered(URL, 403, "DENIED: no".into()).to_string(),
            format!("{URL}: HTTP 403 Forbidden: DENIED: no")
        );
        // A status without a reason phrase keeps the space, as it always did.
        assert_eq!(
            RegistryError::answered(URL, 599, String::new()).to_string(),
            format!("{URL}: HTTP 599 ")
        );
    }

    #[test]
    fn only_a_404_or_an_endpoint_out_of_reach_is_not_served() {
        let unreachable = |http| RegistryError::Unreachable {
            registry: "reg:5000".into(),
            https: "connection refused".into(),
            http,
        };
        assert!(RegistryError::answered(URL, 404, String::new()).not_served());
        assert!(unreachable(PlainHttp::NotAllowed).not_served());
        assert!(!RegistryError::answered(URL, 401, String::new()).not_served());
        assert!(!RegistryError::answered(URL, 500, String::new()).not_served());
        let digest = RegistryError::Digest {
            what: "content",
            expected: "sha256:a".into(),
            got: "sha256:b".into(),
        };
        assert!(!digest.not_served());
        assert_eq!(
            unreachable(PlainHttp::NotAllowed).to_string(),
            "cannot reach the registry reg:5000 over HTTPS (plain HTTP only for \
             --insecure-registry hosts and loopback): connection refused"
        );
        assert_eq!(
            unreachable(PlainHttp::NotRegistry).to_string(),
            "cannot reach the registry reg:5000 over HTTPS: connection refused"
        );
        assert_eq!(
            unreachable(PlainHttp::Failed("reset".into())).to_string(),
            "cannot reach the registry reg:5000: over HTTPS: connection refused; over HTTP: reset"
        );
    }

    #[test]
    fn a_damaged_blob_is_found_inside_an_io_error_under_context() {
        let damaged = RegistryError::Digest {
            what: "content",
            expected: "sha256:a".into(),
            got: "sha256:b".into(),
        };
        let e = anyhow::Error::new(damaged.into_io()).context("cannot write blobs/sha256/a");
        assert_eq!(
            format!("{e:#}"),
            "cannot write blobs/sha256/a: digest mismatch: the content should have the digest \
             sha256:a but has sha256:b"
        );
        let found = RegistryError::find(&e).and_then(RegistryError::damaged_blob);
        assert_eq!(found, Some("sha256:a"));
        let short = RegistryError::TooShort {
            digest: "sha256:c".into(),
            size: 3,
            got: 2,
        };
        let e = RegistryError::at("https://r/v2/x/blobs/sha256:c", short.into_io());
        assert_eq!(
            format!("{e:#}"),
            "https://r/v2/x/blobs/sha256:c: the blob sha256:c ended after 2 of its 3 bytes"
        );
        assert_eq!(
            RegistryError::find(&e).and_then(RegistryError::damaged_blob),
            Some("sha256:c")
        );
        // A manifest's mismatch is no blob of the cache; other io errors carry none.
        let manifest = RegistryError::Digest {
            what: "manifest",
            expected: "sha256:a".into(),
            got: "sha256:b".into(),
        };
        assert_eq!(manifest.damaged_blob(), None);
        let e = RegistryError::at("u", io::Error::other("disk full"));
        assert_eq!(format!("{e:#}"), "u: disk full");
        assert!(RegistryError::find(&e).is_none());
    }
}
