#!/usr/bin/env bash
# The network of a local fleet: hosts as network namespaces on one bridge.
# Used by `start_all.sh --nodes N` and by the fleet tests (e2e/src/fleet.rs).
#
#   fleet-net.sh bridge-up BRIDGE GATEWAY/PREFIX    the bridge, with this machine's address on it
#   fleet-net.sh bridge-down BRIDGE
#   fleet-net.sh host-up NETNS LINK BRIDGE ADDR/PREFIX GATEWAY
#                                   a namespace with eth0 (ADDR) on the bridge through
#                                   veth LINK, loopback up, default route to GATEWAY
#   fleet-net.sh host-down NETNS LINK
#   fleet-net.sh partition LINK     cut the host off (its link to the bridge down)
#   fleet-net.sh heal LINK          and back
#   fleet-net.sh kill NETNS         SIGKILL every process in the namespace and all
#                                   their descendants (containers included), as a
#                                   power cut would
#   fleet-net.sh pids NETNS         those processes
#
# Every verb is idempotent: what is already there (or already gone) is fine.
set -euo pipefail

die() { echo "fleet-net.sh: $*" >&2; exit 1; }

# Every descendant of the given pids, the pids included.
descendants() {
  local all
  all=$(ps -e -o pid=,ppid=)
  local -A seen=()
  local queue=("$@")
  while [ ${#queue[@]} -gt 0 ]; do
    local p=${queue[0]}
    queue=("${queue[@]:1}")
    [ -n "${seen[$p]:-}" ] && continue
    seen[$p]=1
    echo "$p"
    while read -r child parent; do
      [ "$parent" = "$p" ] && queue+=("$child")
    done <<<"$all"
  done
}

cmd=${1:-}
shift || true
case "$cmd" in
  bridge-up)
    [ $# -eq 2 ] || die "usage: bridge-up BRIDGE GATEWAY/PREFIX"
    ip link show "$1" >/dev/null 2>&1 || ip link add "$1" type bridge
    ip addr replace "$2" dev "$1"
    ip link set "$1" up
    # Namespaced hosts talk to each other and to this machine only through
    # the bridge; bridged frames skip the host's iptables.
    sysctl -qw net.ipv4.ip_forward=1
    ;;
  bridge-down)
    [ $# -eq 1 ] || die "usage: bridge-down BRIDGE"
    ip link del "$1" 2>/dev/null || true
    ;;
  host-up)
    [ $# -eq 5 ] || die "usage: host-up NETNS LINK BRIDGE ADDR/PREFIX GATEWAY"
    ns=$1 link=$2 bridge=$3 addr=$4 gw=$5
    [ -e "/run/netns/$ns" ] || ip netns add "$ns"
    if ! ip link show "$link" >/dev/null 2>&1; then
      ip netns exec "$ns" ip link del eth0 2>/dev/null || true
      ip link add "$link" type veth peer name eth0 netns "$ns"
    fi
    ip link set "$link" master "$bridge" up
    ip -n "$ns" link set lo up
    ip -n "$ns" addr replace "$addr" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" route replace default via "$gw"
    ;;
  host-down)
    [ $# -eq 2 ] || die "usage: host-down NETNS LINK"
    ip link del "$2" 2>/dev/null || true
    ip netns del "$1" 2>/dev/null || true
    ;;
  partition)
    [ $# -eq 1 ] || die "usage: partition LINK"
    ip link set "$1" down
    ;;
  heal)
    [ $# -eq 1 ] || die "usage: heal LINK"
    ip link set "$1" up
    ;;
  pids)
    [ $# -eq 1 ] || die "usage: pids NETNS"
    [ -e "/run/netns/$1" ] || exit 0
    mapfile -t roots < <(ip netns pids "$1")
    [ ${#roots[@]} -eq 0 ] || descendants "${roots[@]}"
    ;;
  kill)
    [ $# -eq 1 ] || die "usage: kill NETNS"
    # Stop first so nothing forks or restarts while the list is made.
    for _ in 1 2 3; do
      mapfile -t pids < <("$0" pids "$1")
      [ ${#pids[@]} -eq 0 ] && break
      kill -STOP "${pids[@]}" 2>/dev/null || true
      kill -KILL "${pids[@]}" 2>/dev/null || true
      sleep 0.1
    done
    ;;
  *)
    die "unknown verb '$cmd' (bridge-up, bridge-down, host-up, host-down, partition, heal, kill, pids)"
    ;;
esac
