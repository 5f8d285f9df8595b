#!/usr/bin/env bash
# The invocation path hop by hop on one host (release builds): wrk with one
# connection against a busybox httpd container directly, through bismuthd's
# /invoke, and through bismuthfe; each hop's added p50. BENCH_SECONDS=10,
# BENCH_ROUNDS=3 by default. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh test
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
scripts/build-runner.sh debug >/dev/null
scripts/test-images.sh >/dev/null
cargo build --release --locked --bins
exec cargo bench --locked -p bismuth-e2e --bench path
