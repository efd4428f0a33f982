// The vCPU thread: one worker per vCPU runs a synchronous KVM_RUN loop and handles every exit itself,
// dispatching port and MMIO accesses to its own buses and devices (handing exits to another thread would cost
// ~10x, see docs/run.md). The main thread talks to it only through the control block (vcpu-control.ts):
// requests plus a kick, never a message per exit. Kept small and free of CLI code: it is loaded on every run.
import { parentPort, workerData } from "node:worker_threads";
import { KVM_EXIT, KVM_EXIT_IO_OUT, KVM_MP_STATE, exitReasonName } from "../kvm/ioctls.js";
import { RUN, kvm_run } from "../kvm/structs.js";
import { EAGAIN, EINTR, errnoName, gettid } from "../kvm/libc.js";
import { Vcpu } from "../vm/vcpu.js";
import { CTL, REQ, VcpuKickReceiver, VcpuState } from "../vm/vcpu-control.js";
import { receiveStart } from "./thread-start.js";
import { formatVcpuState } from "../vm/state-dump.js";
import { GuestMemory } from "../memory/guest-memory.js";
import { BUS_MISS, MissLog, MmioBus, PioBus, allOnes, allOnesBig } from "../devices/bus.js";
import { DebugConsole } from "../devices/debug-console.js";
import { ExitPort } from "../devices/exit-port.js";
import { PORTS } from "../vm/machine-layout.js";
import { IoForwarder, IoWorkerGone } from "./io-forward.js";
import { VmStopRequest } from "../devices/types.js";
import type { AccessSize } from "../devices/types.js";
import { Output } from "./output.js";
import { ExitStats } from "./exit-stats.js";
import type { ExitHook, HookContext, VcpuStart, VcpuWorkerData, WorkerMessage } from "./worker-protocol.js";
import { ExitCode } from "../cli/exit-codes.js";
import { startupMark } from "./startup-marks.js";

const data = workerData as VcpuWorkerData;
const port = parentPort!;
const ctl = new Int32Array(data.control);
startupMark("vCPU thread's modules loaded, waiting for its vCPU");
port.postMessage({ type: "loaded" } satisfies WorkerMessage);
// The worker is started before the VM exists, so that its start-up (a new isolate, koffi, these modules)
// overlaps the main thread's VM creation; the vCPU and RAM arrive in the first message (thread-start.ts).
const start = receiveStart<VcpuStart>(port, ctl, CTL.START);
startupMark("vCPU received");
const vcpu = Vcpu.attach(start.vcpu);
const run = vcpu.run;
const kicks = new VcpuKickReceiver(vcpu);
const out = new Output();
const pio = new PioBus();
const mmio = new MmioBus();
const misses = new MissLog();
// Stateless devices stay here, on each vCPU's own bus (the exit-throughput path); the stateful ones (COM1,
// virtio) live in the I/O worker and get stand-ins that forward each access there (io-forward.ts).
const debugConsole = new DebugConsole(out.write);
pio.register(PORTS.DEBUG_CONSOLE, 1, debugConsole);
pio.register(PORTS.EXIT, 1, new ExitPort());
const forwarder = new IoForwarder(start.io.buffer, start.vcpu.id, start.io.doorbell, () =>
  post({ type: "io-wanted" }),
);
for (const r of start.io.pio) pio.register(r.base, r.size, forwarder.pioDevice(r.name, r.base));
for (const r of start.io.mmio) mmio.register(r.base, r.size, forwarder.mmioDevice(r.name, r.base));
const smp = start.cpuCount > 1;
const trace = data.trace;
const stats = data.stats ? new ExitStats() : undefined;

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

function post(msg: WorkerMessage): void {
  port.postMessage(msg);
}

const IO_DIR = RUN.io.direction;
const IO_SIZE = RUN.io.size;
const IO_PORT = RUN.io.port;
const IO_COUNT = RUN.io.count;
const IO_DATA = RUN.io.data_offset;
const hex = (n: number | bigint) => `0x${n.toString(16)}`;

/** Why the loop ended: the exit status and one line saying why. */
interface Stop {
  status: number;
  reason: string;
  fault?: boolean;
}

/** Port I/O exit. `rep ins/outs` comes as `count` accesses in a row in the data area. */
function handleIo(seq: number): Stop | undefined {
  const out_ = run.getUint8(IO_DIR) === KVM_EXIT_IO_OUT;
  const size = run.getUint8(IO_SIZE) as AccessSize;
  const p = run.getUint16(IO_PORT, true);
  const count = run.getUint32(IO_COUNT, true);
  let off = run.getUint32(IO_DATA, true); // an offset inside the kvm_run mapping (the high half is 0)
  if (trace) traceIo(seq, out_, size, p, count, off);
  try {
    for (let i = 0; i < count; i++, off += size) {
      if (out_) {
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
    if (e instanceof VmStopRequest) return { status: e.status, reason: e.message };
    if (e instanceof IoWorkerGone) return { status: ExitCode.INTERRUPTED, reason: e.message };
    throw e;
  }
  return undefined;
}

function traceIo(seq: number, isOut: boolean, size: number, p: number, count: number, off: number): void {
  let data = "";
  if (isOut) {
    const v =
      size === 1 ? run.getUint8(off) : size === 2 ? run.getUint16(off, true) : run.getUint32(off, true);
    data = ` data=${hex(v)}`;
  }
  out.line(
    `#${seq} IO port=${hex(p)} size=${size} ${isOut ? "out" : "in"}${data}${count > 1 ? ` count=${count}` : ""} rip=${hex(vcpu.getRip())}`,
  );
}

function handleMmio(seq: number): Stop | undefined {
  const addr = Number(run.getBigUint64(RUN.mmio.phys_addr, true));
  const len = run.getUint32(RUN.mmio.len, true);
  const isWrite = run.getUint8(RUN.mmio.is_write) !== 0;
  const size = (len === 1 || len === 2 || len === 4 || len === 8 ? len : 8) as AccessSize;
  const dataOff = RUN.mmio.data;
  try {
    if (isWrite) {
      const v = run.getBigUint64(dataOff, true) & allOnesBig(size);
      if (trace)
        out.line(`#${seq} MMIO addr=${hex(addr)} size=${len} write data=${hex(v)} rip=${hex(vcpu.getRip())}`);
      if (!mmio.write(addr, size, v) && trace && misses.firstMiss(addr))
        out.line(`vmtool: trace: nobody at MMIO ${hex(addr)}: write ignored`);
    } else {
      if (trace) out.line(`#${seq} MMIO addr=${hex(addr)} size=${len} read rip=${hex(vcpu.getRip())}`);
      let v = mmio.read(addr, size);
      if (v === undefined) {
        v = allOnesBig(size);
        if (trace && misses.firstMiss(addr))
          out.line(`vmtool: trace: nobody at MMIO ${hex(addr)}: read as all ones`);
      }
      run.setBigUint64(dataOff, v, true);
    }
  } catch (e) {
    if (e instanceof VmStopRequest) return { status: e.status, reason: e.message };
    if (e instanceof IoWorkerGone) return { status: ExitCode.INTERRUPTED, reason: e.message };
    throw e;
  }
  return undefined;
}

/** Print why the guest cannot go on, and its state. */
function fault(what: string): Stop {
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
      out.line("  (the reset state: kvm_amd INITs a vCPU on a triple fault, so not the state at the fault)");
  } catch (e) {
    out.line(`  (registers unavailable: ${(e as Error).message})`);
  }
  return { status: ExitCode.GUEST_FAULT, reason: what, fault: true };
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
      return `KVM internal error (KVM_EXIT_INTERNAL_ERROR): suberror ${sub}${names[sub] ? ` (${names[sub]})` : ""}`;
    }
    case KVM_EXIT.UNKNOWN:
      return `unknown exit (KVM_EXIT_UNKNOWN): hardware reason ${hex(run.getBigUint64(RUN.hw.hardware_exit_reason, true))}`;
    default:
      return `unexpected exit ${exitReasonName(reason)} (${reason})`;
  }
}

/** A guest halted with IF=0 and nothing pending has nothing left to wake it: the run is over. */
function haltedForGood(): boolean | "wakeable" {
  if (vcpu.getMpState() !== KVM_MP_STATE.HALTED) return false;
  const regs = vcpu.getRegs();
  if (regs.rflags & 0x200n) return "wakeable";
  const ev = vcpu.getVcpuEvents();
  if (
    ev.nmi.pending ||
    ev.nmi.injected ||
    ev.exception.pending ||
    ev.exception.injected ||
    ev.interrupt.injected
  )
    return "wakeable";
  return true;
}

function pauseHere(): void {
  out.flush();
  Atomics.store(ctl, CTL.STATE, VcpuState.PAUSED);
  Atomics.notify(ctl, CTL.STATE);
  post({ type: "paused" });
  for (;;) {
    const req = Atomics.load(ctl, CTL.REQUEST);
    if (!(req & REQ.PAUSE) || req & REQ.STOP) break;
    Atomics.wait(ctl, CTL.REQUEST, req, 1000);
  }
  Atomics.store(ctl, CTL.STATE, VcpuState.RUNNING);
  Atomics.notify(ctl, CTL.STATE);
}

/** Serve the main thread's requests. Returns a Stop when asked to stop or when the guest is done. */
function serveRequests(): Stop | undefined {
  const req = Atomics.load(ctl, CTL.REQUEST);
  if (req & REQ.STOP) return { status: ExitCode.INTERRUPTED, reason: "stopped" };
  if (req & REQ.FLUSH) {
    Atomics.and(ctl, CTL.REQUEST, ~REQ.FLUSH);
    out.flush();
  }
  if (req & REQ.HALT_CHECK) {
    Atomics.and(ctl, CTL.REQUEST, ~REQ.HALT_CHECK);
    out.flush();
    if (smp) {
      // The main thread decides once every vCPU says so (machine.ts); an AP never woken counts as halted.
      const mp = vcpu.getMpState();
      const h =
        mp === KVM_MP_STATE.UNINITIALIZED || mp === KVM_MP_STATE.INIT_RECEIVED ? true : haltedForGood();
      Atomics.store(ctl, CTL.HALT_VERDICT, h === true ? 1 : h === "wakeable" ? 2 : 3);
      Atomics.store(ctl, CTL.HALTED_WAKEABLE, h === "wakeable" ? 1 : 0);
      Atomics.add(ctl, CTL.HALT_SEQ, 1);
      return undefined;
    }
    const h = haltedForGood();
    if (h === true) return { status: ExitCode.OK, reason: "the guest halted with interrupts disabled" };
    Atomics.store(ctl, CTL.HALTED_WAKEABLE, h === "wakeable" ? 1 : 0);
  }
  if (req & REQ.PAUSE) pauseHere();
  return undefined;
}

function runLoop(): Stop {
  let seq = 0;
  let t0 = 0;
  let t1 = 0;
  let t2 = 0;
  for (;;) {
    if (Atomics.load(ctl, CTL.REQUEST) !== 0) {
      const s = serveRequests();
      if (s) return s;
    }
    if (stats) t0 = performance.now();
    let rc = vcpu.runOnce();
    // An AP waiting for INIT/SIPI (KVM_MP_STATE_UNINITIALIZED) returns EAGAIN once the in-kernel local APIC
    // has woken it: simply run it again.
    while (rc === -EAGAIN) rc = vcpu.runOnce();
    if (stats) t1 = performance.now();
    const reason = rc === 0 ? run.getUint32(kvm_run.off.exit_reason, true) : KVM_EXIT.INTR;
    if (rc !== 0 && rc !== -EINTR) return fault(`KVM_RUN failed: ${errnoName(-rc)}`);
    seq++;
    let stop: Stop | undefined;
    let addrKey: string | undefined;
    if (reason === KVM_EXIT.IO) {
      stop = handleIo(seq);
      if (stats)
        addrKey = `port ${hex(run.getUint16(IO_PORT, true))} ${run.getUint8(IO_DIR) === KVM_EXIT_IO_OUT ? "out" : "in"}`;
    } else if (reason === KVM_EXIT.MMIO) {
      stop = handleMmio(seq);
      if (stats)
        addrKey = `mmio ${hex(Number(run.getBigUint64(RUN.mmio.phys_addr, true)))} ${run.getUint8(RUN.mmio.is_write) ? "write" : "read"}`;
    } else if (reason === KVM_EXIT.INTR) {
      // A kick (or another signal): serve requests at the top of the loop.
      kicks.consume();
      Atomics.add(ctl, CTL.KICKS, 1);
      out.flush();
      if (trace && Atomics.load(ctl, CTL.REQUEST) & ~REQ.HALT_CHECK) out.line(`#${seq} INTR (kick)`);
    } else {
      out.flush();
      if (trace) out.line(`#${seq} ${exitReasonName(reason)} rip=${hex(vcpu.getRip())}`);
      if (reason === KVM_EXIT.HLT) {
        // Only without the in-kernel irqchip: nothing can wake the guest then.
        stop = { status: ExitCode.OK, reason: "the guest halted" };
      } else if (reason === KVM_EXIT.SYSTEM_EVENT && run.getUint32(RUN.system_event.type, true) === 1) {
        stop = { status: ExitCode.OK, reason: "the guest shut down" };
      } else {
        stop = fault(exitDetail(reason));
      }
    }
    // Per-exit bookkeeping without a locked instruction on the fast path: the flag is read first and rarely
    // set; the exit count is a progress hint the main thread samples (an aligned 32-bit plain store never
    // tears, and a stale value only delays a quiet-time flush).
    if (reason !== KVM_EXIT.INTR && ctl[CTL.HALTED_WAKEABLE] !== 0)
      Atomics.store(ctl, CTL.HALTED_WAKEABLE, 0);
    ctl[CTL.EXITS] = seq & 0x7fff_ffff;
    if (hooks.length > 0 && !stop) {
      for (const h of hooks) {
        const verdict = h({ seq, reason, reasonName: exitReasonName(reason) });
        if (verdict === "stop") stop = { status: ExitCode.OK, reason: "stopped by an exit hook" };
        else if (verdict === "pause") Atomics.or(ctl, CTL.REQUEST, REQ.PAUSE);
      }
    }
    if (stats) {
      t2 = performance.now();
      stats.add(reason, addrKey, t1 - t0, t2 - t1);
    }
    if (stop) return stop;
  }
}

/** Run the vCPU until the guest or the main thread ends it, then say how it ended. */
function runThread(): void {
  Atomics.store(ctl, CTL.TID, gettid());
  Atomics.store(ctl, CTL.STATE, VcpuState.RUNNING);
  Atomics.notify(ctl, CTL.STATE);
  let result: Stop;
  startupMark("first KVM_RUN");
  try {
    result = runLoop();
  } catch (e) {
    out.flush();
    result = {
      status: ExitCode.INTERNAL,
      reason: `internal error in the vCPU thread: ${(e as Error).stack ?? e}`,
    };
  }
  out.flush();
  startupMark(`run loop ended: ${result.reason}`);
  Atomics.store(ctl, CTL.STATE, VcpuState.STOPPED);
  Atomics.notify(ctl, CTL.STATE);
  post({
    type: "done",
    status: result.status,
    reason: result.reason,
    fault: result.fault ?? false,
    stats: stats?.summary(),
  });
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
        status: ExitCode.INTERNAL,
        reason: `exit hook module failed to load: ${(e as Error).stack ?? e}`,
        fault: false,
      });
    });
