// A VMM that breaks the protocol: replies to no command, wrong ids, wrong sizes, oversized messages, garbage,
// malformed events, a connection closed mid-message, no reply at all. Each ends in one typed error with one
// line; a broken stream closes the connection, a wrong-size reply fails only its call; nothing hangs.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  KvmiClosedError,
  KvmiProtocolError,
  KvmiReplyError,
  KvmiTimeoutError,
} from "../../src/kvmi-client/index.js";
import {
  cat,
  event,
  eventCommon,
  le16,
  le32,
  le64,
  message,
  reply,
  session,
  zeros,
  type Session,
} from "./peer.js";

async function withSession(fn: (s: Session) => Promise<void>, replyTimeoutMs = 10_000): Promise<void> {
  const s = await session({ replyTimeoutMs });
  try {
    await fn(s);
  } finally {
    s.end();
  }
}

/** The connection ends with a KvmiProtocolError whose message matches `re`, and the VMM sees it closed. */
async function brokenWith(s: Session, re: RegExp): Promise<void> {
  const reason = await s.client.closed;
  assert.ok(reason instanceof KvmiProtocolError, `${reason.name}: ${reason.message}`);
  assert.match(reason.message, re);
  assert.ok(!reason.message.includes("\n"), "one line");
  await s.peer.closedByClient();
}

test("a reply whose seq answers no command in flight closes the connection; pending calls fail with it", () =>
  withSession(async (s) => {
    const pending = s.client.getGuestInfo();
    const m = await s.peer.next();
    s.peer.send(reply(5, m.seq + 7, cat(le32(1), zeros(12))));
    await assert.rejects(pending, KvmiProtocolError);
    await brokenWith(s, new RegExp(`seq ${m.seq + 7} that answers no command in flight`));
    await assert.rejects(s.client.getMaxGfn(), KvmiProtocolError);
  }));

test("the right seq with another command's id closes the connection", () =>
  withSession(async (s) => {
    const pending = s.client.getMaxGfn();
    const m = await s.peer.next();
    s.peer.send(reply(5, m.seq, cat(le32(1), zeros(12))));
    await assert.rejects(pending, /has id 5 \(GET_GUEST_INFO\), not 29/);
    await brokenWith(s, /reply to GET_MAX_GFN/);
  }));

test("an EVENT_REPLY from the VMM, or any id nobody asked for, breaks the stream", () =>
  withSession(async (s) => {
    s.peer.send(message(0, 1, cat(le16(0), zeros(14))));
    await brokenWith(s, /event replies go from the tool to the VMM/);
  }));

test("a header announcing more than 8184 bytes closes the connection at once", () =>
  withSession(async (s) => {
    const pending = s.client.getGuestInfo();
    await s.peer.next();
    s.peer.send(cat(le16(5), le16(8185), le32(2)));
    await assert.rejects(pending, KvmiProtocolError);
    await brokenWith(s, /8185 bytes .* limit is 8184/);
  }));

test("replies of the wrong size fail their call only; the connection goes on", () =>
  withSession(async (s) => {
    const cases: [Buffer, RegExp][] = [
      [message(5, 0, cat(le32(0), zeros(4), le32(1), zeros(4))), /8 bytes of data, the protocol gives it 16/],
      [message(5, 0, le32(0)), /a reply of 4 bytes, without its error code/],
      [message(5, 0, cat(le32(-22 >>> 0), zeros(4), le32(1))), /an error reply \(-22\) with 4 bytes of data/],
    ];
    for (const [bytes, re] of cases) {
      const pending = s.client.getGuestInfo();
      const m = await s.peer.next();
      bytes.writeUInt32LE(m.seq, 4);
      s.peer.send(bytes);
      await assert.rejects(pending, (e: Error) => e instanceof KvmiReplyError && re.test(e.message));
    }
    const ok = s.client.getGuestInfo();
    const m = await s.peer.next();
    s.peer.send(reply(5, m.seq, cat(le32(2), zeros(12))));
    assert.deepEqual(await ok, { vcpuCount: 2 });
    assert.equal(s.client.connection.isClosed, false);
  }));

test("malformed events close the connection (libkvmi drops it too): unknown id, wrong common size, wrong data size", async () => {
  const cases: [Buffer, RegExp][] = [
    [event(1, eventCommon({ event: 12 })), /unknown event id 12/],
    [event(1, eventCommon({ event: 10, size: 540 })), /says it is 540 bytes, the kvmi-v7 one is 544/],
    [
      event(1, eventCommon({ event: 4 }), le64(0x1000n)),
      /BREAKPOINT event with 8 bytes of its own data, the protocol gives it 16/,
    ],
    [event(1, eventCommon({ event: 10 }), zeros(8)), /PAUSE_VCPU event with 8 bytes/],
    [message(1, 1, zeros(100)), /100 bytes, shorter than the 544-byte common part/],
  ];
  for (const [bytes, re] of cases)
    await withSession(async (s) => {
      s.peer.send(bytes);
      await brokenWith(s, re);
      assert.equal(await s.client.nextEvent(), undefined);
    });
});

test("garbage from the VMM (20 fixed seeds): a protocol error every time, no crash, no hang", async () => {
  let state = 0x12345678;
  const random = () => ((state = (Math.imul(state, 1103515245) + 12345) >>> 0) >>> 16) & 0xff;
  for (let seed = 0; seed < 20; seed++)
    await withSession(async (s) => {
      const junk = Buffer.from(Array.from({ length: 16384 }, random));
      s.peer.send(junk);
      const reason = await s.client.closed;
      assert.ok(reason instanceof KvmiProtocolError, `seed ${seed}: ${reason.name}: ${reason.message}`);
    });
});

test("the VMM closing mid-message: one line that says so, pending calls fail with it", async () => {
  const cases: [(seq: number) => Buffer, RegExp][] = [
    [
      (seq) => reply(5, seq, cat(le32(1), zeros(12))).subarray(0, 18),
      /in the middle of a message \(10 of 24 bytes\)/,
    ],
    [
      (seq) => reply(5, seq, cat(le32(1), zeros(12))).subarray(0, 5),
      /in the middle of a message \(5 of 8 bytes\)/,
    ],
    [(seq) => reply(5, seq, cat(le32(1), zeros(12))).subarray(0, 8), /in the middle of a message/],
  ];
  for (const [bytes, re] of cases)
    await withSession(async (s) => {
      const pending = s.client.getGuestInfo();
      const m = await s.peer.next();
      s.peer.send(bytes(m.seq));
      s.peer.close();
      await assert.rejects(
        pending,
        (e: Error) => e instanceof KvmiClosedError && e.byPeer && re.test(e.message),
      );
    });
});

test("the reply timeout also covers a command sent after one that is answered in time", () =>
  withSession(async (s) => {
    const a = s.client.getGuestInfo();
    const ma = await s.peer.next();
    const b = s.client.getMaxGfn();
    await s.peer.next();
    s.peer.send(reply(5, ma.seq, cat(le32(1), zeros(12))));
    assert.equal((await a).vcpuCount, 1);
    await assert.rejects(
      b,
      (e: Error) =>
        e instanceof KvmiTimeoutError && /no reply to GET_MAX_GFN \(seq 3\) within 0.2 s/.test(e.message),
    );
    await s.peer.closedByClient();
  }, 200));

test("no reply within the timeout: the connection is taken as lost (libkvmi's rule), every pending call fails", () =>
  withSession(async (s) => {
    const a = s.client.getGuestInfo();
    const b = s.client.getMaxGfn();
    await s.peer.next();
    await s.peer.next();
    await assert.rejects(
      a,
      (e: Error) =>
        e instanceof KvmiTimeoutError && /no reply to GET_GUEST_INFO \(seq 2\) within 0.2 s/.test(e.message),
    );
    await assert.rejects(b, KvmiTimeoutError);
    await s.peer.closedByClient();
  }, 200));
