// The few libc functions the KVM layer needs, bound through koffi (see shared notes: koffi calls cost
// ~0.1-0.3 us, the same as C for our exit path). Every function here is synchronous on purpose: a vCPU
// thread blocks in KVM_RUN, and koffi's async mode would hop between libuv threads.
import koffi from "./koffi.js";
import { VmtoolError } from "../errors.js";

const lib = koffi.load("libc.so.6");

export const open = lib.func("int open(const char *path, int flags, int mode)") as (
  path: string,
  flags: number,
  mode: number,
) => number;
export const close = lib.func("int close(int fd)") as (fd: number) => number;
/** ioctl with a pointer argument (a Buffer or TypedArray is passed by address, no copy). */
export const ioctlPtr = lib.func("ioctl", "int", ["int", "unsigned long", "void *"]) as (
  fd: number,
  request: number,
  arg: Uint8Array | null,
) => number;
/** ioctl with an integer argument. */
export const ioctlInt = lib.func("ioctl", "int", ["int", "unsigned long", "unsigned long"]) as (
  fd: number,
  request: number,
  arg: number | bigint,
) => number;
export const mmap = lib.func("void *mmap(void *addr, size_t len, int prot, int flags, int fd, long off)") as (
  addr: null,
  len: number,
  prot: number,
  flags: number,
  fd: number,
  off: number,
) => bigint;
const mmapFixedAddr = lib.func("mmap", "uint64", ["uint64", "size_t", "int", "int", "int", "long"]) as (
  addr: bigint,
  len: number,
  prot: number,
  flags: number,
  fd: number,
  off: number,
) => bigint | number;
/** mmap at a given address (with MAP_FIXED: over what was mapped there, e.g. a PROT_NONE reservation). */
export function mmapAt(
  addr: bigint,
  len: number,
  prot: number,
  flags: number,
  fd: number,
  off: number,
): bigint {
  // koffi gives a uint64 as a Number when it fits; user-space addresses always do.
  return BigInt(mmapFixedAddr(addr, len, prot, flags, fd, off));
}
export const munmap = lib.func("munmap", "int", ["uint64", "size_t"]) as (
  addr: bigint,
  len: number,
) => number;
export const madvise = lib.func("madvise", "int", ["uint64", "size_t", "int"]) as (
  addr: bigint,
  len: number,
  advice: number,
) => number;
export const read = lib.func("read", "long", ["int", "void *", "size_t"]) as (
  fd: number,
  buf: Uint8Array,
  len: number,
) => number;
export const write = lib.func("write", "long", ["int", "void *", "size_t"]) as (
  fd: number,
  buf: Uint8Array,
  len: number,
) => number;
export const eventfd = lib.func("int eventfd(unsigned int initval, int flags)") as (
  initval: number,
  flags: number,
) => number;
/** memfd_create(2): an anonymous file, here for guest RAM another process may map (MFD_CLOEXEC). */
export const memfdCreate = lib.func("int memfd_create(const char *name, unsigned int flags)") as (
  name: string,
  flags: number,
) => number;
export const MFD_CLOEXEC = 1;
export const ftruncate = lib.func("int ftruncate(int fd, long length)") as (
  fd: number,
  length: number,
) => number;
export const gettid = lib.func("int gettid()") as () => number;
export const getpid = lib.func("int getpid()") as () => number;
export const tgkill = lib.func("int tgkill(int tgid, int tid, int sig)") as (
  tgid: number,
  tid: number,
  sig: number,
) => number;
/**
 * POSIX timers (timer_create(2)). `sevp` is a struct sigevent (64 bytes: sigev_value at 0, sigev_signo at 8,
 * sigev_notify at 12, the thread id at 16); the timer's id comes back in the 8 bytes of `timerid` (glibc's
 * timer_t, a small number for this kind of timer).
 */
const timer_create = lib.func("timer_create", "int", ["int", "void *", "void *"]) as (
  clockid: number,
  sevp: Uint8Array,
  timerid: Uint8Array,
) => number;
/** `value` and `old` are struct itimerspec (32 bytes: the interval's timespec, then the first expiry's). */
const timer_settime = lib.func("timer_settime", "int", ["intptr_t", "int", "void *", "void *"]) as (
  timerid: number,
  flags: number,
  value: Uint8Array,
  old: Uint8Array | null,
) => number;
const timer_delete = lib.func("timer_delete", "int", ["intptr_t"]) as (timerid: number) => number;
const CLOCK_MONOTONIC = 1;
const SIGEV_THREAD_ID = 4;

/**
 * A timer (CLOCK_MONOTONIC) that sends `signal` to thread `tid` of this process after `firstMs`, then every
 * `periodMs`. Returns the function that deletes it.
 */
export function periodicThreadSignal(
  signal: number,
  tid: number,
  periodMs: number,
  firstMs: number,
): () => void {
  const sev = new Uint8Array(64);
  const sv = new DataView(sev.buffer);
  sv.setInt32(8, signal, true);
  sv.setInt32(12, SIGEV_THREAD_ID, true);
  sv.setInt32(16, tid, true);
  const idBuf = new Uint8Array(8);
  if (timer_create(CLOCK_MONOTONIC, sev, idBuf) !== 0) throw new SysError("timer_create", errno());
  const id = Number(new DataView(idBuf.buffer).getBigUint64(0, true));
  const spec = new Uint8Array(32);
  const ts = new DataView(spec.buffer);
  for (const [at, ms] of [
    [0, periodMs],
    [16, firstMs],
  ]) {
    const ns = BigInt(Math.round(ms * 1e6));
    ts.setBigInt64(at, ns / 1_000_000_000n, true);
    ts.setBigInt64(at + 8, ns % 1_000_000_000n, true);
  }
  if (timer_settime(id, 0, spec, null) !== 0) {
    const e = errno();
    timer_delete(id);
    throw new SysError("timer_settime", e);
  }
  return () => timer_delete(id);
}
/** sigset_t is 128 bytes in glibc; the kernel's own sigset (for KVM_SET_SIGNAL_MASK) is 8 bytes. */
export const pthread_sigmask = lib.func("pthread_sigmask", "int", ["int", "void *", "void *"]) as (
  how: number,
  set: Uint8Array | null,
  old: Uint8Array | null,
) => number;
export const sigtimedwait = lib.func("sigtimedwait", "int", ["void *", "void *", "void *"]) as (
  set: Uint8Array,
  info: Uint8Array | null,
  timeout: Uint8Array | null,
) => number;
/** poll(2) over a caller-built array of struct pollfd (8 bytes each: int fd, short events, short revents). */
export const poll = lib.func("int poll(void *fds, unsigned long nfds, int timeout)") as (
  fds: Uint8Array,
  nfds: number,
  timeout: number,
) => number;
/** isatty(3): 1 when `fd` is a terminal (asked without setting up a Node stream on it). */
export const isatty = lib.func("int isatty(int fd)") as (fd: number) => number;
/** Ends the process at once (no atexit handlers, no Node teardown): see src/cli/commands/run.ts. */
export const _exit = lib.func("void _exit(int status)") as (status: number) => void;
export const strerror = lib.func("const char *strerror(int errnum)") as (errnum: number) => string;

/** errno of the last failed call on this thread. */
export function errno(): number {
  return koffi.errno();
}

/** Turn an address returned by mmap into an ArrayBuffer over that memory (no copy). */
export function viewOf(addr: bigint, len: number): ArrayBuffer {
  return koffi.view(Number(addr), len);
}

export const MAP_FAILED = 0xffffffffffffffffn;

// Constants from <fcntl.h>, <sys/mman.h>, <sys/eventfd.h>, <signal.h> (x86-64 Linux values).
export const O_RDONLY = 0;
export const O_RDWR = 2;
export const O_CLOEXEC = 0o2000000;
export const PROT_NONE = 0;
export const PROT_READ = 1;
export const PROT_WRITE = 2;
export const MAP_SHARED = 0x01;
export const MAP_PRIVATE = 0x02;
export const MAP_FIXED = 0x10;
export const MAP_ANONYMOUS = 0x20;
export const MAP_NORESERVE = 0x4000;
export const MADV_DONTFORK = 10;
export const MADV_HUGEPAGE = 14;
export const EFD_CLOEXEC = 0o2000000;
export const EFD_NONBLOCK = 0o4000;
export const SIG_BLOCK = 0;
export const SIG_UNBLOCK = 1;
export const SIG_SETMASK = 2;
export const SIGUSR2 = 12;

export const EINTR = 4;
export const EAGAIN = 11;
export const ENOENT = 2;
export const EACCES = 13;
export const EPERM = 1;

/** A syscall error with errno's symbolic name, for messages like "KVM_RUN failed: EFAULT (Bad address)". */
export class SysError extends VmtoolError {
  constructor(
    readonly call: string,
    readonly errno: number,
  ) {
    super(`${call} failed: ${errnoName(errno)} (${strerror(errno)})`);
  }
}

const ERRNO_NAMES: Record<number, string> = {
  1: "EPERM",
  2: "ENOENT",
  4: "EINTR",
  5: "EIO",
  7: "E2BIG",
  9: "EBADF",
  11: "EAGAIN",
  12: "ENOMEM",
  13: "EACCES",
  14: "EFAULT",
  16: "EBUSY",
  17: "EEXIST",
  19: "ENODEV",
  22: "EINVAL",
  24: "EMFILE",
  25: "ENOTTY",
  28: "ENOSPC",
  95: "EOPNOTSUPP",
};

export function errnoName(e: number): string {
  return ERRNO_NAMES[e] ?? `errno ${e}`;
}

// ---- Files (src/files): the size of a block device and open-file-description locks. ----

/** lseek(2): the size of a block device is where SEEK_END lands (fstat's st_size is 0 for one). */
export const lseek = lib.func("int64_t lseek(int fd, int64_t offset, int whence)") as (
  fd: number,
  offset: number,
  whence: number,
) => number;
/** fcntl(2) with a pointer argument (struct flock for the lock commands). */
const fcntlVariadic = lib.func("int fcntl(int fd, int cmd, ...)") as (
  fd: number,
  cmd: number,
  argType: string,
  arg: Uint8Array,
) => number;
export function fcntlPtr(fd: number, cmd: number, arg: Uint8Array): number {
  return fcntlVariadic(fd, cmd, "void *", arg);
}
export const SEEK_SET = 0;
export const SEEK_END = 2;
export const F_OFD_GETLK = 36;
export const F_OFD_SETLK = 37;
export const F_RDLCK = 0;
export const F_WRLCK = 1;
export const F_UNLCK = 2;
/** struct flock (x86-64): l_type and l_whence are shorts, l_start and l_len off_t, l_pid 0 for OFD locks. */
export const FLOCK = { size: 32, l_type: 0, l_whence: 2, l_start: 8, l_len: 16, l_pid: 24 } as const;

// ---- Threads: scheduling. ----

const setpriority = lib.func("int setpriority(int which, int who, int prio)") as (
  which: number,
  who: number,
  prio: number,
) => number;
/** Set thread `tid`'s nice value (Linux: PRIO_PROCESS with a thread id); false if refused (EPERM). */
export function setThreadNice(tid: number, nice: number): boolean {
  return setpriority(0, tid, nice) === 0;
}
