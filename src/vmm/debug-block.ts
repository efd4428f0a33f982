// The per-vCPU debug block: Int32 words and a byte scratch area in one SharedArrayBuffer, shared by a vCPU
// thread and the VM-control core on the main thread (src/debug/). It carries, without a message per exit:
//   - what the core wants to hear about (software breakpoints planted in guest RAM, whether faults park the
//     vCPU), and the guest-debug settings (KVM_SET_GUEST_DEBUG: single step, DR0-DR7) that the vCPU thread
//     applies itself on its own vCPU fd (the ioctl blocks when issued by another thread during KVM_RUN);
//   - why a parked vCPU stopped, with the details of its exit (a debug exit, an MSR access, an access to a
//     protected page...), and how it is to go on (the resume action);
//   - commands that the parked vCPU thread runs on its own vCPU fd for the core (register, MSR, FPU, XSAVE,
//     debug-register ioctls...), their buffer in the scratch area.
// No runtime imports: the main thread builds the block with the other shared buffers.

/** Word indexes. */
export const DBG = {
  /** Nonzero while a VM-control client is attached: the vCPU looks at special exits for events. */
  ARMED: 0,
  /** WANT bits. */
  WANT: 1,
  /** Bumped by the core after it changed GD_CONTROL / GD_REGS; the vCPU applies them (REQ.DEBUG). */
  GD_SEQ: 2,
  /** Software breakpoints planted in guest RAM (kvm_pvm's method), listed in BP_TABLE. */
  BP_COUNT: 3,
  /** Why the parked vCPU stopped (StopKind); valid while it is parked. */
  STOP_KIND: 4,
  /** Bumped at each park, so the core knows a stop is new. */
  STOP_SEQ: 5,
  /** How the parked vCPU goes on (ResumeAction), written by the core before it resumes it. */
  ACTION: 6,
  /** The action's 64-bit argument (an MSR value). */
  ACTION_ARG_LO: 7,
  ACTION_ARG_HI: 8,
  /** Command protocol (served while parked): op, state, result, ioctl number, buffer length. */
  CMD: 9,
  CMD_STATE: 10,
  CMD_RC: 11,
  CMD_IOCTL: 12,
  CMD_LEN: 13,
  /** kvm_guest_debug.control the core wants (KVM_GUESTDBG_*; the vCPU adds SINGLESTEP for a step). */
  GD_CONTROL: 14,
  /** Step flags (STEP bits). */
  STEP_FLAGS: 15,
  /** kvm_guest_debug.arch.debugreg[8], as 16 words (lo, hi). */
  GD_REGS: 16,
  /** Stop details (DETAIL offsets), 32 words. */
  DETAIL: 32,
  /** The planted software breakpoints' linear addresses (lo, hi), MAX_SW_BREAKPOINTS of them. */
  BP_TABLE: 64,
  /** Park after the next exit of a kind (EXIT_BREAK values), with its argument (lo, hi). */
  EXIT_BREAK: 192,
  EXIT_BREAK_ARG_LO: 193,
  EXIT_BREAK_ARG_HI: 194,
  /** The vCPU's last exit: KVM exit reason, its port or GPA (lo, hi; port and MMIO exits), 1 for a write. */
  LAST_EXIT: 195,
  LAST_EXIT_ADDR_LO: 196,
  LAST_EXIT_ADDR_HI: 197,
  LAST_EXIT_WRITE: 198,
  /** Exits by KVM exit reason since the vCPU started (EXIT_COUNT_SLOTS words; the last one: any higher). */
  EXIT_COUNTS: 200,
  /** The STOP_SEQ of the park whose registers the snapshot area holds (WANT.SNAPSHOT); 0: none. */
  SNAP_SEQ: 264,
  /** The MSRs the vCPU reads into the snapshot at each park: how many, then their indexes. */
  SNAP_MSR_COUNT: 265,
  SNAP_MSRS: 266,
} as const;

export const MAX_SW_BREAKPOINTS = 64;
export const EXIT_COUNT_SLOTS = 64;
/** Most MSRs a snapshot holds. */
export const MAX_SNAPSHOT_MSRS = 32;
const WORDS = DBG.SNAP_MSRS + MAX_SNAPSHOT_MSRS;

/** Values of DBG.EXIT_BREAK. */
export const EXIT_BREAK = {
  NONE: 0,
  /** A port exit (IN or OUT) at port ARG. */
  IO: 1,
  /** An MMIO exit whose access covers guest-physical address ARG. */
  MMIO: 2,
  /** An exit with KVM exit reason ARG. */
  REASON: 3,
} as const;
/** Where the scratch area starts (bytes) and its size: room for the largest ioctl buffer (XSAVE, MSR lists). */
export const SCRATCH_OFFSET = WORDS * 4;
export const SCRATCH_SIZE = 16 * 1024;
/**
 * The snapshot area (WANT.SNAPSHOT): what the vCPU thread read at its park, before it said it parked, so that
 * an event's registers cost the core no command. Byte offsets: struct kvm_regs (144 bytes), struct kvm_sregs
 * (312; both sizes checked in vcpu-debug.ts), then {u32 count; u32 pad} and count x {u32 index; u32 ok; u64
 * value} for the MSRs of DBG.SNAP_MSRS (ok 0: KVM could not read that one).
 */
export const SNAPSHOT = { REGS: 0, SREGS: 144, MSRS: 456 } as const;
export const SNAPSHOT_OFFSET = SCRATCH_OFFSET + SCRATCH_SIZE;
export const SNAPSHOT_SIZE = SNAPSHOT.MSRS + 8 + 16 * MAX_SNAPSHOT_MSRS;

/**
 * struct kvm_run's sync-regs fields (KVM_CAP_SYNC_REGS), byte offsets: kvm_valid_regs (u64), then struct
 * kvm_sync_regs at SYNC (struct kvm_regs, then struct kvm_sregs: the snapshot's own layout). While events come
 * close together (WANT.SYNC_REGS and the vCPU's own count, or a single step under way), VALID_BITS are set in
 * kvm_valid_regs, so that KVM copies the registers there at every exit and an event's snapshot needs no ioctl
 * for them; otherwise they are clear (the copy costs every exit a little).
 */
export const RUN_SYNC = { VALID_REGS: 288, SYNC: 304, VALID_BITS: 3 } as const;

/** Details of a stop, as word offsets from DBG.DETAIL. */
export const DETAIL = {
  /** KVM_EXIT_DEBUG: the exception vector (1 #DB, 3 #BP). MSR stops: the MSR index. */
  CODE: 0,
  /** Access stops: 1 for a write. */
  WRITE: 1,
  /** KVM_EXIT_DEBUG: pc (linear); software breakpoint: its linear address; access stops: the GPA. */
  ADDR_LO: 2,
  ADDR_HI: 3,
  /** KVM_EXIT_DEBUG: dr6. MSR stops: the value written (or read). */
  VALUE_LO: 4,
  VALUE_HI: 5,
  /** Access stops: the access's length (1..8), then its data (8 bytes: words 7, 8). */
  LEN: 6,
  DATA: 7,
  /** The exit that a FAULT stop is about (KVM exit reason) and its detail (suberror). */
  EXIT_REASON: 9,
  EXIT_DETAIL: 10,
} as const;

/** What parks a vCPU beyond the special exits the core's own settings cause. */
export const WANT = {
  /** A fault (triple fault, emulation failure, failed entry) parks the vCPU instead of ending the run. */
  FAULT: 1,
  /**
   * The guest's own INT3 (0xCC) parks the vCPU as a software breakpoint (StopKind.INT3) wherever it is, not
   * only at the core's planted addresses: an introspection tool plants its own. On kvm_pvm it shows as an
   * emulation failure of a 0xCC instruction; on VMX/SVM as a #BP debug exit (the core sets USE_SW_BP).
   */
  INT3: 2,
  /** At each park, read the registers, segment registers and DBG.SNAP_MSRS into the snapshot area first. */
  SNAPSHOT: 4,
  /**
   * Something that makes events is set (MSR interception, breakpoints, page protection): KVM is to copy the
   * registers into kvm_run at every exit (RUN_SYNC), for the snapshots of the events to come.
   */
  SYNC_REGS: 8,
} as const;

/** Why a parked vCPU stopped. */
export const StopKind = {
  NONE: 0,
  /** The core (or the library caller) asked it to pause. */
  REQUESTED: 1,
  /** One instruction executed after a STEP resume. */
  SINGLESTEP: 2,
  /** A debug exit from DR0-DR3 (DETAIL: dr6 says which). */
  HW_BREAKPOINT: 3,
  /** A planted software breakpoint was reached (DETAIL.ADDR: its linear address). */
  SW_BREAKPOINT: 4,
  /** A guest WRMSR of an intercepted MSR (DETAIL.CODE: index, VALUE: the value). */
  MSR_WRITE: 5,
  /** A guest RDMSR of an intercepted MSR. */
  MSR_READ: 6,
  /** A guest write to a protected page (DETAIL: GPA, length, data): not done yet. */
  PAGE_WRITE: 7,
  /** A guest read of a page protected against reads: not done yet. */
  PAGE_READ: 8,
  /** The vCPU cannot go on (WANT.FAULT): its state can be inspected; resuming it ends the run. */
  FAULT: 9,
  /** A debug exit the core's settings did not ask for as such (a #DB or #BP through KVM's guest debug). */
  DEBUG_OTHER: 10,
  /** The guest ran an INT3 that is not one of the core's breakpoints (WANT.INT3; DETAIL.ADDR: its address). */
  INT3: 11,
  /** The exit DBG.EXIT_BREAK asked for happened (its instruction completed; DETAIL: EXIT_REASON, ADDR, WRITE). */
  EXIT: 12,
} as const;
export type StopKindValue = (typeof StopKind)[keyof typeof StopKind];

/** How a parked vCPU goes on. */
export const ResumeAction = {
  /** Go on: an MSR access or a page access is done as the guest asked. */
  CONTINUE: 0,
  /** Execute one instruction, then park with SINGLESTEP. */
  STEP: 1,
  /** MSR stops: go on with ACTION_ARG as the value written (WRMSR) or read (RDMSR). */
  SET_VALUE: 2,
  /** Access stops: go on without doing the access (a write is dropped; a read gives zeros). */
  SKIP: 3,
  /** MSR stops: the access fails with #GP in the guest. */
  FAIL: 4,
  /** End the run: the client asked the guest to be stopped for good. */
  CRASH: 5,
} as const;

/** STEP_FLAGS bits. */
export const STEP = {
  /** Let interrupts be delivered during a step (by default they are held off: KVM_GUESTDBG_BLOCKIRQ). */
  ALLOW_IRQ: 1,
} as const;

/** Values of DBG.CMD_STATE. */
export const CMD_STATE = { IDLE: 0, REQUEST: 1, DONE: 2 } as const;
/** Values of DBG.CMD. */
export const CMD = {
  /** Run ioctl CMD_IOCTL on the vCPU fd with the scratch area (CMD_LEN bytes) as its buffer. */
  IOCTL: 1,
  /** Run ioctl CMD_IOCTL with an integer argument (CMD_LEN) instead of a buffer. */
  IOCTL_INT: 2,
} as const;

export function createDebugBlock(): SharedArrayBuffer {
  return new SharedArrayBuffer(SNAPSHOT_OFFSET + SNAPSHOT_SIZE);
}

/** The block's words. */
export function debugWords(block: SharedArrayBuffer): Int32Array {
  return new Int32Array(block, 0, WORDS);
}

/** The block's scratch bytes. */
export function debugScratch(block: SharedArrayBuffer): Uint8Array {
  return new Uint8Array(block, SCRATCH_OFFSET, SCRATCH_SIZE);
}

/** The block's snapshot bytes. */
export function debugSnapshot(block: SharedArrayBuffer): Uint8Array {
  return new Uint8Array(block, SNAPSHOT_OFFSET, SNAPSHOT_SIZE);
}

/** A 64-bit value from two words (lo, hi), as a Number when exact, else as a BigInt. */
export function readU64(words: Int32Array, at: number): bigint {
  return (BigInt(words[at + 1] >>> 0) << 32n) | BigInt(words[at] >>> 0);
}

export function writeU64(words: Int32Array, at: number, v: bigint): void {
  words[at] = Number(v & 0xffff_ffffn) | 0;
  words[at + 1] = Number((v >> 32n) & 0xffff_ffffn) | 0;
}
