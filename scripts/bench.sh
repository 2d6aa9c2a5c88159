#!/usr/bin/env bash
# Benchmarks. Numbers come from here, never from timed tests.
#
#   scripts/bench.sh [SECTION...]      default: every section
#
# Sections:
#   list-memory   peak RSS and time of `offline-images list` on a 2 GiB archive, plain and gzip
#
# Environment: BENCH_DIR (scratch space, default a temp dir; needs ~3x BENCH_SIZE_MB free),
# BENCH_SIZE_MB (default 2048), BENCH_OUT (results file, default target/bench/results.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

SECTIONS=("$@")
[ ${#SECTIONS[@]} -gt 0 ] || SECTIONS=(list-memory)
SIZE_MB=${BENCH_SIZE_MB:-2048}
OUT=${BENCH_OUT:-$ROOT/target/bench/results.txt}
mkdir -p "$(dirname "$OUT")"

oi_install_packages
oi_install_rust_target
say "building the static importer (release, musl)"
cargo build --quiet --release --target x86_64-unknown-linux-musl
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/x86_64-unknown-linux-musl/release/offline-images

WORK=${BENCH_DIR:-$(mktemp -d /tmp/offline-images-bench.XXXXXX)}
trap 'oi_stop_all "$WORK"' EXIT

record() { printf '%s\n' "$*" | tee -a "$OUT"; }

# peak RSS (KiB) and wall seconds of a command, from GNU time.
measure() {
  local log=$WORK/time.log
  /usr/bin/time -f '%M %e' -o "$log" "$@" >/dev/null
  cat "$log"
}

machine() {
  printf '%s, %s cores, %s, %s\n' "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)" \
    "$(nproc)" "$(free -g | awk '/Mem:/{print $2 " GiB"}')" "$(uname -r)"
}

section_list_memory() {
  local tar=$WORK/big.tar gz=$WORK/big.tar.gz rss secs
  if [ ! -f "$gz" ]; then
    say "writing a ${SIZE_MB} MiB docker-archive and its gzip"
    python3 scripts/bench/make-archive.py "$tar" "$SIZE_MB" bench/big:1 >/dev/null
    gzip -1 -c "$tar" >"$gz"
  fi
  for f in "$tar" "$gz"; do
    read -r rss secs < <(measure "$BIN" list "$f")
    record "list-memory  $(basename "$f")  size=$(du -m "$f" | cut -f1) MiB  peak_rss=$((rss / 1024)) MiB  wall=${secs}s"
  done
}

record "# $(date -u +%Y-%m-%dT%H:%M:%SZ) offline-images $("$BIN" --version | cut -d' ' -f2) on $(machine)"
for s in "${SECTIONS[@]}"; do
  fn=section_${s//-/_}
  declare -F "$fn" >/dev/null || die "unknown section: $s"
  "$fn"
done
say "results appended to $OUT"
