// Software breakpoints as a KVMI tool sets them: KVMI has a BREAKPOINT event but no breakpoint command, so the
// tool writes 0xCC (int3) into guest memory itself (WRITE_PHYSICAL) and enables BREAKPOINT events. When a
// vCPU hits one of ours, the event is answered by stepping over it, so that it stays planted:
//   restore the original byte, enable single step, RETRY (the vCPU executes the original instruction), and
//   on the SINGLESTEP event that follows, plant 0xCC again, disable single step, CONTINUE.
// Without single step (the VMM cannot), a hit removes the breakpoint: restore the byte and RETRY.
// A BREAKPOINT event at an address that is not ours is the guest's own int3: CONTINUE re-injects it.
// While one vCPU steps over a breakpoint, another vCPU passing the same address is not stopped there.
// remove() and removeAll() put the original bytes back: a KVMI VMM does not undo a tool's memory writes when
// the tool goes away.
import { hex } from "../format.js";
import { KvmiUsageError } from "./errors.js";
import { Ev } from "./ids.js";
import type { KvmiClient } from "./client.js";
import type { KvmiEvent } from "./wire.js";

export const INT3 = 0xcc;

export interface Breakpoint {
  gpa: bigint;
  /** What the user called it (a symbol, an address). */
  label: string;
  /** The byte int3 replaced. */
  original: number;
  hits: number;
}

export class SoftwareBreakpoints {
  private readonly byGpa = new Map<bigint, Breakpoint>();
  /** vCPUs stepping over a breakpoint, and which. */
  private readonly stepping = new Map<number, Breakpoint>();

  /**
   * `keep`: step over hits so that breakpoints stay (needs VCPU_CONTROL_SINGLESTEP and SINGLESTEP events
   * enabled on every vCPU that may hit them); otherwise a hit removes its breakpoint.
   */
  constructor(
    private readonly client: KvmiClient,
    readonly keep: boolean,
    /** vCPUs the application single-steps itself: their stepping is left on and their steps are its own. */
    private readonly steppedByCaller: (vcpu: number) => boolean = () => false,
  ) {}

  get all(): readonly Breakpoint[] {
    return [...this.byGpa.values()];
  }

  /** Plant int3 at `gpa` (best done with the vCPUs paused). */
  async add(gpa: bigint, label = hex(gpa)): Promise<Breakpoint> {
    const had = this.byGpa.get(gpa);
    if (had) throw new KvmiUsageError(`${label}: a breakpoint is already set at ${hex(gpa)} (${had.label})`);
    const original = (await this.client.readPhysical(gpa, 1))[0];
    await this.client.writePhysical(gpa, Uint8Array.of(INT3));
    const bp: Breakpoint = { gpa, label, original, hits: 0 };
    this.byGpa.set(gpa, bp);
    return bp;
  }

  /** Put the original byte back. */
  async remove(bp: Breakpoint): Promise<void> {
    if (this.byGpa.get(bp.gpa) !== bp) return;
    this.byGpa.delete(bp.gpa);
    await this.client.writePhysical(bp.gpa, Uint8Array.of(bp.original));
  }

  /** Remove every breakpoint (the original bytes back), even those being stepped over. */
  async removeAll(): Promise<void> {
    const planted = new Set(this.byGpa.values());
    for (const bp of this.stepping.values()) planted.delete(bp); // its byte is the original already
    this.byGpa.clear();
    this.stepping.clear();
    for (const bp of planted) await this.client.writePhysical(bp.gpa, Uint8Array.of(bp.original));
  }

  /** The breakpoint a BREAKPOINT event stopped at, if it is one of ours. */
  owner(ev: KvmiEvent): Breakpoint | undefined {
    return ev.kind === "breakpoint" ? this.byGpa.get(ev.gpa) : undefined;
  }

  /**
   * Answer a BREAKPOINT event: ours are stepped over (or removed, without `keep`), the guest's own int3 is
   * re-injected. Returns the breakpoint, if ours.
   */
  async answerBreakpoint(ev: KvmiEvent): Promise<Breakpoint | undefined> {
    const bp = this.owner(ev);
    if (!bp) {
      this.client.reply(ev, "continue");
      return undefined;
    }
    bp.hits++;
    await this.client.writePhysical(bp.gpa, Uint8Array.of(bp.original));
    if (this.keep) {
      if (!this.steppedByCaller(ev.vcpu)) await this.client.controlSinglestep(ev.vcpu, true);
      this.stepping.set(ev.vcpu, bp);
    } else this.byGpa.delete(bp.gpa);
    this.client.reply(ev, "retry");
    return bp;
  }

  /**
   * A SINGLESTEP event: if it ends a step over one of ours, the breakpoint is planted again. Returns true when
   * the event was answered here (the step was ours alone), false when it is the caller's to show and answer
   * (not a step over, or a vCPU the caller single-steps itself).
   */
  async answerSinglestep(ev: KvmiEvent): Promise<boolean> {
    if (ev.id !== Ev.SINGLESTEP) return false;
    const bp = this.stepping.get(ev.vcpu);
    if (!bp) return false;
    this.stepping.delete(ev.vcpu);
    if (this.byGpa.get(bp.gpa) === bp) await this.client.writePhysical(bp.gpa, Uint8Array.of(INT3));
    if (this.steppedByCaller(ev.vcpu)) return false;
    await this.client.controlSinglestep(ev.vcpu, false);
    this.client.reply(ev, "continue");
    return true;
  }

  /** Whether a vCPU is stepping over a breakpoint now. */
  isStepping(vcpu: number): boolean {
    return this.stepping.has(vcpu);
  }
}
