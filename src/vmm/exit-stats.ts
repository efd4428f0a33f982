// Counts of exits by reason and by port/address, with the time spent in the guest (inside KVM_RUN, which
// includes the kernel's part of each exit) and in vmtool (from KVM_RUN's return to the next KVM_RUN).
// Collected in the vCPU thread; only its plain-data summary crosses to the main thread.
import { exitReasonName } from "../kvm/ioctls.js";

export interface StatRow {
  /** "IO", "MMIO", "HLT"... or "port 0xe9 out", "mmio 0xd0000000 read". */
  key: string;
  count: number;
  /** Milliseconds inside KVM_RUN before these exits. */
  guestMs: number;
  /** Milliseconds vmtool spent handling them. */
  vmmMs: number;
}

export interface StatsSummary {
  exits: number;
  wallMs: number;
  guestMs: number;
  vmmMs: number;
  byReason: StatRow[];
  byAddress: StatRow[];
}

class Row {
  count = 0;
  guestMs = 0;
  vmmMs = 0;
  constructor(readonly key: string) {}
}

export class ExitStats {
  private readonly reasons: (Row | undefined)[] = [];
  private readonly addresses = new Map<string, Row>();
  private readonly startMs = performance.now();
  exits = 0;

  /** One exit: its reason, an address key (or undefined), and its two times. */
  add(reason: number, addrKey: string | undefined, guestMs: number, vmmMs: number): void {
    this.exits++;
    const r = (this.reasons[reason] ??= new Row(exitReasonName(reason)));
    r.count++;
    r.guestMs += guestMs;
    r.vmmMs += vmmMs;
    if (addrKey !== undefined) {
      let a = this.addresses.get(addrKey);
      if (!a) this.addresses.set(addrKey, (a = new Row(addrKey)));
      a.count++;
      a.guestMs += guestMs;
      a.vmmMs += vmmMs;
    }
  }

  summary(): StatsSummary {
    const plain = (r: Row): StatRow => ({ key: r.key, count: r.count, guestMs: r.guestMs, vmmMs: r.vmmMs });
    const byReason = this.reasons.filter((r): r is Row => r !== undefined).map(plain);
    byReason.sort((a, b) => b.count - a.count);
    const byAddress = [...this.addresses.values()].map(plain).sort((a, b) => b.count - a.count);
    return {
      exits: this.exits,
      wallMs: performance.now() - this.startMs,
      guestMs: byReason.reduce((s, r) => s + r.guestMs, 0),
      vmmMs: byReason.reduce((s, r) => s + r.vmmMs, 0),
      byReason,
      byAddress,
    };
  }
}

/** Several vCPUs' summaries as one: counts and times added row by row; wall time is the longest vCPU's. */
export function mergeStats(list: readonly StatsSummary[]): StatsSummary | undefined {
  if (list.length <= 1) return list[0];
  const add = (rows: StatRow[][]) => {
    const m = new Map<string, StatRow>();
    for (const r of rows.flat()) {
      const a = m.get(r.key);
      if (a) {
        a.count += r.count;
        a.guestMs += r.guestMs;
        a.vmmMs += r.vmmMs;
      } else m.set(r.key, { ...r });
    }
    return [...m.values()].sort((a, b) => b.count - a.count);
  };
  return {
    exits: list.reduce((s, x) => s + x.exits, 0),
    wallMs: Math.max(...list.map((x) => x.wallMs)),
    guestMs: list.reduce((s, x) => s + x.guestMs, 0),
    vmmMs: list.reduce((s, x) => s + x.vmmMs, 0),
    byReason: add(list.map((x) => x.byReason)),
    byAddress: add(list.map((x) => x.byAddress)),
  };
}
