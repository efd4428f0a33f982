// The I/O worker on a real VM (runMachine in this process): a register access a vCPU makes to a virtio device
// is forwarded to the I/O worker and answered; which machines have one at all (COM1 is the one vCPU thread's own
// without virtio devices); an I/O worker that cannot build its devices ends the run with an
// internal error instead of leaving the vCPU waiting for a reply forever.
import { test } from "node:test";
import assert from "node:assert/strict";
import { runMachine } from "../../src/vmm/machine.js";
import { planVirtio } from "../../src/devices/virtio/placement.js";
import { assembleBytes } from "../vm/asm.js";

// Reads MagicValue of the device at 0xD0000000 (a forwarded MMIO read), then writes 1 to the exit port when it
// is "virt", 2 otherwise.
const READ_MAGIC = assembleBytes(
  `.code64
  mov $0xd0000000, %eax
  mov (%rax), %ebx
  mov $2, %al
  cmp $0x74726976, %ebx
  jne 1f
  mov $1, %al
1: out %al, $0xf4
  cli
  hlt`,
  0x100000,
  64,
);

function load(mem: { write(addr: number, bytes: Uint8Array): void }) {
  mem.write(0x100000, READ_MAGIC);
  return { mode: "long" as const, entry: 0x100000 };
}

test("a vCPU's MMIO read of a virtio register is answered by the I/O worker", async () => {
  const r = await runMachine({ memSize: 16 << 20, stdin: false, virtio: planVirtio({ rng: true }), load });
  assert.deepEqual([r.end.kind, r.end.kind === "exit-port" && r.end.value], ["exit-port", 1], r.end.reason);
  assert.equal(r.forwarded, 1);
  assert.equal(r.notifies, 0);
});

test("with no device there, the read is all ones (nobody claims it) and nothing is forwarded", async () => {
  const r = await runMachine({ memSize: 16 << 20, stdin: false, load });
  assert.deepEqual([r.end.kind, r.end.kind === "exit-port" && r.end.value], ["exit-port", 2], r.end.reason);
  assert.equal(r.forwarded, 0);
});

// Reads COM1's line status register and writes it to the exit port.
const READ_LSR = assembleBytes(
  `.code64
  mov $0x3fd, %dx
  in %dx, %al
  out %al, $0xf4
  cli
  hlt`,
  0x100000,
  64,
);

const readLsr = (mem: { write(addr: number, bytes: Uint8Array): void }) => {
  mem.write(0x100000, READ_LSR);
  return { mode: "long" as const, entry: 0x100000 };
};
const exitValue = (r: Awaited<ReturnType<typeof runMachine>>) => [
  r.end.kind,
  r.end.kind === "exit-port" && r.end.value,
];

test("with one vCPU and no virtio device, COM1 is the vCPU thread's own: no I/O worker, nothing forwarded", async () => {
  for (const platform of [false, true]) {
    const r = await runMachine({ memSize: 16 << 20, stdin: false, platform, load: readLsr });
    // LSR after reset: THR empty, transmitter empty.
    assert.deepEqual(exitValue(r), ["exit-port", 0x60], r.end.reason);
    assert.equal(r.ioStarted, false, `platform ${platform}`);
    assert.equal(r.forwarded, 0);
  }
});

test("with two vCPUs and no virtio device, the I/O worker starts only on a first access to COM1", async () => {
  const quiet = await runMachine({ memSize: 16 << 20, cpus: 2, stdin: false, load });
  assert.equal(quiet.ioStarted, false, "a guest that never touches COM1 runs without it");
  const r = await runMachine({ memSize: 16 << 20, cpus: 2, stdin: false, load: readLsr });
  assert.equal(r.ioStarted, true);
  assert.equal(r.forwarded, 1, "the access that woke it was served by it");
  assert.deepEqual(exitValue(r), ["exit-port", 0x60], r.end.reason);
  const eager = await runMachine({
    memSize: 16 << 20,
    stdin: false,
    virtio: planVirtio({ rng: true }),
    load,
  });
  assert.equal(eager.ioStarted, true, "virtio devices need it from the start");
});

test("an I/O worker that fails to start (disk file gone) ends the run as an internal error, no hang", async () => {
  const virtio = planVirtio({ disks: [{ path: "/nonexistent/vmtool-disk.img", readOnly: false }] });
  const r = await runMachine({ memSize: 16 << 20, stdin: false, virtio, load });
  assert.equal(r.end.kind, "internal", r.end.reason);
  assert.match(r.end.reason, /I\/O worker failed: .*--disk \/nonexistent\/vmtool-disk.img/s);
});
