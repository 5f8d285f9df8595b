#!/usr/bin/env bash
# Creates through the whole system: five one at a time, then BENCH_CREATES
# (50) at once until all are Running on one host, next to as many bare
# `ctr run` at once; then deleting them all. Real ZooKeeper, containerd,
# bismuthd, api and svcproviders (the e2e harness); run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh test
scripts/build-runner.sh debug >/dev/null
scripts/test-images.sh python >/dev/null
# More than a test's /26 of container addresses.
export BISMUTH_TEST_NET="${BISMUTH_TEST_NET:-10.98.0.0/22}"
# The daemons the harness runs: release builds next to the benchmark.
cargo build --release --locked --bins
exec cargo bench --locked -p bismuth-e2e --bench creates
