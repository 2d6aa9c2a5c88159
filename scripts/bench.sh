#!/usr/bin/env bash
# Benchmarks: offline-images against the commands operators run today. Numbers come from
# here, never from timed tests.
#
#   scripts/bench.sh [SECTION...]      default: every section, in the order below
#
# Sections:
#   import-containerd  first import of a bundle into containerd (k8s.io):
#                      `offline-images import` vs `gzip -dc | ctr images import` per archive
#   rerun              the same two on a bundle already imported, for the bundle as
#                      `offline-images export` wrote it and as `docker save | gzip` wrote it
#   rerun-other        (not in the default set) re-run on a foreign bundle that the ctr loop,
#                      not offline-images, imported before
#   import-docker      first import into Docker: `offline-images import` vs `docker load -i`
#   export             export from a registry: `offline-images export` vs
#                      `docker pull && docker save | gzip` per image
#   export-registry    the registry engine (cold blob cache) in the same run as
#                      `docker pull && docker save | gzip` and `skopeo copy ... oci-archive:`,
#                      then export-reexport
#   export-reexport    (in export-registry) first export, then a re-export with one image
#                      changed, BENCH_ROUNDS times; medians and their ratio
#   bundle             `export --format layout` (one OCI layout, every blob once) of a release of
#                      BENCH_BUNDLE_IMAGES (4) images on one ~229 MiB base layer: its size against
#                      the unique blob bytes; the first export (cold cache) against skopeo 1.22
#                      (`oci:DIR:REF --dest-shared-blob-dir`, per image) and crane 0.20 (`pull
#                      --format oci`); a re-export after an upgrade (one image gains a layer):
#                      bytes written and time; the first import of the layout into containerd
#                      against the ctr loop over per-image `docker save | gzip` archives
#   push               `push` of the bundle section's layout into an empty registry against skopeo
#                      1.22 (`oci:BUNDLE:REF` per image) and crane 0.20 (`copy` per image, from
#                      the source registry); then a re-push into a registry holding everything
#   list-memory        peak RSS and time of `offline-images list` on a 2 GiB archive, plain and gzip
#   import-memory      peak RSS of `offline-images import` of that 2 GiB archive (gzip) into containerd
#   entries-memory     peak RSS of `offline-images import` of a tar of BENCH_ENTRIES (default
#                      3,000,000) empty entries beside a good archive: memory must not grow
#                      with the number of entries; the good archive must import
#   podman             (not in the default set) first import of the exported bundle into a private
#                      containers-storage (overlay; what CRI-O reads): `offline-images import
#                      --runtime podman` vs `gzip -dc | podman load` per archive, Debian 12's podman 4.3
#                      (BENCH_PODMAN for another); then both again over images already there
#   native             (not in the default set) the containerd clients side by side, on the
#                      exported bundle: first import (native vs the ctr loop, and ours on
#                      `ctr` with BENCH_CTR_CLIENT=1, and one archive at a time with
#                      BENCH_SEQUENTIAL=1), an upgrade where one image changed (its base layer shared),
#                      and a re-run over images the ctr loop imported; also one at a time:
#                      native-first, native-upgrade, native-rerun-other
#
# The import, rerun and export sections start private containerd, dockerd and registry daemons
# under a temp dir (import-memory starts only those), and build a bundle offline: BENCH_IMAGES images (FROM scratch, `docker build`)
# made of real files of this machine, sharing one base layer (/usr/lib/x86_64-linux-gnu) and
# each adding a layer of its own (/usr/lib/llvm-14, /usr/lib/jvm, /usr/share, /usr/bin, ...),
# BENCH_TOTAL_MB in all (the sum of the images' uncompressed sizes; half of each image is
# the shared base). They are pushed to the registry, saved with `docker save | gzip` (the
# "foreign" bundle, no images.json) and exported with `offline-images export` (the
# "exported" bundle, with SHA256SUMS and images.json).
#
# Contenders run alternately (ABAB...) for BENCH_ROUNDS rounds, the runtime reset between
# runs (images removed and their content and snapshots collected); the median of each and the
# ratio ours/theirs are printed. The wall time is the whole command; the peak RSS of
# offline-images is its own (VmHWM, sampled every 50 ms; children such as ctr or docker are
# not counted), the "tree" RSS is GNU time's (the largest of the process and its children).
#
# Environment: BENCH_DIR (parent of the scratch dir, default /tmp; needs ~4x BENCH_TOTAL_MB
# plus 3x BENCH_SIZE_MB free), BENCH_IMAGES (default 3), BENCH_TOTAL_MB (default 600),
# BENCH_ROUNDS (default 3), BENCH_SIZE_MB (the archive of list-memory and import-memory,
# default 2048), BENCH_BUNDLE_IMAGES, BENCH_BUNDLE_BASE_MB, BENCH_BUNDLE_OWN_MB and
# BENCH_BUNDLE_NEW_MB (the bundle section's release: 4 images, a 229 MiB base layer, 64 MiB of
# their own, a 192 MiB layer added by the upgrade), BENCH_OUT (results file, default
# target/bench/results.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

ALL_SECTIONS=(import-containerd rerun import-docker export export-registry bundle push list-memory import-memory entries-memory)
SECTIONS=("$@")
[ ${#SECTIONS[@]} -gt 0 ] || SECTIONS=("${ALL_SECTIONS[@]}")
SIZE_MB=${BENCH_SIZE_MB:-2048}
IMAGES=${BENCH_IMAGES:-3}
TOTAL_MB=${BENCH_TOTAL_MB:-600}
ROUNDS=${BENCH_ROUNDS:-3}
OUT=${BENCH_OUT:-$ROOT/target/bench/results.txt}
mkdir -p "$(dirname "$OUT")"

oi_install_packages
oi_install_rust_target
say "building the static importer (release, musl)"
BIN=$(oi_build_static)

mkdir -p "${BENCH_DIR:-/tmp}"
WORK=$(mktemp -d "${BENCH_DIR:-/tmp}/offline-images-bench.XXXXXX")
trap 'oi_stop_all "$WORK"' EXIT
trap 'exit 130' INT TERM

record() { printf '%s\n' "$*" | tee -a "$OUT"; }

machine() {
  printf '%s, %s cores, %s, kernel %s' "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)" \
    "$(nproc)" "$(free -g | awk '/Mem:/{print $2 " GiB"}')" "$(uname -r)"
}

# peak RSS (KiB) and wall seconds of a command, from GNU time.
measure() {
  local log=$WORK/time.log
  /usr/bin/time -f '%M %e' -o "$log" "$@" >/dev/null
  cat "$log"
}

# run LOG CMD...: run a command to its end, output to LOG. Sets SECS (wall), TREE_KB (GNU
# time's peak RSS: the largest of the command and its children) and SELF_KB (VmHWM of the
# command's own process, sampled). A failed command ends the benchmark: its numbers would lie.
run() {
  local log=$1 tlog=$WORK/run.time child='' st k v _x start end rc=0
  shift
  SELF_KB=0
  start=$(date +%s.%N)
  /usr/bin/time -f '%M' -o "$tlog" "$@" >"$log" 2>&1 &
  local tpid=$!
  while :; do
    if [ -z "$child" ] && [ -r "/proc/$tpid/task/$tpid/children" ]; then
      read -r child _x <"/proc/$tpid/task/$tpid/children" || true
    fi
    if [ -n "$child" ] && [ -r "/proc/$child/status" ]; then
      while read -r k v _x; do
        [ "$k" = VmHWM: ] && { [ "$v" -gt "$SELF_KB" ] && SELF_KB=$v; break; }
      done <"/proc/$child/status" 2>/dev/null || true
    fi
    st=Z
    [ -r "/proc/$tpid/stat" ] && read -r _x _x st _x <"/proc/$tpid/stat" 2>/dev/null
    [ "$st" = Z ] && break
    sleep 0.05
  done
  wait "$tpid" || rc=$?
  end=$(date +%s.%N)
  SECS=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2f", b - a }')
  TREE_KB=$(tail -1 "$tlog" | tr -dc 0-9)
  if [ "$rc" != 0 ]; then
    tail -30 "$log" >&2
    die "failed (exit $rc): $* (log: $log)"
  fi
}

median() { printf '%s\n' "$@" | sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
max() { printf '%s\n' "$@" | sort -n | tail -1; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

# ---------------------------------------------------------------------------------------------
# The daemons and the bundle.

DOCKER=
DAEMONS_UP=
BUNDLE_BUILT=
start_daemons() {
  [ -z "$DAEMONS_UP" ] || return 0
  DAEMONS_UP=1
  say "starting containerd, dockerd and a registry under $WORK"
  oi_start_containerd "$WORK"
  oi_start_dockerd "$WORK"
  oi_start_registry "$WORK"
  DOCKER=$(oi_docker_cli)
  export DOCKER_HOST=$OI_DOCKER_HOST DOCKER_BUILDKIT=0
}

setup() {
  start_daemons
  [ -z "$BUNDLE_BUILT" ] || return 0
  BUNDLE_BUILT=1
  build_images
}

# The images' references, in the registry.
REFS=()

build_images() {
  local ctx=$WORK/build per base own i src
  local sources=(/usr/lib/llvm-14 /usr/lib/jvm /usr/share /usr/bin /usr/lib/gcc /usr/lib/python3.11)
  per=$((TOTAL_MB / IMAGES))
  base=$((per / 2))
  own=$((per - base))
  say "building $IMAGES images of ~$per MiB each (a $base MiB base layer shared by all, $own MiB of their own)"
  mkdir -p "$ctx/base"
  find_layer /usr/lib/x86_64-linux-gnu "$base" "$ctx/base/layer.tar"
  printf 'FROM scratch\nADD layer.tar /\n' >"$ctx/base/Dockerfile"
  "$DOCKER" build -q -t bench/base:1 "$ctx/base" >/dev/null
  rm -f "$ctx/base/layer.tar"
  for i in $(seq 1 "$IMAGES"); do
    src=${sources[$(((i - 1) % ${#sources[@]}))]}
    mkdir -p "$ctx/app-$i"
    # Past the list of trees, the next images take the files after those already taken, so
    # no two images share their own layer.
    find_layer "$src" "$own" "$ctx/app-$i/layer.tar" $((own * ((i - 1) / ${#sources[@]})))
    printf 'FROM bench/base:1\nADD layer.tar /\nLABEL bench.image="%s"\n' "$i" >"$ctx/app-$i/Dockerfile"
    "$DOCKER" build -q -t "$OI_REGISTRY/bench/app-$i:1" "$ctx/app-$i" >/dev/null
    rm -f "$ctx/app-$i/layer.tar"
    REFS+=("$OI_REGISTRY/bench/app-$i:1")
  done
  rm -rf "$ctx"
  say "pushing to $OI_REGISTRY"
  for r in "${REFS[@]}"; do "$DOCKER" push -q "$r" >/dev/null; done
  "$DOCKER" image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep bench/app | sed 's/^/    /' >&2

  say "writing the foreign bundle (docker save | gzip)"
  FOREIGN=$WORK/foreign
  mkdir -p "$FOREIGN"
  for r in "${REFS[@]}"; do "$DOCKER" save "$r" | gzip >"$FOREIGN/$(file_of "$r").tar.gz"; done
  reset_docker
  say "writing the exported bundle (offline-images export)"
  EXPORTED=$WORK/exported
  # --engine docker: the import sections compare gzip bundles, as docker save writes them.
  "$BIN" export --engine docker --output "$EXPORTED" "${REFS[@]}" 2>"$WORK/export-prep.log" ||
    { tail "$WORK/export-prep.log" >&2; die "offline-images export failed"; }
  reset_docker
  record "bundle: $IMAGES images, $(du -cm "$FOREIGN"/*.tar.gz | tail -1 | cut -f1) MiB as docker save | gzip wrote them, $(du -cm "$EXPORTED"/*.tar.gz | tail -1 | cut -f1) MiB as offline-images export wrote them; uncompressed $(uncompressed_mb "$FOREIGN") MiB"
}

uncompressed_mb() {
  local f total=0
  for f in "$1"/*.tar.gz; do total=$((total + $(gzip -dc "$f" | wc -c))); done
  echo $((total / 1024 / 1024))
}

# A reference as a file name, the way operators usually name them.
file_of() { echo "$1" | tr '/:' '__'; }

# ---------------------------------------------------------------------------------------------
# Resetting the runtimes between runs.

ctr_() { ctr -a "$OI_CONTAINERD_SOCK" -n k8s.io "$@"; }

# Remove every image of k8s.io; containerd then collects their content and snapshots (with
# --sync, before ctr returns). What is left is checked, so a reset that leaves data behind
# shows up in the results instead of making later runs faster.
reset_containerd() {
  local imgs
  imgs=$(ctr_ images ls -q)
  # shellcheck disable=SC2086
  [ -z "$imgs" ] || ctr_ images rm --sync $imgs >/dev/null
  LEFT="images=$(ctr_ images ls -q | wc -l) content=$(ctr_ content ls -q | wc -l) snapshots=$(ctr_ snapshots ls | tail -n +2 | wc -l) leases=$(ctr_ leases ls -q | wc -l)"
  [ "$LEFT" = "images=0 content=0 snapshots=0 leases=0" ] || say "containerd after reset: $LEFT"
}

reset_docker() {
  local ids
  ids=$("$DOCKER" images -aq | sort -u)
  # shellcheck disable=SC2086
  [ -z "$ids" ] || "$DOCKER" rmi -f $ids >/dev/null 2>&1 || true
  "$DOCKER" image prune -af >/dev/null
  LEFT="images=$("$DOCKER" images -aq | wc -l) layers=$(find "$WORK/docker/data/overlay2" -mindepth 1 -maxdepth 1 -type d ! -name l 2>/dev/null | wc -l)"
  [ "$LEFT" = "images=0 layers=0" ] || say "docker after reset: $LEFT"
}

# ---------------------------------------------------------------------------------------------
# Comparing contenders.

# compare NAME GOAL RESET CONTENDER... : each contender is a function name, ours_* or
# theirs_*; every ours_* is measured against the next theirs_* (or, if none follows, the one
# before it). RESET (a function, or `:`) runs before every run. Medians, ratios and the goal
# go to the results.
compare() {
  local name=$1 goal=$2 reset=$3 r c i
  shift 3
  local contenders=("$@")
  declare -A times=() self=() tree=()
  for r in $(seq 1 "$ROUNDS"); do
    for c in "${contenders[@]}"; do
      "$reset"
      "$c" "$WORK/$name.$c.$r.log"
      times[$c]+="$SECS "
      self[$c]+="$SELF_KB "
      tree[$c]+="$TREE_KB "
      record "  round $r: $c ${SECS}s, own peak RSS $(mib "$SELF_KB") MiB, tree $(mib "$TREE_KB") MiB (load average $(cut -d" " -f1 /proc/loadavg))"
    done
  done
  [ "$reset" = : ] || record "  state after reset: $LEFT"
  for c in "${contenders[@]}"; do
    # shellcheck disable=SC2086
    record "  $c: median $(median ${times[$c]})s (runs: ${times[$c]% }), peak RSS own $(mib "$(max ${self[$c]})") MiB, tree $(mib "$(max ${tree[$c]})") MiB"
    record "    \$ $(describe "$c")"
  done
  for ((i = 0; i < ${#contenders[@]}; i++)); do
    local ours=${contenders[$i]} theirs='' j ratio verdict
    [[ $ours == ours_* ]] || continue
    for ((j = i + 1; j < ${#contenders[@]}; j++)); do
      [[ ${contenders[$j]} == theirs_* ]] && { theirs=${contenders[$j]}; break; }
    done
    for ((j = i - 1; j >= 0; j--)); do
      [ -z "$theirs" ] || break
      [[ ${contenders[$j]} == theirs_* ]] && theirs=${contenders[$j]}
    done
    # shellcheck disable=SC2086
    ratio=$(awk -v a="$(median ${times[$ours]})" -v b="$(median ${times[$theirs]})" 'BEGIN { printf "%.3f", a / b }')
    verdict=$(awk -v r="$ratio" -v g="${goal#<=}" 'BEGIN { print (r <= g) ? "met" : "MISSED" }')
    record "  RESULT $name $ours/$theirs = $ratio (goal $goal: $verdict)"
  done
  # The importer's and exporter's own peak RSS, against the goal.
  for c in "${contenders[@]}"; do
    case $c in
    ours_*)
      # shellcheck disable=SC2086
      local peak=$(max ${self[$c]})
      record "  RESULT $name $c peak RSS $(mib "$peak") MiB (goal <= 64 MiB: $( [ "$peak" -le 65536 ] && echo met || echo MISSED))"
      ;;
    esac
  done
}

# The exact command a contender runs, for the results.
describe() {
  case $1 in
  ours_ctr_exported) echo "offline-images import --images-path EXPORTED --runtime containerd --containerd-address SOCK --namespace k8s.io" ;;
  ours_native_exported) echo "offline-images import --images-path EXPORTED --runtime containerd --containerd-client native --containerd-address SOCK --namespace k8s.io" ;;
  ours_native1_exported) echo "offline-images import --images-path EXPORTED --runtime containerd --containerd-client native --containerd-address SOCK --namespace k8s.io --jobs 1" ;;
  ours_native_upgraded) echo "offline-images import --images-path UPGRADED --runtime containerd --containerd-client native --containerd-address SOCK --namespace k8s.io" ;;
  ours_native_foreign) echo "offline-images import --images-path FOREIGN --runtime containerd --containerd-client native --containerd-address SOCK --namespace k8s.io" ;;
  ours_ctrclient_exported) echo "offline-images import --images-path EXPORTED --runtime containerd --containerd-client ctr --containerd-address SOCK --namespace k8s.io" ;;
  theirs_ctr_upgraded) echo "for f in UPGRADED/*.tar.gz; do gzip -dc \$f | ctr -a SOCK -n k8s.io images import --digests -; done" ;;
  ours_ctr_foreign) echo "offline-images import --images-path FOREIGN --runtime containerd --containerd-address SOCK --namespace k8s.io" ;;
  theirs_ctr_exported) echo "for f in EXPORTED/*.tar.gz; do gzip -dc \$f | ctr -a SOCK -n k8s.io images import --digests -; done" ;;
  theirs_ctr_foreign) echo "for f in FOREIGN/*.tar.gz; do gzip -dc \$f | ctr -a SOCK -n k8s.io images import --digests -; done" ;;
  ours_docker) echo "offline-images import --images-path EXPORTED --runtime docker --docker-host unix://SOCK" ;;
  theirs_docker) echo "for f in EXPORTED/*.tar.gz; do docker load -i \$f; done" ;;
  ours_export) echo "offline-images export --engine docker --output OUT REF... (DOCKER_HOST=unix://SOCK)" ;;
  ours_registry) echo "offline-images export --engine registry --cache-dir EMPTY-CACHE --output OUT REF..." ;;
  theirs_skopeo_oci) echo "for r in REF...; do skopeo copy --src-tls-verify=false docker://\$r oci-archive:OUT/\$(echo \$r | tr /: __).tar; done" ;;
  ours_export_skopeo) echo "offline-images export --engine skopeo --output OUT REF..." ;;
  theirs_export) echo "for r in REF...; do docker pull \$r && docker save \$r | gzip > OUT/\$(echo \$r | tr /: __).tar.gz; done" ;;
  ours_layout) echo "offline-images export --format layout --cache-dir EMPTY-CACHE --output OUT REF..." ;;
  theirs_skopeo_layout) echo "for r in REF...; do skopeo copy --src-tls-verify=false --dest-shared-blob-dir OUT/shared docker://\$r oci:OUT/layout:\$r; done (skopeo 1.22)" ;;
  theirs_crane_layout) echo "crane pull --insecure --format oci REF... OUT/layout (crane 0.20)" ;;
  ours_push) echo "offline-images push --images-path BUNDLE --to SITE/bench --insecure-registry SITE" ;;
  theirs_skopeo_push) echo "for r in REF...; do skopeo copy --dest-tls-verify=false oci:BUNDLE:\$r docker://SITE/bench/...; done (skopeo 1.22)" ;;
  theirs_crane_push) echo "for r in REF...; do crane copy --insecure \$r SITE/bench/...; done (crane 0.20, from the registry the bundle came from)" ;;
  ours_podman) echo "offline-images import --images-path EXPORTED --runtime podman --storage-root ROOT --run-root RUN --storage-driver overlay" ;;
  theirs_podman) echo "for f in EXPORTED/*.tar.gz; do gzip -dc \$f | podman --root ROOT --runroot RUN --storage-driver overlay load -q; done" ;;
  ours_layout_import) echo "offline-images import --images-path LAYOUT-BUNDLE --runtime containerd --containerd-address SOCK --namespace k8s.io" ;;
  theirs_ctr_bundle) echo "for f in FOREIGN/*.tar.gz; do gzip -dc \$f | ctr -a SOCK -n k8s.io images import --digests -; done (docker save REF | gzip per image)" ;;
  esac
}

# An import that exits 0 may still have failed archives (tolerant mode): its numbers would lie.
all_archives_done() { grep -q '^summary: .* 0 failed' "$1" || die "not every archive was imported (log: $1)"; }

import_ctr() {
  run "$1" "$BIN" import --images-path "$2" --runtime containerd \
    --containerd-address "$OI_CONTAINERD_SOCK" --namespace k8s.io
  all_archives_done "$1"
}
ctr_loop() {
  run "$1" bash -c 'set -eo pipefail; for f in "$1"/*.tar.gz; do gzip -dc "$f" | ctr -a "$2" -n k8s.io images import --digests -; done' \
    _ "$2" "$OI_CONTAINERD_SOCK"
}
ours_ctr_exported() { import_ctr "$1" "$EXPORTED"; }
ours_ctr_foreign() { import_ctr "$1" "$FOREIGN"; }
theirs_ctr_exported() { ctr_loop "$1" "$EXPORTED"; }
theirs_ctr_foreign() { ctr_loop "$1" "$FOREIGN"; }

ours_docker() {
  run "$1" "$BIN" import --images-path "$EXPORTED" --runtime docker --docker-host "$OI_DOCKER_HOST"
  all_archives_done "$1"
}
theirs_docker() {
  run "$1" bash -c 'set -e; for f in "$1"/*.tar.gz; do "$2" load -i "$f"; done' _ "$EXPORTED" "$DOCKER"
}

reset_export() { reset_docker; rm -rf "$WORK/export-out" "$WORK/export-cache"; mkdir -p "$WORK/export-out"; }
ours_export() { run "$1" "$BIN" export --engine docker --output "$WORK/export-out" "${REFS[@]}"; }
ours_registry() { run "$1" "$BIN" export --engine registry --cache-dir "$WORK/export-cache" --output "$WORK/export-out" "${REFS[@]}"; }
theirs_skopeo_oci() {
  run "$1" bash -c 'set -e; d=$1; shift
    for r in "$@"; do skopeo copy --quiet --src-tls-verify=false "docker://$r" "oci-archive:$d/$(echo "$r" | tr /: __).tar"; done' \
    _ "$WORK/export-out" "${REFS[@]}"
}
ours_export_skopeo() { run "$1" "$BIN" export --engine skopeo --insecure-registry "$OI_REGISTRY" --output "$WORK/export-out" "${REFS[@]}"; }
theirs_export() {
  run "$1" bash -c 'set -eo pipefail; d=$1 docker=$2; shift 2
    for r in "$@"; do "$docker" pull -q "$r" && "$docker" save "$r" | gzip >"$d/$(echo "$r" | tr /: __).tar.gz"; done' \
    _ "$WORK/export-out" "$DOCKER" "${REFS[@]}"
}

# ---------------------------------------------------------------------------------------------
# Sections.

section_import_containerd() {
  setup
  record "import-containerd: first import into containerd (namespace k8s.io), both on the exported bundle"
  compare import-containerd '<=0.75' reset_containerd ours_ctr_exported theirs_ctr_exported
  reset_containerd
}

section_rerun() {
  setup
  record "rerun: import again a bundle offline-images imported before (the hook Job of an upgrade)"
  reset_containerd
  import_ctr "$WORK/rerun.prep-exported.log" "$EXPORTED"
  import_ctr "$WORK/rerun.prep-foreign.log" "$FOREIGN"
  compare rerun-exported '<=0.05' : ours_ctr_exported theirs_ctr_exported
  compare rerun-foreign '<=0.3' : ours_ctr_foreign theirs_ctr_foreign
  reset_containerd
}

# Not in the default set: a foreign bundle whose images some other tool (the loop) imported,
# so no archive carries offline-images' labels yet. Each run starts from that state.
reset_loop_imported() {
  reset_containerd
  theirs_ctr_foreign "$WORK/rerun-other.prep.log"
  LEFT="$LEFT; then the foreign bundle imported by the ctr loop"
}
section_rerun_other() {
  setup
  record "rerun-other: import a foreign bundle whose images the ctr loop imported before"
  compare rerun-other '<=0.3' reset_loop_imported ours_ctr_foreign theirs_ctr_foreign
  reset_containerd
}

section_import_docker() {
  setup
  record "import-docker: first import into Docker, both on the exported bundle"
  compare import-docker '<=1.05' reset_docker ours_docker theirs_docker
  reset_docker
}

# The exported bundle into a private containers-storage, against the `podman load -i` loop.
PODMAN=
PODMAN_RUN=
podman_() { "$PODMAN" --root "$WORK/podman" --runroot "$PODMAN_RUN" --storage-driver overlay --cgroup-manager cgroupfs "$@"; }
reset_podman() {
  local ids
  ids=$(podman_ images -aq | sort -u)
  # shellcheck disable=SC2086
  [ -z "$ids" ] || podman_ rmi -f $ids >/dev/null 2>&1 || true
  LEFT="images=$(podman_ images -aq | wc -l) layers=$(find "$WORK/podman/overlay" -mindepth 1 -maxdepth 1 -type d ! -name l 2>/dev/null | wc -l)"
  [ "$LEFT" = "images=0 layers=0" ] || say "podman after reset: $LEFT"
}
ours_podman() {
  run "$1" env PATH="$(dirname "$PODMAN"):$PATH" "$BIN" import --images-path "$EXPORTED" --runtime podman \
    --storage-root "$WORK/podman" --run-root "$PODMAN_RUN" --storage-driver overlay
  all_archives_done "$1"
}
theirs_podman() {
  # podman 4.3's load -i reads no gzip'd docker-archive ("invalid tar header"): decompressed
  # on the way in, as the ctr loop is.
  run "$1" bash -c 'set -eo pipefail; d=$1; shift; for f in "$d"/*.tar.gz; do gzip -dc "$f" | "$@" load -q; done' \
    _ "$EXPORTED" "$PODMAN" --root "$WORK/podman" --runroot "$PODMAN_RUN" --storage-driver overlay --cgroup-manager cgroupfs
}
section_podman() {
  setup
  PODMAN=${BENCH_PODMAN:-$(command -v podman || true)}
  [ -x "$PODMAN" ] || die "podman not found (apt-get install podman, or BENCH_PODMAN=PATH)"
  # podman 4.3 refuses a run root longer than 50 characters.
  PODMAN_RUN=/tmp/oi-bench-podman-$$
  mkdir -p "$WORK/podman" "$PODMAN_RUN"
  record "import-podman: first import into a private containers-storage (overlay), both on the exported bundle; $("$PODMAN" --version)"
  compare import-podman '<=0.7' reset_podman ours_podman theirs_podman
  record "rerun-podman: both again, over the images already there"
  reset_podman
  ours_podman "$WORK/rerun-podman.prep.log"
  compare rerun-podman '<=0.05' : ours_podman theirs_podman
  reset_podman
  mount | awk -v r="$WORK/podman" -v u="$PODMAN_RUN" 'index($3, r) == 1 || index($3, u) == 1 { print $3 }' |
    sort -r | xargs -r umount 2>/dev/null || true
  rm -rf "$PODMAN_RUN"
}

section_export() {
  setup
  record "export: from the registry, the images absent from the local engine at the start"
  # With skopeo too: it copies from the registry to an archive without the engine's store.
  compare export '<=0.5' reset_export ours_export theirs_export ours_export_skopeo
  reset_export
}

# The registry engine against the docker loop and skopeo (same daemons, same images, runs
# alternated), then a re-export into the same bundle and cache after one image changed.
section_export_registry() {
  setup
  record "export-registry: from the registry, cold blob cache, images absent from docker at the start"
  compare export-registry-docker '<=0.2' reset_export ours_registry theirs_export
  compare export-registry-skopeo '<=0.8' reset_export ours_registry theirs_skopeo_oci
  reset_export
  section_export_reexport
}

# A re-export into the same bundle and cache after one image changed, against the first
# export (cold cache) it follows; BENCH_ROUNDS rounds, each a first export then a re-export.
section_export_reexport() {
  setup
  local firsts=() agains=() r first again changed=${REFS[0]} ctx=$WORK/changed
  record "export-reexport: a re-export with one image changed (a new top layer), against the first export"
  record "    \$ offline-images export --engine registry --cache-dir CACHE --output OUT REF... (twice; between them one image gets a new top layer)"
  mkdir -p "$ctx"
  printf 'FROM %s\nCOPY changed /changed\n' "$changed" >"$ctx/Dockerfile"
  for r in $(seq 1 "$ROUNDS"); do
    reset_export
    run "$WORK/export-first.$r.log" "$BIN" export --engine registry --cache-dir "$WORK/export-cache" --output "$WORK/export-out" "${REFS[@]}"
    first=$SECS
    # One image changes: a small layer on top of it, pushed under the same tag.
    date +%s%N >"$ctx/changed"
    "$DOCKER" pull -q "$changed" >/dev/null
    "$DOCKER" build -q -t "$changed" "$ctx" >/dev/null
    "$DOCKER" push -q "$changed" >/dev/null
    reset_docker
    run "$WORK/export-again.$r.log" "$BIN" export --engine registry --cache-dir "$WORK/export-cache" --output "$WORK/export-out" "${REFS[@]}"
    again=$SECS
    grep -q "written $(file_of "$changed").tar" "$WORK/export-again.$r.log" || die "the changed image was not exported again (log: $WORK/export-again.$r.log)"
    firsts+=("$first") agains+=("$again")
    record "  round $r: first export ${first}s, re-export with one image changed ${again}s (load average $(cut -d" " -f1 /proc/loadavg))"
  done
  first=$(median "${firsts[@]}") again=$(median "${agains[@]}")
  record "  median: first export ${first}s, re-export ${again}s"
  record "  RESULT export-reexport ours/first = $(awk -v a="$again" -v b="$first" 'BEGIN { printf "%.3f", a / b }') (goal <=0.1: $(awk -v a="$again" -v b="$first" 'BEGIN { print (a / b <= 0.1) ? "met" : "MISSED" }'))"
  reset_export
}

# The BENCH_SIZE_MB docker-archive (one layer of data that does not compress) and its gzip.
big_archive() {
  BIG_TAR=$WORK/big.tar BIG_GZ=$WORK/big.tar.gz
  [ ! -f "$BIG_GZ" ] || return 0
  say "writing a ${SIZE_MB} MiB docker-archive and its gzip"
  python3 scripts/bench/make-archive.py "$BIG_TAR" "$SIZE_MB" bench/big:1 >/dev/null
  gzip -1 -c "$BIG_TAR" >"$BIG_GZ"
}

section_list_memory() {
  local f rss secs
  big_archive
  for f in "$BIG_TAR" "$BIG_GZ"; do
    read -r rss secs < <(measure "$BIN" list "$f")
    record "list-memory  $(basename "$f")  size=$(du -m "$f" | cut -f1) MiB  peak_rss=$((rss / 1024)) MiB  wall=${secs}s"
  done
}

# The importer's own peak RSS on one large archive (the gzip of list-memory's) into
# containerd: memory must not grow with the archive.
section_import_memory() {
  start_daemons
  big_archive
  mkdir -p "$WORK/big-bundle"
  ln -f "$BIG_GZ" "$WORK/big-bundle/big.tar.gz"
  reset_containerd
  import_ctr "$WORK/import-memory.log" "$WORK/big-bundle"
  record "import-memory  big.tar.gz  size=$(du -m "$BIG_GZ" | cut -f1) MiB into containerd  own peak RSS $(mib "$SELF_KB") MiB (goal <= 64 MiB: $([ "$SELF_KB" -le 65536 ] && echo met || echo MISSED)), tree $(mib "$TREE_KB") MiB, wall ${SECS}s"
  record "    \$ $(describe ours_ctr_exported | sed 's/EXPORTED/DIR-WITH-big.tar.gz/')"
  reset_containerd
}

# A hostile archive: a .tar.gz of BENCH_ENTRIES empty entries (Python's tarfile writes it),
# sorted before a good archive (`docker save` of an image FROM scratch with busybox), imported
# into containerd. The importer's own peak RSS must not grow with the number of entries.
section_entries_memory() {
  local n=${BENCH_ENTRIES:-3000000} dir=$WORK/entries-bundle ctx=$WORK/entries-image bad
  start_daemons
  mkdir -p "$dir" "$ctx"
  say "writing a tar of $n empty entries"
  python3 -c '
import sys, tarfile
path, n = sys.argv[1], int(sys.argv[2])
with tarfile.open(path, "w:gz", compresslevel=1, format=tarfile.USTAR_FORMAT) as t:
    for i in range(n):
        t.addfile(tarfile.TarInfo(f"e/{i}"))
' "$dir/a-entries.tar.gz" "$n"
  cp /bin/busybox "$ctx/busybox"
  printf 'FROM scratch\nCOPY busybox /bin/busybox\n' >"$ctx/Dockerfile"
  "$DOCKER" build -q -t offline-images-bench/good:1 "$ctx" >/dev/null
  "$DOCKER" save -o "$dir/z-good.tar" offline-images-bench/good:1
  reset_containerd
  run "$WORK/entries-memory.log" "$BIN" import --images-path "$dir" --runtime containerd \
    --containerd-address "$OI_CONTAINERD_SOCK" --namespace k8s.io --disk-max-used 100
  grep -qE '^imported +z-good.tar' "$WORK/entries-memory.log" \
    || die "the good archive was not imported (log: $WORK/entries-memory.log)"
  bad=$(grep -E '^(FAILED|imported) +a-entries.tar.gz' "$WORK/entries-memory.log" | cut -c1-160) \
    || die "no result for the entries archive (log: $WORK/entries-memory.log)"
  record "entries-memory  a-entries.tar.gz ($n entries, $(du -m "$dir/a-entries.tar.gz" | cut -f1) MiB) beside z-good.tar into containerd: own peak RSS $(mib "$SELF_KB") MiB (goal <= 64 MiB: $([ "$SELF_KB" -le 65536 ] && echo met || echo MISSED)), tree $(mib "$TREE_KB") MiB, wall ${SECS}s"
  record "    $bad"
  record "    $(grep -E '^imported +z-good.tar' "$WORK/entries-memory.log" | cut -c1-120)"
  reset_containerd
}

# The native containerd client against the ctr loop, and against our own ctr client. The
# disk preflight runs, its limit at 100%: the scratch dir is on a shared disk that may already
# be fuller than the default 85%.
import_client() {
  local log=$1 dir=$2 client=$3
  shift 3
  run "$log" "$BIN" import --images-path "$dir" --runtime containerd --containerd-client "$client" \
    --containerd-address "$OI_CONTAINERD_SOCK" --namespace k8s.io --disk-max-used 100 "$@"
  all_archives_done "$log"
}
ours_native_exported() { import_client "$1" "$EXPORTED" native; }
ours_native1_exported() { import_client "$1" "$EXPORTED" native --jobs 1; }
ours_ctrclient_exported() { import_client "$1" "$EXPORTED" ctr; }
ours_native_upgraded() { import_client "$1" "$UPGRADED" native; }
theirs_ctr_upgraded() { ctr_loop "$1" "$UPGRADED"; }
ours_native_foreign() { import_client "$1" "$FOREIGN" native; }

# The exported bundle with app-1 changed: a layer of its own added on top (as a rebuilt
# application does), its other layers and the base layer shared with the installed bundle.
build_upgrade() {
  [ -z "${UPGRADED:-}" ] || return 0
  local ctx=$WORK/build-upgrade ref=$OI_REGISTRY/bench/app-1:2
  mkdir -p "$ctx"
  find_layer /usr/lib/python3.11 $((TOTAL_MB / IMAGES / 2)) "$ctx/layer.tar"
  "$DOCKER" pull -q "${REFS[0]}" >/dev/null
  printf 'FROM %s\nADD layer.tar /\nLABEL bench.image="1-upgraded"\n' "${REFS[0]}" >"$ctx/Dockerfile"
  "$DOCKER" build -q -t "$ref" "$ctx" >/dev/null
  "$DOCKER" push -q "$ref" >/dev/null
  rm -rf "$ctx"
  UPGRADED=$WORK/upgraded
  mkdir -p "$UPGRADED"
  "$BIN" export --engine docker --output "$UPGRADED" "$ref" "${REFS[@]:1}" 2>"$WORK/export-upgrade.log" ||
    { tail "$WORK/export-upgrade.log" >&2; die "offline-images export of the upgrade failed"; }
  reset_docker
}
reset_to_installed() {
  reset_containerd
  import_client "$WORK/native.prep-installed.log" "$EXPORTED" native
  LEFT="$LEFT; then the exported bundle imported"
}
section_native_first() {
  setup
  record "native: first import into containerd, the native client against the ctr loop"
  # Our ctr client as a third contender only with BENCH_CTR_CLIENT=1: it adds a third of the time.
  local first=(ours_native_exported theirs_ctr_exported)
  [ "${BENCH_CTR_CLIENT:-0}" = 1 ] && first+=(ours_ctrclient_exported)
  # The native client one archive at a time (--jobs 1), with BENCH_SEQUENTIAL=1: what the
  # overlap of one archive's unpack with the next one's upload is worth.
  [ "${BENCH_SEQUENTIAL:-0}" = 1 ] && first+=(ours_native1_exported)
  compare native-first '<=0.5' reset_containerd "${first[@]}"
  reset_containerd
}
section_native_upgrade() {
  setup
  build_upgrade
  record "native: upgrade, one of the images changed, the others and the base layer present"
  compare native-upgrade '<=0.15' reset_to_installed ours_native_upgraded theirs_ctr_upgraded
  reset_containerd
}
section_native_rerun_other() {
  setup
  record "native: re-run over the foreign bundle the ctr loop imported"
  compare native-rerun-other '<=0.1' reset_loop_imported ours_native_foreign theirs_ctr_foreign
  reset_containerd
}
section_native() {
  section_native_first
  section_native_upgrade
  section_native_rerun_other
}

# ---------------------------------------------------------------------------------------------
# The bundle: `export --format layout` (one OCI layout, every blob once) against the layout
# writers operators have (skopeo, crane), a re-export after an upgrade, and the first import
# of that layout against the loop over per-image `docker save | gzip` archives.

BUNDLE_REFS=()
BUNDLE_UPGRADE_REFS=()
BUNDLE_SIZES=
BUNDLE_SHAPE=
SKOPEO_122=
CRANE=

# The sum of the sizes of the regular files under a directory (0 when there is none).
tree_bytes() { find "$1" -type f -printf '%s\n' 2>/dev/null | awk '{ s += $1 } END { printf "%d\n", s }'; }
# Bytes of the files under the directories given, a file hard-linked into two of them once.
disk_bytes() { du -scb "$@" 2>/dev/null | tail -1 | cut -f1; }

# The distinct blobs (manifest, config, layers) of the references REF... in the private
# registry, one `DIGEST SIZE` line each, sorted by digest.
registry_blobs() {
  python3 -c '
import json, sys, urllib.request
registry, blobs = sys.argv[1], {}
for ref in sys.argv[2:]:
    name, tag = ref[len(registry) + 1:].rsplit(":", 1)
    accept = "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json"
    req = urllib.request.Request("http://%s/v2/%s/manifests/%s" % (registry, name, tag), headers={"Accept": accept})
    with urllib.request.urlopen(req) as r:
        body, digest = r.read(), r.headers["Docker-Content-Digest"]
    blobs[digest] = len(body)
    m = json.loads(body)
    for d in [m["config"]] + m["layers"]:
        blobs[d["digest"]] = d["size"]
for digest in sorted(blobs):
    print(digest, blobs[digest])
' "$OI_REGISTRY" "$@"
}
sum_bytes() { awk '{ s += $2 } END { printf "%d\n", s }'; }
# ratio_goal A B GOAL: "A/B (goal <=GOAL: met|MISSED)".
ratio_goal() {
  awk -v a="$1" -v b="$2" -v g="$3" 'BEGIN { r = a / b; printf "%.3f (goal <=%s: %s)", r, g, (r <= g) ? "met" : "MISSED" }'
}

# written LOG CMD...: run CMD to its end (output to LOG); sets SECS (wall), WRITTEN and
# CANCELLED (write_bytes and cancelled_write_bytes of its /proc/PID/io, read once it has
# exited and before it is reaped, so nothing it wrote is missed).
written() {
  local log=$1 out rc
  shift
  out=$(python3 -c '
import os, sys, time
start = time.monotonic()
pid = os.fork()
if pid == 0:
    fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.execvp(sys.argv[2], sys.argv[2:])
os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
secs = time.monotonic() - start
io = dict(l.split(": ") for l in open("/proc/%d/io" % pid).read().splitlines())
_, status = os.waitpid(pid, 0)
print("%.2f %s %s %d" % (secs, io["write_bytes"], io["cancelled_write_bytes"], os.waitstatus_to_exitcode(status)))
' "$log" "$@")
  read -r SECS WRITTEN CANCELLED rc <<<"$out"
  [ "$rc" = 0 ] || { tail -30 "$log" >&2; die "failed (exit $rc): $* (log: $log)"; }
}

# The release: BENCH_BUNDLE_IMAGES (4) images FROM one base layer of BENCH_BUNDLE_BASE_MB
# (229) MiB of /usr/lib/x86_64-linux-gnu, each with BENCH_BUNDLE_OWN_MB (64) MiB of its own
# (/usr/lib/llvm-14, /usr/lib/jvm, /usr/share, /usr/bin, ...); and its upgrade, where the
# first image gains a layer of BENCH_BUNDLE_NEW_MB (192) MiB: the shared libraries past the
# base's (about 65 MB gzip'd at the registry). All pushed; then the per-image `docker save |
# gzip` archives of the release, and docker reset.
build_bundle_images() {
  [ ${#BUNDLE_REFS[@]} -eq 0 ] || return 0
  start_daemons
  local n=${BENCH_BUNDLE_IMAGES:-4} base=${BENCH_BUNDLE_BASE_MB:-229} own=${BENCH_BUNDLE_OWN_MB:-64}
  local new=${BENCH_BUNDLE_NEW_MB:-192} ctx=$WORK/bundle-build i src r
  local sources=(/usr/lib/llvm-14 /usr/lib/jvm /usr/share /usr/bin)
  say "bundle: building $n images of ~$((base + own)) MiB (a $base MiB base layer shared by all, $own MiB of their own) and an upgrade"
  mkdir -p "$ctx/base"
  find_layer /usr/lib/x86_64-linux-gnu "$base" "$ctx/base/layer.tar"
  printf 'FROM scratch\nADD layer.tar /\n' >"$ctx/base/Dockerfile"
  "$DOCKER" build -q -t bench/bundle-base:1 "$ctx/base" >/dev/null
  for i in $(seq 1 "$n"); do
    src=${sources[$(((i - 1) % ${#sources[@]}))]}
    mkdir -p "$ctx/app-$i"
    find_layer "$src" "$own" "$ctx/app-$i/layer.tar" $((own * ((i - 1) / ${#sources[@]})))
    printf 'FROM bench/bundle-base:1\nADD layer.tar /\nLABEL bench.bundle="%s"\n' "$i" >"$ctx/app-$i/Dockerfile"
    "$DOCKER" build -q -t "$OI_REGISTRY/bench/bundle-app-$i:1" "$ctx/app-$i" >/dev/null
    BUNDLE_REFS+=("$OI_REGISTRY/bench/bundle-app-$i:1")
  done
  # The upgrade: app-1 gains a layer of the shared libraries past those of the base.
  mkdir -p "$ctx/upgrade"
  find_layer /usr/lib/x86_64-linux-gnu "$new" "$ctx/upgrade/layer.tar" "$base"
  printf 'FROM %s\nADD layer.tar /\nLABEL bench.bundle="1-upgraded"\n' "${BUNDLE_REFS[0]}" >"$ctx/upgrade/Dockerfile"
  "$DOCKER" build -q -t "$OI_REGISTRY/bench/bundle-app-1:2" "$ctx/upgrade" >/dev/null
  BUNDLE_UPGRADE_REFS=("$OI_REGISTRY/bench/bundle-app-1:2" "${BUNDLE_REFS[@]:1}")
  rm -rf "$ctx"
  say "bundle: pushing to $OI_REGISTRY"
  for r in "${BUNDLE_REFS[@]}" "${BUNDLE_UPGRADE_REFS[0]}"; do "$DOCKER" push -q "$r" >/dev/null; done
  BUNDLE_SIZES=$("$DOCKER" image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep bench/bundle-app | sed "s|^$OI_REGISTRY/bench/||" | sort | paste -sd, - | sed 's/,/, /g')
  BUNDLE_SHAPE="$n images of a $base MiB base layer (/usr/lib/x86_64-linux-gnu) and $own MiB of their own, uncompressed; the upgrade adds a $new MiB layer to bundle-app-1"
  say "bundle: writing the per-image docker save | gzip archives of the release"
  mkdir -p "$WORK/bundle-foreign"
  for r in "${BUNDLE_REFS[@]}"; do "$DOCKER" save "$r" | gzip >"$WORK/bundle-foreign/$(file_of "$r").tar.gz"; done
  reset_docker
  SKOPEO_122=$(oi_fetch_forky_skopeo)
  CRANE=$(oi_fetch_forky_crane)
}

# The contenders of the first export, each into an empty LAYOUT_OUT (ours with an empty
# blob cache too); and of the first import.
LAYOUT_OUT=
reset_layout() {
  rm -rf "$WORK/layout-out" "$WORK/layout-cache"
  mkdir -p "$WORK/layout-out"
  LAYOUT_OUT=$WORK/layout-out LEFT="output directory and blob cache removed"
}
ours_layout() {
  run "$1" "$BIN" export --format layout --cache-dir "$WORK/layout-cache" --output "$LAYOUT_OUT/bundle" "${BUNDLE_REFS[@]}"
}
theirs_skopeo_layout() {
  run "$1" bash -c 'set -e; skopeo=$1 d=$2; shift 2
    for r in "$@"; do "$skopeo" copy --quiet --src-tls-verify=false --dest-shared-blob-dir "$d/shared" "docker://$r" "oci:$d/layout:$r"; done' \
    _ "$SKOPEO_122" "$LAYOUT_OUT" "${BUNDLE_REFS[@]}"
}
theirs_crane_layout() { run "$1" "$CRANE" pull --insecure --format oci "${BUNDLE_REFS[@]}" "$LAYOUT_OUT/layout"; }
ours_layout_import() { import_ctr "$1" "$WORK/bundle-layout"; }
theirs_ctr_bundle() { ctr_loop "$1" "$WORK/bundle-foreign"; }

# The bundle as `export --format layout` writes it, against the unique bytes of the blobs its
# images are made of at the registry (goal: at most 1.01 x + 1 MiB).
bundle_size() {
  local unique total binary images goal
  run "$WORK/bundle-prep.log" "$BIN" export --format layout --cache-dir "$WORK/bundle-prep-cache" --output "$WORK/bundle-layout" "${BUNDLE_REFS[@]}"
  rm -rf "$WORK/bundle-prep-cache"
  unique=$(registry_blobs "${BUNDLE_REFS[@]}" | sum_bytes)
  total=$(tree_bytes "$WORK/bundle-layout")
  binary=$(tree_bytes "$WORK/bundle-layout/.offline-images")
  images=$((total - binary))
  goal=$(awk -v u="$unique" 'BEGIN { printf "%d", u * 1.01 + 1048576 }')
  record "  bundle: $total bytes in all, $binary of them the importer binary (.offline-images/); the layout, images.json and SHA256SUMS $images bytes ($(mib $((images / 1024))) MiB); the unique blobs of the ${#BUNDLE_REFS[@]} images at the registry $unique bytes ($(mib $((unique / 1024))) MiB), each image's blobs $(for r in "${BUNDLE_REFS[@]}"; do registry_blobs "$r" | sum_bytes; done | awk '{ s += $1 } END { printf "%d", s }') bytes summed"
  record "  RESULT bundle-size layout/unique = $(awk -v a="$images" -v b="$unique" 'BEGIN { printf "%.4f", a / b }') (goal <= 1.01 x + 1 MiB = $goal bytes: $([ "$images" -le "$goal" ] && echo met || echo MISSED))"
  record "    \$ offline-images export --format layout --cache-dir EMPTY-CACHE --output OUT REF..."
}

# A re-export after the upgrade, into the bundle and cache of a first export: its time
# against the first export (cold cache, and into an empty directory with the cache warm),
# and the bytes it wrote against the bytes of the blobs the upgrade added.
bundle_reexport() {
  local r cold=() warm=() again=() wrote=() new grown out=$WORK/reexport-out cache=$WORK/reexport-cache
  local m_cold m_warm m_again m_wrote since_bytes=0 since_dir=$WORK/reexport-since
  new=$(LC_ALL=C join -v1 <(registry_blobs "${BUNDLE_UPGRADE_REFS[@]}" | LC_ALL=C sort) \
    <(registry_blobs "${BUNDLE_REFS[@]}" | LC_ALL=C sort) | sum_bytes)
  record "  re-export after the upgrade (${BUNDLE_UPGRADE_REFS[0]##*/} gains a layer): the new blobs are $new bytes ($(mib $((new / 1024))) MiB) at the registry"
  for r in $(seq 1 "$ROUNDS"); do
    rm -rf "$out" "$out-warm" "$cache"
    run "$WORK/reexport-cold.$r.log" "$BIN" export --format layout --cache-dir "$cache" --output "$out" "${BUNDLE_REFS[@]}"
    cold+=("$SECS")
    run "$WORK/reexport-warm.$r.log" "$BIN" export --format layout --cache-dir "$cache" --output "$out-warm" "${BUNDLE_REFS[@]}"
    warm+=("$SECS")
    grown=$(disk_bytes "$out" "$cache")
    written "$WORK/reexport-again.$r.log" "$BIN" export --format layout --cache-dir "$cache" --output "$out" "${BUNDLE_UPGRADE_REFS[@]}"
    grown=$(( $(disk_bytes "$out" "$cache") - grown ))
    grep -q "${BUNDLE_UPGRADE_REFS[0]}: written into the layout" "$WORK/reexport-again.$r.log" \
      || die "the upgraded image was not written into the layout (log: $WORK/reexport-again.$r.log)"
    again+=("$SECS") wrote+=("$WRITTEN")
    # The upgrade as a bundle of its own, after the re-export (whose download it would
    # otherwise make): only what the first bundle did not carry.
    rm -rf "$since_dir"
    run "$WORK/reexport-since.$r.log" "$BIN" export --since "$out-warm" --no-importer-binary --cache-dir "$cache" --output "$since_dir" "${BUNDLE_UPGRADE_REFS[@]}"
    since_bytes=$(tree_bytes "$since_dir")
    record "  round $r: first export ${cold[-1]}s (cold cache), ${warm[-1]}s (warm cache, empty directory); re-export ${again[-1]}s, wrote $WRITTEN bytes ($CANCELLED cancelled), bundle and cache grew by $grown bytes; --since bundle $since_bytes bytes (load average $(cut -d" " -f1 /proc/loadavg))"
  done
  rm -rf "$out" "$out-warm" "$cache" "$since_dir"
  record "    \$ offline-images export --since FIRST-OUT --no-importer-binary --output UPGRADE-OUT UPGRADE-REF..."
  record "  RESULT bundle-since bytes/(new + 1 MiB) = $(ratio_goal "$since_bytes" "$((new + 1048576))" 1.01)"
  m_cold=$(median "${cold[@]}") m_warm=$(median "${warm[@]}") m_again=$(median "${again[@]}") m_wrote=$(median "${wrote[@]}")
  record "  median: first export ${m_cold}s cold, ${m_warm}s warm; re-export ${m_again}s, wrote $m_wrote bytes"
  record "    \$ offline-images export --format layout --cache-dir CACHE --output OUT RELEASE-REF... (then UPGRADE-REF... into the same OUT and CACHE)"
  record "  RESULT bundle-reexport written/new = $(ratio_goal "$m_wrote" "$new" 1.05)"
  record "  RESULT bundle-reexport ours/first-warm = $(ratio_goal "$m_again" "$m_warm" 0.1)"
  record "  RESULT bundle-reexport ours/first-cold = $(ratio_goal "$m_again" "$m_cold" 0.1)"
}

section_bundle() {
  build_bundle_images
  record "bundle: ${#BUNDLE_REFS[@]} images sharing one base layer, as one OCI layout (export --format layout); uptime: $(uptime)"
  record "  $BUNDLE_SHAPE; docker image sizes: $BUNDLE_SIZES"
  record "  at the registry: base layer $(registry_blobs "${BUNDLE_REFS[0]}" | sort -k2 -n | tail -1 | cut -d' ' -f2) bytes, the upgrade's new blobs $(LC_ALL=C join -v1 <(registry_blobs "${BUNDLE_UPGRADE_REFS[@]}" | LC_ALL=C sort) <(registry_blobs "${BUNDLE_REFS[@]}" | LC_ALL=C sort) | sort -k2 -n | awk '{ printf "%s%s", (NR > 1 ? ", " : ""), $2 }') bytes"
  bundle_size
  record "bundle-export: first export, cold cache, against skopeo 1.22 and crane 0.20 writing one layout of the same images"
  compare bundle-skopeo '<=0.5' reset_layout ours_layout theirs_skopeo_layout
  compare bundle-crane '<=0.8' reset_layout ours_layout theirs_crane_layout
  reset_layout
  bundle_reexport
  record "bundle-import: first import into containerd of the layout, against the ctr loop over the release's docker save | gzip archives; uptime: $(uptime)"
  compare bundle-import '<=0.25' reset_containerd ours_layout_import theirs_ctr_bundle
  reset_containerd
}

# ---------------------------------------------------------------------------------------------
# Push: the bundle's layout into an empty site registry (a second private registry, started
# afresh for every run), against skopeo 1.22 copying each image from the same layout and
# crane 0.20 copying each image from the registry the bundle was exported from; then a
# re-push into a registry that holds everything.

PUSH_TO=
reset_push_target() {
  local keep=$OI_REGISTRY
  if [ -s "$WORK/push-target/registry/pid" ]; then
    kill "$(cat "$WORK/push-target/registry/pid")" 2>/dev/null || true
    wait "$(cat "$WORK/push-target/registry/pid")" 2>/dev/null || true
  fi
  rm -rf "$WORK/push-target"
  oi_start_registry "$WORK/push-target"
  PUSH_TO=$OI_REGISTRY OI_REGISTRY=$keep LEFT="a new, empty registry"
}
# The repository an image lands at under --to $PUSH_TO/bench (push's naming: the upstream
# registry one path component, a port's ':' written '_').
push_target() { local r=$1 host=${1%%/*}; echo "$PUSH_TO/bench/${host/:/_}/${r#*/}"; }
ours_push() {
  run "$1" "$BIN" push --images-path "$WORK/bundle-layout" --to "$PUSH_TO/bench" --insecure-registry "$PUSH_TO"
}
theirs_skopeo_push() {
  local refs=() r
  for r in "${BUNDLE_REFS[@]}"; do refs+=("$r" "$(push_target "$r")"); done
  run "$1" bash -c 'set -e; skopeo=$1 d=$2; shift 2
    while [ $# -gt 0 ]; do "$skopeo" copy --quiet --dest-tls-verify=false "oci:$d:$1" "docker://$2"; shift 2; done' \
    _ "$SKOPEO_122" "$WORK/bundle-layout" "${refs[@]}"
}
theirs_crane_push() {
  local refs=() r
  for r in "${BUNDLE_REFS[@]}"; do refs+=("$r" "$(push_target "$r")"); done
  run "$1" bash -c 'set -e; crane=$1; shift
    while [ $# -gt 0 ]; do "$crane" copy --insecure "$1" "$2" 2>/dev/null; shift 2; done' _ "$CRANE" "${refs[@]}"
}

section_push() {
  build_bundle_images
  [ -d "$WORK/bundle-layout" ] || run "$WORK/push-prep.log" "$BIN" export --format layout \
    --cache-dir "$WORK/push-prep-cache" --output "$WORK/bundle-layout" "${BUNDLE_REFS[@]}"
  rm -rf "$WORK/push-prep-cache"
  record "push: the bundle's layout (${#BUNDLE_REFS[@]} images sharing one base layer: $BUNDLE_SHAPE) into an empty registry; uptime: $(uptime)"
  compare push-skopeo '<=0.5' reset_push_target ours_push theirs_skopeo_push
  compare push-crane '<=0.5' reset_push_target ours_push theirs_crane_push
  record "push-again: the same, into a registry that holds every image already"
  reset_push_target
  run "$WORK/push-again-prep.log" "$BIN" push --images-path "$WORK/bundle-layout" --to "$PUSH_TO/bench" --insecure-registry "$PUSH_TO"
  compare push-again-skopeo '<=0.05' : ours_push theirs_skopeo_push
  compare push-again-crane '<=0.05' : ours_push theirs_crane_push
}

for s in "${SECTIONS[@]}"; do
  declare -F "section_${s//-/_}" >/dev/null || die "unknown section: $s (sections: ${ALL_SECTIONS[*]})"
done
record ""
record "# $(date -u +%Y-%m-%dT%H:%M:%SZ) offline-images $("$BIN" --version | cut -d' ' -f2) ($(git rev-parse --short HEAD 2>/dev/null || echo '?')) on $(machine); containerd $(containerd --version | awk '{print $3}'), docker $(dockerd --version | awk '{print $3}' | tr -d ,); rounds=$ROUNDS images=$IMAGES total=${TOTAL_MB}MiB sections: ${SECTIONS[*]}"
started=$(date +%s)
for s in "${SECTIONS[@]}"; do
  "section_${s//-/_}"
done
record "# done in $(($(date +%s) - started)) s"
say "results appended to $OUT"
