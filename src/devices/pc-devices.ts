// The legacy PC devices of `vmtool run`, built and placed on the port bus at their usual addresses in one call,
// so the run loop (and later several vCPU workers) wire them the same way.
import { IRQS, PORTS } from "../vm/machine-layout.js";
import type { InputQueue } from "./byte-queue.js";
import type { PioBus } from "./bus.js";
import { DebugConsole } from "./debug-console.js";
import { ExitPort } from "./exit-port.js";
import type { ByteSink, IrqLine } from "./types.js";
import { Uart16550, type UartIrqGate } from "./uart16550.js";

export interface PcDevicesOptions {
  /** Where the debug console's bytes go. */
  console: ByteSink;
  /** Where COM1's transmitted bytes go. */
  serial: ByteSink;
  /** COM1's interrupt line (ISA IRQ 4 through the in-kernel irqchip). */
  com1Irq?: IrqLine;
  com1IrqGate?: UartIrqGate;
  /** COM1's host-side input queue (a SharedByteQueue when standard input is read in another thread). */
  com1Input?: InputQueue;
}

export interface PcDevices {
  debugConsole: DebugConsole;
  exitPort: ExitPort;
  com1: Uart16550;
}

/** Debug console at 0xE9, exit port at 0xF4, a 16550A at 0x3F8..0x3FF (IRQ 4). */
export function attachPcDevices(bus: PioBus, opts: PcDevicesOptions): PcDevices {
  const debugConsole = new DebugConsole(opts.console);
  const exitPort = new ExitPort();
  const com1 = new Uart16550({
    name: `com1 (16550A, irq ${IRQS.COM1})`,
    sink: opts.serial,
    irq: opts.com1Irq,
    irqGate: opts.com1IrqGate,
    input: opts.com1Input,
  });
  bus.register(PORTS.DEBUG_CONSOLE, 1, debugConsole);
  bus.register(PORTS.EXIT, 1, exitPort);
  bus.register(PORTS.COM1, 8, com1);
  return { debugConsole, exitPort, com1 };
}
