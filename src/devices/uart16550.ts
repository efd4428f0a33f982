// A 16550A UART (the PC's COM port), as a state machine: eight byte-wide registers at base+0..7, 16-byte receive
// FIFO with trigger levels, the four interrupt sources in the chip's priority order, modem control with loopback,
// and the divisor latch. Registers and their semantics follow the National PC16550D data sheet; docs/devices.md
// lists every register, where vmtool differs from a chip on a wire, and why.
//
// There is no clock inside: a character is transmitted the moment THR is written (so THRE and TEMT are always
// set), and a "character time" is zero, so the FIFO's character-timeout indication is pending whenever the FIFO
// holds data below the trigger level. Input typed on the host waits in a host-side queue (the far end of the
// line) and enters the FIFO as room frees up, so nothing typed is lost while the guest is slow; only a line with
// nowhere to wait (loopback, or the host queue itself full) overruns.
import { ByteQueue, type InputQueue } from "./byte-queue.js";
import type { AccessSize, ByteSink, IrqLine, PioDevice } from "./types.js";

/** Register offsets from the base port (DLAB = LCR bit 7 switches offsets 0 and 1 to the divisor latch). */
export const UART_REG = {
  RBR_THR_DLL: 0,
  IER_DLM: 1,
  IIR_FCR: 2,
  LCR: 3,
  MCR: 4,
  LSR: 5,
  MSR: 6,
  SCR: 7,
} as const;

/** Interrupt enable register bits. */
export const IER = { ERBFI: 0x01, ETBEI: 0x02, ELSI: 0x04, EDSSI: 0x08 } as const;
/** Interrupt identification values (bits 0-3) and the "FIFOs enabled" bits 6-7. */
export const IIR = {
  NONE: 0x01,
  MODEM: 0x00,
  THRE: 0x02,
  RX_DATA: 0x04,
  LINE: 0x06,
  TIMEOUT: 0x0c,
  FIFO: 0xc0,
};
/** FIFO control register bits (write-only). */
export const FCR = { ENABLE: 0x01, CLEAR_RX: 0x02, CLEAR_TX: 0x04, DMA: 0x08, TRIGGER: 0xc0 } as const;
/** Line control register bits. */
export const LCR = { WORD_LENGTH: 0x03, STOP_BITS: 0x04, PARITY: 0x38, BREAK: 0x40, DLAB: 0x80 } as const;
/** Modem control register bits. */
export const MCR = { DTR: 0x01, RTS: 0x02, OUT1: 0x04, OUT2: 0x08, LOOP: 0x10 } as const;
/** Line status register bits. */
export const LSR = {
  DR: 0x01,
  OE: 0x02,
  PE: 0x04,
  FE: 0x08,
  BI: 0x10,
  THRE: 0x20,
  TEMT: 0x40,
  FIFO_ERROR: 0x80,
} as const;
/** Modem status register bits: deltas in 0-3, the current inputs in 4-7. */
export const MSR = {
  DCTS: 0x01,
  DDSR: 0x02,
  TERI: 0x04,
  DDCD: 0x08,
  CTS: 0x10,
  DSR: 0x20,
  RI: 0x40,
  DCD: 0x80,
} as const;

const LSR_ERRORS = LSR.OE | LSR.PE | LSR.FE | LSR.BI;
const FIFO_SIZE = 16;
const TRIGGER_LEVELS = [1, 4, 8, 14] as const;
/** The crystal of a PC's UART (1.8432 MHz) divided by 16: the baud rate with divisor 1. */
export const UART_BASE_BAUD = 115200;

/**
 * When the chip's interrupt reaches the interrupt controller.
 * - "out2" (default, like a real PC): only while MCR.OUT2 is set and loopback is off. On PC boards OUT2 enables
 *   the IRQ line's driver, and in loopback the chip forces its OUT2 pin inactive.
 * - "always" (like QEMU's serial device): whenever an enabled interrupt is pending, whatever MCR says.
 */
export type UartIrqGate = "out2" | "always";

export interface UartOptions {
  /** Where transmitted bytes go. */
  sink: ByteSink;
  /** The interrupt line (IRQ 4 for COM1); none: the guest can only poll. */
  irq?: IrqLine;
  irqGate?: UartIrqGate;
  /** The host-side input queue (default: 64 KiB in this thread). Capacity 0 makes input a raw line. */
  input?: InputQueue;
  /** Name on the bus, in traces and stats. */
  name?: string;
}

/** Errors a character can arrive with (a host-side test of the receiver's error handling). */
export interface LineErrors {
  parity?: boolean;
  framing?: boolean;
}

/** Everything the UART holds, as plain values (for introspection, and to see what a lock must guard). */
export interface UartState {
  rxFifo: number[];
  ier: number;
  iir: number;
  lcr: number;
  mcr: number;
  lsr: number;
  msr: number;
  scr: number;
  divisor: number;
  fifoEnabled: boolean;
  triggerLevel: number;
  thrInterruptArmed: boolean;
  irqLevel: boolean;
  hostInputWaiting: number;
}

export class Uart16550 implements PioDevice {
  readonly name: string;
  private readonly sink: ByteSink;
  private readonly irq: IrqLine | undefined;
  private readonly gate: UartIrqGate;
  private readonly input: InputQueue;
  private readonly txByte = new Uint8Array(1); // reused: a write allocates nothing

  // --- The chip's state (all of it; docs/devices.md lists it for the multi-vCPU locking of issue 6). ---
  /** Receive FIFO (16450 mode uses one slot): bytes and the LSR error bits each arrived with. */
  private readonly rxData = new Uint8Array(FIFO_SIZE);
  private readonly rxErrors = new Uint8Array(FIFO_SIZE);
  private rxHead = 0;
  private rxCount = 0;
  /** What RBR reads when the FIFO is empty: the last byte read (the register keeps it). */
  private lastRbr = 0;
  private ier = 0;
  private lcr = 0;
  private mcr = 0;
  private scr = 0;
  private dll = 0x0c; // undefined after reset on a real chip; 12 = 9600 baud
  private dlm = 0;
  private fifoEnabled = false;
  private trigger = 1;
  /** LSR bits 1-4, latched until LSR is read. */
  private lsrErrors = 0;
  /** LSR bit 7: an error character is (or was, until LSR is read) in the FIFO. */
  private fifoErrorFlag = false;
  /** The THRE interrupt condition: set when THR empties or ETBEI is enabled, cleared by IIR read / THR write. */
  private threPending = false;
  /** MSR bits 4-7 as the chip sees them now, and bits 0-3 (deltas) latched until MSR is read. */
  private modemInputs = 0;
  private msrDeltas = 0;
  /** MSR bits 4-7 from the far end when not in loopback: a ready peer (CTS, DSR, DCD), no ring. */
  private externalInputs = MSR.CTS | MSR.DSR | MSR.DCD;
  private irqLevel = false;

  constructor(opts: UartOptions) {
    this.name = opts.name ?? "uart16550";
    this.sink = opts.sink;
    this.irq = opts.irq;
    this.gate = opts.irqGate ?? "out2";
    this.input = opts.input ?? new ByteQueue(64 * 1024);
    this.updateModemInputs();
    this.msrDeltas = 0; // power-on is not a change
  }

  // ---------------------------------------------------------------------------------------------------------
  // Bus side. The registers are one byte wide; a wider access is split into byte accesses at consecutive
  // offsets, lowest first, as an ISA bus splits a 16-bit `outw` to an 8-bit device. Bytes past offset 7 read
  // as all ones and are dropped on write.

  pioRead(offset: number, size: AccessSize): number {
    if (size === 1) return this.readRegister(offset);
    let value = 0;
    for (let i = 0; i < size; i++) {
      const b = offset + i < 8 ? this.readRegister(offset + i) : 0xff;
      value += b * 2 ** (8 * i);
    }
    return value;
  }

  pioWrite(offset: number, size: AccessSize, value: number): void {
    if (size === 1) return this.writeRegister(offset, value & 0xff);
    for (let i = 0; i < size && offset + i < 8; i++)
      this.writeRegister(offset + i, Math.floor(value / 2 ** (8 * i)) & 0xff);
  }

  readRegister(reg: number): number {
    switch (reg) {
      case 0:
        return this.lcr & LCR.DLAB ? this.dll : this.readRbr();
      case 1:
        return this.lcr & LCR.DLAB ? this.dlm : this.ier;
      case 2:
        return this.readIir();
      case 3:
        return this.lcr;
      case 4:
        return this.mcr;
      case 5:
        return this.readLsr();
      case 6:
        return this.readMsr();
      case 7:
        return this.scr;
      default:
        return 0xff;
    }
  }

  writeRegister(reg: number, value: number): void {
    switch (reg) {
      case 0:
        if (this.lcr & LCR.DLAB) this.dll = value;
        else this.writeThr(value);
        return;
      case 1:
        if (this.lcr & LCR.DLAB) this.dlm = value;
        else this.writeIer(value);
        return;
      case 2:
        return this.writeFcr(value);
      case 3:
        return this.writeLcr(value);
      case 4:
        return this.writeMcr(value);
      case 7:
        this.scr = value;
        return;
      // LSR and MSR are read-only here (the data sheet reserves their writes for factory test).
    }
  }

  // ---------------------------------------------------------------------------------------------------------
  // Host side.

  /**
   * Input from the host (what was typed). Bytes go through the host-side queue into the receive FIFO as room
   * frees up. Only when the queue is full too do bytes arrive with nowhere to wait: then, like on a wire, they
   * overrun the full FIFO (LSR.OE) and are lost. In loopback the receiver hears the transmitter, not the host:
   * input waits in the queue (or, if the queue is full, is lost without an overrun). Returns how many bytes
   * were kept (queued or received).
   */
  pushInput(bytes: Uint8Array): number {
    let i = 0;
    while (i < bytes.length) {
      i += this.input.push(i === 0 ? bytes : bytes.subarray(i));
      const waiting = this.input.length;
      this.refill();
      if (this.input.length === waiting) break; // the FIFO took nothing: no room left anywhere
    }
    let kept = i;
    // The rest have nowhere to wait: on the wire they reach the receiver (and overrun it when it is full).
    if (!(this.mcr & MCR.LOOP)) for (; i < bytes.length; i++) if (this.receive(bytes[i], 0)) kept++;
    this.updateIrq();
    return kept;
  }

  /**
   * Moves waiting host input into the FIFO and updates the interrupt line. The run loop calls it after another
   * thread filled a SharedByteQueue (and kicked this vCPU so the guest sees the interrupt).
   */
  pollInput(): void {
    this.refill();
    this.updateIrq();
  }

  /** A character arriving on the line, with optional errors (no queue: it overruns a full FIFO). */
  receiveFromLine(byte: number, errors: LineErrors = {}): void {
    this.receive(byte & 0xff, (errors.parity ? LSR.PE : 0) | (errors.framing ? LSR.FE : 0));
    this.updateIrq();
  }

  /** A break on the line: one zero character flagged BI, as the 16550 loads it. */
  receiveBreak(): void {
    this.receive(0, LSR.BI);
    this.updateIrq();
  }

  /** The far end's modem signals (MSR bits 4-7 when not in loopback). A change sets its delta bit. */
  setModemInputs(signals: { cts?: boolean; dsr?: boolean; ri?: boolean; dcd?: boolean }): void {
    const bit = (on: boolean | undefined, mask: number) =>
      (on ?? (this.externalInputs & mask) !== 0) ? mask : 0;
    this.externalInputs =
      bit(signals.cts, MSR.CTS) |
      bit(signals.dsr, MSR.DSR) |
      bit(signals.ri, MSR.RI) |
      bit(signals.dcd, MSR.DCD);
    this.updateModemInputs();
    this.updateIrq();
  }

  /** True while the chip has an enabled interrupt pending (before OUT2 gating). */
  get interruptPending(): boolean {
    return this.pendingId() !== IIR.NONE;
  }

  /** The level last driven on the IRQ line. */
  get irqOutput(): boolean {
    return this.irqLevel;
  }

  /** The current baud rate the guest programmed (0 when the divisor is 0). */
  get baudRate(): number {
    const divisor = this.dlm * 256 + this.dll;
    return divisor === 0 ? 0 : UART_BASE_BAUD / divisor;
  }

  /** A copy of the whole state, read without side effects. */
  state(): UartState {
    const rxFifo: number[] = [];
    for (let i = 0; i < this.rxCount; i++) rxFifo.push(this.rxData[(this.rxHead + i) % FIFO_SIZE]);
    return {
      rxFifo,
      ier: this.ier,
      iir: this.pendingId() | (this.fifoEnabled ? IIR.FIFO : 0),
      lcr: this.lcr,
      mcr: this.mcr,
      lsr: this.lsrValue(),
      msr: this.modemInputs | this.msrDeltas,
      scr: this.scr,
      divisor: this.dlm * 256 + this.dll,
      fifoEnabled: this.fifoEnabled,
      triggerLevel: this.trigger,
      thrInterruptArmed: this.threPending,
      irqLevel: this.irqLevel,
      hostInputWaiting: this.input.length,
    };
  }

  // ---------------------------------------------------------------------------------------------------------
  // Registers.

  private readRbr(): number {
    if (this.rxCount === 0) return this.lastRbr;
    const b = this.rxData[this.rxHead];
    this.rxHead = (this.rxHead + 1) % FIFO_SIZE;
    this.rxCount--;
    this.lastRbr = b;
    // The next character's errors show in LSR once it reaches the top of the FIFO.
    if (this.rxCount > 0) this.lsrErrors |= this.rxErrors[this.rxHead];
    this.refill();
    this.updateIrq();
    return b;
  }

  private writeThr(b: number): void {
    // Writing THR clears a THRE interrupt; the byte leaves at once, so THR is empty again and THRE re-arms.
    // The line drops in between, so an edge-triggered PIC sees a fresh edge (as QEMU does).
    this.threPending = false;
    this.updateIrq();
    if (!(this.lcr & LCR.BREAK)) {
      // While a break is being sent the line is held at space: the character is lost.
      if (this.mcr & MCR.LOOP) this.receive(b, 0);
      else {
        this.txByte[0] = b;
        this.sink(this.txByte);
      }
    }
    this.threPending = true;
    this.updateIrq();
  }

  private writeIer(value: number): void {
    const enabled = value & ~this.ier;
    this.ier = value & 0x0f; // bits 4-7 are always 0
    // Enabling the THRE interrupt while THR is empty (always, here) raises it at once.
    if (enabled & IER.ETBEI) this.threPending = true;
    this.updateIrq();
  }

  private readIir(): number {
    const id = this.pendingId();
    // Reading IIR clears the THRE interrupt, but only when it is the one being reported.
    if (id === IIR.THRE) {
      this.threPending = false;
      this.updateIrq();
    }
    return id | (this.fifoEnabled ? IIR.FIFO : 0);
  }

  private writeFcr(value: number): void {
    const enable = (value & FCR.ENABLE) !== 0;
    if (enable !== this.fifoEnabled) {
      // Switching FIFO mode on or off empties the FIFOs.
      this.clearRx();
      this.fifoEnabled = enable;
    }
    // The other bits are only written while bit 0 is set.
    if (enable) {
      if (value & FCR.CLEAR_RX) this.clearRx();
      // CLEAR_TX: the transmitter is always empty here. DMA mode (bit 3) only changes the RXRDY/TXRDY pins.
      this.trigger = TRIGGER_LEVELS[value >> 6];
    }
    this.refill();
    this.updateIrq();
  }

  private writeLcr(value: number): void {
    const breakStarted = value & LCR.BREAK & ~this.lcr;
    this.lcr = value; // word length, stop bits and parity are stored only: bytes go out whole
    if (breakStarted && this.mcr & MCR.LOOP) this.receive(0, LSR.BI);
    this.updateIrq();
  }

  private writeMcr(value: number): void {
    const leftLoop = this.mcr & MCR.LOOP & ~value;
    this.mcr = value & 0x1f; // bits 5-7 are always 0
    this.updateModemInputs();
    if (leftLoop) this.refill(); // the host's input reaches the receiver again
    this.updateIrq();
  }

  private readLsr(): number {
    const value = this.lsrValue();
    this.lsrErrors = 0;
    // Bit 7 stays set only while error characters other than the one just reported are still in the FIFO.
    this.fifoErrorFlag = false;
    for (let i = 1; i < this.rxCount; i++)
      if (this.rxErrors[(this.rxHead + i) % FIFO_SIZE]) this.fifoErrorFlag = true;
    this.updateIrq();
    return value;
  }

  private lsrValue(): number {
    return (
      (this.rxCount > 0 ? LSR.DR : 0) |
      this.lsrErrors |
      LSR.THRE |
      LSR.TEMT |
      (this.fifoEnabled && this.fifoErrorFlag ? LSR.FIFO_ERROR : 0)
    );
  }

  private readMsr(): number {
    const value = this.modemInputs | this.msrDeltas;
    this.msrDeltas = 0;
    this.updateIrq();
    return value;
  }

  // ---------------------------------------------------------------------------------------------------------
  // Internals.

  /** A complete character in the receiver: into the FIFO (true), or an overrun when it is full (false). */
  private receive(byte: number, errors: number): boolean {
    const capacity = this.fifoEnabled ? FIFO_SIZE : 1;
    if (this.rxCount < capacity) {
      const slot = (this.rxHead + this.rxCount) % FIFO_SIZE;
      this.rxData[slot] = byte;
      this.rxErrors[slot] = errors;
      if (this.rxCount === 0) this.lsrErrors |= errors; // it is the top character: its errors show now
      if (errors) this.fifoErrorFlag = true;
      this.rxCount++;
      return true;
    }
    this.lsrErrors |= LSR.OE;
    if (!this.fifoEnabled) {
      // 16450 mode: the new character overwrites the one in RBR. FIFO mode: the new one is lost.
      this.rxData[this.rxHead] = byte;
      this.rxErrors[this.rxHead] = errors;
      this.lsrErrors |= errors;
    }
    return false;
  }

  /** Moves host input into the receiver while there is room (never in loopback: the receiver hears TX). */
  private refill(): void {
    if (this.mcr & MCR.LOOP) return;
    const capacity = this.fifoEnabled ? FIFO_SIZE : 1;
    while (this.rxCount < capacity) {
      const b = this.input.shift();
      if (b < 0) break;
      this.receive(b, 0);
    }
  }

  private clearRx(): void {
    this.rxHead = 0;
    this.rxCount = 0;
    this.fifoErrorFlag = false;
  }

  /** Recomputes MSR bits 4-7 (from MCR in loopback, from the far end otherwise) and latches the deltas. */
  private updateModemInputs(): void {
    let now: number;
    if (this.mcr & MCR.LOOP) {
      // Loopback wiring: RTS→CTS, DTR→DSR, OUT1→RI, OUT2→DCD.
      now =
        (this.mcr & MCR.RTS ? MSR.CTS : 0) |
        (this.mcr & MCR.DTR ? MSR.DSR : 0) |
        (this.mcr & MCR.OUT1 ? MSR.RI : 0) |
        (this.mcr & MCR.OUT2 ? MSR.DCD : 0);
    } else now = this.externalInputs;
    const changed = now ^ this.modemInputs;
    if (changed & MSR.CTS) this.msrDeltas |= MSR.DCTS;
    if (changed & MSR.DSR) this.msrDeltas |= MSR.DDSR;
    if (changed & MSR.DCD) this.msrDeltas |= MSR.DDCD;
    if (changed & MSR.RI && !(now & MSR.RI)) this.msrDeltas |= MSR.TERI; // trailing edge of a ring only
    this.modemInputs = now;
  }

  /** The interrupt the chip reports now, in the 16550's priority order. */
  private pendingId(): number {
    const ier = this.ier;
    if (ier & IER.ELSI && this.lsrErrors & LSR_ERRORS) return IIR.LINE;
    if (ier & IER.ERBFI && this.rxCount > 0) {
      if (!this.fifoEnabled || this.rxCount >= this.trigger) return IIR.RX_DATA;
      return IIR.TIMEOUT; // data below the trigger level, and no more arriving (a character time is zero here)
    }
    if (ier & IER.ETBEI && this.threPending) return IIR.THRE;
    if (ier & IER.EDSSI && this.msrDeltas) return IIR.MODEM;
    return IIR.NONE;
  }

  /** Drives the IRQ line to match the pending state, through the OUT2 gate, only when the level changes. */
  private updateIrq(): void {
    const gateOpen = this.gate === "always" || (this.mcr & (MCR.OUT2 | MCR.LOOP)) === MCR.OUT2;
    const level = gateOpen && this.pendingId() !== IIR.NONE;
    if (level !== this.irqLevel) {
      this.irqLevel = level;
      this.irq?.setLevel(level);
    }
  }
}
