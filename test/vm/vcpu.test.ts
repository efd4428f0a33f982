// The VM layer on real KVM, driven synchronously from the test's own thread: VM and vCPU creation, typed
// register access, and each boot mode entering real guest code (the guests report what they see on I/O ports).
import { test } from "node:test";
import assert from "node:assert/strict";
import { REQUIRED_CAPS, Vm } from "../../src/vm/vm.js";
import { Kvm } from "../../src/kvm/system.js";
import { KvmCapabilityError } from "../../src/kvm/errors.js";
import type { Vcpu } from "../../src/vm/vcpu.js";
import { bootVcpu, MULTIBOOT_BOOTLOADER_MAGIC, SELECTORS } from "../../src/vm/boot-modes.js";
import { LAYOUT } from "../../src/vm/machine-layout.js";
import { KVM_EXIT, KVM_EXIT_IO_OUT, KVM_MP_STATE } from "../../src/kvm/ioctls.js";
import { RUN } from "../../src/kvm/structs.js";
import { assembleBytes } from "./asm.js";

interface Out {
  port: number;
  value: number;
}

/** Run until the guest halts (no irqchip: HLT exits to us), collecting OUTs. Fails on any other exit. */
function runToHalt(vcpu: Vcpu, onMmio?: (addr: number, write: boolean) => void): Out[] {
  const outs: Out[] = [];
  for (let i = 0; i < 1000; i++) {
    assert.equal(vcpu.runOnce(), 0);
    const r = vcpu.exitReason;
    const run = vcpu.run;
    if (r === KVM_EXIT.HLT) return outs;
    if (r === KVM_EXIT.IO) {
      assert.equal(run.getUint8(RUN.io.direction), KVM_EXIT_IO_OUT);
      const size = run.getUint8(RUN.io.size);
      const off = run.getUint32(RUN.io.data_offset, true);
      const value =
        size === 1 ? run.getUint8(off) : size === 2 ? run.getUint16(off, true) : run.getUint32(off, true);
      outs.push({ port: run.getUint16(RUN.io.port, true), value });
      continue;
    }
    if (r === KVM_EXIT.MMIO && onMmio) {
      onMmio(Number(run.getBigUint64(RUN.mmio.phys_addr, true)), run.getUint8(RUN.mmio.is_write) !== 0);
      continue;
    }
    assert.fail(`unexpected exit ${r}`);
  }
  assert.fail("guest did not halt");
}

function withVm(fn: (vm: Vm, vcpu: Vcpu) => void, memSize = 64 << 20): void {
  const vm = Vm.create({ memSize, irqchip: false });
  try {
    fn(vm, vm.createVcpu());
  } finally {
    vm.close();
  }
}

test("registers round-trip as 64-bit BigInts; segment and control registers are typed", () => {
  withVm((_vm, vcpu) => {
    vcpu.setRegs({ r15: 0xffff_ffff_ffff_fff0n, rax: 0x1234_5678_9abc_def0n, rip: 0x1000n });
    const r = vcpu.getRegs();
    assert.equal(r.r15, 0xffff_ffff_ffff_fff0n);
    assert.equal(r.rax, 0x1234_5678_9abc_def0n);
    assert.equal(r.rip, 0x1000n);
    const s = vcpu.getSregs();
    assert.equal(typeof s.cr0, "bigint");
    assert.equal(s.cs.selector, 0xf000); // the reset state
    s.gdt = { base: 0x1234n, limit: 0x17 };
    vcpu.setSregs(s);
    assert.deepEqual(vcpu.getSregs().gdt, { base: 0x1234n, limit: 0x17 });
    assert.equal(vcpu.getMpState(), KVM_MP_STATE.RUNNABLE);
    const ev = vcpu.getVcpuEvents();
    assert.equal(ev.nmi.pending, 0);
    vcpu.setVcpuEvents(ev);
  });
});

test("capabilities: every one the VMM needs is present here, and a missing one is named", () => {
  const kvm = Kvm.open();
  try {
    kvm.requireCaps(REQUIRED_CAPS);
    // An s390-only capability never exists on x86: the error names it, and only it.
    assert.throws(
      () => kvm.requireCaps(["IRQCHIP", "S390_PSW"]),
      (e: Error) =>
        e instanceof KvmCapabilityError &&
        /lacks KVM_CAP_S390_PSW,/.test(e.message) &&
        !/IRQCHIP/.test(e.message),
    );
  } finally {
    kvm.close();
  }
});

test("VM creation refuses RAM sizes outside the layout's bounds", () => {
  assert.throws(() => Vm.create({ memSize: 4096 }), /outside/);
  assert.throws(() => Vm.create({ memSize: LAYOUT.MIN_RAM + 1 }), /multiple of 4 KiB/);
});

test("real mode: CS:IP split from a linear entry, SS:SP from the layout", () => {
  withVm((vm, vcpu) => {
    const code = assembleBytes(
      `.code16
       mov %cs, %ax; out %ax, $0x10
       mov %ss, %ax; out %ax, $0x11
       mov %sp, %ax; out %ax, $0x12
       mov %cr0, %eax; out %ax, $0x13
       hlt`,
      0x2345,
      16,
    );
    vm.memory.write(0x12345, code);
    bootVcpu(vcpu, vm.memory, { mode: "real", entry: 0x12345, bootInfo: LAYOUT.BOOT_INFO });
    assert.deepEqual(runToHalt(vcpu), [
      { port: 0x10, value: 0x1000 },
      { port: 0x11, value: LAYOUT.REAL_MODE_SS },
      { port: 0x12, value: LAYOUT.REAL_MODE_SP },
      { port: 0x13, value: 0x10 }, // CR0: ET only, PE off
    ]);
    assert.throws(() => bootVcpu(vcpu, vm.memory, { mode: "real", entry: 0x100000 }), /below 1 MiB/);
  });
});

test("protected mode: flat segments from a real GDT the guest can reload; ESI = machine description", () => {
  withVm((vm, vcpu) => {
    const code = assembleBytes(
      `.code32
       mov $${SELECTORS.DATA}, %ax
       mov %ax, %ds; mov %ax, %es; mov %ax, %ss
       ljmp $${SELECTORS.CODE32}, $1f
1:     mov %cr0, %eax; out %eax, $0x10
       mov %esp, %eax; out %eax, $0x11
       mov %esi, %eax; out %eax, $0x12
       mov %cs, %eax; out %eax, $0x13
       movl $0xcafef00d, 0x3fffff0
       mov 0x3fffff0, %eax; out %eax, $0x14
       hlt`,
      0x100000,
      32,
    );
    vm.memory.write(0x100000, code);
    bootVcpu(vcpu, vm.memory, { mode: "protected", entry: 0x100000, bootInfo: LAYOUT.BOOT_INFO });
    const outs = runToHalt(vcpu);
    assert.equal(outs[0].value & 0x8000_0001, 1, "CR0.PE on, PG off");
    assert.deepEqual(outs.slice(1), [
      { port: 0x11, value: LAYOUT.STACK_TOP },
      { port: 0x12, value: LAYOUT.BOOT_INFO },
      { port: 0x13, value: SELECTORS.CODE32 },
      { port: 0x14, value: 0xcafef00d },
    ]);
    assert.equal(vm.memory.readU32(0x3fffff0), 0xcafef00d);
  });
});

test("Multiboot: protected mode with EAX = 0x2BADB002 and EBX = the information", () => {
  withVm((vm, vcpu) => {
    const code = assembleBytes(
      `.code32\n out %eax, $0x10\n mov %ebx, %eax\n out %eax, $0x11\n hlt`,
      0x100000,
      32,
    );
    vm.memory.write(0x100000, code);
    bootVcpu(vcpu, vm.memory, { mode: "protected", entry: 0x100000, multibootInfo: LAYOUT.MULTIBOOT_INFO });
    assert.deepEqual(runToHalt(vcpu), [
      { port: 0x10, value: MULTIBOOT_BOOTLOADER_MAGIC },
      { port: 0x11, value: LAYOUT.MULTIBOOT_INFO },
    ]);
  });
});

test("long mode: all RAM and the MMIO window identity-mapped, a working stack, RSI = machine description", () => {
  const memSize = 128 << 20;
  withVm((vm, vcpu) => {
    const top = memSize - 16;
    const code = assembleBytes(
      `.code64
       mov %cr0, %rax; out %eax, $0x10
       mov %cr4, %rax; out %eax, $0x11
       mov %rsi, %rax; out %eax, $0x12
       mov $0x${top.toString(16)}, %rdi
       movq $0x1122334455667788, %rax
       mov %rax, (%rdi)
       mov 4(%rdi), %eax; out %eax, $0x13
       call 1f
       out %eax, $0x14
       mov %rsp, %rax; out %eax, $0x15
       mov $0x${LAYOUT.MMIO_BASE.toString(16)}, %edi
       movl $7, (%rdi)
       hlt
1:     mov $0x42, %eax
       ret`,
      0x100000,
      64,
    );
    vm.memory.write(0x100000, code);
    bootVcpu(vcpu, vm.memory, { mode: "long", entry: 0x100000, bootInfo: LAYOUT.BOOT_INFO });
    const mmio: number[] = [];
    const outs = runToHalt(vcpu, (addr, write) => {
      assert.ok(write);
      mmio.push(addr);
    });
    assert.equal(outs[0].value >>> 31, 1, "CR0.PG on");
    assert.equal(outs[1].value & 0x20, 0x20, "CR4.PAE on");
    assert.deepEqual(outs.slice(2), [
      { port: 0x12, value: LAYOUT.BOOT_INFO },
      { port: 0x13, value: 0x11223344 },
      { port: 0x14, value: 0x42 },
      { port: 0x15, value: LAYOUT.STACK_TOP },
    ]);
    assert.deepEqual(mmio, [LAYOUT.MMIO_BASE]);
    assert.equal(vm.memory.readU64(top), 0x1122334455667788n);
    const s = vcpu.getSregs();
    assert.equal(s.cs.l, 1);
    assert.equal(s.efer & 0x500n, 0x500n, "EFER.LME and LMA");
  }, memSize);
});
