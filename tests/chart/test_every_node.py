"""Every node at once: with allNodes, one hook document (a v1 List) holds one pinned Job per
eligible node, so Helm creates them together and waits for all of them under one timeout.
Rendered for 1, 3 and 50 nodes with NotReady, unreachable, cordoned, tainted, arm64, s390x and
Windows nodes among them (the node lists are supplied as `lookup` would return them)."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
import yaml

import helm_python
from chartlib import KUBE_VERSION, env_of, merge
from test_all_nodes import chart_with_nodes, flat, jobs_in, node, pinned_to

UNREACHABLE = [
    {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/unreachable", "effect": "NoSchedule"},
]
NOT_READY = [{"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"}]
EVERY_TAINT = {"imagePull": {"tolerations": [{"operator": "Exists"}]}}


def rendered(chart, values: dict[str, Any], name: str = "shop") -> tuple[dict[str, str], list[dict[str, Any]], str]:
    """(files as rendered, objects of every document, NOTES.txt) of an allNodes install."""
    with helm_python.Chart.load(chart) as loaded:
        files = loaded.render(merge({"imagePull": {"enabled": True, "allNodes": True}}, values),
                              name=name, namespace="apps", is_install=True)
    docs = [d for path, text in sorted(files.items()) if not path.endswith("NOTES.txt")
            for d in yaml.safe_load_all(text) if d]
    notes = next(text for path, text in files.items() if path.endswith("NOTES.txt"))
    return files, docs, notes


def hook_documents(docs: list[dict[str, Any]], event: str = "pre-install") -> list[dict[str, Any]]:
    """The documents Helm takes as hooks of `event`: Helm reads the annotations of each
    document's own metadata, never those of a List's items."""
    return [d for d in docs if event in d.get("metadata", {}).get("annotations", {}).get("helm.sh/hook", "").split(",")]


def fifty_nodes() -> tuple[list[dict[str, Any]], set[str], dict[str, str]]:
    """50 nodes: (nodes, the names that must get a Job, name -> why it must not)."""
    nodes, eligible, excluded = [], set(), {}
    for i in range(50):
        name = f"node-{i:02d}.site.internal"
        kind = i % 10
        if kind == 1:
            nodes.append(node(name, ready="False", taints=NOT_READY))
            excluded[name] = "NotReady (its Ready condition is False)"
        elif kind == 2:
            nodes.append(node(name, ready="Unknown", taints=UNREACHABLE))
            excluded[name] = "NotReady (its Ready condition is Unknown)"
        elif kind == 3:
            nodes.append(node(name, unschedulable=True))
            excluded[name] = "unschedulable (cordoned)"
        elif kind == 4:
            nodes.append(node(name, taints=[{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]))
            eligible.add(name)  # tolerated by `operator: Exists`
        elif kind == 5:
            nodes.append(node(name, arch="arm64"))
            eligible.add(name)
        elif kind == 6:
            nodes.append(node(name, os_="windows"))
            excluded[name] = "runs windows, not linux"
        elif kind == 7:
            nodes.append(node(name, arch="s390x"))
            excluded[name] = "architecture s390x: the importer has amd64, arm64 (imagePull.architectures)"
        else:
            nodes.append(node(name))
            eligible.add(name)
    return nodes, eligible, excluded


def test_one_node_gets_one_job_in_one_hook_document(tmp_path):
    chart = chart_with_nodes(tmp_path, [node("only")])
    _, docs, notes = rendered(chart, {})
    (hook,) = [d for d in hook_documents(docs) if d["kind"] != "ServiceAccount"]
    assert hook["kind"] == "List" and hook["apiVersion"] == "v1"
    assert [pinned_to(j) for j in hook["items"]] == ["only"]
    assert "ran as 1 hook Job, one per node" in notes


def test_three_nodes_with_one_not_ready_and_one_cordoned(tmp_path):
    nodes = [node("a"), node("b", ready="False", taints=NOT_READY), node("c", unschedulable=True)]
    chart = chart_with_nodes(tmp_path, nodes)
    _, docs, notes = rendered(chart, EVERY_TAINT)
    assert [pinned_to(j) for j in jobs_in(docs)] == ["a"]
    assert "b: NotReady (its Ready condition is False)" in notes
    assert "c: unschedulable (cordoned)" in notes


def test_fifty_nodes_import_at_once_in_one_hook_that_helm_waits_on_as_a_whole(tmp_path):
    nodes, eligible, excluded = fifty_nodes()
    chart = chart_with_nodes(tmp_path, nodes)
    files, docs, notes = rendered(chart, merge(EVERY_TAINT, {"imagePull": {"prune": {"enabled": True}}}))

    # One hook document per event for all the Jobs: Helm creates its objects together and
    # waits on all of them under one --timeout.
    pre = [d for d in hook_documents(docs) if d["kind"] != "ServiceAccount"]
    assert [d["kind"] for d in pre] == ["List"]
    post = [d for d in hook_documents(docs, "post-delete") if d["kind"] != "ServiceAccount"]
    assert [d["kind"] for d in post] == ["List"]
    import_text = next(text for path, text in files.items() if path.endswith("import-job.yaml"))
    assert len([d for d in yaml.safe_load_all(import_text) if d]) == 1

    imports, prunes = jobs_in(docs), jobs_in(docs, "image-prune")
    assert sorted(pinned_to(j) for j in imports) == sorted(eligible)
    assert sorted(pinned_to(j) for j in prunes) == sorted(eligible)
    names = [j["metadata"]["name"] for j in imports + prunes]
    assert len(set(names)) == len(names) == 2 * len(eligible)
    assert all(len(n) <= 63 for n in names)

    # Every node left out is named with its reason, in NOTES and in every Job's log.
    for name, why in excluded.items():
        assert f"{name}: {why}" in notes
    for j in imports:
        left_out = env_of(j)["LEFT_OUT_NODES"].split(";")
        assert sorted(left_out) == sorted(f"{n}: {w}" for n, w in excluded.items())
    assert f"--max-log-requests={len(eligible)}" in notes

    for doc in flat(docs):
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


def test_a_toleration_of_every_taint_does_not_reach_not_ready_or_unreachable_nodes(tmp_path):
    nodes = [node("up"), node("down", ready="False", taints=NOT_READY), node("gone", ready="Unknown", taints=UNREACHABLE)]
    chart = chart_with_nodes(tmp_path, nodes)
    _, docs, notes = rendered(chart, EVERY_TAINT)
    assert [pinned_to(j) for j in jobs_in(docs)] == ["up"]
    assert "gone: NotReady (its Ready condition is Unknown)" in notes


def test_a_node_without_a_ready_condition_is_left_out(tmp_path):
    bare = node("bare")
    bare["status"]["conditions"] = []
    chart = chart_with_nodes(tmp_path, [node("up"), bare])
    _, docs, notes = rendered(chart, {})
    assert [pinned_to(j) for j in jobs_in(docs)] == ["up"]
    assert "bare: NotReady (its Ready condition is missing)" in notes


def test_arm64_nodes_get_a_job_unless_the_importer_lacks_that_architecture(tmp_path):
    chart = chart_with_nodes(tmp_path, [node("x86"), node("arm", arch="arm64")])
    _, docs, _ = rendered(chart, {})
    assert sorted(pinned_to(j) for j in jobs_in(docs)) == ["arm", "x86"]
    _, docs, notes = rendered(chart, {"imagePull": {"architectures": ["amd64"]}})
    assert [pinned_to(j) for j in jobs_in(docs)] == ["x86"]
    assert "arm: architecture arm64: the importer has amd64 (imagePull.architectures)" in notes


def test_a_windows_node_is_left_out_also_when_its_os_is_known_only_from_node_info(tmp_path):
    win = node("win", os_="windows")
    del win["metadata"]["labels"]["kubernetes.io/os"]
    chart = chart_with_nodes(tmp_path, [node("lin"), win])
    _, docs, notes = rendered(chart, {"imagePull": {"nodeSelector": None}})
    assert [pinned_to(j) for j in jobs_in(docs)] == ["lin"]
    assert "win: runs windows, not linux" in notes


def test_the_per_node_jobs_share_one_log_selector_of_this_revision(tmp_path):
    chart = chart_with_nodes(tmp_path, [node("a"), node("b")])
    with helm_python.Chart.load(chart) as loaded:
        files = loaded.render({"imagePull": {"enabled": True, "allNodes": True}}, name="shop", namespace="apps",
                              revision=4, is_upgrade=True)
    text = next(t for p, t in files.items() if p.endswith("import-job.yaml"))
    (lst,) = [d for d in yaml.safe_load_all(text) if d]
    selector = {"app.kubernetes.io/name": "offline-images", "app.kubernetes.io/instance": "shop",
                "app.kubernetes.io/component": "image-import", "offline-images.io/revision": "4"}
    for j in lst["items"]:
        assert selector.items() <= j["spec"]["template"]["metadata"]["labels"].items()
    notes = next(t for p, t in files.items() if p.endswith("NOTES.txt"))
    assert ",".join(f"{k}={v}" for k, v in selector.items()) + " --prefix" in notes


def test_helm_prints_the_log_of_a_single_job_only_so_the_list_carries_no_output_log_policy(tmp_path):
    chart = chart_with_nodes(tmp_path, [node("a")])
    _, docs, _ = rendered(chart, {})
    (lst,) = [d for d in docs if d["kind"] == "List"]
    assert "helm.sh/hook-output-log-policy" not in lst["metadata"]["annotations"]


@pytest.mark.parametrize("values", [{}, {"imagePull": {"nodes": []}}])
def test_all_nodes_under_helm_template_fails_unless_nodes_are_named(values):
    from chartlib import CHART

    with pytest.raises(helm_python.HelmRenderError) as err:
        rendered(CHART, values)
    assert "no node list to be had" in str(err.value)
    _, docs, _ = rendered(CHART, {"imagePull": {"nodes": ["n1", "n2", "n3"]}})
    assert sorted(pinned_to(j) for j in jobs_in(docs)) == ["n1", "n2", "n3"]
