#!/usr/bin/env bash
# Per-exit cost of the same guest on each KVM backend, `vmtool run` beside the project's C reference VMM
# (bench/c/ref-vmm.c, built `gcc -O2 -static` here so that the same binary also runs inside): first on the
# host's backend, then under kvm_amd (SVM + NPT) inside QEMU TCG (docs/svm.md). The guest is a long-mode loop of
# OUT instructions to the debug console (one exit to user space each) ending through the exit port; start-up is
# taken out by subtracting a guest that only writes the exit port (scripts/svm-exit-cost.mjs).
#
#   scripts/svm-bench.sh [DIST] [EXITS_HOST] [EXITS_SVM] [RUNS]     defaults: dist 100000 5000 3
#
# Prints the medians per backend and a table with the vmtool/C ratio on each. Absolute numbers inside QEMU
# TCG are those of a software CPU running a hypervisor: compare the ratios.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
dist=${1:-dist}
nhost=${2:-100000}
nsvm=${3:-5000}
runs=${4:-3}
[ -f "$dist/src/cli/main.js" ] || {
  echo "svm-bench: $dist/src/cli/main.js missing: build first (npm run build)" >&2
  exit 2
}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
x="$tmp/extra"
mkdir -p "$x"
gcc -O2 -static -o "$x/ref-vmm" bench/c/ref-vmm.c
cp scripts/svm-exit-cost.mjs "$x/"
# flat long-mode guests at 1 MiB, the same bytes on both backends
guest() { # NAME EXITS (0: only the exit-port write)
  {
    printf '.code64\n.globl _start\n_start:\n'
    if [ "$2" -gt 0 ]; then
      printf ' mov $%d, %%ecx\n mov $0x2e, %%al\n1: out %%al, $0xe9\n dec %%ecx\n jnz 1b\n' "$2"
    fi
    printf ' xor %%eax, %%eax\n out %%al, $0xf4\n'
  } >"$tmp/$1.S"
  as --64 "$tmp/$1.S" -o "$tmp/$1.o"
  ld -Ttext=0x100000 --oformat binary "$tmp/$1.o" -o "$x/$1.bin"
}
guest quit 0
guest exits-host "$nhost"
guest exits-svm "$nsvm"

echo "host backend ($(uname -r)): $runs runs of $nhost exits each..." >&2
host=$(node "$x/svm-exit-cost.mjs" "$dist/src/cli/main.js" "$x/ref-vmm" "$x/exits-host.bin" "$x/quit.bin" "$nhost" "$runs")
echo "host: $host"

echo "kvm_amd in QEMU TCG: building the initramfs, booting, $runs runs of $nsvm exits each..." >&2
cat >"$tmp/job" <<JOB
e=/svm/extra
node \$e/svm-exit-cost.mjs "\$dist/src/cli/main.js" \$e/ref-vmm \$e/exits-svm.bin \$e/quit.bin $nsvm $runs >/tmp/cost 2>&1
sed 's/^/SVM bench /' /tmp/cost >&3
JOB
kernel=$(scripts/svm-build-initramfs.sh "$dist" "$tmp/initrd.gz" "$tmp/job" "$x")
timeout 900 qemu-system-x86_64 -accel tcg -cpu max -smp 2 -m 2048 -display none -monitor none -no-reboot \
  -nodefaults -serial "file:$tmp/console.log" -serial "file:$tmp/results.log" \
  -kernel "$kernel" -initrd "$tmp/initrd.gz" -append "console=ttyS0 panic=-1 quiet"
svm=$(tr -d '\r' <"$tmp/results.log" | sed -n 's/^SVM bench //p')
echo "kvm_amd: $svm"
case $svm in
  '{'*) ;;
  *)
    echo "svm-bench: the run inside the VM did not report; its console log:" >&2
    tail -n 30 "$tmp/console.log" >&2
    exit 1
    ;;
esac

field() { sed -n "s/.*\"$2\":\([0-9-]*\).*/\1/p" <<<"$1"; }
printf '\n%-30s %12s %14s %12s\n' "backend" "C ns/exit" "vmtool ns/exit" "vmtool / C"
for b in host svm; do
  j=${!b}
  c=$(field "$j" refNsPerExit)
  v=$(field "$j" vmtoolNsPerExit)
  name="host $(uname -r | cut -c1-20)"
  [ $b = svm ] && name="kvm_amd in QEMU TCG"
  printf '%-30s %12d %14d %12.2f\n' "$name" "$c" "$v" "$(echo "$v / $c" | bc -l)"
done
