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
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == ["DaemonSet"], kinds
    for doc in docs:
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
    ds = only(docs, "DaemonSet")
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
    etc = tmp_path / "etc-containerd"
    etc.mkdir()
    (etc / "certs.d" / "docker.io").mkdir(parents=True)
    own = b'server = "https://registry-1.docker.io"\n# the node\'s own\n'
    (etc / "certs.d" / "docker.io" / "hosts.toml").write_bytes(own)
    proc, socket = start_cri_containerd(node, etc)
    try:
        repository, tag = importer_image["image"].rsplit(":", 1)
        values = merge(MIRROR, {"imagePull": {"importerImage": {"repository": repository, "tag": tag}}})
        ds = only(render(values), "DaemonSet")
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
