// A BlockBackend over a host file (`vmtool run --disk FILE[,ro]`), with synchronous fs calls: the I/O that
// the virtio-blk state machine does not do itself. Flush is fdatasync, so data is on the disk before the
// guest's flush request completes.
import { closeSync, fdatasyncSync, fstatSync, openSync, readSync, writeSync } from "node:fs";
import { basename } from "node:path";
import { UsageError } from "../../cli/errors.js";
import type { BlockBackend } from "./blk.js";

export class FileBlockBackend implements BlockBackend {
  readonly size: number;
  readonly id: string;
  private fd: number;

  constructor(
    readonly path: string,
    readonly readOnly: boolean,
  ) {
    try {
      this.fd = openSync(path, readOnly ? "r" : "r+");
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code ?? "";
      throw new UsageError(
        `--disk ${path}: cannot open${readOnly ? "" : " for writing"} (${code || String(e)})`,
      );
    }
    const st = fstatSync(this.fd);
    if (!st.isFile() && !st.isBlockDevice()) {
      closeSync(this.fd);
      throw new UsageError(`--disk ${path}: not a regular file or block device`);
    }
    this.size = st.size;
    if (this.size < 512) {
      closeSync(this.fd);
      throw new UsageError(`--disk ${path}: ${this.size} bytes, smaller than one 512-byte sector`);
    }
    this.id = basename(path).slice(0, 20);
  }

  read(offset: number, into: Uint8Array): void {
    let done = 0;
    while (done < into.length) {
      const n = readSync(this.fd, into, done, into.length - done, offset + done);
      if (n === 0) {
        into.fill(0, done); // the file shrank under us: the rest reads as zeros
        return;
      }
      done += n;
    }
  }

  write(offset: number, data: Uint8Array): void {
    let done = 0;
    while (done < data.length) done += writeSync(this.fd, data, done, data.length - done, offset + done);
  }

  flush(): void {
    fdatasyncSync(this.fd);
  }

  close(): void {
    if (this.fd >= 0) closeSync(this.fd);
    this.fd = -1;
  }
}
