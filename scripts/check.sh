#!/usr/bin/env bash
# The fast lane, run by CI before the daemon suite (scripts/test.sh): formatting, no cycle
# among the modules (scripts/modcycles.py), lints, unit tests and a short fuzz run of the
# archive reader over every format (tar, gzip, zstd). It needs no daemon and stops at the first
# step that fails, naming it.
#
#   scripts/check.sh                      every step
#   OI_FUZZ_SECONDS=300 scripts/check.sh  a longer fuzz run (default 45 s; 0 skips it)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

FUZZ_SECONDS=${OI_FUZZ_SECONDS:-45}

step() { say "check: $*"; }
fail() { die "check failed: $*"; }

command -v cargo >/dev/null || die "cargo not found: install a Rust toolchain (rustup)"
# The build itself needs Debian packages (protoc for containerd's API, a C compiler for ring).
oi_install_packages
oi_install_rust_target
for c in rustfmt clippy; do
  rustup component list --installed 2>/dev/null | grep -q "^$c" || rustup component add "$c" >/dev/null
done

step "cargo fmt --check"
cargo fmt --all -- --check || fail "unformatted code (run cargo fmt)"

step "module cycles (scripts/modcycles.py)"
python3 scripts/modcycles.py || fail "the modules of importer/src depend on each other in a cycle"

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --quiet --all-targets -- -D warnings || fail "clippy warnings"
step "cargo clippy --all-targets --no-default-features -- -D warnings (the node build)"
cargo clippy --quiet --all-targets --no-default-features -- -D warnings || fail "clippy warnings in the node build"

step "unit tests"
# A public Sigstore signature and trusted root, for the certificate check's unit test.
OI_SIGSTORE_DATA=$(oi_fetch_sigstore_data)
export OI_SIGSTORE_DATA
cargo test --quiet --lib --bins || fail "unit tests"

if [ "$FUZZ_SECONDS" -gt 0 ]; then
  # libFuzzer needs a nightly toolchain and cargo-fuzz; the seeds are compressed by zstd(1).
  rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal >/dev/null
  command -v cargo-fuzz >/dev/null || [ -x "$HOME/.cargo/bin/cargo-fuzz" ] \
    || { say "installing cargo-fuzz"; cargo install --quiet --locked cargo-fuzz; }
  if ! command -v zstd >/dev/null; then
    [ "$(id -u)" = 0 ] || die "installing zstd needs root"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends zstd >/dev/null \
      || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends zstd >/dev/null; }
  fi
  step "fuzz the archive reader for ${FUZZ_SECONDS}s (tar, gzip, zstd seeds)"
  python3 fuzz/make-seeds.py
  (cd fuzz && cargo +nightly fuzz run inspect corpus/inspect -- \
    -max_total_time="$FUZZ_SECONDS" -rss_limit_mb=2048 -print_final_stats=1 2>&1 | tail -n 12) \
    || fail "the fuzz target found a crash (see fuzz/artifacts/inspect)"
fi
say "check: all passed"
