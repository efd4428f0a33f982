// ioeventfd and irqfd (KVM_IOEVENTFD, KVM_IRQFD): the two eventfd links between a guest and a device thread.
// An ioeventfd turns a guest write to one address (here a virtio QueueNotify register, matched on the value:
// the queue index) into an eventfd signal inside the kernel, with no exit to user space; an irqfd turns an
// eventfd write into an interrupt on a GSI of the in-kernel irqchip (ISA IRQ n is GSI n), from any thread.
import * as libc from "../kvm/libc.js";
import { KVM } from "../kvm/ioctls.js";
import { kvm_ioeventfd, kvm_irqfd } from "../kvm/structs.js";

const IOEVENTFD_FLAG_DATAMATCH = 1;

/** A new non-blocking eventfd (closed with the process; the VM keeps its own reference while assigned). */
export function newEventfd(): number {
  const fd = libc.eventfd(0, libc.EFD_CLOEXEC | libc.EFD_NONBLOCK);
  if (fd < 0) throw new libc.SysError("eventfd", libc.errno());
  return fd;
}

/** Signal `fd` when the guest writes `value` (`len` bytes) at MMIO address `addr`. */
export function addMmioIoeventfd(vmFd: number, addr: number, len: number, value: number, fd: number): void {
  const b = Buffer.alloc(kvm_ioeventfd.size);
  const o = kvm_ioeventfd.off;
  b.writeBigUInt64LE(BigInt(value), o.datamatch);
  b.writeBigUInt64LE(BigInt(addr), o.addr);
  b.writeUInt32LE(len, o.len);
  b.writeInt32LE(fd, o.fd);
  b.writeUInt32LE(IOEVENTFD_FLAG_DATAMATCH, o.flags);
  if (libc.ioctlPtr(vmFd, KVM.IOEVENTFD, b) < 0) throw new libc.SysError("KVM_IOEVENTFD", libc.errno());
}

/** Raise GSI `gsi` (an edge: KVM sets the line then clears it) each time `fd` is written. */
export function addIrqfd(vmFd: number, fd: number, gsi: number): void {
  const b = Buffer.alloc(kvm_irqfd.size);
  const o = kvm_irqfd.off;
  b.writeUInt32LE(fd, o.fd);
  b.writeUInt32LE(gsi, o.gsi);
  if (libc.ioctlPtr(vmFd, KVM.IRQFD, b) < 0) throw new libc.SysError("KVM_IRQFD", libc.errno());
}

const ONE = new Uint8Array(new BigUint64Array([1n]).buffer);

/** Add 1 to eventfd `fd` (a doorbell ring, an irqfd's interrupt); a full counter is the reader's to drain. */
export function signalEventfd(fd: number): void {
  libc.write(fd, ONE, 8);
}
