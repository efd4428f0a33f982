// The loader's errors: what is wrong with a guest image, or with an option that says how to load it.
import { InputError } from "../errors.js";

/** The file cannot be a guest image: truncated, malformed, for another machine, or not fitting guest RAM. */
export class ImageError extends InputError {}

/** An option that says how to load or describe the guest is wrong: --mode, --load, --entry, --cmdline, RAM size. */
export class LoadOptionError extends InputError {}
