#!/usr/bin/env node
// Per-exit cost of one guest under `vmtool run` and under the project's C reference VMM (bench/c/ref-vmm.c),
// on whatever KVM backend this machine has. scripts/svm-bench.sh runs it on the host and inside the kvm_amd
// VM (docs/svm.md) with the same guest images and the same static ref-vmm binary.
//
//   node scripts/svm-exit-cost.mjs CLI REF_VMM EXITS_BIN QUIT_BIN EXITS RUNS
//
// EXITS_BIN: a flat long-mode binary at 1 MiB doing EXITS `out` to port 0xE9, then a write to the exit port;
// QUIT_BIN: the same without the loop. Per-exit cost = (wall(EXITS_BIN) - wall(QUIT_BIN)) / EXITS, so start-up
// does not count; medians of RUNS alternating runs. Prints one JSON line.
import { spawnSync } from "node:child_process";

const [cli, ref, exitsBin, quitBin, exitsArg, runsArg] = process.argv.slice(2);
if (!runsArg) {
  console.error("usage: svm-exit-cost.mjs CLI REF_VMM EXITS_BIN QUIT_BIN EXITS RUNS");
  process.exit(2);
}
const exits = Number(exitsArg);
const runs = Number(runsArg);

/** Wall time in ms of one run; the guest ends through the exit port with 0, so the status is 1. */
function timed(cmd, args) {
  const t0 = process.hrtime.bigint();
  const r = spawnSync(cmd, args, { stdio: ["ignore", "ignore", "pipe"] });
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  if (r.status !== 1) throw new Error(`${cmd} ${args.join(" ")}: status ${r.status}: ${r.stderr}`);
  return ms;
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
// The same machine for both: long mode, image at 1 MiB, the in-kernel irqchip.
const vmtool = (bin) => [process.execPath, [cli, "run", "--mode", "long", "--load", "0x100000", bin]];
const cref = (bin) => [ref, ["--irqchip", "long", "0x100000", bin]];
const t = { vmtoolExits: [], vmtoolQuit: [], refExits: [], refQuit: [] };
for (let i = 0; i < runs; i++) {
  t.refExits.push(timed(...cref(exitsBin)));
  t.refQuit.push(timed(...cref(quitBin)));
  t.vmtoolExits.push(timed(...vmtool(exitsBin)));
  t.vmtoolQuit.push(timed(...vmtool(quitBin)));
}
const m = Object.fromEntries(Object.entries(t).map(([k, v]) => [k, median(v)]));
const ns = (a, b) => Math.round(((a - b) * 1e6) / exits);
console.log(
  JSON.stringify({
    exits,
    runs,
    refNsPerExit: ns(m.refExits, m.refQuit),
    vmtoolNsPerExit: ns(m.vmtoolExits, m.vmtoolQuit),
    medianMs: m,
  }),
);
