#!/usr/bin/env bash
# Build the initramfs that runs vmtool's tests under Debian's kvm_amd inside QEMU's software CPU (docs/svm.md).
#
#   scripts/svm-build-initramfs.sh DIST OUT JOB [EXTRA_DIR]
#     DIST       the compiled output folder to carry (dist, .dist-svm, ...), relative to the repository root
#     OUT        the initramfs to write (two concatenated gzip'ed cpio archives; QEMU's -initrd takes it as is)
#     JOB        a shell script (busybox sh) the init sources in /svm/repo once kvm_amd is loaded; it reports
#                with `say WORDS...` (a line "SVM WORDS..." on the second serial port, ttyS1) or by writing
#                lines starting with "SVM " to file descriptor 3; $dist is DIST.
#     EXTRA_DIR  optional: a folder copied to /svm/extra (static C programs built on the host, ...)
#   Prints the kernel image to boot on stdout (the initramfs modules match it).
#
# Two archives, because the Linux initramfs loader unpacks concatenated archives one after the other:
#   1. base (cached in .cache/svm/): busybox, the KVM modules (decompressed: busybox insmod reads plain .ko),
#      /usr/bin/node, a freestanding guest toolchain (gcc's driver, cc1 and its own headers, binutils' as and
#      ld: the tests that assemble or compile their guests at run time then run inside unchanged), gdb
#      (Debian's gdb-minimal, for the tests that drive vmtool's stub with a real gdb), the shared libraries
#      these link, and the init. Rebuilt when the kernel release, a carried binary or this
#      script changes.
#   2. project (built every time, a few MB): package.json, DIST (its JavaScript and
#      its guests/ folder of guest images), the guest SDK's tracked files, the runtime node_modules, the job
#      and EXTRA_DIR.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
[ $# -ge 3 ] || {
  echo "usage: $0 DIST OUT JOB [EXTRA_DIR]" >&2
  exit 2
}
dist=$1
out=$(realpath -m "$2")
job=$(realpath "$3")
extra=${4:+$(realpath "$4")}
cd "$top"
[ -d "$dist/src" ] || {
  echo "svm-build-initramfs: $dist/src does not exist: build first (npm run build)" >&2
  exit 2
}
for tool in busybox cpio gzip gcc as ld xz; do
  command -v "$tool" >/dev/null || {
    echo "svm-build-initramfs: $tool not found: apt-get install busybox-static cpio gzip xz-utils" >&2
    exit 2
  }
done

kdir=$(scripts/fetch-debian-kernel.sh | tail -n1)
release=$(cat "$kdir/release")
node_bin=$(readlink -f "$(command -v node)")
busybox_bin=$(readlink -f "$(command -v busybox)")
# The guest toolchain: enough for `gcc -ffreestanding -c` (32- and 64-bit), `as` and `ld` as the tests call
# them; no libc headers or start files (host C programs are not built inside).
gcc_bin=$(readlink -f "$(command -v gcc)")
cc1_bin=$(gcc -print-prog-name=cc1)
gcc_include=$(gcc -print-file-name=include)
as_bin=$(readlink -f "$(command -v as)")
ld_bin=$(readlink -f "$(command -v ld)")
# gdb for test/gdb/gdb.test.ts: Debian's gdb-minimal, which has no Python (so no Python library to carry).
# It conflicts with the gdb package, so it is unpacked into the cache rather than installed.
gdb_dir="$top/.cache/svm/gdb-minimal"
mkdir -p "$top/.cache/svm"
if [ ! -x "$gdb_dir/usr/bin/gdb" ]; then
  gdb_tmp=$(mktemp -d)
  (cd "$gdb_tmp" && apt-get download -qq gdb-minimal >/dev/null 2>&1) || {
    echo "svm-build-initramfs: apt-get download gdb-minimal failed" >&2
    exit 1
  }
  rm -rf "$gdb_dir.tmp"
  dpkg-deb -x "$gdb_tmp"/gdb-minimal_*.deb "$gdb_dir.tmp"
  rm -rf "$gdb_tmp" "$gdb_dir"
  mv "$gdb_dir.tmp" "$gdb_dir"
fi
gdb_bin="$gdb_dir/usr/bin/gdb"
# xz, for the tests that cut the vmlinux out of the kernel's bzImage (busybox's xz lacks the x86 BCJ filter).
xz_bin=$(readlink -f "$(command -v xz)")
# The base archive's name changes with everything it is made of.
key=$(cat "$0" "$kdir/release" |
  cat - <(stat -c '%s %Y' "$node_bin" "$busybox_bin" "$gcc_bin" "$cc1_bin" "$as_bin" "$ld_bin" "$gdb_bin" "$xz_bin") |
  sha256sum | cut -c1-16)
cache="$top/.cache/svm"
base="$cache/base-$release-$key.cpio.gz"
mkdir -p "$cache"

if [ ! -f "$base" ]; then
  echo "svm-build-initramfs: building the base archive for $release (busybox, kvm_amd, node)..." >&2
  root=$(mktemp -d)
  trap 'rm -rf "$root"' EXIT
  mkdir -p "$root"/{bin,sbin,dev,proc,sys,tmp,lib/svm-modules,usr/bin,etc}
  cp "$busybox_bin" "$root/bin/busybox"
  for app in $("$busybox_bin" --list); do
    [ "$app" = busybox ] || ln -s busybox "$root/bin/$app"
  done
  # The KVM modules, in load order (kvm needs irqbypass; kvm-amd needs kvm and ccp).
  mdir="$kdir/lib/modules/$release/kernel"
  for m in virt/lib/irqbypass drivers/crypto/ccp/ccp arch/x86/kvm/kvm arch/x86/kvm/kvm-amd; do
    name=$(basename "$m")
    if [ -f "$mdir/$m.ko" ]; then
      cp "$mdir/$m.ko" "$root/lib/svm-modules/$name.ko"
    elif [ -f "$mdir/$m.ko.xz" ]; then
      xz -dc "$mdir/$m.ko.xz" >"$root/lib/svm-modules/$name.ko"
    elif [ -f "$mdir/$m.ko.zst" ]; then
      zstd -qdc "$mdir/$m.ko.zst" >"$root/lib/svm-modules/$name.ko"
    else
      echo "svm-build-initramfs: module $m not found under $mdir" >&2
      exit 1
    fi
  done
  # Node, the toolchain, and the libraries they link, at the same paths (the loader path is baked into the
  # binaries; gcc finds cc1 and its headers at the paths it was configured with).
  cp "$node_bin" "$root/usr/bin/node"
  cp "$gcc_bin" "$root/usr/bin/gcc"
  cp "$as_bin" "$root/usr/bin/as"
  cp "$ld_bin" "$root/usr/bin/ld"
  cp "$gdb_bin" "$root/usr/bin/gdb"
  rm -f "$root/bin/xz"
  cp "$xz_bin" "$root/usr/bin/xz"
  mkdir -p "$root$(dirname "$cc1_bin")"
  cp "$cc1_bin" "$root$cc1_bin"
  cp -r "$gcc_include" "$root$gcc_include"
  for bin in "$node_bin" "$gcc_bin" "$cc1_bin" "$as_bin" "$ld_bin" "$gdb_bin" "$xz_bin"; do
    for lib in $(ldd "$bin" | grep -o '/[^ ]*'); do
      mkdir -p "$root$(dirname "$lib")"
      [ -f "$root$lib" ] || cp -L "$lib" "$root$lib"
    done
  done
  # koffi dlopens libc.so.6 by name: the loader finds it in the default paths above.
  echo 'root:x:0:0:root:/:/bin/sh' >"$root/etc/passwd"
  cat >"$root/init" <<'EOF'
#!/bin/sh
# Runs inside the kvm_amd test VM. Results go to the second serial port (ttyS1) as lines starting with
# "SVM ", so kernel messages on the console (ttyS0) cannot interleave with them.
export PATH=/bin:/sbin:/usr/bin HOME=/tmp
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
stty -F /dev/ttyS1 raw -echo 2>/dev/null
exec 3>/dev/ttyS1
say() { echo "SVM $*" >&3; }
say begin "$(uname -r)"
for m in irqbypass ccp kvm kvm-amd; do
  insmod "/lib/svm-modules/$m.ko" 2>/dev/null
  say insmod "$m" $?
done
for p in /sys/module/kvm_amd/parameters/*; do
  [ -f "$p" ] && say param "$(basename "$p")" "$(cat "$p")"
done
[ -e /dev/kvm ] && say devkvm yes || say devkvm no
cd /svm/repo
dist=$(cat /svm/dist)
. /svm/job
dmesg | sed 's/^/SVM dmesg /' >&3
say end
sync
poweroff -f
EOF
  chmod +x "$root/init"
  (cd "$root" && find . -print0 | cpio --null -o -H newc --quiet | gzip -1) >"$base.tmp"
  mv "$base.tmp" "$base"
  rm -rf "$root"
  trap - EXIT
fi

# The project archive: rebuilt every time (the tests and dist change), cheap.
proj=$(mktemp -d)
trap 'rm -rf "$proj"' EXIT
repo="$proj/svm/repo"
mkdir -p "$repo"
cp package.json "$repo/"
# Only the compiled JavaScript, without source maps: what `node --test` needs.
dirs=("$dist/src" "$dist/test")
[ -d "$dist/bench" ] && dirs+=("$dist/bench")
find "${dirs[@]}" -name '*.js' -print0 | cpio --null -pdm --quiet "$repo"
# The bundled command (package.json "bin"), what an installed vmtool runs and what the tests start.
if [ -d "$dist/bundle" ]; then find "$dist/bundle" \( -name '*.cjs' -o -name '*.v8cache' \) -print0 | cpio --null -pdm --quiet "$repo"; fi
if [ -d data ]; then cp -r data "$repo/"; fi
# Guest images built on the host by test/helpers/guests.ts (there is no compiler inside).
if [ -d "$dist/guests" ]; then mkdir -p "$repo/$dist" && cp -r "$dist/guests" "$repo/$dist/"; fi
# The guest SDK (sources, headers, linker scripts, the prebuilt demo): tests that build a guest of their own
# at run time compile it inside with the carried toolchain. Tracked files only (no host build outputs).
git ls-files -z guest | cpio --null -pdm --quiet "$repo"
# The runtime dependencies (not the dev ones: no TypeScript, ESLint, Prettier inside).
npm ls --omit=dev --parseable --all 2>/dev/null | sed -n "s|^$top/||p" | grep '^node_modules/' | while read -r p; do
  mkdir -p "$repo/$p"
  cp -r "$p/." "$repo/$p/"
done
# Debian's kernel image itself, where the tests look for it: the Linux boot tests (test/linux/) boot it inside.
mkdir -p "$repo/.cache/kernel/$release"
cp "$kdir/vmlinuz" "$kdir/release" "$repo/.cache/kernel/$release/"
# The virtio modules the boot tests put in their initramfs (Debian builds the virtio drivers as modules), at
# their place in the package, decompressed (busybox insmod reads plain .ko).
vmods="$repo/.cache/kernel/$release/lib/modules/$release/kernel"
for m in drivers/virtio/virtio drivers/virtio/virtio_ring drivers/virtio/virtio_mmio drivers/block/virtio_blk \
  drivers/char/hw_random/virtio-rng drivers/char/virtio_console; do
  mkdir -p "$vmods/$(dirname "$m")"
  mdir="$kdir/lib/modules/$release/kernel"
  if [ -f "$mdir/$m.ko" ]; then cp "$mdir/$m.ko" "$vmods/$m.ko"
  elif [ -f "$mdir/$m.ko.xz" ]; then xz -dc "$mdir/$m.ko.xz" >"$vmods/$m.ko"
  elif [ -f "$mdir/$m.ko.zst" ]; then zstd -qdc "$mdir/$m.ko.zst" >"$vmods/$m.ko"
  else echo "svm-build-initramfs: module $m not found under $mdir" >&2; exit 1
  fi
done
printf '%s\n' "$dist" >"$proj/svm/dist"
cp "$job" "$proj/svm/job"
if [ -n "$extra" ]; then cp -r "$extra" "$proj/svm/extra"; fi
(cd "$proj" && find . -print0 | cpio --null -o -H newc --quiet | gzip -1) >"$out.proj"
cat "$base" "$out.proj" >"$out"
rm -f "$out.proj"
echo "$kdir/vmlinuz"
