// A minimal MC146818 CMOS real-time clock on ports 0x70 (index; bit 7 masks NMI) and 0x71 (data), as every PC
// has. Linux reads it at boot (the wall clock, and rtc_cmos's probe); without one, the data port reads 0xFF,
// whose bit 7 is "update in progress", and the kernel's polls spin on it for seconds (tens of thousands of
// exits). The time is the host's clock (UTC) plus whatever offset the guest set by writing the time registers.
//
// Update-in-progress: the chip sets UIP 244 us before each second's update and clears it after; here UIP reads
// set only in that last 244 us window of each host second (and never while the guest holds SET), so a reader
// that waits for UIP clear waits at most that long, as on hardware. No interrupts are raised (IRQ 8: periodic,
// alarm and update interrupts are not emulated; register C reads 0). Registers 0x0E..0x7F are plain CMOS RAM.
import type { AccessSize, PioDevice } from "./types.js";

export const CMOS_PORT = 0x70;
export const REG = {
  SECONDS: 0x00,
  MINUTES: 0x02,
  HOURS: 0x04,
  WEEKDAY: 0x06,
  DAY: 0x07,
  MONTH: 0x08,
  YEAR: 0x09,
  A: 0x0a,
  B: 0x0b,
  C: 0x0c,
  D: 0x0d,
  /** The IBM PC's century byte (ACPI's FADT names it too). */
  CENTURY: 0x32,
} as const;
export const A_UIP = 0x80;
/** Register A at power-on: 32.768 kHz time base (DV = 010), 1024 Hz rate selection (RS = 0110). */
const A_DEFAULT = 0x26;
export const B_SET = 0x80;
export const B_BINARY = 0x04;
export const B_24H = 0x02;
/** Register D: the battery is good (VRT). */
const D_VRT = 0x80;
/** How long before each second's update UIP is set (the chip's t_BUC). */
export const UIP_WINDOW_MS = 0.244;
const CMOS_BYTES = 128;
/** The state one VM's RTC keeps: 128 bytes of CMOS, then the guest's offset from host time (a float64). */
export const CMOS_STATE_BYTES = CMOS_BYTES + 8;

/** A clock in milliseconds since the epoch, fractions included (injected so tests can set it). */
export type Clock = () => number;

export interface CmosRtcOptions {
  /**
   * The RTC's state (CMOS_STATE_BYTES), shared by the vCPU threads of one VM, each with a CmosRtc of its own
   * over it (only the index register is per vCPU: Linux sets it and reads the data port under one lock, on one
   * CPU); default: a buffer of its own.
   */
  state?: SharedArrayBuffer | ArrayBuffer;
  clock?: Clock;
}

export class CmosRtc implements PioDevice {
  readonly name = "cmos-rtc (MC146818)";
  private readonly ram: Uint8Array;
  /** [0]: guest time minus host time, in whole seconds (set by writing the time registers). */
  private readonly offset: Float64Array;
  private readonly clock: Clock;
  private index = 0;

  constructor(opts: CmosRtcOptions = {}) {
    const state = opts.state ?? new ArrayBuffer(CMOS_STATE_BYTES);
    if (state.byteLength < CMOS_STATE_BYTES)
      throw new RangeError(`the RTC's state needs ${CMOS_STATE_BYTES} bytes`);
    this.ram = new Uint8Array(state, 0, CMOS_BYTES);
    this.offset = new Float64Array(state, CMOS_BYTES, 1);
    this.clock = opts.clock ?? (() => performance.timeOrigin + performance.now());
    if (this.ram[REG.A] === 0) {
      this.ram[REG.A] = A_DEFAULT;
      this.ram[REG.B] = B_24H;
      this.ram[REG.D] = D_VRT;
    }
  }

  pioRead(offset: number, _size: AccessSize): number {
    if (offset === 0) return 0xff; // the index port is write-only
    return this.readReg(this.index);
  }

  pioWrite(offset: number, _size: AccessSize, value: number): void {
    if (offset === 0) {
      this.index = value & 0x7f; // bit 7: NMI mask, nothing to mask here
      return;
    }
    this.writeReg(this.index, value & 0xff);
  }

  readReg(reg: number): number {
    switch (reg) {
      case REG.A: {
        const ms = this.clock();
        const frac = ms - Math.floor(ms / 1000) * 1000;
        const uip = (this.ram[REG.B] & B_SET) === 0 && frac >= 1000 - UIP_WINDOW_MS;
        return (this.ram[REG.A] & 0x7f) | (uip ? A_UIP : 0);
      }
      case REG.C:
        return 0;
      case REG.D:
        return D_VRT;
    }
    if (reg <= REG.YEAR || reg === REG.CENTURY) {
      if (this.ram[REG.B] & B_SET) return this.ram[reg]; // frozen while the guest sets the time
      this.latchTime();
      return this.ram[reg];
    }
    return this.ram[reg];
  }

  writeReg(reg: number, value: number): void {
    if (reg === REG.A) {
      this.ram[REG.A] = value & 0x7f; // UIP is read-only
    } else if (reg === REG.B) {
      const wasSet = (this.ram[REG.B] & B_SET) !== 0;
      if (!wasSet && value & B_SET) this.latchTime(); // the registers hold the time the guest then edits
      this.ram[REG.B] = value;
      if (wasSet && !(value & B_SET)) this.offset[0] = this.registersToSeconds() - this.hostSeconds();
    } else if (reg === REG.C || reg === REG.D) {
      // read-only
    } else {
      this.ram[reg] = value;
      // A time register written outside SET takes effect at once, as the chip's next update would make it.
      if ((reg <= REG.YEAR || reg === REG.CENTURY) && !(this.ram[REG.B] & B_SET))
        this.offset[0] = this.registersToSeconds() - this.hostSeconds();
    }
  }

  private hostSeconds(): number {
    return Math.floor(this.clock() / 1000);
  }

  private enc(v: number): number {
    return this.ram[REG.B] & B_BINARY ? v : ((v / 10) | 0) * 16 + (v % 10);
  }

  private dec(v: number): number {
    return this.ram[REG.B] & B_BINARY ? v : (v >> 4) * 10 + (v & 0xf);
  }

  /** Write the current guest time into the time registers, in the format register B asks for. */
  private latchTime(): void {
    const d = new Date((this.hostSeconds() + this.offset[0]) * 1000);
    const r = this.ram;
    r[REG.SECONDS] = this.enc(d.getUTCSeconds());
    r[REG.MINUTES] = this.enc(d.getUTCMinutes());
    const h = d.getUTCHours();
    if (r[REG.B] & B_24H) r[REG.HOURS] = this.enc(h);
    else r[REG.HOURS] = this.enc(h % 12 === 0 ? 12 : h % 12) | (h >= 12 ? 0x80 : 0);
    r[REG.WEEKDAY] = this.enc(d.getUTCDay() + 1);
    r[REG.DAY] = this.enc(d.getUTCDate());
    r[REG.MONTH] = this.enc(d.getUTCMonth() + 1);
    r[REG.YEAR] = this.enc(d.getUTCFullYear() % 100);
    r[REG.CENTURY] = this.enc(Math.floor(d.getUTCFullYear() / 100));
  }

  /** The time the registers hold, as seconds since the epoch (out-of-range fields are clamped by Date). */
  private registersToSeconds(): number {
    const r = this.ram;
    let h: number;
    if (r[REG.B] & B_24H) h = this.dec(r[REG.HOURS]);
    else {
      const pm = (r[REG.HOURS] & 0x80) !== 0;
      h = this.dec(r[REG.HOURS] & 0x7f) % 12;
      if (pm) h += 12;
    }
    const century = this.dec(r[REG.CENTURY]) || 20;
    const ms = Date.UTC(
      century * 100 + this.dec(r[REG.YEAR]),
      this.dec(r[REG.MONTH]) - 1,
      this.dec(r[REG.DAY]),
      h,
      this.dec(r[REG.MINUTES]),
      this.dec(r[REG.SECONDS]),
    );
    return Number.isFinite(ms) ? Math.floor(ms / 1000) : this.hostSeconds();
  }
}
