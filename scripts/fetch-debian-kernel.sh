#!/usr/bin/env bash
# Fetch Debian's generic amd64 kernel (image + modules) and install the matching headers, for the tests that
# boot a real kernel under QEMU (kernel module tests, the kvm_amd backend tests).
#
#   scripts/fetch-debian-kernel.sh            # prints the kernel directory, e.g. .cache/kernel/6.1.0-56-amd64
#
# Result, in .cache/kernel/<release>/:
#   vmlinuz            the kernel image
#   lib/modules/...    its modules (kvm.ko, kvm-amd.ko, ...), as unpacked from the .deb (xz-compressed .ko.xz
#                      or plain .ko, whichever the package ships)
#   release            the release string (uname -r of that kernel)
#   headers            a symlink to /usr/src/linux-headers-<release> (the build tree for out-of-tree modules)
# The image package and the headers package are always the same version: both follow linux-image-amd64.
# Needs root for apt-get (CI runs as root). Idempotent: a second run only prints the directory.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cache="$top/.cache/kernel"
mkdir -p "$cache"

release=$(apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/.*Depends: linux-image-\(.*\)$/\1/p' | head -n1)
if [ -z "$release" ]; then
  apt-get update -qq >/dev/null
  release=$(apt-cache depends linux-image-amd64 | sed -n 's/.*Depends: linux-image-\(.*\)$/\1/p' | head -n1)
fi
[ -n "$release" ] || { echo "fetch-debian-kernel: cannot find Debian's linux-image-amd64 package" >&2; exit 1; }
dir="$cache/$release"

if [ ! -f "$dir/vmlinuz" ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && apt-get download -qq "linux-image-$release" >/dev/null)
  mkdir -p "$dir.tmp"
  dpkg-deb -x "$tmp"/linux-image-"$release"_*.deb "$dir.tmp"
  mv "$dir.tmp/boot/vmlinuz-$release" "$dir.tmp/vmlinuz"
  echo "$release" > "$dir.tmp/release"
  rm -rf "$dir"
  mv "$dir.tmp" "$dir"
fi

if [ ! -d "/usr/src/linux-headers-$release" ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "linux-headers-$release" >/dev/null
fi
ln -sfn "/usr/src/linux-headers-$release" "$dir/headers"
echo "$dir"
