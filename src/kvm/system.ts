// The KVM system fd (/dev/kvm): opening it with actionable errors, API version, capabilities, and the
// host-wide queries (supported CPUID, MSR lists) that `vmtool host`/`vmx` and the VMM share.
import { existsSync } from "node:fs";
import { KvmCapabilityError, KvmUnavailableError } from "./errors.js";
import * as libc from "./libc.js";
import { KVM, KVM_API_VERSION } from "./ioctls.js";
import { KVM_CAP } from "./caps.js";
import { kvm_cpuid2, kvm_cpuid_entry2, kvm_msr_list, kvm_msrs, kvm_msr_entry } from "./structs.js";

export interface CpuidEntry {
  function: number;
  index: number;
  flags: number;
  eax: number;
  ebx: number;
  ecx: number;
  edx: number;
}

export class Kvm {
  private constructor(
    readonly fd: number,
    readonly path: string,
  ) {}

  /** Open /dev/kvm (or `path`) and check the API version; errors say what to do about them. */
  static open(path = "/dev/kvm"): Kvm {
    if (!existsSync(path)) {
      throw new KvmUnavailableError(
        `${path} does not exist: load the KVM module for this CPU (modprobe kvm_intel or kvm_amd), ` +
          `and enable VT-x/AMD-V in the firmware (BIOS/UEFI) setup`,
      );
    }
    const fd = libc.open(path, libc.O_RDWR | libc.O_CLOEXEC, 0);
    if (fd < 0) {
      const e = libc.errno();
      if (e === libc.EACCES || e === libc.EPERM)
        throw new KvmUnavailableError(
          `${path}: permission denied: add your user to the group that owns it (usually 'kvm': ` +
            `sudo usermod -aG kvm $USER, then log in again), or run as root`,
        );
      throw new KvmUnavailableError(`${path}: cannot open: ${libc.errnoName(e)} (${libc.strerror(e)})`);
    }
    const kvm = new Kvm(fd, path);
    const version = kvm.apiVersion();
    if (version !== KVM_API_VERSION) {
      kvm.close();
      throw new KvmUnavailableError(`${path}: KVM API version ${version}, vmtool needs ${KVM_API_VERSION}`);
    }
    return kvm;
  }

  apiVersion(): number {
    return libc.ioctlInt(this.fd, KVM.GET_API_VERSION, 0);
  }

  /** KVM_CHECK_EXTENSION: 0 when absent, else a capability-specific value (often 1). Name or number. */
  checkExtension(cap: string | number): number {
    const n = typeof cap === "number" ? cap : KVM_CAP[cap];
    if (n === undefined) throw new Error(`unknown KVM capability KVM_CAP_${cap}`);
    const r = libc.ioctlInt(this.fd, KVM.CHECK_EXTENSION, n);
    return r < 0 ? 0 : r;
  }

  /** Fail with one line naming every capability in `caps` that this KVM lacks. */
  requireCaps(caps: readonly string[], why = "vmtool's VMM"): void {
    const missing = caps.filter((c) => this.checkExtension(c) === 0);
    if (missing.length > 0)
      throw new KvmCapabilityError(
        `${this.path} lacks ${missing.map((c) => `KVM_CAP_${c}`).join(", ")}, which ${why} needs`,
      );
  }

  vcpuMmapSize(): number {
    const r = libc.ioctlInt(this.fd, KVM.GET_VCPU_MMAP_SIZE, 0);
    if (r < 0) throw new libc.SysError("KVM_GET_VCPU_MMAP_SIZE", libc.errno());
    return r;
  }

  /** KVM_GET_SUPPORTED_CPUID (or EMULATED): the CPUID leaves KVM can offer a guest. */
  cpuid(which: "supported" | "emulated" = "supported"): CpuidEntry[] {
    const req = which === "supported" ? KVM.GET_SUPPORTED_CPUID : KVM.GET_EMULATED_CPUID;
    for (let nent = 64; nent <= 4096; nent *= 2) {
      const buf = Buffer.alloc(kvm_cpuid2.size + nent * kvm_cpuid_entry2.size);
      buf.writeUInt32LE(nent, kvm_cpuid2.off.nent);
      if (libc.ioctlPtr(this.fd, req, buf) < 0) {
        const e = libc.errno();
        if (e === 7 /* E2BIG */) continue;
        throw new libc.SysError(
          which === "supported" ? "KVM_GET_SUPPORTED_CPUID" : "KVM_GET_EMULATED_CPUID",
          e,
        );
      }
      const n = buf.readUInt32LE(kvm_cpuid2.off.nent);
      const out: CpuidEntry[] = [];
      for (let i = 0; i < n; i++) {
        const b = kvm_cpuid2.size + i * kvm_cpuid_entry2.size;
        const o = kvm_cpuid_entry2.off;
        out.push({
          function: buf.readUInt32LE(b + o.function),
          index: buf.readUInt32LE(b + o.index),
          flags: buf.readUInt32LE(b + o.flags),
          eax: buf.readUInt32LE(b + o.eax),
          ebx: buf.readUInt32LE(b + o.ebx),
          ecx: buf.readUInt32LE(b + o.ecx),
          edx: buf.readUInt32LE(b + o.edx),
        });
      }
      return out;
    }
    throw new Error("KVM CPUID list larger than 4096 entries");
  }

  /** KVM_GET_MSR_INDEX_LIST ("saved") or KVM_GET_MSR_FEATURE_INDEX_LIST ("feature"). */
  msrIndexList(which: "saved" | "feature"): number[] {
    const req = which === "saved" ? KVM.GET_MSR_INDEX_LIST : KVM.GET_MSR_FEATURE_INDEX_LIST;
    const probe = Buffer.alloc(kvm_msr_list.size);
    libc.ioctlPtr(this.fd, req, probe); // fails with E2BIG and stores the count
    const n = probe.readUInt32LE(0);
    const buf = Buffer.alloc(kvm_msr_list.size + 4 * n);
    buf.writeUInt32LE(n, 0);
    if (libc.ioctlPtr(this.fd, req, buf) < 0)
      throw new libc.SysError(
        which === "saved" ? "KVM_GET_MSR_INDEX_LIST" : "KVM_GET_MSR_FEATURE_INDEX_LIST",
        libc.errno(),
      );
    const count = buf.readUInt32LE(0);
    return Array.from({ length: count }, (_, i) => buf.readUInt32LE(kvm_msr_list.size + 4 * i));
  }

  /** KVM_GET_MSRS on the system fd: values of feature MSRs (what KVM offers a guest, e.g. nested VMX caps). */
  featureMsrs(indices: readonly number[]): Map<number, bigint> {
    const buf = Buffer.alloc(kvm_msrs.size + indices.length * kvm_msr_entry.size);
    buf.writeUInt32LE(indices.length, kvm_msrs.off.nmsrs);
    indices.forEach((idx, i) =>
      buf.writeUInt32LE(idx, kvm_msrs.size + i * kvm_msr_entry.size + kvm_msr_entry.off.index),
    );
    const r = libc.ioctlPtr(this.fd, KVM.GET_MSRS, buf);
    if (r < 0) throw new libc.SysError("KVM_GET_MSRS", libc.errno());
    const out = new Map<number, bigint>();
    for (let i = 0; i < r; i++) {
      const b = kvm_msrs.size + i * kvm_msr_entry.size;
      out.set(buf.readUInt32LE(b + kvm_msr_entry.off.index), buf.readBigUInt64LE(b + kvm_msr_entry.off.data));
    }
    return out;
  }

  close(): void {
    libc.close(this.fd);
  }
}
