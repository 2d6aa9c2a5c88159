"""The runtime the rendered Job imports into, run as the kubelet would run it (see
test_job_container.py) against node views: the node's /run as a directory holding the sockets
that node has, hard links to the sockets of the default containerd and of the dockerd that
scripts/test.sh runs on it. A node that runs its kubelet on Docker through cri-dockerd has
Docker, Docker's containerd and the cri-dockerd socket; cri-dockerd does not run here, so its
socket is a listening unix socket bound at its path (the importer and the chart only look for
it). What the kubelet reads is asked of the runtime itself: `docker image inspect` for Docker,
`ctr images ls` in the Job's containerd namespace for containerd.

Also: the importer's yes/no environment variables as an operator sets them with extraEnv.
"""

from __future__ import annotations

import gzip
import os
import shutil
import socket
from pathlib import Path
from typing import Any

import pytest

from chartlib import job, merge, render
from daemons import Daemons, matrix
from test_all_nodes import chart_with_nodes, jobs_in, node, pinned_to
from test_job_container import NAMESPACE, RUN_ID, docker, importer_image, job_values, run_like_kubelet  # noqa: F401

ENV = ("OI_DOCKER_HOST", "OI_DOCKER_CLI", "OI_STATIC_BIN", "OI_CONTAINERD_SOCK")
_MISSING = [name for name in ENV if not os.environ.get(name)]
if _MISSING:
    # In CI a missing daemon is a failure, never a skip that reports success.
    if os.environ.get("CI"):
        raise RuntimeError(f"the runtime tests need the daemons of scripts/test.sh: {', '.join(_MISSING)} not set")
    pytest.skip(f"needs the daemons of scripts/test.sh ({', '.join(_MISSING)})", allow_module_level=True)

# The default pair: containerd and the dockerd that runs on it (and on whose behalf it answers).
PAIR: Daemons = matrix()[0]

# Which sockets each node view has, and which runtime its kubelet reads.
VIEWS = {
    "docker-only": (("docker",), "docker"),
    "docker-containerd-and-cri-dockerd": (("containerd", "docker", "cri-dockerd"), "docker"),
    "containerd-only": (("containerd",), "containerd"),
}


def reported_runtime(kubelet_reads: str) -> str:
    """status.nodeInfo.containerRuntimeVersion of such a node (cri-dockerd reports docker)."""
    if kubelet_reads == "docker":
        return f"docker://{PAIR.docker_release}"
    return f"containerd://{PAIR.containerd_release}"


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture(params=list(VIEWS))
def node_view(request, tmp_path):
    """A node's /run holding the sockets of one view; yields (name, run directory)."""
    name = request.param
    run = tmp_path / "node-run"
    (run / "containerd").mkdir(parents=True)
    sockets, _ = VIEWS[name]
    listening = []
    if "containerd" in sockets:
        os.link(PAIR.containerd_sock, run / "containerd" / "containerd.sock")
    if "docker" in sockets:
        os.link(PAIR.docker_host.removeprefix("unix://"), run / "docker.sock")
    if "cri-dockerd" in sockets:
        cri = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        cri.bind(str(run / "cri-dockerd.sock"))
        cri.listen(1)
        listening.append(cri)
    yield name, run
    for s in listening:
        s.close()


@pytest.fixture
def fresh_bundle(tmp_path, request) -> dict[str, Any]:
    """A bundle of one image built here and then removed from the dockerd, so that finding it
    there afterwards means the Job imported it."""
    context = tmp_path / "context"
    context.mkdir()
    shutil.copy("/bin/busybox", context / "busybox")
    (context / "Dockerfile").write_text('FROM scratch\nCOPY busybox /bin/busybox\nCMD ["/bin/busybox", "true"]\n')
    tag = f"{RUN_ID}-{abs(hash(request.node.name)) % 10**8}"
    ref = f"chart-test.local/runtime-choice:{tag}"
    docker("build", "--quiet", "--tag", ref, str(context))
    bundle_dir = tmp_path / "bundle"
    bundle_dir.mkdir()
    (bundle_dir / "runtime-choice.tar").write_bytes(docker("save", ref).stdout)
    docker("rmi", "--force", ref)
    yield {"dir": bundle_dir, "ref": ref}
    PAIR.docker_run("rmi", "--force", ref, check=False)


def values_for(importer: dict[str, Any], bundle: dict[str, Any], namespace: str) -> dict[str, Any]:
    """The chart's defaults (runtime auto, native client, no socket named), pointed at the
    bundle, a containerd namespace of the test's own and the test containerd's root."""
    repository, tag = importer["image"].rsplit(":", 1)
    return {"imagePull": {"enabled": True, "importerImage": {"repository": repository, "tag": tag},
                          "imagesPath": str(bundle["dir"]), "containerdNamespace": namespace,
                          "containerdRoot": PAIR.containerd_root, "activeDeadlineSeconds": 300,
                          "requiredImages": [bundle["ref"]]}}


@pytest.mark.parametrize("mode", ["one-job", "per-node"])
def test_runtime_auto_finds_docker_and_imports_where_the_kubelet_reads(importer_image, fresh_bundle, node_view,  # noqa: F811
                                                                       tmp_path, mode):
    # It never found Docker: the Job mounted containerd's socket alone and said
    # IMAGE_RUNTIME=containerd, so a Docker-only node never started the pod and a cri-dockerd
    # node got the images in containerd's k8s.io, which its kubelet never reads.
    view_name, run = node_view
    _, kubelet_reads = VIEWS[view_name]
    namespace = f"{NAMESPACE}-{view_name}-{mode}"
    values = values_for(importer_image, fresh_bundle, namespace)
    if mode == "one-job":
        jb = job(values)
    else:
        chart = chart_with_nodes(tmp_path, [node("node-1", runtime=reported_runtime(kubelet_reads))])
        (jb,) = jobs_in(render(merge(values, {"imagePull": {"allNodes": True}}), chart=chart))
        assert pinned_to(jb) == "node-1"
    before = listing(run)
    code, log = run_like_kubelet(jb, view={"/run": run, "/var/run": run})
    assert code == 0, f"the Job's container exited {code}:\n{log}"
    ref = fresh_bundle["ref"]
    in_docker = PAIR.docker_run("image", "inspect", ref, check=False).returncode == 0
    in_containerd = ref in PAIR.ctr_run(namespace, "images", "ls", "-q").split()
    assert (in_docker, in_containerd) == (kubelet_reads == "docker", kubelet_reads == "containerd"), log
    assert f"{kubelet_reads} {PAIR.docker_release if kubelet_reads == 'docker' else PAIR.containerd_release}" in log, log
    if mode == "one-job" and view_name == "docker-containerd-and-cri-dockerd":
        assert "a cri-dockerd socket shows kubelet uses Docker's images" in log, log
    # The node's /run is as it was: nothing was created there.
    assert listing(run) == before


def strict_bundle(tmp_path: Path, good: dict[str, Any]) -> Path:
    """The fresh bundle plus an archive cut short: it fails, and only strict makes that exit 1."""
    bundle_dir = good["dir"]
    whole = gzip.compress((bundle_dir / "runtime-choice.tar").read_bytes(), compresslevel=1)
    (bundle_dir / "cut-short.tar.gz").write_bytes(whole[: len(whole) // 2])
    return bundle_dir


@pytest.mark.parametrize(
    ("value", "code"),
    [("0", 0), ("", 0), ("false", 0), ("no", 0), ("1", 1), ("yes", 1), ("maybe", 2)],
    ids=["0", "empty", "false", "no", "1", "yes", "maybe"],
)
def test_import_strict_0_or_empty_in_extra_env_no_longer_fails_the_job_with_exit_2(importer_image, fresh_bundle,  # noqa: F811
                                                                                  tmp_path, value, code):
    strict_bundle(tmp_path, fresh_bundle)
    namespace = f"{NAMESPACE}-strict-env"
    values = merge(job_values(importer_image, {"dir": fresh_bundle["dir"]}),
                   {"imagePull": {"containerdNamespace": namespace, "extraEnv": [{"name": "IMPORT_STRICT", "value": value}]}})
    jb = job(values)
    assert "--strict" not in jb["spec"]["template"]["spec"]["containers"][0]["args"]
    got, log = run_like_kubelet(jb)
    assert got == code, f"IMPORT_STRICT={value!r}: exited {got}:\n{log}"
    if code == 2:
        assert 'IMPORT_STRICT="maybe" is neither yes nor no: 1, true, yes or on turn it on' in log, log
    else:
        assert "FAILED    cut-short.tar.gz" in log, log
        assert fresh_bundle["ref"] in PAIR.ctr_run(namespace, "images", "ls", "-q").split(), log
