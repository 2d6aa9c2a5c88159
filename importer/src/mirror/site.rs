//! The site registry a node is pointed at, and where each upstream's images live in it:
//! `docker.io/library/nginx:1.25` is `REGISTRY/PREFIX/docker.io/library/nginx:1.25`, so that
//! images of different registries never collide and pods keep their names.

use std::fmt;

use anyhow::Result;

use crate::exit;

/// `--to REGISTRY[/PREFIX]`, with the scheme nodes reach it by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    /// `host[:port]`.
    pub host: String,
    /// Repository path prefix, without slashes at either end; empty for none.
    pub prefix: String,
    /// Plain HTTP (`--plain-http`), else HTTPS.
    pub plain_http: bool,
}

impl Site {
    /// Parse `REGISTRY[/PREFIX]`; a scheme, an empty host or a prefix that is not a valid
    /// repository path is a usage error that names the value.
    pub fn parse(to: &str, plain_http: bool) -> Result<Site> {
        let bad = |why: &str| exit::usage(format!("--to {to:?} {why}"));
        if to.contains("://") {
            return Err(bad(
                "has a scheme: give REGISTRY[/PREFIX] (HTTPS is used; mirror --plain-http or \
                 push --insecure-registry for HTTP)",
            ));
        }
        let trimmed = to.trim_end_matches('/');
        let (host, prefix) = trimmed.split_once('/').unwrap_or((trimmed, ""));
        if !valid_host(host) {
            return Err(bad("does not start with a registry host[:port]"));
        }
        if let Some(c) = prefix
            .split('/')
            .find(|c| !prefix.is_empty() && !is_component(c))
        {
            return Err(bad(&format!(
                "has a path prefix that is not a repository path: {c:?} is not a component \
                 (lowercase letters and digits, joined by '.', '_', '__' or '-'; components \
                 separated by '/')"
            )));
        }
        Ok(Site {
            host: host.to_string(),
            prefix: prefix.to_string(),
            plain_http,
        })
    }

    /// The repository an upstream's `path` lands at in the site registry.
    pub fn repository(&self, upstream: &str, path: &str) -> String {
        let mut parts: Vec<String> = Vec::new();
        if !self.prefix.is_empty() {
            parts.push(self.prefix.clone());
        }
        parts.push(upstream_component(upstream));
        parts.push(path.to_string());
        parts.join("/")
    }

    /// The API root containerd sends an upstream's requests to, with `override_path`:
    /// `https://REGISTRY/v2/PREFIX/UPSTREAM`.
    pub fn endpoint(&self, upstream: &str) -> String {
        let scheme = if self.plain_http { "http" } else { "https" };
        let mut path = String::from("/v2");
        if !self.prefix.is_empty() {
            path.push('/');
            path.push_str(&self.prefix);
        }
        format!(
            "{scheme}://{}{path}/{}",
            self.host,
            upstream_component(upstream)
        )
    }

    /// `https://REGISTRY`, for configurations that take a host and rewrite the path.
    pub fn base_url(&self) -> String {
        let scheme = if self.plain_http { "http" } else { "https" };
        format!("{scheme}://{}", self.host)
    }
}

impl fmt::Display for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.prefix.as_str() {
            "" => write!(f, "{}", self.host),
            p => write!(f, "{}/{p}", self.host),
        }
    }
}

/// An upstream registry as one repository path component: a port's `:` becomes `_`
/// (`registry.local:5000` → `registry.local_5000`), the one character of a registry host that
/// a repository path cannot hold.
pub fn upstream_component(upstream: &str) -> String {
    upstream.to_ascii_lowercase().replace(':', "_")
}

/// A registry host as references name it: `host[:port]`, letters, digits, `.` and `-`,
/// or a bracketed IPv6 address. Nothing that could name a path (`/`, `..`).
pub fn valid_host(host: &str) -> bool {
    let (name, port) = match host.rsplit_once(':') {
        Some((n, p)) if !n.ends_with(']') || host.starts_with('[') => (n, Some(p)),
        _ => (host, None),
    };
    let name_ok = if let Some(v6) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        !v6.is_empty() && v6.chars().all(|c| c.is_ascii_hexdigit() || c == ':')
    } else {
        !name.is_empty()
            && !name.starts_with(['.', '-'])
            && !name.contains("..")
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
    };
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    name_ok && port_ok
}

/// One repository path component as the distribution grammar has it:
/// `[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*`.
pub(crate) fn is_component(s: &str) -> bool {
    crate::reference::path_component_ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_of_each_upstream_land_under_its_own_path() {
        let site = Site::parse("site.example:5000/mirror/team", false).unwrap();
        assert_eq!(
            site.repository("docker.io", "library/nginx"),
            "mirror/team/docker.io/library/nginx"
        );
        assert_eq!(
            site.repository("registry.local:5000", "app"),
            "mirror/team/registry.local_5000/app"
        );
        assert_eq!(
            site.endpoint("quay.io"),
            "https://site.example:5000/v2/mirror/team/quay.io"
        );
        let bare = Site::parse("site.example", true).unwrap();
        assert_eq!(
            bare.endpoint("docker.io"),
            "http://site.example/v2/docker.io"
        );
        assert_eq!(bare.to_string(), "site.example");
    }

    #[test]
    fn a_site_that_is_not_a_registry_is_refused_by_value() {
        for bad in [
            "https://site.example",
            "/prefix",
            "site example",
            "site.example/Upper",
            "site.example/a//b",
            "../x",
            "site.example:port",
        ] {
            let e = Site::parse(bad, false).unwrap_err();
            assert!(e.to_string().contains(&format!("{bad:?}")), "{bad}: {e}");
        }
    }

    #[test]
    fn only_registry_hosts_are_valid_directory_names() {
        for good in [
            "docker.io",
            "registry.local:5000",
            "127.0.0.1:5000",
            "[::1]:5000",
            "localhost",
        ] {
            assert!(valid_host(good), "{good}");
        }
        for bad in [
            "",
            "..",
            "a/b",
            "../etc",
            ".hidden",
            "a..b",
            "host:",
            "host:123456",
            "a b",
        ] {
            assert!(!valid_host(bad), "{bad}");
        }
    }
}
