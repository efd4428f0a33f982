// A vCPU's run loop: a synchronous KVM_RUN loop that handles every exit itself, dispatching port and MMIO
// accesses to its own buses and devices (handing exits to another thread would cost ~10x, see docs/run.md).
// It runs in the vCPU's worker thread (vcpu-worker.ts), or, for a run with one vCPU that nothing may park, on
// the main thread itself (main-thread-vcpu.ts: no second isolate to start, docs/run.md, "Threads"). There it
// runs in slices and gives Node's event loop its turn between them: at every kick, after SLICE_MS of exits,
// and at KICK_MS, a periodic kick bounding the time inside KVM_RUN. The main thread talks to it only through the
// control block (vcpu-control.ts): requests plus a kick, never a message per exit. Kept small and free of
// CLI code: it is loaded on every run.
import { KVM_EXIT, KVM_MP_STATE, exitReasonName } from "../kvm/ioctls.js";
import { RUN } from "../kvm/structs.js";
import { ExitDecoder, type IoExit, type MmioExit } from "../kvm/exit.js";
import { KVM_INTERNAL_ERROR_EMULATION } from "../kvm/ioctls.js";
import { protectedBit } from "../vm/memory-slots.js";
import { VcpuDebugAgent, type Resume } from "./vcpu-debug.js";
import { ResumeAction, StopKind, type StopKindValue } from "./debug-block.js";
import { EAGAIN, EINTR, errnoName, gettid } from "../kvm/libc.js";
import { Vcpu } from "../vm/vcpu.js";
import { CTL, HaltVerdict, REQ, VcpuKickReceiver, VcpuState } from "../vm/vcpu-control.js";
import { formatVcpuState } from "../vm/state-dump.js";
import { GuestMemory } from "../memory/guest-memory.js";
import { BUS_MISS, MissLog, MmioBus, PioBus, allOnes } from "../devices/bus.js";
import { DebugConsole } from "../devices/debug-console.js";
import { ExitPort } from "../devices/exit-port.js";
import { PORTS } from "../vm/machine-layout.js";
import type { Uart16550 } from "../devices/uart16550.js";
import { SharedByteQueue } from "../devices/byte-queue.js";
import { createCom1 } from "./com1.js";
import { ForwardAbandoned, IoForwarder } from "./io-forward.js";
import { GuestExitRequest } from "../devices/types.js";
import { CMOS_PORT, CmosRtc } from "../devices/cmos-rtc.js";
import { GuestResetRequest, I8042, I8042_DATA } from "../devices/i8042.js";
import { AcpiSleep, GuestPowerOffRequest } from "../devices/acpi-sleep.js";
import { Output } from "./output.js";
import { ACCESS, ExitStats } from "./exit-stats.js";
import { LiveExitCounters } from "./live-counters.js";
import { hex } from "../format.js";
import type { RunEnd } from "./run-end.js";
import type { ExitHook, HookContext, VcpuStart, VcpuWorkerData, WorkerMessage } from "./worker-protocol.js";
import { startupMark } from "./startup-marks.js";

/** How long a slice of the loop may run on the main thread before Node's event loop gets its turn (ms). */
const SLICE_MS = 20;
/**
 * The main thread's periodic kick (ms): standard input, signals and the output a halted guest left wait at
 * most this long. Each kick costs an exit, a turn of the event loop and, for a halted guest, a wake-up: an
 * idle guest costs less than half the CPU it did at 20 ms (docs/run.md, "Threads").
 */
const KICK_MS = 50;

/**
 * Run the vCPU of `start` until the run ends, then post "done" (with the other messages of worker-protocol.ts
 * on the way). `onMain`: this is the main thread; the loop runs in slices (see above) and returns at once.
 */
export function runVcpu(
  data: VcpuWorkerData,
  start: VcpuStart,
  post: (msg: WorkerMessage) => void,
  onMain: boolean,
): void {
  const ctl = new Int32Array(data.control);
  const vcpu = Vcpu.attach(start.vcpu);
  const run = vcpu.run;
  const exit = new ExitDecoder(run);
  const kicks = new VcpuKickReceiver(vcpu);
  const out = new Output({
    pending: { words: ctl, index: CTL.OUTPUT_PENDING },
    onFailure: () => Atomics.or(ctl, CTL.REQUEST, REQ.OUTPUT_FAILED),
  });
  const pio = new PioBus();
  const mmio = new MmioBus();
  const misses = new MissLog();
  // Stateless devices stay here, on each vCPU's own bus (the exit-throughput path); the stateful ones (COM1,
  // virtio) live in the I/O worker and get stand-ins that forward each access there (io-forward.ts), except
  // COM1 on a machine with one vCPU and no virtio device, which this thread owns (docs/run.md, "Devices and
  // threads").
  pio.register(PORTS.DEBUG_CONSOLE, 1, new DebugConsole(out.write));
  const com1 = start.com1 ? ownCom1(start.com1) : undefined;
  pio.register(PORTS.EXIT, 1, new ExitPort());
  if (start.platform) {
    pio.register(CMOS_PORT, 2, new CmosRtc({ state: start.platform.cmosState }));
    pio.register(I8042_DATA, 5, new I8042());
    pio.register(PORTS.ACPI_SLEEP, 2, new AcpiSleep());
  }
  const forwarder = new IoForwarder(start.io.buffer, start.vcpu.id, start.io.doorbell, ctl, () =>
    post({ type: "io-wanted" }),
  );
  for (const r of start.io.pio) pio.register(r.base, r.size, forwarder.pioDevice(r.name, r.base));
  for (const r of start.io.mmio) mmio.register(r.base, r.size, forwarder.mmioDevice(r.name, r.base));
  const smp = start.cpuCount > 1;
  const irqchip = start.irqchip;
  /** The VM-control core's agent in this thread (src/debug/ drives it through the debug block). */
  const agent = new VcpuDebugAgent(vcpu, start.debug);
  const ramSize = start.ram.size;
  const ramBits = new Uint8Array(start.ram.bits);
  /** A step saw a port or MMIO exit: the next KVM_RUN has immediate_exit set and ends the step. */
  let stepCompleting = false;
  // A port/MMIO exit matched DBG.EXIT_BREAK: the next KVM_RUN (immediate exit) completes it, then the vCPU parks.
  let exitBreakCompleting = false;
  const trace = data.trace;
  const stats = data.stats ? new ExitStats() : undefined;
  const live = new LiveExitCounters(start.counters);

  const hooks: ExitHook[] = [];
  // Guest RAM is viewed here only when a hook asks for it: V8 counts a 64 MiB view as external memory and
  // collects garbage at once (two scavenges and a mark-compact, 5-10 ms of a short run: docs/run.md, "Start-up").
  let memory: GuestMemory | undefined;
  const hookCtx: HookContext = {
    vcpu,
    get memory() {
      return (memory ??= GuestMemory.fromDescriptors(start.memory));
    },
    pio,
    mmio,
    out: (line) => out.line(line),
  };

  /**
   * COM1 on this thread's bus. Its guest bytes share this thread's output (in order with the debug console's);
   * host input arrives in the shared ring with REQ.INPUT and a kick. The first access tells the main thread, which
   * only then starts reading standard input (a run that never touches COM1 does not set up a stream for it).
   */
  function ownCom1(c: NonNullable<VcpuStart["com1"]>): Uart16550 {
    const uart = createCom1(out.write, c.vmFd, new SharedByteQueue(c.stdinQueue));
    let used = false;
    const firstUse = () => {
      if (used) return;
      used = true;
      post({ type: "com1-used" });
    };
    pio.register(PORTS.COM1, 8, {
      name: uart.name,
      pioRead: (offset, size) => {
        firstUse();
        return uart.pioRead(offset, size);
      },
      pioWrite: (offset, size, value) => {
        firstUse();
        uart.pioWrite(offset, size, value);
      },
    });
    return uart;
  }

  /** Numbers the exits --trace shows (kicks that only check for a halt are not shown, so not numbered). */
  let traceSeq = 0;

  /** What an access that a device turned into the end of the run means. */
  function endFrom(e: unknown): RunEnd {
    if (e instanceof GuestExitRequest) return { kind: "exit-port", value: e.value, reason: e.message };
    if (e instanceof GuestResetRequest) return { kind: "reset", reason: e.message };
    if (e instanceof GuestPowerOffRequest) return { kind: "poweroff", reason: e.message };
    if (e instanceof ForwardAbandoned) return { kind: "stopped", reason: e.message };
    throw e;
  }

  /** Port I/O exit. `rep ins/outs` comes as `count` accesses in a row in the data area. */
  function handleIo(io: IoExit): RunEnd | undefined {
    const { out: isOut, size, port: p, count } = io;
    let off = io.dataOffset;
    if (trace) traceIo(io);
    try {
      for (let i = 0; i < count; i++, off += size) {
        if (isOut) {
          const v =
            size === 1 ? run.getUint8(off) : size === 2 ? run.getUint16(off, true) : run.getUint32(off, true);
          if (!pio.write(p, size, v) && trace && misses.firstMiss(p))
            out.line(`vmtool: trace: nobody at port ${hex(p)}: write of ${hex(v)} ignored`);
        } else {
          let v = pio.read(p, size);
          if (v === BUS_MISS) {
            v = allOnes(size);
            if (trace && misses.firstMiss(p))
              out.line(`vmtool: trace: nobody at port ${hex(p)}: read as all ones`);
          }
          if (size === 1) run.setUint8(off, v);
          else if (size === 2) run.setUint16(off, v, true);
          else run.setUint32(off, v >>> 0, true);
        }
      }
    } catch (e) {
      return endFrom(e);
    }
    return undefined;
  }

  function traceIo(io: IoExit): void {
    let shown = "";
    const off = io.dataOffset;
    if (io.out) {
      const v =
        io.size === 1
          ? run.getUint8(off)
          : io.size === 2
            ? run.getUint16(off, true)
            : run.getUint32(off, true);
      shown = ` data=${hex(v)}`;
    }
    out.line(
      `#${++traceSeq} IO port=${hex(io.port)} size=${io.size} ${io.out ? "out" : "in"}${shown}${io.count > 1 ? ` count=${io.count}` : ""} rip=${hex(vcpu.getRip())}`,
    );
  }

  /** Bytes as the little-endian number they form, for trace lines. */
  function bytesHex(b: Uint8Array): string {
    let s = "";
    for (let i = b.length - 1; i >= 0; i--) s += b[i].toString(16).padStart(2, "0");
    return `0x${s.replace(/^0+(?=.)/, "")}`;
  }

  /**
   * An MMIO exit inside guest RAM: a page the core protected (its memory slot is read-only or absent), or a page
   * briefly in no slot while slots change. The access is done on RAM here; a protected page first parks the vCPU
   * (the access is reported before it happens, and the core may say to skip it).
   */
  function handleRamAccess(m: MmioExit): RunEnd | undefined {
    const { addr, data: bytes } = m;
    let skip = false;
    if (agent.armed && protectedBit(ramBits, addr)) {
      agent.detail({ WRITE: m.write ? 1 : 0, ADDR_LO: addr, LEN: bytes.length });
      if (m.write) agent.setAccessData(bytes);
      const r = parkFor(m.write ? StopKind.PAGE_WRITE : StopKind.PAGE_READ);
      if (r.action === ResumeAction.CRASH) return crashed();
      skip = r.action === ResumeAction.SKIP;
      if (r.action === ResumeAction.STEP) agent.beginStep();
    }
    if (trace)
      out.line(
        `#${++traceSeq} MMIO addr=${hex(addr)} size=${bytes.length} ${m.write ? `write data=${bytesHex(bytes)}` : "read"} (guest RAM${skip ? ", skipped" : ""}) rip=${hex(vcpu.getRip())}`,
      );
    const mem = (memory ??= GuestMemory.fromDescriptors(start.memory));
    if (m.write) {
      if (!skip) mem.write(addr, bytes);
    } else if (skip) bytes.fill(0);
    else bytes.set(mem.slice(addr, bytes.length));
    return undefined;
  }

  function handleMmio(m: MmioExit): RunEnd | undefined {
    const { addr, data: bytes } = m;
    if (addr < ramSize && addr + bytes.length <= ramSize) return handleRamAccess(m);
    try {
      if (m.write) {
        if (trace)
          out.line(
            `#${++traceSeq} MMIO addr=${hex(addr)} size=${bytes.length} write data=${bytesHex(bytes)} rip=${hex(vcpu.getRip())}`,
          );
        if (!mmio.write(addr, bytes) && trace && misses.firstMiss(addr))
          out.line(`vmtool: trace: nobody at MMIO ${hex(addr)}: write ignored`);
      } else {
        if (trace)
          out.line(
            `#${++traceSeq} MMIO addr=${hex(addr)} size=${bytes.length} read rip=${hex(vcpu.getRip())}`,
          );
        if (!mmio.read(addr, bytes) && trace && misses.firstMiss(addr))
          out.line(`vmtool: trace: nobody at MMIO ${hex(addr)}: read as all ones`);
      }
    } catch (e) {
      return endFrom(e);
    }
    return undefined;
  }

  /** Print why the guest cannot go on, and its state. */
  function fault(what: string): RunEnd {
    if (smp) what = `vCPU ${start.vcpu.id}: ${what}`;
    out.line(`vmtool: guest fault: ${what}`);
    try {
      const regs = vcpu.getRegs();
      const sregs = vcpu.getSregs();
      for (const l of formatVcpuState(regs, sregs, vcpu.getVcpuEvents())) out.line(`  ${l}`);
      // kvm_amd answers a shutdown (triple fault) by INITing the vCPU before KVM_EXIT_SHUTDOWN reaches us (the
      // VMCB is undefined after it), so the state read here is the reset state, not the faulting one; kvm_intel
      // and kvm_pvm keep the faulting state. Say so rather than print a misleading dump (docs/svm.md).
      if (regs.rip === 0xfff0n && sregs.cs.selector === 0xf000 && sregs.cs.base === 0xffff0000n)
        out.line(
          "  (the reset state: kvm_amd INITs a vCPU on a triple fault, so not the state at the fault)",
        );
    } catch (e) {
      out.line(`  (registers unavailable: ${(e as Error).message})`);
    }
    return { kind: "fault", reason: what };
  }

  function exitDetail(reason: number): string {
    switch (reason) {
      case KVM_EXIT.SHUTDOWN:
        return "triple fault (KVM_EXIT_SHUTDOWN): the guest took an exception it could not handle";
      case KVM_EXIT.FAIL_ENTRY:
        return `VM entry failed (KVM_EXIT_FAIL_ENTRY): hardware reason ${hex(run.getBigUint64(RUN.fail_entry.hardware_entry_failure_reason, true))}`;
      case KVM_EXIT.INTERNAL_ERROR: {
        const sub = run.getUint32(RUN.internal.suberror, true);
        const names = [
          "",
          "emulation failure",
          "simultaneous exception",
          "delivery event failed",
          "unexpected exit",
        ];
        return `KVM internal error (KVM_EXIT_INTERNAL_ERROR): suberror ${sub}${names[sub] ? ` (${names[sub]})` : ""}${emulationBytes(sub)}`;
      }
      case KVM_EXIT.UNKNOWN:
        return `unknown exit (KVM_EXIT_UNKNOWN): hardware reason ${hex(run.getBigUint64(RUN.hw.hardware_exit_reason, true))}`;
      default:
        return `unexpected exit ${exitReasonName(reason)} (${reason})`;
    }
  }

  /** For an emulation failure, the instruction's bytes at RIP as KVM fetched them (when it says it did). */
  function emulationBytes(sub: number): string {
    if (sub !== KVM_INTERNAL_ERROR_EMULATION || run.getUint32(RUN.internal.ndata, true) < 2) return "";
    if ((run.getUint32(RUN.internal.data, true) & 1) === 0) return "";
    const n = Math.min(run.getUint8(RUN.internal.data + 8), 15);
    const bytes = Array.from({ length: n }, (_, i) =>
      run
        .getUint8(RUN.internal.data + 9 + i)
        .toString(16)
        .padStart(2, "0"),
    );
    return n > 0 ? `: KVM could not emulate the instruction at RIP, bytes ${bytes.join(" ")}` : "";
  }

  /** A guest halted with IF=0 and nothing pending has nothing left to wake it. */
  function haltVerdict(): number {
    const mp = vcpu.getMpState();
    // With several vCPUs, an AP never woken counts as halted: the run may end without it.
    if (smp && (mp === KVM_MP_STATE.UNINITIALIZED || mp === KVM_MP_STATE.INIT_RECEIVED))
      return HaltVerdict.FOR_GOOD;
    if (mp !== KVM_MP_STATE.HALTED) return HaltVerdict.RUNNING;
    const regs = vcpu.getRegs();
    if (regs.rflags & 0x200n) return HaltVerdict.WAKEABLE;
    const ev = vcpu.getVcpuEvents();
    if (
      ev.nmi.pending ||
      ev.nmi.injected ||
      ev.exception.pending ||
      ev.exception.injected ||
      ev.interrupt.injected
    )
      return HaltVerdict.WAKEABLE;
    return HaltVerdict.FOR_GOOD;
  }

  /**
   * Park the vCPU (state PAUSED) until the main thread clears REQ.PAUSE (or stops the run), serving the VM-control
   * core's commands meanwhile. `kind` says why (the main thread asked, or an event of the core's); the result
   * says how to go on.
   */
  function parkFor(kind: StopKindValue): Resume {
    out.flush();
    // An event parks on the vCPU's own initiative: the PAUSE bit is set here, as a pause request would set it.
    if (kind !== StopKind.REQUESTED) Atomics.or(ctl, CTL.REQUEST, REQ.PAUSE);
    return agent.park(kind, (serve) => {
      Atomics.store(ctl, CTL.STATE, VcpuState.PAUSED);
      Atomics.notify(ctl, CTL.STATE);
      post({ type: "paused", kind });
      for (;;) {
        Atomics.and(ctl, CTL.REQUEST, ~REQ.COMMAND);
        serve();
        const req = Atomics.load(ctl, CTL.REQUEST);
        if (!(req & REQ.PAUSE) || req & REQ.STOP) break;
        if (req & REQ.COMMAND) continue; // posted while serve() looked: serve it
        // The core rings CTL.REQUEST (notify) when it posts a command or resumes.
        if (req & REQ.COMMAND) continue; // posted while serving
        // The core changes CTL.REQUEST (REQ.COMMAND, or PAUSE cleared) and notifies when it posts or resumes.
        Atomics.wait(ctl, CTL.REQUEST, req, 1000);
      }
      Atomics.store(ctl, CTL.STATE, VcpuState.RUNNING);
      Atomics.notify(ctl, CTL.STATE);
    });
  }

  /** After a park: STEP starts a single step; CRASH ends the run. */
  function afterPark(r: Resume): RunEnd | undefined {
    for (;;) {
      if (r.action === ResumeAction.CRASH) return crashed();
      if (r.action !== ResumeAction.STEP) return undefined;
      if (!stepOverHlt()) {
        agent.beginStep();
        return undefined;
      }
      r = parkFor(StopKind.SINGLESTEP);
    }
  }

  /**
   * With the in-kernel irqchip, a step whose instruction is HLT is done here: RIP goes past it and the step is
   * over, the vCPU not halted (as KVM steps HLT without an irqchip). kvm_pvm's emulator, single-stepping a HLT
   * there, leaves the vCPU so that the next interrupt that wakes it from a later HLT keeps it halted inside the
   * handler with IF=0: the guest never runs again. Returns whether it did the step.
   */
  function stepOverHlt(): boolean {
    if (!irqchip) return false;
    const rip = vcpu.getRip();
    const t = vcpu.translate(BigInt.asUintN(64, vcpu.getSregs().cs.base + rip));
    if (!t.valid || t.gpa >= BigInt(ramSize)) return false;
    if (hookCtx.memory.read(Number(t.gpa), 1)[0] !== 0xf4) return false;
    vcpu.setRegs({ rip: rip + 1n });
    return true;
  }

  function crashed(): RunEnd {
    return fault("the VM-control client asked for the guest to be crashed");
  }

  /** A step is done (a debug exit, or the immediate exit after a port/MMIO exit): report it. */
  function stepDone(): RunEnd | undefined {
    stepCompleting = false;
    agent.endStep();
    return afterPark(parkFor(StopKind.SINGLESTEP));
  }

  /** KVM_EXIT_DEBUG: a step, a hardware breakpoint (DR0-DR3), or a software breakpoint through USE_SW_BP. */
  function handleDebugExit(): RunEnd | undefined {
    const exception = run.getUint32(RUN.debug.exception, true);
    const pc = run.getBigUint64(RUN.debug.pc, true);
    const dr6 = run.getBigUint64(RUN.debug.dr6, true);
    agent.detail({ CODE: exception, ADDR_LO: pc, VALUE_LO: dr6 });
    if (exception === 1 && dr6 & 0x4000n && agent.stepping) return stepDone();
    let kind: StopKindValue = StopKind.DEBUG_OTHER;
    if (exception === 1 && dr6 & 0xfn) kind = StopKind.HW_BREAKPOINT;
    else if (exception === 3 && agent.isPlanted(pc)) kind = StopKind.SW_BREAKPOINT;
    else if (exception === 3 && agent.wantsInt3) kind = StopKind.INT3;
    if (agent.stepping) agent.endStep();
    return afterPark(parkFor(kind));
  }

  /** KVM_EXIT_X86_RDMSR / WRMSR of an MSR the core intercepts: report it, then complete it as the core says. */
  function handleMsrExit(write: boolean): RunEnd | undefined {
    const index = run.getUint32(RUN.msr.index, true);
    const data = run.getBigUint64(RUN.msr.data, true);
    let r: Resume = { action: ResumeAction.CONTINUE, arg: 0n };
    if (agent.armed) {
      agent.detail({ CODE: index, VALUE_LO: data, WRITE: write ? 1 : 0 });
      r = parkFor(write ? StopKind.MSR_WRITE : StopKind.MSR_READ);
      if (r.action === ResumeAction.CRASH) return crashed();
    }
    let ok = r.action !== ResumeAction.FAIL;
    if (ok && write) ok = agent.writeMsr(index, r.action === ResumeAction.SET_VALUE ? r.arg : data);
    else if (ok) {
      const v = r.action === ResumeAction.SET_VALUE ? r.arg : agent.readMsr(index);
      ok = v !== undefined;
      if (v !== undefined) run.setBigUint64(RUN.msr.data, BigInt.asUintN(64, v), true);
    }
    run.setUint8(RUN.msr.error, ok ? 0 : 1); // 1: KVM injects #GP
    if (r.action === ResumeAction.STEP) agent.beginStep();
    return undefined;
  }

  /** An exit the guest cannot go on from: with a client that asked (WANT.FAULT) the vCPU parks first. */
  function faultOrPark(reason: number, what: string): RunEnd | undefined {
    if (!agent.wantsFaults) return fault(what);
    out.line(`vmtool: guest fault (the vCPU is parked for the VM-control client): ${what}`);
    agent.detail({
      EXIT_REASON: reason,
      EXIT_DETAIL: reason === KVM_EXIT.INTERNAL_ERROR ? run.getUint32(RUN.internal.suberror, true) : 0,
    });
    const r = parkFor(StopKind.FAULT);
    if (r.action === ResumeAction.CRASH) return fault(what);
    if (r.action === ResumeAction.STEP) agent.beginStep();
    return undefined; // the client may have fixed the state: run again
  }

  /** KVM_EXIT_INTERNAL_ERROR: a planted software breakpoint on kvm_pvm, or a real emulation failure. */
  function handleInternalError(): RunEnd | undefined {
    if (agent.armed && run.getUint32(RUN.internal.suberror, true) === KVM_INTERNAL_ERROR_EMULATION) {
      const s = vcpu.getSregs();
      const linear = BigInt.asUintN(64, s.cs.base + vcpu.getRip());
      // The instruction's bytes follow the flags (data[0]) when KVM gives them: an INT3 is 0xCC.
      const bytesGiven = (run.getUint32(RUN.internal.data, true) & 1) !== 0;
      const int3 = bytesGiven && run.getUint8(RUN.internal.data + 9) === 0xcc;
      if (agent.isPlanted(linear) || (int3 && agent.wantsInt3)) {
        agent.detail({ ADDR_LO: linear, CODE: 3 });
        if (agent.stepping) agent.endStep();
        return afterPark(parkFor(agent.isPlanted(linear) ? StopKind.SW_BREAKPOINT : StopKind.INT3));
      }
      // The guest's own int3 (a 0xCC nobody planted), which kvm_pvm's emulator cannot run outside real mode: the
      // #BP debug stop it is on VMX/SVM, so that the client can give it back to the guest.
      const d = RUN.internal.data; // struct emulation_failure: u64 flags, u8 insn_size, u8 insn_bytes[15]
      if ((run.getUint32(d, true) & 1) !== 0 && run.getUint8(d + 8) > 0 && run.getUint8(d + 9) === 0xcc) {
        agent.detail({ CODE: 3, ADDR_LO: linear });
        if (agent.stepping) agent.endStep();
        return afterPark(parkFor(StopKind.DEBUG_OTHER));
      }
    }
    return faultOrPark(KVM_EXIT.INTERNAL_ERROR, exitDetail(KVM_EXIT.INTERNAL_ERROR));
  }

  /** Serve the main thread's requests. Returns how the run ends when asked to stop or when the guest is done. */
  function serveRequests(): RunEnd | undefined {
    const req = Atomics.load(ctl, CTL.REQUEST);
    // Only a parked thread serves commands (parkFor); a bit left over from one is dropped.
    if (req & REQ.COMMAND) Atomics.and(ctl, CTL.REQUEST, ~REQ.COMMAND);
    if (req & REQ.STOP) return { kind: "stopped", reason: "stopped" };
    if (req & REQ.OUTPUT_FAILED && out.failure) return out.failure;
    if (req & REQ.FLUSH) {
      Atomics.and(ctl, CTL.REQUEST, ~REQ.FLUSH);
      out.flush();
    }
    if (req & REQ.HALT_CHECK) {
      Atomics.and(ctl, CTL.REQUEST, ~REQ.HALT_CHECK);
      out.flush();
      const verdict = haltVerdict();
      // One vCPU ends the run itself; with several, the main thread decides once every vCPU says so.
      if (!smp && verdict === HaltVerdict.FOR_GOOD)
        return { kind: "halted", reason: "the guest halted with interrupts disabled" };
      Atomics.store(ctl, CTL.HALT_VERDICT, verdict);
      Atomics.add(ctl, CTL.HALT_SEQ, 1);
    }
    if (req & REQ.DEBUG) {
      Atomics.and(ctl, CTL.REQUEST, ~REQ.DEBUG);
      agent.applyGuestDebug();
    }
    if (req & REQ.INPUT) {
      Atomics.and(ctl, CTL.REQUEST, ~REQ.INPUT);
      com1?.pollInput();
    }
    // A command posted as the vCPU left its park: it was refused there (not parked), nothing to serve.
    if (req & REQ.COMMAND) Atomics.and(ctl, CTL.REQUEST, ~REQ.COMMAND);
    if (req & REQ.PAUSE) return afterPark(parkFor(StopKind.REQUESTED));
    return undefined;
  }

  /** Exits so far (a progress hint the main thread samples, CTL.EXITS). */
  let exits = 0;
  /** On the main thread: `exits` at the last kick. */
  let exitsAtKick = 0;

  /** Run until the run ends, or on the main thread until the slice is over (undefined: run another slice). */
  function runLoop(): RunEnd | undefined {
    const sliceEnd = onMain ? performance.now() + SLICE_MS : 0;
    let t0 = 0;
    let t1 = 0;
    for (;;) {
      if (Atomics.load(ctl, CTL.REQUEST) !== 0) {
        const end = serveRequests();
        if (end) return end;
      }
      if (stats) t0 = performance.now();
      let rc = vcpu.runOnce();
      // An AP waiting for INIT/SIPI (KVM_MP_STATE_UNINITIALIZED) returns EAGAIN once the in-kernel local APIC
      // has woken it: simply run it again.
      while (rc === -EAGAIN) rc = vcpu.runOnce();
      if (stats) t1 = performance.now();
      if (rc !== 0 && rc !== -EINTR) return fault(`KVM_RUN failed: ${errnoName(-rc)}`);
      const reason = rc === 0 ? exit.decode() : KVM_EXIT.INTR;
      if (stepCompleting && (reason === KVM_EXIT.INTR || reason === KVM_EXIT.DEBUG)) {
        // The step's instruction was completed by a port/MMIO exit's re-entry (EINTR), or just finished (DEBUG).
        if (reason === KVM_EXIT.INTR) kicks.consume();
        exitBreakCompleting = false;
        const end = stepDone();
        if (end) return end;
        continue;
      }
      if (exitBreakCompleting && reason === KVM_EXIT.INTR) {
        // The instruction of the port/MMIO exit the core asked to stop at is complete: report it.
        kicks.consume();
        exitBreakCompleting = false;
        const end = afterPark(parkFor(StopKind.EXIT));
        if (end) return end;
        continue;
      }
      exits++;
      let end: RunEnd | undefined;
      let address = -1;
      let access = 0;
      if (reason === KVM_EXIT.IO) {
        end = handleIo(exit.io);
        if (agent.stepping && !end) stepCompleting = vcpu.immediateExit = true;
        address = exit.io.port;
        access = exit.io.out ? ACCESS.PIO_OUT : ACCESS.PIO_IN;
      } else if (reason === KVM_EXIT.MMIO) {
        end = handleMmio(exit.mmio);
        if (agent.stepping && !end) stepCompleting = vcpu.immediateExit = true;
        address = exit.mmio.addr;
        access = exit.mmio.write ? ACCESS.MMIO_WRITE : ACCESS.MMIO_READ;
      } else if (reason === KVM_EXIT.INTR) {
        // A kick (or another signal): serve requests at the top of the loop.
        kicks.consume();
        Atomics.add(ctl, CTL.KICKS, 1);
        // On the main thread, nobody sees this thread asleep in KVM_RUN (halt-detector.ts): a kick with no
        // other exit since the one before asks for the halt check here.
        if (onMain) {
          if (exits - 1 === exitsAtKick) Atomics.or(ctl, CTL.REQUEST, REQ.HALT_CHECK);
          exitsAtKick = exits;
        }
        out.flush();
        if (trace && Atomics.load(ctl, CTL.REQUEST) & ~REQ.HALT_CHECK) out.line(`#${++traceSeq} INTR (kick)`);
      } else {
        out.flush();
        if (trace) out.line(`#${++traceSeq} ${exitReasonName(reason)} rip=${hex(vcpu.getRip())}`);
        if (reason === KVM_EXIT.HLT) {
          // Only without the in-kernel irqchip: nothing can wake the guest then.
          end = { kind: "halted", reason: "the guest halted" };
        } else if (reason === KVM_EXIT.SYSTEM_EVENT && run.getUint32(RUN.system_event.type, true) === 1) {
          end = { kind: "halted", reason: "the guest shut down" };
        } else if (reason === KVM_EXIT.DEBUG) {
          end = handleDebugExit();
        } else if (reason === KVM_EXIT.X86_WRMSR || reason === KVM_EXIT.X86_RDMSR) {
          end = handleMsrExit(reason === KVM_EXIT.X86_WRMSR);
        } else if (reason === KVM_EXIT.INTERNAL_ERROR) {
          end = handleInternalError();
        } else {
          end = faultOrPark(reason, exitDetail(reason));
        }
      }
      // Per-exit bookkeeping without a locked instruction on the fast path: the verdict is read first and rarely
      // set; the exit count is a progress hint the main thread samples (an aligned 32-bit plain store never
      // tears, and a stale value only delays the main thread's view).
      if (reason !== KVM_EXIT.INTR && ctl[CTL.HALT_VERDICT] !== HaltVerdict.UNKNOWN)
        Atomics.store(ctl, CTL.HALT_VERDICT, HaltVerdict.UNKNOWN);
      ctl[CTL.EXITS] = exits & 0x7fff_ffff;
      if (reason !== KVM_EXIT.INTR) {
        const io = reason === KVM_EXIT.IO;
        const mmio = reason === KVM_EXIT.MMIO;
        const at = io ? exit.io.port : mmio ? exit.mmio.addr : -1;
        const write = io ? exit.io.out : mmio && exit.mmio.write;
        if (agent.noteExit(reason, at, write, mmio ? exit.mmio.data.length : io ? exit.io.size : 0) && !end) {
          // A port or MMIO instruction completes on the next KVM_RUN: stop once it has (immediate exit).
          if (io || mmio) {
            if (!stepCompleting) exitBreakCompleting = vcpu.immediateExit = true;
          } else end = afterPark(parkFor(StopKind.EXIT));
        }
      }
      live.add(reason, address, access);
      if (hooks.length > 0 && !end) {
        for (const h of hooks) {
          const verdict = h({ seq: exits, reason, reasonName: exitReasonName(reason) });
          if (verdict === "stop") end = { kind: "stopped", reason: "stopped by an exit hook" };
          else if (verdict === "pause") Atomics.or(ctl, CTL.REQUEST, REQ.PAUSE);
        }
      }
      if (stats) stats.add(reason, t1 - t0, performance.now() - t1, address, access);
      if (end) return end;
      // On the main thread: a kick (a request, a signal, the periodic kick) or the slice's end gives Node's event
      // loop its turn.
      if (onMain && (reason === KVM_EXIT.INTR || performance.now() >= sliceEnd)) return undefined;
    }
  }

  /** Run the vCPU until the guest or the main thread ends it, then say how it ended. */
  function runThread(): void {
    Atomics.store(ctl, CTL.TID, gettid());
    live.setThread(Atomics.load(ctl, CTL.TID));
    Atomics.store(ctl, CTL.STATE, VcpuState.RUNNING);
    Atomics.notify(ctl, CTL.STATE);
    startupMark("first KVM_RUN");
    // The first kick soon: a guest that halts at once is then seen to at once, as the halt detector's first
    // looks see a vCPU thread's (halt-detector.ts).
    const stopKicks = onMain ? kicks.kickEvery(KICK_MS, 1) : undefined;
    const slice = (): void => {
      let end: RunEnd | undefined;
      try {
        end = runLoop();
      } catch (e) {
        out.flush();
        end = {
          kind: "internal",
          reason: `internal error in the vCPU thread: ${(e as Error).stack ?? String(e)}`,
        };
      }
      if (end) {
        stopKicks?.();
        finish(end);
      } else setImmediate(slice);
    };
    slice();
  }

  /** Say how the run ended (once the loop has). */
  function finish(runEnd: RunEnd): void {
    let end = runEnd;
    out.flush();
    // Output that failed while the run ended for another reason still decides: it is incomplete.
    if (out.failure && end.kind !== "fault" && end.kind !== "internal") end = out.failure;
    startupMark(`run loop ended: ${end.reason}`);
    Atomics.store(ctl, CTL.STATE, VcpuState.STOPPED);
    Atomics.notify(ctl, CTL.STATE);
    post({ type: "done", end, stats: stats?.summary() });
  }

  // Exit hooks are ES modules (loaded by URL, with the compiled modules rather than the bundle: vcpu-thread.ts),
  // so the run waits for their import; without hooks it starts at once.
  if (data.hookModules.length === 0) runThread();
  else
    Promise.all(
      data.hookModules.map((url) => import(url) as Promise<{ default: (ctx: HookContext) => ExitHook }>),
    )
      .then((mods) => {
        for (const mod of mods) hooks.push(mod.default(hookCtx));
        runThread();
      })
      .catch((e: unknown) => {
        Atomics.store(ctl, CTL.STATE, VcpuState.STOPPED);
        post({
          type: "done",
          end: {
            kind: "internal",
            reason: `exit hook module failed to load: ${(e as Error).stack ?? String(e)}`,
          },
        });
      });
}
