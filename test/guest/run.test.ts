// Every SDK example run end to end through `vmtool run` on real KVM: output and exit status checked; the UART
// echo driven through standard input; every kind of bad image refused by the CLI with exit 2, one line on
// stderr and nothing on stdout, before any guest starts.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { buildMemoryMap, encodeBootInfo, planLoad } from "../../src/loader/index.js";
import { guests } from "../helpers/guests.js";
import { CLI } from "../helpers/paths.js";

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

function vmtool(args: string[], input = ""): Run {
  const r = spawnSync(process.execPath, [CLI, "run", ...args], { input, encoding: "latin1", timeout: 60_000 });
  if (r.error) throw r.error;
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

const MEM = 64 << 20;
const hex8 = (n: number) => n.toString(16).padStart(8, "0");
const hex16 = (n: number) => n.toString(16).padStart(16, "0");
const USE = ["free", "kernel", "init", "reserved"];

let g: ReturnType<typeof guests>;
let dir: string;
before(() => {
  g = guests();
  dir = mkdtempSync(join(tmpdir(), "vmtool-guest-run-"));
});
after(() => rmSync(dir, { recursive: true, force: true }));

describe("examples", () => {
  test("hello-real: real mode, flat binary at 0x7C00", () => {
    const r = vmtool([g.helloReal]);
    assert.equal(r.stdout, "hello from real mode (16-bit)\ncr0.pe=0\n");
    assert.equal(r.status, 0, r.stderr);
  });

  test("hello-protected: ELF32 in protected mode, machine description in ESI", () => {
    const r = vmtool(["--cmdline", "a b", g.helloProtected]);
    const map = buildMemoryMap(MEM, planLoad(g.helloProtected, { memSize: MEM }));
    const lines = r.stdout.split("\n");
    assert.equal(lines[0], "hello from protected mode (32-bit)");
    assert.match(lines[1], /^cr0\.pe=1 cr0\.pg=0 cs=0x[0-9a-f]+$/);
    assert.equal(lines[2], `boot info at 0x90000: ${map.length} memory entries, 3 devices, cmdline 'a b'`);
    assert.deepEqual(lines.slice(3), [""]);
    assert.equal(r.status, 0, r.stderr);
  });

  test("hello-long: ELF64 in long mode prints the whole machine description from RSI", () => {
    const mem = 32 << 20;
    const cmdline = "console=com1 x='y'";
    const r = vmtool(["--mem", "32M", "--cmdline", cmdline, g.helloLong]);
    const plan = planLoad(g.helloLong, { memSize: mem });
    const { bytes, memoryMap } = encodeBootInfo({ memSize: mem, cpus: 1, cmdline, plan });
    const expected = [
      "hello from long mode (64-bit)",
      "cr0.pe=1 cr0.pg=1 pointer size 8",
      "boot info at 0x90000",
      `boot info: version 1, ${bytes.length} bytes, 1 cpu(s), 32 MiB RAM`,
      ...memoryMap.map((e) => `mem ${hex8(e.base)}-${hex8(e.base + e.size - 1)} ${USE[e.use]}`),
      "dev debugcon debug-console pio  0xe9+1",
      "dev exit     exit-port     pio  0xf4+1",
      "dev com1     uart-16550    pio  0x3f8+8 irq 4",
      `cmdline: '${cmdline}'`,
    ];
    assert.deepEqual(r.stdout.split("\n").slice(0, -1), expected);
    assert.equal(r.status, 0, r.stderr);
  });

  test("multiboot: EAX magic, EBX info with loader name, command line, memory sizes and map", () => {
    const mem = 32 << 20;
    const r = vmtool(["--mem", "32M", "--cmdline", "root=/dev/vda quiet", g.multiboot]);
    const map = buildMemoryMap(mem, planLoad(g.multiboot, { memSize: mem }));
    const expected = [
      "multiboot: magic ok, info at 0x95000, flags 0x245",
      "boot loader: vmtool",
      "cmdline: 'root=/dev/vda quiet'",
      `mem_lower 640 KiB, mem_upper ${(mem >> 10) - 1024} KiB`,
      ...map.map((e) => `mmap ${hex16(e.base)}-${hex16(e.base + e.size - 1)} type ${USE[e.use] === "reserved" ? 2 : 1}`),
    ];
    assert.deepEqual(r.stdout.split("\n").slice(0, -1), expected);
    assert.equal(r.status, 0, r.stderr);
  });

  test("multiboot-aout: the a.out kludge loads the flat image and zeroes its .bss", () => {
    const r = vmtool([g.multibootAout]);
    assert.equal(r.stdout, "multiboot a.out kludge: magic ok, bss zeroed\n");
    assert.equal(r.status, 0, r.stderr);
  });

  test("serial-echo: interrupt-driven UART echo fed from standard input, EOT ends with status 1", () => {
    const r = vmtool([g.serialEcho], "hello, uart\x04");
    const m = /^serial-echo: ready \(EOT ends\)\nhello, uart\nserial-echo: 11 bytes echoed, (\d+) interrupts\n$/.exec(
      r.stdout,
    );
    assert.ok(m, `unexpected output: ${JSON.stringify(r.stdout)}`);
    assert.ok(Number(m[1]) >= 1, "echoed through at least one interrupt");
    assert.equal(r.status, 1, r.stderr); // exit port value 0 -> (0 << 1) | 1
  });

  test("pit-ticks: --pit adds the in-kernel i8254 (described, counting, IRQ 0); without it ports 0x40-0x43 are nobody's", () => {
    const r = vmtool(["--pit", g.pitTicks]);
    assert.equal(
      r.stdout,
      "pit-ticks: PIT at port 0x40, irq 0\n" +
        "pit-ticks: counter counts (divisor 1193)\n" +
        "pit-ticks: 10 timer interrupts on IRQ 0\n",
    );
    assert.equal(r.status, 0, r.stderr);
    const none = vmtool([g.pitTicks]);
    assert.equal(none.stdout, "pit-ticks: no PIT in the machine description; port 0x40 reads 0xff\n");
    assert.equal(none.status, 3, none.stderr); // main returned 1: exit port 1 -> (1 << 1) | 1
  });

  test("halt: cli; hlt ends with status 0 in real, protected and long mode", () => {
    for (const mode of ["real", "protected", "long"]) {
      const r = vmtool(["--mode", mode, g.halt]);
      assert.deepEqual([r.status, r.stdout], [0, ""], `${mode}: ${r.stderr}`);
    }
  });

  test("triple-fault: status 4 with a register dump", () => {
    const r = vmtool([g.tripleFault]);
    assert.equal(r.stdout, "!");
    assert.equal(r.status, 4);
    assert.match(r.stderr, /triple fault/);
    assert.match(r.stderr, /rip=/);
  });

  test("exits-200k: 200,000 OUTs to the debug console, as ELF64 and as a flat long-mode binary", () => {
    for (const args of [[g.exits200k], ["--mode", "long", g.exits200kFlat]]) {
      const r = vmtool(args);
      assert.equal(r.status, 0, r.stderr);
      assert.equal(r.stdout, ".".repeat(199_999) + "\n");
    }
  });

  test("the built-in demo guest (no FILE) runs from the prebuilt binary and ends with status 0", () => {
    const r = vmtool(["--cmdline", "hello demo"]);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /^Hello from vmtool's demo guest/);
    assert.match(r.stdout, /\ncmdline: 'hello demo'\n/);
    assert.match(r.stdout, /\[uart\] this line went through the 16550A UART/);
    assert.match(r.stdout, /UART scratch register: wrote 0x5a, read back 0x5a/);
    assert.match(r.stdout, /read of unclaimed port 0x100: 0xff /);
    assert.match(r.stdout, /read of unclaimed address 0xd0000000: 0xffffffff /);
  });
});

describe("bad images through the CLI: exit 2, one line, nothing on stdout", () => {
  const cases: { name: string; make: () => string[]; says: RegExp }[] = [
    { name: "missing file", make: () => [join(dir, "missing.elf")], says: /no such file/ },
    {
      name: "directory",
      make: () => {
        mkdirSync(join(dir, "d"), { recursive: true });
        return [join(dir, "d")];
      },
      says: /is a directory/,
    },
    { name: "empty file", make: () => [write("empty", Buffer.alloc(0))], says: /empty file/ },
    {
      name: "truncated ELF",
      make: () => [write("cut.elf", readFileSync(g.helloLong).subarray(0, 0x1100))],
      says: /truncated ELF file/,
    },
    { name: "wrong machine", make: () => [patch("arm.elf", g.helloProtected, (b) => b.writeUInt16LE(40, 18))], says: /ARM/ },
    { name: "big-endian", make: () => [patch("be.elf", g.helloLong, (b) => (b[5] = 2))], says: /big-endian/ },
    {
      name: "no PT_LOAD",
      make: () => [
        patch("noload.elf", g.helloLong, (b) => {
          const phoff = Number(b.readBigUInt64LE(32));
          for (let i = 0; i < b.readUInt16LE(56); i++) b.writeUInt32LE(4, phoff + i * 56);
        }),
      ],
      says: /without a loadable segment/,
    },
    { name: "segment outside RAM", make: () => ["--mem", "2M", "--mode", "long", "--load", "0x200000", g.halt], says: /outside guest RAM/ },
    { name: "segment over boot data", make: () => ["--load", "0x90000", g.helloReal], says: /overlaps vmtool's boot data/ },
    { name: "entry outside the image", make: () => ["--entry", "0x500", g.helloReal], says: /entry point 0x500 is outside/ },
    { name: "real mode above 1 MiB", make: () => ["--load", "0xfffc0", g.helloReal], says: /above 1 MiB/ },
    { name: "flat options for an ELF", make: () => ["--load", "0x100000", g.helloLong], says: /flat binaries only/ },
    {
      name: "wrapping segment",
      make: () => [patch("wrap.elf", g.helloProtected, (b) => b.writeUInt32LE(0xfffff000, b.readUInt32LE(28) + 32 + 12))],
      says: /wraps around/,
    },
    {
      name: "bad Multiboot checksum",
      make: () => [patch("mbsum.elf", g.multiboot, (b) => b.writeUInt32LE(1, 0x1008))],
      says: /bad checksum/,
    },
    {
      name: "Multiboot video mode required",
      make: () => [
        patch("mbvideo.elf", g.multiboot, (b) => {
          b.writeUInt32LE(0x7, 0x1004);
          b.writeUInt32LE(-(0x1badb002 + 0x7) >>> 0, 0x1008);
        }),
      ],
      says: /video mode/,
    },
    { name: "command line too long", make: () => ["--cmdline", "x".repeat(5000), g.helloLong], says: /--cmdline: 5000 bytes is too long/ },
  ];

  function write(name: string, data: Uint8Array): string {
    const p = join(dir, name);
    writeFileSync(p, data);
    return p;
  }
  function patch(name: string, src: string, f: (b: Buffer) => unknown): string {
    const b = readFileSync(src);
    f(b);
    return write(name, b);
  }

  for (const c of cases) {
    test(c.name, () => {
      const r = vmtool(c.make());
      assert.equal(r.status, 2, `status ${r.status}, stderr: ${r.stderr}`);
      assert.equal(r.stdout, "");
      const lines = r.stderr.split("\n").filter((l) => l !== "");
      assert.equal(lines.length, 1, `not one line: ${r.stderr}`);
      assert.match(lines[0], /^vmtool: error: /);
      assert.match(lines[0], c.says);
    });
  }
});
