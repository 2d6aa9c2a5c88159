"""The chart as a dependency of an application chart: the import runs as the parent's hook."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import helm_python
import kubernetes_validate
import pytest
import yaml

from chartlib import CHART, KUBE_VERSION, only, render


@pytest.fixture
def parent(tmp_path: Path) -> Path:
    """A small application chart `shop` that depends on offline-images (copied under charts/)."""
    root = tmp_path / "shop"
    (root / "templates").mkdir(parents=True)
    (root / "Chart.yaml").write_text(
        textwrap.dedent(
            """\
            apiVersion: v2
            name: shop
            version: 1.2.3
            appVersion: "4.5.6"
            dependencies:
              - name: offline-images
                version: 0.1.0
                repository: file://../offline-images
            """
        )
    )
    (root / "values.yaml").write_text(
        textwrap.dedent(
            """\
            image: registry.site.local/shop/web:4.5.6
            offline-images:
              imagePull:
                enabled: false
            """
        )
    )
    (root / "templates" / "deployment.yaml").write_text(
        textwrap.dedent(
            """\
            apiVersion: apps/v1
            kind: Deployment
            metadata:
              name: {{ .Release.Name }}-web
            spec:
              selector:
                matchLabels: {app: web}
              template:
                metadata:
                  labels: {app: web}
                spec:
                  containers:
                    - name: web
                      image: {{ .Values.image }}
                      imagePullPolicy: IfNotPresent
            """
        )
    )
    shutil.copytree(CHART, root / "charts" / "offline-images")
    return root


def test_the_parent_chart_loads_the_dependency(parent):
    with helm_python.Chart.load(parent) as chart:
        assert [d["name"] for d in chart.dependencies] == ["offline-images"]


def test_the_import_job_renders_with_the_parents_release_name(parent):
    docs = render({"offline-images": {"imagePull": {"enabled": True}}}, chart=parent, name="shop-prod", namespace="retail")
    jb = only(docs, "Job")
    assert jb["metadata"]["name"] == "shop-prod-image-import"
    assert jb["metadata"]["namespace"] == "retail"
    assert jb["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert jb["metadata"]["labels"]["app.kubernetes.io/instance"] == "shop-prod"
    assert only(docs, "ServiceAccount")["metadata"]["name"] == "shop-prod-image-import"
    assert only(docs, "Deployment")["metadata"]["name"] == "shop-prod-web"
    for doc in docs:
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


def test_the_parent_renders_no_importer_objects_while_the_import_is_disabled(parent):
    docs = render(None, chart=parent, name="shop-prod")
    assert [d["kind"] for d in docs] == ["Deployment"]


def test_the_parents_values_file_can_enable_the_import(parent):
    values = yaml.safe_load((parent / "values.yaml").read_text())
    values["offline-images"]["imagePull"]["enabled"] = True
    (parent / "values.yaml").write_text(yaml.safe_dump(values))
    docs = render(None, chart=parent, name="shop-prod")
    assert only(docs, "Job")["metadata"]["name"] == "shop-prod-image-import"


def test_the_schema_still_guards_the_values_given_through_the_parent(parent):
    with pytest.raises(helm_python.HelmValuesError) as caught:
        render({"offline-images": {"imagePull": {"enabled": True, "jobs": "many"}}}, chart=parent, name="shop-prod")
    assert "at '/imagePull/jobs': got string, want integer" in str(caught.value)


def test_global_values_of_the_parent_do_not_trip_the_schema(parent):
    docs = render({"global": {"imageRegistry": "r.local"}, "offline-images": {"imagePull": {"enabled": True}}}, chart=parent)
    assert only(docs, "Job")


def test_the_parent_chart_lints_clean_with_its_dependency(parent):
    report = helm_python.lint(
        parent, {"offline-images": {"imagePull": {"enabled": True}}}, strict=True, with_subcharts=True, kube_version=f"v{KUBE_VERSION}"
    )
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and problems == [], report
