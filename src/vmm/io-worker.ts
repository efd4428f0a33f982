// The I/O worker: the one thread that owns every stateful device of a VM — COM1 (16550A) and each virtio-mmio
// device (a machine with one vCPU and no virtio device has none: its vCPU thread owns COM1). It sleeps in
// poll() (a synchronous koffi call in its own thread: the main event loop stays free) on
//   - the doorbell eventfd: a vCPU forwarded a register access (io-protocol.ts), host input arrived, or stop;
//   - one ioeventfd per virtio queue: KVM signals the guest's QueueNotify write there without any exit to
//     user space, and this thread runs the device;
// and raises interrupts itself: virtio devices through their irqfd (KVM_IRQFD, an edge on the ISA line), the
// UART through KVM_IRQ_LINE, because its line is level-triggered and must fall when the guest reads IIR/RBR.
// With one owner, device state needs no lock however many vCPUs touch it (docs/run.md, "Devices and threads").
import { parentPort, workerData } from "node:worker_threads";
import * as libc from "../kvm/libc.js";
import { receiveStart } from "./thread-start.js";
import { setIrqLine } from "../vm/irq-line.js";
import { GuestMemory } from "../memory/guest-memory.js";
import { MmioBus, PioBus, allOnes } from "../devices/bus.js";
import { SharedByteQueue } from "../devices/byte-queue.js";
import { createCom1 } from "./com1.js";
import { signalEventfd } from "../vm/eventfds.js";
import { PORTS } from "../vm/machine-layout.js";
import { VirtioMmioTransport } from "../devices/virtio/mmio-transport.js";
import type { VirtioDevice } from "../devices/virtio/device.js";
import { VirtioRng } from "../devices/virtio/rng.js";
import { VirtioConsole } from "../devices/virtio/console.js";
import { VirtioBlk } from "../devices/virtio/blk.js";
import { FileBlockBackend } from "../backends/block-file.js";
import { Output } from "./output.js";
import { startupMark } from "./startup-marks.js";
import {
  IO_CTL,
  IO_OP,
  IoState,
  SLOT,
  SLOT_STATE,
  ioCtlView,
  slotDataViews,
  slotView,
  type IoWorkerData,
  type IoWorkerMessage,
  type IoWorkerStart,
} from "./io-protocol.js";

const POLLIN = 1;
/**
 * Rounds of serving at the end of a run. The vCPUs are stopped, so nothing new arrives: one round serves what
 * is left, the next finds nothing; the bound only guards against an fd that keeps reporting itself ready.
 */
const MAX_DRAIN_ROUNDS = 16;
/** This thread's nice value, where the process may lower it (see the call below). */
const IO_WORKER_NICE = -5;
/** The longest a partial output line (a prompt) waits in the buffer, however busy the guest keeps this thread. */
const PARTIAL_LINE_MS = 50;

const data = workerData as IoWorkerData;
const port = parentPort ?? notAWorker();
const ctl = ioCtlView(data.io);
startupMark("I/O worker's modules loaded");
port.postMessage({ type: "loaded" } satisfies IoWorkerMessage);
const start = receiveStart(port, ctl, IO_CTL.START) as IoWorkerStart;
startupMark("I/O worker started");
// Guest RAM is viewed only for virtio devices (their queues): V8 counts a 64 MiB view as external memory and
// collects garbage at once, 5-10 ms of a short run (docs/run.md, "Start-up").
let memory: GuestMemory | undefined;
const out = new Output();
/** Closed when this thread ends (disk backends). */
const closables: { close(): void }[] = [];
const pio = new PioBus();
const mmio = new MmioBus();
const stdinQueue = new SharedByteQueue(data.stdinQueue);
const trace = data.trace ? (line: string) => out.line(`vmtool: ${line}`) : undefined;

const com1 = createCom1(
  out.write,
  start.irqchip ? start.vmFd : undefined,
  data.stdinToConsole ? undefined : stdinQueue,
);
pio.register(PORTS.COM1, 8, com1);

let console_: VirtioConsole | undefined;
/** poll() entries after the doorbell: [transport, queue index] per ioeventfd. */
const notifyTargets: [VirtioMmioTransport, number][] = [];
const pollFds: number[] = [start.doorbell];
const transports: VirtioMmioTransport[] = [];
for (const spec of start.virtio) {
  let device: VirtioDevice;
  if (spec.type === "rng") device = new VirtioRng();
  else if (spec.type === "console") device = console_ = new VirtioConsole(out.write);
  else {
    // A disk the main thread opened and locked is served as it is (it keeps the lock for the whole run and
    // closes it afterwards); a library caller may name only a path, which this thread then opens itself.
    const backend = spec.opened
      ? FileBlockBackend.adopt(spec.opened)
      : FileBlockBackend.open(spec.path ?? "", spec.readOnly ?? false);
    closables.push(backend);
    device = new VirtioBlk(backend);
  }
  const irqFd = spec.irqFd;
  memory ??= GuestMemory.fromDescriptors(start.memory);
  const t = new VirtioMmioTransport(device, {
    memory,
    name: `${device.type}@0x${spec.base.toString(16)}`,
    trace,
    irq: {
      setLevel: (high) => {
        if (!high) return; // an irqfd is an edge: the ISA line pulses once per rising interrupt status
        if (irqFd >= 0) signalEventfd(irqFd);
        else if (start.irqchip) {
          setIrqLine(start.vmFd, spec.irq, true);
          setIrqLine(start.vmFd, spec.irq, false);
        }
      },
    },
  });
  mmio.register(spec.base, spec.size, t);
  transports.push(t);
  spec.notifyFds.forEach((fd, q) => {
    if (fd < 0) return;
    pollFds.push(fd);
    notifyTargets.push([t, q]);
  });
}

const pollBuf = new Uint8Array(8 * pollFds.length);
const pollView = new DataView(pollBuf.buffer);
pollFds.forEach((fd, i) => {
  pollView.setInt32(i * 8, fd, true);
  pollView.setInt16(i * 8 + 4, POLLIN, true);
});
const drain = new Uint8Array(8);
const slots = Array.from({ length: data.vcpus }, (_, i) => slotView(data.io, i));
const slotData = Array.from({ length: data.vcpus }, (_, i) => slotDataViews(data.io, i));

/** Serve one forwarded register access. */
function serve(index: number): void {
  const slot = slots[index];
  const op = slot[SLOT.OP];
  const size = slot[SLOT.SIZE];
  const addr = (slot[SLOT.ADDR_LO] >>> 0) + (slot[SLOT.ADDR_HI] >>> 0) * 0x1_0000_0000;
  let handled = true;
  if (op === IO_OP.PIO_READ) {
    const v = pio.read(addr, size as 1 | 2 | 4);
    handled = v >= 0;
    slot[SLOT.DATA_LO] = handled ? v : allOnes(size as 1 | 2 | 4);
  } else if (op === IO_OP.PIO_WRITE) {
    handled = pio.write(addr, size as 1 | 2 | 4, slot[SLOT.DATA_LO] >>> 0);
  } else {
    const bytes = slotData[index][Math.min(size, 8)];
    handled = op === IO_OP.MMIO_READ ? mmio.read(addr, bytes) : mmio.write(addr, bytes);
  }
  slot[SLOT.HANDLED] = handled ? 1 : 0;
  Atomics.add(ctl, IO_CTL.FORWARDED, 1);
  Atomics.store(slot, SLOT.STATE, SLOT_STATE.REPLY);
  Atomics.notify(slot, SLOT.STATE);
}

function takeInput(): void {
  if (!Atomics.exchange(ctl, IO_CTL.INPUT, 0)) return;
  if (console_) {
    const bytes: number[] = [];
    for (let b = stdinQueue.shift(); b >= 0; b = stdinQueue.shift()) bytes.push(b);
    if (bytes.length > 0) console_.push(Uint8Array.from(bytes)); // it hands them to the receiveq itself
  } else {
    com1.pollInput();
  }
}

/**
 * Serve what poll() found readable; returns how many things were served. Each eventfd is read (which resets
 * it) before what it stands for is served, so an event that arrives meanwhile makes it readable again: an
 * ioeventfd before its queue, the doorbell before the request slots and the input ring (whoever fills a slot
 * or the ring rings the doorbell afterwards), which are therefore looked at only when the doorbell rang.
 */
function serveReady(): number {
  let served = 0;
  for (let i = 1; i < pollFds.length; i++) {
    if ((pollView.getInt16(i * 8 + 6, true) & POLLIN) === 0) continue;
    // A failed read (nothing there after all) serves nothing.
    if (libc.read(pollFds[i], drain, 8) !== 8) continue;
    served++;
    const target = notifyTargets[i - 1];
    Atomics.add(ctl, IO_CTL.NOTIFIES, 1);
    target[0].notify(target[1]);
  }
  if ((pollView.getInt16(6, true) & POLLIN) !== 0 && libc.read(start.doorbell, drain, 8) === 8)
    served += serveDoorbell();
  return served;
}

/** The doorbell rang: forwarded register accesses waiting in their slots, host input, stop. */
function serveDoorbell(): number {
  let served = 1;
  for (let i = 0; i < slots.length; i++)
    if (Atomics.load(slots[i], SLOT.STATE) === SLOT_STATE.REQUEST) {
      serve(i);
      served++;
    }
  takeInput();
  return served;
}

function pollOnce(timeoutMs: number): number {
  for (;;) {
    const n = libc.poll(pollBuf, pollFds.length, timeoutMs);
    if (n >= 0) return n;
    if (libc.errno() !== libc.EINTR) throw new libc.SysError("poll", libc.errno());
  }
}

function loop(): void {
  let outputReported = false;
  for (;;) {
    // A partial line is flushed once it is PARTIAL_LINE_MS old, even while the guest keeps this thread busy
    // (a prompt, then a loop polling the UART's LSR: every poll is a forwarded access). The clock is read only
    // while output waits: this loop runs once per request.
    let timeout = -1;
    if (out.buffered > 0) {
      if (out.age() >= PARTIAL_LINE_MS) out.flush();
      if (out.buffered > 0) timeout = Math.max(1, Math.ceil(PARTIAL_LINE_MS - out.age()));
    }
    if (pollOnce(timeout) > 0) serveReady();
    if (out.failure && !outputReported) {
      // The run must end; the devices keep being served (a disk write the guest posts is not lost) until the
      // main thread has stopped the vCPUs and says stop.
      outputReported = true;
      port.postMessage({ type: "output", end: out.failure } satisfies IoWorkerMessage);
    }
    if (Atomics.load(ctl, IO_CTL.STOP)) {
      // The vCPUs are stopped: serve what they left behind (a notify KVM accepted just before the guest
      // halted, a request a vCPU posted) until nothing is left, so no write the guest made is lost.
      for (let round = 0; round < MAX_DRAIN_ROUNDS && pollOnce(0) > 0 && serveReady() > 0; round++) {
        /* again: serving may have taken long enough for more to arrive */
      }
      // Chains made available without a notify (the driver may rely on the device draining its queues) are
      // served too: one last pass over every queue.
      for (const t of transports) for (const q of t.queues) t.process(q);
      return;
    }
  }
}

// A request's latency is mostly this thread's wake-up: KVM signals an ioeventfd from the vCPU's thread, so
// the scheduler wakes this thread on the vCPU's CPU, where it must preempt the vCPU, which spins while it
// waits for the device. The two share the CPU fairly (the same weight), and after this thread has run a
// little more than its share it is not eligible when woken: it then waits for the spinning vCPU's time slice
// to end, milliseconds, every few hundred requests (measured: 15-35% of the time of 1000 virtio-rng requests
// lost that way). A lower nice value gives it a larger weight than the vCPU thread's, so it preempts at once;
// it only ever runs for the guest's requests. Lowering nice needs CAP_SYS_NICE (or RLIMIT_NICE): without
// it, the thread keeps the default and only latency differs.
libc.setThreadNice(0, IO_WORKER_NICE);
Atomics.store(ctl, IO_CTL.STATE, IoState.RUNNING);
let msg: IoWorkerMessage = { type: "done", devices: [] };
let final: number = IoState.STOPPED;
try {
  loop();
} catch (e) {
  msg = { type: "failed", reason: `internal error in the I/O worker: ${(e as Error).stack ?? String(e)}` };
  final = IoState.FAILED;
}
out.flush();
if (msg.type === "done")
  msg.devices = transports.map((t) => ({
    name: t.name,
    counters: t.device.counters?.() ?? {},
    broken: t.brokenReason,
  }));
for (const c of closables) {
  try {
    c.close();
  } catch {
    // Closing a file cannot lose data that was written; nothing to report at this point.
  }
}
port.postMessage(msg);
// The final state only once the output is flushed: the main thread then lets this thread end on its own.
Atomics.store(ctl, IO_CTL.STATE, final);
Atomics.notify(ctl, IO_CTL.STATE);
// Wake any vCPU still waiting for a reply: it sees FAILED/STOPPED and gives up.
for (const s of slots) Atomics.notify(s, SLOT.STATE);

function notAWorker(): never {
  throw new Error("io-worker.js runs as a worker thread of vmtool run");
}
