// CPUID as this process sees it. The instruction is unprivileged, so vmtool runs it directly: a 27-byte stub
// (push rbx; cpuid; store eax/ebx/ecx/edx; pop rbx; ret) in an executable page, called through koffi. That way
// `vmtool host` needs no root and no cpuid driver; /dev/cpu/N/cpuid (root only) is the fallback.
import koffi from "../kvm/koffi.js";
import { openSync, readSync } from "node:fs";

export interface CpuidRegs {
  eax: number;
  ebx: number;
  ecx: number;
  edx: number;
}
export type CpuidFn = (leaf: number, subleaf?: number) => CpuidRegs;

// SysV ABI: edi = leaf, esi = subleaf, rdx = out pointer (4 x u32).
const STUB = Buffer.from("5389f889f14989d00fa241890041895804418948084189500c5bc3", "hex");

let stubFn: CpuidFn | null | undefined;

function makeStub(): CpuidFn | null {
  try {
    const lib = koffi.load("libc.so.6");
    const mmap = lib.func("mmap", "uint64", ["uint64", "size_t", "int", "int", "int", "long"]) as (
      ...a: (number | bigint)[]
    ) => bigint;
    const mprotect = lib.func("mprotect", "int", ["uint64", "size_t", "int"]) as (
      a: bigint,
      l: number,
      p: number,
    ) => number;
    const PROT_READ = 1,
      PROT_WRITE = 2,
      PROT_EXEC = 4,
      MAP_PRIVATE = 2,
      MAP_ANONYMOUS = 0x20;
    const addr = mmap(0n, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (addr === 0xffffffffffffffffn) return null;
    new Uint8Array(koffi.view(Number(addr), 4096)).set(STUB);
    // Write, then make it executable and read-only (W^X).
    if (mprotect(addr, 4096, PROT_READ | PROT_EXEC) !== 0) return null;
    const proto = koffi.proto("void vmtool_cpuid(uint32_t leaf, uint32_t subleaf, _Out_ uint32_t *out)");
    return (leaf, subleaf = 0) => {
      const out = new Uint32Array(4);
      koffi.call(addr, proto, leaf >>> 0, subleaf >>> 0, out);
      return { eax: out[0], ebx: out[1], ecx: out[2], edx: out[3] };
    };
  } catch {
    return null;
  }
}

/** CPUID through the cpuid driver: 16 bytes read at offset (subleaf << 32 | leaf). Root only. */
export function cpuidFromDevice(cpu = 0): CpuidFn | null {
  // The fd stays open for the life of the process: vmtool is a short-lived command.
  let fd: number;
  try {
    fd = openSync(`/dev/cpu/${cpu}/cpuid`, "r");
  } catch {
    return null;
  }
  return (leaf, subleaf = 0) => {
    const buf = Buffer.alloc(16);
    readSync(fd, buf, 0, 16, (BigInt(subleaf >>> 0) << 32n) | BigInt(leaf >>> 0));
    return {
      eax: buf.readUInt32LE(0),
      ebx: buf.readUInt32LE(4),
      ecx: buf.readUInt32LE(8),
      edx: buf.readUInt32LE(12),
    };
  };
}

/** A CPUID function, or null when neither the instruction stub nor the driver works. */
export function hostCpuid(): { fn: CpuidFn; how: string } | null {
  if (stubFn === undefined) stubFn = process.arch === "x64" ? makeStub() : null;
  if (stubFn) return { fn: stubFn, how: "CPUID instruction" };
  const dev = cpuidFromDevice(0);
  return dev ? { fn: dev, how: "/dev/cpu/0/cpuid" } : null;
}

/** Four registers as the ASCII text they spell (vendor strings): order given by `regs`. */
export function regsText(...regs: number[]): string {
  const b = Buffer.alloc(4 * regs.length);
  regs.forEach((r, i) => b.writeUInt32LE(r >>> 0, 4 * i));
  return b.toString("latin1").replace(/\0+$/, "");
}

/** The basic facts vmtool host and vmx need from CPUID. */
export interface CpuIdentity {
  vendor: string;
  family: number;
  model: number;
  stepping: number;
  vmx: boolean;
  smx: boolean;
  svm: boolean;
  hypervisor: boolean;
  hypervisorVendor?: string;
  hypervisorMaxLeaf?: number;
  /** CPUID 0x8000000A when SVM is reported. */
  svmLeaf?: { revision: number; nasid: number; features: number };
  kvmFeatures?: number;
}

export function identify(cpuid: CpuidFn): CpuIdentity {
  const l0 = cpuid(0);
  const l1 = cpuid(1);
  const baseFamily = (l1.eax >>> 8) & 0xf;
  const family = baseFamily === 0xf ? baseFamily + ((l1.eax >>> 20) & 0xff) : baseFamily;
  const model =
    baseFamily === 0x6 || baseFamily === 0xf
      ? (((l1.eax >>> 16) & 0xf) << 4) | ((l1.eax >>> 4) & 0xf)
      : (l1.eax >>> 4) & 0xf;
  const id: CpuIdentity = {
    vendor: regsText(l0.ebx, l0.edx, l0.ecx),
    family,
    model,
    stepping: l1.eax & 0xf,
    vmx: ((l1.ecx >>> 5) & 1) === 1,
    smx: ((l1.ecx >>> 6) & 1) === 1,
    svm: false,
    hypervisor: ((l1.ecx >>> 31) & 1) === 1,
  };
  const maxExt = cpuid(0x80000000).eax >>> 0;
  if (maxExt >= 0x80000001) id.svm = ((cpuid(0x80000001).ecx >>> 2) & 1) === 1;
  if (id.svm && maxExt >= 0x8000000a) {
    const s = cpuid(0x8000000a);
    id.svmLeaf = { revision: s.eax & 0xff, nasid: s.ebx >>> 0, features: s.edx >>> 0 };
  }
  if (id.hypervisor) {
    const h = cpuid(0x40000000);
    id.hypervisorVendor = regsText(h.ebx, h.ecx, h.edx);
    id.hypervisorMaxLeaf = h.eax >>> 0;
    if (id.hypervisorVendor === "KVMKVMKVM" && id.hypervisorMaxLeaf >= 0x40000001)
      id.kvmFeatures = cpuid(0x40000001).eax >>> 0;
  }
  return id;
}
