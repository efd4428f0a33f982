// Another VMM's VM: QEMU with -enable-kvm. QEMU 8.1 and later keep a KVM stats fd per vCPU, which `vmtool stat`
// copies and reads; earlier ones keep none (they open them only while they answer query-stats), and stat says
// so. The tracepoints count any VMM's VM. Both are checked against QEMU's own query-stats over QMP, between a
// start and a stop of the guest (QEMU starts it paused, -S), when nothing moves.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn, spawnSync } from "node:child_process";
import { createConnection, type Socket } from "node:net";
import { existsSync, mkdtempSync, readdirSync, readlinkSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CLI, ROOT } from "../helpers/paths.js";
import { event, isRoot, waitFor, type JsonLine } from "./helpers.js";

const QEMU = "qemu-system-x86_64";
const hasQemu = spawnSync(QEMU, ["--version"]).status === 0;
const pvm = existsSync("/sys/module/kvm_pvm");

/** A PVH guest (32-bit protected mode at _start, QEMU's -kernel): port and MMIO accesses nobody claims, forever. */
function pvhGuest(dir: string): string {
  const s = join(dir, "busy.S");
  writeFileSync(
    s,
    `.code32
     .globl _start
     .section .text.start, "ax"
     _start:
       mov $0xe0000000, %ebx
     1: out %al, $0x80
       in $0x81, %al
       mov (%ebx), %eax
       mov %eax, (%ebx)
       jmp 1b
     .section .note.GNU-stack, "", @progbits
    `,
  );
  const o = (n: string) => join(dir, `${n}.o`);
  execFileSync("gcc", ["-m32", "-c", s, "-o", o("busy")]);
  execFileSync("gcc", ["-m32", "-c", join(ROOT, "bench", "qemu", "pvh-note.S"), "-o", o("note")]);
  const elf = join(dir, "busy.elf");
  execFileSync("ld", [
    "-m",
    "elf_i386",
    "-nostdlib",
    "-static",
    "-T",
    join(ROOT, "bench", "qemu", "pvh.ld"),
    o("note"),
    o("busy"),
    "-o",
    elf,
  ]);
  return elf;
}

/** A QMP connection: one command at a time, events skipped. */
async function qmp(
  path: string,
): Promise<{ run: (cmd: string, args?: object) => Promise<unknown>; close: () => void }> {
  const sock: Socket = await waitFor("QMP's socket", () => {
    if (!existsSync(path)) return undefined;
    return createConnection(path);
  });
  let buf = "";
  const waiting: ((v: Record<string, unknown>) => void)[] = [];
  // QEMU resets the connection as it quits: a command still waiting fails, nothing else.
  sock.on("error", () => {});
  sock.on("close", () => {
    for (const w of waiting.splice(0)) w({ error: "QMP connection closed" });
  });
  sock.on("data", (d) => {
    buf += d.toString();
    for (let nl = buf.indexOf("\n"); nl >= 0; nl = buf.indexOf("\n")) {
      const msg = JSON.parse(buf.slice(0, nl)) as Record<string, unknown>;
      buf = buf.slice(nl + 1);
      if (!("event" in msg)) waiting.shift()?.(msg);
    }
  });
  const next = () => new Promise<Record<string, unknown>>((r) => waiting.push(r));
  await next(); // the greeting
  const run = async (execute: string, args?: object) => {
    const reply = next();
    sock.write(JSON.stringify({ execute, ...(args ? { arguments: args } : {}) }) + "\n");
    const r = await reply;
    if ("error" in r) throw new Error(`${execute}: ${JSON.stringify(r.error)}`);
    return r.return;
  };
  await run("qmp_capabilities");
  return { run, close: () => sock.destroy() };
}

type QueryStats = { provider: string; "qom-path": string; stats: { name: string; value: unknown }[] }[];
const vcpuStat = (q: QueryStats, name: string) =>
  q.reduce((s, v) => s + Number(v.stats.find((x) => x.name === name)?.value ?? 0), 0);

/** A `vmtool stat --json` on the guest of this name, its lines collected as they come. */
function watchStat(name: string, extra: string[], t: { after: (fn: () => void) => void }) {
  const w = spawn(process.execPath, [CLI, "stat", "--json", "-g", name, "-s", "0.2", ...extra], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  t.after(() => w.kill("SIGKILL"));
  const out = { w, err: "", lines: [] as JsonLine[] };
  let buf = "";
  w.stderr.on("data", (d: Buffer) => (out.err += d.toString()));
  w.stdout.on("data", (d: Buffer) => {
    buf += d.toString();
    for (let nl = buf.indexOf("\n"); nl >= 0; nl = buf.indexOf("\n")) {
      out.lines.push(JSON.parse(buf.slice(0, nl)) as JsonLine);
      buf = buf.slice(nl + 1);
    }
  });
  return out;
}

/** The stats fds a process holds now (QEMU 8.1 and later keep one per vCPU open; earlier ones none). */
function statsFdsOf(pid: number): number {
  let n = 0;
  for (const fd of readdirSync(`/proc/${pid}/fd`))
    try {
      if (/^anon_inode:kvm-(vm|vcpu)-stats/.test(readlinkSync(`/proc/${pid}/fd/${fd}`))) n++;
    } catch {
      // closed meanwhile
    }
  return n;
}

test(
  "a QEMU guest: stat finds it by -name, reads the stats fds QEMU holds (none before QEMU 8.1: it says so), and its tracepoint counts equal QEMU's query-stats",
  { skip: (!hasQemu && "QEMU is not installed") || (!isRoot && "tracepoints need root") },
  async (t) => {
    const dir = mkdtempSync(join(tmpdir(), "vmtool-stat-qemu-"));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const elf = pvhGuest(dir);
    const sock = join(dir, "qmp.sock");
    const name = `stat-test-${process.pid}`;
    const qemu = spawn(
      QEMU,
      [
        ...["-M", "microvm,accel=kvm", "-m", "32M", "-nodefaults", "-no-user-config", "-display", "none"],
        ...["-name", `guest=${name}`, "-kernel", elf, "-S", "-qmp", `unix:${sock},server=on,wait=off`],
      ],
      { stdio: ["ignore", "ignore", "pipe"] },
    );
    t.after(() => qemu.kill("SIGKILL"));
    let qemuErr = "";
    qemu.stderr.on("data", (d: Buffer) => (qemuErr += d.toString()));
    qemu.on("exit", (code, signal) => {
      if (code !== 0) process.stderr.write(`qemu ended: ${code ?? signal}: ${qemuErr}\n`);
    });
    const q = await qmp(sock);
    t.after(() => q.close());
    const held = statsFdsOf(qemu.pid!);
    // Both find the guest by its name and start counting while it is paused: the default sources, and the
    // tracepoints alone (kvm_stat's -t), which count any VMM's VM.
    const auto = watchStat(name, [], t);
    const tps = watchStat(name, ["-t"], t);
    const vmOf = (l: JsonLine | undefined) => l?.vms.find((v) => v.pid === qemu.pid);
    const counting = await waitFor(
      "tracepoint counters on QEMU's threads",
      () => tps.lines.find((l) => vmOf(l)?.sources.tracepoints?.used),
      20_000,
    ).catch((e: unknown) => assert.fail(`${(e as Error).message}: ${tps.err}`));
    const vm = vmOf(counting)!;
    assert.equal(vm.name, name);
    assert.equal(vm.vmm, "qemu");
    const autoVm = await waitFor(
      "the default sources' first line for QEMU",
      () => vmOf(auto.lines.find((l) => vmOf(l)?.sources.stats)),
      20_000,
    ).catch((e: unknown) => assert.fail(`${(e as Error).message}: ${auto.err}`));
    if (held === 0)
      assert.deepEqual(autoVm.sources.stats, {
        used: false,
        note: "holds no KVM stats fds (QEMU before 8.1 opens them only while it answers query-stats)",
      });
    else assert.deepEqual(autoVm.sources.stats, { used: true });
    const before = (await q.run("query-stats", { target: "vcpu" })) as QueryStats;
    const from = tps.lines.length;
    await q.run("cont");
    await waitFor("the guest's exits", () =>
      tps.lines
        .slice(from)
        .map(vmOf)
        .find((v) => (event(v, "tracepoints", "kvm_userspace_exit")?.delta ?? 0) > 1000)
        ? true
        : undefined,
    );
    await q.run("stop");
    // Two lines after the stop in which nothing moved: every count is final.
    const settled = async (o: typeof tps, source: string, ev: string) => {
      const at = o.lines.length;
      const still = (l: JsonLine) => (event(vmOf(l), source, ev)?.delta ?? 1) === 0;
      return waitFor(`the stopped guest (${source})`, () => {
        for (let i = at + 1; i < o.lines.length; i++)
          if (still(o.lines[i - 1]) && still(o.lines[i])) return o.lines[i];
        return undefined;
      });
    };
    const last = await settled(tps, "tracepoints", "kvm_userspace_exit");
    const autoLast = held > 0 ? await settled(auto, "stats", "mmio_exits") : undefined;
    const after = (await q.run("query-stats", { target: "vcpu" })) as QueryStats;
    const tp = (n: string) => event(vmOf(last), "tracepoints", n)?.total ?? 0;
    const qs = (n: string) => vcpuStat(after, n) - vcpuStat(before, n);
    assert.ok(qs("mmio_exits") > 500, `the guest ran: ${qs("mmio_exits")} MMIO exits`);
    // Every MMIO exit reaches QEMU: KVM's count (query-stats) and the tracepoint count are the same.
    assert.equal(tp("kvm_userspace_exit(MMIO)"), qs("mmio_exits"));
    if (!pvm) assert.equal(tp("kvm_userspace_exit(IO)"), qs("io_exits"));
    assert.ok(qs("exits") >= tp("kvm_userspace_exit(IO)") + tp("kvm_userspace_exit(MMIO)"));
    assert.equal(tp("kvm_pio"), tp("kvm_userspace_exit(IO)"), "one kvm_pio per port exit");
    if (autoLast) {
      // QEMU's own stats fds, copied: the same KVM counters query-stats reads, over the same stretch.
      const st = (n: string) => event(vmOf(autoLast), "stats", n)?.total ?? 0;
      assert.equal(st("mmio_exits"), qs("mmio_exits"));
      assert.equal(st("io_exits"), qs("io_exits"));
    }
    await q.run("quit").catch(() => {}); // QEMU may close the connection before it answers
    for (const o of [auto, tps]) {
      o.w.kill("SIGTERM");
      assert.equal(await new Promise((r) => o.w.on("exit", r)), 0);
    }
  },
);
