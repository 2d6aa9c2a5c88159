#!/usr/bin/env bash
# Benchmark: `offline-images deliver` against the loop operators write,
# `for h in HOSTS; for i in IMAGES: docker save i | gzip | ssh h 'gunzip | docker load'`, over
# links shaped to BENCH_RATE (20mbit), alternated in one run.
#
#   scripts/bench-deliver.sh
#
# Hosts as tests/it/deliver.rs makes them: each a network namespace (ip netns, a veth pair,
# 10.79.N.1 here, 10.79.N.2 inside) running Debian's sshd with a host key of its own and key
# authentication only, reached with a client key and a known_hosts of the run's own. The link
# towards each host is shaped with `tc ... tbf` on its veth; no delay is added: this kernel has
# no netem ("Specified qdisc kind is unknown"). Every host's runtime is the one dockerd of
# OI_DOCKER_HOST (it shares this machine's file system), so the hosts' loads all go to it, and
# the bench's images are removed from it between runs.
#
# The release: BENCH_IMAGES (4) images of a BENCH_BASE_MB (24) MiB base layer
# (/usr/lib/x86_64-linux-gnu) and BENCH_OWN_MB (4) MiB of their own (/usr/lib/llvm-14,
# /usr/lib/jvm, /usr/share, /usr/bin), pushed to OI_REGISTRY and exported with
# `export --format layout` (our bundle). The upgrade: image 1 gains a layer of BENCH_NEW_MB
# (8) MiB under a new tag (:2), the others unchanged. The operator's dockerd is the hosts' one
# here, so `docker save` runs once beforehand, into a tar per image; the loop is timed from
# `gzip` on (which only helps it).
#
# Each round, each side in turn (ABAB), from a runtime without the bench's images and hosts
# without an importer: the first delivery of the release, then the upgrade onto hosts that have
# the release. Medians, ratios against the goals (first <= 0.5, upgrade <= 0.1) and the bytes
# that crossed the veths.
#
# Environment: OI_DOCKER_HOST (a dockerd), OI_REGISTRY (a plain registry), OI_STATIC_BIN (the
# importer with export), OI_NODE_BIN (the node importer sent to hosts), BENCH_ROUNDS (3),
# BENCH_HOSTS (2), BENCH_RATE (20mbit), BENCH_IMAGES, BENCH_BASE_MB, BENCH_OWN_MB, BENCH_NEW_MB.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
: "${OI_DOCKER_HOST:?set OI_DOCKER_HOST to a dockerd socket (unix:///...)}"
: "${OI_REGISTRY:?set OI_REGISTRY to a plain registry (HOST:PORT)}"
: "${OI_STATIC_BIN:?set OI_STATIC_BIN to the importer built with export}"
: "${OI_NODE_BIN:?set OI_NODE_BIN to the static node importer}"
ROUNDS=${BENCH_ROUNDS:-3} HOSTS=${BENCH_HOSTS:-2} RATE=${BENCH_RATE:-20mbit}
IMAGES=${BENCH_IMAGES:-4} BASE_MB=${BENCH_BASE_MB:-24} OWN_MB=${BENCH_OWN_MB:-4} NEW_MB=${BENCH_NEW_MB:-8}
export DOCKER_HOST=$OI_DOCKER_HOST
CLI=$(oi_docker_cli)
for t in /usr/sbin/sshd ssh ssh-keygen ip tc gzip bc; do
  command -v "$t" >/dev/null || die "$t is missing (scripts/test.sh installs it)"
done
WORK=$(mktemp -d /tmp/oi-bench-deliver.XXXXXX)
TAG=$(($$ % 100000))
REPO=$OI_REGISTRY/bench/deliver-$TAG
SSHD_PIDS=() VETHS=() NSS=()
cleanup() {
  local p
  for p in "${SSHD_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${VETHS[@]}"; do ip link del "$p" 2>/dev/null || true; done
  for p in "${NSS[@]}"; do ip netns del "$p" 2>/dev/null || true; done
  reset_docker
  "$CLI" rmi bench/deliver-base-$TAG:1 >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# The bench's images out of the dockerd (by name: other images there are left alone).
reset_docker() {
  local r
  for r in $("$CLI" image ls --format '{{.Repository}}:{{.Tag}}' | grep -F "$REPO-" || true); do
    "$CLI" rmi "$r" >/dev/null
  done
}

build_release() {
  local ctx=$WORK/build i src sources=(/usr/lib/llvm-14 /usr/lib/jvm /usr/share /usr/bin)
  say "building $IMAGES images: a $BASE_MB MiB base layer shared by all, $OWN_MB MiB of their own; the upgrade adds $NEW_MB MiB to image 1"
  mkdir -p "$ctx/base"
  find_layer /usr/lib/x86_64-linux-gnu "$BASE_MB" "$ctx/base/layer.tar"
  printf 'FROM scratch\nADD layer.tar /\n' >"$ctx/base/Dockerfile"
  "$CLI" build -q -t "bench/deliver-base-$TAG:1" "$ctx/base" >/dev/null
  RELEASE=() UPGRADE=()
  for i in $(seq 1 "$IMAGES"); do
    src=${sources[$(((i - 1) % ${#sources[@]}))]}
    mkdir -p "$ctx/app-$i"
    find_layer "$src" "$OWN_MB" "$ctx/app-$i/layer.tar" $((OWN_MB * ((i - 1) / ${#sources[@]})))
    printf 'FROM bench/deliver-base-%s:1\nADD layer.tar /\nLABEL bench.deliver="%s"\n' "$TAG" "$i" >"$ctx/app-$i/Dockerfile"
    "$CLI" build -q -t "$REPO-$i:1" "$ctx/app-$i" >/dev/null
    RELEASE+=("$REPO-$i:1")
  done
  mkdir -p "$ctx/upgrade"
  find_layer /usr/lib/x86_64-linux-gnu "$NEW_MB" "$ctx/upgrade/layer.tar" "$BASE_MB"
  printf 'FROM %s\nADD layer.tar /\nLABEL bench.deliver="1-upgraded"\n' "${RELEASE[0]}" >"$ctx/upgrade/Dockerfile"
  "$CLI" build -q -t "$REPO-1:2" "$ctx/upgrade" >/dev/null
  UPGRADE=("$REPO-1:2" "${RELEASE[@]:1}")
  rm -rf "$ctx"
  mkdir -p "$WORK/saved"
  for r in "${RELEASE[@]}" "${UPGRADE[0]}"; do
    "$CLI" push -q "$r" >/dev/null
    "$CLI" save -o "$WORK/saved/$(saved_name "$r")" "$r"
  done
  say "exporting the release and the upgrade (export --format layout)"
  "$OI_STATIC_BIN" export --format layout --output "$WORK/release" "${RELEASE[@]}" 2>"$WORK/export.log" ||
    { tail -20 "$WORK/export.log" >&2; die "export of the release failed"; }
  "$OI_STATIC_BIN" export --format layout --output "$WORK/upgrade" "${UPGRADE[@]}" 2>>"$WORK/export.log" ||
    { tail -20 "$WORK/export.log" >&2; die "export of the upgrade failed"; }
  reset_docker
  "$CLI" rmi "bench/deliver-base-$TAG:1" >/dev/null
}
saved_name() { local n=${1##*/}; echo "${n/:/_}.tar"; }

# Host N: namespace, veth pair shaped to RATE towards the host, sshd with its own host key.
start_host() {
  local n=$1 ns=oi-bd-$TAG-$1 veth=oibd$1x$TAG peer=oibp$1x$TAG addr=10.79.$1.2 key
  ip netns add "$ns"
  NSS+=("$ns")
  ip link add "$veth" type veth peer name "$peer"
  VETHS+=("$veth")
  ip link set "$peer" netns "$ns"
  ip addr add "10.79.$n.1/24" dev "$veth"
  ip link set "$veth" up
  ip netns exec "$ns" ip addr add "$addr/24" dev "$peer"
  ip netns exec "$ns" ip link set "$peer" up
  ip netns exec "$ns" ip link set lo up
  tc qdisc add dev "$veth" root tbf rate "$RATE" burst 32kbit latency 400ms
  key=$WORK/host$n-key
  ssh-keygen -q -t ed25519 -N '' -f "$key"
  printf '%s\n' "ListenAddress $addr" "Port 22" "HostKey $key" "AuthorizedKeysFile $WORK/client.pub" \
    "PermitRootLogin prohibit-password" "PasswordAuthentication no" "KbdInteractiveAuthentication no" \
    "UsePAM no" "StrictModes no" "PidFile $WORK/sshd$n.pid" >"$WORK/sshd$n.conf"
  mkdir -p /run/sshd
  ip netns exec "$ns" /usr/sbin/sshd -D -e -f "$WORK/sshd$n.conf" 2>>"$WORK/sshd$n.log" &
  SSHD_PIDS+=($!)
  echo "$addr $(cut -d' ' -f1-2 "$key.pub")" >>"$WORK/known_hosts"
  echo "root@$addr runtime=docker socket=$OI_DOCKER_HOST dir=$WORK/h$n" >>"$WORK/hosts"
  ADDRS+=("$addr")
  wait_for "sshd of host $n" 20 ssh "${SSH_OPTS[@]}" "root@$addr" true
}

# Bytes sent towards the hosts, all veths together.
on_veths() {
  local v t=0
  for v in "${VETHS[@]}"; do t=$((t + $(cat "/sys/class/net/$v/statistics/tx_bytes"))); done
  echo "$t"
}

# The operators' loop: every image to every host, one after the other.
loop() {
  local h r
  for h in "${ADDRS[@]}"; do
    for r in "$@"; do
      gzip -c "$WORK/saved/$(saved_name "$r")" |
        ssh "${SSH_OPTS[@]}" "root@$h" "gunzip | DOCKER_HOST=$OI_DOCKER_HOST docker load -q" >/dev/null
    done
  done
}
loop_first() { loop "${RELEASE[@]}"; }
loop_upgrade() { loop "${UPGRADE[@]}"; }

ours() {
  "$OI_STATIC_BIN" deliver --images-path "$1" --hosts-file "$WORK/hosts" --transfer-pool "$HOSTS" \
    --ssh-config /dev/null -i "$WORK/client" -o "UserKnownHostsFile=$WORK/known_hosts" \
    -o GlobalKnownHostsFile=/dev/null --importer-binary "$OI_NODE_BIN" --strict \
    --json-report "$WORK/report.json" 2>>"$WORK/ours.log" || { tail -20 "$WORK/ours.log" >&2; return 1; }
  jq -r --arg run "$2" '.hosts[] | "\($run) \(.host): units sent \(.units_sent), skipped \(.units_skipped), layers held \(.layers_held), imported \(.imported), importer sent \(.importer_sent)"' \
    "$WORK/report.json" >>"$WORK/ours.units"
}
ours_first() { ours "$WORK/release" first; }
ours_upgrade() { ours "$WORK/upgrade" upgrade; }

# One timed run: "NAME SECONDS BYTES" into the times file.
timed() {
  local name=$1 t0 t1 b0 b1
  shift
  b0=$(on_veths) t0=$(date +%s.%N)
  "$@"
  t1=$(date +%s.%N) b1=$(on_veths)
  echo "$name $(echo "$t1 - $t0" | bc) $((b1 - b0))" >>"$WORK/times"
}

side() {
  reset_docker
  rm -rf "$WORK"/h[0-9]*
  if [ "$1" = loop ]; then
    timed loop-first loop_first
    timed loop-upgrade loop_upgrade
  else
    timed ours-first ours_first
    timed ours-upgrade ours_upgrade
  fi
}

ssh-keygen -q -t ed25519 -N '' -f "$WORK/client"
SSH_OPTS=(-F /dev/null -i "$WORK/client" -o "UserKnownHostsFile=$WORK/known_hosts" -o GlobalKnownHostsFile=/dev/null
  -o BatchMode=yes -o StrictHostKeyChecking=yes)
ADDRS=()
: >"$WORK/known_hosts"
: >"$WORK/hosts"
build_release
for n in $(seq 1 "$HOSTS"); do start_host "$n"; done
say "$HOSTS hosts up, links shaped to $RATE (tbf; no delay: this kernel has no netem)"

: >"$WORK/times"
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
for r in $(seq 1 "$ROUNDS"); do
  if [ $((r % 2)) = 1 ]; then order=(loop ours); else order=(ours loop); fi
  for s in "${order[@]}"; do side "$s"; done
  say "round $r: $(tail -4 "$WORK/times" | awk '{printf "%s %.2fs %.1fMiB; ", $1, $2, $3/1048576}')"
done
reset_docker

m() { grep "^$1 " "$WORK/times" | awk -v c="$2" '{print $c}' | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
runs() { grep "^$1 " "$WORK/times" | awk '{printf " %.2f", $2}'; }
mib() { echo "scale=1; $1 / 1048576" | bc; }
release_mib=$(du -sm --exclude .offline-images "$WORK/release" | cut -f1)
saved_mib=$(du -cm "$WORK"/saved/*_1.tar | tail -1 | cut -f1)
printf '\n%s %s (%s) on %s, %s cores; kernel %s; dockerd %s; load average %s at the start, %s at the end\n' \
  "$(date -u +%FT%TZ)" "$("$OI_STATIC_BIN" --version)" "$(git rev-parse --short HEAD 2>/dev/null || echo ?)" \
  "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)" "$(nproc)" "$(uname -r)" \
  "$("$CLI" version --format '{{.Server.Version}}')" "$LOAD0" "$(cut -d' ' -f1-3 /proc/loadavg)"
printf '%s images (%s MiB base + %s MiB each; upgrade +%s MiB on image 1), %s hosts at %s (tbf, no delay), %s rounds\n' \
  "$IMAGES" "$BASE_MB" "$OWN_MB" "$NEW_MB" "$HOSTS" "$RATE" "$ROUNDS"
printf 'release: %s MiB as docker save wrote it (uncompressed), the layout %s MiB\n' "$saved_mib" "$release_mib"
printf '%-32s %8s %12s   %s\n' "(medians)" seconds "MiB on veths" runs
for k in loop-first ours-first loop-upgrade ours-upgrade; do
  printf '%-32s %8.2f %12s  %s\n' "$k" "$(m "$k" 2)" "$(mib "$(m "$k" 3)")" "$(runs "$k")"
done
printf 'first: %.3f of the loop (goal <= 0.5); upgrade: %.3f of the loop (goal <= 0.1)\n' \
  "$(echo "$(m ours-first 2) / $(m loop-first 2)" | bc -l)" "$(echo "$(m ours-upgrade 2) / $(m loop-upgrade 2)" | bc -l)"
printf 'bytes on the veths: first %.3f of the loop'"'"'s, upgrade %.3f\n' \
  "$(echo "$(m ours-first 3) / $(m loop-first 3)" | bc -l)" "$(echo "$(m ours-upgrade 3) / $(m loop-upgrade 3)" | bc -l)"
sort -u "$WORK/ours.units" 2>/dev/null | sed 's/^/deliver: /' || true
