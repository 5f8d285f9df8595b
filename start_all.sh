#!/usr/bin/env bash
# Starts a local Bismuth: installs what is missing, starts ZooKeeper (state
# under .bismuth/), builds the binaries, bootstraps the environment,
# provisions this host, and starts the api and bismuthfe. Safe to run twice.
#
#   ./start_all.sh          start (or check) everything
#   ./start_all.sh stop     stop what this script started
#
# Each step prints its name; on failure it says which step and where its log is.
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(pwd)
STATE="$ROOT/.bismuth"
LOGS="$STATE/logs"
ZK_PORT="${BISMUTH_ZK_PORT:-2181}"
ZK="127.0.0.1:$ZK_PORT"
ENV_NAME="${BISMUTH_ZOOKEEPER_ENV:-default}"
NODE_IP="${BISMUTH_NODE_IP:-127.0.0.1}"
mkdir -p "$LOGS"

step_name=""
step() { step_name="$1"; printf '==> %s\n' "$1"; }
fail() {
  printf 'error: step "%s" failed' "$step_name" >&2
  [ -n "${1:-}" ] && printf '; see %s' "$1" >&2
  printf '\n' >&2
  exit 1
}

zk_ok() {
  # srvr (unlike ruok) only reports a Mode once the server is serving sessions.
  local reply
  reply=$(timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$ZK_PORT; printf srvr >&3; cat <&3" 2>/dev/null || true)
  [[ "$reply" == *"Mode:"* ]]
}

stop_pidfile() {
  local name=$1 pidfile="$STATE/$1.pid"
  if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    kill "$(cat "$pidfile")" && echo "stopped $name"
  fi
  rm -f "$pidfile"
}

if [ "${1:-}" = stop ]; then
  for d in bismuthfe api zookeeper; do stop_pidfile "$d"; done
  exit 0
fi

http_ok() { timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1; printf 'GET /healthz HTTP/1.0\r\n\r\n' >&3; grep -q '200 OK' <&3" 2>/dev/null; }

# start_daemon NAME PORT ARGS…: runs target/release/NAME unless its port already answers.
start_daemon() {
  local name=$1 port=$2; shift 2
  if http_ok "$port"; then echo "    already running"; return; fi
  nohup "target/release/$name" --zookeeper "$ZK" --zookeeper-env "$ENV_NAME" "$@" >"$LOGS/$name.log" 2>&1 &
  echo $! >"$STATE/$name.pid"
  for _ in $(seq 1 100); do http_ok "$port" && return; sleep 0.1; done
  fail "$LOGS/$name.log"
}

step "install packages (apt, only what is missing)"
scripts/install-deps.sh run >"$LOGS/install.log" 2>&1 || fail "$LOGS/install.log"

step "start ZooKeeper on $ZK"
if zk_ok; then
  echo "    already running"
else
  mkdir -p "$STATE/zookeeper/data"
  cat >"$STATE/zookeeper/zoo.cfg" <<CFG
tickTime=2000
dataDir=$STATE/zookeeper/data
clientPort=$ZK_PORT
clientPortAddress=127.0.0.1
admin.enableServer=false
4lw.commands.whitelist=ruok,stat,srvr
CFG
  nohup java -Xmx256m -cp '/usr/share/java/*:/etc/zookeeper/conf' \
    org.apache.zookeeper.server.ZooKeeperServerMain "$STATE/zookeeper/zoo.cfg" \
    >"$LOGS/zookeeper.log" 2>&1 &
  echo $! >"$STATE/zookeeper.pid"
  for _ in $(seq 1 100); do zk_ok && break; sleep 0.2; done
  zk_ok || fail "$LOGS/zookeeper.log"
fi

step "build (cargo build --release)"
cargo build --release --locked >"$LOGS/build.log" 2>&1 || fail "$LOGS/build.log"
CTL=(target/release/bismuthctl --zookeeper "$ZK" --zookeeper-env "$ENV_NAME")

step "bootstrap environment '$ENV_NAME'"
"${CTL[@]}" bootstrap >"$LOGS/bootstrap.log" 2>&1 || fail "$LOGS/bootstrap.log"

step "provision this host ($NODE_IP)"
if ! "${CTL[@]}" provision "$NODE_IP" >"$LOGS/provision.log" 2>&1; then
  grep -q "already provisioned" "$LOGS/provision.log" || fail "$LOGS/provision.log"
  echo "    already provisioned"
fi

step "start api on 127.0.0.1:8002"
start_daemon api 8002 --listen 127.0.0.1:8002

step "start bismuthfe on 0.0.0.0:8000"
start_daemon bismuthfe 8000 --listen 0.0.0.0:8000

echo
"${CTL[@]}" list-nodes
cat <<MSG

ZooKeeper, the api (127.0.0.1:8002) and bismuthfe (:8000) are running; try:
  curl -s localhost:8002/node
  curl -s localhost:8002/openapi.json | head -c 300
  ${CTL[*]} list-functions

Not yet: bismuthd is not built (see ARCHITECTURE.md, "Status"), so this host
announces no capacity, the api cannot place functions (503 "no node is enabled
and alive") and no container runs. Logs: $LOGS. Stop: ./start_all.sh stop
MSG
