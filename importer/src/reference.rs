//! Image references, normalised the way Docker and containerd name images:
//! `nginx` is `docker.io/library/nginx:latest`.

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

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid image reference {input:?}: {reason}")]
pub struct ParseError {
    pub input: String,
    pub reason: &'static str,
}

const DEFAULT_DOMAIN: &str = "docker.io";

impl Reference {
    /// Parse and normalise. A reference with neither tag nor digest gets `:latest`.
    pub fn parse(input: &str) -> Result<Reference, ParseError> {
        let err = |reason| ParseError {
            input: input.to_string(),
            reason,
        };
        let s = input.trim();
        if s.is_empty() {
            return Err(err("it is empty"));
        }
        if s.len() > 4096 {
            return Err(err("it is longer than 4096 characters"));
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
        if let Some(t) = tag {
            check_tag(t).map_err(err)?;
        }
        if name.is_empty() {
            return Err(err("it has no repository name"));
        }
        let (domain, path) = split_domain(name).map_err(err)?;
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

/// `algorithm:hex`, the hex at least 32 digits.
fn check_digest(d: &str) -> Result<(), &'static str> {
    let (algo, hex) = d.split_once(':').ok_or("the digest has no algorithm")?;
    if algo.is_empty() || hex.len() < 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("the digest is not of the form sha256:<hex>");
    }
    Ok(())
}

/// At most 128 of letters, digits, `_`, `.` and `-`, not starting with `.` or `-`.
fn check_tag(t: &str) -> Result<(), &'static str> {
    let valid = !t.is_empty()
        && t.len() <= 128
        && t.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if valid {
        Ok(())
    } else {
        Err("the tag may hold only letters, digits, '_', '.' and '-'")
    }
}

/// The registry and the repository path of a name, normalised as Docker does: no registry
/// is Docker Hub (`index.docker.io` too), and a one-part Docker Hub path is under `library/`.
fn split_domain(name: &str) -> Result<(String, String), &'static str> {
    let (domain, path) = match name.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (first.to_string(), rest.to_string())
        }
        _ => (DEFAULT_DOMAIN.to_string(), name.to_string()),
    };
    if let Some((_, port)) = domain.split_once(':') {
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err("the registry port is not a number");
        }
    }
    let domain = if domain == "index.docker.io" {
        DEFAULT_DOMAIN.to_string()
    } else {
        domain
    };
    let path = if domain == DEFAULT_DOMAIN && !path.contains('/') {
        format!("library/{path}")
    } else {
        path
    };
    let path_ok = path.split('/').all(|c| {
        !c.is_empty()
            && c.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
            && c.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
    });
    if !path_ok {
        return Err("the repository may hold only lowercase letters, digits and separators");
    }
    Ok((domain, path))
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
    fn bad_references_are_refused_with_a_reason() {
        for bad in [
            "",
            "UPPER/case",
            "nginx:",
            "nginx:bad/tag",
            "a@sha256:zz",
            "a//b",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
