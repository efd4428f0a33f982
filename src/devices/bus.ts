// The port-I/O bus and the MMIO bus: devices registered on address ranges, looked up on every I/O exit.
//
// Both sit on the exit hot path (~80,000 exits/s per vCPU), so a lookup allocates nothing: the port bus is a
// 64K table from port to device slot, the MMIO bus a sorted array searched by bisection. An access nobody
// claims is not an error: it is reported to the caller (BUS_MISS / undefined / false), which reads all ones,
// ignores the write and, under --trace, reports it once per address (see MissLog).
//
// An access is delivered whole to the device that owns its FIRST address, with its size (port I/O) or its bytes
// (MMIO); the device decides what a wide access means (the UART splits it into byte accesses like an ISA bus
// would). Registration is refused when two ranges overlap: a bug in how the machine was built.
import { VmtoolError } from "../errors.js";
import type { AccessSize, MmioDevice, PioDevice } from "./types.js";

/** What PioBus.read returns when no device claims the port (device values are never negative). */
export const BUS_MISS = -1;

/** What the CPU sees on a read nobody answers: all ones, of the access's size. */
export function allOnes(size: AccessSize): number {
  return size >= 4 ? 0xffff_ffff : (1 << (size * 8)) - 1;
}

/** One registered range, as listed by `entries()` (for the machine description, --stats and docs). */
export interface BusEntry<D> {
  readonly base: number;
  readonly size: number;
  readonly device: D;
}

/** A device was registered on addresses that are not valid or not free: a bug in how the machine is built. */
export class BusConfigError extends VmtoolError {}

/** Two devices claimed the same addresses. */
export class BusOverlapError extends BusConfigError {}

const PORT_COUNT = 0x1_0000;
/** Port bus slots are 16-bit; slot 0 means "nobody". */
const MAX_PIO_DEVICES = 0xffff;

function hex(n: number): string {
  return `0x${n.toString(16)}`;
}

/** The port bus's slot 0: where no device is. */
const NOBODY: PioDevice = {
  name: "nobody",
  pioRead: () => BUS_MISS,
  pioWrite: () => {},
};

/** The x86 I/O port space (0..0xFFFF). */
export class PioBus {
  /** port → slot (index into `devices`/`bases` + 1), 0 when free. */
  private readonly slotOf = new Uint16Array(PORT_COUNT);
  /** Slot 0 is "nobody": never called (a lookup of slot 0 reports a miss first). */
  private readonly devices: PioDevice[] = [NOBODY];
  private readonly bases: number[] = [0];
  private readonly sizes: number[] = [0];

  /** Claims ports base..base+size-1 for `device`; throws BusOverlapError if any is taken. */
  register(base: number, size: number, device: PioDevice): void {
    if (
      !Number.isInteger(base) ||
      !Number.isInteger(size) ||
      size < 1 ||
      base < 0 ||
      base + size > PORT_COUNT
    )
      throw new BusConfigError(
        `${device.name}: port range ${hex(base)}+${size} is not inside the I/O port space 0x0..0xffff`,
      );
    for (let p = base; p < base + size; p++) {
      const other = this.slotOf[p];
      if (other !== 0)
        throw new BusOverlapError(
          `${device.name}: ports ${hex(base)}..${hex(base + size - 1)} overlap ${this.devices[other].name} at ` +
            `${hex(this.bases[other])}..${hex(this.bases[other] + this.sizes[other] - 1)}`,
        );
    }
    if (this.devices.length > MAX_PIO_DEVICES)
      throw new BusConfigError(`${device.name}: too many port devices`);
    const slot = this.devices.length;
    this.devices.push(device);
    this.bases.push(base);
    this.sizes.push(size);
    this.slotOf.fill(slot, base, base + size);
  }

  /** Reads `size` bytes at `port` from its device: the value, or BUS_MISS when no device claims the port. */
  read(port: number, size: AccessSize): number {
    const slot = this.slotOf[port & 0xffff];
    if (slot === 0) return BUS_MISS;
    return this.devices[slot].pioRead(port - this.bases[slot], size);
  }

  /** Writes to `port`'s device; false when no device claims the port (the write is then ignored). */
  write(port: number, size: AccessSize, value: number): boolean {
    const slot = this.slotOf[port & 0xffff];
    if (slot === 0) return false;
    this.devices[slot].pioWrite(port - this.bases[slot], size, value);
    return true;
  }

  /** The device that owns `port`, if any (for trace and stats labels; not for the hot path). */
  deviceAt(port: number): PioDevice | undefined {
    const slot = this.slotOf[port & 0xffff];
    return slot === 0 ? undefined : this.devices[slot];
  }

  /** The registered ranges, by base port. */
  entries(): BusEntry<PioDevice>[] {
    const out: BusEntry<PioDevice>[] = [];
    for (let s = 1; s < this.devices.length; s++)
      out.push({ base: this.bases[s], size: this.sizes[s], device: this.devices[s] });
    return out.sort((a, b) => a.base - b.base);
  }
}

/** The largest MMIO address vmtool handles as a Number without losing precision (guest physical: 52 bits). */
const MMIO_LIMIT = 2 ** 52;

/** Guest-physical MMIO space. Ranges kept sorted by base; a lookup is a bisection over a handful of entries. */
export class MmioBus {
  private bases: number[] = [];
  private ends: number[] = []; // exclusive
  private devices: MmioDevice[] = [];

  /** Claims base..base+size-1 for `device`; throws BusOverlapError if any address is taken. */
  register(base: number, size: number, device: MmioDevice): void {
    if (
      !Number.isInteger(base) ||
      !Number.isInteger(size) ||
      size < 1 ||
      base < 0 ||
      base + size > MMIO_LIMIT
    )
      throw new BusConfigError(
        `${device.name}: MMIO range ${hex(base)}+${hex(size)} is not a valid physical range`,
      );
    const end = base + size;
    const i = this.upperBound(base); // first entry with base > new base
    const prev = i - 1;
    const clash =
      prev >= 0 && this.ends[prev] > base ? prev : i < this.bases.length && this.bases[i] < end ? i : -1;
    if (clash >= 0)
      throw new BusOverlapError(
        `${device.name}: MMIO ${hex(base)}..${hex(end - 1)} overlaps ${this.devices[clash].name} at ` +
          `${hex(this.bases[clash])}..${hex(this.ends[clash] - 1)}`,
      );
    this.bases.splice(i, 0, base);
    this.ends.splice(i, 0, end);
    this.devices.splice(i, 0, device);
  }

  /**
   * Reads `data.length` bytes at `addr` into `data`; false when no device claims the address (then `data` is
   * filled with all ones, what the CPU sees).
   */
  read(addr: number, data: Uint8Array): boolean {
    const i = this.indexOf(addr);
    if (i < 0) {
      data.fill(0xff);
      return false;
    }
    this.devices[i].mmioRead(addr - this.bases[i], data);
    return true;
  }

  /** Writes `data` at `addr`; false when no device claims the address (the write is then ignored). */
  write(addr: number, data: Uint8Array): boolean {
    const i = this.indexOf(addr);
    if (i < 0) return false;
    this.devices[i].mmioWrite(addr - this.bases[i], data);
    return true;
  }

  /** The device that owns `addr`, if any. */
  deviceAt(addr: number): MmioDevice | undefined {
    const i = this.indexOf(addr);
    return i < 0 ? undefined : this.devices[i];
  }

  /** The registered ranges, by base address. */
  entries(): BusEntry<MmioDevice>[] {
    return this.bases.map((base, i) => ({ base, size: this.ends[i] - base, device: this.devices[i] }));
  }

  /** Index of the range holding addr, or -1. */
  private indexOf(addr: number): number {
    const i = this.upperBound(addr) - 1;
    return i >= 0 && addr < this.ends[i] ? i : -1;
  }

  /** Index of the first range whose base is above addr. */
  private upperBound(addr: number): number {
    let lo = 0;
    let hi = this.bases.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.bases[mid] <= addr) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }
}

/**
 * Remembers which unclaimed addresses were already reported, so --trace says "nobody at port 0x80" once per
 * address instead of once per access. Bounded: after `limit` distinct addresses it stops reporting new ones.
 */
export class MissLog {
  private readonly seen = new Set<number>();
  constructor(private readonly limit = 4096) {}

  /** True the first time `addr` misses (report it then), false afterwards. */
  firstMiss(addr: number): boolean {
    if (this.seen.has(addr) || this.seen.size >= this.limit) return false;
    this.seen.add(addr);
    return true;
  }

  /** How many distinct addresses missed (up to the limit). */
  get count(): number {
    return this.seen.size;
  }
}
