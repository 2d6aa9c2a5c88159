//! Where an image lands in the site registry: `docker.io/library/nginx:1.25` pushed `--to
//! REGISTRY/PREFIX` is `REGISTRY/PREFIX/docker.io/library/nginx:1.25`, so images of different
//! upstream registries never collide. The upstream registry is one path component: a port's
//! `:` becomes `_` (`registry.local:5000` is `registry.local_5000`), which the repository
//! grammar allows and no host name contains.

use anyhow::{bail, Result};

use crate::mirror::site::is_component;
use crate::reference::Reference;

/// The site registry and the path prefix under which images land.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Site {
    /// `host[:port]`.
    pub(crate) endpoint: String,
    /// Path components before the upstream registry's, maybe none: `mirror/prod`.
    pub(crate) prefix: String,
}

/// One name of an image in the site registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// The repository path in the site registry, e.g. `mirror/docker.io/library/nginx`.
    pub(crate) repo: String,
    /// A tag, or `sha256:...`.
    pub(crate) reference: String,
}

impl Site {
    /// `REGISTRY[/PREFIX]` as `--to` gives it (a scheme, if given, is dropped: the transport
    /// chooses it).
    pub(crate) fn parse(to: &str) -> Result<Site> {
        let to = to
            .strip_prefix("https://")
            .or_else(|| to.strip_prefix("http://"))
            .unwrap_or(to)
            .trim_end_matches('/');
        let (endpoint, prefix) = to.split_once('/').unwrap_or((to, ""));
        if endpoint.is_empty() || endpoint.contains(['@', '?', '#', ' ']) {
            bail!("--to {to:?}: give the site registry as HOST[:PORT][/PREFIX]");
        }
        if let Some(bad) = prefix
            .split('/')
            .find(|c| !prefix.is_empty() && !is_component(c))
        {
            bail!(
                "--to {to:?}: the prefix part {bad:?} is not a valid repository path component \
                 (lower-case letters and digits, joined by '.', '_', '__' or '-')"
            );
        }
        Ok(Site {
            endpoint: endpoint.to_string(),
            prefix: prefix.to_string(),
        })
    }

    /// The repository in the site registry for the upstream repository `reference` names.
    pub(crate) fn repo(&self, reference: &Reference) -> Result<String> {
        let upstream = upstream_component(&reference.domain)?;
        Ok(match self.prefix.as_str() {
            "" => format!("{upstream}/{}", reference.path),
            prefix => format!("{prefix}/{upstream}/{}", reference.path),
        })
    }

    /// Every name `reference` gives an image in the site registry: its tag and its digest.
    pub(crate) fn targets(&self, reference: &Reference) -> Result<Vec<Target>> {
        let repo = self.repo(reference)?;
        Ok(reference
            .tag
            .iter()
            .chain(&reference.digest)
            .map(|r| Target {
                repo: repo.clone(),
                reference: r.clone(),
            })
            .collect())
    }
}

/// The upstream registry `host[:port]` as one repository path component.
pub(crate) fn upstream_component(domain: &str) -> Result<String> {
    let c = crate::mirror::site::upstream_component(domain);
    if !is_component(&c) {
        bail!(
            "the registry {domain:?} does not make a repository path component (as {c:?}): \
             push cannot place its images"
        );
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> Reference {
        Reference::parse(s).unwrap()
    }

    #[test]
    fn an_image_lands_under_the_prefix_and_its_upstream_registry() {
        let site = Site::parse("site.example:5000/mirror/prod").unwrap();
        assert_eq!(site.endpoint, "site.example:5000");
        assert_eq!(
            site.repo(&r("docker.io/library/nginx:1.25")).unwrap(),
            "mirror/prod/docker.io/library/nginx"
        );
        let bare = Site::parse("https://site.example/").unwrap();
        assert_eq!(bare.prefix, "");
        assert_eq!(bare.repo(&r("nginx")).unwrap(), "docker.io/library/nginx");
    }

    #[test]
    fn an_upstream_with_a_port_becomes_one_valid_component() {
        let site = Site::parse("site.example/m").unwrap();
        let t = site.targets(&r("registry.local:5000/team/app:2")).unwrap();
        assert_eq!(t[0].repo, "m/registry.local_5000/team/app");
        assert_eq!(t[0].reference, "2");
        let digest = format!("sha256:{}", "a".repeat(64));
        let t = site
            .targets(&r(&format!("quay.io/org/app:1@{digest}")))
            .unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[1].reference, digest);
    }

    #[test]
    fn a_prefix_that_breaks_the_repository_grammar_is_refused() {
        for bad in [
            "site/Upper",
            "site/a//b",
            "site/-a",
            "site/a..b",
            "",
            "user@site",
        ] {
            assert!(Site::parse(bad).is_err(), "{bad}");
        }
        for good in ["site/a-b", "site/a__b", "site/a.b/c_d", "127.0.0.1:5000"] {
            assert!(Site::parse(good).is_ok(), "{good}");
        }
        assert!(is_component("registry.local_5000"));
        assert!(!is_component("[::1]_5000"));
    }
}
