// Names and decodes the module's global files (`vmx-basic`, ...) with the same tables and decoder that
// `vmtool vmx` uses (src/arch/vmx/). Those are loaded once, lazily, by `loadDecoders()`; a file that no table
// knows is still listed with its raw value (new files may appear beside vmx-basic in later modules).
import type { GlobalFile } from "./types.js";

type Decoded = Array<{ field: string; value: string }>;
interface ArchDecoders {
  indexOfFile(name: string): number | undefined;
  cpuidFiles: Readonly<Record<string, { leaf: number; register: string }>>;
  decode?: (index: number, value: bigint) => Decoded | undefined;
}

let arch: ArchDecoders | null = null;

// Specifiers kept in variables: the decoder is another layer's module, loaded only when a tree is shown.
const MSR_FILES = "../arch/vmx/msr-files.js";
const DECODE = "../arch/vmx/decode.js";

/** Load the VMX name table and decoder (call once before `describeGlobal`; harmless to call twice). */
export async function loadDecoders(): Promise<void> {
  if (arch) return;
  try {
    const files = (await import(MSR_FILES)) as {
      vmxMsrIndexOfFile(name: string): number | undefined;
      MODULE_CPUID_FILES: ArchDecoders["cpuidFiles"];
    };
    arch = { indexOfFile: files.vmxMsrIndexOfFile, cpuidFiles: files.MODULE_CPUID_FILES };
  } catch {
    return; // no table: values are listed undecoded
  }
  try {
    const dec = (await import(DECODE)) as {
      decodeGroup?: (index: number, msrs: Map<number, bigint>) => unknown;
    };
    const decodeGroup = dec.decodeGroup;
    if (decodeGroup) arch.decode = (index, value) => normalise(decodeGroup(index, new Map([[index, value]])));
  } catch {
    // decoder not available: names only
  }
}

/** Turn whatever shape the decoder returns (a list of fields, or an object with one) into field/value rows. */
function normalise(out: unknown): Decoded | undefined {
  const list = Array.isArray(out)
    ? out
    : out && typeof out === "object" && Array.isArray((out as { fields?: unknown }).fields)
      ? (out as { fields: unknown[] }).fields
      : null;
  if (!list) return undefined;
  const rows: Decoded = [];
  for (const f of list) {
    if (!f || typeof f !== "object") continue;
    const o = f as Record<string, unknown>;
    const field = o.field ?? o.name ?? o.label;
    const value = o.text ?? o.value ?? o.meaning;
    if (field === undefined) continue;
    rows.push({
      field: String(field),
      value: typeof value === "bigint" ? `0x${value.toString(16)}` : String(value),
    });
  }
  return rows;
}

/** Name and decode one global file. */
export function describeGlobal(name: string, value: bigint): GlobalFile {
  const g: GlobalFile = { name, value };
  if (!arch) return g;
  const index = arch.indexOfFile(name);
  if (index !== undefined) {
    g.what = `MSR 0x${index.toString(16).toUpperCase()}`;
    try {
      const d = arch.decode?.(index, value);
      if (d && d.length > 0) g.decoded = d;
    } catch {
      // a decoder that cannot handle this value leaves it raw
    }
  } else if (name in arch.cpuidFiles) {
    const c = arch.cpuidFiles[name];
    g.what = `CPUID 0x${c.leaf.toString(16).toUpperCase()} ${c.register.toUpperCase()}`;
  }
  return g;
}
