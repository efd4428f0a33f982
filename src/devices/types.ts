// The contract between devices and the run loop. A device is a plain state machine: it reacts to register
// accesses and to input pushed into it, and reports what it wants done (bytes to output, an interrupt line
// level, a stop request) through the small interfaces below, which the run loop connects to real I/O.
// Devices never touch files, sockets, KVM or threads themselves, so they are unit-testable with no VM.

export type AccessSize = 1 | 2 | 4 | 8;

/** A device on the port-I/O bus. `offset` is relative to the base port it was registered at. */
export interface PioDevice {
  readonly name: string;
  pioRead(offset: number, size: AccessSize): number;
  pioWrite(offset: number, size: AccessSize, value: number): void;
}

/**
 * A device on the MMIO bus. `offset` is relative to the base address it was registered at; `data` holds exactly
 * the bytes of the access, lowest address first (1 to 8 of them: KVM splits an access that crosses a page into
 * pieces of other lengths, 3 and 5 for example, and a device sees each piece as it is). A read fills `data`.
 * `data` is a view the caller reuses: a device must not keep it.
 */
export interface MmioDevice {
  readonly name: string;
  mmioRead(offset: number, data: Uint8Array): void;
  mmioWrite(offset: number, data: Uint8Array): void;
}

/** An interrupt line a device drives (level-triggered, like an ISA IRQ into the in-kernel PIC/IOAPIC). */
export interface IrqLine {
  setLevel(high: boolean): void;
}

/**
 * Where a device's output bytes go (standard output in `vmtool run`, a buffer in tests). A device may call it
 * several times for one request, with views straight into guest RAM (virtio-console passes the guest's own
 * transmit buffers, no copy): the sink must use or copy the bytes before it returns and must not keep the
 * view, whose contents the guest may change at any time after.
 */
export type ByteSink = (bytes: Uint8Array) => void;

/** Thrown by a device whose access ends the run at the guest's request (the exit port: the value written). */
export class GuestExitRequest extends Error {
  constructor(
    /** What the guest wrote, whole (its width is the access's). */
    readonly value: number,
  ) {
    super(`the guest wrote ${value} (0x${value.toString(16)}) to the exit port`);
    this.name = "GuestExitRequest";
  }
}
