// runMachine as a library: twenty runs in one process, with every device kind (COM1 through the I/O worker,
// virtio-rng, -console and -blk, two vCPUs, the PIT), give back every file descriptor and mapping they took
// (the /dev/kvm handle, the VM and vCPU fds, kvm_run and guest RAM, eventfds, the disk's fd, the threads).
// One thing is not vmtool's to give back: koffi (the FFI library) keeps the call stack and heap it maps for
// each thread that loads it when the thread ends (its per-thread instance data is never freed). The test
// measures that on bare threads that only load koffi and allows exactly that much per thread of the runs.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Worker } from "node:worker_threads";
import { fileURLToPath } from "node:url";
import { runMachine } from "../../src/vmm/machine.js";
import { planVirtio } from "../../src/devices/virtio/placement.js";
import { assembleBytes } from "../vm/asm.js";

// Touches every device: a read of each virtio window's MagicValue (forwarded to the I/O worker), a byte to
// COM1's THR, then the exit port with 1.
const GUEST = assembleBytes(
  `.code64
  mov $0xd0000000, %eax
  mov (%rax), %ebx
  mov $0xd0000200, %eax
  mov (%rax), %ebx
  mov $0xd0000400, %eax
  mov (%rax), %ebx
  mov $0x3f8, %dx
  mov $0x41, %al
  out %al, %dx
  mov $1, %al
  out %al, $0xf4
  cli
  hlt`,
  0x100000,
  64,
);

const fds = () => readdirSync("/proc/self/fd").length;
const maps = () => readFileSync("/proc/self/maps", "latin1").split("\n").length;

/** Mappings a thread that loads koffi (as vmtool's threads do) leaves behind when it ends, on average. */
async function koffiMappingsPerThread(): Promise<number> {
  const loadKoffi = fileURLToPath(new URL("../../src/kvm/libc.js", import.meta.url));
  const thread = async () => {
    const w = new Worker(`import(${JSON.stringify(loadKoffi)})`, { eval: true });
    await new Promise((resolve) => w.once("exit", resolve));
  };
  await thread();
  const before = maps();
  for (let i = 0; i < 20; i++) await thread();
  return (maps() - before) / 20;
}

test(
  "twenty runs with every device kind give back their fds and mappings",
  { timeout: 300_000 },
  async (t) => {
    const dir = mkdtempSync(join(tmpdir(), "vmtool-resources-"));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const disk = join(dir, "disk.img");
    writeFileSync(disk, new Uint8Array(1 << 20));
    const once = async () => {
      const r = await runMachine({
        memSize: 16 << 20,
        cpus: 2,
        pit: true,
        stdin: false,
        signals: false,
        virtio: planVirtio({ rng: true, console: true, disks: [{ path: disk, readOnly: false }] }),
        load: (mem) => {
          mem.write(0x100000, GUEST);
          return { mode: "long", entry: 0x100000 };
        },
      });
      assert.deepEqual(
        [r.end.kind, r.end.kind === "exit-port" && r.end.value],
        ["exit-port", 1],
        r.end.reason,
      );
      assert.equal(r.forwarded, 4, "three virtio reads and the COM1 write reached the I/O worker");
    };
    await once(); // the first run loads modules and grows the heap: count from after it
    const perThread = await koffiMappingsPerThread();
    const fdsBefore = fds();
    const mapsBefore = maps();
    for (let i = 0; i < 20; i++) await once();
    assert.equal(fds(), fdsBefore, "open file descriptors");
    // Three threads a run (two vCPUs, the I/O worker). V8 may map or unmap heap pages of its own meanwhile
    // (a dozen more under load was seen); one mapping left behind by each run would add 20.
    const koffiKeeps = 20 * 3 * perThread;
    const grown = maps() - mapsBefore;
    assert.ok(
      grown <= koffiKeeps + 15,
      `mappings: ${grown} more after 20 runs; koffi keeps ${perThread.toFixed(1)} per thread (${koffiKeeps})`,
    );
  },
);
