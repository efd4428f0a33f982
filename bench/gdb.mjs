#!/usr/bin/env node
// gdb driving vmtool's stub beside gdb driving QEMU's gdbstub (KVM), on the same guest, in one run (not a test):
//   - single steps per second: gdb runs `stepi` in a loop;
//   - breakpoint hits per second: a hardware breakpoint with `commands; silent; continue; end` in a loop that
//     makes one port exit per round (vmtool also with a software breakpoint: QEMU's stops the VM for good on a
//     backend whose emulator cannot run int3, docs/gdb.md);
//   - memory read rate: gdb's `dump binary memory` of 4 MiB (its m packets, as the stub's PacketSize allows);
//   - each beside the same guest's plain exits per second, without gdb.
// Times are taken inside gdb (its Python clock around the measured commands), so start-up is not in them.
// The guest is one ELF32 with a PVH note: vmtool runs it at _start in 32-bit protected mode, QEMU's microvm
// boots it there by the note.
//   node bench/gdb.mjs            (BENCH_RUNS=3; VMTOOL_DIST=other-dist as for the other benches)
import { execFileSync, spawn, spawnSync } from "node:child_process";
import { existsSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { loadavg } from "node:os";
import { join } from "node:path";
import { ROOT, median, timed, workDir } from "./lib.mjs";

const DIST = join(ROOT, process.env.VMTOOL_DIST || "dist");
const BUNDLE = join(DIST, "bundle", "vmtool.cjs");
const CLI = existsSync(BUNDLE) ? BUNDLE : join(DIST, "src", "cli", "main.js");
const QEMU = "qemu-system-x86_64";
const RUNS = Number(process.env.BENCH_RUNS || 3);
const STEPS = 2000;
const HITS = 1000;
const PLAIN = 200_000;
const DUMP = 4 << 20;
const work = workDir("vmtool-bench-gdb-");

/** The guest: LOOPS rounds of one `out` to port 0x80 at `hit`, then the exit port (0xf4) at `done`. */
function guest(name, loops) {
  const s = join(work, `${name}.S`);
  writeFileSync(
    s,
    `.code32
    .globl _start
    .section .text
_start: nop
begin:  mov $${loops}, %ecx
hit:    out %al, $0x80
        dec %ecx
        jnz hit
done:   xor %eax, %eax
        out %al, $0xf4
1:      jmp 1b
    .section .note.GNU-stack, "", @progbits
`,
  );
  const o = (n) => join(work, `${name}-${n}.o`);
  execFileSync("as", ["--32", s, "-o", o("main")]);
  execFileSync("gcc", ["-m32", "-c", join(ROOT, "bench", "qemu", "pvh-note.S"), "-o", o("note")]);
  const elf = join(work, `${name}.elf`);
  execFileSync("ld", [
    "-m",
    "elf_i386",
    "-T",
    join(ROOT, "bench", "qemu", "pvh.ld"),
    o("main"),
    o("note"),
    "-o",
    elf,
  ]);
  return elf;
}

const sym = (elf, name) => {
  const line = execFileSync("nm", [elf], { encoding: "utf8" })
    .split("\n")
    .find((l) => l.endsWith(` ${name}`));
  return `0x${line.split(" ")[0]}`;
};

const qemuArgs = (elf) => [
  ...["-M", "microvm,accel=kvm", "-m", "64M", "-nodefaults", "-no-user-config", "-display", "none"],
  ...["-kernel", elf, "-device", "isa-debug-exit,iobase=0xf4,iosize=1"],
];

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const port = srv.address().port;
      srv.close(() => resolve(port));
    });
  });
}

/** Seconds measured inside gdb around `measured`, with the guest stopped at `begin` first. */
async function gdbTimed(target, elf, measured) {
  const port = await freePort();
  const vm =
    target === "vmtool"
      ? spawn(process.execPath, [CLI, "run", "--gdb", `tcp::${port}`, "--gdb-wait", elf], { stdio: "ignore" })
      : spawn(QEMU, [...qemuArgs(elf), "-gdb", `tcp:127.0.0.1:${port}`, "-S"], { stdio: "ignore" });
  const ended = new Promise((resolve) => vm.on("close", resolve));
  try {
    const script = join(work, `${target}-${port}.gdb`);
    writeFileSync(
      script,
      [
        "set pagination off",
        "set confirm off",
        // Until the server listens.
        "python",
        "import time",
        "for i in range(200):",
        "  try:",
        `    gdb.execute("target remote 127.0.0.1:${port}", to_string=True)`,
        "    break",
        "  except gdb.error:",
        "    time.sleep(0.05)",
        "end",
        // QEMU starts in its firmware, vmtool at _start: both stop at the guest's second instruction.
        `hbreak *${sym(elf, "begin")}`,
        "continue",
        "delete",
        "python t0 = time.perf_counter()",
        ...measured,
        'python print("@@seconds %.6f" % (time.perf_counter() - t0))',
        "kill",
      ].join("\n") + "\n",
    );
    // No file for gdb: with QEMU's x86-64 register layout an ELF32 file makes gdb fail ("Remote 'g' packet reply
    // is too long"); addresses come from nm.
    const r = spawnSync("gdb", ["-batch", "-nx", "-x", script], { encoding: "utf8", timeout: 600_000 });
    const m = /@@seconds ([0-9.]+)/.exec(r.stdout);
    if (!m) throw new Error(`${target}: gdb printed no time\n${r.stdout}${r.stderr}`);
    return Number(m[1]);
  } finally {
    vm.kill("SIGKILL");
    await ended;
  }
}

const stepLoop = [`set $i = 0`, `while $i < ${STEPS}`, `stepi`, `set $i = $i + 1`, `end`];
const hitLoop = (elf, kind) => [
  `${kind} *${sym(elf, "hit")}`,
  "commands",
  "silent",
  "continue",
  "end",
  `hbreak *${sym(elf, "done")}`,
  "continue",
];
const dump = [`dump binary memory /dev/null 0x100000 ${0x100000 + DUMP}`];

const gdbGuest = guest("loop", HITS);
const plainGuest = guest("plain", PLAIN);
const quickGuest = guest("quick", 1);
const qemuWorks = spawnSync(QEMU, [...qemuArgs(quickGuest)], { timeout: 60_000 }).status === 1;

const cases = [
  ["stepi", "vmtool", stepLoop],
  ["stepi", "qemu", stepLoop],
  ["hbreak hit", "vmtool", hitLoop(gdbGuest, "hbreak")],
  ["hbreak hit", "qemu", hitLoop(gdbGuest, "hbreak")],
  ["break hit", "vmtool", hitLoop(gdbGuest, "break")],
  ["read 4 MiB", "vmtool", dump],
  ["read 4 MiB", "qemu", dump],
];
const samples = new Map(cases.map(([what, who]) => [`${what}/${who}`, []]));
const plain = { vmtool: [], qemu: [] };
console.log(
  `load average at start: ${loadavg()
    .map((l) => l.toFixed(2))
    .join(" ")}`,
);
for (let r = 0; r < RUNS; r++) {
  for (const [what, who, script] of cases) {
    if (who === "qemu" && !qemuWorks) continue;
    samples.get(`${what}/${who}`).push(await gdbTimed(who, gdbGuest, script));
  }
  // Plain exits: the long guest's time less the time of one that exits at once.
  plain.vmtool.push(
    (timed(process.execPath, [CLI, "run", plainGuest], 1).ms -
      timed(process.execPath, [CLI, "run", quickGuest], 1).ms) /
      1000,
  );
  if (qemuWorks)
    plain.qemu.push(
      (timed(QEMU, qemuArgs(plainGuest), 1).ms - timed(QEMU, qemuArgs(quickGuest), 1).ms) / 1000,
    );
}
const med = (k) => median(samples.get(k));
const rate = (n, s) => n / s;
const per = {
  stepi: STEPS,
  "hbreak hit": HITS,
  "break hit": HITS,
  "read 4 MiB": DUMP / 1024, // KiB
};
const unit = { stepi: "steps/s", "hbreak hit": "hits/s", "break hit": "hits/s", "read 4 MiB": "KiB/s" };
const plainRate = {
  vmtool: rate(PLAIN, median(plain.vmtool)),
  qemu: qemuWorks ? rate(PLAIN, median(plain.qemu)) : NaN,
};
console.log(`medians of ${RUNS} rounds; times measured inside gdb`);
console.log(
  `plain exits/s (no gdb)       vmtool ${plainRate.vmtool.toFixed(0)}   QEMU ${plainRate.qemu.toFixed(0)}`,
);
for (const what of Object.keys(per)) {
  const v = rate(per[what], med(`${what}/vmtool`));
  const q = samples.get(`${what}/qemu`)?.length ? rate(per[what], med(`${what}/qemu`)) : NaN;
  const vsPlain =
    unit[what] === "KiB/s" ? "" : `, ${(v / plainRate.vmtool).toFixed(4)} of vmtool's plain exits/s`;
  const vsQemu = Number.isNaN(q)
    ? what === "break hit"
      ? "  (QEMU: not measured, its software breakpoint stops the VM on kvm_pvm)"
      : ""
    : `   QEMU ${q.toFixed(0)}   vmtool/QEMU ${(v / q).toFixed(2)}`;
  console.log(`gdb ${what.padEnd(12)} vmtool ${v.toFixed(0)} ${unit[what]}${vsPlain}${vsQemu}`);
}
if (!qemuWorks) console.log(`QEMU: not compared (${QEMU} -M microvm,accel=kvm did not run the guest)`);
console.log(
  `load average at end: ${loadavg()
    .map((l) => l.toFixed(2))
    .join(" ")}`,
);
