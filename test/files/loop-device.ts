// A real loop device over a file (losetup), for the tests of block-device inputs. Root and a loop driver are
// needed: `loopDevice` returns the reason when either is missing, so a test can skip saying why.
import { execFileSync } from "node:child_process";

export interface LoopDevice {
  path: string;
  detach(): void;
}

/** Attach `file` to a free loop device; a string is the reason it could not be done. */
export function loopDevice(file: string, readOnly = false): LoopDevice | string {
  if (process.getuid?.() !== 0) return "losetup needs root";
  let path: string;
  try {
    path = execFileSync("losetup", ["-f", "--show", ...(readOnly ? ["-r"] : []), file], {
      encoding: "utf8",
      stdio: ["ignore", "pipe", "pipe"],
    }).trim();
  } catch (err) {
    return `losetup cannot attach a loop device here: ${String((err as { stderr?: string }).stderr ?? err).trim()}`;
  }
  return {
    path,
    detach: () => execFileSync("losetup", ["-d", path]),
  };
}
