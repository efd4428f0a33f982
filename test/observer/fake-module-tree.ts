// Writes a vmtool module tree byte-exactly as the module does (docs/debugfs-interface.md): `cpu-%03d/`
// directories, one file per VMCS named `%llx`, holding the decimal POSIX time NUL-padded to 32 bytes, and
// global `0x%016llx\n` files. Used by the observer's tests and by bench/observer-poll.ts.
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";

/** The 32 bytes the module returns for a VMCS last seen at `seconds`. */
export function timeFile(seconds: number): Buffer {
  const b = Buffer.alloc(32); // NUL-filled
  b.write(String(Math.floor(seconds)), "latin1");
  return b;
}

/** `debugfs_create_x64`'s text. */
export function x64File(value: bigint): string {
  return `0x${value.toString(16).padStart(16, "0")}\n`;
}

export const cpuDir = (root: string, cpu: number) => join(root, `cpu-${String(cpu).padStart(3, "0")}`);

/** A plausible VMCS physical address for vCPU i (page-aligned, %llx-named). */
export const vmcsOf = (i: number) => (0x373d8000 + i * 0x1000).toString(16);

export interface FakeTree {
  cpus: number;
  vcpus: number;
  /** Each vCPU is seen on this many host CPUs (spread round the host). */
  cpusPerVcpu: number;
  /** Time of the newest sighting (POSIX seconds). */
  now: number;
  globals?: Record<string, bigint>;
}

/** Create the tree under `root` (which must not exist yet or be empty); returns the number of VMCS files. */
export function writeModuleTree(root: string, t: FakeTree): number {
  mkdirSync(root, { recursive: true });
  for (const [name, value] of Object.entries(t.globals ?? { "vmx-basic": 0x00da040000000004n }))
    writeFileSync(join(root, name), x64File(value));
  for (let c = 0; c < t.cpus; c++) mkdirSync(cpuDir(root, c));
  let files = 0;
  for (let v = 0; v < t.vcpus; v++) {
    for (let k = 0; k < t.cpusPerVcpu; k++) {
      const cpu = (v * 7 + k) % t.cpus; // distinct CPUs while cpusPerVcpu <= cpus
      // The most recent sighting is on the first CPU, older ones a few seconds back.
      writeFileSync(join(cpuDir(root, cpu), vmcsOf(v)), timeFile(t.now - k * 5 - (v % 3)));
      files++;
    }
  }
  return files;
}
