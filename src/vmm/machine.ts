// The machine builder and the main thread's side of a run: create the VM and its vCPUs, let the caller load
// the guest, start one thread per vCPU and the I/O worker, then keep the main event loop free for the few
// things only it does, each in its own module:
//   - supervisor.ts: how each thread ends, how the run ends, stopping the threads in an order that loses nothing;
//   - halt-detector.ts: with the in-kernel irqchip KVM keeps HLT in the kernel; the main thread watches the
//     threads' states and asks them to check for a halt for good;
//   - input-pump.ts: standard input → the I/O worker (raw mode on a terminal, the escape key);
//   - output-flusher.ts: partial lines of the vCPU threads' output appear within a bounded time;
//   - terminating signals: a clean stop, the guest's output flushed.
// Everything the run made (threads, eventfds, the VM, its /dev/kvm handle) is released before runMachine
// returns, so a library caller may run machines one after another in one process.
import { Vm } from "../vm/vm.js";
import { VmConfigError } from "../vm/errors.js";
import { bootVcpu, type BootSetup } from "../vm/boot-modes.js";
import { REQ, VcpuControl } from "../vm/vcpu-control.js";
import { addIrqfd, addMmioIoeventfd, signalEventfd } from "../vm/eventfds.js";
import { MMIO_REG } from "../devices/virtio/constants.js";
import type { PlannedVirtio } from "../devices/virtio/placement.js";
import { SharedByteQueue } from "../devices/byte-queue.js";
import { PORTS } from "../vm/machine-layout.js";
import { spawnVcpuThread, type VcpuThread, type VcpuThreadOptions } from "./vcpu-thread.js";
import { spawnIoThread, type IoThread } from "./io-thread.js";
import type { GuestMemory } from "../memory/guest-memory.js";
import type { Vcpu } from "../vm/vcpu.js";
import type { StatsSummary } from "./exit-stats.js";
import type { VcpuStart } from "./worker-protocol.js";
import {
  IO_CTL,
  IoState,
  createIoBuffer,
  ioCtlView,
  type DeviceReport,
  type IoWorkerStart,
  type VirtioDeviceSpec,
} from "./io-protocol.js";
import { RunSupervisor } from "./supervisor.js";
import { HaltDetector } from "./halt-detector.js";
import { InputPump } from "./input-pump.js";
import { OutputFlusher } from "./output-flusher.js";
import { TERMINATING_SIGNALS, type RunEnd, type TerminatingSignal } from "./run-end.js";
import { startupMark } from "./startup-marks.js";
import { RunDirectory } from "./run-dir.js";
import { createDebugBlock } from "./debug-block.js";
import { CMOS_STATE_BYTES } from "../devices/cmos-rtc.js";

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
  /** Add the PC platform devices a Linux guest probes: the CMOS RTC, the i8042's reset line, ACPI power-off. */
  platform?: boolean;
  /** Add the in-kernel i8254 PIT (vm.ts says why it is off by default). */
  pit?: boolean;
  /** Guest RAM as a memfd another process may map (VmOptions.sharedRam). */
  sharedRam?: boolean;
  /** A VM the caller created (Vm.create with this memSize, pit and sharedRam, no vCPU yet); the run closes it. */
  vm?: Vm;
  /** Writes the guest into RAM and says how the BSP starts (mode, entry, boot data addresses). */
  load: (mem: GuestMemory) => BootSetup;
  /** Feed the process's standard input to the guest (default true). */
  stdin?: boolean;
  /** A terminal on standard input is put in raw mode, with Ctrl-A x to leave (default true; input-pump.ts). */
  raw?: boolean;
  /** End the run cleanly on SIGINT, SIGTERM, SIGHUP and SIGQUIT (default true). */
  signals?: boolean;
  /**
   * Wait until every thread has really ended before returning (default true). `vmtool run`, which exits at
   * once afterwards, does not wait for threads that said they stopped (unless exit hooks run in them).
   */
  join?: boolean;
  /** Called once the vCPU threads run, with the handle to pause/kick the BSP and the main thread's view. */
  onStart?: (machine: RunningMachine) => void;
  /** Called each time a vCPU enters the paused state (asked by pause(), or an exit hook said "pause"). */
  onPaused?: (machine: RunningMachine) => void;
  /** Publish the run for `vmtool stat`: a run directory with live exit counters (run-dir.ts; default true). */
  publish?: boolean;
  /**
   * Called once the run's end is decided, before the threads are stopped and guest RAM is unmapped: the last
   * moment to touch the VM (a debugger removing its breakpoints, an introspection tool told goodbye).
   */
  onEnding?: (end: RunEnd) => void;
}

export interface RunningMachine {
  vm: Vm;
  /** The vCPU concerned (onPaused) or the BSP (onStart). */
  vcpu: Vcpu;
  control: VcpuControl;
  /** Every vCPU, by index (APIC id = index), with its debug block (debug-block.ts: the VM-control core's). */
  vcpus: { vcpu: Vcpu; control: VcpuControl; debug: SharedArrayBuffer }[];
  /** onPaused: why the vCPU parked (StopKind of debug-block.ts). */
  stopKind?: number;
  /** onPaused: which vCPU. */
  index: number;
  /** End the run for this reason (every vCPU is stopped; the first decision wins). */
  end: (end: RunEnd) => void;
}

export interface RunResult {
  /** How the run ended (the CLI turns it into an exit status: src/cli/exit-status.ts). */
  end: RunEnd;
  stats?: StatsSummary;
  /** Which vCPU ended the run, when one did. */
  cpu?: number;
  /** Register accesses vCPUs forwarded to the I/O worker, and queue notifies it got through ioeventfds. */
  forwarded: number;
  notifies: number;
  /** Whether the I/O worker ran: from the start (virtio devices) or on a first access to COM1. */
  ioStarted: boolean;
  /** What each virtio device counted (requests, bytes, drops), when the I/O worker ran. */
  devices: DeviceReport[];
}

/** Standard input waiting for COM1 or the virtio-console: what the guest has not taken yet. */
const STDIN_RING_BYTES = 64 * 1024;

export async function runMachine(opts: MachineOptions): Promise<RunResult> {
  const cpus = opts.cpus ?? 1;
  // Threads start first (unless the caller started the BSP's even earlier): their start-up overlaps the VM's
  // creation here (see vcpu-thread.ts).
  const threads: VcpuThread[] = [opts.thread ?? spawnVcpuThread(opts)];
  for (let i = 1; i < cpus; i++) threads.push(spawnVcpuThread(opts));
  // With one vCPU and no virtio device, COM1 is the vCPU thread's own and there is no I/O worker: its accesses
  // then cost no thread crossing, and the run no third thread's start-up. Otherwise the I/O worker starts now
  // for virtio devices (their queues are served without any vCPU asking) and for a Linux guest (which always
  // probes COM1, early: its start-up then overlaps the VM's creation and loading); else on the first access to
  // COM1 (a vCPU asks for it), which a short run may never make.
  const virtioCount = (opts.virtio ?? []).length;
  const com1OnVcpu = cpus === 1 && virtioCount === 0;
  const ioBuffer = createIoBuffer(cpus);
  const stdinRing = SharedByteQueue.create(STDIN_RING_BYTES);
  const ioOptions = { cpus, stdinToConsole: opts.stdinToConsole ?? false, trace: opts.trace ?? false };
  const spawnIo = () => spawnIoThread(ioOptions, ioBuffer, stdinRing.buffer);
  let io: IoThread | undefined;
  if (virtioCount > 0 || (opts.platform && !com1OnVcpu)) io = spawnIo();
  else Atomics.store(ioCtlView(ioBuffer), IO_CTL.STATE, IoState.DORMANT);
  let vm: Vm | undefined;
  let runDir: RunDirectory | undefined;
  let started = false;
  try {
    vm = opts.vm ?? Vm.create({ memSize: opts.memSize, pit: opts.pit, sharedRam: opts.sharedRam });
    const maxCpus = vm.kvm.checkExtension("MAX_VCPUS") || vm.kvm.checkExtension("NR_VCPUS") || 4;
    if (cpus > maxCpus)
      throw new VmConfigError(`${cpus} vCPUs: this host's KVM allows at most ${maxCpus} per VM`);
    const vcpus: Vcpu[] = [];
    for (let i = 0; i < cpus; i++) vcpus.push(vm.createVcpu());
    startupMark("vCPUs created");
    if (opts.publish ?? true) runDir = publishRun(vm, vcpus);
    startupMark("run directory published");
    // Only the BSP gets registers: the APs start as the in-kernel local APIC makes them (INIT, then SIPI).
    bootVcpu(vcpus[0], vm.memory, opts.load(vm.memory));
    if (opts.platform && vm.irqchip) for (const v of vcpus) v.setVirtualWireLints();
    startupMark("guest loaded, registers set");
    const doorbell = vm.eventfd();
    const theVm = vm;
    const virtio = (opts.virtio ?? []).map((d) => wireVirtio(theVm, d));
    const ioStart: IoWorkerStart = {
      vmFd: vm.fd,
      memory: vm.memory.descriptors(),
      irqchip: vm.irqchip,
      doorbell,
      virtio,
    };
    io?.start(ioStart);
    const controls = vcpus.map((v, i) => new VcpuControl(threads[i].control, v));
    const debugBlocks = vcpus.map(() => createDebugBlock());
    const platform = opts.platform ? { cmosState: new SharedArrayBuffer(CMOS_STATE_BYTES) } : undefined;
    vcpus.forEach((v, i) => {
      const start: VcpuStart = {
        vcpu: v.desc,
        memory: theVm.memory.descriptors(),
        irqchip: theVm.irqchip,
        cpuCount: cpus,
        debug: debugBlocks[i],
        ram: { size: theVm.memSize, bits: theVm.slots.bitmap },
        platform,
        com1: com1OnVcpu
          ? { vmFd: theVm.irqchip ? theVm.fd : undefined, stdinQueue: stdinRing.buffer }
          : undefined,
        io: {
          buffer: ioBuffer,
          doorbell,
          pio: com1OnVcpu ? [] : [{ name: "com1 (I/O worker)", base: PORTS.COM1, size: 8 }],
          mmio: virtio.map((d) => ({ name: `virtio-${d.type} (I/O worker)`, base: d.base, size: d.size })),
        },
        counters: runDir?.vcpuCounters(i),
      };
      threads[i].start(start);
    });
    started = true;
    return await supervise(theVm, vcpus, controls, debugBlocks, threads, {
      buffer: ioBuffer,
      io,
      startIo: () => {
        io = spawnIo();
        io.start(ioStart);
        return io;
      },
      doorbell,
      stdinRing,
      com1OnVcpu,
      opts,
    });
  } catch (e) {
    if (!started) await Promise.all([...threads.map((t) => t.cancel()), io?.cancel()]);
    throw e;
  } finally {
    runDir?.close();
    vm?.close();
    startupMark("VM closed");
  }
}

/** The run directory for `vmtool stat` (run-dir.ts), or undefined when this host offers no safe place for it. */
function publishRun(vm: Vm, vcpus: readonly Vcpu[]): RunDirectory | undefined {
  return RunDirectory.create(vcpus.length, {
    memSize: vm.memSize,
    vmFd: vm.fd,
    vmStatsFd: vm.statsFd,
    vcpus: vcpus.map((v) => ({ id: v.id, fd: v.fd, statsFd: v.statsFd })),
  });
}

/** One eventfd per queue on the QueueNotify register (datamatch = queue index), one irqfd for the line. */
function wireVirtio(vm: Vm, d: PlannedVirtio): VirtioDeviceSpec {
  const notifyFds: number[] = [];
  for (let q = 0; q < d.queues; q++) {
    const fd = vm.eventfd();
    addMmioIoeventfd(vm.fd, d.base + MMIO_REG.QUEUE_NOTIFY, 4, q, fd);
    notifyFds.push(fd);
  }
  let irqFd = -1;
  if (vm.irqchip) {
    irqFd = vm.eventfd();
    addIrqfd(vm.fd, irqFd, d.irq);
  }
  return {
    type: d.type,
    base: d.base,
    size: d.size,
    irq: d.irq,
    path: d.path,
    readOnly: d.readOnly,
    opened: d.opened as VirtioDeviceSpec["opened"],
    notifyFds,
    irqFd,
  };
}

interface RunParts {
  buffer: SharedArrayBuffer;
  /** The I/O worker, running from the start (virtio devices) or started on demand by startIo. */
  io: IoThread | undefined;
  startIo: () => IoThread;
  doorbell: number;
  stdinRing: SharedByteQueue;
  /** COM1 is the vCPU thread's (one vCPU, no virtio): standard input goes to it, with a kick. */
  com1OnVcpu: boolean;
  opts: MachineOptions;
}

async function supervise(
  vm: Vm,
  vcpus: Vcpu[],
  controls: VcpuControl[],
  debugBlocks: SharedArrayBuffer[],
  threads: VcpuThread[],
  parts: RunParts,
): Promise<RunResult> {
  const { opts } = parts;
  const ioCtl = ioCtlView(parts.buffer);
  const all = vcpus.map((vcpu, i) => ({ vcpu, control: controls[i], debug: debugBlocks[i] }));
  let io = parts.io;
  const pump = new InputPump({
    queue: parts.stdinRing,
    notify: parts.com1OnVcpu
      ? () => controls[0].request(REQ.INPUT)
      : () => {
          Atomics.store(ioCtl, IO_CTL.INPUT, 1);
          signalEventfd(parts.doorbell);
        },
    raw: opts.raw ?? true,
    onEscape: () => supervisor.end({ kind: "escape", reason: "Ctrl-A x typed on the terminal" }),
    onInput: () => halts.hurry(),
  });
  const stdin = opts.stdin ?? true;
  const supervisor = new RunSupervisor(threads, controls, parts.buffer, {
    onPaused: (i, kind) =>
      opts.onPaused?.({
        vm,
        vcpu: vcpus[i],
        control: controls[i],
        vcpus: all,
        stopKind: kind,
        index: i,
        end: (e) => supervisor.end(e),
      }),
    onIoWanted: () => {
      if (io || supervisor.ending) return;
      supervisor.watchIo((io = parts.startIo()));
      if (stdin) pump.attach();
    },
    onCom1Used: () => {
      if (stdin && !supervisor.ending) pump.attach();
    },
  });
  if (io) supervisor.watchIo(io);
  const halts = new HaltDetector(controls, () =>
    supervisor.end({ kind: "halted", reason: "every vCPU halted with interrupts disabled" }),
  );
  const flusher = new OutputFlusher(controls);
  const onSignal = (signal: TerminatingSignal) =>
    supervisor.end({ kind: "signal", signal, reason: `interrupted by ${signal}` });
  const signals = opts.signals ?? true;
  if (signals) for (const s of TERMINATING_SIGNALS) process.on(s, onSignal);
  if (stdin) {
    pump.setUpTerminal();
    if (io) pump.attach();
  }
  // A loop on the main thread is never seen asleep from here: it asks itself at its kicks (vcpu-runner.ts).
  if (!threads[0].onMainThread) halts.start();
  flusher.start();
  opts.onStart?.({
    vm,
    vcpu: vcpus[0],
    control: controls[0],
    vcpus: all,
    index: 0,
    end: (e) => supervisor.end(e),
  });
  let outcome;
  try {
    outcome = await supervisor.outcome;
    opts.onEnding?.(outcome.end);
  } finally {
    halts.stop();
    flusher.stop();
    pump.close();
    if (signals) for (const s of TERMINATING_SIGNALS) process.off(s, onSignal);
    const join = (opts.join ?? true) || (opts.hookModules ?? []).length > 0;
    await supervisor.shutdown(io, parts.doorbell, join);
  }
  return {
    ...outcome,
    forwarded: Atomics.load(ioCtl, IO_CTL.FORWARDED),
    notifies: Atomics.load(ioCtl, IO_CTL.NOTIFIES),
    ioStarted: io !== undefined,
    devices: supervisor.devices ?? [],
  };
}
