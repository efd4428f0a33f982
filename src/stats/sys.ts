// The system calls the stats layer needs beyond src/kvm/libc.ts: pidfd_open and pidfd_getfd (copying another
// process's stats fds), perf_event_open and its ioctls (tracepoint counters), and a poll of pidfds (has a VMM
// exited?). x86-64 Linux numbers; every call returns -errno on failure instead of throwing, so callers decide
// what a refusal means.
import koffi from "../kvm/koffi.js";
import * as libc from "../kvm/libc.js";

const lib = koffi.load("libc.so.6");
const syscall = lib.func("long syscall(long number, ...)") as (...args: unknown[]) => number | bigint;

const SYS_PERF_EVENT_OPEN = 298;
const SYS_PIDFD_OPEN = 434;
const SYS_PIDFD_GETFD = 438;

function result(r: number | bigint): number {
  const n = Number(r);
  return n < 0 ? -libc.errno() : n;
}

/** pidfd_open(pid, 0): a pidfd (close-on-exec), or -errno (ESRCH: no such process). */
export function pidfdOpen(pid: number): number {
  return result(syscall(SYS_PIDFD_OPEN, "int", pid, "uint", 0));
}

/**
 * pidfd_getfd(pidfd, fd, 0): a copy (close-on-exec) of the process's descriptor `fd`, or -errno (EPERM: no
 * ptrace access to it, i.e. not root and not the same user, or Yama's ptrace_scope; EBADF: no such fd).
 */
export function pidfdGetfd(pidfd: number, fd: number): number {
  return result(syscall(SYS_PIDFD_GETFD, "int", pidfd, "int", fd, "uint", 0));
}

/** Which of `fds` (pidfds) are readable: a pidfd turns readable when its process has exited. */
export function exitedPidfds(fds: readonly number[]): boolean[] {
  const out = fds.map(() => false);
  if (fds.length === 0) return out;
  const buf = Buffer.alloc(8 * fds.length);
  fds.forEach((fd, i) => {
    buf.writeInt32LE(fd, 8 * i);
    buf.writeInt16LE(1 /* POLLIN */, 8 * i + 4);
  });
  if (libc.poll(buf, fds.length, 0) <= 0) return out;
  fds.forEach((_, i) => (out[i] = buf.readInt16LE(8 * i + 6) !== 0));
  return out;
}

export const PERF_TYPE_TRACEPOINT = 2;
export const PERF_FORMAT_GROUP = 1 << 3;
const PERF_FLAG_FD_CLOEXEC = 1 << 3;
/** struct perf_event_attr, first published size (PERF_ATTR_SIZE_VER0): the kernel zero-extends the rest. */
const PERF_ATTR_SIZE_VER0 = 64;
const ATTR_FLAG_DISABLED = 1n;

export const PERF_IOC = {
  ENABLE: 0x2400,
  DISABLE: 0x2401,
  RESET: 0x2403,
  SET_FILTER: 0x40082406,
  /** With ENABLE/DISABLE/RESET: apply to the whole group. */
  FLAG_GROUP: 1,
} as const;

/**
 * perf_event_open of tracepoint `id` for `pid` (a thread id, or -1 for every task) on `cpu` (-1: any CPU), in
 * the group of `groupFd` (-1: a new group, created disabled, read with PERF_FORMAT_GROUP). Returns the fd or
 * -errno (EACCES: perf_event_paranoid forbids it to this user; EMFILE: out of descriptors).
 */
export function perfTracepointOpen(id: number, pid: number, cpu: number, groupFd: number): number {
  const attr = Buffer.alloc(PERF_ATTR_SIZE_VER0);
  attr.writeUInt32LE(PERF_TYPE_TRACEPOINT, 0);
  attr.writeUInt32LE(PERF_ATTR_SIZE_VER0, 4);
  attr.writeBigUInt64LE(BigInt(id), 8);
  attr.writeBigUInt64LE(BigInt(PERF_FORMAT_GROUP), 32);
  attr.writeBigUInt64LE(groupFd < 0 ? ATTR_FLAG_DISABLED : 0n, 40);
  return result(
    syscall(
      SYS_PERF_EVENT_OPEN,
      "void *",
      attr,
      "int",
      pid,
      "int",
      cpu,
      "int",
      groupFd,
      "ulong",
      PERF_FLAG_FD_CLOEXEC,
    ),
  );
}

/** PERF_EVENT_IOC_SET_FILTER: 0 or -errno (EINVAL: the filter does not parse for this event). */
export function perfSetFilter(fd: number, filter: string): number {
  return libc.ioctlPtr(fd, PERF_IOC.SET_FILTER, Buffer.from(`${filter}\0`)) < 0 ? -libc.errno() : 0;
}

/** ENABLE, DISABLE or RESET of a whole group, through its leader. */
export function perfGroupIoctl(leaderFd: number, request: number): number {
  return libc.ioctlInt(leaderFd, request, PERF_IOC.FLAG_GROUP) < 0 ? -libc.errno() : 0;
}

export { errnoName } from "../kvm/libc.js";
