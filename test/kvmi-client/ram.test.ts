// The two ways to read guest RAM: the shared mapping (VMTOOL_GET_RAM_MAPPING, /proc/PID/fd/FD mapped
// read-only) with no message per read, and READ_PHYSICAL page by page when the VMM cannot share its RAM or
// the file cannot be opened from here. The "RAM" is a real file held open by this process, as the VMM would
// hold its memfd.
import { test } from "node:test";
import assert from "node:assert/strict";
import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { GuestRam } from "../../src/kvmi-client/index.js";
import { cat, le32, le64, reply, session, zeros, type Session } from "./peer.js";

const RAM_SIZE = 256 * 1024;
const RAM_GPA = 0x100000n;

function pattern(n: number): Buffer {
  return Buffer.from(Array.from({ length: n }, (_, i) => (i * 7 + (i >> 12)) & 0xff));
}

/** Open the RAM reader; the peer answers VMTOOL_GET_RAM_MAPPING with `data` or error `err`. */
async function openRam(s: Session, data: Buffer, err = 0): Promise<GuestRam> {
  const ram = GuestRam.open(s.client);
  const m = await s.peer.expect(0x4002);
  assert.equal(m.size, 0);
  s.peer.send(reply(0x4002, m.seq, data, err));
  return ram;
}

test("the shared mapping: reads are copies out of the VMM's RAM file, no message per read", async () => {
  const dir = mkdtempSync(join(tmpdir(), "vmtool-ram-"));
  const s = await session({ replyTimeoutMs: 10_000 });
  const file = join(dir, "ram");
  const bytes = pattern(RAM_SIZE);
  writeFileSync(file, bytes);
  const fd = openSync(file, "r");
  try {
    const ram = await openRam(s, cat(le32(process.pid), le32(fd), le64(BigInt(RAM_SIZE)), le64(RAM_GPA)));
    assert.equal(ram.path, "mapping");
    assert.equal(ram.why, `shared read-only mapping of /proc/${process.pid}/fd/${fd} (256 KiB at 0x100000)`);
    assert.deepEqual(await ram.read(RAM_GPA, 4096), bytes.subarray(0, 4096));
    assert.deepEqual(await ram.read(RAM_GPA + 0x1ff0n, 0x20), bytes.subarray(0x1ff0, 0x2010));
    assert.deepEqual(await ram.read(RAM_GPA, RAM_SIZE), bytes);
    assert.equal(s.peer.pending, 0, "no message was sent for those reads");
    // Outside the mapped range: READ_PHYSICAL, one page at a time.
    const outside = ram.read(0xff000n, 16);
    const m = await s.peer.expect(17);
    assert.equal(m.payload.readBigUInt64LE(0), 0xff000n);
    s.peer.send(reply(17, m.seq, Buffer.alloc(16, 0xee)));
    assert.deepEqual(await outside, Buffer.alloc(16, 0xee));
    ram.close();
  } finally {
    closeSync(fd);
    s.end();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("READ_PHYSICAL when the VMM cannot share (EOPNOTSUPP), lacks the command (ENOSYS), or the file is unusable", async () => {
  const dir = mkdtempSync(join(tmpdir(), "vmtool-ram-"));
  const short = join(dir, "short");
  writeFileSync(short, zeros(4096));
  const shortFd = openSync(short, "r");
  try {
    const cases: [Buffer, number, RegExp][] = [
      [zeros(0), -95, /cannot share its RAM \(VMTOOL_GET_RAM_MAPPING: -KVM_EOPNOTSUPP\)/],
      [zeros(0), -1000, /the VMM has no VMTOOL_GET_RAM_MAPPING/],
      [
        cat(le32(process.pid), le32(shortFd), le64(BigInt(RAM_SIZE)), le64(0n)),
        0,
        /holds 4096 bytes, less than the 262144/,
      ],
      [
        cat(le32(0x7ffffff0), le32(3), le64(4096n), le64(0n)),
        0,
        /cannot open \/proc\/2147483632\/fd\/3 \(ENOENT/,
      ],
    ];
    for (const [data, err, why] of cases) {
      const s = await session({ replyTimeoutMs: 10_000 });
      try {
        const ram = await openRam(s, data, err);
        assert.equal(ram.path, "read-physical");
        assert.match(ram.why, why);
        // 0x1800+0x1000 crosses a page: two READ_PHYSICAL requests, answered, assembled in order.
        const r = ram.read(0x1800n, 0x1000);
        const a = await s.peer.expect(17);
        const b = await s.peer.expect(17);
        s.peer.send(reply(17, a.seq, Buffer.alloc(0x800, 1)));
        s.peer.send(reply(17, b.seq, Buffer.alloc(0x800, 2)));
        assert.deepEqual(await r, cat(Buffer.alloc(0x800, 1), Buffer.alloc(0x800, 2)));
        ram.close();
      } finally {
        s.end();
      }
    }
  } finally {
    closeSync(shortFd);
    rmSync(dir, { recursive: true, force: true });
  }
});
