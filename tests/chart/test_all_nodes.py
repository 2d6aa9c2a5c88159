"""imagePull.allNodes (one Job per eligible node), bootstrap mode and the prune hook.

No cluster runs here, so `lookup` returns nothing. The node list is supplied the way `lookup`
would return it: the chart asks for it through one helper, `offline-images.clusterNodes`
(`lookup "v1" "Node" "" ""`, its `items` as JSON), and these tests render a copy of the chart
with one extra template that redefines that helper to return Node objects. The product chart
has no test-only values; the tests check that the override took effect (the Jobs they expect
exist), so they cannot pass on a chart that ignores the node list.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import pytest

from chartlib import CHART, KUBE_VERSION, container, env_of, merge, mount, volume

HOSTNAME = "kubernetes.io/hostname"


def name_hash(base: str, node_name: str) -> str:
    """The 8 hex digits that end a node's Job name: of the sha256 of "<base>/<node>"."""
    return hashlib.sha256(f"{base}/{node_name}".encode()).hexdigest()[:8]


def node(name: str, labels: dict[str, str] | None = None, taints: list[dict[str, str]] | None = None,
         unschedulable: bool = False, ready: str = "True", arch: str = "amd64", os_: str = "linux",
         runtime: str = "") -> dict[str, Any]:
    """A Node object as the API server returns it (and `lookup` passes it on); `runtime` is its
    status.nodeInfo.containerRuntimeVersion (e.g. containerd://1.7.24), left out when empty."""
    doc: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {HOSTNAME: name, "kubernetes.io/os": os_, "kubernetes.io/arch": arch,
                                              **(labels or {})}},
        "spec": {},
        "status": {
            "conditions": [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": ready}],
            "nodeInfo": {"operatingSystem": os_, "architecture": arch},
        },
    }
    if runtime:
        doc["status"]["nodeInfo"]["containerRuntimeVersion"] = runtime
    if taints:
        doc["spec"]["taints"] = taints
    if unschedulable:
        doc["spec"]["unschedulable"] = True
    return doc


def chart_with_nodes(tmp_path: Path, nodes: list[dict[str, Any]]) -> Path:
    """A copy of the chart whose `offline-images.clusterNodes` returns `nodes`, as `lookup` would.
    Helm parses templates of one folder in reverse name order, so `00-...` is parsed last and
    its definition wins over the one in _helpers.tpl."""
    copy = tmp_path / "chart"
    shutil.copytree(CHART, copy)
    (copy / "templates" / "00-test-cluster-nodes.tpl").write_text(
        '{{- define "offline-images.clusterNodes" -}}\n' + json.dumps(nodes) + "\n{{- end -}}\n"
    )
    return copy


def render_with(chart: Path, values: dict[str, Any], name: str = "shop") -> tuple[list[dict[str, Any]], str]:
    import yaml

    with helm_python.Chart.load(chart) as loaded:
        files = loaded.render(merge({"imagePull": {"enabled": True, "allNodes": True}}, values),
                              name=name, namespace="apps", is_install=True)
    docs = []
    notes = ""
    for path, text in sorted(files.items()):
        if path.endswith("NOTES.txt"):
            notes = text
        else:
            docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs, notes


def flat(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The objects of the documents, a List's items in place of the List (as kubectl and Helm build them)."""
    return [item for d in docs for item in (d["items"] if d["kind"] == "List" else [d])]


def jobs_in(docs: list[dict[str, Any]], component: str = "image-import") -> list[dict[str, Any]]:
    """The Jobs of a component, also those inside a List document."""
    return [d for d in flat(docs) if d["kind"] == "Job" and d["metadata"]["labels"]["app.kubernetes.io/component"] == component]


jobs = jobs_in


def pinned_to(job_doc: dict[str, Any]) -> str:
    """The node a Job's pod is pinned to: its node affinity's matchFields on metadata.name."""
    terms = job_doc["spec"]["template"]["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    pins = {tuple(f["values"]) for t in terms for f in t["matchFields"] if f["key"] == "metadata.name"}
    assert len(pins) == 1 and all(f["operator"] == "In" for t in terms for f in t["matchFields"]), terms
    (values,) = pins
    assert len(values) == 1, values
    return values[0]


CONTROL_PLANE_TAINT = {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}


def test_one_import_job_is_rendered_per_node_each_pinned_to_its_node(tmp_path):
    chart = chart_with_nodes(tmp_path, [node("worker-1"), node("worker-2"), node("worker-3")])
    docs, _ = render_with(chart, {})
    found = jobs(docs)
    assert sorted(pinned_to(j) for j in found) == ["worker-1", "worker-2", "worker-3"]
    for j in found:
        n = pinned_to(j)
        assert j["metadata"]["name"] == f"shop-image-import-{n}-{name_hash('shop-image-import', n)}"
        assert j["metadata"]["annotations"]["offline-images.io/node"] == n
        assert j["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
        assert container(j)["args"][0] == "import"
        assert env_of(j)["RELEASE_NAME"] == "shop"
    # One ServiceAccount for all of them.
    assert [d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount"] == ["shop-image-import"]


def test_every_job_and_pod_carries_the_shared_label_the_notes_use_to_read_every_log(tmp_path):
    chart = chart_with_nodes(tmp_path, [node("worker-1"), node("worker-2")])
    docs, notes = render_with(chart, {})
    selector = {"app.kubernetes.io/name": "offline-images", "app.kubernetes.io/instance": "shop",
                "app.kubernetes.io/component": "image-import", "offline-images.io/revision": "1"}
    for j in jobs(docs):
        for labels in (j["metadata"]["labels"], j["spec"]["template"]["metadata"]["labels"]):
            assert selector.items() <= labels.items()
    assert ("kubectl logs -n apps -l app.kubernetes.io/name=offline-images,app.kubernetes.io/instance=shop,"
            "app.kubernetes.io/component=image-import,offline-images.io/revision=1 --prefix --tail=-1") in notes
    assert "ran as 2 hook Jobs, one per node" in notes
    for j in jobs(docs):
        assert j["metadata"]["name"] in notes


def test_job_names_stay_within_63_characters_are_stable_and_distinct_for_long_node_names(tmp_path):
    release = "a" * 40 + "-" + "b" * 12  # the longest release name Helm accepts
    helm_python.validate_release_name(release)
    prefix = "ip-10-0-0-1." + "c" * 70 + ".compute.internal"
    names = [prefix + "-one", prefix + "-two", "w.example"]
    chart = chart_with_nodes(tmp_path, [node(n) for n in names])
    first = {pinned_to(j): j["metadata"]["name"] for j in jobs(render_with(chart, {}, name=release)[0])}
    assert set(first) == set(names)
    assert len(set(first.values())) == 3
    for n, job_name in first.items():
        assert len(job_name) <= 63, job_name
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", job_name), job_name
        assert job_name.endswith(name_hash(f"{release}-image-import"[:63], n))
    # Another node joining, and a different order, change no existing name.
    chart2 = chart_with_nodes(tmp_path / "again", [node("new-node")] + [node(n) for n in reversed(names)])
    second = {pinned_to(j): j["metadata"]["name"] for j in jobs(render_with(chart2, {}, name=release)[0])}
    assert {n: second[n] for n in names} == first
    short = {pinned_to(j): j["metadata"]["name"] for j in jobs(render_with(chart, {})[0])}
    assert short["w.example"] == f"shop-image-import-w-example-{name_hash('shop-image-import', 'w.example')}"


def test_nodes_not_matching_the_node_selector_or_with_untolerated_taints_or_cordoned_get_no_job(tmp_path):
    nodes = [
        node("gpu-1", {"pool": "gpu"}),
        node("gpu-2", {"pool": "gpu"}, taints=[{"key": "gpu", "value": "true", "effect": "NoSchedule"}]),
        node("gpu-3", {"pool": "gpu"}, taints=[{"key": "maintenance", "effect": "NoExecute"}]),
        node("gpu-4", {"pool": "gpu"}, taints=[{"key": "spot", "effect": "PreferNoSchedule"}]),
        node("gpu-5", {"pool": "gpu"}, unschedulable=True),
        node("cpu-1", {"pool": "cpu"}),
        node("plain"),
    ]
    chart = chart_with_nodes(tmp_path, nodes)
    values = {"imagePull": {"nodeSelector": {"pool": "gpu"},
                            "tolerations": [{"key": "gpu", "operator": "Equal", "value": "true", "effect": "NoSchedule"}]}}
    docs, notes = render_with(chart, values)
    # PreferNoSchedule does not keep a pod away; the tolerated gpu taint neither.
    assert sorted(pinned_to(j) for j in jobs(docs)) == ["gpu-1", "gpu-2", "gpu-4"]
    for j in jobs(docs):
        pod = j["spec"]["template"]["spec"]
        assert pod["nodeSelector"] == {"kubernetes.io/os": "linux", "pool": "gpu"}
        assert pod["tolerations"] == values["imagePull"]["tolerations"]
    assert "gpu-3: taint maintenance=:NoExecute is not tolerated (imagePull.tolerations)" in notes
    assert "gpu-5: unschedulable (cordoned)" in notes
    assert 'cpu-1: label pool is not "gpu" (imagePull.nodeSelector)' in notes


def test_a_toleration_of_every_taint_lets_tainted_control_plane_nodes_in(tmp_path):
    nodes = [node("cp-1", taints=[CONTROL_PLANE_TAINT]), node("worker-1")]
    chart = chart_with_nodes(tmp_path, nodes)
    assert sorted(pinned_to(j) for j in jobs(render_with(chart, {})[0])) == ["worker-1"]
    everything = {"imagePull": {"tolerations": [{"operator": "Exists"}]}}
    assert sorted(pinned_to(j) for j in jobs(render_with(chart, everything)[0])) == ["cp-1", "worker-1"]
    by_key = {"imagePull": {"tolerations": [{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists",
                                              "effect": "NoSchedule"}]}}
    assert sorted(pinned_to(j) for j in jobs(render_with(chart, by_key)[0])) == ["cp-1", "worker-1"]
    wrong_effect = {"imagePull": {"tolerations": [{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists",
                                                    "effect": "NoExecute"}]}}
    assert sorted(pinned_to(j) for j in jobs(render_with(chart, wrong_effect)[0])) == ["worker-1"]


def test_the_job_pins_the_node_by_its_name_not_its_hostname_label(tmp_path):
    n = node("node-a.cluster.local")
    n["metadata"]["labels"][HOSTNAME] = "node-a"
    chart = chart_with_nodes(tmp_path, [n])
    (j,) = jobs(render_with(chart, {})[0])
    assert pinned_to(j) == "node-a.cluster.local"
    assert HOSTNAME not in j["spec"]["template"]["spec"].get("nodeSelector", {})
    assert j["metadata"]["annotations"]["offline-images.io/node"] == "node-a.cluster.local"


def test_the_pin_is_added_to_every_required_term_of_the_affinity_value(tmp_path):
    chart = chart_with_nodes(tmp_path, [node("worker-1")])
    term = lambda key: {"matchExpressions": [{"key": key, "operator": "Exists"}]}  # noqa: E731
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term("a"), term("b")]}},
                "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}}
    (j,) = jobs(render_with(chart, {"imagePull": {"affinity": affinity}})[0])
    got = j["spec"]["template"]["spec"]["affinity"]
    terms = got["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert [t["matchExpressions"][0]["key"] for t in terms] == ["a", "b"]
    assert all(t["matchFields"] == [{"key": "metadata.name", "operator": "In", "values": ["worker-1"]}] for t in terms)
    assert got["podAntiAffinity"] == affinity["podAntiAffinity"]
    assert pinned_to(j) == "worker-1"


def test_the_install_fails_with_the_reasons_when_no_node_can_run_the_job(tmp_path):
    chart = chart_with_nodes(tmp_path, [node("cp-1", taints=[CONTROL_PLANE_TAINT])])
    with pytest.raises(helm_python.HelmRenderError) as err:
        render_with(chart, {})
    assert "imagePull.allNodes: none of the 1 nodes can run the import Job" in str(err.value)
    assert "cp-1: taint node-role.kubernetes.io/control-plane=:NoSchedule is not tolerated" in str(err.value)


def test_all_nodes_without_a_node_list_fails_clearly_instead_of_one_unpinned_job():
    # The real chart, rendered as `helm template` and Argo CD do: lookup returns nothing.
    with pytest.raises(helm_python.HelmRenderError) as err:
        render_with(CHART, {})
    message = str(err.value)
    assert "imagePull.allNodes: no node list to be had" in message
    assert "helm template" in message and "Argo CD" in message
    assert "imagePull.nodes" in message


def test_an_explicit_node_list_renders_one_pinned_job_per_node_without_lookup():
    docs, notes = render_with(CHART, {"imagePull": {"nodes": ["worker-1", "worker-2"]}})
    assert sorted(pinned_to(j) for j in jobs(docs)) == ["worker-1", "worker-2"]
    assert "ran as 2 hook Jobs, one per node" in notes
    # Without allNodes too.
    docs, _ = render_with(CHART, {"imagePull": {"allNodes": False, "nodes": ["worker-9"]}})
    assert [pinned_to(j) for j in jobs(docs)] == ["worker-9"]


def test_an_explicit_node_list_is_checked_against_the_cluster_when_lookup_answers(tmp_path):
    chart = chart_with_nodes(tmp_path, [node("worker-1"), node("worker-2", ready="False"), node("worker-3")])
    docs, notes = render_with(chart, {"imagePull": {"nodes": ["worker-1", "worker-2"]}})
    assert [pinned_to(j) for j in jobs(docs)] == ["worker-1"]
    assert "worker-2: NotReady (its Ready condition is False)" in notes
    assert "worker-3" not in notes
    with pytest.raises(helm_python.HelmRenderError) as err:
        render_with(chart, {"imagePull": {"nodes": ["worker-1", "wroker-3"]}})
    assert "imagePull.nodes: wroker-3 is not a node of this cluster (it has worker-1, worker-2, worker-3)" in str(err.value)


def test_per_node_jobs_are_valid_kubernetes_objects(tmp_path):
    chart = chart_with_nodes(tmp_path, [node("worker-1"), node("w" * 200)])
    docs, _ = render_with(chart, {"imagePull": {"prune": {"enabled": True}, "bootstrap": {"enabled": True}}})
    assert len(jobs(docs)) == 2 and len(jobs(docs, "image-prune")) == 2
    for doc in flat(docs):
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


# ---- the runtime of each node ------------------------------------------------------------------


def volumes_of(j: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in j["spec"]["template"]["spec"]["volumes"]}


def test_runtime_auto_gives_each_node_the_runtime_its_kubelet_reports(tmp_path):
    # The chart's runtime auto never found Docker: every Job mounted containerd's socket, and on
    # a cri-dockerd node (whose Docker runs on a containerd that answers too) the images went
    # into containerd's k8s.io namespace, which that kubelet never reads.
    chart = chart_with_nodes(tmp_path, [node("ctrd", runtime="containerd://1.7.24"),
                                        node("dock", runtime="docker://28.5.2"),
                                        node("quiet")])
    found = {pinned_to(j): j for j in jobs(render_with(chart, {"imagePull": {"prune": {"enabled": True}}})[0])}
    assert sorted(found) == ["ctrd", "dock", "quiet"]

    ctrd, dock, quiet = found["ctrd"], found["dock"], found["quiet"]
    assert env_of(ctrd)["IMAGE_RUNTIME"] == "containerd"
    assert volume(ctrd, "runtime-socket")["hostPath"] == {"path": "/run/containerd/containerd.sock", "type": "Socket"}
    assert env_of(ctrd)["CONTAINERD_ADDRESS"] == "/run/containerd/containerd.sock"
    assert set(volumes_of(ctrd)) == {"images", "runtime-socket", "containerd-root", "tmp"}

    assert env_of(dock)["IMAGE_RUNTIME"] == "docker"
    assert volume(dock, "runtime-socket")["hostPath"] == {"path": "/var/run/docker.sock", "type": "Socket"}
    assert set(volumes_of(dock)) == {"images", "runtime-socket", "tmp"}
    assert "CONTAINERD_ADDRESS" not in env_of(dock)

    # A node that does not say: its Job finds the runtime itself, as the single Job does.
    assert env_of(quiet)["IMAGE_RUNTIME"] == "auto"
    assert volume(quiet, "node-run")["hostPath"] == {"path": "/run", "type": "Directory"}
    for j in found.values():
        assert "add" not in container(j)["securityContext"]["capabilities"]


def test_prune_jobs_are_rendered_only_for_nodes_whose_images_carry_labels(tmp_path):
    # Images loaded into Docker carry no labels: prune exits 2 there and fails the uninstall.
    chart = chart_with_nodes(tmp_path, [node("ctrd", runtime="containerd://1.7.24"),
                                        node("dock", runtime="docker://28.5.2")])
    docs, notes = render_with(chart, {"imagePull": {"prune": {"enabled": True}}})
    (pruner,) = jobs(docs, "image-prune")
    assert pinned_to(pruner) == "ctrd" and env_of(pruner)["IMAGE_RUNTIME"] == "containerd"
    assert "No prune Job for dock: its images went into Docker, where they carry no labels." in notes
    single, single_notes = render_with(CHART, {"imagePull": {"allNodes": False, "runtime": "docker",
                                                              "prune": {"enabled": True}}})
    assert jobs(single, "image-prune") == [] and len(jobs(single)) == 1
    assert "No prune Job for the node" in single_notes and "post-delete Job per node" not in single_notes
    only_docker = chart_with_nodes(tmp_path / "docker", [node("dock", runtime="docker://28.5.2")])
    docs, _ = render_with(only_docker, {"imagePull": {"prune": {"enabled": True}}})
    assert jobs(docs, "image-prune") == [] and len(jobs(docs)) == 1
    assert not [d for d in docs if d["kind"] == "List" and d["metadata"]["name"] == "shop-image-prune"]


def test_a_runtime_set_in_the_values_wins_over_what_the_nodes_report(tmp_path):
    chart = chart_with_nodes(tmp_path, [node("dock", runtime="docker://28.5.2")])
    (j,) = jobs(render_with(chart, {"imagePull": {"runtime": "containerd"}})[0])
    assert env_of(j)["IMAGE_RUNTIME"] == "containerd"
    assert volume(j, "runtime-socket")["hostPath"]["path"] == "/run/containerd/containerd.sock"


def test_a_cri_o_node_gets_a_job_that_imports_through_the_nodes_podman_into_containers_storage(tmp_path):
    chart = chart_with_nodes(tmp_path, [node("crio", runtime="cri-o://1.31.1"), node("ctrd", runtime="containerd://2.1.4")])
    docs, notes = render_with(chart, {})
    by_node = {pinned_to(j): j for j in jobs(docs)}
    assert sorted(by_node) == ["crio", "ctrd"]
    assert env_of(by_node["crio"])["IMAGE_RUNTIME"] == "podman"
    assert env_of(by_node["ctrd"])["IMAGE_RUNTIME"] == "containerd"
    assert volume(by_node["crio"], "host-root")["hostPath"]["path"] == "/"
    assert "readOnly" not in mount(by_node["crio"], "/host")
    assert "left out" not in notes


def test_a_node_of_another_runtime_is_left_out_and_named(tmp_path):
    chart = chart_with_nodes(tmp_path, [node("frakti", runtime="frakti://1.0"), node("ctrd", runtime="containerd://2.1.4")])
    docs, notes = render_with(chart, {})
    assert [pinned_to(j) for j in jobs(docs)] == ["ctrd"]
    why = ("frakti: its kubelet uses frakti://1.0 (status.nodeInfo.containerRuntimeVersion); "
           "the importer imports into containerd, Docker and CRI-O only")
    assert why in notes
    assert why in env_of(jobs(docs)[0])["LEFT_OUT_NODES"]


# ---- bootstrap mode ----------------------------------------------------------------------------


def test_bootstrap_runs_the_bundled_importer_in_the_pause_image_that_is_never_pulled(tmp_path):
    chart = chart_with_nodes(tmp_path, [node("worker-1")])
    docs, notes = render_with(chart, {"imagePull": {"bootstrap": {"enabled": True}}})
    (j,) = jobs(docs)
    c = container(j)
    assert c["image"] == "registry.k8s.io/pause:3.9"
    assert c["imagePullPolicy"] == "Never"
    assert c["command"] == ["/images/.offline-images/offline-images"]
    assert c["args"] == ["import"]
    assert mount(j, "/images")["readOnly"] is True
    assert volume(j, "images")["hostPath"]["path"] == "/var/lib/offline-images/images"
    assert "Bootstrap mode" in notes and "registry.k8s.io/pause:3.9" in notes


def test_the_bootstrap_image_is_configurable_for_k3s_and_the_bundle_may_sit_in_a_sub_path(tmp_path):
    values = {"imagePull": {"allNodes": False,
                            "bootstrap": {"enabled": True, "image": "docker.io/rancher/mirrored-pause", "tag": "3.6"},
                            "imagesVolume": {"type": "persistentVolumeClaim", "persistentVolumeClaim": {"claimName": "b"},
                                             "subPath": "site/images"}}}
    (j,) = jobs(render_with(CHART, values)[0])
    c = container(j)
    assert c["image"] == "docker.io/rancher/mirrored-pause:3.6"
    assert mount(j, "/images")["subPath"] == "site/images"
    assert c["command"] == ["/images/.offline-images/offline-images"]


def test_without_bootstrap_the_importer_image_runs_its_own_binary():
    (j,) = jobs(render_with(CHART, {"imagePull": {"allNodes": False}})[0])
    c = container(j)
    assert c["command"] == ["/offline-images"]
    assert c["image"].startswith("ghcr.io/offline-images/offline-images:")


# ---- bootstrap mode in a mixed cluster: one importer binary per architecture --------------------

PER_ARCH = {"enabled": True, "architectures": ["amd64", "arm64"]}


def arch_binary(arch: str) -> str:
    return f"/images/.offline-images/linux-{arch}/offline-images"


def test_a_mixed_cluster_gets_one_job_per_architecture_each_on_its_nodes_with_its_binary():
    pins = {"amd64": "a" * 64, "arm64": "b" * 64}
    values = {"imagePull": {"allNodes": False, "nodeSelector": {"site/pool": "apps"}, "prune": {"enabled": True},
                            "bootstrap": {**PER_ARCH, "binarySha256PerArch": pins}}}
    docs, notes = render_with(CHART, values)
    (imports,) = [d for d in docs if d["kind"] == "List" and d["metadata"]["name"] == "shop-image-import"]
    assert imports["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    for component, base in (("image-import", "shop-image-import"), ("image-prune", "shop-image-prune")):
        found = jobs(docs, component)
        assert [j["metadata"]["name"] for j in found] == [f"{base}-amd64", f"{base}-arm64"]
        for j, arch in zip(found, ("amd64", "arm64")):
            spec = j["spec"]["template"]["spec"]
            # Its architecture's nodes, within the nodeSelector the values give.
            assert spec["nodeSelector"] == {"kubernetes.io/arch": arch, "kubernetes.io/os": "linux",
                                            "site/pool": "apps"}
            assert "affinity" not in spec
            assert container(j)["command"] == [arch_binary(arch)]
            assert container(j)["image"] == "registry.k8s.io/pause:3.9"
            assert env_of(j)["OFFLINE_IMAGES_BINARY_SHA256"] == pins[arch]
            assert j["metadata"]["annotations"]["offline-images.io/arch"] == arch
            # Helm prints no log for a Job inside a List: it asks for none.
            assert "helm.sh/hook-output-log-policy" not in j["metadata"]["annotations"]
    assert "shop-image-import-amd64   a node of amd64" in notes
    assert "shop-image-import-arm64   a node of arm64" in notes
    assert ".offline-images/linux-<arch>/offline-images" in notes


def test_one_architecture_listed_is_one_job_document_with_its_binary_and_helm_prints_its_log():
    values = {"imagePull": {"allNodes": False, "bootstrap": {**PER_ARCH, "architectures": ["arm64"]}}}
    docs, notes = render_with(CHART, values)
    (j,) = [d for d in docs if d["kind"] == "Job"]
    assert j["metadata"]["name"] == "shop-image-import-arm64"
    assert container(j)["command"] == [arch_binary("arm64")]
    assert j["spec"]["template"]["spec"]["nodeSelector"]["kubernetes.io/arch"] == "arm64"
    assert "OFFLINE_IMAGES_BINARY_SHA256" not in env_of(j)
    assert "hook Job shop-image-import-arm64" in notes


def test_with_all_nodes_each_node_runs_its_own_architectures_binary_and_others_are_left_out(tmp_path):
    chart = chart_with_nodes(tmp_path, [node("x-1"), node("a-1", arch="arm64"), node("a-2", arch="arm64")])
    docs, notes = render_with(chart, {"imagePull": {"bootstrap": PER_ARCH}})
    found = {pinned_to(j): j for j in jobs(docs)}
    assert sorted(found) == ["a-1", "a-2", "x-1"]
    for name, j in found.items():
        arch = "amd64" if name.startswith("x") else "arm64"
        assert container(j)["command"] == [arch_binary(arch)]
        # Pinned to its node by name: no architecture selector that a node without the label
        # (its architecture read from status.nodeInfo) would fail.
        assert "kubernetes.io/arch" not in j["spec"]["template"]["spec"].get("nodeSelector", {})
        assert j["metadata"]["name"] == f"shop-image-import-{name}-{name_hash('shop-image-import', name)}"

    docs, notes = render_with(chart, {"imagePull": {"bootstrap": {**PER_ARCH, "architectures": ["amd64"]}}})
    assert [pinned_to(j) for j in jobs(docs)] == ["x-1"]
    why = "a-1: architecture arm64: bootstrap mode runs the bundle's importers for amd64 (imagePull.bootstrap.architectures)"
    assert why in notes
    assert why in env_of(jobs(docs)[0])["LEFT_OUT_NODES"]


def test_without_architectures_every_job_runs_the_bundles_default_binary(tmp_path):
    chart = chart_with_nodes(tmp_path, [node("x-1"), node("a-1", arch="arm64")])
    for j in jobs(render_with(chart, {"imagePull": {"bootstrap": {"enabled": True}}})[0]):
        assert container(j)["command"] == ["/images/.offline-images/offline-images"]


def test_per_architecture_values_that_cannot_work_fail_the_render_by_name():
    cases = [
        ({"bootstrap": {**PER_ARCH, "binarySha256": "a" * 64}}, "binarySha256PerArch"),
        ({"bootstrap": {"enabled": True, "binarySha256PerArch": {"arm64": "a" * 64}}},
         "binarySha256PerArch needs imagePull.bootstrap.architectures"),
        # Named nodes with no node list: their architectures are unknown.
        ({"allNodes": False, "nodes": ["worker-1"], "bootstrap": PER_ARCH}, "each node's architecture is unknown"),
        ({"bootstrap": {**PER_ARCH, "architectures": ["riscv64"]}}, "architectures"),
        ({"bootstrap": {**PER_ARCH, "binarySha256PerArch": {"s390x": "a" * 64}}}, "binarySha256PerArch"),
    ]
    for values, says in cases:
        with pytest.raises(helm_python.HelmError) as err:
            render_with(CHART, {"imagePull": {"allNodes": False, **values}})
        assert says in str(err.value), (values, str(err.value))


# ---- prune -------------------------------------------------------------------------------------


def test_prune_is_off_by_default_and_an_opt_in_post_delete_hook_per_node(tmp_path):
    chart = chart_with_nodes(tmp_path, [node("worker-1"), node("worker-2")])
    assert jobs(render_with(chart, {})[0], "image-prune") == []
    docs, notes = render_with(chart, {"imagePull": {"prune": {"enabled": True}}})
    pruners = jobs(docs, "image-prune")
    assert sorted(pinned_to(j) for j in pruners) == ["worker-1", "worker-2"]
    for j in pruners:
        assert j["metadata"]["name"].startswith("shop-image-prune-worker-")
        assert len(j["metadata"]["name"]) <= 63
        assert j["metadata"]["annotations"]["helm.sh/hook"] == "post-delete"
        assert j["metadata"]["annotations"]["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
        assert container(j)["args"] == ["prune", "--wait-for-containers=120"]
        assert env_of(j)["RELEASE_NAME"] == "shop"
        # Without bootstrap the bundle is not needed to prune: it may be gone from the node.
        assert "images" not in {v["name"] for v in j["spec"]["template"]["spec"]["volumes"]}
    sa = next(d for d in docs if d["kind"] == "ServiceAccount")
    assert sa["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade,post-delete"
    assert "io.offline-images.release.shop" in notes


def test_a_prune_dry_run_only_lists(tmp_path):
    values = {"imagePull": {"allNodes": False, "prune": {"enabled": True, "dryRun": True, "waitSeconds": 0}}}
    (j,) = jobs(render_with(CHART, values)[0], "image-prune")
    assert container(j)["args"] == ["prune", "--dry-run"]


def test_the_schema_rejects_a_bootstrap_pull_policy_that_would_pull():
    with pytest.raises(helm_python.HelmError) as err:
        render_with(CHART, {"imagePull": {"bootstrap": {"enabled": True, "pullPolicy": "Always"}}})
    assert "pullPolicy" in str(err.value)


def test_the_chart_lints_clean_with_every_new_mode_on():
    result = helm_python.lint(CHART, {"imagePull": {"enabled": True, "allNodes": True, "nodes": ["worker-1"],
                                                    "bootstrap": {"enabled": True},
                                                    "prune": {"enabled": True, "dryRun": True}}}, strict=True)
    assert result["errors"] == []
