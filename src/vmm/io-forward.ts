// The vCPU thread's side of device forwarding: stand-ins on the vCPU's own buses for the devices the I/O
// worker owns. An access fills this vCPU's request slot, rings the I/O worker's doorbell and waits for the
// reply (io-protocol.ts). Only register accesses travel this way (UART bytes, virtio set-up and interrupt
// acknowledgement); virtio queue notifies never reach a vCPU thread: they are ioeventfds.
import * as libc from "../kvm/libc.js";
import type { AccessSize, MmioDevice, PioDevice } from "../devices/types.js";
import { IO_CTL, IO_OP, IoState, SLOT, SLOT_STATE, ioCtlView, slotView } from "./io-protocol.js";

/** Thrown when the I/O worker is gone: the vCPU cannot go on without its devices. */
export class IoWorkerGone extends Error {}

export class IoForwarder {
  private readonly slot: Int32Array;
  private readonly ctl: Int32Array;
  private readonly ring = new Uint8Array(new BigUint64Array([1n]).buffer);

  /** `wake`: ask the main thread to start the I/O worker (called once per machine, by whichever vCPU first
   * finds it dormant). */
  constructor(
    io: SharedArrayBuffer,
    vcpuIndex: number,
    private readonly doorbell: number,
    private readonly wake: () => void = () => {},
  ) {
    this.slot = slotView(io, vcpuIndex);
    this.ctl = ioCtlView(io);
  }

  /** Forward one access; returns the value read (reads) and whether a device claimed it. */
  access(op: number, addr: number, size: AccessSize, value: bigint): { value: bigint; handled: boolean } {
    const s = this.slot;
    s[SLOT.OP] = op;
    s[SLOT.SIZE] = size;
    s[SLOT.ADDR_LO] = addr % 2 ** 32;
    s[SLOT.ADDR_HI] = Math.floor(addr / 2 ** 32);
    s[SLOT.VALUE_LO] = Number(value & 0xffff_ffffn);
    s[SLOT.VALUE_HI] = Number((value >> 32n) & 0xffff_ffffn);
    Atomics.store(s, SLOT.STATE, SLOT_STATE.REQUEST);
    if (
      Atomics.load(this.ctl, IO_CTL.STATE) === IoState.DORMANT &&
      Atomics.compareExchange(this.ctl, IO_CTL.STATE, IoState.DORMANT, IoState.STARTING) === IoState.DORMANT
    )
      this.wake();
    libc.write(this.doorbell, this.ring, 8);
    while (Atomics.load(s, SLOT.STATE) !== SLOT_STATE.REPLY) {
      const st = Atomics.load(this.ctl, IO_CTL.STATE);
      if (st === IoState.FAILED || st === IoState.STOPPED)
        throw new IoWorkerGone("the I/O worker has stopped");
      Atomics.wait(s, SLOT.STATE, SLOT_STATE.REQUEST, 200);
    }
    Atomics.store(s, SLOT.STATE, SLOT_STATE.IDLE);
    const v = BigInt(s[SLOT.VALUE_LO] >>> 0) | (BigInt(s[SLOT.VALUE_HI] >>> 0) << 32n);
    return { value: v, handled: s[SLOT.HANDLED] === 1 };
  }

  /** A port-bus stand-in for the device at `base` (offsets are turned back into port numbers). */
  pioDevice(name: string, base: number): PioDevice {
    return {
      name,
      pioRead: (offset, size) => Number(this.access(IO_OP.PIO_READ, base + offset, size, 0n).value),
      pioWrite: (offset, size, value) => {
        this.access(IO_OP.PIO_WRITE, base + offset, size, BigInt(value >>> 0));
      },
    };
  }

  /** An MMIO-bus stand-in for the device at `base`. */
  mmioDevice(name: string, base: number): MmioDevice {
    return {
      name,
      mmioRead: (offset, size) => this.access(IO_OP.MMIO_READ, base + offset, size, 0n).value,
      mmioWrite: (offset, size, value) => {
        this.access(IO_OP.MMIO_WRITE, base + offset, size, value);
      },
    };
  }
}
