"""The containerd and Docker daemons scripts/test.sh started: the default pair, then every
version of the matrix it started beside it (scripts/lib.sh, oi_start_matrix; OI_VERSIONS
chooses them). The same list as `matrix()` of tests/it/harness/, for the chart tests."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Daemons:
    """One containerd and the dockerd that runs on it, with the ctr and docker CLI of their version."""

    label: str
    containerd_sock: str
    docker_host: str
    ctr: str
    docker_cli: str
    containerd_version: str = "unknown"
    docker_version: str = "unknown"

    @property
    def containerd_root(self) -> str:
        """containerd's root directory: scripts/lib.sh keeps it beside the socket."""
        return str(Path(self.containerd_sock).parent / "root")

    def ctr_run(self, namespace: str, *args: str) -> str:
        """`ctr` of this version against this containerd in `namespace`; its stdout."""
        result = subprocess.run(
            [self.ctr, "-a", self.containerd_sock, "-n", namespace, *args], capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, f"{self.label}: ctr {' '.join(args)} failed: {result.stderr}"
        return result.stdout

    def docker_run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """The docker CLI of this version against this dockerd."""
        env = dict(os.environ, DOCKER_HOST=self.docker_host, DOCKER_BUILDKIT="0")
        result = subprocess.run([self.docker_cli, *args], capture_output=True, env=env, timeout=300)
        if check and result.returncode != 0:
            raise AssertionError(f"{self.label}: docker {' '.join(args)} failed: {result.stderr.decode(errors='replace')}")
        return result

    @property
    def containerd_release(self) -> str:
        """containerd's release without the packaging suffix: `1.7.24~ds1`, `2.1.9+unknown` -> `1.7.24`, `2.1.9`."""
        return re.split(r"[~+]", self.containerd_version)[0]

    @property
    def docker_release(self) -> str:
        """Docker's release without the packaging suffix: `20.10.24+dfsg1` -> `20.10.24`."""
        return re.split(r"[~+]", self.docker_version)[0]

    @property
    def docker_id(self) -> str:
        """A test id naming this Docker and its image store: `docker-28.5.2-containerd-store`."""
        return f"docker-{self.docker_release}" + ("-containerd-store" if self.containerd_store else "")

    @property
    def containerd_store(self) -> bool:
        """Whether this Docker keeps its images in containerd (the containerd-snapshotter store)."""
        return self.label.endswith("containerd-store")


def pair_label(containerd: str, docker: str) -> str:
    """`1.6.20~ds1`, `20.10.24+dfsg1` -> `containerd-1.6+docker-20.10`, as the Rust harness names it."""
    minor = lambda version: ".".join(version.split(".")[:2])  # noqa: E731
    return f"containerd-{minor(containerd)}+docker-{minor(docker)}"


def matrix() -> list[Daemons]:
    """Every pair scripts/test.sh exported, the default one first; empty without its daemons."""
    env = os.environ
    if not (env.get("OI_CONTAINERD_SOCK") and env.get("OI_DOCKER_HOST")):
        return []
    containerd_version = env.get("OI_DEFAULT_CONTAINERD_VERSION", "unknown")
    docker_version = env.get("OI_DEFAULT_DOCKER_VERSION", "unknown")
    default = Daemons(
        label=pair_label(containerd_version, docker_version),
        containerd_sock=env["OI_CONTAINERD_SOCK"],
        docker_host=env["OI_DOCKER_HOST"],
        ctr=shutil.which("ctr") or "ctr",
        docker_cli=env.get("OI_DOCKER_CLI", "docker"),
        containerd_version=containerd_version,
        docker_version=docker_version,
    )
    found = [default]
    for i in range(1, int(env.get("OI_MATRIX", "0") or 0) + 1):
        field = lambda name: env[f"OI_MATRIX_{i}_{name}"]  # noqa: E731
        found.append(Daemons(field("LABEL"), field("CONTAINERD_SOCK"), field("DOCKER_HOST"), field("CTR"), field("DOCKER_CLI"),
                             field("CONTAINERD_VERSION"), field("DOCKER_VERSION")))
    # In CI a version of the matrix not started is a failure, not fewer parameters that pass.
    absent = [label for label in env.get("OI_MATRIX_KNOWN", "").split() if label not in {d.label for d in found}]
    if env.get("CI") and (absent or "OI_MATRIX_KNOWN" not in env):
        raise RuntimeError(f"missing precondition in CI: versions of the matrix not started: {absent or 'OI_MATRIX_KNOWN unset'}")
    return found


def containerds() -> list[Daemons]:
    """The pairs of `matrix()` with a containerd version not seen before: two Docker stores on
    one containerd release need not run the containerd tests twice."""
    seen: set[str] = set()
    out = []
    for d in matrix():
        if d.containerd_version not in seen:
            seen.add(d.containerd_version)
            out.append(d)
    return out
