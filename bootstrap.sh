#!/usr/bin/env bash
# Bootstraps a Bismuth environment the way the original README describes:
# bootstrap ZooKeeper, provision this node, create a demo function, and add
# this node as its backend. Prints the function id.
#
#   ./bootstrap.sh [ZOOKEEPER] [NODE_IP]     (defaults 127.0.0.1:2181 and 127.0.0.1)
#
# The demo's image is BISMUTH_DEMO_IMAGE, by default the busybox test image
# start_all.sh imports (scripts/test-images.sh builds it; `bismuthctl image
# import` loads it), since no public registry may be reachable.
#
# Uses target/release/bismuthctl (or target/debug/bismuthctl); build first.
set -euo pipefail
cd "$(dirname "$0")"
ZK="${1:-${BISMUTH_ZOOKEEPER:-127.0.0.1:2181}}"
NODE="${2:-${BISMUTH_NODE_IP:-127.0.0.1}}"
CTL=target/release/bismuthctl
[ -x "$CTL" ] || CTL=target/debug/bismuthctl
[ -x "$CTL" ] || { echo "error: build first (cargo build --release)" >&2; exit 1; }
ctl() { "$CTL" --zookeeper "$ZK" "$@"; }

ctl bootstrap
ctl provision "$NODE" 2>/dev/null || ctl list-nodes | grep -q "^$NODE " || { echo "error: cannot provision $NODE" >&2; exit 1; }
id=$(ctl create-function "${BISMUTH_DEMO_IMAGE:-docker.io/bismuth/busybox:test}" 'exec:/bin/cat' --memory 16M)
container=$(ctl add-backend "$id" "$NODE")
echo "function $id with container $container on $NODE"
echo "invoke (once bismuthd runs it): curl -d hello http://localhost:8000/invoke/$id"
