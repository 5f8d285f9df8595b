#!/usr/bin/env bash
# Recovery from a dead host on a simulated fleet (three network-namespace
# hosts, each with containerd and bismuthd; a three-server ZooKeeper
# ensemble): BENCH_FUNCTIONS (30) one-instance functions on one host, the
# host killed, the time until every function answers again and until all
# are replaced, and the requests that failed meanwhile. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh test
scripts/build-runner.sh debug >/dev/null
# Thirty containers need more than a test's /26 on the host that holds them.
export BISMUTH_TEST_NET="${BISMUTH_TEST_NET:-10.97.0.0/22}"
# The daemons the harness runs: release builds next to the benchmark.
cargo build --release --locked --bins
exec cargo bench --locked -p bismuth-e2e --bench fleet
