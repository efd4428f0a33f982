// The vCPU thread's side of device forwarding: stand-ins on the vCPU's own buses for the devices the I/O
// worker owns. An access fills this vCPU's request slot, rings the I/O worker's doorbell and waits for the
// reply (io-protocol.ts). Only register accesses travel this way (UART bytes, virtio set-up and interrupt
// acknowledgement); virtio queue notifies never reach a vCPU thread: they are ioeventfds.
import { signalEventfd } from "../vm/eventfds.js";
import type { AccessSize, MmioDevice, PioDevice } from "../devices/types.js";
import { CTL, REQ } from "../vm/control-block.js";
import {
  IO_CTL,
  IO_OP,
  IoState,
  SLOT,
  SLOT_STATE,
  ioCtlView,
  slotDataViews,
  slotView,
} from "./io-protocol.js";

/**
 * Thrown when a forwarded access cannot be answered: the I/O worker is gone, or this vCPU was asked to stop
 * while it waited (a busy I/O worker must not delay a stop; its late reply to the abandoned slot is harmless).
 */
export class ForwardAbandoned extends Error {
  constructor(readonly why: "io-worker-gone" | "stop-requested") {
    super(
      why === "io-worker-gone" ? "the I/O worker has stopped" : "stopped while waiting for the I/O worker",
    );
    this.name = "ForwardAbandoned";
  }
}

/** How long one wait for a reply lasts before the vCPU looks at its own requests and the worker's state. */
const WAIT_SLICE_MS = 50;

export class IoForwarder {
  private readonly slot: Int32Array;
  private readonly ctl: Int32Array;
  private readonly data: Uint8Array[];

  /**
   * `vcpuCtl`: this vCPU's control block (a stop request ends a wait); `wake`: ask the main thread to start
   * the I/O worker (called once per machine, by whichever vCPU first finds it dormant).
   */
  constructor(
    io: SharedArrayBuffer,
    vcpuIndex: number,
    private readonly doorbell: number,
    private readonly vcpuCtl: Int32Array,
    private readonly wake: () => void = () => {},
  ) {
    this.slot = slotView(io, vcpuIndex);
    this.ctl = ioCtlView(io);
    this.data = slotDataViews(io, vcpuIndex);
  }

  /** Forward one access whose data is already in the slot; returns whether a device claimed it. */
  private forward(op: number, addr: number, size: number): boolean {
    const s = this.slot;
    s[SLOT.OP] = op;
    s[SLOT.SIZE] = size;
    s[SLOT.ADDR_LO] = addr % 0x1_0000_0000;
    s[SLOT.ADDR_HI] = Math.floor(addr / 0x1_0000_0000);
    Atomics.store(s, SLOT.STATE, SLOT_STATE.REQUEST);
    if (
      Atomics.load(this.ctl, IO_CTL.STATE) === IoState.DORMANT &&
      Atomics.compareExchange(this.ctl, IO_CTL.STATE, IoState.DORMANT, IoState.STARTING) === IoState.DORMANT
    )
      this.wake();
    signalEventfd(this.doorbell);
    while (Atomics.load(s, SLOT.STATE) !== SLOT_STATE.REPLY) {
      const st = Atomics.load(this.ctl, IO_CTL.STATE);
      if (st === IoState.FAILED || st === IoState.STOPPED) throw new ForwardAbandoned("io-worker-gone");
      if (Atomics.load(this.vcpuCtl, CTL.REQUEST) & REQ.STOP) throw new ForwardAbandoned("stop-requested");
      Atomics.wait(s, SLOT.STATE, SLOT_STATE.REQUEST, WAIT_SLICE_MS);
    }
    Atomics.store(s, SLOT.STATE, SLOT_STATE.IDLE);
    return s[SLOT.HANDLED] === 1;
  }

  /** A port-bus stand-in for the device at `base` (offsets are turned back into port numbers). */
  pioDevice(name: string, base: number): PioDevice {
    return {
      name,
      pioRead: (offset: number, size: AccessSize) => {
        this.forward(IO_OP.PIO_READ, base + offset, size);
        return this.slot[SLOT.DATA_LO] >>> 0;
      },
      pioWrite: (offset: number, size: AccessSize, value: number) => {
        this.slot[SLOT.DATA_LO] = value;
        this.forward(IO_OP.PIO_WRITE, base + offset, size);
      },
    };
  }

  /** An MMIO-bus stand-in for the device at `base`. */
  mmioDevice(name: string, base: number): MmioDevice {
    return {
      name,
      mmioRead: (offset: number, data: Uint8Array) => {
        this.forward(IO_OP.MMIO_READ, base + offset, data.length);
        data.set(this.data[data.length]);
      },
      mmioWrite: (offset: number, data: Uint8Array) => {
        this.data[data.length].set(data);
        this.forward(IO_OP.MMIO_WRITE, base + offset, data.length);
      },
    };
  }
}
