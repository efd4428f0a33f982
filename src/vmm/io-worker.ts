// The I/O worker: the one thread that owns every stateful device of a VM — COM1 (16550A) and each virtio-mmio
// device. It sleeps in poll() (a synchronous koffi call in its own thread: the main event loop stays free) on
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
import { MmioBus, PioBus, allOnes, allOnesBig } from "../devices/bus.js";
import { SharedByteQueue } from "../devices/byte-queue.js";
import { Uart16550 } from "../devices/uart16550.js";
import { IRQS, PORTS } from "../vm/machine-layout.js";
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
  slotView,
  type IoWorkerData,
  type IoWorkerMessage,
  type IoWorkerStart,
} from "./io-protocol.js";

const POLLIN = 1;
/** Flush a partial output line after this long without new work. */
const QUIET_FLUSH_MS = 50;

const data = workerData as IoWorkerData;
const port = parentPort!;
const ctl = ioCtlView(data.io);
startupMark("I/O worker's modules loaded");
port.postMessage({ type: "loaded" } satisfies IoWorkerMessage);
const start = receiveStart<IoWorkerStart>(port, ctl, IO_CTL.START);
startupMark("I/O worker started");
// Guest RAM is viewed only for virtio devices (their queues): V8 counts a 64 MiB view as external memory and
// collects garbage at once, 5-10 ms of a short run (docs/run.md, "Start-up").
let memory: GuestMemory | undefined;
const out = new Output();
const pio = new PioBus();
const mmio = new MmioBus();
const stdinQueue = new SharedByteQueue(data.stdinQueue);
const trace = data.trace ? (line: string) => out.line(`vmtool: ${line}`) : undefined;

const com1 = new Uart16550({
  name: `com1 (16550A, irq ${IRQS.COM1})`,
  sink: out.write,
  irq: start.irqchip ? { setLevel: (high) => setIrqLine(start.vmFd, IRQS.COM1, high) } : undefined,
  input: data.stdinToConsole ? undefined : stdinQueue,
});
pio.register(PORTS.COM1, 8, com1);

const one = new BigUint64Array([1n]);
const oneBytes = new Uint8Array(one.buffer);
let console_: VirtioConsole | undefined;
/** poll() entries after the doorbell: [transport, queue index] per ioeventfd. */
const notifyTargets: [VirtioMmioTransport, number][] = [];
const pollFds: number[] = [start.doorbell];
const transports: VirtioMmioTransport[] = [];
for (const spec of start.virtio) {
  let device: VirtioDevice;
  if (spec.type === "rng") device = new VirtioRng();
  else if (spec.type === "console") device = console_ = new VirtioConsole(out.write);
  else device = new VirtioBlk(new FileBlockBackend(spec.path!, spec.readOnly ?? false));
  const irqFd = spec.irqFd;
  memory ??= GuestMemory.fromDescriptors(start.memory);
  const t = new VirtioMmioTransport(device, {
    memory,
    name: `${device.type}@0x${spec.base.toString(16)}`,
    trace,
    irq: {
      setLevel: (high) => {
        if (!high) return; // an irqfd is an edge: the ISA line pulses once per rising interrupt status
        if (irqFd >= 0) libc.write(irqFd, oneBytes, 8);
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

/** Serve one forwarded register access. */
function serve(slot: Int32Array): void {
  const op = slot[SLOT.OP];
  const size = slot[SLOT.SIZE] as 1 | 2 | 4 | 8;
  const addr = (slot[SLOT.ADDR_LO] >>> 0) + (slot[SLOT.ADDR_HI] >>> 0) * 2 ** 32;
  let handled = 1;
  if (op === IO_OP.PIO_READ) {
    const v = pio.read(addr, size);
    if (v < 0) handled = 0;
    slot[SLOT.VALUE_LO] = v < 0 ? allOnes(size) : v;
  } else if (op === IO_OP.PIO_WRITE) {
    handled = pio.write(addr, size, slot[SLOT.VALUE_LO] >>> 0) ? 1 : 0;
  } else if (op === IO_OP.MMIO_READ) {
    let v = mmio.read(addr, size);
    if (v === undefined) {
      handled = 0;
      v = allOnesBig(size);
    }
    slot[SLOT.VALUE_LO] = Number(v & 0xffff_ffffn);
    slot[SLOT.VALUE_HI] = Number(v >> 32n);
  } else {
    const v = BigInt(slot[SLOT.VALUE_LO] >>> 0) | (BigInt(slot[SLOT.VALUE_HI] >>> 0) << 32n);
    handled = mmio.write(addr, size, v) ? 1 : 0;
  }
  slot[SLOT.HANDLED] = handled;
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

function loop(): void {
  let quiet = 0;
  for (;;) {
    const n = libc.poll(pollBuf, pollFds.length, quiet === 0 ? QUIET_FLUSH_MS : -1);
    if (n < 0) {
      if (libc.errno() === libc.EINTR) continue;
      throw new libc.SysError("poll", libc.errno());
    }
    if (n === 0) {
      out.flush();
      quiet = 1;
      continue;
    }
    quiet = 0;
    for (let i = 0; i < pollFds.length; i++) {
      if (pollView.getInt16(i * 8 + 6, true) === 0) continue;
      libc.read(pollFds[i], drain, 8); // an eventfd: reading resets its counter
      if (i === 0) continue;
      const [t, q] = notifyTargets[i - 1];
      Atomics.add(ctl, IO_CTL.NOTIFIES, 1);
      t.notify(q);
    }
    for (const s of slots) if (Atomics.load(s, SLOT.STATE) === SLOT_STATE.REQUEST) serve(s);
    takeInput();
    if (Atomics.load(ctl, IO_CTL.STOP)) return;
  }
}

Atomics.store(ctl, IO_CTL.STATE, IoState.RUNNING);
let msg: IoWorkerMessage = { type: "done" };
let final: number = IoState.STOPPED;
try {
  loop();
} catch (e) {
  msg = { type: "failed", reason: `internal error in the I/O worker: ${(e as Error).stack ?? e}` };
  final = IoState.FAILED;
}
out.flush();
port.postMessage(msg);
// The final state only once the output is flushed: the main thread then lets this thread end on its own.
Atomics.store(ctl, IO_CTL.STATE, final);
Atomics.notify(ctl, IO_CTL.STATE);
// Wake any vCPU still waiting for a reply: it sees FAILED/STOPPED and gives up.
for (const s of slots) Atomics.notify(s, SLOT.STATE);
