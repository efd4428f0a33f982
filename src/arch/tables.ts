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
function load(name: string): unknown {
  let v = cache.get(name);
  if (v === undefined) {
    v = JSON.parse(readFileSync(join(dataDir(), name), "utf8"));
    cache.set(name, v);
  }
  return v;
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

export const vmxExitReasons = () => load("vmx-exit-reasons.json") as Table<ExitEntry>;
export const svmExitCodes = () => load("svm-exit-codes.json") as Table<ExitEntry>;
export const kvmExitReasons = () => load("kvm-exit-reasons.json") as Table<ExitEntry>;
export const vmInstructionErrors = () =>
  load("vm-instruction-errors.json") as Table<{ number: number; description: string }>;
export const vmcsFields = () =>
  load("vmcs-fields.json") as Table<VmcsFieldEntry> & { groups: Record<string, string> };
export const msrTable = () => load("msrs.json") as Table<MsrEntry>;
export const cpuidLeaves = () => load("cpuid-leaves.json") as Table<CpuidLeafEntry>;

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
