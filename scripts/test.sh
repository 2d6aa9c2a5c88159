#!/usr/bin/env bash
# The one test command. On a fresh Debian 12 machine, as root, it installs what it needs,
# starts private containerd, dockerd and registry daemons under a temp dir, builds the
# static importer, runs every test (Rust unit and integration tests, chart tests with the
# real Helm engine), and stops what it started, even when tests fail.
#
#   scripts/test.sh                 everything
#   scripts/test.sh -- FILTER       only Rust tests whose name contains FILTER (no chart tests;
#                                   OI_CONTAINERD_CLIENT=ctr runs the containerd ones with ctr)
#   scripts/test.sh --chart [ARG...]  only the chart tests, with the daemons (ARGs go to pytest,
#                                   e.g. --chart tests/chart/test_job_container.py -k docker)
#
# Beside the default containerd 1.6 + Docker 20.10 pair, the daemons of every runtime version
# of the matrix are started (see scripts/lib.sh); OI_VERSIONS chooses them:
#   OI_VERSIONS=containerd-2.1 scripts/test.sh     the default pair and containerd 2.1's pairs
#   OI_VERSIONS=default scripts/test.sh            the default pair alone
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

FILTER=()
CHART_ONLY=()
if [ "${1:-}" = "--" ]; then shift; FILTER=("$@"); fi
if [ "${1:-}" = "--chart" ]; then shift; CHART_ONLY=(tests/chart); [ $# -eq 0 ] || CHART_ONLY=("$@"); fi

oi_install_packages
oi_install_rust_target
VENV=${OI_VENV:-$ROOT/.venv}
oi_install_venv "$VENV" tests/requirements.txt
# tests/bin/helm (the Helm engine as a `helm` command, for export --chart) runs on this Python.
export OI_PYTHON=$VENV/bin/python

# The directories and files one test binary's run left under $WORK (named LABEL-PID-N by the
# harness), removed once that run is over, so that the next suite starts with the disk they
# held: the whole run otherwise needs over 30 GB. What a daemon still has mounted stays.
free_test_dirs() {
  local before after
  before=$(df -Pk "$WORK" | awk 'NR==2 {print $4}')
  find "$WORK" -mindepth 1 -maxdepth 1 -regextype posix-extended \
    -regex '.*/[^/]+-[0-9]+-[0-9]+([.-][^/]*)?' -print0 |
    while IFS= read -r -d '' p; do
      grep -q " $p[/ ]" /proc/mounts || rm -rf "$p" 2>/dev/null || true
    done
  after=$(df -Pk "$WORK" | awk 'NR==2 {print $4}')
  say "freed $(( (after - before) / 1024 )) MiB of test files; $(( after / 1024 )) MiB free under $WORK"
}

WORK=$(mktemp -d /tmp/offline-images-test.XXXXXX)
export OI_TMP=$WORK
trap 'oi_stop_all "$WORK"' EXIT
trap 'exit 130' INT TERM

say "building the static binary (release, musl)"
OI_STATIC_BIN=$(oi_build_static)
export OI_STATIC_BIN
say "building the static node importer, without export (release, musl)"
OI_NODE_BIN=$(oi_build_static x86_64-unknown-linux-musl node)
export OI_NODE_BIN
oi_install_aarch64
say "building the static aarch64 node importer (release, musl)"
OI_AARCH64_BIN=$(oi_build_static aarch64-unknown-linux-musl node)
export OI_AARCH64_BIN

say "$(df -Ph "$WORK" | awk 'NR==2 {print $4}') free under $WORK"
say "starting containerd, dockerd and a registry under $WORK"
# The user of tests/it/kind.rs who reaches Docker through its socket alone: in the group
# `docker`, which must exist before dockerd starts so that dockerd gives it the socket; and
# the temp dir (mktemp makes it 0700) must let that user reach the socket.
# shellcheck source=scripts/kind-node.sh
. scripts/kind-node.sh
oi_kind_user
chmod 0711 "$WORK"
oi_start_containerd "$WORK"
oi_start_dockerd "$WORK"
oi_start_registry "$WORK"
# The kind-shaped node image of tests/it/kind.rs (debootstrap, cached under $OI_CACHE).
oi_kind_node_image
oi_start_matrix "$WORK"
# skopeo 1.22 (forky), for the archives only it writes (zstd layers).
OI_SKOPEO_122=$(oi_fetch_forky_skopeo)
export OI_SKOPEO_122
# crane 0.20 (forky), a writer of OCI layouts (`crane pull --format oci`) for the corpus.
OI_CRANE=$(oi_fetch_forky_crane)
export OI_CRANE
# podman 5 (forky), an archive writer of the corpus (see oi_fetch_forky_podman).
OI_PODMAN=$(oi_fetch_forky_podman)
export OI_PODMAN
# podman 4.3 (Debian 12's package, installed above): the podman runtime's tests use both.
OI_PODMAN4=$(command -v podman) || die "no podman on PATH: Debian 12's podman package is needed"
"$OI_PODMAN4" --version | grep -q 'version 4\.' || die "$OI_PODMAN4 is not podman 4: $("$OI_PODMAN4" --version)"
export OI_PODMAN4
# cosign 2.5 (trixie) and 3.1 (forky): the signature tests sign, attest and verify with both.
OI_COSIGN2=$(oi_fetch_cosign trixie)
export OI_COSIGN2
OI_COSIGN3=$(oi_fetch_cosign forky)
export OI_COSIGN3
# A public Sigstore signature and trusted root: the certificate check's test with a real log entry.
OI_SIGSTORE_DATA=$(oi_fetch_sigstore_data)
export OI_SIGSTORE_DATA
export OI_DOCKER_CLI=$(oi_docker_cli)
# The "Versions tested" table the versions test writes (OFFLINE-IMAGES.md carries a copy).
export OI_VERSIONS_TABLE=${OI_VERSIONS_TABLE:-${CARGO_TARGET_DIR:-$ROOT/target}/versions-tested.md}
export DOCKER_BUILDKIT=0

if [ ${#CHART_ONLY[@]} -gt 0 ]; then
  say "chart tests (real Helm engine): ${CHART_ONLY[*]}"
  "$VENV/bin/python" -m pytest -q -rs "${CHART_ONLY[@]}"
  say "chart tests passed"
  exit 0
fi

say "Rust tests"
cargo test --quiet -- "${FILTER[@]}"
if [ ${#FILTER[@]} -eq 0 ]; then
  free_test_dirs
  say "the containerd suites again, with the ctr client (OI_CONTAINERD_CLIENT=ctr)"
  OI_CONTAINERD_CLIENT=ctr cargo test --quiet -- import:: reliability:: prune:: verify
  free_test_dirs
fi

if [ ${#FILTER[@]} -eq 0 ]; then
  say "aarch64 unit tests (qemu-user)"
  cargo test --quiet --target aarch64-unknown-linux-musl --lib
fi

if [ ${#FILTER[@]} -eq 0 ] && [ -d tests/chart ]; then
  say "chart tests (real Helm engine)"
  "$VENV/bin/python" -m pytest -q -rs tests/chart
fi
[ -f "$OI_VERSIONS_TABLE" ] && say "versions tested: $OI_VERSIONS_TABLE"
say "all tests passed"
