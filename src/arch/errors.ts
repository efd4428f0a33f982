// The errors of the x86 reference layer: a query that names nothing, a file of saved MSR values that is wrong,
// the vmtool module's debugfs files that cannot be read.
import { HostUnsupportedError, InputError } from "../errors.js";

/** `vmtool explain`: the number or name asked for is not in the table, or not a number. */
export class ExplainQueryError extends InputError {}

/** A file of saved VMX capability values (`vmtool vmx --msr-file`) is missing, unreadable or malformed. */
export class MsrFileError extends InputError {}

/** The vmtool module's global debugfs files cannot be read: the module is not loaded, or debugfs is root-only. */
export class ModuleFilesError extends HostUnsupportedError {}
