// The machine description and the Multiboot information: their layouts checked against the SDK's C headers
// with gcc (offsetof/sizeof), the description read back by a host C program built from the SDK's own header
// and printer, and the memory map's invariants.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { LoadOptionError } from "../../src/loader/errors.js";
import { GuestMemory } from "../../src/memory/guest-memory.js";
import {
  BOOT_INFO_LAYOUT,
  BOOT_INFO_MAGIC,
  CMDLINE_MAX,
  MemUse,
  STANDARD_DEVICES,
  buildMemoryMap,
  encodeBootInfo,
  planLoad,
  writeBootInfo,
  writeMultibootInfo,
} from "../../src/loader/index.js";
import { MB_INFO_LAYOUT } from "../../src/loader/multiboot.js";
import { LAYOUT } from "../../src/vm/machine-layout.js";
import { guests } from "../helpers/guests.js";
import { ROOT } from "../helpers/paths.js";

const INCLUDE = join(ROOT, "guest", "include");
let dir: string;
before(() => (dir = mkdtempSync(join(tmpdir(), "vmtool-bootinfo-"))));
after(() => rmSync(dir, { recursive: true, force: true }));

function compileAndRun(name: string, source: string, extra: string[] = [], input?: Uint8Array): string {
  const c = join(dir, `${name}.c`);
  const exe = join(dir, name);
  writeFileSync(c, source);
  execFileSync("gcc", ["-std=gnu11", "-Wall", "-Werror", `-I${INCLUDE}`, "-o", exe, c, ...extra]);
  return execFileSync(exe, { input, encoding: "utf8" });
}

test("struct vmtool_boot_info, vmtool_mem_entry, vmtool_dev_entry match the C header (gcc offsetof/sizeof)", () => {
  const lines = [
    "#include <stdio.h>",
    "#include <stddef.h>",
    "#include <vmtool/boot_info.h>",
    "int main(void) {",
  ];
  const expected: string[] = [];
  for (const [struct, l] of Object.entries(BOOT_INFO_LAYOUT)) {
    lines.push(`printf("${struct} size %zu\\n", sizeof(struct ${struct}));`);
    expected.push(`${struct} size ${l.size}`);
    for (const [field, off] of Object.entries(l.fields)) {
      lines.push(`printf("${struct}.${field} %zu\\n", offsetof(struct ${struct}, ${field}));`);
      expected.push(`${struct}.${field} ${off}`);
    }
  }
  lines.push(`printf("magic %x\\n", VMTOOL_BOOT_INFO_MAGIC);`);
  expected.push(`magic ${BOOT_INFO_MAGIC.toString(16)}`);
  lines.push("return 0; }");
  assert.deepEqual(compileAndRun("layout", lines.join("\n")).trim().split("\n"), expected);
});

test("struct multiboot_info and multiboot_mmap_entry match the C header", () => {
  const lines = [
    "#include <stdio.h>",
    "#include <stddef.h>",
    "#include <vmtool/multiboot.h>",
    "int main(void) {",
  ];
  const expected: string[] = [];
  for (const [field, off] of Object.entries(MB_INFO_LAYOUT.fields)) {
    lines.push(`printf("${field} %zu\\n", offsetof(struct multiboot_info, ${field}));`);
    expected.push(`${field} ${off}`);
  }
  lines.push(`printf("info %zu\\n", sizeof(struct multiboot_info));`);
  expected.push(`info ${MB_INFO_LAYOUT.INFO_SIZE}`);
  lines.push(`printf("mmap %zu\\n", sizeof(struct multiboot_mmap_entry));`);
  expected.push(`mmap ${MB_INFO_LAYOUT.MMAP_ENTRY}`);
  lines.push("return 0; }");
  assert.deepEqual(compileAndRun("mblayout", lines.join("\n")).trim().split("\n"), expected);
});

test("the SDK's own printer, compiled for the host, reads back what the TS writer wrote", () => {
  const plan = planLoad(guests().helloLong, { memSize: 32 << 20 });
  const cmdline = "console=uart quiet é";
  const { bytes, memoryMap } = encodeBootInfo({ memSize: 32 << 20, cpus: 2, cmdline, plan });
  // Host main: read the description from stdin into an aligned buffer and print it with the guest printer.
  const main = [
    "#include <unistd.h>",
    "#include <vmtool/boot_info.h>",
    "static unsigned long long buf[2048];",
    "int main(void) {",
    "  char *p = (char *)buf; ssize_t n; size_t got = 0;",
    "  while ((n = read(0, p + got, sizeof buf - got)) > 0) got += n;",
    "  vmtool_print_boot_info((const struct vmtool_boot_info *)buf);",
    "  return 0; }",
  ].join("\n");
  const out = compileAndRun("reader", main, [join(ROOT, "guest", "lib", "boot_info_print.c")], bytes);
  const lines = out.trim().split("\n");
  assert.equal(lines[0], `boot info: version 1, ${bytes.length} bytes, 2 cpu(s), 32 MiB RAM`);
  const mem = lines.filter((l) => l.startsWith("mem "));
  assert.equal(mem.length, memoryMap.length);
  const useName = ["free", "kernel", "init", "reserved"];
  memoryMap.forEach((e, i) => {
    const [, range, use] = mem[i].split(/\s+/);
    const [lo, hi] = range.split("-").map((x) => parseInt(x, 16));
    assert.deepEqual([lo, hi, use], [e.base, e.base + e.size - 1, useName[e.use]]);
  });
  const dev = lines.filter((l) => l.startsWith("dev "));
  assert.deepEqual(dev, [
    "dev debugcon debug-console pio  0xe9+1",
    "dev exit     exit-port     pio  0xf4+1",
    "dev com1     uart-16550    pio  0x3f8+8 irq 4",
  ]);
  assert.equal(lines.at(-1), `cmdline: '${cmdline}'`);
});

test("the memory map covers RAM exactly once: image pages KERNEL, boot stack and data INIT, the rest FREE", () => {
  const memSize = 16 << 20;
  const plan = planLoad(guests().helloProtected, { memSize });
  const map = buildMemoryMap(memSize, plan);
  const ram = map.filter((e) => e.use !== MemUse.RESERVED);
  let at = 0;
  for (const e of ram) {
    assert.equal(e.base, at, "no gap or overlap");
    at += e.size;
  }
  assert.equal(at, memSize);
  for (const s of plan.segments) {
    const k = ram.find((e) => e.base <= s.gpa && s.gpa + s.memSize <= e.base + e.size);
    assert.equal(k?.use, MemUse.KERNEL);
  }
  const init = ram.filter((e) => e.use === MemUse.INIT);
  assert.deepEqual(
    init.map((e) => [e.base, e.base + e.size]),
    [
      [LAYOUT.STACK_BASE, LAYOUT.STACK_TOP],
      [LAYOUT.BOOT_DATA_BASE, LAYOUT.BOOT_DATA_END],
    ],
  );
  const reserved = map.filter((e) => e.use === MemUse.RESERVED);
  assert.ok(reserved.every((e) => e.base >= memSize));
  assert.ok(reserved.some((e) => e.base === LAYOUT.MMIO_BASE));
  // Neighbours of the same use are merged.
  for (let i = 1; i < ram.length; i++)
    assert.notEqual(ram[i].use === ram[i - 1].use && ram[i].what === ram[i - 1].what, true);
});

test("writeBootInfo places the description at LAYOUT.BOOT_INFO and returns that address", () => {
  const ram = new Uint8Array(2 << 20).fill(0xee);
  const mem = new GuestMemory([{ gpa: 0, bytes: ram }]);
  const addr = writeBootInfo(mem, { memSize: ram.length, cpus: 1, cmdline: "x=1" });
  assert.equal(addr, LAYOUT.BOOT_INFO);
  assert.equal(mem.readU32(addr), BOOT_INFO_MAGIC);
  const total = mem.readU32(addr + 8);
  const cmdOff = mem.readU32(addr + 44);
  assert.equal(new TextDecoder().decode(mem.read(addr + cmdOff, 4)), "x=1\0");
  assert.equal(mem.readU8(addr + total), 0, "the rest of the area is cleared");
  assert.equal(mem.readU32(addr + 32), STANDARD_DEVICES.length);
});

test("a command line too long or with a NUL is refused with one line", () => {
  for (const cmdline of ["a".repeat(CMDLINE_MAX + 1), "a\0b"]) {
    assert.throws(
      () => encodeBootInfo({ memSize: 2 << 20, cpus: 1, cmdline }),
      (e: unknown) => e instanceof LoadOptionError && e.message.startsWith("--cmdline:"),
    );
  }
  assert.equal(
    encodeBootInfo({ memSize: 2 << 20, cpus: 1, cmdline: "a".repeat(CMDLINE_MAX) }).bytes.length > 4096,
    true,
  );
});

test("Multiboot information: flags, memory sizes, command line, loader name, memory map types", () => {
  const memSize = 8 << 20;
  const ram = new Uint8Array(memSize);
  const mem = new GuestMemory([{ gpa: 0, bytes: ram }]);
  const plan = planLoad(guests().multiboot, { memSize });
  const mbi = writeMultibootInfo(mem, { memSize, cmdline: "root=/dev/vda", plan });
  assert.equal(mbi, LAYOUT.MULTIBOOT_INFO);
  const f = MB_INFO_LAYOUT.fields;
  assert.equal(mem.readU32(mbi + f.flags), (1 << 0) | (1 << 2) | (1 << 6) | (1 << 9));
  assert.equal(mem.readU32(mbi + f.mem_lower), 640);
  assert.equal(mem.readU32(mbi + f.mem_upper), (memSize - (1 << 20)) / 1024);
  const str = (a: number) => {
    let s = "";
    for (let c = mem.readU8(a); c !== 0; c = mem.readU8(++a)) s += String.fromCharCode(c);
    return s;
  };
  assert.equal(str(mem.readU32(mbi + f.cmdline)), "root=/dev/vda");
  assert.equal(str(mem.readU32(mbi + f.boot_loader_name)), "vmtool");
  const map = buildMemoryMap(memSize, plan);
  const len = mem.readU32(mbi + f.mmap_length);
  const addr = mem.readU32(mbi + f.mmap_addr);
  const entries: { base: bigint; len: bigint; type: number }[] = [];
  for (let p = addr; p < addr + len; p += mem.readU32(p) + 4)
    entries.push({ base: mem.readU64(p + 4), len: mem.readU64(p + 12), type: mem.readU32(p + 20) });
  assert.deepEqual(
    entries,
    map.map((e) => ({ base: BigInt(e.base), len: BigInt(e.size), type: e.use === MemUse.RESERVED ? 2 : 1 })),
  );
});
