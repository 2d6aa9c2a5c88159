# shellcheck shell=bash
# Shared by test.sh, quickstart.sh and bench.sh: install what is needed, and start and stop
# private containerd, dockerd and registry daemons. Nothing here touches the system's own
# daemons or sockets: everything lives under one temp directory.

OI_PACKAGES=(containerd runc docker.io skopeo docker-registry busybox-static time)

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Debian packages, installed only when something is missing.
oi_install_packages() {
  local missing=()
  command -v containerd >/dev/null || missing+=(containerd)
  command -v runc >/dev/null || missing+=(runc)
  command -v dockerd >/dev/null || missing+=(docker.io)
  command -v skopeo >/dev/null || missing+=(skopeo)
  command -v docker-registry >/dev/null || missing+=(docker-registry)
  [ -x /bin/busybox ] || missing+=(busybox-static)
  [ -x /usr/bin/time ] || missing+=(time)
  command -v htpasswd >/dev/null || missing+=(apache2-utils)
  command -v readelf >/dev/null || missing+=(binutils)
  command -v protoc >/dev/null || missing+=(protobuf-compiler)  # containerd's gRPC API, built from its protos
  # Archive compressors operators use beside gzip: pigz, and zstd with pzstd (multi-frame).
  command -v pigz >/dev/null || missing+=(pigz)
  command -v pzstd >/dev/null || missing+=(zstd)
  # Points forky's podman at forky's glibc (see oi_fetch_forky_podman).
  command -v patchelf >/dev/null || missing+=(patchelf)
  # Debian 12's podman 4.3: the podman runtime's tests import into containers-storage with it.
  command -v podman >/dev/null || missing+=(podman)
  # deliver's hosts: network namespaces (ip netns, veth) each running Debian's sshd.
  [ -x /usr/sbin/sshd ] || missing+=(openssh-server)
  command -v ssh >/dev/null || missing+=(openssh-client)
  command -v ip >/dev/null || missing+=(iproute2)
  python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
  if [ ${#missing[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || die "installing ${missing[*]} needs root"
    say "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  # busybox-static must be the static one: test images are built FROM scratch around it.
  file_is_static /bin/busybox || die "/bin/busybox is not statically linked; install busybox-static"
}

# A static executable has no program interpreter (PT_INTERP) header.
file_is_static() { [ -f "$1" ] && ! LC_ALL=C readelf -lW "$1" 2>/dev/null | grep -q 'program interpreter'; }

# The musl target for the static importer binary.
oi_install_rust_target() {
  command -v cargo >/dev/null || die "cargo not found: install a Rust toolchain (rustup)"
  if ! rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl; then
    say "adding the x86_64-unknown-linux-musl target"
    rustup target add x86_64-unknown-linux-musl >/dev/null
  fi
  # ring (the TLS crypto of the registry engine) compiles C and assembly: musl's gcc wrapper.
  if ! command -v x86_64-linux-musl-gcc >/dev/null; then
    [ "$(id -u)" = 0 ] || die "installing musl-tools needs root"
    say "installing Debian packages: musl-tools"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends musl-tools >/dev/null \
      || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends musl-tools >/dev/null; }
  fi
}

# A Python venv with the chart-test tools (real Helm engine, manifest validator, pytest).
oi_install_venv() {
  local venv=$1 req=$2
  if [ ! -x "$venv/bin/python" ]; then
    say "creating Python venv $venv"
    python3 -m venv "$venv"
  fi
  if ! cmp -s "$req" "$venv/.requirements" 2>/dev/null; then
    say "installing Python packages from $req"
    "$venv/bin/pip" install -q --disable-pip-version-check -r "$req"
    cp "$req" "$venv/.requirements"
  fi
}

# Start containerd on a private socket under $1; exports OI_CONTAINERD_SOCK. With $2, the
# containerd, ctr and shim of that bin directory are used (a version of the matrix).
oi_start_containerd() {
  local dir=$1/containerd bin=${2:-}
  mkdir -p "$dir"
  cat >"$dir/config.toml" <<TOML
version = 2
root = "$dir/root"
state = "$dir/state"
# The CRI plugin would want CNI and a kubelet; the importer only needs the image service.
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$dir/containerd.sock"
[ttrpc]
  address = "$dir/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
TOML
  PATH=${bin:+$bin:}$PATH containerd --config "$dir/config.toml" >"$dir/containerd.log" 2>&1 &
  echo $! >"$dir/pid"
  OI_CONTAINERD_SOCK=$dir/containerd.sock
  wait_for "containerd" 30 "${bin:+$bin/}ctr" -a "$OI_CONTAINERD_SOCK" version || { tail -20 "$dir/containerd.log" >&2; return 1; }
  export OI_CONTAINERD_SOCK
}

# Start dockerd on a private socket under $1, on the containerd started above; exports
# OI_DOCKER_HOST. With $2, the dockerd and docker CLI of that bin directory are used; with $3,
# that daemon.json.
oi_start_dockerd() {
  local dir=$1/docker bin=${2:-} config=${3:-'{}'} cli
  if [ -n "$bin" ]; then cli=$bin/docker; else cli=$(oi_docker_cli); fi
  mkdir -p "$dir"
  # Our own config, so a host's /etc/docker/daemon.json cannot change the test daemon.
  echo "$config" >"$dir/daemon.json"
  PATH=${bin:+$bin:}$PATH dockerd --host "unix://$dir/docker.sock" --data-root "$dir/data" --exec-root "$dir/exec" \
    --pidfile "$dir/docker.pid" --containerd "$OI_CONTAINERD_SOCK" \
    --iptables=false --ip-masq=false --bridge=none --config-file "$dir/daemon.json" \
    >"$dir/dockerd.log" 2>&1 &
  echo $! >"$dir/pid"
  OI_DOCKER_HOST=unix://$dir/docker.sock
  wait_for "dockerd" 60 env DOCKER_HOST="$OI_DOCKER_HOST" "$cli" version || { tail -20 "$dir/dockerd.log" >&2; return 1; }
  export OI_DOCKER_HOST
}

# A docker CLI that speaks to the Debian dockerd and still has the classic builder.
oi_docker_cli() { if [ -x /usr/bin/docker ]; then echo /usr/bin/docker; else command -v docker; fi; }

# Start a registry on 127.0.0.1 (a free port) under $1; exports OI_REGISTRY (host:port).
oi_start_registry() {
  local dir=$1/registry port
  mkdir -p "$dir/data"
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  cat >"$dir/config.yml" <<YML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $dir/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
YML
  docker-registry serve "$dir/config.yml" >"$dir/registry.log" 2>&1 &
  echo $! >"$dir/pid"
  OI_REGISTRY=127.0.0.1:$port
  wait_for "registry" 30 python3 -c "import urllib.request; urllib.request.urlopen('http://$OI_REGISTRY/v2/')" \
    || { tail -20 "$dir/registry.log" >&2; return 1; }
  export OI_REGISTRY
}

# Stop every daemon started under $1 and unmount what they left, then remove $1.
oi_stop_all() {
  local base=$1 pidfile pid i
  [ -n "$base" ] && [ -d "$base" ] || return 0
  # The daemons of the version matrix (under $base/matrix/N/) first, then the default ones.
  for pidfile in "$base"/matrix/*/docker/pid "$base"/matrix/*/containerd/pid \
    "$base"/registry/pid "$base"/docker/pid "$base"/containerd/pid; do
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || continue
    for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  # containerd-shim processes of containers still running under this root.
  pkill -f "containerd-shim.*$base" 2>/dev/null || true
  # No mounts left is the usual case: grep then fails, which must not end the trap early.
  { grep -o " $base[^ ]*" /proc/mounts 2>/dev/null || true; } | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
  rm -rf "$base"
}

# wait_for NAME SECONDS CMD...: retry CMD until it succeeds.
wait_for() {
  local name=$1 secs=$2 i
  shift 2
  for i in $(seq 1 $((secs * 10))); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  printf 'error: %s did not come up within %ss\n' "$name" "$secs" >&2
  return 1
}

# ---- bench fixtures --------------------------------------------------------------------------
# find_layer DIR MB OUT [SKIP_MB]: the regular files of DIR, in path order, after the first
# SKIP_MB MiB of them, up to MB MiB, as a tar: a layer made of real files of this machine, for
# the benches' release-shaped images. Files that would overflow the budget are passed over, so
# the layer comes close to it; hard-linked files are left out (tar stores them once).
find_layer() {
  local dir=$1 mb=$2 out=$3 skip=${4:-0}
  find "$dir" -xdev -type f -links 1 -readable -printf '%s %p\n' 2>/dev/null | sort -k2 |
    awk -v max=$((mb * 1024 * 1024)) -v skip=$((skip * 1024 * 1024)) '
      { t += $1 } t > skip && $1 + s <= max { s += $1; sub(/^[0-9]+ /, ""); print }' |
    tar -cf "$out" --no-recursion --verbatim-files-from -T - 2>/dev/null
}

# ---- the runtime version matrix ---------------------------------------------------------------
# Beyond the default pair (bookworm's containerd 1.6.20 and Docker 20.10.24, installed on the
# machine), the tests run on newer containerd and Docker releases from newer Debian suites.
# Their packages are fetched with `apt-get download` through a private sources list and apt
# state, unpacked with `dpkg -x` into a cache directory kept across runs, and run from there:
# the machine's own packages are never upgraded. bookworm's runc serves every containerd.
#
# One line per version: label, Debian suite, docker daemon.json.
OI_MATRIX_VERSIONS=(
  'containerd-1.7+docker-26.1 trixie {}'
  'containerd-2.1+docker-28.5 forky {}'
  'containerd-2.1+docker-28.5-containerd-store forky {"features":{"containerd-snapshotter":true}}'
)
OI_CACHE=${OI_CACHE:-/var/cache/offline-images-test}
OI_SUITE_PACKAGES=(containerd docker.io docker-cli)

# apt-get or apt-cache with the private sources list and state of suite $1.
oi_apt() {
  local suite=$1 tool=$2 dir=$OI_CACHE/apt/$1
  shift 2
  "$tool" -q -o Dir::Etc::SourceList="$dir/sources.list" -o Dir::Etc::SourceParts=/nonexistent \
    -o Dir::State::Lists="$dir/lists" -o Dir::State::status="$dir/status" \
    -o Dir::Cache="$dir/cache" -o Dir::Cache::archives="$dir/archives" \
    -o APT::Sandbox::User=root -o Debug::NoLocking=1 "$@"
}

# Fetch and unpack the packages of suite $1 into $OI_CACHE/$1/root, once; echoes the bin dir
# (links to that suite's containerd, ctr, shim, dockerd and docker).
oi_fetch_suite() {
  local suite=$1 dir=$OI_CACHE/apt/$1 root=$OI_CACHE/$1/root bin=$OI_CACHE/$1/bin deb b
  if [ ! -f "$root/.complete" ]; then
    mkdir -p "$dir/lists/partial" "$dir/archives/partial" "$dir/debs"
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian $suite main" \
      >"$dir/sources.list"
    touch "$dir/status"
    say "fetching ${OI_SUITE_PACKAGES[*]} from Debian $suite into $OI_CACHE"
    oi_apt "$suite" apt-get update -qq >/dev/null || die "apt-get update of the $suite sources failed"
    rm -f "$dir/debs"/*.deb
    (cd "$dir/debs" && oi_apt "$suite" apt-get download "${OI_SUITE_PACKAGES[@]}" >/dev/null) \
      || die "apt-get download of ${OI_SUITE_PACKAGES[*]} from $suite failed"
    rm -rf "$root.new"
    mkdir -p "$root.new"
    for deb in "$dir/debs"/*.deb; do dpkg -x "$deb" "$root.new" || die "dpkg -x $deb failed"; done
    touch "$root.new/.complete"
    rm -rf "$root"
    mv "$root.new" "$root"
  fi
  mkdir -p "$bin"
  for b in usr/bin/containerd usr/bin/ctr usr/bin/containerd-shim-runc-v2 usr/sbin/dockerd \
    usr/bin/docker; do
    [ -x "$root/$b" ] || die "$suite: $root/$b is missing from the unpacked packages"
    ln -sf "$root/$b" "$bin/${b##*/}"
  done
  # Each binary must run on this machine's glibc.
  for b in containerd ctr dockerd docker; do
    "$bin/$b" --version >/dev/null 2>&1 || die "$suite: $bin/$b does not run on this machine: $("$bin/$b" --version 2>&1 | head -1)"
  done
  echo "$bin"
}

# The version lines OI_VERSIONS selects: unset or `all` = every one, `default` = none (the
# default pair alone), else a comma-separated list of label parts (`containerd-2.1`,
# `docker-26.1`, `containerd-store`).
oi_selected_versions() {
  local want=${OI_VERSIONS:-all} line label part
  for line in "${OI_MATRIX_VERSIONS[@]}"; do
    label=${line%% *}
    case $want in
      all) echo "$line" ;;
      default | none) ;;
      *)
        IFS=, read -ra parts <<<"$want"
        for part in "${parts[@]}"; do
          if [[ $label == *"$part"* ]]; then echo "$line"; break; fi
        done
        ;;
    esac
  done
}

# Start every selected version's containerd and dockerd under $1/matrix/N, all in parallel, and
# export the matrix for the tests: OI_MATRIX (the number of versions beyond the default pair),
# for each N, OI_MATRIX_N_{LABEL,CONTAINERD_SOCK,DOCKER_HOST,CTR,DOCKER_CLI,CONTAINERD_VERSION,
# DOCKER_VERSION}, and OI_MATRIX_KNOWN (the label of every version line, selected or not).
oi_start_matrix() {
  local base=$1 n=0 line label suite config bin dir pids=() failed=0 i
  local -a lines
  mapfile -t lines < <(oi_selected_versions)
  for line in "${lines[@]}"; do
    read -r label suite config <<<"$line"
    bin=$(oi_fetch_suite "$suite") || exit 1
    n=$((n + 1))
    dir=$base/matrix/$n
    mkdir -p "$dir"
    (
      oi_start_containerd "$dir" "$bin" && oi_start_dockerd "$dir" "$bin" "$config" || exit 1
      {
        echo "OI_MATRIX_${n}_LABEL=$label"
        echo "OI_MATRIX_${n}_CONTAINERD_SOCK=$OI_CONTAINERD_SOCK"
        echo "OI_MATRIX_${n}_DOCKER_HOST=$OI_DOCKER_HOST"
        echo "OI_MATRIX_${n}_CTR=$bin/ctr"
        echo "OI_MATRIX_${n}_DOCKER_CLI=$bin/docker"
        echo "OI_MATRIX_${n}_CONTAINERD_VERSION=$("$bin/containerd" --version | awk '{print $3}')"
        echo "OI_MATRIX_${n}_DOCKER_VERSION=$(DOCKER_HOST=$OI_DOCKER_HOST "$bin/docker" version --format '{{.Server.Version}}')"
      } >"$dir/env"
    ) &
    pids+=($!)
  done
  for i in "${pids[@]}"; do wait "$i" || failed=1; done
  [ "$failed" = 0 ] || die "a daemon of the version matrix did not start (logs under $base/matrix)"
  for i in $(seq 1 "$n"); do
    while IFS='=' read -r k v; do export "$k=$v"; done <"$base/matrix/$i/env"
    say "version $i: $(eval echo "\$OI_MATRIX_${i}_LABEL") on $base/matrix/$i"
  done
  export OI_MATRIX=$n
  # Every version line, started or not: a test on every version fails in CI when one is absent.
  OI_MATRIX_KNOWN=$(for line in "${OI_MATRIX_VERSIONS[@]}"; do printf '%s ' "${line%% *}"; done)
  export OI_MATRIX_KNOWN=${OI_MATRIX_KNOWN% }
  # The default pair's own versions, for the table of versions tested.
  OI_DEFAULT_CONTAINERD_VERSION=$(containerd --version | awk '{print $3}')
  OI_DEFAULT_DOCKER_VERSION=$(DOCKER_HOST=$OI_DOCKER_HOST "$(oi_docker_cli)" version --format '{{.Server.Version}}')
  export OI_DEFAULT_CONTAINERD_VERSION OI_DEFAULT_DOCKER_VERSION
}

# ---- aarch64 ---------------------------------------------------------------------------------
# The importer for aarch64 nodes: the static musl build, linked by rust-lld (shipped with the
# Rust toolchain; the target brings musl's crt objects and libc), and qemu-user from Debian to
# run it here. .cargo/config.toml names the linker.
oi_install_aarch64() {
  if ! rustup target list --installed 2>/dev/null | grep -qx aarch64-unknown-linux-musl; then
    say "adding the aarch64-unknown-linux-musl target"
    rustup target add aarch64-unknown-linux-musl >/dev/null
  fi
  local missing=()
  command -v qemu-aarch64 >/dev/null || missing+=(qemu-user)
  # ring (TLS for the registry engine) compiles C and assembly for the target: Debian's
  # aarch64 cross gcc does that for musl too, with the aarch64 C headers of
  # libc6-dev-arm64-cross (ring includes only stdint.h-level headers, no libc calls).
  command -v aarch64-linux-gnu-gcc >/dev/null || missing+=(gcc-aarch64-linux-gnu)
  [ -f /usr/aarch64-linux-gnu/include/stdint.h ] || missing+=(libc6-dev-arm64-cross)
  if [ ${#missing[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || die "installing ${missing[*]} needs root"
    say "installing Debian packages: ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
      || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }
  fi
  export CC_aarch64_unknown_linux_musl=${CC_aarch64_unknown_linux_musl:-aarch64-linux-gnu-gcc}
  export AR_aarch64_unknown_linux_musl=${AR_aarch64_unknown_linux_musl:-aarch64-linux-gnu-ar}
}

# Build the static binary for TARGET (default x86_64-unknown-linux-musl; the aarch64 one needs
# oi_install_aarch64 first) with the release profile, check that it is static and of TARGET's
# machine, and echo its path. FLAVOUR `full` (the default) is the operator's binary, export
# included; `node` is the importer that runs on nodes (the image, the bundled aarch64 binary),
# built without the `export` feature: no registry client, TLS or chart reader (decision 24).
# Each is copied to TARGET/release/FLAVOUR/, so the two builds do not overwrite each other.
# Cargo's own output goes to stderr. Every script that needs a binary builds it here.
oi_build_static() {
  local target=${1:-x86_64-unknown-linux-musl} flavour=${2:-full} root=${CARGO_TARGET_DIR:-$PWD/target} bin machine
  local features=()
  case $target in
    x86_64-*) machine='Advanced Micro Devices X86-64' ;;
    aarch64-*) machine='AArch64' ;;
    *) die "oi_build_static: unknown target $target" ;;
  esac
  case $flavour in
    full) ;;
    node) features=(--no-default-features) ;;
    *) die "oi_build_static: unknown flavour $flavour (full or node)" ;;
  esac
  cargo build --quiet --release --target "$target" "${features[@]}" >&2 \
    || die "the $flavour release build for $target failed"
  # Each flavour is copied to a directory of its own: the next build of the other flavour
  # writes cargo's own output path again.
  bin=$root/$target/release/$flavour/offline-images
  mkdir -p "${bin%/*}"
  cp "$root/$target/release/offline-images" "$bin.new"
  mv "$bin.new" "$bin"
  file_is_static "$bin" || die "$bin is not static"
  LC_ALL=C readelf -h "$bin" | grep -q "Machine:.*$machine" || die "$bin is not a $machine executable"
  echo "$bin"
}

# Unpack Debian forky's PACKAGES (apt-get download, dpkg -x; nothing is installed) into ROOT,
# once: ROOT/.complete marks a finished unpack. NAME names the download directory.
oi_unpack_forky() {
  local name=$1 root=$2 dir=$OI_CACHE/apt/forky deb
  shift 2
  [ -f "$root/.complete" ] && return 0
  [ -f "$dir/sources.list" ] || oi_fetch_suite forky >/dev/null
  mkdir -p "$dir/$name-debs"
  rm -f "$dir/$name-debs"/*.deb
  say "fetching $* from Debian forky into $OI_CACHE"
  (cd "$dir/$name-debs" && oi_apt forky apt-get download "$@" >/dev/null) \
    || die "apt-get download of $* from forky failed"
  rm -rf "$root.new"
  mkdir -p "$root.new"
  for deb in "$dir/$name-debs"/*.deb; do dpkg -x "$deb" "$root.new" || die "dpkg -x $deb failed"; done
  touch "$root.new/.complete"
  rm -rf "$root"
  mv "$root.new" "$root"
}

# ---- skopeo 1.22 -----------------------------------------------------------------------------
# skopeo 1.22 (Debian forky) writes archives the Debian 12 one cannot (zstd-compressed layers).
# Its binary needs glibc 2.38, newer than Debian 12's, so it does not run here as it is: it
# runs with forky's own loader and C library, unpacked beside it into the cache (nothing is
# installed). Echoes the path of a `skopeo` that does so.
OI_SKOPEO_PACKAGES=(skopeo libc6 libgpgme45 libassuan9 libgpg-error0 libsqlite3-0)
oi_fetch_forky_skopeo() {
  local root=$OI_CACHE/forky-skopeo/root bin=$OI_CACHE/forky-skopeo/bin lib
  oi_unpack_forky skopeo "$root" "${OI_SKOPEO_PACKAGES[@]}"
  lib=$root/usr/lib/x86_64-linux-gnu
  mkdir -p "$bin"
  printf '#!/bin/sh\n# skopeo from Debian forky, run with its own glibc (this machine has an older one).\nexec %s --library-path %s %s "$@"\n' \
    "$lib/ld-linux-x86-64.so.2" "$lib" "$root/usr/bin/skopeo" >"$bin/skopeo"
  chmod +x "$bin/skopeo"
  "$bin/skopeo" --version 2>/dev/null | grep -q 'version 1\.2[2-9]' \
    || die "forky's skopeo does not run with its own glibc: $("$bin/skopeo" --version 2>&1 | head -1)"
  echo "$bin/skopeo"
}

# ---- crane 0.20 ------------------------------------------------------------------------------
# go-containerregistry's crane (Debian forky's `crane` package) as a writer of OCI layouts
# (`crane pull --format oci`) for the corpus and the benchmarks. A Go binary that needs only
# glibc 2.34, so it runs here as it is; unpacked into the cache, nothing is installed. Echoes
# its path. Debian's build has no version of its own (`crane version` says "could not determine
# build information"): the package's changelog gives it.
oi_fetch_forky_crane() {
  local root=$OI_CACHE/forky-crane/root
  oi_unpack_forky crane "$root" crane
  zcat "$root/usr/share/doc/crane/changelog.Debian.gz" | head -1 | grep -q '(0\.2[0-9]\.' \
    || die "forky's crane is not 0.20 or newer: $(zcat "$root/usr/share/doc/crane/changelog.Debian.gz" | head -1)"
  "$root/usr/bin/crane" pull --help 2>/dev/null | grep -q -- '--annotate-ref' \
    || die "forky's crane does not run here: $("$root/usr/bin/crane" pull --help 2>&1 | head -1)"
  echo "$root/usr/bin/crane"
}

# ---- podman 5 --------------------------------------------------------------------------------
# podman 5 (Debian forky) as an archive writer: `podman pull` from the local registry, then
# `podman save` as docker-archive, oci-archive and --multi-image-archive. No container runs
# under it. Like skopeo 1.22 it needs glibc 2.38, but run as `ld-linux.so --library-path …
# podman` it cannot store a layer: containers/storage re-executes /proc/self/exe (then the
# loader, not podman) to apply it ("error while loading shared libraries: …: cannot read file
# data"). So copies of podman, conmon and netavark get forky's loader as their interpreter and
# forky's libraries as their RPATH (patchelf), and /proc/self/exe is podman again. Echoes the
# path of a `podman` wrapper with its own containers.conf; storage is chosen per call
# (--root, --runroot).
OI_PODMAN_PACKAGES=(podman conmon netavark libc6 libgpgme45 libassuan9 libgpg-error0 libseccomp2
  libsqlite3-0 libsubid6 libglib2.0-0t64)
oi_fetch_forky_podman() {
  local top=$OI_CACHE/forky-podman root=$OI_CACHE/forky-podman/root lib b
  if [ ! -f "$root/.complete" ]; then
    rm -rf "$top/bin"
    oi_unpack_forky podman "$root" "${OI_PODMAN_PACKAGES[@]}"
  fi
  lib=$root/usr/lib/x86_64-linux-gnu
  if [ ! -x "$top/bin/podman" ]; then
    mkdir -p "$top/bin.new"
    for b in usr/bin/podman usr/bin/conmon usr/lib/podman/netavark; do
      cp "$root/$b" "$top/bin.new/"
      # RPATH, not RUNPATH: it also serves the libraries' own dependencies (gpgme's assuan).
      patchelf --set-interpreter "$lib/ld-linux-x86-64.so.2" --force-rpath --set-rpath "$lib" \
        "$top/bin.new/${b##*/}" || die "patchelf of forky's ${b##*/} failed"
    done
    printf '[engine]\nconmon_path = ["%s"]\nhelper_binaries_dir = ["%s"]\nruntime = "runc"\nevents_logger = "file"\n' \
      "$top/bin/conmon" "$top/bin" >"$top/bin.new/containers.conf"
    printf '#!/bin/sh\n# podman from Debian forky, on its own glibc (see scripts/lib.sh).\nCONTAINERS_CONF=%s PODMAN_IGNORE_CGROUPSV1_WARNING=1 exec %s "$@"\n' \
      "$top/bin/containers.conf" "$top/bin/podman.bin" >"$top/bin.new/podman.sh"
    mv "$top/bin.new/podman" "$top/bin.new/podman.bin"
    mv "$top/bin.new/podman.sh" "$top/bin.new/podman"
    chmod +x "$top/bin.new/podman"
    rm -rf "$top/bin"
    mv "$top/bin.new" "$top/bin"
  fi
  "$top/bin/podman" --version 2>/dev/null | grep -q 'version 5\.' \
    || die "forky's podman does not run with its own glibc: $("$top/bin/podman" --version 2>&1 | head -1)"
  echo "$top/bin/podman"
}

# ---- cosign 2.x and 3.x ----------------------------------------------------------------------
# Sigstore's cosign from Debian trixie (2.x) and forky (3.x), to sign images, attach SBOMs and
# attestations and verify them in the signature tests (trixie's 2.5, forky's 3.1 when written).
# Go binaries that need only glibc 2.34, so they run here as they are; unpacked into the cache,
# nothing is installed. Echoes the path.
oi_fetch_cosign() {
  local suite=$1 major root=$OI_CACHE/$1-cosign/root dir=$OI_CACHE/apt/$1 deb
  case $suite in trixie) major=2 ;; forky) major=3 ;; *) die "oi_fetch_cosign: no cosign suite $suite" ;; esac
  if [ ! -f "$root/.complete" ]; then
    [ -f "$dir/sources.list" ] || oi_fetch_suite "$suite" >/dev/null
    mkdir -p "$dir/cosign-debs"
    rm -f "$dir/cosign-debs"/*.deb
    say "fetching cosign from Debian $suite into $OI_CACHE"
    (cd "$dir/cosign-debs" && oi_apt "$suite" apt-get download cosign >/dev/null) \
      || die "apt-get download of cosign from $suite failed"
    rm -rf "$root.new"
    mkdir -p "$root.new"
    for deb in "$dir/cosign-debs"/*.deb; do dpkg -x "$deb" "$root.new" || die "dpkg -x $deb failed"; done
    touch "$root.new/.complete"
    rm -rf "$root"
    mv "$root.new" "$root"
  fi
  # Debian's build calls itself "devel": the package's changelog gives the version.
  zcat "$root/usr/share/doc/cosign/changelog.Debian.gz" | head -1 | grep -q "($major\." \
    || die "$suite's cosign is not $major.x: $(zcat "$root/usr/share/doc/cosign/changelog.Debian.gz" | head -1)"
  "$root/usr/bin/cosign" version 2>&1 | grep -q 'GoVersion:' \
    || die "$suite's cosign does not run here: $("$root/usr/bin/cosign" version 2>&1 | tail -3 | tr '\n' ' ')"
  echo "$root/usr/bin/cosign"
}

# ---- Sigstore's public data ------------------------------------------------------------------
# A cosign 3 image signature made with Sigstore's public Fulcio and logged by its public Rekor,
# and the trusted root of both: the `tests/data` of the Rust `sigstore` crate 0.15.0, fetched
# from crates.io (checked against its sha256) into the cache; nothing of it is in the
# repository. The export's certificate check verifies the signature offline, at the time its
# log entry promises (importer/src/export/signatures/verify.rs). Echoes the directory.
oi_fetch_sigstore_data() {
  local dir=$OI_CACHE/sigstore-0.15.0-data
  local sum=6577ebcdb8f5ccdb60fcbac3b415390d9f9d1bdf852ca252c7e1bbf128f3faf6
  if [ ! -f "$dir/.complete" ]; then
    say "fetching the sigstore crate's test data from crates.io into $OI_CACHE"
    rm -rf "$dir.new"
    mkdir -p "$dir.new"
    "${OI_PYTHON:-python3}" -c 'import sys, urllib.request; urllib.request.urlretrieve(sys.argv[1], sys.argv[2])' \
      https://static.crates.io/crates/sigstore/sigstore-0.15.0.crate "$dir.new/sigstore.crate" \
      || die "the download of the sigstore crate 0.15.0 from static.crates.io failed"
    echo "$sum  $dir.new/sigstore.crate" | sha256sum -c --quiet \
      || die "the sigstore crate 0.15.0 from crates.io does not match its sha256 $sum"
    tar -xzf "$dir.new/sigstore.crate" -C "$dir.new" --strip-components=3 \
      sigstore-0.15.0/tests/data/bundle_v03.json sigstore-0.15.0/tests/data/sigstore_trusted_root.json \
      || die "the sigstore crate 0.15.0 holds no tests/data/bundle_v03.json and sigstore_trusted_root.json"
    rm "$dir.new/sigstore.crate"
    touch "$dir.new/.complete"
    rm -rf "$dir"
    mv "$dir.new" "$dir"
  fi
  echo "$dir"
}
