// The machine builder and the main thread's side of a run: create the VM and its vCPU, let the caller load the
// guest, start the vCPU thread, then keep the main event loop free for the few things only it does:
//   - standard input → COM1 (a shared ring plus a kick, so the UART sees input while the guest sits in HLT);
//   - halt detection: with the in-kernel irqchip KVM keeps HLT inside the kernel, so the main thread watches
//     the vCPU thread's state in /proc/self/task/TID/stat; when it sleeps, a kick makes the vCPU thread check
//     KVM_GET_MP_STATE == HALTED, RFLAGS.IF == 0 and no pending event (docs/run.md, "Halt");
//   - Ctrl-C / SIGTERM: a clean stop (kick, then let the thread end), exit 130.
import type { Worker } from "node:worker_threads";
import { readFileSync } from "node:fs";
import { Vm } from "../vm/vm.js";
import { bootVcpu, type BootSetup } from "../vm/boot-modes.js";
import { CTL, REQ, VcpuControl, VcpuState } from "../vm/vcpu-control.js";
import { spawnVcpuThread, type VcpuThread, type VcpuThreadOptions } from "./vcpu-thread.js";
import type { GuestMemory } from "../memory/guest-memory.js";
import type { Vcpu } from "../vm/vcpu.js";
import type { StatsSummary } from "./exit-stats.js";
import type { VcpuStart, WorkerMessage } from "./worker-protocol.js";
import { ExitCode } from "../cli/exit-codes.js";

export interface MachineOptions extends VcpuThreadOptions {
  /** A vCPU thread started earlier with spawnVcpuThread (with the same trace/stats/hook options). */
  thread?: VcpuThread;
  /** Guest RAM in bytes. */
  memSize: number;
  /** Writes the guest into RAM and says how the vCPU starts (mode, entry, boot data addresses). */
  load: (mem: GuestMemory) => BootSetup;
  /** Feed the process's standard input to COM1 (default true). */
  stdin?: boolean;
  /** Called once the vCPU thread runs, with the handle to pause/kick it and the main thread's vCPU view. */
  onStart?: (machine: RunningMachine) => void;
  /** Called each time the vCPU enters the paused state (asked by pause(), or an exit hook said "pause"). */
  onPaused?: (machine: RunningMachine) => void;
}

export interface RunningMachine {
  vm: Vm;
  vcpu: Vcpu;
  control: VcpuControl;
}

export interface RunResult {
  /** vmtool's exit status: 0 halted, odd = exit port, 4 fault, 130 interrupted, 8 internal. */
  status: number;
  reason: string;
  fault: boolean;
  stats?: StatsSummary;
}

/** Halt-detection polling: start fast (a guest that halts at once ends in ~1 ms), back off while busy. */
const POLL_MIN_MS = 1;
const POLL_BUSY_MAX_MS = 20;
const POLL_HALTED_MAX_MS = 100;
/** Flush the guest's partial output line when it has made no exit for this long. */
const QUIET_FLUSH_MS = 50;

export async function runMachine(opts: MachineOptions): Promise<RunResult> {
  // The vCPU thread starts first (unless the caller started it even earlier): its start-up overlaps the
  // VM's creation here (see vcpu-thread.ts).
  const thread = opts.thread ?? spawnVcpuThread(opts);
  let vm: Vm | undefined;
  let started = false;
  try {
    vm = Vm.create({ memSize: opts.memSize });
    const vcpu = vm.createVcpu();
    bootVcpu(vcpu, vm.memory, opts.load(vm.memory));
    const control = new VcpuControl(thread.control, vcpu);
    const start: VcpuStart = { vcpu: vcpu.desc, memory: vm.memory.descriptors(), irqchip: vm.irqchip };
    thread.worker.postMessage(start);
    started = true;
    return await runVcpuThread(vm, vcpu, control, thread, opts);
  } catch (e) {
    if (!started) await thread.cancel();
    throw e;
  } finally {
    vm?.close();
  }
}

async function runVcpuThread(
  vm: Vm,
  vcpu: Vcpu,
  control: VcpuControl,
  thread: VcpuThread,
  opts: MachineOptions,
): Promise<RunResult> {
  const { worker, exited, input: queue } = thread;
  let pollDelay = POLL_MIN_MS;
  let finished = false;

  const done = new Promise<RunResult>((resolve) => {
    worker.on("message", (m: WorkerMessage) => {
      if (m.type === "done") resolve({ status: m.status, reason: m.reason, fault: m.fault, stats: m.stats });
      else if (m.type === "paused") opts.onPaused?.({ vm, vcpu, control });
    });
    worker.on("error", (e) =>
      resolve({ status: ExitCode.INTERNAL, reason: `vCPU thread failed: ${e.stack ?? e}`, fault: false }),
    );
    worker.on("exit", (code) =>
      resolve({ status: ExitCode.INTERNAL, reason: `vCPU thread ended early (code ${code})`, fault: false }),
    );
  });

  // Standard input → COM1. Bytes the ring cannot take wait here, with stdin paused, so nothing is lost.
  let held: Buffer | undefined;
  let retry: NodeJS.Timeout | undefined;
  const feed = () => {
    retry = undefined;
    if (!held || finished) return;
    const n = queue.push(held);
    held = n < held.length ? held.subarray(n) : undefined;
    if (n > 0) {
      control.request(REQ.INPUT);
      pollDelay = POLL_MIN_MS;
    }
    if (held) retry = setTimeout(feed, 5);
    else process.stdin.resume();
  };
  const onData = (chunk: Buffer) => {
    held = held ? Buffer.concat([held, chunk]) : chunk;
    process.stdin.pause();
    feed();
  };
  const useStdin = opts.stdin ?? true;
  if (useStdin) {
    process.stdin.on("data", onData);
    process.stdin.on("error", () => {});
  }

  // Halt detection and quiet-time flushes.
  let lastExits = -1;
  let quietMs = 0;
  let pollTimer: NodeJS.Timeout | undefined;
  const readStat = (p: string) => readFileSync(p, "latin1");
  const poll = () => {
    if (finished) return;
    if (control.state === VcpuState.RUNNING) {
      if (control.threadSleeping(readStat)) {
        const wakeable = Atomics.load(control.ctl, CTL.HALTED_WAKEABLE) === 1;
        control.request(REQ.HALT_CHECK);
        pollDelay = wakeable ? Math.min(pollDelay * 2, POLL_HALTED_MAX_MS) : POLL_MIN_MS;
      } else {
        const exits = Atomics.load(control.ctl, CTL.EXITS);
        quietMs = exits === lastExits ? quietMs + pollDelay : 0;
        lastExits = exits;
        if (quietMs >= QUIET_FLUSH_MS) {
          control.request(REQ.FLUSH);
          quietMs = -Infinity; // once per quiet spell
        }
        pollDelay = Math.min(pollDelay * 2, POLL_BUSY_MAX_MS);
      }
    }
    pollTimer = setTimeout(poll, pollDelay);
  };
  pollTimer = setTimeout(poll, POLL_MIN_MS);

  let interrupted = false;
  const onSignal = () => {
    interrupted = true;
    control.stop();
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);

  opts.onStart?.({ vm, vcpu, control });
  try {
    const result = await done;
    if (interrupted && result.status === ExitCode.INTERRUPTED) result.reason = "interrupted";
    return result;
  } finally {
    finished = true;
    clearTimeout(pollTimer);
    if (retry) clearTimeout(retry);
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    if (useStdin) {
      process.stdin.off("data", onData);
      process.stdin.pause();
    }
    await stopWorker(worker, control, exited);
  }
}

/** Let the worker end on its own; a worker still inside KVM_RUN would hang terminate(), so kick it first. */
async function stopWorker(worker: Worker, control: VcpuControl, exited: Promise<void>): Promise<void> {
  if (control.state !== VcpuState.STOPPED) control.stop();
  const timeout = new Promise<"timeout">((resolve) => setTimeout(() => resolve("timeout"), 2000).unref());
  if ((await Promise.race([exited, timeout])) === "timeout") {
    control.kick();
    await worker.terminate();
  }
}
