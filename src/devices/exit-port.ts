// QEMU's isa-debug-exit convention on port 0xF4: a guest writes V and the VM stops; `vmtool run` then exits
// with status (V << 1) | 1 (src/cli/exit-status.ts says how the OS's 8 bits keep it).
//
// Width: the whole value of the access is used (an `outl` of 0x100 gives V = 0x100), as QEMU does.
// Reads return all ones, like an empty port: the port is write-only.
import { allOnes } from "./bus.js";
import { type AccessSize, type PioDevice, GuestExitRequest } from "./types.js";

export class ExitPort implements PioDevice {
  readonly name = "exit-port";

  pioRead(_offset: number, size: AccessSize): number {
    return allOnes(size);
  }

  /** Ends the run: throws GuestExitRequest with the value written, which the run loop reports. */
  pioWrite(_offset: number, size: AccessSize, value: number): void {
    throw new GuestExitRequest(size >= 4 ? value >>> 0 : value & ((1 << (size * 8)) - 1));
  }
}
