// The part of bench/linux-boot.mjs that runs inside the kvm_amd VM: boots the same kernel and initramfs with
// each VMM in turn, round after round, and prints one JSON line per boot ("SVM bench {...}" on standard output):
// time from the VMM's start to the init's first line, the run's end, and the exits the VM made, counted by the
// kernel's KVM tracepoints (hist triggers on kvm_exit by SVM exit code, kvm_userspace_exit by reason, kvm_pio by
// port): the same count for every VMM, since only one VM runs at a time.
//
//   node linux-boot-inner.mjs CONFIG.json
import { spawn } from "node:child_process";
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { execFileSync } from "node:child_process";

const cfg = JSON.parse(readFileSync(process.argv[2], "utf8"));
const TRACING = "/sys/kernel/tracing";
const HISTS = [
  { event: "kvm/kvm_exit", keys: "exit_reason" },
  { event: "kvm/kvm_userspace_exit", keys: "reason" },
  { event: "kvm/kvm_pio", keys: "port,rw" },
];

if (!existsSync(`${TRACING}/events`)) execFileSync("mount", ["-t", "tracefs", "tracefs", TRACING]);

function trigger(h, on) {
  writeFileSync(
    `${TRACING}/events/${h.event}/trigger`,
    `${on ? "" : "!"}hist:keys=${h.keys}:vals=hitcount\n`,
  );
}

/** "{ exit_reason: 124 } hitcount: 10" lines -> { "124": 10 } (several keys joined by ","). */
function readHist(h) {
  const out = {};
  for (const line of readFileSync(`${TRACING}/events/${h.event}/hist`, "utf8").split("\n")) {
    const m = /^\{(.*)\}\s+hitcount:\s+(\d+)/.exec(line);
    if (!m) continue;
    const key = m[1]
      .split(",")
      .map((kv) => kv.split(":")[1].trim())
      .join(",");
    out[key] = Number(m[2]);
  }
  return out;
}

// The host kernel's memory counters around each boot: transparent huge pages given at a fault or refused, and
// the page faults that stalled in direct compaction to make one (/proc/vmstat).
const VMSTAT = [
  "thp_fault_alloc",
  "thp_fault_fallback",
  "compact_stall",
  "allocstall_dma32",
  "allocstall_normal",
  "pgscan_kswapd",
  "pgscan_direct",
];
function vmstat() {
  const all = Object.fromEntries(
    readFileSync("/proc/vmstat", "utf8")
      .split("\n")
      .map((l) => l.split(" ")),
  );
  return Object.fromEntries(VMSTAT.map((k) => [k, Number(all[k] ?? 0)]));
}

// Each thread of the VMM's process, as /proc showed it: its name, user and system CPU time, and the part of the
// user time spent running the guest (guest_time), in ms. Read every 100 ms.
const TICK_MS = 10; // USER_HZ 100
function threadTimes(pid) {
  const out = [];
  let tids = [];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return out; // the process has ended
  }
  for (const tid of tids) {
    let stat;
    try {
      stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, "latin1");
    } catch {
      continue;
    }
    const comm = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" "); // f[0] is field 3 (state)
    out.push({
      tid: Number(tid),
      comm,
      userMs: Number(f[11]) * TICK_MS, // guest time included
      sysMs: Number(f[12]) * TICK_MS,
      guestMs: Number(f[40]) * TICK_MS,
    });
  }
  return out;
}

function bootOnce(vmm) {
  return new Promise((resolve) => {
    for (const h of HISTS) trigger(h, true);
    const before = vmstat();
    const t0 = process.hrtime.bigint();
    const child = spawn(vmm.cmd[0], vmm.cmd.slice(1), {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, ...(vmm.env ?? {}) },
    });
    // By thread id, each thread's last figures (a thread that ended before the process keeps its own).
    const seen = new Map();
    // The process's CPU (all threads, ms) when the guest first had CPU time: what the VMM spent before.
    let beforeGuest;
    const sampler = setInterval(() => {
      for (const t of threadTimes(child.pid)) seen.set(t.tid, t);
      if (beforeGuest === undefined && [...seen.values()].some((t) => t.guestMs > 0))
        beforeGuest = {
          atMs: Number(process.hrtime.bigint() - t0) / 1e6,
          userMs: [...seen.values()].reduce((n, t) => n + t.userMs - t.guestMs, 0),
          sysMs: [...seen.values()].reduce((n, t) => n + t.sysMs, 0),
        };
    }, 100);
    let out = "";
    let err = "";
    let initMs;
    let guestUptime;
    child.stdout.on("data", (b) => {
      out += b.toString("latin1");
      if (initMs === undefined) {
        const m = /INIT-LINE: ([\d.]+)/.exec(out);
        if (m) {
          initMs = Number(process.hrtime.bigint() - t0) / 1e6;
          guestUptime = Number(m[1]);
        }
      }
    });
    child.stderr.on("data", (b) => (err += b.toString("latin1")));
    const timer = setTimeout(() => child.kill("SIGKILL"), cfg.timeoutMs);
    child.on("exit", (code, signal) => {
      clearTimeout(timer);
      clearInterval(sampler);
      const endMs = Number(process.hrtime.bigint() - t0) / 1e6;
      const [exits, userspace, pio] = HISTS.map(readHist);
      const after = vmstat();
      const memory = Object.fromEntries(VMSTAT.map((k) => [k, after[k] - before[k]]));
      for (const h of HISTS) trigger(h, false);
      resolve({
        vmm: vmm.name,
        status: code ?? signal,
        initMs,
        guestUptime,
        endMs,
        exits,
        userspace,
        pio,
        memory,
        threads: [...seen.values()],
        beforeGuest,
        console: cfg.console ? out : undefined,
        tail: initMs === undefined ? `${out.slice(-1500)}\n${err.slice(-1500)}` : undefined,
        // VMTOOL_STARTUP_MARKS=1 (BENCH_MARKS): vmtool's start-up timeline, [ms, "thread what"] per mark.
        marks: [...err.matchAll(/^startup: +([\d.]+) (.*)$/gm)].map((m) => [Number(m[1]), m[2]]),
      });
    });
  });
}

const meminfo = readFileSync("/proc/meminfo", "utf8");
process.stdout.write(
  `SVM bench-memory ${["MemTotal", "MemFree", "MemAvailable", "Shmem"].map((k) => new RegExp(`^${k}:.*$`, "m").exec(meminfo)?.[0].replace(/\s+/g, " ")).join(", ")}\n`,
);
for (let round = 0; round < cfg.rounds; round++)
  for (const vmm of cfg.vmms) {
    const r = await bootOnce(vmm);
    process.stdout.write(`SVM bench ${JSON.stringify({ round, ...r })}\n`);
  }
