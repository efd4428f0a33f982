#!/usr/bin/env node
// virtio throughput from the guest, against two references run in the same script:
//   - the same VM's plain port-I/O exit: each bench guest first does 1000 `out` to a port nobody claims and
//     times them with the TSC, then its 1000 virtio requests (guest/examples/virtio-{rng,blk}-bench.c);
//   - QEMU's `microvm` machine (it has virtio-mmio) running the same guest code, booted through PVH (the
//     same ELF32 with a PVH entry note and the device base QEMU uses, bench/qemu/), with KVM.
// Printed: MB/s and requests/s under vmtool (from its --stats wall time of the vCPU loop), user-space exits per
// request (--stats: the notify is an ioeventfd, so it is not among them), and the TSC ratios: a request against
// a port-I/O exit in the same VM, and vmtool against QEMU for the same 1000 requests. Medians of BENCH_RUNS.
// Usage: VMTOOL_DIST=.dist-x node bench/virtio.mjs      BENCH_RUNS=7 node bench/virtio.mjs
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
const DIST = join(ROOT, process.env.VMTOOL_DIST || "dist");
const CLI = join(DIST, "src", "cli", "main.js");
const RUNS = Number(process.env.BENCH_RUNS || 5);
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

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
/** "tsc/1024: 1000 port exits P, 1000 requests R" from the guest's output. */
function tsc(out) {
  const m = /tsc\/1024: 1000 port exits (\d+), 1000 requests (\d+)/.exec(out);
  if (!m) throw new Error(`no TSC line in:\n${out}`);
  return { port: Number(m[1]), req: Number(m[2]) };
}

function vmtool(guest, args) {
  const r = spawnSync(process.execPath, [CLI, "run", "--json", ...args, join(work, guest)], {
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

let qemuWhy = qemuOk ? "" : `${QEMU} not found`;
for (const c of cases) {
  const v = [];
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
    v.push(vmtool(`${c.guest}.elf`, c.args));
    if (qelf && !qemuWhy)
      try {
        q.push(qemu(qelf, c.qemuDevice));
      } catch (e) {
        qemuWhy = `QEMU microvm did not run the guest: ${e.message.split("\n").slice(0, 2).join(" ")}`;
      }
  }
  const reqTsc = median(v.map((r) => r.req));
  const portTsc = median(v.map((r) => r.port));
  const reqSeconds = (reqTsc * 1024) / TSC_HZ;
  const last = v[v.length - 1].stats;
  const portExits = last.byAddress.find((a) => a.key === "port 0xe0 out")?.count ?? 0;
  console.log(`${c.name}: ${REQUESTS} requests of ${c.bytes} bytes, one at a time (median of ${RUNS})`);
  console.log(
    `  vmtool: ${((REQUESTS * c.bytes) / reqSeconds / 1e6).toFixed(1)} MB/s, ${Math.round(REQUESTS / reqSeconds)} requests/s, ` +
      `${((reqSeconds * 1e6) / REQUESTS).toFixed(1)} µs per request`,
  );
  console.log(
    `  user-space exits per request: ${((last.exits - portExits) / REQUESTS).toFixed(3)} (${last.exits - portExits} ` +
      `besides the 1000 port exits, set-up included); notifies through ioeventfd: ${last.ioeventfdNotifies}; ` +
      `register accesses forwarded: ${last.forwarded}`,
  );
  console.log(
    `  one request = ${(reqTsc / portTsc).toFixed(2)} port-I/O exits of the same VM ` +
      `(${((portTsc * 1024 * 1e6) / TSC_HZ / 1000).toFixed(1)} µs per port exit)`,
  );
  if (q.length === RUNS) {
    const qReq = median(q.map((r) => r.req));
    const qPort = median(q.map((r) => r.port));
    const qSeconds = (qReq * 1024) / TSC_HZ;
    console.log(
      `  QEMU microvm: ${((REQUESTS * c.bytes) / qSeconds / 1e6).toFixed(1)} MB/s, ${Math.round(REQUESTS / qSeconds)} requests/s; ` +
        `one request = ${(qReq / qPort).toFixed(2)} of its port-I/O exits; ` +
        `ratio vmtool / QEMU: requests ${(reqTsc / qReq).toFixed(2)}x the time, port exits ${(portTsc / qPort).toFixed(2)}x`,
    );
  }
}
if (qemuWhy) console.log(`QEMU microvm: not compared (${qemuWhy})`);
