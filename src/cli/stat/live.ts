// `vmtool stat` on a terminal: kvm_stat's screen and keys (b c f g h o p q r s x), plus v (each vCPU under its
// event), e (the `vmtool explain` entry of the selected row's exit reason) and up/down to select a row. The
// screen is redrawn at every interval (the first after 0.25 s, as kvm_stat) and at any other key.
import { writeSync } from "node:fs";
import { DeltaTracker, type TrackedSnapshot } from "../../stats/deltas.js";
import type { StatsCollector } from "../../stats/collector.js";
import { formatRate, formatValue, histogramBar } from "../../stats/units.js";
import { discoverVms, identify, scanProcess } from "../../stats/discover.js";
import { VmtoolError } from "../../errors.js";
import type { StatRequest } from "../commands/stat.js";
import { MAX_DELAY, MIN_DELAY, parseDelay, parseFields } from "../commands/stat.js";
import { GROUP_TITLES, eventRows, guestRows, type Row, type ViewOptions } from "./view.js";
import { pidOfGuest } from "./run.js";

const out = (text: string) => writeSync(1, text);
const BOLD = "\x1b[1m";
const REVERSE = "\x1b[7m";
const BLINK = "\x1b[5m";
const DIM = "\x1b[2m";
const RESET = "\x1b[0m";
const DEFAULT_DELAY = 3;

type Prompt = { kind: "f" | "g" | "s"; text: string; message: string };
type Overlay = { title: string; lines: string[] };

interface State {
  pid?: number;
  name?: string;
  named: boolean;
  dead: boolean;
  filter?: RegExp;
  filterText?: string;
  children: boolean;
  perVcpu: boolean;
  byGuest: boolean;
  sort: "rate" | "total";
  delay: number;
  selected: number;
  prompt?: Prompt;
  overlay?: Overlay;
  message?: string;
  last?: TrackedSnapshot;
}

const HELP = [
  "   b     toggle events by guests",
  "   c     clear filters (regex and guest)",
  "   e     explain the exit reason of the selected row (vmtool explain)",
  "   f     filter by regular expression",
  "   g     filter by guest name/PID",
  "   h     display interactive commands reference",
  "   o     toggle sorting order (Total vs CurAvg/s)",
  "   p     filter by guest name/PID",
  "   q     quit",
  "   r     reset stats",
  `   s     set delay between refreshs (value range: ${MIN_DELAY}-${MAX_DELAY} secs)`,
  "   v     toggle each vCPU's values under its event",
  "   x     toggle reporting of stats for individual child trace events",
  "   up/down (or k/j) select a row; Enter in the guest view shows that guest",
  "Any other key refreshes statistics immediately",
];

function pad(s: string, w: number, right = false): string {
  if (s.length > w) return s.slice(0, w);
  return right ? s.padStart(w) : s.padEnd(w);
}

function rowLine(r: Row, seconds: number, byGuest: boolean): string {
  const d = r.desc;
  const label = `${"  ".repeat(r.depth)}${r.name}`;
  const total = byGuest ? String(Math.round(r.total)) : formatValue(d, r.total, r.vcpus);
  const pct = r.percent === undefined ? "" : r.percent.toFixed(1);
  const counter = d.type === "cumulative" || d.type === "log-hist" || d.type === "linear-hist";
  const cur = counter && seconds > 0 && r.delta !== 0 ? formatRate(d, r.delta / seconds) : "";
  return ` ${pad(label, 40)} ${pad(total, 10, true)}${pad(pct, 7, true)} ${pad(cur, 8, true)}`;
}

export async function runLive(
  collector: StatsCollector,
  req: StatRequest,
  ctx: { pid?: number; filter?: RegExp; notice?: string },
): Promise<void> {
  const st: State = {
    pid: ctx.pid,
    name: ctx.pid === undefined ? undefined : identify(ctx.pid)?.name,
    named: ctx.pid === undefined ? false : (identify(ctx.pid)?.named ?? false),
    dead: false,
    filter: ctx.filter,
    filterText: req.fieldsText,
    children: false,
    perVcpu: req.perVcpu,
    byGuest: false,
    sort: "rate",
    delay: req.delaySeconds,
    selected: 0,
    message: ctx.notice,
  };
  let tracker = new DeltaTracker(req.includePast);
  let polls = 0;
  let timer: NodeJS.Timeout | undefined;
  let done!: () => void;
  const finished = new Promise<void>((r) => (done = r));
  let quitting = false;
  let rows: Row[] = [];

  const quit = () => {
    if (quitting) return;
    quitting = true;
    done();
  };
  const schedule = (ms: number) => {
    if (timer) clearTimeout(timer);
    timer = setTimeout(refresh, ms);
  };
  const resetCounts = () => {
    tracker = new DeltaTracker(false);
    st.last = undefined;
  };
  const setPid = (pid: number | undefined) => {
    st.pid = pid;
    const id = pid === undefined ? undefined : identify(pid);
    st.name = id?.name;
    st.named = id?.named ?? false;
    st.dead = false;
    collector.setPids(pid === undefined ? undefined : new Set([pid]));
    collector.setTracepointScope(pid !== undefined || st.byGuest ? "vms" : "host");
    resetCounts();
  };

  function refresh(): void {
    if (quitting) return;
    try {
      const t = tracker.update(collector.poll());
      st.last = t;
      polls++;
      if (st.pid !== undefined) {
        const mine = t.vms.find((v) => v.sample.vm.pid === st.pid);
        if (!mine || mine.sample.ended) {
          st.dead = true;
          // kvm_stat's behaviour: a guest that comes back under the same name is found again (a name of its own:
          // a command name, `node` for every vmtool run, says nothing about which guest it is).
          const again = st.name === undefined || !st.named ? undefined : findByName(st.name);
          if (again !== undefined && again !== st.pid) setPid(again);
        }
      }
      for (const n of t.snapshot.notes) st.message = n;
    } catch (e) {
      st.message = `error: ${(e as Error).message}`;
    }
    draw();
    if (req.count !== undefined && polls >= req.count) return quit();
    schedule(st.delay * 1000);
  }

  function findByName(name: string): number | undefined {
    try {
      return pidOfGuest(name);
    } catch {
      return undefined;
    }
  }

  function draw(): void {
    const cols = process.stdout.columns || 80;
    const height = process.stdout.rows || 24;
    const lines: string[] = [];
    const styled = new Map<number, string>();
    if (st.prompt) return drawPrompt(st.prompt, cols, height);
    if (st.overlay) {
      lines.push(st.overlay.title, "", "Press any key to continue", "", ...st.overlay.lines);
      styled.set(0, BOLD).set(2, REVERSE);
      return paint(lines, styled, cols, height);
    }
    const head =
      st.pid === undefined
        ? "kvm statistics - summary"
        : `kvm statistics - pid ${st.pid}${st.name ? ` (${st.name.length > 48 ? st.name.slice(0, 48) + "..." : st.name})` : ""}`;
    lines.push(
      head +
        (st.dead
          ? `${" ".repeat(Math.max(1, 60 - head.length))}${BLINK}${REVERSE}   Guest is DEAD   ${RESET}`
          : ""),
    );
    styled.set(0, BOLD);
    lines.push(st.filterText ? `${" ".repeat(17)}regex filter: ${st.filterText.slice(0, 44)}` : "");
    lines.push(
      ` ${pad(st.byGuest ? "Guest Name" : "Event", 40)} ${pad("Total", 10, true)}${pad("%Total", 7, true)} ${pad("CurAvg/s", 8, true)}`,
    );
    styled.set(2, REVERSE);
    const t = st.last;
    const seconds = (t?.elapsedMs ?? 0) / 1000;
    rows = [];
    const body: { text: string; row?: Row; style?: string }[] = [];
    const view: ViewOptions = {
      filter: st.filter,
      children: st.children,
      perVcpu: st.perVcpu,
      sort: st.sort,
    };
    const pids = st.pid === undefined ? undefined : new Set([st.pid]);
    if (!t) body.push({ text: " Collecting data..." });
    else if (st.byGuest) {
      const g = guestRows(t, view);
      for (const r of g.rows) body.push({ text: rowLine(r, seconds, true), row: r });
      if (g.rows.length > 0) {
        const total = g.rows.reduce((s, r) => s + r.total, 0);
        const delta = g.rows.reduce((s, r) => s + r.delta, 0);
        body.push({
          text: ` ${pad("Total", 40)} ${pad(String(Math.round(total)), 10, true)}        ${pad(seconds > 0 && delta ? String(Math.round(delta / seconds)) : "", 8, true)}`,
          style: BOLD,
        });
        body.push({ text: ` (per guest: ${g.event}, from one source each)`, style: DIM });
      }
    } else {
      const groups = eventRows(t, view, pids);
      for (const g of groups) {
        body.push({ text: ` ${GROUP_TITLES[g.group]}`, style: DIM });
        for (const r of g.rows) {
          body.push({ text: rowLine(r, seconds, false), row: r });
          if (r.buckets && r.buckets.some((b) => b > 0))
            body.push({ text: ` ${"  ".repeat(r.depth + 1)}${histogramBar(r.desc, r.buckets)}` });
        }
        body.push({
          text: ` ${pad("Total", 40)} ${pad(String(Math.round(g.total)), 10, true)}        ${pad(seconds > 0 && g.delta ? String(Math.round(g.delta / seconds)) : "", 8, true)}`,
          style: BOLD,
        });
      }
    }
    if (t && body.length === 0)
      body.push({
        text:
          st.pid !== undefined && st.dead
            ? " Guest removed, updating..."
            : t.vms.length === 0
              ? ` No VM found${process.getuid?.() === 0 ? "" : " (other users' VMs need root)"}`
              : " No matching events reported yet",
      });
    rows = body.flatMap((b) => (b.row ? [b.row] : []));
    st.selected = Math.min(st.selected, Math.max(0, rows.length - 1));
    const footer = footerLines(t, cols);
    const room = height - lines.length - footer.length;
    // Keep the selected row on screen.
    const selAt = body.findIndex((b) => b.row === rows[st.selected]);
    const start = Math.max(0, selAt - room + 1);
    for (const b of body.slice(start, start + room)) {
      const i = lines.length;
      lines.push(b.text);
      if (b.row && b.row === rows[st.selected]) styled.set(i, REVERSE);
      else if (b.style) styled.set(i, b.style);
    }
    while (lines.length < height - footer.length) lines.push("");
    for (const f of footer) {
      styled.set(lines.length, DIM);
      lines.push(f);
    }
    paint(lines, styled, cols, height);
  }

  /** kvm_stat's prompt screens: a title, the prompt, a message, and for a guest the running guests. */
  function drawPrompt(p: Prompt, cols: number, height: number): void {
    const title =
      p.kind === "f"
        ? "Show statistics for events matching a regex."
        : p.kind === "g"
          ? "Show statistics for specific guest or pid."
          : `Set update interval (defaults to ${DEFAULT_DELAY.toFixed(1)}s).`;
    const label =
      p.kind === "f"
        ? "New regex: "
        : p.kind === "g"
          ? "Guest or pid [ENTER exits]: "
          : `Change delay from ${st.delay.toFixed(1)}s to `;
    const lines = [
      title,
      "",
      p.kind === "f" ? `Current regex: ${st.filterText ?? ""}` : "",
      `${label}${p.text}`,
      "",
      p.message,
      "",
    ];
    if (p.kind === "g") lines.push(...guestList());
    const styled = new Map<number, string>([[0, BOLD]]);
    if (p.kind === "g") styled.set(7, "\x1b[4m");
    paint(lines, styled, cols, height);
  }

  function footerLines(t: TrackedSnapshot | undefined, cols: number): string[] {
    const out: string[] = [];
    if (st.message) out.push(st.message.slice(0, cols));
    if (t) {
      const used = new Map<string, number>();
      for (const v of t.vms)
        for (const [s, u] of Object.entries(v.sample.sources))
          if (u?.used) used.set(s, (used.get(s) ?? 0) + 1);
      const parts = t.snapshot.sources.map((r) => {
        const n = used.get(r.source);
        if (r.source === "tracepoints" && t.host)
          return `tracepoints: host, ${t.snapshot.host?.cpus.length ?? 0} CPUs`;
        if (n) return `${r.source}: ${n} VM${n === 1 ? "" : "s"}`;
        return `${r.source}: ${r.available ? "-" : "unavailable"}`;
      });
      out.push(
        `${t.vms.length} VM${t.vms.length === 1 ? "" : "s"} · ${parts.join(" · ")} · every ${st.delay}s · h: help`,
      );
    }
    return out;
  }

  function guestList(): string[] {
    const list = ["     Pid  Guest Name (QEMU's -name, else the command name)"];
    for (const p of discoverVms().processes) {
      const id = identify(p.pid);
      if (id) list.push(`${String(p.pid).padStart(8)}  ${id.name}`);
    }
    return list;
  }

  function paint(lines: string[], styled: Map<number, string>, cols: number, height: number): void {
    const text = lines
      .slice(0, height)
      .map((l, i) => {
        const plain = l.includes("\x1b") ? l : l.slice(0, cols);
        const style = styled.get(i);
        return (style ? `${style}${plain}${RESET}` : plain) + "\x1b[K";
      })
      .join("\r\n");
    out(`\x1b[H${text}\x1b[J`);
  }

  function explainSelected(): void {
    const exit = rows[st.selected]?.desc.exit;
    if (!exit) {
      st.message = "e: the selected row is not about an exit reason";
      draw();
      return;
    }
    void import("../../arch/explain.js").then(({ explainExit }) => {
      try {
        const hits = explainExit(exit.name, exit.table);
        st.overlay = {
          title: `vmtool explain exit ${exit.name} --table ${exit.table}`,
          lines: hits.length
            ? hits.flatMap((h) => [
                `${h.title} ${h.number} (${h.hex}): ${h.name}`,
                ...wrap(h.description, (process.stdout.columns || 80) - 4).map((l) => `  ${l}`),
                ...(h.fields ? [`  look at: ${h.fields}`] : []),
                `  source: ${h.source}`,
                "",
              ])
            : [`no entry for ${exit.name} in the ${exit.table} table`],
        };
      } catch (e) {
        st.overlay = { title: "vmtool explain", lines: [(e as Error).message] };
      }
      draw();
    });
  }

  function submitPrompt(p: Prompt): void {
    const text = p.text.trim();
    try {
      if (p.kind === "f") {
        st.filter = text ? parseFields(text, "regex") : undefined;
        st.filterText = text || undefined;
        const re = st.filter;
        collector.setTracepointFilter(re ? (n) => re.test(n) : () => true);
        resetCounts();
      } else if (p.kind === "s") {
        st.delay = text ? parseDelay(text, "delay") : DEFAULT_DELAY;
      } else {
        if (!text || text === "0") setPid(undefined);
        else if (/^\d+$/.test(text)) {
          const pid = Number(text);
          const r = scanProcess(pid);
          if (r === "gone") throw new VmtoolError(`"${text}": Not a running process`);
          if (r === null) throw new VmtoolError(`"${text}": not a VM (no KVM VM descriptor)`);
          setPid(pid);
        } else setPid(pidOfGuest(text));
      }
      st.prompt = undefined;
      schedule(250);
    } catch (e) {
      p.message = (e as Error).message;
      p.text = "";
    }
    draw();
  }

  function onKey(key: string): void {
    if (st.overlay) {
      st.overlay = undefined;
      return draw();
    }
    if (st.prompt) {
      const p = st.prompt;
      if (key === "\r" || key === "\n") {
        submitPrompt(p);
        return;
      }
      if (key === "\x1b") {
        st.prompt = undefined;
        return draw();
      }
      if (key === "\x03") return quit();
      if (key === "\x7f" || key === "\b") p.text = p.text.slice(0, -1);
      else if (key >= " " && key !== "\x7f" && p.text.length < 200) p.text += key;
      return draw();
    }
    st.message = undefined;
    switch (key) {
      case "q":
      case "\x03":
        return quit();
      case "b":
        st.byGuest = !st.byGuest;
        collector.setTracepointScope(st.pid !== undefined || st.byGuest ? "vms" : "host");
        st.selected = 0;
        break;
      case "c":
        st.filter = undefined;
        st.filterText = undefined;
        collector.setTracepointFilter(() => true);
        setPid(undefined);
        break;
      case "e":
        return explainSelected();
      case "f":
        st.prompt = { kind: "f", text: "", message: "" };
        return draw();
      case "g":
      case "p":
        st.prompt = { kind: "g", text: "", message: "" };
        return draw();
      case "s":
        st.prompt = { kind: "s", text: "", message: "" };
        return draw();
      case "h":
        st.overlay = { title: "Interactive commands reference", lines: HELP };
        return draw();
      case "o":
        st.sort = st.sort === "rate" ? "total" : "rate";
        return draw();
      case "r":
        tracker.reset();
        break;
      case "v":
        st.perVcpu = !st.perVcpu;
        return draw();
      case "x":
        st.children = !st.children;
        return draw();
      case "\x1b[A":
      case "k":
        st.selected = Math.max(0, st.selected - 1);
        return draw();
      case "\x1b[B":
      case "j":
        st.selected = Math.min(rows.length - 1, st.selected + 1);
        return draw();
      case "\r":
      case "\n":
        if (st.byGuest && rows[st.selected]?.pid !== undefined) {
          st.byGuest = false;
          setPid(rows[st.selected].pid);
        }
        break;
    }
    refresh();
  }

  // The terminal: the alternate screen, no cursor, raw keys; restored however the watch ends.
  const raw = process.stdin.isTTY;
  const restore = () => {
    if (raw) process.stdin.setRawMode(false);
    out("\x1b[?25h\x1b[?1049l");
  };
  out("\x1b[?1049h\x1b[?25l\x1b[H\x1b[J");
  process.on("exit", restore);
  const onData = (d: Buffer) => {
    const s = d.toString("latin1");
    // Arrow keys arrive as one escape sequence; anything else key by key.
    if (s === "\x1b[A" || s === "\x1b[B") {
      onKey(s);
      return;
    }
    for (const ch of s) onKey(ch);
  };
  if (raw) {
    process.stdin.setRawMode(true);
    process.stdin.resume();
    process.stdin.on("data", onData);
  }
  process.on("SIGINT", quit);
  process.on("SIGTERM", quit);
  const onResize = () => draw();
  process.stdout.on("resize", onResize);
  try {
    draw();
    schedule(250);
    await finished;
  } finally {
    if (timer) clearTimeout(timer);
    process.off("SIGINT", quit);
    process.off("SIGTERM", quit);
    process.stdout.off("resize", onResize);
    if (raw) {
      process.stdin.off("data", onData);
      process.stdin.pause();
    }
    restore();
    process.off("exit", restore);
  }
}

function wrap(text: string, width: number): string[] {
  const out: string[] = [];
  let line = "";
  for (const w of text.split(/\s+/)) {
    if (line && line.length + 1 + w.length > width) {
      out.push(line);
      line = w;
    } else line = line ? `${line} ${w}` : w;
  }
  if (line) out.push(line);
  return out;
}
