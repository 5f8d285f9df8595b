#!/usr/bin/env bash
# bismuthd benchmark: container start-up next to a bare `ctr run`,
# Executable-mode latency, resident memory idle and with 50 containers.
# Real ZooKeeper and containerd from the test kit; run as root.
# BENCH_STARTS=15 BENCH_REQUESTS=500 BENCH_CONTAINERS=50 by default.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh test
scripts/build-runner.sh release >/dev/null
export BISMUTH_TEST_NET="${BISMUTH_TEST_NET:-10.99.0.0/22}"
exec cargo bench --locked -p bismuthd --bench bismuthd
