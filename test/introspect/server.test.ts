// The KVMI server of `vmtool run --introspect`, against real guests with known state, byte by byte (peer.ts is
// a tool written from the protocol's layouts). Each guest waits at its start until the tool sets the flag at
// GPA 0x2000 (WRITE_PHYSICAL), so the tool has enabled what it needs before the guest goes on.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { closeSync, openSync, readSync } from "node:fs";
import { join } from "node:path";
import { GUEST_OUT, guests } from "../helpers/guests.js";
import {
  EV,
  FLAG,
  ID,
  Peer,
  exitStatus,
  go,
  guest,
  REG,
  cmdResponse,
  controlEvents,
  pausePayload,
  u64,
  u8s,
  vcpuHdr,
  type Event,
} from "./peer.js";

const WAIT = { timeout: 60_000 };
test("handshake and the VM's facts: version, vCPUs, max gfn, the handshake's name", WAIT, async () => {
  const p = await Peer.start(["--cpus", "2", "--name", "probe-vm", ...guest("mov $1, %al\n out %al, $0xf4")]);
  try {
    assert.equal(p.handshake.readUInt32LE(0), 96);
    assert.equal(p.handshake.subarray(32).toString("utf8").replace(/\0.*$/s, ""), "probe-vm");
    assert.ok(Math.abs(Number(p.handshake.readBigInt64LE(24)) - Date.now() / 1000) < 60, "start time is now");
    assert.notDeepEqual([...p.handshake.subarray(4, 20)], new Array(16).fill(0), "a UUID");
    const v = await p.command(ID.GET_VERSION);
    assert.deepEqual([v.err, v.data.length, v.data.readUInt32LE(0)], [0, 16, 1]);
    const info = await p.command(ID.GET_GUEST_INFO);
    assert.equal(info.data.readUInt32LE(0), 2);
    const gfn = await p.command(ID.GET_MAX_GFN);
    assert.equal(gfn.data.readBigUInt64LE(0), BigInt((64 << 20) / 4096));
    const tsc = await p.command(ID.GET_VCPU_INFO, vcpuHdr(1));
    assert.equal(tsc.err, 0);
    assert.ok(tsc.data.readBigUInt64LE(0) > 100_000_000n, "a TSC rate in Hz");
    await go(p);
  } finally {
    assert.equal(await p.end(), exitStatus(1), p.stderr);
  }
});

test("CHECK_COMMAND / CHECK_EVENT: supported, not possible on an unmodified KVM, unknown", WAIT, async () => {
  const p = await Peer.start(guest("mov $1, %al\n out %al, $0xf4"));
  try {
    const check = async (id: number, which: number) =>
      (await p.command(which, Buffer.concat([u8s(id & 0xff, id >> 8), Buffer.alloc(6)]))).err;
    for (const id of [2, 5, 7, 13, 17, 21, 27, 29, 35, 63])
      assert.equal(await check(id, ID.CHECK_COMMAND), 0, `cmd ${id}`);
    for (const id of [10, 12, 22, 24, 32, 43])
      assert.equal(await check(id, ID.CHECK_COMMAND), -95, `cmd ${id}`);
    assert.equal(await check(30, ID.CHECK_COMMAND), -2);
    for (const id of [EV.BREAKPOINT, EV.MSR, EV.PF, EV.SINGLESTEP, EV.PAUSE_VCPU, EV.TRAP])
      assert.equal(await check(id, ID.CHECK_EVENT), 0, `event ${id}`);
    for (const id of [EV.CR, 3, 5, 8, 9, 13])
      assert.equal(await check(id, ID.CHECK_EVENT), -95, `event ${id}`);
    assert.equal(
      (await p.command(ID.CONTROL_CR, Buffer.concat([vcpuHdr(0), u8s(1, 0, 0, 0, 3, 0, 0, 0)]))).err,
      -95,
    );
    await go(p);
  } finally {
    await p.end();
  }
});

test(
  "libkvmi's pause batch: one reply for the batch, one PAUSE event per vCPU, registers with MSRs while paused",
  WAIT,
  async () => {
    const p = await Peer.start(["--cpus", "2", ...guest("mov $9, %al\n out %al, $0xf4")]);
    try {
      // [CMD_RESPONSE enable=0 now=1] PAUSE(0) PAUSE(1) [CMD_RESPONSE enable=1 now=1]: only the last is answered.
      p.send(ID.CONTROL_CMD_RESPONSE, cmdResponse(0, 1));
      p.send(ID.PAUSE_VCPU, pausePayload(0));
      p.send(ID.PAUSE_VCPU, pausePayload(1));
      const last = await p.command(ID.CONTROL_CMD_RESPONSE, cmdResponse(1, 1));
      assert.equal(last.err, 0);
      const events = [await p.nextEvent(), await p.nextEvent()];
      assert.deepEqual(events.map((e) => [e.event, e.vcpu]).sort(), [
        [EV.PAUSE_VCPU, 0],
        [EV.PAUSE_VCPU, 1],
      ]);
      const bsp = events.find((e) => e.vcpu === 0) as Event;
      assert.equal(bsp.mode, 8, "long mode");
      const regs = await p.command(
        ID.GET_REGISTERS,
        Buffer.concat([vcpuHdr(0), u8s(1, 0, 0, 0, 0, 0, 0, 0), u8s(0x80, 0, 0, 0xc0)]),
      );
      assert.equal(regs.err, 0);
      assert.equal(regs.data.readUInt32LE(0), 8);
      const msrs = 8 + 144 + 312;
      assert.equal(regs.data.readUInt32LE(msrs), 1, "one MSR");
      assert.equal(regs.data.readUInt32LE(msrs + 8), 0xc0000080);
      assert.equal(regs.data.readBigUInt64LE(msrs + 16) & 0x500n, 0x500n, "EFER: LME and LMA");
      assert.equal(
        regs.data.readBigUInt64LE(8 + REG.rip),
        bsp.regs.readBigUInt64LE(REG.rip),
        "the event's RIP",
      );
      await go(p);
      for (const e of events) p.reply(e, 0);
    } finally {
      assert.equal(await p.end(), exitStatus(9), p.stderr);
    }
  },
);

test(
  "a BREAKPOINT event at the guest's INT3 carries its GPA; registers are the guest's; RETRY after moving RIP",
  WAIT,
  async () => {
    const p = await Peer.start(
      guest(`
    mov $0x1111111111111111, %rax
    mov $0x2222222222222222, %rbx
    mov $0x3333333333333333, %rcx
    mov $0x4444444444444444, %r15
  bp: int3
    mov $5, %al
    out %al, $0xf4`),
    );
    try {
      assert.equal((await p.command(ID.CONTROL_EVENTS, controlEvents(0, EV.BREAKPOINT))).err, 0);
      await go(p);
      const e = await p.nextEvent();
      assert.equal(e.event, EV.BREAKPOINT);
      const rip = e.regs.readBigUInt64LE(REG.rip);
      assert.equal(e.data.readBigUInt64LE(0), rip, "the INT3's GPA (identity-mapped)");
      assert.equal(e.data[8], 1, "insn_len");
      const regs = await p.command(ID.GET_REGISTERS, Buffer.concat([vcpuHdr(0), Buffer.alloc(8)]));
      const r = regs.data.subarray(8, 8 + 144);
      assert.equal(r.readBigUInt64LE(REG.rax), 0x1111111111111111n);
      assert.equal(r.readBigUInt64LE(REG.rbx), 0x2222222222222222n);
      assert.equal(r.readBigUInt64LE(REG.rcx), 0x3333333333333333n);
      assert.equal(r.readBigUInt64LE(REG.r15), 0x4444444444444444n);
      // The tool's own breakpoint: step RIP past it and RETRY.
      const set = Buffer.from(r);
      set.writeBigUInt64LE(rip + 1n, REG.rip);
      assert.equal((await p.command(ID.SET_REGISTERS, Buffer.concat([vcpuHdr(0), set]))).err, 0);
      p.reply(e, 1);
    } finally {
      assert.equal(await p.end(), exitStatus(5), p.stderr);
    }
  },
);

test(
  "registers set while a vCPU waits in an event are what GET_REGISTERS, the next event and the guest then see",
  WAIT,
  async () => {
    const p = await Peer.start(
      guest(`
    mov $0x1111, %rax
  bp: int3
    cmp $0x5555, %rax
    mov $1, %al
    je 1f
    mov $2, %al
  1: out %al, $0xf4`),
    );
    try {
      assert.equal((await p.command(ID.CONTROL_EVENTS, controlEvents(0, EV.BREAKPOINT))).err, 0);
      await go(p);
      const bp = await p.nextEvent();
      assert.equal(bp.event, EV.BREAKPOINT);
      assert.equal(bp.regs.readBigUInt64LE(REG.rax), 0x1111n, "the event's registers: the guest's");
      const set = Buffer.from(bp.regs);
      set.writeBigUInt64LE(0x5555n, REG.rax);
      set.writeBigUInt64LE(bp.regs.readBigUInt64LE(REG.rip) + 1n, REG.rip);
      assert.equal((await p.command(ID.SET_REGISTERS, Buffer.concat([vcpuHdr(0), set]))).err, 0);
      const regs = await p.command(ID.GET_REGISTERS, Buffer.concat([vcpuHdr(0), Buffer.alloc(8)]));
      assert.equal(regs.data.readBigUInt64LE(8 + REG.rax), 0x5555n, "GET_REGISTERS after SET_REGISTERS");
      // A PAUSE_VCPU while the BREAKPOINT event waits: its event comes in the same stop, after the reply.
      assert.equal((await p.command(ID.PAUSE_VCPU, pausePayload(0, 0))).err, 0);
      p.reply(bp, 1);
      const pause = await p.nextEvent();
      assert.equal(pause.event, EV.PAUSE_VCPU);
      assert.equal(pause.regs.readBigUInt64LE(REG.rax), 0x5555n, "the next event's registers");
      assert.equal(pause.regs.readBigUInt64LE(REG.rip), bp.regs.readBigUInt64LE(REG.rip) + 1n);
      p.reply(pause, 0);
    } finally {
      assert.equal(await p.end(), exitStatus(1), p.stderr);
    }
  },
);

test(
  "READ_PHYSICAL sees a page the guest filled; WRITE_PHYSICAL changes what the guest then prints",
  WAIT,
  async () => {
    const p = await Peer.start(
      guest(`
    lea msg(%rip), %rsi
  1: movb (%rsi), %al
    test %al, %al
    jz 2f
    out %al, $0xe9
    inc %rsi
    jmp 1b
  2: mov $1, %al
    out %al, $0xf4
  msg: .asciz "original text\\n"`),
    );
    try {
      // Find the message in the page the code is in, then overwrite it.
      const page = await p.command(ID.READ_PHYSICAL, Buffer.concat([u64(0x100000n), u64(4096n)]));
      assert.equal(page.err, 0);
      const at = page.data.indexOf("original text\n");
      assert.ok(at > 0, "the guest's bytes");
      const text = Buffer.from("the tool says hi\n\0");
      assert.equal(
        (
          await p.command(
            ID.WRITE_PHYSICAL,
            Buffer.concat([u64(BigInt(0x100000 + at)), u64(BigInt(text.length)), text]),
          )
        ).err,
        0,
      );
      await go(p);
    } finally {
      assert.equal(await p.end(), exitStatus(1), p.stderr);
      assert.equal(p.stdout, "the tool says hi\n");
    }
  },
);

test(
  "VCPU_TRANSLATE_GVA and VMTOOL_TRANSLATE_EXPLAINED through a mapping the guest made (VA 0x40000000 -> GPA 0x301000); VMTOOL_GET_RAM_MAPPING's fd is the guest's RAM",
  WAIT,
  async () => {
    // vmtool's long-mode tables: PML4 at 0x98000, PDPT at 0x99000. The guest points PDPT[1] (1..2 GiB) at a PD
    // of its own (0x302000) -> PT (0x303000) -> page 0x301000, and writes a marker through the new address.
    const p = await Peer.start(
      guest(`
    movq $0x303003, 0x302000
    movq $0x301003, 0x303000
    movq $0x304003, 0x303010
    movq $0x302003, 0x99008
    mov %cr3, %rax
    mov %rax, %cr3
    movabs $0x40000000, %rdi
    movl $0x5a5a1234, 0x80(%rdi)
    mov $2, %al
  3: pause
    cmpl $2, ${FLAG}
    jne 3b
    out %al, $0xf4`),
    );
    try {
      await go(p); // the guest maps and writes, then waits for the flag to be 2
      let data = 0;
      for (let i = 0; i < 200 && data !== 0x5a5a1234; i++) {
        const r = await p.command(ID.READ_PHYSICAL, Buffer.concat([u64(0x301080n), u64(4n)]));
        data = r.data.readUInt32LE(0);
        if (data !== 0x5a5a1234) await new Promise((res) => setTimeout(res, 20));
      }
      assert.equal(data, 0x5a5a1234, "the write through VA 0x40000080 landed in GPA 0x301080");
      const t = await p.command(ID.VCPU_TRANSLATE_GVA, Buffer.concat([vcpuHdr(0), u64(0x40000123n)]));
      assert.equal(t.err, 0);
      assert.equal(t.data.readBigUInt64LE(0), 0x301123n);
      const unmapped = await p.command(
        ID.VCPU_TRANSLATE_GVA,
        Buffer.concat([vcpuHdr(0), u64(0x7fff_0000_0000n)]),
      );
      assert.equal(unmapped.data.readBigUInt64LE(0), 0xffff_ffff_ffff_ffffn, "~0 for an unmapped address");

      // The walk level by level: each entry's address follows from the one above, and its value is what
      // READ_PHYSICAL reads there.
      const readU64 = async (gpa: bigint) =>
        (await p.command(ID.READ_PHYSICAL, Buffer.concat([u64(gpa), u64(8n)]))).data.readBigUInt64LE(0);
      const explain = async (gva: bigint) => {
        const r = await p.command(ID.VMTOOL_TRANSLATE_EXPLAINED, Buffer.concat([vcpuHdr(0), u64(gva)]));
        assert.equal(r.err, 0);
        const levels = r.data.readUInt32LE(4);
        assert.equal(r.data.length, 24 + 24 * levels);
        return {
          mode: r.data.readUInt32LE(0),
          gpa: r.data.readBigUInt64LE(8),
          stop: r.data.readUInt32LE(16),
          entries: Array.from({ length: levels }, (_, i) => ({
            kind: r.data.readUInt32LE(24 + 24 * i),
            at: r.data.readBigUInt64LE(24 + 24 * i + 8),
            value: r.data.readBigUInt64LE(24 + 24 * i + 16),
          })),
        };
      };
      const w = await explain(0x40000123n);
      assert.deepEqual([w.mode, w.gpa, w.stop], [3, 0x301123n, 0], "4-level paging, translated");
      assert.deepEqual(
        w.entries.map((e) => [e.kind, e.at]),
        [
          [4, 0x98000n],
          [3, 0x99008n],
          [2, 0x302000n],
          [1, 0x303000n],
        ],
      );
      for (const e of w.entries) assert.equal(e.value, await readU64(e.at), `the entry at ${e.at}`);
      assert.equal(w.entries[3].value & ~0xfffn, 0x301000n);

      // A page the guest mapped and never touched: translated without setting its PTE's Accessed bit
      // (KVM_TRANSLATE sets it), so the guest's own view of its page tables is unchanged.
      const untouched = await explain(0x40002010n);
      assert.deepEqual([untouched.gpa, untouched.stop], [0x304010n, 0]);
      assert.equal(await readU64(0x303010n), 0x304003n, "no Accessed bit set by the walk");
      const plain = await p.command(ID.VCPU_TRANSLATE_GVA, Buffer.concat([vcpuHdr(0), u64(0x40002010n)]));
      assert.equal(plain.data.readBigUInt64LE(0), 0x304010n);
      assert.equal(await readU64(0x303010n), 0x304003n, "nor by VCPU_TRANSLATE_GVA");

      // Not present at the PTE: stop 1 after four levels; non-canonical: stop 3 with no level read.
      const absent = await explain(0x40001000n);
      assert.deepEqual([absent.stop, absent.entries.length, absent.gpa], [1, 4, 0xffff_ffff_ffff_ffffn]);
      assert.equal((await explain(0x0000_8000_0000_0000n)).stop, 3);

      // The RAM mapping: the fd of this pid holds the guest's RAM at offset = GPA.
      const m = await p.command(ID.VMTOOL_GET_RAM_MAPPING);
      assert.equal(m.err, 0);
      assert.deepEqual(
        [m.data.readUInt32LE(0), m.data.readBigUInt64LE(8), m.data.readBigUInt64LE(16)],
        [p.child.pid, BigInt(64 << 20), 0n],
      );
      const fd = openSync(`/proc/${p.child.pid}/fd/${m.data.readInt32LE(4)}`, "r");
      try {
        const page = Buffer.alloc(4096);
        readSync(fd, page, 0, 4096, 0x301000);
        const rp = await p.command(ID.READ_PHYSICAL, Buffer.concat([u64(0x301000n), u64(4096n)]));
        assert.ok(page.equals(rp.data), "the mapping's page is READ_PHYSICAL's page");
        assert.equal(page.readUInt32LE(0x80), 0x5a5a1234);
      } finally {
        closeSync(fd);
      }
      await p.command(ID.WRITE_PHYSICAL, Buffer.concat([u64(BigInt(FLAG)), u64(4n), u8s(2, 0, 0, 0)]));
    } finally {
      assert.equal(await p.end(), exitStatus(2), p.stderr);
    }
  },
);

test("SINGLESTEP events count a loop's instructions exactly", WAIT, async () => {
  const p = await Peer.start(
    guest(`
  start: mov $5, %ecx
  1: dec %ecx
    jnz 1b
  done: mov $3, %al
    out %al, $0xf4`),
  );
  try {
    p.send(ID.PAUSE_VCPU, pausePayload(0, 0));
    const pause = await p.nextEvent();
    assert.equal(pause.event, EV.PAUSE_VCPU);
    assert.equal((await p.command(ID.CONTROL_EVENTS, controlEvents(0, EV.SINGLESTEP))).err, 0);
    assert.equal(
      (await p.command(ID.VCPU_CONTROL_SINGLESTEP, Buffer.concat([vcpuHdr(0), u8s(1, 0, 0, 0, 0, 0, 0, 0)])))
        .err,
      0,
    );
    await go(p);
    p.reply(pause, 0);
    // The wait loop's last turn, then `start`: record RIPs until `done` is reached.
    const rips: bigint[] = [];
    for (;;) {
      const e = await p.nextEvent();
      assert.equal(e.event, EV.SINGLESTEP);
      assert.equal(e.data[0], 0, "not failed");
      rips.push(e.regs.readBigUInt64LE(REG.rip));
      // Stop stepping when RIP is at `done` (mov $3, %al = b0 03), read from guest memory.
      const at = e.regs.readBigUInt64LE(REG.rip);
      const code = await p.command(ID.READ_PHYSICAL, Buffer.concat([u64(at), u64(2n)]));
      if (code.data[0] === 0xb0 && code.data[1] === 0x03) {
        await p.command(ID.VCPU_CONTROL_SINGLESTEP, Buffer.concat([vcpuHdr(0), Buffer.alloc(8)]));
        p.reply(e, 0);
        break;
      }
      p.reply(e, 0);
    }
    // From `start` (its address is the step after the `je` falls through) to `done`: mov, then 5 x (dec, jnz).
    const startIdx = rips.findIndex((r, i) => i > 0 && r - rips[i - 1] === 2n && rips[i + 1] - r === 5n);
    assert.ok(startIdx >= 0, `the loop's start in ${rips.map((r) => r.toString(16)).join(" ")}`);
    assert.equal(rips.length - 1 - startIdx, 11, "11 instructions from start to done");
  } finally {
    assert.equal(await p.end(), exitStatus(3), p.stderr);
  }
});

test(
  "each SINGLESTEP event carries the registers after its instruction, across a port write (the step that ends with an immediate exit)",
  WAIT,
  async () => {
    const p = await Peer.start(
      guest(`
    mov $0x1234, %ebx
  port: out %al, $0x80
    mov $0x5678, %ebx
  done: mov $3, %al
    out %al, $0xf4`),
    );
    try {
      p.send(ID.PAUSE_VCPU, pausePayload(0, 0));
      const pause = await p.nextEvent();
      assert.equal((await p.command(ID.CONTROL_EVENTS, controlEvents(0, EV.SINGLESTEP))).err, 0);
      const step = (on: number) =>
        p.command(ID.VCPU_CONTROL_SINGLESTEP, Buffer.concat([vcpuHdr(0), u8s(on, 0, 0, 0, 0, 0, 0, 0)]));
      assert.equal((await step(1)).err, 0);
      await go(p);
      p.reply(pause, 0);
      const seen: { rip: bigint; rbx: bigint }[] = [];
      for (;;) {
        const e = await p.nextEvent();
        assert.equal(e.event, EV.SINGLESTEP);
        const rip = e.regs.readBigUInt64LE(REG.rip);
        seen.push({ rip, rbx: e.regs.readBigUInt64LE(REG.rbx) & 0xffffffffn });
        const code = await p.command(ID.READ_PHYSICAL, Buffer.concat([u64(rip), u64(2n)]));
        if (code.data[0] === 0xb0 && code.data[1] === 0x03) {
          await step(0);
          p.reply(e, 0);
          break;
        }
        p.reply(e, 0);
      }
      const at = seen.findIndex((s) => s.rbx === 0x1234n);
      assert.ok(
        at >= 0 && at + 2 < seen.length,
        JSON.stringify(seen, (_, v: unknown) => String(v)),
      );
      const port = seen[at].rip;
      assert.deepEqual(seen.slice(at, at + 3), [
        { rip: port, rbx: 0x1234n }, // at the OUT
        { rip: port + 2n, rbx: 0x1234n }, // past it: the step ended with the immediate exit after the port exit
        { rip: port + 7n, rbx: 0x5678n }, // at done
      ]);
    } finally {
      assert.equal(await p.end(), exitStatus(3), p.stderr);
    }
  },
);

test(
  "SINGLESTEP events come only while CONTROL_EVENTS enables them (kvmi-v7), and enabling them on a running vCPU that is set to step starts its steps",
  WAIT,
  async () => {
    const p = await Peer.start(
      guest(`
    mov $100, %ecx
  1: dec %ecx
    jnz 1b
    movl $1, 0x2010
  spin: pause
    cmpl $0, 0x2008
    je spin
    mov $4, %al
    out %al, $0xf4`),
    );
    const step = (on: number) =>
      p.command(ID.VCPU_CONTROL_SINGLESTEP, Buffer.concat([vcpuHdr(0), u8s(on, 0, 0, 0, 0, 0, 0, 0)]));
    const word = async (gpa: bigint) =>
      (await p.command(ID.READ_PHYSICAL, Buffer.concat([u64(gpa), u64(4n)]))).data.readUInt32LE(0);
    try {
      // Stepping on, SINGLESTEP events off: the guest runs its loop with no event (the kernel sends none).
      p.send(ID.PAUSE_VCPU, pausePayload(0, 0));
      const pause = await p.nextEvent();
      assert.equal(pause.event, EV.PAUSE_VCPU);
      assert.equal((await step(1)).err, 0);
      await go(p);
      p.reply(pause, 0);
      while ((await word(0x2010n)) === 0)
        assert.equal(p.queuedEvents, 0, "no SINGLESTEP event while the event is not enabled");
      assert.equal(p.queuedEvents, 0);
      // The event enabled while the vCPU spins: it is stepped from there on.
      assert.equal((await p.command(ID.CONTROL_EVENTS, controlEvents(0, EV.SINGLESTEP))).err, 0);
      const e = await p.nextEvent();
      assert.equal(e.event, EV.SINGLESTEP);
      const rip = e.regs.readBigUInt64LE(REG.rip);
      const again = (p.reply(e, 0), await p.nextEvent());
      assert.equal(again.event, EV.SINGLESTEP);
      assert.notEqual(again.regs.readBigUInt64LE(REG.rip), rip, "one instruction further");
      // Disabled again while it waits in that event: no more steps; the guest ends when told.
      assert.equal((await p.command(ID.CONTROL_EVENTS, controlEvents(0, EV.SINGLESTEP, 0))).err, 0);
      p.reply(again, 0);
      await go(p, 0x2008);
      assert.equal(await p.exit, exitStatus(4), p.stderr);
      assert.equal(p.queuedEvents, 0, "no SINGLESTEP event once disabled");
    } finally {
      await p.end();
    }
  },
);

test("an MSR event for WRMSR(STAR): the reply's new_val is what the guest writes", WAIT, async () => {
  const p = await Peer.start(
    guest(`
    mov $0xc0000081, %ecx
    mov $0x1111, %eax
    xor %edx, %edx
    wrmsr
    xor %eax, %eax
    rdmsr
    cmp $0x2222, %eax
    mov $1, %al
    je 1f
    mov $2, %al
  1: out %al, $0xf4`),
  );
  try {
    assert.equal((await p.command(ID.CONTROL_EVENTS, controlEvents(0, EV.MSR))).err, 0);
    assert.equal(
      (await p.command(ID.CONTROL_MSR, Buffer.concat([vcpuHdr(0), u8s(1, 0, 0, 0, 0x81, 0, 0, 0xc0)]))).err,
      0,
    );
    await go(p);
    const e = await p.nextEvent();
    assert.equal(e.event, EV.MSR);
    assert.equal(e.data.readUInt32LE(0), 0xc0000081);
    assert.equal(e.data.readBigUInt64LE(16), 0x1111n, "new_value");
    p.reply(e, 0, u64(0x2222n));
  } finally {
    assert.equal(await p.end(), exitStatus(1), p.stderr);
  }
});

test(
  "a PF event for a write to a page made r-x; RETRY after making it rwx lets the write land",
  WAIT,
  async () => {
    const p = await Peer.start(
      guest(`
    movl $0xabcd1234, 0x300010
    mov 0x300010, %eax
    cmp $0xabcd1234, %eax
    mov $1, %al
    je 1f
    mov $2, %al
  1: out %al, $0xf4`),
    );
    const access = (gpa: bigint, a: number) =>
      p.command(
        ID.SET_PAGE_ACCESS,
        Buffer.concat([u8s(0, 0, 1, 0, 0, 0, 0, 0), u64(gpa), u8s(a, 0, 0, 0, 0, 0, 0, 0)]),
      );
    try {
      assert.equal((await p.command(ID.CONTROL_EVENTS, controlEvents(0, EV.PF))).err, 0);
      assert.equal((await access(0x300000n, 5)).err, 0);
      assert.equal((await access(0x300000n, 3)).err, -95, "execute restrictions are not possible");
      await go(p);
      const e = await p.nextEvent();
      assert.equal(e.event, EV.PF);
      assert.equal(e.data.readBigUInt64LE(8), 0x300010n, "gpa");
      assert.equal(e.data[16], 2, "a write");
      assert.equal(
        (await p.command(ID.READ_PHYSICAL, Buffer.concat([u64(0x300010n), u64(4n)]))).data.readUInt32LE(0),
        0,
      );
      assert.equal((await access(0x300000n, 7)).err, 0);
      p.reply(e, 1, Buffer.alloc(272));
    } finally {
      assert.equal(await p.end(), exitStatus(1), p.stderr);
    }
  },
);

test(
  "INJECT_EXCEPTION: a TRAP event says what is injected; the guest's handler then runs",
  WAIT,
  async () => {
    const p = await Peer.start(
      guest(`
    lea ud(%rip), %rax
    mov $0x200000 + 6*16, %rdi
    mov %ax, (%rdi)
    movw $0x18, 2(%rdi)
    movw $0x8e00, 4(%rdi)
    shr $16, %rax
    mov %ax, 6(%rdi)
    shr $16, %rax
    mov %eax, 8(%rdi)
    movl $0, 12(%rdi)
    lidt idtr(%rip)
    movl $2, ${FLAG}
  spin: jmp spin
  ud: mov $0x66, %al
    out %al, $0xf4
  idtr: .word 0xfff
    .quad 0x200000`),
    );
    try {
      await go(p); // the guest sets up its IDT and spins (FLAG = 2)
      for (let i = 0; i < 200; i++) {
        const r = await p.command(ID.READ_PHYSICAL, Buffer.concat([u64(BigInt(FLAG)), u64(4n)]));
        if (r.data.readUInt32LE(0) === 2) break;
        await new Promise((res) => setTimeout(res, 20));
      }
      p.send(ID.PAUSE_VCPU, pausePayload(0));
      const pause = await p.nextEvent();
      const inj = await p.command(
        ID.INJECT_EXCEPTION,
        Buffer.concat([vcpuHdr(0), u8s(6, 0, 0, 0, 0, 0, 0, 0), u64(0n)]),
      );
      assert.equal(inj.err, 0);
      p.reply(pause, 0);
      const trap = await p.nextEvent();
      assert.equal(trap.event, EV.TRAP);
      assert.equal(trap.data[0], 6, "vector #UD");
      p.reply(trap, 0);
    } finally {
      assert.equal(await p.end(), exitStatus(0x66), p.stderr);
    }
  },
);

test(
  "four vCPUs that count: PAUSE_VCPU stops each one's counter, CONTINUE starts them all again",
  WAIT,
  async () => {
    guests(); // builds the SDK's images, smp-hello.elf among them
    const elf = join(GUEST_OUT, "smp-hello.elf");
    const nm = spawnSync("nm", [elf], { encoding: "utf8" });
    const sym = /^([0-9a-f]+) [bBdD] counts$/m.exec(nm.stdout);
    assert.ok(sym, `counts in nm's output of smp-hello.elf: ${nm.stderr}`);
    const counts = BigInt(`0x${sym[1]}`);
    const p = await Peer.start(["--cpus", "4", "--cmdline", "count", elf]);
    const read = async () => {
      const r = await p.command(ID.READ_PHYSICAL, Buffer.concat([u64(counts), u64(32n)]));
      assert.equal(r.err, 0);
      return [0, 1, 2, 3].map((i) => r.data.readBigUInt64LE(8 * i));
    };
    const until = async (what: string, ok: (c: bigint[]) => boolean) => {
      for (let i = 0; i < 600; i++) {
        const c = await read();
        if (ok(c)) return c;
        await new Promise((r) => setTimeout(r, 50));
      }
      throw new Error(`${what}: counters ${(await read()).join(" ")}`);
    };
    try {
      await until("all four vCPUs counting", (c) => c.every((n) => n > 0n));
      for (let v = 0; v < 4; v++) assert.equal((await p.command(ID.PAUSE_VCPU, pausePayload(v))).err, 0);
      const events: Event[] = [];
      for (let v = 0; v < 4; v++) events.push(await p.nextEvent());
      assert.deepEqual(
        events.map((e) => [e.vcpu, e.event]).sort(),
        [0, 1, 2, 3].map((v) => [v, EV.PAUSE_VCPU]),
      );
      const paused = await read();
      await new Promise((r) => setTimeout(r, 300));
      assert.deepEqual(await read(), paused, "no paused vCPU counts");
      for (const e of events) p.reply(e, 0);
      await until("every vCPU counting again", (c) => c.every((n, i) => n > paused[i]));
    } finally {
      p.child.kill("SIGTERM");
      assert.equal(await p.end(), 143, p.stderr);
    }
  },
);
