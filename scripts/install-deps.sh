#!/usr/bin/env bash
# Installs the Debian packages Bismuth needs, only if something is missing.
# Usage: scripts/install-deps.sh [test|run]   (test adds the browser the dashboard's test drives)
set -euo pipefail

packages=(
  zookeeper            # the coordination store (Java), started by the test kit and start_all.sh
  default-jre-headless # runs ZooKeeper
  postgresql           # svcprovider's shared backend; the test kit starts its own clusters
  containerd runc      # the container runtime bismuthd drives; the test kit starts its own containerd
  busybox-static       # the busybox test image is built from it
  debootstrap          # builds the Python test image's Debian rootfs
  docker-registry skopeo # a local OCI registry for pull tests, and pushing archives into it
  prometheus           # scrapes every daemon in start_all.sh; promtool checks metrics and rules in the tests
  protobuf-compiler    # containerd-client compiles containerd's gRPC definitions
  iproute2 nftables    # container network namespaces, veths and isolation rules
  procps               # ps: scripts/fleet-net.sh finds a killed host's processes
  runsc                # gVisor, for functions with "isolation": "sandbox"
  libc6-dev            # static libc for bismuth-runner (it runs inside any image)
  git curl
  ca-certificates
  pkg-config
)
if [ "${1:-test}" = test ]; then
  packages+=(chromium chromium-driver fonts-dejavu-core) # the dashboard's end-to-end test (headless, WebDriver)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "==> installing: ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian starts the packaged Prometheus service on :9090; Bismuth runs its
  # own (start_all.sh, the tests), so the one installed just now is stopped.
  if [[ " ${missing[*]} " == *" prometheus "* ]] && [ -d /run/systemd/system ]; then
    $SUDO systemctl disable --now prometheus >/dev/null 2>&1 || true
  fi
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "error: cargo is not installed; install Rust (https://rustup.rs) and run again" >&2
  exit 1
fi
