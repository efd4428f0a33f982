// Names and decodes the module's global files (`vmx-basic`, ...) with the same table and decoder that
// `vmtool vmx` uses (src/arch/vmx/). A file no table knows is still listed with its raw value: new files may
// appear beside vmx-basic in later modules.
import { decodeGroup, type DecodedField } from "../arch/vmx/decode.js";
import { MODULE_CPUID_FILES, vmxMsrIndexOfFile } from "../arch/vmx/msr-files.js";
import type { GlobalFile } from "./types.js";

function fieldValue(f: DecodedField): string {
  if (typeof f.value === "boolean") return f.value ? "yes" : "no";
  return String(f.value);
}

/** Name and decode the global files of one tree (decoded together: the control MSRs need VMX_BASIC's bit 55). */
export function decodeGlobals(files: Array<{ name: string; value: bigint }>): GlobalFile[] {
  const msrs = new Map<number, bigint>();
  for (const f of files) {
    const index = vmxMsrIndexOfFile(f.name);
    if (index !== undefined) msrs.set(index, f.value);
  }
  return files.map(({ name, value }) => {
    const g: GlobalFile = { name, value };
    const index = vmxMsrIndexOfFile(name);
    if (index !== undefined) {
      g.what = `MSR 0x${index.toString(16).toUpperCase()}`;
      try {
        const group = decodeGroup(index, msrs);
        g.what += ` ${group.name}`;
        g.decoded = group.fields.map((f) => ({ field: f.name, value: fieldValue(f) }));
      } catch {
        // an MSR the decoder does not cover (VM_CR, ...): named, shown raw
      }
    } else if (name in MODULE_CPUID_FILES) {
      const c = MODULE_CPUID_FILES[name];
      g.what = `CPUID 0x${c.leaf.toString(16).toUpperCase()} ${c.register.toUpperCase()}`;
    }
    return g;
  });
}
