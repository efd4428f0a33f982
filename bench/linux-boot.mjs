// Time to init and exits per boot of Debian's kernel, vmtool against QEMU microvm, under the same nested KVM:
// the kvm_amd VM of the test harness (QEMU TCG, docs/svm.md) with QEMU carried in (its binary, the libraries
// ldd lists and the firmware microvm loads). Inside, the same bzImage, vmlinux and busybox initramfs boot in
// alternation with vmtool (bzImage and PVH) and QEMU microvm (PVH, ACPI off and on, the RTC on), round after
// round (bench/linux-boot-inner.mjs). The init prints its first line and ends the run through port 0xF4
// (vmtool's exit port; QEMU's isa-debug-exit there), so every VMM ends the same way.
//
//   node bench/linux-boot.mjs    BENCH_RUNS=rounds (default 2), VMTOOL_DIST=build[,build2] (default dist:
//                                with two, each vmtool boot runs with both builds, in alternation),
//                                BENCH_ONLY=word,... (only the VMMs whose name contains one, e.g. vmtool),
//                                BENCH_MARKS=1 (vmtool's start-up timeline too: VMTOOL_STARTUP_MARKS, medians),
//                                BENCH_NODE_FLAGS="--jitless|--max-lazy" (vmtool rows with node's options),
//                                BENCH_TASKS=1 (the harness's busiest tasks in each phase of a boot),
//                                BENCH_SYSCALLS=1 (each VMM thread's system calls, by number)
//
// Prints each VMM's median time to init (from the VMM's start to init's first line) and exits by reason
// (SVM exit codes, exits to user space, port I/O), and the ratios against QEMU microvm with ACPI off.
import { execFileSync, spawn } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from "node:fs";
import { basename, join, relative } from "node:path";
import { ROOT, workDir } from "./lib.mjs";

const ROUNDS = Number(process.env.BENCH_RUNS ?? 2);
const DISTS = (process.env.VMTOOL_DIST ?? "dist").split(",");
const DIST = DISTS[0];
// BENCH_VERBOSE=1 drops `quiet` and keeps each boot's console output (in BENCH_CONSOLE_DIR, default the work
// folder), to see where a slow boot's time went.
const VERBOSE = process.env.BENCH_VERBOSE === "1";
// The kvm_amd VM's CPUs (BENCH_HARNESS_CPUS, default 1): with 2, QEMU's multi-threaded TCG runs them on two host
// threads, and a VMM's own threads can run beside its vCPU.
const HARNESS_CPUS = Number(process.env.BENCH_HARNESS_CPUS ?? "1");
if (!Number.isInteger(HARNESS_CPUS) || HARNESS_CPUS < 1 || HARNESS_CPUS > 8)
  throw new Error(`BENCH_HARNESS_CPUS=${process.env.BENCH_HARNESS_CPUS}: give 1 to 8`);
// BENCH_NODE_FLAGS="--a|--b --c": a vmtool PVH row more for each set of node options (V8's tiers cost the
// harness's software CPU differently from a real one: --jitless, --no-sparkplug, --max-lazy...).
const NODE_FLAG_SETS = (process.env.BENCH_NODE_FLAGS ?? "")
  .split("|")
  .map((f) => f.trim())
  .filter(Boolean);
const CMDLINE = `console=ttyS0${VERBOSE ? "" : " quiet"} pci=off panic=-1`;
// What microvm loads (QEMU 10: qboot.rom with acpi=off, bios-microvm.bin with acpi=on; pvh.bin for a PVH kernel).
const QEMU_FIRMWARE = ["qboot.rom", "bios-microvm.bin", "pvh.bin", "linuxboot_dma.bin", "kvmvapic.bin"];
/** SVM exit codes (AMD APM vol. 2, appendix C) for the ones a Linux boot makes. */
const SVM_EXIT = {
  0x40: "exception #DE",
  0x41: "exception #DB",
  0x46: "exception #UD",
  0x4e: "exception #PF",
  0x52: "exception #MC",
  0x60: "INTR",
  0x61: "NMI",
  0x62: "SMI",
  0x63: "INIT",
  0x64: "VINTR",
  0x65: "CR0_SEL_WRITE",
  0x6e: "RDTSC",
  0x72: "CPUID",
  0x74: "IRET",
  0x76: "INVD",
  0x77: "PAUSE",
  0x78: "HLT",
  0x79: "INVLPG",
  0x7a: "INVLPGA",
  0x7b: "IOIO",
  0x7c: "MSR",
  0x7f: "SHUTDOWN",
  0x80: "VMRUN",
  0x81: "VMMCALL",
  0x87: "RDTSCP",
  0x89: "WBINVD",
  0x8a: "MONITOR",
  0x8b: "MWAIT",
  0x8d: "XSETBV",
  0x400: "NPF",
  0x401: "AVIC_INCOMPLETE_IPI",
  0x402: "AVIC_NOACCEL",
};
const svmExitName = (code) => {
  const n = Number(code);
  if (SVM_EXIT[n]) return SVM_EXIT[n];
  if (n < 0x10) return `read CR${n}`;
  if (n < 0x20) return `write CR${n - 0x10}`;
  if (n < 0x30) return `read DR${n - 0x20}`;
  if (n < 0x40) return `write DR${n - 0x30}`;
  return `0x${n.toString(16)}`;
};

const dist = join(ROOT, DIST);
for (const d of DISTS)
  if (!existsSync(join(ROOT, d, "bundle", "vmtool.cjs"))) {
    console.error(`linux-boot: ${d}/bundle/vmtool.cjs missing: build first (npm run build)`);
    process.exit(2);
  }
const work = workDir("vmtool-linux-boot-");
const extra = join(work, "extra");
mkdirSync(join(extra, "qemu", "lib"), { recursive: true });
mkdirSync(join(extra, "qemu", "share"), { recursive: true });

// QEMU and what it loads: its libraries (run with LD_LIBRARY_PATH inside) and microvm's firmware.
const qemuBin = execFileSync("sh", ["-c", 'readlink -f "$(command -v qemu-system-x86_64)"'], {
  encoding: "utf8",
}).trim();
copyFileSync(qemuBin, join(extra, "qemu", "qemu-system-x86_64"));
execFileSync("chmod", ["+x", join(extra, "qemu", "qemu-system-x86_64")]);
for (const lib of execFileSync("ldd", [qemuBin], { encoding: "utf8" }).matchAll(/=> (\/\S+)/g))
  copyFileSync(lib[1], join(extra, "qemu", "lib", basename(lib[1])));
const qemuData = ["/usr/share/qemu", "/usr/share/seabios", "/usr/lib/ipxe/qemu"];
for (const f of QEMU_FIRMWARE) {
  const from = qemuData.map((d) => join(d, f)).find((p) => existsSync(p));
  if (!from) throw new Error(`QEMU firmware ${f} not found in ${qemuData.join(", ")}`);
  copyFileSync(from, join(extra, "qemu", "share", f));
}
const qemuVersion = execFileSync(qemuBin, ["--version"], { encoding: "utf8" }).split("\n")[0];

// The kernel (Debian's, as the tests fetch it), its vmlinux, and a busybox initramfs whose init prints its
// uptime and ends the run through port 0xF4.
const helpers = await import(join(dist, "test", "linux", "helpers.js"));
const { extractVmlinux } = await import(join(dist, "test", "linux", "pvh-vmlinux.js"));
const bzImage = helpers.debianKernel();
extractVmlinux(bzImage, extra);
writeFileSync(
  join(extra, "initrd.cpio"),
  helpers.busyboxInitramfs(
    "mount -t proc proc /proc\n" +
      'echo "INIT-LINE: $(cut -d" " -f1 /proc/uptime)"\n' +
      "printf '\\005' | dd of=/dev/port bs=1 seek=244 count=1 2>/dev/null\n",
  ),
);
copyFileSync(join(ROOT, "bench", "linux-boot-inner.mjs"), join(extra, "linux-boot-inner.mjs"));

// Paths as the VM sees them: the project at /svm/repo, the extra folder at /svm/extra.
const e = "/svm/extra";
const inKernel = `/svm/repo/${relative(ROOT, bzImage)}`;
// vmtool as installed runs it: the bundled command (package.json "bin"). The first build is the harness's own
// (/svm/repo); a second one is carried in the extra folder, its bundle and compiled modules at the same places.
const vmtoolEntry = (d) => (d === DIST ? `/svm/repo/${d}` : `${e}/${d}`) + "/bundle/vmtool.cjs";
for (const d of DISTS.slice(1)) {
  mkdirSync(join(extra, d), { recursive: true });
  for (const sub of ["bundle", "src"]) execFileSync("cp", ["-r", join(ROOT, d, sub), join(extra, d, sub)]);
  symlinkSync("/svm/repo/node_modules", join(extra, d, "node_modules")); // the harness's own (koffi, commander)
}
const vmtool = (kernel, d, extraWords = "", nodeFlags = "") => [
  "node",
  ...nodeFlags.split(" ").filter(Boolean),
  vmtoolEntry(d),
  "run",
  ...["--kernel", kernel, "--initrd", `${e}/initrd.cpio`, "--cmdline", CMDLINE + extraWords, "--mem", "256M"],
];
const qemu = (machine) => [
  `${e}/qemu/qemu-system-x86_64`,
  ...["-M", machine, "-enable-kvm", "-cpu", "host", "-m", "256", "-smp", "1"],
  ...["-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio", "-no-reboot"],
  ...["-L", `${e}/qemu/share`, "-device", "isa-debug-exit,iobase=0xf4,iosize=4"],
  ...["-kernel", `${e}/vmlinux`, "-initrd", `${e}/initrd.cpio`, "-append", CMDLINE],
];
const qemuEnv = { LD_LIBRARY_PATH: `${e}/qemu/lib` };
const build = (d) => (DISTS.length > 1 ? ` (${d})` : "");
const vmtoolEnv = process.env.BENCH_MARKS === "1" ? { VMTOOL_STARTUP_MARKS: "1" } : undefined;
const ALL_VMMS = [
  ...DISTS.map((d) => ({ name: `vmtool bzImage${build(d)}`, cmd: vmtool(inKernel, d), env: vmtoolEnv })),
  ...DISTS.map((d) => ({ name: `vmtool PVH${build(d)}`, cmd: vmtool(`${e}/vmlinux`, d), env: vmtoolEnv })),
  // The kernel told to ignore the ACPI tables (it then reads the MP table), as QEMU's acpi=off has none.
  ...DISTS.map((d) => ({
    name: `vmtool PVH acpi=off${build(d)}`,
    cmd: vmtool(`${e}/vmlinux`, d, " acpi=off"),
    env: vmtoolEnv,
  })),
  ...NODE_FLAG_SETS.map((f) => ({
    name: `vmtool PVH [node ${f}]`,
    cmd: vmtool(`${e}/vmlinux`, DIST, "", f),
    env: vmtoolEnv,
  })),
  { name: "QEMU microvm PVH acpi=off", cmd: qemu("microvm,acpi=off,rtc=on"), env: qemuEnv },
  { name: "QEMU microvm PVH acpi=on", cmd: qemu("microvm,acpi=on,rtc=on"), env: qemuEnv },
];
const ONLY = (process.env.BENCH_ONLY ?? "").split(",");
const VMMS = ALL_VMMS.filter((v) => ONLY.some((w) => v.name.includes(w)));
if (VMMS.length === 0)
  throw new Error(
    `BENCH_ONLY=${process.env.BENCH_ONLY}: no VMM's name contains it (${ALL_VMMS.map((v) => v.name).join(", ")})`,
  );
const REFERENCE = "QEMU microvm PVH acpi=off";
writeFileSync(
  join(extra, "config.json"),
  JSON.stringify({
    rounds: ROUNDS,
    vmms: VMMS,
    timeoutMs: 180_000,
    console: VERBOSE,
    tasks: process.env.BENCH_TASKS === "1",
    syscalls: process.env.BENCH_SYSCALLS === "1",
  }),
);
writeFileSync(
  join(work, "job"),
  `node ${e}/linux-boot-inner.mjs ${e}/config.json >&3 2>/tmp/bench.err\nsed 's/^/SVM bench-err /' /tmp/bench.err >&3\n`,
);

console.error(
  `linux-boot: ${ROUNDS} rounds of ${VMMS.length} boots inside the kvm_amd VM (${HARNESS_CPUS} CPU${HARNESS_CPUS > 1 ? "s" : ""}; ${qemuVersion} inside and out); ` +
    "building the initramfs...",
);
const initrd = join(work, "initrd.gz");
const outerKernel = execFileSync(
  join(ROOT, "scripts", "svm-build-initramfs.sh"),
  [DIST, initrd, join(work, "job"), extra],
  { cwd: ROOT, encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] },
).trim();
const results = join(work, "results.log");
const console_ = join(work, "console.log");
const t0 = Date.now();
await new Promise((resolve, reject) => {
  const q = spawn(
    "qemu-system-x86_64",
    [
      ...["-accel", "tcg", "-cpu", "max", "-smp", String(HARNESS_CPUS), "-m", "2048"],
      ...["-display", "none", "-monitor", "none", "-no-reboot", "-nodefaults"],
      ...["-serial", `file:${console_}`, "-serial", `file:${results}`],
      ...["-kernel", outerKernel, "-initrd", initrd, "-append", "console=ttyS0 panic=-1 quiet"],
    ],
    { stdio: ["ignore", "ignore", "inherit"] },
  );
  const timer = setTimeout(() => q.kill("SIGKILL"), 3_600_000);
  q.on("error", reject);
  q.on("exit", () => {
    clearTimeout(timer);
    resolve();
  });
});
const lines = existsSync(results) ? readFileSync(results, "utf8").replace(/\r/g, "").split("\n") : [];
const boots = lines.filter((l) => l.startsWith("SVM bench {")).map((l) => JSON.parse(l.slice(10)));
for (const l of lines.filter((x) => x.startsWith("SVM bench-err "))) console.error(l.slice(14));
for (const l of lines.filter((x) => x.startsWith("SVM bench-memory ")))
  console.log(`harness memory: ${l.slice(17)}`);
if (VERBOSE) {
  const dir = process.env.BENCH_CONSOLE_DIR ?? work;
  mkdirSync(dir, { recursive: true });
  for (const b of boots)
    writeFileSync(join(dir, `${b.vmm.replace(/\W+/g, "-")}.round${b.round}.log`), b.console ?? "");
  console.log(`console output of each boot: ${dir}`);
}
if (boots.length === 0) {
  console.error("linux-boot: nothing came back from the VM; its console:");
  console.error(existsSync(console_) ? readFileSync(console_, "utf8").split("\n").slice(-30).join("\n") : "");
  process.exit(1);
}
console.error(`linux-boot: ${boots.length} boots in ${((Date.now() - t0) / 1000).toFixed(0)} s`);

const median = (xs) => {
  const s = xs.filter((x) => x !== undefined).sort((a, b) => a - b);
  if (s.length === 0) return undefined;
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const sum = (o) => Object.values(o).reduce((a, b) => a + b, 0);
const rows = VMMS.map((v) => {
  const bs = boots.filter((b) => b.vmm === v.name);
  for (const b of bs.filter((x) => x.initMs === undefined))
    console.error(`${v.name}, round ${b.round}: no init line (status ${b.status})\n${b.tail}`);
  const reasons = new Set(bs.flatMap((b) => Object.keys(b.exits)));
  const byReason = Object.fromEntries(
    [...reasons].map((r) => [svmExitName(r), median(bs.map((b) => b.exits[r] ?? 0))]),
  );
  const ports = new Set(bs.flatMap((b) => Object.keys(b.pio)));
  const byPort = Object.fromEntries(
    [...ports].map((p) => {
      const [port, rw] = p.split(",");
      return [
        `0x${Number(port).toString(16)} ${rw === "1" ? "out" : "in"}`,
        median(bs.map((b) => b.pio[p] ?? 0)),
      ];
    }),
  );
  return {
    name: v.name,
    statuses: bs.map((b) => b.status).join(" "),
    initMs: median(bs.map((b) => b.initMs)),
    guestUptime: median(bs.map((b) => b.guestUptime)),
    endMs: median(bs.map((b) => b.endMs)),
    exits: median(bs.map((b) => sum(b.exits))),
    userspace: median(bs.map((b) => sum(b.userspace))),
    byReason,
    byPort,
    all: bs.map((b) => `${(b.initMs / 1000).toFixed(1)} s / ${sum(b.exits)}`).join(", "),
  };
});
const ref = rows.find((r) => r.name === REFERENCE) ?? rows[0];
const fmt = (n, d = 0) =>
  n === undefined ? "-" : n.toLocaleString("en-US", { maximumFractionDigits: d, minimumFractionDigits: d });
console.log(
  `\n| VMM | time to init (s) | kernel uptime at init (s) | exits | of which to user space | time / QEMU | exits / QEMU | each run (time to init / exits) |`,
);
console.log("|---|---|---|---|---|---|---|---|");
for (const r of rows)
  console.log(
    `| ${r.name} | ${fmt(r.initMs / 1000, 2)} | ${fmt(r.guestUptime, 2)} | ${fmt(r.exits)} | ${fmt(r.userspace)} | ` +
      `${fmt(r.initMs / ref.initMs, 2)} | ${fmt(r.exits / ref.exits, 2)} | ${r.all} |`,
  );
const reasons = [...new Set(rows.flatMap((r) => Object.keys(r.byReason)))].sort(
  (a, b) => (rows[0].byReason[b] ?? 0) - (rows[0].byReason[a] ?? 0),
);
console.log(`\n| exit reason (median per boot) | ${rows.map((r) => r.name).join(" | ")} |`);
console.log(`|---|${rows.map(() => "---").join("|")}|`);
for (const x of reasons) console.log(`| ${x} | ${rows.map((r) => fmt(r.byReason[x] ?? 0)).join(" | ")} |`);
const ports = [...new Set(rows.flatMap((r) => Object.keys(r.byPort)))].sort(
  (a, b) => Math.max(...rows.map((r) => r.byPort[b] ?? 0)) - Math.max(...rows.map((r) => r.byPort[a] ?? 0)),
);
console.log(`\n| port (median per boot) | ${rows.map((r) => r.name).join(" | ")} |`);
console.log(`|---|${rows.map(() => "---").join("|")}|`);
for (const p of ports.slice(0, 20))
  console.log(`| ${p} | ${rows.map((r) => fmt(r.byPort[p] ?? 0)).join(" | ")} |`);
const counters = [...new Set(boots.flatMap((b) => Object.keys(b.memory ?? {})))];
if (counters.length > 0) {
  console.log(`\n| host memory, /proc/vmstat (median per boot) | ${rows.map((r) => r.name).join(" | ")} |`);
  console.log(`|---|${rows.map(() => "---").join("|")}|`);
  for (const c of counters)
    console.log(
      `| ${c} | ${rows.map((r) => fmt(median(boots.filter((b) => b.vmm === r.name).map((b) => b.memory?.[c] ?? 0)))).join(" | ")} |`,
    );
}
// CPU per thread of each VMM's process up to init's line (median per boot, ms), threads in their order of
// creation: user time outside the guest, system time, guest time.
console.log(
  "\n| CPU to init's line (median ms): user / system / guest | all threads | each thread with any |",
);
console.log("|---|---|---|");
for (const r of rows) {
  const bs = boots.filter((b) => b.vmm === r.name && b.threads?.length);
  if (bs.length === 0) continue;
  const usg = (ts) => {
    const m = (k) => median(ts.map(k));
    return `${fmt(m((t) => t.userMs - t.guestMs))} / ${fmt(m((t) => t.sysMs))} / ${fmt(m((t) => t.guestMs))}`;
  };
  const sumOf = (b) =>
    b.threads.reduce(
      (a, t) => ({ userMs: a.userMs + t.userMs, sysMs: a.sysMs + t.sysMs, guestMs: a.guestMs + t.guestMs }),
      { userMs: 0, sysMs: 0, guestMs: 0 },
    );
  const sorted = bs.map((b) => [...b.threads].sort((x, y) => x.tid - y.tid));
  const each = [];
  for (let i = 0; i < Math.max(...sorted.map((t) => t.length)); i++) {
    const ts = sorted.map((t) => t[i]).filter(Boolean);
    if (ts.some((t) => t.userMs + t.sysMs > 0)) each.push(`#${i} ${ts[0].comm} ${usg(ts)}`);
  }
  console.log(`| ${r.name} | ${usg(bs.map(sumOf))} | ${each.join("; ")} |`);
}
// Context switches per thread to init's line (median per boot), and with BENCH_SYSCALLS=1 each thread's most
// frequent system calls (x86-64 numbers, median per boot).
for (const r of rows) {
  const bs = boots.filter((b) => b.vmm === r.name && b.threads?.length);
  if (bs.length === 0) continue;
  const sorted = bs.map((b) => [...b.threads].sort((x, y) => x.tid - y.tid));
  const parts = [];
  for (let i = 0; i < Math.max(...sorted.map((t) => t.length)); i++) {
    const ts = sorted.map((t) => t[i]).filter((t) => t?.switches);
    const vol = median(ts.map((t) => t.switches.voluntary));
    const inv = median(ts.map((t) => t.switches.involuntary));
    const faults = median(ts.map((t) => t.minorFaults));
    if (vol + inv > 10)
      parts.push(
        `#${i} ${fmt(vol)} voluntary, ${fmt(inv)} involuntary switches, ${fmt(faults)} minor faults`,
      );
    const calls = {};
    // The inner script numbers threads in their order of creation, as sorted here.
    for (const b of bs.filter((x) => x.syscalls))
      for (const [k, n] of Object.entries(b.syscalls))
        if (k.startsWith(`${i},`)) (calls[k.split(",")[1]] ??= []).push(n);
    const top = Object.entries(calls)
      .map(([id, ns]) => [id, median(ns)])
      .sort((x, y) => y[1] - x[1])
      .slice(0, 8);
    if (top.length) parts.push(`#${i} system calls: ${top.map(([id, n]) => `${id}×${fmt(n)}`).join(" ")}`);
  }
  console.log(`\n${r.name} per thread, to init's line: ${parts.join("; ")}`);
}
// Where each phase's wall time went (median ms per boot): the VMM's user time outside the guest, its system
// time, the guest's, everything else the harness's CPU did (its kernel threads, the bench's sampler), and idle.
const PHASES = [
  ["start", "guest", "start -> the guest first ran"],
  ["guest", "init", "the guest first ran -> init's line"],
];
console.log(
  "\n| phase (median ms per boot) | VMM | wall | VMM user | VMM system | guest | other busy | harness idle |",
);
console.log("|---|---|---|---|---|---|---|---|");
const tops = [];
for (const [from, to, label] of PHASES)
  for (const r of rows) {
    const ds = boots
      .filter((b) => b.vmm === r.name && b.points?.[from] && b.points?.[to])
      .map((b) => {
        const [a, z] = [b.points[from], b.points[to]];
        const d = (k) => z[k] - a[k];
        return {
          wall: d("atMs"),
          user: d("userMs"),
          sys: d("sysMs"),
          guest: d("guestMs"),
          other: d("busyMs") - d("userMs") - d("sysMs") - d("guestMs"),
          idle: d("idleMs"),
          irq: d("irqMs"),
          tasks: Object.entries(z.tasks ?? {}).map(([k, ms]) => [k, ms - (a.tasks?.[k] ?? 0)]),
        };
      });
    if (ds.length === 0) continue;
    const m = (k) => fmt(median(ds.map((x) => x[k])));
    console.log(
      `| ${label} | ${r.name} | ${m("wall")} | ${m("user")} | ${m("sys")} | ${m("guest")} | ${m("other")} (irq ${m("irq")}) | ${m("idle")} |`,
    );
    // With BENCH_TASKS=1: the harness's busiest tasks in the phase (the VMM's process among them), last boot.
    if (!ds.at(-1).tasks.length) continue;
    const top = ds
      .at(-1)
      .tasks.filter(([, ms]) => ms > 0)
      .sort((x, y) => y[1] - x[1])
      .slice(0, 6);
    tops.push(`${label}, ${r.name}: ${top.map(([k, ms]) => `${k} ${fmt(ms)}`).join(", ")}`);
  }
if (tops.length) console.log(`\nbusiest tasks in the harness per phase (ms, last boot):\n${tops.join("\n")}`);
console.log(`\nexit statuses: ${rows.map((r) => `${r.name}: ${r.statuses}`).join("; ")}`);
if (vmtoolEnv) {
  // Each mark's median time (ms from the process's start) per vmtool row, in the order of the first boot.
  for (const v of VMMS.filter((x) => x.env === vmtoolEnv)) {
    const bs = boots.filter((b) => b.vmm === v.name && b.marks?.length);
    if (bs.length === 0) continue;
    console.log(`\nstart-up of ${v.name} (median ms of ${bs.length} boots):`);
    for (const [, what] of bs[0].marks) {
      const at = median(bs.map((b) => b.marks.find((m) => m[1] === what)?.[0]));
      console.log(`  ${fmt(at, 0).padStart(6)}  ${what}`);
    }
  }
}
