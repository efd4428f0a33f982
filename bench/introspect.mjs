#!/usr/bin/env node
// Introspection benchmarks (not tests): each prints ratios against a reference measured in the same run.
//   (a) event round trip: a long-mode guest that writes an intercepted MSR (STAR) EVENTS times in a loop; a
//       KVMI client in this process (vmtool's own, src/kvmi-client/) gets each MSR event and answers CONTINUE
//       (from its handleEvents callback, or its async iterator in a library that has no handleEvents).
//       Time per event = (last event's arrival - first's) / (EVENTS - 1), i.e. event out, reply in, the guest
//       going on to its next WRMSR. Reference: the same VMM's plain exits (`out` to 0xE9, no client), per exit,
//       as bench/run-all.mjs measures them. Aim: an event costs at most 4 plain exits.
//       Floors, in the same rounds, each also as plain exits: (a) a 560-byte message (an MSR event's size) to
//       another Node process over a UNIX socket and back; (b) the same between two C processes
//       (bench/c/socket-pingpong.c), the least any VMM and tool pay for an event's two socket crossings here;
//       (c) a worker thread waking this process's main thread (postMessage) and the main thread waking it back
//       (Atomics.notify), as a vCPU thread's park and resume do; (d) an event's whole route (vCPU thread ->
//       main thread -> tool -> main thread -> vCPU thread) with no VMM work in it: a worker, this main
//       thread and an echoing Node process; (e) as (d), the worker writing to the socket itself (one crossing
//       fewer); (f) an MSR event's least work done in C: the C reference VMM (bench/c/ref-vmm.c --msr-events)
//       with the same loop, the event's MSRs read, 560 bytes to a C tool and its reply back, the write done,
//       against that VMM's own plain exits; once as the scheduler places the two processes, once with both on
//       one CPU.
//   (b) dumping 64 MiB of guest RAM (vCPUs paused): READ_PHYSICAL per 4 KiB page through the client, 64 in
//       flight (the client pipelines: KVMI lets a tool send commands without waiting for the replies of those
//       before, each has its seq) and one at a time (each sent once the one before is answered), the shared
//       read-only mapping of guest RAM (VMTOOL_GET_RAM_MAPPING), and the floor: a copy out
//       of a 64 MiB memfd mapped in this process, with the same code. Aim: the mapping within 2x of the floor;
//       READ_PHYSICAL at least 200 MB/s.
//   (c) the exit rate with --introspect connected (a client attached, no event enabled) against the same run
//       without --introspect: 200,000 `out` to 0xE9, wall time minus a guest that exits at once under the same
//       set-up (so that start-up and the connection do not count). Aim: no loss beyond noise.
// Rounds alternate the programs compared; medians are printed with the samples and the load average.
// Usage: node bench/introspect.mjs              (after the build: npx tsc -p tsconfig.json && node scripts/bundle.mjs)
//        BENCH_RUNS=7 node bench/introspect.mjs  (VMTOOL_DIST=.dist-x uses another output folder)
//        VMTOOL_DIST=.dist-before,dist node bench/introspect.mjs   (two builds, each with its own client library,
//                                                 in alternation in the same rounds: before and after a change)
//        BENCH_ONLY=a node bench/introspect.mjs  (only (a), (b) or (c); (a) and (c) share the plain-exit
//                                                 reference, which is always measured)
import { execFileSync, spawn, spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { createServer } from "node:net";
import { loadavg } from "node:os";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { Worker } from "node:worker_threads";
import { ROOT, buildRefVmm, flatLongGuest, median, workDir } from "./lib.mjs";

/** Each build compared: its command and its own client library (VMTOOL_DIST=a,b: output folders). */
const BUILDS = await Promise.all(
  (process.env.VMTOOL_DIST || "dist").split(",").map(async (dir) => {
    const dist = resolve(ROOT, dir);
    const bundle = join(dist, "bundle", "vmtool.cjs");
    const lib = (p) => import(pathToFileURL(join(dist, "src", p)).href);
    const { KvmiClient, GuestRam, Ev } = await lib("kvmi-client/index.js");
    return {
      dir,
      cli: existsSync(bundle) ? bundle : join(dist, "src", "cli", "main.js"),
      KvmiClient,
      GuestRam,
      Ev,
    };
  }),
);
const RUNS = Number(process.env.BENCH_RUNS || 5);
const ONLY = process.env.BENCH_ONLY || "abc";
const EVENTS = Number(process.env.BENCH_EVENTS || 2000);
const EXITS = 200_000;
/** Round trips per sample of the floors under an event (a, b, c below). */
const ROUND_TRIPS = EVENTS;
const DUMP = 64 << 20;
const STAR = 0xc0000081;
/** The word the guests spin on until the client has set up what it measures. */
const FLAG = 0x2000;

const firstDist = join(resolve(ROOT, BUILDS[0].dir), "src");
const libc = await import(pathToFileURL(join(firstDist, "kvm/libc.js")).href);
const { GuestMemory } = await import(pathToFileURL(join(firstDist, "memory/guest-memory.js")).href);

const work = workDir("vmtool-bench-introspect-");
const guest = (name, source) => flatLongGuest(work, name, source);
const waitForFlag = `wait_for_tool: pause
    cmpl $0, ${FLAG}
    je wait_for_tool`;

const msrLoop = `  mov $${EVENTS}, %ebx
     mov $${STAR}, %ecx
  1: mov %ebx, %eax
     xor %edx, %edx
     wrmsr
     dec %ebx
     jnz 1b
     xor %eax, %eax
     out %al, $0xf4`;
const msrGuest = guest(
  "msr-loop",
  `${waitForFlag}
${msrLoop}`,
);
// The same loop for the C reference VMM, which has no tool to set the flag.
const cMsrGuest = guest("msr-loop-c", msrLoop);
const exitsGuest = guest(
  "exits",
  `  mov $${EXITS}, %ecx
     mov $0x2e, %al
  1: out %al, $0xe9
     dec %ecx
     jnz 1b
     xor %eax, %eax
     out %al, $0xf4`,
);
const quitGuest = guest("quit", "xor %eax, %eax\n out %al, $0xf4");
const spinGuest = guest("spin", `${waitForFlag}\n xor %eax, %eax\n out %al, $0xf4`);

const runArgs = (b, bin, extra = []) => [b.cli, "run", "--mode", "long", "--load", "0x100000", ...extra, bin];

/** Start `vmtool run` (stdout ignored); resolves with its wall time (ms) once it exits with status 1. */
function vmtool(args) {
  const t0 = process.hrtime.bigint();
  const child = spawn(process.execPath, args, { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  child.stderr.on("data", (d) => (stderr += d));
  const done = new Promise((resolve, reject) =>
    child.on("exit", (code) => {
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      if (code === 1) resolve(ms);
      else reject(new Error(`${args.join(" ")}: status ${code}: ${stderr}`));
    }),
  );
  return { child, done };
}

let sockets = 0;
/** `vmtool run --introspect connect:SOCKET` with a client of ours listening there; resolves with both. */
async function withClient(b, bin, extra = []) {
  const path = join(work, `tool-${sockets++}.sock`);
  const listening = b.KvmiClient.listen(path, { acceptTimeoutMs: 30_000 });
  const run = vmtool(
    runArgs(b, bin, ["--introspect", `connect:${path}`, "--introspect-timeout", "60", ...extra]),
  );
  const client = await listening;
  return { client, run };
}

const go = (client) => client.writePhysical(BigInt(FLAG), Uint8Array.of(1, 0, 0, 0));

/** (a) One run of the MSR loop with every WRMSR an event answered CONTINUE: ms per event. */
async function eventRoundTrip(b) {
  const { client, run } = await withClient(b, msrGuest);
  await client.controlEvents(0, b.Ev.MSR, true);
  await client.controlMsr(0, STAR, true);
  await go(client);
  let first = 0n;
  let last = 0n;
  let n = 0;
  const onEvent = (ev) => {
    if (ev.kind !== "msr") return false;
    last = process.hrtime.bigint();
    if (n++ === 0) first = last;
    client.reply(ev, "continue");
    return n === EVENTS;
  };
  if (client.handleEvents) {
    // Each event answered from the socket's read callback, no promise per event.
    await new Promise((resolve) => {
      const stop = client.handleEvents((ev) => {
        if (onEvent(ev)) {
          stop();
          resolve();
        }
      });
      client.connection.closed.then(resolve);
    });
  } else for await (const ev of client.events()) if (onEvent(ev)) break; // a client library without it
  await run.done;
  client.close();
  if (n !== EVENTS) throw new Error(`${n} MSR events, expected ${EVENTS}`);
  return Number(last - first) / 1e6 / (EVENTS - 1);
}

/** Another Node process that echoes what it reads, connected over a new UNIX socket: that socket here. */
async function echoPeer(name) {
  const path = join(work, `${name}-${sockets++}.sock`);
  const server = createServer();
  await new Promise((r) => server.listen(path, r));
  const echo = spawn(
    process.execPath,
    ["-e", `const s = require("node:net").connect(process.argv[1]); s.on("data", (d) => s.write(d));`, path],
    { stdio: "ignore" },
  );
  const sock = await new Promise((r) => server.once("connection", r));
  return {
    sock,
    close: () => {
      echo.kill();
      server.close();
    },
  };
}

/**
 * (a) what any event costs at least: a small message from this process to another Node process over a UNIX
 * socket and its answer back (an event crosses that, plus the vCPU thread's wake-up of vmtool's main thread
 * and back): ms per round trip.
 */
async function socketRoundTrip() {
  const { sock, close } = await echoPeer("echo");
  const msg = Buffer.alloc(560); // an MSR event's size
  let n = 0;
  let first = 0n;
  let last = 0n;
  let got = 0;
  await new Promise((resolve) => {
    sock.on("data", (d) => {
      got += d.length;
      if (got < msg.length) return;
      got -= msg.length;
      last = process.hrtime.bigint();
      if (n++ === 0) first = last;
      if (n === ROUND_TRIPS) resolve();
      else sock.write(msg);
    });
    sock.write(msg);
  });
  sock.destroy();
  close();
  return Number(last - first) / 1e6 / (ROUND_TRIPS - 1);
}

/**
 * (a) the same round trip between two C processes (bench/c/socket-pingpong.c: blocking read and write, nothing
 * else): the least an event's two socket crossings cost on this host, whatever the VMM and the tool are written
 * in. ms per round trip.
 */
let pingpong;
function cSocketRoundTrip() {
  pingpong ??= buildPingpong();
  const r = spawnSync(pingpong, [String(ROUND_TRIPS), "560"], { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`socket-pingpong: status ${r.status}: ${r.stderr}`);
  return Number(r.stdout.trim()) / 1e6;
}

function buildPingpong() {
  const exe = join(work, "socket-pingpong");
  execFileSync("gcc", ["-O2", "-o", exe, join(ROOT, "bench", "c", "socket-pingpong.c")]);
  return exe;
}

/**
 * (f) the C reference VMM with --report: `--msr-events` makes each WRMSR of STAR an event to a C tool; without
 * it the guest's 0xE9 writes are counted. `cpu`: both processes kept on that CPU. ms per event or exit.
 */
let refVmm;
function cReference(bin, events, cpu) {
  refVmm ??= buildRefVmm(work);
  const args = ["--irqchip", "--report", ...(events ? ["--msr-events", String(STAR)] : [])];
  if (cpu !== undefined) args.push("--cpu", String(cpu));
  const r = spawnSync(refVmm, [...args, "long", "0x100000", bin], {
    encoding: "utf8",
    stdio: ["ignore", "ignore", "pipe"],
  });
  const [n, ns] = r.stderr.trim().split(" ").map(Number);
  if (r.status !== 1 || n !== (events ? EVENTS : EXITS))
    throw new Error(`ref-vmm ${args.join(" ")}: status ${r.status}: ${r.stderr}`);
  return ns / 1e6;
}

/**
 * (a) a wake-up of this process's main thread by a worker thread and back, as a vCPU thread's park and resume
 * do it (the worker posts a message and waits with Atomics.wait; the main thread, woken in its event loop,
 * answers with Atomics.store and Atomics.notify): ms per round trip.
 */
async function threadRoundTrip() {
  const words = new Int32Array(new SharedArrayBuffer(4));
  const worker = new Worker(
    `const { parentPort, workerData } = require("node:worker_threads");
     const w = new Int32Array(workerData.sab);
     for (let i = 1; i <= workerData.n; i++) {
       parentPort.postMessage(i);
       while (Atomics.load(w, 0) !== i) Atomics.wait(w, 0, i - 1);
     }`,
    { eval: true, workerData: { sab: words.buffer, n: ROUND_TRIPS } },
  );
  let first = 0n;
  let last = 0n;
  await new Promise((resolve, reject) => {
    worker.on("error", reject);
    worker.on("message", (i) => {
      last = process.hrtime.bigint();
      if (i === 1) first = last;
      Atomics.store(words, 0, i);
      Atomics.notify(words, 0);
      if (i === ROUND_TRIPS) resolve();
    });
  });
  await worker.terminate();
  return Number(last - first) / 1e6 / (ROUND_TRIPS - 1);
}

/**
 * (a) an event's route with no VMM work in it: a worker thread (the vCPU thread) hands 560 bytes to this
 * process's main thread (postMessage), which writes them to another Node process over a UNIX socket; that one
 * echoes them, and the main thread, reading them, wakes the worker (Atomics.notify). With `workerWrites`, the
 * worker writes the bytes to the socket itself (fs.writeSync on its descriptor): the route without the
 * vCPU thread -> main thread crossing. ms per round trip.
 */
async function routeRoundTrip(workerWrites) {
  const { sock, close } = await echoPeer("route");
  const msg = Buffer.alloc(560);
  const words = new Int32Array(new SharedArrayBuffer(4));
  const worker = new Worker(
    `const { parentPort, workerData } = require("node:worker_threads");
     const { writeSync } = require("node:fs");
     const w = new Int32Array(workerData.sab);
     const msg = Buffer.alloc(560);
     for (let i = 1; i <= workerData.n; i++) {
       if (workerData.fd >= 0) writeSync(workerData.fd, msg);
       else parentPort.postMessage(i);
       while (Atomics.load(w, 0) !== i) Atomics.wait(w, 0, i - 1);
     }`,
    {
      eval: true,
      workerData: { sab: words.buffer, n: ROUND_TRIPS, fd: workerWrites ? sock._handle.fd : -1 },
    },
  );
  worker.on("message", () => sock.write(msg));
  let n = 0;
  let got = 0;
  let first = 0n;
  let last = 0n;
  await new Promise((resolve, reject) => {
    worker.on("error", reject);
    sock.on("data", (d) => {
      got += d.length;
      while (got >= msg.length) {
        got -= msg.length;
        last = process.hrtime.bigint();
        if (++n === 1) first = last;
        Atomics.store(words, 0, n);
        Atomics.notify(words, 0);
        if (n === ROUND_TRIPS) resolve();
      }
    });
  });
  await worker.terminate();
  sock.destroy();
  close();
  return Number(last - first) / 1e6 / (ROUND_TRIPS - 1);
}

/** (b) A VM of `b`'s with 64 MiB of RAM, paused, and the ways of reading it all (ms each). */
async function dumpSession(b, floor) {
  const { client, run } = await withClient(b, spinGuest, ["--mem", "64M"]);
  const paused = await client.pauseAll();
  const ram = await b.GuestRam.open(client);
  if (ram.path !== "mapping") throw new Error(`no shared mapping: ${ram.why}`);
  const check = (buf) => {
    if (buf.length !== DUMP) throw new Error(`read ${buf.length} bytes`);
  };
  const ways = {
    "READ_PHYSICAL, 64 in flight": async () => check(await client.readMemory(0n, DUMP, 64)),
    "READ_PHYSICAL, one at a time": async () => check(await client.readMemory(0n, DUMP, 1)),
    "shared mapping": async () => check(await ram.read(0n, DUMP)),
    "memfd in-process (floor)": async () => check(Buffer.from(floor.read(0, DUMP))),
  };
  for (const f of Object.values(ways)) await f(); // warm-up: every page faulted in once
  return {
    ways,
    async close() {
      ram.close();
      client.resume(paused);
      await go(client);
      await run.done;
      client.close();
    },
  };
}

/** (b) RUNS rounds of every way of reading 64 MiB, the builds' VMs in alternation; ms per round. */
async function dumpRounds() {
  // The floor: a memfd of the same size in this process, mapped and copied out by the same code.
  const fd = libc.memfdCreate("bench-floor", libc.MFD_CLOEXEC);
  if (fd < 0 || libc.ftruncate(fd, DUMP) < 0) throw new Error("memfd_create/ftruncate failed");
  const addr = libc.mmap(null, DUMP, libc.PROT_READ | libc.PROT_WRITE, libc.MAP_SHARED, fd, 0);
  if (addr === libc.MAP_FAILED) throw new Error("mmap of the memfd failed");
  const floor = new GuestMemory([{ gpa: 0, size: DUMP, hostAddr: addr }]);
  floor.fill(0, DUMP, 0x5a); // resident, as the guest's pages are after the first round
  const sessions = [];
  for (const b of BUILDS) sessions.push(await dumpSession(b, floor));
  const samples = {};
  for (let i = 0; i < RUNS; i++)
    for (const [bi, sn] of sessions.entries())
      for (const [k, f] of Object.entries(sn.ways)) {
        const key = label(BUILDS[bi], k);
        const t0 = process.hrtime.bigint();
        await f();
        (samples[key] ??= []).push(Number(process.hrtime.bigint() - t0) / 1e6);
      }
  for (const sn of sessions) await sn.close();
  libc.munmap(addr, DUMP);
  libc.close(fd);
  return samples;
}

/** (c) Wall ms of a run with a client attached that enables nothing. */
async function connectedRun(b, bin) {
  const { client, run } = await withClient(b, bin);
  const ms = await run.done;
  client.close();
  return ms;
}

/** A case's name, with its build's folder when several builds are compared. */
const label = (b, name) => (BUILDS.length > 1 ? `${b.dir}: ${name}` : name);
const cases = {
  ...(ONLY.includes("a")
    ? {
        "socket round trip, ms": socketRoundTrip,
        "C socket round trip, ms": cSocketRoundTrip,
        "thread round trip, ms": threadRoundTrip,
        "route round trip, ms": () => routeRoundTrip(false),
        "route, worker writes, ms": () => routeRoundTrip(true),
        "C VMM event, ms": () => cReference(cMsrGuest, true),
        "C VMM plain exit, ms": () => cReference(exitsGuest, false),
        "C VMM event on one CPU, ms": () => cReference(cMsrGuest, true, 0),
        "C VMM plain exit on one CPU, ms": () => cReference(exitsGuest, false, 0),
      }
    : {}),
};
for (const b of BUILDS)
  Object.assign(cases, {
    ...(ONLY.includes("a") ? { [label(b, "(a) event round trip, ms/event")]: () => eventRoundTrip(b) } : {}),
    [label(b, "plain 200k exits")]: () => vmtool(runArgs(b, exitsGuest)).done,
    [label(b, "plain exit at once")]: () => vmtool(runArgs(b, quitGuest)).done,
    ...(ONLY.includes("c")
      ? {
          [label(b, "--introspect 200k exits")]: () => connectedRun(b, exitsGuest),
          [label(b, "--introspect exit at once")]: () => connectedRun(b, quitGuest),
        }
      : {}),
  });
const samples = Object.fromEntries(Object.keys(cases).map((k) => [k, []]));
const load0 = loadavg()[0];
for (const f of Object.values(cases)) await f(); // warm-up round
for (let i = 0; i < RUNS; i++) {
  for (const [k, f] of Object.entries(cases)) samples[k].push(await f());
  process.stderr.write(`bench: round ${i + 1}/${RUNS}\n`);
}
const dump = ONLY.includes("b") ? await dumpRounds() : {};
const load1 = loadavg()[0];
const m = Object.fromEntries(Object.entries({ ...samples, ...dump }).map(([k, v]) => [k, median(v)]));

const fmt = (v) => (v < 10 ? v.toFixed(3) : v.toFixed(1)).padStart(9);
console.log(`\n${BUILDS.map((b) => b.cli).join(", ")}`);
console.log(
  `medians of ${RUNS} alternating rounds; load average ${load0.toFixed(1)} at start, ${load1.toFixed(1)} at end:`,
);
const pad = Math.max(...Object.keys(m).map((k) => k.length)) + 1;
for (const [k, v] of Object.entries(m))
  console.log(
    `  ${k.padEnd(pad)} ${fmt(v)}   [${[...(samples[k] ?? dump[k])].map((x) => fmt(x).trim()).join(" ")}]`,
  );

const mbs = (ms) => DUMP / 1e6 / (ms / 1000);
const rate = (a, b) => EXITS / ((m[a] - m[b]) / 1000);
for (const b of BUILDS) {
  const L = (name) => label(b, name);
  if (BUILDS.length > 1) console.log(`\n==== ${b.dir} (${b.cli})`);
  const plainUs = ((m[L("plain 200k exits")] - m[L("plain exit at once")]) * 1000) / EXITS;
  if (ONLY.includes("a")) {
    const eventUs = m[L("(a) event round trip, ms/event")] * 1000;
    console.log(
      `\n(a) event round trip (${EVENTS} WRMSRs of STAR, each an MSR event answered CONTINUE by a client):`,
    );
    console.log(
      `  event ${eventUs.toFixed(1)} us (${Math.round(1e6 / eventUs).toLocaleString("en")} events/s)`,
    );
    console.log(
      `  plain exit ${plainUs.toFixed(2)} us (${Math.round(1e6 / plainUs).toLocaleString("en")} exits/s, OUT to 0xE9, no client)`,
    );
    console.log(`  ratio event / plain exit = ${(eventUs / plainUs).toFixed(1)}   (aim <= 4)`);
    const socketUs = m["socket round trip, ms"] * 1000;
    const cUs = m["C socket round trip, ms"] * 1000;
    const threadUs = m["thread round trip, ms"] * 1000;
    const floor = (name, us) =>
      console.log(
        `  ${name.padEnd(58)} ${us.toFixed(1).padStart(6)} us = ${(us / plainUs).toFixed(1).padStart(4)} plain exits; event / that = ${(eventUs / us).toFixed(2)}`,
      );
    console.log("  floors, in the same rounds (560 bytes each way over a UNIX socket):");
    floor("(a) Node process to another Node process and back", socketUs);
    floor("(b) C process to another C process and back", cUs);
    floor("(c) worker thread wakes the main thread and back", threadUs);
    floor("(d) the event's route, no VMM work: (c) then (a), in one", m["route round trip, ms"] * 1000);
    floor("(e) as (d), the worker writing to the socket itself", m["route, worker writes, ms"] * 1000);
    const cEvent = (name, ev, exit) => {
      const evUs = m[ev] * 1000;
      const exitUs = m[exit] * 1000;
      console.log(
        `  ${name.padEnd(58)} ${evUs.toFixed(1).padStart(6)} us = ${(evUs / exitUs).toFixed(1).padStart(4)} of its plain exits (${exitUs.toFixed(2)} us)`,
      );
    };
    console.log("  (f) the event's least work in C (bench/c/ref-vmm.c --msr-events, a C tool):");
    cEvent("    the two processes where the scheduler puts them", "C VMM event, ms", "C VMM plain exit, ms");
    cEvent("    both on one CPU", "C VMM event on one CPU, ms", "C VMM plain exit on one CPU, ms");
  }
  if (ONLY.includes("b")) {
    const floorMs = m[L("memfd in-process (floor)")];
    console.log(`\n(b) reading 64 MiB of guest RAM (vCPUs paused):`);
    for (const k of [
      "READ_PHYSICAL, 64 in flight",
      "READ_PHYSICAL, one at a time",
      "shared mapping",
      "memfd in-process (floor)",
    ]) {
      const ms = m[L(k)];
      console.log(
        `  ${k.padEnd(30)} ${ms.toFixed(1).padStart(8)} ms  ${Math.round(mbs(ms)).toLocaleString("en").padStart(6)} MB/s  ${(ms / floorMs).toFixed(2)}x the floor`,
      );
    }
    console.log(
      "  READ_PHYSICAL: one 4 KiB page per message; the client pipelines (64 in flight, matched by seq) or waits for each",
    );
    console.log(`  aims: mapping within 2x of the floor; READ_PHYSICAL >= 200 MB/s`);
  }
  if (ONLY.includes("c")) {
    const plainRate = rate(L("plain 200k exits"), L("plain exit at once"));
    const connRate = rate(L("--introspect 200k exits"), L("--introspect exit at once"));
    console.log(`\n(c) exit rate, ${EXITS} OUTs to 0xE9:`);
    console.log(`  without --introspect        ${Math.round(plainRate).toLocaleString("en")} exits/s`);
    console.log(`  --introspect, no events on  ${Math.round(connRate).toLocaleString("en")} exits/s`);
    console.log(`  ratio connected / plain = ${(connRate / plainRate).toFixed(2)}   (aim: 1 within noise)`);
  }
}
process.exit(0);
