//! `push --print-mirror-config`: what a site applies by hand so that nodes pull the pushed
//! images from the site registry under their original names: containerd's `hosts.toml` per
//! upstream registry, the `registries.yaml` mirrors of k3s and RKE2, or OpenShift's
//! ImageDigestMirrorSet and ImageTagMirrorSet. Printed on stdout; nothing is written.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;

use super::naming::{upstream_component, Site};

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
    /// The repository path under which `upstream`'s images are: `PREFIX/UPSTREAM`.
    fn path_of(&self, upstream: &str) -> String {
        let c = upstream_component(upstream).unwrap_or_else(|_| upstream.to_string());
        match self.site.prefix.as_str() {
            "" => c,
            prefix => format!("{prefix}/{c}"),
        }
    }

    /// The configuration of `flavour` for the images of `upstreams`.
    pub(crate) fn render(&self, flavour: Flavour, upstreams: &BTreeSet<String>) -> String {
        match flavour {
            Flavour::Containerd => self.containerd(upstreams),
            Flavour::K3s => self.k3s(upstreams),
            Flavour::Openshift => self.openshift(upstreams),
        }
    }

    fn containerd(&self, upstreams: &BTreeSet<String>) -> String {
        let mut out = String::new();
        for u in upstreams {
            let server = match u.as_str() {
                "docker.io" => "https://registry-1.docker.io".to_string(),
                other => format!("https://{other}"),
            };
            if !out.is_empty() {
                out.push('\n');
            }
            let _ = writeln!(out, "# /etc/containerd/certs.d/{u}/hosts.toml");
            let _ = writeln!(out, "server = \"{server}\"\n");
            let _ = writeln!(out, "[host.\"{}/v2/{}\"]", self.base, self.path_of(u));
            let _ = writeln!(out, "  capabilities = [\"pull\", \"resolve\"]");
            let _ = writeln!(out, "  override_path = true");
            if let Some(ca) = self.ca_file {
                let _ = writeln!(out, "  ca = \"{}\"", ca.display());
            }
        }
        out
    }

    fn k3s(&self, upstreams: &BTreeSet<String>) -> String {
        let mut out = String::from("# /etc/rancher/k3s/registries.yaml (RKE2: /etc/rancher/rke2/registries.yaml)\nmirrors:\n");
        for u in upstreams {
            let _ = writeln!(out, "  \"{u}\":");
            let _ = writeln!(out, "    endpoint:\n      - \"{}\"", self.base);
            let _ = writeln!(
                out,
                "    rewrite:\n      \"^(.*)$\": \"{}/$1\"",
                self.path_of(u)
            );
        }
        if let Some(ca) = self.ca_file {
            let _ = writeln!(out, "configs:\n  \"{}\":", self.site.endpoint);
            let _ = writeln!(out, "    tls:\n      ca_file: \"{}\"", ca.display());
        }
        out
    }

    fn openshift(&self, upstreams: &BTreeSet<String>) -> String {
        let mut out = String::new();
        for (kind, list) in [
            ("ImageDigestMirrorSet", "imageDigestMirrors"),
            ("ImageTagMirrorSet", "imageTagMirrors"),
        ] {
            if !out.is_empty() {
                out.push_str("---\n");
            }
            let _ = writeln!(out, "apiVersion: config.openshift.io/v1\nkind: {kind}");
            let _ = writeln!(out, "metadata:\n  name: offline-images\nspec:\n  {list}:");
            for u in upstreams {
                let _ = writeln!(out, "    - source: {u}\n      mirrors:");
                let _ = writeln!(out, "        - {}/{}", self.site.endpoint, self.path_of(u));
            }
        }
        out
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
        let site = Site::parse("site.example:5000/m").unwrap();
        let m = Mirror {
            base: "https://site.example:5000",
            site: &site,
            ca_file: None,
        };
        let out = m.render(Flavour::Containerd, &upstreams());
        assert!(out.contains(
            "# /etc/containerd/certs.d/docker.io/hosts.toml\nserver = \"https://registry-1.docker.io\"\n\n\
             [host.\"https://site.example:5000/v2/m/docker.io\"]\n  capabilities = [\"pull\", \"resolve\"]\n  override_path = true\n"
        ), "{out}");
        assert!(
            out.contains("[host.\"https://site.example:5000/v2/m/registry.local_5000\"]"),
            "{out}"
        );
    }

    #[test]
    fn k3s_rewrites_and_openshift_mirrors_name_the_same_repositories() {
        let site = Site::parse("site.example:5000").unwrap();
        let m = Mirror {
            base: "https://site.example:5000",
            site: &site,
            ca_file: Some(Path::new("/etc/ssl/site-ca.pem")),
        };
        let k3s = m.render(Flavour::K3s, &upstreams());
        assert!(k3s.contains("  \"registry.local:5000\":\n    endpoint:\n      - \"https://site.example:5000\"\n    rewrite:\n      \"^(.*)$\": \"registry.local_5000/$1\""), "{k3s}");
        assert!(k3s.contains("ca_file: \"/etc/ssl/site-ca.pem\""), "{k3s}");
        let os = m.render(Flavour::Openshift, &upstreams());
        assert!(
            os.contains("kind: ImageDigestMirrorSet") && os.contains("kind: ImageTagMirrorSet"),
            "{os}"
        );
        assert!(
            os.contains(
                "    - source: docker.io\n      mirrors:\n        - site.example:5000/docker.io\n"
            ),
            "{os}"
        );
    }
}
