#!/usr/bin/env bash
# Build the importer image and save it so it can travel with a bundle.
#
#   scripts/build-image.sh            build the static binary, the image, and dist/offline-images-<version>.tar.gz
#
# Environment:
#   DOCKER_HOST   the dockerd to build on (default: the docker CLI's default)
#   IMAGE         image name (default: ghcr.io/offline-images/offline-images:<version>)
#   BINARY        an already built static binary; skips the cargo build
#   DOCKER        the docker CLI to use (default: /usr/bin/docker, else docker on PATH)
#   OUTPUT_DIR    where the archive is written (default: dist)
#
# The image is FROM scratch, so the build needs no network. The archive loads on a node with
# `gunzip -c offline-images-<version>.tar.gz | ctr -n k8s.io images import -` or `docker load -i ...`.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
[ -n "$VERSION" ] || die "no version found in Cargo.toml"
IMAGE=${IMAGE:-ghcr.io/offline-images/offline-images:$VERSION}
DOCKER=${DOCKER:-$(oi_docker_cli)}
[ -n "$DOCKER" ] && [ -x "$DOCKER" ] || die "no docker CLI found (set DOCKER)"
# The classic builder: it builds FROM scratch with no network and needs no buildx plugin.
export DOCKER_BUILDKIT=${DOCKER_BUILDKIT:-0}

if [ -z "${BINARY:-}" ]; then
  oi_install_rust_target
  say "building the static importer (release, musl)"
  cargo build --quiet --release --target x86_64-unknown-linux-musl
  BINARY=${CARGO_TARGET_DIR:-$ROOT/target}/x86_64-unknown-linux-musl/release/offline-images
fi
file_is_static "$BINARY" || die "$BINARY is missing or not a static executable"

# A build context with only the Dockerfile and the binary: nothing else is sent to dockerd.
CONTEXT=$(mktemp -d /tmp/offline-images-image.XXXXXX)
OUTPUT_DIR=${OUTPUT_DIR:-dist}
OUT=$OUTPUT_DIR/offline-images-$VERSION.tar.gz
# Nothing half-written is left behind: the archive appears under its name only when complete.
trap 'rm -rf "$CONTEXT" "$OUT.partial"' EXIT
cp Dockerfile "$CONTEXT/Dockerfile"
cp "$BINARY" "$CONTEXT/offline-images"

say "building $IMAGE"
"$DOCKER" build --quiet --build-arg BINARY=offline-images --build-arg "VERSION=$VERSION" \
  --tag "$IMAGE" "$CONTEXT" >/dev/null

mkdir -p "$OUTPUT_DIR"
say "saving $IMAGE to $OUT"
"$DOCKER" save "$IMAGE" | gzip -9 >"$OUT.partial"
mv "$OUT.partial" "$OUT"

# The result on stdout: the image and the archive, with their sizes.
human() { numfmt --to=iec-i --suffix=B --format=%.1f "$1"; }
size=$("$DOCKER" image inspect --format '{{.Size}}' "$IMAGE")
archive_size=$(stat -c %s "$OUT")
printf 'image    %s  %s (%s bytes)\n' "$IMAGE" "$(human "$size")" "$size"
printf 'archive  %s  %s (%s bytes)\n' "$OUT" "$(human "$archive_size")" "$archive_size"
