"""imagePull.mode mirror: the DaemonSet that points every node's containerd at the site
registry. Rendered by the real Helm engine and validated against the Kubernetes schemas; its
init container run on the real dockerd, as the kubelet would run it, against a containerd of
each version of the matrix with the CRI enabled, on a node view whose /etc/containerd is the
test's."""

from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from chartlib import KUBE_VERSION, merge, notes, only, render
from daemons import Daemons, containerds
from test_job_container import ENV, docker, docker_run_args, importer_image  # noqa: F401

import os

pytestmark = pytest.mark.skipif(
    not all(os.environ.get(name) for name in ENV) and not os.environ.get("CI"),
    reason=f"needs the daemons of scripts/test.sh ({', '.join(ENV)})",
)

CONTAINERDS = containerds()

MIRROR = {
    "imagePull": {
        "enabled": True,
        "mode": "mirror",
        "mirror": {
            "registry": "registry.site.example:5000",
            "prefix": "mirror",
            "upstreams": ["docker.io", "quay.io", "registry.k8s.io", "registry.local:5000"],
        },
    }
}


def test_mirror_mode_renders_a_daemonset_and_no_job_and_it_validates():
    docs = render(MIRROR)
    kinds = sorted(d["kind"] for d in docs if "helm.sh/hook" not in d["metadata"].get("annotations", {}))
    assert kinds == ["DaemonSet"], kinds
    for doc in docs:
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
    (ds,) = [d for d in docs if d["metadata"]["name"] == "shop-image-mirror"]
    pod = ds["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    env = {e["name"]: e["value"] for e in init["env"]}
    assert env["MIRROR_REGISTRY"] == "registry.site.example:5000/mirror"
    assert env["MIRROR_UPSTREAMS"] == "docker.io,quay.io,registry.k8s.io,registry.local:5000"
    assert init["args"][0] == "mirror" and "--host-root=/host" in init["args"]
    (main,) = pod["containers"]
    assert main["args"] == ["wait"]
    assert main["securityContext"]["runAsNonRoot"] is True
    hostpaths = {v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    assert hostpaths == {"/etc/containerd", "/run/containerd/containerd.sock"}, hostpaths
    # Tainted nodes too (the control plane), unless the values say otherwise.
    assert pod["tolerations"] == [{"operator": "Exists"}]
    text = notes(MIRROR)
    assert "from the site\nregistry registry.site.example:5000/mirror first" in text, text
    assert "component=image-mirror -c mirror --prefix" in text, text


def test_mirror_mode_without_a_registry_or_upstreams_fails_the_render_by_name():
    for missing, named in (("registry", "imagePull.mirror.registry"), ("upstreams", "imagePull.mirror.upstreams")):
        values = merge(MIRROR, {})
        values["imagePull"]["mirror"] = {k: v for k, v in MIRROR["imagePull"]["mirror"].items() if k != missing}
        with pytest.raises(Exception, match=named.replace(".", r"\.")):
            render(values)


def node_etc(tmp_path: Path) -> tuple[Path, bytes]:
    """The node's /etc/containerd, its certs.d holding a hosts.toml of the node's own for
    docker.io; returns the directory and that file's bytes."""
    etc = tmp_path / "etc-containerd"
    etc.mkdir()
    (etc / "certs.d" / "docker.io").mkdir(parents=True)
    own = b'server = "https://registry-1.docker.io"\n# the node\'s own\n'
    (etc / "certs.d" / "docker.io" / "hosts.toml").write_bytes(own)
    return etc, own


def start_cri_containerd(node: Daemons, etc: Path) -> tuple[subprocess.Popen, Path]:
    """A containerd of `node`'s version with the CRI enabled, configured by etc/config.toml
    (the node's /etc/containerd/config.toml) with config_path /etc/containerd/certs.d."""
    state = etc.parent / "containerd"
    socket = state / "containerd.sock"
    state.mkdir()
    (etc / "config.toml").write_text(
        f'version = 2\nroot = "{state}/root"\nstate = "{state}/state"\n'
        f'[grpc]\n  address = "{socket}"\n[ttrpc]\n  address = "{socket}.ttrpc"\n'
        '[debug]\n  address = ""\n[metrics]\n  address = ""\n'
        '[plugins."io.containerd.grpc.v1.cri"]\n  restrict_oom_score_adj = true\n'
        '[plugins."io.containerd.grpc.v1.cri".registry]\n  config_path = "/etc/containerd/certs.d"\n'
    )
    binary = Path(node.ctr).parent / "containerd" if "/" in node.ctr else Path("/usr/bin/containerd")
    log = open(state / "containerd.log", "wb")
    proc = subprocess.Popen([str(binary), "--config", str(etc / "config.toml")], stdout=log, stderr=log,
                            env=dict(os.environ, PATH=f"{binary.parent}:{os.environ['PATH']}"))
    for _ in range(300):
        if socket.is_socket():
            break
        time.sleep(0.1)
    assert socket.is_socket(), (state / "containerd.log").read_text(errors="replace")
    return proc, socket


@pytest.mark.parametrize("node", CONTAINERDS, ids=[f"containerd-{d.containerd_release}" for d in CONTAINERDS])
def test_the_daemonsets_init_container_writes_a_hosts_toml_per_upstream_on_the_node(importer_image, node, tmp_path):  # noqa: F811
    etc, own = node_etc(tmp_path)
    proc, socket = start_cri_containerd(node, etc)
    try:
        repository, tag = importer_image["image"].rsplit(":", 1)
        values = merge(MIRROR, {"imagePull": {"importerImage": {"repository": repository, "tag": tag}}})
        (ds,) = [d for d in render(values) if d["metadata"]["name"] == "shop-image-mirror"]
        pod = ds["spec"]["template"]["spec"]
        # The init container, as the kubelet runs it before the main one.
        as_job = {"spec": {"activeDeadlineSeconds": 120,
                           "template": {"spec": {**pod, "containers": pod["initContainers"]}}}}
        name = f"chart-test-{uuid.uuid4().hex[:10]}"
        view = {"/etc/containerd": etc, "/run/containerd/containerd.sock": socket}
        args = docker_run_args(as_job, name, node=node, view=view)
        try:
            docker(*args, check=False, timeout=120)
            code = docker("inspect", "--format", "{{.State.ExitCode}}", name).stdout.decode().strip()
            logs = docker("logs", name)
            log = logs.stdout.decode() + logs.stderr.decode()
        finally:
            docker("rm", "--force", name, check=False)
        assert code == "0", f"{node.label}: exit {code}:\n{log}"
        for upstream in ("docker.io", "quay.io", "registry.k8s.io", "registry.local:5000"):
            hosts = (etc / "certs.d" / upstream / "hosts.toml").read_text()
            path = upstream.replace(":", "_")
            assert f'[host."https://registry.site.example:5000/v2/mirror/{path}"]' in hosts, f"{node.label}: {hosts}"
        assert (etc / "certs.d" / "docker.io" / "hosts.toml.offline-images-backup").read_bytes() == own
        assert "summary: 4 upstream registries pointed at registry.site.example:5000/mirror under /etc/containerd/certs.d" in log, log
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def restore_objects(values: dict) -> dict[str, dict]:
    return {d["kind"]: d for d in render(values) if d["metadata"].get("annotations", {}).get("helm.sh/hook") == "post-delete"}


def test_uninstall_runs_a_post_delete_hook_that_restores_every_node_and_waits_for_each():
    hooks = restore_objects(MIRROR)
    assert sorted(hooks) == ["DaemonSet", "Pod", "Service"], sorted(hooks)
    for doc in hooks.values():
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        assert doc["metadata"]["annotations"]["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
    ds, svc, wait = hooks["DaemonSet"], hooks["Service"], hooks["Pod"]
    # The DaemonSet and its Service first, then the Pod Helm waits for.
    assert [d["metadata"]["annotations"]["helm.sh/hook-weight"] for d in (ds, svc, wait)] == ["0", "0", "1"]
    pod = ds["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    env = {e["name"]: e["value"] for e in init["env"]}
    assert env["MIRROR_REMOVE"] == "true" and env["MIRROR_UPSTREAMS"] == "docker.io,quay.io,registry.k8s.io,registry.local:5000"
    # The restore needs no CA: a Secret deleted with the release must not keep its pods from starting.
    values = merge(MIRROR, {"imagePull": {"mirror": {"caSecret": "site-ca"}}})
    assert "site-ca" not in str(restore_objects(values)["DaemonSet"])
    assert pod["containers"][0]["args"] == ["wait", "--listen", "8070"]
    assert pod["tolerations"] == [{"operator": "Exists"}]
    # The Service finds every restore pod, not-ready ones included.
    assert svc["spec"]["clusterIP"] == "None" and svc["spec"]["publishNotReadyAddresses"] is True
    labels = ds["spec"]["template"]["metadata"]["labels"]
    assert all(labels[k] == v for k, v in svc["spec"]["selector"].items())
    assert svc["spec"]["selector"] == ds["spec"]["selector"]["matchLabels"]
    (waiter,) = wait["spec"]["containers"]
    assert waiter["args"] == ["wait", "--peers=shop-image-mirror-restore.apps.svc:8070", "--timeout=300"]
    assert wait["spec"]["restartPolicy"] == "Never"


def test_restore_on_delete_can_be_turned_off():
    assert restore_objects(merge(MIRROR, {"imagePull": {"mirror": {"restoreOnDelete": False}}})) == {}


def run_container(doc: dict, name: str, node: Daemons, view: dict | None = None, network: str | None = None,
                  args: list[str] | None = None, detach: bool = False) -> tuple[str, str]:
    """Run the pod's one container as the kubelet would; returns its exit code and log."""
    pod = doc["spec"]["template"]["spec"]
    as_job = {"spec": {"activeDeadlineSeconds": 120, "template": {"spec": pod}}}
    run = docker_run_args(as_job, name, node=node, view=view)
    if network:
        run[run.index("--network") + 1] = network
    if args is not None:
        run = run[: len(run) - len(pod["containers"][0]["args"])] + args
    if detach:
        run.insert(1, "--detach")
    docker(*run, check=False, timeout=120)
    code = docker("inspect", "--format", "{{.State.ExitCode}}", name).stdout.decode().strip()
    logs = docker("logs", name)
    return code, logs.stdout.decode() + logs.stderr.decode()


@pytest.mark.parametrize("node", CONTAINERDS[:1], ids=[f"containerd-{d.containerd_release}" for d in CONTAINERDS[:1]])
def test_the_restore_hook_puts_the_nodes_own_files_back_and_its_wait_pod_ends_once_it_answers(importer_image, node, tmp_path):  # noqa: F811
    etc, own = node_etc(tmp_path)
    proc, socket = start_cri_containerd(node, etc)
    names = []
    try:
        repository, tag = importer_image["image"].rsplit(":", 1)
        values = merge(MIRROR, {"imagePull": {"importerImage": {"repository": repository, "tag": tag}}})
        (ds,) = [d for d in render(values) if d["kind"] == "DaemonSet" and "helm.sh/hook" not in d["metadata"].get("annotations", {})]
        hooks = restore_objects(values)
        view = {"/etc/containerd": etc, "/run/containerd/containerd.sock": socket}
        for doc in (ds, hooks["DaemonSet"]):
            pod = doc["spec"]["template"]["spec"]
            init = {"spec": {"template": {"spec": {**pod, "containers": pod["initContainers"]}}}}
            names.append(f"chart-test-{uuid.uuid4().hex[:10]}")
            code, log = run_container(init, names[-1], node, view=view)
            assert code == "0", f"{node.label}: exit {code}:\n{log}"
        # The node's own file is back, byte for byte; mirror's files are gone.
        assert (etc / "certs.d" / "docker.io" / "hosts.toml").read_bytes() == own
        assert not (etc / "certs.d" / "docker.io" / "hosts.toml.offline-images-backup").exists()
        for upstream in ("quay.io", "registry.k8s.io", "registry.local:5000"):
            assert not (etc / "certs.d" / upstream / "hosts.toml").exists(), upstream
        # The restore pod's main container answers on its port; the wait Pod, asking in its
        # network namespace, ends at once. Asking a pod that does not answer, it fails naming it.
        listener = f"chart-test-{uuid.uuid4().hex[:10]}"
        names.append(listener)
        code, log = run_container(hooks["DaemonSet"], listener, node, detach=True)
        waiter = {"spec": {"template": {"spec": hooks["Pod"]["spec"]}}}
        names.append(f"chart-test-{uuid.uuid4().hex[:10]}")
        code, log = run_container(waiter, names[-1], node, network=f"container:{listener}",
                                  args=["wait", "--peers=127.0.0.1:8070", "--timeout=60", "--settle=1"])
        assert code == "0", log
        assert "summary: every pod behind 127.0.0.1:8070 answered" in log, log
        names.append(f"chart-test-{uuid.uuid4().hex[:10]}")
        code, log = run_container(waiter, names[-1], node, network=f"container:{listener}",
                                  args=["wait", "--peers=127.0.0.1:8071", "--timeout=3"])
        assert code == "1", log
        assert "waiting for 127.0.0.1" in log and "summary: FAILED: after 3 s" in log, log
    finally:
        for name in names:
            docker("rm", "--force", name, check=False)
        proc.terminate()
        proc.wait(timeout=30)
