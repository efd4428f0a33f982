// Whole-file locks on an open file description (fcntl F_OFD_SETLK), the locks QEMU and Cloud Hypervisor take on
// disk images: a writer takes a write lock, a reader a read lock, so two writers, or a writer and a reader, of
// one image are refused, whether they are two processes or two opens in one process (each open is its own
// description). The lock goes away with the descriptor's last close, also when the process dies.
import * as libc from "../kvm/libc.js";
import { FileInUseError, FileInputError } from "./errors.js";
import type { InputFile } from "./input-file.js";

export type LockKind = "read" | "write";

/** Errors that mean "this file system has no such locks" rather than "someone holds one". */
const UNSUPPORTED = new Set(["EINVAL", "ENOLCK", "EOPNOTSUPP", "ENOSYS"]);

function flock(type: number): Uint8Array {
  const b = new Uint8Array(libc.FLOCK.size); // l_whence SEEK_SET, l_start 0, l_len 0 (to the end), l_pid 0
  new DataView(b.buffer).setInt16(libc.FLOCK.l_type, type, true);
  return b;
}

/**
 * Lock all of `file` for reading or writing without waiting. Returns false when the file system does not
 * support these locks (the file is then used unlocked, as QEMU does); throws FileInUseError naming the lock
 * that is held when another description holds a conflicting one.
 */
export function lockFile(file: InputFile, kind: LockKind): boolean {
  const type = kind === "write" ? libc.F_WRLCK : libc.F_RDLCK;
  if (libc.fcntlPtr(file.fd, libc.F_OFD_SETLK, flock(type)) === 0) return true;
  const code = libc.errnoName(libc.errno());
  if (UNSUPPORTED.has(code)) return false;
  if (code !== "EAGAIN" && code !== "EACCES")
    throw new FileInputError(file.name, `cannot be locked (${code})`, "io", code);
  // Which lock is in the way: F_OFD_GETLK fills in the first one that conflicts with ours.
  const probe = flock(type);
  let held = "a lock is held";
  if (libc.fcntlPtr(file.fd, libc.F_OFD_GETLK, probe) === 0) {
    const t = new DataView(probe.buffer).getInt16(libc.FLOCK.l_type, true);
    if (t === libc.F_WRLCK) held = "a write lock is held";
    else if (t === libc.F_RDLCK) held = "a read lock is held";
  }
  throw new FileInUseError(file.name, `in use by another vmtool or VMM (${held})`);
}
