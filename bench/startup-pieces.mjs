#!/usr/bin/env node
// What each piece of a Node VMM's start-up costs, wall and CPU (user + system of the child, from this
// process's /proc/self/stat): `node -e 0`; Node with one empty worker thread; Node loading koffi and vmtool's
// KVM bindings (src/kvm); the same in the main thread and in a worker, as `vmtool run` does; `vmtool
// --version` (the command's bundles); `vmtool run` of a guest that exits at once. Rounds alternate the pieces;
// a warm-up round is not counted. Runs natively, and inside the kvm_amd harness through bench/svm-startup.sh,
// where the harness's one software CPU shows what each costs there (docs/linux.md, "Phase by phase").
//   node bench/startup-pieces.mjs [DIST[,DIST...]] [ROUNDS]
// DIST: the build folder, default dist; ROUNDS default 5. With several builds (two ways of building one tree,
// say), the command's pieces run for each in the same rounds, named by their folder.
import { spawnSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { basename, join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { ROOT, flatLongGuest, median, workDir } from "./lib.mjs";

const [distArg, roundsArg] = process.argv.slice(2);
const dists = (distArg || "dist").split(",").map((d) => resolve(ROOT, d));
const ROUNDS = Number(roundsArg || 5);
const work = workDir("vmtool-startup-pieces-");
const quit = flatLongGuest(work, "quit", "xor %eax, %eax\n out %al, $0xf4");
const bindings = pathToFileURL(join(dists[0], "src", "kvm", "ioctls.js")).href;
const script = (name, text) => {
  writeFileSync(join(work, name), text);
  return join(work, name);
};
const emptyWorker = script(
  "empty-worker.mjs",
  `import { Worker } from "node:worker_threads";\nnew Worker("0", { eval: true });\n`,
);
const koffi = script("koffi.mjs", `await import(${JSON.stringify(bindings)});\n`);
const koffiBoth = script(
  "koffi-both.mjs",
  `import { Worker } from "node:worker_threads";\nnew Worker(${JSON.stringify(koffi)});\nawait import(${JSON.stringify(bindings)});\n`,
);
const PIECES = {
  "node -e 0": [["-e", "0"], 0],
  "node + an empty worker": [[emptyWorker], 0],
  "node + koffi and the KVM bindings": [[koffi], 0],
  "the same in main and in a worker": [[koffiBoth], 0],
};
for (const dist of dists) {
  const cli = join(dist, "bundle", "vmtool.cjs");
  const of = dists.length > 1 ? ` (${basename(dist)})` : "";
  PIECES[`vmtool --version${of}`] = [[cli, "--version"], 0];
  PIECES[`vmtool run, guest exits at once${of}`] = [
    [cli, "run", "--mode", "long", "--load", "0x100000", quit],
    1,
  ];
}

/** CPU ms of this process's waited-for children so far (cutime + cstime, USER_HZ 100). */
function childrenCpu() {
  const f = readFileSync("/proc/self/stat", "latin1").split(") ")[1].split(" ");
  return (Number(f[13]) + Number(f[14])) * 10;
}

const samples = Object.fromEntries(Object.keys(PIECES).map((k) => [k, { wall: [], cpu: [] }]));
for (let round = 0; round <= ROUNDS; round++)
  for (const [name, [args, status]] of Object.entries(PIECES)) {
    const c0 = childrenCpu();
    const t0 = performance.now();
    const r = spawnSync(process.execPath, args, { stdio: ["ignore", "ignore", "pipe"], encoding: "utf8" });
    const wall = performance.now() - t0;
    if (r.status !== status) throw new Error(`${name}: status ${r.status}, expected ${status}: ${r.stderr}`);
    if (round === 0) continue; // warm-up: page cache, code caches
    samples[name].wall.push(wall);
    samples[name].cpu.push(childrenCpu() - c0);
  }
const m = Object.fromEntries(
  Object.entries(samples).map(([k, v]) => [k, { wall: median(v.wall), cpu: median(v.cpu) }]),
);
const node = m["node -e 0"];
const width = Math.max(...Object.keys(m).map((k) => k.length));
console.log(`medians of ${ROUNDS} alternating rounds, ms (CPU: user + system, 10 ms ticks):`);
console.log(
  `  ${"".padEnd(width)} ${"wall".padStart(7)} ${"CPU".padStart(7)} ${"CPU over node -e 0".padStart(19)}`,
);
for (const [k, v] of Object.entries(m))
  console.log(
    `  ${k.padEnd(width)} ${v.wall.toFixed(0).padStart(7)} ${v.cpu.toFixed(0).padStart(7)} ${(v.cpu - node.cpu).toFixed(0).padStart(19)}   [${samples[k].wall.map((x) => x.toFixed(0)).join(" ")}]`,
  );
