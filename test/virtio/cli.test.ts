// virtio through `vmtool run`'s own options on real KVM: the devices in the machine description and on the
// Linux command line, virtio-console echo from standard input, the I/O worker's counters (a queue notify is
// an ioeventfd: no exit to user space), and two devices at once.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CLI } from "../helpers/paths.js";
import { GUEST_OUT, guests } from "../helpers/guests.js";

function vmtool(args: string[], input = "") {
  guests();
  const r = spawnSync(process.execPath, [CLI, "run", ...args], { encoding: "utf8", timeout: 60_000, input });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}
const img = (name: string) => join(GUEST_OUT, name);

test("--rng and --disk are in the machine description (base, size, irq) and on the Linux command line", () => {
  const dir = mkdtempSync(join(tmpdir(), "vmtool-virtio-cli-"));
  try {
    const disk = join(dir, "d.img");
    writeFileSync(disk, new Uint8Array(8192));
    const r = vmtool(["--rng", "--disk", `${disk},ro`, "--cmdline", "quiet", img("hello-long.elf")]);
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /dev virtio-rng +virtio-mmio +mmio 0xd0000000\+512 irq 5/);
    assert.match(r.stdout, /dev virtio-blk0 +virtio-mmio +mmio 0xd0000200\+512 irq 6/);
    assert.match(
      r.stdout,
      /cmdline: 'quiet virtio_mmio.device=0x200@0xd0000000:5 virtio_mmio.device=0x200@0xd0000200:6'/,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("virtio-console: standard input reaches the guest's receiveq, its transmitq reaches standard output", () => {
  const r = vmtool(["--console", img("virtio-console.elf")], "hello\nsecond line\nquit\n");
  assert.equal(r.status, 0, r.stdout + r.stderr);
  assert.equal(r.stdout, "virtio-console ready\necho: hello\necho: second line\nbye\n");
});

test("virtio-rng under --stats --json: the notify came through an ioeventfd, register accesses were forwarded", () => {
  const r = vmtool(["--rng", "--json", img("virtio-rng.elf")]);
  assert.equal(r.status, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /virtio-rng: 4096 bytes/);
  const stats = JSON.parse(r.stderr.trim().split("\n").pop()!) as {
    forwarded: number;
    ioeventfdNotifies: number;
    byAddress: { key: string; count: number }[];
  };
  assert.equal(stats.ioeventfdNotifies, 1);
  assert.ok(stats.forwarded > 10, `forwarded ${stats.forwarded}`);
  // No MMIO exit at QueueNotify (0xd0000050): KVM signalled the eventfd instead.
  assert.ok(
    !stats.byAddress.some((a) => a.key.startsWith("mmio 0xd0000050")),
    JSON.stringify(stats.byAddress),
  );
});

test("bad virtio options: one line, exit 2", () => {
  const r = vmtool(["--disk", "/nonexistent.img", img("halt.bin")]);
  assert.equal(r.status, 2);
  assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
  assert.match(r.stderr, /--disk \/nonexistent.img/);
});

test("virtio-rng's used-buffer interrupt (irqfd from the I/O worker) wakes a guest sleeping in HLT", () => {
  const r = vmtool(["--rng", img("virtio-rng-irq.elf")]);
  assert.equal(r.status, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /virtio-rng-irq: used 1 len 4096 after 1 interrupt\(s\), status bits 0x1/);
});
