//! Where an image lands in the site registry: `docker.io/library/nginx:1.25` pushed `--to
//! REGISTRY/PREFIX` is `REGISTRY/PREFIX/docker.io/library/nginx:1.25`, so images of different
//! upstream registries never collide. The upstream registry is one path component: a port's
//! `:` becomes `_` (`registry.local:5000` is `registry.local_5000`), which the repository
//! grammar allows and no host name contains.

use anyhow::{bail, Result};

use crate::mirror::site::is_component;
use crate::mirror::Site;
use crate::reference::Reference;

/// One name of an image in the site registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// The repository path in the site registry, e.g. `mirror/docker.io/library/nginx`.
    pub(crate) repo: String,
    /// A tag, or `sha256:...`.
    pub(crate) reference: String,
}

/// The repository in the site registry for the upstream repository `reference` names.
pub(crate) fn repo(site: &Site, reference: &Reference) -> Result<String> {
    upstream_component(&reference.domain)?;
    Ok(site.repository(&reference.domain, &reference.path))
}

/// Every name `reference` gives an image in the site registry: its tag and its digest.
pub(crate) fn site_names(site: &Site, reference: &Reference) -> Result<Vec<Target>> {
    let repo = repo(site, reference)?;
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
        let site = Site::parse("site.example:5000/mirror/prod", false).unwrap();
        assert_eq!(site.host, "site.example:5000");
        assert_eq!(
            repo(&site, &r("docker.io/library/nginx:1.25")).unwrap(),
            "mirror/prod/docker.io/library/nginx"
        );
        let bare = Site::parse("site.example/", false).unwrap();
        assert_eq!(bare.prefix, "");
        assert_eq!(repo(&bare, &r("nginx")).unwrap(), "docker.io/library/nginx");
    }

    #[test]
    fn an_upstream_with_a_port_becomes_one_valid_component() {
        let site = Site::parse("site.example/m", false).unwrap();
        let t = site_names(&site, &r("registry.local:5000/team/app:2")).unwrap();
        assert_eq!(t[0].repo, "m/registry.local_5000/team/app");
        assert_eq!(t[0].reference, "2");
        let digest = format!("sha256:{}", "a".repeat(64));
        let t = site_names(&site, &r(&format!("quay.io/org/app:1@{digest}"))).unwrap();
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
            "https://site.example",
        ] {
            assert!(Site::parse(bad, false).is_err(), "{bad}");
        }
        for good in ["site/a-b", "site/a__b", "site/a.b/c_d", "127.0.0.1:5000"] {
            assert!(Site::parse(good, false).is_ok(), "{good}");
        }
        assert!(is_component("registry.local_5000"));
        assert!(!is_component("[::1]_5000"));
    }
}
