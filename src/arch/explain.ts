// Lookups behind `vmtool explain`: each returns plain data (printed as JSON or text by the command).
import { ExplainQueryError } from "./errors.js";
import {
  vmxExitReasons,
  svmExitCodes,
  kvmExitReasons,
  vmInstructionErrors,
  vmcsFields,
  msrTable,
  cpuidLeaves,
  type ExitEntry,
  type VmcsFieldEntry,
  type CpuidLeafEntry,
} from "./tables.js";
import { decodeVmcsEncoding, findVmcsField, findVmcsFieldByName, type VmcsEncoding } from "./vmcs.js";
import { decodeGroup, isVmxCapabilityMsr, type DecodedGroup } from "./vmx/decode.js";

export type ExitTable = "vmx" | "svm" | "kvm";
const EXIT_TABLES: Record<
  ExitTable,
  { title: string; prefix: RegExp; table: () => { entries: ExitEntry[]; source: string } }
> = {
  vmx: { title: "VMX basic exit reason", prefix: /^EXIT_REASON_/, table: vmxExitReasons },
  svm: { title: "SVM exit code", prefix: /^(SVM_EXIT_|VMEXIT_)/, table: svmExitCodes },
  kvm: { title: "KVM_EXIT_* (kvm_run.exit_reason)", prefix: /^KVM_EXIT_/, table: kvmExitReasons },
};

/** A number as the user wrote it: decimal, 0x hex, or a bare hex string with a-f; undefined if not a number. */
export function parseNumberArg(text: string, what: string, max = 0xffffffffffffffffn): bigint | undefined {
  const t = text.trim().toLowerCase();
  let v: bigint;
  if (/^-1$/.test(t)) return -1n;
  if (/^0x[0-9a-f]+$/.test(t) || /^[0-9]+$/.test(t)) v = BigInt(t);
  else if (/^[0-9a-f]*[a-f][0-9a-f]*h$/.test(t)) v = BigInt(`0x${t.slice(0, -1)}`);
  else return undefined;
  if (v > max) throw new ExplainQueryError(`${what} ${text} is out of range (at most 0x${max.toString(16)})`);
  return v;
}

export interface ExitMatch extends ExitEntry {
  table: ExitTable;
  title: string;
  hex: string;
  source: string;
}

export function explainExit(query: string, only?: ExitTable): ExitMatch[] {
  const n = parseNumberArg(query, "exit reason");
  // A VMX exit-reason field value may carry flags in bits 31:16 (bit 31: failed VM entry): use bits 15:0.
  const out: ExitMatch[] = [];
  const tables: readonly ExitTable[] = only ? [only] : ["vmx", "svm", "kvm"];
  for (const t of tables) {
    const { title, prefix, table } = EXIT_TABLES[t];
    const tab = table();
    const hits = tab.entries.filter((e) => {
      if (n !== undefined) {
        const want = t === "vmx" && n >= 0n ? Number(n & 0xffffn) : Number(n);
        return e.number === want;
      }
      return e.name === query.toUpperCase().replace(/-/g, "_").replace(prefix, "");
    });
    for (const e of hits)
      out.push({
        ...e,
        table: t,
        title,
        hex: e.number < 0 ? "-1" : `0x${e.number.toString(16)}`,
        source: tab.source,
      });
  }
  if (out.length === 0)
    throw new ExplainQueryError(
      `no ${only ? EXIT_TABLES[only].title : "exit reason"} '${query}' (try a number, or a name like HLT, IO_INSTRUCTION, NPF, MMIO)`,
    );
  return out;
}

export interface VmcsAnswer {
  field?: VmcsFieldEntry;
  decoded: VmcsEncoding;
  groupDescription?: string;
}

export function explainVmcs(query: string): VmcsAnswer {
  const n = parseNumberArg(query, "VMCS encoding", 0xffffffffn);
  const field = n !== undefined ? findVmcsField(Number(n)) : findVmcsFieldByName(query);
  if (n === undefined && !field)
    throw new ExplainQueryError(
      `no VMCS field named '${query}' (give an encoding like 0x681e or a name like GUEST_RIP)`,
    );
  const encoding = n !== undefined ? Number(n) : field?.encoding;
  if (encoding === undefined) throw new ExplainQueryError(`no VMCS field named '${query}'`);
  const decoded = decodeVmcsEncoding(encoding);
  return { field, decoded, groupDescription: field ? vmcsFields().groups[field.group] : undefined };
}

export function vmcsGroup(group: string): {
  group: string;
  description: string;
  fields: (VmcsFieldEntry & VmcsEncoding)[];
} {
  const groups = vmcsFields().groups;
  const key = group.toLowerCase();
  if (!(key in groups))
    throw new ExplainQueryError(`no VMCS group '${group}' (one of: ${Object.keys(groups).join(", ")})`);
  return {
    group: key,
    description: groups[key],
    fields: vmcsFields()
      .entries.filter((f) => f.group === key)
      .map((f) => ({ ...f, ...decodeVmcsEncoding(f.encoding) })),
  };
}

export function explainVmInstructionError(query: string): {
  number: number;
  description: string;
  source: string;
} {
  const n = parseNumberArg(query, "VM-instruction error", 0xffffffffn);
  if (n === undefined) throw new ExplainQueryError(`VM-instruction error '${query}' is not a number`);
  const t = vmInstructionErrors();
  const e = t.entries.find((x) => x.number === Number(n));
  if (!e)
    throw new ExplainQueryError(`VM-instruction error ${n} is not defined (defined: 1-13, 15-20, 22-26, 28)`);
  return { ...e, source: t.source };
}

export interface MsrAnswer {
  index: string;
  name: string;
  description: string;
  reference: string;
  decoded?: DecodedGroup;
}

export function explainMsr(query: string, value?: string): MsrAnswer {
  const n = parseNumberArg(query, "MSR index", 0xffffffffn);
  const want = query.toUpperCase().replace(/^MSR_/, "");
  const e =
    n !== undefined
      ? msrTable().entries.find((x) => x.index === Number(n))
      : msrTable().entries.find((x) => x.name === want || x.name === `IA32_${want}`);
  if (!e) throw new ExplainQueryError(`MSR '${query}' is not in vmtool's table of virtualization MSRs`);
  const out: MsrAnswer = {
    index: `0x${e.index.toString(16)}`,
    name: e.name,
    description: e.description,
    reference: e.reference,
  };
  if (value !== undefined) {
    const v = parseNumberArg(value.startsWith("0x") ? value : `0x${value}`, `value of ${e.name}`);
    if (v === undefined || v < 0n)
      throw new ExplainQueryError(`value '${value}' is not a hexadecimal number`);
    if (!isVmxCapabilityMsr(e.index))
      throw new ExplainQueryError(
        `vmtool decodes values of the VMX capability MSRs and IA32_FEATURE_CONTROL only`,
      );
    out.decoded = decodeGroup(e.index, new Map([[e.index, v]]));
  }
  return out;
}

export function explainCpuid(query: string): CpuidLeafEntry {
  const n = parseNumberArg(query, "CPUID leaf", 0xffffffffn);
  if (n === undefined) throw new ExplainQueryError(`CPUID leaf '${query}' is not a number`);
  const e = cpuidLeaves().entries.find((x) => x.leaf === Number(n));
  if (!e)
    throw new ExplainQueryError(
      `CPUID leaf ${query} is not one of vmtool's virtualization leaves (${cpuidLeaves()
        .entries.map((x) => `0x${x.leaf.toString(16)}`)
        .join(", ")})`,
    );
  return e;
}
