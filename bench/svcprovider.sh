#!/usr/bin/env bash
# svcprovider benchmark: start-up time, idle memory, K/V get/set ops/s on
# SQLite and PostgreSQL (the `small` profile build, wrk). BENCH_SECONDS=5 by default.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh test
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
# The binary is built with the size-optimized profile it ships with (see Cargo.toml).
cargo build --profile small --locked -p svcprovider --bins
cargo build --release --locked -p svcprovider --examples
SVCPROVIDER_BIN=target/small/svcprovider exec target/release/examples/bench_svc
