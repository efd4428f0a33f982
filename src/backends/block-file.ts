// A BlockBackend over a host file or block device (`vmtool run --disk FILE[,ro]`), with synchronous fs calls:
// the I/O that the virtio-blk state machine does not do itself. Opened through src/files (never blocks, regular
// files and block devices only, a block device sized by seeking to its end) and locked as QEMU and Cloud
// Hypervisor lock disks: a write lock on a read-write disk, a read lock on a read-only one (an OFD lock, so a
// second open in the same process conflicts too). Flush is fdatasync, so data is on the disk before the
// guest's flush request completes.
import { fdatasyncSync } from "node:fs";
import { basename } from "node:path";
import { InputFile, type InputFileDescriptor } from "../files/input-file.js";
import { lockFile } from "../files/lock.js";
import type { BlockBackend } from "../devices/virtio/blk.js";
import { DiskImageError } from "./errors.js";

const SECTOR = 512;

/** An open disk as another thread of this process receives it. */
export interface BlockFileDescriptor {
  file: InputFileDescriptor;
  readOnly: boolean;
}

export class FileBlockBackend implements BlockBackend {
  readonly size: number;
  readonly id: string;
  readonly path: string;
  readonly readOnly: boolean;
  private readonly file: InputFile;

  /** Open and lock `path`; throws an InputError (one line, "--disk PATH: ...") for a file that cannot back a
   * disk, or is in use. */
  static open(path: string, readOnly: boolean): FileBlockBackend {
    const file = InputFile.open(path, {
      accept: ["regular file", "block device"],
      write: !readOnly,
      name: `--disk ${path}`,
      what: "a disk image",
    });
    try {
      lockFile(file, readOnly ? "read" : "write");
      const size = file.size ?? 0;
      if (size < SECTOR)
        throw new DiskImageError(`--disk ${path}: ${size} bytes, smaller than one ${SECTOR}-byte sector`);
    } catch (err) {
      file.close();
      throw err;
    }
    return new FileBlockBackend(file, readOnly);
  }

  /**
   * The disk another thread of this process opened and locked (its descriptor()): the I/O worker serves the
   * disk the main thread checked, with the lock held by the main thread for the whole run, so nothing can take
   * the image in between. close() here leaves the descriptor to its opener.
   */
  static adopt(d: BlockFileDescriptor): FileBlockBackend {
    return new FileBlockBackend(InputFile.adopt(d.file), d.readOnly);
  }

  private constructor(file: InputFile, readOnly: boolean) {
    this.file = file;
    this.path = file.path;
    this.readOnly = readOnly;
    this.size = file.size ?? 0;
    this.id = basename(file.path).slice(0, 20);
  }

  /** What the I/O worker needs to serve this disk (see adopt). */
  descriptor(): BlockFileDescriptor {
    return { file: this.file.descriptor(), readOnly: this.readOnly };
  }

  read(offset: number, into: Uint8Array): void {
    const got = this.file.readAt(into, offset);
    if (got < into.length) into.fill(0, got); // the file shrank under us: the rest reads as zeros
  }

  write(offset: number, data: Uint8Array): void {
    this.file.writeAt(data, offset);
  }

  flush(): void {
    fdatasyncSync(this.file.fd);
  }

  /** Close the file (which releases its lock). Idempotent. */
  close(): void {
    this.file.close();
  }
}
