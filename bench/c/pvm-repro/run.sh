#!/bin/sh
# Reproducer for two limits of the kvm_pvm backend (KVM where guest ring-0 code is emulated by the host
# kernel), with the C reference VMM and no vmtool code at all. Each guest prints 'A' in its interrupt handler
# and 'B' after returning from it; on hardware VT-x/AMD-V every one prints "AB" and ends with status 0.
# Measured on kvm_pvm: iret32 prints "A" then KVM_EXIT_INTERNAL_ERROR (emulation failure) at the IRET;
# int32 and int64 fail at the INT instruction itself; iretq64 prints "AB".
set -u
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
gcc -O2 -o "$work/ref-vmm" "$here/../ref-vmm.c"
for g in iret32 int32 int64 iretq64; do
  case $g in *64) as --64 "$here/$g.S" -o "$work/$g.o" && ld -Ttext=0x100000 --oformat binary "$work/$g.o" -o "$work/$g.bin"; mode=long ;;
             *) as --32 "$here/$g.S" -o "$work/$g.o" && ld -m elf_i386 -Ttext=0x100000 --oformat binary "$work/$g.o" -o "$work/$g.bin"; mode=protected ;; esac
  printf '%-8s ' "$g"
  out=$("$work/ref-vmm" "$mode" 0x100000 "$work/$g.bin" 2>&1)
  echo "status $? output: $(echo "$out" | tr '\n' ' ')"
done
