// Where `vmtool vmx` gets the VMX capability MSRs, in this order unless --source says otherwise:
// the vmtool module's debugfs files, the msr driver (/dev/cpu/N/msr), KVM's feature MSRs on /dev/kvm
// (what KVM offers a nested guest), or a file of saved values (--msr-file).
import { existsSync } from "node:fs";
import { join } from "node:path";
import { HostUnsupportedError } from "../errors.js";
import { NoVmxValues, VmxOptionError, VmxSourceError } from "./errors.js";
import { Kvm } from "../kvm/system.js";
import { readModuleMsrs, moduleDir } from "../arch/vmx/msr-files.js";
import { readMsrFile } from "../arch/vmx/msr-file.js";
import { isVmxCapabilityMsr, IA32_VMX_BASIC } from "../arch/vmx/decode.js";
import { msrDeviceProblem, readMsrs } from "./msr-dev.js";

export type VmxSource = "module" | "msr" | "kvm" | "file";
export const VMX_SOURCES: readonly VmxSource[] = ["module", "msr", "kvm", "file"];

export interface VmxValues {
  source: VmxSource;
  /** Where exactly, in words ("/sys/kernel/debug/vmtool", "/dev/cpu/0/msr", "/dev/kvm feature MSRs", a path). */
  from: string;
  msrs: Map<number, bigint>;
}

export interface VmxSourceOptions {
  source?: VmxSource | "auto";
  msrFile?: string;
  cpu?: number;
  debugfs?: string;
  kvmPath?: string;
}

/** All VMX capability MSRs plus IA32_FEATURE_CONTROL: what the msr driver is asked for. */
const ALL_VMX_MSRS = [0x3a, ...Array.from({ length: 0x14 }, (_, i) => 0x480 + i)];

function fromModule(debugfs: string): VmxValues {
  const msrs = readModuleMsrs(debugfs);
  const vmx = new Map([...msrs].filter(([i]) => isVmxCapabilityMsr(i)));
  if (!vmx.has(IA32_VMX_BASIC))
    throw new VmxSourceError(`${moduleDir(debugfs)} has no vmx-basic: the module found no VMX on this CPU`);
  return { source: "module", from: moduleDir(debugfs), msrs: vmx };
}

function fromMsrDriver(cpu: number): VmxValues {
  const problem = msrDeviceProblem(cpu);
  if (problem) throw new VmxSourceError(problem);
  const msrs = readMsrs(ALL_VMX_MSRS, cpu);
  if (!msrs.has(IA32_VMX_BASIC))
    throw new VmxSourceError(
      `/dev/cpu/${cpu}/msr: IA32_VMX_BASIC (0x480) cannot be read: this CPU has no VMX`,
    );
  return { source: "msr", from: `/dev/cpu/${cpu}/msr`, msrs };
}

function fromKvm(path: string): VmxValues {
  let kvm: Kvm;
  try {
    kvm = Kvm.open(path);
  } catch (err) {
    // No /dev/kvm, no permission, an old KVM: this source is not available here, for the reason KVM gave.
    throw new VmxSourceError(err instanceof Error ? err.message : String(err));
  }
  try {
    const list = kvm.msrIndexList("feature").filter(isVmxCapabilityMsr);
    if (!list.includes(IA32_VMX_BASIC))
      throw new VmxSourceError(
        `${path}: KVM offers no VMX capability MSRs (no nested VMX: not an Intel host, or kvm_intel nested=0)`,
      );
    return {
      source: "kvm",
      from: `${path} feature MSRs (what KVM offers a nested guest)`,
      msrs: kvm.featureMsrs(list),
    };
  } finally {
    kvm.close();
  }
}

/** One source, or the first that works in the default order; throws NoVmxValues naming why each failed. */
export function readVmxValues(opts: VmxSourceOptions): VmxValues {
  const debugfs = opts.debugfs ?? "/sys/kernel/debug";
  const cpu = opts.cpu ?? 0;
  const kvmPath = opts.kvmPath ?? "/dev/kvm";
  const source = opts.source ?? (opts.msrFile !== undefined ? "file" : "auto");
  if (source === "file") {
    if (opts.msrFile === undefined) throw new VmxOptionError("--source file needs --msr-file FILE");
    return { source: "file", from: opts.msrFile, msrs: readMsrFile(opts.msrFile) };
  }
  if (opts.msrFile !== undefined)
    throw new VmxOptionError(`--msr-file cannot be combined with --source ${source}`);
  if (source === "module") return fromModule(debugfs);
  if (source === "msr") return fromMsrDriver(cpu);
  if (source === "kvm") return fromKvm(kvmPath);
  const reasons: string[] = [];
  for (const attempt of [
    () =>
      existsSync(join(debugfs, "vmtool"))
        ? fromModule(debugfs)
        : fail(`${moduleDir(debugfs)}: module not loaded`),
    () => fromMsrDriver(cpu),
    () => fromKvm(kvmPath),
  ]) {
    try {
      return attempt();
    } catch (err) {
      if (!(err instanceof HostUnsupportedError)) throw err;
      reasons.push(err.message);
    }
  }
  throw new NoVmxValues(reasons);
}

function fail(message: string): never {
  throw new VmxSourceError(message);
}
