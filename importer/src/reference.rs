//! Image references, normalised the way Docker and containerd name images:
//! `nginx` is `docker.io/library/nginx:latest`.
//!
//! A string is taken as a reference only when Docker would take it: the grammar of
//! distribution/reference (`reference.go`, `regexp.go`), the normalisation of its
//! `normalize.go` (`ParseNormalizedNamed`), and go-digest's digest rules. The rules grew more
//! lenient over the versions: Docker 20.10 to 26 and containerd 1.6 and 1.7 (whose CRI plugin
//! the kubelet asks) count the registry in the 255 characters of a repository name and take
//! neither an upper-case registry nor an IPv6 one, while Docker 27+ and containerd 2 count only
//! the path and take both. The older rules are kept, so that a name one node refuses never
//! imports on another: whatever they accept, every version accepts. (One corner is stricter
//! still: a first part with a '.' that is no host name, as in `a.b_c/d`, Docker reads as a
//! path; here it is a registry, and refused.)

use std::fmt;

/// A parsed, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    /// Registry host (and port), e.g. `docker.io`, `registry.example.com:5000`.
    pub domain: String,
    /// Repository path within the registry, e.g. `library/nginx`.
    pub path: String,
    pub tag: Option<String>,
    /// `sha256:<hex>`.
    pub digest: Option<String>,
}

/// The most characters of a repository name, registry and path together
/// (distribution/reference's `NameTotalLengthMax` before 0.6).
pub const REPOSITORY_MAX: usize = 255;
/// The most characters of a tag.
pub const TAG_MAX: usize = 128;
/// Longer input is refused before it is looked at.
const INPUT_MAX: usize = 4096;

/// The rule of the reference grammar a string breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    Empty,
    Oversized,
    /// 64 hexadecimal digits, which Docker reads as an image ID.
    Identifier,
    NoRepository,
    Uppercase,
    Domain,
    Path,
    Tag,
    Digest,
    /// The repository name (registry and path) has this many characters.
    RepositoryTooLong(usize),
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::Empty => write!(f, "it is empty"),
            Rule::Oversized => write!(f, "it is longer than {INPUT_MAX} characters"),
            Rule::Identifier => write!(
                f,
                "64 hexadecimal digits are an image ID, which cannot be a repository name"
            ),
            Rule::NoRepository => write!(f, "it has no repository name"),
            Rule::Uppercase => write!(f, "the repository name must be lowercase"),
            Rule::Domain => write!(
                f,
                "the registry must be a host name (letters, digits and '-', in parts joined by \
                 '.') with an optional numeric port"
            ),
            Rule::Path => write!(
                f,
                "each part of the repository path must be lowercase letters and digits, joined \
                 by one '.', one or two '_', or any number of '-'"
            ),
            Rule::Tag => write!(
                f,
                "the tag must be 1 to {TAG_MAX} letters, digits, '_', '.' and '-', not starting \
                 with '.' or '-'"
            ),
            Rule::Digest => write!(
                f,
                "the digest must be sha256:, sha384: or sha512: and 64, 96 or 128 lowercase \
                 hexadecimal digits"
            ),
            Rule::RepositoryTooLong(n) => write!(
                f,
                "the repository name (registry and path) is {n} characters, more than the \
                 {REPOSITORY_MAX} that Docker 20.10 to 26 and containerd 1.x allow"
            ),
        }
    }
}

/// A string that is not an image reference, and the rule it breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid image reference {}: {rule}", shown(.input))]
pub struct ParseError {
    pub input: String,
    pub rule: Rule,
}

/// `s` quoted, cut in the middle when long (a name of thousands of characters must not
/// fill a log line), with its length.
fn shown(s: &str) -> String {
    const HEAD: usize = 48;
    const TAIL: usize = 16;
    let n = s.chars().count();
    if n <= HEAD + TAIL + 16 {
        return format!("{s:?}");
    }
    let head: String = s.chars().take(HEAD).collect();
    let tail: String = s.chars().skip(n - TAIL).collect();
    format!("{:?} ({n} characters)", format!("{head}…{tail}"))
}

const DEFAULT_DOMAIN: &str = "docker.io";
const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";

impl Reference {
    /// Parse and normalise as Docker does. A reference with neither tag nor digest gets
    /// `:latest`. Nothing is trimmed: a name with spaces around it is not a name.
    pub fn parse(input: &str) -> Result<Reference, ParseError> {
        let err = |rule| ParseError {
            input: input.to_string(),
            rule,
        };
        let s = input;
        if s.is_empty() {
            return Err(err(Rule::Empty));
        }
        if s.len() > INPUT_MAX {
            return Err(err(Rule::Oversized));
        }
        if s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(err(Rule::Identifier));
        }
        let (name_tag, digest) = match s.split_once('@') {
            Some((n, d)) => (n, Some(d)),
            None => (s, None),
        };
        if let Some(d) = digest {
            check_digest(d).map_err(err)?;
        }
        // The tag is after the last ':' that follows the last '/'.
        let last_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name_tag[last_slash..].rfind(':') {
            Some(i) => (
                &name_tag[..last_slash + i],
                Some(&name_tag[last_slash + i + 1..]),
            ),
            None => (name_tag, None),
        };
        if name.is_empty() {
            return Err(err(Rule::NoRepository));
        }
        let (domain, path) = split_domain(name).map_err(err)?;
        if let Some(t) = tag {
            check_tag(t).map_err(err)?;
        }
        let whole = domain.len() + 1 + path.len();
        if whole > REPOSITORY_MAX {
            return Err(err(Rule::RepositoryTooLong(whole)));
        }
        let tag = match (tag, digest) {
            (None, None) => Some("latest".to_string()),
            (t, _) => t.map(str::to_string),
        };
        Ok(Reference {
            domain,
            path,
            tag,
            digest: digest.map(str::to_string),
        })
    }

    /// `domain/path`, without tag or digest.
    pub fn repository(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// A file name that stands for this reference and is safe on every filesystem:
    /// `docker.io/library/nginx:1.27` becomes `docker.io_library_nginx_1.27`
    /// ('/' and ':' become '_', and '@sha256:' becomes '_sha256_').
    pub fn file_stem(&self) -> String {
        let mut s = format!(
            "{}_{}",
            self.domain.replace(':', "_"),
            self.path.replace('/', "_")
        );
        if let Some(t) = &self.tag {
            s.push('_');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('_');
            s.push_str(&d.replace(':', "_"));
        }
        s
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.domain, self.path)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// Normalise a reference to its full string form, e.g. `nginx` -> `docker.io/library/nginx:latest`.
pub fn normalize(input: &str) -> Result<String, ParseError> {
    Reference::parse(input).map(|r| r.to_string())
}

/// go-digest's rules for the algorithms Docker has: `sha256:` and 64 lowercase hexadecimal
/// digits (`sha384:` 96, `sha512:` 128).
fn check_digest(d: &str) -> Result<(), Rule> {
    let (algo, hex) = d.split_once(':').ok_or(Rule::Digest)?;
    let len = match algo {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => return Err(Rule::Digest),
    };
    if hex.len() != len || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(Rule::Digest);
    }
    Ok(())
}

/// `[\w][\w.-]{0,127}`: at most 128 of letters, digits, `_`, `.` and `-`, not starting with
/// `.` or `-`.
fn check_tag(t: &str) -> Result<(), Rule> {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let valid = t.len() <= TAG_MAX
        && t.bytes().next().is_some_and(word)
        && t.bytes().all(|b| word(b) || b == b'.' || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(Rule::Tag)
    }
}

/// The registry and the repository path of a name, split and normalised as Docker's
/// `splitDockerDomain` does, then checked. The first part is the registry when it has a '.'
/// or a ':' or is `localhost`; else the registry is Docker Hub (`index.docker.io` is Docker
/// Hub too), where a one-part path is under `library/`. (Docker 27+ also takes an upper-case
/// first part for a registry, and an IPv6 address in brackets; Docker 20.10 takes neither.)
fn split_domain(name: &str) -> Result<(String, String), Rule> {
    let (domain, path) = match name.split_once('/') {
        Some((first, rest)) if first == "localhost" || first.contains(['.', ':']) => (first, rest),
        _ => (DEFAULT_DOMAIN, name),
    };
    let domain = if domain == LEGACY_DEFAULT_DOMAIN {
        DEFAULT_DOMAIN
    } else {
        domain
    };
    let path = if domain == DEFAULT_DOMAIN && !path.contains('/') {
        format!("library/{path}")
    } else {
        path.to_string()
    };
    if path.to_lowercase() != path {
        return Err(Rule::Uppercase);
    }
    if !path.split('/').all(path_component_ok) {
        return Err(Rule::Path);
    }
    if !domain_ok(domain) {
        return Err(Rule::Domain);
    }
    Ok((domain.to_string(), path))
}

/// `[a-z0-9]+` runs joined by `.`, `_`, `__` or a run of `-`.
pub(crate) fn path_component_ok(c: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let b = c.as_bytes();
    if !(b.first().is_some_and(|&x| alnum(x)) && b.last().is_some_and(|&x| alnum(x))) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !matches!(sep, "." | "_" | "__") && !sep.bytes().all(|x| x == b'-') {
            return false;
        }
    }
    true
}

/// A host name (parts of letters, digits and `-`, joined by `.`; an IPv4 address is one) with
/// an optional numeric port.
fn domain_ok(domain: &str) -> bool {
    let (host, port) = match domain.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (domain, None),
    };
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    let host_ok = host.split('.').all(|part| {
        let b = part.as_bytes();
        b.first().is_some_and(u8::is_ascii_alphanumeric)
            && b.last().is_some_and(u8::is_ascii_alphanumeric)
            && b.iter().all(|&x| x.is_ascii_alphanumeric() || x == b'-')
    });
    port_ok && host_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_get_docker_io_library_and_latest() {
        assert_eq!(
            normalize("nginx").unwrap(),
            "docker.io/library/nginx:latest"
        );
        assert_eq!(
            normalize("nginx:1.27").unwrap(),
            "docker.io/library/nginx:1.27"
        );
        assert_eq!(
            normalize("bitnami/redis:7").unwrap(),
            "docker.io/bitnami/redis:7"
        );
        assert_eq!(
            normalize("index.docker.io/library/busybox").unwrap(),
            "docker.io/library/busybox:latest"
        );
    }

    #[test]
    fn registries_with_ports_keep_their_port_and_no_default_tag_with_digest() {
        let d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        assert_eq!(
            normalize("localhost:5000/app").unwrap(),
            "localhost:5000/app:latest"
        );
        assert_eq!(
            normalize(&format!("ghcr.io/o/app@{d}")).unwrap(),
            format!("ghcr.io/o/app@{d}")
        );
        assert_eq!(
            normalize(&format!("quay.io/o/app:v1@{d}")).unwrap(),
            format!("quay.io/o/app:v1@{d}")
        );
        let r = Reference::parse("registry.k8s.io:443/pause:3.9").unwrap();
        assert_eq!(r.domain, "registry.k8s.io:443");
        assert_eq!(r.file_stem(), "registry.k8s.io_443_pause_3.9");
    }

    #[test]
    fn bad_references_are_refused_with_the_rule_they_break() {
        let d64 = "0123456789abcdef".repeat(4);
        for (bad, rule) in [
            ("", Rule::Empty),
            (" nginx", Rule::Path),
            ("nginx:", Rule::Tag),
            ("nginx:bad/tag", Rule::Domain),
            ("nginx:.dot", Rule::Tag),
            ("a@sha256:zz", Rule::Digest),
            ("a@md5:0123456789abcdef0123456789abcdef", Rule::Digest),
            ("a//b", Rule::Path),
            ("library/UPPER:1", Rule::Uppercase),
            // Docker 27+ takes these two, Docker 20.10 does not.
            ("UPPER/case:1", Rule::Uppercase),
            ("[::1]:5000/app:1", Rule::Domain),
            ("Nginx", Rule::Uppercase),
            ("a..b/c", Rule::Domain),
            ("a:port/c", Rule::Domain),
            ("-a.example/c", Rule::Domain),
            ("o/a..b", Rule::Path),
            ("o/a_-b", Rule::Path),
            ("o/a___b", Rule::Path),
            ("o/a-", Rule::Path),
            ("o/_a", Rule::Path),
            (&d64, Rule::Identifier),
        ] {
            let e = Reference::parse(bad).expect_err(bad);
            assert_eq!(e.rule, rule, "{bad:?}: {e}");
        }
        let tag129 = format!("app:{}", "t".repeat(129));
        assert_eq!(Reference::parse(&tag129).unwrap_err().rule, Rule::Tag);
        assert!(Reference::parse(&format!("app:{}", "t".repeat(128))).is_ok());
        // A sha256 digest in upper case, or of another length, is not one Docker reads.
        let upper = format!("a@sha256:{}", d64.to_uppercase());
        assert_eq!(Reference::parse(&upper).unwrap_err().rule, Rule::Digest);
        let short = format!("a@sha256:{}", &d64[..32]);
        assert_eq!(Reference::parse(&short).unwrap_err().rule, Rule::Digest);
    }

    #[test]
    fn names_docker_takes_are_taken_as_docker_splits_them() {
        for (good, want) in [
            ("a__b/c-----d:v_1.0-X", "docker.io/a__b/c-----d:v_1.0-X"),
            ("a.b_c", "docker.io/library/a.b_c:latest"),
            ("REGISTRY.example/app", "REGISTRY.example/app:latest"),
            ("localhost/app", "localhost/app:latest"),
            ("10.0.0.1:5000/a/b/c", "10.0.0.1:5000/a/b/c:latest"),
            (
                "my-registry.example/o/app",
                "my-registry.example/o/app:latest",
            ),
        ] {
            assert_eq!(normalize(good).as_deref(), Ok(want), "{good:?}");
        }
    }

    #[test]
    fn a_repository_name_over_255_characters_with_its_registry_is_refused() {
        // 255 with the registry: taken.
        let fits = format!(
            "oi-test.local/{}:1",
            "r".repeat(255 - "oi-test.local/".len())
        );
        assert!(Reference::parse(&fits).is_ok());
        // 256: refused, though the path alone (242) is within what Docker 27+ allows.
        let over = format!(
            "oi-test.local/{}:1",
            "r".repeat(256 - "oi-test.local/".len())
        );
        let e = Reference::parse(&over).unwrap_err();
        assert_eq!(e.rule, Rule::RepositoryTooLong(256));
        // Docker Hub names count as Docker counts them: `docker.io/library/` included.
        let hub = "r".repeat(238);
        assert_eq!(
            Reference::parse(&hub).unwrap_err().rule,
            Rule::RepositoryTooLong(256)
        );
        assert!(Reference::parse(&"r".repeat(237)).is_ok());
    }

    #[test]
    fn a_long_name_is_cut_in_the_message_and_its_length_given() {
        let over = format!("oi-test.local/{}:1", "r".repeat(5000));
        let msg = Reference::parse(&over).unwrap_err().to_string();
        assert!(msg.len() < 300, "{msg}");
        assert!(msg.contains("oi-test.local/rrr"), "{msg}");
        assert!(msg.contains("rrr:1\" (5016 characters)"), "{msg}");
        let bad = format!("oi-test.local/{}:1", "r".repeat(300));
        let msg = Reference::parse(&bad).unwrap_err().to_string();
        assert!(msg.contains("(316 characters)"), "{msg}");
        assert!(
            msg.contains("is 314 characters, more than the 255"),
            "{msg}"
        );
    }
}
