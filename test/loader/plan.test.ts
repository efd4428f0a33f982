// planLoad/applyPlan on real images built by the guest SDK, and on every kind of bad file: real files made in
// a temporary folder by truncating or patching those images. Each bad input must be one InputError line (exit 2).
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import {
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmSync,
  truncateSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { InputError } from "../../src/errors.js";
import { GuestMemory } from "../../src/memory/guest-memory.js";
import { applyPlan, planLoad, type LoadOptions } from "../../src/loader/index.js";
import { guests } from "../helpers/guests.js";

const MEM = 64 << 20;
let dir: string;
let g: ReturnType<typeof guests>;

before(() => {
  g = guests();
  dir = mkdtempSync(join(tmpdir(), "vmtool-loader-"));
});
after(() => rmSync(dir, { recursive: true, force: true }));

/** A copy of `src` (a path or bytes), changed by `patch`, written to a new file. */
function variant(
  name: string,
  src: string | Uint8Array,
  patch?: ((b: Buffer) => Buffer) | ((b: Buffer) => void),
): string {
  let b: Buffer = Buffer.from(typeof src === "string" ? readFileSync(src) : src);
  if (patch) b = patch(b) ?? b;
  const p = join(dir, name);
  writeFileSync(p, b);
  return p;
}

/** planLoad must refuse with exactly one line that contains every `parts`. */
function refuses(path: string, parts: (string | RegExp)[], opts: Partial<LoadOptions> = {}): void {
  assert.throws(
    () => planLoad(path, { memSize: MEM, ...opts }),
    (err: unknown) => {
      assert.ok(err instanceof InputError, `expected an InputError, got ${String(err)}`);
      assert.ok(!err.message.includes("\n"), `more than one line: ${err.message}`);
      for (const p of parts) {
        if (typeof p === "string") assert.ok(err.message.includes(p), `'${err.message}' lacks '${p}'`);
        else assert.match(err.message, p);
      }
      return true;
    },
  );
}

// Offsets in the ELF headers (ELF32 / ELF64).
const E32 = { machine: 18, entry: 24, phoff: 28, phnum: 44 };
const E64 = { machine: 18, entry: 24, phoff: 32, phnum: 56 };
const P32 = { type: 0, offset: 4, vaddr: 8, paddr: 12, filesz: 16, memsz: 20, size: 32 };
const P64 = { type: 0, offset: 8, vaddr: 16, paddr: 24, filesz: 32, memsz: 40, size: 56 };
const ph32 = (b: Buffer, i: number) => b.readUInt32LE(E32.phoff) + i * P32.size;
const ph64 = (b: Buffer, i: number) => Number(b.readBigUInt64LE(E64.phoff)) + i * P64.size;

describe("formats", () => {
  test("flat real-mode binary: at 0x7C00, entry at its first byte", () => {
    const p = planLoad(g.helloReal, { memSize: MEM });
    assert.equal(p.format, "flat");
    assert.equal(p.mode, "real");
    assert.equal(p.entry, 0x7c00);
    assert.equal(p.segments.length, 1);
    assert.equal(p.segments[0].gpa, 0x7c00);
    assert.deepEqual(Buffer.from(p.segments[0].data), readFileSync(g.helloReal));
  });

  test("flat binary in protected or long mode defaults to 1 MiB; --load and --entry move it", () => {
    const long = planLoad(g.exits200kFlat, { memSize: MEM, mode: "long" });
    assert.deepEqual(
      [long.format, long.mode, long.entry, long.segments[0].gpa],
      ["flat", "long", 0x100000, 0x100000],
    );
    const prot = planLoad(g.halt, { memSize: MEM, mode: "protected" });
    assert.deepEqual([prot.mode, prot.entry], ["protected", 0x100000]);
    const moved = planLoad(g.helloReal, { memSize: MEM, load: 0x1000, entry: 0x1002 });
    assert.deepEqual([moved.mode, moved.segments[0].gpa, moved.entry], ["real", 0x1000, 0x1002]);
  });

  test("ELF32 runs in protected mode at e_entry, segments at p_paddr with .bss", () => {
    const p = planLoad(g.helloProtected, { memSize: MEM });
    assert.deepEqual([p.format, p.mode, p.entry, p.multiboot], ["elf32", "protected", 0x100000, undefined]);
    const b = readFileSync(g.helloProtected);
    assert.equal(p.segments.length, b.readUInt16LE(E32.phnum));
    p.segments.forEach((s, i) => {
      assert.equal(s.gpa, b.readUInt32LE(ph32(b, i) + P32.paddr));
      assert.equal(s.memSize, b.readUInt32LE(ph32(b, i) + P32.memsz));
      assert.equal(s.data.length, b.readUInt32LE(ph32(b, i) + P32.filesz));
    });
    assert.ok(
      p.segments.some((s) => s.memSize > s.data.length),
      "the .bss segment",
    );
  });

  test("ELF64 runs in long mode at e_entry", () => {
    const p = planLoad(g.helloLong, { memSize: MEM });
    assert.deepEqual([p.format, p.mode, p.entry], ["elf64", "long", 0x100000]);
    assert.equal(p.segments.length, 2);
  });

  test("an empty PT_LOAD (ld's for an asm-only image) is skipped", () => {
    const p = planLoad(g.tripleFault, { memSize: MEM });
    assert.equal(p.segments.length, 1);
    assert.equal(p.segments[0].gpa, 0x100000);
  });

  test("a higher-half entry (p_vaddr != p_paddr) is translated to its physical address", () => {
    const high = 0xffffffff80000000n;
    const f = variant("higher-half.elf", g.helloLong, (b) => {
      for (let i = 0; i < 2; i++)
        b.writeBigUInt64LE(high + 0x100000n + BigInt(i * 0x1000), ph64(b, i) + P64.vaddr);
      b.writeBigUInt64LE(high + 0x100000n, E64.entry);
    });
    const p = planLoad(f, { memSize: MEM });
    assert.equal(p.entry, 0x100000);
  });

  test("Multiboot ELF32: protected mode, multiboot flag, entry from the ELF", () => {
    const p = planLoad(g.multiboot, { memSize: MEM });
    const b = readFileSync(g.multiboot);
    assert.deepEqual(
      [p.format, p.mode, p.multiboot, p.entry],
      ["multiboot", "protected", true, b.readUInt32LE(E32.entry)],
    );
  });

  test("Multiboot a.out kludge: addresses from the header, .bss up to bss_end_addr", () => {
    const p = planLoad(g.multibootAout, { memSize: MEM });
    const b = readFileSync(g.multibootAout);
    const [loadAddr, loadEnd, bssEnd, entry] = [16, 20, 24, 28].map((o) => b.readUInt32LE(o));
    assert.deepEqual([p.format, p.mode, p.multiboot, p.entry], ["multiboot", "protected", true, entry]);
    assert.equal(p.segments.length, 1);
    assert.equal(p.segments[0].gpa, loadAddr);
    assert.equal(p.segments[0].data.length, loadEnd - loadAddr);
    assert.equal(p.segments[0].memSize, bssEnd - loadAddr);
  });

  test("applyPlan copies the segments and zeroes their .bss", () => {
    const ram = new Uint8Array(4 << 20).fill(0xaa);
    const mem = new GuestMemory([{ gpa: 0, bytes: ram }]);
    const p = planLoad(g.helloLong, { memSize: ram.length });
    applyPlan(mem, p);
    for (const s of p.segments) {
      assert.deepEqual(mem.read(s.gpa, s.data.length), s.data);
      assert.ok(mem.read(s.gpa + s.data.length, s.memSize - s.data.length).every((x) => x === 0));
    }
    assert.equal(mem.readU8(0x100000 - 1), 0xaa, "nothing written before the image");
  });
});

describe("bad files", () => {
  test("a missing file", () => refuses(join(dir, "nope.elf"), ["nope.elf", "no such file"]));

  test("a directory", () => {
    const d = join(dir, "a-dir");
    mkdirSync(d);
    refuses(d, ["a-dir", "is a directory"]);
  });

  test("a device or FIFO is not a regular file", () => {
    refuses("/dev/null", ["/dev/null", "not a regular file"]);
    const fifo = join(dir, "fifo");
    execFileSync("mkfifo", [fifo]);
    refuses(fifo, ["not a regular file"]);
  });

  test("an empty file", () => refuses(variant("empty.bin", new Uint8Array(0)), ["empty.bin", "empty file"]));

  test("an image larger than guest RAM is refused by its size, before reading, whatever the size (2, 3, 4 GiB)", () => {
    for (const gib of [2, 3, 4]) {
      const p = join(dir, `sparse-${gib}g.img`);
      writeFileSync(p, "");
      truncateSync(p, gib * 2 ** 30); // sparse: reading it whole would take seconds and gigabytes
      refuses(p, [`${p}: ${gib * 2 ** 30} bytes: larger than guest RAM (64 MiB, --mem)`]);
      refuses(p, [`${gib * 2 ** 30} bytes: larger than guest RAM (64 MiB, --mem)`], { mode: "protected" });
    }
    const odd = variant("odd-ram.bin", new Uint8Array(0x281000));
    refuses(odd, ["2625536 bytes: larger than guest RAM (0x280000 bytes, --mem)"], { memSize: 0x280000 });
  });

  test("an ELF file larger than guest RAM (debug sections, symbols) loads; a sparse ELF of 2 GiB is refused by size", () => {
    // 40 MiB of bytes after the ELF's own: what debug sections add, never loaded.
    const big = variant("with-debug.elf", g.helloLong, (b) =>
      Buffer.concat([b, Buffer.alloc(40 << 20, 0x5a)]),
    );
    const plan = planLoad(big, { memSize: 16 << 20 });
    assert.equal(plan.mode, "long");
    const p = join(dir, "sparse-2g.elf");
    writeFileSync(p, Buffer.from([0x7f, 0x45, 0x4c, 0x46]));
    truncateSync(p, 2 ** 31);
    refuses(p, [
      `${p}: ${2 ** 31} bytes: larger than the 1024 MiB an ELF image may have (guest RAM or 1 GiB)`,
    ]);
  });

  test("an image of 2 GiB and more is read whole when guest RAM holds it (reads in chunks below 2 GiB)", () => {
    const p = join(dir, "just-over-2g.bin");
    const size = 2 ** 31 + 4096;
    writeFileSync(p, "");
    truncateSync(p, size);
    const marks = [
      [0, 0xf4],
      [2 ** 31 - 1, 0x5a],
      [2 ** 31, 0xa5],
      [size - 1, 0x99],
    ] as const;
    const fd = openSync(p, "r+");
    for (const [at, v] of marks) writeSync(fd, Buffer.of(v), 0, 1, at);
    closeSync(fd);
    const plan = planLoad(p, { memSize: 3 * 2 ** 30, mode: "long" });
    const data = plan.segments[0].data;
    assert.equal(data.length, size);
    for (const [at, v] of marks) assert.equal(data[at], v, `byte at ${at}`);
  });

  test("a procfs file (it reports size 0) is read for what it holds, not called empty", () => {
    const plan = planLoad("/proc/version", { memSize: MEM });
    assert.equal(plan.format, "flat");
    assert.equal(Buffer.from(plan.segments[0].data).toString(), readFileSync("/proc/version", "utf8"));
    if (existsSync("/proc/kallsyms") && readFileSync("/proc/kallsyms").length > 0x200000)
      refuses(
        "/proc/kallsyms",
        ["/proc/kallsyms: more than 2097152 bytes: larger than guest RAM (2 MiB, --mem)"],
        {
          memSize: 0x200000,
        },
      );
  });

  test("an ELF cut inside its identification, its header, its program headers, its segment data", () => {
    refuses(
      variant("cut-ident.elf", g.helloLong, (b) => b.subarray(0, 10)),
      ["truncated ELF file"],
    );
    refuses(
      variant("cut-header.elf", g.helloLong, (b) => b.subarray(0, 40)),
      ["truncated ELF header"],
    );
    refuses(
      variant("cut-phdrs.elf", g.helloLong, (b) => b.subarray(0, ph64(b, 1) + 8)),
      ["truncated ELF file", "program headers"],
    );
    refuses(
      variant("cut-data.elf", g.helloProtected, (b) => b.subarray(0, 0x1100)),
      ["truncated ELF file", "segment 0"],
    );
  });

  test("an ELF for another machine, or with class and machine mismatched", () => {
    refuses(
      variant("arm.elf", g.helloProtected, (b) => void b.writeUInt16LE(40, E32.machine)),
      ["ARM", "not x86"],
    );
    refuses(
      variant("aarch64.elf", g.helloLong, (b) => void b.writeUInt16LE(183, E64.machine)),
      ["AArch64"],
    );
    refuses(
      variant("x32.elf", g.helloProtected, (b) => void b.writeUInt16LE(62, E32.machine)),
      ["ELF32 file for x86-64"],
    );
    refuses(
      variant("elf64-i386.elf", g.helloLong, (b) => void b.writeUInt16LE(3, E64.machine)),
      ["ELF64 file for i386"],
    );
  });

  test("an unknown ELF class, big-endian data", () => {
    refuses(
      variant("class3.elf", g.helloLong, (b) => void (b[4] = 3)),
      ["unknown ELF class 3"],
    );
    refuses(
      variant("be.elf", g.helloLong, (b) => void (b[5] = 2)),
      ["big-endian"],
    );
  });

  test("a PIE/shared object, a dynamically linked executable", () => {
    refuses(
      variant("pie.elf", g.helloLong, (b) => void b.writeUInt16LE(3, 16)),
      ["ET_DYN"],
    );
    refuses(
      variant("interp.elf", g.helloLong, (b) => void b.writeUInt32LE(3, ph64(b, 1))),
      ["PT_INTERP"],
    );
  });

  test("no program headers, no PT_LOAD", () => {
    refuses(
      variant("nophdr.elf", g.helloLong, (b) => void b.writeUInt16LE(0, E64.phnum)),
      ["without program headers"],
    );
    refuses(
      variant("noload.elf", g.helloLong, (b) => {
        for (let i = 0; i < 2; i++) b.writeUInt32LE(4 /* PT_NOTE */, ph64(b, i));
      }),
      ["without a loadable segment"],
    );
  });

  test("p_filesz larger than p_memsz", () => {
    refuses(
      variant("filesz.elf", g.helloProtected, (b) => void b.writeUInt32LE(0x10, ph32(b, 0) + P32.memsz)),
      ["p_filesz", "larger than p_memsz"],
    );
  });

  test("p_paddr + p_memsz wrapping around (32 and 64 bits)", () => {
    refuses(
      variant("wrap32.elf", g.helloProtected, (b) => {
        b.writeUInt32LE(0xfffff000, ph32(b, 1) + P32.paddr);
      }),
      ["wraps around the 32-bit address space"],
    );
    refuses(
      variant("wrap64.elf", g.helloLong, (b) => {
        b.writeBigUInt64LE(0xfffffffffffff000n, ph64(b, 1) + P64.paddr);
      }),
      ["wraps around the 64-bit address space"],
    );
  });

  test("a segment outside guest RAM", () => {
    refuses(
      variant("high.elf", g.helloLong, (b) => void b.writeBigUInt64LE(0x3fff000n, ph64(b, 1) + P64.paddr)),
      ["segment 0x3fff000-", "outside guest RAM (64 MiB, --mem)"],
    );
    refuses(
      variant(
        "huge.elf",
        g.helloLong,
        (b) => void b.writeBigUInt64LE(0x1_0000_0000_0000n, ph64(b, 1) + P64.paddr),
      ),
      ["outside guest RAM"],
    );
    // The same image fits 64 MiB but not 2 MiB when placed at 3 MiB.
    const at3 = variant("at3m.bin", g.halt);
    refuses(at3, ["outside guest RAM (2 MiB, --mem)"], { memSize: 2 << 20, mode: "long", load: 3 << 20 });
  });

  test("a segment over vmtool's boot stack or boot data", () => {
    refuses(
      variant("on-stack.elf", g.helloProtected, (b) => void b.writeUInt32LE(0x88000, ph32(b, 1) + P32.paddr)),
      ["overlaps the boot stack", "reserved by vmtool"],
    );
    refuses(variant("on-bootdata.bin", g.helloReal), ["overlaps vmtool's boot data"], { load: 0x9ff00 });
  });

  test("overlapping segments", () => {
    refuses(
      variant("overlap.elf", g.helloLong, (b) => void b.writeBigUInt64LE(0x100800n, ph64(b, 1) + P64.paddr)),
      ["overlap"],
    );
  });

  test("an entry point outside the loaded image", () => {
    refuses(
      variant("entry.elf", g.helloLong, (b) => void b.writeBigUInt64LE(0x200000n, E64.entry)),
      ["entry point 0x200000 is outside the loaded image"],
    );
    refuses(g.helloReal, ["entry point 0x7000"], { entry: 0x7000 });
  });

  test("a real-mode image reaching above 1 MiB", () => {
    refuses(g.helloReal, ["real-mode image", "above 1 MiB"], { load: 0xfffc0 });
    refuses(g.helloReal, ["above 1 MiB"], { mode: "real", load: 0x100000 });
  });

  test("flat-binary options given for an ELF or a Multiboot kernel", () => {
    refuses(g.helloLong, ["--load applies to flat binaries only", "ELF64"], { load: 0x100000 });
    refuses(g.helloProtected, ["--entry, --mode apply to flat binaries only"], {
      entry: 0x100000,
      mode: "protected",
    });
    refuses(g.multiboot, ["--mode applies to flat binaries only", "Multiboot"], { mode: "protected" });
  });

  test("a bad --mode, a bad RAM size", () => {
    refuses(g.halt, ["--mode", "'bogus'"], { mode: "bogus" as "real" });
    refuses(g.halt, ["guest RAM size"], { memSize: 4096 });
  });
});

describe("bad Multiboot kernels", () => {
  const MB = 0x1badb002;
  /** A Multiboot header (with a right checksum unless told) at `at` in a copy of `src`. */
  const withHeader =
    (src: string | Uint8Array, at: number, flags: number, checksum?: number) => (b: Buffer) => {
      b.writeUInt32LE(MB, at);
      b.writeUInt32LE(flags >>> 0, at + 4);
      b.writeUInt32LE(checksum ?? -(MB + flags) >>> 0, at + 8);
    };
  const mbOffset = (b: Buffer) => {
    for (let o = 0; o < 8192; o += 4) if (b.readUInt32LE(o) === MB) return o;
    throw new Error("no header");
  };

  test("a bad checksum", () => {
    refuses(
      variant("mb-sum.elf", g.multiboot, (b) => void b.writeUInt32LE(0x12345678, mbOffset(b) + 8)),
      ["Multiboot header at offset 0x1000 has a bad checksum"],
    );
  });

  test("required flags it cannot honour: a video mode, unknown bits", () => {
    refuses(
      variant("mb-video.elf", g.multiboot, (b) => withHeader(g.multiboot, mbOffset(b), 0x7)(b)),
      ["video mode", "bit 2"],
    );
    refuses(
      variant("mb-unknown.elf", g.multiboot, (b) => withHeader(g.multiboot, mbOffset(b), 0x23)(b)),
      ["unknown features", "0x20"],
    );
  });

  test("optional flag bits (17-31) are ignored", () => {
    const f = variant("mb-optional.elf", g.multiboot, (b) =>
      withHeader(g.multiboot, mbOffset(b), 0x80000003)(b),
    );
    assert.equal(planLoad(f, { memSize: MEM }).format, "multiboot");
  });

  test("an ELF64 Multiboot kernel without the a.out kludge", () => {
    refuses(
      variant("mb64.elf", g.helloLong, (b) => withHeader(g.helloLong, 0x200, 0x3)(b)),
      ["Multiboot ELF kernel must be ELF32"],
    );
  });

  test("a non-ELF Multiboot kernel without the a.out kludge", () => {
    const flat = Buffer.alloc(64);
    refuses(
      variant("mb-flat.bin", flat, (b) => withHeader(flat, 0, 0x3)(b)),
      ["must be an ELF file"],
    );
  });

  test("a header cut short by the end of the file", () => {
    refuses(
      variant("mb-short.bin", g.multibootAout, (b) => b.subarray(0, 8)),
      ["cut short"],
    );
    refuses(
      variant("mb-short-aout.bin", g.multibootAout, (b) => b.subarray(0, 20)),
      ["a.out kludge", "cut short"],
    );
  });

  test("a.out kludge: truncated file, inconsistent addresses", () => {
    refuses(
      variant("aout-cut.bin", g.multibootAout, (b) => b.subarray(0, 100)),
      ["truncated file", "load_end_addr"],
    );
    refuses(
      variant("aout-hdr.bin", g.multibootAout, (b) => void b.writeUInt32LE(0x200000, 16)),
      ["header_addr 0x100000 is below load_addr 0x200000"],
    );
    refuses(
      variant("aout-bss.bin", g.multibootAout, (b) => void b.writeUInt32LE(0x100010, 24)),
      ["bss_end_addr", "below load_end_addr"],
    );
    refuses(
      variant("aout-entry.bin", g.multibootAout, (b) => void b.writeUInt32LE(0x300000, 28)),
      ["entry point 0x300000 is outside the loaded image"],
    );
  });
});
