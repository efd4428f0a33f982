// Reading a guest image from disk (through src/files, the one way vmtool opens what a user names), refusing
// what cannot be one with one clear line each: a missing or unreadable path, a directory, a FIFO, a device or
// other non-regular file, an empty file, a file larger than guest RAM (by its size, before reading it).
import { InputFile } from "../files/input-file.js";
import { ImageError } from "./errors.js";

/**
 * The largest ELF file read, whatever the guest RAM: an ELF may carry debug information and symbols that are
 * never loaded, so its file is not bounded by RAM (its loadable segments are, when they are placed).
 */
export const MAX_ELF_FILE = 1 << 30;

/** Guest RAM in words, for messages: "64 MiB, --mem". */
export function guestRamText(memSize: number): string {
  return memSize % (1 << 20) === 0 ? `${memSize >> 20} MiB, --mem` : `0x${memSize.toString(16)} bytes, --mem`;
}

/**
 * The bytes of the guest image at `path`. A flat binary larger than guest RAM could not be loaded whole, so
 * such a file is refused by its size before it is read; an ELF file (told by its first bytes) may be larger
 * than RAM, up to MAX_ELF_FILE, for its sections that are not loaded. A file that reports no size (procfs,
 * sysfs) is read up to the bound.
 */
export function readImageFile(path: string, memSize: number): Uint8Array {
  const file = InputFile.open(path, { what: "a guest image" });
  try {
    // Only a file of known size can be peeked at and then read from its start again.
    const magic = new Uint8Array(4);
    const elf =
      file.sizeKnown &&
      file.readAt(magic, 0) === 4 &&
      magic[0] === 0x7f &&
      magic[1] === 0x45 &&
      magic[2] === 0x4c &&
      magic[3] === 0x46;
    const elfMax = Math.max(memSize, MAX_ELF_FILE);
    const bytes = elf
      ? file.readAll(elfMax, `the ${elfMax >> 20} MiB an ELF image may have (guest RAM or 1 GiB)`)
      : file.readAll(memSize, `guest RAM (${guestRamText(memSize)})`);
    if (bytes.length === 0) throw new ImageError(`${path}: empty file`);
    return bytes;
  } finally {
    file.close();
  }
}
