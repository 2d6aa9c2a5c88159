//! Collecting the image references a release needs: from the command line, from image-list
//! files, from a chart rendered by `helm template` (`--chart`), from rendered manifests, and
//! from Helm values files (values.rs).
//!
//! A bad input never hides the others: every problem is recorded with the file (and line, where
//! the parser gives one) at fault, and everything readable still counts. Every reference that
//! is not a pod's own image (indirect.rs) or that had to be guessed from values is logged with
//! where it came from.

use std::collections::BTreeSet;

use std::path::Path;

use yaml_rust2::{Yaml, YamlLoader};

use super::indirect::{self, Verdict};
use super::yaml::{display_input, key, object_name, read_input, scalar, yaml_error};
use crate::reference::Reference;

/// Everything collected from the inputs.
#[derive(Debug, Default)]
pub struct Collected {
    /// Normalised, de-duplicated, sorted.
    pub refs: BTreeSet<Reference>,
    /// Inputs (or values inside them) that could not be used; each makes the run exit 1.
    pub problems: Vec<String>,
    /// Things worth knowing that do not stop anything.
    pub warnings: Vec<String>,
    /// References (or components left out) that depend on what a chart's templates would do:
    /// read from values, not rendered.
    pub guesses: Vec<String>,
    /// Images that no pod template names but that an operator or controller runs.
    pub indirect: Vec<String>,
    /// What was read, besides the inputs given.
    pub notes: Vec<String>,
    /// `--no-indirect`: indirect images are listed, but not exported.
    pub no_indirect: bool,
}

impl Collected {
    pub(super) fn add(&mut self, origin: &str, value: &str) {
        // What a person typed may have spaces around it; a reference itself never has.
        match Reference::parse(value.trim()) {
            Ok(r) => {
                self.refs.insert(r);
            }
            Err(e) => self.problems.push(format!("{origin}: {e}")),
        }
    }

    /// Image references from the command line.
    pub fn add_args(&mut self, images: &[String]) {
        for image in images {
            self.add("command line", image);
        }
    }

    /// A file of references, one per line; `#` starts a comment.
    pub fn add_images_file(&mut self, path: &Path) {
        match read_input(path) {
            Ok(text) => self.add_images_text(&path.display().to_string(), &text),
            Err(e) => self.problems.push(format!("{e:#}")),
        }
    }

    fn add_images_text(&mut self, name: &str, text: &str) {
        for (n, line) in text.lines().enumerate() {
            let line = line
                .split_once('#')
                .map_or(line, |(before, _)| before)
                .trim();
            if !line.is_empty() {
                self.add(&format!("{name}:{}", n + 1), line);
            }
        }
    }

    /// Rendered manifests: every container, init container and ephemeral container image of
    /// every object that holds a pod spec (Pod, Deployment, CronJob, custom resources alike).
    /// `-` reads standard input.
    pub fn add_manifests_file(&mut self, path: &Path) {
        match read_input(path) {
            Ok(text) => self.add_manifests_text(&display_input(path), &text),
            Err(e) => self.problems.push(format!("{e:#}")),
        }
    }

    pub(super) fn add_manifests_text(&mut self, name: &str, text: &str) {
        let docs = match YamlLoader::load_from_str(text) {
            Ok(d) => d,
            Err(e) => return self.problems.push(yaml_error(name, &e)),
        };
        for doc in &docs {
            let what = object_name(doc);
            self.pod_specs(name, &what, is_custom(doc), doc);
            for found in indirect::find(doc) {
                self.add_indirect(name, &found);
            }
        }
    }

    fn add_indirect(&mut self, name: &str, found: &indirect::Candidate) {
        let value = found.value.trim();
        match found.verdict() {
            Verdict::Ignore => {}
            Verdict::LeaveOut(why) => self.warnings.push(format!(
                "{name}: {}: {value}: not taken as an indirect image: {why}",
                found.place
            )),
            Verdict::Take => {
                let Ok(r) = Reference::parse(value) else {
                    return;
                };
                if self.no_indirect {
                    self.indirect.push(format!(
                        "{r} ({name}: {}), left out (--no-indirect)",
                        found.place
                    ));
                } else {
                    self.indirect.push(format!("{r} ({name}: {})", found.place));
                    self.refs.insert(r);
                }
            }
        }
    }

    /// Find pod specs (a map with a `containers` list) at any depth of one object.
    ///
    /// In a custom resource, a container without an image is a warning only: operators take
    /// patches of the containers they add (kube-prometheus-stack's `Prometheus` `containers:`).
    fn pod_specs(&mut self, name: &str, what: &str, custom: bool, node: &Yaml) {
        match node {
            Yaml::Hash(h) => {
                if let Some(Yaml::Array(_)) = h.get(&key("containers")) {
                    for field in ["initContainers", "containers", "ephemeralContainers"] {
                        let Some(Yaml::Array(list)) = h.get(&key(field)) else {
                            continue;
                        };
                        for c in list {
                            let container = scalar(&c["name"]).unwrap_or_else(|| "?".into());
                            match &c["image"] {
                                Yaml::String(s) if !s.trim().is_empty() => {
                                    self.add(&format!("{name}: {what} {field} {container}"), s)
                                }
                                _ if custom => self.warnings.push(format!(
                                    "{name}: {what} {field} {container} has no image (a patch \
                                     of a container its operator adds?)"
                                )),
                                _ => self.problems.push(format!(
                                    "{name}: {what} {field} {container} has no image"
                                )),
                            }
                        }
                    }
                }
                if let Some(Yaml::Array(_)) = h.get(&key("containers")) {
                    self.image_volumes(name, what, node);
                }
                for (k, v) in h {
                    // A List's items, a template's spec: anything may hold a pod spec, except
                    // the container list itself.
                    if !matches!(
                        k.as_str(),
                        Some("containers" | "initContainers" | "ephemeralContainers")
                    ) {
                        self.pod_specs(name, what, custom, v);
                    }
                }
            }
            Yaml::Array(items) => {
                for item in items {
                    let (what, custom) = if item["kind"].as_str().is_some() {
                        (object_name(item), is_custom(item))
                    } else {
                        (what.to_string(), custom)
                    };
                    self.pod_specs(name, &what, custom, item);
                }
            }
            _ => {}
        }
    }
}

impl Collected {
    /// A pod spec's image volumes (Kubernetes 1.31+): images the kubelet pulls for the pod.
    fn image_volumes(&mut self, name: &str, what: &str, spec: &Yaml) {
        for v in spec["volumes"].as_vec().into_iter().flatten() {
            if let Some(r) = v["image"]["reference"]
                .as_str()
                .filter(|r| !r.trim().is_empty())
            {
                let volume = scalar(&v["name"]).unwrap_or_else(|| "?".into());
                self.add(&format!("{name}: {what} volume {volume}"), r);
            }
        }
    }
}

/// An object of a custom resource: not of the core, apps or batch API groups.
fn is_custom(doc: &Yaml) -> bool {
    match doc["apiVersion"].as_str() {
        Some(v) => v
            .split_once('/')
            .is_some_and(|(group, _)| !matches!(group, "apps" | "batch" | "extensions")),
        None => false,
    }
}

impl Collected {
    /// One line per event on stderr: what was read, indirect images, guesses, warnings and
    /// problems, in that order.
    pub fn log(&self) {
        for n in &self.notes {
            eprintln!("offline-images: note: {n}");
        }
        for i in &self.indirect {
            eprintln!("offline-images: indirect: {i}");
        }
        for g in &self.guesses {
            eprintln!("offline-images: guess: {g}");
        }
        if !self.guesses.is_empty() {
            eprintln!(
                "offline-images: {} guess(es) from values above: `export --chart` renders what \
                 the release runs",
                self.guesses.len()
            );
        }
        for w in &self.warnings {
            eprintln!("offline-images: warning: {w}");
        }
        for p in &self.problems {
            eprintln!("offline-images: error: {p}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn refs(c: &Collected) -> Vec<String> {
        let mut v: Vec<String> = c.refs.iter().map(ToString::to_string).collect();
        v.sort();
        v
    }

    fn values(text: &str) -> Collected {
        let mut c = Collected::default();
        super::super::values::add_values_text(&mut c, "values.yaml", text, None, true);
        c
    }

    fn manifests(text: &str) -> Collected {
        let mut c = Collected::default();
        c.add_manifests_text("manifests.yaml", text);
        c
    }

    #[test]
    fn values_strings_and_maps_at_any_depth_are_collected_and_normalised() {
        let c = values(&format!(
            r#"
image: "nginx:1.27"
app:
  image:
    registry: quay.io
    repository: org/app
    tag: 1.10
  sidecars:
    - name: proxy
      image: envoyproxy/envoy:v1.30.1
  pinned:
    image:
      repository: ghcr.io/org/pinned
      tag: "2"
      digest: {DIGEST}
metrics:
  exporter:
    image:
      name: prom/exporter
      tag: 7
  kubectlImage: bitnami/kubectl:1.29
  legacy:
    image:
      image: busybox
      tag: "1.36"
controller:
  repository: registry.k8s.io/ingress-nginx/controller
  tag: v1.10.0
disabled:
  image: ""
"#
        ));
        assert!(c.problems.is_empty(), "{:?}", c.problems);
        assert_eq!(
            refs(&c),
            vec![
                "docker.io/bitnami/kubectl:1.29".to_string(),
                "docker.io/envoyproxy/envoy:v1.30.1".into(),
                "docker.io/library/busybox:1.36".into(),
                "docker.io/library/nginx:1.27".into(),
                "docker.io/prom/exporter:7".into(),
                // As the pod names it: the tag kept beside the digest.
                format!("ghcr.io/org/pinned:2@{DIGEST}"),
                "quay.io/org/app:1.10".into(),
                "registry.k8s.io/ingress-nginx/controller:v1.10.0".into(),
            ]
        );
    }

    #[test]
    fn a_global_image_registry_overrides_the_registry_of_image_maps() {
        for global in [
            "global:\n  imageRegistry: mirror.local:5000\n",
            "global:\n  image:\n    registry: mirror.local:5000\n",
        ] {
            let c = values(&format!(
                "{global}db:\n  image:\n    registry: docker.io\n    repository: bitnami/postgresql\n    tag: \"16\"\n"
            ));
            assert_eq!(
                refs(&c),
                vec!["mirror.local:5000/bitnami/postgresql:16"],
                "{global}"
            );
        }
    }

    #[test]
    fn an_image_map_without_tag_takes_the_app_version_or_is_reported() {
        let text = "image:\n  repository: org/app\n  tag: \"\"\n";
        let mut c = Collected::default();
        super::super::values::add_values_text(&mut c, "values.yaml", text, Some("3.2.1"), true);
        assert_eq!(refs(&c), vec!["docker.io/org/app:3.2.1"]);

        let c = values(text);
        assert!(c.refs.is_empty());
        assert!(
            c.warnings[0].contains("values.yaml: .image: no tag"),
            "{:?}",
            c.warnings
        );
    }

    #[test]
    fn non_image_repositories_and_settings_are_left_alone() {
        let c = values(
            "git:\n  repository: https://github.com/org/repo.git\nhelm:\n  repository: https://charts.example.com\n\
             image:\n  pullPolicy: IfNotPresent\n  repository: org/app\n  tag: v1\n",
        );
        assert!(c.problems.is_empty(), "{:?}", c.problems);
        assert_eq!(refs(&c), vec!["docker.io/org/app:v1"]);
    }

    #[test]
    fn a_bad_image_value_is_reported_with_its_key_path() {
        let c = values("app:\n  image: \"Not A Reference\"\nother:\n  image: nginx\n");
        assert_eq!(refs(&c), vec!["docker.io/library/nginx:latest"]);
        assert_eq!(c.problems.len(), 1);
        assert!(c.problems[0].starts_with("values.yaml: .app.image: invalid image reference"));
    }

    #[test]
    fn malformed_values_name_the_file_and_line_and_other_inputs_still_count() {
        let mut c = Collected::default();
        super::super::values::add_values_text(
            &mut c,
            "broken.yaml",
            "a:\n  b: [1, 2\nc: d\n",
            None,
            true,
        );
        c.add_args(&["redis:7".to_string()]);
        assert_eq!(refs(&c), vec!["docker.io/library/redis:7"]);
        assert_eq!(c.problems.len(), 1);
        assert!(
            c.problems[0].starts_with("broken.yaml:"),
            "{}",
            c.problems[0]
        );
        assert!(
            c.problems[0].contains("not valid YAML"),
            "{}",
            c.problems[0]
        );
    }

    /// One object of every workload kind, in every place a pod spec can be.
    const WORKLOADS: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: debug}
spec:
  containers: [{name: main, image: "pod-main:1"}]
  ephemeralContainers: [{name: dbg, image: "busybox:1.36"}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  template:
    spec:
      initContainers:
        - name: migrate
          image: registry.example.com/org/migrate:2
      containers:
        - name: web
          image: nginx:1.27
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: backup}
spec:
  schedule: "0 3 * * *"
  jobTemplate:
    spec:
      template:
        spec:
          containers:
            - name: backup
              image: org/backup@{DIGEST}
---
# a comment-only document and an empty one
---
apiVersion: v1
kind: List
items:
  - apiVersion: apps/v1
    kind: StatefulSet
    metadata: {name: db}
    spec:
      template:
        spec:
          containers: [{name: db, image: "postgres:16"}]
  - apiVersion: v1
    kind: ReplicationController
    metadata: {name: rc}
    spec:
      template:
        spec:
          containers: [{name: rc, image: "nginx:1.27"}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: cfg}
data:
  image: "handed-to-an-operator:1"
  mode: "not-an-image:1"
---
apiVersion: example.com/v1
kind: Rollout
metadata: {name: custom}
spec:
  template:
    spec:
      containers: [{name: app, image: "quay.io/org/rollout:5"}]
"#;

    #[test]
    fn manifests_yield_every_container_of_every_workload_kind() {
        let c = manifests(&WORKLOADS.replace("{DIGEST}", DIGEST));
        assert!(c.problems.is_empty(), "{:?}", c.problems);
        assert_eq!(
            refs(&c),
            vec![
                "docker.io/library/busybox:1.36".to_string(),
                // indirect: an `image` field outside any container
                "docker.io/library/handed-to-an-operator:1".into(),
                "docker.io/library/nginx:1.27".into(),
                "docker.io/library/pod-main:1".into(),
                "docker.io/library/postgres:16".into(),
                format!("docker.io/org/backup@{DIGEST}"),
                "quay.io/org/rollout:5".into(),
                "registry.example.com/org/migrate:2".into(),
            ]
        );
    }

    #[test]
    fn a_container_without_image_is_reported_with_its_object() {
        let c = manifests(
            "kind: Deployment\nmetadata: {name: web}\nspec:\n  template:\n    spec:\n      containers:\n        - name: app\n",
        );
        assert!(c.refs.is_empty());
        assert_eq!(
            c.problems,
            vec!["manifests.yaml: Deployment/web containers app has no image"]
        );
    }

    #[test]
    fn a_container_patch_without_image_in_a_custom_resource_is_only_a_warning() {
        let c = manifests(
            "apiVersion: monitoring.coreos.com/v1\nkind: Prometheus\nmetadata: {name: k8s}\nspec:\n  \
             image: quay.io/prometheus/prometheus:v2.54.1\n  containers:\n    - name: config-reloader\n      \
             resources: {limits: {cpu: 100m}}\n",
        );
        assert!(c.problems.is_empty(), "{:?}", c.problems);
        assert_eq!(refs(&c), vec!["quay.io/prometheus/prometheus:v2.54.1"]);
        assert!(
            c.warnings[0].contains("Prometheus/k8s containers config-reloader has no image"),
            "{:?}",
            c.warnings
        );
    }

    #[test]
    fn malformed_manifests_name_the_file_and_line() {
        let c = manifests("kind: Pod\nspec:\n  containers:\n  - name: a\n    image: [\n");
        assert_eq!(c.problems.len(), 1);
        assert!(
            c.problems[0].starts_with("manifests.yaml:"),
            "{}",
            c.problems[0]
        );
    }

    #[test]
    fn image_files_skip_comments_and_report_bad_lines_by_number() {
        let mut c = Collected::default();
        c.add_images_text(
            "list.txt",
            "# release 1.2\nnginx:1.27   # web\n\n  redis:7\nBAD:ref\nnginx:1.27\n",
        );
        assert_eq!(
            refs(&c),
            vec!["docker.io/library/nginx:1.27", "docker.io/library/redis:7"]
        );
        assert_eq!(c.problems.len(), 1);
        assert!(
            c.problems[0].starts_with("list.txt:5: "),
            "{}",
            c.problems[0]
        );
    }
}
