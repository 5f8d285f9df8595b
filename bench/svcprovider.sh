#!/usr/bin/env bash
# svcprovider benchmark: start-up time, idle memory, K/V get/set ops/s on
# SQLite and PostgreSQL (release build, wrk). BENCH_SECONDS=5 by default.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh test
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
cargo build --release --locked -p svcprovider --bins --examples
exec target/release/examples/bench_svc
