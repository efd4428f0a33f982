// `vmtool run --stats`: the exit statistics as tables (cli-table3) or, with --json, as one JSON document.
import Table from "cli-table3";
import type { StatRow, StatsSummary } from "./exit-stats.js";
import type { DeviceReport } from "./io-protocol.js";

const ms = (v: number) => v.toFixed(v < 10 ? 3 : 1);

function rows(list: StatRow[], total: number): string[][] {
  return list.map((r) => [
    r.key,
    String(r.count),
    total ? ((100 * r.count) / total).toFixed(1) : "0.0",
    ms(r.guestMs),
    ms(r.vmmMs),
    r.count ? ((1000 * (r.guestMs + r.vmmMs)) / r.count).toFixed(2) : "-",
  ]);
}

const HEAD = ["exits", "%", "in guest ms", "in vmtool ms", "µs/exit"];

/** The two tables (by reason, by port/address) and a summary line, as text. */
export function formatStatsTable(s: StatsSummary, maxAddresses = 30): string {
  const byReason = new Table({ head: ["reason", ...HEAD], style: { head: [], border: [] } });
  byReason.push(...rows(s.byReason, s.exits));
  const byAddr = new Table({ head: ["port / address", ...HEAD], style: { head: [], border: [] } });
  byAddr.push(...rows(s.byAddress.slice(0, maxAddresses), s.exits));
  const more =
    s.byAddress.length > maxAddresses ? `(${s.byAddress.length - maxAddresses} more addresses)\n` : "";
  const rate = s.wallMs > 0 ? Math.round((s.exits * 1000) / s.wallMs) : 0;
  return (
    `exits by reason:\n${byReason.toString()}\n` +
    (s.byAddress.length ? `exits by port / address:\n${byAddr.toString()}\n${more}` : "") +
    `${s.exits} exits in ${ms(s.wallMs)} ms (${rate} exits/s): ${ms(s.guestMs)} ms in the guest, ` +
    `${ms(s.vmmMs)} ms in vmtool\n`
  );
}

/** Milliseconds rounded to the microsecond: the JSON stays readable and loses nothing measurable. */
const round = (v: number) => Math.round(v * 1000) / 1000;
const roundRow = (r: StatRow): StatRow => ({ ...r, guestMs: round(r.guestMs), vmmMs: round(r.vmmMs) });

/** What the I/O worker counted: register accesses forwarded to it, queue notifies it got via ioeventfd, and
 * what each of its devices counted. */
export interface IoCounts {
  forwarded?: number;
  notifies?: number;
  devices?: readonly DeviceReport[];
}

/** Lines about the I/O worker and its devices, under the tables. */
export function formatIoLine(c: IoCounts): string {
  let text = `I/O worker: ${c.forwarded ?? 0} register accesses forwarded from vCPUs, ${c.notifies ?? 0} queue notifies through ioeventfds (no exit)\n`;
  for (const d of c.devices ?? []) {
    const counts = Object.entries(d.counters).map(([k, v]) => `${v} ${k}`);
    if (d.broken) counts.push(`stopped (DEVICE_NEEDS_RESET): ${d.broken}`);
    if (counts.length > 0) text += `  ${d.name}: ${counts.join(", ")}\n`;
  }
  return text;
}

export function statsJson(s: StatsSummary, result: { status: number; reason: string } & IoCounts): unknown {
  return {
    status: result.status,
    reason: result.reason,
    forwarded: result.forwarded ?? 0,
    ioeventfdNotifies: result.notifies ?? 0,
    devices: result.devices ?? [],
    exits: s.exits,
    wallMs: round(s.wallMs),
    guestMs: round(s.guestMs),
    vmmMs: round(s.vmmMs),
    byReason: s.byReason.map(roundRow),
    byAddress: s.byAddress.map(roundRow),
    otherAddressExits: s.otherAddressExits,
  };
}
