//! `push --print-mirror-config`: what a site applies by hand so that nodes pull the pushed
//! images from the site registry under their original names: containerd's `hosts.toml` per
//! upstream registry, the `registries.yaml` mirrors of k3s and RKE2, or OpenShift's
//! ImageDigestMirrorSet and ImageTagMirrorSet. Printed on stdout; nothing is written.

use std::collections::BTreeSet;
use std::path::Path;

use crate::mirror::{config, Site};

/// Which configuration to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    Containerd,
    K3s,
    Openshift,
}

/// Where the site registry is, as the nodes reach it.
pub(crate) struct Mirror<'a> {
    /// `https://host[:port]` (or `http://`), as the registry answered the push.
    pub(crate) base: &'a str,
    pub(crate) site: &'a Site,
    pub(crate) ca_file: Option<&'a Path>,
}

impl Mirror<'_> {
    /// The configuration of `flavour` for the images of `upstreams`, as `mirror` writes it on
    /// a node (`crate::mirror::config`).
    pub(crate) fn render(&self, flavour: Flavour, upstreams: &BTreeSet<String>) -> String {
        let site = Site {
            plain_http: self.base.starts_with("http://"),
            ..self.site.clone()
        };
        let ca = self.ca_file.map(|p| p.display().to_string());
        let upstreams: Vec<String> = upstreams.iter().cloned().collect();
        match flavour {
            Flavour::Containerd => upstreams
                .iter()
                .map(|u| {
                    format!(
                        "# /etc/containerd/certs.d/{u}/hosts.toml\n{}",
                        config::hosts_toml(&site, u, ca.as_deref())
                    )
                })
                .collect::<Vec<_>>()
                .join("\n"),
            Flavour::K3s => config::registries_yaml(&site, &upstreams, ca.as_deref()),
            Flavour::Openshift => config::openshift_mirror_sets(&site, &upstreams),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstreams() -> BTreeSet<String> {
        ["docker.io", "registry.local:5000"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    #[test]
    fn containerd_gets_a_hosts_toml_per_upstream_with_the_prefix_as_its_path() {
        let site = Site::parse("site.example:5000/m", false).unwrap();
        let m = Mirror {
            base: "https://site.example:5000",
            site: &site,
            ca_file: None,
        };
        let out = m.render(Flavour::Containerd, &upstreams());
        assert!(
            out.starts_with(
                "# /etc/containerd/certs.d/docker.io/hosts.toml\n# Written by offline-images."
            ),
            "{out}"
        );
        assert!(out.contains("server = \"https://registry-1.docker.io\"\n\n[host.\"https://site.example:5000/v2/m/docker.io\"]\n  capabilities = [\"pull\", \"resolve\"]\n  override_path = true\n"), "{out}");
        assert!(
            out.contains("\n# /etc/containerd/certs.d/registry.local:5000/hosts.toml\n"),
            "{out}"
        );
        assert!(
            out.contains("[host.\"https://site.example:5000/v2/m/registry.local_5000\"]"),
            "{out}"
        );
    }

    #[test]
    fn k3s_rewrites_and_openshift_mirrors_name_the_same_repositories() {
        let site = Site::parse("site.example:5000", false).unwrap();
        let m = Mirror {
            base: "http://site.example:5000",
            site: &site,
            ca_file: Some(Path::new("/etc/ssl/site-ca.pem")),
        };
        let k3s = m.render(Flavour::K3s, &upstreams());
        assert!(k3s.contains("  \"registry.local:5000\":\n    endpoint:\n      - \"http://site.example:5000\"\n    rewrite:\n      \"^(.*)$\": \"registry.local_5000/$1\""), "{k3s}");
        assert!(k3s.contains("ca_file: \"/etc/ssl/site-ca.pem\""), "{k3s}");
        let os = m.render(Flavour::Openshift, &upstreams());
        assert!(
            os.contains("kind: ImageDigestMirrorSet") && os.contains("kind: ImageTagMirrorSet"),
            "{os}"
        );
        assert!(
            os.contains("  - source: docker.io\n    mirrors:\n    - site.example:5000/docker.io\n"),
            "{os}"
        );
    }
}
