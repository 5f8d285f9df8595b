#!/usr/bin/env bash
# Starts a local Bismuth and shows it serving a function: installs what is
# missing, starts ZooKeeper and containerd (state under .bismuth/), builds the
# binaries and the test images, bootstraps the environment, provisions this
# host, starts bismuthd, the api and bismuthfe, deploys a demo function
# through the api and calls it through bismuthfe. Safe to run twice. Root.
#
#   ./start_all.sh             start (or check) everything, Prometheus included
#   ./start_all.sh stop        stop what this script started (a fleet too)
#
# A local fleet, to try what happens when nodes come and go (DESIGN.md,
# "Fleet"; the verbs are in scripts/local-fleet.sh):
#   ./start_all.sh --nodes N   N hosts, each a network namespace on a bridge with
#                              its own address, containerd and bismuthd; ZooKeeper
#                              as a 3-server ensemble; api, bismuthfe as above
#   ./start_all.sh node kill|partition|heal|start IP
#   ./start_all.sh zk kill|start K        (K = 1, 2 or 3)
#   ./start_all.sh status      nodes, their state, the ZooKeeper servers
#
# The daemons read BISMUTH_OTLP_ENDPOINT (e.g. http://127.0.0.1:4318) from the
# environment: set it to export their spans to an OpenTelemetry collector.
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
PROM_PORT="${BISMUTH_PROMETHEUS_PORT:-9090}"
CTL=(target/release/bismuthctl --zookeeper "$ZK" --zookeeper-env "$ENV_NAME")
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

CTD_DIR="$STATE/containerd"
CTD_SOCK="$CTD_DIR/containerd.sock"
# bismuthd's flags, shared by its start and by `--clean-up` on stop.
BISMUTHD_ARGS=(--node-ip "$NODE_IP" --containerd "$CTD_SOCK"
  --state-dir "$STATE/bismuthd" --run-dir "$STATE/run" --runner target/runner/bismuth-runner
  --svc-store "sqlite:$STATE/svc" --secret-key-file "$STATE/cluster.key" --allow-file-repos
  --svcprovider target/small/svcprovider)

# stop_pidfile NAME: SIGTERM, then wait (up to 15 s) for it to exit.
stop_pidfile() {
  local name=$1 pidfile="$STATE/$1.pid" pid
  if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    pid=$(cat "$pidfile")
    kill "$pid"
    for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    echo "stopped $name"
  fi
  rm -f "$pidfile"
}

case "${1:-}" in
  "" | stop) ;;
  --nodes | node | zk | status) FLEET_VERB=$1 ;;
  *)
    echo "usage: ./start_all.sh [stop | --nodes N | node kill|partition|heal|start IP | zk kill|start K | status]" >&2
    exit 2
    ;;
esac

if [ "${1:-}" = stop ]; then
  if [ -f "$STATE/fleet/nodes" ]; then
    # shellcheck source=scripts/local-fleet.sh
    source scripts/local-fleet.sh
    fleet_stop
  fi
  for d in prometheus bismuthfe api bismuthd; do stop_pidfile "$d"; done
  # bismuthd leaves containers running on SIGTERM (the next one adopts
  # them); --clean-up removes them with their networks, svcproviders and
  # firewall rules. ZooKeeper keeps the functions for the next start.
  if [ -x target/release/bismuthd ] && [ -S "$CTD_SOCK" ]; then
    target/release/bismuthd --zookeeper "$ZK" --zookeeper-env "$ENV_NAME" "${BISMUTHD_ARGS[@]}" \
      --clean-up >>"$LOGS/bismuthd.log" 2>&1 && echo "removed containers, networks and rules" \
      || echo "warning: bismuthd --clean-up failed; see $LOGS/bismuthd.log" >&2
  fi
  for d in containerd zookeeper; do stop_pidfile "$d"; done
  # containerd's mounts under the state directory, if a container outlived it.
  grep -o " $CTD_DIR/[^ ]*" /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
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


# install_and_build: packages, the release binaries, the test images.
install_and_build() {
  step "install packages (apt, only what is missing)"
  scripts/install-deps.sh run >"$LOGS/install.log" 2>&1 || fail "$LOGS/install.log"

  step "build (cargo build --release, the small svcprovider and the static bismuth-runner)"
  cargo build --release --locked >"$LOGS/build.log" 2>&1 || fail "$LOGS/build.log"
  # svcprovider runs beside every container: its size-optimized build (BENCHMARKS.md).
  cargo build --profile small --locked -p svcprovider >>"$LOGS/build.log" 2>&1 || fail "$LOGS/build.log"
  scripts/build-runner.sh release >>"$LOGS/build.log" 2>&1 || fail "$LOGS/build.log"

  step "build the test images (busybox, Python via debootstrap: about a minute, once)"
  scripts/test-images.sh >"$LOGS/images.log" 2>&1 || fail "$LOGS/images.log"
}

# import_images SOCKET: the test images into one containerd.
import_images() {
  for image in $(grep '\.tar$' "$LOGS/images.log"); do
    "${CTL[@]}" image import "$image" --containerd "$1" >>"$LOGS/images.log" 2>&1 || fail "$LOGS/images.log"
  done
}

# bootstrap_and_key: the environment's top-level znodes and the cluster key.
bootstrap_and_key() {
  step "bootstrap environment '$ENV_NAME'"
  "${CTL[@]}" bootstrap >"$LOGS/bootstrap.log" 2>&1 || fail "$LOGS/bootstrap.log"

  step "cluster key for secrets ($STATE/cluster.key)"
  if [ -s "$STATE/cluster.key" ]; then
    echo "    already there"
  else
    (umask 077; target/release/svcprovider keygen >"$STATE/cluster.key") || fail
  fi
}

# provision IP: registers a node (fine if it already is).
provision() {
  if ! "${CTL[@]}" provision "$1" >"$LOGS/provision.log" 2>&1; then
    grep -q "already provisioned" "$LOGS/provision.log" || fail "$LOGS/provision.log"
    echo "    already provisioned"
  fi
}

# start_prometheus TARGETS: Prometheus scraping bismuthfe, the api and the
# bismuthds at TARGETS (a YAML list body: 'ip:8001', …).
start_prometheus() {
  step "start Prometheus on 127.0.0.1:$PROM_PORT (scrapes every daemon; rules: deploy/prometheus/rules.yml)"
  if curl -sf "localhost:$PROM_PORT/-/ready" >/dev/null 2>&1; then
    if ! curl -sf "localhost:$PROM_PORT/api/v1/status/config" | grep -q bismuthd; then
      echo "error: another Prometheus answers on port $PROM_PORT; stop it or set BISMUTH_PROMETHEUS_PORT" >&2
      exit 1
    fi
    echo "    already running"
  else
    mkdir -p "$STATE/prometheus"
    cp deploy/prometheus/rules.yml "$STATE/prometheus/rules.yml"
    cat >"$STATE/prometheus/prometheus.yml" <<CFG
global: {scrape_interval: 5s, evaluation_interval: 5s}
rule_files: [rules.yml]
scrape_configs:
  - job_name: bismuthfe
    static_configs: [{targets: ['127.0.0.1:8000']}]
  - job_name: bismuthd
    static_configs: [{targets: [$1]}]
  - job_name: api
    static_configs: [{targets: ['127.0.0.1:8002']}]
CFG
    nohup prometheus --config.file="$STATE/prometheus/prometheus.yml" \
      --storage.tsdb.path="$STATE/prometheus/data" --web.listen-address="127.0.0.1:$PROM_PORT" \
      >"$LOGS/prometheus.log" 2>&1 &
    echo $! >"$STATE/prometheus.pid"
    for _ in $(seq 1 100); do curl -sf "localhost:$PROM_PORT/-/ready" >/dev/null 2>&1 && break; sleep 0.2; done
    curl -sf "localhost:$PROM_PORT/-/ready" >/dev/null 2>&1 || fail "$LOGS/prometheus.log"
  fi
}

# deploy_demo INSTANCES: the demo function, created once, until Running.
deploy_demo() {
  step "deploy the demo function (Python http.server serving a git repository)"
  DEMO_REPO="$STATE/demo-repo"
  if [ ! -d "$DEMO_REPO/.git" ]; then
    mkdir -p "$DEMO_REPO"
    echo "Hello from a Bismuth function" >"$DEMO_REPO/index.html"
    git -C "$DEMO_REPO" init -q -b main
    git -C "$DEMO_REPO" add .
    git -C "$DEMO_REPO" -c user.name=bismuth -c user.email=demo@localhost commit -q -m demo
  fi
  # Created once; found again by its route (the single host and a fleet
  # each have their own ZooKeeper data).
  local reply
  reply=$(curl -s -X POST localhost:8002/function -H 'Content-Type: application/json' -d @- <<JSON
{"image": "docker.io/bismuth/python:test", "repo": ["file://$DEMO_REPO", "main"],
 "cpu": 0.5, "memory": 134217728,
 "invoke_mode": {"Server": [["/usr/local/bin/python3", "-m", "http.server", "8080"], 8080]},
 "max_instances": $1, "routes": [{"hostname": "hello.localhost"}]}
JSON
  ) || true
  DEMO_ID=$(echo "$reply" | sed -n -e 's/.*"id":"\([0-9a-f-]*\)".*/\1/p' \
    -e 's/.*already belongs to function \([0-9a-f-]*\).*/\1/p')
  [ -n "$DEMO_ID" ] || { echo "    $reply" >&2; fail "$LOGS/api.log"; }
  echo "    function $DEMO_ID"
  for _ in $(seq 1 300); do
    curl -sf localhost:8002/function/"$DEMO_ID" | grep -q '"Running"' && break
    sleep 0.1
  done
  curl -sf localhost:8002/function/"$DEMO_ID" | grep -q '"Running"' || fail "$LOGS/bismuthd.log"
}

if [ -n "${FLEET_VERB:-}" ]; then
  # shellcheck source=scripts/local-fleet.sh
  source scripts/local-fleet.sh
  fleet_main "$@"
  exit 0
fi

if [ -f "$STATE/fleet/nodes" ]; then
  echo "error: a local fleet is running; ./start_all.sh stop first (or ./start_all.sh status)" >&2
  exit 1
fi
install_and_build
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

step "start containerd on $CTD_SOCK"
if ctr --address "$CTD_SOCK" version >/dev/null 2>&1; then
  echo "    already running"
else
  mkdir -p "$CTD_DIR"
  cat >"$CTD_DIR/config.toml" <<CFG
version = 2
root = "$CTD_DIR/root"
state = "$CTD_DIR/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
address = "$CTD_SOCK"
[ttrpc]
address = "$CTD_SOCK.ttrpc"
CFG
  nohup containerd --config "$CTD_DIR/config.toml" >"$LOGS/containerd.log" 2>&1 &
  echo $! >"$STATE/containerd.pid"
  for _ in $(seq 1 100); do ctr --address "$CTD_SOCK" version >/dev/null 2>&1 && break; sleep 0.1; done
  ctr --address "$CTD_SOCK" version >/dev/null 2>&1 || fail "$LOGS/containerd.log"
fi

import_images "$CTD_SOCK"
bootstrap_and_key
step "provision this host ($NODE_IP)"
provision "$NODE_IP"

step "start bismuthd on $NODE_IP:8001"
start_daemon bismuthd 8001 "${BISMUTHD_ARGS[@]}"

step "start api on 127.0.0.1:8002"
start_daemon api 8002 --listen 127.0.0.1:8002 \
  --svc-store "sqlite:$STATE/svc" --secret-key-file "$STATE/cluster.key"

step "start bismuthfe on 0.0.0.0:8000"
start_daemon bismuthfe 8000 --listen 0.0.0.0:8000

start_prometheus "'$NODE_IP:8001'"
deploy_demo 1
step "call it through bismuthfe: curl -H 'Host: hello.localhost' localhost:8000/"
reply=$(curl -sf -H 'Host: hello.localhost' localhost:8000/) || fail "$LOGS/bismuthfe.log"
echo "    $reply"

echo
"${CTL[@]}" list-nodes
cat <<MSG

Bismuth is running: ZooKeeper ($ZK), containerd ($CTD_SOCK), bismuthd ($NODE_IP:8001),
the api (127.0.0.1:8002), bismuthfe (:8000) and Prometheus (http://127.0.0.1:$PROM_PORT),
serving function $DEMO_ID.
Try:
  curl -H 'Host: hello.localhost' localhost:8000/
  target/release/bismuthctl describe $DEMO_ID
  target/release/bismuthctl invoke --host hello.localhost
  target/release/bismuthctl logs $DEMO_ID -f           (Ctrl-C to leave)
  target/release/bismuthctl calls $DEMO_ID --limit 5
  target/release/bismuthctl top
  the dashboard: http://127.0.0.1:8002/ui/
  curl -s localhost:8000/metrics; curl -s $NODE_IP:8001/metrics
Logs: $LOGS. Stop: ./start_all.sh stop
MSG
