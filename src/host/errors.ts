// The host layer's errors: a source of VMX values this host does not have, or options that contradict each other.
import { HostUnsupportedError, InputError } from "../errors.js";

/** A source of VMX capability values is not available here (no module, no msr driver, no nested VMX, no VMX). */
export class VmxSourceError extends HostUnsupportedError {}

/** Every source of VMX capability values failed: carries each source's reason. */
export class NoVmxValues extends VmxSourceError {
  constructor(readonly reasons: string[]) {
    super(`no VMX capability values could be read: ${reasons.join("; ")}`);
  }
}

/** The msr driver (/dev/cpu/N/msr) cannot be opened. */
export class MsrDeviceError extends HostUnsupportedError {}

/** `vmtool vmx` options that do not go together (--source file without --msr-file, ...). */
export class VmxOptionError extends InputError {}
