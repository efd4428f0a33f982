// Runs `vmtool run --gdb unix:SOCKET` and a real gdb in batch mode against it: vmtool starts first, gdb once
// vmtool says it listens. Each run gets its own socket (tests may run side by side). Returns gdb's output,
// vmtool's status, standard output and standard error.
import { spawn, spawnSync, execFileSync, type ChildProcess } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createServer, type AddressInfo } from "node:net";
import { CLI, DIST, ROOT } from "../helpers/paths.js";

export interface GdbRun {
  gdb: string;
  gdbStatus: number | null;
  status: number | null;
  stdout: string;
  stderr: string;
}

/** How long one run may take (a hang fails the test instead of blocking the run). */
const RUN_TIMEOUT_MS = 120_000;

export interface GdbRunOptions {
  /** The image vmtool runs. */
  guest: string;
  /** vmtool run's options besides --gdb. */
  args?: string[];
  /** gdb commands, one per line (after `target remote`); `{target}` stands for what `target remote` was given. */
  script: string[];
  /** The file gdb loads before connecting (symbols of the same mode as the guest at connect). */
  file?: string;
  /** gdb commands before `target remote`. */
  before?: string[];
  /** Listen on TCP (127.0.0.1, a port free when the run starts; gdb connects to `:PORT`) instead of a socket file. */
  tcp?: boolean;
  /**
   * Polled while gdb runs, with gdb's output and the guest's so far: returns true to be called again (gdb may
   * not have acted on what the callback did yet), false when it is done.
   */
  onGdbOutput?: (gdbOut: string, guestOut: string, gdb: ChildProcess) => boolean;
}

/** A scratch folder for the sockets and scripts, removed at exit. */
const work = mkdtempSync(join(tmpdir(), "vmtool-gdb-test-"));
process.on("exit", () => rmSync(work, { recursive: true, force: true }));
let runs = 0;

/** A TCP port that was free a moment ago (the kernel's choice for port 0). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const port = (srv.address() as AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

export async function runWithGdb(o: GdbRunOptions): Promise<GdbRun> {
  const n = ++runs;
  const port = o.tcp ? await freePort() : 0;
  const sock = o.tcp ? `:${port}` : join(work, `gdb-${n}.sock`);
  const script = join(work, `script-${n}.gdb`);
  const lines = o.script.map((l) => l.replaceAll("{target}", sock));
  writeFileSync(script, ["set pagination off", "set confirm off", ...lines].join("\n") + "\n");
  const dev = o.tcp ? `tcp::${port}` : `unix:${sock}`;
  const vm = spawn(process.execPath, [CLI, "run", "--gdb", dev, ...(o.args ?? []), o.guest], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  let gdbOut = "";
  let gdb: ChildProcess | undefined;
  const timer = setTimeout(() => {
    vm.kill("SIGKILL");
    gdb?.kill("SIGKILL");
  }, RUN_TIMEOUT_MS);
  const gdbDone = new Promise<number | null>((resolve) => {
    vm.stderr.on("data", (d: Buffer) => {
      stderr += d.toString();
      if (!gdb && stderr.includes("gdb: listening on")) {
        const args = ["-batch", "-nx"];
        if (o.file) args.push(o.file);
        for (const c of o.before ?? []) args.push("-ex", c);
        args.push("-ex", `target remote ${sock}`, "-x", script);
        gdb = spawn("gdb", args, { stdio: ["ignore", "pipe", "pipe"] });
        gdb.stdout?.on("data", (b: Buffer) => (gdbOut += b.toString()));
        gdb.stderr?.on("data", (b: Buffer) => (gdbOut += b.toString()));
        gdb.on("close", (code) => resolve(code));
      }
    });
  });
  vm.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
  const poll = o.onGdbOutput
    ? setInterval(() => {
        if (gdb && gdb.exitCode === null && o.onGdbOutput?.(gdbOut, stdout, gdb) === false)
          clearInterval(poll);
      }, 300)
    : undefined;
  const status = await new Promise<number | null>((resolve) => vm.on("close", (code) => resolve(code)));
  // vmtool ended: gdb ends too (its connection closed), or never started.
  const gdbStatus = gdb ? await gdbDone : null;
  clearTimeout(timer);
  clearInterval(poll);
  return { gdb: gdbOut, gdbStatus, status, stdout, stderr };
}

let python: boolean | undefined;

/**
 * Whether this gdb has Python. Debian's gdb does; its gdb-minimal (the one the kvm_amd harness carries,
 * docs/svm.md) does not, and there guest/gdb/vmtool.gdb cannot be sourced (its vmtool-reconnect is Python).
 */
export function gdbHasPython(): boolean {
  python ??= spawnSync("gdb", ["-batch", "-nx", "-ex", "python print('python-' + 'ok')"], {
    encoding: "utf8",
  }).stdout?.includes("python-ok");
  return python;
}

/**
 * The virtual address of the first occurrence of `bytes` in an ELF file's loadable segments (found without
 * objdump, which the kvm_amd harness does not carry).
 */
export function findInElf(file: string, bytes: number[]): number | undefined {
  const f = readFileSync(file);
  const is64 = f[4] === 2;
  const phoff = Number(is64 ? f.readBigUInt64LE(0x20) : f.readUInt32LE(0x1c));
  const phentsize = f.readUInt16LE(is64 ? 0x36 : 0x2a);
  const phnum = f.readUInt16LE(is64 ? 0x38 : 0x2c);
  const needle = Buffer.from(bytes);
  for (let i = 0; i < phnum; i++) {
    const h = phoff + i * phentsize;
    if (f.readUInt32LE(h) !== 1) continue; // PT_LOAD
    const off = Number(is64 ? f.readBigUInt64LE(h + 8) : f.readUInt32LE(h + 4));
    const vaddr = Number(is64 ? f.readBigUInt64LE(h + 16) : f.readUInt32LE(h + 8));
    const filesz = Number(is64 ? f.readBigUInt64LE(h + 32) : f.readUInt32LE(h + 16));
    const at = f.subarray(off, off + filesz).indexOf(needle);
    if (at >= 0) return vaddr + at;
  }
  return undefined;
}

export interface ModesGuest {
  elf: string;
  bin: string;
  /** Symbol addresses from the ELF. */
  sym: Record<string, number>;
}

let modes: ModesGuest | undefined;

/** guest/tests/gdb-modes.S as an ELF with symbols (for gdb) and a flat binary (vmtool run --mode real). */
export function modesGuest(): ModesGuest {
  if (modes) return modes;
  const dir = join(DIST, "guests", "gdb");
  mkdirSync(dir, { recursive: true });
  const obj = join(dir, "gdb-modes.o");
  const elf = join(dir, "gdb-modes.elf");
  const bin = join(dir, "gdb-modes.bin");
  const ld = join(dir, "gdb-modes.ld");
  writeFileSync(
    ld,
    "SECTIONS { . = 0x7C00; .text : { *(.text) } .data : { *(.data) } /DISCARD/ : { *(.note*) *(.comment) } }\n",
  );
  execFileSync("as", ["--64", "-o", obj, join(ROOT, "guest", "tests", "gdb-modes.S")]);
  execFileSync("ld", [
    ...["-m", "elf_x86_64", "--build-id=none", "-z", "max-page-size=0x1000", "-z", "noexecstack"],
    ...["-T", ld, obj, "-o", elf],
  ]);
  // The flat binary and the symbols from ld alone (the kvm_amd harness's VM carries as and ld only).
  const map = join(dir, "gdb-modes.map");
  execFileSync("ld", [
    ...["-m", "elf_x86_64", "--build-id=none", "-z", "max-page-size=0x1000", "-z", "noexecstack"],
    ...["-T", ld, "--oformat", "binary", `-Map=${map}`, obj, "-o", bin],
  ]);
  const sym: Record<string, number> = {};
  for (const line of readFileSync(map, "utf8").split("\n")) {
    const m = /^\s+0x([0-9a-f]+)\s+([A-Za-z_]\w*)\s*$/.exec(line);
    if (m) sym[m[2]] = parseInt(m[1], 16);
  }
  modes = { elf, bin, sym };
  return modes;
}

/** `0x...` of a number, as gdb prints addresses. */
export const hx = (n: number) => `0x${n.toString(16)}`;
