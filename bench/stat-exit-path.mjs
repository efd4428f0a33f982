#!/usr/bin/env node
// What vmtool's live exit counters cost the exit path (not a test): every exit of every `vmtool run` counts
// itself in the run's counters file (src/vmm/live-counters.ts). Measurements, each against a reference in the
// same run:
//   (a) LiveExitCounters.add() for a port exit and for an MMIO exit, in a loop over the real mapped counters
//       file of a run directory (ns per call, the loop included); and that time as a share of one exit of
//       vmtool run (the 200,000-exit guest of bench/run-all.mjs, timed here).
//   with BENCH_BEFORE=<output folder of a build without the counters, under the repository root>:
//   (b) bench/run-all.mjs's exit-throughput ratio (vmtool against the C reference VMM) of both builds, in
//       alternating rounds, medians;
//   (c) the CPU time (user + system) per exit of both builds, alternating rounds, medians.
// Usage: node bench/stat-exit-path.mjs
//        BENCH_BEFORE=.dist-before BENCH_ROUNDS=6 node bench/stat-exit-path.mjs
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { ROOT, flatLongGuest, median, timed, workDir } from "./lib.mjs";

const DIST = join(ROOT, process.env.VMTOOL_DIST || "dist");
const CLI = join(DIST, "src", "cli", "main.js");
const { LiveExitCounters, LIVE_ACCESS } = await import(join(DIST, "src", "vmm", "live-counters.js"));
const { RunDirectory } = await import(join(DIST, "src", "vmm", "run-dir.js"));

const work = workDir("vmtool-bench-exitpath-");
const N = 20_000_000;

// (a) the counter itself
const run = RunDirectory.create(
  1,
  { memSize: 1 << 20, vmFd: 0, vmStatsFd: -1, vcpus: [{ id: 0, fd: 0, statsFd: -1 }] },
  join(work, "runs"),
);
if (!run) throw new Error("cannot publish a run in the scratch folder");
const live = new LiveExitCounters(run.vcpuCounters(0));
// One loop per kind (each stays monomorphic); the time per call includes the loop's own (an upper bound).
function portLoop() {
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < N; i++) live.add(2, 0xe9 + (i & 1), LIVE_ACCESS.PIO_OUT);
  return Number(process.hrtime.bigint() - t0) / N;
}
function mmioLoop() {
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < N; i++) live.add(6, 0xd000_0000 + (i & 7) * 4, LIVE_ACCESS.MMIO_WRITE);
  return Number(process.hrtime.bigint() - t0) / N;
}
const ns = { pio: [], mmio: [] };
for (let r = 0; r < 7; r++) {
  ns.pio.push(portLoop());
  ns.mmio.push(mmioLoop());
}
run.close();
const pio = median(ns.pio);
const mmio = median(ns.mmio);

const EXITS = 200_000;
const exitsGuest = flatLongGuest(
  work,
  "exits",
  `  mov $${EXITS - 1}, %ecx
     mov $0x2e, %al
  1: out %al, $0xe9
     dec %ecx
     jnz 1b
     xor %eax, %eax
     out %al, $0xf4`,
);
const quitGuest = flatLongGuest(work, "quit", "xor %eax, %eax\n out %al, $0xf4");
const runArgs = (cli, bin) => [cli, "run", "--mode", "long", "--load", "0x100000", bin];
const perExit = [];
for (let r = 0; r < 3; r++) {
  const full = timed(process.execPath, runArgs(CLI, exitsGuest), 1).ms;
  const none = timed(process.execPath, runArgs(CLI, quitGuest), 1).ms;
  perExit.push(((full - none) * 1e6) / EXITS);
}
const exitNs = median(perExit);
console.log(
  `\n(a) LiveExitCounters.add(), ${N.toLocaleString("en")} calls, medians of 7 (the loop's own cost included):`,
);
console.log(`  port exit  ${pio.toFixed(1)} ns     MMIO exit  ${mmio.toFixed(1)} ns`);
console.log(
  `  one exit of vmtool run here: ${(exitNs / 1000).toFixed(1)} µs: the counter is ${((100 * pio) / exitNs).toFixed(3)}% of a port exit`,
);

// (b) the whole exit path, against a build without the counters
const before = process.env.BENCH_BEFORE;
// BENCH_SKIP_RUN_ALL=1: only (c), which is quicker and less noisy.
if (before && process.env.BENCH_SKIP_RUN_ALL !== "1") {
  const rounds = Number(process.env.BENCH_ROUNDS || 6);
  const ratio = (dist) => {
    const r = spawnSync(process.execPath, [join(ROOT, "bench", "run-all.mjs")], {
      encoding: "utf8",
      env: { ...process.env, VMTOOL_DIST: dist, BENCH_RUNS: "3" },
    });
    const m = /ratio vmtool \/ C = ([\d.]+)/.exec(r.stdout);
    if (!m) throw new Error(`run-all.mjs with ${dist}: ${r.stderr}`);
    return Number(m[1]);
  };
  const a = [];
  const b = [];
  for (let i = 0; i < rounds; i++) {
    a.push(ratio(before));
    b.push(ratio(process.env.VMTOOL_DIST || "dist"));
    process.stderr.write(`bench: round ${i + 1}/${rounds}\n`);
  }
  console.log(
    `\n(b) bench/run-all.mjs exit-throughput ratio (vmtool / C ref), ${rounds} alternating rounds:`,
  );
  console.log(`  without the counters (${before})  median ${median(a).toFixed(2)}   [${a.join(" ")}]`);
  console.log(`  with them                        median ${median(b).toFixed(2)}   [${b.join(" ")}]`);
}

// (c) CPU time per exit of both builds (user + system of the whole vmtool process, from /usr/bin/time): the
// host's other load changes when a run is scheduled far more than what it costs.
if (before) {
  const rounds = Number(process.env.BENCH_ROUNDS || 6);
  const cpu = (dist, bin) => {
    const cli = join(ROOT, dist, "src", "cli", "main.js");
    const r = spawnSync("/usr/bin/time", ["-f", "%U %S", process.execPath, ...runArgs(cli, bin)], {
      encoding: "utf8",
    });
    const m = /(\d+\.\d+) (\d+\.\d+)\s*$/.exec(r.stderr);
    if (r.status !== 1 || !m) throw new Error(`${cli}: status ${r.status}: ${r.stderr}`);
    return Number(m[1]) + Number(m[2]);
  };
  const perExit = (dist) => ((cpu(dist, exitsGuest) - cpu(dist, quitGuest)) * 1e6) / EXITS;
  const a = [];
  const b = [];
  for (let i = 0; i < rounds; i++) {
    a.push(perExit(before));
    b.push(perExit(process.env.VMTOOL_DIST || "dist"));
  }
  console.log(`\n(c) CPU time per exit (µs, user + system of vmtool run, ${rounds} alternating rounds):`);
  console.log(
    `  without the counters  median ${median(a).toFixed(2)}   [${a.map((x) => x.toFixed(2)).join(" ")}]`,
  );
  console.log(
    `  with them             median ${median(b).toFixed(2)}   [${b.map((x) => x.toFixed(2)).join(" ")}]`,
  );
  console.log(`  ratio with / without  ${(median(b) / median(a)).toFixed(3)}`);
}
