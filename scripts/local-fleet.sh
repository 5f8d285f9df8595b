# A local fleet for trying fleet behaviour on one machine (DESIGN.md,
# "Fleet"). Sourced by start_all.sh, whose helpers (step, fail, start_daemon,
# install_and_build, …) it uses; not run on its own.
#
#   ./start_all.sh --nodes N        N hosts 10.210.0.11…, each a network namespace
#                                   (bfleet-hN) on the bridge bfleet0 (this machine is
#                                   10.210.0.1) with its own containerd and bismuthd;
#                                   ZooKeeper as a 3-server ensemble (ports 2181-2183);
#                                   the api (127.0.0.1:8002), bismuthfe (:8000) and
#                                   Prometheus as in the single-host setup
#   ./start_all.sh node kill IP     a power cut: every process of the host goes at once
#   ./start_all.sh node partition IP / node heal IP   cut its network / restore it
#   ./start_all.sh node start IP    boot it again (containerd, then bismuthd)
#   ./start_all.sh zk kill K / zk start K             one ZooKeeper server (1-3)
#   ./start_all.sh status           nodes (alive, state, containers), hosts, ZooKeeper
#   ./start_all.sh stop             everything, namespaces and bridge included

FLEET="$STATE/fleet"
FLEET_BRIDGE=bfleet0
FLEET_GW=10.210.0.1
FLEET_ZK="127.0.0.1:2181,127.0.0.1:2182,127.0.0.1:2183"
# Hosts reach the ensemble through the bridge.
FLEET_ZK_HOSTS="$FLEET_GW:2181,$FLEET_GW:2182,$FLEET_GW:2183"

fleet_count() { cat "$FLEET/nodes" 2>/dev/null || echo 0; }
host_ip() { echo "10.210.0.$((10 + $1))"; }
host_ns() { echo "bfleet-h$1"; }
host_link() { echo "bfleet-h$1"; }
# The host number of an address, or a clear error.
host_of() {
  local n i
  n=$(fleet_count)
  for i in $(seq 1 "$n"); do
    [ "$(host_ip "$i")" = "$1" ] && { echo "$i"; return; }
  done
  echo "error: $1 is not a host of the local fleet (hosts: $(for i in $(seq 1 "$n"); do printf '%s ' "$(host_ip "$i")"; done))" >&2
  exit 1
}

zk_server_ok() {
  local reply
  reply=$(timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$((2180 + $1)); printf srvr >&3; cat <&3" 2>/dev/null || true)
  [[ "$reply" == *"Mode:"* ]]
}

# fleet_zk_start K: ZooKeeper server K of three (client port 2180+K on every
# address, so bismuthctl's default 127.0.0.1:2181 and the hosts both reach it).
fleet_zk_start() {
  local k=$1 dir="$FLEET/zk$1"
  if [ -f "$dir.pid" ] && kill -0 "$(cat "$dir.pid")" 2>/dev/null; then
    echo "    zk $k already running"
    return
  fi
  mkdir -p "$dir/data"
  echo "$k" >"$dir/data/myid"
  cat >"$dir/zoo.cfg" <<CFG
tickTime=500
initLimit=20
syncLimit=10
dataDir=$dir/data
clientPort=$((2180 + k))
admin.enableServer=false
4lw.commands.whitelist=ruok,stat,srvr
standaloneEnabled=false
server.1=127.0.0.1:2888:3888
server.2=127.0.0.1:2889:3889
server.3=127.0.0.1:2890:3890
CFG
  nohup java -Xmx128m -cp '/usr/share/java/*:/etc/zookeeper/conf' \
    org.apache.zookeeper.server.quorum.QuorumPeerMain "$dir/zoo.cfg" \
    >"$LOGS/zookeeper-$k.log" 2>&1 &
  echo $! >"$dir.pid"
}

fleet_zk_stop() {
  local pidfile="$FLEET/zk$1.pid"
  if [ -f "$pidfile" ]; then
    kill -9 "$(cat "$pidfile")" 2>/dev/null || true
    rm -f "$pidfile"
  fi
}

# fleet_host_start I: containerd, then bismuthd, in host I's namespace.
fleet_host_start() {
  local i=$1 ip ns dir sock
  ip=$(host_ip "$i")
  ns=$(host_ns "$i")
  dir="$FLEET/h$i"
  sock="$dir/containerd/containerd.sock"
  mkdir -p "$dir/containerd"
  if ! ctr --address "$sock" version >/dev/null 2>&1; then
    cat >"$dir/containerd/config.toml" <<CFG
version = 2
root = "$dir/containerd/root"
state = "$dir/containerd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$sock"
[ttrpc]
  address = "$sock.ttrpc"
CFG
    nohup nsenter --net="/run/netns/$ns" containerd --config "$dir/containerd/config.toml" \
      >"$LOGS/containerd-h$i.log" 2>&1 &
    echo $! >"$dir/containerd.pid"
    for _ in $(seq 1 100); do ctr --address "$sock" version >/dev/null 2>&1 && break; sleep 0.1; done
    ctr --address "$sock" version >/dev/null 2>&1 || fail "$LOGS/containerd-h$i.log"
  fi
  if [ ! -f "$dir/images-imported" ]; then
    import_images "$sock"
    touch "$dir/images-imported"
  fi
  if ! timeout 1 bash -c "exec 3<>/dev/tcp/$ip/8001" 2>/dev/null; then
    nohup nsenter --net="/run/netns/$ns" target/release/bismuthd \
      --zookeeper "$FLEET_ZK_HOSTS" --zookeeper-env "$ENV_NAME" \
      "${FLEET_BISMUTHD_ARGS[@]}" --node-ip "$ip" --listen "$ip:8001" --containerd "$sock" \
      --state-dir "$dir/bismuthd" --run-dir "$dir/run" --container-net "10.211.$i.0/24" \
      --uid-base "$(( (1 << 30) + i * (64 << 16) ))" \
      >>"$LOGS/bismuthd-h$i.log" 2>&1 &
    echo $! >"$dir/bismuthd.pid"
    for _ in $(seq 1 100); do timeout 1 bash -c "exec 3<>/dev/tcp/$ip/8001" 2>/dev/null && break; sleep 0.1; done
    timeout 1 bash -c "exec 3<>/dev/tcp/$ip/8001" 2>/dev/null || fail "$LOGS/bismuthd-h$i.log"
  fi
}

FLEET_BISMUTHD_ARGS=(--runner target/runner/bismuth-runner
  --svc-store "sqlite:$STATE/svc" --secret-key-file "$STATE/cluster.key" --allow-file-repos
  --svcprovider target/small/svcprovider)

fleet_up() {
  local n=$1 i targets=""
  [[ "$n" =~ ^[0-9]+$ ]] && [ "$n" -ge 1 ] && [ "$n" -le 20 ] ||
    { echo "error: --nodes needs a number of hosts from 1 to 20" >&2; exit 2; }
  if [ -f "$STATE/bismuthd.pid" ] && kill -0 "$(cat "$STATE/bismuthd.pid")" 2>/dev/null; then
    echo "error: the single-host setup is running; ./start_all.sh stop first" >&2
    exit 1
  fi
  if [ "$(fleet_count)" != 0 ] && [ "$(fleet_count)" != "$n" ]; then
    echo "error: a fleet of $(fleet_count) hosts is running; ./start_all.sh stop first" >&2
    exit 1
  fi
  mkdir -p "$FLEET"
  echo "$n" >"$FLEET/nodes"
  ZK="$FLEET_ZK"
  CTL=(target/release/bismuthctl --zookeeper "$ZK" --zookeeper-env "$ENV_NAME")
  install_and_build

  step "start ZooKeeper as a 3-server ensemble on ports 2181-2183"
  for k in 1 2 3; do fleet_zk_start "$k"; done
  for _ in $(seq 1 150); do
    zk_server_ok 1 && zk_server_ok 2 && zk_server_ok 3 && break
    sleep 0.2
  done
  for k in 1 2 3; do zk_server_ok "$k" || fail "$LOGS/zookeeper-$k.log"; done
  bootstrap_and_key

  step "network: bridge $FLEET_BRIDGE ($FLEET_GW/24) and $n host namespaces"
  scripts/fleet-net.sh bridge-up "$FLEET_BRIDGE" "$FLEET_GW/24" || fail
  for i in $(seq 1 "$n"); do
    scripts/fleet-net.sh host-up "$(host_ns "$i")" "$(host_link "$i")" "$FLEET_BRIDGE" \
      "$(host_ip "$i")/24" "$FLEET_GW" || fail
  done

  for i in $(seq 1 "$n"); do
    step "host $(host_ip "$i"): containerd and bismuthd in namespace $(host_ns "$i")"
    provision "$(host_ip "$i")"
    fleet_host_start "$i"
    targets="$targets${targets:+, }'$(host_ip "$i"):8001'"
  done

  step "start api on 127.0.0.1:8002"
  start_daemon api 8002 --listen 127.0.0.1:8002 \
    --svc-store "sqlite:$STATE/svc" --secret-key-file "$STATE/cluster.key"
  step "start bismuthfe on 0.0.0.0:8000"
  start_daemon bismuthfe 8000 --listen 0.0.0.0:8000
  start_prometheus "$targets"
  deploy_demo "$(( n < 2 ? n : 2 ))"
  step "call it through bismuthfe: curl -H 'Host: hello.localhost' localhost:8000/"
  reply=$(curl -sf -H 'Host: hello.localhost' localhost:8000/) || fail "$LOGS/bismuthfe.log"
  echo "    $reply"
  echo
  fleet_status
  cat <<MSG

A fleet of $n hosts is running, serving function $DEMO_ID.
Try what happens when nodes come and go (and watch GET /function/$DEMO_ID):
  ./start_all.sh node kill $(host_ip 1)        # a power cut; its instances run elsewhere within seconds
  ./start_all.sh node start $(host_ip 1)
  ./start_all.sh node partition $(host_ip 1)   # then: node heal $(host_ip 1)
  ${CTL[*]} drain $(host_ip 1) --evacuate
  ./start_all.sh zk kill 1                     # a minority of the ensemble: nothing changes
  ./start_all.sh status
Logs: $LOGS. Stop: ./start_all.sh stop
MSG
}

fleet_node() {
  local verb=${1:-} ip=${2:-} i
  [ -n "$ip" ] || { echo "usage: ./start_all.sh node kill|partition|heal|start IP" >&2; exit 2; }
  i=$(host_of "$ip")
  case "$verb" in
    kill)
      scripts/fleet-net.sh kill "$(host_ns "$i")"
      rm -f "$FLEET/h$i/bismuthd.pid" "$FLEET/h$i/containerd.pid"
      echo "host $ip killed: every process in it is gone (its session expires in 5 s)"
      ;;
    partition)
      scripts/fleet-net.sh partition "$(host_link "$i")"
      echo "host $ip cut off the network"
      ;;
    heal)
      scripts/fleet-net.sh heal "$(host_link "$i")"
      echo "host $ip reconnected"
      ;;
    start)
      ZK="$FLEET_ZK"
      CTL=(target/release/bismuthctl --zookeeper "$ZK" --zookeeper-env "$ENV_NAME")
      step "boot host $ip"
      fleet_host_start "$i"
      echo "host $ip is up"
      ;;
    *) echo "usage: ./start_all.sh node kill|partition|heal|start IP" >&2; exit 2 ;;
  esac
}

fleet_zk() {
  local verb=${1:-} k=${2:-}
  [[ "$k" =~ ^[123]$ ]] || { echo "usage: ./start_all.sh zk kill|start K   (K = 1, 2 or 3)" >&2; exit 2; }
  case "$verb" in
    kill) fleet_zk_stop "$k"; echo "ZooKeeper server $k killed" ;;
    start)
      fleet_zk_start "$k"
      for _ in $(seq 1 100); do zk_server_ok "$k" && break; sleep 0.2; done
      zk_server_ok "$k" || fail "$LOGS/zookeeper-$k.log"
      echo "ZooKeeper server $k is serving"
      ;;
    *) echo "usage: ./start_all.sh zk kill|start K" >&2; exit 2 ;;
  esac
}

fleet_status() {
  local n i k mode
  n=$(fleet_count)
  [ "$n" != 0 ] || { echo "no local fleet is running (./start_all.sh --nodes N)"; return; }
  "${CTL[@]}" list-nodes 2>/dev/null || echo "(ZooKeeper does not answer)"
  echo
  printf '%-14s %-10s %-10s %s\n' HOST NETWORK BISMUTHD CONTAINERS
  for i in $(seq 1 "$n"); do
    local ip net bd tasks
    ip=$(host_ip "$i")
    net=up
    ip link show "$(host_link "$i")" 2>/dev/null | grep -q ",UP" || net=cut
    bd=down
    [ -f "$FLEET/h$i/bismuthd.pid" ] && kill -0 "$(cat "$FLEET/h$i/bismuthd.pid")" 2>/dev/null && bd=running
    tasks=$(ctr --address "$FLEET/h$i/containerd/containerd.sock" -n bismuth tasks ls -q 2>/dev/null | wc -l)
    printf '%-14s %-10s %-10s %s\n' "$ip" "$net" "$bd" "$tasks"
  done
  echo
  for k in 1 2 3; do
    mode=$(timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$((2180 + k)); printf srvr >&3; cat <&3" 2>/dev/null | sed -n 's/^Mode: //p')
    echo "ZooKeeper $k (127.0.0.1:$((2180 + k))): ${mode:-down}"
  done
}

fleet_stop() {
  local n i
  n=$(fleet_count)
  for d in prometheus bismuthfe api; do stop_pidfile "$d"; done
  for i in $(seq 1 "$n"); do
    local dir="$FLEET/h$i" ns
    ns=$(host_ns "$i")
    [ -f "$dir/bismuthd.pid" ] && kill "$(cat "$dir/bismuthd.pid")" 2>/dev/null
    for _ in $(seq 1 50); do [ -f "$dir/bismuthd.pid" ] && kill -0 "$(cat "$dir/bismuthd.pid")" 2>/dev/null || break; sleep 0.1; done
    if [ -S "$dir/containerd/containerd.sock" ] && [ -e "/run/netns/$ns" ]; then
      nsenter --net="/run/netns/$ns" target/release/bismuthd --zookeeper "$FLEET_ZK_HOSTS" \
        --zookeeper-env "$ENV_NAME" "${FLEET_BISMUTHD_ARGS[@]}" --node-ip "$(host_ip "$i")" \
        --containerd "$dir/containerd/containerd.sock" --state-dir "$dir/bismuthd" \
        --run-dir "$dir/run" --container-net "10.211.$i.0/24" --clean-up \
        >>"$LOGS/bismuthd-h$i.log" 2>&1 || echo "warning: host $i: bismuthd --clean-up failed; see $LOGS/bismuthd-h$i.log" >&2
    fi
    scripts/fleet-net.sh kill "$ns"
    scripts/fleet-net.sh host-down "$ns" "$(host_link "$i")"
    grep -o " $dir/[^ ]*" /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
    rm -f "$dir/bismuthd.pid" "$dir/containerd.pid"
    echo "stopped host $(host_ip "$i")"
  done
  scripts/fleet-net.sh bridge-down "$FLEET_BRIDGE"
  for k in 1 2 3; do fleet_zk_stop "$k"; done
  rm -f "$FLEET/nodes"
  echo "stopped the local fleet"
}

fleet_main() {
  case "$1" in
    --nodes) fleet_up "${2:-}" ;;
    node) shift; fleet_node "$@" ;;
    zk) shift; fleet_zk "$@" ;;
    status)
      CTL=(target/release/bismuthctl --zookeeper "$FLEET_ZK" --zookeeper-env "$ENV_NAME")
      fleet_status
      ;;
  esac
}
