// Reading a guest image from disk, refusing what cannot be one with one clear line each: a missing or
// unreadable path, a directory or other non-regular file, an empty file, a file too large to be a guest.
import { closeSync, constants, fstatSync, openSync, readSync } from "node:fs";
import { ImageError } from "./errors.js";

/** No guest image is larger than the largest guest RAM; a file beyond this is refused before reading it. */
export const MAX_IMAGE_FILE = 0x1_0000_0000;

export function readImageFile(path: string): Uint8Array {
  let fd: number;
  try {
    // O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused just below as not a regular file).
    fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT") throw new ImageError(`${path}: no such file`);
    if (code === "EACCES" || code === "EPERM") throw new ImageError(`${path}: permission denied`);
    if (code === "EISDIR") throw new ImageError(`${path}: is a directory, not a guest image`);
    throw new ImageError(`${path}: cannot open (${code ?? (err as Error).message})`);
  }
  try {
    const st = fstatSync(fd);
    if (st.isDirectory()) throw new ImageError(`${path}: is a directory, not a guest image`);
    if (!st.isFile()) throw new ImageError(`${path}: not a regular file`);
    if (st.size === 0) throw new ImageError(`${path}: empty file`);
    if (st.size > MAX_IMAGE_FILE)
      throw new ImageError(`${path}: ${st.size} bytes is too large for a guest image`);
    const bytes = new Uint8Array(st.size);
    let got = 0;
    while (got < st.size) {
      const n = readSync(fd, bytes, got, st.size - got, got);
      if (n === 0) break; // the file shrank while reading: what we have is what there is
      got += n;
    }
    if (got === 0) throw new ImageError(`${path}: empty file`);
    return got === st.size ? bytes : bytes.subarray(0, got);
  } catch (err) {
    if (err instanceof ImageError) throw err;
    throw new ImageError(
      `${path}: cannot read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`,
    );
  } finally {
    closeSync(fd);
  }
}
