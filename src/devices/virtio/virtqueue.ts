// A split virtqueue seen from the device side ("Split Virtqueues" in the virtio 1.x spec): the descriptor
// table, the driver's available ring and the device's used ring, all in guest memory.
//
// The guest is hostile. Everything read from guest memory is checked before use: ring indexes against the
// queue size, descriptor buffers against guest RAM, chain lengths against the table size (so a loop ends),
// byte totals against 2^32. A violation throws VirtqueueError with a reason; the transport then marks the
// device DEVICE_NEEDS_RESET and stops touching the queue. Every access goes through GuestMemory's
// bounds-checked methods, so even a bug here cannot reach outside guest RAM.
//
// Ordering: the driver publishes ring entries before it bumps avail.idx, and reads used entries after it
// sees used.idx move. So avail.idx is read with Atomics.load (acquire) before the entries, and used.idx is
// written with Atomics.store (sequentially consistent) after the element; the same full barrier orders
// that store before the read of used_event / avail.flags that decides whether to interrupt.
import type { GuestMemory } from "../../memory/guest-memory.js";
import { ChainBuffers } from "./chain-io.js";
import { VIRTQ } from "./constants.js";

/** The guest broke the virtqueue rules: the device must stop and ask for a reset. */
export class VirtqueueError extends Error {
  constructor(reason: string) {
    super(reason);
    this.name = "VirtqueueError";
  }
}

/** One descriptor of a chain as DescriptorChain.next() yields it: its buffer already checked to lie in RAM. */
export interface Descriptor {
  readonly gpa: number;
  readonly len: number;
  /** Device-writable (VIRTQ_DESC_F_WRITE); the chain's readable descriptors all come first. */
  readonly writable: boolean;
}

/** Most descriptors an indirect table may hold (Linux and QEMU use the same bound). */
export const MAX_INDIRECT_DESCRIPTORS = 1024;
/** The spec's limit on a chain's total length ("Drivers MUST NOT add a descriptor chain longer than 2^32 bytes"). */
const MAX_CHAIN_BYTES = 2 ** 32;
/** The largest high half of a 64-bit address that keeps the address a safe integer (below 2^53). */
const MAX_SAFE_HIGH = 2 ** 21 - 1;

function hex(n: number | bigint): string {
  return `0x${n.toString(16)}`;
}

/** A live 16-bit view for Atomics, bounds-checked through GuestMemory (the area is 2-byte aligned). */
function u16View(memory: GuestMemory, gpa: number): Uint16Array {
  const b = memory.slice(gpa, 2);
  return new Uint16Array(b.buffer, b.byteOffset, 1);
}

/**
 * A live DataView of [gpa, gpa+len) of guest RAM, checked once through GuestMemory: a table or ring read
 * through it costs no call per field, and the view's own bounds keep every access inside that range.
 */
function ramView(memory: GuestMemory, gpa: number, len: number): DataView {
  const b = memory.slice(gpa, len);
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}

/** True when an interrupt (or notification) is due: `event` was passed going from `old` to `now`. */
export function needEvent(event: number, now: number, old: number): boolean {
  return ((now - event - 1) & 0xffff) < ((now - old) & 0xffff);
}

/**
 * A descriptor chain taken from the available ring, read lazily: each next() reads one descriptor from
 * guest memory, follows an indirect table when the head names one, checks everything (index inside the
 * table, a bounded walk so a loop ends, the indirect rules, the buffer inside RAM, readable before
 * writable, at most 2^32 bytes in total) and throws VirtqueueError on the first violation. Nothing is
 * copied or collected here; ChainBuffers (chain-io.ts) keeps what a device needs.
 *
 * The queue reuses one DescriptorChain (and the Descriptor it yields) for every chain it hands out: a
 * chain is valid until the next pop() on its queue.
 */
export class DescriptorChain {
  /** The head descriptor's index: what the used element names. */
  head = 0;
  private memory!: GuestMemory;
  /** The descriptor table being walked (the queue's, or an indirect one), as a view of exactly its bytes. */
  private table!: DataView;
  private tableSize = 0;
  private inIndirect = false;
  private idx = 0;
  private visited = 0;
  private ended = true;
  private seenWritable = false;
  private total = 0;
  private indirectAllowed = false;
  private readonly current = { gpa: 0, len: 0, writable: false };

  constructor(private readonly queueIndex: number) {}

  /**
   * Start at `head` (already checked against `size`) of the descriptor table `table` (a view of its `size`
   * descriptors); `indirect`: VIRTIO_F_INDIRECT_DESC was negotiated.
   */
  start(memory: GuestMemory, table: DataView, size: number, head: number, indirect: boolean): this {
    this.memory = memory;
    this.indirectAllowed = indirect;
    this.head = head;
    this.table = table;
    this.tableSize = size;
    this.inIndirect = false;
    this.idx = head;
    this.visited = 0;
    this.ended = false;
    this.seenWritable = false;
    this.total = 0;
    return this;
  }

  /** The next descriptor (a view reused by every call), or undefined after the last one. */
  next(): Descriptor | undefined {
    if (this.ended) return undefined;
    for (;;) {
      const idx = this.idx;
      if (idx >= this.tableSize)
        throw new VirtqueueError(
          `${this.where}: chain ${this.head} links to descriptor ${idx}, past the ${this.inIndirect ? "indirect table" : "queue"} size ${this.tableSize}`,
        );
      if (++this.visited > this.tableSize)
        throw new VirtqueueError(
          `${this.where}: chain ${this.head} is longer than its ${this.inIndirect ? "indirect table" : "descriptor table"} (${this.tableSize}): a loop`,
        );
      const table = this.table;
      const d = VIRTQ.DESC_SIZE * idx;
      // The 64-bit address as two halves: no BigInt per descriptor.
      const addrLow = table.getUint32(d, true);
      const addrHigh = table.getUint32(d + 4, true);
      const len = table.getUint32(d + 8, true);
      const flags = table.getUint16(d + 12, true);
      const next = table.getUint16(d + 14, true);
      if (flags & VIRTQ.DESC_F_INDIRECT) {
        this.enterIndirect(idx, addrLow, addrHigh, len, flags);
        continue;
      }
      const gpa = this.checkedAddress(addrLow, addrHigh, len, "buffer", idx);
      const writable = (flags & VIRTQ.DESC_F_WRITE) !== 0;
      if (writable) this.seenWritable = true;
      else if (this.seenWritable)
        throw new VirtqueueError(
          `${this.where}: chain ${this.head} has a device-readable buffer after a writable one`,
        );
      this.total += len;
      if (this.total > MAX_CHAIN_BYTES)
        throw new VirtqueueError(`${this.where}: chain ${this.head} is more than 4 GiB long`);
      if (flags & VIRTQ.DESC_F_NEXT) this.idx = next;
      else this.ended = true;
      const c = this.current;
      c.gpa = gpa;
      c.len = len;
      c.writable = writable;
      return c;
    }
  }

  /** Continue in the indirect table that descriptor `idx` names, after checking the spec's rules for it. */
  private enterIndirect(idx: number, addrLow: number, addrHigh: number, len: number, flags: number): void {
    const where = this.where;
    if (!this.indirectAllowed)
      throw new VirtqueueError(
        `${where}: descriptor ${idx} is indirect but VIRTIO_F_INDIRECT_DESC was not negotiated`,
      );
    if (this.inIndirect) throw new VirtqueueError(`${where}: indirect descriptor inside an indirect table`);
    if (this.visited !== 1)
      throw new VirtqueueError(`${where}: indirect descriptor ${idx} is not the head of its chain`);
    if (flags & VIRTQ.DESC_F_NEXT)
      throw new VirtqueueError(`${where}: indirect descriptor ${idx} also has the NEXT flag`);
    if (len === 0 || len % VIRTQ.DESC_SIZE !== 0)
      throw new VirtqueueError(`${where}: indirect table length ${len} is not a non-zero multiple of 16`);
    if (len / VIRTQ.DESC_SIZE > MAX_INDIRECT_DESCRIPTORS)
      throw new VirtqueueError(
        `${where}: indirect table of ${len / VIRTQ.DESC_SIZE} descriptors, more than ${MAX_INDIRECT_DESCRIPTORS}`,
      );
    this.table = ramView(
      this.memory,
      this.checkedAddress(addrLow, addrHigh, len, "indirect table", idx),
      len,
    );
    this.tableSize = len / VIRTQ.DESC_SIZE;
    this.inIndirect = true;
    this.idx = 0;
    this.visited = 0;
  }

  /** "queue N", for messages (built only when one is needed). */
  private get where(): string {
    return `queue ${this.queueIndex}`;
  }

  /** The address `addrHigh:addrLow` of descriptor `idx`'s `what`, once [addr, addr+len) is known to be RAM. */
  private checkedAddress(addrLow: number, addrHigh: number, len: number, what: string, idx: number): number {
    // Exact below 2^53; anything above is outside RAM anyway. (No multiplication for the usual high half of 0:
    // in baseline code it would box a double per descriptor.)
    const addr = addrHigh === 0 ? addrLow : addrHigh * 2 ** 32 + addrLow;
    if (addrHigh > MAX_SAFE_HIGH || !this.memory.contains(addr, len)) {
      const full = (BigInt(addrHigh) << 32n) | BigInt(addrLow);
      throw new VirtqueueError(
        `${this.where}: ${what} of descriptor ${idx} ${hex(full)}+${hex(len)} is outside guest RAM`,
      );
    }
    return addr;
  }
}

export class SplitQueue {
  /** Driver-chosen queue size (QueueNum); the reset value is the maximum. */
  size: number;
  ready = false;
  descAddr = 0;
  driverAddr = 0;
  deviceAddr = 0;
  /** Negotiated features that change how the queue is read. */
  indirect = false;
  eventIdx = false;

  /** Next available-ring slot the device will take (free-running 16-bit counter). */
  private lastAvail = 0;
  /** Next used-ring slot the device will fill (free-running 16-bit counter). */
  private nextUsed = 0;
  /** used.idx at the last interrupt decision (for EVENT_IDX). */
  private signalledUsed = 0;
  private availIdx?: Uint16Array;
  private availFlags?: Uint16Array;
  private usedIdx?: Uint16Array;
  private usedFlags?: Uint16Array;
  private usedEvent?: Uint16Array;
  private availEvent?: Uint16Array;
  /** The descriptor table and the available ring's entries, once activated. */
  private descTable?: DataView;
  private availRing?: DataView;
  /** The chain pop() hands out and the buffers take() fills, reused for every chain of this queue. */
  private readonly chain: DescriptorChain;
  private readonly buffers: ChainBuffers;

  constructor(
    readonly index: number,
    readonly maxSize: number,
  ) {
    this.size = maxSize;
    this.chain = new DescriptorChain(index);
    // A chain has at most one descriptor per table entry: the queue's, or an indirect table's.
    this.buffers = new ChainBuffers(Math.max(maxSize, MAX_INDIRECT_DESCRIPTORS));
  }

  /** Forget the driver's set-up (device reset). */
  reset(): void {
    this.size = this.maxSize;
    this.ready = false;
    this.descAddr = this.driverAddr = this.deviceAddr = 0;
    this.indirect = this.eventIdx = false;
    this.deactivate();
  }

  /** Stop using guest memory (QueueReady = 0 or reset); the ring positions restart from zero. */
  deactivate(): void {
    this.lastAvail = this.nextUsed = this.signalledUsed = 0;
    this.availIdx = this.availFlags = this.usedIdx = this.usedFlags = undefined;
    this.usedEvent = this.availEvent = undefined;
    this.descTable = this.availRing = undefined;
  }

  get active(): boolean {
    return this.usedIdx !== undefined;
  }

  /**
   * Check the driver's set-up against the spec and guest RAM, and start using the rings. Throws
   * VirtqueueError with the reason when the size or an area is invalid.
   */
  activate(memory: GuestMemory): void {
    const n = this.size;
    const where = `queue ${this.index}`;
    if (n === 0 || n > this.maxSize || (n & (n - 1)) !== 0)
      throw new VirtqueueError(`${where}: size ${n} is not a power of 2 in 1..${this.maxSize}`);
    const areas: [string, number, number, number][] = [
      ["descriptor table", this.descAddr, VIRTQ.DESC_SIZE * n, 16],
      ["available ring", this.driverAddr, 6 + 2 * n, 2],
      ["used ring", this.deviceAddr, 6 + 8 * n, 4],
    ];
    for (const [what, addr, len, align] of areas) {
      if (addr % align !== 0)
        throw new VirtqueueError(`${where}: ${what} at ${hex(addr)} is not ${align}-byte aligned`);
      if (!memory.contains(addr, len))
        throw new VirtqueueError(`${where}: ${what} ${hex(addr)}+${hex(len)} is outside guest RAM`);
    }
    this.availFlags = u16View(memory, this.driverAddr);
    this.availIdx = u16View(memory, this.driverAddr + 2);
    this.usedEvent = u16View(memory, this.driverAddr + 4 + 2 * n);
    this.usedFlags = u16View(memory, this.deviceAddr);
    this.usedIdx = u16View(memory, this.deviceAddr + 2);
    this.availEvent = u16View(memory, this.deviceAddr + 4 + 8 * n);
    this.descTable = ramView(memory, this.descAddr, VIRTQ.DESC_SIZE * n);
    this.availRing = ramView(memory, this.driverAddr + 4, 2 * n);
    // Ring positions start at zero (the driver zeroes its rings before enabling the queue); a driver that
    // left avail.idx elsewhere is caught by pending()'s check.
    this.lastAvail = this.nextUsed = this.signalledUsed = 0;
  }

  /** Number of chains the driver has made available and the device has not taken yet. */
  pending(): number {
    if (!this.availIdx) return 0;
    const count = (Atomics.load(this.availIdx, 0) - this.lastAvail) & 0xffff;
    if (count > this.size)
      throw new VirtqueueError(
        `queue ${this.index}: available index moved ${count} entries ahead, more than the queue size ${this.size}`,
      );
    return count;
  }

  /**
   * Take the next available chain, or undefined when there is none: its head is read and checked here, its
   * descriptors as the caller walks them (DescriptorChain.next). Valid until the next pop.
   */
  pop(memory: GuestMemory): DescriptorChain | undefined {
    if (this.pending() === 0 || !this.availRing || !this.descTable) return undefined;
    const head = this.availRing.getUint16(2 * (this.lastAvail % this.size), true);
    if (head >= this.size)
      throw new VirtqueueError(
        `queue ${this.index}: available ring names descriptor ${head}, past the queue size ${this.size}`,
      );
    this.lastAvail = (this.lastAvail + 1) & 0xffff;
    return this.chain.start(memory, this.descTable, this.size, head, this.indirect);
  }

  /**
   * Take the next available chain and walk all of it into this queue's ChainBuffers, so that a bad
   * descriptor anywhere in the chain is refused (VirtqueueError) before the device acts on any of it.
   * The buffers are valid until the next take.
   */
  take(memory: GuestMemory): ChainBuffers | undefined {
    const chain = this.pop(memory);
    return chain && this.buffers.load(memory, chain);
  }

  /**
   * Serve every available chain: `handle` does one request and returns the bytes it wrote into the chain.
   * Notifications stay off while busy; enableNotifications() re-checks for chains that raced in meanwhile.
   */
  serveAll(memory: GuestMemory, handle: (chain: ChainBuffers) => number): void {
    do {
      this.disableNotifications();
      for (let chain = this.take(memory); chain; chain = this.take(memory))
        this.pushUsed(memory, chain.head, handle(chain));
    } while (this.enableNotifications());
  }

  /**
   * Return a chain to the driver: write the used element, then publish it by moving used.idx. `len` is the
   * number of bytes the device wrote into the chain's writable buffers.
   */
  pushUsed(memory: GuestMemory, head: number, len: number): void {
    if (!this.usedIdx) throw new VirtqueueError(`queue ${this.index}: used before it was activated`);
    const slot = this.deviceAddr + 4 + 8 * (this.nextUsed % this.size);
    memory.writeU32(slot, head);
    memory.writeU32(slot + 4, len);
    this.nextUsed = (this.nextUsed + 1) & 0xffff;
    Atomics.store(this.usedIdx, 0, this.nextUsed);
  }

  /**
   * Whether the driver wants an interrupt for what was pushed since the last call (avail.flags'
   * NO_INTERRUPT, or used_event with EVENT_IDX). Call once after a batch of pushUsed.
   */
  needsInterrupt(): boolean {
    if (!this.usedIdx || !this.availFlags || !this.usedEvent) return false;
    const old = this.signalledUsed;
    const now = this.nextUsed;
    this.signalledUsed = now;
    if (old === now) return false;
    if (this.eventIdx) return needEvent(Atomics.load(this.usedEvent, 0), now, old);
    return (Atomics.load(this.availFlags, 0) & VIRTQ.AVAIL_F_NO_INTERRUPT) === 0;
  }

  /** Ask the driver not to notify while the device is draining the queue anyway. */
  disableNotifications(): void {
    if (!this.usedFlags || this.eventIdx) return; // with EVENT_IDX, avail_event already says "not yet"
    Atomics.store(this.usedFlags, 0, VIRTQ.USED_F_NO_NOTIFY);
  }

  /**
   * Ask the driver to notify again for the next chain, then look once more: returns true if chains arrived
   * in between (the caller drains again instead of waiting for a notification that will not come).
   */
  enableNotifications(): boolean {
    if (!this.usedFlags || !this.availEvent) return false;
    if (this.eventIdx) Atomics.store(this.availEvent, 0, this.lastAvail);
    else Atomics.store(this.usedFlags, 0, 0);
    return this.pending() > 0;
  }
}
