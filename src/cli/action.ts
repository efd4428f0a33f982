// Shared glue between commander actions and vmtool's error and exit-status conventions.
import { VmtoolError } from "./errors.js";
import { ExitCode } from "./exit-codes.js";
import { writeSync } from "node:fs";

/** Print one clear error line for `err` on stderr and return the exit status to use. */
export function reportError(err: unknown): number {
  if (err instanceof VmtoolError) {
    writeSync(2, `vmtool: error: ${err.message}\n`);
    return err.exitCode;
  }
  const e = err as NodeJS.ErrnoException;
  if (e && typeof e === "object" && typeof e.code === "string" && typeof e.message === "string") {
    // An unexpected system error: still one line, and the internal status.
    writeSync(2, `vmtool: error: ${e.message}\n`);
    return ExitCode.INTERNAL;
  }
  writeSync(
    2,
    `vmtool: internal error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
  );
  return ExitCode.INTERNAL;
}

/** Print `data` as pretty JSON on stdout (used by every `--json`). */
export function printJson(data: unknown): void {
  writeSync(
    1,
    JSON.stringify(data, (_k, v: unknown) => (typeof v === "bigint" ? `0x${v.toString(16)}` : v), 2) + "\n",
  );
}
