#!/usr/bin/env bash
# Proxy benchmark: wrk straight to a backend vs through bismuthfe (as
# deployed, --no-metrics, exporting spans), HAProxy and nginx (configs in
# deploy/bench/), interleaved rounds, release builds. Needs wrk, haproxy,
# nginx and ZooKeeper (installed if missing). BENCH_SECONDS=10 and
# BENCH_ROUNDS=5 by default.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh test
missing=()
for tool in wrk haproxy nginx; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if ((${#missing[@]})); then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  # Their packages start system services; the benchmark runs its own.
  for svc in haproxy nginx; do service "$svc" stop >/dev/null 2>&1 || true; done
fi
cargo build --release --locked -p bismuthfe --bins --examples
exec target/release/examples/bench_proxy
