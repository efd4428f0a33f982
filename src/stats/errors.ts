// Errors of the stats layer, on the classes of src/errors.ts: the CLI maps them to statuses (bad input 2, what
// the host cannot do 6). A stats file or a counters file that does not follow its format is a StatsFormatError:
// reported as a problem of that one VM, never fatal.
import { HostUnsupportedError, InputError, VmtoolError } from "../errors.js";

/** What the user asked for is wrong: a pid that is not a VM, a guest name no VM has, a bad regex or interval. */
export class StatsInputError extends InputError {}

/** This host cannot give what was asked: tracepoints without root, no tracefs, no debugfs. */
export class StatsHostError extends HostUnsupportedError {}

/** A stats fd, run directory or counters file that does not follow its format. */
export class StatsFormatError extends VmtoolError {}
