#!/usr/bin/env node
// vmtool's benchmarks (not tests): each prints ratios against a reference run in the same script.
//   (a) exit throughput: a long-mode guest doing 200,000 `out` to the debug console (0xE9), then a write to
//       the exit port; vmtool against a C reference VMM (bench/c/ref-vmm.c, compiled here with gcc) running
//       the same guest binary on the same machine set-up, alternating runs, median of RUNS. Exits/s are
//       computed from wall times minus each program's own time for a guest that exits at once, so that
//       start-up does not count. Goal: ratio >= 0.9.
//   (b) start-up: a guest that halts at once (cli; hlt): wall time of vmtool, of the C reference and of a bare
//       `node -e 0`; vmtool's own part is vmtool minus node. Goal: under 50 ms. bench/startup.mjs breaks it down.
// Usage: npm run bench            (VMTOOL_DIST=.dist-x node bench/run-all.mjs uses another output folder)
//        BENCH_RUNS=7 node bench/run-all.mjs
import { existsSync } from "node:fs";
import { join } from "node:path";
import { ROOT, buildRefVmm, flatLongGuest, median, timed as timedRun, workDir } from "./lib.mjs";

const DIST = join(ROOT, process.env.VMTOOL_DIST || "dist");
// The command as installed (package.json "bin": the bundle), else the separate compiled modules.
const BUNDLE = join(DIST, "bundle", "vmtool.cjs");
const CLI = existsSync(BUNDLE) ? BUNDLE : join(DIST, "src", "cli", "main.js");
const RUNS = Number(process.env.BENCH_RUNS || 5);
const EXITS = 200_000;

const work = workDir("vmtool-bench-");
const guest = (name, source) => flatLongGuest(work, name, source);

const exitsGuest = guest(
  "exits",
  `  mov $${EXITS - 1}, %ecx
     mov $0x2e, %al
  1: out %al, $0xe9
     dec %ecx
     jnz 1b
     mov $0x0a, %al
     out %al, $0xe9
     xor %eax, %eax
     out %al, $0xf4`,
);
const quitGuest = guest("quit", "xor %eax, %eax\n out %al, $0xf4");
const haltGuest = guest("halt", "cli\n hlt");

const refVmm = buildRefVmm(work);

/** Wall time in ms of one run; checks the exit status. */
const timed = (cmd, args, wantStatus) => timedRun(cmd, args, wantStatus).ms;

const vmtoolRun = (bin) => [CLI, "run", "--mode", "long", "--load", "0x100000", bin];
const cases = {
  "vmtool 200k exits": () => timed(process.execPath, vmtoolRun(exitsGuest), 1),
  "C ref 200k exits": () => timed(refVmm, ["--irqchip", "long", "0x100000", exitsGuest], 1),
  "vmtool exit at once": () => timed(process.execPath, vmtoolRun(quitGuest), 1),
  "C ref exit at once": () => timed(refVmm, ["--irqchip", "long", "0x100000", quitGuest], 1),
  "vmtool halt at once": () => timed(process.execPath, vmtoolRun(haltGuest), 0),
  "C ref halt at once": () => timed(refVmm, ["long", "0x100000", haltGuest], 0),
  "node -e 0": () => timed(process.execPath, ["-e", "0"], 0),
};

const samples = Object.fromEntries(Object.keys(cases).map((k) => [k, []]));
// One warm-up round (page cache, gcc output), then RUNS alternating rounds.
for (const f of Object.values(cases)) f();
for (let i = 0; i < RUNS; i++) {
  for (const [k, f] of Object.entries(cases)) samples[k].push(f());
  process.stderr.write(`bench: round ${i + 1}/${RUNS}\n`);
}
const m = Object.fromEntries(Object.entries(samples).map(([k, v]) => [k, median(v)]));

const fmt = (v) => v.toFixed(1).padStart(8);
console.log(`\n${CLI}\nmedians of ${RUNS} alternating runs (wall ms):`);
for (const [k, v] of Object.entries(m))
  console.log(`  ${k.padEnd(22)} ${fmt(v)}   [${samples[k].map((x) => x.toFixed(0)).join(" ")}]`);

const vmtoolRate = EXITS / ((m["vmtool 200k exits"] - m["vmtool exit at once"]) / 1000);
const refRate = EXITS / ((m["C ref 200k exits"] - m["C ref exit at once"]) / 1000);
console.log(`\n(a) exit throughput, ${EXITS} OUTs to port 0xE9 (long mode, in-kernel irqchip on both):`);
console.log(`  vmtool  ${Math.round(vmtoolRate).toLocaleString("en")} exits/s`);
console.log(`  C ref   ${Math.round(refRate).toLocaleString("en")} exits/s`);
console.log(`  ratio vmtool / C = ${(vmtoolRate / refRate).toFixed(2)}   (goal >= 0.9)`);

const own = m["vmtool halt at once"] - m["node -e 0"];
console.log(`\n(b) start-up, a guest that halts at once (cli; hlt):`);
console.log(
  `  vmtool ${m["vmtool halt at once"].toFixed(1)} ms, C ref ${m["C ref halt at once"].toFixed(1)} ms, node -e 0 ${m["node -e 0"].toFixed(1)} ms`,
);
console.log(`  vmtool's own part (vmtool - node -e 0) = ${own.toFixed(1)} ms   (goal < 50 ms)`);
console.log(`  ratio vmtool / C ref = ${(m["vmtool halt at once"] / m["C ref halt at once"]).toFixed(1)}`);
console.log(
  `  (a guest that ends through the exit port at once: vmtool ${m["vmtool exit at once"].toFixed(1)} ms, own part ${(m["vmtool exit at once"] - m["node -e 0"]).toFixed(1)} ms)`,
);
