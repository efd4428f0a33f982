// kvm_run decoded once per exit into one reused object (kvm-ioctls' VcpuExit, without an allocation): the exit
// reason, and for port I/O and MMIO the access with its real length and direction. MMIO data is a view of
// exactly `len` bytes of kvm_run's own data area (no copy, no BigInt): a read is answered by filling it.
import { KVM_EXIT, KVM_EXIT_IO_OUT } from "./ioctls.js";
import { RUN, kvm_run } from "./structs.js";

/** A port I/O exit: `count` accesses of `size` bytes in a row (rep ins/outs), data inside kvm_run. */
export interface IoExit {
  out: boolean;
  size: 1 | 2 | 4;
  port: number;
  count: number;
  /** Offset of the first access's data from the start of kvm_run. */
  dataOffset: number;
}

/** An MMIO exit: one access of `data.length` bytes (1..8; KVM splits an access that crosses a page). */
export interface MmioExit {
  /** Guest physical address (below 2^53). */
  addr: number;
  write: boolean;
  /** The bytes written, or the bytes to fill for a read, lowest address first. */
  data: Uint8Array;
}

export class ExitDecoder {
  reason = 0;
  readonly io: IoExit = { out: false, size: 1, port: 0, count: 0, dataOffset: 0 };
  readonly mmio: MmioExit;
  /** data views of length 0..8 over kvm_run.mmio.data. */
  private readonly mmioData: Uint8Array[] = [];

  constructor(private readonly run: DataView) {
    for (let len = 0; len <= 8; len++)
      this.mmioData.push(new Uint8Array(run.buffer, run.byteOffset + RUN.mmio.data, len));
    this.mmio = { addr: 0, write: false, data: this.mmioData[0] };
  }

  /** Decode the exit that KVM_RUN just reported (it returned 0); returns its reason. */
  decode(): number {
    const run = this.run;
    const reason = run.getUint32(kvm_run.off.exit_reason, true);
    this.reason = reason;
    if (reason === KVM_EXIT.IO) {
      const io = this.io;
      io.out = run.getUint8(RUN.io.direction) === KVM_EXIT_IO_OUT;
      io.size = run.getUint8(RUN.io.size) as 1 | 2 | 4;
      io.port = run.getUint16(RUN.io.port, true);
      io.count = run.getUint32(RUN.io.count, true);
      io.dataOffset = run.getUint32(RUN.io.data_offset, true); // the high half is 0: an offset in the mapping
    } else if (reason === KVM_EXIT.MMIO) {
      const m = this.mmio;
      m.addr =
        run.getUint32(RUN.mmio.phys_addr, true) + run.getUint32(RUN.mmio.phys_addr + 4, true) * 0x1_0000_0000;
      m.write = run.getUint8(RUN.mmio.is_write) !== 0;
      m.data = this.mmioData[Math.min(run.getUint32(RUN.mmio.len, true), 8)];
    }
    return reason;
  }
}
