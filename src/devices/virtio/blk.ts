// virtio-blk (id 2) over an injected BlockBackend: read, write, flush and get-id requests on one queue,
// capacity in the configuration space. A request the device cannot do fails with the spec's status
// (IOERR for writes to a read-only disk, for ranges past the end and for backend errors; UNSUPP for unknown
// types, IOERR too for a request of more than BLK_MAX_DATA_BYTES) and the queue goes on; only a malformed
// chain (no room for the status byte) is not completed with a status, and then it is returned with length 0
// and traced. Data moves between the guest's buffers and the backend through views of guest RAM, no copy.
import { BLK, DEVICE_ID, bit } from "./constants.js";
import type { VirtioContext, VirtioDevice } from "./device.js";
import type { ChainBuffers, ChainWriter, ViewVisitor } from "./chain-io.js";
import type { SplitQueue } from "./virtqueue.js";

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
/** seg_max: data segments per request (the header and the status take two of a chain's descriptors). */
const SEG_MAX = QUEUE_SIZE - 2;
/** size_max: the largest data segment a driver may use (VIRTIO_BLK_F_SIZE_MAX). */
const SIZE_MAX = 1 << 20;
/**
 * Most data bytes one request may carry: what a driver that honours seg_max and size_max can send (Linux
 * does, and its default request is at most 1280 KiB). A longer IN or OUT request fails with
 * VIRTIO_BLK_S_IOERR and a trace line, and nothing is read or written. The data moves between guest RAM
 * and the backend through views, so the bound is on the time one request holds the device, not on memory.
 */
export const BLK_MAX_DATA_BYTES = SEG_MAX * SIZE_MAX;

export class VirtioBlk implements VirtioDevice {
  readonly type = "virtio-blk";
  readonly deviceId = DEVICE_ID.BLOCK;
  readonly features: bigint;
  readonly queueMaxSizes = [QUEUE_SIZE];
  /** capacity u64, size_max u32, seg_max u32, geometry (4 bytes), blk_size u32. */
  readonly config = new Uint8Array(24);
  readonly capacitySectors: number;
  private ctx?: VirtioContext;
  /** Requests completed, by status. */
  readonly completed = { ok: 0, ioerr: 0, unsupp: 0 };

  counters(): Record<string, number> {
    return {
      "requests ok": this.completed.ok,
      "requests failed (IOERR)": this.completed.ioerr,
      "requests unsupported": this.completed.unsupp,
    };
  }
  /** The request header of the request being served (type u32, reserved u32, sector u64). */
  private readonly header = new Uint8Array(BLK.HEADER_SIZE);
  private readonly statusByte = new Uint8Array(1);
  private readonly headerView = new DataView(this.header.buffer);
  /** GET_ID's answer: the backend's id, zero-padded to 20 bytes as the spec allows. */
  private readonly id = new Uint8Array(BLK.ID_BYTES);
  private readonly readInto: ViewVisitor;
  private readonly writeFrom: ViewVisitor;
  /** Byte offset on the disk of the request being served. */
  private base = 0;
  /** One request (made once: nothing is allocated per request). */
  private readonly serveChain = (chain: ChainBuffers): number => this.handle(chain);

  constructor(private readonly backend: BlockBackend) {
    this.capacitySectors = Math.floor(backend.size / BLK.SECTOR_SIZE);
    let f = bit(BLK.F_SIZE_MAX) | bit(BLK.F_SEG_MAX) | bit(BLK.F_BLK_SIZE) | bit(BLK.F_FLUSH);
    if (backend.readOnly) f |= bit(BLK.F_RO);
    this.features = f;
    const v = new DataView(this.config.buffer);
    v.setBigUint64(0, BigInt(this.capacitySectors), true);
    v.setUint32(8, SIZE_MAX, true);
    v.setUint32(12, SEG_MAX, true);
    v.setUint32(20, BLK.SECTOR_SIZE, true);
    this.id.set(new TextEncoder().encode(backend.id).subarray(0, BLK.ID_BYTES));
    this.readInto = (view, at) => backend.read(this.base + at, view);
    this.writeFrom = (view, at) => backend.write(this.base + at, view);
  }

  activate(ctx: VirtioContext): void {
    this.ctx = ctx;
  }

  reset(): void {
    this.ctx = undefined;
  }

  processQueue(q: SplitQueue): void {
    if (!this.ctx) return;
    q.serveAll(this.ctx.memory, this.serveChain);
    this.ctx.notifyUsed(q);
  }

  /** Write the status byte, count the request; returns the bytes written into the chain (data + status). */
  private complete(status: ChainWriter, code: number, written: number): number {
    this.statusByte[0] = code;
    status.write(this.statusByte);
    if (code === BLK.S_OK) this.completed.ok++;
    else if (code === BLK.S_IOERR) this.completed.ioerr++;
    else this.completed.unsupp++;
    return written + 1;
  }

  /** The request's sector, exactly (for messages: it may be past 2^53). */
  private get sectorText(): string {
    return (
      (BigInt(this.headerView.getUint32(12, true)) << 32n) |
      BigInt(this.headerView.getUint32(8, true))
    ).toString();
  }

  /**
   * Whether `len` bytes from the request's sector are whole sectors inside the disk. The sector is read as
   * two 32-bit halves (no BigInt per request): a high half of 2^21 or more is past 2^53 sectors, past any disk.
   */
  private inRange(len: number): boolean {
    const high = this.headerView.getUint32(12, true);
    if (high >= 2 ** 21 || len % BLK.SECTOR_SIZE !== 0) return false;
    const sector = high * 2 ** 32 + this.headerView.getUint32(8, true);
    return (
      sector <= this.capacitySectors &&
      sector * BLK.SECTOR_SIZE + len <= this.capacitySectors * BLK.SECTOR_SIZE
    );
  }

  /** Do one request; returns the number of bytes written into the chain (data + status byte). */
  private handle(chain: ChainBuffers): number {
    const ctx = this.ctx;
    if (!ctx) return 0; // served only between activate and reset
    const { reader } = chain;
    if (chain.writer.length < 1) {
      ctx.trace(`request ${chain.head}: no device-writable byte for the status: dropped`);
      return 0;
    }
    // The status is the last writable byte; the data-in area is everything before it.
    const dataIn = chain.writer;
    const status = dataIn.splitAt(dataIn.length - 1);
    if (reader.length < BLK.HEADER_SIZE) {
      ctx.trace(`request ${chain.head}: header is ${reader.length} bytes, not ${BLK.HEADER_SIZE}`);
      return this.complete(status, BLK.S_IOERR, 0);
    }
    reader.read(this.header);
    const type = this.headerView.getUint32(0, true);
    const dataOut = reader.remaining;
    try {
      switch (type) {
        case BLK.T_IN: {
          if (dataIn.length > BLK_MAX_DATA_BYTES) {
            ctx.trace(
              `read of ${dataIn.length} bytes at sector ${this.sectorText}: more than ${BLK_MAX_DATA_BYTES} (seg_max x size_max)`,
            );
            return this.complete(status, BLK.S_IOERR, 0);
          }
          if (!this.inRange(dataIn.length)) {
            ctx.trace(
              `read of ${dataIn.length} bytes at sector ${this.sectorText}: not whole sectors inside the disk`,
            );
            return this.complete(status, BLK.S_IOERR, 0);
          }
          this.base = this.sectorOffset();
          const n = dataIn.fill(dataIn.length, this.readInto);
          return this.complete(status, BLK.S_OK, n);
        }
        case BLK.T_OUT: {
          if (this.backend.readOnly) {
            ctx.trace(`write at sector ${this.sectorText} refused: the disk is read-only`);
            return this.complete(status, BLK.S_IOERR, 0);
          }
          if (dataOut > BLK_MAX_DATA_BYTES) {
            ctx.trace(
              `write of ${dataOut} bytes at sector ${this.sectorText}: more than ${BLK_MAX_DATA_BYTES} (seg_max x size_max)`,
            );
            return this.complete(status, BLK.S_IOERR, 0);
          }
          if (!this.inRange(dataOut)) {
            ctx.trace(
              `write of ${dataOut} bytes at sector ${this.sectorText}: not whole sectors inside the disk`,
            );
            return this.complete(status, BLK.S_IOERR, 0);
          }
          this.base = this.sectorOffset();
          reader.stream(dataOut, this.writeFrom);
          return this.complete(status, BLK.S_OK, 0);
        }
        case BLK.T_FLUSH:
          this.backend.flush();
          return this.complete(status, BLK.S_OK, 0);
        case BLK.T_GET_ID:
          return this.complete(status, BLK.S_OK, dataIn.write(this.id));
        default:
          ctx.trace(`request ${chain.head}: unsupported type ${type}`);
          return this.complete(status, BLK.S_UNSUPP, 0);
      }
    } catch (e) {
      ctx.trace(
        `request ${chain.head} (type ${type}): backend error: ${e instanceof Error ? e.message : String(e)}`,
      );
      return this.complete(status, BLK.S_IOERR, 0);
    }
  }

  /** The request's byte offset on the disk (its sector is known to be in range). */
  private sectorOffset(): number {
    return (
      (this.headerView.getUint32(12, true) * 2 ** 32 + this.headerView.getUint32(8, true)) * BLK.SECTOR_SIZE
    );
  }
}
