#!/usr/bin/env bash
# bench/startup-pieces.mjs (what Node, a worker thread, koffi and vmtool's bindings each cost at start-up) run
# first on this host, then inside the kvm_amd harness (QEMU's software CPU, one CPU, as bench/linux-boot.mjs
# boots Linux there: docs/svm.md), where a VMM's start-up costs tens of times what it does natively.
#
#   bench/svm-startup.sh [DIST] [ROUNDS]     defaults: dist 5
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
dist=${1:-dist}
rounds=${2:-5}
[ -f "$dist/bundle/vmtool.cjs" ] || {
  echo "svm-startup: $dist/bundle/vmtool.cjs missing: build first (npm run build)" >&2
  exit 2
}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
x="$tmp/extra"
mkdir -p "$x"
cp bench/startup-pieces.mjs bench/lib.mjs "$x/" # inside, lib.mjs's ROOT is /svm: the build is /svm/repo/DIST

echo "this host ($(uname -r)):"
node bench/startup-pieces.mjs "$dist" "$rounds"

echo "kvm_amd in QEMU TCG, one CPU: building the initramfs, booting..." >&2
cat >"$tmp/job" <<JOB
node /svm/extra/startup-pieces.mjs "/svm/repo/\$dist" $rounds >/tmp/pieces 2>&1
sed 's/^/SVM bench /' /tmp/pieces >&3
JOB
kernel=$(scripts/svm-build-initramfs.sh "$dist" "$tmp/initrd.gz" "$tmp/job" "$x")
timeout 900 qemu-system-x86_64 -accel tcg -cpu max -smp 1 -m 2048 -display none -monitor none -no-reboot \
  -nodefaults -serial "file:$tmp/console.log" -serial "file:$tmp/results.log" \
  -kernel "$kernel" -initrd "$tmp/initrd.gz" -append "console=ttyS0 panic=-1 quiet"
inside=$(tr -d '\r' <"$tmp/results.log" | sed -n 's/^SVM bench //p')
if [ -z "$inside" ]; then
  echo "svm-startup: the run inside the VM did not report; its console log:" >&2
  tail -n 30 "$tmp/console.log" >&2
  exit 1
fi
echo "kvm_amd in QEMU TCG, one CPU:"
echo "$inside"
