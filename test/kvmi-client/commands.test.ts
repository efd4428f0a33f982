// Every command's request, byte for byte as the protocol's tables lay it out (written here by hand), and its
// reply decoded field by field from hand-placed bytes.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  KvmiCommandError,
  KvmiReplyError,
  KvmiUsageError,
  type KvmiClient,
} from "../../src/kvmi-client/index.js";
import { cat, hexBytes, le16, le32, le64, reply, session, zeros, type Session } from "./peer.js";

/** Send through `call`, check the request's id and payload bytes, answer with `data` (or error `err`). */
async function exchange<T>(
  s: Session,
  call: (c: KvmiClient) => Promise<T>,
  id: number,
  payloadHex: string | Buffer,
  data: Buffer = zeros(0),
  err = 0,
): Promise<T> {
  const result = call(s.client);
  const m = await s.peer.next();
  assert.equal(m.id, id, "message id");
  const want = typeof payloadHex === "string" ? hexBytes(payloadHex) : payloadHex;
  assert.equal(m.size, want.length, "payload size in the header");
  assert.deepEqual(m.payload, want, "payload bytes");
  s.peer.send(reply(id, m.seq, data, err));
  return result;
}

const VH0 = "0000 0000 00000000"; // kvmi_vcpu_hdr { vcpu 0 }

async function withSession(fn: (s: Session) => Promise<void>): Promise<void> {
  const s = await session({ replyTimeoutMs: 10_000 });
  try {
    await fn(s);
  } finally {
    s.end();
  }
}

test("VM commands: CHECK_*, GET_GUEST_INFO, GET_MAX_GFN, CONTROL_VM_EVENTS, QUERY_PHYSICAL", () =>
  withSession(async (s) => {
    assert.equal(await exchange(s, (c) => c.checkCommand(17), 3, "1100 0000 00000000"), 0);
    assert.equal(await exchange(s, (c) => c.checkEvent(1), 4, "0100 0000 00000000", zeros(0), -1000), -1000);
    assert.equal(await exchange(s, (c) => c.checkCommand(0x4003), 3, "0340 0000 00000000"), 0);
    const info = await exchange(s, (c) => c.getGuestInfo(), 5, "", cat(le32(4), zeros(12)));
    assert.deepEqual(info, { vcpuCount: 4 });
    assert.equal(await exchange(s, (c) => c.getMaxGfn(), 29, "", le64(0x4000n)), 0x4000n);
    await exchange(s, (c) => c.controlVmEvents(0, true), 8, "0000 01 00 00000000");
    const q = await exchange(
      s,
      (c) => c.queryPhysical(0x10n),
      39,
      "1000000000000000",
      cat(le64(0n), le64(0x4000n)),
    );
    assert.deepEqual(q, { gfn: 0n, size: 0x4000n });
  }));

test("vCPU commands start with kvmi_vcpu_hdr; each field where the tables put it", () =>
  withSession(async (s) => {
    const tsc = await exchange(s, (c) => c.getVcpuInfo(2), 6, "0200 0000 00000000", le64(2_000_000_000n));
    assert.deepEqual(tsc, { tscSpeed: 2_000_000_000n });
    await exchange(s, (c) => c.pauseVcpu(1, true), 7, "0100 0000 00000000 01 00 0000 00000000");
    await exchange(s, (c) => c.controlEvents(3, 4, true), 9, "0300 0000 00000000 0400 01 00 00000000");
    await exchange(s, (c) => c.controlCr(0, 3, true), 10, `${VH0} 01 00 0000 03000000`);
    await exchange(
      s,
      (c) => c.controlMsr(1, 0xc0000081, false),
      11,
      "0100 0000 00000000 00 00 0000 810000c0",
    );
    await exchange(s, (c) => c.controlSinglestep(2, true), 63, "0200 0000 00000000 01 00000000000000");
    const cpuid = await exchange(
      s,
      (c) => c.getCpuid(0, 0x80000001, 0),
      15,
      `${VH0} 01000080 00000000`,
      cat(le32(1), le32(2), le32(3), le32(0xffffffff)),
    );
    assert.deepEqual(cpuid, { eax: 1, ebx: 2, ecx: 3, edx: 0xffffffff });
    assert.equal(await exchange(s, (c) => c.getXcr(0), 37, `${VH0} 00 00000000000000`, le64(7n)), 7n);
    assert.equal(
      await exchange(s, (c) => c.getMtrrType(0x1000n), 23, `${VH0} 0010000000000000`, cat([6], zeros(7))),
      6,
    );
    await exchange(
      s,
      (c) => c.injectException(1, { vector: 14, errorCode: 2, address: 0xdead000n }),
      19,
      "0100 0000 00000000 0e 00 0000 02000000 00d0ea0d00000000",
    );
    const xsave = Buffer.alloc(4096, 0x5a);
    assert.deepEqual(await exchange(s, (c) => c.getXsave(0), 16, VH0, xsave), xsave);
    await exchange(
      s,
      (c) => c.setXsave(1, xsave.subarray(0, 512)),
      38,
      cat(hexBytes("0100 0000 00000000"), xsave.subarray(0, 512)),
    );
    const gva = 0xffff800000001000n;
    assert.equal(
      await exchange(s, (c) => c.translateGva(0, gva), 35, `${VH0} 001000000080ffff`, le64(0x1000n)),
      0x1000n,
    );
    assert.equal(
      await exchange(s, (c) => c.translateGva(0, gva), 35, `${VH0} 001000000080ffff`, le64(~0n)),
      undefined,
    );
  }));

test("GET_REGISTERS: the MSR list in the request; regs @8, sregs @152, MSRs @464 in the reply", () =>
  withSession(async (s) => {
    const data = Buffer.alloc(472 + 2 * 16);
    data.writeUInt32LE(8, 0); // mode
    data.writeBigUInt64LE(0x1111n, 8); // rax
    data.writeBigUInt64LE(0xffffffff81000000n, 8 + 128); // rip
    data.writeBigUInt64LE(0x202n, 8 + 136); // rflags
    // cs: base @152, limit @160, selector @164, type @166, present @167, dpl @168, db @169, s @170, l @171
    data.writeBigUInt64LE(0x10000n, 152);
    data.writeUInt32LE(0xfffff, 160);
    data.writeUInt16LE(0x10, 164);
    data.writeUInt8(0xb, 166);
    data.writeUInt8(1, 167);
    data.writeUInt8(1, 171);
    data.writeBigUInt64LE(0x80050033n, 152 + 224); // cr0
    data.writeBigUInt64LE(0x9000n, 152 + 240); // cr3
    data.writeBigUInt64LE(0xd01n, 152 + 264); // efer
    data.writeBigUInt64LE(0x7fffn, 152 + 192); // gdt.base
    data.writeUInt16LE(0x27, 152 + 192 + 8); // gdt.limit
    data.writeUInt32LE(2, 464); // nmsrs
    data.writeUInt32LE(0xc0000080, 472);
    data.writeBigUInt64LE(0xd01n, 480);
    data.writeUInt32LE(0x174, 488);
    data.writeBigUInt64LE(0x8n, 496);
    const r = await exchange(
      s,
      (c) => c.getRegisters(0, [0xc0000080, 0x174]),
      13,
      `${VH0} 0200 0000 00000000 800000c0 74010000`,
      data,
    );
    assert.equal(r.mode, 8);
    assert.equal(r.regs.rax, 0x1111n);
    assert.equal(r.regs.rip, 0xffffffff81000000n);
    assert.equal(r.regs.rflags, 0x202n);
    assert.deepEqual(
      [
        r.sregs.cs.base,
        r.sregs.cs.limit,
        r.sregs.cs.selector,
        r.sregs.cs.type,
        r.sregs.cs.present,
        r.sregs.cs.l,
      ],
      [0x10000n, 0xfffff, 0x10, 0xb, 1, 1],
    );
    assert.equal(r.sregs.cr0, 0x80050033n);
    assert.equal(r.sregs.cr3, 0x9000n);
    assert.equal(r.sregs.efer, 0xd01n);
    assert.deepEqual(r.sregs.gdt, { base: 0x7fffn, limit: 0x27 });
    assert.deepEqual(r.msrs, [
      { index: 0xc0000080, value: 0xd01n },
      { index: 0x174, value: 8n },
    ]);
    // The same reply with one MSR missing is the wrong size: that call fails, the connection goes on.
    await assert.rejects(
      exchange(
        s,
        (c) => c.getRegisters(0, [0xc0000080, 0x174]),
        13,
        `${VH0} 0200 0000 00000000 800000c0 74010000`,
        data.subarray(0, 488),
      ),
      (e: Error) =>
        e instanceof KvmiReplyError && /488 bytes of data, the protocol gives it 504/.test(e.message),
    );
    const regs = { ...r.regs, rax: 0x42n };
    const body = Buffer.alloc(144);
    body.set(data.subarray(8, 152));
    body.writeBigUInt64LE(0x42n, 0);
    await exchange(s, (c) => c.setRegisters(0, regs), 14, cat(hexBytes(VH0), body));
  }));

test("READ/WRITE_PHYSICAL stay within a page; readMemory cuts a range at page boundaries", () =>
  withSession(async (s) => {
    const page = Buffer.from(Array.from({ length: 16 }, (_, i) => i));
    assert.deepEqual(
      await exchange(s, (c) => c.readPhysical(0x1ff0n, 16), 17, "f01f000000000000 1000000000000000", page),
      page,
    );
    await exchange(
      s,
      (c) => c.writePhysical(0x2000n, Uint8Array.of(1, 2, 3)),
      18,
      "0020000000000000 0300000000000000 010203",
    );
    await assert.rejects(s.client.readPhysical(0x1ff0n, 17), KvmiUsageError);
    await assert.rejects(s.client.writePhysical(0xfffn, Uint8Array.of(1, 2)), KvmiUsageError);
    // 0x1ff8+0x10: two requests (8 bytes each side of the boundary), in flight together, answered in reverse.
    const r = s.client.readMemory(0x1ff8n, 16);
    const a = await s.peer.next();
    const b = await s.peer.next();
    assert.deepEqual(a.payload, hexBytes("f81f000000000000 0800000000000000"));
    assert.deepEqual(b.payload, hexBytes("0020000000000000 0800000000000000"));
    s.peer.send(reply(17, b.seq, Buffer.alloc(8, 0xbb)));
    s.peer.send(reply(17, a.seq, Buffer.alloc(8, 0xaa)));
    assert.deepEqual(await r, cat(Buffer.alloc(8, 0xaa), Buffer.alloc(8, 0xbb)));
  }));

test("readMemory keeps `window` pieces in flight, sends the next as each is answered; a failing piece rejects it", () =>
  withSession(async (s) => {
    // 4 pages, 2 in flight: pages 0 and 1 go out; page 2 only once one of them is answered.
    const r = s.client.readMemory(0x10000n, 4 * 4096, 2);
    const p0 = await s.peer.next();
    const p1 = await s.peer.next();
    assert.deepEqual([p0.payload.readBigUInt64LE(0), p1.payload.readBigUInt64LE(0)], [0x10000n, 0x11000n]);
    s.peer.send(reply(17, p1.seq, Buffer.alloc(4096, 1)));
    const p2 = await s.peer.next();
    assert.equal(p2.payload.readBigUInt64LE(0), 0x12000n);
    s.peer.send(reply(17, p0.seq, Buffer.alloc(4096, 0)));
    const p3 = await s.peer.next();
    assert.equal(p3.payload.readBigUInt64LE(0), 0x13000n);
    s.peer.send(reply(17, p3.seq, Buffer.alloc(4096, 3)));
    s.peer.send(reply(17, p2.seq, Buffer.alloc(4096, 2)));
    const got = await r;
    assert.deepEqual(
      [0, 1, 2, 3].map((i) => got[i * 4096 + 100]),
      [0, 1, 2, 3],
    );
    // A piece answered with an error: the whole read fails with it; the other pieces' replies are taken.
    const bad = s.client.readMemory(0x20000n, 2 * 4096, 2);
    const q0 = await s.peer.next();
    const q1 = await s.peer.next();
    s.peer.send(reply(17, q0.seq, Buffer.alloc(0), -2));
    s.peer.send(reply(17, q1.seq, Buffer.alloc(4096)));
    await assert.rejects(bad, (e: Error) => e instanceof KvmiCommandError && /READ_PHYSICAL/.test(e.message));
    assert.equal(
      await exchange(s, (c) => c.getMaxGfn(), 29, "", le64(0x4000n)),
      0x4000n,
      "the connection goes on",
    );
    await assert.rejects(s.client.readMemory(0n, -1), KvmiUsageError);
  }));

test("SET_PAGE_ACCESS: {u16 view; u16 count; u32} then 16-byte entries; more than 511 go as two messages", () =>
  withSession(async (s) => {
    await exchange(
      s,
      (c) =>
        c.setPageAccess([
          { gpa: 0x9000n, access: 5 },
          { gpa: 0xa000n, access: 7 },
        ]),
      21,
      "0000 0200 00000000 0090000000000000 05 00 0000 00000000 00a0000000000000 07 00 0000 00000000",
    );
    const many = Array.from({ length: 600 }, (_, i) => ({ gpa: BigInt(i) << 12n, access: 1 }));
    const done = s.client.setPageAccess(many, 3);
    const first = await s.peer.next();
    assert.equal(first.size, 8 + 511 * 16);
    assert.deepEqual(first.payload.subarray(0, 8), cat(le16(3), le16(511), zeros(4)));
    s.peer.send(reply(21, first.seq));
    const second = await s.peer.next();
    assert.deepEqual(second.payload.subarray(0, 8), cat(le16(3), le16(89), zeros(4)));
    assert.deepEqual(second.payload.subarray(8, 16), le64(511n << 12n));
    s.peer.send(reply(21, second.seq));
    await done;
  }));

test("vmtool's extensions: memory map, RAM mapping (or -KVM_EOPNOTSUPP), the explained walk", () =>
  withSession(async (s) => {
    const map = await exchange(
      s,
      (c) => c.getMemoryMap(),
      0x4001,
      "",
      cat(
        le32(2),
        zeros(4),
        le64(0n),
        le64(0x4000000n),
        le32(1),
        zeros(4),
        le64(0xd0000000n),
        le64(0x1000n),
        le32(2),
        zeros(4),
      ),
    );
    assert.deepEqual(map, [
      { gpa: 0n, size: 0x4000000n, kind: 1 },
      { gpa: 0xd0000000n, size: 0x1000n, kind: 2 },
    ]);
    const m = await exchange(
      s,
      (c) => c.getRamMapping(),
      0x4002,
      "",
      cat(le32(4242), le32(17), le64(0x4000000n), le64(0n)),
    );
    assert.deepEqual(m, { pid: 4242, fd: 17, size: 0x4000000n, gpa: 0n });
    assert.equal(await exchange(s, (c) => c.getRamMapping(), 0x4002, "", zeros(0), -95), undefined);
    const walk = await exchange(
      s,
      (c) => c.translateExplained(1, 0x400123n),
      0x4003,
      "0100 0000 00000000 2301400000000000",
      cat(
        le32(3),
        le32(2),
        le64(0x200123n),
        le32(0),
        zeros(4),
        le32(4),
        zeros(4),
        le64(0x9000n),
        le64(0xa003n),
        le32(3),
        zeros(4),
        le64(0xa000n),
        le64(0x200083n),
      ),
    );
    assert.deepEqual(walk, {
      mode: 3,
      gpa: 0x200123n,
      stopReason: 0,
      levels: [
        { kind: 4, entryGpa: 0x9000n, entryValue: 0xa003n },
        { kind: 3, entryGpa: 0xa000n, entryValue: 0x200083n },
      ],
    });
    // A walk whose level count does not match its size fails that call only.
    await assert.rejects(
      exchange(
        s,
        (c) => c.translateExplained(0, 0n),
        0x4003,
        `${VH0} 0000000000000000`,
        cat(le32(0), le32(3), le64(~0n), le32(1), zeros(4)),
      ),
      KvmiReplyError,
    );
  }));

test("an error reply is a KvmiCommandError naming the code; seqs go on from GET_VERSION's 1", () =>
  withSession(async (s) => {
    const r = s.client.readPhysical(0x7fff0000n, 8);
    const m = await s.peer.next();
    assert.equal(m.seq, 2);
    s.peer.send(reply(17, m.seq, zeros(0), -22));
    await assert.rejects(
      r,
      (e: Error) =>
        e instanceof KvmiCommandError && e.err === -22 && /-KVM_EINVAL \(invalid argument\)/.test(e.message),
    );
    const r2 = s.client.getGuestInfo();
    const m2 = await s.peer.next();
    assert.equal(m2.seq, 3);
    s.peer.send(reply(5, m2.seq, cat(le32(1), zeros(12))));
    assert.deepEqual(await r2, { vcpuCount: 1 });
    await assert.rejects(s.client.getVcpuInfo(70000), KvmiUsageError);
  }));
