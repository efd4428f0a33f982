#!/usr/bin/env node
// The observer's benchmark (not a test): prints ratios against a reference run in the same script.
//   (a) one poll of a 256-CPU × 4,000-vCPU module tree (each vCPU seen on 4 CPUs: 16,000 32-byte VMCS files):
//       wall and CPU time of the observer's reader against the floor, a plain recursive read of the same tree
//       in Node (readdir every folder, readFileSync every file). Medians of RUNS, runs alternated, warm cache.
//       Goal: within 2x of the floor. A names-only walk (readdir, no reads) is shown for scale.
//   (b) `vmtool watch --interval 1` on a 64-CPU × 500-vCPU tree (2,000 files): CPU used per second of
//       watching, in steady state: (CPU of a run of LONG polls - CPU of a run of SHORT polls) / (LONG - SHORT)
//       seconds, so that start-up does not count. Goal: under 1% of one core. The floor's CPU for one read of
//       that tree per second is shown beside it.
// Usage: node bench/observer-poll.mjs        (VMTOOL_DIST=.dist-x uses another output folder; BENCH_RUNS=9)
import { readdirSync, readFileSync, mkdtempSync, rmSync } from "node:fs";
import { spawnSync } from "node:child_process";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
const DIST = join(ROOT, process.env.VMTOOL_DIST || "dist");
const CLI = join(DIST, "src", "cli", "main.js");
const RUNS = Number(process.env.BENCH_RUNS || 7);
const { readModuleTree, ModuleSource } = await import(join(DIST, "src", "observer", "module-tree.js"));
const { writeModuleTree } = await import(join(DIST, "test", "observer", "fake-module-tree.js"));

const work = mkdtempSync(join(tmpdir(), "vmtool-bench-observer-"));
process.on("exit", () => rmSync(work, { recursive: true, force: true }));

/** The floor: the simplest Node code that reads every file of the tree. */
function plainRead(dir) {
  let n = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) n += plainRead(p);
    else n += readFileSync(p).length > 0 ? 1 : 0;
  }
  return n;
}
/** For scale: names only. */
function namesOnly(dir) {
  let n = 0;
  for (const e of readdirSync(dir, { withFileTypes: true }))
    n += e.isDirectory() ? namesOnly(join(dir, e.name)) : 1;
  return n;
}

function measure(fn) {
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  fn();
  const wall = performance.now() - t0;
  const c = process.cpuUsage(c0);
  return { wall, cpu: (c.user + c.system) / 1000 };
}
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

// (a) one poll of the large tree
const big = join(work, "big");
const now = Math.floor(Date.now() / 1000);
const files = writeModuleTree(big, { cpus: 256, vcpus: 4000, cpusPerVcpu: 4, now });
// What `watch` uses on a copied tree: descriptors kept between polls (on the live debugfs it cannot: see
// ModuleSource; there every poll is like the first).
const source = new ModuleSource(big, { globals: false, keepOpen: true });
// What `vcpus` and `watch` do on the live debugfs (kernelTree: its files are the kernel's, opened unchecked).
const LIVE = { kernelTree: true };
const runs = { observer: [], steady: [], floor: [], names: [] };
for (let i = 0; i < 2; i++) {
  // warm the cache and the JIT
  plainRead(big);
  readModuleTree(big, LIVE);
  source.poll();
}
for (let i = 0; i < RUNS; i++) {
  const order = i % 2 ? ["floor", "observer", "steady", "names"] : ["steady", "observer", "floor", "names"];
  const fns = {
    observer: () => readModuleTree(big, LIVE),
    steady: () => source.poll(),
    floor: () => plainRead(big),
    names: () => namesOnly(big),
  };
  for (const k of order) {
    const fn = fns[k];
    runs[k].push(measure(fn));
  }
}
const check = readModuleTree(big);
if (check.sightings.length !== files || check.problems.length !== 0)
  throw new Error("the reader did not see the tree");
const row = (k) => {
  const w = median(runs[k].map((r) => r.wall));
  const c = median(runs[k].map((r) => r.cpu));
  return { w, c };
};
const o = row("observer"),
  st = row("steady"),
  f = row("floor"),
  nm = row("names");
console.log(`(a) one poll of a 256-CPU x 4,000-vCPU module tree (${files} VMCS files), median of ${RUNS}:`);
console.log(`    observer, open/read/close     wall ${o.w.toFixed(1)} ms   cpu ${o.c.toFixed(1)} ms`);
console.log(`    observer, kept descriptors    wall ${st.w.toFixed(1)} ms   cpu ${st.c.toFixed(1)} ms`);
console.log(`    floor (plain recursive read)  wall ${f.w.toFixed(1)} ms   cpu ${f.c.toFixed(1)} ms`);
console.log(`    names only (readdir walk)     wall ${nm.w.toFixed(1)} ms   cpu ${nm.c.toFixed(1)} ms`);
console.log(
  `    ratio observer/floor: open/read/close wall ${(o.w / f.w).toFixed(2)}x cpu ${(o.c / f.c).toFixed(2)}x; ` +
    `kept descriptors wall ${(st.w / f.w).toFixed(2)}x cpu ${(st.c / f.c).toFixed(2)}x (goal: <= 2x)`,
);

// (b) watch --interval 1 on 64 x 500
const mid = join(work, "mid");
writeModuleTree(mid, { cpus: 64, vcpus: 500, cpusPerVcpu: 4, now });
const SHORT = 2,
  LONG = Number(process.env.BENCH_WATCH_POLLS || 22);
/** CPU seconds (user+sys) of one `vmtool watch` run of `polls` polls, from the shell's `times`. */
function watchCpu(polls) {
  const r = spawnSync(
    "bash",
    [
      "-c",
      `'${process.execPath}' '${CLI}' watch --debugfs '${mid}' --interval 1 --count ${polls} --json >/dev/null; times`,
    ],
    { encoding: "utf8" },
  );
  if (r.status !== 0) throw new Error(r.stderr);
  const line = r.stdout.trim().split("\n")[1]; // children: "0m0.120s 0m0.030s"
  const [u, s] = line.split(" ").map((t) => {
    const m = /(\d+)m([\d.]+)s/.exec(t);
    return Number(m[1]) * 60 + Number(m[2]);
  });
  return u + s;
}
const short = watchCpu(SHORT);
const long = watchCpu(LONG);
const perSecond = (long - short) / (LONG - SHORT);
const floorMid = median(Array.from({ length: RUNS }, () => measure(() => plainRead(mid)).cpu));
// On the live debugfs `watch` opens every file at every poll: its per-poll cost is readModuleTree's.
for (let i = 0; i < 3; i++) readModuleTree(mid, LIVE);
const plainMid = median(Array.from({ length: RUNS }, () => measure(() => readModuleTree(mid, LIVE)).cpu));
console.log(`(b) vmtool watch --interval 1 on a 64-CPU x 500-vCPU tree (2,000 files), steady state:`);
console.log(
  `    copied tree (kept descriptors), the whole process: ${LONG} polls ${long.toFixed(2)} s CPU, ${SHORT} polls ${short.toFixed(2)} s CPU`,
);
console.log(`    => ${(perSecond * 100).toFixed(2)}% of one core (goal: < 1%)`);
console.log(
  `    live-debugfs mode (open/read/close), polls only: ${(plainMid / 10).toFixed(2)}% of one core; ` +
    `floor read once a second: ${(floorMid / 10).toFixed(2)}%`,
);
