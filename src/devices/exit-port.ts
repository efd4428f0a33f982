// QEMU's isa-debug-exit convention on port 0xF4: a guest writes V and the VM stops; vmtool exits with
// status (V << 1) | 1. The status is always odd, so it never collides with vmtool's own (even) statuses.
//
// Width: the whole value of the access is used (an `outl` of 0x100 gives V = 0x100), as QEMU does. A process
// exit status keeps only 8 bits, so the status the shell sees is ((V << 1) | 1) & 0xFF: V = 0..127 map to
// 1, 3, ..., 255 one to one; V = 128 gives 1 again. Only V's low 7 bits matter in the end.
// Reads return all ones, like an empty port: the port is write-only.
import { allOnes } from "./bus.js";
import { type AccessSize, type PioDevice, VmStopRequest } from "./types.js";

/** The exit status a write of `value` asks for, as the OS will keep it (8 bits). */
export function exitStatusFor(value: number): number {
  return (((value >>> 0) % 128) * 2 + 1) & 0xff;
}

export class ExitPort implements PioDevice {
  readonly name = "exit-port";

  pioRead(_offset: number, size: AccessSize): number {
    return allOnes(size);
  }

  /** Stops the VM: throws VmStopRequest, which the run loop turns into vmtool's exit status. */
  pioWrite(_offset: number, size: AccessSize, value: number): void {
    const v = size >= 4 ? value >>> 0 : value & ((1 << (size * 8)) - 1);
    const status = exitStatusFor(v);
    const full = v * 2 + 1; // the unclipped (V << 1) | 1, for the message
    throw new VmStopRequest(
      status,
      full === status
        ? `the guest wrote ${v} to the exit port: exit status ${status}`
        : `the guest wrote 0x${v.toString(16)} to the exit port: (V << 1) | 1 = 0x${full.toString(16)}, ` +
            `of which the OS keeps 8 bits: exit status ${status}`,
    );
  }
}
