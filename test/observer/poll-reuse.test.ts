// What the KVM-tree source keeps between polls, so that a poll of many idle vCPUs stays cheap, must never hide
// a change: a thread that ran is read again, a VM folder taken over by another VM (same pid and fd) is listed
// anew, a vCPU that a young VM adds is seen at the next poll. A fake tree (KVM's debugfs layout and /proc
// files) lets the test change each thing on its own.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { KvmSource } from "../../src/observer/kvm-tree.js";

const PID = 4242;

/** /proc/PID/task/TID/stat with this state and last CPU (field 39), and schedstat with this on-CPU time. */
function thread(proc: string, tid: number, o: { cpu: number; state?: string; ns: number }): void {
  const dir = join(proc, String(PID), "task", String(tid));
  mkdirSync(dir, { recursive: true });
  // Fields 3.. after "(comm)": state, then fields 4..52; utime (14) and stime (15) 0, processor (39) = cpu.
  const f = Array.from({ length: 50 }, () => "0");
  f[0] = o.state ?? "S";
  f[39 - 3] = String(o.cpu);
  writeFileSync(join(dir, "stat"), `${tid} (vcpu thread) ${f.join(" ")}\n`);
  writeFileSync(join(dir, "schedstat"), `${o.ns} 0 1\n`);
}

function vm(root: string, tids: number[]): void {
  const dir = join(root, `${PID}-11`);
  rmSync(dir, { recursive: true, force: true });
  tids.forEach((tid, i) => {
    mkdirSync(join(dir, `vcpu${i}`), { recursive: true });
    writeFileSync(join(dir, `vcpu${i}`, "pid"), `${tid}\n`);
  });
}

const placed = (src: KvmSource) =>
  (src.poll().vms ?? []).flatMap((v) => v.vcpus.map((c) => `${c.index}:${c.tid}@${c.cpu}${c.state}`));

test("a KVM tree polled again: idle threads kept, a thread that ran read again, a new vCPU and a new VM in the same folder seen at once", (t) => {
  const dir = mkdtempSync(join(tmpdir(), "vmtool-poll-reuse-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const root = join(dir, "kvm");
  const proc = join(dir, "proc");
  mkdirSync(root);
  thread(proc, 100, { cpu: 1, ns: 5000 });
  vm(root, [100]);
  const src = new KvmSource(root, proc);
  t.after(() => src.close());
  assert.deepEqual(placed(src), ["0:100@1S"]);

  // Not run since (same on-CPU time): its last CPU cannot have changed, whatever stat would say now.
  thread(proc, 100, { cpu: 0, ns: 5000 });
  assert.deepEqual(placed(src), ["0:100@1S"]);
  // It ran: stat is read again.
  thread(proc, 100, { cpu: 0, ns: 9000 });
  assert.deepEqual(placed(src), ["0:100@0S"]);
  // Running at a poll: read at the next one even if its time has not moved yet.
  thread(proc, 100, { cpu: 1, state: "R", ns: 12000 });
  assert.deepEqual(placed(src), ["0:100@1R"]);
  thread(proc, 100, { cpu: 0, state: "S", ns: 12000 });
  assert.deepEqual(placed(src), ["0:100@0S"]);

  // The VM creates a second vCPU: seen at the next poll.
  thread(proc, 101, { cpu: 1, ns: 1 });
  mkdirSync(join(root, `${PID}-11`, "vcpu1"));
  writeFileSync(join(root, `${PID}-11`, "vcpu1", "pid"), "101\n");
  assert.deepEqual(placed(src), ["0:100@0S", "1:101@1S"]);

  // The VM ends and the process makes another on the same fd number, with other threads: nothing of the old
  // one is kept (its thread ids, its folder listing).
  thread(proc, 200, { cpu: 1, ns: 7 });
  thread(proc, 201, { cpu: 0, ns: 8 });
  thread(proc, 202, { cpu: 1, ns: 9 });
  vm(root, [200, 201, 202]);
  assert.deepEqual(placed(src), ["0:200@1S", "1:201@0S", "2:202@1S"]);
});
