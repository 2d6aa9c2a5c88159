#!/usr/bin/env bash
# Export every image a release needs into a bundle directory, on a host that can reach the
# registries: one OCI image layout holding every blob once, plus SHA256SUMS and images.json
# (`-- --format archives` for one archive per image). Carry the directory to the air-gapped
# site and let the chart's import Job load it.
#
#   scripts/export-images.sh [CHART | VALUES.yaml] [IMAGES-DIR] [-- EXTRA ARGS...]
#
# CHART (a chart directory, a .tgz or oci://...) is rendered with `helm template` and the images
# its pods run are exported, indirect ones included (export --chart): the recommended way. A
# VALUES.yaml file is read as values instead (export --values), for when the chart is not at
# hand: the log then names every reference it had to guess. Default: the chart/ of this
# repository when helm is on PATH, else chart/values.yaml; images go to ./images. Arguments
# after the first two (or after `--`) go to `offline-images export` as they are, for example:
#
#   scripts/export-images.sh ./my-chart ./images -- -f site-values.yaml --kube-version 1.30.0
#   scripts/export-images.sh ./my-chart/values.yaml ./images -- --values site-values.yaml
#   scripts/export-images.sh ./my-chart ./release-2 -- --since ./images    (an upgrade)
#
# The binary: $OFFLINE_IMAGES if set, else `offline-images` on PATH, else one built here with
# `cargo build --release`. Registry credentials are those of the engine (docker login,
# podman login, skopeo login); this script never sees them.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)

usage() {
  sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
  exit "${1:-0}"
}

INPUT=
OUTPUT=./images
case "${1:-}" in -h|--help) usage 0 ;; esac
if [ $# -gt 0 ] && [ "$1" != "--" ] && [ "${1#-}" = "$1" ]; then INPUT=$1; shift; fi
if [ $# -gt 0 ] && [ "$1" != "--" ] && [ "${1#-}" = "$1" ]; then OUTPUT=$1; shift; fi
if [ "${1:-}" = "--" ]; then shift; fi

if [ -z "$INPUT" ]; then
  if command -v helm >/dev/null 2>&1; then
    INPUT=$ROOT/chart
  else
    INPUT=$ROOT/chart/values.yaml
    printf 'export-images: helm is not on PATH: reading %s as values (give a chart and install helm for exact images)\n' "$INPUT" >&2
  fi
fi
case "$INPUT" in
  oci://*|*.tgz) SOURCE=(--chart "$INPUT") ;;
  *)
    if [ -d "$INPUT" ]; then
      [ -f "$INPUT/Chart.yaml" ] || { printf 'export-images: %s is a directory without Chart.yaml\n' "$INPUT" >&2; exit 2; }
      SOURCE=(--chart "$INPUT")
    elif [ -f "$INPUT" ]; then
      SOURCE=(--values "$INPUT")
    else
      printf 'export-images: %s not found (give a chart directory, a .tgz, oci://... or a values file)\n' "$INPUT" >&2
      exit 2
    fi
    ;;
esac

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
exec "$BIN" export "${SOURCE[@]}" --output "$OUTPUT" "$@"
