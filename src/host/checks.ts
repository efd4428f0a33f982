// `vmtool host`: can this machine run VMs, and how well. Gathers facts (CPUID, /proc/cpuinfo, /sys/module,
// /dev/kvm, the msr driver) into one report: a verdict, then PASS/WARN/FAIL checks in virt-host-validate's manner.
// Everything that cannot be read (no root, no driver) is recorded with the reason instead of failing.
import { readFileSync, readdirSync, existsSync } from "node:fs";
import { join } from "node:path";
import { Kvm } from "../kvm/system.js";
import { KVM_CAP } from "../kvm/caps.js";
import { KVM } from "../kvm/ioctls.js";
import * as libc from "../kvm/libc.js";
import { cpuidBitNames, msrTable } from "../arch/tables.js";
import { decodeGroup, IA32_FEATURE_CONTROL } from "../arch/vmx/decode.js";
import { hostCpuid, identify, type CpuIdentity } from "./cpuid.js";
import { msrDeviceProblem, readMsrs } from "./msr-dev.js";

export type CheckStatus = "PASS" | "WARN" | "FAIL";
export interface Check {
  check: string;
  status: CheckStatus;
  detail: string;
}

/** KVM modules that provide /dev/kvm, and the parameters worth a line of their own. */
export const KVM_BACKENDS: Readonly<Record<string, { what: string; highlights: string[] }>> = {
  kvm_intel: {
    what: "Intel VT-x",
    highlights: ["nested", "ept", "unrestricted_guest", "vpid", "enable_apicv", "enable_shadow_vmcs", "pml"],
  },
  kvm_amd: {
    what: "AMD SVM (AMD-V)",
    highlights: ["nested", "npt", "avic", "vls", "vgif", "sev", "sev_es", "nrips"],
  },
  kvm_pvm: { what: "PVM (guests run without hardware virtualization, by the host kernel)", highlights: [] },
};

export interface BackendInfo {
  module: string;
  what: string;
  parameters: Record<string, string>;
  unreadable: string[];
}

export interface KvmInfo {
  device: string;
  present: boolean;
  accessible: boolean;
  error?: string;
  apiVersion?: number;
  createVm?: boolean;
  caps?: Record<string, number>;
  supportedCpuid?: {
    entries: number;
    leaf1Ecx: string[];
    kvmFeatures: string[];
    hypervisorSignature?: string;
  };
  msrs?: { saved: number; feature: { index: string; name: string; value: string }[] };
}

export interface HostReport {
  verdict: string;
  canRunVms: boolean;
  cpu: {
    vendor: string;
    modelName?: string;
    family?: number;
    model?: number;
    stepping?: number;
    cpuidVia?: string;
  };
  virtualization: "vmx" | "svm" | null;
  vmxFlags?: string[];
  svm?: { revision: number; asids: number; features: string[]; cpuinfoFlags: string[] };
  hypervisor: { present: boolean; vendor?: string };
  firmware?: { msr: string; enabled: boolean | null; detail: string };
  backends: BackendInfo[];
  kvm: KvmInfo;
  checks: Check[];
  /** What could not be read, and why. */
  notRead: string[];
}

function readText(path: string): string | undefined {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return undefined;
  }
}

/** First CPU's fields in /proc/cpuinfo. */
function cpuinfo(procRoot: string): Map<string, string> {
  const out = new Map<string, string>();
  const text = readText(join(procRoot, "cpuinfo")) ?? "";
  for (const line of text.split("\n")) {
    if (line.trim() === "") break;
    const i = line.indexOf(":");
    if (i > 0) out.set(line.slice(0, i).trim(), line.slice(i + 1).trim());
  }
  return out;
}

export function readBackends(sysModule: string, notRead: string[]): BackendInfo[] {
  const out: BackendInfo[] = [];
  for (const [module, info] of Object.entries(KVM_BACKENDS)) {
    const dir = join(sysModule, module);
    if (!existsSync(dir)) continue;
    const b: BackendInfo = { module, what: info.what, parameters: {}, unreadable: [] };
    let names: string[] = [];
    try {
      names = readdirSync(join(dir, "parameters")).sort();
    } catch {
      /* a module without parameters */
    }
    for (const p of names) {
      const v = readText(join(dir, "parameters", p));
      if (v === undefined) b.unreadable.push(p);
      else b.parameters[p] = v.trim();
    }
    if (b.unreadable.length > 0)
      notRead.push(`${module} parameters ${b.unreadable.join(", ")}: not readable by this user (root only)`);
    out.push(b);
  }
  return out;
}

function kvmFacts(device: string, notRead: string[]): KvmInfo {
  const info: KvmInfo = { device, present: existsSync(device), accessible: false };
  if (!info.present) {
    info.error = `${device} does not exist`;
    return info;
  }
  let kvm: Kvm;
  try {
    kvm = Kvm.open(device);
  } catch (err) {
    info.error = err instanceof Error ? err.message : String(err);
    notRead.push(`KVM API version, capabilities, supported CPUID, MSR lists: ${info.error}`);
    return info;
  }
  try {
    info.accessible = true;
    info.apiVersion = kvm.apiVersion();
    const vmfd = libc.ioctlInt(kvm.fd, KVM.CREATE_VM, 0);
    info.createVm = vmfd >= 0;
    if (vmfd >= 0) libc.close(vmfd);
    else info.error = `KVM_CREATE_VM failed: ${libc.errnoName(libc.errno())}`;
    info.caps = Object.fromEntries(Object.keys(KVM_CAP).map((name) => [name, kvm.checkExtension(name)]));
    try {
      const cpuid = kvm.cpuid("supported");
      const l1 = cpuid.find((e) => e.function === 1 && e.index === 0);
      const sig = cpuid.find((e) => e.function === 0x40000000);
      const kf = cpuid.find((e) => e.function === 0x40000001);
      const b = Buffer.alloc(12);
      if (sig) [sig.ebx, sig.ecx, sig.edx].forEach((r, i) => b.writeUInt32LE(r >>> 0, 4 * i));
      info.supportedCpuid = {
        entries: cpuid.length,
        leaf1Ecx: l1 ? cpuidBitNames(1, "ecx", l1.ecx).filter((n) => !n.startsWith("bit ")) : [],
        kvmFeatures: kf ? cpuidBitNames(0x40000001, "eax", kf.eax) : [],
        hypervisorSignature: sig ? b.toString("latin1").replace(/\0+$/, "") : undefined,
      };
    } catch (err) {
      notRead.push(`KVM_GET_SUPPORTED_CPUID: ${(err as Error).message}`);
    }
    try {
      const saved = kvm.msrIndexList("saved");
      const featureIdx = kvm.msrIndexList("feature");
      const values = kvm.featureMsrs(featureIdx);
      const names = new Map(msrTable().entries.map((e) => [e.index, e.name]));
      info.msrs = {
        saved: saved.length,
        feature: featureIdx.map((i) => ({
          index: `0x${i.toString(16)}`,
          name: names.get(i) ?? "",
          value: valueText(values.get(i)),
        })),
      };
    } catch (err) {
      notRead.push(`KVM MSR lists: ${(err as Error).message}`);
    }
  } finally {
    kvm.close();
  }
  return info;
}

export interface HostOptions {
  kvmDevice?: string;
  sysModule?: string;
  procRoot?: string;
}

export function hostReport(opts: HostOptions = {}): HostReport {
  const notRead: string[] = [];
  const checks: Check[] = [];
  const add = (check: string, status: CheckStatus, detail: string) => checks.push({ check, status, detail });
  const info = cpuinfo(opts.procRoot ?? "/proc");
  const flags = (info.get("flags") ?? "").split(/\s+/).filter((f) => f !== "");

  // CPU identity and virtualization extensions, from CPUID itself (falls back to /proc/cpuinfo).
  const c = hostCpuid();
  let id: CpuIdentity | undefined;
  if (c) id = identify(c.fn);
  else
    notRead.push(
      "CPUID: neither the instruction stub nor /dev/cpu/0/cpuid could be used; /proc/cpuinfo used",
    );
  const vendor = id?.vendor ?? info.get("vendor_id") ?? "unknown";
  const report: HostReport = {
    verdict: "",
    canRunVms: false,
    cpu: {
      vendor,
      modelName: info.get("model name"),
      family: id?.family,
      model: id?.model,
      stepping: id?.stepping,
      cpuidVia: c?.how,
    },
    virtualization: null,
    hypervisor: { present: id?.hypervisor ?? flags.includes("hypervisor"), vendor: id?.hypervisorVendor },
    backends: [],
    kvm: { device: opts.kvmDevice ?? "/dev/kvm", present: false, accessible: false },
    checks,
    notRead,
  };
  const hasVmx = id?.vmx ?? flags.includes("vmx");
  const hasSvm = id?.svm ?? flags.includes("svm");
  report.virtualization = hasVmx ? "vmx" : hasSvm ? "svm" : null;
  const cpuText =
    `${vendor}${report.cpu.modelName ? `, ${report.cpu.modelName}` : ""}` +
    (id ? ` (family ${id.family} model ${id.model} stepping ${id.stepping})` : "");
  add("CPU vendor and model", "PASS", cpuText);

  const vmxFlagsLine = info.get("vmx flags");
  if (vmxFlagsLine) report.vmxFlags = vmxFlagsLine.split(/\s+/);
  if (hasSvm && id?.svmLeaf) {
    const svmFlagNames = [
      "npt",
      "lbrv",
      "svm_lock",
      "nrip_save",
      "tsc_scale",
      "vmcb_clean",
      "flushbyasid",
      "decodeassists",
      "pausefilter",
      "pfthreshold",
      "avic",
      "v_vmsave_vmload",
      "vgif",
      "x2avic",
      "v_spec_ctrl",
      "vnmi",
    ];
    report.svm = {
      revision: id.svmLeaf.revision,
      asids: id.svmLeaf.nasid,
      features: cpuidBitNames(0x8000000a, "edx", id.svmLeaf.features),
      cpuinfoFlags: flags.filter((f) => svmFlagNames.includes(f)),
    };
  }

  // Backends and /dev/kvm (decide how to word the CPUID check: PVM needs no VMX/SVM).
  report.backends = readBackends(opts.sysModule ?? "/sys/module", notRead);
  report.kvm = kvmFacts(report.kvm.device, notRead);
  const pvm = report.backends.some((b) => b.module === "kvm_pvm");

  if (hasVmx) add("Hardware virtualization", "PASS", "VMX (Intel VT-x) in CPUID.1:ECX[5]");
  else if (hasSvm)
    add(
      "Hardware virtualization",
      "PASS",
      `SVM (AMD-V) in CPUID 0x80000001:ECX[2]` +
        (report.svm ? `; revision ${report.svm.revision}, ${report.svm.asids} ASIDs` : ""),
    );
  else if (pvm)
    add(
      "Hardware virtualization",
      "WARN",
      "CPUID reports neither VMX nor SVM; kvm_pvm runs guests without them (slower)",
    );
  else add("Hardware virtualization", "FAIL", "CPUID reports neither VMX (Intel) nor SVM (AMD)");
  if (report.vmxFlags) add("VMX flags (/proc/cpuinfo)", "PASS", report.vmxFlags.join(" "));
  if (report.svm)
    add(
      "SVM features (CPUID 0x8000000A EDX)",
      report.svm.features.length > 0 ? "PASS" : "WARN",
      report.svm.features.join(", ") || "none",
    );

  // Firmware enable bits, through the msr driver when it is there.
  if (hasVmx || hasSvm) {
    const problem = msrDeviceProblem(0);
    const msr = hasVmx ? IA32_FEATURE_CONTROL : 0xc0010114;
    const msrName = hasVmx ? "IA32_FEATURE_CONTROL" : "VM_CR";
    if (problem) {
      report.firmware = { msr: msrName, enabled: null, detail: `not read: ${problem}` };
      notRead.push(`${msrName}: ${problem}`);
      add("Enabled by firmware", "WARN", `${msrName} not read: ${problem}`);
    } else {
      const v = readMsrs([msr]).get(msr);
      if (v === undefined) {
        report.firmware = { msr: msrName, enabled: null, detail: "the MSR read failed" };
        add("Enabled by firmware", "WARN", `${msrName} could not be read`);
      } else if (hasVmx) {
        const f = Object.fromEntries(
          decodeGroup(msr, new Map([[msr, v]])).fields.map((x) => [x.name, x.value]),
        );
        const ok = f["Locked"] === true && f["VMX enabled outside SMX operation"] === true;
        const unlocked = f["Locked"] !== true;
        report.firmware = { msr: msrName, enabled: ok || unlocked, detail: `0x${v.toString(16)}` };
        add(
          "Enabled by firmware",
          ok ? "PASS" : unlocked ? "WARN" : "FAIL",
          ok
            ? `IA32_FEATURE_CONTROL 0x${v.toString(16)}: locked, VMX enabled outside SMX`
            : unlocked
              ? `IA32_FEATURE_CONTROL 0x${v.toString(16)}: not locked (the kernel will enable VMX itself)`
              : `IA32_FEATURE_CONTROL 0x${v.toString(16)}: VMX disabled and locked: enable VT-x in the firmware setup`,
        );
      } else {
        const svmdis = ((v >> 4n) & 1n) === 1n;
        report.firmware = { msr: msrName, enabled: !svmdis, detail: `0x${v.toString(16)}` };
        add(
          "Enabled by firmware",
          svmdis ? "FAIL" : "PASS",
          svmdis
            ? `VM_CR 0x${v.toString(16)}: SVMDIS set: enable SVM (AMD-V) in the firmware setup`
            : `VM_CR 0x${v.toString(16)}: SVMDIS clear`,
        );
      }
    }
  }

  if (report.hypervisor.present)
    add(
      "Running under a hypervisor",
      "WARN",
      `CPUID.1:ECX[31] set, vendor leaf 0x40000000 says '${report.hypervisor.vendor ?? "?"}': guests here are nested`,
    );
  else add("Running under a hypervisor", "PASS", "no (bare metal)");

  // KVM itself.
  const k = report.kvm;
  add("/dev/kvm exists", k.present ? "PASS" : "FAIL", k.present ? k.device : `${k.device} does not exist`);
  if (k.present)
    add(
      "/dev/kvm is accessible",
      k.accessible ? "PASS" : "FAIL",
      k.accessible ? "opened read-write" : (k.error ?? ""),
    );
  if (report.backends.length === 0)
    add("KVM module", k.present ? "WARN" : "FAIL", "no kvm_intel, kvm_amd or kvm_pvm in /sys/module");
  for (const b of report.backends) {
    const hl = KVM_BACKENDS[b.module].highlights
      .filter((p) => p in b.parameters)
      .map((p) => `${p}=${b.parameters[p]}`);
    add("KVM module", "PASS", `${b.module}: ${b.what}${hl.length ? `; ${hl.join(" ")}` : ""}`);
    const nested = b.parameters["nested"];
    if (nested !== undefined && !["Y", "1"].includes(nested))
      add("Nested virtualization", "WARN", `${b.module} nested=${nested}: guests cannot run their own VMs`);
    else if (nested !== undefined) add("Nested virtualization", "PASS", `${b.module} nested=${nested}`);
  }
  if (k.apiVersion !== undefined)
    add("KVM API version", k.apiVersion === 12 ? "PASS" : "FAIL", String(k.apiVersion));
  if (k.createVm !== undefined)
    add(
      "KVM_CREATE_VM",
      k.createVm ? "PASS" : "FAIL",
      k.createVm ? "a VM can be created" : (k.error ?? "failed"),
    );
  if (k.caps) {
    const present = Object.values(k.caps).filter((v) => v > 0).length;
    add(
      "KVM capabilities",
      "PASS",
      `${present} of ${Object.keys(k.caps).length} KVM_CAP_* known to the headers; ` +
        `NR_VCPUS=${k.caps["NR_VCPUS"]} MAX_VCPUS=${k.caps["MAX_VCPUS"]} NR_MEMSLOTS=${k.caps["NR_MEMSLOTS"]} ` +
        `(vmtool host --caps lists them all)`,
    );
  }
  if (k.supportedCpuid)
    add(
      "KVM_GET_SUPPORTED_CPUID",
      "PASS",
      `${k.supportedCpuid.entries} entries; leaf 1 ECX: ${k.supportedCpuid.leaf1Ecx.join(", ") || "none of note"}` +
        (k.supportedCpuid.kvmFeatures.length
          ? `; KVM PV features: ${k.supportedCpuid.kvmFeatures.join(" ")}`
          : ""),
    );
  if (k.msrs)
    add(
      "KVM MSR lists",
      "PASS",
      `${k.msrs.saved} MSRs saved/restored per vCPU; feature MSRs: ` +
        (k.msrs.feature.map((m) => `${m.name || m.index}=${m.value}`).join(" ") || "none"),
    );

  report.canRunVms = k.accessible && k.apiVersion === 12 && k.createVm === true;
  report.verdict = report.canRunVms
    ? `KVM acceleration can be used (${report.backends.map((b) => b.module).join(", ") || "KVM"})`
    : `KVM acceleration cannot be used: ${k.error ?? (k.present ? "KVM does not work" : `${k.device} does not exist`)}`;
  return report;
}

/** A feature MSR's value as `vmtool host` shows it. */
function valueText(v: bigint | undefined): string {
  return v === undefined ? "unreadable" : `0x${v.toString(16)}`;
}
