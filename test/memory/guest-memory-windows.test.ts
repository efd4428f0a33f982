// GuestMemory over real host mappings, viewed in windows created on first use: accesses at window edges and
// across them, slices that stay live views of the mapping (written by KVM's guest, or by another view of the
// same RAM), the same strict bounds checks as before, and no view of all RAM when a VM is built and booted.
import { test } from "node:test";
import assert from "node:assert/strict";
import { closeSync, mkdtempSync, openSync, readSync, rmSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as libc from "../../src/kvm/libc.js";
import { GUEST_RAM_WINDOW as W, GuestMemory, GuestMemoryError } from "../../src/memory/guest-memory.js";
import { Vm } from "../../src/vm/vm.js";
import { bootVcpu } from "../../src/vm/boot-modes.js";
import { LAYOUT } from "../../src/vm/machine-layout.js";
import { KVM_EXIT, KVM_EXIT_IO_OUT } from "../../src/kvm/ioctls.js";
import { RUN } from "../../src/kvm/structs.js";
import type { Vcpu } from "../../src/vm/vcpu.js";
import { assembleBytes } from "../vm/asm.js";

/** An anonymous mapping of `size` bytes, unmapped after `fn`. */
function withMapping(size: number, fn: (addr: bigint) => void): void {
  const addr = libc.mmap(
    null,
    size,
    libc.PROT_READ | libc.PROT_WRITE,
    libc.MAP_PRIVATE | libc.MAP_ANONYMOUS | libc.MAP_NORESERVE,
    -1,
    0,
  );
  assert.notEqual(addr, libc.MAP_FAILED);
  try {
    fn(addr);
  } finally {
    libc.munmap(addr, size);
  }
}

/** Two GuestMemory objects over the same mapping: `mem` and `other` share no view, only the host memory. */
function withTwoViews(gpa: number, size: number, fn: (mem: GuestMemory, other: GuestMemory) => void): void {
  withMapping(size, (hostAddr) => {
    const mem = new GuestMemory([{ gpa, size, hostAddr }]);
    fn(mem, GuestMemory.fromDescriptors(mem.descriptors()));
  });
}

test("every byte around each window edge goes to the right host byte", () => {
  // 3 windows and a partial fourth one of 12 KiB, at a guest address that is not window-aligned itself.
  const gpa = 0x40_1000;
  const size = 3 * W + 0x3000;
  withTwoViews(gpa, size, (mem, other) => {
    for (const edge of [W, 2 * W, 3 * W]) {
      for (let d = -9; d < 9; d++) other.writeU8(gpa + edge + d, (edge / W) * 16 + d + 9);
      for (let d = -9; d < 9; d++) assert.equal(mem.readU8(gpa + edge + d), (edge / W) * 16 + d + 9);
    }
    // The last byte of the partial window, from both sides.
    mem.writeU8(gpa + size - 1, 0xa5);
    assert.equal(other.readU8(gpa + size - 1), 0xa5);
    assert.equal(other.read(gpa + size - 4, 4)[3], 0xa5);
  });
});

test("readU16/32/64 and writeU16/32/64 across a window edge, at every misalignment", () => {
  withTwoViews(0, 2 * W, (mem, other) => {
    const pattern = Uint8Array.from({ length: 16 }, (_, i) => 0x10 + i * 0x11);
    other.write(W - 8, pattern);
    const le = (o: number, n: number) =>
      pattern.subarray(o, o + n).reduceRight((v, b) => (v << 8n) | BigInt(b), 0n);
    for (let o = 1; o < 8; o++) {
      const gpa = W - 8 + o;
      if (o >= 7) assert.equal(mem.readU16(gpa), Number(le(o, 2)), `u16 at W-${8 - o}`);
      if (o >= 5) assert.equal(mem.readU32(gpa), Number(le(o, 4)), `u32 at W-${8 - o}`);
      assert.equal(mem.readU64(gpa), le(o, 8), `u64 at W-${8 - o}`);
    }
    mem.writeU16(W - 1, 0xbbaa);
    assert.deepEqual([...other.read(W - 1, 2)], [0xaa, 0xbb]);
    mem.writeU32(W - 3, 0xddccbbaa);
    assert.deepEqual([...other.read(W - 3, 4)], [0xaa, 0xbb, 0xcc, 0xdd]);
    mem.writeU64(W - 5, 0x8877665544332211n);
    assert.deepEqual([...other.read(W - 5, 8)], [0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88]);
    mem.writeU64(W - 4, -1n); // wrapped to 64 bits as before
    assert.equal(other.readU64(W - 4), 0xffff_ffff_ffff_ffffn);
  });
});

test("slices inside a window and across windows are live views, not copies", () => {
  withTwoViews(0x10_0000, 4 * W, (mem, other) => {
    const inside = mem.slice(0x10_0000 + W + 100, 16);
    const across = mem.slice(0x10_0000 + 2 * W - 6, 12);
    const large = mem.slice(0x10_0000 + 10, 3 * W); // spans four windows
    assert.equal(across.length, 12);
    assert.equal(large.length, 3 * W);
    other.write(0x10_0000 + 2 * W - 6, Uint8Array.from([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]));
    assert.deepEqual([...across], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    assert.equal(large[2 * W - 16], 1);
    across[5] = 0x77; // the last byte of a window
    across[6] = 0x88; // the first byte of the next one
    assert.equal(other.readU16(0x10_0000 + 2 * W - 1), 0x8877);
    inside.fill(0x5a);
    assert.equal(other.readU32(0x10_0000 + W + 104), 0x5a5a5a5a);
    large[3 * W - 1] = 0x99;
    assert.equal(other.readU8(0x10_0000 + 10 + 3 * W - 1), 0x99);
    // The kernel writing into a slice (read(2) of a file) lands in guest RAM too.
    const dir = mkdtempSync(join(tmpdir(), "vmtool-gm-"));
    const fd = openSync(join(dir, "f"), "w+");
    try {
      writeSync(fd, Uint8Array.from([0xc1, 0xc2, 0xc3, 0xc4]), 0, 4, 0);
      assert.equal(readSync(fd, mem.slice(0x10_0000 + 3 * W - 2, 4), 0, 4, 0), 4); // Node's read(2)
      assert.equal(other.readU32(0x10_0000 + 3 * W - 2), 0xc4c3c2c1);
      writeSync(fd, Uint8Array.from([0xd1, 0xd2, 0xd3, 0xd4]), 0, 4, 0); // pwrite: the offset stays at 0
      assert.equal(libc.read(fd, mem.slice(0x10_0000 + W - 1, 4), 4), 4); // through koffi, by address
      assert.equal(other.readU32(0x10_0000 + W - 1), 0xd4d3d2d1);
    } finally {
      closeSync(fd);
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

test("out of RAM, wrapping, negative and non-integer addresses throw GuestMemoryError, and write nothing", () => {
  const base = 0x20_0000;
  const size = 2 * W;
  withMapping(3 * W, (hostAddr) => {
    // Two regions with a one-window gap between them, both host-mapped.
    const mem = new GuestMemory([
      { gpa: base, size, hostAddr },
      { gpa: base + 3 * W, size: W / 2, hostAddr: hostAddr + BigInt(2 * W) },
    ]);
    const end = base + size;
    const bad: [number, number][] = [
      [base - 1, 1], // below RAM
      [base - 1, 2], // straddling RAM's start
      [end - 1, 2], // straddling a region's end
      [end, 0], // empty, but at the end
      [end, 1],
      [end + 10, 4], // the gap
      [end - 4, W + 8], // across the gap into the next region
      [base + 3 * W + W / 2 - 7, 8], // past the last region
      [-1, 1],
      [-W, W + 1],
      [base + 0.5, 1],
      [base, 1.5],
      [base, -1],
      [base + 8.25, 4], // inside the window used last, but not an integer
      [base + 8, -4],
      [base + 8, 0.5],
      [Number.NaN, 1],
      [base, Number.NaN],
      [Infinity, 1],
      [base, Infinity],
      [Number.MAX_SAFE_INTEGER, 1],
      [base + 4, Number.MAX_SAFE_INTEGER], // gpa+len is no longer exact: wraps past 2^53
      [2 ** 64 - 4, 8],
      [base, 2 ** 64 - base + 4], // 64-bit wrap-around back to low RAM
    ];
    const before = mem.read(base, size);
    // Each check after an access in the window around the bad range, and in the last window of each region
    // (GuestMemory checks the window used last first).
    const primes = [base + 8, end - 1, base + 3 * W + 4];
    const primed = (f: () => unknown, i: number) => () => {
      mem.readU8(primes[i % primes.length]);
      return f();
    };
    let k = 0;
    for (const [gpa, len] of bad) {
      if (Number.isFinite(gpa) && gpa >= base && gpa < end) mem.readU8(Math.floor(gpa));
      k++;

      const isErr = (e: unknown) =>
        e instanceof GuestMemoryError && Object.is(e.gpa, gpa) && Object.is(e.length, len);
      assert.equal(mem.contains(gpa, len), false, `contains(${gpa}, ${len})`);
      assert.throws(() => mem.slice(gpa, len), isErr, `slice(${gpa}, ${len})`);
      assert.throws(
        primed(() => mem.slice(gpa, len), k),
        isErr,
        `slice(${gpa}, ${len}) after an access`,
      );
      assert.throws(
        primed(() => mem.read(gpa, len), k + 1),
        isErr,
      );
      assert.throws(
        primed(() => mem.fill(gpa, len, 0xee), k + 2),
        isErr,
      );
      if (Number.isSafeInteger(len) && len >= 0 && len < 4 * W)
        assert.throws(
          primed(() => mem.write(gpa, new Uint8Array(len).fill(0xee)), k),
          isErr,
        );
    }
    type Access = [number, (gpa: number) => unknown, (gpa: number) => unknown];
    const widths: Access[] = [
      [1, (g) => mem.readU8(g), (g) => mem.writeU8(g, 0xee)],
      [2, (g) => mem.readU16(g), (g) => mem.writeU16(g, 0xeeee)],
      [4, (g) => mem.readU32(g), (g) => mem.writeU32(g, 0xeeeeeeee)],
      [8, (g) => mem.readU64(g), (g) => mem.writeU64(g, -1n)],
    ];
    for (const [n, read, write] of widths) {
      const straddling = Array.from({ length: n }, (_, i) => end - n + 1 + i); // the last n-1 bytes, then end
      for (const gpa of [base - 1, ...straddling, -1, base + 0.5, Number.NaN, 2 ** 64 - 1]) {
        const isErr = (e: unknown) =>
          e instanceof GuestMemoryError && Object.is(e.gpa, gpa) && e.length === n;
        for (let i = 0; i < primes.length; i++) {
          assert.throws(
            primed(() => read(gpa), i),
            isErr,
            `read of ${n} at ${gpa}`,
          );
          assert.throws(
            primed(() => write(gpa), i),
            isErr,
            `write of ${n} at ${gpa}`,
          );
        }
      }
    }
    assert.deepEqual(mem.read(base, size), before, "a refused access changed guest RAM");
    // The edges themselves are fine, in both regions.
    assert.equal(mem.slice(end - 1, 1).length, 1);
    assert.equal(mem.slice(end - 1, 0).length, 0);
    assert.equal(mem.readU64(end - 8), 0n);
    assert.equal(mem.readU32(base + 3 * W + W / 2 - 4), 0);
    assert.equal(mem.size, size + W / 2);
  });
});

test("regions over plain buffers work as before: one view, the buffer itself", () => {
  const bytes = new Uint8Array(3 * W);
  const mem = new GuestMemory([{ gpa: 0x1000, bytes }]);
  mem.writeU32(0x1000 + W - 2, 0x44332211);
  assert.deepEqual([...bytes.subarray(W - 2, W + 2)], [0x11, 0x22, 0x33, 0x44]);
  const s = mem.slice(0x1000 + W - 2, 4);
  assert.equal(s.buffer, bytes.buffer, "a slice of a buffer region is a view of that buffer");
  bytes[W] = 0x99;
  assert.equal(s[2], 0x99);
  assert.throws(() => mem.readU8(0x1000 + 3 * W), GuestMemoryError);
  assert.throws(
    () =>
      new GuestMemory([
        { gpa: 0, bytes },
        { gpa: 0x1000, bytes },
      ]),
    /overlap/,
  );
  assert.throws(() => GuestMemory.fromDescriptors(mem.descriptors()), /without a host address/);
});

/** Run until HLT (no irqchip), collecting OUTs of 32 bits. */
function runToHalt(vcpu: Vcpu): number[] {
  const outs: number[] = [];
  for (let i = 0; i < 100; i++) {
    assert.equal(vcpu.runOnce(), 0);
    if (vcpu.exitReason === KVM_EXIT.HLT) return outs;
    assert.equal(vcpu.exitReason, KVM_EXIT.IO, `unexpected exit ${vcpu.exitReason}`);
    assert.equal(vcpu.run.getUint8(RUN.io.direction), KVM_EXIT_IO_OUT);
    outs.push(vcpu.run.getUint32(vcpu.run.getUint32(RUN.io.data_offset, true), true));
  }
  assert.fail("guest did not halt");
}

test("a 64 MiB VM built and booted views a few windows only, and the guest's writes reach live slices", () => {
  const memSize = 64 << 20;
  const external0 = process.memoryUsage().external;
  const vm = Vm.create({ memSize, irqchip: false });
  try {
    // Slices taken before the guest runs: across the 2 MiB window edge, and the last 8 bytes of RAM.
    const across = vm.memory.slice(2 * W - 2, 4);
    const last = vm.memory.slice(memSize - 8, 8);
    vm.memory.writeU32(3 * W - 2, 0x0badcafe); // read by the guest, across another edge
    const code = assembleBytes(
      `.code64
       movl $0x11223344, 0x${(2 * W - 2).toString(16)}
       movq $0x5566778899aabbcc, %rax
       mov %rax, 0x${(memSize - 8).toString(16)}
       mov 0x${(3 * W - 2).toString(16)}, %eax
       out %eax, $0x10
       hlt`,
      0x100000,
      64,
    );
    vm.memory.write(0x100000, code);
    bootVcpu(vm.createVcpu(), vm.memory, { mode: "long", entry: 0x100000, bootInfo: LAYOUT.BOOT_INFO });
    const grown = process.memoryUsage().external - external0;
    assert.ok(grown < 8 << 20, `${grown} bytes of external memory after building and booting a 64 MiB VM`);
    assert.deepEqual(runToHalt(vm.vcpus[0]), [0x0badcafe]);
    assert.deepEqual([...across], [0x44, 0x33, 0x22, 0x11]);
    assert.equal(vm.memory.readU32(2 * W - 2), 0x11223344);
    assert.equal(new DataView(last.buffer, last.byteOffset, 8).getBigUint64(0, true), 0x5566778899aabbccn);
  } finally {
    vm.close();
  }
});
