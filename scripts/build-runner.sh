#!/usr/bin/env bash
# Builds bismuth-runner as a static binary (it runs inside any image, with or
# without a libc) and copies it to target/runner/bismuth-runner, a place cargo
# never overwrites with a dynamically linked build. bismuthd takes it with
# --runner. Usage: scripts/build-runner.sh [debug|release]   (default: release)
set -euo pipefail
cd "$(dirname "$0")/.."
profile="${1:-release}"
target="$(rustc -vV | sed -n 's/^host: //p')"
flags=()
[ "$profile" = release ] && flags+=(--release)
RUSTFLAGS='-C target-feature=+crt-static' \
  cargo build --quiet --locked -p bismuth-runner --target "$target" "${flags[@]}"
mkdir -p target/runner
# A new file renamed over the old one: running containers keep the old
# binary open ("Text file busy" for a copy over it), new ones get the new.
cp "target/$target/$profile/bismuth-runner" target/runner/.bismuth-runner.new
mv -f target/runner/.bismuth-runner.new target/runner/bismuth-runner
echo target/runner/bismuth-runner
