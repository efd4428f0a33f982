#!/usr/bin/env node
// Start-up benchmark of `vmtool run` (issue 2, "Speed"): a long-mode guest that halts at once (cli; hlt).
// Alternating runs, medians of RUNS, of:
//   - a bare `node -e 0` (Node's own start-up, the floor for any Node program);
//   - the C reference VMM (bench/c/ref-vmm.c), without and with the in-kernel irqchip vmtool creates (with
//     it, the guest ends through the exit port: KVM keeps a HLT inside the kernel);
//   - vmtool as installed (the bundled command, package.json "bin"), and the separate compiled modules;
//   - the guest that ends through the exit port, under vmtool.
// Prints vmtool's own part (vmtool - node -e 0, goal < 50 ms) and the ratios, then a median timeline of one
// vmtool run from its VMTOOL_STARTUP_MARKS marks (ms since the process started, both threads).
// Usage: node bench/startup.mjs            (VMTOOL_DIST=.dist-x for another output folder; BENCH_RUNS=15)
import { existsSync } from "node:fs";
import { join } from "node:path";
import { ROOT, buildRefVmm, flatLongGuest, median, timed, workDir } from "./lib.mjs";

const DIST = join(ROOT, process.env.VMTOOL_DIST || "dist");
const BUNDLE = join(DIST, "bundle", "vmtool.cjs");
const MODULES = join(DIST, "src", "cli", "main.js");
const RUNS = Number(process.env.BENCH_RUNS || 11);
if (!existsSync(BUNDLE)) throw new Error(`${BUNDLE} is missing: run npm run build (or scripts/bundle.mjs)`);

const work = workDir("vmtool-startup-");
const guest = (name, source) => flatLongGuest(work, name, source);
const haltGuest = guest("halt", "cli\n hlt");
const quitGuest = guest("quit", "xor %eax, %eax\n out %al, $0xf4");
const refVmm = buildRefVmm(work);

const run = (cli, bin) => [cli, "run", "--mode", "long", "--load", "0x100000", bin];
const cases = {
  "node -e 0": () => timed(process.execPath, ["-e", "0"], 0),
  "C ref, halt": () => timed(refVmm, ["long", "0x100000", haltGuest], 0),
  "C ref + irqchip, exit port": () => timed(refVmm, ["--irqchip", "long", "0x100000", quitGuest], 1),
  "vmtool, halt": () => timed(process.execPath, run(BUNDLE, haltGuest), 0),
  "vmtool, exit port": () => timed(process.execPath, run(BUNDLE, quitGuest), 1),
  "vmtool modules, halt": () => timed(process.execPath, run(MODULES, haltGuest), 0),
};
const markEnv = { ...process.env, VMTOOL_STARTUP_MARKS: "1" };
const marked = () => timed(process.execPath, run(BUNDLE, haltGuest), 0, markEnv);

const samples = Object.fromEntries(Object.keys(cases).map((k) => [k, []]));
/** mark name -> ms since process start, per run; plus the wall time seen from here. */
const marks = new Map();
for (const f of Object.values(cases)) f(); // warm-up: page cache
for (let i = 0; i < RUNS; i++) {
  for (const [k, f] of Object.entries(cases)) samples[k].push(f().ms);
  const r = marked();
  for (const line of r.stderr.split("\n")) {
    const m = /^startup:\s+([\d.]+) (\w+) (.*)$/.exec(line);
    if (!m) continue;
    const key = `${m[2]}  ${m[3].replace(/: .*$/, "")}`;
    if (!marks.has(key)) marks.set(key, []);
    marks.get(key).push(Number(m[1]));
  }
  if (!marks.has("wall")) marks.set("wall", []);
  marks.get("wall").push(r.ms);
  process.stderr.write(`startup bench: round ${i + 1}/${RUNS}\n`);
}
const m = Object.fromEntries(Object.entries(samples).map(([k, v]) => [k, median(v)]));

console.log(`\nmedians of ${RUNS} alternating runs (wall ms, raw samples in brackets):`);
for (const [k, v] of Object.entries(m))
  console.log(
    `  ${k.padEnd(28)} ${v.toFixed(1).padStart(7)}   [${samples[k].map((x) => x.toFixed(0)).join(" ")}]`,
  );
const node = m["node -e 0"];
const vmtool = m["vmtool, halt"];
console.log(`\nvmtool run, a guest that halts at once:`);
console.log(`  vmtool's own part (vmtool - node -e 0)   ${(vmtool - node).toFixed(1)} ms   (goal < 50 ms)`);
// The same from each round's pair (the two runs are seconds apart): steadier when the machine's speed drifts.
const paired = median(samples["vmtool, halt"].map((v, i) => v - samples["node -e 0"][i]));
console.log(`  the same, median of the rounds' own differences  ${paired.toFixed(1)} ms`);
console.log(`  ratio vmtool / node -e 0                 ${(vmtool / node).toFixed(2)}`);
console.log(`  ratio vmtool / C reference               ${(vmtool / m["C ref, halt"]).toFixed(1)}`);
console.log(
  `  exit-port guest: own part ${(m["vmtool, exit port"] - node).toFixed(1)} ms; ` +
    `vs C reference with the same irqchip: ${(m["vmtool, exit port"] / m["C ref + irqchip, exit port"]).toFixed(1)}x`,
);
console.log(`  bundle vs separate modules: ${(m["vmtool modules, halt"] - vmtool).toFixed(1)} ms saved`);

console.log(`\nmedian timeline of a marked run (VMTOOL_STARTUP_MARKS=1, ms since process start):`);
const rows = [...marks.entries()].map(([k, v]) => [k, median(v)]).sort((a, b) => a[1] - b[1]);
for (const [k, v] of rows) console.log(`  ${v.toFixed(1).padStart(7)}  ${k}`);
