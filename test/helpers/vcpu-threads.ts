// What a VMM process's vCPU threads are doing, read from /proc the way vmtool's own halt detection does: a
// thread inside KVM_RUN whose scheduler state is S (asleep) is a vCPU whose guest executed HLT (with the
// in-kernel irqchip, KVM keeps HLT in the kernel) or an AP still waiting for INIT-SIPI-SIPI. Tests wait on this
// instead of sleeping "long enough" for a guest to reach its HLT.
import { readdirSync, readFileSync, readlinkSync } from "node:fs";

const SYS_IOCTL = 16; // x86-64
const KVM_RUN = 0xae80;
/** Set in the task flags of threads the kernel starts inside a process on its behalf (KVM's
 * "kvm-nx-lpage-recovery" vhost task). Such a thread was forked from a vCPU thread inside KVM_RUN and keeps
 * showing that system call in /proc/PID/task/TID/syscall forever, so it is not a vCPU. */
const PF_USER_WORKER = 0x4000;

export interface VcpuThread {
  tid: number;
  /** The scheduler state letter of /proc/PID/task/TID/stat: R running, S asleep, ... */
  state: string;
}

function readOr(path: string, otherwise: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return otherwise; // the thread or fd went away while we looked
  }
}

/** The threads of process `pid` that are inside KVM_RUN on one of its vCPU file descriptors right now. */
export function vcpuThreadsInRun(pid: number): VcpuThread[] {
  const vcpuFds = new Set<number>();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      if (readlinkSync(`/proc/${pid}/fd/${fd}`).startsWith("anon_inode:kvm-vcpu:")) vcpuFds.add(Number(fd));
    } catch {
      // closed meanwhile
    }
  }
  const out: VcpuThread[] = [];
  for (const task of readdirSync(`/proc/${pid}/task`)) {
    const dir = `/proc/${pid}/task/${task}`;
    // "nr arg0 arg1 ...", or "running" while the thread is on a CPU outside any system call.
    const sc = readOr(`${dir}/syscall`, "").trim().split(" ");
    if (Number(sc[0]) !== SYS_IOCTL || !vcpuFds.has(Number(sc[1])) || Number(sc[2]) !== KVM_RUN) continue;
    const stat = readOr(`${dir}/stat`, "");
    // The command name (field 2) is in parentheses and may hold spaces: the fields after it follow ") ".
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    if ((Number(fields[6]) & PF_USER_WORKER) !== 0) continue;
    out.push({ tid: Number(task), state: fields[0] });
  }
  return out;
}

/**
 * Resolves once `count` vCPU threads of `pid` sleep inside KVM_RUN at the same moment (their guests halted).
 * Polls every millisecond; `timeoutMs` only ends a wait for a guest that never halts, with an error naming
 * what was seen last.
 */
export async function waitForHaltedVcpus(pid: number, count = 1, timeoutMs = 60_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  let last: VcpuThread[] = [];
  for (;;) {
    try {
      last = vcpuThreadsInRun(pid);
    } catch (e) {
      throw new Error(`process ${pid} is gone while waiting for its vCPUs to halt (${(e as Error).message})`);
    }
    if (last.filter((t) => t.state === "S").length >= count) return;
    if (Date.now() > until) break;
    await new Promise((r) => setTimeout(r, 1));
  }
  throw new Error(
    `no ${count} vCPU thread(s) of pid ${pid} asleep in KVM_RUN after ${timeoutMs} ms; last seen: ` +
      (last.map((t) => `${t.tid} ${t.state}`).join(", ") || "none inside KVM_RUN"),
  );
}
