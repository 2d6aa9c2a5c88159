"""The import Job rendered with `runtime: crio`, run as the kubelet would run it (see
test_job_container.py, `run_like_kubelet`) on the real dockerd, against a node-root view that
holds a real podman and a containers-storage of its own: Debian 12's podman 4.3, and Debian
forky's podman 5.

No CRI-O daemon can be had here. What CRI-O would read is checked instead: the storage at the
path the node's /etc/containers/storage.conf names, read by the node's own podman (chrooted
into the same view) with `podman images --digests`.

The node-root view is a directory whose root stands for the node's `/`: this machine's /usr
(read-only, with the /bin, /lib... links of a merged-/usr system, so it runs the machine's
podman and its libraries), /proc, /sys (read-only), /dev/null, a /dev/shm of its own (podman's
lock memory), and an /etc of its own whose containers/storage.conf puts the storage where a
CRI-O node has it (/var/lib/containers/storage, overlay). The Job's hostPath `/` is that view.

For podman 5 the view's /usr is an overlay of forky's podman, conmon and glibc packages (as
scripts/lib.sh unpacks them) on this machine's /usr: /usr/bin/podman is then forky's, run by
forky's loader and libraries as on a node that has it installed. Its containers.conf names
runc, the OCI runtime this machine has (podman 5 looks for crun first); podman load runs no
container.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from chartlib import container, env_of, merge, mount, render, volume
from test_job_container import (  # noqa: F401 (fixtures)
    RUN_ID,
    bundle,
    docker,
    importer_image,
    layout_bundle,
    run_like_kubelet,
)

ENV = ("OI_DOCKER_HOST", "OI_DOCKER_CLI", "OI_NODE_BIN", "OI_PODMAN4", "OI_PODMAN")
pytestmark = pytest.mark.skipif(
    not all(os.environ.get(name) for name in ENV),
    reason=f"needs the daemons and the podman 4 and 5 of scripts/test.sh ({', '.join(ENV)})",
)

STORAGE_CONF = (
    '[storage]\ndriver = "overlay"\ngraphroot = "/var/lib/containers/storage"\n'
    'runroot = "/run/containers/storage"\n'
)


def run(*args: str | Path) -> None:
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"{' '.join(map(str, args))} failed: {result.stderr}"


def unmount_under(directory: Path) -> None:
    """Lazily unmount everything mounted under `directory`, deepest first."""
    under = f"{directory}/"
    points = [line.split(" ")[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    for point in sorted((p for p in points if p.startswith(under)), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)


def forky_usr() -> Path:
    """The usr/ of forky's podman packages, unpacked beside the `podman` wrapper of
    scripts/lib.sh (oi_fetch_forky_podman): OI_PODMAN is ROOT/bin/podman, the packages ROOT/root."""
    usr = Path(os.environ["OI_PODMAN"]).resolve().parent.parent / "root" / "usr"
    assert (usr / "bin/podman").is_file(), f"no forky podman under {usr}"
    return usr


# The podman each view holds: its name in test ids, and how its version starts.
PODMANS = {"podman4": "4.3.1", "podman5": "5."}
# The podman of each live view, as the importer's log names it ("podman 5.8.1").
view_podman: dict[Path, str] = {}


@pytest.fixture(params=list(PODMANS))
def node_view(request, tmp_path) -> Path:
    """A node root holding Debian 12's podman 4.3 or forky's podman 5 (the overlay /usr
    described above) and a private containers-storage."""
    podman4 = os.environ["OI_PODMAN4"]
    if os.path.realpath(podman4) != "/usr/bin/podman":
        pytest.skip(f"Debian 12's podman is {podman4}, not /usr/bin/podman: the view's /usr would not hold it")
    view = tmp_path / "node"
    for d in ("usr", "proc", "sys", "dev/shm", "etc/containers", "var/tmp", "tmp", "run",
              "var/lib/containers/storage"):
        (view / d).mkdir(parents=True, exist_ok=True)
    for link in ("bin", "sbin", "lib", "lib64"):
        (view / link).symlink_to(f"usr/{link}")
    (view / "dev/null").write_bytes(b"")
    try:
        if request.param == "podman5":
            run("mount", "-t", "overlay", "overlay", "-o", f"ro,lowerdir={forky_usr()}:/usr", view / "usr")
            (view / "etc/containers/containers.conf").write_text('[engine]\nruntime = "runc"\n')
        else:
            run("mount", "--bind", "/usr", view / "usr")
            run("mount", "-o", "remount,bind,ro", view / "usr")
        run("mount", "-t", "proc", "proc", view / "proc")
        run("mount", "--bind", "/dev/null", view / "dev/null")
        run("mount", "-t", "sysfs", "-o", "ro", "sysfs", view / "sys")
        run("mount", "-t", "tmpfs", "tmpfs", view / "dev/shm")
        for name in ("passwd", "group", "containers/policy.json"):
            shutil.copy(Path("/etc") / name, view / "etc" / name)
        (view / "etc/containers/storage.conf").write_text(STORAGE_CONF)
        version = node_podman(view, "version", "--format", "{{.Client.Version}}").strip()
        assert version.startswith(PODMANS[request.param]), f"{request.param}: the view runs podman {version}"
        view_podman[view] = f"podman {version}"
        yield view
    finally:
        view_podman.pop(view, None)
        unmount_under(view)
        shutil.rmtree(view, ignore_errors=True)


def node_podman(view: Path, *args: str) -> str:
    """The node's podman on the node's storage (chrooted into the view, as the importer runs it)."""
    result = subprocess.run(["chroot", str(view), "/usr/bin/podman", *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"podman {' '.join(args)} failed: {result.stderr}"
    return result.stdout


def crio_values(importer_image: dict[str, Any], bundle_dir: Path, **extra: Any) -> dict[str, Any]:
    repository, tag = importer_image["image"].rsplit(":", 1)
    return {"imagePull": {"enabled": True, "importerImage": {"repository": repository, "tag": tag},
                          "imagesPath": str(bundle_dir), "runtime": "crio", "activeDeadlineSeconds": 300, **extra}}


def jobs_by_component(values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["labels"]["app.kubernetes.io/component"]: d for d in render(values) if d["kind"] == "Job"}


def test_the_crio_job_mounts_the_node_root_read_write_and_runs_podman_as_root_with_its_capabilities():
    jb = jobs_by_component({"imagePull": {"enabled": True, "runtime": "crio"}})["image-import"]
    assert env_of(jb)["IMAGE_RUNTIME"] == "podman" and env_of(jb)["HOST_ROOT"] == "/host"
    assert volume(jb, "host-root")["hostPath"] == {"path": "/", "type": "Directory"}
    assert mount(jb, "/host").get("readOnly") in (None, False)
    sc = container(jb)["securityContext"]
    assert sc["runAsUser"] == 0 and sc["runAsNonRoot"] is False
    assert {"SYS_CHROOT", "SYS_ADMIN", "CHOWN", "DAC_OVERRIDE", "FOWNER"} <= set(sc["capabilities"]["add"])
    assert sc["capabilities"]["drop"] == ["ALL"] and sc["allowPrivilegeEscalation"] is False
    assert jb["spec"]["template"]["spec"]["securityContext"]["seLinuxOptions"] == {"type": "spc_t"}
    names = {v["name"] for v in jb["spec"]["template"]["spec"]["volumes"]}
    assert "runtime-socket" not in names and "containerd-root" not in names
    assert "CONTAINERD_ADDRESS" not in env_of(jb)
    # A site's own SELinux type wins.
    own = jobs_by_component({"imagePull": {"enabled": True, "runtime": "crio", "seLinuxOptions": {"type": "x_t"}}})
    assert own["image-import"]["spec"]["template"]["spec"]["securityContext"]["seLinuxOptions"] == {"type": "x_t"}


def image_digests(view: Path) -> dict[str, str]:
    """name:tag -> digest, as `podman images --digests` lists the node's storage."""
    out = node_podman(view, "images", "--digests", "--format", "{{.Repository}}:{{.Tag}} {{.Digest}}")
    return dict(line.split(" ", 1) for line in out.splitlines() if line.strip())


def test_the_crio_job_imports_a_bundle_into_the_nodes_containers_storage_and_prune_removes_it(
    importer_image, bundle, node_view
):
    values = crio_values(importer_image, bundle["dir"], prune={"enabled": True, "waitSeconds": 0})
    found = jobs_by_component(values)
    view = {"/": node_view, str(bundle["dir"]): bundle["dir"]}
    code, log = run_like_kubelet(found["image-import"], view=view)
    assert code == 0, f"the crio Job's container exited {code}:\n{log}"
    assert f"{view_podman[node_view]} (/usr/bin/podman, chrooted into /host)" in log, log
    assert ("containers-storage /var/lib/containers/storage (driver overlay, run root /run/containers/storage; "
            "settings from /etc/containers/storage.conf)") in log, log
    lines = [line for line in log.splitlines() if line.strip()]
    assert lines[-1].startswith("summary: 1 imported"), log
    listed = image_digests(node_view)
    assert bundle["ref"] in listed, listed
    assert listed[bundle["ref"]].startswith("sha256:"), listed

    code, log = run_like_kubelet(found["image-import"], view=view)
    assert code == 0, log
    assert [line for line in log.splitlines() if line.strip()][-1].startswith("summary: 0 imported, 1 skipped"), log

    code, log = run_like_kubelet(found["image-prune"], view=view)
    assert code == 0, f"the prune Job's container exited {code}:\n{log}"
    assert f"removed  {bundle['ref']}" in log, log
    assert bundle["ref"] not in image_digests(node_view)


def test_the_crio_job_imports_a_layout_bundle_keeping_the_registrys_digest(importer_image, layout_bundle, node_view):
    index = json.loads((layout_bundle["dir"] / "layout" / "index.json").read_text())
    (entry,) = index["manifests"]
    jb = jobs_by_component(crio_values(importer_image, layout_bundle["dir"]))["image-import"]
    code, log = run_like_kubelet(jb, view={"/": node_view, str(layout_bundle["dir"]): layout_bundle["dir"]})
    assert code == 0, f"the crio Job's container exited {code}:\n{log}"
    assert image_digests(node_view).get(layout_bundle["ref"]) == entry["digest"], log


def test_without_the_crio_capabilities_podman_cannot_write_the_storage(importer_image, bundle, node_view):
    jb = jobs_by_component(crio_values(importer_image, bundle["dir"], crioCapabilities=[]))["image-import"]
    assert container(jb)["securityContext"]["capabilities"]["add"] == ["SYS_CHROOT"]
    code, log = run_like_kubelet(jb, view={"/": node_view, str(bundle["dir"]): bundle["dir"]})
    assert code != 0, log
    assert "cannot clone: Operation not permitted" in log, log
    assert bundle["ref"] not in image_digests(node_view)


@pytest.fixture(scope="module")
def special_files_bundle(tmp_path_factory) -> dict[str, Any]:
    """A bundle of one image made by docker whose layers hold what a plain image does not: a
    file deleted in a later layer (the layer carries its whiteout, `bin/.wh.gone`, which the
    overlay driver stores as a character device 0:0), a device node (`mknod /dev/console-copy
    c 5 1` in a build step), and a file with a capability (`setcap cap_net_raw+ep`, carried as
    the `security.capability` extended attribute), as `docker save` writes it."""
    context = tmp_path_factory.mktemp("special-context")
    shutil.copy("/bin/busybox", context / "busybox")
    (context / "gone").write_text("deleted by the next layer\n")
    capped = context / "tree" / "bin" / "capped"
    capped.parent.mkdir(parents=True)
    shutil.copy("/bin/busybox", capped)
    run("setcap", "cap_net_raw+ep", capped)
    run("tar", "--xattrs", "--xattrs-include=security.capability", "-C", context / "tree", "-cf",
        context / "capped.tar", "bin")
    (context / "Dockerfile").write_text(
        "FROM scratch\nCOPY busybox /bin/busybox\nCOPY gone /bin/gone\nADD capped.tar /\n"
        'RUN ["/bin/busybox", "rm", "/bin/gone"]\n'
        'RUN ["/bin/busybox", "mknod", "/bin/console-copy", "c", "5", "1"]\n'
    )
    ref = f"chart-test.local/special-files:{RUN_ID}"
    docker("build", "--quiet", "--tag", ref, str(context))
    directory = tmp_path_factory.mktemp("special-bundle")
    (directory / "special-files.tar").write_bytes(docker("save", ref).stdout)
    yield {"dir": directory, "ref": ref}
    docker("rmi", "--force", ref, check=False)


def upper_dir(view: Path, ref: str) -> Path:
    """The top layer's directory of `ref` in the view's storage, on this machine."""
    upper = node_podman(view, "image", "inspect", "--format", "{{.GraphDriver.Data.UpperDir}}", ref).strip()
    return view / upper.lstrip("/")


@pytest.mark.parametrize("without", ["MKNOD", "SETFCAP"])
def test_each_crio_capability_for_special_files_is_needed_and_with_all_of_them_the_files_are_kept(
    importer_image, special_files_bundle, node_view, without
):
    """MKNOD (the device node) and SETFCAP (the file capability) are each needed: without one,
    podman cannot store the image and the Job names it failed; with the chart's list the image
    is stored with all three. (The whiteout alone needs no MKNOD on Linux 5.8 and later, which
    lets any process make a 0:0 character device.)"""
    bundle_dir, ref = special_files_bundle["dir"], special_files_bundle["ref"]
    view = {"/": node_view, str(bundle_dir): bundle_dir}
    default = container(jobs_by_component(crio_values(importer_image, bundle_dir))["image-import"])
    caps = [c for c in default["securityContext"]["capabilities"]["add"] if c not in ("SYS_CHROOT", without)]
    jb = jobs_by_component(crio_values(importer_image, bundle_dir, strict=True, crioCapabilities=caps))["image-import"]
    code, log = run_like_kubelet(jb, view=view)
    assert code == 1, f"without {without} the Job exited {code}:\n{log}"
    (failed,) = [line for line in log.splitlines() if line.startswith("FAILED")]
    # One line that says why, without podman's progress and its other formats' attempts.
    assert "special-files.tar: podman pull: " in failed and "writing blob" in failed, log
    assert "operation not permitted" in failed, log
    assert "Copying blob" not in failed and "oci-archive:" not in failed, failed
    assert "SETFCAP" in failed and "MKNOD" in failed and "imagePull.crioCapabilities" in failed, failed
    assert ref not in image_digests(node_view)

    jb = jobs_by_component(crio_values(importer_image, bundle_dir, strict=True))["image-import"]
    code, log = run_like_kubelet(jb, view=view)
    assert code == 0, f"with every capability the Job exited {code}:\n{log}"
    assert ref in image_digests(node_view), log
    upper = upper_dir(node_view, ref)
    device = os.lstat(upper / "bin" / "console-copy")
    assert stat.S_ISCHR(device.st_mode) and (os.major(device.st_rdev), os.minor(device.st_rdev)) == (5, 1), upper
    layers = [p for p in (node_view / "var/lib/containers/storage/overlay").glob("*/diff") if (p / "bin/gone").exists()]
    whiteouts = [os.lstat(p / "bin/gone") for p in layers]
    assert any(stat.S_ISCHR(w.st_mode) and w.st_rdev == 0 for w in whiteouts), "no whiteout for /bin/gone"
    # The capability is on the file in the layer below (every layer of this fresh storage).
    found = subprocess.run(["getcap", "-r", str(node_view / "var/lib/containers/storage/overlay")],
                           capture_output=True, text=True).stdout.splitlines()
    assert any(line.endswith("/bin/capped cap_net_raw=ep") for line in found), found
