#!/usr/bin/env bash
# The whole offline round trip on this machine, from nothing, with an embedded default:
#
#   1. install what is needed (Debian packages, the musl target) and build the static binary;
#   2. start a private containerd, dockerd and registry under a temp dir (the system's own
#      daemons and sockets are never touched);
#   3. build two demo images FROM scratch (static busybox) and push them to the registry:
#      this is "the internet" of the demo;
#   4. export them, as a chart's values.yaml names them, into a bundle (the connected host);
#   5. import the bundle into containerd's k8s.io namespace and verify it (the air-gapped node);
#   6. run a container from an imported image;
#   7. stop everything and remove the temp dir (QUICKSTART_KEEP=1 keeps it).
#
# Run as root on Debian 12: scripts/quickstart.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

# Bold step titles on a terminal; plain text in a log.
if [ -t 2 ]; then B=$'\033[1m' N=$'\033[0m'; else B= N=; fi
step() { printf '\n%s### %s%s\n' "$B" "$*" "$N" >&2; }
show() { printf '$ %s\n' "$*" >&2; "$@"; }

step "1. Install what is needed and build the static importer"
oi_install_packages
oi_install_rust_target
BIN=$(oi_build_static)
say "built $BIN ($(du -h "$BIN" | cut -f1), static)"

WORK=$(mktemp -d /tmp/offline-images-quickstart.XXXXXX)
cleanup() {
  if [ "${QUICKSTART_KEEP:-0}" = 1 ]; then
    local n
    for n in registry docker containerd; do
      [ -f "$WORK/$n/pid" ] && kill "$(cat "$WORK/$n/pid")" 2>/dev/null || true
    done
    say "kept $WORK (daemons stopped)"
  else
    oi_stop_all "$WORK"
  fi
}
trap cleanup EXIT

step "2. Start a private containerd, dockerd and registry under $WORK"
oi_start_containerd "$WORK"
oi_start_dockerd "$WORK"
oi_start_registry "$WORK"
DOCKER=$(oi_docker_cli)
export DOCKER_HOST=$OI_DOCKER_HOST DOCKER_BUILDKIT=0
say "containerd: $OI_CONTAINERD_SOCK"
say "dockerd:    $OI_DOCKER_HOST"
say "registry:   http://$OI_REGISTRY"

step "3. Build two demo images FROM scratch and push them to the registry"
for name in hello world; do
  ctx=$WORK/build-$name
  mkdir -p "$ctx"
  cp /bin/busybox "$ctx/busybox"
  echo "Hello from the $name image, imported offline by offline-images." >"$ctx/message"
  printf 'FROM scratch\nCOPY busybox /bin/busybox\nCOPY message /message\nENTRYPOINT ["/bin/busybox"]\nCMD ["cat", "/message"]\n' >"$ctx/Dockerfile"
  show "$DOCKER" build -q -t "$OI_REGISTRY/demo/$name:1.0" "$ctx" >/dev/null
  show "$DOCKER" push -q "$OI_REGISTRY/demo/$name:1.0" >/dev/null
  # Gone from the local engine: the export must really pull.
  "$DOCKER" rmi -f "$OI_REGISTRY/demo/$name:1.0" >/dev/null
done

step "4. Export the images a chart's values.yaml names into a bundle"
cat >"$WORK/values.yaml" <<YAML
# The embedded default: a release with an app image (map form) and a sidecar (string form).
app:
  image:
    registry: $OI_REGISTRY
    repository: demo/hello
    tag: "1.0"
sidecar:
  image: $OI_REGISTRY/demo/world:1.0
YAML
show cat "$WORK/values.yaml"
show "$BIN" export --values "$WORK/values.yaml" --output "$WORK/images"
show ls -l "$WORK/images"
(cd "$WORK/images" && show sha256sum -c SHA256SUMS)
show "$BIN" verify --bundle-only --images-path "$WORK/images"

step "5. On the node: import the bundle into containerd (namespace k8s.io), then verify"
show "$BIN" import --images-path "$WORK/images" --runtime containerd \
  --containerd-address "$OI_CONTAINERD_SOCK" --namespace k8s.io
show "$BIN" import --images-path "$WORK/images" --runtime containerd \
  --containerd-address "$OI_CONTAINERD_SOCK" --namespace k8s.io
show "$BIN" verify --images-path "$WORK/images" --runtime containerd \
  --containerd-address "$OI_CONTAINERD_SOCK" --namespace k8s.io
show ctr -a "$OI_CONTAINERD_SOCK" -n k8s.io images ls

step "6. Run a container from an imported image"
show ctr -a "$OI_CONTAINERD_SOCK" -n k8s.io run --rm "$OI_REGISTRY/demo/hello:1.0" quickstart-hello

step "Done: exported, imported, verified and ran an image with no registry access on the node"
