// The observer's errors: the tree to observe is not there or not readable (the host's side), or the options
// that name it are wrong (the user's side).
import { HostUnsupportedError, InputError } from "../errors.js";

/** debugfs is not mounted, not readable (root only), or holds neither the vmtool module's tree nor KVM's. */
export class DebugfsUnavailableError extends HostUnsupportedError {}

/** `--debugfs` or `--source` names nothing usable: no such directory, not a directory, an unknown source. */
export class ObserverOptionError extends InputError {}
