// `vmtool host`'s report as text: the verdict first, then the checks, module parameters, what was not read and,
// on request, the KVM capabilities.
import Table from "cli-table3";
import { KVM_CAP } from "../kvm/caps.js";
import type { HostReport } from "./checks.js";

export function hostText(r: HostReport, caps: boolean): string {
  const lines = [r.verdict, ""];
  const w = Math.max(...r.checks.map((c) => c.check.length));
  for (const c of r.checks) lines.push(`${c.status.padEnd(4)}  ${c.check.padEnd(w)}  ${c.detail}`);
  for (const b of r.backends) {
    const params = Object.entries(b.parameters);
    if (params.length === 0) continue;
    lines.push("", `${b.module} parameters (/sys/module/${b.module}/parameters):`);
    lines.push("  " + params.map(([k, v]) => `${k}=${v}`).join(" "));
  }
  if (r.notRead.length > 0) {
    lines.push("", "Not read:");
    for (const n of r.notRead) lines.push(`  ${n}`);
  }
  if (caps && r.kvm.caps) {
    const t = new Table({
      head: ["capability", "number", "value"],
      style: { head: [], border: [], compact: true },
    });
    for (const [name, value] of Object.entries(r.kvm.caps)) t.push([`KVM_CAP_${name}`, KVM_CAP[name], value]);
    lines.push("", t.toString());
  } else if (caps) {
    lines.push("", `KVM capabilities not listed: ${r.kvm.error ?? "/dev/kvm could not be opened"}`);
  }
  return lines.join("\n") + "\n";
}
