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
  // BENCH_SYSCALLS=1: every system call by thread and number (the VMM's threads are picked out afterwards).
  ...(cfg.syscalls ? [{ event: "raw_syscalls/sys_enter", keys: "common_pid,id" }] : []),
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
// user time spent running the guest (guest_time), in ms. Read once, at init's line: reading a dozen threads'
// files every 100 ms would cost the harness's one CPU more for a VMM with more threads.
const TICK_MS = 10; // USER_HZ 100
/** The fields of a /proc stat line after "(comm)", and the comm. */
function statFields(path) {
  const stat = readFileSync(path, "latin1");
  return {
    comm: stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")")),
    f: stat.slice(stat.lastIndexOf(")") + 2).split(" "),
  };
}
/** The process as a whole (its threads, ended ones included): user time outside the guest, system, guest. */
function processTimes(pid) {
  try {
    const { f } = statFields(`/proc/${pid}/stat`); // f[0] is field 3 (state)
    const guestMs = Number(f[40]) * TICK_MS;
    return { userMs: Number(f[11]) * TICK_MS - guestMs, sysMs: Number(f[12]) * TICK_MS, guestMs };
  } catch {
    return undefined; // the process has ended
  }
}
function threadTimes(pid) {
  const out = [];
  let tids = [];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return out; // the process has ended
  }
  for (const tid of tids) {
    let comm, f;
    try {
      ({ comm, f } = statFields(`/proc/${pid}/task/${tid}/stat`));
    } catch {
      continue;
    }
    let switches;
    try {
      const st = readFileSync(`/proc/${pid}/task/${tid}/status`, "latin1");
      switches = {
        voluntary: Number(/^voluntary_ctxt_switches:\s+(\d+)/m.exec(st)?.[1]),
        involuntary: Number(/^nonvoluntary_ctxt_switches:\s+(\d+)/m.exec(st)?.[1]),
      };
    } catch {
      switches = undefined;
    }
    out.push({
      tid: Number(tid),
      comm,
      switches,
      minorFaults: Number(f[7]),
      userMs: Number(f[11]) * TICK_MS, // guest time included
      sysMs: Number(f[12]) * TICK_MS,
      guestMs: Number(f[40]) * TICK_MS,
    });
  }
  return out.sort((a, b) => a.tid - b.tid); // in their order of creation
}

// The harness's whole CPU (/proc/stat's first line, ms): busy (guest time is part of user) and idle.
function hostCpu() {
  const f = readFileSync("/proc/stat", "utf8").split("\n")[0].trim().split(/\s+/).slice(1).map(Number);
  const [user, nice, system, idle, iowait, irq, softirq, steal] = f;
  return {
    busyMs: (user + nice + system + irq + softirq + steal) * TICK_MS,
    idleMs: (idle + iowait) * TICK_MS,
    irqMs: (irq + softirq) * TICK_MS,
  };
}

// With BENCH_TASKS=1, every process and kernel thread of the harness with its CPU so far (user + system, ms,
// exited threads included), by "pid comm": a hundred files, read at each point of a boot.
function allTasks() {
  const out = {};
  for (const pid of readdirSync("/proc").filter((d) => /^\d+$/.test(d))) {
    try {
      const { comm, f } = statFields(`/proc/${pid}/stat`);
      out[`${pid} ${comm}`] = (Number(f[11]) + Number(f[12])) * TICK_MS;
    } catch {
      continue;
    }
  }
  return out;
}

// One point of a boot's CPU account: when, the VMM's process, the harness as a whole.
function cpuPoint(t0, proc) {
  return {
    atMs: Number(process.hrtime.bigint() - t0) / 1e6,
    ...(proc ?? { userMs: 0, sysMs: 0, guestMs: 0 }),
    ...hostCpu(),
    tasks: cfg.tasks ? allTasks() : undefined,
  };
}

function bootOnce(vmm) {
  return new Promise((resolve) => {
    for (const h of HISTS) trigger(h, true);
    const before = vmstat();
    const t0 = process.hrtime.bigint();
    // The CPU account at the start, when the guest first had CPU time, and at init's line.
    const points = { start: cpuPoint(t0) };
    const child = spawn(vmm.cmd[0], vmm.cmd.slice(1), {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, ...(vmm.env ?? {}) },
    });
    // The process's figures every 100 ms (one file) until the guest has had CPU time; then no more reads.
    const sampler = setInterval(() => {
      const p = processTimes(child.pid);
      if (p && p.guestMs > 0) {
        points.guest = cpuPoint(t0, p);
        clearInterval(sampler);
      }
    }, 100);
    let threads = [];
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
          points.init = cpuPoint(t0, processTimes(child.pid));
          // A VMM that ends its threads as soon as init has written may show only the ones still alive here.
          threads = threadTimes(child.pid);
        }
      }
    });
    child.stderr.on("data", (b) => (err += b.toString("latin1")));
    const timer = setTimeout(() => child.kill("SIGKILL"), cfg.timeoutMs);
    child.on("exit", (code, signal) => {
      clearTimeout(timer);
      clearInterval(sampler);
      const endMs = Number(process.hrtime.bigint() - t0) / 1e6;
      const [exits, userspace, pio, syscalls] = HISTS.map(readHist);
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
        // By "thread index in threads (their order of creation),syscall number", the VMM's threads only.
        syscalls:
          syscalls &&
          Object.fromEntries(
            Object.entries(syscalls)
              .map(([k, n]) => {
                const [tid, id] = k.split(",");
                return [`${threads.findIndex((t) => t.tid === Number(tid))},${id}`, n];
              })
              .filter(([k]) => !k.startsWith("-1,")),
          ),
        memory,
        threads,
        points,
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
// Each round starts with the next VMM, so that no VMM is always the one after the bench's own start.
for (let round = 0; round < cfg.rounds; round++)
  for (const vmm of cfg.vmms.map((_, i) => cfg.vmms[(i + round) % cfg.vmms.length])) {
    const r = await bootOnce(vmm);
    process.stdout.write(`SVM bench ${JSON.stringify({ round, ...r })}\n`);
  }
