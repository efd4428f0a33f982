#!/usr/bin/env bash
# Build vmtool.ko (and its test-only variant) against Debian's generic kernel and pack them with busybox and
# scripts/kernel-guest-init.sh into an initramfs, for scripts/kernel-boot.sh.
#
#   scripts/kernel-build-initramfs.sh OUTDIR
#
# OUTDIR gets: vmlinuz (a link to the kernel), build-real.log and build-fake.log (the compilers' output),
# vmtool.ko, vmtool-fake.ko, initramfs.cpio.gz. The modules are built in copies of kernel/ under OUTDIR, so
# the source tree stays clean and parallel runs do not collide. Needs busybox-static, cpio, gzip, make, gcc.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
out=${1:?usage: kernel-build-initramfs.sh OUTDIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)

kdir=$("$top/scripts/fetch-debian-kernel.sh")
ln -sfn "$kdir/vmlinuz" "$out/vmlinuz"

build() { # build <variant dir> <log> [make variables...]
  local dir=$1 log=$2
  shift 2
  rm -rf "$dir"
  mkdir -p "$dir"
  cp "$top/kernel/vmtool.c" "$top/kernel/Kbuild" "$top/kernel/Makefile" "$dir/"
  if ! make -C "$dir" KDIR="$kdir/headers" W=1 "$@" >"$log" 2>&1; then
    cat "$log" >&2
    echo "kernel-build-initramfs: the module did not build (log: $log)" >&2
    exit 1
  fi
}
build "$out/real" "$out/build-real.log"
build "$out/fake" "$out/build-fake.log" VMTOOL_FAKE_VMCS=y
cp "$out/real/vmtool.ko" "$out/vmtool.ko"
cp "$out/fake/vmtool.ko" "$out/vmtool-fake.ko"

busybox=$(command -v busybox || true)
# The initramfs has no libc: busybox must be the static one (Debian's busybox-static).
if [ -z "$busybox" ] || readelf -l "$busybox" 2>/dev/null | grep -q 'Requesting program interpreter'; then
  echo "kernel-build-initramfs: needs a statically linked busybox (apt-get install busybox-static)" >&2
  exit 1
fi
root="$out/root"
rm -rf "$root"
mkdir -p "$root/bin" "$root/dev" "$root/proc" "$root/sys" "$root/tmp"
cp "$busybox" "$root/bin/busybox"
ln -s busybox "$root/bin/sh"
cp "$top/scripts/kernel-guest-init.sh" "$root/init"
chmod 755 "$root/init"
cp "$out/vmtool.ko" "$out/vmtool-fake.ko" "$root/"
(cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc --quiet) | gzip -1 >"$out/initramfs.cpio.gz"
echo "$out"
