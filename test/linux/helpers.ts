// What the Linux tests share: Debian's kernel (the one scripts/fetch-debian-kernel.sh puts in .cache/kernel/,
// also carried into the kvm_amd VM), an initramfs built here from the host's static busybox, and which KVM
// backend this host has (a stock kernel boots only where the CPU's own virtualization runs ring 0: docs/linux.md).
import { execFileSync, spawn } from "node:child_process";
import { existsSync, readdirSync, readFileSync, realpathSync } from "node:fs";
import { join } from "node:path";
import { CLI, ROOT } from "../helpers/paths.js";

/** Debian's bzImage: from .cache/kernel/ (inside the kvm_amd VM it was carried there), else fetched. */
export function debianKernel(): string {
  const cache = join(ROOT, ".cache", "kernel");
  const have = () =>
    existsSync(cache)
      ? readdirSync(cache)
          .map((d) => join(cache, d, "vmlinuz"))
          .filter((p) => existsSync(p))
      : [];
  let found = have();
  if (found.length === 0) {
    execFileSync(join(ROOT, "scripts", "fetch-debian-kernel.sh"), { stdio: ["ignore", "ignore", "inherit"] });
    found = have();
  }
  if (found.length === 0)
    throw new Error("no Debian kernel in .cache/kernel (scripts/fetch-debian-kernel.sh)");
  return found.sort().at(-1) as string;
}

/** The KVM backend module loaded here: kvm_amd, kvm_intel or kvm_pvm (undefined if none is). */
export function kvmBackend(): string | undefined {
  return ["kvm_amd", "kvm_intel", "kvm_pvm"].find((m) => existsSync(`/sys/module/${m}`));
}

/** A static busybox: the harness's /bin/busybox inside the kvm_amd VM, the host's busybox-static here. */
export function staticBusybox(): string {
  for (const p of ["/bin/busybox", "/usr/bin/busybox"]) if (existsSync(p)) return realpathSync(p);
  throw new Error("busybox not found: apt-get install busybox-static");
}

interface CpioEntry {
  name: string;
  mode: number;
  data?: Uint8Array;
  rdev?: [number, number];
}

/** An uncompressed "newc" cpio archive, the format the kernel's initramfs unpacker reads. */
export function newcArchive(entries: readonly CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  let ino = 1;
  const pad4 = (n: number) => Buffer.alloc((4 - (n % 4)) % 4);
  const put = (e: CpioEntry) => {
    const name = Buffer.from(e.name + "\0");
    const data = Buffer.from(e.data ?? new Uint8Array(0));
    const f = (n: number) => n.toString(16).padStart(8, "0");
    const header =
      "070701" +
      [ino++, e.mode, 0, 0, 1, 0, data.length, 0, 0, e.rdev?.[0] ?? 0, e.rdev?.[1] ?? 0, name.length, 0]
        .map(f)
        .join("");
    parts.push(Buffer.from(header, "ascii"), name, pad4(110 + name.length), data, pad4(data.length));
  };
  for (const e of entries) put(e);
  put({ name: "TRAILER!!!", mode: 0 });
  return Buffer.concat(parts);
}

const DIR = 0o040755;
const FILE = 0o100755;
const CHR = 0o020600;
const LINK = 0o120777;

/**
 * The kernel modules of Debian's virtio drivers, in load order (each after what it depends on), from the
 * kernel's directory (`lib/modules/<release>/kernel/...`, as unpacked from its package; the kvm_amd harness
 * carries the same files in, decompressed).
 */
export const VIRTIO_MODULES = [
  "drivers/virtio/virtio_ring",
  "drivers/virtio/virtio",
  "drivers/virtio/virtio_mmio",
  "drivers/block/virtio_blk",
  "drivers/char/hw_random/virtio-rng",
  "drivers/char/virtio_console",
] as const;

/** The virtio modules of the kernel at `kernel` (its vmlinuz), as initramfs files lib/modules/NAME.ko. */
export function virtioModules(kernel: string): { name: string; data: Buffer }[] {
  const release = kernelRelease(kernel);
  if (release === undefined) throw new Error(`${kernel}: no release file beside it`);
  const dir = join(kernel, "..", "lib", "modules", release, "kernel");
  return VIRTIO_MODULES.map((m) => {
    const p = join(dir, `${m}.ko`);
    if (!existsSync(p)) throw new Error(`${p} missing (a plain .ko, as Debian's 6.1 package has it)`);
    return { name: `lib/modules/${m.split("/").at(-1)}.ko`, data: readFileSync(p) };
  });
}

/**
 * An initramfs whose /init is `script` (busybox sh), with busybox and its applets in /bin, and `files` (kernel
 * modules, for instance) at their paths.
 */
export function busyboxInitramfs(
  script: string,
  files: readonly { name: string; data: Buffer }[] = [],
): Buffer {
  const busybox = readFileSync(staticBusybox());
  const applets = [
    "sh",
    "mount",
    "cat",
    "echo",
    "grep",
    "halt",
    "poweroff",
    "reboot",
    "sleep",
    "date",
    "ls",
    "dd",
    "printf",
    "insmod",
    "od",
    "tr",
    "sort",
    "sync",
    "dmesg",
  ];
  return newcArchive([
    ...["dev", "proc", "sys", "bin", "tmp", ...(files.length > 0 ? ["lib", "lib/modules"] : [])].map((d) => ({
      name: d,
      mode: DIR,
    })),
    { name: "dev/console", mode: CHR, rdev: [5, 1] },
    { name: "dev/port", mode: CHR, rdev: [1, 4] }, // the I/O ports: init's `dd` to vmtool's exit port
    { name: "bin/busybox", mode: FILE, data: busybox },
    ...applets.map((a) => ({ name: `bin/${a}`, mode: LINK, data: Buffer.from("busybox") })),
    ...files.map((f) => ({ name: f.name, mode: 0o100644, data: f.data })),
    { name: "init", mode: FILE, data: Buffer.from(`#!/bin/sh\nexport PATH=/bin\n${script}`) },
  ]);
}

/** Debian's kernel release string of the bzImage's directory (its `release` file). */
export function kernelRelease(kernel: string): string | undefined {
  const p = join(kernel, "..", "release");
  return existsSync(p) ? readFileSync(p, "utf8").trim() : undefined;
}

/** Run a command, returning its status and output (never throwing on a non-zero status). */
export function runCmd(
  cmd: string,
  args: string[],
  timeoutMs: number,
): { status: number | null; signal: string | null; stdout: string; stderr: string } {
  try {
    const stdout = execFileSync(cmd, args, {
      encoding: "utf8",
      timeout: timeoutMs,
      killSignal: "SIGTERM",
      stdio: ["ignore", "pipe", "pipe"],
      maxBuffer: 64 << 20,
    });
    return { status: 0, signal: null, stdout, stderr: "" };
  } catch (e) {
    const x = e as { status: number | null; signal: string | null; stdout?: string; stderr?: string };
    return { status: x.status, signal: x.signal, stdout: x.stdout ?? "", stderr: x.stderr ?? "" };
  }
}

/** Why the stock-kernel boots skip here, or undefined where the backend runs guest ring 0 in hardware. */
export function stockKernelSkip(): string | undefined {
  const backend = kvmBackend();
  return backend === "kvm_pvm" || backend === undefined
    ? `a stock kernel cannot boot on ${backend ?? "a host without KVM"} (docs/linux.md); it runs under the kvm_amd harness`
    : undefined;
}

/** The value of init's `KEY: value` line, or undefined. */
export function initField(out: string, key: string): string | undefined {
  return new RegExp(`^${key}: (.*?)\\r?$`, "m").exec(out)?.[1];
}

export interface Boot {
  status: number | null;
  stdout: string;
  stderr: string;
  /** When the run started and ended, POSIX seconds. */
  t0: number;
  t1: number;
  /** The end of both outputs, for assertion messages. */
  all: string;
}

/**
 * `vmtool ARGS` for a Linux boot. One that does not end within `timeoutMs` gets SIGTERM (vmtool then prints
 * its --stats), then SIGKILL. The end of what the guest and vmtool printed goes to the test's output (the
 * kvm_amd harness shows its last lines).
 */
export async function bootVmtool(args: readonly string[], timeoutMs: number): Promise<Boot> {
  const t0 = Date.now() / 1000;
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (b: Buffer) => (stdout += b.toString("latin1")));
  child.stderr.on("data", (b: Buffer) => (stderr += b.toString("latin1")));
  const term = setTimeout(() => child.kill("SIGTERM"), timeoutMs);
  const kill = setTimeout(() => child.kill("SIGKILL"), timeoutMs + 5000);
  const status = await new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  const t1 = Date.now() / 1000;
  clearTimeout(term);
  clearTimeout(kill);
  const tail = (s: string) => (s.length > 6000 ? `...${s.slice(-6000)}` : s);
  const lines = (s: string) => s.split(/\r?\n/).filter((l) => l !== "");
  for (const l of lines(stdout).slice(-40)) console.log(`boot: ${l.slice(0, 300)}`);
  for (const l of lines(stderr).slice(-30)) console.log(`boot: ${l.slice(0, 300)}`);
  console.log(`boot: status ${status}, ${(t1 - t0).toFixed(1)} s`);
  return { status, stdout, stderr, t0, t1, all: `${tail(stdout)}\n--- stderr ---\n${tail(stderr)}` };
}
