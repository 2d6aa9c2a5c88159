#!/usr/bin/env bash
# The one test command. On a fresh Debian 12 machine, as root, it installs what it needs,
# starts private containerd, dockerd and registry daemons under a temp dir, builds the
# static importer, runs every test (Rust unit and integration tests, chart tests with the
# real Helm engine), and stops what it started, even when tests fail.
#
#   scripts/test.sh                 everything
#   scripts/test.sh -- FILTER       only Rust tests whose name contains FILTER (no chart tests;
#                                   OI_CONTAINERD_CLIENT=ctr runs the containerd ones with ctr)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

FILTER=()
if [ "${1:-}" = "--" ]; then shift; FILTER=("$@"); fi

oi_install_packages
oi_install_rust_target
VENV=${OI_VENV:-$ROOT/.venv}
oi_install_venv "$VENV" tests/requirements.txt

WORK=$(mktemp -d /tmp/offline-images-test.XXXXXX)
export OI_TMP=$WORK
trap 'oi_stop_all "$WORK"' EXIT
trap 'exit 130' INT TERM

say "building the static importer (release, musl)"
cargo build --quiet --release --target x86_64-unknown-linux-musl
export OI_STATIC_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/x86_64-unknown-linux-musl/release/offline-images
file_is_static "$OI_STATIC_BIN" || die "$OI_STATIC_BIN is not static"

say "starting containerd, dockerd and a registry under $WORK"
oi_start_containerd "$WORK"
oi_start_dockerd "$WORK"
oi_start_registry "$WORK"
export OI_DOCKER_CLI=$(oi_docker_cli)
export DOCKER_BUILDKIT=0

say "Rust tests"
cargo test --quiet -- "${FILTER[@]}"
if [ ${#FILTER[@]} -eq 0 ]; then
  say "the containerd suites again, with the ctr client (OI_CONTAINERD_CLIENT=ctr)"
  OI_CONTAINERD_CLIENT=ctr cargo test --quiet -- import:: reliability:: prune:: verify
fi

if [ ${#FILTER[@]} -eq 0 ] && [ -d tests/chart ]; then
  say "chart tests (real Helm engine)"
  "$VENV/bin/python" -m pytest -q tests/chart
fi
say "all tests passed"
