#!/usr/bin/env bash
# Boot Debian's kernel under QEMU (TCG, no KVM needed) with the initramfs from scripts/kernel-build-initramfs.sh;
# its init exercises vmtool.ko and powers off.
#
#   scripts/kernel-boot.sh OUTDIR SMP [SECONDS]
#
# Writes OUTDIR/console-smpSMP.log (the kernel's console, ttyS0) and OUTDIR/dump-smpSMP.log (what the init
# reports, ttyS1). Stops QEMU after SECONDS (default 120). Exit status: QEMU's, or 124 on time-out.
set -euo pipefail
out=${1:?usage: kernel-boot.sh OUTDIR SMP [SECONDS]}
smp=${2:?usage: kernel-boot.sh OUTDIR SMP [SECONDS]}
limit=${3:-120}
console="$out/console-smp$smp.log"
dump="$out/dump-smp$smp.log"
rm -f "$console" "$dump"
# slub_debug on the module's two caches: red zones and poisoning catch overruns and use after free, and a
# cache destroyed with objects left in it prints a BUG line. panic_on_warn/oops=panic end the boot at once.
exec timeout --kill-after=5 "$limit" qemu-system-x86_64 -accel tcg -cpu max -m 512 -smp "$smp" \
  -nographic -no-reboot -monitor none -serial stdio -serial "file:$dump" \
  -kernel "$out/vmlinuz" -initrd "$out/initramfs.cpio.gz" \
  -append "console=ttyS0 panic=-1 oops=panic panic_on_warn=1 slub_debug=FZPU,vmtool_cpu,vmtool_vmcs quiet loglevel=4" \
  </dev/null >"$console" 2>&1
