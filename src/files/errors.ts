// Why a file the user named cannot be used: one line naming the file and the rule it breaks.
import { InputError } from "../errors.js";

/** What went wrong, for callers that treat some cases apart (a file that vanished mid-read, ...). */
export type FileProblem =
  | "missing" // no such file (ENOENT)
  | "denied" // permission denied, read-only file system
  | "kind" // a directory, FIFO, socket or device the input does not accept
  | "too-large" // larger than the input allows
  | "in-use" // another process (or another open of it) holds a conflicting lock
  | "io"; // any other error while opening, sizing or reading it

/** A file the user named cannot be used: `message` is `<label>: <rule>`. */
export class FileInputError extends InputError {
  constructor(
    /** What the file is called in the message: its path, or e.g. "--disk d.img". */
    readonly label: string,
    /** The rule it breaks, without the name ("no such file", "is a FIFO, not a regular file", ...). */
    readonly rule: string,
    readonly problem: FileProblem,
    /** The errno code behind it, where there is one (ENOENT, EIO, ...). */
    readonly code?: string,
  ) {
    super(`${label}: ${rule}`);
  }
}

/** Another vmtool or VMM holds a lock on the file that conflicts with the one this open needs. */
export class FileInUseError extends FileInputError {
  constructor(label: string, rule: string) {
    super(label, rule, "in-use");
  }
}
