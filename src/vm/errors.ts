// Errors of the VM layer.
import { HostUnsupportedError, InputError } from "../errors.js";

/** A VM was asked for in a shape vmtool or this host's KVM cannot give: RAM size, vCPU count, PIT without irqchip. */
export class VmConfigError extends InputError {}

/** The host refused a resource the VM needs: KVM_CREATE_VM, guest RAM's mapping, a vCPU. */
export class VmResourceError extends HostUnsupportedError {}
