// How vCPU threads talk to the I/O worker (io-worker.ts), the one thread that owns every stateful device
// (the UART and the virtio-mmio devices). No runtime imports on purpose: the main thread builds these buffers
// before it loads the KVM bindings.
//
// Each vCPU has a request slot: a few Int32 words in one SharedArrayBuffer. A vCPU that takes a port or MMIO
// exit for a device the I/O worker owns fills its slot, sets STATE to REQUEST, rings the I/O worker's doorbell
// (an eventfd it polls beside the virtio ioeventfds) and waits with Atomics.wait until STATE is REPLY. One
// owner per device means no lock on device state, however many vCPUs touch it.
import type { RunEnd } from "./run-end.js";
import type { BlockFileDescriptor } from "../backends/block-file.js";

/** Words of one slot. */
export const SLOT = {
  STATE: 0,
  OP: 1,
  SIZE: 2,
  ADDR_LO: 3,
  ADDR_HI: 4,
  /** The access's data: a port value in DATA_LO; MMIO bytes, lowest address first, over DATA_LO and DATA_HI. */
  DATA_LO: 5,
  DATA_HI: 6,
  /** 1 when a device claimed the access, 0 when nobody did (reads then return all ones). */
  HANDLED: 7,
} as const;
export const SLOT_WORDS = 8;

export const SLOT_STATE = { IDLE: 0, REQUEST: 1, REPLY: 2 } as const;
export const IO_OP = { PIO_READ: 0, PIO_WRITE: 1, MMIO_READ: 2, MMIO_WRITE: 3 } as const;

/** Words in front of the slots: the I/O worker's state, seen by everyone. */
export const IO_CTL = {
  /** IoState. */
  STATE: 0,
  /** Set by the main thread: leave the poll loop. */
  STOP: 1,
  /** Host input is waiting in the stdin queue (the main thread rings the doorbell after setting it). */
  INPUT: 2,
  /** How many requests were forwarded (stats, benchmarks). */
  FORWARDED: 3,
  /** How many ioeventfd notifications the I/O worker served. */
  NOTIFIES: 4,
  /** StartSignal (control-block.ts): the I/O worker waits on this word for its start message. */
  START: 5,
} as const;
const IO_CTL_WORDS = 8;

/**
 * DORMANT: not started. A machine with several vCPUs and no virtio device starts its I/O worker on the first
 * access to COM1, which many short runs never make (docs/run.md, "Start-up"); with one vCPU, COM1 is that
 * vCPU thread's own and the I/O worker stays DORMANT. The vCPU that finds it DORMANT swaps in STARTING and asks
 * the main thread to start it; its request waits in its slot meanwhile.
 */
export const IoState = { STARTING: 0, RUNNING: 1, STOPPED: 2, FAILED: 3, DORMANT: 4 } as const;

export function createIoBuffer(vcpus: number): SharedArrayBuffer {
  return new SharedArrayBuffer((IO_CTL_WORDS + vcpus * SLOT_WORDS) * 4);
}

/** The Int32Array view of vCPU `index`'s slot. */
export function slotView(buffer: SharedArrayBuffer, index: number): Int32Array {
  return new Int32Array(buffer, (IO_CTL_WORDS + index * SLOT_WORDS) * 4, SLOT_WORDS);
}

/** Views of vCPU `index`'s data words as bytes, one per access length 0..8 (MMIO data travels as bytes). */
export function slotDataViews(buffer: SharedArrayBuffer, index: number): Uint8Array[] {
  const at = (IO_CTL_WORDS + index * SLOT_WORDS + SLOT.DATA_LO) * 4;
  return Array.from({ length: 9 }, (_, len) => new Uint8Array(buffer, at, len));
}

export function ioCtlView(buffer: SharedArrayBuffer): Int32Array {
  return new Int32Array(buffer, 0, IO_CTL_WORDS);
}

/** A virtio device as the main thread planned it: what it is, where it sits, its eventfds. */
export interface VirtioDeviceSpec {
  type: "rng" | "console" | "blk";
  base: number;
  size: number;
  irq: number;
  /** blk: the backing file and whether it is read-only. */
  path?: string;
  readOnly?: boolean;
  /** blk: the disk as the main thread opened and locked it (BlockFileDescriptor), served without reopening. */
  opened?: BlockFileDescriptor;
  /** One ioeventfd per queue (datamatch = queue index on QueueNotify); -1 when none. */
  notifyFds: number[];
  /** The irqfd of the device's interrupt line; -1: KVM_IRQ_LINE instead. */
  irqFd: number;
}

/** The I/O worker's start message. */
export interface IoWorkerStart {
  vmFd: number;
  memory: import("../memory/guest-memory.js").RegionDescriptor[];
  irqchip: boolean;
  /** The doorbell eventfd. */
  doorbell: number;
  virtio: VirtioDeviceSpec[];
}

export interface IoWorkerData {
  io: SharedArrayBuffer;
  vcpus: number;
  stdinQueue: SharedArrayBuffer;
  /** Standard input goes to virtio-console instead of the UART. */
  stdinToConsole: boolean;
  trace: boolean;
}

export type IoWorkerMessage =
  | { type: "loaded" } // its modules (koffi among them) are loaded: from now on terminate() is safe
  | { type: "failed"; reason: string }
  /** Its output could not be written (standard output closed or failing): the run must end. */
  | { type: "output"; end: RunEnd }
  | { type: "done"; devices: DeviceReport[] };

/** What a device of the I/O worker counted during the run (for --stats). */
export interface DeviceReport {
  name: string;
  counters: Record<string, number>;
  /** Why the device stopped (DEVICE_NEEDS_RESET) and was not reset since, if it did. */
  broken?: string;
}
