#!/usr/bin/env bash
# Export every image a release needs into a bundle directory, on a host that can reach the
# registries: compressed archives plus SHA256SUMS and images.json. Carry the directory to the
# air-gapped site and let the chart's import Job load it.
#
#   scripts/export-images.sh [VALUES.yaml] [IMAGES-DIR] [-- EXTRA ARGS...]
#
# Defaults: chart/values.yaml and ./images. Arguments after the first two (or after `--`) go to
# `offline-images export` as they are, for example:
#
#   scripts/export-images.sh chart/values.yaml ./images --manifests rendered.yaml --jobs 4
#   helm template my-release chart/ | scripts/export-images.sh chart/values.yaml ./images -- --manifests -
#
# The binary: $OFFLINE_IMAGES if set, else `offline-images` on PATH, else one built here with
# `cargo build --release`. Registry credentials are those of the engine (docker login,
# podman login, skopeo login); this script never sees them.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)

usage() {
  sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
  exit "${1:-0}"
}

VALUES=$ROOT/chart/values.yaml
OUTPUT=./images
case "${1:-}" in -h|--help) usage 0 ;; esac
if [ $# -gt 0 ] && [ "$1" != "--" ] && [ "${1#-}" = "$1" ]; then VALUES=$1; shift; fi
if [ $# -gt 0 ] && [ "$1" != "--" ] && [ "${1#-}" = "$1" ]; then OUTPUT=$1; shift; fi
if [ "${1:-}" = "--" ]; then shift; fi

[ -f "$VALUES" ] || { printf 'export-images: values file %s not found\n' "$VALUES" >&2; exit 2; }

find_binary() {
  if [ -n "${OFFLINE_IMAGES:-}" ]; then
    [ -x "$OFFLINE_IMAGES" ] || { printf 'export-images: OFFLINE_IMAGES=%s is not executable\n' "$OFFLINE_IMAGES" >&2; exit 2; }
    echo "$OFFLINE_IMAGES"
  elif command -v offline-images >/dev/null 2>&1; then
    command -v offline-images
  else
    command -v cargo >/dev/null 2>&1 \
      || { printf 'export-images: offline-images is not on PATH and cargo is not installed to build it\n' >&2; exit 2; }
    printf 'export-images: building offline-images (cargo build --release)\n' >&2
    (cd "$ROOT" && cargo build --quiet --release --bin offline-images) >&2
    echo "${CARGO_TARGET_DIR:-$ROOT/target}/release/offline-images"
  fi
}

BIN=$(find_binary)
exec "$BIN" export --values "$VALUES" --output "$OUTPUT" "$@"
