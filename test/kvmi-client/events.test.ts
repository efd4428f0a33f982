// Events: every kvmi-v7 event decoded from hand-placed bytes, each reply's exact bytes, events interleaved with
// command replies, a flood that stays bounded, and the end of the connection with events still queued.
import { test } from "node:test";
import assert from "node:assert/strict";
import { KvmiClosedError, KvmiUsageError, type KvmiEvent } from "../../src/kvmi-client/index.js";
import { cat, event, eventCommon, le16, le32, le64, reply, session, zeros } from "./peer.js";

test("every event: the common part (vcpu, mode, view, registers, MSRs) and each event's own data", async () => {
  const s = await session({ replyTimeoutMs: 10_000 });
  try {
    const common = (ev: number) =>
      eventCommon({
        vcpu: 3,
        event: ev,
        mode: 4,
        view: 0,
        rax: 0xaaaan,
        rip: 0x100000n,
        cr3: 0x9000n,
        efer: 0x500n,
      });
    const sent: [number, Buffer][] = [
      [1, cat(le16(3), zeros(6), le64(0x9000n), le64(0xa000n))], // CR: u16 cr; u16 pad[3]; old; new
      [2, cat(le32(0xc0000081), zeros(4), le64(0n), le64(0x23001000000000n))], // MSR
      [4, cat(le64(0x2000n), [1], zeros(7))], // BREAKPOINT: gpa, insn_len
      [6, cat(le64(0xffff888000009000n), le64(0x9000n), [2, 0], le16(0), zeros(4))], // PF: gva, gpa, access, view
      [7, cat([14, 0], zeros(2), le32(2), le64(0x1234n))], // TRAP: vector, error_code, cr2
      [8, cat([2, 1], zeros(6))], // DESCRIPTOR: GDTR, write
      [11, cat([1], zeros(7))], // SINGLESTEP: failed
      [13, cat(le32(1), le32(0), [2], zeros(3), zeros(4))], // CPUID: function, index, insn_length
      [10, zeros(0)], // PAUSE_VCPU
      [5, zeros(0)], // HYPERCALL
      [3, zeros(0)], // XSETBV
      [9, zeros(0)], // CREATE_VCPU
      [0, zeros(0)], // UNHOOK
    ];
    sent.forEach(([id, data], i) => s.peer.send(event(500 + i, common(id), data)));
    const got: KvmiEvent[] = [];
    for (let i = 0; i < sent.length; i++) got.push((await s.client.nextEvent({ timeoutMs: 5000 }))!);
    for (const [i, ev] of got.entries()) {
      assert.equal(ev.seq, 500 + i);
      assert.equal(ev.id, sent[i][0]);
      assert.deepEqual(
        [ev.vcpu, ev.mode, ev.regs.rax, ev.regs.rip, ev.sregs.cr3, ev.msrs.efer],
        [3, 4, 0xaaaan, 0x100000n, 0x9000n, 0x500n],
      );
    }
    const [cr, msr, bp, pf, trap, desc, ss, cpuid] = got;
    assert.deepEqual(cr.kind === "cr" && [cr.cr, cr.oldValue, cr.newValue], [3, 0x9000n, 0xa000n]);
    assert.deepEqual(msr.kind === "msr" && [msr.msr, msr.oldValue, msr.newValue], [
      0xc0000081,
      0n,
      0x23001000000000n,
    ]);
    assert.deepEqual(bp.kind === "breakpoint" && [bp.gpa, bp.insnLen], [0x2000n, 1]);
    assert.deepEqual(pf.kind === "pf" && [pf.gva, pf.gpa, pf.access], [0xffff888000009000n, 0x9000n, 2]);
    assert.deepEqual(trap.kind === "trap" && [trap.vector, trap.errorCode, trap.cr2], [14, 2, 0x1234n]);
    assert.deepEqual(desc.kind === "descriptor" && [desc.descriptor, desc.write], [2, true]);
    assert.deepEqual(ss.kind === "singlestep" && ss.failed, true);
    assert.deepEqual(cpuid.kind === "cpuid" && [cpuid.function, cpuid.index, cpuid.insnLength], [1, 0, 2]);
    assert.deepEqual(
      got.slice(8).map((e) => e.kind),
      ["pause", "hypercall", "xsetbv", "create-vcpu", "unhook"],
    );

    // Replies: vcpu header + {action, event} + the event's own reply data, at its exact size.
    const head = (action: number, ev: number) => cat(le16(3), zeros(6), [action, ev], zeros(6));
    s.client.reply(cr); // CONTINUE, new_val = the value the guest wrote
    s.client.reply(msr, "continue", { newValue: 0x42n });
    s.client.reply(pf, "retry");
    s.client.reply(bp, "crash");
    const expected = [
      [500, cat(head(0, 1), le64(0xa000n))],
      [501, cat(head(0, 2), le64(0x42n))],
      [503, cat(head(1, 6), zeros(272))],
      [502, head(2, 4)],
    ] as const;
    for (const [seq, payload] of expected) {
      const m = await s.peer.next();
      assert.deepEqual([m.id, m.seq, m.size], [0, seq, payload.length]);
      assert.deepEqual(m.payload, payload);
    }
    assert.throws(
      () => s.client.reply(cr),
      (e: Error) => e instanceof KvmiUsageError && /already answered/.test(e.message),
    );
    assert.throws(() => s.client.reply(got[12]), /UNHOOK event takes no reply/);
    assert.throws(() => s.client.reply(trap, "bogus" as "continue"), KvmiUsageError);
  } finally {
    s.end();
  }
});

test("handleEvents: events go to the handler as they are read, in order (queued ones first); waits for one kind still take theirs; after stop they queue again", async () => {
  const s = await session({ replyTimeoutMs: 10_000 });
  try {
    const msrEvent = (seq: number, value: bigint) =>
      event(
        seq,
        eventCommon({ vcpu: 1, event: 2, rip: 0x1000n + BigInt(seq) }),
        cat(le32(0xc0000081), zeros(4), le64(0n), le64(value)),
      );
    // Queued before any handler: handed over first, when the handler is set.
    s.peer.send(msrEvent(1, 0x11n));
    while (s.client.connection.queuedEvents < 1) await new Promise((r) => setImmediate(r));
    const seen: [number, bigint][] = [];
    let answered = 0;
    const stop = s.client.handleEvents((ev) => {
      seen.push([ev.seq, ev.regs.rip]);
      if (ev.kind === "msr") s.client.reply(ev, "continue", { newValue: ev.newValue + 1n });
      answered++;
    });
    assert.deepEqual(seen, [[1, 0x1001n]], "the queued event, at once");
    // A wait for a PAUSE event takes it, though a handler is set; the others go to the handler, in order.
    const pause = s.client.nextEvent({ match: (e) => e.kind === "pause", timeoutMs: 5000 });
    s.peer.send(cat(msrEvent(2, 0x22n), event(3, eventCommon({ event: 10 })), msrEvent(4, 0x44n)));
    assert.equal((await pause)?.seq, 3);
    while (answered < 3) await new Promise((r) => setImmediate(r));
    assert.deepEqual(
      seen.map(([seq]) => seq),
      [1, 2, 4],
    );
    assert.equal(s.client.connection.queuedEvents, 0);
    const head = cat(le16(1), zeros(6), [0, 2], zeros(6));
    for (const [seq, value] of [
      [1, 0x12n],
      [2, 0x23n],
      [4, 0x45n],
    ] as const) {
      const m = await s.peer.next();
      assert.deepEqual([m.id, m.seq, m.payload], [0, seq, cat(head, le64(value))]);
    }
    stop();
    s.peer.send(msrEvent(5, 0x55n));
    assert.equal((await s.client.nextEvent({ timeoutMs: 5000 }))?.seq, 5, "queued again after stop()");
    assert.equal(seen.length, 3);
  } finally {
    s.end();
  }
});

test("handleEvents: a handler that throws ends the connection with the error, not the process", async () => {
  const s = await session({ replyTimeoutMs: 10_000 });
  try {
    s.client.handleEvents(() => {
      throw new Error("tool bug");
    });
    s.peer.send(event(7, eventCommon({ event: 10 })));
    const why = await s.client.connection.closed;
    assert.match(why.message, /the event handler failed: Error: tool bug/);
  } finally {
    s.end();
  }
});

test("events that arrive while a command waits for its reply are queued, the reply still answers it", async () => {
  const s = await session({ replyTimeoutMs: 10_000 });
  try {
    const info = s.client.getGuestInfo();
    const m = await s.peer.next();
    s.peer.send(
      cat(
        event(9, eventCommon({ event: 10 })),
        event(10, eventCommon({ vcpu: 1, event: 10 })),
        reply(5, m.seq, cat(le32(2), zeros(12))),
      ),
    );
    assert.deepEqual(await info, { vcpuCount: 2 });
    assert.equal(s.client.connection.queuedEvents, 2);
    const seqs: number[] = [];
    for (let i = 0; i < 2; i++) seqs.push((await s.client.nextEvent())!.seq);
    assert.deepEqual(seqs, [9, 10]);
    assert.equal(await s.client.nextEvent({ timeoutMs: 20 }), undefined, "none left: the wait ends empty");
  } finally {
    s.end();
  }
});

test("a flood of events stays bounded: the client stops reading at its queue limit, then delivers all in order", async () => {
  const LIMIT = 64;
  const COUNT = 5000; // 2.7 MB of events: far more than the socket and the stream buffers hold
  const s = await session({ replyTimeoutMs: 10_000, maxQueuedEvents: LIMIT });
  try {
    let written = 0;
    const writer = (async () => {
      for (let i = 1; i <= COUNT; i++) {
        await s.peer.sendAndDrain(event(i, eventCommon({ vcpu: i % 4, event: 10 })));
        written = i;
      }
    })();
    while (s.client.connection.queuedEvents < LIMIT) await new Promise((r) => setImmediate(r));
    // Give the flood every chance to overrun the limit, then look.
    for (let i = 0; i < 20; i++) await new Promise((r) => setTimeout(r, 5));
    assert.equal(s.client.connection.queuedEvents, LIMIT);
    assert.ok(
      s.client.connection.bufferedBytes <= 64 * 1024 + 8192,
      `${s.client.connection.bufferedBytes} bytes buffered`,
    );
    assert.ok(written < COUNT, "the VMM's writes are held back by the socket");
    let next = 1;
    for await (const ev of s.client.events()) {
      assert.equal(ev.seq, next++);
      assert.ok(s.client.connection.queuedEvents <= LIMIT);
      if (ev.seq === COUNT) break;
    }
    await writer;
    assert.equal(written, COUNT);
  } finally {
    s.end();
  }
});

test("the VMM closing the connection: queued events are still delivered, then the iterator ends", async () => {
  const s = await session({ replyTimeoutMs: 10_000 });
  try {
    s.peer.send(cat(event(1, eventCommon({ event: 10 })), event(2, eventCommon({ event: 10 }))));
    const pending = s.client.getMaxGfn();
    await s.peer.next();
    s.peer.close();
    await assert.rejects(
      pending,
      (e: Error) =>
        e instanceof KvmiClosedError && e.byPeer && /the VMM closed the connection/.test(e.message),
    );
    const seqs: number[] = [];
    for await (const ev of s.client.events()) seqs.push(ev.seq);
    assert.deepEqual(seqs, [1, 2]);
    const reason = await s.client.closed;
    assert.ok(reason instanceof KvmiClosedError && reason.byPeer);
    await assert.rejects(s.client.getGuestInfo(), KvmiClosedError);
  } finally {
    s.end();
  }
});

test("closing from the client ends pending commands and event waits, and the VMM sees the end", async () => {
  const s = await session({ replyTimeoutMs: 10_000 });
  try {
    const pending = s.client.getGuestInfo();
    const waiting = s.client.nextEvent();
    await s.peer.next();
    s.client.close();
    await assert.rejects(pending, (e: Error) => e instanceof KvmiClosedError && !e.byPeer);
    assert.equal(await waiting, undefined);
    await s.peer.closedByClient();
  } finally {
    s.end();
  }
});

test("an abandoned wait (its signal aborted) takes no event: the next reader gets it", async () => {
  const s = await session({ replyTimeoutMs: 10_000 });
  try {
    const ac = new AbortController();
    const abandoned = s.client.nextEvent({ signal: ac.signal });
    ac.abort();
    assert.equal(await abandoned, undefined);
    s.peer.send(event(42, eventCommon({ event: 10 })));
    assert.equal((await s.client.nextEvent())?.seq, 42);
  } finally {
    s.end();
  }
});
