// KVM's binary statistics file of a VM or a vCPU (KVM_GET_STATS_FD). vmtool opens both kinds as it creates the
// VM and each vCPU, before the first KVM_RUN: asked later, the vCPU ioctl waits for the vCPU's mutex, which
// KVM_RUN holds for as long as the guest runs. Held for the VM's lifetime, the files can be read at any time by
// any thread, and copied by another process (pidfd_getfd) for `vmtool stat`; the data layout is described by
// the file itself (src/stats/binary-stats.ts reads it).
import * as libc from "../kvm/libc.js";
import { KVM } from "../kvm/ioctls.js";

/** A new stats fd (close-on-exec) for the VM or vCPU fd `fd`, or -1 when this KVM has none (before Linux 5.14). */
export function openStatsFd(fd: number): number {
  const r = libc.ioctlInt(fd, KVM.GET_STATS_FD, 0);
  return r < 0 ? -1 : r;
}
