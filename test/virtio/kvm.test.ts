// The virtio devices on a real KVM VM: a guest driver written from the spec (guest/examples/virtio-*.c)
// probes the device over MMIO, sets up a split queue and gets its request served.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ROOT, CLI } from "../helpers/paths.js";
import { GUEST_OUT, guests } from "../helpers/guests.js";

const CFLAGS = (
  "-std=gnu11 -O2 -Wall -Wextra -Werror -ffreestanding -nostdlib -fno-pic -fno-pie -fno-stack-protector " +
  "-fno-asynchronous-unwind-tables -fno-unwind-tables -fno-builtin -mgeneral-regs-only -fno-ident -m32 -march=i686"
).split(" ");
const LIB32 = ["printf", "string", "boot_info_print", "start32"].map((n) =>
  join(GUEST_OUT, "obj32", `${n}.o`),
);

/** Build guest/examples/NAME.c as a 32-bit protected-mode ELF with the SDK's library (built by guests()). */
function buildVirtioGuest(name: string): string {
  guests();
  const dir = join(GUEST_OUT, "virtio");
  mkdirSync(dir, { recursive: true });
  const obj = join(dir, `${name}.o`);
  const elf = join(dir, `${name}.elf`);
  execFileSync("gcc", [
    ...CFLAGS,
    "-I",
    join(ROOT, "guest", "include"),
    "-c",
    join(ROOT, "guest", "examples", `${name}.c`),
    "-o",
    obj,
  ]);
  execFileSync("ld", [
    "-m",
    "elf_i386",
    "--build-id=none",
    "-z",
    "max-page-size=0x1000",
    "-z",
    "noexecstack",
    "-nostdlib",
    "-static",
    "-T",
    join(ROOT, "guest", "ld", "protected.ld"),
    ...LIB32,
    obj,
    "-o",
    elf,
  ]);
  return elf;
}

/** `vmtool run` with virtio flags (rng, console, disk=PATH, ro, trace), as a user would type them. */
function run(image: string, ...flags: string[]) {
  const args = ["run", "--mem", "16M"];
  const ro = flags.includes("ro");
  for (const f of flags) {
    if (f === "rng") args.push("--rng");
    else if (f === "console") args.push("--console");
    else if (f === "trace") args.push("--trace");
    else if (f.startsWith("disk=")) args.push("--disk", f.slice(5) + (ro ? ",ro" : ""));
    else if (f.startsWith("cmdline=")) args.push("--cmdline", f.slice(8));
  }
  const r = spawnSync(process.execPath, [CLI, ...args, image], {
    encoding: "utf8",
    timeout: 60_000,
    input: "",
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

test("virtio-rng on KVM: a spec-written guest driver gets 4 KiB of entropy and the used-buffer interrupt", () => {
  const elf = buildVirtioGuest("virtio-rng");
  const a = run(elf, "rng");
  assert.equal(a.status, 0, a.stdout + a.stderr);
  const m = /virtio-rng: 4096 bytes, fnv1a ([0-9a-f]+), interrupt status 1/.exec(a.stdout);
  assert.ok(m, a.stdout + a.stderr);
  const b = run(elf, "rng");
  const m2 = /fnv1a ([0-9a-f]+)/.exec(b.stdout);
  assert.ok(m2 && m2[1] !== m[1], "two runs get different random bytes");
});

test("virtio on KVM: with no device at the address the guest's probe fails cleanly", () => {
  const elf = buildVirtioGuest("virtio-rng");
  const r = run(elf);
  assert.equal(r.status, (2 << 1) | 1, r.stdout + r.stderr);
  assert.match(r.stdout, /no device at 0xd0000000/);
});

test("virtio-blk on KVM: the guest's writes are in the file byte for byte; flush, read back, get id", () => {
  const elf = buildVirtioGuest("virtio-blk");
  const dir = mkdtempSync(join(tmpdir(), "vmtool-virtio-kvm-"));
  try {
    const img = join(dir, "disk.img");
    writeFileSync(img, new Uint8Array(64 * 512));
    const r = run(elf, `disk=${img}`);
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /capacity 64 sectors, read-only 0/);
    assert.match(r.stdout, /write 0 flush 0 read 0 same 1 id 'disk.img'/);
    assert.match(r.stdout, /read past the end: status 1/);
    const file = readFileSync(img);
    const want = new Uint8Array(1024).map((_, i) => (i * 7 + 3) & 0xff);
    assert.deepEqual(new Uint8Array(file.subarray(1024, 2048)), want);
    assert.ok(file.subarray(0, 1024).every((b) => b === 0));
    assert.ok(file.subarray(2048).every((b) => b === 0));

    // Read-only: the write is refused with VIRTIO_BLK_S_IOERR and the file is unchanged.
    writeFileSync(img, new Uint8Array(64 * 512));
    const ro = run(elf, `disk=${img}`, "ro");
    assert.equal(ro.status, (7 << 1) | 1, ro.stdout + ro.stderr);
    assert.match(ro.stdout, /read-only 1/);
    assert.match(ro.stdout, /write 1 flush 0 read 0 same 0/);
    assert.ok(readFileSync(img).every((b) => b === 0));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

// Each attack of guest/examples/virtio-attack.c, chosen by its command line: the device must not touch memory
// (the guest checks a canary next to its queue), must mark itself DEVICE_NEEDS_RESET with the configuration
// interrupt (status bit 0x40, interrupt 0x2) and say why under --trace; after a reset it serves a good request.
const ATTACKS: [string, RegExp][] = [
  ["outside", /buffer of descriptor 0 0xf0000000\+0x1000 is outside guest RAM/],
  ["overflow", /buffer of descriptor 0 0xfffffffffffff000\+0x2000 is outside guest RAM/],
  ["loop", /chain 0 is longer than its descriptor table \(8\): a loop/],
  ["next", /chain 0 links to descriptor 100, past the queue size 8/],
  ["head", /available ring names descriptor 200, past the queue size 8/],
  ["avail", /available index moved 1000 entries ahead, more than the queue size 8/],
];
for (const [attack, reason] of ATTACKS)
  test(`hostile guest on KVM (${attack}): DEVICE_NEEDS_RESET, no write, the reason under --trace, recovery`, () => {
    const elf = buildVirtioGuest("virtio-attack");
    const r = run(elf, "rng", "trace", `cmdline=${attack}`);
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.match(r.stdout, new RegExp(`virtio-attack ${attack}: status 0x4f interrupt 0x2 used 0 canary 1`));
    assert.match(r.stdout, /after reset: used 1 len 16/);
    assert.match(
      r.stderr,
      new RegExp(`virtio-rng@0xd0000000: DEVICE_NEEDS_RESET: queue 0: ${reason.source}`),
    );
  });

test("hostile guest on KVM (early): a notify before DRIVER_OK is ignored, traced, and breaks nothing", () => {
  const elf = buildVirtioGuest("virtio-attack");
  const r = run(elf, "rng", "trace", "cmdline=early");
  assert.equal(r.status, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /virtio-attack early: status 0xb interrupt 0x0 used 0 canary 1/);
  assert.match(r.stderr, /virtio-rng@0xd0000000: notify of queue 0 before DRIVER_OK: deferred/);
  assert.doesNotMatch(r.stderr, /DEVICE_NEEDS_RESET/);
});
