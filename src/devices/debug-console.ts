// The Bochs/QEMU debug console on port 0xE9: a write-only byte stream with no set-up, the simplest way for a
// guest to print. Reading the port returns 0xE9, which guests use to detect it (Bochs' "port E9 hack").
import type { AccessSize, ByteSink, PioDevice } from "./types.js";

/** The value a read of the port returns: its own port number (the presence check). */
export const DEBUG_CONSOLE_MAGIC = 0xe9;

export class DebugConsole implements PioDevice {
  readonly name = "debug-console";
  // One reusable buffer per access size, so a write allocates nothing: the sink must consume or copy it
  // before returning.
  private readonly buffers = [1, 2, 3, 4].map((n) => new Uint8Array(n));

  constructor(private readonly sink: ByteSink) {}

  /** Reads 0xE9 in every byte of the access (a 2-byte read gives 0xE9E9), like QEMU's debugcon. */
  pioRead(_offset: number, size: AccessSize): number {
    let v = 0;
    for (let i = 0; i < Math.min(size, 4); i++) v = v * 256 + DEBUG_CONSOLE_MAGIC;
    return v;
  }

  /** Writes the access's bytes, lowest first: `outb` prints one byte, `outw`/`outl` print 2/4 (little-endian). */
  pioWrite(_offset: number, size: AccessSize, value: number): void {
    const n = Math.min(size, 4);
    const buf = this.buffers[n - 1];
    for (let i = 0; i < n; i++) buf[i] = (value >>> (8 * i)) & 0xff;
    this.sink(buf);
  }
}
