//! `offline-images export --chart` end to end: a chart of the test's own, rendered by the real
//! Helm engine (tests/bin/helm), whose pod image and indirect images (a custom resource's
//! `spec.image`, an operator's `--...-image=` argument) are pulled from the real registry into
//! the bundle.

use std::path::{Path, PathBuf};

use crate::harness::*;

fn helm() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bin/helm")
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// A chart whose operator runs one image and launches two more that no pod template names.
fn operator_chart(dir: &Path, registry: &str) {
    write(
        &dir.join("Chart.yaml"),
        "apiVersion: v2\nname: operated\nversion: 0.1.0\nappVersion: \"1\"\n",
    );
    write(
        &dir.join("values.yaml"),
        &format!(
            "registry: {registry}\noperator:\n  repository: oi-export/chart-operator\n\
             solver: oi-export/chart-solver\nmanaged: oi-export/chart-managed:1\n"
        ),
    );
    write(
        &dir.join("templates/operator.yaml"),
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {{ .Release.Name }}-operator\n\
         spec:\n  selector:\n    matchLabels: {app: operator}\n  template:\n    metadata:\n\
         \x20     labels: {app: operator}\n    spec:\n      containers:\n        - name: operator\n\
         \x20         image: {{ .Values.registry }}/{{ .Values.operator.repository }}:{{ .Chart.AppVersion }}\n\
         \x20         args:\n            - --solver-image={{ .Values.registry }}/{{ .Values.solver }}:{{ .Chart.AppVersion }}\n",
    );
    write(
        &dir.join("templates/managed.yaml"),
        "apiVersion: example.com/v1\nkind: Managed\nmetadata:\n  name: {{ .Release.Name }}\n\
         spec:\n  image: {{ .Values.registry }}/{{ .Values.managed }}\n",
    );
}

#[test]
fn export_of_a_chart_bundles_its_pods_images_and_the_images_its_operator_launches() {
    let reg = &daemons().registry;
    let operator = pushed_image("chart-operator", "hello from the chart's operator");
    let solver = pushed_image("chart-solver", "hello from an image named in an argument");
    let managed = pushed_image("chart-managed", "hello from a custom resource's image");
    let dir = temp_dir("export-chart");
    let chart = dir.join("operated");
    operator_chart(&chart, reg);
    let out_dir = dir.join("images");
    let out = export_cmd(&out_dir)
        .arg("--chart")
        .arg(&chart)
        .arg("--helm")
        .arg(helm())
        .args(["--engine", "docker", "--no-importer-binary"])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "export failed:\n{log}");
    for (image, place) in [
        (&solver, "containers[operator].args --solver-image="),
        (&managed, "Managed/release spec.image"),
    ] {
        let line = log
            .lines()
            .find(|l| l.starts_with(&format!("offline-images: indirect: {} (", image.reference)))
            .unwrap_or_else(|| panic!("no indirect line for {}:\n{log}", image.reference));
        assert!(line.contains(place), "{line}");
    }
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("images.json")).unwrap()).unwrap();
    let mut configs: Vec<String> = index["archives"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            a["images"][0]["config_digest"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    configs.sort();
    let mut want: Vec<String> = [&operator, &solver, &managed]
        .iter()
        .map(|i| i.config_digest.clone())
        .collect();
    want.sort();
    assert_eq!(configs, want, "{log}");
}

#[test]
fn export_of_a_chart_with_no_indirect_lists_but_leaves_out_what_the_operator_launches() {
    let dir = temp_dir("export-chart-no-indirect");
    let chart = dir.join("operated");
    operator_chart(&chart, "registry.example.com");
    let out = run(offline_images()
        .args(["export", "--dry-run", "--no-indirect", "--chart"])
        .arg(&chart)
        .arg("--helm")
        .arg(helm()));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "registry.example.com/oi-export/chart-operator:1\n"
    );
    let log = String::from_utf8(out.stderr).unwrap();
    assert_eq!(log.matches("left out (--no-indirect)").count(), 2, "{log}");
}
