"""Helpers of the chart tests: render the chart with the real Helm v4 engine and pick objects
out of the result."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import helm_python
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "chart"

# The Kubernetes version manifests are validated against (kubernetes-validate ships its
# schemas, so this works offline). The oldest minor release still widely run in 2026.
KUBE_VERSION = "1.30.0"

ENABLED = {"imagePull": {"enabled": True}}


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """A deep merge of two value trees; `extra` wins."""
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def render_files(
    values: dict[str, Any] | None = None,
    *,
    name: str = "shop",
    namespace: str = "apps",
    chart: Path = CHART,
) -> dict[str, str]:
    """Every rendered file (templates and NOTES.txt), as an install would render them."""
    with helm_python.Chart.load(chart) as loaded:
        return loaded.render(values, name=name, namespace=namespace, is_install=True)


def render(
    values: dict[str, Any] | None = None,
    *,
    name: str = "shop",
    namespace: str = "apps",
    chart: Path = CHART,
) -> list[dict[str, Any]]:
    """The Kubernetes objects an install would create (NOTES.txt left out)."""
    docs: list[dict[str, Any]] = []
    for path, text in sorted(render_files(values, name=name, namespace=namespace, chart=chart).items()):
        if path.endswith("NOTES.txt"):
            continue
        docs.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return docs


def notes(values: dict[str, Any] | None = None, *, name: str = "shop", namespace: str = "apps") -> str:
    files = render_files(values, name=name, namespace=namespace)
    return next(text for path, text in files.items() if path.endswith("NOTES.txt"))


def only(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    """The one object of a kind; fails when there is none or several."""
    found = [doc for doc in docs if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {[d['metadata']['name'] for d in found]}"
    return found[0]


def job(values: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
    """The import Job rendered with image import enabled plus `values`."""
    return only(render(merge(ENABLED, values or {}), **kwargs), "Job")


def container(job_doc: dict[str, Any]) -> dict[str, Any]:
    containers = job_doc["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def env_of(job_doc: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container(job_doc).get("env", [])}


def volume(job_doc: dict[str, Any], name: str) -> dict[str, Any]:
    volumes = {v["name"]: v for v in job_doc["spec"]["template"]["spec"]["volumes"]}
    return volumes[name]


def mount(job_doc: dict[str, Any], path: str) -> dict[str, Any]:
    mounts = {m["mountPath"]: m for m in container(job_doc)["volumeMounts"]}
    return mounts[path]


def default_values() -> dict[str, Any]:
    """The chart's default values as Helm reads them."""
    with helm_python.Chart.load(CHART) as loaded:
        return loaded.values
