// virtio-blk (id 2) over an injected BlockBackend: read, write, flush and get-id requests on one queue,
// capacity in the configuration space. A request the device cannot do fails with the spec's status
// (IOERR for writes to a read-only disk, for ranges past the end and for backend errors; UNSUPP for unknown
// types) and the queue goes on; only a malformed chain (no room for the status byte) is not completed with
// a status, and then it is returned with length 0 and traced.
import { BLK, DEVICE_ID, bit } from "./constants.js";
import type { VirtioContext, VirtioDevice } from "./device.js";
import { forEachRange, gather } from "./chain-io.js";
import type { DescriptorChain, SplitQueue } from "./virtqueue.js";

/** Storage behind a virtio-blk device: byte offsets, synchronous. */
export interface BlockBackend {
  /** Size in bytes (the device exposes floor(size / 512) sectors). */
  readonly size: number;
  readonly readOnly: boolean;
  /** Up to 20 bytes identifying the disk (VIRTIO_BLK_T_GET_ID). */
  readonly id: string;
  /** Fill `into` from `offset`; throws on an I/O error. */
  read(offset: number, into: Uint8Array): void;
  /** Write `data` at `offset`; throws on an I/O error. */
  write(offset: number, data: Uint8Array): void;
  /** Make completed writes durable (fdatasync). */
  flush(): void;
}

const QUEUE_SIZE = 128;

export class VirtioBlk implements VirtioDevice {
  readonly type = "virtio-blk";
  readonly deviceId = DEVICE_ID.BLOCK;
  readonly features: bigint;
  readonly queueMaxSizes = [QUEUE_SIZE];
  /** capacity u64, size_max u32, seg_max u32, geometry (4 bytes), blk_size u32. */
  readonly config = new Uint8Array(24);
  readonly capacitySectors: number;
  private ctx?: VirtioContext;
  /** Requests completed, by status, for --stats. */
  readonly completed = { ok: 0, ioerr: 0, unsupp: 0 };

  constructor(private readonly backend: BlockBackend) {
    this.capacitySectors = Math.floor(backend.size / BLK.SECTOR_SIZE);
    let f = bit(BLK.F_SEG_MAX) | bit(BLK.F_BLK_SIZE) | bit(BLK.F_FLUSH);
    if (backend.readOnly) f |= bit(BLK.F_RO);
    this.features = f;
    const v = new DataView(this.config.buffer);
    v.setBigUint64(0, BigInt(this.capacitySectors), true);
    v.setUint32(12, QUEUE_SIZE - 2, true); // seg_max: the header and status take two descriptors
    v.setUint32(20, BLK.SECTOR_SIZE, true);
  }

  activate(ctx: VirtioContext): void {
    this.ctx = ctx;
  }

  reset(): void {
    this.ctx = undefined;
  }

  processQueue(q: SplitQueue): void {
    const ctx = this.ctx;
    if (!ctx) return;
    q.serveAll(ctx.memory, (chain) => this.handle(ctx, chain));
    ctx.notifyUsed(q);
  }

  /** Do one request; returns the number of bytes written into the chain (data + status byte). */
  private handle(ctx: VirtioContext, chain: DescriptorChain): number {
    const mem = ctx.memory;
    if (chain.writableLength < 1) {
      ctx.trace(`request ${chain.head}: no device-writable byte for the status: dropped`);
      return 0;
    }
    // The status is the last writable byte; the data-in area is everything before it.
    const dataIn = chain.writableLength - 1;
    const complete = (status: number, written: number): number => {
      forEachRange(mem, chain.writable, dataIn, 1, (v) => (v[0] = status));
      if (status === BLK.S_OK) this.completed.ok++;
      else if (status === BLK.S_IOERR) this.completed.ioerr++;
      else this.completed.unsupp++;
      return written + 1;
    };
    if (chain.readableLength < BLK.HEADER_SIZE) {
      ctx.trace(`request ${chain.head}: header is ${chain.readableLength} bytes, not ${BLK.HEADER_SIZE}`);
      return complete(BLK.S_IOERR, 0);
    }
    const hdr = new DataView(gather(mem, chain.readable, 0, BLK.HEADER_SIZE).buffer);
    const type = hdr.getUint32(0, true);
    const sector = hdr.getBigUint64(8, true);
    const dataOut = chain.readableLength - BLK.HEADER_SIZE;
    const inRange = (len: number): boolean =>
      len % BLK.SECTOR_SIZE === 0 &&
      sector <= BigInt(this.capacitySectors) &&
      Number(sector) * BLK.SECTOR_SIZE + len <= this.capacitySectors * BLK.SECTOR_SIZE;
    try {
      switch (type) {
        case BLK.T_IN: {
          if (!inRange(dataIn)) {
            ctx.trace(`read of ${dataIn} bytes at sector ${sector}: not whole sectors inside the disk`);
            return complete(BLK.S_IOERR, 0);
          }
          const base = Number(sector) * BLK.SECTOR_SIZE;
          forEachRange(mem, chain.writable, 0, dataIn, (view, at) => this.backend.read(base + at, view));
          return complete(BLK.S_OK, dataIn);
        }
        case BLK.T_OUT: {
          if (this.backend.readOnly) {
            ctx.trace(`write at sector ${sector} refused: the disk is read-only`);
            return complete(BLK.S_IOERR, 0);
          }
          if (!inRange(dataOut)) {
            ctx.trace(`write of ${dataOut} bytes at sector ${sector}: not whole sectors inside the disk`);
            return complete(BLK.S_IOERR, 0);
          }
          const base = Number(sector) * BLK.SECTOR_SIZE;
          let at = 0;
          let skip: number = BLK.HEADER_SIZE;
          for (const s of chain.readable) {
            if (skip >= s.len) {
              skip -= s.len;
              continue;
            }
            const view = mem.slice(s.gpa + skip, s.len - skip);
            this.backend.write(base + at, view);
            at += view.length;
            skip = 0;
          }
          return complete(BLK.S_OK, 0);
        }
        case BLK.T_FLUSH:
          this.backend.flush();
          return complete(BLK.S_OK, 0);
        case BLK.T_GET_ID: {
          const id = new TextEncoder().encode(this.backend.id).subarray(0, BLK.ID_BYTES);
          const bytes = new Uint8Array(Math.min(BLK.ID_BYTES, dataIn));
          bytes.set(id.subarray(0, bytes.length)); // shorter ids are zero-padded, as the spec allows
          forEachRange(mem, chain.writable, 0, bytes.length, (view, off) =>
            view.set(bytes.subarray(off, off + view.length)),
          );
          return complete(BLK.S_OK, bytes.length);
        }
        default:
          ctx.trace(`request ${chain.head}: unsupported type ${type}`);
          return complete(BLK.S_UNSUPP, 0);
      }
    } catch (e) {
      ctx.trace(
        `request ${chain.head} (type ${type}): backend error: ${e instanceof Error ? e.message : String(e)}`,
      );
      return complete(BLK.S_IOERR, 0);
    }
  }
}
