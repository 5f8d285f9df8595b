#!/usr/bin/env bash
# Elasticity through the whole system on one host (release builds): scale
# from zero to the first response for busybox httpd and Python's
# http.server beside a bare `ctr run` of the same image and command
# (BENCH_COLD, 20 each, interleaved), a load step of BENCH_CLIENTS (6)
# clients on a concurrency-1 function until as many instances run (with
# the latency meanwhile), and the time from the last request to zero.
# Results go in BENCHMARKS.md. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh test
scripts/build-runner.sh debug >/dev/null
scripts/test-images.sh >/dev/null
# The daemons the harness runs: release builds next to the benchmark.
cargo build --release --locked --bins
exec cargo bench --locked -p bismuth-e2e --bench autoscale
