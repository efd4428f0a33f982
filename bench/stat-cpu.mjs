#!/usr/bin/env node
// `vmtool stat`'s benchmark (not a test): the CPU `vmtool stat -s 1` uses while it watches a busy guest, in
// steady state: (CPU of a watch of LONG seconds - CPU of one of SHORT seconds) / (LONG - SHORT), so that its
// start-up does not count (the CPU time of every thread, from /proc/<pid>/task/*/schedstat, read just before
// it ends). Against the floor in the same run: a Node process that copies the same stats fds once and reads
// them once a second, nothing else. Medians of RUNS, runs alternated.
// Usage: node bench/stat-cpu.mjs      (VMTOOL_DIST=.dist-x; BENCH_RUNS=3 BENCH_LONG=12 BENCH_SHORT=3)
import { spawn } from "node:child_process";
import { readFileSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ROOT, flatLongGuest, median, workDir } from "./lib.mjs";

const DIST = join(ROOT, process.env.VMTOOL_DIST || "dist");
const CLI = join(DIST, "src", "cli", "main.js");
const RUNS = Number(process.env.BENCH_RUNS || 3);
const LONG = Number(process.env.BENCH_LONG || 12);
const SHORT = Number(process.env.BENCH_SHORT || 3);
const { scanProcess } = await import(join(DIST, "src", "stats", "discover.js"));

const work = workDir("vmtool-bench-stat-cpu-");
const busy = flatLongGuest(
  work,
  "busy",
  `  mov $0xe0000000, %ebx
  1: out %al, $0x80
     mov (%rbx), %eax
     jmp 1b`,
);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const vm = spawn(
  process.execPath,
  [CLI, "run", "--cpus", "2", "--mode", "long", "--load", "0x100000", busy],
  {
    stdio: "ignore",
  },
);
process.on("exit", () => vm.kill("SIGKILL"));
for (let i = 0; i < 200; i++) {
  const p = scanProcess(vm.pid);
  if (p && typeof p === "object" && p.vcpuStatsFds.size === 2) break;
  await sleep(50);
}

// The floor: what any reader of these numbers must do, once a second.
const floorScript = join(work, "floor.mjs");
writeFileSync(
  floorScript,
  `import { readSync } from "node:fs";
   const { scanProcess } = await import(${JSON.stringify(join(DIST, "src", "stats", "discover.js"))});
   const { pidfdOpen, pidfdGetfd } = await import(${JSON.stringify(join(DIST, "src", "stats", "sys.js"))});
   const { BinaryStatsFile } = await import(${JSON.stringify(join(DIST, "src", "stats", "binary-stats.js"))});
   const pid = Number(process.argv[2]);
   const p = scanProcess(pid);
   const pidfd = pidfdOpen(pid);
   const files = [...p.vmStatsFds, ...p.vcpuStatsFds.values()].map((fd) => BinaryStatsFile.open(pidfdGetfd(pidfd, fd)));
   setInterval(() => { for (const f of files) f.refresh(); }, 1000);
   process.on("SIGTERM", () => process.exit(0));`,
);

/** CPU ns of every thread of `pid`. */
function cpuNs(pid) {
  let ns = 0;
  for (const t of readdirSync(`/proc/${pid}/task`))
    try {
      ns += Number(readFileSync(`/proc/${pid}/task/${t}/schedstat`, "utf8").split(" ")[0]);
    } catch {
      // thread ended
    }
  return ns;
}

async function cpuOf(args, seconds) {
  const child = spawn(process.execPath, args, { stdio: "ignore" });
  await sleep(seconds * 1000);
  const ns = cpuNs(child.pid);
  child.kill("SIGTERM");
  await new Promise((r) => child.on("exit", r));
  return ns / 1e6;
}

const pid = String(vm.pid);
const cases = {
  "floor: read the stats fds once a second": [floorScript, pid],
  "stat -s 1 -p PID (auto: stats + vmtool)": [CLI, "stat", "--json", "-s", "1", "-p", pid],
  "stat -s 1 (auto, every VM of the host)": [CLI, "stat", "--json", "-s", "1"],
  "stat -s 1 -p PID --source tracepoints": [
    CLI,
    "stat",
    "--json",
    "-s",
    "1",
    "-p",
    pid,
    "--source",
    "tracepoints",
  ],
};
const samples = Object.fromEntries(Object.keys(cases).map((k) => [k, []]));
for (let i = 0; i < RUNS; i++) {
  for (const [name, args] of Object.entries(cases)) {
    const long = await cpuOf(args, LONG);
    const short = await cpuOf(args, SHORT);
    samples[name].push((long - short) / (LONG - SHORT));
  }
  process.stderr.write(`bench: round ${i + 1}/${RUNS}\n`);
}
const floor = median(samples["floor: read the stats fds once a second"]);
console.log(
  `\n${CLI}\nCPU per second of watching a busy 2-vCPU guest, steady state, medians of ${RUNS} (ms of CPU per s):`,
);
for (const [name, xs] of Object.entries(samples)) {
  const m = median(xs);
  console.log(
    `  ${name.padEnd(44)}${m.toFixed(2).padStart(8)} ms/s = ${(m / 10).toFixed(2)}% of a core   ${(m / floor).toFixed(1)}× floor   [${xs.map((x) => x.toFixed(2)).join(" ")}]`,
  );
}
vm.kill("SIGKILL");
