// A KVM smoke test on src/kvm alone: a real-mode and a long-mode guest each run a port-I/O loop and halt.
// It runs on the host's backend (npm test) and, through kvm-amd.test.ts, under kvm_amd (SVM + NPT) as well.
import { test } from "node:test";
import assert from "node:assert/strict";
import { exitReasonName } from "../../src/kvm/ioctls.js";
import { TinyVm, outLoop } from "./tiny-vm.js";

const ENTRY = 0x1000;

function check(bits: 16 | 64): void {
  const vm = new TinyVm();
  try {
    const code = outLoop(bits, 3, 0x3f8, 0x5a);
    vm.ram.set(code, ENTRY);
    if (bits === 16) vm.enterRealMode(ENTRY);
    else vm.enterLongMode(ENTRY);
    const exits = vm.runUntilStop(10);
    assert.deepEqual(
      exits.map((e) => exitReasonName(e.reason)),
      ["IO", "IO", "IO", "HLT"],
      `exits: ${JSON.stringify(exits, (_k, v) => (typeof v === "bigint" ? v.toString(16) : v))}`,
    );
    for (const e of exits.slice(0, 3))
      assert.deepEqual(e.io, { out: true, port: 0x3f8, size: 1, count: 1, data: 0x5a });
    const regs = vm.getRegs();
    assert.equal(regs.rip, BigInt(ENTRY + code.length), "RIP after HLT points past it");
    assert.equal(regs.rcx & 0xffffffffn, 0n, "the loop counter ran down to 0");
    assert.equal(regs.rax & 0xffn, 0x5an);
  } finally {
    vm.close();
  }
}

test("real mode: three OUTs then HLT", () => check(16));
test("long mode: three OUTs then HLT", () => check(64));

test("a fresh vCPU starts at the reset vector (CS base 0xFFFF0000, RIP 0xFFF0)", () => {
  const vm = new TinyVm();
  try {
    const s = vm.getSregs();
    const r = vm.getRegs();
    assert.equal(s.segs.cs.selector, 0xf000);
    assert.equal(s.segs.cs.base, 0xffff0000n);
    assert.equal(r.rip, 0xfff0n);
    assert.equal(s.cr0 & 1n, 0n, "CR0.PE clear: real mode");
  } finally {
    vm.close();
  }
});

test("long mode: a store outside RAM is an MMIO exit with its address and data", () => {
  const vm = new TinyVm();
  try {
    // mov byte [0x400000], 0x77; hlt   (RAM is 2 MiB; the page tables map the first GiB)
    vm.ram.set([0xc6, 0x04, 0x25, 0x00, 0x00, 0x40, 0x00, 0x77, 0xf4], ENTRY);
    vm.enterLongMode(ENTRY);
    const e = vm.runOnce();
    assert.equal(exitReasonName(e.reason), "MMIO");
    assert.deepEqual(e.mmio, { addr: 0x400000n, write: true, len: 1, data: 0x77 });
    assert.equal(exitReasonName(vm.runOnce().reason), "HLT");
  } finally {
    vm.close();
  }
});
