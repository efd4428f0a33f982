#!/usr/bin/env bash
# Per-exit cost of the same guest on each KVM backend, Node (vmtool's src/kvm, through test/svm/tiny-vm.ts)
# beside a C reference (scripts/svm-exit-ref.c) on each: the host's backend, then kvm_amd (SVM + NPT) inside
# QEMU TCG (docs/svm.md). The guest is a long-mode loop of OUT instructions; each OUT is one exit to user space.
#
#   scripts/svm-bench.sh [DIST] [EXITS_HOST] [EXITS_SVM]     defaults: dist 50000 20000
#
# Prints one line per run and a table of medians (3 runs each) with the Node/C ratio per backend.
# Absolute numbers inside QEMU TCG are those of a software CPU running a hypervisor: compare ratios.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
dist=${1:-dist}
nhost=${2:-50000}
nsvm=${3:-20000}
[ -f "$dist/test/svm/probe.js" ] || {
  echo "svm-bench: $dist/test/svm/probe.js missing: build first (npm run build)" >&2
  exit 2
}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/extra"
gcc -O2 -static -o "$tmp/extra/exitref" scripts/svm-exit-ref.c

median() { sort -n | sed -n 2p; }

echo "host backend ($(uname -r)): 3 runs of $nhost exits each" >&2
for i in 1 2 3; do "$tmp/extra/exitref" "$nhost" | awk '{print $3}'; done >"$tmp/host-c"
for i in 1 2 3; do
  node "$dist/test/svm/probe.js" --exits "$nhost" | sed -n 's/.*"nsPerExit":\([0-9]*\).*/\1/p'
done >"$tmp/host-node"

echo "kvm_amd in QEMU TCG: building the initramfs and booting (about 20 s)..." >&2
cat >"$tmp/job" <<JOB
for i in 1 2 3; do /svm/extra/exitref $nsvm | sed 's/^/SVM bench /' >&3; done
for i in 1 2 3; do
  node "\$dist/test/svm/probe.js" --exits $nsvm | sed -n 's/.*"nsPerExit":\([0-9]*\).*/SVM bench node $nsvm \1/p' >&3
done
JOB
kernel=$(scripts/svm-build-initramfs.sh "$dist" "$tmp/initrd.gz" "$tmp/job" "$tmp/extra")
timeout 600 qemu-system-x86_64 -accel tcg -cpu max -smp 2 -m 2048 -display none -monitor none -no-reboot \
  -nodefaults -serial "file:$tmp/console.log" -serial "file:$tmp/results.log" \
  -kernel "$kernel" -initrd "$tmp/initrd.gz" -append "console=ttyS0 panic=-1 quiet"
tr -d '\r' <"$tmp/results.log" | awk '$2=="bench" && $3=="c" {print $5}' >"$tmp/svm-c"
tr -d '\r' <"$tmp/results.log" | awk '$2=="bench" && $3=="node" {print $5}' >"$tmp/svm-node"
if [ "$(wc -l <"$tmp/svm-c")" -ne 3 ] || [ "$(wc -l <"$tmp/svm-node")" -ne 3 ]; then
  echo "svm-bench: the runs inside the VM did not all report; its console log:" >&2
  tail -n 30 "$tmp/console.log" >&2
  exit 1
fi

for f in host-c host-node svm-c svm-node; do echo "$f: $(tr '\n' ' ' <"$tmp/$f")ns per exit"; done
hc=$(median <"$tmp/host-c")
hn=$(median <"$tmp/host-node")
sc=$(median <"$tmp/svm-c")
sn=$(median <"$tmp/svm-node")
printf '\n%-28s %12s %12s %10s\n' "backend" "C ns/exit" "Node ns/exit" "Node/C"
printf '%-28s %12d %12d %10.2f\n' "host ($(uname -r | cut -c1-18))" "$hc" "$hn" "$(echo "$hn / $hc" | bc -l)"
printf '%-28s %12d %12d %10.2f\n' "kvm_amd in QEMU TCG" "$sc" "$sn" "$(echo "$sn / $sc" | bc -l)"
