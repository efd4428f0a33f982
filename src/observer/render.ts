// Text and JSON shapes of what the observer saw: the `vcpus` snapshot (a tree by host CPU, like the module's
// directory), `watch`'s event lines and its live screen. Pure functions of a poll: no I/O.
import { hex } from "../format.js";
import { basename } from "node:path";
import type { GlobalFile, KvmVm, Poll, Sighting } from "./types.js";
import type { ObserverEvent, Tracker } from "./tracker.js";

const pad2 = (n: number) => String(n).padStart(2, "0");

/** Local time `YYYY-MM-DD HH:MM:SS` of POSIX seconds. */
export function localTime(seconds: number): string {
  const d = new Date(seconds * 1000);
  return (
    `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())} ` +
    `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`
  );
}

/** A short age: `4s`, `2m05s`, `3h07m`, `12d`. */
export function age(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${pad2(s % 60)}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h${pad2(Math.floor((s % 3600) / 60))}m`;
  return `${Math.floor(s / 86400)}d`;
}

export const cpuName = (cpu: number) => `cpu-${String(cpu).padStart(3, "0")}`;

/** Human labels for vCPU ids: KVM's `<pid>-<fd>/vcpuN` becomes `<name>[pid]/vcpuN`. */
export function vcpuLabels(poll: Poll): (id: string) => string {
  if (!poll.vms) return (id) => id;
  const byVm = new Map(poll.vms.map((vm) => [vm.id, vm]));
  return (id) => {
    const [vmId, vcpu] = id.split("/");
    const vm = byVm.get(vmId);
    return vm ? `${vm.name}[${vm.pid}]/${vcpu}` : id;
  };
}

function groupByCpu(poll: Poll): Map<number, Sighting[]> {
  const by = new Map<number, Sighting[]>();
  for (const cpu of poll.cpus) by.set(cpu, []);
  for (const s of poll.sightings) {
    let list = by.get(s.cpu);
    if (!list) by.set(s.cpu, (list = []));
    list.push(s);
  }
  for (const list of by.values())
    list.sort((a, b) => (b.lastSeen ?? -1) - (a.lastSeen ?? -1) || (a.vcpu < b.vcpu ? -1 : 1));
  return new Map([...by].sort((a, b) => a[0] - b[0]));
}

const hex16 = (v: bigint) => hex(v, 16);

function globalLines(globals: GlobalFile[]): string[] {
  const out = ["global files:"];
  const w = Math.max(...globals.map((g) => g.name.length));
  for (const g of globals) {
    out.push(`  ${g.name.padEnd(w)}  ${hex16(g.value)}  ${g.what ?? "(unknown file: value not decoded)"}`);
    if (g.decoded) {
      const fw = Math.max(...g.decoded.map((d) => d.field.length));
      for (const d of g.decoded) out.push(`    ${d.field.padEnd(fw)}  ${d.value}`);
    }
  }
  return out;
}

function vmLine(vm: KvmVm): string {
  const stats = Object.entries(vm.stats)
    .map(([k, v]) => `${k} ${v}`)
    .join(", ");
  const tail = stats || (vm.statsError ? `statistics ${vm.statsError}` : "no statistics");
  const comm = vm.comm && vm.name !== vm.comm ? ` (${vm.comm})` : "";
  // The command line tells apart VMs whose processes share a name (every Node VMM is "node").
  let cmd = vm.cmdline.map((a) => (a.includes("/") && !a.startsWith("-") ? basename(a) : a)).join(" ");
  if (cmd.length > 72) cmd = cmd.slice(0, 71) + "…";
  return (
    // A VM whose process is gone is named by its pid already: say it once.
    `VM ${vm.id}: ${vm.name === `pid ${vm.pid}` ? vm.name : `${vm.name}${comm}, pid ${vm.pid}`}, ` +
    `${vm.vcpus.length} vCPU${vm.vcpus.length === 1 ? "" : "s"}; ${tail}` +
    (cmd ? `\n  command: ${cmd}` : "")
  );
}

/** The `vcpus` snapshot as text: global values, then each host CPU with the vCPUs seen there. */
export function renderSnapshot(poll: Poll, now = poll.takenAt / 1000): string {
  const lines: string[] = [];
  const what = poll.source === "vmtool" ? "vmtool module" : "KVM debugfs";
  lines.push(`${what} at ${poll.root}, read ${localTime(poll.takenAt / 1000)}`);
  if (poll.globals && poll.globals.length > 0) lines.push(...globalLines(poll.globals));
  if (poll.vms) {
    if (poll.vms.length === 0) lines.push("no VM is running");
    for (const vm of poll.vms) lines.push(vmLine(vm));
  }
  const label = vcpuLabels(poll);
  const vcpuInfo = new Map(poll.vms?.flatMap((vm) => vm.vcpus.map((v) => [v.id, v] as const)) ?? []);
  const groups = groupByCpu(poll);
  let emptyRun: number[] = [];
  const flushEmpty = () => {
    if (emptyRun.length === 1) lines.push(`${cpuName(emptyRun[0])}  (no vCPU seen)`);
    else if (emptyRun.length > 1)
      lines.push(
        `${cpuName(emptyRun[0])} … ${cpuName(emptyRun[emptyRun.length - 1])}  (no vCPU seen, ${emptyRun.length} CPUs)`,
      );
    emptyRun = [];
  };
  for (const [cpu, list] of groups) {
    if (list.length === 0) {
      if (emptyRun.length > 0 && emptyRun[emptyRun.length - 1] !== cpu - 1) flushEmpty();
      emptyRun.push(cpu);
      continue;
    }
    flushEmpty();
    lines.push(cpuName(cpu));
    const w = Math.max(...list.map((s) => label(s.vcpu).length));
    list.forEach((s, i) => {
      const branch = i === list.length - 1 ? "└──" : "├──";
      const seen =
        s.lastSeen === null
          ? "not seen running since vmtool started looking"
          : `last seen ${localTime(s.lastSeen)} (${age(now - s.lastSeen)} ago)`;
      let extra = "";
      const v = vcpuInfo.get(s.vcpu);
      if (v) {
        const latest = v.cpu === cpu ? `, ${v.state === "R" ? "running" : "last ran here"}` : "";
        extra = `  tid ${v.tid}, cpu time ${((v.cpuTimeNs ?? 0) / 1e9).toFixed(2)} s${latest}`;
      }
      if (s.sightings !== undefined) extra += `, ${s.sightings} sightings`;
      lines.push(`  ${branch} ${label(s.vcpu).padEnd(w)}  ${seen}${extra}`);
    });
    const regs = poll.sysregs?.get(cpu);
    if (regs)
      lines.push(
        `  registers: ${Object.entries(regs)
          .map(([k, v]) => `${k} 0x${v.toString(16)}`)
          .join("  ")}`,
      );
  }
  flushEmpty();
  const unplaced = poll.vms?.flatMap((vm) => vm.vcpus.filter((v) => v.cpu === null)) ?? [];
  if (unplaced.length > 0)
    lines.push(`not placed (never ran, or thread gone): ${unplaced.map((v) => label(v.id)).join(", ")}`);
  const vcpus = new Set(poll.sightings.map((s) => s.vcpu)).size;
  const used = [...groups.values()].filter((l) => l.length > 0).length;
  const cpuCount =
    poll.source === "vmtool"
      ? `${used} of ${poll.cpus.length} host CPUs`
      : `${used} host CPU${used === 1 ? "" : "s"}`;
  let summary = `${poll.sightings.length} sighting${poll.sightings.length === 1 ? "" : "s"} of ${vcpus} vCPU${vcpus === 1 ? "" : "s"} on ${cpuCount}`;
  if (poll.problems.length > 0) summary += `; ${problemSummary(poll.problems.length)}`;
  lines.push(summary);
  return lines.join("\n") + "\n";
}

export function problemSummary(n: number): string {
  return `${n} file${n === 1 ? "" : "s"} skipped as unreadable or garbage`;
}

/** The `vcpus --json` document. */
export function snapshotJson(poll: Poll, now = poll.takenAt / 1000): unknown {
  const groups = groupByCpu(poll);
  return {
    source: poll.source,
    root: poll.root,
    takenAt: new Date(poll.takenAt).toISOString(),
    globals: poll.globals?.map((g) => ({
      name: g.name,
      value: hex16(g.value),
      what: g.what ?? null,
      decoded: g.decoded ?? [],
    })),
    vms: poll.vms,
    cpus: [...groups].map(([cpu, list]) => ({
      cpu,
      name: cpuName(cpu),
      sysregs: poll.sysregs?.get(cpu),
      vcpus: list.map((s) => ({
        vcpu: s.vcpu,
        lastSeen: s.lastSeen,
        lastSeenIso: s.lastSeen === null ? null : new Date(s.lastSeen * 1000).toISOString(),
        ageSeconds: s.lastSeen === null ? null : Math.max(0, now - s.lastSeen),
        ...(s.firstSeen !== undefined ? { firstSeen: s.firstSeen } : {}),
        ...(s.sightings !== undefined ? { sightings: s.sightings } : {}),
      })),
    })),
    problems: poll.problems,
  };
}

/** One event as a text line (non-terminal `watch`). */
export function eventLine(e: ObserverEvent, label: (id: string) => string): string {
  const where = e.cpu === null ? "no host CPU yet" : cpuName(e.cpu);
  const seen = e.lastSeen === null ? "never seen running" : `last seen ${localTime(e.lastSeen)}`;
  const head = `${localTime(e.at / 1000)}  ${e.event.padEnd(8)}  ${label(e.vcpu)}`;
  switch (e.event) {
    case "appeared":
      return `${head} on ${where} (${seen})`;
    case "moved":
      return `${head} seen on ${where}, was on ${cpuName(e.fromCpu ?? 0)}`;
    case "stale":
      return `${head} on ${where}: not seen for ${age(e.at / 1000 - (e.lastSeen ?? e.at / 1000))} (${seen})`;
    case "active":
      return `${head} seen again on ${where}`;
    case "vanished":
      return `${head} gone (was on ${where}, ${seen})`;
  }
}

/** One event as a JSON object (`watch --json`, one per line). */
export function eventJson(e: ObserverEvent, label: (id: string) => string): Record<string, unknown> {
  return {
    time: new Date(e.at).toISOString(),
    event: e.event,
    vcpu: e.vcpu,
    label: label(e.vcpu),
    cpu: e.cpu,
    ...(e.fromCpu !== undefined ? { fromCpu: e.fromCpu } : {}),
    lastSeen: e.lastSeen,
  };
}

export interface ScreenOptions {
  columns: number;
  rows: number;
  intervalSeconds: number;
  staleSeconds: number;
  /** A vCPU counts as new for this long after it appeared. */
  newSeconds: number;
  color: boolean;
  /** The latest unreported problems, shown on the status line. */
  problemNote?: string;
}

const ANSI = { new: "\x1b[1;32m", active: "\x1b[1m", stale: "\x1b[2m", reset: "\x1b[0m" };

/** The live `watch` screen: one line per host CPU with its vCPUs marked + new, * active, . stale. */
export function renderScreen(tracker: Tracker, opts: ScreenOptions): string[] {
  const poll = tracker.last;
  if (!poll) return ["waiting for the first poll…"];
  const now = poll.takenAt / 1000;
  const label = vcpuLabels(poll);
  const groups = groupByCpu(poll);
  let nNew = 0,
    nActive = 0,
    nStale = 0;
  const mark = (s: Sighting): { sym: string; style: keyof typeof ANSI } => {
    if (tracker.isNew(s.vcpu, opts.newSeconds)) return { sym: "+", style: "new" };
    return tracker.isStale(s.lastSeen, now) ? { sym: ".", style: "stale" } : { sym: "*", style: "active" };
  };
  for (const st of tracker.vcpus.values()) {
    if (tracker.isNew(st.vcpu, opts.newSeconds)) nNew++;
    else if (st.stale) nStale++;
    else nActive++;
  }
  const src = poll.source === "vmtool" ? "vmtool module" : "KVM debugfs";
  const header = [
    `vmtool watch  ${localTime(now)}  poll ${tracker.totals.polls}  every ${opts.intervalSeconds} s, stale after ${opts.staleSeconds} s  ${src} at ${poll.root}`,
    `${tracker.vcpus.size} vCPUs: ${nNew} new, ${nActive} active, ${nStale} stale, on ${[...groups.values()].filter((l) => l.length).length} of ${groups.size} host CPUs    (+ new  * active  . stale; q or Ctrl-C quits)`,
  ];
  const body: string[] = [];
  const styled: string[] = [];
  for (const [cpu, list] of groups) {
    if (list.length === 0) continue;
    let plain = cpuName(cpu).padEnd(9);
    let fancy = plain;
    for (const s of list) {
      const { sym, style } = mark(s);
      const cell = `${sym}${label(s.vcpu)} ${s.lastSeen === null ? "-" : age(now - s.lastSeen)}`;
      if (plain.length + cell.length + 2 > opts.columns) {
        plain += " …";
        fancy += " …";
        break;
      }
      plain += "  " + cell;
      fancy += "  " + (opts.color ? ANSI[style] + cell + ANSI.reset : cell);
    }
    body.push(plain);
    styled.push(fancy);
  }
  const room = Math.max(1, opts.rows - header.length - 1);
  const shown =
    styled.length > room
      ? styled.slice(0, room - 1).concat(`… ${styled.length - room + 1} more host CPUs`)
      : styled;
  if (body.length === 0) shown.push("(no vCPU seen yet)");
  const status = opts.problemNote ?? "";
  return [
    ...header.map((l) => l.slice(0, opts.columns)),
    ...shown,
    ...(status ? [status.slice(0, opts.columns)] : []),
  ];
}
