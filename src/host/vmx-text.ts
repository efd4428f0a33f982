// `vmtool vmx`'s output: the decoded groups as text or JSON, and the one-line reason when there are no VMX values.
import { hex, VMX_MSR_NAMES, type DecodedGroup, type DecodedField } from "../arch/vmx/decode.js";
import type { NoVmxValues } from "./errors.js";
import type { VmxValues } from "./vmx-source.js";
import { hostCpuid, identify } from "./cpuid.js";

export function fieldText(f: DecodedField): string {
  if (typeof f.value === "boolean") return f.value ? "yes" : "no";
  return String(f.value);
}

export function groupsText(groups: DecodedGroup[]): string {
  const out: string[] = [];
  for (const g of groups) {
    out.push(`${g.name} (${VMX_MSR_NAMES[Number(g.msr)] ?? "MSR"} ${g.msr})`);
    out.push(`  Hex: ${hex(g.raw)}`);
    for (const f of g.fields) out.push(`  ${f.name.padEnd(60)} ${fieldText(f)}`);
    out.push("");
  }
  return out.join("\n");
}

export function vmxJson(values: VmxValues, groups: DecodedGroup[]): unknown {
  return {
    source: values.source,
    from: values.from,
    msrs: Object.fromEntries([...values.msrs].sort(([a], [b]) => a - b).map(([i, v]) => [hex(i), hex(v)])),
    groups: groups.map((g) => ({ name: g.name, msr: g.msr, raw: hex(g.raw), fields: g.fields })),
  };
}

/** Why this CPU has no VMX values, in one line (used when every source failed). */
export function noVmxReason(err: NoVmxValues): string {
  const c = hostCpuid();
  if (c) {
    const id = identify(c.fn);
    if (!id.vmx)
      return (
        `no VMX: this CPU (${id.vendor}) does not report VMX in CPUID` +
        (id.svm ? " (it has AMD SVM instead: see 'vmtool host')" : "") +
        "; the VMX capability MSRs exist only on Intel CPUs with VT-x. Decode saved values with --msr-file FILE"
      );
  }
  return `no VMX capability values could be read (${err.reasons.join("; ")})`;
}
