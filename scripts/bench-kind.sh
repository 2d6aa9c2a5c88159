#!/usr/bin/env bash
# Benchmark: `offline-images import --kind` against what `kind load image-archive` runs, archive
# by archive: `docker exec -i NODE ctr --namespace=k8s.io images import --all-platforms
# --digests -` into every node at once (kind loads one archive into the nodes concurrently), on
# two kind-shaped nodes (scripts/kind-node.sh), alternated in one run.
#
#   scripts/bench-kind.sh
#
# Environment: OI_DOCKER_HOST (a dockerd, e.g. the private one test.sh starts), OI_STATIC_BIN
# (the static importer), OI_REGISTRY (optional: a registry the images are pushed to, so that
# `offline-images export` writes them as the layout bundle an operator carries, and a third
# side imports that bundle), BENCH_ROUNDS (3), BENCH_IMAGES (4), and BENCH_SHAPE:
#   release (the default)  a release as the other benches build it: every image FROM one base
#                          layer of BENCH_BASE_MB (229) MiB of this machine's shared libraries,
#                          with BENCH_OWN_MB (64) MiB of real files of its own
#   random                 images of BENCH_MIB (64) MiB of random data each, sharing nothing
#                          but busybox (the shape of this bench's first runs)
# saved one per archive with `docker save`, as `kind load image-archive` takes them. Each round
# starts fresh nodes for each side; the re-run is timed on the nodes each side just loaded.
# Medians and ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
# shellcheck source=scripts/kind-node.sh
. scripts/kind-node.sh
: "${OI_DOCKER_HOST:?set OI_DOCKER_HOST to a dockerd socket (unix:///...)}"
: "${OI_STATIC_BIN:?set OI_STATIC_BIN to the static importer}"
ROUNDS=${BENCH_ROUNDS:-3} IMAGES=${BENCH_IMAGES:-4} MIB=${BENCH_MIB:-64} SHAPE=${BENCH_SHAPE:-release}
BASE_MB=${BENCH_BASE_MB:-229} OWN_MB=${BENCH_OWN_MB:-64}
export DOCKER_HOST=$OI_DOCKER_HOST
CLI=$(oi_docker_cli)
oi_kind_node_image
WORK=$(mktemp -d /tmp/oi-bench-kind.XXXXXX)
CLUSTERS=()
cleanup() {
  local c n
  for c in "${CLUSTERS[@]}"; do
    for n in control-plane worker; do
      "$CLI" rm -f -v "$c-$n" >/dev/null 2>&1 || true
      "$CLI" volume rm "$c-$n-var" >/dev/null 2>&1 || true
    done
  done
  "$CLI" image ls --format '{{.Repository}}:{{.Tag}}' | grep 'oi-bench/kind-' | xargs -r "$CLI" rmi >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# The images are named in the registry when there is one.
PREFIX=oi-bench
[ -z "${OI_REGISTRY:-}" ] || PREFIX=$OI_REGISTRY/oi-bench
REFS=()
# `docker save` of one image into the archives, named as the seed names them.
saved() {
  local name=${1//\//_}
  REFS+=("$1")
  "$CLI" save -o "$WORK/bundle/${name//:/_}.tar" "$1"
}

# The release: one base layer shared by every image, a layer of its own on each.
build_release() {
  local ctx=$WORK/ctx i src sources=(/usr/lib/llvm-14 /usr/lib/jvm /usr/share /usr/bin)
  DESCRIBED="$IMAGES images of a $BASE_MB MiB base layer shared by all and $OWN_MB MiB of their own"
  say "building $DESCRIBED"
  mkdir -p "$ctx/base"
  find_layer /usr/lib/x86_64-linux-gnu "$BASE_MB" "$ctx/base/layer.tar"
  printf 'FROM scratch\nADD layer.tar /\n' >"$ctx/base/Dockerfile"
  "$CLI" build -q -t oi-bench/kind-base:1 "$ctx/base" >/dev/null
  for i in $(seq 1 "$IMAGES"); do
    src=${sources[$(((i - 1) % ${#sources[@]}))]}
    mkdir -p "$ctx/app-$i"
    find_layer "$src" "$OWN_MB" "$ctx/app-$i/layer.tar" $((OWN_MB * ((i - 1) / ${#sources[@]})))
    printf 'FROM oi-bench/kind-base:1\nADD layer.tar /\nLABEL bench.kind="%s"\n' "$i" >"$ctx/app-$i/Dockerfile"
    "$CLI" build -q -t "$PREFIX/kind-$i:1" "$ctx/app-$i" >/dev/null
    saved "$PREFIX/kind-$i:1"
  done
}

# Images of random data, sharing nothing but busybox.
build_random() {
  local i
  DESCRIBED="$IMAGES images of $MIB MiB of random data each"
  say "building $DESCRIBED"
  cp /bin/busybox "$WORK/ctx/busybox"
  for i in $(seq 1 "$IMAGES"); do
    head -c "$((MIB << 20))" /dev/urandom >"$WORK/ctx/data"
    printf 'FROM scratch\nCOPY busybox /bin/busybox\nCOPY data /data\n' >"$WORK/ctx/Dockerfile"
    "$CLI" build -q -t "$PREFIX/kind-$i:1" "$WORK/ctx" >/dev/null
    saved "$PREFIX/kind-$i:1"
  done
}

mkdir -p "$WORK/bundle" "$WORK/ctx"
case $SHAPE in
  release) build_release ;;
  random) build_random ;;
  *) die "BENCH_SHAPE is release or random, not $SHAPE" ;;
esac
say "archives: $(du -sm "$WORK/bundle" | cut -f1) MiB ($(ls "$WORK/bundle" | wc -l) files)"
SIDES=(loop ours)
if [ -n "${OI_REGISTRY:-}" ]; then
  for r in "${REFS[@]}"; do "$CLI" push -q "$r" >/dev/null; done
  "$OI_STATIC_BIN" export --output "$WORK/layout" --insecure-registry "$OI_REGISTRY" --no-signatures \
    --cache-dir "$WORK/export-cache" "${REFS[@]}" 2>"$WORK/export.log" || { tail -20 "$WORK/export.log" >&2; die "export failed"; }
  say "layout bundle written by export: $(du -sm "$WORK/layout" | cut -f1) MiB"
  SIDES+=(layout)
fi

start_cluster() {
  local c=$1 n
  CLUSTERS+=("$c")
  for n in control-plane worker; do
    "$CLI" run -d --name "$c-$n" --cap-add SYS_ADMIN --cap-add NET_ADMIN --cap-add MKNOD \
      --security-opt seccomp=unconfined -v "$c-$n-var:/var" \
      --label "io.x-k8s.kind.cluster=$c" --label "io.x-k8s.kind.role=$n" \
      "$OI_KIND_NODE_IMAGE" /usr/bin/containerd >/dev/null
    wait_for "containerd in $c-$n" 60 "$CLI" exec "$c-$n" ctr version
  done
}

# kind's loop: `kind load image-archive` of each archive in turn, which streams the archive
# into every node at once.
kind_loop() {
  local c=$1 a n pids
  for a in "$WORK"/bundle/*.tar; do
    pids=()
    for n in control-plane worker; do
      "$CLI" exec -i "$c-$n" ctr --namespace=k8s.io images import --all-platforms --digests - <"$a" >/dev/null &
      pids+=($!)
    done
    for n in "${pids[@]}"; do wait "$n"; done
  done
}

# --no-disk-preflight: ctr checks no disk either; --strict: a failed archive stops the bench.
ours() {
  local c=$1 from=${2:-$WORK/bundle}
  "$OI_STATIC_BIN" import --kind "$c" --images-path "$from" --importer-binary "$OI_STATIC_BIN" \
    --strict --no-disk-preflight 2>>"$WORK/ours.log" || { tail -20 "$WORK/ours.log" >&2; return 1; }
}
layout() { ours "$1" "$WORK/layout"; }
loop() { kind_loop "$1"; }

seconds() { local t0 t1; t0=$(date +%s.%N); "$@"; t1=$(date +%s.%N); echo "$t1 - $t0" | bc; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

# Each round starts a fresh cluster per side; the sides' order turns by one each round.
: >"$WORK/times"
for r in $(seq 1 "$ROUNDS"); do
  order=()
  for i in "${!SIDES[@]}"; do order+=("${SIDES[$(((i + r - 1) % ${#SIDES[@]}))]}"); done
  for side in "${order[@]}"; do start_cluster "oi-bench-kind-$r-$side"; done
  for side in "${order[@]}"; do
    c="oi-bench-kind-$r-$side"
    echo "$side-first $(seconds "$side" "$c")" >>"$WORK/times"
    echo "$side-rerun $(seconds "$side" "$c")" >>"$WORK/times"
  done
  say "round $r: $(tail -$((2 * ${#SIDES[@]})) "$WORK/times" | tr '\n' ' ')"
done

m() { grep "^$1 " "$WORK/times" | awk '{print $2}' | median; }
runs() { grep "^$1 " "$WORK/times" | awk '{printf " %.2f", $2}'; }
printf '\n%s, 2 nodes, %s rounds (medians, seconds; runs in brackets)\n' "$DESCRIBED" "$ROUNDS"
row() { printf '%-52s %8.2f   (%s )\n' "$1" "$(m "$2")" "$(runs "$2")"; }
row "kind's loop, first load" loop-first
row "kind's loop, re-run" loop-rerun
row "import --kind, the same archives, first" ours-first
row "import --kind, the same archives, re-run" ours-rerun
ratio() { echo "$(m "$1") / $(m "$2")" | bc -l; }
printf 'the same archives: first %.3f of the loop, re-run %.3f of the loop'"'"'s re-run\n' \
  "$(ratio ours-first loop-first)" "$(ratio ours-rerun loop-rerun)"
if [ -n "${OI_REGISTRY:-}" ]; then
  row "import --kind, the layout bundle export wrote, first" layout-first
  row "import --kind, the layout bundle export wrote, re-run" layout-rerun
  printf 'the layout bundle: first %.3f of the loop, re-run %.3f of the loop'"'"'s re-run\n' \
    "$(ratio layout-first loop-first)" "$(ratio layout-rerun loop-rerun)"
fi
