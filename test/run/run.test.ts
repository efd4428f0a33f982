// `vmtool run` end to end: real guests under KVM through the compiled CLI, checking output, exit status,
// the fault dump, unclaimed ports, --trace and --stats, halt detection, UART input and bad options.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync, type SpawnSyncReturns } from "node:child_process";
import { CLI } from "../helpers/paths.js";
import { guests } from "../helpers/guests.js";
import { assemble, idt64 } from "../vm/asm.js";
import { waitForHaltedVcpus } from "../helpers/vcpu-threads.js";

function vmtool(args: string[], input = ""): SpawnSyncReturns<string> {
  return spawnSync(process.execPath, [CLI, "run", ...args], { input, encoding: "utf8", timeout: 60_000 });
}

/** 8259 set-up in 64-bit code: vectors 0x20.. and 0x28.., the master's mask `mask` (the slave all masked). */
const picInit = (mask: number) => `
  mov $0x11, %al; out %al, $0x20; out %al, $0xa0
  mov $0x20, %al; out %al, $0x21
  mov $0x28, %al; out %al, $0xa1
  mov $4, %al; out %al, $0x21
  mov $2, %al; out %al, $0xa1
  mov $1, %al; out %al, $0x21; out %al, $0xa1
  mov $${mask}, %al; out %al, $0x21
  mov $0xff, %al; out %al, $0xa1`;

/** Long-mode guest: interrupt-driven UART echo (PIC vectors 0x20.., IRQ 4 unmasked, IER.ERBFI, MCR.OUT2),
 * `sti; hlt` between interrupts; echoes to the debug console, 'q' exits with V = 0x15 (status 43). */
const ECHO64 = `.code64
  ${idt64(0x24, "isr")}${picInit(0xef)}
  mov $0x3f9, %dx; mov $1, %al; out %al, %dx
  mov $0x3fc, %dx; mov $0x08, %al; out %al, %dx
  mov $'>', %al; out %al, $0xe9
1: sti
  hlt
  jmp 1b
isr:
  mov $0x3fd, %dx; in %dx, %al
  test $1, %al
  jz 2f
  mov $0x3f8, %dx; in %dx, %al
  cmp $'q', %al
  je 3f
  out %al, $0xe9
  jmp isr
2: mov $0x20, %al; out %al, $0x20
  iretq
3: mov $0x15, %al; out %al, $0xf4`;

describe("boot modes and loaders run real guests", () => {
  test("no FILE: the built-in demo guest prints the machine description and halts (status 0)", () => {
    const r = vmtool([]);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /Hello from vmtool's demo guest/);
    assert.match(r.stdout, /dev com1 +uart-16550/);
    assert.equal(r.stderr, "");
  });

  test("real mode flat binary", () => {
    const r = vmtool([guests().helloReal]);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /hello from real mode \(16-bit\)\ncr0\.pe=0/);
  });

  test("ELF32 in protected mode, ELF64 in long mode, with the machine description in ESI/RSI", () => {
    const p = vmtool([guests().helloProtected]);
    assert.equal(p.status, 0, p.stderr);
    assert.match(p.stdout, /protected/i);
    const l = vmtool(["--cmdline", "console=hello", guests().helloLong]);
    assert.equal(l.status, 0, l.stderr);
    assert.match(l.stdout, /cmdline: 'console=hello'/);
  });

  test("Multiboot ELF: EAX magic, command line and memory map from the Multiboot information", () => {
    const r = vmtool(["--cmdline", "a b c", "--mem", "32M", guests().multiboot]);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /magic ok/);
    assert.match(r.stdout, /cmdline: 'a b c'/);
    assert.match(r.stdout, /mem_upper 31744 KiB/);
  });

  test("flat binary in each mode with --load/--entry/--mode", () => {
    const real = assemble(".code16\n mov $'R', %al\n out %al, $0xe9\n cli\n hlt", 0x8000, 16);
    const prot = assemble(".code32\n mov $'P', %al\n out %al, $0xe9\n cli\n hlt", 0x200000, 32);
    const long = assemble(".code64\n mov $'L', %al\n out %al, $0xe9\n cli\n hlt", 0x300000, 64);
    assert.equal(vmtool(["--load", "0x8000", real]).stdout, "R");
    assert.equal(vmtool(["--mode", "protected", "--load", "2M", prot]).stdout, "P");
    const l = vmtool(["--mode", "long", "--load", "0x2ff000", "--entry", "0x300000", long]);
    // Entry 0x300000 lies past a 4 KiB image loaded at 0x2ff000: the loader refuses it.
    assert.equal(l.status, 2);
    assert.equal(vmtool(["--mode", "long", "--load", "0x300000", long]).stdout, "L");
  });
});

describe("exit statuses", () => {
  test("the exit port: a write of V ends vmtool with (V << 1) | 1", () => {
    const g = assemble(".code64\n mov $0x15, %al\n out %al, $0xf4\n hlt", 0x100000, 64);
    const r = vmtool(["--mode", "long", g]);
    assert.equal(r.status, 43);
  });

  test("a halt with interrupts off ends the run with 0 in every mode (HLT kept in the kernel)", () => {
    for (const mode of ["real", "protected", "long"]) {
      const r = vmtool(["--mode", mode, guests().halt]);
      assert.equal(r.status, 0, `${mode}: ${r.stderr}`);
      assert.equal(r.stdout + r.stderr, "");
    }
  });

  test("a vCPU waiting for the I/O worker's start is asked once whether it halted, not at every poll", () => {
    // With a virtio-rng the I/O worker starts with the run; the demo guest's read of the device's first register
    // comes before that thread runs, and the vCPU thread sleeps until it does (tens of ms): a sleeping thread
    // looks halted to the detector, but it cannot answer outside KVM_RUN.
    const r = spawnSync(process.execPath, [CLI, "run", "--rng"], {
      encoding: "utf8",
      timeout: 60_000,
      env: { ...process.env, VMTOOL_STARTUP_MARKS: "1" },
    });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /vcpu I\/O worker started/);
    const asked = r.stderr.split("\n").filter((l) => l.endsWith("halt check asked")).length;
    assert.ok(asked >= 1 && asked <= 4, `${asked} halt checks asked:\n${r.stderr}`);
  });

  test("on one vCPU the demo's COM1 is its own thread's: no I/O worker starts, the UART lines are the same", () => {
    const env = { ...process.env, VMTOOL_STARTUP_MARKS: "1" };
    const one = spawnSync(process.execPath, [CLI, "run"], { encoding: "utf8", timeout: 60_000, env });
    const two = spawnSync(process.execPath, [CLI, "run", "--cpus", "2"], {
      encoding: "utf8",
      timeout: 60_000,
    });
    assert.equal(one.status, 0, one.stderr);
    assert.doesNotMatch(one.stderr, /I\/O worker/);
    const uart = (out: string) => out.split("\n").filter((l) => /\[uart\]|UART/.test(l));
    assert.equal(uart(one.stdout).length, 2, one.stdout);
    assert.deepEqual(uart(one.stdout), uart(two.stdout));
  });

  test("a triple fault: exit 4, the reason and a register/segment/control-register dump on stderr", () => {
    const r = vmtool([guests().tripleFault]);
    assert.equal(r.status, 4);
    assert.equal(r.stdout, "!");
    assert.match(r.stderr, /^vmtool: guest fault: triple fault \(KVM_EXIT_SHUTDOWN\)/);
    assert.match(r.stderr, /rip=0x[0-9a-f]{16} rflags=/);
    assert.match(r.stderr, /cs +sel=0x0018 .* l=1/);
    assert.match(r.stderr, /cr0=0x[0-9a-f]+ \[PE .*PG\]/);
    assert.match(r.stderr, /efer=0x0500 \[LME LMA\]/);
  });

  test("Ctrl-C (SIGINT) stops a busy guest cleanly with 130", async () => {
    const g = assemble(".code64\n mov $'.', %al\n out %al, $0xe9\n1: jmp 1b", 0x100000, 64);
    const child = spawn(process.execPath, [CLI, "run", "--mode", "long", g], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    let err = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    child.stderr.on("data", (d: Buffer) => (err += d.toString()));
    // The guest prints one '.' and spins: wait for the quiet-time flush of that byte, then interrupt.
    await new Promise<void>((resolve) => child.stdout.once("data", () => resolve()));
    child.kill("SIGINT");
    const status = await new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
    assert.equal(status, 130, err);
    assert.equal(out, ".");
    assert.match(err, /interrupted/);
  });
});

describe("devices, trace and stats", () => {
  const unclaimed = assemble(
    `.code64
     mov $0x100, %dx
     in %dx, %al; out %al, $0xe9
     in %dx, %al; out %al, $0xe9
     mov $0x55, %al; out %al, $0x80; out %al, $0x80
     mov $0xd0000000, %edi
     mov (%rdi), %eax; mov (%rdi), %eax
     out %eax, $0xe9
     cli; hlt`,
    0x100000,
    64,
  );

  test("unclaimed ports and MMIO read all ones, writes are ignored; --trace reports each address once", () => {
    const plain = spawnSync(process.execPath, [CLI, "run", "--mode", "long", unclaimed], { timeout: 60_000 });
    assert.equal(plain.status, 0, plain.stderr.toString());
    assert.deepEqual([...plain.stdout], [0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
    assert.equal(plain.stderr.length, 0);
    const t = vmtool(["--mode", "long", "--trace", unclaimed]);
    assert.equal(t.status, 0);
    const lines = t.stderr.split("\n");
    assert.equal(lines.filter((l) => l.includes("nobody at port 0x100")).length, 1);
    assert.equal(lines.filter((l) => l.includes("nobody at port 0x80")).length, 1);
    assert.equal(lines.filter((l) => l.includes("nobody at MMIO 0xd0000000")).length, 1);
  });

  test("--trace: one line per exit with sequence, reason, port or address, size, direction, data, RIP", () => {
    const t = vmtool(["--mode", "long", "--trace", unclaimed]);
    const exits = t.stderr.split("\n").filter((l) => l.startsWith("#"));
    // RIP as KVM leaves it at the exit: an IN waits for its data, so RIP is still at it (0x100004, after the
    // 4-byte mov to %dx); an OUT is complete, so RIP is already past it (the 2-byte OUT at 0x100005).
    assert.match(exits[0], /^#1 IO port=0x100 size=1 in rip=0x100004$/);
    assert.match(exits[1], /^#2 IO port=0xe9 size=1 out data=0xff rip=0x100007$/);
    assert.ok(exits.some((l) => /^#\d+ MMIO addr=0xd0000000 size=4 read rip=0x[0-9a-f]+$/.test(l)));
    assert.equal(exits.filter((l) => / IO | MMIO /.test(l)).length, 9);
  });

  test("--stats prints tables by reason and by port; --json makes it JSON", () => {
    const s = vmtool(["--mode", "long", "--stats", unclaimed]);
    assert.equal(s.status, 0);
    assert.match(s.stderr, /exits by reason:/);
    assert.match(s.stderr, /│ IO +│ 7 +│/);
    assert.match(s.stderr, /│ port 0xe9 out +│ 3 +│/);
    const j = vmtool(["--mode", "long", "--json", unclaimed]);
    const stats = JSON.parse(j.stderr) as { exits: number; byReason: { key: string; count: number }[] };
    assert.equal(stats.byReason.find((r) => r.key === "IO")?.count, 7);
    assert.equal(stats.byReason.find((r) => r.key === "MMIO")?.count, 2);
    assert.equal(typeof (stats as unknown as { guestMs: number }).guestMs, "number");
  });

  test("200,000 debug-console bytes arrive whole and in order (buffered output)", () => {
    const r = vmtool([guests().exits200k]);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout.length, 200_000);
    assert.equal(r.stdout, ".".repeat(199_999) + "\n");
  });

  test("UART input from stdin wakes a guest halted with interrupts on (IRQ 4 through the in-kernel PIC)", () => {
    const g = assemble(ECHO64, 0x100000, 64);
    const r = vmtool(["--mode", "long", g], "hello, uart\nq");
    assert.equal(r.status, 43, r.stderr);
    assert.equal(r.stdout, ">hello, uart\n");
  });

  test("a guest woken by a timer that exits at each tick is not asked for a halt check every millisecond", () => {
    // 30 ticks of the PIT at 100 Hz, each written to the debug console (an exit to vmtool, after which the
    // vCPU's verdict is unknown again), `sti; hlt` in between; then the exit port. Asked at every look, it
    // was asked 3-4 times per tick.
    const g = assemble(
      `.code64
  ${idt64(0x20, "isr")}${picInit(0xfe)}
  mov $0x34, %al; out %al, $0x43
  mov $0x9c, %al; out %al, $0x40
  mov $0x2e, %al; out %al, $0x40
  xor %ebx, %ebx
1: sti
  hlt
  cmp $30, %ebx
  jb 1b
  cli
  mov $0x15, %al; out %al, $0xf4
isr:
  inc %ebx
  mov $'.', %al; out %al, $0xe9
  mov $0x20, %al; out %al, $0x20
  iretq`,
      0x100000,
      64,
    );
    const r = spawnSync(process.execPath, [CLI, "run", "--pit", "--mode", "long", g], {
      encoding: "utf8",
      timeout: 60_000,
      env: { ...process.env, VMTOOL_STARTUP_MARKS: "1" },
    });
    assert.equal(r.status, 43, r.stderr);
    assert.equal(r.stdout, ".".repeat(30));
    const asked = r.stderr.split("\n").filter((l) => l.endsWith("halt check asked")).length;
    assert.ok(asked < 30, `${asked} halt checks asked in 30 ticks:\n${r.stderr.slice(-2000)}`);
  });

  test("UART input arriving while the guest sleeps in HLT", async () => {
    const g = assemble(ECHO64, 0x100000, 64);
    const child = spawn(process.execPath, [CLI, "run", "--mode", "long", g], {
      stdio: ["pipe", "pipe", "pipe"],
    });
    let out = "";
    let err = "";
    let outputSeen = () => {};
    child.stdout.on("data", (d: Buffer) => {
      out += d.toString();
      outputSeen();
    });
    child.stderr.on("data", (d: Buffer) => (err += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
    const output = (want: string) =>
      new Promise<void>((resolve, reject) => {
        (outputSeen = () => {
          if (out === want) resolve();
          else if (!want.startsWith(out)) reject(new Error(`output ${JSON.stringify(out)}, wanted ${want}`));
        })();
        void exited.then(() => reject(new Error(`vmtool ended (${err}) with output ${JSON.stringify(out)}`)));
      });
    // The guest prints '>' just before its first `sti; hlt`, and each echo just before the next one; the
    // bytes are written only once vmtool's vCPU thread sleeps inside KVM_RUN, i.e. the guest is in HLT.
    await output(">");
    await waitForHaltedVcpus(child.pid!);
    child.stdin.write("ab\n");
    await output(">ab\n");
    await waitForHaltedVcpus(child.pid!);
    child.stdin.write("q");
    assert.equal(await exited, 43, err);
    assert.equal(out, ">ab\n");
  });
});

describe("bad options: one line, exit 2, nothing run", () => {
  const cases: [string, string[], RegExp][] = [
    ["--mem below the minimum", ["--mem", "1k"], /--mem: 1k is below the minimum/],
    ["--mem above the maximum", ["--mem", "8G"], /--mem: 8G is above the maximum/],
    ["--mem not a number", ["--mem", "lots"], /--mem: 'lots' is not a number/],
    ["--mem not page-sized", ["--mem", "4194305"], /not a multiple of 4 KiB/],
    ["--cpus 65", ["--cpus", "65"], /--cpus: 65 is above the maximum/],
    ["--disk of a missing file", ["--disk", "/nonexistent/disk.img"], /--disk \/nonexistent\/disk.img/],
    ["--disk with no file name", ["--disk", ",ro"], /--disk ,ro: no file name/],
    ["--cpus 0", ["--cpus", "0"], /--cpus: 0 is below the minimum/],
    ["--mode unknown", ["--mode", "v86"], /argument 'v86' is invalid/],
    ["--load not a number", ["--load", "x"], /--load: 'x' is not a number/],
    ["--entry above 4 GiB", ["--entry", "0x100000000"], /--entry: .* is above the maximum/],
    ["an unknown option", ["--frobnicate"], /unknown option '--frobnicate'/],
    ["a missing file", ["/nonexistent/guest.bin"], /guest\.bin/],
  ];
  for (const [what, args, re] of cases) {
    test(what, () => {
      const r = vmtool(args);
      assert.equal(r.status, 2, r.stderr);
      assert.equal(r.stdout, "");
      assert.match(r.stderr.split("\n")[0], re);
      assert.ok(r.stderr.trim().split("\n").length <= 2, r.stderr); // commander adds a "(run with --help)" hint
    });
  }

  test("--help describes the options and exit statuses", () => {
    const r = vmtool(["--help"]);
    assert.equal(r.status, 0);
    for (const o of [
      "--mem",
      "--load",
      "--entry",
      "--mode",
      "--cmdline",
      "--trace",
      "--stats",
      "--json",
      "--cpus",
    ])
      assert.ok(r.stdout.includes(o), o);
    assert.match(r.stdout, /Exit status/);
  });
});
