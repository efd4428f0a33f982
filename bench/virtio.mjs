#!/usr/bin/env node
// virtio-rng throughput from the guest, against the same VM's plain port-I/O exit as the reference.
//   guest/examples/virtio-rng-bench.c: 1000 requests of 4 KiB, one after the other (notify, poll the used
//   ring). The notify is an ioeventfd, so it costs no exit to user space: the I/O worker wakes on the eventfd,
//   fills the buffer and updates the used ring. Reported: MB/s, requests/s, user-space exits per request, and
//   the time of one request against the time of one port-I/O exit of exits-200k (the fastest thing a guest can
//   ask of vmtool). Times are the vCPU run loop's own (--stats --json wallMs), medians of BENCH_RUNS.
// QEMU's microvm is not compared: it boots only Linux/PVH kernels, and the SDK guests are plain ELF32
// (see docs/run.md, "Speed").
// Usage: VMTOOL_DIST=.dist-x node bench/virtio.mjs      BENCH_RUNS=7 node bench/virtio.mjs
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
const DIST = join(ROOT, process.env.VMTOOL_DIST || "dist");
const CLI = join(DIST, "src", "cli", "main.js");
const RUNS = Number(process.env.BENCH_RUNS || 5);
const REQUESTS = 1000;
const REQUEST_BYTES = 4096;
const PORT_EXITS = 200_000;

const work = mkdtempSync(join(tmpdir(), "vmtool-bench-virtio-"));
process.on("exit", () => rmSync(work, { recursive: true, force: true }));
execFileSync("make", ["-s", "-C", join(ROOT, "guest"), `OUT=${work}`], {
  stdio: ["ignore", "ignore", "inherit"],
});

function stats(args) {
  const r = spawnSync(process.execPath, [CLI, "run", "--json", ...args], { encoding: "utf8", input: "" });
  if (r.status !== 0) throw new Error(`vmtool ${args.join(" ")}: status ${r.status}\n${r.stderr}`);
  return JSON.parse(r.stderr.trim().split("\n").pop());
}
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

const rng = [];
const port = [];
for (let i = 0; i < RUNS; i++) {
  process.stderr.write(`run ${i + 1}/${RUNS}\r`);
  rng.push(stats(["--rng", join(work, "virtio-rng-bench.elf")]));
  port.push(stats([join(work, "exits-200k.elf")]));
}
const rngMs = median(rng.map((s) => s.wallMs));
const portMs = median(port.map((s) => s.wallMs));
const last = rng[rng.length - 1];
const usPerRequest = (rngMs * 1000) / REQUESTS;
const usPerExit = (portMs * 1000) / PORT_EXITS;
console.log(`virtio-rng, ${REQUESTS} requests of ${REQUEST_BYTES} bytes (median of ${RUNS}):`);
console.log(
  `  ${((REQUESTS * REQUEST_BYTES) / (rngMs * 1000)).toFixed(1)} MB/s, ${Math.round((REQUESTS * 1000) / rngMs)} requests/s`,
);
console.log(
  `  user-space exits per request: ${(last.exits / REQUESTS).toFixed(3)} (${last.exits} exits in all, set-up included); ` +
    `notifies through ioeventfd: ${last.ioeventfdNotifies}; register accesses forwarded: ${last.forwarded}`,
);
console.log(`port-I/O baseline (exits-200k, same VMM): ${usPerExit.toFixed(1)} µs per exit`);
console.log(
  `ratio: one virtio-rng request of 4 KiB costs ${(usPerRequest / usPerExit).toFixed(2)} port-I/O exits (${usPerRequest.toFixed(1)} µs)`,
);
