// The disk backend (`--disk FILE[,ro]`, src/backends/block-file.ts) on real files, a real loop device and real
// runs: block devices sized by seeking, a FIFO refused at once, a missing file called missing, and a write lock
// on every read-write disk, read locks on read-only ones, held for the whole run.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn, spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { once } from "node:events";
import { FileBlockBackend } from "../../src/backends/block-file.js";
import { FileInUseError } from "../../src/files/errors.js";
import { InputFile } from "../../src/files/input-file.js";
import * as libc from "../../src/kvm/libc.js";
import { InputError } from "../../src/errors.js";
import { CLI, ROOT } from "../helpers/paths.js";
import { GUEST_OUT, guests } from "../helpers/guests.js";
import { loopDevice } from "../files/loop-device.js";

let dir: string;
before(() => (dir = mkdtempSync(join(tmpdir(), "vmtool-blk-file-"))));
after(() => rmSync(dir, { recursive: true, force: true }));

const disk = (name: string, sectors = 64) => {
  const p = join(dir, name);
  writeFileSync(p, new Uint8Array(sectors * 512));
  return p;
};

/** `vmtool run` bounded in time: a FIFO disk once blocked it forever. */
function vmtool(args: string[]) {
  const r = spawnSync(process.execPath, [CLI, "run", "--mem", "16M", ...args], {
    encoding: "utf8",
    input: "",
    timeout: 60_000,
    killSignal: "SIGKILL",
  });
  return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

function refusedWith(r: ReturnType<typeof vmtool>, line: string): void {
  assert.equal(r.status, 2, `status ${r.status} signal ${r.signal}: ${r.stderr}`);
  assert.equal(r.stderr, `vmtool: error: ${line}\n`);
}

/** guest/examples/virtio-blk.c: writes sectors 2-3, flushes, reads back, prints the capacity; exit 0 if all went well. */
function virtioBlkGuest(): string {
  guests();
  const out = join(GUEST_OUT, "backends");
  mkdirSync(out, { recursive: true });
  const obj = join(out, "virtio-blk.o");
  const elf = join(out, "virtio-blk.elf");
  execFileSync("gcc", [
    ...(
      "-std=gnu11 -O2 -ffreestanding -nostdlib -fno-pic -fno-pie -fno-stack-protector -fno-builtin " +
      "-fno-asynchronous-unwind-tables -mgeneral-regs-only -m32 -march=i686"
    ).split(" "),
    "-I",
    join(ROOT, "guest", "include"),
    "-c",
    join(ROOT, "guest", "examples", "virtio-blk.c"),
    "-o",
    obj,
  ]);
  const lib = ["printf", "string", "boot_info_print", "start32"].map((n) =>
    join(GUEST_OUT, "obj32", `${n}.o`),
  );
  execFileSync("ld", [
    ...["-m", "elf_i386", "--build-id=none", "-z", "max-page-size=0x1000", "-z", "noexecstack", "-nostdlib"],
    ...["-static", "-T", join(ROOT, "guest", "ld", "protected.ld"), ...lib, obj, "-o", elf],
  ]);
  return elf;
}

/** The type of the lock another description holds on the file (F_OFD_GETLK, taking none), or F_UNLCK. */
function heldLock(fd: number): number {
  const fl = new Uint8Array(libc.FLOCK.size);
  new DataView(fl.buffer).setInt16(libc.FLOCK.l_type, libc.F_RDLCK, true);
  assert.equal(libc.fcntlPtr(fd, libc.F_OFD_GETLK, fl), 0);
  return new DataView(fl.buffer).getInt16(libc.FLOCK.l_type, true);
}

/** The bytes the guest writes at sectors 2-3. */
const PATTERN = new Uint8Array(1024).map((_, i) => (i * 7 + 3) & 0xff);

test("a missing disk says 'no such file', whether read-only or not", () => {
  for (const ro of [false, true])
    assert.throws(
      () => FileBlockBackend.open(join(dir, "missing.img"), ro),
      (e: unknown) =>
        e instanceof InputError && e.message === `--disk ${join(dir, "missing.img")}: no such file`,
    );
  refusedWith(
    vmtool(["--disk", join(dir, "missing.img"), guests().halt]),
    `--disk ${join(dir, "missing.img")}: no such file`,
  );
});

test("a FIFO as a disk, read-only or not, is refused at once (no open that waits for a writer)", () => {
  const fifo = join(dir, "fifo");
  execFileSync("mkfifo", [fifo]);
  for (const suffix of [",ro", ""])
    refusedWith(
      vmtool(["--disk", fifo + suffix, guests().halt]),
      `--disk ${fifo}: is a FIFO, not a regular file or block device`,
    );
  refusedWith(
    vmtool(["--disk", "/dev/zero,ro", guests().halt]),
    "--disk /dev/zero: is a character device, not a regular file or block device",
  );
});

test("a block device (a real loop device) is sized by seeking to its end and works as a disk", (t) => {
  const backing = disk("loop-backing.img");
  const loop = loopDevice(backing);
  if (typeof loop === "string") return t.skip(loop);
  try {
    const b = FileBlockBackend.open(loop.path, false);
    try {
      assert.equal(b.size, 64 * 512);
      b.write(5 * 512, new Uint8Array(512).fill(0x5a));
      b.flush();
      const back = new Uint8Array(512);
      b.read(5 * 512, back);
      assert.ok(back.every((x) => x === 0x5a));
    } finally {
      b.close();
    }
    writeFileSync(backing, new Uint8Array(64 * 512));
    execFileSync("blockdev", ["--flushbufs", loop.path]);
    const elf = virtioBlkGuest();
    const r = vmtool(["--disk", loop.path, elf]);
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /capacity 64 sectors, read-only 0/);
    assert.match(r.stdout, /write 0 flush 0 read 0 same 1 id 'loop\d+'/);
    execFileSync("blockdev", ["--flushbufs", loop.path]);
    assert.deepEqual(new Uint8Array(readFileSync(loop.path).subarray(1024, 2048)), PATTERN);
    const ro = vmtool(["--disk", `${loop.path},ro`, elf]);
    assert.match(ro.stdout, /capacity 64 sectors, read-only 1/);
  } finally {
    loop.detach();
  }
});

test("one image twice in a run, read-write: refused with one line; two read-only opens share it", () => {
  const d = disk("twice.img");
  const halt = guests().halt;
  const inUse = (lock: string) => `--disk ${d}: in use by another vmtool or VMM (a ${lock} lock is held)`;
  refusedWith(vmtool(["--disk", d, "--disk", d, halt]), inUse("write"));
  refusedWith(vmtool(["--disk", d, "--disk", `${d},ro`, halt]), inUse("write"));
  refusedWith(vmtool(["--disk", `${d},ro`, "--disk", d, halt]), inUse("read"));
  const shared = vmtool(["--disk", `${d},ro`, "--disk", `${d},ro`, halt]);
  assert.equal(shared.status, 0, shared.stderr);
  // In the library: the second writer is refused, the lock goes with the first one's close.
  const a = FileBlockBackend.open(d, false);
  assert.throws(() => FileBlockBackend.open(d, false), FileInUseError);
  a.close();
  FileBlockBackend.open(d, false).close();
});

test("a running vmtool holds the write lock: a second vmtool, or another VMM's reader, is refused", async () => {
  const d = disk("running.img");
  // serial-echo runs until it reads EOT from COM1: standard input stays open, so it runs until killed.
  const first = spawn(process.execPath, [CLI, "run", "--mem", "16M", "--disk", d, guests().serialEcho], {
    stdio: ["pipe", "ignore", "pipe"],
  });
  let stderr = "";
  first.stderr.on("data", (c: Buffer) => (stderr += c.toString()));
  try {
    // Wait on the state itself: until F_OFD_GETLK sees a write lock, the run has not taken its lock yet.
    const probe = InputFile.open(d);
    try {
      for (let i = 0; heldLock(probe.fd) !== libc.F_WRLCK; i++) {
        assert.equal(first.exitCode, null, `the first run ended: ${stderr}`);
        assert.ok(i < 3000, "the first run never locked its disk");
        await new Promise((r) => setTimeout(r, 20));
      }
    } finally {
      probe.close();
    }
    refusedWith(
      vmtool(["--disk", d, guests().halt]),
      `--disk ${d}: in use by another vmtool or VMM (a write lock is held)`,
    );
    refusedWith(
      vmtool(["--disk", `${d},ro`, guests().halt]),
      `--disk ${d}: in use by another vmtool or VMM (a write lock is held)`,
    );
  } finally {
    first.kill("SIGKILL");
    if (first.exitCode === null) await once(first, "exit");
  }
  const after = vmtool(["--disk", d, guests().halt]);
  assert.equal(after.status, 0, after.stderr);
});
