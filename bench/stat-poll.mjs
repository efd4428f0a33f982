#!/usr/bin/env node
// `vmtool stat`'s benchmark (not a test): the cost of one poll of each source, for a `vmtool run` of 1, 16 and 64
// vCPUs (vCPU 0 busy making exits, the others waiting for a SIPI), against the floor: a plain pread of the data
// block of the same stats fds (copied once with pidfd_getfd, as stat does), in the same process. CPU time per
// poll in steady state (after a VM's first 5 s, when its descriptors are no longer listed at every poll),
// median of RUNS batches of POLLS polls, sources alternated. The collector is restricted to the one VM
// (`-p`), except "auto, whole host", which also finds every VM of the host (the poll `vmtool stat` makes).
// Usage: node bench/stat-poll.mjs      (VMTOOL_DIST=.dist-x for another build; BENCH_RUNS=7 BENCH_POLLS=200)
import { spawn } from "node:child_process";
import { closeSync, readSync } from "node:fs";
import { join } from "node:path";
import { ROOT, flatLongGuest, median, workDir } from "./lib.mjs";

const DIST = join(ROOT, process.env.VMTOOL_DIST || "dist");
const CLI = join(DIST, "src", "cli", "main.js");
const RUNS = Number(process.env.BENCH_RUNS || 7);
const POLLS = Number(process.env.BENCH_POLLS || 200);
const { StatsCollector } = await import(join(DIST, "src", "stats", "collector.js"));
const { scanProcess } = await import(join(DIST, "src", "stats", "discover.js"));
const { pidfdOpen, pidfdGetfd } = await import(join(DIST, "src", "stats", "sys.js"));
const { BinaryStatsFile } = await import(join(DIST, "src", "stats", "binary-stats.js"));

const work = workDir("vmtool-bench-stat-");
const busy = flatLongGuest(
  work,
  "busy",
  `  mov $0xe0000000, %ebx
  1: out %al, $0x80
     mov (%rbx), %eax
     jmp 1b`,
);

const cpuMs = (fn) => {
  const c0 = process.cpuUsage();
  fn();
  const c = process.cpuUsage(c0);
  return (c.user + c.system) / 1000;
};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function startVm(cpus) {
  const child = spawn(
    process.execPath,
    [CLI, "run", "--cpus", String(cpus), "--mode", "long", "--load", "0x100000", busy],
    {
      stdio: ["ignore", "ignore", "inherit"],
    },
  );
  for (let i = 0; i < 400; i++) {
    const p = scanProcess(child.pid);
    if (p && typeof p === "object" && p.vcpuStatsFds.size === cpus && p.vmStatsFds.length === 1)
      return { child, p };
    await sleep(50);
  }
  throw new Error(`the ${cpus}-vCPU VM did not come up`);
}

/** The floor: the data block of every stats fd, one pread each. */
function floorReader(p) {
  const pidfd = pidfdOpen(p.pid);
  const files = [...p.vmStatsFds, ...p.vcpuStatsFds.values()].map((fd) =>
    BinaryStatsFile.open(pidfdGetfd(pidfd, fd)),
  );
  const blocks = files.map((f) => {
    const end = Math.max(...f.descs.map((d) => d.offset + 8 * d.size));
    // The data offset is what BinaryStatsFile read from the header; read it back the same way.
    const h = Buffer.alloc(24);
    readSync(f.fd, h, 0, 24, 0);
    return { fd: f.fd, buf: Buffer.alloc(end), at: h.readUInt32LE(20) };
  });
  return {
    poll: () => {
      for (const b of blocks) readSync(b.fd, b.buf, 0, b.buf.length, b.at);
    },
    close: () => {
      for (const f of files) closeSync(f.fd);
      closeSync(pidfd);
    },
  };
}

const configs = (pid) => ({
  "stats (binary stats fds)": { sources: ["stats"], pids: new Set([pid]) },
  "vmtool (live counters)": { sources: ["vmtool"], pids: new Set([pid]) },
  "auto (stats + vmtool)": { sources: "auto", pids: new Set([pid]) },
  "auto, whole host": { sources: "auto" },
  debugfs: { sources: ["debugfs"], pids: new Set([pid]) },
  "tracepoints (per thread)": { sources: ["tracepoints"], pids: new Set([pid]), tracepointScope: "vms" },
});

const rows = [];
for (const cpus of [1, 16, 64]) {
  process.stderr.write(`bench: ${cpus} vCPUs\n`);
  const { child, p } = await startVm(cpus);
  try {
    const floor = floorReader(p);
    const collectors = Object.entries(configs(p.pid)).map(([name, opts]) => {
      const c = new StatsCollector({ ...opts, reapIntervalMs: 0 });
      c.poll(); // opens what it keeps (copies, counters, perf groups)
      c.poll();
      return { name, c };
    });
    // Steady state: a process's descriptors are listed at every poll only for its first 5 s (discover.ts).
    await sleep(6000);
    for (const { c } of collectors) c.poll();
    const samples = { floor: [], ...Object.fromEntries(collectors.map(({ name }) => [name, []])) };
    for (let r = 0; r < RUNS; r++) {
      samples.floor.push(
        cpuMs(() => {
          for (let i = 0; i < POLLS; i++) floor.poll();
        }) / POLLS,
      );
      for (const { name, c } of collectors)
        samples[name].push(
          cpuMs(() => {
            for (let i = 0; i < POLLS / 10; i++) c.poll();
          }) /
            (POLLS / 10),
        );
    }
    const f = median(samples.floor);
    rows.push({ cpus, name: `floor: ${cpus + 1} preads`, us: f * 1000, ratio: 1 });
    for (const { name, c } of collectors) {
      const m = median(samples[name]);
      rows.push({ cpus, name, us: m * 1000, ratio: m / f });
      c.close();
    }
    floor.close();
  } finally {
    child.kill("SIGKILL");
    await new Promise((r) => child.on("exit", r));
  }
}

console.log(
  `\n${CLI}\nCPU time of one poll, medians of ${RUNS} batches (µs), against the floor in the same run:`,
);
console.log(`  ${"vCPUs".padEnd(6)}${"source".padEnd(30)}${"µs/poll".padStart(10)}${"× floor".padStart(10)}`);
for (const r of rows)
  console.log(
    `  ${String(r.cpus).padEnd(6)}${r.name.padEnd(30)}${r.us.toFixed(1).padStart(10)}${r.ratio.toFixed(1).padStart(10)}`,
  );
