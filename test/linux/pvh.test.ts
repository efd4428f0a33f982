// The PVH loader (an uncompressed vmlinux with Xen ELF note 18): on the vmlinux extracted from Debian's
// bzImage (its note, segments and the hvm_start_info built for it), on crafted ELF files (every refusal: one
// line, exit 2, before any guest runs), on a tiny crafted PVH guest that checks its entry state on KVM (EBX,
// the start info, CR0/CR4, EFLAGS, the module), and on Debian's kernel itself up to its first console lines,
// which show the memory map and command line it read from the start info.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { InputError } from "../../src/errors.js";
import {
  E820,
  HVM_START_MAGIC,
  MEMMAP_ADDR,
  MODLIST_ADDR,
  PVH_CMDLINE_ADDR,
  PVH_CMDLINE_MAX,
  START_INFO,
  START_INFO_ADDR,
  linuxE820,
  planLinux,
  planPvh,
  type LinuxBootOptions,
} from "../../src/loader/linux/index.js";
import { applyPvhPlan } from "../../src/loader/linux/pvh.js";
import { GuestMemory } from "../../src/memory/guest-memory.js";
import { CLI } from "../helpers/paths.js";
import { assembleBytes } from "../vm/asm.js";
import { debianKernel, runCmd } from "./helpers.js";
import { craftElf, pvhNote, withSections, type CraftedElf } from "./pvh-elf.js";
import { extractVmlinux } from "./pvh-vmlinux.js";

const MiB = 1 << 20;
let dir: string;
let vmlinux: string;
before(() => {
  dir = mkdtempSync(join(tmpdir(), "vmtool-pvh-"));
  vmlinux = extractVmlinux(debianKernel(), dir);
});
after(() => rmSync(dir, { recursive: true, force: true }));

function opts(o: Partial<LinuxBootOptions> = {}): LinuxBootOptions {
  return { memSize: 256 * MiB, cmdline: "console=ttyS0", ...o };
}

function refuses(f: () => unknown, ...parts: (string | RegExp)[]): void {
  assert.throws(f, (e: unknown) => {
    assert.ok(e instanceof InputError, `not an InputError: ${String(e)}`);
    assert.ok(!e.message.includes("\n"), `more than one line: ${e.message}`);
    for (const p of parts)
      if (typeof p === "string") assert.ok(e.message.includes(p), `'${e.message}' lacks '${p}'`);
      else assert.match(e.message, p);
    return true;
  });
}

/** The start info page as a DataView, and a reader of its 64-bit fields as Numbers. */
function startInfo(page: Uint8Array) {
  const v = new DataView(page.buffer, page.byteOffset, page.byteLength);
  return {
    v,
    u64: (at: number) => Number(v.getBigUint64(at, true)),
    u32: (at: number) => v.getUint32(at, true),
  };
}

describe("Debian's vmlinux (extracted from its bzImage)", () => {
  test("plan: the PVH note's entry (pvh_start_xen), its segments from 16 MiB, the initrd above them", () => {
    const initrd = join(dir, "initrd");
    writeFileSync(initrd, Buffer.alloc(1_000_003, 7));
    const p = planLinux(vmlinux, { memSize: 256 * MiB, cmdline: "console=ttyS0 quiet", initrdPath: initrd });
    assert.equal(p.format, "pvh");
    if (p.format !== "pvh") return;
    assert.equal(p.kernelStart, 0x100_0000);
    assert.ok(p.kernelEnd > p.kernelStart && p.kernelEnd < 128 * MiB, `kernel end ${p.kernelEnd}`);
    const text = p.segments[0];
    assert.ok(p.entry > text.gpa && p.entry < text.gpa + text.size);
    assert.deepEqual(p.initrd, { gpa: 256 * MiB - 1_003_520, size: 1_000_003 });
    assert.ok(p.initrd.gpa >= p.kernelEnd);
    assert.match(p.describe, /^Linux vmlinux 6\.\d+\.\d+\S* \(PVH\), 4 segments 0x1000000\.\./);
    // Planned from its headers: the segments are read from the file into guest RAM when the plan is applied.
    assert.ok(p.kernelFile !== undefined && text.data === undefined);
    // The version is known before that, from the start of .rodata (the section headers say where).
    assert.match(p.kernelVersion ?? "", /^6\.\d+\.\d+\S* \(/);
    const ram = new GuestMemory([{ gpa: 0, bytes: new Uint8Array(256 * MiB) }]);
    assert.equal(applyPvhPlan(ram, p), START_INFO_ADDR);
    // pvh_start_xen (arch/x86/platform/pvh/head.S) starts with cld.
    assert.equal(ram.readU8(p.entry), 0xfc);
    assert.match(p.kernelVersion ?? "", /^6\.\d+\.\d+\S* \(/);
    assert.equal(ram.readU8(p.initrd.gpa), 7);
    // The same bytes as a plan from the file read whole.
    const whole = planPvh(readFileSync(vmlinux), vmlinux, opts());
    for (const s of whole.segments)
      assert.ok(Buffer.from(ram.slice(s.gpa, s.size)).equals(s.data ?? Buffer.alloc(0)));
    assert.equal(whole.kernelVersion, p.kernelVersion);
    // Its .bss and .brk (NOBITS, 17 MiB or more in Debian's 6.1 builds) lie inside the last segment's file
    // bytes: they are not read.
    const skipped = p.segments.flatMap((s) => s.zero ?? []).reduce((n, z) => n + z.size, 0);
    assert.ok(skipped >= 8 * MiB, `${skipped} bytes not read`);
  });
});

function plan(e: CraftedElf, o: Partial<LinuxBootOptions> = {}) {
  return planPvh(craftElf(e), "k", opts(o));
}

const CODE = new Uint8Array([0xf4]); // hlt

describe("crafted ELF files", () => {
  test("the entry comes from the note (4 or 8 bytes), not e_entry; segments at their physical addresses", () => {
    for (const bytes of [4, 8] as const) {
      const p = plan({
        loads: [
          { paddr: 0x100_0000, data: new Uint8Array(0x2000).fill(0x90), memSize: 0x5000 },
          { paddr: 0x200_0000, data: CODE },
        ],
        notes: [{ name: "GNU", type: 3, desc: new Uint8Array(20) }, pvhNote(0x100_0100, bytes)],
        entry: 0x200_0000,
      });
      assert.equal(p.entry, 0x100_0100);
      assert.deepEqual(
        p.segments.map((s) => [s.gpa, s.data?.length, s.memSize]),
        [
          [0x100_0000, 0x2000, 0x5000],
          [0x200_0000, 1, 1],
        ],
      );
      assert.equal(p.kernelStart, 0x100_0000);
      assert.equal(p.kernelEnd, 0x200_0001);
    }
  });

  test("start info: magic, version 1, command line, memory map in e820 types, the initrd as module 0, RSDP", () => {
    const initrd = new Uint8Array(0x1234).fill(0x2a);
    const p = plan(
      { loads: [{ paddr: 0x10_0000, data: CODE }], notes: [pvhNote(0x10_0000)] },
      { cmdline: "console=ttyS0 hello", initrd: { bytes: initrd, name: "i" }, acpiRsdp: 0xe_0000 },
    );
    const { u32, u64 } = startInfo(p.startInfo);
    assert.equal(u32(START_INFO.MAGIC), HVM_START_MAGIC);
    assert.equal(u32(START_INFO.VERSION), 1);
    assert.equal(u32(START_INFO.FLAGS), 0);
    assert.equal(u32(START_INFO.NR_MODULES), 1);
    assert.equal(u64(START_INFO.MODLIST_PADDR), MODLIST_ADDR);
    assert.equal(u64(START_INFO.CMDLINE_PADDR), PVH_CMDLINE_ADDR);
    assert.equal(u64(START_INFO.RSDP_PADDR), 0xe_0000);
    assert.equal(u64(START_INFO.MEMMAP_PADDR), MEMMAP_ADDR);
    assert.equal(Buffer.from(p.cmdline).toString(), "console=ttyS0 hello");
    // The initrd: page-aligned at the top of RAM.
    assert.deepEqual(p.initrd, { gpa: 256 * MiB - 0x2000, size: 0x1234 });
    const m = MODLIST_ADDR - START_INFO_ADDR;
    assert.deepEqual([u64(m), u64(m + 8), u64(m + 16), u64(m + 24)], [256 * MiB - 0x2000, 0x1234, 0, 0]);
    const map = linuxE820(256 * MiB);
    assert.equal(u32(START_INFO.MEMMAP_ENTRIES), map.length);
    const mm = MEMMAP_ADDR - START_INFO_ADDR;
    const read = map.map((_, i) => ({
      addr: u64(mm + 24 * i),
      size: u64(mm + 24 * i + 8),
      type: u32(mm + 24 * i + 16),
    }));
    assert.deepEqual(read, map);
    assert.deepEqual(
      read.map((e) => e.type),
      [E820.RAM, E820.RESERVED, E820.RESERVED, E820.RAM],
    );
    // Without an initrd or RSDP: no modules, a zero module list address and RSDP.
    const bare = startInfo(
      plan({ loads: [{ paddr: 0x10_0000, data: CODE }], notes: [pvhNote(0x10_0000)] }).startInfo,
    );
    assert.equal(bare.u32(START_INFO.NR_MODULES), 0);
    assert.equal(bare.u64(START_INFO.MODLIST_PADDR), 0);
    assert.equal(bare.u64(START_INFO.RSDP_PADDR), 0);
  });

  test("refused: no note, a bad note, segments outside RAM or over vmtool's boot data, too big for --mem", () => {
    const ok = { paddr: 0x100_0000, data: CODE };
    refuses(() => plan({ loads: [ok] }), "without a PVH entry point", "Xen ELF note 18", "bzImage");
    refuses(
      () => plan({ loads: [ok], notes: [{ name: "Xen", type: 17, desc: new Uint8Array(4) }] }),
      "without a PVH entry point",
    );
    refuses(
      () => plan({ loads: [ok], notes: [{ name: "Xen", type: 18, desc: new Uint8Array(3) }] }),
      "3 bytes of value",
    );
    const high = Buffer.alloc(8);
    high.writeBigUInt64LE(0x1_0000_0000n);
    refuses(
      () => plan({ loads: [ok], notes: [{ name: "Xen", type: 18, desc: high }] }),
      "not a 32-bit physical address",
    );
    refuses(
      () => plan({ loads: [ok], notes: [pvhNote(0x200_0000)] }),
      "0x2000000 is not in a loaded segment",
    );
    refuses(
      () => plan({ loads: [{ paddr: 0xe000_0000, data: CODE }], notes: [pvhNote(0xe000_0000)] }),
      "outside any guest RAM",
    );
    refuses(
      () => plan({ loads: [{ paddr: 0x9_0000, data: CODE }], notes: [pvhNote(0x9_0000)] }),
      "overlaps vmtool's boot stack and boot data",
    );
    refuses(
      () => plan({ loads: [{ paddr: 0x7_f000, data: CODE, memSize: 0x2000 }], notes: [pvhNote(0x7_f000)] }),
      "overlaps vmtool's boot stack",
    );
    refuses(
      () => plan({ loads: [{ paddr: 0xf_0000, data: CODE }], notes: [pvhNote(0xf_0000)] }),
      "overlaps the platform tables' area",
    );
    refuses(
      () =>
        plan({
          loads: [{ paddr: 0x100_0000, data: CODE, memSize: 300 * MiB }],
          notes: [pvhNote(0x100_0000)],
        }),
      "beyond guest RAM (256 MiB, --mem)",
      "give --mem 316M or more",
    );
    refuses(
      () =>
        plan(
          { loads: [{ paddr: 0x100_0000, data: CODE, memSize: 230 * MiB }], notes: [pvhNote(0x100_0000)] },
          { initrd: { bytes: new Uint8Array(20 * MiB), name: "big.cpio" } },
        ),
      "big.cpio: the initrd",
      "does not fit",
      "give --mem 266M or more",
    );
    refuses(
      () => plan({ loads: [ok], notes: [pvhNote(0x100_0000)] }, { cmdline: "x".repeat(PVH_CMDLINE_MAX + 1) }),
      `at most ${PVH_CMDLINE_MAX}`,
    );
    assert.equal(
      plan({ loads: [ok], notes: [pvhNote(0x100_0000)] }, { cmdline: "x".repeat(PVH_CMDLINE_MAX) }).cmdline
        .length,
      PVH_CMDLINE_MAX,
    );
  });

  test("refused: truncated anywhere, a foreign machine, a note running past its segment", () => {
    const good = craftElf({
      loads: [{ paddr: 0x100_0000, data: new Uint8Array(0x3000) }],
      notes: [pvhNote(0x100_0000)],
    });
    assert.equal(planPvh(good, "k", opts()).entry, 0x100_0000);
    for (const cut of [3, 40, 100, 0x1800, good.length - 4])
      refuses(() => planPvh(good.subarray(0, cut), "k", opts()), /truncated|too short/i);
    refuses(
      () =>
        planPvh(
          craftElf({
            loads: [{ paddr: 0x100_0000, data: CODE }],
            notes: [pvhNote(0x100_0000)],
            machine: 183,
          }),
          "k",
          opts(),
        ),
      "AArch64",
    );
    // The note's descsz patched past the segment's end.
    const b = Buffer.from(good);
    const noteOff = Number(b.readBigUInt64LE(64 + 56 + 8));
    b.writeUInt32LE(0x1000, noteOff + 4);
    refuses(() => planPvh(b, "k", opts()), "runs past the segment's end");
  });

  test("from a file (headers read, segments at apply): the same refusals, and a file cut after planning", () => {
    const good = craftElf({
      loads: [{ paddr: 0x100_0000, data: new Uint8Array(0x3000).fill(0xab) }],
      notes: [pvhNote(0x100_0000)],
    });
    const path = join(dir, "crafted-vmlinux");
    const planFile = () => planLinux(path, { memSize: 256 * MiB, cmdline: "console=ttyS0" });
    writeFileSync(path, good);
    const p = planFile();
    assert.ok(p.format === "pvh" && p.kernelFile !== undefined);
    const ram = new GuestMemory([{ gpa: 0, bytes: new Uint8Array(32 * MiB) }]);
    applyPvhPlan(ram, p);
    assert.ok(Buffer.from(ram.slice(0x100_0000, 0x3000)).equals(Buffer.alloc(0x3000, 0xab)));
    for (const cut of [40, 100, 0x1800, good.length - 4]) {
      writeFileSync(path, good.subarray(0, cut));
      refuses(planFile, /truncated|too short/i);
    }
    const b = Buffer.from(good);
    b.writeUInt32LE(0x1000, Number(b.readBigUInt64LE(64 + 56 + 8)) + 4);
    writeFileSync(path, b);
    refuses(planFile, "runs past the segment's end");
    // Planned, then the file shrinks before the plan is applied: one error.
    writeFileSync(path, good);
    const q = planFile();
    writeFileSync(path, good.subarray(0, 0x1000));
    assert.throws(
      () => applyPvhPlan(ram, q as Extract<typeof q, { format: "pvh" }>),
      /changed since it was checked/,
    );
  });
});

describe("the kernel's version (the summary line's)", () => {
  const banner = Buffer.from("\0\0Linux version 9.8.7-test (someone@somewhere) #1 SMP\n\0", "latin1");
  // The banner in the segment's second page, where a .rodata section says it is.
  const data = Buffer.alloc(0x3000, 0x90);
  banner.copy(data, 0x1000);
  const base = craftElf({ loads: [{ paddr: 0x100_0000, data }], notes: [pvhNote(0x100_0000)] });
  const segOffset = 0x1000; // craftElf: the first segment after one page of headers
  const path = () => join(dir, "versioned-vmlinux");
  const planned = (file: Buffer) => {
    writeFileSync(path(), file);
    const p = planLinux(path(), { memSize: 256 * MiB, cmdline: "console=ttyS0" });
    assert.ok(p.format === "pvh");
    return p;
  };
  const applied = (p: ReturnType<typeof planned>) => {
    applyPvhPlan(new GuestMemory([{ gpa: 0, bytes: new Uint8Array(32 * MiB) }]), p);
    return p.kernelVersion;
  };
  const want = "9.8.7-test (someone@somewhere) #1 SMP";

  test("found at plan time in .rodata, found at apply time in the segments without section headers", () => {
    const rodata = { name: ".rodata", offset: segOffset + 0x1000, size: 0x1000 };
    const sectioned = planned(
      withSections(base, [{ name: ".text", offset: segOffset, size: 0x1000 }, rodata]),
    );
    assert.equal(sectioned.kernelVersion, want);
    const bare = planned(base);
    assert.equal(bare.kernelVersion, undefined, "not looked for in the segments before they are read");
    assert.equal(applied(bare), want);
  });

  test("damaged section headers are only no hint: the plan goes on and the segments are searched", () => {
    const good = withSections(base, [{ name: ".rodata", offset: segOffset + 0x1000, size: 0x1000 }]);
    const shoff = Number(good.readBigUInt64LE(40));
    const damaged: [string, (b: Buffer) => void][] = [
      ["e_shoff past the end", (b) => b.writeBigUInt64LE(BigInt(b.length + 64), 40)],
      ["e_shoff near 2^64", (b) => b.writeBigUInt64LE(0xffff_ffff_ffff_f000n, 40)],
      ["e_shstrndx past e_shnum", (b) => b.writeUInt16LE(7, 62)],
      ["e_shentsize 32", (b) => b.writeUInt16LE(32, 58)],
      ["e_shnum 0 (extended numbering)", (b) => b.writeUInt16LE(0, 60)],
      [".rodata past the end", (b) => b.writeBigUInt64LE(BigInt(b.length), shoff + 64 + 24)],
      [".rodata is NOBITS", (b) => b.writeUInt32LE(8, shoff + 64 + 4)],
      ["names past the end", (b) => b.writeBigUInt64LE(BigInt(b.length), shoff + 128 + 24)],
      ["a name offset past the names", (b) => b.writeUInt32LE(0xffff_fff0, shoff + 64)],
    ];
    for (const [what, damage] of damaged) {
      const b = Buffer.from(good);
      damage(b);
      const p = planned(b);
      assert.equal(p.kernelVersion, undefined, what);
      assert.equal(applied(p), want, what);
    }
  });
});

describe("NOBITS sections inside a segment's file bytes (a vmlinux's .bss)", () => {
  // One segment of 0x60000 bytes of 0xab, linked at the higher half as craftElf does.
  const vaddr = 0x100_0000n + 0xffff_ffff_8000_0000n;
  const base = craftElf({
    loads: [{ paddr: 0x100_0000, data: Buffer.alloc(0x60000, 0xab) }],
    notes: [pvhNote(0x100_0000)],
  });
  const segOffset = 0x1000;
  const SHF_WRITE_ALLOC = 3;
  const NOBITS = 8;
  const ram = (sections: Parameters<typeof withSections>[1]) => {
    const path = join(dir, "bss-vmlinux");
    writeFileSync(path, withSections(base, sections));
    const p = planLinux(path, { memSize: 256 * MiB, cmdline: "console=ttyS0" });
    assert.ok(p.format === "pvh");
    const mem = new GuestMemory([{ gpa: 0, bytes: new Uint8Array(32 * MiB) }]);
    applyPvhPlan(mem, p);
    // Each 4 KiB page of the segment: 1 if it holds the file's bytes, 0 if it stayed zero.
    const pages = [];
    for (let at = 0; at < 0x60000; at += 0x1000) pages.push(mem.readU8(0x100_0000 + at) === 0xab ? 1 : 0);
    return { pages: pages.join(""), zero: p.segments[0].zero };
  };
  const bss = (addr: bigint, size: number, o: { type?: number; flags?: number } = {}) => ({
    name: ".bss",
    offset: segOffset + Number(addr - vaddr),
    size,
    addr,
    type: o.type ?? NOBITS,
    flags: o.flags ?? SHF_WRITE_ALLOC,
  });
  const all = "1".repeat(0x60);

  test("an allocated NOBITS section of 64 KiB or more is not read: fresh RAM is zero there", () => {
    const r = ram([bss(vaddr + 0x10000n, 0x20000)]);
    assert.deepEqual(r.zero, [{ offset: 0x10000, size: 0x20000 }]);
    assert.equal(r.pages, "1".repeat(0x10) + "0".repeat(0x20) + "1".repeat(0x30));
  });

  test("two of them, given out of order, overlapping; one reaching past the file bytes is cut at their end", () => {
    const r = ram([
      bss(vaddr + 0x50000n, 0x40000),
      bss(vaddr + 0x10000n, 0x10000),
      bss(vaddr + 0x18000n, 0x10000),
    ]);
    assert.deepEqual(r.zero, [
      { offset: 0x10000, size: 0x18000 },
      { offset: 0x50000, size: 0x10000 },
    ]);
    assert.equal(r.pages, "1".repeat(0x10) + "0".repeat(0x18) + "1".repeat(0x28) + "0".repeat(0x10));
  });

  test("read as usual: a small one, one not allocated, one of PROGBITS, one outside the segment", () => {
    assert.equal(ram([bss(vaddr + 0x10000n, 0x8000)]).pages, all);
    assert.equal(ram([bss(vaddr + 0x10000n, 0x20000, { flags: 0 })]).pages, all);
    assert.equal(ram([bss(vaddr + 0x10000n, 0x20000, { type: 1 })]).pages, all);
    const outside = ram([{ ...bss(vaddr + 0x10000n, 0x20000), addr: vaddr + 0x100000n }]);
    assert.deepEqual([outside.pages, outside.zero], [all, undefined]);
  });
});

/** A 32-bit guest that checks the PVH entry state and writes what it found to the exit port: 1-7 name the
 * first check that failed; otherwise it writes module 0's first byte. */
const ENTRY_CHECK = `
.code32
  mov $1, %al
  cmpl $${HVM_START_MAGIC}, (%ebx)
  jne 9f
  mov $2, %al
  cmpl $1, 4(%ebx)
  jne 9f
  mov $3, %al
  mov %cr0, %ecx
  cmp $0x11, %ecx
  jne 9f
  mov $4, %al
  mov %cr4, %ecx
  test %ecx, %ecx
  jnz 9f
  mov $5, %al
  pushf
  pop %ecx
  test $0x200, %ecx
  jnz 9f
  mov $6, %al
  mov ${START_INFO.CMDLINE_PADDR}(%ebx), %esi
  cmpl $0x6c6c6568, (%esi)
  jne 9f
  mov $7, %al
  cmpl $1, ${START_INFO.NR_MODULES}(%ebx)
  jne 9f
  mov ${START_INFO.MODLIST_PADDR}(%ebx), %esi
  mov (%esi), %esi
  mov (%esi), %al
9:
  out %al, $0xf4
  hlt
`;

describe("vmtool run --kernel with a PVH ELF", () => {
  function crafted(name: string, e: CraftedElf | Buffer): string {
    const p = join(dir, name);
    writeFileSync(p, Buffer.isBuffer(e) ? e : craftElf(e));
    return p;
  }

  test("a crafted PVH guest is entered at the note's address in protected mode with EBX = the start info", () => {
    const code = assembleBytes(ENTRY_CHECK, 0x10_0000, 32);
    const banner = Buffer.from("\0Linux version 9.9.9-test (nobody@nowhere) #1 SMP\0");
    const kernel = crafted("entry.elf", {
      loads: [{ paddr: 0x10_0000, data: Buffer.concat([code, banner]) }],
      notes: [pvhNote(0x10_0000)],
      entry: 0x10_0000 + code.length, // e_entry at the banner: a boot through it would not get far
    });
    const initrd = join(dir, "entry.initrd");
    writeFileSync(initrd, Buffer.alloc(100, 0x2a));
    const r = runCmd(
      process.execPath,
      [CLI, "run", "--kernel", kernel, "--initrd", initrd, "--mem", "16M", "--cmdline", "hello"],
      60_000,
    );
    assert.match(r.stderr, /^vmtool: Linux 9\.9\.9-test, PVH, 16 MiB, 1 vCPU, initrd 0\.0 MB$/m, r.stderr);
    // (0x2A << 1) | 1: every check passed and module 0 is the initrd.
    assert.equal(r.status, 85, `status ${r.status} (check ${((r.status ?? 0) - 1) / 2} failed)\n${r.stderr}`);
  });

  test("each bad file is refused before any guest runs (one line, exit 2)", () => {
    const refusedByCli = (args: string[], ...parts: string[]) => {
      const r = runCmd(process.execPath, [CLI, "run", ...args], 30_000);
      assert.equal(r.status, 2, `${r.stdout}\n${r.stderr}`);
      assert.equal(r.stdout, "");
      assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
      assert.doesNotMatch(r.stderr, /vmtool: Linux/);
      for (const p of parts) assert.ok(r.stderr.includes(p), `'${r.stderr}' lacks '${p}'`);
    };
    const ok = { paddr: 0x100_0000, data: CODE };
    const good = craftElf({ loads: [ok], notes: [pvhNote(0x100_0000)] });
    refusedByCli(["--kernel", crafted("nonote.elf", { loads: [ok] })], "without a PVH entry point");
    refusedByCli(["--kernel", crafted("cut.elf", good.subarray(0, 100))], "truncated");
    refusedByCli(
      ["--kernel", crafted("arm.elf", { loads: [ok], notes: [pvhNote(0x100_0000)], machine: 183 })],
      "AArch64",
    );
    refusedByCli(
      [
        "--kernel",
        crafted("low.elf", { loads: [{ paddr: 0x9_4000, data: CODE }], notes: [pvhNote(0x9_4000)] }),
      ],
      "overlaps vmtool's boot stack and boot data",
    );
    refusedByCli(
      [
        "--kernel",
        crafted("huge.elf", { loads: [{ ...ok, memSize: 100 * MiB }], notes: [pvhNote(0x100_0000)] }),
        "--mem",
        "64M",
      ],
      "give --mem 116M or more",
    );
    refusedByCli(["--kernel", vmlinux, "--mem", "32M"], "beyond guest RAM (32 MiB, --mem)");
  });
});

describe("Debian's kernel through PVH on this host's KVM", () => {
  test("reads the command line and memory map from the start info (its first console lines)", async () => {
    // Early boot only: on kvm_pvm the kernel stops later at an instruction the emulator cannot run
    // (docs/linux.md, "Where it runs"); where KVM runs ring 0 it goes on (test/linux/pvh-boot.test.ts).
    const cmdline = "earlyprintk=ttyS0 console=ttyS0 vmtool.pvh=1";
    const child = spawn(
      process.execPath,
      [CLI, "run", "--kernel", vmlinux, "--mem", "192M", "--cmdline", cmdline],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    let out = "";
    let stderr = "";
    const done = new Promise<void>((resolve) => {
      child.stdout.on("data", (b: Buffer) => {
        out += b.toString("latin1");
        if (/BIOS-e820: \[mem 0x0000000000100000-0x000000000bffffff\] usable/.test(out)) resolve();
      });
      child.on("exit", () => resolve());
    });
    child.stderr.on("data", (b: Buffer) => (stderr += b.toString()));
    const timer = setTimeout(() => child.kill("SIGKILL"), 240_000);
    await done;
    child.kill("SIGTERM");
    clearTimeout(timer);
    const all = `${out}\n--- stderr ---\n${stderr}`;
    assert.match(stderr, /^vmtool: Linux 6\.\d+\.\d+\S*, PVH, 192 MiB, 1 vCPU$/m, all);
    assert.match(out, new RegExp(`Command line: ${cmdline}\\r?$`, "m"), all);
    assert.match(out, /BIOS-e820: \[mem 0x0000000000000000-0x000000000007ffff\] usable/, all);
    assert.match(out, /BIOS-e820: \[mem 0x0000000000080000-0x00000000000fffff\] reserved/, all);
    assert.match(out, /BIOS-e820: \[mem 0x0000000000100000-0x000000000bffffff\] usable/, all);
  });
});
