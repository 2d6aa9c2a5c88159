"""The rendered import Job's container, run as the kubelet would run it, on the real dockerd
against the real containerd that scripts/test.sh starts.

No Kubernetes runs here, so `run_like_kubelet` maps the pod spec onto `docker run`: command,
args and env as rendered; hostPath volumes become bind mounts (the node root `/` is this
machine's `/`, read-only; the images hostPath is a test bundle directory); emptyDir becomes a
tmpfs; the security context becomes user, read-only root filesystem, dropped and added
capabilities, no-new-privileges and the default seccomp profile; limits become docker limits;
the termination message file is a host file bind-mounted at terminationMessagePath, which the
kubelet reads back into the pod's status after the container ends.

The Job runs on the default dockerd (the kubelet's runtime) and imports into the runtime it
is pointed at: every test that imports takes `containerd` or `docker`, one parameter per
version of the matrix scripts/test.sh started (tests/chart/daemons.py). A node of that
version has that version's `ctr` at /usr/bin/ctr, so the node root the pod sees carries it.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from chartlib import CHART, ROOT, container, job, merge, render
from daemons import Daemons, containerds, matrix

ENV = ("OI_DOCKER_HOST", "OI_DOCKER_CLI", "OI_STATIC_BIN", "OI_NODE_BIN", "OI_CONTAINERD_SOCK")
pytestmark = pytest.mark.skipif(
    not all(os.environ.get(name) for name in ENV),
    reason=f"needs the daemons of scripts/test.sh ({', '.join(ENV)})",
)

CONTAINERDS = containerds()
DOCKERS = matrix()

RUN_ID = uuid.uuid4().hex[:10]
VERSION = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
NAMESPACE = f"chart-test-{RUN_ID}"


def docker(*args: str, input: bytes | None = None, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, DOCKER_HOST=os.environ["OI_DOCKER_HOST"], DOCKER_BUILDKIT="0")
    result = subprocess.run(
        [os.environ["OI_DOCKER_CLI"], *args], input=input, capture_output=True, env=env, timeout=timeout
    )
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed ({result.returncode}): {result.stderr.decode(errors='replace')}")
    return result


@pytest.fixture(params=CONTAINERDS, ids=[f"containerd-{d.containerd_release}" for d in CONTAINERDS])
def containerd(request) -> Daemons:
    """Each containerd of the version matrix, the one the Job imports into."""
    return request.param


@pytest.fixture(params=DOCKERS, ids=[d.docker_id for d in DOCKERS])
def target_docker(request) -> Daemons:
    """Each dockerd of the version matrix (and its image store), the one the Job imports into."""
    return request.param


@pytest.fixture(scope="module")
def importer_image(tmp_path_factory) -> dict[str, Any]:
    """The importer image, built from the Dockerfile by scripts/build-image.sh around OI_NODE_BIN."""
    out = tmp_path_factory.mktemp("dist")
    image = f"chart-test.local/offline-images:{RUN_ID}"
    env = dict(
        os.environ,
        DOCKER_HOST=os.environ["OI_DOCKER_HOST"],
        DOCKER=os.environ["OI_DOCKER_CLI"],
        BINARY=os.environ["OI_NODE_BIN"],
        IMAGE=image,
        OUTPUT_DIR=str(out),
    )
    result = subprocess.run(
        [str(ROOT / "scripts" / "build-image.sh")], capture_output=True, text=True, env=env, timeout=600
    )
    assert result.returncode == 0, f"build-image.sh failed:\n{result.stderr}"
    yield {"image": image, "dist": out, "stdout": result.stdout}
    docker("rmi", "--force", image, check=False)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> dict[str, Any]:
    """A bundle directory holding one tiny image (FROM scratch, /bin/busybox) as .tar.gz."""
    context = tmp_path_factory.mktemp("busybox-context")
    shutil.copy("/bin/busybox", context / "busybox")
    (context / "Dockerfile").write_text('FROM scratch\nCOPY busybox /bin/busybox\nCMD ["/bin/busybox", "true"]\n')
    ref = f"chart-test.local/busybox:{RUN_ID}"
    docker("build", "--quiet", "--tag", ref, str(context))
    directory = tmp_path_factory.mktemp("bundle")
    saved = docker("save", ref).stdout
    (directory / "busybox.tar.gz").write_bytes(gzip.compress(saved, compresslevel=1))
    yield {"dir": directory, "ref": ref, "tar": saved}
    docker("rmi", "--force", ref, check=False)


def quantity(value: str | int | float) -> float:
    """A Kubernetes quantity ("512Mi", "100m", "1") as a number."""
    text = str(value)
    suffixes = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "m": 10**-3}
    match = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", text)
    assert match, f"not a quantity: {text}"
    number, suffix = float(match.group(1)), match.group(2)
    return number * suffixes[suffix] if suffix else number


def on_machine(node_path: str, view: dict[str, Path] | None) -> Path:
    """Where a node's path is on this machine: under the directory a node view gives for the
    longest prefix it names (e.g. {"/run": <a directory holding that node's sockets>}), else
    the same path (this machine stands for the node)."""
    for prefix in sorted(view or {}, key=len, reverse=True):
        if node_path == prefix or node_path.startswith(prefix.rstrip("/") + "/"):
            return view[prefix] / node_path[len(prefix):].lstrip("/")
    return Path(node_path)


def docker_run_args(job_doc: dict[str, Any], name: str, *, image: str | None = None, command: list[str] | None = None,
                    termination_log: Path | None = None, node: Daemons | None = None,
                    view: dict[str, Path] | None = None) -> list[str]:
    """`docker run` arguments that run the Job's one container as the kubelet would, on a
    node whose runtime is `node` (default: the default pair) and whose paths are `view` (see
    `on_machine`; default: this machine's)."""
    pod = job_doc["spec"]["template"]["spec"]
    c = container(job_doc)
    assert pod.get("hostNetwork") in (None, False) and pod.get("hostPID") in (None, False)
    args = ["run", "--name", name, "--network", "none"]

    pull = {"IfNotPresent": "missing", "Never": "never", "Always": "always"}[c["imagePullPolicy"]]
    args += ["--pull", pull]

    sc = {**pod.get("securityContext", {}), **c.get("securityContext", {})}
    if "runAsUser" in sc:
        args += ["--user", f"{sc['runAsUser']}:{sc.get('runAsGroup', 0)}"]
    if sc.get("privileged"):
        args.append("--privileged")
    if sc.get("readOnlyRootFilesystem"):
        args.append("--read-only")
    if sc.get("allowPrivilegeEscalation") is False:
        args += ["--security-opt", "no-new-privileges"]
    seccomp = sc.get("seccompProfile", {}).get("type", "RuntimeDefault")
    assert seccomp in ("RuntimeDefault", "Unconfined"), f"unsupported seccomp profile {seccomp}"
    if seccomp == "Unconfined":
        args += ["--security-opt", "seccomp=unconfined"]
    for cap in sc.get("capabilities", {}).get("drop", []):
        args += ["--cap-drop", cap]
    for cap in sc.get("capabilities", {}).get("add", []):
        args += ["--cap-add", cap]

    limits = c.get("resources", {}).get("limits", {})
    if "memory" in limits:
        args += ["--memory", str(int(quantity(limits["memory"])))]
    if "cpu" in limits:
        args += ["--cpus", f"{quantity(limits['cpu']):g}"]

    for env in c.get("env", []):
        assert "valueFrom" not in env, f"env {env['name']}: valueFrom needs a Kubernetes API"
        args += ["--env", f"{env['name']}={env.get('value', '')}"]
    # The test containerd's root is on this machine's shared disk, however full it is: the
    # importer's disk preflight (its own tests use a tmpfs) refuses only what would overfill it.
    if not any(e["name"] == "DISK_MAX_USED" for e in c.get("env", [])):
        args += ["--env", "DISK_MAX_USED=100"]

    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for m in c.get("volumeMounts", []):
        v = volumes[m["name"]]
        if "hostPath" in v:
            source = on_machine(v["hostPath"]["path"], view) / m.get("subPath", "")
            if v["hostPath"].get("type") == "Directory":
                assert source.is_dir(), f"hostPath {source} is not a directory (the kubelet would refuse to start the pod)"
            if v["hostPath"].get("type") == "Socket":
                assert source.is_socket(), f"hostPath {source} is not a socket (the kubelet would refuse to start the pod)"
            spec = f"type=bind,source={source},target={m['mountPath']}"
            if m.get("readOnly"):
                spec += ",readonly"
            # IfPossible: recursive where the runtime can; this dockerd's binds are not, as a
            # kubelet with a runtime that cannot does.
            assert m.get("recursiveReadOnly", "IfPossible") == "IfPossible", m
        elif "emptyDir" in v:
            spec = f"type=tmpfs,target={m['mountPath']}"
            if "sizeLimit" in v["emptyDir"]:
                spec += f",tmpfs-size={int(quantity(v['emptyDir']['sizeLimit']))}"
        else:
            raise AssertionError(f"volume {m['name']}: only hostPath and emptyDir can be run here")
        args += ["--mount", spec]
        if "hostPath" in v and v["hostPath"]["path"] == "/":
            args += node_ctr_mount(m["mountPath"], node)

    if termination_log is not None:
        args += ["--mount", f"type=bind,source={termination_log},target={c.get('terminationMessagePath', '/dev/termination-log')}"]

    # `command` replaces the image's entrypoint and `args` its CMD; a test may swap both.
    argv = command if command is not None else c.get("command", []) + c.get("args", [])
    if argv:
        args += ["--entrypoint", argv[0]]
    args.append(image or c["image"])
    args += argv[1:]
    return args


def node_ctr_mount(host_root: str, node: Daemons | None) -> list[str]:
    """This machine's root stands for the node's: on a node of a matrix version, the `ctr` it
    runs chrooted is that version's, laid over the machine's own."""
    machine_ctr = shutil.which("ctr")
    if node is None or not machine_ctr or os.path.realpath(node.ctr) == os.path.realpath(machine_ctr):
        return []
    return ["--mount", f"type=bind,source={os.path.realpath(node.ctr)},target={host_root}{machine_ctr},readonly"]


def timestamp_key(stamp: str) -> str:
    """An RFC 3339 timestamp from `docker logs --timestamps` that sorts as text: docker drops
    trailing zeros of the nanoseconds, so pad them back."""
    match = re.fullmatch(r"([^.]+)(?:\.(\d+))?Z", stamp)
    if not match:
        return stamp
    return f"{match.group(1)}.{(match.group(2) or '').ljust(9, '0')}Z"


LAST_TERMINATION_MESSAGE: dict[str, str] = {}


def run_like_kubelet(job_doc: dict[str, Any], *, stdin: bytes | None = None, **kwargs: Any) -> tuple[int, str]:
    """Run the Job's container to its end; returns its exit code and its log (stdout and stderr).
    The termination message it wrote is left in LAST_TERMINATION_MESSAGE["message"]."""
    name = f"chart-test-{uuid.uuid4().hex[:10]}"
    termination_log = Path(f"/tmp/{name}.termination-log")
    termination_log.write_bytes(b"")
    kwargs.setdefault("termination_log", termination_log)
    args = docker_run_args(job_doc, name, **kwargs)
    if stdin is not None:
        args.insert(1, "--interactive")
    deadline = job_doc["spec"]["activeDeadlineSeconds"]
    try:
        try:
            docker(*args, input=stdin, check=False, timeout=deadline)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the container ran past activeDeadlineSeconds ({deadline}s)") from None
        state = docker("inspect", "--format", "{{.State.ExitCode}} {{.State.Error}}", name).stdout.decode().strip()
        # Both streams in time order, as `kubectl logs` shows them.
        logs = docker("logs", "--timestamps", name)
        stamped = [
            line.split(" ", 1)
            for stream in (logs.stdout, logs.stderr)
            for line in stream.decode(errors="replace").splitlines()
        ]
        stamped.sort(key=lambda parts: timestamp_key(parts[0]))
        log = "".join((parts[1] if len(parts) > 1 else "") + "\n" for parts in stamped)
        code = int(state.split(" ", 1)[0])
        LAST_TERMINATION_MESSAGE["message"] = termination_log.read_text(errors="replace")
        return code, log + state.partition(" ")[2]
    finally:
        docker("rm", "--force", name, check=False)
        termination_log.unlink(missing_ok=True)


def node_values(node: Daemons | None, client: str) -> dict[str, Any]:
    """The containerd of `node` (default: the default pair's) through `client`: its socket, and
    its root for the native client's disk preflight."""
    node = node or CONTAINERDS[0]
    values = {"runtime": "containerd", "containerdClient": client, "containerdAddress": node.containerd_sock}
    if client == "native":
        values["containerdRoot"] = node.containerd_root
    return values


def job_values(importer_image: dict[str, Any], bundle: dict[str, Any], node: Daemons | None = None,
               client: str = "native") -> dict[str, Any]:
    """Values that point the Job at the bundle and at the containerd of `node` (default: the default pair's)."""
    repository, tag = importer_image["image"].rsplit(":", 1)
    return {
        "imagePull": {
            "importerImage": {"repository": repository, "tag": tag},
            "imagesPath": str(bundle["dir"]),
            **node_values(node, client),
            "containerdNamespace": NAMESPACE,
            "activeDeadlineSeconds": 300,
        }
    }


def test_build_image_builds_a_from_scratch_image_with_oci_labels_and_saves_it(importer_image):
    image = json.loads(docker("image", "inspect", "--format", "{{json .}}", importer_image["image"]).stdout)
    assert image["Config"]["Entrypoint"] == ["/offline-images"]
    assert image["Config"]["Cmd"] == ["import"]
    assert len(image["RootFS"]["Layers"]) == 1
    labels = image["Config"]["Labels"]
    assert labels["org.opencontainers.image.title"] == "offline-images"
    assert labels["org.opencontainers.image.version"] == VERSION
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert labels["org.opencontainers.image.source"].startswith("https://")
    assert labels["org.opencontainers.image.description"]
    archive = importer_image["dist"] / f"offline-images-{VERSION}.tar.gz"
    assert archive.read_bytes()[:2] == b"\x1f\x8b"
    assert not list(importer_image["dist"].glob("*.partial"))
    printed = importer_image["stdout"].splitlines()
    assert printed[0].startswith(f"image    {importer_image['image']}  ") and printed[0].endswith(" bytes)")
    assert printed[1].startswith(f"archive  {archive}  ")


def test_the_importer_image_runs_the_static_binary(importer_image):
    result = docker("run", "--rm", "--network", "none", importer_image["image"], "--version")
    assert result.stdout.decode().strip() == f"offline-images {VERSION}"


def test_the_job_security_context_lets_the_node_ctr_run_chrooted_in_the_node_root(importer_image, bundle, containerd):
    # What the importer's containerd backend does, done by busybox in the Job's exact container
    # settings: chroot into the node root and stream an archive into the node's ctr, which on a
    # node of this version is this version's.
    jb = job(job_values(importer_image, bundle, containerd, client="ctr"))
    node_ctr = shutil.which("ctr")
    assert node_ctr
    code, version = run_like_kubelet(jb, node=containerd, image=bundle["ref"],
                                     command=["/bin/busybox", "chroot", "/host", node_ctr, "--version"])
    assert code == 0 and containerd.containerd_release in version, version
    command = ["/bin/busybox", "chroot", "/host", node_ctr, "-a", containerd.containerd_sock, "-n", NAMESPACE + "-chroot",
               "images", "import", "-"]
    code, log = run_like_kubelet(jb, node=containerd, image=bundle["ref"], command=command, stdin=bundle["tar"])
    assert code == 0, log
    assert bundle["ref"] in containerd.ctr_run(NAMESPACE + "-chroot", "images", "ls", "-q").split()


def test_without_sys_chroot_the_node_ctr_cannot_be_run_chrooted(importer_image, bundle):
    jb = job(job_values(importer_image, bundle, client="ctr"))
    container(jb)["securityContext"]["capabilities"]["add"] = []
    code, log = run_like_kubelet(jb, image=bundle["ref"], command=["/bin/busybox", "chroot", "/host", "/bin/true"])
    assert code != 0
    assert "Operation not permitted" in log


@pytest.mark.parametrize("client", ["native", "ctr"])
def test_the_rendered_job_imports_the_bundle_into_containerd_as_the_kubelet_would_run_it(importer_image, bundle, containerd,
                                                                                          client):
    namespace = f"{NAMESPACE}-job-{client}"
    jb = job(merge(job_values(importer_image, bundle, containerd, client=client),
                   {"imagePull": {"containerdNamespace": namespace}}))
    code, log = run_like_kubelet(jb, node=containerd)
    assert code == 0, f"the import Job's container exited {code}:\n{log}"
    lines = [line for line in log.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("summary:"), log
    assert bundle["ref"] in containerd.ctr_run(namespace, "images", "ls", "-q").split()
    # The importer talked to that version's containerd (with ctr: through that version's ctr).
    assert f"containerd {containerd.containerd_release}" in log, log
    assert ("via its gRPC API" in log) == (client == "native"), log
    assert LAST_TERMINATION_MESSAGE["message"].splitlines()[0] == lines[-1]


@pytest.fixture(scope="module")
def layout_bundle(bundle, tmp_path_factory) -> dict[str, Any]:
    """The bundle's image as an OCI image layout directory, as skopeo writes one (`oci:`)."""
    saved = tmp_path_factory.mktemp("saved") / "busybox.tar"
    saved.write_bytes(bundle["tar"])
    directory = tmp_path_factory.mktemp("layout-bundle")
    subprocess.run(
        ["skopeo", "copy", "--quiet", f"docker-archive:{saved}", f"oci:{directory / 'layout'}:{bundle['ref']}"],
        check=True, capture_output=True, timeout=120,
    )
    return {"dir": directory, "ref": bundle["ref"], "tar": bundle["tar"]}


def test_the_rendered_job_imports_a_layout_bundle_into_containerd(importer_image, layout_bundle, containerd):
    namespace = f"{NAMESPACE}-job-layout"
    jb = job(merge(job_values(importer_image, layout_bundle, containerd),
                   {"imagePull": {"containerdNamespace": namespace}}))
    code, log = run_like_kubelet(jb, node=containerd)
    assert code == 0, f"the import Job's container exited {code}:\n{log}"
    assert f"imported  layout/index.json#{layout_bundle['ref']}" in log, log
    assert layout_bundle["ref"] in containerd.ctr_run(namespace, "images", "ls", "-q").split()


def test_with_a_required_image_missing_the_job_exits_1_and_the_summary_is_its_last_line(importer_image, bundle, containerd):
    absent = "registry.site.local/shop/web:4.5.6"
    values = merge(job_values(importer_image, bundle, containerd),
                   {"imagePull": {"requiredImages": [bundle["ref"], absent], "containerdNamespace": f"{NAMESPACE}-missing"}})
    jb = job(values)
    code, log = run_like_kubelet(jb, node=containerd)
    assert code == 1, f"the import Job's container exited {code}:\n{log}"
    lines = [line for line in log.splitlines() if line.strip()]
    # Tolerant: the bundle's image went in all the same.
    assert bundle["ref"] in containerd.ctr_run(f"{NAMESPACE}-missing", "images", "ls", "-q").split()
    assert f"MISSING   {absent}: required (--require); not in the runtime" in lines, log
    assert lines[-1].startswith("summary: ") and lines[-1].endswith(f"1 image(s) MISSING from the runtime: {absent}"), log
    # What `kubectl get pod` shows as the termination message: the summary, then the image.
    message = LAST_TERMINATION_MESSAGE["message"].splitlines()
    assert message[0] == lines[-1], message
    assert f"missing {absent}: required (--require); not in the runtime" in message
    # The pod failure policy makes exit 1 final: no retry would find the image.
    rule = jb["spec"]["podFailurePolicy"]["rules"][0]
    assert rule["action"] == "FailJob" and code in rule["onExitCodes"]["values"]


def test_for_docker_the_job_mounts_only_the_socket_and_imports_through_it(importer_image, tmp_path, target_docker):
    context = tmp_path / "context"
    context.mkdir()
    shutil.copy("/bin/busybox", context / "busybox")
    (context / "Dockerfile").write_text('FROM scratch\nCOPY busybox /bin/busybox\nCMD ["/bin/busybox", "true"]\n')
    ref = f"chart-test.local/socket-only:{RUN_ID}"
    docker("build", "--quiet", "--tag", ref, str(context))
    bundle_dir = tmp_path / "bundle"
    bundle_dir.mkdir()
    (bundle_dir / "socket-only.tar").write_bytes(docker("save", ref).stdout)
    docker("rmi", "--force", ref)
    repository, tag = importer_image["image"].rsplit(":", 1)
    values = {"imagePull": {"importerImage": {"repository": repository, "tag": tag}, "imagesPath": str(bundle_dir),
                            "runtime": "docker", "dockerHost": target_docker.docker_host, "activeDeadlineSeconds": 300,
                            "requiredImages": [ref]}}
    jb = job(values)
    volumes = jb["spec"]["template"]["spec"]["volumes"]
    assert sorted(v["name"] for v in volumes) == ["images", "runtime-socket", "tmp"]
    assert "SYS_CHROOT" not in container(jb)["securityContext"]["capabilities"].get("add", [])
    try:
        code, log = run_like_kubelet(jb, node=target_docker)
        assert code == 0, f"the import Job's container exited {code}:\n{log}"
        assert target_docker.docker_run("image", "inspect", ref, check=False).returncode == 0, log
        lines = [line for line in log.splitlines() if line.strip()]
        assert f"docker {target_docker.docker_release}" in log, log
        assert ("containerd image store" in log) == target_docker.containerd_store, log
        assert lines[-1].startswith("summary: 1 imported"), log
    finally:
        docker("rmi", "--force", ref, check=False)
        target_docker.docker_run("rmi", "--force", ref, check=False)


def test_a_per_node_job_of_all_nodes_runs_and_names_the_nodes_left_out(importer_image, bundle, tmp_path, containerd):
    from test_all_nodes import chart_with_nodes, jobs_in, node, pinned_to

    namespace = f"{NAMESPACE}-all-nodes"
    chart = chart_with_nodes(tmp_path, [node("here"), node("down", ready="False"), node("win", os_="windows")])
    values = merge(job_values(importer_image, bundle, containerd),
                   {"imagePull": {"enabled": True, "allNodes": True, "containerdNamespace": namespace}})
    (only_job,) = jobs_in(render(values, chart=chart))
    assert pinned_to(only_job) == "here"
    code, log = run_like_kubelet(only_job, node=containerd)
    assert code == 0, f"the per-node Job's container exited {code}:\n{log}"
    lines = [line for line in log.splitlines() if line.strip()]
    assert "left out by the chart: down: NotReady (its Ready condition is False)" in lines, log
    assert "left out by the chart: win: runs windows, not linux" in lines, log
    assert lines[-1].startswith("summary: 1 imported"), log
    assert bundle["ref"] in containerd.ctr_run(namespace, "images", "ls", "-q").split()


def importer_has_the_native_client() -> bool:
    helped = subprocess.run([os.environ["OI_NODE_BIN"], "import", "--help"], capture_output=True, text=True)
    return "--containerd-client" in helped.stdout


def test_with_the_native_containerd_client_the_job_mounts_only_the_socket_and_imports(importer_image, bundle, containerd):
    if not importer_has_the_native_client():
        pytest.skip("this importer has no native containerd client yet (import --help has no --containerd-client)")
    namespace = f"{NAMESPACE}-native"
    containerd_root = containerd.containerd_root
    values = merge(job_values(importer_image, bundle, containerd),
                   {"imagePull": {"containerdClient": "native", "containerdNamespace": namespace,
                                  "containerdRoot": containerd_root}})
    jb = job(values)
    volumes = {v["name"]: v for v in jb["spec"]["template"]["spec"]["volumes"]}
    assert sorted(volumes) == ["containerd-root", "images", "runtime-socket", "tmp"]
    assert volumes["containerd-root"]["hostPath"]["path"] == containerd_root
    container = jb["spec"]["template"]["spec"]["containers"][0]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["containerd-root"]["readOnly"] is True
    assert {"name": "CONTAINERD_CLIENT", "value": "native"} in container["env"]
    code, log = run_like_kubelet(jb, node=containerd)
    assert code == 0, f"the import Job's container exited {code}:\n{log}"
    assert bundle["ref"] in containerd.ctr_run(namespace, "images", "ls", "-q").split()
    lines = [line for line in log.splitlines() if line.strip()]
    assert lines[-1].startswith("summary: 1 imported"), log


def test_with_the_ctr_client_the_job_says_so_to_the_importer(importer_image, bundle):
    values = merge(job_values(importer_image, bundle), {"imagePull": {"containerdClient": "ctr"}})
    container = job(values)["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "CONTAINERD_CLIENT", "value": "ctr"} in container["env"]


def test_build_image_refuses_a_binary_that_is_not_static_and_writes_nothing(tmp_path):
    env = dict(
        os.environ,
        DOCKER_HOST=os.environ["OI_DOCKER_HOST"],
        DOCKER=os.environ["OI_DOCKER_CLI"],
        BINARY="/bin/sh",
        IMAGE=f"chart-test.local/not-static:{RUN_ID}",
        OUTPUT_DIR=str(tmp_path / "out"),
    )
    result = subprocess.run([str(ROOT / "scripts" / "build-image.sh")], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode != 0
    assert "/bin/sh is missing or not a static executable" in result.stderr
    assert not (tmp_path / "out").exists()


# ---- bootstrap mode: no importer image on the node ----------------------------------------------


@pytest.fixture(scope="module")
def pause_image(tmp_path_factory) -> str:
    """A stand-in for the cluster's pause image: FROM scratch, one static file, no importer."""
    context = tmp_path_factory.mktemp("pause-context")
    shutil.copy("/bin/busybox", context / "pause")
    (context / "Dockerfile").write_text('FROM scratch\nCOPY pause /pause\nENTRYPOINT ["/pause"]\n')
    ref = f"chart-test.local/pause:{RUN_ID}"
    docker("build", "--quiet", "--tag", ref, str(context))
    yield ref
    docker("rmi", "--force", ref, check=False)


def with_bundled_importer(src: Path, dst: Path) -> Path:
    """A copy of the bundle `src` carrying the static importer as `offline-images export` puts it."""
    shutil.copytree(src, dst)
    folder = dst / ".offline-images"
    folder.mkdir()
    binary = folder / "offline-images"
    shutil.copy(os.environ["OI_STATIC_BIN"], binary)
    binary.chmod(0o755)
    digest = hashlib.sha256(binary.read_bytes()).hexdigest()
    (folder / "offline-images.sha256").write_text(f"{digest}  offline-images\n")
    return dst


def bootstrap_values(pause_image: str, bundle_dir: Path, namespace: str, node: Daemons | None = None) -> dict[str, Any]:
    repository, tag = pause_image.rsplit(":", 1)
    return {
        "imagePull": {
            "enabled": True,
            "bootstrap": {"enabled": True, "image": repository, "tag": tag},
            "imagesPath": str(bundle_dir),
            **node_values(node, "native"),
            "containerdNamespace": namespace,
            "activeDeadlineSeconds": 300,
            "prune": {"enabled": True},
        }
    }


def rendered_jobs(values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The rendered Jobs by component (image-import, image-prune)."""
    return {d["metadata"]["labels"]["app.kubernetes.io/component"]: d for d in render(values) if d["kind"] == "Job"}


def ctr_in(namespace: str, *args: str) -> str:
    result = subprocess.run(
        ["ctr", "-a", os.environ["OI_CONTAINERD_SOCK"], "-n", namespace, *args], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"ctr {' '.join(args)} failed: {result.stderr}"
    return result.stdout


def test_bootstrap_imports_with_the_bundled_importer_run_in_a_pause_image_and_prune_removes_it(
    pause_image, bundle, tmp_path, containerd
):
    namespace = f"{NAMESPACE}-bootstrap"
    bundle_dir = with_bundled_importer(bundle["dir"], tmp_path / "bundle")
    found = rendered_jobs(bootstrap_values(pause_image, bundle_dir, namespace, containerd))
    importer, pruner = found["image-import"], found["image-prune"]
    assert container(importer)["imagePullPolicy"] == "Never"

    # The pause image alone cannot import anything: it holds no importer.
    code, log = run_like_kubelet(importer, command=["/offline-images", "--version"])
    assert code != 0, log

    code, log = run_like_kubelet(importer, node=containerd)
    assert code == 0, f"the bootstrap Job's container exited {code}:\n{log}"
    lines = [line for line in log.splitlines() if line.strip()]
    assert lines[-1].startswith("summary: 1 imported"), log
    assert bundle["ref"] in containerd.ctr_run(namespace, "images", "ls", "-q").split()
    labels = containerd.ctr_run(namespace, "images", "ls")
    assert "io.offline-images.release.shop=true" in labels, labels

    # The post-delete prune Job, run the same way, removes what the release imported.
    code, log = run_like_kubelet(pruner, node=containerd)
    assert code == 0, f"the prune Job's container exited {code}:\n{log}"
    assert f"removed  {bundle['ref']}" in log, log
    assert bundle["ref"] not in containerd.ctr_run(namespace, "images", "ls", "-q").split()


def test_a_bundled_importer_pinned_by_sha256_runs_only_when_it_is_that_binary(pause_image, bundle, tmp_path):
    namespace = f"{NAMESPACE}-pinned"
    bundle_dir = with_bundled_importer(bundle["dir"], tmp_path / "bundle")
    actual = hashlib.sha256((bundle_dir / ".offline-images" / "offline-images").read_bytes()).hexdigest()
    values = bootstrap_values(pause_image, bundle_dir, namespace)
    other = merge(values, {"imagePull": {"bootstrap": {"binarySha256": "0" * 64}}})
    code, log = run_like_kubelet(rendered_jobs(other)["image-import"])
    assert code == 2, log
    assert f"its sha256 is {actual} but OFFLINE_IMAGES_BINARY_SHA256 pins {'0' * 64}" in log, log
    assert bundle["ref"] not in ctr_in(namespace, "images", "ls", "-q").split()
    same = merge(values, {"imagePull": {"bootstrap": {"binarySha256": actual}}})
    code, log = run_like_kubelet(rendered_jobs(same)["image-import"])
    assert code == 0, log
    assert bundle["ref"] in ctr_in(namespace, "images", "ls", "-q").split()


def test_a_tampered_bundled_importer_refuses_to_run_and_imports_nothing(pause_image, bundle, tmp_path):
    namespace = f"{NAMESPACE}-tampered"
    bundle_dir = with_bundled_importer(bundle["dir"], tmp_path / "bundle")
    with open(bundle_dir / ".offline-images" / "offline-images", "ab") as binary:
        binary.write(b"\0changed")
    importer = rendered_jobs(bootstrap_values(pause_image, bundle_dir, namespace))["image-import"]
    code, log = run_like_kubelet(importer)
    assert code == 2, log
    assert "refusing to run /images/.offline-images/offline-images" in log, log
    assert "damaged or replaced" in log, log
    assert bundle["ref"] not in ctr_in(namespace, "images", "ls", "-q").split()


def with_importers_per_arch(src: Path, dst: Path) -> Path:
    """A copy of the bundle `src` carrying an importer per architecture, as `offline-images
    export` lays them out: .offline-images/linux-<arch>/offline-images and its .sha256."""
    aarch64 = os.environ.get("OI_AARCH64_BIN")
    if not aarch64:
        pytest.skip("needs OI_AARCH64_BIN, the static aarch64 importer scripts/test.sh builds")
    shutil.copytree(src, dst)
    for arch, source in (("amd64", os.environ["OI_STATIC_BIN"]), ("arm64", aarch64)):
        folder = dst / ".offline-images" / f"linux-{arch}"
        folder.mkdir(parents=True)
        binary = folder / "offline-images"
        shutil.copy(source, binary)
        binary.chmod(0o755)
        digest = hashlib.sha256(binary.read_bytes()).hexdigest()
        (folder / "offline-images.sha256").write_text(f"{digest}  offline-images\n")
    return dst


def test_a_mixed_clusters_amd64_job_runs_the_amd64_importer_and_the_arm64_job_names_the_aarch64_one(
    pause_image, bundle, tmp_path
):
    namespace = f"{NAMESPACE}-per-arch"
    bundle_dir = with_importers_per_arch(bundle["dir"], tmp_path / "bundle")
    sums = {arch: hashlib.sha256((bundle_dir / ".offline-images" / f"linux-{arch}" / "offline-images").read_bytes())
            .hexdigest() for arch in ("amd64", "arm64")}
    values = merge(bootstrap_values(pause_image, bundle_dir, namespace),
                   {"imagePull": {"bootstrap": {"architectures": ["amd64", "arm64"], "binarySha256PerArch": sums}}})
    docs = [item for d in render(values) for item in (d["items"] if d["kind"] == "List" else [d])]
    found = {j["metadata"]["annotations"]["offline-images.io/arch"]: j for j in docs
             if j["kind"] == "Job" and j["metadata"]["labels"]["app.kubernetes.io/component"] == "image-import"}
    assert sorted(found) == ["amd64", "arm64"]
    # Each Job runs its architecture's binary, which is in the bundle at that path and is of
    # that machine (the ELF header's e_machine: x86_64 62, aarch64 183).
    for arch, machine in (("amd64", 62), ("arm64", 183)):
        job_doc = found[arch]
        assert job_doc["spec"]["template"]["spec"]["nodeSelector"]["kubernetes.io/arch"] == arch
        (command,) = container(job_doc)["command"]
        header = (bundle_dir / command.removeprefix("/images/")).read_bytes()[:20]
        assert header[:4] == b"\x7fELF" and int.from_bytes(header[18:20], "little") == machine, command

    # This machine is amd64: that Job runs here as a kubelet would, its binary pinned; pinned
    # to another sha256, the binary in its architecture's folder refuses to run.
    wrong = merge(values, {"imagePull": {"bootstrap": {"binarySha256PerArch": {"amd64": "0" * 64}}}})
    (refused,) = [item for d in render(wrong) if d["kind"] == "List" for item in d["items"]
                  if item["metadata"]["annotations"]["offline-images.io/arch"] == "amd64"
                  and item["metadata"]["labels"]["app.kubernetes.io/component"] == "image-import"]
    code, log = run_like_kubelet(refused)
    assert code == 2, log
    assert f"refusing to run /images/.offline-images/linux-amd64/offline-images: its sha256 is {sums['amd64']}" in log, log
    assert bundle["ref"] not in ctr_in(namespace, "images", "ls", "-q").split()
    code, log = run_like_kubelet(found["amd64"])
    assert code == 0, f"the amd64 Job's container exited {code}:\n{log}"
    lines = [line for line in log.splitlines() if line.strip()]
    assert lines[-1].startswith("summary: 1 imported"), log
    assert bundle["ref"] in ctr_in(namespace, "images", "ls", "-q").split()


def test_log_format_json_reaches_the_prune_job_whose_every_line_is_json(importer_image, bundle, containerd):
    """Finding: `logFormat: json` did not reach the prune Job: prune had no --log-format and
    printed text whatever the LOG_FORMAT the chart gives it."""
    namespace = f"{NAMESPACE}-prune-json"
    values = merge(job_values(importer_image, bundle, containerd),
                   {"imagePull": {"enabled": True, "containerdNamespace": namespace, "logFormat": "json",
                                  "prune": {"enabled": True, "waitSeconds": 0}}})
    found = rendered_jobs(values)
    code, log = run_like_kubelet(found["image-import"], node=containerd)
    assert code == 0, f"the import Job's container exited {code}:\n{log}"
    code, log = run_like_kubelet(found["image-prune"], node=containerd)
    assert code == 0, f"the prune Job's container exited {code}:\n{log}"
    lines = [json.loads(line) for line in log.splitlines() if line.strip()]
    assert {"name": bundle["ref"], "action": "removed"} in lines, log
    # Results (stdout) and the log (stderr) reach the pod log through two pipes, in either order.
    summaries = [line for line in lines if line.get("event") == "summary"]
    assert len(summaries) == 1 and summaries[0]["removed"] == 1, log
    assert bundle["ref"] not in containerd.ctr_run(namespace, "images", "ls", "-q").split()
