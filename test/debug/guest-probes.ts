// Guests that set up their own paging and then touch linear addresses ("probes"), reporting on I/O ports what
// each access did: the value a read got, or the page fault it took (error code and CR2). A page fault handler
// resumes at the probe's end without IRET (a continuation address and the saved stack pointer in registers),
// so it works where kvm_pvm's emulator cannot IRET (32-bit code). Any other exception reports its vector and
// halts. The tests compare what the guest saw with the walk of src/debug/paging.ts and with KVM_TRANSLATE.
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { KVM_EXIT, KVM_EXIT_IO_OUT } from "../../src/kvm/ioctls.js";
import { RUN } from "../../src/kvm/structs.js";
import * as libc from "../../src/kvm/libc.js";
import { ioc } from "../../src/kvm/ioctls.js";
import { kvm_sregs } from "../../src/kvm/structs.js";
import type { Vcpu } from "../../src/vm/vcpu.js";

/** Ports the probe guests write. */
export const PORT = {
  READ_VALUE: 0x10,
  FAULT_CODE: 0x20,
  FAULT_CR2_LO: 0x21,
  FAULT_CR2_HI: 0x22,
  OTHER_VECTOR: 0x2f,
  PROBE_DONE: 0x30,
} as const;

export type AccessKind = "read" | "write" | "exec";

export interface Probe {
  va: bigint;
  access: AccessKind;
  /** Run the access with RFLAGS.AC = 1 (SMAP). */
  ac?: boolean;
  /** The 32-bit value a write stores. */
  value?: number;
}

/** What one probe did in the guest. */
export interface ProbeResult {
  probe: Probe;
  /** The page fault it took, if any. */
  fault?: { code: number; cr2: bigint };
  /** A read's value (when it did not fault). */
  value?: number;
}

const AC = 0x4_0000;

/** Assembly for one probe in 64-bit code: %r15 = where the fault handler resumes, %r14 = the stack to restore. */
export function probe64(p: Probe, n: number): string {
  const access =
    p.access === "read"
      ? `mov (%rbx), %eax\n out %eax, $${PORT.READ_VALUE}`
      : p.access === "write"
        ? `movl $${p.value ?? 0}, (%rbx)`
        : "call *%rbx"; // the page holds RET bytes
  return `
  lea 1f(%rip), %r15
  mov %rsp, %r14
  ${p.ac ? `pushfq; orl $${AC}, (%rsp); popfq` : ""}
  movabs $0x${p.va.toString(16)}, %rbx
  ${access}
1:
  mov %r14, %rsp
  ${p.ac ? `pushfq; andl $${~AC}, (%rsp); popfq` : ""}
  mov $${n}, %eax
  out %eax, $${PORT.PROBE_DONE}`;
}

/** The same in 32-bit code: %esi = continuation, %edi = the stack to restore. */
export function probe32(p: Probe, n: number): string {
  const access =
    p.access === "read"
      ? `mov (%ebx), %eax\n out %eax, $${PORT.READ_VALUE}`
      : p.access === "write"
        ? `movl $${p.value ?? 0}, (%ebx)`
        : "call *%ebx";
  return `
  mov $1f, %esi
  mov %esp, %edi
  ${p.ac ? `pushfl; orl $${AC}, (%esp); popfl` : ""}
  mov $0x${p.va.toString(16)}, %ebx
  ${access}
1:
  mov %edi, %esp
  ${p.ac ? `pushfl; andl $${~AC}, (%esp); popfl` : ""}
  mov $${n}, %eax
  out %eax, $${PORT.PROBE_DONE}`;
}

/**
 * An IDT at `idt` whose 32 exception vectors go to handlers: #PF reports its error code and CR2 and resumes
 * the probe; every other vector reports its number (and error code, when it has one) and halts.
 */
export function idtAndHandlers(bits: 32 | 64, idt: number): { setup: string; handlers: string } {
  const withCode = new Set([8, 10, 11, 12, 13, 14, 17, 21, 29, 30]);
  const lines: string[] = [];
  const handlers: string[] = [];
  for (let v = 0; v < 32; v++) {
    if (bits === 64) {
      lines.push(
        `lea vec${v}(%rip), %rax`,
        `mov $${idt + v * 16}, %rdi`,
        `mov %ax, (%rdi)`,
        `movw $0x18, 2(%rdi)`,
        `movw $0x8e00, 4(%rdi)`,
        `shr $16, %rax`,
        `mov %ax, 6(%rdi)`,
        `shr $16, %rax`,
        `mov %eax, 8(%rdi)`,
        `movl $0, 12(%rdi)`,
      );
    } else {
      lines.push(
        `mov $vec${v}, %eax`,
        `mov $${idt + v * 8}, %edi`,
        `mov %ax, (%edi)`,
        `movw $0x08, 2(%edi)`,
        `movw $0x8e00, 4(%edi)`,
        `shr $16, %eax`,
        `mov %ax, 6(%edi)`,
      );
    }
    if (v === 14) {
      handlers.push(
        bits === 64
          ? `vec14:
  pop %rax
  out %eax, $${PORT.FAULT_CODE}
  mov %cr2, %rax
  out %eax, $${PORT.FAULT_CR2_LO}
  shr $32, %rax
  out %eax, $${PORT.FAULT_CR2_HI}
  jmp *%r15`
          : `vec14:
  pop %eax
  out %eax, $${PORT.FAULT_CODE}
  mov %cr2, %eax
  out %eax, $${PORT.FAULT_CR2_LO}
  xor %eax, %eax
  out %eax, $${PORT.FAULT_CR2_HI}
  jmp *%esi`,
      );
    } else {
      handlers.push(
        `vec${v}:
  mov $${v}, %eax
  out %eax, $${PORT.OTHER_VECTOR}
  ${withCode.has(v) ? (bits === 64 ? "pop %rax" : "pop %eax") : "xor %eax, %eax"}
  out %eax, $${PORT.OTHER_VECTOR}
  hlt`,
      );
    }
  }
  const limit = bits === 64 ? 32 * 16 - 1 : 32 * 8 - 1;
  const setup =
    lines.join("\n") +
    (bits === 64
      ? `\n lidt idtr_(%rip)\n jmp 9f\nidtr_: .word ${limit}\n .quad ${idt}\n9:`
      : `\n lidt idtr_\n jmp 9f\nidtr_: .word ${limit}\n .long ${idt}\n9:`);
  return { setup, handlers: handlers.join("\n") };
}

/** Stores of (address, 64-bit value) pairs, as guest code (the guest writes its own tables). */
export function stores64(entries: readonly [number, bigint][]): string {
  return entries
    .map(([at, v]) => `movabs $0x${v.toString(16)}, %rax\n mov %rax, 0x${at.toString(16)}`)
    .join("\n");
}

/** The same from 32-bit code (two 32-bit stores per entry; `size` 4 stores only the low half). */
export function stores32(entries: readonly [number, bigint][], size: 4 | 8 = 8): string {
  return entries
    .map(([at, v]) => {
      const lo = `movl $0x${(v & 0xffff_ffffn).toString(16)}, 0x${at.toString(16)}`;
      return size === 4 ? lo : `${lo}\n movl $0x${(v >> 32n).toString(16)}, 0x${(at + 4).toString(16)}`;
    })
    .join("\n");
}

export interface Out {
  port: number;
  value: number;
}

/** How a phase of the guest ended. */
export type PhaseEnd = { kind: "hlt" } | { kind: "shutdown" } | { kind: "other"; reason: number };

/** Run until HLT (or a shutdown, or anything else than port output), collecting OUTs. */
export function runPhase(vcpu: Vcpu, maxExits = 20000): { outs: Out[]; end: PhaseEnd } {
  const outs: Out[] = [];
  for (let i = 0; i < maxExits; i++) {
    assert.equal(vcpu.runOnce(), 0, "KVM_RUN failed");
    const r = vcpu.exitReason;
    const run = vcpu.run;
    if (r === KVM_EXIT.HLT) return { outs, end: { kind: "hlt" } };
    if (r === KVM_EXIT.SHUTDOWN) return { outs, end: { kind: "shutdown" } };
    if (
      r === KVM_EXIT.IO &&
      run.getUint8(RUN.io.direction) === KVM_EXIT_IO_OUT &&
      run.getUint8(RUN.io.size) === 4
    ) {
      const off = run.getUint32(RUN.io.data_offset, true);
      outs.push({ port: run.getUint16(RUN.io.port, true), value: run.getUint32(off, true) });
      continue;
    }
    return { outs, end: { kind: "other", reason: r } };
  }
  assert.fail("the guest did not halt");
}

/** Split a phase's output into one result per probe (in order); fails on an unexpected exception. */
export function probeResults(outs: readonly Out[], probes: readonly Probe[], first: number): ProbeResult[] {
  const results: ProbeResult[] = [];
  let cur: ProbeResult = { probe: probes[0] };
  let lo = 0;
  for (const o of outs) {
    switch (o.port) {
      case PORT.READ_VALUE:
        cur.value = o.value;
        break;
      case PORT.FAULT_CODE:
        cur.fault = { code: o.value, cr2: 0n };
        break;
      case PORT.FAULT_CR2_LO:
        lo = o.value;
        break;
      case PORT.FAULT_CR2_HI:
        if (cur.fault) cur.fault.cr2 = (BigInt(o.value) << 32n) | BigInt(lo);
        break;
      case PORT.OTHER_VECTOR:
        assert.fail(
          `probe ${results.length} (${JSON.stringify(cur.probe, big)}): exception vector ${o.value}`,
        );
        break;
      case PORT.PROBE_DONE:
        assert.equal(o.value, first + results.length, "probes out of order");
        results.push(cur);
        cur = { probe: probes[results.length] };
        break;
      default:
        assert.fail(`unexpected OUT to port ${o.port}`);
    }
  }
  assert.equal(results.length, probes.length, "not every probe reported");
  return results;
}

export function big(_k: string, v: unknown): unknown {
  return typeof v === "bigint" ? `0x${v.toString(16)}` : v;
}

/**
 * This machine's CPU is QEMU's TCG (the kvm_amd test VM, docs/svm.md): there the guest's page faults come from
 * TCG's page walk, which differs from hardware in two ways the tests allow for: a reserved-bit fault has RSVD
 * alone in its error code, without P (QEMU 7.2's target/i386/tcg/sysemu/excp_helper.c, `do_fault_rsvd`; the
 * SDM, 4.7, sets RSVD only with P), and bit 8 of a PML4E is ignored for an AMD CPU model too (AMD's APM
 * reserves it; KVM's own walker does).
 */
export function onQemuTcg(): boolean {
  try {
    return /^model name\s*:\s*QEMU TCG/m.test(readFileSync("/proc/cpuinfo", "utf8"));
  } catch {
    return false;
  }
}

/** The backend is kvm_pvm (guest ring 0 emulated by the host kernel). */
export function onKvmPvm(): boolean {
  return existsSync("/sys/module/kvm_pvm");
}

// struct kvm_sregs2 (<asm/kvm.h>): kvm_sregs up to apic_base, then u64 flags and u64 pdptrs[4] in place of the
// interrupt bitmap. KVM_GET_SREGS2 = _IOR(KVMIO, 0xcc, struct kvm_sregs2).
const SREGS2_FLAGS = kvm_sregs.off.interrupt_bitmap;
const SREGS2_PDPTRS = SREGS2_FLAGS + 8;
const SREGS2_SIZE = SREGS2_PDPTRS + 32;
const KVM_GET_SREGS2 = ioc(2, 0xae, 0xcc, SREGS2_SIZE);
const KVM_SREGS2_FLAGS_PDPTRS_VALID = 1n;

/** The PAE PDPTE registers KVM holds for the vCPU (KVM_GET_SREGS2), or undefined when it says they are not valid. */
export function pdptrs(vcpu: Vcpu): bigint[] | undefined {
  const b = Buffer.alloc(SREGS2_SIZE);
  if (libc.ioctlPtr(vcpu.fd, KVM_GET_SREGS2, b) < 0) throw new libc.SysError("KVM_GET_SREGS2", libc.errno());
  if ((b.readBigUInt64LE(SREGS2_FLAGS) & KVM_SREGS2_FLAGS_PDPTRS_VALID) === 0n) return undefined;
  return [0, 1, 2, 3].map((i) => b.readBigUInt64LE(SREGS2_PDPTRS + 8 * i));
}
