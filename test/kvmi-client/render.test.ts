// The pieces `vmtool introspect` prints with, against independent oracles: ELF symbols against binutils' nm
// (an ELF64 executable and an ELF32 object gcc builds here), the hexdump against hexdump -C, and decoded
// segments, walks and event lines against hand-written expectations.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ROOT } from "../helpers/paths.js";
import { readElfSymbols } from "../../src/cli/introspect/elf-symbols.js";
import { eventLine, hexdump, segmentKind, walkText } from "../../src/cli/introspect/render.js";
import type { KvmiEvent } from "../../src/kvmi-client/index.js";
import type { Regs, Segment, Sregs } from "../../src/vm/vcpu-state.js";

/** nm's defined symbols: name -> addresses. */
function nmSymbols(file: string): Map<string, bigint[]> {
  const out = new Map<string, bigint[]>();
  for (const line of execFileSync("nm", ["--defined-only", file], { encoding: "utf8" }).trim().split("\n")) {
    const [addr, , name] = line.split(/\s+/);
    out.set(name, [...(out.get(name) ?? []), BigInt(`0x${addr}`)]);
  }
  return out;
}

test("ELF symbols match nm's, for an ELF64 executable and an ELF32 object", () => {
  const dir = mkdtempSync(join(tmpdir(), "vmtool-elf-"));
  try {
    writeFileSync(
      join(dir, "t.c"),
      "int foo(void){return 1;} int bar; static int baz(void){return 2;} int q(void){return baz();}\n",
    );
    execFileSync("gcc", ["-m32", "-c", join(dir, "t.c"), "-o", join(dir, "t32.o")]);
    for (const file of [join(ROOT, "guest", "prebuilt", "demo.elf"), join(dir, "t32.o")]) {
      const syms = readElfSymbols(file);
      const nm = nmSymbols(file);
      assert.ok(nm.size > 3, `${file}: nm lists symbols`);
      for (const [name, addrs] of nm)
        if (addrs.length === 1) assert.equal(syms.resolve(name), addrs[0], `${file}: ${name}`);
    }
    const demo = readElfSymbols(join(ROOT, "guest", "prebuilt", "demo.elf"));
    assert.equal(
      demo.resolve("main+0x10"),
      nmSymbols(join(ROOT, "guest", "prebuilt", "demo.elf")).get("main")![0] + 0x10n,
    );
    assert.equal(demo.resolve("main+16"), demo.resolve("main+0x10"));
    // A truncated copy is refused with one line naming the file.
    const cut = join(dir, "cut.elf");
    writeFileSync(cut, readFileSync(join(ROOT, "guest", "prebuilt", "demo.elf")).subarray(0, 200));
    assert.throws(() => readElfSymbols(cut), /cut\.elf: truncated: the file ends inside the section headers/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("the hexdump has hexdump -C's bytes and characters, with 64-bit guest addresses", () => {
  const dir = mkdtempSync(join(tmpdir(), "vmtool-hex-"));
  try {
    const bytes = Buffer.from("Hello, KVMI!\x00\x01\x02\x7f\xffsecond line of bytes", "latin1");
    writeFileSync(join(dir, "b"), bytes);
    const theirs = execFileSync("hexdump", ["-C", join(dir, "b")], { encoding: "utf8" })
      .split("\n")
      .filter((l) => l.includes("|"))
      .map((l) => l.slice(10));
    const ours = hexdump(0xffff800000100000n, bytes).trimEnd().split("\n");
    assert.equal(ours.length, theirs.length);
    ours.forEach((l, i) => {
      assert.equal(l.slice(0, 16), (0xffff800000100000n + BigInt(16 * i)).toString(16));
      assert.equal(l.slice(18).trimEnd(), theirs[i].trimEnd());
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

const seg = (o: Partial<Segment>): Segment => ({
  base: 0n,
  limit: 0xffffffff,
  selector: 0,
  type: 0,
  present: 1,
  dpl: 0,
  db: 0,
  s: 1,
  l: 0,
  g: 1,
  avl: 0,
  unusable: 0,
  ...o,
});

test("segments' hidden attributes in words", () => {
  assert.equal(
    segmentKind(seg({ type: 0xb, l: 1 })),
    "code, 64-bit, execute/read, accessed, DPL 0, 4 KiB granularity",
  );
  assert.equal(
    segmentKind(seg({ type: 0x3, db: 1, dpl: 3 })),
    "data, 32-bit, read/write, accessed, DPL 3, 4 KiB granularity",
  );
  assert.equal(segmentKind(seg({ type: 0x8, g: 0 })), "code, 16-bit, execute-only, DPL 0");
  assert.equal(segmentKind(seg({ type: 0xb, s: 0, g: 0 })), "TSS (busy), DPL 0");
  assert.equal(segmentKind(seg({ type: 0x2, s: 0, g: 0, present: 0 })), "LDT, not present, DPL 0");
  assert.equal(segmentKind(seg({ unusable: 1 })), "unusable");
});

test("a page walk, level by level, with each entry's flags", () => {
  const text = walkText(0x400123n, 0, {
    mode: 3,
    gpa: 0x200123n,
    stopReason: 0,
    levels: [
      { kind: 4, entryGpa: 0x9000n, entryValue: 0xa003n },
      { kind: 3, entryGpa: 0xa000n, entryValue: 0x8000000000200083n },
    ],
  });
  assert.equal(
    text,
    "0x400123 on vCPU 0: paging 4-level\n" +
      "  PML4E  at 0x00009000 = 0x000000000000a003 [P RW]\n" +
      "  PDPTE  at 0x0000a000 = 0x8000000000200083 [P RW PS NX]\n" +
      "  -> 0x200123\n",
  );
  assert.match(
    walkText(0x1000n, 1, { mode: 1, gpa: undefined, stopReason: 1, levels: [] }),
    /no translation: entry not present/,
  );
});

test("an event line names the vCPU, the event, where, and the answer", () => {
  const regs = { rip: 0x100a00n } as Regs;
  const ev = {
    id: 4,
    kind: "breakpoint",
    seq: 1,
    vcpu: 2,
    mode: 8,
    view: 0,
    regs,
    sregs: {} as Sregs,
    msrs: {},
    gpa: 0x100a00n,
    insnLen: 1,
  } as unknown as KvmiEvent;
  assert.equal(
    eventLine(ev, { label: "main", reply: "stepped over" }),
    "vCPU 2 breakpoint main rip=0x100a00 gpa=0x100a00 -> stepped over",
  );
  const msr = {
    ...ev,
    id: 2,
    kind: "msr",
    msr: 0xc0000081,
    oldValue: 0n,
    newValue: 0x23n,
  } as unknown as KvmiEvent;
  assert.equal(
    eventLine(msr, { reply: "continue" }),
    "vCPU 2 msr rip=0x100a00 msr=0xc0000081 name=STAR old=0x0 new=0x23 -> continue",
  );
});
