#!/usr/bin/env bash
# Proxy benchmark: wrk straight to a backend vs through bismuthfe (release build).
# Needs wrk and ZooKeeper (installed if missing). BENCH_SECONDS=10 by default.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh test
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
cargo build --release --locked -p bismuthfe --bins --examples
exec target/release/examples/bench_proxy
