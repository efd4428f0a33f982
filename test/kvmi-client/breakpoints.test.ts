// Software breakpoints as a KVMI tool plants them, message by message: read the byte, write 0xCC; on a hit,
// put the byte back, single-step, RETRY; on the step, 0xCC again, stop stepping, CONTINUE; at the end, every
// original byte back.
import { test } from "node:test";
import assert from "node:assert/strict";
import { SoftwareBreakpoints } from "../../src/kvmi-client/index.js";
import {
  cat,
  event,
  eventCommon,
  le16,
  le64,
  reply,
  session,
  zeros,
  type Received,
  type Session,
} from "./peer.js";

/** The next message must be `id` with `payload`; answer it (with `data`). */
async function answer(s: Session, id: number, payload: Buffer, data: Buffer = zeros(0)): Promise<Received> {
  const m = await s.peer.expect(id);
  assert.deepEqual(m.payload, payload);
  s.peer.send(reply(id, m.seq, data));
  return m;
}

const read1 = (gpa: bigint) => cat(le64(gpa), le64(1n));
const write1 = (gpa: bigint, byte: number) => cat(le64(gpa), le64(1n), [byte]);
const singlestep = (vcpu: number, on: boolean) => cat(le16(vcpu), zeros(6), [on ? 1 : 0], zeros(7));
const bpEvent = (seq: number, vcpu: number, gpa: bigint) =>
  event(seq, eventCommon({ vcpu, event: 4 }), cat(le64(gpa), [1], zeros(7)));
const replyHead = (vcpu: number, action: number, ev: number) =>
  cat(le16(vcpu), zeros(6), [action, ev], zeros(6));

test("a kept breakpoint: planted, stepped over on a hit, planted again, removed at the end", async () => {
  const s = await session({ replyTimeoutMs: 10_000 });
  try {
    const bps = new SoftwareBreakpoints(s.client, true);
    const added = bps.add(0x2005n, "main");
    await answer(s, 17, read1(0x2005n), Buffer.of(0x55)); // the original byte: push rbp
    await answer(s, 18, write1(0x2005n, 0xcc));
    const bp = await added;
    assert.deepEqual([bp.gpa, bp.label, bp.original], [0x2005n, "main", 0x55]);

    s.peer.send(bpEvent(900, 1, 0x2005n));
    const hit = (await s.client.nextEvent())!;
    assert.equal(bps.owner(hit), bp);
    const answering = bps.answerBreakpoint(hit);
    await answer(s, 18, write1(0x2005n, 0x55));
    await answer(s, 63, singlestep(1, true));
    assert.equal(await answering, bp);
    const retry = await s.peer.expect(0);
    assert.deepEqual([retry.seq, retry.payload], [900, replyHead(1, 1, 4)]);
    assert.equal(bp.hits, 1);
    assert.ok(bps.isStepping(1));

    s.peer.send(event(901, eventCommon({ vcpu: 1, event: 11 }), zeros(8)));
    const step = (await s.client.nextEvent())!;
    const stepping = bps.answerSinglestep(step);
    await answer(s, 18, write1(0x2005n, 0xcc));
    await answer(s, 63, singlestep(1, false));
    assert.equal(await stepping, true);
    const cont = await s.peer.expect(0);
    assert.deepEqual([cont.seq, cont.payload], [901, replyHead(1, 0, 11)]);

    // Not ours: the guest's own int3 is re-injected (CONTINUE), nothing written.
    s.peer.send(bpEvent(902, 0, 0x3000n));
    const own = (await s.client.nextEvent())!;
    assert.equal(await bps.answerBreakpoint(own), undefined);
    const reinject = await s.peer.expect(0);
    assert.deepEqual([reinject.seq, reinject.payload], [902, replyHead(0, 0, 4)]);

    const removing = bps.removeAll();
    await answer(s, 18, write1(0x2005n, 0x55));
    await removing;
    assert.equal(bps.all.length, 0);
  } finally {
    s.end();
  }
});

test("without keep, a hit removes the breakpoint (byte back, RETRY), and removeAll has nothing left to do", async () => {
  const s = await session({ replyTimeoutMs: 10_000 });
  try {
    const bps = new SoftwareBreakpoints(s.client, false);
    const added = bps.add(0x1000n);
    await answer(s, 17, read1(0x1000n), Buffer.of(0x90));
    await answer(s, 18, write1(0x1000n, 0xcc));
    await added;
    s.peer.send(bpEvent(5, 0, 0x1000n));
    const answering = bps.answerBreakpoint((await s.client.nextEvent())!);
    await answer(s, 18, write1(0x1000n, 0x90));
    await answering;
    assert.deepEqual((await s.peer.expect(0)).payload, replyHead(0, 1, 4));
    await bps.removeAll();
    // Nothing was sent by removeAll: the next message is a fresh command's.
    const info = s.client.getGuestInfo();
    assert.equal((await s.peer.next()).id, 5);
    void info.catch(() => undefined);
  } finally {
    s.end();
  }
});
