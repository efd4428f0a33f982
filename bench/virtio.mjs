#!/usr/bin/env node
// virtio throughput from the guest, against two references run in the same script:
//   - the same VM's plain port-I/O exit: each bench guest first does 1000 `out` to a port nobody claims and
//     times them with the TSC, then its 1000 virtio requests (guest/examples/virtio-{rng,blk}-bench.c);
//   - QEMU's `microvm` machine (it has virtio-mmio) running the same guest code, booted through PVH (the
//     same ELF32 with a PVH entry note and the device base QEMU uses, bench/qemu/), with KVM.
// Each round runs every vmtool build, then QEMU, one after the other (so a change in the host's load hits
// them alike). Printed per case: time per request of every run (µs, from the guest's TSC), the medians and
// ranges, vmtool / QEMU as the ratio of the medians and as the median of each round's own ratio, user-space
// exits per request (--stats: the notify is an ioeventfd, so it is not among them), and a request against a
// port-I/O exit of the same VM.
// Usage: node bench/virtio.mjs                 BENCH_RUNS=11 (default 5)   BENCH_CASES=rng (or blk)
//        VMTOOL_DIST=.dist-x node bench/virtio.mjs                       another output folder
//        VMTOOL_DIST=dist,../base/dist node bench/virtio.mjs             several builds, alternating in rounds
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { median } from "./lib.mjs";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
// The command as installed (package.json "bin": the bundle), else the separate compiled modules.
const CLIS = (process.env.VMTOOL_DIST || "dist").split(",").map((d) => {
  const dist = resolve(ROOT, d);
  const bundle = join(dist, "bundle", "vmtool.cjs");
  return { name: d, cli: existsSync(bundle) ? bundle : join(dist, "src", "cli", "main.js") };
});
const RUNS = Number(process.env.BENCH_RUNS || 5);
const CASES = (process.env.BENCH_CASES || "rng,blk").split(",");
const REQUESTS = 1000;
const QEMU = "qemu-system-x86_64";
const QEMU_VIRTIO_BASE = "0xFEB00000u"; // microvm's first virtio-mmio transport

const work = mkdtempSync(join(tmpdir(), "vmtool-bench-virtio-"));
process.on("exit", () => rmSync(work, { recursive: true, force: true }));
execFileSync("make", ["-s", "-C", join(ROOT, "guest"), `OUT=${work}`], {
  stdio: ["ignore", "ignore", "inherit"],
});
execFileSync("gcc", ["-O2", join(ROOT, "bench", "c", "tsc-hz.c"), "-o", join(work, "tsc-hz")]);
const TSC_HZ = Number(execFileSync(join(work, "tsc-hz"), { encoding: "utf8" }).trim());
const disk = join(work, "disk.img");
writeFileSync(disk, new Uint8Array(4 << 20));

/** "tsc/1024: 1000 port exits P, 1000 requests R" from the guest's output. */
function tsc(out) {
  const m = /tsc\/1024: 1000 port exits (\d+), 1000 requests (\d+)/.exec(out);
  if (!m) throw new Error(`no TSC line in:\n${out}`);
  return { port: Number(m[1]), req: Number(m[2]) };
}

function vmtool(cli, guest, args) {
  const r = spawnSync(process.execPath, [cli, "run", "--json", ...args, join(work, guest)], {
    encoding: "utf8",
    input: "",
  });
  if (r.status !== 0) throw new Error(`vmtool ${args.join(" ")} ${guest}: status ${r.status}\n${r.stderr}`);
  return { ...tsc(r.stdout), stats: JSON.parse(r.stderr.trim().split("\n").pop()) };
}

// QEMU's copies of the guests: the same C file, the device at microvm's address, a PVH note, exit port at the end.
const qemuOk = spawnSync(QEMU, ["--version"]).status === 0;
function qemuGuest(name) {
  const g = join(ROOT, "guest");
  const cflags = (
    "-std=gnu11 -O2 -ffreestanding -nostdlib -fno-pic -fno-pie -fno-stack-protector -fno-asynchronous-unwind-tables " +
    "-fno-builtin -mgeneral-regs-only -m32 -march=i686"
  ).split(" ");
  const o = (n) => join(work, `q-${n}.o`);
  execFileSync("gcc", [
    ...cflags,
    "-I",
    join(g, "include"),
    `-DBASE=${QEMU_VIRTIO_BASE}`,
    "-Dmain=bench_main",
    "-c",
    join(g, "examples", `${name}.c`),
    "-o",
    o(name),
  ]);
  execFileSync("gcc", [...cflags, "-c", join(ROOT, "bench", "qemu", "exit-main.c"), "-o", o("exit-main")]);
  execFileSync("gcc", [...cflags, "-c", join(ROOT, "bench", "qemu", "pvh-note.S"), "-o", o("pvh-note")]);
  const elf = join(work, `q-${name}.elf`);
  const lib = ["printf", "string", "boot_info_print", "start32"].map((n) => join(work, "obj32", `${n}.o`));
  execFileSync("ld", [
    "-m",
    "elf_i386",
    "-nostdlib",
    "-static",
    "-T",
    join(ROOT, "bench", "qemu", "pvh.ld"),
    ...lib,
    o("pvh-note"),
    o(name),
    o("exit-main"),
    "-o",
    elf,
  ]);
  return elf;
}
function qemu(elf, device) {
  const r = spawnSync(
    QEMU,
    [
      ...["-M", "microvm,accel=kvm", "-m", "64M", "-nodefaults", "-no-user-config", "-display", "none"],
      ...["-global", "virtio-mmio.force-legacy=false", "-kernel", elf],
      ...["-chardev", "stdio,id=dbg", "-device", "isa-debugcon,iobase=0xe9,chardev=dbg"],
      ...["-device", "isa-debug-exit,iobase=0xf4,iosize=1", ...device],
    ],
    { encoding: "utf8", input: "", timeout: 120_000 },
  );
  if (r.status !== 3) throw new Error(`qemu: status ${r.status}\n${r.stdout}${r.stderr}`);
  return tsc(r.stdout);
}

const cases = [
  {
    name: "virtio-rng",
    guest: "virtio-rng-bench",
    bytes: 4096,
    args: ["--rng"],
    qemuDevice: ["-device", "virtio-rng-device,bus=virtio-mmio-bus.0"],
  },
  {
    name: "virtio-blk",
    guest: "virtio-blk-bench",
    bytes: 4096,
    args: ["--disk", disk],
    qemuDevice: [
      ...["-drive", `file=${disk},format=raw,if=none,id=d0,cache=writeback`],
      ...["-device", "virtio-blk-device,drive=d0,bus=virtio-mmio-bus.0"],
    ],
  },
];

const loadAtStart = loadavg()[0];
const usPerRequest = (tscCount) => (tscCount * 1024 * 1e6) / TSC_HZ / REQUESTS;
const fmtRange = (xs) =>
  `median ${median(xs).toFixed(1)}, range ${Math.min(...xs).toFixed(1)}-${Math.max(...xs).toFixed(1)}`;

let qemuWhy = qemuOk ? "" : `${QEMU} not found`;
for (const c of cases.filter((k) => CASES.some((n) => k.name === `virtio-${n}`))) {
  const v = CLIS.map(() => []);
  const q = [];
  let qelf;
  if (!qemuWhy)
    try {
      qelf = qemuGuest(c.guest);
    } catch (e) {
      qemuWhy = `could not build the PVH guest: ${e.message.split("\n")[0]}`;
    }
  for (let i = 0; i < RUNS; i++) {
    process.stderr.write(`${c.name}: run ${i + 1}/${RUNS}\r`);
    CLIS.forEach(({ cli }, k) => v[k].push(vmtool(cli, `${c.guest}.elf`, c.args)));
    if (qelf && !qemuWhy)
      try {
        q.push(qemu(qelf, c.qemuDevice));
      } catch (e) {
        qemuWhy = `QEMU microvm did not run the guest: ${e.message.split("\n").slice(0, 2).join(" ")}`;
      }
  }
  console.log(`${c.name}: ${REQUESTS} requests of ${c.bytes} bytes, one at a time (${RUNS} rounds)`);
  const qUs = q.length === RUNS ? q.map((r) => usPerRequest(r.req)) : undefined;
  CLIS.forEach(({ name }, k) => {
    const runs = v[k];
    const us = runs.map((r) => usPerRequest(r.req));
    const reqUs = median(us);
    const portTsc = median(runs.map((r) => r.port));
    const last = runs[runs.length - 1].stats;
    const portExits = last.byAddress.find((a) => a.key === "port 0xe0 out")?.count ?? 0;
    console.log(
      `  vmtool (${name}): µs per request ${fmtRange(us)}: ${(c.bytes / reqUs).toFixed(1)} MB/s, ` +
        `${Math.round(1e6 / reqUs)} requests/s`,
    );
    console.log(`    runs: ${us.map((x) => x.toFixed(1)).join(" ")}`);
    console.log(
      `    user-space exits per request: ${((last.exits - portExits) / REQUESTS).toFixed(3)} (${last.exits - portExits} ` +
        `besides the 1000 port exits, set-up included); notifies through ioeventfd: ${last.ioeventfdNotifies}; ` +
        `register accesses forwarded: ${last.forwarded}`,
    );
    console.log(
      `    one request = ${(median(runs.map((r) => r.req)) / portTsc).toFixed(2)} port-I/O exits of the same VM ` +
        `(${usPerRequest(portTsc).toFixed(1)} µs per port exit)`,
    );
    if (qUs) {
      const perRound = us.map((x, i) => x / qUs[i]);
      console.log(
        `    ratio vmtool / QEMU, time per request: ${(reqUs / median(qUs)).toFixed(2)} (medians), ` +
          `${median(perRound).toFixed(2)} (median of the rounds' ratios, range ${Math.min(...perRound).toFixed(2)}-${Math.max(...perRound).toFixed(2)})`,
      );
    }
  });
  if (qUs) {
    const qPort = median(q.map((r) => r.port));
    console.log(
      `  QEMU microvm: µs per request ${fmtRange(qUs)}: ${(c.bytes / median(qUs)).toFixed(1)} MB/s; ` +
        `one request = ${(median(q.map((r) => r.req)) / qPort).toFixed(2)} of its port-I/O exits ` +
        `(${usPerRequest(qPort).toFixed(1)} µs per port exit)`,
    );
    console.log(`    runs: ${qUs.map((x) => x.toFixed(1)).join(" ")}`);
  }
}
if (qemuWhy) console.log(`QEMU microvm: not compared (${qemuWhy})`);
// Both programs share the host with whatever else runs: single runs vary with its load.
console.log(
  `host load average (1 min): ${loadAtStart.toFixed(2)} at the start, ${loadavg()[0].toFixed(2)} at the end`,
);
