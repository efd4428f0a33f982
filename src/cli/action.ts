// Shared glue between commander actions and vmtool's error and exit-status conventions.
import { VmtoolError } from "./errors.js";
import { ExitCode } from "./exit-codes.js";
import { HostUnsupportedError, InputError, VmtoolError as LayerError } from "../errors.js";
import { writeSync } from "node:fs";

/** Print one clear error line for `err` on stderr and return the exit status to use. */
export function reportError(err: unknown): number {
  if (err instanceof VmtoolError) {
    writeSync(2, `vmtool: error: ${err.message}\n`);
    return err.exitCode;
  }
  if (err instanceof LayerError) {
    // A layer's own error (src/errors.ts): the status comes from its class.
    writeSync(2, `vmtool: error: ${err.message}\n`);
    if (err instanceof InputError) return ExitCode.USAGE;
    if (err instanceof HostUnsupportedError) return ExitCode.HOST_UNSUPPORTED;
    return ExitCode.INTERNAL;
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
