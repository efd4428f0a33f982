// COM1 as vmtool wires it, in whichever thread owns it (the I/O worker, or the one vCPU thread of a machine
// without virtio devices): a 16550A whose level-triggered IRQ 4 is driven with KVM_IRQ_LINE (it must fall when
// the guest reads IIR or RBR, which an irqfd cannot express), and whose host input comes from a queue.
import { Uart16550 } from "../devices/uart16550.js";
import type { InputQueue } from "../devices/byte-queue.js";
import type { ByteSink } from "../devices/types.js";
import { IRQS } from "../vm/machine-layout.js";
import { setIrqLine } from "../vm/irq-line.js";

/** `vmFd`: the VM whose in-kernel irqchip gets the interrupt (undefined without one: the guest can only poll). */
export function createCom1(sink: ByteSink, vmFd: number | undefined, input?: InputQueue): Uart16550 {
  return new Uart16550({
    name: `com1 (16550A, irq ${IRQS.COM1})`,
    sink,
    irq: vmFd === undefined ? undefined : { setLevel: (high) => setIrqLine(vmFd, IRQS.COM1, high) },
    input,
  });
}
