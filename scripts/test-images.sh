#!/usr/bin/env bash
# Builds Bismuth's test images from Debian packages as OCI image archives,
# cached between runs (no public registry is needed):
#   busybox.tar  docker.io/bismuth/busybox:test  busybox-static with its applets
#   python.tar   docker.io/bismuth/python:test   a debootstrap (minbase) rootfs
#                                                 with python3, also at /usr/local/bin/python3
# The Debian mirror and release come from this machine's apt sources.
# Usage: scripts/test-images.sh [busybox|python|all]   (default: all)
# Prints each archive's path. Cache: $BISMUTH_IMAGE_CACHE (default /var/cache/bismuth/images).
set -euo pipefail

cache="${BISMUTH_IMAGE_CACHE:-/var/cache/bismuth/images}"
which="${1:-all}"
mkdir -p "$cache"
arch="$(dpkg --print-architecture)"

# oci_archive ROOTFS REF OUT ENV...: a one-layer OCI layout of ROOTFS in a tar.
oci_archive() {
  local rootfs="$1" ref="$2" out="$3"; shift 3
  local tmp; tmp="$(mktemp -d)"
  mkdir -p "$tmp/blobs/sha256"
  tar --numeric-owner -C "$rootfs" -cf "$tmp/layer.tar" .
  local layer_digest layer_size
  layer_digest="$(sha256sum "$tmp/layer.tar" | cut -d' ' -f1)"
  layer_size="$(stat -c %s "$tmp/layer.tar")"
  mv "$tmp/layer.tar" "$tmp/blobs/sha256/$layer_digest"
  local env_json="" e
  for e in "$@"; do env_json="${env_json:+$env_json,}\"$e\""; done
  printf '{"architecture":"%s","os":"linux","config":{"Env":[%s]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
    "$arch" "$env_json" "$layer_digest" >"$tmp/config.json"
  local config_digest config_size
  config_digest="$(sha256sum "$tmp/config.json" | cut -d' ' -f1)"
  config_size="$(stat -c %s "$tmp/config.json")"
  mv "$tmp/config.json" "$tmp/blobs/sha256/$config_digest"
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}]}' \
    "$config_digest" "$config_size" "$layer_digest" "$layer_size" >"$tmp/manifest.json"
  local manifest_digest manifest_size
  manifest_digest="$(sha256sum "$tmp/manifest.json" | cut -d' ' -f1)"
  manifest_size="$(stat -c %s "$tmp/manifest.json")"
  mv "$tmp/manifest.json" "$tmp/blobs/sha256/$manifest_digest"
  printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"test"}}]}' \
    "$manifest_digest" "$manifest_size" "$ref" >"$tmp/index.json"
  printf '{"imageLayoutVersion":"1.0.0"}' >"$tmp/oci-layout"
  tar -C "$tmp" -cf "$out.partial" oci-layout index.json blobs
  mv "$out.partial" "$out"
  rm -rf "$tmp"
}

busybox_image() {
  local out="$cache/busybox.tar"
  if [ ! -s "$out" ]; then
    [ -x /bin/busybox ] || { echo "error: /bin/busybox missing (apt-get install busybox-static)" >&2; exit 1; }
    local root; root="$(mktemp -d)"
    mkdir -p "$root"/{bin,etc,tmp,proc,sys,dev,repo}
    chmod 1777 "$root/tmp"
    cp /bin/busybox "$root/bin/busybox"
    for a in sh cat echo ls sleep id wget nc ip mount env true false httpd kill grep cut hostname ps; do
      ln -s busybox "$root/bin/$a"
    done
    oci_archive "$root" docker.io/bismuth/busybox:test "$out" PATH=/bin
    rm -rf "$root"
  fi
  echo "$out"
}

# The first deb mirror and this release's codename from apt's sources.
debian_mirror() {
  local uri=""
  if compgen -G "/etc/apt/sources.list.d/*.sources" >/dev/null; then
    uri="$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/*.sources)"
  fi
  if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
    uri="$(awk '$1=="deb" && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list)"
  fi
  [ -n "$uri" ] || { echo "error: no Debian mirror in /etc/apt/sources*" >&2; exit 1; }
  echo "$uri"
}

python_image() {
  local out="$cache/python.tar"
  if [ ! -s "$out" ]; then
    command -v debootstrap >/dev/null || { echo "error: apt-get install debootstrap" >&2; exit 1; }
    local suite mirror root
    suite="$(. /etc/os-release && echo "$VERSION_CODENAME")"
    mirror="$(debian_mirror)"
    root="$(mktemp -d)"
    echo "==> debootstrap $suite (python3) from $mirror (about a minute, once)" >&2
    debootstrap --variant=minbase --include=python3 "$suite" "$root" "$mirror" >"$cache/debootstrap.log" 2>&1 \
      || { tail -20 "$cache/debootstrap.log" >&2; rm -rf "$root"; exit 1; }
    ln -sf /usr/bin/python3 "$root/usr/local/bin/python3"
    mkdir -p "$root/repo"
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/usr/share/doc "$root"/usr/share/man
    oci_archive "$root" docker.io/bismuth/python:test "$out" \
      PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8
    rm -rf "$root"
  fi
  echo "$out"
}

case "$which" in
  busybox) busybox_image ;;
  python) python_image ;;
  all) busybox_image; python_image ;;
  *) echo "usage: $0 [busybox|python|all]" >&2; exit 2 ;;
esac
