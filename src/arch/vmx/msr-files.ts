// The vmtool module's debugfs files that hold VMX/SVM capability values, and a reader for them.
// The table follows docs/debugfs-interface.md ("Global files") exactly: a change there changes this file.
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { FileInputError } from "../../files/errors.js";
import { readInputFile } from "../../files/input-file.js";
import { ModuleFilesError } from "../errors.js";

/** A global file holds `0x%016llx\n` (19 bytes); anything longer than this is garbage and not read further. */
const GLOBAL_FILE_MAX = 4096;

/** MSR index -> debugfs file name under `<debugfs>/vmtool/` (the MSR-valued global files). */
export const MODULE_MSR_FILES: ReadonlyMap<number, string> = new Map([
  [0x480, "vmx-basic"],
  [0x481, "vmx-pinbased-ctls"],
  [0x482, "vmx-procbased-ctls"],
  [0x483, "vmx-exit-ctls"],
  [0x484, "vmx-entry-ctls"],
  [0x485, "vmx-misc"],
  [0x486, "vmx-cr0-fixed0"],
  [0x487, "vmx-cr0-fixed1"],
  [0x488, "vmx-cr4-fixed0"],
  [0x489, "vmx-cr4-fixed1"],
  [0x48a, "vmx-vmcs-enum"],
  [0x48b, "vmx-procbased-ctls2"],
  [0x48c, "vmx-ept-vpid-cap"],
  [0x48d, "vmx-true-pinbased-ctls"],
  [0x48e, "vmx-true-procbased-ctls"],
  [0x48f, "vmx-true-exit-ctls"],
  [0x490, "vmx-true-entry-ctls"],
  [0x491, "vmx-vmfunc"],
  [0x492, "vmx-procbased-ctls3"],
  [0x493, "vmx-exit-ctls2"],
  [0x3a, "feature-control"],
  [0xc0010114, "vm-cr"],
]);

/** The module's global files that hold CPUID words rather than MSRs (SVM leaf 0x8000000A). */
export const MODULE_CPUID_FILES: Readonly<Record<string, { leaf: number; register: "eax" | "ebx" | "edx" }>> =
  {
    "svm-revision": { leaf: 0x8000000a, register: "eax" },
    "svm-nasid": { leaf: 0x8000000a, register: "ebx" },
    "svm-features": { leaf: 0x8000000a, register: "edx" },
  };

const FILE_TO_MSR = new Map([...MODULE_MSR_FILES].map(([index, name]) => [name, index]));

/** The debugfs file name for an MSR index (`vmxMsrFileName(0x481) === "vmx-pinbased-ctls"`), or undefined. */
export function vmxMsrFileName(index: number): string | undefined {
  return MODULE_MSR_FILES.get(index);
}

/** The MSR index for a debugfs file name, or undefined. */
export function vmxMsrIndexOfFile(name: string): number | undefined {
  return FILE_TO_MSR.get(name);
}

/** A global file's text as the module writes it (`0x%016llx\n`): 0x + 1..16 hex digits + optional newline. */
export function parseModuleValue(text: string): bigint | undefined {
  const m = /^0x([0-9a-fA-F]{1,16})\n?$/.exec(text);
  return m ? BigInt(`0x${m[1]}`) : undefined;
}

export interface ModuleFiles {
  /** MSR index -> value, for every MSR-valued file that parsed. */
  msrs: Map<number, bigint>;
  /** CPUID-valued files that parsed (svm-*), by file name. */
  cpuid: Map<string, bigint>;
  /** Global files whose content is not `0x<hex>`: skipped. */
  garbage: string[];
  /** Global files this table does not know (listed, not decoded). */
  unknown: Map<string, bigint>;
}

/** The module's folder under a debugfs mount point. */
export function moduleDir(debugfsRoot: string): string {
  return join(debugfsRoot, "vmtool");
}

/**
 * Read every global file of the module under `<debugfsRoot>/vmtool/` (debugfsRoot is the debugfs mount point,
 * usually /sys/kernel/debug). Throws ModuleFilesError when the folder is missing or unreadable.
 */
export function readModuleFiles(debugfsRoot: string): ModuleFiles {
  const dir = moduleDir(debugfsRoot);
  let names: string[];
  try {
    names = readdirSync(dir, { withFileTypes: true })
      .filter((d) => d.isFile())
      .map((d) => d.name)
      .sort();
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR")
      throw new ModuleFilesError(
        `${dir} does not exist: the vmtool module is not loaded (or debugfs is not mounted there)`,
      );
    if (code === "EACCES" || code === "EPERM")
      throw new ModuleFilesError(`${dir}: permission denied: debugfs is readable by root only`);
    throw new ModuleFilesError(`${dir}: cannot read: ${(err as Error).message}`);
  }
  const out: ModuleFiles = { msrs: new Map(), cpuid: new Map(), garbage: [], unknown: new Map() };
  for (const name of names) {
    let text: string;
    try {
      const bytes = readInputFile(join(dir, name), GLOBAL_FILE_MAX, `${GLOBAL_FILE_MAX} bytes`);
      text = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("latin1");
    } catch (err) {
      if (!(err instanceof FileInputError)) throw err;
      if (err.code === "ENOENT") continue; // vanished between readdir and read
      if (err.problem === "kind" || err.problem === "too-large") {
        out.garbage.push(name); // a FIFO, a device, a huge file in a copied tree: not a value
        continue;
      }
      throw new ModuleFilesError(`${join(dir, name)}: cannot read: ${err.rule}`);
    }
    const value = parseModuleValue(text);
    if (value === undefined) {
      out.garbage.push(name);
      continue;
    }
    const index = FILE_TO_MSR.get(name);
    if (index !== undefined) out.msrs.set(index, value);
    else if (name in MODULE_CPUID_FILES) out.cpuid.set(name, value);
    else out.unknown.set(name, value);
  }
  return out;
}

/** The MSR values the module publishes (index -> value); used by `vmtool vmx --source module`. */
export function readModuleMsrs(debugfsRoot: string): Map<number, bigint> {
  return readModuleFiles(debugfsRoot).msrs;
}
