#!/usr/bin/env bash
# Builds Bismuth's Debian packages (with dpkg-deb; no other tool) into OUT
# (default target/debian):
#
#   bismuth-common  /etc/bismuth/bismuth.env (shared settings), the bismuth
#                   user, the operator's guide (OPERATORS.md)
#   bismuth-node    bismuthd, svcprovider, bismuth-runner; bismuthd.service,
#                   /etc/bismuth/bismuthd.env          (every host of the fleet)
#   bismuth-api     bismuth-api; bismuth-api.service, /etc/bismuth/api.env
#   bismuth-fe      bismuthfe; bismuthfe.service, /etc/bismuth/bismuthfe.env
#   bismuthctl      the operator's CLI
#
# Usage: deploy/debian/build-debs.sh [OUT]
#   PROFILE=release (default: optimised binaries, the small svcprovider) or
#   debug (the test build's binaries, as test.sh packages them to test the
#   packaging itself); VERSION overrides the workspace's version.
set -euo pipefail
cd "$(dirname "$0")/../.."
here=deploy/debian
out="${1:-target/debian}"
profile="${PROFILE:-release}"
version="${VERSION:-$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)}"
arch="$(dpkg --print-architecture)"

echo "==> building the binaries ($profile)"
bins=(-p bismuthd -p api -p bismuthfe -p bismuthctl)
case "$profile" in
  release)
    cargo build --release --locked "${bins[@]}"
    cargo build --profile small --locked -p svcprovider
    scripts/build-runner.sh release >/dev/null
    bin=target/release svcprovider=target/small/svcprovider compress=xz ;;
  debug)
    cargo build --locked "${bins[@]}" -p svcprovider
    scripts/build-runner.sh debug >/dev/null
    bin=target/debug svcprovider=target/debug/svcprovider compress=gzip ;;
  *) echo "PROFILE must be release or debug, not $profile" >&2; exit 2 ;;
esac

stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
mkdir -p "$out"

# pkg NAME DEPENDS DESCRIPTION [RECOMMENDS]: turns $stage/NAME into
# OUT/NAME_VERSION_ARCH.deb.
pkg() {
  local name="$1" depends="$2" description="$3" recommends="${4:-}" dir="$stage/$1"
  mkdir -p "$dir/DEBIAN" "$dir/usr/share/doc/$name"
  cat >"$dir/usr/share/doc/$name/copyright" <<EOF
Bismuth, a multi-tenant Function-as-a-Service orchestrator.
License: MIT
EOF
  # Stripped, as Debian's packages are (debug symbols stay in target/).
  for f in "$dir"/usr/bin/* "$dir"/usr/lib/bismuth/*; do
    if [ -f "$f" ]; then strip --strip-debug "$f"; fi
  done
  if [ -d "$dir/etc" ]; then
    (cd "$dir" && find etc -type f | sed 's|^|/|' | sort) >"$dir/DEBIAN/conffiles"
  fi
  cat >"$dir/DEBIAN/control" <<EOF
Package: $name
Version: $version
Architecture: $arch
Maintainer: Bismuth developers <bismuth@localhost>
Installed-Size: $(du -sk --exclude=DEBIAN "$dir" | cut -f1)
${depends:+Depends: $depends
}${recommends:+Recommends: $recommends
}Section: net
Priority: optional
Homepage: file:///usr/share/doc/bismuth-common/OPERATORS.md
Description: $description
EOF
  dpkg-deb --root-owner-group "-Z$compress" --build "$dir" "$out/${name}_${version}_${arch}.deb" >/dev/null
  echo "$out/${name}_${version}_${arch}.deb"
}

# service NAME UNIT: the package's unit file and its maintainer scripts.
service() {
  local dir="$stage/$1" unit="$2"
  install -D -m 0644 "$here/systemd/$unit" "$dir/lib/systemd/system/$unit"
  for script in postinst prerm postrm; do
    sed "s/@UNIT@/$unit/g" "$here/maintscripts/service.$script" >"$dir/DEBIAN/$script"
    chmod 0755 "$dir/DEBIAN/$script"
  done
}

echo "==> packaging $version for $arch into $out"
d="$stage/bismuth-common"
mkdir -p "$d/DEBIAN"
install -D -m 0640 "$here/etc/bismuth.env" "$d/etc/bismuth/bismuth.env"
install -D -m 0644 OPERATORS.md "$d/usr/share/doc/bismuth-common/OPERATORS.md"
install -m 0755 "$here/maintscripts/bismuth-common.postinst" "$d/DEBIAN/postinst"
pkg bismuth-common "adduser" "Bismuth FaaS: shared configuration and the operator's guide
 The settings every Bismuth daemon of a host reads (ZooKeeper, the shared
 svcprovider store, the secrets key), the bismuth system user, and
 OPERATORS.md, the guide to installing a fleet."

d="$stage/bismuth-node"
mkdir -p "$d/DEBIAN"
install -D -m 0755 "$bin/bismuthd" "$d/usr/bin/bismuthd"
install -D -m 0755 "$svcprovider" "$d/usr/lib/bismuth/svcprovider"
install -D -m 0755 target/runner/bismuth-runner "$d/usr/lib/bismuth/bismuth-runner"
install -D -m 0640 "$here/etc/bismuthd.env" "$d/etc/bismuth/bismuthd.env"
service bismuth-node bismuthd.service
pkg bismuth-node "bismuth-common (= $version), containerd, runc, nftables, iproute2" \
  "Bismuth FaaS: the node daemon
 bismuthd runs this host's function containers through containerd, each in
 its own network namespace beside its own svcprovider, and reports them to
 ZooKeeper. runsc (gVisor) runs functions with \"isolation\": \"sandbox\"." runsc

d="$stage/bismuth-api"
mkdir -p "$d/DEBIAN"
install -D -m 0755 "$bin/api" "$d/usr/bin/bismuth-api"
install -D -m 0640 "$here/etc/api.env" "$d/etc/bismuth/api.env"
service bismuth-api bismuth-api.service
pkg bismuth-api "bismuth-common (= $version)" "Bismuth FaaS: the control plane
 The JSON API (wire-compatible with the original Bismuth), the web dashboard
 at /ui/, and the controller that keeps every function served (one leader
 among the api processes)."

d="$stage/bismuth-fe"
mkdir -p "$d/DEBIAN"
install -D -m 0755 "$bin/bismuthfe" "$d/usr/bin/bismuthfe"
install -D -m 0640 "$here/etc/bismuthfe.env" "$d/etc/bismuth/bismuthfe.env"
service bismuth-fe bismuthfe.service
pkg bismuth-fe "bismuth-common (= $version)" "Bismuth FaaS: the HTTP frontend
 bismuthfe routes each invocation, by Host header or /invoke/{id}, to a
 healthy container of the function, holding it while one starts."

d="$stage/bismuthctl"
mkdir -p "$d/DEBIAN"
install -D -m 0755 "$bin/bismuthctl" "$d/usr/bin/bismuthctl"
pkg bismuthctl "" "Bismuth FaaS: the operator's command line
 Deploy, invoke, follow logs and watch load through the api; bootstrap,
 provision, drain and repair in ZooKeeper."
