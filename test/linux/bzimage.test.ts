// The bzImage loader on Debian's real kernel file and on crafted variants of it (truncated, patched header
// fields, foreign files), the zero page it builds, and `vmtool run --kernel`'s refusals: each bad input is one
// line and exit 2 before any guest runs. No guest boots here (test/linux/boot.test.ts boots).
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { InputError } from "../../src/errors.js";
import {
  CMDLINE_ADDR,
  E820,
  ZERO_PAGE,
  planBzImage,
  planLinux,
  parseSetupHeader,
  type LinuxBootOptions,
} from "../../src/loader/linux/index.js";
import { CLI } from "../helpers/paths.js";
import { DEMO_GUEST } from "../../src/cli/commands/run.js";
import { debianKernel, runCmd } from "./helpers.js";

const MiB = 1 << 20;
let dir: string;
let kernelPath: string;
let kernel: Buffer;
before(() => {
  kernelPath = debianKernel();
  kernel = readFileSync(kernelPath);
  dir = mkdtempSync(join(tmpdir(), "vmtool-bzimage-"));
});
after(() => rmSync(dir, { recursive: true, force: true }));

function opts(o: Partial<LinuxBootOptions> = {}): LinuxBootOptions {
  return { memSize: 256 * MiB, cmdline: "console=ttyS0", ...o };
}

/** A copy of the kernel changed in place by `patch`, or what `patch` returns. */
function variant(patch: (b: Buffer) => Buffer | undefined): Buffer {
  const b = Buffer.from(kernel);
  return patch(b) ?? b;
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

describe("Debian's bzImage", () => {
  test("header: protocol 2.12+, 64-bit entry, relocatable, and the sizes the kernel states", () => {
    const h = parseSetupHeader(kernel, "k");
    assert.ok(h.version >= 0x20c);
    assert.equal(h.xloadflags & 1, 1);
    assert.equal(h.relocatable, true);
    assert.equal(h.prefAddress, 0x100_0000);
    assert.equal(h.kernelAlignment, 0x20_0000);
    assert.equal(h.cmdlineSize, 2047);
    assert.ok(h.initSize > h.kernelBytes);
    assert.equal(h.setupBytes + h.kernelBytes <= kernel.length, true);
    assert.equal(h.raw.length, 0x202 + kernel[0x201] - 0x1f1);
  });

  test("plan: kernel at pref_address, 64-bit entry at +0x200, initrd page-aligned at the top of RAM", () => {
    const initrd = new Uint8Array(1_000_003).fill(7);
    const p = planBzImage(kernel, "k", opts({ initrd: { bytes: initrd, name: "i" } }));
    assert.equal(p.loadAddr, 0x100_0000);
    assert.equal(p.entry, 0x100_0200);
    const [k, i] = p.segments;
    assert.equal(k.gpa, 0x100_0000);
    assert.equal(k.memSize, p.header.initSize);
    assert.deepEqual(
      Buffer.from(k.data),
      kernel.subarray(p.header.setupBytes, p.header.setupBytes + p.header.kernelBytes),
    );
    assert.equal(i.gpa % 4096, 0);
    assert.ok(i.gpa + initrd.length <= 256 * MiB && i.gpa + initrd.length > 256 * MiB - 4096);
    assert.ok(i.gpa >= k.gpa + k.memSize);
    assert.match(p.kernelVersion ?? "", /^6\.\d+\.\d+/);
  });

  test("zero page: the setup header copied, type_of_loader 0xFF, command line, initrd and e820 filled in", () => {
    const initrd = new Uint8Array(8192);
    const p = planBzImage(kernel, "k", opts({ initrd: { bytes: initrd, name: "i" } }));
    const zp = Buffer.from(p.zeroPage);
    assert.equal(zp.length, 4096);
    const changed = new Set<number>();
    for (const [off, len] of [
      [0x1fa, 2],
      [0x210, 1],
      [0x218, 8],
      [0x228, 4],
    ] as const)
      for (let j = 0; j < len; j++) changed.add(off + j);
    for (let o = 0x1f1; o < 0x202 + kernel[0x201]; o++)
      if (!changed.has(o)) assert.equal(zp[o], kernel[o], `setup header byte ${o.toString(16)}`);
    assert.equal(zp.readUInt32LE(0x202), 0x53726448); // HdrS
    assert.equal(zp[0x210], 0xff);
    assert.equal(zp.readUInt32LE(0x228), CMDLINE_ADDR);
    assert.equal(zp.readUInt32LE(0x218), p.initrd?.gpa);
    assert.equal(zp.readUInt32LE(0x21c), 8192);
    const n = zp[0x1e8];
    const e820 = Array.from({ length: n }, (_, j) => ({
      addr: Number(zp.readBigUInt64LE(0x2d0 + 20 * j)),
      size: Number(zp.readBigUInt64LE(0x2d8 + 20 * j)),
      type: zp.readUInt32LE(0x2e0 + 20 * j),
    }));
    assert.deepEqual(e820, p.e820);
    // RAM from 0 and from 1 MiB to the end; the zero page, command line and vmtool's boot data reserved.
    const ram = e820.filter((e) => e.type === E820.RAM);
    assert.deepEqual(ram.at(-1), { addr: MiB, size: 255 * MiB, type: E820.RAM });
    const inRam = (a: number) => ram.some((e) => a >= e.addr && a < e.addr + e.size);
    assert.equal(inRam(ZERO_PAGE), false);
    assert.equal(inRam(CMDLINE_ADDR), false);
    assert.equal(inRam(p.loadAddr) && inRam(p.loadAddr + p.header.initSize - 1), true);
    for (let j = 1; j < e820.length; j++) assert.ok(e820[j].addr >= e820[j - 1].addr + e820[j - 1].size);
  });

  test("a relocatable kernel that does not fit at pref_address goes to the lowest aligned address that fits", () => {
    const p = planBzImage(kernel, "k", opts({ memSize: 70 * MiB }));
    assert.equal(p.loadAddr, 0x20_0000);
    assert.ok(p.loadAddr + p.header.initSize <= 70 * MiB);
  });

  test("a command line of exactly cmdline_size bytes is taken; one byte more is refused", () => {
    planBzImage(kernel, "k", opts({ cmdline: "x".repeat(2047) }));
    refuses(
      () => planBzImage(kernel, "k", opts({ cmdline: "x".repeat(2048) })),
      "2048 bytes",
      "at most 2047 (cmdline_size)",
    );
    refuses(() => planBzImage(kernel, "k", opts({ cmdline: "a\0b" })), "NUL");
  });
});

describe("bad kernels and initrds: one line each", () => {
  test("too big for --mem: says how much RAM would do", () => {
    refuses(() => planBzImage(kernel, "k", opts({ memSize: 64 * MiB })), "init_size", "--mem 80M or more");
  });

  test("an initrd that does not fit between the kernel and the top of RAM", () => {
    const initrd = { bytes: new Uint8Array(20 * MiB), name: "big.cpio" };
    refuses(
      () => planBzImage(kernel, "k", opts({ memSize: 96 * MiB, initrd })),
      "big.cpio",
      "does not fit",
      /--mem \d+M or more/,
    );
    refuses(
      () => planBzImage(kernel, "k", opts({ initrd: { bytes: new Uint8Array(0), name: "e" } })),
      "empty initrd",
    );
  });

  test("an initrd file larger than guest RAM is refused by its size, before it is read", () => {
    const p = join(dir, "huge.img");
    writeFileSync(p, "");
    truncateSync(p, 300 * MiB);
    refuses(
      () => planLinux(kernelPath, { memSize: 256 * MiB, cmdline: "", initrdPath: p }),
      "huge.img",
      "larger than guest RAM",
    );
  });

  test("truncated anywhere: inside the boot sector, the setup header, the setup code or the kernel", () => {
    // The image ends where its header says (setup code + syssize): what follows (a signature) is not needed.
    const h = parseSetupHeader(kernel, "k");
    const end = h.setupBytes + h.kernelBytes;
    planBzImage(kernel.subarray(0, end), "k", opts());
    for (const len of [0x100, 0x204, 0x240, 0x1000, Math.floor(kernel.length / 2), end - 1])
      refuses(
        () =>
          planBzImage(
            variant((b) => b.subarray(0, len)),
            "k",
            opts(),
          ),
        len < 0x206 ? /too short|not a Linux bzImage/ : /truncated bzImage/,
      );
  });

  test("patched header fields: old protocol, no 64-bit entry, a zImage, a bad alignment, init_size too small", () => {
    refuses(
      () =>
        planBzImage(
          variant((b) => void b.writeUInt16LE(0x20b, 0x206)),
          "k",
          opts(),
        ),
      "boot protocol 2.11",
      "2.12",
    );
    refuses(
      () =>
        planBzImage(
          variant((b) => void b.writeUInt16LE(b.readUInt16LE(0x236) & ~1, 0x236)),
          "k",
          opts(),
        ),
      "XLF_KERNEL_64",
    );
    refuses(
      () =>
        planBzImage(
          variant((b) => void (b[0x211] &= ~1)),
          "k",
          opts(),
        ),
      "zImage",
    );
    refuses(
      () =>
        planBzImage(
          variant((b) => void b.writeUInt32LE(0x30_0000, 0x230)),
          "k",
          opts(),
        ),
      "not a power of two",
    );
    refuses(
      () =>
        planBzImage(
          variant((b) => void b.writeUInt32LE(0x1000, 0x260)),
          "k",
          opts(),
        ),
      "init_size",
    );
    refuses(
      () =>
        planBzImage(
          variant((b) => void b.writeUInt32LE(0, 0x1f4)),
          "k",
          opts(),
        ),
      "syssize 0",
    );
  });

  test("foreign files: text, an ELF guest, a boot sector without HdrS", () => {
    refuses(
      () => planBzImage(Buffer.from("#!/bin/sh\n".repeat(100)), "script", opts()),
      "not a Linux bzImage",
    );
    refuses(() => planLinux(DEMO_GUEST, { memSize: 256 * MiB, cmdline: "" }), "an ELF file", "bzImage");
    const mbr = Buffer.alloc(4096);
    mbr[0x1fe] = 0x55;
    mbr[0x1ff] = 0xaa;
    refuses(() => planBzImage(mbr, "mbr", opts()), "not a Linux bzImage");
  });
});

describe("vmtool run --kernel refuses before any guest runs (one line, exit 2)", () => {
  function refusedByCli(args: string[], ...parts: (string | RegExp)[]): void {
    const r = runCmd(process.execPath, [CLI, "run", ...args], 30_000);
    const all = `${r.stdout}\n${r.stderr}`;
    assert.equal(r.status, 2, all);
    assert.equal(r.stdout, "", "no guest output");
    const lines = r.stderr.trim().split("\n");
    assert.equal(lines.length, 1, `one line:\n${r.stderr}`);
    assert.doesNotMatch(
      r.stderr,
      /vmtool: Linux/,
      "the summary line is printed only once the guest is set to run",
    );
    for (const p of parts)
      if (typeof p === "string") assert.ok(r.stderr.includes(p), `'${r.stderr}' lacks '${p}'`);
      else assert.match(r.stderr, p);
  }

  test("each bad input", () => {
    const cut = join(dir, "cut.bzImage");
    writeFileSync(cut, kernel.subarray(0, 100_000));
    const text = join(dir, "text");
    writeFileSync(text, "not a kernel\n");
    const initrd = join(dir, "big-initrd");
    writeFileSync(initrd, Buffer.alloc(40 * MiB));
    refusedByCli(["--kernel", cut], "truncated bzImage");
    refusedByCli(["--kernel", text], /too short for a Linux bzImage/);
    refusedByCli(["--kernel", kernelPath, "--mem", "64M"], "--mem 80M or more");
    refusedByCli(["--kernel", kernelPath, "--mem", "100M", "--initrd", initrd], "does not fit");
    refusedByCli(["--kernel", kernelPath, "--cmdline", "y".repeat(2040)], "cmdline_size");
    refusedByCli(["--kernel", join(dir, "missing")], "missing");
    refusedByCli(["--initrd", initrd], "--initrd needs --kernel");
    refusedByCli(["--kernel", kernelPath, DEMO_GUEST], "give one of them");
    refusedByCli(["--kernel", kernelPath, "--mode", "long"], "--mode");
  });
});
