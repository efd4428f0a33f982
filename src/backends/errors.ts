// The backends' errors: host resources named by the user that cannot back a device.
import { InputError } from "../errors.js";

/** A file or block device that can be opened but cannot be a disk (smaller than one sector). */
export class DiskImageError extends InputError {}
