// What can go wrong on a KVMI connection, typed by whose fault it is:
//   - KvmiCommandError: the VMM answered a command with an error code (a bad GPA, an unsupported command);
//     the connection goes on;
//   - KvmiProtocolError, KvmiClosedError, KvmiTimeoutError, KvmiHandshakeError: the VMM broke the protocol,
//     went away, or stopped answering (PeerError: the connection is over, every pending call fails with it);
//   - KvmiUsageError: the caller asked for something the protocol cannot carry (a vCPU number above 65535,
//     a read across a page, a reply to an event already answered).
import { InputError, PeerError, VmtoolError } from "../errors.js";
import { COMMAND_NAMES, KVM_ENOSYS, KVM_EOPNOTSUPP, KVM_EPERM, KVM_ENOENT, kvmErrorText } from "./ids.js";

/** The name of a command id for messages: "READ_PHYSICAL", or "command 0x1234". */
export function commandName(id: number): string {
  return COMMAND_NAMES.get(id) ?? `command ${id}`;
}

/** The VMM answered a command with an error; `err` is the negative KVM_E* code of the reply. */
export class KvmiCommandError extends VmtoolError {
  constructor(
    readonly command: number,
    readonly err: number,
    what?: string,
  ) {
    super(`${what ?? commandName(command)}: the VMM answered ${kvmErrorText(err)}`);
  }

  /** The VMM cannot do this at all (not implemented, not possible here, not allowed, unknown id). */
  get unsupported(): boolean {
    return [KVM_ENOSYS, KVM_EOPNOTSUPP, KVM_EPERM, KVM_ENOENT].includes(-this.err);
  }
}

/** The connection is over: the VMM closed it, broke the protocol, or did not answer in time. */
export class KvmiConnectionError extends PeerError {}

/** The VMM sent something the protocol does not allow (a reply to no command, a wrong size, garbage). */
export class KvmiProtocolError extends KvmiConnectionError {}

/** The connection was closed: by the VMM (`byPeer`) or by this client. */
export class KvmiClosedError extends KvmiConnectionError {
  constructor(
    message: string,
    readonly byPeer: boolean,
  ) {
    super(message);
  }
}

/** No reply within the timeout: the connection is taken as lost, as libkvmi does. */
export class KvmiTimeoutError extends KvmiConnectionError {}

/** The VMM's handshake was missing, truncated or out of bounds. */
export class KvmiHandshakeError extends KvmiConnectionError {}

/** A reply that does not have the size its command gives it: that call fails, the connection goes on. */
export class KvmiReplyError extends PeerError {}

/** An error of this side while it read the VMM's messages (a bug, a throwing callback): the connection ends. */
export class KvmiInternalError extends VmtoolError {}

/** The caller asked for something the protocol cannot carry. */
export class KvmiUsageError extends InputError {}
