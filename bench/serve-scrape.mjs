#!/usr/bin/env node
// `vmtool serve`'s benchmark (not a test). Eight `vmtool run`s of 8 vCPUs each (64 vCPUs; vCPU 0 halted (HLT with
// interrupts on, nothing to wake it), the others waiting for a SIPI: idle VMs, so that the host's two CPUs are not taken by
// guests), then:
//   1. a scrape of /metrics: wall time per scrape and the server process's CPU per scrape (from
//      /proc/<pid>/stat), against the floor: a plain pread of the data block of every stats fd of the same
//      VMs in this process (copied once with pidfd_getfd), CPU per round;
//   2. the server at idle with one dashboard open (one SSE stream at the default 1 s interval): its CPU per
//      second of wall time, as a share of one core.
// The server watches the whole host (other users' VMs included): the VM count it exported is printed.
// VMTOOL_DIST=a,b compares builds: one server per build, on the same VMs, measured in alternation (the VMs run
// on the first build).
// Usage: node bench/serve-scrape.mjs   (VMTOOL_DIST=.dist-x[,dist]; BENCH_SCRAPES=100 BENCH_RUNS=5
//        BENCH_IDLE_S=10 BENCH_IDLE_RUNS=3: idle rounds of that many seconds per build)
import { spawn } from "node:child_process";
import { closeSync, readFileSync, readSync } from "node:fs";
import { request } from "node:http";
import { join } from "node:path";
import { ROOT, flatLongGuest, median, workDir } from "./lib.mjs";

const BUILDS = (process.env.VMTOOL_DIST || "dist").split(",");
const DIST = join(ROOT, BUILDS[0]);
const CLI = join(DIST, "src", "cli", "main.js");
const SCRAPES = Number(process.env.BENCH_SCRAPES || 100);
const IDLE_S = Number(process.env.BENCH_IDLE_S || 10);
const IDLE_RUNS = Number(process.env.BENCH_IDLE_RUNS || 3);
const RUNS = Number(process.env.BENCH_RUNS || 5);
const VMS = 8;
const CPUS = 8;
const { scanProcess } = await import(join(DIST, "src", "stats", "discover.js"));
const { pidfdOpen, pidfdGetfd } = await import(join(DIST, "src", "stats", "sys.js"));
const { BinaryStatsFile } = await import(join(DIST, "src", "stats", "binary-stats.js"));

const work = workDir("vmtool-bench-serve-");
const idle = flatLongGuest(work, "idle", "  sti\n1: hlt\n   jmp 1b");
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const children = [];
process.on("exit", () => children.forEach((c) => c.kill("SIGKILL")));

async function startVm() {
  const child = spawn(
    process.execPath,
    [CLI, "run", "--cpus", String(CPUS), "--mode", "long", "--load", "0x100000", idle],
    { stdio: ["ignore", "ignore", "inherit"] },
  );
  children.push(child);
  for (let i = 0; i < 600; i++) {
    const p = scanProcess(child.pid);
    if (p && typeof p === "object" && p.vcpuStatsFds.size === CPUS && p.vmStatsFds.length === 1) return p;
    await sleep(50);
  }
  throw new Error(`a ${CPUS}-vCPU VM did not come up`);
}

/** CPU seconds of a process so far (utime + stime, in clock ticks of 10 ms). */
function cpuOf(pid) {
  const s = readFileSync(`/proc/${pid}/stat`, "utf8");
  const f = s.slice(s.lastIndexOf(")") + 2).split(" ");
  return (Number(f[11]) + Number(f[12])) / 100;
}

function get(port, path) {
  return new Promise((resolve, reject) => {
    const req = request({ host: "127.0.0.1", port, path }, (res) => {
      let body = "";
      res.on("data", (d) => (body += d));
      res.on("end", () => resolve(body));
    });
    req.on("error", reject);
    req.end();
  });
}

const procs = [];
for (let i = 0; i < VMS; i++) procs.push(await startVm());

// The floor: every stats fd of the eight VMs read once per round (pread of its data block).
const files = [];
for (const p of procs) {
  const pidfd = pidfdOpen(p.pid);
  for (const fd of [...p.vmStatsFds, ...p.vcpuStatsFds.values()]) {
    const f = BinaryStatsFile.open(pidfdGetfd(pidfd, fd));
    const h = Buffer.alloc(24);
    readSync(f.fd, h, 0, 24, 0);
    const end = Math.max(...f.descs.map((d) => d.offset + 8 * d.size));
    files.push({ fd: f.fd, buf: Buffer.alloc(end), at: h.readUInt32LE(20) });
  }
  closeSync(pidfd);
}
const floorRound = () => {
  for (const b of files) readSync(b.fd, b.buf, 0, b.buf.length, b.at);
};

async function startServe(build) {
  const serve = spawn(
    process.execPath,
    [join(ROOT, build, "src", "cli", "main.js"), "serve", "--listen", "127.0.0.1:0"],
    { stdio: ["ignore", "ignore", "pipe"] },
  );
  children.push(serve);
  let err = "";
  serve.stderr.on("data", (d) => (err += d));
  let port;
  for (let i = 0; i < 400 && !port; i++) {
    port = Number(/127\.0\.0\.1:(\d+)\//.exec(err)?.[1]) || undefined;
    await sleep(50);
  }
  if (!port) throw new Error(`vmtool serve (${build}) did not start: ${err}`);
  return { build, pid: serve.pid, port, scrapeCpu: [], scrapeWall: [], idle: [] };
}
const servers = [];
for (const b of BUILDS) servers.push(await startServe(b));

// Warm up: the first scrapes copy every stats fd and list every process's descriptors; steady state after
// each VM's first 5 s (the stats layer lists a known VM's descriptors every 10 s after that).
const t0 = Date.now();
const texts = new Map();
while (Date.now() - t0 < 7000) {
  for (const s of servers) texts.set(s, await get(s.port, "/metrics"));
  await sleep(200);
}

const floorCpu = [];
const load = [];
for (let r = 0; r < RUNS; r++) {
  load.push(Number(readFileSync("/proc/loadavg", "utf8").split(" ")[0]));
  for (const s of servers) {
    const c0 = cpuOf(s.pid);
    const w0 = process.hrtime.bigint();
    for (let i = 0; i < SCRAPES; i++) await get(s.port, "/metrics");
    s.scrapeWall.push(Number(process.hrtime.bigint() - w0) / 1e6 / SCRAPES);
    s.scrapeCpu.push(((cpuOf(s.pid) - c0) * 1000) / SCRAPES);
  }
  const u0 = process.cpuUsage();
  for (let i = 0; i < SCRAPES * 10; i++) floorRound();
  const u = process.cpuUsage(u0);
  floorCpu.push((u.user + u.system) / 1000 / (SCRAPES * 10));
}

// Idle with one dashboard: one SSE stream at 1 s, to one server at a time.
for (let r = 0; r < IDLE_RUNS; r++)
  for (const s of servers) {
    load.push(Number(readFileSync("/proc/loadavg", "utf8").split(" ")[0]));
    const stream = request({ host: "127.0.0.1", port: s.port, path: "/events" }, (res) => res.resume());
    stream.end();
    await sleep(3000);
    const i0 = cpuOf(s.pid);
    const iw = Date.now();
    await sleep(IDLE_S * 1000);
    s.idle.push((cpuOf(s.pid) - i0) / ((Date.now() - iw) / 1000));
    stream.destroy();
    await sleep(500);
  }

const f = median(floorCpu);
console.log(
  `vmtool serve, ${VMS} VMs x ${CPUS} vCPUs of this benchmark; medians of ${RUNS} rounds of ${SCRAPES} scrapes, ` +
    `${IDLE_RUNS} idle rounds of ${IDLE_S} s per build; load average ${median(load).toFixed(1)} (${Math.min(...load)}-${Math.max(...load)})`,
);
console.log(
  `floor: pread of ${files.length} stats fds              ${(f * 1000).toFixed(0)} µs CPU per round   1.0x`,
);
for (const s of servers) {
  const text = texts.get(s);
  const vmsSeen = (text.match(/^vmtool_vm_info\{/gm) || []).length;
  const vcpusSeen = new Set(text.match(/^kvm_vcpu_exits_total\{[^}]*\}/gm) || []).size;
  const c = median(s.scrapeCpu);
  console.log(
    `[${s.build}] the scrape saw ${vmsSeen} VMs, ${vcpusSeen} vCPUs, ${Buffer.byteLength(text)} bytes of text`,
  );
  console.log(
    `  scrape of /metrics (server process)   ${c.toFixed(2)} ms CPU per scrape    ${(c / f).toFixed(0)}x`,
  );
  console.log(`  scrape of /metrics, wall               ${median(s.scrapeWall).toFixed(2)} ms per scrape`);
  console.log(
    `  idle, one dashboard at 1 s              ${(median(s.idle) * 100).toFixed(2)}% of a core (${s.idle.map((x) => (x * 100).toFixed(2)).join(", ")}; 10 ms ticks)`,
  );
}
if (servers.length > 1) {
  const [a, b] = servers;
  console.log(
    `${b.build} / ${a.build}: scrape CPU ${(median(b.scrapeCpu) / median(a.scrapeCpu)).toFixed(2)}, idle ${(median(b.idle) / median(a.idle)).toFixed(2)}`,
  );
}
process.exit(0);
