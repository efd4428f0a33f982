// Errors of the VM-control core: what a debugger or introspection client asked that cannot be done now or here.
import { VmtoolError } from "../errors.js";

/** A request the core cannot honour: a vCPU not stopped, an address outside RAM, a limit reached. */
export class VmControlError extends VmtoolError {}

/** What this KVM (or this backend) cannot do at all, with the reason (the protocols answer it as unsupported). */
export class VmControlUnsupported extends VmControlError {}
