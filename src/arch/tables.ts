// The reference tables in data/*.json (each names its source: Intel SDM, AMD APM, Linux docs), loaded on demand.
import { readFileSync, existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/** The repository (or installed package) root: the first folder above this module that holds data/. */
function dataDir(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 8; i++) {
    if (existsSync(join(dir, "data", "vmx-exit-reasons.json"))) return join(dir, "data");
    dir = dirname(dir);
  }
  throw new Error("vmtool's data/ folder was not found next to the installed code");
}

const cache = new Map<string, unknown>();
function load<T>(name: string): T {
  let v = cache.get(name);
  if (v === undefined) {
    v = JSON.parse(readFileSync(join(dataDir(), name), "utf8"));
    cache.set(name, v);
  }
  return v as T;
}

export interface ExitEntry {
  number: number;
  name: string;
  description: string;
  fields: string;
}
export interface Table<T> {
  source: string;
  note?: string;
  entries: T[];
}
export interface VmcsFieldEntry {
  encoding: number;
  name: string;
  group: string;
}
export interface MsrEntry {
  index: number;
  name: string;
  description: string;
  reference: string;
}
export interface CpuidLeafEntry {
  leaf: number;
  name: string;
  description: string;
  source: string;
  registers: Partial<Record<"eax" | "ebx" | "ecx" | "edx", Record<string, string>>>;
}

export const vmxExitReasons = () => load<Table<ExitEntry>>("vmx-exit-reasons.json");
export const svmExitCodes = () => load<Table<ExitEntry>>("svm-exit-codes.json");
export const kvmExitReasons = () => load<Table<ExitEntry>>("kvm-exit-reasons.json");
export const vmInstructionErrors = () =>
  load<Table<{ number: number; description: string }>>("vm-instruction-errors.json");
export const vmcsFields = () =>
  load<Table<VmcsFieldEntry> & { groups: Record<string, string> }>("vmcs-fields.json");
export const msrTable = () => load<Table<MsrEntry>>("msrs.json");
export const cpuidLeaves = () => load<Table<CpuidLeafEntry>>("cpuid-leaves.json");

/** Names of the bits of one CPUID register that are set in `value` (from cpuid-leaves.json). */
export function cpuidBitNames(
  leaf: number,
  register: "eax" | "ebx" | "ecx" | "edx",
  value: number,
): string[] {
  const names = cpuidLeaves().entries.find((e) => e.leaf === leaf)?.registers[register] ?? {};
  const out: string[] = [];
  for (let b = 0; b < 32; b++) if ((value >>> b) & 1) out.push(names[String(b)] ?? `bit ${b}`);
  return out;
}
