#!/usr/bin/env bash
# Runs Bismuth's checks and tests: formatting, clippy, then every test
# (unit tests, and integration tests against real ZooKeeper, containerd,
# PostgreSQL and registry servers the test kit starts on free ports and in
# temporary directories). Installs missing Debian packages first; must run
# as root (containers, network namespaces).
set -euo pipefail
cd "$(dirname "$0")"

scripts/install-deps.sh test

echo "==> cargo fmt --check"
cargo fmt --all -- --check

echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "==> static runner and test images (cached in /var/cache/bismuth/images)"
scripts/build-runner.sh debug
scripts/test-images.sh

echo "==> Debian packages of the test build (e2e/tests/packages.rs installs and runs them)"
PROFILE=debug deploy/debian/build-debs.sh target/debian

echo "==> tests"
if cargo nextest --version >/dev/null 2>&1; then
  # nextest does not run doctests; run them first so its summary closes the output
  cargo test --workspace --locked --doc --quiet
  cargo nextest run --workspace --locked --no-fail-fast "$@"
else
  cargo test --workspace --locked --no-fail-fast "$@"
fi
