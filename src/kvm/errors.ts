// Errors of the KVM bindings: what the host's KVM cannot give (no /dev/kvm, no permission, an API or a
// capability missing). A failing system call is a SysError (libc.ts).
import { HostUnsupportedError } from "../errors.js";

/** /dev/kvm cannot be used: missing, not accessible, or of an API version vmtool does not speak. */
export class KvmUnavailableError extends HostUnsupportedError {}

/** This KVM lacks a capability (or a resource such as a vCPU slot) that was asked for. */
export class KvmCapabilityError extends HostUnsupportedError {}
