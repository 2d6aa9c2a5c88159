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
  command -v readelf >/dev/null || missing+=(binutils)
  command -v protoc >/dev/null || missing+=(protobuf-compiler)  # containerd's gRPC API, built from its protos
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

# Start containerd on a private socket under $1; exports OI_CONTAINERD_SOCK.
oi_start_containerd() {
  local dir=$1/containerd
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
  containerd --config "$dir/config.toml" >"$dir/containerd.log" 2>&1 &
  echo $! >"$dir/pid"
  OI_CONTAINERD_SOCK=$dir/containerd.sock
  wait_for "containerd" 30 ctr -a "$OI_CONTAINERD_SOCK" version || { tail -20 "$dir/containerd.log" >&2; return 1; }
  export OI_CONTAINERD_SOCK
}

# Start dockerd on a private socket under $1, on the containerd started above; exports OI_DOCKER_HOST.
oi_start_dockerd() {
  local dir=$1/docker
  mkdir -p "$dir"
  # Our own (empty) config, so a host's /etc/docker/daemon.json cannot change the test daemon.
  echo '{}' >"$dir/daemon.json"
  dockerd --host "unix://$dir/docker.sock" --data-root "$dir/data" --exec-root "$dir/exec" \
    --pidfile "$dir/docker.pid" --containerd "$OI_CONTAINERD_SOCK" \
    --iptables=false --ip-masq=false --bridge=none --config-file "$dir/daemon.json" \
    >"$dir/dockerd.log" 2>&1 &
  echo $! >"$dir/pid"
  OI_DOCKER_HOST=unix://$dir/docker.sock
  wait_for "dockerd" 60 env DOCKER_HOST="$OI_DOCKER_HOST" "$(oi_docker_cli)" version || { tail -20 "$dir/dockerd.log" >&2; return 1; }
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
  local base=$1 name pid i
  [ -n "$base" ] && [ -d "$base" ] || return 0
  for name in registry docker containerd; do
    [ -f "$base/$name/pid" ] || continue
    pid=$(cat "$base/$name/pid")
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
