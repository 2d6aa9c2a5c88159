# shellcheck shell=bash
# The kind-shaped node image of the kind tests, built offline from Debian packages: a bookworm
# root file system made by debootstrap with Debian's containerd and runc, imported into a
# dockerd with `docker import`. Sourced by test.sh after lib.sh.

# What the node holds beside a minimal Debian: containerd and runc, and pigz, which kind's own
# node image installs (its images/base/Dockerfile) and whose unpigz containerd runs to
# decompress gzip'd layers when it finds it on PATH. The cache and the image are named by the
# list, so that a change of it builds them again.
OI_KIND_NODE_PACKAGES=containerd,runc,pigz
OI_KIND_NODE_IMAGE=${OI_KIND_NODE_IMAGE:-offline-images-test/kind-node:bookworm-${OI_KIND_NODE_PACKAGES//,/-}}

# The node's root file system as a tar, built once into $OI_CACHE/kind-node; echoes its path.
oi_kind_node_rootfs() {
  local dir=$OI_CACHE/kind-node-${OI_KIND_NODE_PACKAGES//,/-} root
  local tar=$dir/rootfs.tar
  if [ ! -f "$tar" ]; then
    command -v debootstrap >/dev/null || {
      [ "$(id -u)" = 0 ] || die "installing debootstrap needs root"
      say "installing debootstrap"
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null \
        || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null; } \
        || die "apt-get install debootstrap failed"
    }
    root=$dir/root.new
    rm -rf "$root"
    mkdir -p "$root"
    say "building the kind node root file system (debootstrap bookworm, $OI_KIND_NODE_PACKAGES) in $dir"
    debootstrap --variant=minbase --include="$OI_KIND_NODE_PACKAGES" bookworm "$root" http://deb.debian.org/debian \
      >"$dir/debootstrap.log" 2>&1 || { tail -20 "$dir/debootstrap.log" >&2; die "debootstrap failed (log: $dir/debootstrap.log)"; }
    # What a node image leaves out: apt's package lists and caches.
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
    tar -C "$root" --numeric-owner -cf "$tar.new" . || die "cannot pack $root into $tar.new"
    mv "$tar.new" "$tar"
    rm -rf "$root"
  fi
  echo "$tar"
}

# The node image in the dockerd at $OI_DOCKER_HOST, imported from the cached root file system
# when it is not there yet; exports OI_KIND_NODE_IMAGE.
oi_kind_node_image() {
  local cli tar
  cli=$(oi_docker_cli)
  tar=$(oi_kind_node_rootfs)
  if ! DOCKER_HOST=$OI_DOCKER_HOST "$cli" image inspect "$OI_KIND_NODE_IMAGE" >/dev/null 2>&1; then
    say "importing the kind node image $OI_KIND_NODE_IMAGE"
    DOCKER_HOST=$OI_DOCKER_HOST "$cli" import --change 'CMD ["/usr/bin/containerd"]' "$tar" "$OI_KIND_NODE_IMAGE" >/dev/null \
      || die "docker import of $tar failed"
  fi
  export OI_KIND_NODE_IMAGE
}

# A user who is not root and reaches Docker only through its socket's group (the socket of
# the private dockerd is root:docker 0660), for the kind test that runs import --kind as
# such a user; exports OI_KIND_USER.
oi_kind_user() {
  OI_KIND_USER=${OI_KIND_USER:-oi-kind}
  getent group docker >/dev/null || groupadd --system docker || die "cannot add the group docker"
  if ! id "$OI_KIND_USER" >/dev/null 2>&1; then
    useradd --system --no-create-home --shell /usr/sbin/nologin --gid nogroup --groups docker \
      "$OI_KIND_USER" || die "cannot add the user $OI_KIND_USER"
  fi
  export OI_KIND_USER
}
