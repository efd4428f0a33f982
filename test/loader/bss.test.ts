// A .bss in fresh guest RAM is not zero-filled again: anonymous mmap already reads as zero, and touching every
// page would make the kernel allocate them all. Measured as memory (the process's RSS), not as time.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Vm } from "../../src/vm/vm.js";
import { applyPlan, planLoad } from "../../src/loader/index.js";
import { CLI } from "../helpers/paths.js";

const RAM = 0xd000_0000; // the largest guest RAM: 3.25 GiB
const BSS = 0xb000_0000; // 2.75 GiB of .bss after two bytes of code
const MiB = 1 << 20;

let dir: string;
let elf: string;
before(() => {
  dir = mkdtempSync(join(tmpdir(), "vmtool-bss-"));
  elf = join(dir, "huge-bss.elf");
  writeFileSync(elf, hugeBssElf());
});
after(() => rmSync(dir, { recursive: true, force: true }));

/** An ELF64 x86-64 executable: one PT_LOAD at 1 MiB holding `cli; hlt` (FA F4) and then BSS bytes of .bss. */
function hugeBssElf(): Buffer {
  const b = Buffer.alloc(0x1002);
  b.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1], 0); // ELF64, little-endian, version 1
  b.writeUInt16LE(2, 16); // ET_EXEC
  b.writeUInt16LE(62, 18); // EM_X86_64
  b.writeUInt32LE(1, 20);
  b.writeBigUInt64LE(0x100000n, 24); // e_entry
  b.writeBigUInt64LE(64n, 32); // e_phoff
  b.writeUInt16LE(64, 52); // e_ehsize
  b.writeUInt16LE(56, 54); // e_phentsize
  b.writeUInt16LE(1, 56); // e_phnum
  const ph = 64;
  b.writeUInt32LE(1, ph); // PT_LOAD
  b.writeUInt32LE(7, ph + 4); // RWX
  b.writeBigUInt64LE(0x1000n, ph + 8); // p_offset
  b.writeBigUInt64LE(0x100000n, ph + 16); // p_vaddr
  b.writeBigUInt64LE(0x100000n, ph + 24); // p_paddr
  b.writeBigUInt64LE(2n, ph + 32); // p_filesz
  b.writeBigUInt64LE(BigInt(2 + BSS), ph + 40); // p_memsz
  b.set([0xfa, 0xf4], 0x1000);
  return b;
}

/** This process's resident memory in bytes (/proc/self/status VmRSS). */
function rss(): number {
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync("/proc/self/status", "utf8"));
  assert.ok(m);
  return Number(m[1]) * 1024;
}

test("applyPlan into a new VM's RAM leaves a 2.75 GiB .bss as mmap gave it (zero, not resident)", () => {
  const plan = planLoad(elf, { memSize: RAM });
  assert.equal(plan.segments[0].memSize, 2 + BSS);
  const vm = Vm.create({ memSize: RAM });
  try {
    const before = rss();
    applyPlan(vm.memory, plan, { freshRam: true });
    const grew = rss() - before;
    assert.ok(grew < 64 * MiB, `RSS grew by ${(grew / MiB).toFixed(0)} MiB`);
    // The .bss reads as zero all the same (reading untouched anonymous memory maps the shared zero page).
    assert.deepEqual([...vm.memory.read(0x100000, 4)], [0xfa, 0xf4, 0, 0]);
    assert.equal(vm.memory.readU8(0x100000 + 1 + BSS), 0);
  } finally {
    vm.close();
  }
});

test("applyPlan into RAM that may have been written still zeroes the .bss", () => {
  const small = join(dir, "small-bss.elf");
  const b = hugeBssElf();
  b.writeBigUInt64LE(2n + 0x1000n, 64 + 40); // 4 KiB of .bss
  writeFileSync(small, b);
  const plan = planLoad(small, { memSize: 4 * MiB });
  const vm = Vm.create({ memSize: 4 * MiB });
  try {
    vm.memory.fill(0x100000, 0x2000, 0xaa); // as if a guest had run
    applyPlan(vm.memory, plan);
    assert.ok(vm.memory.read(0x100002, 0x1000).every((x) => x === 0));
    assert.equal(vm.memory.readU8(0x100002 + 0x1000), 0xaa, "nothing past the .bss");
  } finally {
    vm.close();
  }
});

test("vmtool run of the 2.75 GiB .bss guest: the whole process peaks far below the .bss size", () => {
  // vmtool run in this child, with an 'exit' listener reporting the process's peak RSS (getrusage).
  const script = `
    process.on("exit", () => process.stderr.write("maxrss " + process.resourceUsage().maxRSS + "\\n"));
    process.argv = [process.argv[0], ${JSON.stringify(CLI)}, "run", "--mem", "0xD0000000", ${JSON.stringify(elf)}];
    await import(${JSON.stringify(CLI)});`;
  const wrapper = join(dir, "run-and-report.mjs");
  writeFileSync(wrapper, script);
  const r = spawnSync(process.execPath, [wrapper], { encoding: "utf8", timeout: 120_000 });
  assert.equal(r.status, 0, r.stderr);
  const m = /maxrss (\d+)/.exec(r.stderr);
  assert.ok(m, r.stderr);
  const peak = Number(m[1]) * 1024;
  assert.ok(peak < 512 * MiB, `vmtool peaked at ${(peak / MiB).toFixed(0)} MiB`);
});
