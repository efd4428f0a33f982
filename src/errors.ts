// The error classes every layer builds its own on. An error is typed where it arises (each layer has its own
// classes, e.g. ImageError in the loader, KvmUnavailableError in the KVM bindings) and says what went wrong in
// one line for a person; it carries no exit status. Only src/cli/ decides how the process ends, from the error's
// class (src/cli/exit-status.ts). No imports: every layer may use this file.

/** An error vmtool raises on purpose: its message is one line a person can act on. */
export class VmtoolError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** Something the user gave is wrong: an option's value, a file (missing, unreadable, malformed, too large). */
export class InputError extends VmtoolError {}

/** The host cannot do what was asked: no /dev/kvm, no permission, a KVM capability or CPU feature missing. */
export class HostUnsupportedError extends VmtoolError {}

/**
 * The other end of a connection (a VMM, a debugger, an introspection tool) went away, did not answer in time, or
 * broke its protocol: nothing the user typed is wrong, and vmtool itself is not at fault.
 */
export class PeerError extends VmtoolError {}
