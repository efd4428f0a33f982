// The machine builder and the main thread's side of a run: create the VM and its vCPUs, let the caller load
// the guest, start one thread per vCPU and the I/O worker, then keep the main event loop free for the few
// things only it does:
//   - standard input → the I/O worker (a shared ring plus its doorbell: no vCPU is kicked, the device there
//     raises its interrupt and a halted guest wakes);
//   - halt detection: with the in-kernel irqchip KVM keeps HLT inside the kernel, so the main thread watches
//     each vCPU thread's state in /proc/self/task/TID/stat; when they sleep, a kick makes each vCPU thread check
//     KVM_GET_MP_STATE, RFLAGS.IF and pending events (docs/run.md, "Halt");
//   - Ctrl-C / SIGTERM: a clean stop (kick, then let the threads end), exit 130;
//   - the end of any vCPU (fault, exit port) stops the others.
import { readFileSync } from "node:fs";
import { Vm } from "../vm/vm.js";
import { bootVcpu, type BootSetup } from "../vm/boot-modes.js";
import { CTL, REQ, VcpuControl, VcpuState } from "../vm/vcpu-control.js";
import { addIrqfd, addMmioIoeventfd, newEventfd } from "../vm/eventfds.js";
import * as libc from "../kvm/libc.js";
import { MMIO_REG } from "../devices/virtio/constants.js";
import type { PlannedVirtio } from "../devices/virtio/placement.js";
import { PORTS } from "../vm/machine-layout.js";
import { spawnVcpuThread, type VcpuThread, type VcpuThreadOptions } from "./vcpu-thread.js";
import { spawnIoThread, type IoThread } from "./io-thread.js";
import type { GuestMemory } from "../memory/guest-memory.js";
import type { Vcpu } from "../vm/vcpu.js";
import { mergeStats, type StatsSummary } from "./exit-stats.js";
import type { VcpuStart, WorkerMessage } from "./worker-protocol.js";
import {
  IO_CTL,
  IoState,
  SLOT,
  slotView,
  createIoBuffer,
  ioCtlView,
  type IoWorkerMessage,
  type IoWorkerStart,
  type VirtioDeviceSpec,
} from "./io-protocol.js";
import { ExitCode } from "../cli/exit-codes.js";
import { UsageError } from "../cli/errors.js";
import { startupMark } from "./startup-marks.js";

export interface MachineOptions extends VcpuThreadOptions {
  /** The BSP's thread, started earlier with spawnVcpuThread (with the same trace/stats/hook options). */
  thread?: VcpuThread;
  /** Guest RAM in bytes. */
  memSize: number;
  /** Number of vCPUs (default 1). vCPU 0 is the BSP; the others wait for INIT-SIPI-SIPI. */
  cpus?: number;
  /** virtio-mmio devices (placement.ts), owned by the I/O worker. */
  virtio?: readonly PlannedVirtio[];
  /** Standard input goes to the virtio-console (one must be in `virtio`) instead of COM1. */
  stdinToConsole?: boolean;
  /** Add the in-kernel i8254 PIT (vm.ts says why it is off by default). */
  pit?: boolean;
  /** A VM the caller created (Vm.create with this memSize and pit, no vCPU yet); the run closes it. */
  vm?: Vm;
  /** Writes the guest into RAM and says how the BSP starts (mode, entry, boot data addresses). */
  load: (mem: GuestMemory) => BootSetup;
  /** Feed the process's standard input to the guest (default true). */
  stdin?: boolean;
  /** Called once the vCPU threads run, with the handle to pause/kick the BSP and the main thread's view. */
  onStart?: (machine: RunningMachine) => void;
  /** Called each time a vCPU enters the paused state (asked by pause(), or an exit hook said "pause"). */
  onPaused?: (machine: RunningMachine) => void;
}

export interface RunningMachine {
  vm: Vm;
  /** The vCPU concerned (onPaused) or the BSP (onStart). */
  vcpu: Vcpu;
  control: VcpuControl;
  /** Every vCPU, by index (APIC id = index). */
  vcpus: { vcpu: Vcpu; control: VcpuControl }[];
}

export interface RunResult {
  /** vmtool's exit status: 0 halted, odd = exit port, 4 fault, 130 interrupted, 8 internal. */
  status: number;
  reason: string;
  fault: boolean;
  stats?: StatsSummary;
  /** Which vCPU ended the run. */
  cpu?: number;
  /** Register accesses vCPUs forwarded to the I/O worker, and queue notifies it got through ioeventfds. */
  forwarded?: number;
  notifies?: number;
  /** Whether the I/O worker ran: from the start (virtio devices) or on a first access to COM1. */
  ioStarted?: boolean;
}

/** Halt-detection polling: start fast (a guest that halts at once ends in ~1 ms), back off while busy. */
const POLL_MIN_MS = 1;
const POLL_BUSY_MAX_MS = 20;
const POLL_HALTED_MAX_MS = 100;
/** Flush the guests' partial output lines when no vCPU has made an exit for this long. */
const QUIET_FLUSH_MS = 50;
const STDIN_RING = new Uint8Array(new BigUint64Array([1n]).buffer);

export async function runMachine(opts: MachineOptions): Promise<RunResult> {
  const cpus = opts.cpus ?? 1;
  // Threads start first (unless the caller started the BSP's even earlier): their start-up overlaps the VM's
  // creation here (see vcpu-thread.ts).
  const threads: VcpuThread[] = [opts.thread ?? spawnVcpuThread(opts)];
  for (let i = 1; i < cpus; i++) threads.push(spawnVcpuThread(opts));
  // The I/O worker starts now only for virtio devices (their queues are served without any vCPU asking);
  // else on the first access to COM1 (a vCPU asks for it), which a short run may never make.
  const ioBuffer = createIoBuffer(cpus);
  const ioOptions = { cpus, stdinToConsole: opts.stdinToConsole ?? false, trace: opts.trace ?? false };
  const spawnIo = () => spawnIoThread(ioOptions, ioBuffer, threads[0].input.buffer);
  let io: IoThread | undefined;
  if ((opts.virtio ?? []).length > 0) io = spawnIo();
  else Atomics.store(ioCtlView(ioBuffer), IO_CTL.STATE, IoState.DORMANT);
  let vm: Vm | undefined;
  let started = false;
  try {
    vm = opts.vm ?? Vm.create({ memSize: opts.memSize, pit: opts.pit });
    const maxCpus = vm.kvm.checkExtension("MAX_VCPUS") || vm.kvm.checkExtension("NR_VCPUS") || 4;
    if (cpus > maxCpus)
      throw new UsageError(`--cpus ${cpus}: this host's KVM allows at most ${maxCpus} vCPUs`);
    const vcpus: Vcpu[] = [];
    for (let i = 0; i < cpus; i++) vcpus.push(vm.createVcpu());
    startupMark("vCPUs created");
    // Only the BSP gets registers: the APs start as the in-kernel local APIC makes them (INIT, then SIPI).
    bootVcpu(vcpus[0], vm.memory, opts.load(vm.memory));
    startupMark("guest loaded, registers set");
    const doorbell = newEventfd();
    const virtio = (opts.virtio ?? []).map((d) => wireVirtio(vm!, d));
    const ioStart: IoWorkerStart = {
      vmFd: vm.fd,
      memory: vm.memory.descriptors(),
      irqchip: vm.irqchip,
      doorbell,
      virtio,
    };
    io?.start(ioStart);
    const startIo = (): IoThread => {
      io = spawnIo();
      io.start(ioStart);
      return io;
    };
    const controls = vcpus.map((v, i) => new VcpuControl(threads[i].control, v));
    vcpus.forEach((v, i) => {
      const start: VcpuStart = {
        vcpu: v.desc,
        memory: vm!.memory.descriptors(),
        irqchip: vm!.irqchip,
        cpuCount: cpus,
        io: {
          buffer: ioBuffer,
          doorbell,
          pio: [{ name: "com1 (I/O worker)", base: PORTS.COM1, size: 8 }],
          mmio: virtio.map((d) => ({ name: `virtio-${d.type} (I/O worker)`, base: d.base, size: d.size })),
        },
      };
      threads[i].start(start);
    });
    started = true;
    return await runVcpuThreads(
      vm,
      vcpus,
      controls,
      threads,
      { buffer: ioBuffer, io, startIo },
      doorbell,
      opts,
    );
  } catch (e) {
    if (!started) {
      await Promise.all([...threads.map((t) => t.cancel()), io?.cancel()]);
    }
    throw e;
  } finally {
    vm?.close();
    startupMark("VM closed");
  }
}

/** One eventfd per queue on the QueueNotify register (datamatch = queue index), one irqfd for the line. */
function wireVirtio(vm: Vm, d: PlannedVirtio): VirtioDeviceSpec {
  const notifyFds: number[] = [];
  for (let q = 0; q < d.queues; q++) {
    const fd = newEventfd();
    addMmioIoeventfd(vm.fd, d.base + MMIO_REG.QUEUE_NOTIFY, 4, q, fd);
    notifyFds.push(fd);
  }
  let irqFd = -1;
  if (vm.irqchip) {
    irqFd = newEventfd();
    addIrqfd(vm.fd, irqFd, d.irq);
  }
  return {
    type: d.type,
    base: d.base,
    size: d.size,
    irq: d.irq,
    path: d.path,
    readOnly: d.readOnly,
    notifyFds,
    irqFd,
  };
}

/** The I/O worker as runVcpuThreads sees it: running from the start (virtio), or started on demand. */
interface IoHandle {
  buffer: SharedArrayBuffer;
  io: IoThread | undefined;
  startIo: () => IoThread;
}

async function runVcpuThreads(
  vm: Vm,
  vcpus: Vcpu[],
  controls: VcpuControl[],
  threads: VcpuThread[],
  ioHandle: IoHandle,
  doorbell: number,
  opts: MachineOptions,
): Promise<RunResult> {
  const queue = threads[0].input;
  const ioCtl = ioCtlView(ioHandle.buffer);
  let io = ioHandle.io;
  const smp = vcpus.length > 1;
  let pollDelay = POLL_MIN_MS;
  let finished = false;
  const all = vcpus.map((vcpu, i) => ({ vcpu, control: controls[i] }));
  let stopping = false;
  /** Set when the main thread decided the run is over (every vCPU halted for good). */
  let verdict: RunResult | undefined;
  const stopAll = () => {
    stopping = true;
    for (const c of controls) c.stop();
  };

  let watchIo: (t: IoThread) => void = () => {};
  let attachStdin: () => void = () => {};
  const done = new Promise<RunResult>((resolve) => {
    let remaining = threads.length;
    let first: RunResult | undefined;
    const seen = threads.map(() => false);
    const allStats: StatsSummary[] = [];
    const ended = (i: number, r: RunResult) => {
      if (seen[i]) return;
      seen[i] = true;
      // The first vCPU to end on its own (fault, exit port, halt) decides; the others were stopped by us.
      if (!first && !(stopping && r.status === ExitCode.INTERRUPTED)) first = r;
      if (!stopping) stopAll();
      if (r.stats) allStats.push(r.stats);
      if (--remaining === 0) {
        // With several vCPUs, --stats counts the exits of all of them.
        const result = verdict ?? first ?? r;
        resolve({ ...result, stats: mergeStats(allStats) ?? result.stats });
      }
    };
    threads.forEach(({ worker }, i) => {
      worker.on("message", (m: WorkerMessage) => {
        if (m.type === "done") {
          startupMark("vCPU thread's result received");
          ended(i, { status: m.status, reason: m.reason, fault: m.fault, stats: m.stats, cpu: i });
        } else if (m.type === "paused")
          opts.onPaused?.({ vm, vcpu: vcpus[i], control: controls[i], vcpus: all });
        else if (m.type === "io-wanted" && !io && !finished) {
          watchIo((io = ioHandle.startIo()));
          attachStdin();
        }
      });
      worker.on("error", (e) =>
        ended(i, { status: ExitCode.INTERNAL, reason: `vCPU thread failed: ${e.stack ?? e}`, fault: false }),
      );
      worker.on("exit", (code) =>
        ended(i, {
          status: ExitCode.INTERNAL,
          reason: `vCPU thread ended early (code ${code})`,
          fault: false,
        }),
      );
    });
    watchIo = (t: IoThread) => {
      t.worker.on("message", (m: IoWorkerMessage) => {
        if (m.type === "failed" && !first) {
          first = { status: ExitCode.INTERNAL, reason: m.reason, fault: false };
          stopAll();
        }
      });
      t.worker.on("error", (e) => {
        // Failed before its loop (a device it could not build): a vCPU waiting for a reply must give up.
        Atomics.store(ioCtl, IO_CTL.STATE, IoState.FAILED);
        Atomics.notify(ioCtl, IO_CTL.STATE);
        if (!first)
          first = { status: ExitCode.INTERNAL, reason: `I/O worker failed: ${e.stack ?? e}`, fault: false };
        stopAll();
      });
    };
    if (io) watchIo(io);
  });

  // Standard input → the I/O worker, read once the I/O worker runs (nothing else would take it; and setting
  // up process.stdin is ~2 ms of the main thread, which a short run does not spend). Bytes the ring cannot
  // take wait here, with stdin paused: nothing is lost.
  let held: Buffer | undefined;
  let retry: NodeJS.Timeout | undefined;
  const feed = () => {
    retry = undefined;
    if (!held || finished) return;
    const n = queue.push(held);
    held = n < held.length ? held.subarray(n) : undefined;
    if (n > 0) {
      Atomics.store(ioCtl, IO_CTL.INPUT, 1);
      libc.write(doorbell, STDIN_RING, 8);
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
  let stdinAttached = false;
  attachStdin = () => {
    if (stdinAttached || !(opts.stdin ?? true)) return;
    stdinAttached = true;
    process.stdin.on("data", onData);
    process.stdin.on("error", () => {});
  };
  if (io) attachStdin();

  // Halt detection and quiet-time flushes.
  let lastExits = -1;
  let quietMs = 0;
  let pollTimer: NodeJS.Timeout | undefined;
  let haltRound = 0;
  let haltSeqs: number[] = [];
  let haltConfirmations = 0;
  const readStat = (p: string) => readFileSync(p, "latin1");
  const pollOne = () => {
    const control = controls[0];
    if (control.state !== VcpuState.RUNNING) return;
    if (control.threadSleeping(readStat)) {
      const wakeable = Atomics.load(control.ctl, CTL.HALTED_WAKEABLE) === 1;
      control.request(REQ.HALT_CHECK);
      startupMark("vCPU thread seen asleep: halt check asked");
      pollDelay = wakeable ? Math.min(pollDelay * 2, POLL_HALTED_MAX_MS) : POLL_MIN_MS;
    } else busy();
  };
  // Several vCPUs: the run is over when every vCPU is halted with nothing left to wake it (or never started),
  // seen in two check rounds in a row with no exit in between (a vCPU may wake another with an IPI).
  const pollSmp = () => {
    if (controls.some((c) => c.state !== VcpuState.RUNNING)) return;
    if (!controls.every((c) => c.threadSleeping(readStat))) {
      haltConfirmations = 0;
      haltRound = 0;
      return busy();
    }
    if (haltRound > 0 && controls.every((c, i) => Atomics.load(c.ctl, CTL.HALT_SEQ) !== haltSeqs[i])) {
      const forGood = controls.every((c) => Atomics.load(c.ctl, CTL.HALT_VERDICT) === 1);
      haltConfirmations = forGood ? haltConfirmations + 1 : 0;
      haltRound = 0;
      if (haltConfirmations >= 2) {
        verdict = { status: ExitCode.OK, reason: "every vCPU halted with interrupts disabled", fault: false };
        stopAll();
        return;
      }
      const wakeable = controls.some((c) => Atomics.load(c.ctl, CTL.HALT_VERDICT) === 2);
      pollDelay = wakeable ? Math.min(pollDelay * 2, POLL_HALTED_MAX_MS) : POLL_MIN_MS;
    }
    if (haltRound === 0) {
      haltSeqs = controls.map((c) => Atomics.load(c.ctl, CTL.HALT_SEQ));
      haltRound = 1;
      for (const c of controls) c.request(REQ.HALT_CHECK);
    }
  };
  const busy = () => {
    const exits = controls.reduce((s, c) => s + Atomics.load(c.ctl, CTL.EXITS), 0);
    quietMs = exits === lastExits ? quietMs + pollDelay : 0;
    lastExits = exits;
    if (quietMs >= QUIET_FLUSH_MS) {
      for (const c of controls) c.request(REQ.FLUSH);
      quietMs = -Infinity; // once per quiet spell
    }
    pollDelay = Math.min(pollDelay * 2, POLL_BUSY_MAX_MS);
  };
  const poll = () => {
    if (finished || stopping) return;
    if (smp) pollSmp();
    else pollOne();
    pollTimer = setTimeout(poll, pollDelay);
  };
  pollTimer = setTimeout(poll, POLL_MIN_MS);

  let interrupted = false;
  const onSignal = () => {
    interrupted = true;
    stopAll();
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);

  opts.onStart?.({ vm, vcpu: vcpus[0], control: controls[0], vcpus: all });
  try {
    const result = await done;
    if (interrupted && result.status === ExitCode.INTERRUPTED) result.reason = "interrupted";
    result.forwarded = Atomics.load(ioCtl, IO_CTL.FORWARDED);
    result.notifies = Atomics.load(ioCtl, IO_CTL.NOTIFIES);
    result.ioStarted = io !== undefined;
    return result;
  } finally {
    finished = true;
    clearTimeout(pollTimer);
    if (retry) clearTimeout(retry);
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    if (stdinAttached) {
      process.stdin.off("data", onData);
      process.stdin.pause();
    }
    // An I/O worker never started: a vCPU waiting for it (the run ended meanwhile) must give up.
    if (!io) {
      Atomics.store(ioCtl, IO_CTL.STATE, IoState.STOPPED);
      for (let i = 0; i < threads.length; i++) Atomics.notify(slotView(ioHandle.buffer, i), SLOT.STATE);
    }
    await Promise.all(threads.map((t, i) => stopVcpuThread(t, controls[i])));
    startupMark("vCPU threads stopped");
    // The I/O worker last: a vCPU may have been waiting for one of its replies.
    if (io) {
      Atomics.store(ioCtl, IO_CTL.STOP, 1);
      libc.write(doorbell, STDIN_RING, 8);
      // Not terminate(), even for an I/O worker still starting: a worker ended while it initialises koffi
      // aborts the whole process (koffi's native init throws into a terminating isolate, a fatal error). It
      // leaves its loop at its first wake-up; once it says STOPPED its output is flushed.
      await stopIoThread(io, ioCtl);
      startupMark("I/O worker stopped");
    }
  }
}

/** How long a thread that was asked to stop may take before it is terminated. */
const STOP_TIMEOUT_MS = 2000;

/**
 * Stop a vCPU thread. One that already said STOPPED (it posted "done" right after) has flushed its output
 * and will not touch the VM again: it is not waited for (its isolate's teardown, ~4 ms, overlaps the VM's
 * close; the process's exit joins it). Any other is asked to stop, then kicked and terminated if it does not:
 * a worker still inside KVM_RUN would hang terminate().
 */
async function stopVcpuThread(t: VcpuThread, control: VcpuControl): Promise<void> {
  if (control.state === VcpuState.STOPPED) {
    t.worker.unref();
    return;
  }
  control.stop();
  const timeout = new Promise<"timeout">((resolve) =>
    setTimeout(() => resolve("timeout"), STOP_TIMEOUT_MS).unref(),
  );
  if ((await Promise.race([t.exited, timeout])) === "timeout") {
    control.kick();
    await t.worker.terminate();
  }
}

/** Wait until the I/O worker has left its loop (STOPPED or FAILED: output flushed), then let it end alone. */
async function stopIoThread(io: IoThread, ioCtl: Int32Array): Promise<void> {
  const deadline = Date.now() + STOP_TIMEOUT_MS;
  for (;;) {
    const st = Atomics.load(ioCtl, IO_CTL.STATE);
    if (st === IoState.STOPPED) {
      io.worker.unref();
      return;
    }
    if (st === IoState.FAILED) break; // its "failed" message must reach the main thread: let it end
    const left = deadline - Date.now();
    if (left <= 0) break;
    const w = Atomics.waitAsync(ioCtl, IO_CTL.STATE, st, left);
    if (w.async && (await Promise.race([w.value, io.exited.then(() => "exited" as const)])) === "exited")
      return;
  }
  const timeout = new Promise<"timeout">((resolve) =>
    setTimeout(() => resolve("timeout"), STOP_TIMEOUT_MS).unref(),
  );
  if ((await Promise.race([io.exited, timeout])) === "timeout") await io.worker.terminate();
}
