// The client and `vmtool introspect` against the real VMM side: `vmtool run --introspect listen:PATH` (the
// client connects) and `--introspect connect:PATH` (the client listens), on a real guest built with the SDK:
// serial-echo (32-bit protected mode, no paging: it sleeps in hlt until a byte arrives on COM1, whose
// interrupt handler com1_irq then runs; EOT ends it with status 1).
import { test, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CLI } from "../helpers/paths.js";
import { guests } from "../helpers/guests.js";
import { assemble } from "../vm/asm.js";
import { GuestRam, KvmiClient, Msg, Ev } from "../../src/kvmi-client/index.js";

interface Vm {
  child: ChildProcess;
  output: () => string;
  /** Resolves with the exit status. */
  exited: Promise<number | null>;
  send: (bytes: string) => void;
}

function startVm(t: TestContext, introspect: string, extra: string[] = []): Vm {
  const child = spawn(
    process.execPath,
    [
      CLI,
      "run",
      "--no-raw",
      "--name",
      "e2e-guest",
      "--introspect",
      introspect,
      ...extra,
      guests().serialEcho,
    ],
    { stdio: ["pipe", "pipe", "pipe"] },
  );
  // The guest's console on standard output; vmtool's own lines (introspection connects and disconnects) on
  // standard error.
  let out = "";
  child.stdout?.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr?.on("data", () => undefined);
  const exited = new Promise<number | null>((r) => child.on("close", (code) => r(code)));
  t.after(() => {
    if (child.exitCode === null) child.kill("SIGKILL");
  });
  return { child, output: () => out, exited, send: (b) => child.stdin?.write(b) };
}

async function until(what: string, cond: () => boolean, ms = 30_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

function introspect(
  args: string[],
  timeoutMs = 30_000,
): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [CLI, "introspect", ...args], {
      stdio: ["ignore", "pipe", "pipe"],
      timeout: timeoutMs,
    });
    let stdout = "";
    let stderr = "";
    p.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    p.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    p.on("close", (status) => resolve({ status, stdout, stderr }));
  });
}

function tmp(t: TestContext): string {
  const dir = mkdtempSync(join(tmpdir(), "vmtool-kvmi-e2e-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

test("library, listen mode: handshake, guest facts, memory both ways, pause with registers, the guest goes on", async (t) => {
  const dir = tmp(t);
  const sock = join(dir, "vm.sock");
  const vm = startVm(t, `listen:${sock}`);
  await until("the guest's ready line", () => vm.output().includes("serial-echo: ready"));
  await until("the socket", () => existsSync(sock));
  assert.equal(statSync(sock).mode & 0o777, 0o600);
  const c = await KvmiClient.connect(sock);
  try {
    assert.equal(c.handshake.name, "e2e-guest");
    assert.equal(c.handshake.structSize, 96);
    assert.equal(c.version, 1);
    assert.deepEqual(await c.getGuestInfo(), { vcpuCount: 1 });
    assert.equal(await c.checkCommand(Msg.GET_REGISTERS), 0);
    assert.notEqual(await c.checkEvent(Ev.CR), 0, "CR events cannot be backed on an unmodified KVM");
    const map = await c.getMemoryMap();
    const ram = map.find((r) => r.kind === 1 && r.gpa === 0n);
    assert.ok(
      ram,
      JSON.stringify(map, (_k, v: unknown) => (typeof v === "bigint" ? v.toString(16) : v)),
    );
    // The same page by READ_PHYSICAL and through the shared mapping (if the VMM offers it).
    const page = await c.readPhysical(0x100000n, 4096);
    const shared = await GuestRam.open(c);
    try {
      assert.deepEqual(await shared.read(0x100000n, 4096), page, shared.why);
    } finally {
      shared.close();
    }
    const p = await c.pauseAll();
    assert.equal(p.events.length, 1);
    const r = await c.getRegisters(0, [0xc0000080]);
    assert.equal(r.mode, 4, "32-bit protected mode");
    assert.equal(r.sregs.cr0 & 1n, 1n);
    assert.equal(p.events[0].regs.rip, r.regs.rip, "the PAUSE event carries the registers where it stopped");
    c.resume(p);
  } finally {
    c.close();
  }
  // The guest still echoes, and ends as it should.
  vm.send("hi\x04");
  assert.equal(await vm.exited, 1);
  assert.match(vm.output(), /2 bytes echoed/);
});

test("vmtool introspect over a running guest: info, regs, read, dump, translate, pause, resume", async (t) => {
  const dir = tmp(t);
  const sock = join(dir, "vm.sock");
  const vm = startVm(t, `listen:${sock}`, ["--mem", "16M"]);
  await until("the socket", () => existsSync(sock));
  const at = ["--socket", sock];
  const info = await introspect(["info", ...at, "--json"]);
  assert.equal(info.status, 0, info.stderr);
  const facts = JSON.parse(info.stdout);
  assert.equal(facts.vm.name, "e2e-guest");
  assert.equal(facts.vcpus.length, 1);
  assert.ok(
    facts.commands.some(
      (x: { name: string; supported: boolean }) => x.name === "READ_PHYSICAL" && x.supported,
    ),
  );
  const cr = facts.events.find((x: { name: string }) => x.name === "CR");
  assert.equal(cr.supported, false);
  assert.match(cr.why, /kernel/);

  const regs = await introspect(["regs", ...at, "--json"]);
  assert.equal(regs.status, 0, regs.stderr);
  assert.equal(JSON.parse(regs.stdout).vcpus[0].cpuMode, "32-bit protected mode");

  const text = await introspect(["regs", ...at]);
  assert.match(text.stdout, /cs +code, 32-bit, execute\/read/);

  const read = await introspect(["read", "0x100000", "32", ...at]);
  assert.equal(read.status, 0, read.stderr);
  assert.match(read.stdout, /^0000000000100000 {2}[0-9a-f]{2} /);

  const image = join(dir, "ram.img");
  const dump = await introspect(["dump", image, ...at, "--json"]);
  assert.equal(dump.status, 0, dump.stderr);
  const summary = JSON.parse(dump.stdout);
  assert.equal(BigInt(summary.bytes), 16n << 20n);
  const bytes = readFileSync(image);
  const c = await KvmiClient.connect(sock);
  try {
    assert.deepEqual(bytes.subarray(0x100000, 0x101000), await c.readPhysical(0x100000n, 4096));
  } finally {
    c.close();
  }

  const tr = await introspect(["translate", "0x100000", ...at]);
  assert.equal(tr.status, 0, tr.stderr);
  assert.match(tr.stdout, /0x100000/);

  const pause = await introspect(["pause", ...at, "--for", "0.2"]);
  assert.equal(pause.status, 0, pause.stderr);
  assert.match(pause.stdout, /vCPU 0 paused at rip=0x[0-9a-f]+[\s\S]*resumed vCPU 0/);
  const resume = await introspect(["resume", ...at]);
  assert.equal(resume.status, 0, resume.stderr);
  assert.match(resume.stdout, /1 vCPU running/);

  const bad = await introspect(["read", "0x40000000", "16", ...at]);
  assert.equal(bad.status, 2, "a GPA outside RAM is bad input");
  assert.equal(bad.stderr.trimEnd().split("\n").length, 1);

  vm.send("\x04");
  assert.equal(await vm.exited, 1);
});

test("events: a breakpoint at an ELF symbol, hit when a byte arrives, stepped over, the guest unharmed", async (t) => {
  const dir = tmp(t);
  const sock = join(dir, "vm.sock");
  const vm = startVm(t, `listen:${sock}`);
  await until("the guest's ready line", () => vm.output().includes("serial-echo: ready"));
  const p = spawn(
    process.execPath,
    [
      CLI,
      "introspect",
      "events",
      "--socket",
      sock,
      "--break",
      "com1_irq",
      "--elf",
      guests().serialEcho,
      "--count",
      "2",
      "--json",
    ],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  let stdout = "";
  let stderr = "";
  p.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
  p.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
  const done = new Promise<number | null>((r) => p.on("close", r));
  await until("the events command to be set up", () => stderr.includes("watching:"));
  vm.send("a");
  await until("the first hit", () => stdout.split("\n").length > 1);
  // The echo comes from the main loop once the handler has returned: only then is "b" a second interrupt
  // (sent earlier, the same handler run would drain both bytes from the FIFO: one hit).
  await until("the echo of a", () => vm.output().includes("(EOT ends)\na"));
  vm.send("b");
  assert.equal(await done, 0, stderr);
  const lines = stdout
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l));
  assert.deepEqual(
    lines.map((l: { event: string; label: string }) => [l.event, l.label]),
    [
      ["breakpoint", "com1_irq"],
      ["breakpoint", "com1_irq"],
    ],
  );
  // The breakpoint is gone and the guest echoes on: three bytes, three interrupts, nothing lost.
  vm.send("c\x04");
  assert.equal(await vm.exited, 1);
  assert.match(vm.output(), /ready \(EOT ends\)\nabc\nserial-echo: 3 bytes echoed, 3 interrupts/);
});

test("events --write-protect with --pf-action retry: every write is an event (the page is protected again after each), --count ends it", async (t) => {
  const dir = tmp(t);
  const sock = join(dir, "vm.sock");
  // A 64-bit guest that increments the word at 0x3000 until the word at 0x2000 is set, then exits with 1.
  const bin = assemble(
    `.code64
  loop: incq 0x3000
    pause
    cmpl $0, 0x2000
    je loop
    mov $1, %al
    out %al, $0xf4`,
    0x100000,
    64,
  );
  const child = spawn(
    process.execPath,
    [CLI, "run", "--mode", "long", "--load", "0x100000", "--introspect", `listen:${sock}`, bin],
    { stdio: ["ignore", "ignore", "pipe"] },
  );
  const exited = new Promise<number | null>((r) => child.on("close", (code) => r(code)));
  t.after(() => {
    if (child.exitCode === null) child.kill("SIGKILL");
  });
  await until("the socket", () => existsSync(sock));
  // Before the fix the first RETRY left the page writable for good: no second event ever came.
  const ev = await introspect(
    [
      "events",
      "--socket",
      sock,
      "--write-protect",
      "0x3000",
      "--pf-action",
      "retry",
      "--count",
      "3",
      "--json",
    ],
    60_000,
  );
  assert.equal(ev.status, 0, ev.stderr);
  const lines = ev.stdout
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l) as { event: string; gpa: string; reply: string });
  assert.deepEqual(
    lines.map((l) => [l.event, l.gpa, l.reply]),
    [
      ["pf", "0x3000", "retry"],
      ["pf", "0x3000", "retry"],
      ["pf", "0x3000", "retry"],
    ],
  );
  // Every write went through, and once the tool is gone the page is writable again: the count goes on.
  const count = async () => {
    const r = await introspect(["read", "0x3000", "8", "--out", join(dir, "count"), "--socket", sock]);
    assert.equal(r.status, 0, r.stderr);
    return readFileSync(join(dir, "count")).readBigUInt64LE(0);
  };
  const first = await count();
  assert.ok(first >= 3n, `${first} increments`);
  let later = first;
  for (let i = 0; i < 100 && later === first; i++) later = await count();
  assert.ok(later > first, "the guest writes on, unprotected");
  assert.equal((await introspect(["write", "0x2000", "01", "--socket", sock])).status, 0);
  assert.equal(await exited, 3, "the guest's own exit (1)");
});

test("connect mode: the client listens, vmtool run connects; a VMM that vanishes is one line and status 12", async (t) => {
  const dir = tmp(t);
  const sock = join(dir, "tool.sock");
  const info = introspect(["info", "--listen", sock, "--json"]);
  await until("the tool's socket", () => existsSync(sock));
  const vm = startVm(t, `connect:${sock}`);
  const r = await info;
  assert.equal(r.status, 0, r.stderr);
  assert.equal(JSON.parse(r.stdout).vm.name, "e2e-guest");

  const sock2 = join(dir, "tool2.sock");
  const events = introspect(["events", "--listen", sock2, "--msr", "0xc0000081"]);
  await until("the tool's second socket", () => existsSync(sock2));
  const vm2 = startVm(t, `connect:${sock2}`);
  await until("the guest's ready line", () => vm2.output().includes("serial-echo: ready"));
  await new Promise((res) => setTimeout(res, 200));
  vm2.child.kill("SIGKILL");
  const e = await events;
  assert.equal(e.status, 12, e.stderr);
  assert.equal(
    e.stderr
      .trimEnd()
      .split("\n")
      .filter((l) => l.startsWith("vmtool: error:")).length,
    1,
  );
  vm.send("\x04");
  await vm.exited;
});
