// Counts of exits by reason and by port/address, with the time spent in the guest (inside KVM_RUN, which
// includes the kernel's part of each exit) and in vmtool (from KVM_RUN's return to the next KVM_RUN).
// Collected in the vCPU thread; only its plain-data summary crosses to the main thread.
//
// Bounded: a guest can touch 2^16 ports and billions of MMIO addresses, so at most MAX_ADDRESS_ROWS distinct
// ports/addresses get a row of their own; the exits at any other address are added to one "other addresses"
// row, and how many distinct addresses went there is not tracked (that would need the memory this bound
// saves). Rows are keyed by numbers on the exit path (no string is built per exit); labels are made once, in
// summary().
import { exitReasonName } from "../kvm/ioctls.js";
import { hex } from "../format.js";

export interface StatRow {
  /** "IO", "MMIO", "HLT"... or "port 0xe9 out", "mmio 0xd0000000 read", "other addresses". */
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
  /** Exits at ports/addresses beyond the row limit, counted in the "other addresses" row (0 when none). */
  otherAddressExits: number;
}

/** Distinct ports/addresses that get a row of their own. */
export const MAX_ADDRESS_ROWS = 4096;
/** The label of the row that collects the exits at every address past the limit. */
export const OTHER_ADDRESSES = "other addresses";

class Row {
  count = 0;
  guestMs = 0;
  vmmMs = 0;
}

/** What an address row is about: a port access or an MMIO access, and its direction. */
export const ACCESS = { PIO_IN: 0, PIO_OUT: 1, MMIO_READ: 2, MMIO_WRITE: 3 } as const;

export class ExitStats {
  private readonly reasons: (Row | undefined)[] = [];
  /** key = address * 4 + ACCESS (addresses are below 2^51, so the key stays an exact integer). */
  private readonly addresses = new Map<number, Row>();
  private readonly other = new Row();
  private readonly startMs = performance.now();
  exits = 0;

  /** One exit: its reason, its two times, and for port/MMIO exits the address and the ACCESS kind. */
  add(reason: number, guestMs: number, vmmMs: number, address = -1, access = 0): void {
    this.exits++;
    const r = (this.reasons[reason] ??= new Row());
    r.count++;
    r.guestMs += guestMs;
    r.vmmMs += vmmMs;
    if (address < 0) return;
    const key = address * 4 + access;
    let a = this.addresses.get(key);
    if (!a) {
      if (this.addresses.size >= MAX_ADDRESS_ROWS) a = this.other;
      else this.addresses.set(key, (a = new Row()));
    }
    a.count++;
    a.guestMs += guestMs;
    a.vmmMs += vmmMs;
  }

  summary(): StatsSummary {
    const plain = (key: string, r: Row): StatRow => ({
      key,
      count: r.count,
      guestMs: r.guestMs,
      vmmMs: r.vmmMs,
    });
    const byReason: StatRow[] = [];
    this.reasons.forEach((r, reason) => {
      if (r) byReason.push(plain(exitReasonName(reason), r));
    });
    byReason.sort((a, b) => b.count - a.count);
    const byAddress = [...this.addresses].map(([key, r]) => plain(addressLabel(key), r));
    byAddress.sort((a, b) => b.count - a.count);
    if (this.other.count > 0) byAddress.push(plain(OTHER_ADDRESSES, this.other));
    return {
      exits: this.exits,
      wallMs: performance.now() - this.startMs,
      guestMs: byReason.reduce((s, r) => s + r.guestMs, 0),
      vmmMs: byReason.reduce((s, r) => s + r.vmmMs, 0),
      byReason,
      byAddress,
      otherAddressExits: this.other.count,
    };
  }
}

function addressLabel(key: number): string {
  const access = key % 4;
  const address = (key - access) / 4;
  if (access === ACCESS.PIO_IN) return `port ${hex(address)} in`;
  if (access === ACCESS.PIO_OUT) return `port ${hex(address)} out`;
  return `mmio ${hex(address)} ${access === ACCESS.MMIO_WRITE ? "write" : "read"}`;
}

/**
 * Several vCPUs' summaries as one: counts and times added row by row; wall time is the longest vCPU's. The
 * merged address table keeps the same bound: rows past MAX_ADDRESS_ROWS join the "other addresses" row.
 */
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
  const byAddress = add(list.map((x) => x.byAddress));
  let other = byAddress.find((r) => r.key === OTHER_ADDRESSES);
  const own = byAddress.filter((r) => r.key !== OTHER_ADDRESSES);
  for (const r of own.splice(MAX_ADDRESS_ROWS)) {
    other ??= { key: OTHER_ADDRESSES, count: 0, guestMs: 0, vmmMs: 0 };
    other.count += r.count;
    other.guestMs += r.guestMs;
    other.vmmMs += r.vmmMs;
  }
  if (other) own.push(other);
  return {
    exits: list.reduce((s, x) => s + x.exits, 0),
    wallMs: Math.max(...list.map((x) => x.wallMs)),
    guestMs: list.reduce((s, x) => s + x.guestMs, 0),
    vmmMs: list.reduce((s, x) => s + x.vmmMs, 0),
    byReason: add(list.map((x) => x.byReason)),
    byAddress: own,
    otherAddressExits: other?.count ?? 0,
  };
}
