// How `vmtool introspect` words what the VMM answered, typed so that src/cli/exit-status.ts gives the right
// status: a refused input (a GPA outside RAM, a vCPU that does not exist) is bad input (2); what the VMM
// cannot do is a missing capability (6); the VMM gone, silent or broken is a PeerError (12).
import { HostUnsupportedError, InputError, PeerError, VmtoolError } from "../../errors.js";
import { KvmiCommandError } from "../../kvmi-client/errors.js";
import {
  KVM_E2BIG,
  KVM_EFAULT,
  KVM_EINVAL,
  KVM_ENOENT,
  KVM_ENOSYS,
  KVM_EOPNOTSUPP,
  KVM_EPERM,
} from "../../kvmi-client/ids.js";
import { StdoutError } from "../errors.js";

/** The VMM refused what the user asked for (-KVM_EINVAL, -KVM_EFAULT, -KVM_ENOENT, -KVM_E2BIG). */
export class VmmRefusedError extends InputError {}

/** The VMM cannot do it at all (-KVM_ENOSYS, -KVM_EOPNOTSUPP, -KVM_EPERM). */
export class VmmCannotError extends HostUnsupportedError {}

/** The VMM could not do it now (-KVM_EAGAIN, -KVM_EBUSY, -KVM_ENOMEM, an unknown code). */
export class VmmFailedError extends PeerError {}

/** A file named by --out or `dump` could not be written: what is there is incomplete (status 10). */
export class OutputFileError extends StdoutError {
  constructor(file: string, code: string) {
    super(code);
    this.message = `${file}: cannot write (${code}): the file is incomplete`;
  }
}

/** The user ended the command (Ctrl-C, SIGTERM) before there was anything to undo: status 128 + signal. */
export class Cancelled extends VmtoolError {
  constructor(readonly signal: "SIGINT" | "SIGTERM") {
    super(`cancelled (${signal})`);
  }
}

/** A KvmiCommandError in words a user can act on, with the class that gives its status. */
export function explain(err: unknown): unknown {
  if (!(err instanceof KvmiCommandError)) return err;
  const code = -err.err;
  if ([KVM_ENOSYS, KVM_EOPNOTSUPP, KVM_EPERM].includes(code))
    return new VmmCannotError(`${err.message}: this VMM cannot do it`, { cause: err });
  if ([KVM_EINVAL, KVM_EFAULT, KVM_ENOENT, KVM_E2BIG].includes(code))
    return new VmmRefusedError(err.message, { cause: err });
  return new VmmFailedError(err.message, { cause: err });
}
