//! What a node's runtime reads to pull through the site registry, for each kind of cluster:
//! containerd's `hosts.toml` (one per upstream registry), k3s and RKE2's `registries.yaml`, and
//! OpenShift's ImageDigestMirrorSet and ImageTagMirrorSet. Pods keep their image names.

use std::fmt::Write;

use super::site::{upstream_component, Site};

pub use super::files::MARK;

/// Where a Docker Hub image is pulled from when the site registry cannot serve it.
fn upstream_server(upstream: &str) -> String {
    match upstream {
        "docker.io" => "https://registry-1.docker.io".to_string(),
        other => format!("https://{other}"),
    }
}

/// containerd's `certs.d/<upstream>/hosts.toml`: the site registry first (pull and resolve,
/// its own path prefix), the upstream itself as the fallback `server`. `ca`: the CA file as
/// the node's containerd reads it.
pub fn hosts_toml(site: &Site, upstream: &str, ca: Option<&str>) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "{MARK}");
    let _ = writeln!(
        t,
        "# Pulls of {upstream} images try {site} first. `offline-images mirror --remove` puts \
         back the file this one replaced ({}).",
        super::files::BACKUP
    );
    let _ = writeln!(t, "server = {:?}", upstream_server(upstream));
    let _ = writeln!(t);
    let _ = writeln!(t, "[host.{:?}]", site.endpoint(upstream));
    let _ = writeln!(t, "  capabilities = [\"pull\", \"resolve\"]");
    let _ = writeln!(t, "  override_path = true");
    if let Some(ca) = ca {
        let _ = writeln!(t, "  ca = {ca:?}");
    }
    t
}

/// k3s and RKE2's `registries.yaml`: a mirror per upstream whose requests are rewritten
/// under the site registry's path for that upstream. `ca`: the CA file on the node.
pub fn registries_yaml(site: &Site, upstreams: &[String], ca: Option<&str>) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "# /etc/rancher/k3s/registries.yaml (RKE2: /etc/rancher/rke2/registries.yaml) on every \
         node, then restart k3s (RKE2: rke2-server or rke2-agent). Written by offline-images."
    );
    let _ = writeln!(t, "mirrors:");
    for upstream in upstreams {
        let mut rewrite = String::new();
        if !site.prefix.is_empty() {
            rewrite.push_str(&site.prefix);
            rewrite.push('/');
        }
        rewrite.push_str(&upstream_component(upstream));
        let _ = writeln!(t, "  {upstream:?}:");
        let _ = writeln!(t, "    endpoint:");
        let _ = writeln!(t, "      - {:?}", site.base_url());
        let _ = writeln!(t, "    rewrite:");
        let _ = writeln!(t, "      \"^(.*)$\": \"{rewrite}/$1\"");
    }
    if let Some(ca) = ca {
        let _ = writeln!(t, "configs:");
        let _ = writeln!(t, "  {:?}:", site.host);
        let _ = writeln!(t, "    tls:");
        let _ = writeln!(t, "      ca_file: {ca:?}");
    }
    t
}

/// OpenShift's ImageDigestMirrorSet and ImageTagMirrorSet (two YAML documents): every
/// upstream mirrored to its path in the site registry. The cluster's image configuration
/// must trust the site's CA (`additionalTrustedCA`), which these do not carry.
#[cfg_attr(not(feature = "export"), allow(dead_code))] // push --print-mirror-config openshift prints it
pub fn openshift_mirror_sets(site: &Site, upstreams: &[String]) -> String {
    let mut t = String::new();
    for (kind, list) in [
        ("ImageDigestMirrorSet", "imageDigestMirrors"),
        ("ImageTagMirrorSet", "imageTagMirrors"),
    ] {
        let _ = writeln!(t, "---");
        let _ = writeln!(t, "apiVersion: config.openshift.io/v1");
        let _ = writeln!(t, "kind: {kind}");
        let _ = writeln!(t, "metadata:");
        let _ = writeln!(t, "  name: offline-images");
        let _ = writeln!(t, "spec:");
        let _ = writeln!(t, "  {list}:");
        for upstream in upstreams {
            let mut mirror = site.host.clone();
            if !site.prefix.is_empty() {
                mirror.push('/');
                mirror.push_str(&site.prefix);
            }
            mirror.push('/');
            mirror.push_str(&upstream_component(upstream));
            let _ = writeln!(t, "  - source: {upstream}");
            let _ = writeln!(t, "    mirrors:");
            let _ = writeln!(t, "    - {mirror}");
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site() -> Site {
        Site::parse("site.example:5000/mirror", false).unwrap()
    }

    #[test]
    fn hosts_toml_sends_pulls_to_the_site_registry_under_the_upstreams_path() {
        let t = hosts_toml(
            &site(),
            "docker.io",
            Some("/etc/containerd/certs.d/docker.io/ca.crt"),
        );
        assert!(t.starts_with(MARK), "{t}");
        assert!(
            t.contains("server = \"https://registry-1.docker.io\"\n"),
            "{t}"
        );
        assert!(
            t.contains("[host.\"https://site.example:5000/v2/mirror/docker.io\"]\n  capabilities = [\"pull\", \"resolve\"]\n  override_path = true\n  ca = \"/etc/containerd/certs.d/docker.io/ca.crt\"\n"),
            "{t}"
        );
        let t = hosts_toml(&site(), "registry.local:5000", None);
        assert!(
            t.contains("server = \"https://registry.local:5000\""),
            "{t}"
        );
        assert!(t.contains("/v2/mirror/registry.local_5000\"]"), "{t}");
        assert!(!t.contains("ca ="), "{t}");
    }

    #[test]
    fn registries_yaml_rewrites_each_upstream_under_the_site_path() {
        let ups = vec!["docker.io".to_string(), "quay.io".to_string()];
        let t = registries_yaml(&site(), &ups, Some("/etc/rancher/k3s/site-ca.crt"));
        assert!(t.contains("  \"docker.io\":\n    endpoint:\n      - \"https://site.example:5000\"\n    rewrite:\n      \"^(.*)$\": \"mirror/docker.io/$1\"\n"), "{t}");
        assert!(t.contains("\"mirror/quay.io/$1\""), "{t}");
        assert!(t.contains("configs:\n  \"site.example:5000\":\n    tls:\n      ca_file: \"/etc/rancher/k3s/site-ca.crt\"\n"), "{t}");
    }

    #[test]
    fn openshift_gets_a_digest_and_a_tag_mirror_set() {
        let t = openshift_mirror_sets(&site(), &["quay.io".to_string()]);
        assert_eq!(t.matches("kind: ImageDigestMirrorSet").count(), 1, "{t}");
        assert_eq!(t.matches("kind: ImageTagMirrorSet").count(), 1, "{t}");
        assert_eq!(
            t.matches(
                "  - source: quay.io\n    mirrors:\n    - site.example:5000/mirror/quay.io\n"
            )
            .count(),
            2,
            "{t}"
        );
    }
}
