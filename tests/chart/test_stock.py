"""imagePull.keepNodesStocked: the import, as the init container of a DaemonSet, so that nodes
that join later get the bundle. Rendered by the real Helm engine and validated against the
Kubernetes schemas; its init container run on the real dockerd as the kubelet would run it,
against the real containerd, and its main container stopped as the kubelet stops it."""

from __future__ import annotations

import uuid

import kubernetes_validate
import pytest

from chartlib import KUBE_VERSION, job, merge, render
from test_job_container import (  # noqa: F401
    CONTAINERDS,
    NAMESPACE,
    bundle,
    containerd,
    docker,
    docker_run_args,
    importer_image,
    job_values,
    pytestmark,
    run_like_kubelet,
)

STOCKED = {"imagePull": {"enabled": True, "keepNodesStocked": True,
                         "imagesVolume": {"type": "nfs", "nfs": {"server": "nfs.site", "path": "/bundles/shop"}}}}


def daemonsets(values: dict) -> list[dict]:
    return [d for d in render(values) if d["kind"] == "DaemonSet"]


def test_keep_nodes_stocked_adds_a_daemonset_whose_init_container_is_the_jobs_importer():
    docs = render(STOCKED)
    assert sorted(d["kind"] for d in docs) == ["DaemonSet", "Job", "ServiceAccount"], docs
    for doc in docs:
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
    (ds,) = [d for d in docs if d["kind"] == "DaemonSet"]
    assert "helm.sh/hook" not in ds["metadata"].get("annotations", {}), "a DaemonSet that stays is no hook"
    pod = ds["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    importer = job(STOCKED)["spec"]["template"]["spec"]["containers"][0]
    assert init == importer, "the DaemonSet imports exactly as the hook Job does"
    (main,) = pod["containers"]
    assert main["args"] == ["wait"] and main["securityContext"]["runAsNonRoot"] is True
    assert pod["restartPolicy"] == "Always"
    # The chart's ServiceAccount is a hook object, deleted after the hook: not used here.
    assert "serviceAccountName" not in pod
    nfs = [v["nfs"] for v in pod["volumes"] if "nfs" in v]
    assert nfs == [{"server": "nfs.site", "path": "/bundles/shop", "readOnly": True}], pod["volumes"]
    selector = ds["spec"]["selector"]["matchLabels"]
    assert selector["app.kubernetes.io/component"] == "image-stock"
    assert all(ds["spec"]["template"]["metadata"]["labels"][k] == v for k, v in selector.items())


def test_keep_nodes_stocked_is_off_by_default_and_ignored_in_mirror_mode():
    assert daemonsets({"imagePull": {"enabled": True}}) == []
    mirror = merge(STOCKED, {"imagePull": {"mode": "mirror",
                                           "mirror": {"registry": "r.site:5000", "upstreams": ["docker.io"]}}})
    assert not [d for d in daemonsets(mirror) if "image-stock" in d["metadata"]["name"]]


def test_with_bootstrap_per_architecture_each_architecture_gets_its_own_daemonset():
    values = merge(STOCKED, {"imagePull": {"bootstrap": {"enabled": True, "architectures": ["amd64", "arm64"]}}})
    found = {d["metadata"]["name"]: d for d in daemonsets(values)}
    assert sorted(found) == ["shop-image-stock-amd64", "shop-image-stock-arm64"]
    selectors = set()
    for arch, ds in (("amd64", found["shop-image-stock-amd64"]), ("arm64", found["shop-image-stock-arm64"])):
        kubernetes_validate.validate(ds, KUBE_VERSION, strict=True)
        pod = ds["spec"]["template"]["spec"]
        assert pod["nodeSelector"]["kubernetes.io/arch"] == arch
        binary = f"/images/.offline-images/linux-{arch}/offline-images"
        assert pod["initContainers"][0]["command"] == [binary]
        # The wait container runs the bundle's binary too, so it mounts the bundle.
        assert pod["containers"][0]["command"] == [binary]
        assert [m["name"] for m in pod["containers"][0]["volumeMounts"]] == ["images"]
        selectors.add(tuple(sorted(ds["spec"]["selector"]["matchLabels"].items())))
    assert len(selectors) == 2, "two DaemonSets with one selector would fight over the same pods"


def test_a_joining_nodes_pod_imports_the_bundle_then_waits_and_stops_cleanly(importer_image, bundle, containerd):  # noqa: F811
    namespace = f"{NAMESPACE}-stock"
    values = merge(job_values(importer_image, bundle, containerd),
                   {"imagePull": {"enabled": True, "keepNodesStocked": True, "containerdNamespace": namespace}})
    (ds,) = daemonsets(values)
    pod = ds["spec"]["template"]["spec"]
    # The init container, as the kubelet runs it on a node that has just joined.
    as_job = {"spec": {"activeDeadlineSeconds": 300, "template": {"spec": {**pod, "containers": pod["initContainers"]}}}}
    code, log = run_like_kubelet(as_job, node=containerd)
    assert code == 0, f"the init container exited {code}:\n{log}"
    assert bundle["ref"] in containerd.ctr_run(namespace, "images", "ls", "-q").split(), log
    # The pod restarted on that node (a reboot): the init container runs again and skips.
    code, log = run_like_kubelet(as_job, node=containerd)
    assert code == 0 and "skipped" in log and "imported " not in log, log
    # The main container runs until the kubelet stops it, then exits 0.
    name = f"chart-test-{uuid.uuid4().hex[:10]}"
    main = {"spec": {"template": {"spec": {**pod, "initContainers": []}}}}
    args = docker_run_args(main, name, node=containerd)
    args.insert(1, "--detach")
    try:
        docker(*args)
        assert docker("inspect", "--format", "{{.State.Running}}", name).stdout.decode().strip() == "true"
        docker("stop", "--time", "10", name)
        code = docker("inspect", "--format", "{{.State.ExitCode}}", name).stdout.decode().strip()
        assert code == "0", docker("logs", name).stderr.decode()
    finally:
        docker("rm", "--force", name, check=False)
