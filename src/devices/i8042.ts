// The part of the i8042 keyboard controller (ports 0x60 data, 0x64 status/command) a Linux guest needs: a
// controller that answers its probe (self-test, command byte, interface tests) so the kernel does not spin on
// an all-ones status, and the CPU reset line (command 0xFE, or output-port bit 0 cleared through 0xD1), which
// `reboot=k` uses and which ends the run. No keyboard or mouse sits behind it: bytes written to the keyboard
// port get no answer (no IRQ 1 is ever raised), so the kernel finds no keyboard.
import type { AccessSize, PioDevice } from "./types.js";

export const I8042_DATA = 0x60;
export const I8042_STATUS = 0x64;
export const STATUS = { OBF: 0x01, IBF: 0x02, SYS: 0x04, CMD: 0x08, AUX_OBF: 0x20 } as const;
/** Command byte after a reset: keyboard interrupt on, system flag, translation (what BIOSes leave). */
const CTR_DEFAULT = 0x45;
const OUTPUT_PORT_DEFAULT = 0x01 | 0x02; // reset line high (not in reset), A20 on

/** Thrown by the controller when the guest pulses the CPU reset line: the run loop ends the run. */
export class GuestResetRequest extends Error {
  constructor(readonly how: string) {
    super(`the guest reset the machine (${how})`);
    this.name = "GuestResetRequest";
  }
}

export class I8042 implements PioDevice {
  readonly name = "i8042 (reset line)";
  private ctr = CTR_DEFAULT;
  private outputPort = OUTPUT_PORT_DEFAULT;
  private output: number[] = [];
  /** The command whose data byte the next write to 0x60 is (0x60 command byte, 0xD1 output port, ...). */
  private pending = 0;

  /** Registered at 0x60 with size 5: offset 0 is the data port, offset 4 the status/command port. */
  pioRead(offset: number, _size: AccessSize): number {
    if (offset === 0) return this.output.shift() ?? 0;
    if (offset === 4) return STATUS.SYS | (this.output.length > 0 ? STATUS.OBF : 0);
    return 0xff;
  }

  pioWrite(offset: number, _size: AccessSize, value: number): void {
    value &= 0xff;
    if (offset === 4) this.command(value);
    else if (offset === 0) this.data(value);
  }

  private command(c: number): void {
    this.pending = 0;
    if (c >= 0xf0) {
      // Pulse the output lines whose bits are 0 in the low nibble: bit 0 is the CPU reset line.
      if ((c & 1) === 0) throw new GuestResetRequest(`i8042 command 0x${c.toString(16)}`);
      return;
    }
    switch (c) {
      case 0x20:
        this.output.push(this.ctr);
        break;
      case 0x60: // write command byte
      case 0xd1: // write output port
      case 0xd2: // write keyboard output buffer
      case 0xd3: // write aux output buffer
      case 0xd4: // write to aux device
        this.pending = c;
        break;
      case 0xa7: // disable aux
        this.ctr |= 0x20;
        break;
      case 0xa8: // enable aux
        this.ctr &= ~0x20;
        break;
      case 0xa9: // aux interface test: no aux port (clock line stuck low)
        this.output.push(0x01);
        break;
      case 0xaa: // controller self-test passed
        this.output.push(0x55);
        break;
      case 0xab: // keyboard interface test passed
        this.output.push(0x00);
        break;
      case 0xad: // disable keyboard
        this.ctr |= 0x10;
        break;
      case 0xae: // enable keyboard
        this.ctr &= ~0x10;
        break;
      case 0xd0:
        this.output.push(this.outputPort);
        break;
      default:
        break; // unknown commands are ignored, as a real controller does
    }
    if (this.output.length > 16) this.output.splice(0, this.output.length - 16);
  }

  private data(v: number): void {
    const c = this.pending;
    this.pending = 0;
    switch (c) {
      case 0x60:
        this.ctr = v;
        break;
      case 0xd1:
        this.outputPort = v;
        if ((v & 1) === 0) throw new GuestResetRequest("i8042 output port bit 0 cleared");
        break;
      case 0xd2:
      case 0xd3:
        if (this.output.length < 16) this.output.push(v);
        break;
      default:
        break; // keyboard or aux device bytes: nobody there
    }
  }
}
