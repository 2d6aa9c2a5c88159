#!/usr/bin/env bash
# Build the importer image and save it so it can travel with a bundle.
#
#   scripts/build-image.sh            build the static binaries, the image, and under dist/:
#                                     offline-images-<version>.tar.gz      the image for this machine (docker save)
#                                     offline-images-<version>.oci.tar     one OCI index, linux/amd64 and linux/arm64
#
# Environment:
#   DOCKER_HOST   the dockerd to build on (default: the docker CLI's default)
#   IMAGE         image name (default: ghcr.io/offline-images/offline-images:<version>)
#   BINARY        an already built static binary; skips the cargo builds
#   BINARY_ARM64  an already built static aarch64 binary: with BINARY, the OCI index is written too
#   DOCKER        the docker CLI to use (default: /usr/bin/docker, else docker on PATH)
#   OUTPUT_DIR    where the archive is written (default: dist)
#
# The image is FROM scratch, so the build needs no network. The archive loads on a node with
# `gunzip -c offline-images-<version>.tar.gz | ctr -n k8s.io images import -` or `docker load -i ...`.
set -euo pipefail
# A failing command inside $(...) fails the script too (the OCI index is built in them).
shopt -s inherit_errexit
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
  say "building the static node importer (release, musl, without export)"
  BINARY=$(oi_build_static x86_64-unknown-linux-musl node)
  oi_install_aarch64
  say "building the static aarch64 node importer (release, musl, without export)"
  BINARY_ARM64=$(oi_build_static aarch64-unknown-linux-musl node)
fi
file_is_static "$BINARY" || die "$BINARY is missing or not a static executable"
if [ -n "${BINARY_ARM64:-}" ]; then
  file_is_static "$BINARY_ARM64" || die "$BINARY_ARM64 is missing or not a static executable"
fi

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

# One OCI image index for both node architectures, written as an OCI image layout: per
# architecture a layer (the binary alone, as the Dockerfile's COPY puts it), a config with the
# Dockerfile's entrypoint, command and labels, and a manifest; the index names the image.
sha() { sha256sum "$1" | cut -d' ' -f1; }
oi_blob() { local d; d=$(sha "$1"); mv "$1" "$LAYOUT/blobs/sha256/$d"; echo "$d"; }
oi_platform_manifest() { # BINARY ARCH -> "digest size"
  local bin=$1 arch=$2 dir=$LAYOUT.$2 diff layer config manifest labels
  mkdir -p "$dir"
  install -m 0755 "$bin" "$dir/offline-images"
  tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$dir" -cf "$dir.tar" offline-images
  diff=$(sha "$dir.tar")
  gzip -n -9 -c "$dir.tar" >"$dir.tar.gz"
  layer=$(oi_blob "$dir.tar.gz")
  labels='"org.opencontainers.image.title":"offline-images","org.opencontainers.image.source":"https://github.com/offline-images/offline-images","org.opencontainers.image.version":"'$VERSION'","org.opencontainers.image.licenses":"Apache-2.0"'
  printf '{"architecture":"%s","os":"linux","config":{"Entrypoint":["/offline-images"],"Cmd":["import"],"Labels":{%s}},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
    "$arch" "$labels" "$diff" >"$dir.config"
  local config_size; config_size=$(stat -c %s "$dir.config")
  config=$(oi_blob "$dir.config")
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%s}]}' \
    "$config" "$config_size" "$layer" "$(stat -c %s "$LAYOUT/blobs/sha256/$layer")" >"$dir.manifest"
  local manifest_size; manifest_size=$(stat -c %s "$dir.manifest")
  manifest=$(oi_blob "$dir.manifest")
  rm -rf "$dir" "$dir.tar"
  echo "$manifest $manifest_size"
}
if [ -n "${BINARY_ARM64:-}" ]; then
  INDEX_OUT=$OUTPUT_DIR/offline-images-$VERSION.oci.tar
  LAYOUT=$CONTEXT/layout
  trap 'rm -rf "$CONTEXT" "$OUT.partial" "$INDEX_OUT.partial"' EXIT
  mkdir -p "$LAYOUT/blobs/sha256"
  m=$(oi_platform_manifest "$BINARY" amd64)
  read -r amd64 amd64_size <<<"$m"
  m=$(oi_platform_manifest "$BINARY_ARM64" arm64)
  read -r arm64 arm64_size <<<"$m"
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"platform":{"architecture":"amd64","os":"linux"}},{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"platform":{"architecture":"arm64","os":"linux"}}]}' \
    "$amd64" "$amd64_size" "$arm64" "$arm64_size" >"$LAYOUT/index.blob"
  index_size=$(stat -c %s "$LAYOUT/index.blob")
  index=$(oi_blob "$LAYOUT/index.blob")
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"sha256:%s","size":%s,"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"}}]}' \
    "$index" "$index_size" "$IMAGE" "${IMAGE##*:}" >"$LAYOUT/index.json"
  printf '{"imageLayoutVersion":"1.0.0"}' >"$LAYOUT/oci-layout"
  say "writing the OCI index of $IMAGE (linux/amd64, linux/arm64) to $INDEX_OUT"
  tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$LAYOUT" -cf "$INDEX_OUT.partial" oci-layout index.json blobs
  mv "$INDEX_OUT.partial" "$INDEX_OUT"
fi

# The result on stdout: the image and the archive, with their sizes.
human() { numfmt --to=iec-i --suffix=B --format=%.1f "$1"; }
size=$("$DOCKER" image inspect --format '{{.Size}}' "$IMAGE")
archive_size=$(stat -c %s "$OUT")
printf 'image    %s  %s (%s bytes)\n' "$IMAGE" "$(human "$size")" "$size"
printf 'archive  %s  %s (%s bytes)\n' "$OUT" "$(human "$archive_size")" "$archive_size"
if [ -n "${INDEX_OUT:-}" ]; then
  index_size=$(stat -c %s "$INDEX_OUT")
  printf 'index    %s  %s (%s bytes; linux/amd64, linux/arm64)\n' "$INDEX_OUT" "$(human "$index_size")" "$index_size"
fi
