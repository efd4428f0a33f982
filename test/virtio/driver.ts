// A small virtio-mmio driver written against the virtio 1.x spec (not against vmtool's code), used by the
// virtio tests to drive the transport and devices over a GuestMemory of plain buffers. It does what a guest
// driver does: reset, ACKNOWLEDGE, DRIVER, feature negotiation, FEATURES_OK, queue set-up, DRIVER_OK, then
// descriptor chains (direct or indirect), avail ring updates, notifications, and used ring reads.
import { GuestMemory } from "../../src/memory/guest-memory.js";
import type { IrqLine } from "../../src/devices/types.js";
import type { VirtioMmioTransport } from "../../src/devices/virtio/mmio-transport.js";
import { readMmio, writeMmio } from "../helpers/mmio.js";

export const REG = {
  MAGIC: 0x000,
  VERSION: 0x004,
  DEVICE_ID: 0x008,
  VENDOR_ID: 0x00c,
  DEVICE_FEATURES: 0x010,
  DEVICE_FEATURES_SEL: 0x014,
  DRIVER_FEATURES: 0x020,
  DRIVER_FEATURES_SEL: 0x024,
  QUEUE_SEL: 0x030,
  QUEUE_NUM_MAX: 0x034,
  QUEUE_NUM: 0x038,
  QUEUE_READY: 0x044,
  QUEUE_NOTIFY: 0x050,
  INTERRUPT_STATUS: 0x060,
  INTERRUPT_ACK: 0x064,
  STATUS: 0x070,
  QUEUE_DESC_LOW: 0x080,
  QUEUE_DESC_HIGH: 0x084,
  QUEUE_DRIVER_LOW: 0x090,
  QUEUE_DRIVER_HIGH: 0x094,
  QUEUE_DEVICE_LOW: 0x0a0,
  QUEUE_DEVICE_HIGH: 0x0a4,
  CONFIG_GENERATION: 0x0fc,
  CONFIG: 0x100,
};
export const S = { ACK: 1, DRIVER: 2, DRIVER_OK: 4, FEATURES_OK: 8, NEEDS_RESET: 64, FAILED: 128 };
export const FEAT = { INDIRECT: 1n << 28n, EVENT_IDX: 1n << 29n, VERSION_1: 1n << 32n };
export const D = { NEXT: 1, WRITE: 2, INDIRECT: 4 };

/** Guest RAM over a plain buffer, with guard bytes on both sides to catch any write outside it. */
export class TestRam {
  static readonly GUARD = 4096;
  static readonly PATTERN = 0xa5;
  readonly backing: Uint8Array;
  readonly bytes: Uint8Array;
  readonly mem: GuestMemory;

  constructor(
    readonly size: number,
    readonly base = 0,
  ) {
    this.backing = new Uint8Array(size + 2 * TestRam.GUARD).fill(TestRam.PATTERN);
    this.bytes = this.backing.subarray(TestRam.GUARD, TestRam.GUARD + size);
    this.bytes.fill(0);
    this.mem = new GuestMemory([{ gpa: base, bytes: this.bytes }]);
  }

  /** True when no guard byte changed. */
  guardsIntact(): boolean {
    const g = TestRam.GUARD;
    for (let i = 0; i < g; i++) {
      if (this.backing[i] !== TestRam.PATTERN || this.backing[g + this.size + i] !== TestRam.PATTERN)
        return false;
    }
    return true;
  }
}

/** Records the interrupt line. */
export class IrqRecorder implements IrqLine {
  level = false;
  edges = 0;
  setLevel(high: boolean): void {
    if (high && !this.level) this.edges++;
    this.level = high;
  }
}

export interface Buf {
  addr: number;
  len: number;
  write?: boolean;
}

export class MmioDriver {
  constructor(readonly t: VirtioMmioTransport) {}

  r(off: number): number {
    return Number(readMmio(this.t, off, 4));
  }
  w(off: number, v: number): void {
    writeMmio(this.t, off, 4, BigInt(v >>> 0));
  }

  deviceFeatures(): bigint {
    this.w(REG.DEVICE_FEATURES_SEL, 0);
    const lo = BigInt(this.r(REG.DEVICE_FEATURES));
    this.w(REG.DEVICE_FEATURES_SEL, 1);
    const hi = BigInt(this.r(REG.DEVICE_FEATURES));
    return (hi << 32n) | lo;
  }

  writeDriverFeatures(f: bigint): void {
    this.w(REG.DRIVER_FEATURES_SEL, 0);
    this.w(REG.DRIVER_FEATURES, Number(f & 0xffffffffn));
    this.w(REG.DRIVER_FEATURES_SEL, 1);
    this.w(REG.DRIVER_FEATURES, Number((f >> 32n) & 0xffffffffn));
  }

  /** The spec's initialization sequence up to FEATURES_OK; returns whether the device accepted. */
  negotiate(want: bigint): boolean {
    this.w(REG.STATUS, 0);
    this.w(REG.STATUS, S.ACK);
    this.w(REG.STATUS, S.ACK | S.DRIVER);
    this.writeDriverFeatures(this.deviceFeatures() & want);
    this.w(REG.STATUS, S.ACK | S.DRIVER | S.FEATURES_OK);
    return (this.r(REG.STATUS) & S.FEATURES_OK) !== 0;
  }

  driverOk(): void {
    this.w(REG.STATUS, S.ACK | S.DRIVER | S.FEATURES_OK | S.DRIVER_OK);
  }

  setupQueue(ram: TestRam, index: number, size: number, at: number, eventIdx: boolean): DriverQueue {
    const desc = at;
    const avail = desc + 16 * size;
    const used = (avail + 6 + 2 * size + 3) & ~3;
    this.w(REG.QUEUE_SEL, index);
    this.w(REG.QUEUE_NUM, size);
    this.w(REG.QUEUE_DESC_LOW, desc);
    this.w(REG.QUEUE_DESC_HIGH, 0);
    this.w(REG.QUEUE_DRIVER_LOW, avail);
    this.w(REG.QUEUE_DRIVER_HIGH, 0);
    this.w(REG.QUEUE_DEVICE_LOW, used);
    this.w(REG.QUEUE_DEVICE_HIGH, 0);
    this.w(REG.QUEUE_READY, 1);
    return new DriverQueue(this, ram.mem, index, size, desc, avail, used, eventIdx);
  }

  /** Read and acknowledge the interrupt status, as an interrupt handler does. */
  ack(): number {
    const s = this.r(REG.INTERRUPT_STATUS);
    this.w(REG.INTERRUPT_ACK, s);
    return s;
  }
}

/** The driver side of one split queue. Descriptors are allocated from a simple free counter. */
export class DriverQueue {
  private nextDesc = 0;
  private availIdx = 0;
  private lastUsed = 0;
  /** avail.idx at the last notification decision (for EVENT_IDX). */
  private notifiedAt = 0;
  notifications = 0;

  constructor(
    readonly drv: MmioDriver,
    readonly mem: GuestMemory,
    readonly index: number,
    readonly size: number,
    readonly desc: number,
    readonly avail: number,
    readonly used: number,
    readonly eventIdx: boolean,
  ) {}

  writeDesc(i: number, addr: number, len: number, flags: number, next: number, table = this.desc): void {
    const d = table + 16 * i;
    this.mem.writeU64(d, BigInt(addr));
    this.mem.writeU32(d + 8, len);
    this.mem.writeU16(d + 12, flags);
    this.mem.writeU16(d + 14, next);
  }

  /** Put a chain of buffers in the descriptor table (or in an indirect table at `indirectTable`). */
  addChain(bufs: Buf[], indirectTable?: number): number {
    if (indirectTable !== undefined) {
      bufs.forEach((b, i) =>
        this.writeDesc(
          i,
          b.addr,
          b.len,
          (b.write ? D.WRITE : 0) | (i < bufs.length - 1 ? D.NEXT : 0),
          i + 1,
          indirectTable,
        ),
      );
      const head = this.alloc();
      this.writeDesc(head, indirectTable, 16 * bufs.length, D.INDIRECT, 0);
      this.offer(head);
      return head;
    }
    const ids = bufs.map(() => this.alloc());
    bufs.forEach((b, i) =>
      this.writeDesc(
        ids[i],
        b.addr,
        b.len,
        (b.write ? D.WRITE : 0) | (i < bufs.length - 1 ? D.NEXT : 0),
        ids[i + 1] ?? 0,
      ),
    );
    this.offer(ids[0]);
    return ids[0];
  }

  private alloc(): number {
    const i = this.nextDesc;
    this.nextDesc = (this.nextDesc + 1) % this.size;
    return i;
  }

  /** Put `head` in the next avail ring slot and publish it. */
  offer(head: number): void {
    this.mem.writeU16(this.avail + 4 + 2 * (this.availIdx % this.size), head);
    this.availIdx = (this.availIdx + 1) & 0xffff;
    this.mem.writeU16(this.avail + 2, this.availIdx);
  }

  /** Set avail.idx directly (for attacks). */
  setAvailIdx(v: number): void {
    this.availIdx = v & 0xffff;
    this.mem.writeU16(this.avail + 2, this.availIdx);
  }

  /** Notify the device if it wants it (used.flags NO_NOTIFY, or avail_event with EVENT_IDX). */
  kick(): boolean {
    const old = this.notifiedAt;
    this.notifiedAt = this.availIdx;
    let want: boolean;
    if (this.eventIdx) {
      const ev = this.mem.readU16(this.used + 4 + 8 * this.size);
      want = ((this.availIdx - ev - 1) & 0xffff) < ((this.availIdx - old) & 0xffff);
    } else {
      want = (this.mem.readU16(this.used) & 1) === 0;
    }
    if (want) this.forceKick();
    return want;
  }

  forceKick(): void {
    this.notifications++;
    this.drv.w(REG.QUEUE_NOTIFY, this.index);
  }

  /** New used elements since the last call. */
  takeUsed(): { id: number; len: number }[] {
    const out: { id: number; len: number }[] = [];
    const idx = this.mem.readU16(this.used + 2);
    while (this.lastUsed !== idx) {
      const e = this.used + 4 + 8 * (this.lastUsed % this.size);
      out.push({ id: this.mem.readU32(e), len: this.mem.readU32(e + 4) });
      this.lastUsed = (this.lastUsed + 1) & 0xffff;
    }
    return out;
  }

  usedIdx(): number {
    return this.mem.readU16(this.used + 2);
  }

  /** EVENT_IDX: ask for an interrupt once used.idx passes `v`. */
  setUsedEvent(v: number): void {
    this.mem.writeU16(this.avail + 4 + 2 * this.size, v);
  }

  setNoInterrupt(on: boolean): void {
    this.mem.writeU16(this.avail, on ? 1 : 0);
  }
}
