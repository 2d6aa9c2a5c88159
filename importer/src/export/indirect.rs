//! Indirect images in rendered manifests: images no pod template names, but that the release
//! still runs, because an operator or a controller launches them.
//!
//! - an `image` field (or one whose name ends in `Image`) of any object outside a container,
//!   custom resources included (`Prometheus`, `Alertmanager`, `ThanosRuler` `spec.image`), as a
//!   string or as a `registry`/`repository`/`tag`/`digest` map;
//! - container arguments `--NAME=REF`: when NAME contains `image`
//!   (`--acme-http01-solver-image=`), or when REF names a registry host and a tag or digest
//!   (`--prometheus-config-reloader=quay.io/...:v0.75.2`);
//! - env values of variables whose names end in `IMAGE` (and OLM's `RELATED_IMAGE_*`).
//!
//! A pod's image volumes (`volumes[].image.reference`) are the pod's own, so direct.
//!
//! An indirect image is only taken with a tag or digest: without one the operator picks it.

use yaml_rust2::Yaml;

use super::yaml::{last_component_has_tag, object_name, scalar};
use crate::reference::Reference;

/// Where an indirect reference was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Field,
    /// A container argument; `true` when the flag's name contains "image".
    Arg(bool),
    Env,
}

/// One indirect reference candidate.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub value: String,
    /// e.g. `Prometheus/kps spec.image`.
    pub place: String,
    pub kind: Kind,
}

/// What to do with a candidate.
pub enum Verdict {
    Take,
    /// Not an image reference at all: said nowhere.
    Ignore,
    /// Looks like an image, but cannot be pulled as such: warned about.
    LeaveOut(&'static str),
}

impl Candidate {
    pub fn verdict(&self) -> Verdict {
        let v = self.value.trim();
        let parses = Reference::parse(v).is_ok();
        let has_domain = v.split_once('/').is_some_and(|(first, _)| {
            first.contains('.') || first.contains(':') || first == "localhost"
        });
        let pinned = last_component_has_tag(v);
        match self.kind {
            Kind::Arg(false) if !(parses && has_domain && pinned) => Verdict::Ignore,
            // A pinned-looking value whose digest is malformed is said, not dropped unseen.
            _ if !parses && v.contains("@sha") => {
                Verdict::LeaveOut("its digest is not a well-formed sha256, sha384 or sha512 digest")
            }
            _ if !parses => Verdict::Ignore,
            _ if !pinned && v.contains('/') => Verdict::LeaveOut("it has no tag or digest"),
            _ if !pinned => Verdict::Ignore,
            _ => Verdict::Take,
        }
    }
}

/// Every indirect candidate of one document (an object, or a `List` of them).
pub fn find(doc: &Yaml) -> Vec<Candidate> {
    let mut out = Vec::new();
    let mut walk = Walk {
        what: object_name(doc),
        out: &mut out,
    };
    walk.node(doc, &mut Vec::new());
    out
}

struct Walk<'a> {
    what: String,
    out: &'a mut Vec<Candidate>,
}

fn is_image_field(k: &str) -> bool {
    k == "image" || k.ends_with("Image")
}

/// `registry/repository:tag@digest` from a map, when it has a repository.
fn from_map(map: &Yaml) -> Option<String> {
    let repository = scalar(&map["repository"]).filter(|r| !r.is_empty())?;
    let mut s = match scalar(&map["registry"]).filter(|r| !r.is_empty()) {
        Some(r) => format!("{}/{repository}", r.trim_end_matches('/')),
        None => repository,
    };
    if let Some(t) = scalar(&map["tag"]).filter(|t| !t.is_empty()) {
        s = format!("{s}:{t}");
    }
    if let Some(d) = scalar(&map["digest"]).filter(|d| !d.is_empty()) {
        s = format!("{s}@{d}");
    }
    Some(s)
}

impl Walk<'_> {
    fn push(&mut self, value: String, place: String, kind: Kind) {
        self.out.push(Candidate { value, place, kind });
    }

    fn place(&self, path: &[String], leaf: &str) -> String {
        let mut p = path.join(".").replace(".[", "[");
        if !p.is_empty() && !leaf.starts_with(' ') {
            p.push('.');
        }
        p.push_str(leaf);
        format!("{} {p}", self.what)
    }

    fn node(&mut self, node: &Yaml, path: &mut Vec<String>) {
        match node {
            Yaml::Hash(h) => {
                let outer = self.what.clone();
                if node["kind"].as_str().is_some() && !path.is_empty() {
                    self.what = object_name(node);
                }
                let pod = matches!(node["containers"], Yaml::Array(_));
                for (k, v) in h {
                    let Some(k) = k.as_str() else { continue };
                    if pod && matches!(k, "containers" | "initContainers" | "ephemeralContainers") {
                        for c in v.as_vec().into_iter().flatten() {
                            self.container(c, k, path);
                        }
                        continue;
                    }
                    if pod && k == "volumes" {
                        // Image volumes are the pod's own images (collect.rs).
                        continue;
                    }
                    if is_image_field(k) {
                        let value = match v {
                            Yaml::String(s) => Some(s.trim().to_string()),
                            Yaml::Hash(_) => from_map(v),
                            _ => None,
                        };
                        if let Some(value) = value {
                            let place = self.place(path, k);
                            self.push(value, place, Kind::Field);
                            continue;
                        }
                    }
                    path.push(k.to_string());
                    self.node(v, path);
                    path.pop();
                }
                self.what = outer;
            }
            Yaml::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    path.push(format!("[{i}]"));
                    self.node(item, path);
                    path.pop();
                }
            }
            _ => {}
        }
    }

    /// A container's arguments and env; its own `image` is direct, not indirect.
    fn container(&mut self, c: &Yaml, field: &str, path: &mut Vec<String>) {
        let name = scalar(&c["name"]).unwrap_or_else(|| "?".into());
        path.push(format!("{field}[{name}]"));
        for list in ["command", "args"] {
            for arg in c[list].as_vec().into_iter().flatten() {
                let Some((flag, value)) = arg.as_str().and_then(|a| a.split_once('=')) else {
                    continue;
                };
                if !flag.starts_with("--") || value.trim().is_empty() {
                    continue;
                }
                let named = flag.to_ascii_lowercase().contains("image");
                let place = self.place(path, &format!("{list} {flag}="));
                self.push(value.trim().to_string(), place, Kind::Arg(named));
            }
        }
        for var in c["env"].as_vec().into_iter().flatten() {
            let (Some(n), Some(value)) = (var["name"].as_str(), var["value"].as_str()) else {
                continue;
            };
            let upper = n.to_ascii_uppercase();
            if upper.ends_with("IMAGE") || upper.starts_with("RELATED_IMAGE_") {
                let place = self.place(path, &format!("env {n}"));
                self.push(value.trim().to_string(), place, Kind::Env);
            }
        }
        if let Yaml::Hash(h) = c {
            for (k, v) in h {
                let Some(k) = k.as_str() else { continue };
                if !matches!(k, "image" | "command" | "args" | "env" | "name") {
                    path.push(k.to_string());
                    self.node(v, path);
                    path.pop();
                }
            }
        }
        path.pop();
    }
}

#[cfg(test)]
mod tests {
    use super::super::collect::Collected;

    const OPERATOR: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: operator}
spec:
  template:
    spec:
      containers:
        - name: operator
          image: quay.io/prometheus-operator/prometheus-operator:v0.75.2
          args:
            - --kubelet-service=kube-system/kubelet
            - --localhost=127.0.0.1
            - --log-level=info
            - --prometheus-config-reloader=quay.io/prometheus-operator/prometheus-config-reloader:v0.75.2
            - --thanos-default-base-image=quay.io/thanos/thanos
            - --acme-http01-solver-image=quay.io/jetstack/cert-manager-acmesolver:v1.17.0
          env:
            - {name: DEFAULT_PACKAGE_IMAGE, value: "quay.io/jetstack/trust-pkg:20230311.0"}
            - {name: PULL_IMAGE, value: "true"}
            - {name: RELATED_IMAGE_DB, value: "registry.example.com/db:16"}
            - {name: LOG_LEVEL, value: "registry.example.com/not:an-image"}
---
apiVersion: monitoring.coreos.com/v1
kind: Prometheus
metadata: {name: k8s}
spec:
  image: quay.io/prometheus/prometheus:v2.54.1
  version: v2.54.1
---
apiVersion: v1
kind: Pod
metadata: {name: with-image-volume}
spec:
  containers: [{name: app, image: "registry.example.com/app:1"}]
  volumes:
    - name: models
      image: {reference: "registry.example.com/models:2024", pullPolicy: IfNotPresent}
---
apiVersion: example.com/v1
kind: Database
metadata: {name: db}
spec:
  backup:
    image: {registry: ghcr.io, repository: org/backup, tag: "3"}
"#;

    fn collect(no_indirect: bool) -> Collected {
        let mut c = Collected {
            no_indirect,
            ..Collected::default()
        };
        c.add_manifests_text("rendered.yaml", OPERATOR);
        c
    }

    #[test]
    fn operator_arguments_env_and_custom_resources_give_indirect_images_with_their_origin() {
        let c = collect(false);
        let refs: Vec<String> = c.refs.iter().map(ToString::to_string).collect();
        assert_eq!(
            refs,
            vec![
                "ghcr.io/org/backup:3",
                "quay.io/jetstack/cert-manager-acmesolver:v1.17.0",
                "quay.io/jetstack/trust-pkg:20230311.0",
                "quay.io/prometheus-operator/prometheus-config-reloader:v0.75.2",
                "quay.io/prometheus-operator/prometheus-operator:v0.75.2",
                "quay.io/prometheus/prometheus:v2.54.1",
                "registry.example.com/app:1",
                "registry.example.com/db:16",
                "registry.example.com/models:2024",
            ]
        );
        let line = |needle: &str| {
            c.indirect
                .iter()
                .find(|l| l.contains(needle))
                .unwrap_or_else(|| panic!("no indirect line with {needle}: {:?}", c.indirect))
                .clone()
        };
        assert_eq!(
            line("prometheus:v2.54.1"),
            "quay.io/prometheus/prometheus:v2.54.1 (rendered.yaml: Prometheus/k8s spec.image)"
        );
        assert!(line("config-reloader").contains(
            "Deployment/operator spec.template.spec.containers[operator].args --prometheus-config-reloader="
        ));
        assert!(line("trust-pkg").contains("env DEFAULT_PACKAGE_IMAGE"));
        assert!(line("backup").contains("Database/db spec.backup.image"));
        // An image volume is the pod's own image: direct.
        assert!(!c.indirect.iter().any(|l| l.contains("models")));
        assert_eq!(c.indirect.len(), 6, "{:?}", c.indirect);
        // The pod's own image is direct, never listed as indirect.
        assert!(!c
            .indirect
            .iter()
            .any(|l| l.contains("prometheus-operator:")));
        // An image without a tag is named in a warning, not exported.
        assert!(
            c.warnings
                .iter()
                .any(|w| w.contains("--thanos-default-base-image=") && w.contains("no tag")),
            "{:?}",
            c.warnings
        );
        assert!(c.problems.is_empty(), "{:?}", c.problems);
    }

    #[test]
    fn no_indirect_lists_indirect_images_but_leaves_them_out() {
        let c = collect(true);
        let refs: Vec<String> = c.refs.iter().map(ToString::to_string).collect();
        assert_eq!(
            refs,
            vec![
                "quay.io/prometheus-operator/prometheus-operator:v0.75.2",
                "registry.example.com/app:1",
                "registry.example.com/models:2024",
            ]
        );
        assert_eq!(c.indirect.len(), 6);
        assert!(c
            .indirect
            .iter()
            .all(|l| l.ends_with("left out (--no-indirect)")));
    }
}
