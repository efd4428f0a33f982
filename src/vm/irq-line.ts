// KVM_IRQ_LINE: drive an interrupt line of the in-kernel PIC/IOAPIC. Its own small module because the vCPU
// thread needs it (the UART's IRQ 4) and should not load the rest of the VM layer.
import * as libc from "../kvm/libc.js";
import { KVM } from "../kvm/ioctls.js";
import { kvm_irq_level } from "../kvm/structs.js";

const irqBuf = Buffer.alloc(kvm_irq_level.size);

/** Set ISA IRQ `irq` (0..15 reach both the PIC and the IOAPIC) high or low, from any thread that knows the fd. */
export function setIrqLine(vmFd: number, irq: number, high: boolean): void {
  irqBuf.writeUInt32LE(irq, kvm_irq_level.off.irq);
  irqBuf.writeUInt32LE(high ? 1 : 0, kvm_irq_level.off.level);
  if (libc.ioctlPtr(vmFd, KVM.IRQ_LINE, irqBuf) < 0) throw new libc.SysError("KVM_IRQ_LINE", libc.errno());
}
