// Reading a guest image from disk (through src/files, the one way vmtool opens what a user names), refusing
// what cannot be one with one clear line each: a missing or unreadable path, a directory, a FIFO, a device or
// other non-regular file, an empty file, a file larger than guest RAM (by its size, before reading it).
import { readInputFile } from "../files/input-file.js";
import { ImageError } from "./errors.js";

/** Guest RAM in words, for messages: "64 MiB, --mem". */
export function guestRamText(memSize: number): string {
  return memSize % (1 << 20) === 0 ? `${memSize >> 20} MiB, --mem` : `0x${memSize.toString(16)} bytes, --mem`;
}

/**
 * The bytes of the guest image at `path`. No part of an image larger than guest RAM could be loaded whole, so
 * such a file is refused by its size before it is read; a file that reports no size (procfs, sysfs) is read up
 * to that bound.
 */
export function readImageFile(path: string, memSize: number): Uint8Array {
  const bytes = readInputFile(path, memSize, `guest RAM (${guestRamText(memSize)})`, {
    what: "a guest image",
  });
  if (bytes.length === 0) throw new ImageError(`${path}: empty file`);
  return bytes;
}
