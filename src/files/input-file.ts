// Opening a file the user named (a guest image, a disk, a file of saved MSR values, a debugfs tree), the same
// careful way for every input:
//   - the open never blocks: O_NONBLOCK, so a FIFO does not wait for a writer (it is then refused by kind);
//   - only the kinds of file the input accepts (regular files; block devices for a disk; character devices
//     where asked): a path of another kind is not even opened, and fstat on the open descriptor confirms it,
//     so the answer is about the file actually read (a live debugfs, whose files are all the kernel's, skips
//     both: kernelFile);
//   - the size is known before anything is read (a block device's by seeking to its end: fstat says 0), so a
//     file too large for its purpose is refused by size, with that reason, before a byte is read;
//   - what is read is bounded: a file that reports no size (procfs, sysfs, debugfs, a character device) is
//     read with a cap, and reads go in chunks below the 2 GiB that one read() may return;
//   - every failure is one FileInputError line naming the file and the rule.
// O_NONBLOCK stays set: it changes nothing for regular files and block devices.
import {
  closeSync,
  constants,
  fstatSync,
  openSync,
  readSync,
  statSync,
  writeSync,
  type Stats,
} from "node:fs";
import * as libc from "../kvm/libc.js";
import { FileInputError, type FileProblem } from "./errors.js";

export type FileKind = "regular file" | "block device" | "character device";

export interface OpenInputOptions {
  /** The kinds of file this input accepts (default: regular files only). */
  accept?: readonly FileKind[];
  /** Open for reading and writing (default: reading only). */
  write?: boolean;
  /** What to call the file in messages (default: its path), e.g. "--disk d.img". */
  name?: string;
  /** What the input is, for "is a directory, not a guest image" (default: "is a directory"). */
  what?: string;
  /**
   * The file is the kernel's own, in a tree no user can put anything into (a live debugfs mount): it is
   * opened non-blocking, read as a file that reports no size, and its kind is not checked (neither stat nor
   * fstat: a poll of the observer opens thousands of such files). Never for a path a user could point
   * elsewhere.
   */
  kernelFile?: boolean;
}

/** The most one read() or write() is given: Node refuses lengths of 2 GiB and more. */
export const IO_CHUNK = 1 << 30;

/** How much a file of unknown size is read at first; the buffer doubles up to the caller's cap. */
const FIRST_READ = 64 * 1024;

function kindOf(st: Stats): string {
  if (st.isFile()) return "regular file";
  if (st.isBlockDevice()) return "block device";
  if (st.isCharacterDevice()) return "character device";
  if (st.isFIFO()) return "FIFO";
  if (st.isSocket()) return "socket";
  if (st.isSymbolicLink()) return "symbolic link";
  return "special file";
}

function withArticle(kind: string): string {
  return `${/^[aeiou]/i.test(kind) ? "an" : "a"} ${kind}`;
}

/** "a regular file", "a regular file or block device", ... */
function acceptedText(accept: readonly FileKind[]): string {
  if (accept.length === 1) return withArticle(accept[0]);
  return `${withArticle(accept[0])}${accept
    .slice(1, -1)
    .map((k) => `, ${k}`)
    .join("")} or ${accept[accept.length - 1]}`;
}

function errnoCode(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  return e.code ?? (err instanceof Error ? err.message : String(err));
}

/** The file's kind if the input accepts it; else a FileInputError naming what it is and what was expected. */
function checkKind(st: Stats, name: string, accept: readonly FileKind[], what?: string): FileKind {
  if (st.isDirectory())
    throw new FileInputError(name, what ? `is a directory, not ${what}` : "is a directory", "kind");
  const kind = kindOf(st);
  if (!(accept as readonly string[]).includes(kind))
    throw new FileInputError(name, `is ${withArticle(kind)}, not ${acceptedText(accept)}`, "kind");
  return kind as FileKind;
}

/** Why open() failed, in words a user can act on. */
function openFailure(name: string, err: unknown, write: boolean, what?: string): FileInputError {
  const code = errnoCode(err);
  const fail = (rule: string, problem: FileProblem) => new FileInputError(name, rule, problem, code);
  switch (code) {
    case "ENOENT":
      return fail("no such file", "missing");
    case "ENOTDIR":
      return fail("no such file (a part of the path is not a directory)", "missing");
    case "EACCES":
    case "EPERM":
      return fail(
        write ? "permission denied (opened for reading and writing)" : "permission denied",
        "denied",
      );
    case "EROFS":
      return fail("on a read-only file system (cannot be opened for writing)", "denied");
    case "ETXTBSY":
      return fail("busy: a running program (cannot be opened for writing)", "denied");
    case "EISDIR":
      return fail(what ? `is a directory, not ${what}` : "is a directory", "kind");
    case "ELOOP":
      return fail("too many levels of symbolic links", "missing");
    case "ENXIO":
    case "ENODEV":
      return fail("no such device (a device file with no device behind it, or a socket)", "kind");
    case "ENAMETOOLONG":
      return fail("file name too long", "missing");
    default:
      return fail(`cannot open (${code})`, "io");
  }
}

/** An open file the user named: its kind and size are known, reads are bounded and chunked. */
/** An InputFile as another thread of this process sees it: its descriptor and what was found out on opening. */
export interface InputFileDescriptor {
  fd: number;
  path: string;
  name: string;
  kind: FileKind;
  size: number | undefined;
  writable: boolean;
}

export class InputFile {
  private open = true;
  /** Whether close() closes the descriptor (false for a file adopted from another thread: its opener does). */
  private owned = true;

  private constructor(
    readonly fd: number,
    readonly path: string,
    /** What the file is called in messages. */
    readonly name: string,
    readonly kind: FileKind,
    /**
     * Size in bytes: st_size for a regular file (0 for procfs/sysfs/debugfs files, which do not report one),
     * the end of a block device, undefined for a character device.
     */
    readonly size: number | undefined,
    readonly writable: boolean,
  ) {}

  /** Open `path` as the input `opts` describes; throws FileInputError (one line) for anything it is not. */
  static open(path: string, opts: OpenInputOptions = {}): InputFile {
    const name = opts.name ?? path;
    const accept = opts.accept ?? ["regular file"];
    const write = opts.write ?? false;
    // Judged by the path first, so that a kind the input refuses is never opened: opening some devices acts
    // (a watchdog starts, a tape rewinds, a serial line raises DTR). The descriptor's own fstat below decides.
    if (opts.kernelFile !== true) {
      let before: Stats | undefined;
      try {
        before = statSync(path, { throwIfNoEntry: false });
      } catch {
        // a symlink loop, no permission on a folder, ...: open() says it below
      }
      if (before) checkKind(before, name, accept, opts.what);
    }
    let fd: number;
    try {
      fd = openSync(
        path,
        (write ? constants.O_RDWR : constants.O_RDONLY) | constants.O_NONBLOCK | constants.O_NOCTTY,
      );
    } catch (err) {
      throw openFailure(name, err, write, opts.what);
    }
    if (opts.kernelFile === true) return new InputFile(fd, path, name, "regular file", 0, write);
    try {
      const st = fstatSync(fd);
      const kind = checkKind(st, name, accept, opts.what);
      let size: number | undefined;
      if (kind === "regular file") size = st.size;
      else if (kind === "block device") size = blockDeviceSize(fd, name);
      return new InputFile(fd, path, name, kind, size, write);
    } catch (err) {
      closeSync(fd);
      throw err;
    }
  }

  /** What another thread needs to use this open file (its descriptor is the process's). */
  descriptor(): InputFileDescriptor {
    const { fd, path, name, kind, size, writable } = this;
    return { fd, path, name, kind, size, writable };
  }

  /**
   * The file another thread of this process opened (and checked, and locked): the same descriptor, used as it
   * is. close() here does not close it; the thread that opened it does, once this one no longer uses it.
   */
  static adopt(d: InputFileDescriptor): InputFile {
    const f = new InputFile(d.fd, d.path, d.name, d.kind, d.size, d.writable);
    f.owned = false;
    return f;
  }

  /** A regular file whose size is 0 may still have content (procfs, sysfs): only reading tells. */
  get sizeKnown(): boolean {
    return this.size !== undefined && (this.size > 0 || this.kind !== "regular file");
  }

  /**
   * Read into `into` from byte `position` until it is full or the file ends, in chunks below 2 GiB; returns
   * the number of bytes read. A file that reports no size (a character device, a procfs or debugfs file)
   * ignores `position` and is read where its offset stands: some of them cannot seek (pread fails, ESPIPE).
   */
  readAt(into: Uint8Array, position: number): number {
    const sequential = !this.sizeKnown;
    let done = 0;
    while (done < into.length) {
      const len = Math.min(into.length - done, IO_CHUNK);
      let n: number;
      try {
        n = readSync(this.fd, into, done, len, sequential ? null : position + done);
      } catch (err) {
        throw new FileInputError(this.name, `cannot read (${errnoCode(err)})`, "io", errnoCode(err));
      }
      if (n === 0) break;
      done += n;
    }
    return done;
  }

  /** Write all of `data` at byte `position`, in chunks below 2 GiB. Errors are thrown as they come (EIO, ENOSPC). */
  writeAt(data: Uint8Array, position: number): void {
    let done = 0;
    while (done < data.length)
      done += writeSync(this.fd, data, done, Math.min(data.length - done, IO_CHUNK), position + done);
  }

  /**
   * The file's first bytes, at most `max` of them; `more` says whether it has more than that. A file of known
   * size reads exactly what it has (up to `max`); one that reports none is read until its end or `max` + 1
   * bytes, through a buffer that grows as needed.
   */
  readHead(max: number): { bytes: Uint8Array; more: boolean } {
    const size = this.size;
    if (this.sizeKnown && size !== undefined) {
      const bytes = new Uint8Array(Math.min(size, max));
      const got = this.readAt(bytes, 0);
      return {
        bytes: got === bytes.length ? bytes : bytes.subarray(0, got),
        more: size > max && got === max,
      };
    }
    // Read from where a fresh open stands (the start), in order: see readAt.
    let buf = new Uint8Array(Math.min(FIRST_READ, max + 1));
    let got = 0;
    for (;;) {
      const n = this.readAt(buf.subarray(got), got);
      got += n;
      if (got < buf.length) break; // the end of the file
      if (buf.length > max) break; // max + 1 bytes: it has more than max
      const bigger = new Uint8Array(Math.min(buf.length * 2, max + 1));
      bigger.set(buf);
      buf = bigger;
    }
    return { bytes: buf.subarray(0, Math.min(got, max)), more: got > max };
  }

  /**
   * The whole file, refused (FileInputError "too-large") when it is larger than `max` bytes: by its size,
   * before reading, when it has one; after reading at most `max` + 1 bytes when it has none. `limit` says what
   * the bound is, for the message: "N bytes: larger than <limit>".
   */
  readAll(max: number, limit: string): Uint8Array {
    if (this.sizeKnown && this.size !== undefined && this.size > max)
      throw new FileInputError(this.name, `${this.size} bytes: larger than ${limit}`, "too-large");
    const { bytes, more } = this.readHead(max);
    if (more)
      throw new FileInputError(this.name, `more than ${max} bytes: larger than ${limit}`, "too-large");
    return bytes;
  }

  close(): void {
    if (!this.open) return;
    this.open = false;
    if (this.owned) closeSync(this.fd);
  }
}

/** A block device's size: where SEEK_END lands. The file offset is put back at 0 (reads use positions anyway). */
function blockDeviceSize(fd: number, name: string): number {
  const end = libc.lseek(fd, 0, libc.SEEK_END);
  if (end < 0) {
    const code = libc.errnoName(libc.errno());
    throw new FileInputError(name, `cannot find the size of the block device (${code})`, "io", code);
  }
  libc.lseek(fd, 0, libc.SEEK_SET);
  return end;
}

/** Open, read whole (at most `max` bytes, see InputFile.readAll) and close. */
export function readInputFile(
  path: string,
  max: number,
  limit: string,
  opts: OpenInputOptions = {},
): Uint8Array {
  const file = InputFile.open(path, opts);
  try {
    return file.readAll(max, limit);
  } finally {
    file.close();
  }
}
