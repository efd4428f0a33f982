// The VM-control core on real KVM guests (long mode, assembled here): stop and resume, registers, exact single
// steps (also over OUT and MMIO), hardware and software breakpoints, MSR-write interception with the value
// replaced, write protection of a page, exception injection, a fault that parks the vCPU. Backend-specific
// methods (kvm_pvm's emulation-failure breakpoints) are the core's choice; the tests hold on both backends.
import { test } from "node:test";
import assert from "node:assert/strict";
import { runMachine, type RunningMachine } from "../../src/vmm/machine.js";
import { VmControl, ResumeAction, StopKind, type StopInfo } from "../../src/debug/vm-control.js";
import { assembleBytes, idt64 } from "../vm/asm.js";

const BASE = 0x100000;

/**
 * Run `source` (64-bit code at 1 MiB) under a VmControl given to `drive`, which does the test's work and
 * returns; the guest is then detached and must end by itself (through the exit port or a halt).
 */
async function withControl(
  source: string,
  drive: (c: VmControl) => Promise<void>,
  opts: { cpus?: number } = {},
) {
  const code = assembleBytes(`.code64\n${source}`, BASE, 64);
  let control: VmControl | undefined;
  let failure: Error | undefined;
  let finished!: Promise<void>;
  const result = await runMachine({
    memSize: 16 << 20,
    cpus: opts.cpus ?? 1,
    stdin: false,
    signals: false,
    load: (mem) => {
      mem.write(BASE, code);
      return { mode: "long", entry: BASE };
    },
    onStart: (m: RunningMachine) => {
      const c = new VmControl(m);
      control = c;
      finished = drive(c)
        .catch((e: unknown) => {
          failure = e instanceof Error ? e : new Error(String(e));
          for (const v of m.vcpus) v.control.stop();
        })
        .finally(() => c.detach());
    },
    onPaused: (m) =>
      control?.onPaused(
        m.vcpus.findIndex((v) => v.control === m.control),
        m.stopKind ?? 0,
      ),
  });
  await finished;
  if (failure) throw failure;
  return result;
}

/** The next stop, which must be of `kind`. */
async function expectStop(c: VmControl, kind: number): Promise<StopInfo> {
  const s = await c.nextStop();
  assert.ok(s, "a stop");
  assert.equal(s.kind, kind, `stop kind ${s.kind}, expected ${kind}`);
  return s;
}

test("pause a spinning vCPU, read and write its registers, resume it: the guest goes on from the new values", async () => {
  const r = await withControl(
    `
    xor %rbx, %rbx
    mov $0x1000000000, %rdx
  1: inc %rbx
    cmp %rdx, %rbx
    jb 1b
    mov $7, %al
    out %al, $0xf4`,
    async (c) => {
      await c.pause();
      const regs = await c.regs(0);
      assert.ok(regs.rip >= BigInt(BASE) && regs.rip < BigInt(BASE + 32), `rip 0x${regs.rip.toString(16)}`);
      const s = await c.sregs(0);
      assert.equal(s.efer & 0x400n, 0x400n, "long mode active");
      // Into the loop (after xor (3 bytes) and mov $imm64 (10)), nearly done: it ends soon after resuming.
      await c.setRegs(0, { rbx: 0xfffffff00n, rdx: 0x1000000000n, rip: BigInt(BASE + 13) });
      assert.equal((await c.regs(0)).rbx, 0xfffffff00n);
      c.resume();
    },
  );
  assert.deepEqual([r.end.kind, r.end.kind === "exit-port" && r.end.value], ["exit-port", 7]);
});

test("a hardware breakpoint stops before the instruction; steps are exact, also over OUT and an MMIO write", async () => {
  // Labels' addresses are computed from the code (assembled at BASE): the test reads them from RIP.
  const r = await withControl(
    `
    nop
  bp: mov $1, %eax
    out %al, $0x80
    mov $2, %eax
    mov $0xd0001000, %edi
    movl $0x55, (%rdi)
    mov $3, %eax
    mov $4, %eax
    mov $1, %al
    out %al, $0xf4`,
    async (c) => {
      await c.pause();
      c.setHwBreakpoint(0, BigInt(BASE + 1)); // "bp": after the one-byte nop
      c.resume();
      const hit = await expectStop(c, StopKind.HW_BREAKPOINT);
      assert.equal(hit.addr, BigInt(BASE + 1));
      assert.equal((await c.regs(0)).rip, BigInt(BASE + 1));
      c.clearHwBreakpoint(0);
      // mov $1,%eax (5 bytes) / out %al,$0x80 (2) / mov $2,%eax (5) / mov $..,%edi (5) / movl $0x55,(%rdi) (6)
      // / mov $3,%eax (5)
      const rips: bigint[] = [];
      const eaxs: bigint[] = [];
      for (let i = 0; i < 6; i++) {
        c.step(0);
        await expectStop(c, StopKind.SINGLESTEP);
        const regs = await c.regs(0);
        rips.push(regs.rip - BigInt(BASE));
        eaxs.push(regs.rax & 0xffn);
      }
      assert.deepEqual(rips, [6n, 8n, 13n, 18n, 24n, 29n], "one instruction per step, none run unseen");
      assert.deepEqual(eaxs, [1n, 1n, 2n, 2n, 2n, 3n]);
      c.resume();
    },
  );
  assert.deepEqual([r.end.kind, r.end.kind === "exit-port" && r.end.value], ["exit-port", 1]);
});

test("a software breakpoint in a loop: hit three times, the planted byte hidden from reads, stepped over", async () => {
  const r = await withControl(
    `
    xor %ecx, %ecx
  1: inc %ecx
    nop
    cmp $3, %ecx
    jne 1b
    mov %cl, %al
    out %al, $0xf4`,
    async (c) => {
      await c.pause();
      const at = BigInt(BASE + 4); // the nop, after xor %ecx,%ecx (2) and inc %ecx (2)
      const before = c.readPhys(BASE + 4, 1)[0];
      await c.addSwBreakpoint(at);
      assert.equal(c.readPhys(BASE + 4, 1)[0], before, "reads show the guest's byte");
      assert.notEqual(c.memory.read(BASE + 4, 1)[0], before, "RAM holds the planted byte");
      c.resume();
      for (let i = 1; i <= 3; i++) {
        const s = await expectStop(c, StopKind.SW_BREAKPOINT);
        assert.equal(s.addr, at);
        const regs = await c.regs(0);
        assert.equal(regs.rcx & 0xffn, BigInt(i), `hit ${i}`);
        assert.equal(regs.rip, at);
        await c.stepOverBreakpoint(0);
        c.resume();
      }
    },
  );
  assert.deepEqual([r.end.kind, r.end.kind === "exit-port" && r.end.value], ["exit-port", 3]);
});

test("an intercepted WRMSR stops the vCPU; the value it writes is the one the core gives", async () => {
  // MSR_STAR (0xc0000081): the guest writes 0x1111, reads it back and reports whether it got 0x2222.
  const r = await withControl(
    `
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
  1: out %al, $0xf4`,
    async (c) => {
      await c.pause();
      c.interceptMsr(0xc0000081, { write: true });
      c.resume();
      const s = await expectStop(c, StopKind.MSR_WRITE);
      assert.equal(s.code, 0xc0000081);
      assert.equal(s.value, 0x1111n);
      c.resume(0, ResumeAction.SET_VALUE, 0x2222n);
    },
  );
  assert.deepEqual([r.end.kind, r.end.kind === "exit-port" && r.end.value], ["exit-port", 1]);
});

test("onStop: each stop handed to the listener as the vCPU reports it, answered from there; nextStop() waits still take theirs first", async () => {
  // Three WRMSRs of MSR_STAR: the first goes to a nextStop() wait, the next two to the listener, which answers
  // each on the spot with a value of its own; the guest reads back the last one. It starts once the word at
  // 0x2000 is set (after the interception).
  const r = await withControl(
    `
  wait: cmpl $0, 0x2000
    je wait
    mov $0xc0000081, %ecx
    xor %edx, %edx
    mov $1, %eax
    wrmsr
    mov $2, %eax
    wrmsr
    mov $3, %eax
    wrmsr
    xor %eax, %eax
    rdmsr
    cmp $0x33, %eax
    mov $1, %al
    je 1f
    mov $2, %al
  1: out %al, $0xf4`,
    async (c) => {
      c.interceptMsr(0xc0000081, { write: true });
      const first = c.nextStop();
      const seen: bigint[] = [];
      let done!: () => void;
      const both = new Promise<void>((resolve) => (done = resolve));
      c.writePhys(0x2000, Uint8Array.of(1));
      const s = await first;
      assert.equal(s?.value, 1n, "the first WRMSR went to the nextStop() wait");
      c.onStop((stop) => {
        seen.push(stop.value);
        c.resume(stop.vcpu, ResumeAction.SET_VALUE, stop.value * 0x11n);
        if (seen.length === 2) done();
      });
      c.resume(0, ResumeAction.SET_VALUE, 0x11n);
      await both;
      assert.deepEqual(seen, [2n, 3n]);
      assert.equal(c.pendingStops, 0, "nothing queued while the listener is set");
    },
  );
  assert.deepEqual([r.end.kind, r.end.kind === "exit-port" && r.end.value], ["exit-port", 1]);
});

test("a write to a write-protected page stops before it happens; going on does the write", async () => {
  const r = await withControl(
    `
    movl $0xabcd1234, 0x300010
    mov 0x300010, %eax
    cmp $0xabcd1234, %eax
    mov $1, %al
    je 1f
    mov $2, %al
  1: out %al, $0xf4`,
    async (c) => {
      await c.pause();
      await c.protectPages(0x300000, 4096, "r");
      c.resume();
      const s = await expectStop(c, StopKind.PAGE_WRITE);
      assert.equal(s.addr, 0x300010n);
      assert.equal(s.len, 4);
      assert.deepEqual([...s.data], [0x34, 0x12, 0xcd, 0xab]);
      assert.deepEqual([...c.readPhys(0x300010, 4)], [0, 0, 0, 0], "not written yet");
      await c.protectPages(0x300000, 4096, "rw");
      c.resume();
    },
  );
  assert.deepEqual([r.end.kind, r.end.kind === "exit-port" && r.end.value], ["exit-port", 1]);
});

test("a fault parks the vCPU when asked: its state is read at the fault, then the run ends as a fault", async () => {
  const r = await withControl(
    `
    mov $0x1234, %rbx
    ud2`,
    async (c) => {
      c.stopOnFault = true;
      const s = await expectStop(c, StopKind.FAULT);
      assert.ok(s.exitReason > 0);
      assert.equal((await c.regs(0)).rbx, 0x1234n);
      c.resume(0, ResumeAction.CRASH);
    },
  );
  assert.equal(r.end.kind, "fault");
});

test("pause() right after resume() resolves with the vCPU parked, every time (it may still be on its way out of its park)", async () => {
  const r = await withControl(
    `
    mov $0x42, %ebx
  spin: jmp spin`,
    async (c) => {
      for (let i = 0; i < 2000; i++) {
        await c.pause();
        assert.ok(c.vcpus[0].parked, `round ${i}: parked`);
        await c.regs(0); // throws when the vCPU is not parked
        c.resume();
      }
      await c.pause();
      await c.setRegs(0, { rbx: 0n });
      c.vcpus[0].control.stop();
    },
  );
  assert.equal(r.end.kind, "stopped");
});

test("an injected exception runs the guest's handler (a #UD injected into a spinning guest)", async () => {
  const r = await withControl(
    `${idt64(6, "ud_handler")}
    mov $0x42, %ebx
  spin: jmp spin
  ud_handler:
    mov %bl, %al
    out %al, $0xf4`,
    async (c) => {
      // Stop it once it spins (rbx is set just before the loop).
      for (;;) {
        await c.pause();
        if ((await c.regs(0)).rbx === 0x42n) break;
        c.resume();
      }
      await c.injectException(0, 6);
      c.resume();
    },
  );
  assert.deepEqual([r.end.kind, r.end.kind === "exit-port" && r.end.value], ["exit-port", 0x42]);
});
