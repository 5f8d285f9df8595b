#!/usr/bin/env bash
# api benchmark: create/status latency and creates/s against a real ZooKeeper,
# baseline a direct ZooKeeper transaction; idle memory. BENCH_N=500 by default.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh test
cargo build --release --locked -p api --bins --examples
exec target/release/examples/bench_api
