// MSRs through the Linux msr driver (/dev/cpu/N/msr, root only, `modprobe msr`): an 8-byte read at offset = index.
import { openSync, readSync, closeSync, existsSync } from "node:fs";
import { MsrDeviceError } from "./errors.js";

export const msrDevicePath = (cpu: number) => `/dev/cpu/${cpu}/msr`;

/** Why the msr driver cannot be used, or null when it can. */
export function msrDeviceProblem(cpu = 0): string | null {
  const p = msrDevicePath(cpu);
  if (!existsSync(p)) return `${p} does not exist (the msr driver is not loaded or not built: modprobe msr)`;
  try {
    closeSync(openSync(p, "r"));
    return null;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return code === "EACCES" || code === "EPERM"
      ? `${p}: permission denied (root only)`
      : `${p}: ${(err as Error).message}`;
  }
}

/** Read the given MSRs on one CPU; an MSR the CPU does not have (EIO) is left out of the result. */
export function readMsrs(indices: readonly number[], cpu = 0): Map<number, bigint> {
  const p = msrDevicePath(cpu);
  let fd: number;
  try {
    fd = openSync(p, "r");
  } catch (err) {
    throw new MsrDeviceError(`${p}: cannot open: ${(err as Error).message}`);
  }
  const out = new Map<number, bigint>();
  try {
    const buf = Buffer.alloc(8);
    for (const index of indices) {
      try {
        if (readSync(fd, buf, 0, 8, index) === 8) out.set(index, buf.readBigUInt64LE(0));
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "EIO") throw err;
      }
    }
  } finally {
    closeSync(fd);
  }
  return out;
}
