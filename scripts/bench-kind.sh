#!/usr/bin/env bash
# Benchmark: `offline-images import --kind` against the loop `kind load image-archive` runs
# (`docker exec -i NODE ctr --namespace=k8s.io images import --all-platforms --digests -` per
# archive, per node), on two kind-shaped nodes (scripts/kind-node.sh), alternated in one run.
#
#   scripts/bench-kind.sh
#
# Environment: OI_DOCKER_HOST (a dockerd, e.g. the private one test.sh starts), OI_STATIC_BIN
# (the static importer), BENCH_ROUNDS (3), BENCH_IMAGES (4) images of BENCH_MIB (64) MiB of
# random data each, saved one per archive with `docker save`. Each round starts fresh nodes for
# each side; the re-run is timed on the nodes each side just loaded. Medians and ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
# shellcheck source=scripts/kind-node.sh
. scripts/kind-node.sh
: "${OI_DOCKER_HOST:?set OI_DOCKER_HOST to a dockerd socket (unix:///...)}"
: "${OI_STATIC_BIN:?set OI_STATIC_BIN to the static importer}"
ROUNDS=${BENCH_ROUNDS:-3} IMAGES=${BENCH_IMAGES:-4} MIB=${BENCH_MIB:-64}
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
  rm -rf "$WORK"
}
trap cleanup EXIT

say "building $IMAGES images of $MIB MiB each"
mkdir -p "$WORK/bundle" "$WORK/ctx"
cp /bin/busybox "$WORK/ctx/busybox"
for i in $(seq 1 "$IMAGES"); do
  head -c "$((MIB << 20))" /dev/urandom >"$WORK/ctx/data"
  printf 'FROM scratch\nCOPY busybox /bin/busybox\nCOPY data /data\n' >"$WORK/ctx/Dockerfile"
  "$CLI" build -q -t "oi-bench/kind-$i:1" "$WORK/ctx" >/dev/null
  "$CLI" save -o "$WORK/bundle/docker.io_oi-bench_kind-${i}_1.tar" "oi-bench/kind-$i:1"
done

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

# kind's loop: every archive into every node, one at a time.
kind_loop() {
  local c=$1 a n
  for n in control-plane worker; do
    for a in "$WORK"/bundle/*.tar; do
      "$CLI" exec -i "$c-$n" ctr --namespace=k8s.io images import --all-platforms --digests - <"$a" >/dev/null
    done
  done
}

# --no-disk-preflight: ctr checks no disk either; --strict: a failed archive stops the bench.
ours() {
  "$OI_STATIC_BIN" import --kind "$1" --images-path "$WORK/bundle" --importer-binary "$OI_STATIC_BIN" \
    --strict --no-disk-preflight 2>>"$WORK/ours.log" || { tail -20 "$WORK/ours.log" >&2; return 1; }
}

seconds() { local t0 t1; t0=$(date +%s.%N); "$@"; t1=$(date +%s.%N); echo "$t1 - $t0" | bc; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

: >"$WORK/times"
for r in $(seq 1 "$ROUNDS"); do
  start_cluster "oi-bench-kind-$r-loop"
  start_cluster "oi-bench-kind-$r-ours"
  if [ $((r % 2)) = 1 ]; then order=(loop ours); else order=(ours loop); fi
  for side in "${order[@]}"; do
    c="oi-bench-kind-$r-$side"
    if [ "$side" = loop ]; then
      echo "loop-first $(seconds kind_loop "$c")" >>"$WORK/times"
      echo "loop-rerun $(seconds kind_loop "$c")" >>"$WORK/times"
    else
      echo "ours-first $(seconds ours "$c")" >>"$WORK/times"
      echo "ours-rerun $(seconds ours "$c")" >>"$WORK/times"
    fi
  done
  say "round $r: $(tail -4 "$WORK/times" | tr '\n' ' ')"
done

m() { grep "^$1 " "$WORK/times" | awk '{print $2}' | median; }
lf=$(m loop-first) lr=$(m loop-rerun) of=$(m ours-first) orr=$(m ours-rerun)
printf '\n%s images x %s MiB, 2 nodes, %s rounds (medians, seconds)\n' "$IMAGES" "$MIB" "$ROUNDS"
printf '%-40s %8.2f\n' "kind's loop, first load" "$lf" "kind's loop, re-run" "$lr" \
  "import --kind, first" "$of" "import --kind, re-run" "$orr"
printf 'first: %.3f of the loop; re-run: %.3f of the loop (re-run against the loop'"'"'s re-run)\n' \
  "$(echo "$of / $lf" | bc -l)" "$(echo "$orr / $lr" | bc -l)"
