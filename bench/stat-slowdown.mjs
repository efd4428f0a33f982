#!/usr/bin/env node
// `vmtool stat`'s benchmark (not a test): how much a guest slows down while `vmtool stat -s 1` watches it, with
// each source. The guest (one vCPU) makes port and MMIO exits as fast as it can; its exit rate is read from
// vmtool's own live counters over WINDOW seconds, with nothing watching and then with stat watching it through
// each source, conditions alternated in RUNS rounds; medians, and each rate as a ratio of the unwatched one.
// Two rates: per second of wall time (what the guest gets; stat's own CPU use competes with it), and per second
// of CPU time of the vCPU's thread (/proc/<pid>/task/<tid>/schedstat: what each exit costs, whatever else the
// host runs; on this shared 2-CPU machine the wall-time rate moves with the other sessions' load).
// Usage: node bench/stat-slowdown.mjs      (VMTOOL_DIST=.dist-x; BENCH_RUNS=5 BENCH_WINDOW=3)
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { ROOT, flatLongGuest, median, workDir } from "./lib.mjs";

const DIST = join(ROOT, process.env.VMTOOL_DIST || "dist");
const CLI = join(DIST, "src", "cli", "main.js");
const RUNS = Number(process.env.BENCH_RUNS || 5);
const WINDOW = Number(process.env.BENCH_WINDOW || 3);
const { CountersReader, findRuns } = await import(join(DIST, "src", "stats", "run-dirs.js"));

const work = workDir("vmtool-bench-stat-slow-");
const busy = flatLongGuest(
  work,
  "busy",
  `  mov $0xe0000000, %ebx
  1: out %al, $0x80
     mov (%rbx), %eax
     jmp 1b`,
);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const vm = spawn(process.execPath, [CLI, "run", "--mode", "long", "--load", "0x100000", busy], {
  stdio: "ignore",
});
process.on("exit", () => vm.kill("SIGKILL"));
let reader;
for (let i = 0; i < 200 && !reader; i++) {
  const run = findRuns().get(vm.pid);
  if (run) reader = CountersReader.open(run.dir);
  else await sleep(50);
}
if (!reader) throw new Error("the VM did not publish its counters");
const exits = () => reader.read().reduce((s, v) => s + v.reasons.reduce((a, b) => a + b, 0), 0);
let tid = 0;
for (let i = 0; i < 200 && !(tid = reader.read()[0].tid); i++) await sleep(50);
const cpuNs = () => Number(readFileSync(`/proc/${vm.pid}/task/${tid}/schedstat`, "utf8").split(" ")[0]);

const pid = String(vm.pid);
const conditions = {
  "nothing watching": null,
  "stats (binary stats fds)": ["--source", "stats", "-p", pid],
  "vmtool (live counters)": ["--source", "vmtool", "-p", pid],
  "auto (stats + vmtool)": ["-p", pid],
  debugfs: ["--source", "debugfs", "-p", pid],
  "tracepoints, per thread (-p)": ["--source", "tracepoints", "-p", pid],
  "tracepoints, per host CPU (-t)": ["-t"],
};

async function rate(args) {
  let stat;
  if (args) {
    stat = spawn(process.execPath, [CLI, "stat", "--json", "-s", "1", ...args], {
      stdio: ["ignore", "pipe", "ignore"],
    });
    // Watching: its first line is out once every counter it needs is open.
    await new Promise((r) => stat.stdout.once("data", r));
  }
  await sleep(500);
  const e0 = exits();
  const c0 = cpuNs();
  const t0 = performance.now();
  await sleep(WINDOW * 1000);
  const n = exits() - e0;
  const r = { wall: (n * 1000) / (performance.now() - t0), cpu: (n * 1e9) / (cpuNs() - c0) };
  if (stat) {
    stat.kill("SIGTERM");
    await new Promise((res) => stat.on("exit", res));
  }
  return r;
}

const samples = Object.fromEntries(Object.keys(conditions).map((k) => [k, []]));
for (let i = 0; i < RUNS; i++) {
  for (const [name, args] of Object.entries(conditions)) samples[name].push(await rate(args));
  process.stderr.write(`bench: round ${i + 1}/${RUNS}\n`);
}
const base = (k) => median(samples["nothing watching"].map((x) => x[k]));
console.log(
  `\n${CLI}\nthe guest's exit rate while vmtool stat --json -s 1 watches it, medians of ${RUNS} alternating rounds:`,
);
console.log(
  `  ${"".padEnd(32)}${"exits/s (wall)".padStart(16)}${"ratio".padStart(7)}${"exits/CPU-s".padStart(14)}${"ratio".padStart(7)}`,
);
for (const [name, xs] of Object.entries(samples)) {
  const w = median(xs.map((x) => x.wall));
  const c = median(xs.map((x) => x.cpu));
  console.log(
    `  ${name.padEnd(32)}${Math.round(w).toLocaleString("en").padStart(16)}${(w / base("wall")).toFixed(3).padStart(7)}` +
      `${Math.round(c).toLocaleString("en").padStart(14)}${(c / base("cpu")).toFixed(3).padStart(7)}` +
      `   [${xs.map((x) => Math.round(x.cpu / 1000)).join(" ")}]k/CPU-s`,
  );
}
vm.kill("SIGKILL");
