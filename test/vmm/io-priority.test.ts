// The I/O worker's scheduling weight: it lowers its own nice value (where the process may), so that when an
// ioeventfd wakes it on the CPU of the vCPU that notified, it preempts that vCPU at once instead of waiting for
// the vCPU's time slice to end. Only that thread changes: the main thread and the vCPU thread keep theirs.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { runMachine } from "../../src/vmm/machine.js";
import { planVirtio } from "../../src/devices/virtio/placement.js";
import { CTL, VcpuState } from "../../src/vm/vcpu-control.js";
import * as libc from "../../src/kvm/libc.js";
import { assembleBytes } from "../vm/asm.js";

const SPIN = assembleBytes(".code64\n1: jmp 1b", 0x100000, 64);

/** Nice value of each thread of this process (field 19 of /proc/self/task/TID/stat). */
function threadNices(): Map<number, number> {
  const out = new Map<number, number>();
  for (const tid of readdirSync("/proc/self/task")) {
    try {
      const stat = readFileSync(`/proc/self/task/${tid}/stat`, "latin1");
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      out.set(Number(tid), Number(fields[16]));
    } catch {
      // the thread ended meanwhile
    }
  }
  return out;
}

/** Whether this process may lower a thread's nice value (root, CAP_SYS_NICE or RLIMIT_NICE). */
function mayLowerNice(): boolean {
  // Try on a short-lived worker-free probe: this thread, then put it back.
  if (!libc.setThreadNice(0, -1)) return false;
  libc.setThreadNice(0, 0);
  return true;
}

test("the I/O worker runs with a lower nice value than the vCPU and main threads", async (t) => {
  if (!mayLowerNice()) return t.skip("this process may not lower a nice value (no CAP_SYS_NICE)");
  let seen: { nices: Map<number, number>; vcpuTid: number } | undefined;
  const r = await runMachine({
    memSize: 16 << 20,
    stdin: false,
    virtio: planVirtio({ rng: true }),
    load: (mem) => {
      mem.write(0x100000, SPIN);
      return { mode: "long", entry: 0x100000 };
    },
    onStart: ({ control }) => {
      void (async () => {
        await control.waitFor((s) => s === VcpuState.RUNNING);
        const vcpuTid = Atomics.load(control.ctl, CTL.TID);
        // The I/O worker starts with the machine (virtio devices); wait until its thread has set its nice.
        for (let i = 0; i < 500 && !seen; i++) {
          const nices = threadNices();
          if ([...nices.values()].some((n) => n < 0)) seen = { nices, vcpuTid };
          else await new Promise((res) => setTimeout(res, 10));
        }
        control.stop();
      })();
    },
  });
  assert.equal(r.end.kind, "stopped", r.end.reason);
  assert.ok(seen, "a thread with a lowered nice value appeared");
  const lowered = [...seen.nices].filter(([, n]) => n < 0);
  assert.equal(lowered.length, 1, `one thread lowered: ${JSON.stringify(lowered)}`);
  const [tid, nice] = lowered[0];
  assert.ok(nice < 0);
  assert.notEqual(tid, process.pid, "not the main thread");
  assert.notEqual(tid, seen.vcpuTid, "not the vCPU thread");
  assert.equal(seen.nices.get(seen.vcpuTid), 0, "the vCPU thread keeps the default");
  assert.equal(seen.nices.get(process.pid), 0, "the main thread keeps the default");
});
