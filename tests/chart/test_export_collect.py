"""`offline-images export` collects exactly what a release runs: for each chart of
tests/export-charts, `--chart` and `--manifests` give the images of the pods the real Helm engine
renders plus the chart's indirect images, and `--values` gives the same or names every
difference in its log as a guess. Nothing is pulled: every run is `export --dry-run`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import helm_python
import pytest
import yaml
from helm_python import _native

from chartlib import ROOT, merge

CHARTS = ROOT / "tests" / "export-charts"
HELM_DIR = ROOT / "tests" / "bin"
KUBE_VERSION = "v1.30.2"
RELEASE, NAMESPACE = "shop", "apps"
MIRROR = "mirror.example.com:5000"
PROM_SHA = "3f1a2b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708"

# The images each chart's operators and controllers launch, which no pod template names:
# written out here, from what the charts' templates say, rather than found by the code under test.
INDIRECT: dict[tuple[str, str], set[str]] = {
    ("monitoring", "defaults"): {
        "quay.io/prometheus/prometheus:v2.54.1",
        "quay.io/prometheus/alertmanager:v0.27.0",
        "quay.io/prometheus-operator/prometheus-config-reloader:v0.75.2",
    },
    ("monitoring", "mirror"): {
        f"{MIRROR}/prometheus/prometheus:v2.54.1@sha256:{PROM_SHA}",
        f"{MIRROR}/prometheus/alertmanager:v0.27.0",
        f"{MIRROR}/prometheus-operator/prometheus-config-reloader:v0.75.2",
    },
    ("certs", "defaults"): {
        "quay.io/jetstack/cert-manager-acmesolver:v1.17.0",
        "quay.io/jetstack/trust-pkg-debian-bookworm:20230311.0",
    },
    ("certs", "mirror"): {
        f"{MIRROR}/jetstack/cert-manager-acmesolver:v1.17.0",
        f"{MIRROR}/jetstack/trust-pkg-debian-bookworm:20230311.0",
    },
    ("webapp", "defaults"): set(),
    ("webapp", "mirror"): set(),
}
CASES = sorted(INDIRECT)


def binary() -> str:
    for path in (
        os.environ.get("OI_STATIC_BIN"),
        ROOT / "target" / "x86_64-unknown-linux-musl" / "release" / "offline-images",
        ROOT / "target" / "debug" / "offline-images",
    ):
        if path and Path(path).is_file():
            return str(path)
    pytest.fail("no offline-images binary: run scripts/test.sh, or cargo build first")


def value_files(chart: str, case: str) -> list[Path]:
    files = [CHARTS / chart / "values.yaml"]
    if case == "mirror":
        files.append(CHARTS / chart / "mirror.yaml")
    return files


def engine_render(chart: str, case: str) -> str:
    """The chart rendered by the real Helm engine, as `helm template` prints it."""
    values: dict[str, Any] = {}
    for f in value_files(chart, case):
        values = merge(values, yaml.safe_load(f.read_text()) or {})
    opts = {
        "name": RELEASE,
        "namespace": NAMESPACE,
        "is_install": True,
        "kube_version": KUBE_VERSION,
    }
    with helm_python.Chart.load(CHARTS / chart) as loaded:
        # render() takes no Kubernetes version; the engine's own call does.
        rendered = json.loads(
            _native.call_string("helm_render", loaded._raw(), json.dumps(values), json.dumps(opts))
        )
    return "".join(
        f"---\n# Source: {path}\n{text}\n"
        for path, text in sorted(rendered.items())
        if not path.endswith("NOTES.txt") and text.strip()
    )


def normalize(ref: str) -> str:
    """A reference as Docker and containerd name it: docker.io/library/ and :latest filled in."""
    name, at, digest = ref.strip().partition("@")
    if ":" not in name.rsplit("/", 1)[-1] and not at:
        name += ":latest"
    first = name.split("/", 1)[0]
    if "/" not in name or not ("." in first or ":" in first or first == "localhost"):
        name = f"docker.io/{name}"
    if name.startswith("docker.io/") and name.count("/") == 1:
        name = "docker.io/library/" + name[len("docker.io/") :]
    return name + at + digest


def pod_images(text: str) -> set[str]:
    """Every container, init container and ephemeral container image of every pod spec."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("containers"), list):
                for field in ("initContainers", "containers", "ephemeralContainers"):
                    for c in node.get(field) or []:
                        found.add(normalize(c["image"]))
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    for doc in yaml.safe_load_all(text):
        walk(doc)
    return found


def expected(chart: str, case: str) -> set[str]:
    return pod_images(engine_render(chart, case)) | INDIRECT[(chart, case)]


def export(
    *args: str, stdin: str | None = None, path: str | None = None
) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["OI_PYTHON"] = sys.executable
    env["PATH"] = path if path is not None else f"{HELM_DIR}:{env.get('PATH', '')}"
    return subprocess.run(
        [binary(), "export", "--dry-run", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def chart_args(chart: str, case: str) -> list[str]:
    args = ["--chart", str(CHARTS / chart), "--release-name", RELEASE, "--namespace", NAMESPACE]
    args += ["--kube-version", KUBE_VERSION]
    for f in value_files(chart, case):
        args += ["-f", str(f)]
    return args


def listed(done: subprocess.CompletedProcess) -> set[str]:
    assert done.returncode == 0, done.stderr
    return set(done.stdout.split())


IDS = [f"{chart}-{case}" for chart, case in CASES]


@pytest.mark.parametrize("chart,case", CASES, ids=IDS)
def test_chart_mode_exports_the_rendered_pods_images_plus_the_indirect_ones(chart: str, case: str):
    done = export(*chart_args(chart, case))
    assert listed(done) == expected(chart, case), done.stderr
    for ref in INDIRECT[(chart, case)]:
        assert f"offline-images: indirect: {ref} (helm template " in done.stderr, done.stderr
    assert "\r" not in done.stderr and "\x1b" not in done.stderr


@pytest.mark.parametrize("chart,case", CASES, ids=IDS)
def test_manifests_mode_on_the_engines_render_gives_the_same_images(chart: str, case: str):
    done = export("--manifests", "-", stdin=engine_render(chart, case))
    assert listed(done) == expected(chart, case), done.stderr
    for ref in INDIRECT[(chart, case)]:
        assert f"offline-images: indirect: {ref} (<stdin>: " in done.stderr, done.stderr


def path_of(ref: str) -> str:
    """The repository path without registry, tag or digest: what a guess may get wrong around."""
    name = ref.partition("@")[0]
    last = name.rsplit("/", 1)
    name = name if ":" not in last[-1] else name.rsplit(":", 1)[0]
    return name.split("/", 1)[1]


@pytest.mark.parametrize("chart,case", CASES, ids=IDS)
def test_values_mode_is_equal_or_names_every_difference_as_a_guess(chart: str, case: str):
    args: list[str] = []
    for f in value_files(chart, case):
        args += ["--values", str(f)]
    done = export(*args)
    got, want = listed(done), expected(chart, case)
    guesses = [g for g in done.stderr.splitlines() if g.startswith("offline-images: guess: ")]
    unnamed = [ref for ref in sorted(got - want) if not any(f": {ref}: " in g for g in guesses)]
    assert not unnamed, f"wrong references without a guess line: {unnamed}\n{done.stderr}"
    # A reference the pods run but --values missed must have a guessed stand-in for the same
    # repository, named in the log.
    stand_ins = {path_of(ref) for ref in got - want}
    missed = [ref for ref in sorted(want - got) if path_of(ref) not in stand_ins]
    assert not missed, f"--values missed {missed} without a guess for them\n{done.stderr}"


def test_a_values_mode_guess_names_the_value_path_it_came_from():
    done = export("--values", str(CHARTS / "monitoring" / "values.yaml"))
    guess = next(
        line
        for line in done.stderr.splitlines()
        if "quay.io/prometheus-operator/prometheus-operator:0.75.2" in line
    )
    assert guess.startswith("offline-images: guess: "), guess
    assert ".prometheusOperator.image: " in guess
    assert ".prometheusOperator.image.tag is empty" in guess


def test_no_indirect_lists_the_indirect_images_but_leaves_them_out():
    done = export(*chart_args("monitoring", "defaults"), "--no-indirect")
    assert listed(done) == pod_images(engine_render("monitoring", "defaults"))
    for ref in INDIRECT[("monitoring", "defaults")]:
        assert f"indirect: {ref} (" in done.stderr and "left out (--no-indirect)" in done.stderr


def test_without_helm_on_path_one_line_shows_the_manifests_alternative():
    done = export(*chart_args("webapp", "defaults"), path="/usr/sbin:/usr/bin:/sbin:/bin")
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, lines
    assert "helm is not on PATH" in lines[0], lines[0]
    assert f"helm template {RELEASE} {CHARTS / 'webapp'}" in lines[0], lines[0]
    assert "| offline-images export --manifests -" in lines[0], lines[0]
    assert done.stdout == ""


def test_a_chart_that_does_not_render_names_the_chart_and_exits_1(tmp_path: Path):
    chart = tmp_path / "broken"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: broken\nversion: 1.0.0\n")
    (chart / "templates" / "bad.yaml").write_text("image: {{ .Values.missing.key }}\n")
    done = export("--chart", str(chart))
    assert done.returncode == 1, done.stderr
    assert f"error: {chart}: helm template failed" in done.stderr, done.stderr


def test_values_that_yield_no_image_exit_1_unless_allow_empty(tmp_path: Path):
    values = tmp_path / "values.yaml"
    values.write_text("replicaCount: 2\n")
    done = export("--values", str(values))
    assert done.returncode == 1, done.stderr
    assert f"{values}: no image reference found" in done.stderr, done.stderr
    assert export("--values", str(values), "--allow-empty").returncode == 0


def test_an_oci_chart_is_fetched_by_helm_and_gives_the_same_images(tmp_path: Path):
    registry = os.environ.get("OI_REGISTRY")
    if not registry:
        pytest.skip("OI_REGISTRY is not set: run through scripts/test.sh, which starts a registry")
    archive = helm_python.package(CHARTS / "certs", destination=tmp_path)
    helm_python.push(archive, f"oci://{registry}/oi-export-charts", plain_http=True)
    done = export(
        "--chart",
        f"oci://{registry}/oi-export-charts/certs",
        "--version",
        "v1.17.0",
        # The test registry speaks plain HTTP: helm is given --plain-http for it.
        "--insecure-registry",
        registry,
        *chart_args("certs", "defaults")[2:],
    )
    assert "--plain-http" in done.stderr, done.stderr
    assert listed(done) == expected("certs", "defaults"), done.stderr


def test_a_packaged_subchart_is_read_by_values_mode_as_by_helm(tmp_path: Path):
    chart = tmp_path / "monitoring"
    shutil.copytree(CHARTS / "monitoring", chart)
    sub = chart / "charts" / "kube-state-metrics"
    helm_python.package(sub, destination=chart / "charts")
    shutil.rmtree(sub)
    assert (chart / "charts" / "kube-state-metrics-5.25.0.tgz").is_file()
    ksm = "registry.k8s.io/kube-state-metrics/kube-state-metrics:v2.13.0"
    with_helm = export("--chart", str(chart), "--kube-version", KUBE_VERSION)
    assert ksm in listed(with_helm), with_helm.stderr
    from_values = export("--values", str(chart / "values.yaml"))
    assert ksm in listed(from_values), from_values.stderr


def test_a_site_values_file_alone_is_read_over_the_defaults_of_the_chart_beside_it():
    defaults, site = CHARTS / "webapp" / "values.yaml", CHARTS / "webapp" / "mirror.yaml"
    both = export("--values", str(defaults), "--values", str(site))
    alone = export("--values", str(site))
    assert listed(alone) == listed(both), alone.stderr
    assert f"note: values: reading {defaults} first" in alone.stderr, alone.stderr


def test_export_images_sh_renders_a_chart_it_is_given(tmp_path: Path):
    env = dict(os.environ)
    env.update(
        OI_PYTHON=sys.executable,
        OFFLINE_IMAGES=binary(),
        PATH=f"{HELM_DIR}:{env.get('PATH', '')}",
    )
    done = subprocess.run(
        [str(ROOT / "scripts" / "export-images.sh"), str(CHARTS / "certs"), str(tmp_path / "out")]
        + ["--", "-f", str(CHARTS / "certs" / "mirror.yaml"), "--dry-run"]
        + ["--release-name", RELEASE, "--namespace", NAMESPACE, "--kube-version", KUBE_VERSION],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "offline-images: rendering " in done.stderr, done.stderr
    # The chart's own values.yaml is its default: helm reads it, only the site file is given.
    assert set(done.stdout.split()) == expected("certs", "mirror"), done.stderr


def test_a_chart_whose_dependencies_are_missing_says_what_helm_says_and_exits_1(tmp_path: Path):
    chart = tmp_path / "monitoring"
    shutil.copytree(CHARTS / "monitoring", chart, ignore=shutil.ignore_patterns("charts"))
    done = export("--chart", str(chart))
    assert done.returncode == 1, done.stderr
    error = next(line for line in done.stderr.splitlines() if " error: " in line)
    assert f"error: {chart}: helm template failed" in error, error
    assert "helm dependency build" in error and "kube-state-metrics, grafana" in error, error
    assert done.stdout == ""
