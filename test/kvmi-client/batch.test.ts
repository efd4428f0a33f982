// Batches as libkvmi sends them: [CONTROL_CMD_RESPONSE enable=0 now=1] messages [CONTROL_CMD_RESPONSE enable=1
// now=wait], only the last answered; the pause of every vCPU as kvmi_pause_all_vcpus does it, then one PAUSE
// event per vCPU, answered CONTINUE to resume.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  cat,
  event,
  eventCommon,
  hexBytes,
  le16,
  le32,
  reply,
  session,
  zeros,
  type Received,
} from "./peer.js";

const CMD_RESPONSE_OFF_NOW = hexBytes("00 01 0000 00000000"); // enable 0, now 1: no reply from here on
const CMD_RESPONSE_ON_NOW = hexBytes("01 01 0000 00000000"); // enable 1, now 1: this one is answered
const CMD_RESPONSE_ON_LATER = hexBytes("01 00 0000 00000000"); // enable 1, now 0: the next ones are

const pauseVcpu = (vcpu: number) => cat(le16(vcpu), zeros(6), hexBytes("01 00 0000 00000000"));

test("pauseAll: one batch of PAUSE_VCPU wait=1 in seq order, only the last message answered, then a PAUSE event per vCPU", async () => {
  const s = await session({ replyTimeoutMs: 10_000 });
  try {
    const paused = s.client.pauseAll({ count: 2 });
    const got: Received[] = [];
    for (let i = 0; i < 4; i++) got.push(await s.peer.next());
    assert.deepEqual(
      got.map((m) => [m.id, m.size]),
      [
        [27, 8],
        [7, 16],
        [7, 16],
        [27, 8],
      ],
    );
    const seq0 = got[0].seq;
    assert.deepEqual(
      got.map((m) => m.seq),
      [seq0, seq0 + 1, seq0 + 2, seq0 + 3],
    );
    assert.deepEqual(got[0].payload, CMD_RESPONSE_OFF_NOW);
    assert.deepEqual(got[1].payload, pauseVcpu(0));
    assert.deepEqual(got[2].payload, pauseVcpu(1));
    assert.deepEqual(got[3].payload, CMD_RESPONSE_ON_NOW);
    s.peer.send(reply(27, got[3].seq));
    // vCPU 1's PAUSE event first, then a breakpoint event that is not part of the pause, then vCPU 0's.
    s.peer.send(event(1001, eventCommon({ vcpu: 1, event: 10, rip: 0x1234n })));
    s.peer.send(
      event(
        1002,
        eventCommon({ vcpu: 1, event: 4 }),
        cat(Buffer.from("0020000000000000", "hex"), [1], zeros(7)),
      ),
    );
    s.peer.send(event(1003, eventCommon({ vcpu: 0, event: 10, rip: 0x5678n })));
    const p = await paused;
    assert.deepEqual(p.vcpus, [0, 1]);
    assert.deepEqual(
      p.events.map((e) => [e.vcpu, e.kind, e.seq, e.regs.rip]),
      [
        [0, "pause", 1003, 0x5678n],
        [1, "pause", 1001, 0x1234n],
      ],
    );
    const other = await s.client.nextEvent({ timeoutMs: 1000 });
    assert.equal(other?.kind, "breakpoint");
    assert.equal(s.client.connection.queuedEvents, 0);
    // Resume: CONTINUE to each PAUSE event, 16 bytes each (vcpu header, action 0, event 10).
    s.client.resume(p);
    for (const [seq, vcpu] of [
      [1003, 0],
      [1001, 1],
    ]) {
      const m = await s.peer.next();
      assert.deepEqual([m.id, m.seq, m.size], [0, seq, 16]);
      assert.deepEqual(m.payload, cat(le16(vcpu), zeros(6), hexBytes("00 0a 0000 00000000")));
    }
    s.client.resume(p); // already answered: nothing more is sent, the next message is the next command
    const info = s.client.getGuestInfo();
    const m = await s.peer.next();
    assert.equal(m.id, 5);
    s.peer.send(reply(5, m.seq, cat(le32(2), zeros(12))));
    await info;
  } finally {
    s.end();
  }
});

test("pauseAll without a count asks GET_GUEST_INFO first", async () => {
  const s = await session({ replyTimeoutMs: 10_000 });
  try {
    const paused = s.client.pauseAll({ waitForEvents: false });
    const info = await s.peer.next();
    assert.equal(info.id, 5);
    s.peer.send(reply(5, info.seq, cat(le32(3), zeros(12))));
    const ids: number[] = [];
    let last: Received | undefined;
    for (let i = 0; i < 5; i++) ids.push((last = await s.peer.next()).id);
    assert.deepEqual(ids, [27, 7, 7, 7, 27]);
    s.peer.send(reply(27, last!.seq));
    assert.deepEqual((await paused).vcpus, [0, 1, 2]);
  } finally {
    s.end();
  }
});

test("a batch with an event reply is not waited for (enable=1 now=0); one event reply alone goes bare", async () => {
  const s = await session({ replyTimeoutMs: 10_000 });
  try {
    s.peer.send(event(77, eventCommon({ vcpu: 2, event: 10 })));
    s.peer.send(event(78, eventCommon({ vcpu: 1, event: 10 })));
    const e1 = (await s.client.nextEvent())!;
    const e2 = (await s.client.nextEvent())!;
    await s.client
      .batch()
      .reply(e1, "continue")
      .setPageAccess([{ gpa: 0x9000n, access: 7 }])
      .commit();
    assert.equal(s.client.connection.inFlight, 0, "nothing waits for a reply");
    const got: Received[] = [];
    for (let i = 0; i < 4; i++) got.push(await s.peer.next());
    assert.deepEqual(
      got.map((m) => m.id),
      [27, 0, 21, 27],
    );
    assert.equal(got[1].seq, 77, "the event reply carries the event's seq");
    assert.deepEqual(got[1].payload, cat(le16(2), zeros(6), hexBytes("00 0a 0000 00000000")));
    assert.equal(got[2].seq, got[0].seq + 1);
    assert.equal(got[3].seq, got[0].seq + 2);
    assert.deepEqual(got[3].payload, CMD_RESPONSE_ON_LATER);
    await s.client.batch().reply(e2, "crash").commit();
    const bare = await s.peer.next();
    assert.deepEqual([bare.id, bare.seq, bare.size], [0, 78, 16]);
    assert.deepEqual(bare.payload, cat(le16(1), zeros(6), hexBytes("02 0a 0000 00000000")));
  } finally {
    s.end();
  }
});

test("a batch larger than libkvmi's limits goes as several, each framed, only the last answered", async () => {
  const s = await session({ replyTimeoutMs: 10_000 });
  try {
    const b = s.client.batch();
    for (let v = 0; v < 100; v++) b.pauseVcpu(v);
    const done = b.commit();
    const frames: Received[] = [];
    for (let i = 0; i < 100 + 3 * 2; i++) frames.push(await s.peer.next());
    const cmdResponses = frames.filter((m) => m.id === 27).map((m) => m.payload);
    assert.deepEqual(cmdResponses, [
      CMD_RESPONSE_OFF_NOW,
      CMD_RESPONSE_ON_LATER,
      CMD_RESPONSE_OFF_NOW,
      CMD_RESPONSE_ON_LATER,
      CMD_RESPONSE_OFF_NOW,
      CMD_RESPONSE_ON_NOW,
    ]);
    assert.deepEqual(
      frames.filter((m) => m.id === 7).map((m) => m.payload.readUInt16LE(0)),
      Array.from({ length: 100 }, (_, i) => i),
    );
    for (let i = 1; i < frames.length; i++) assert.equal(frames[i].seq, frames[i - 1].seq + 1);
    s.peer.send(reply(27, frames[frames.length - 1].seq));
    await done;
    assert.equal(s.client.connection.inFlight, 0);
  } finally {
    s.end();
  }
});
