// Shared glue between commander actions and vmtool's error and exit-status conventions, and the CLI's writes to
// the standard streams: standard output that cannot be written ends the command with its own status
// (StdoutError); an error writing standard error is ignored, since there is nowhere left to say it, and must not
// change the status.
import { writeSync } from "node:fs";
import { StdoutError } from "./errors.js";
import { isOwnError, statusForError } from "./exit-status.js";

function writeAll(fd: number, text: string): string | undefined {
  const bytes = Buffer.from(text);
  let off = 0;
  while (off < bytes.length) {
    try {
      off += writeSync(fd, bytes, off, bytes.length - off);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code ?? "EIO";
      if (code === "EAGAIN" || code === "EINTR") continue;
      return code;
    }
  }
  return undefined;
}

/** Write `text` to standard output; throws StdoutError if it cannot be written. */
export function writeStdout(text: string): void {
  const code = writeAll(1, text);
  if (code !== undefined) throw new StdoutError(code);
}

/** Write `text` to standard output, ignoring a failure (for help texts: nothing depends on them). */
export function writeStdoutQuietly(text: string): void {
  writeAll(1, text);
}

/** Write `text` to standard error; never throws (see the top of this file). */
export function writeStderr(text: string): void {
  writeAll(2, text);
}

/** Print one clear error line for `err` on standard error and return the exit status to use. Never throws. */
export function reportError(err: unknown): number {
  if (isOwnError(err)) {
    if (!(err instanceof StdoutError && err.code === "EPIPE")) writeStderr(`vmtool: error: ${err.message}\n`);
  } else {
    const e = err as NodeJS.ErrnoException;
    const text = err instanceof Error ? (err.stack ?? err.message) : String(err);
    writeStderr(
      typeof e?.code === "string" ? `vmtool: error: ${e.message}\n` : `vmtool: internal error: ${text}\n`,
    );
  }
  return statusForError(err);
}

/** Print `data` as pretty JSON on standard output (used by every `--json`). */
export function printJson(data: unknown): void {
  writeStdout(
    JSON.stringify(data, (_k, v: unknown) => (typeof v === "bigint" ? `0x${v.toString(16)}` : v), 2) + "\n",
  );
}
