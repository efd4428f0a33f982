// The seams later issues build on, on a real vCPU thread: pause from outside, read and write the vCPU's state
// while paused, resume, stop (kick before terminating), and per-exit hooks that stop the run.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { runMachine, type RunningMachine } from "../../src/vmm/machine.js";
import { CTL, VcpuState } from "../../src/vm/vcpu-control.js";
import { assembleBytes } from "../vm/asm.js";
import type { GuestMemory } from "../../src/memory/guest-memory.js";

const SPIN = assembleBytes(`.code64\n xor %rbx, %rbx\n1: inc %rbx\n jmp 1b`, 0x100000, 64);

/** Where COUNTER keeps its count in guest RAM, so that the test sees the guest's progress without a pause. */
const COUNT_AT = 0x2000;
/** rbx counts up and is stored at COUNT_AT on every turn. */
const COUNTER = assembleBytes(
  `.code64\n xor %rbx, %rbx\n1: inc %rbx\n mov %rbx, ${COUNT_AT}\n jmp 1b`,
  0x100000,
  64,
);

/** Resolves once `ok` holds for the guest's count (read from guest RAM while the guest runs). */
async function countReaches(mem: GuestMemory, ok: (n: bigint) => boolean): Promise<bigint> {
  for (;;) {
    const n = mem.readU64(COUNT_AT);
    if (ok(n)) return n;
    await new Promise((r) => setTimeout(r, 1));
  }
}

test("pause, read and write registers while paused, resume, then stop: exit 130, no hang", async () => {
  // A value the count cannot reach by itself in this test: seeing it proves the guest went on from it.
  const WRITTEN = 1n << 40n;
  let mem: GuestMemory | undefined;
  let seen: { rip1: bigint; rbx1: bigint; rbx2: bigint; state: number } | undefined;
  const result = await runMachine({
    memSize: 16 << 20,
    stdin: false,
    load: (m) => {
      mem = m;
      m.write(0x100000, COUNTER);
      return { mode: "long", entry: 0x100000 };
    },
    onStart: ({ vcpu, control }: RunningMachine) => {
      void (async () => {
        await countReaches(mem!, (n) => n > 0n); // the guest runs
        const state = await control.pause();
        const r1 = vcpu.getRegs();
        vcpu.setRegs({ rbx: WRITTEN }); // written while paused, seen by the guest after resume
        const again = vcpu.getRegs();
        assert.equal(again.rbx, WRITTEN);
        control.resume();
        await countReaches(mem!, (n) => n > WRITTEN); // the guest went on from the written value
        await control.pause();
        const r2 = vcpu.getRegs();
        seen = { rip1: r1.rip, rbx1: r1.rbx, rbx2: r2.rbx, state };
        control.resume();
        control.stop();
      })();
    },
  });
  assert.equal(result.end.kind, "stopped");
  assert.ok(seen);
  assert.equal(seen.state, VcpuState.PAUSED);
  assert.ok(seen.rip1 >= 0x100000n && seen.rip1 < 0x100020n, `rip ${seen.rip1.toString(16)} inside the loop`);
  assert.ok(seen.rbx1 > 0n && seen.rbx1 < WRITTEN, "the guest ran before the pause");
  assert.ok(seen.rbx2 > WRITTEN, "the guest went on from the written rbx");
});

test("kicks reach a vCPU inside KVM_RUN and are counted", async () => {
  let kicks = 0;
  const result = await runMachine({
    memSize: 16 << 20,
    stdin: false,
    load: (mem) => {
      mem.write(0x100000, SPIN);
      return { mode: "long", entry: 0x100000 };
    },
    onStart: ({ control }) => {
      void (async () => {
        await control.waitFor((s) => s === VcpuState.RUNNING);
        for (let i = 0; i < 5; i++) {
          const before = Atomics.load(control.ctl, CTL.KICKS);
          control.kick();
          const t0 = Date.now();
          while (Atomics.load(control.ctl, CTL.KICKS) === before && Date.now() - t0 < 2000)
            await new Promise((r) => setTimeout(r, 1));
        }
        kicks = Atomics.load(control.ctl, CTL.KICKS);
        control.stop();
      })();
    },
  });
  assert.equal(result.end.kind, "stopped");
  assert.ok(kicks >= 5, `${kicks} kicks served`);
});

test("an exit hook loaded in the vCPU thread sees every exit and can stop the run", async () => {
  const dir = mkdtempSync(join(tmpdir(), "vmtool-hook-"));
  const hook = join(dir, "hook.mjs");
  writeFileSync(
    hook,
    `export default (ctx) => (exit) => {
       if (exit.reasonName !== "IO") return;
       const rax = ctx.vcpu.getRegs().rax;
       if (rax === 3n) { ctx.out("hook: stopping at rax=3, exit " + exit.seq); return "stop"; }
     };`,
  );
  const code = assembleBytes(`.code64\n xor %eax, %eax\n1: inc %eax\n out %al, $0x80\n jmp 1b`, 0x100000, 64);
  const result = await runMachine({
    memSize: 16 << 20,
    stdin: false,
    stats: true,
    hookModules: [pathToFileURL(hook).href],
    load: (mem) => {
      mem.write(0x100000, code);
      return { mode: "long", entry: 0x100000 };
    },
  });
  assert.equal(result.end.kind, "stopped");
  assert.match(result.end.reason, /exit hook/);
  assert.equal(result.stats?.byAddress.find((r) => r.key === "port 0x80 out")?.count, 3);
});

test("an exit hook can park the vCPU; the main thread inspects it while paused and resumes it", async () => {
  const dir = mkdtempSync(join(tmpdir(), "vmtool-hook-"));
  const hook = join(dir, "pause-hook.mjs");
  writeFileSync(
    hook,
    `export default () => (exit) => {
       if (exit.reasonName === "IO" && exit.seq === 2) return "pause";
       if (exit.reasonName === "IO" && exit.seq === 4) return "stop";
     };`,
  );
  const code = assembleBytes(`.code64\n xor %eax, %eax\n1: inc %eax\n out %al, $0x80\n jmp 1b`, 0x100000, 64);
  const pausedAt: bigint[] = [];
  const result = await runMachine({
    memSize: 16 << 20,
    stdin: false,
    hookModules: [pathToFileURL(hook).href],
    load: (mem) => {
      mem.write(0x100000, code);
      return { mode: "long", entry: 0x100000 };
    },
    onPaused: ({ vcpu, control }) => {
      pausedAt.push(vcpu.getRegs().rax);
      control.resume();
    },
  });
  assert.equal(result.end.kind, "stopped");
  assert.deepEqual(pausedAt, [2n], "paused once, after the second OUT (rax = 2)");
});
