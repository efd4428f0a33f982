// Turns successive polls into events (appeared, moved to another CPU, went stale, active again, vanished) and
// the live view's state. Pure: no I/O, no clock of its own (the poll's time is "now"), so tests drive it.
import type { Poll, Problem, Sighting } from "./types.js";

export type EventKind = "appeared" | "moved" | "stale" | "active" | "vanished";

export interface ObserverEvent {
  /** When the poll that found it was taken (ms since the epoch). */
  at: number;
  event: EventKind;
  vcpu: string;
  /** The host CPU it was last seen on (for `moved`: the new one). */
  cpu: number | null;
  fromCpu?: number;
  /** POSIX seconds, or null: never seen running. */
  lastSeen: number | null;
}

export interface VcpuState {
  vcpu: string;
  /** The CPU of its most recent sighting. */
  cpu: number | null;
  lastSeen: number | null;
  firstPollAt: number;
  stale: boolean;
}

/** The newest sighting of each vCPU in a poll. */
export function latestByVcpu(sightings: Sighting[]): Map<string, Sighting> {
  const out = new Map<string, Sighting>();
  for (const s of sightings) {
    const cur = out.get(s.vcpu);
    if (!cur || (s.lastSeen ?? -1) > (cur.lastSeen ?? -1)) out.set(s.vcpu, s);
  }
  return out;
}

export interface Totals {
  polls: number;
  events: Record<EventKind, number>;
  vcpusEver: Set<string>;
  cpusEver: Set<number>;
  problems: number;
}

export class Tracker {
  readonly vcpus = new Map<string, VcpuState>();
  readonly totals: Totals = {
    polls: 0,
    events: { appeared: 0, moved: 0, stale: 0, active: 0, vanished: 0 },
    vcpusEver: new Set(),
    cpusEver: new Set(),
    problems: 0,
  };
  private reported = new Set<string>();
  last: Poll | null = null;
  /** When the first poll was taken: vCPUs found then were there before watching began, so never "new". */
  firstPollAt: number | null = null;

  /** Did `vcpu` appear after watching began, less than `seconds` before the latest poll? */
  isNew(vcpu: string, seconds: number): boolean {
    const st = this.vcpus.get(vcpu);
    return (
      st !== undefined &&
      this.last !== null &&
      st.firstPollAt !== this.firstPollAt &&
      this.last.takenAt - st.firstPollAt < seconds * 1000
    );
  }

  constructor(private readonly staleSeconds: number) {}

  /** Is a sighting at `lastSeen` stale at `now` (both seconds)? */
  isStale(lastSeen: number | null, now: number): boolean {
    return lastSeen === null || now - lastSeen > this.staleSeconds;
  }

  /** Feed one poll; returns its events, and the problems not reported before (each path reported once). */
  update(poll: Poll): { events: ObserverEvent[]; newProblems: Problem[] } {
    const at = poll.takenAt;
    this.firstPollAt ??= at;
    const now = at / 1000;
    const events: ObserverEvent[] = [];
    const latest = latestByVcpu(poll.sightings);
    for (const [id, s] of latest) {
      const stale = this.isStale(s.lastSeen, now);
      const prev = this.vcpus.get(id);
      if (!prev) {
        this.vcpus.set(id, { vcpu: id, cpu: s.cpu, lastSeen: s.lastSeen, firstPollAt: at, stale });
        events.push({ at, event: "appeared", vcpu: id, cpu: s.cpu, lastSeen: s.lastSeen });
        continue;
      }
      const advanced = s.lastSeen !== null && (prev.lastSeen === null || s.lastSeen > prev.lastSeen);
      if (advanced && prev.cpu !== null && s.cpu !== prev.cpu)
        events.push({ at, event: "moved", vcpu: id, cpu: s.cpu, fromCpu: prev.cpu, lastSeen: s.lastSeen });
      if (stale && !prev.stale)
        events.push({ at, event: "stale", vcpu: id, cpu: s.cpu, lastSeen: s.lastSeen });
      if (!stale && prev.stale)
        events.push({ at, event: "active", vcpu: id, cpu: s.cpu, lastSeen: s.lastSeen });
      prev.cpu = s.cpu;
      prev.lastSeen = s.lastSeen;
      prev.stale = stale;
    }
    for (const [id, prev] of this.vcpus) {
      if (latest.has(id)) continue;
      events.push({ at, event: "vanished", vcpu: id, cpu: prev.cpu, lastSeen: prev.lastSeen });
      this.vcpus.delete(id);
    }
    const newProblems = poll.problems.filter((p) => !this.reported.has(p.path));
    for (const p of newProblems) this.reported.add(p.path);

    const t = this.totals;
    t.polls++;
    t.problems += newProblems.length;
    for (const e of events) t.events[e.event]++;
    for (const id of latest.keys()) t.vcpusEver.add(id);
    for (const s of poll.sightings) t.cpusEver.add(s.cpu);
    this.last = poll;
    return { events, newProblems };
  }
}
