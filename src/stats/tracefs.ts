// KVM's tracepoints as tracefs describes them: each event under <tracefs>/events/kvm/ with its id (what
// perf_event_open counts) and its format (the fields a filter may test, and the symbol tables the kernel prints
// reasons with). kvm_stat hard-codes its exit-reason tables; here they come from the running kernel's own
// format files, so they match it.
import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";

export interface TraceEvent {
  name: string;
  id: number;
  fields: Set<string>;
  format: string;
}

/** Where tracefs is mounted (/proc/mounts), else debugfs's `tracing` folder; undefined if neither. */
export function findTracefs(mounts = "/proc/mounts"): string | undefined {
  let text = "";
  try {
    text = readFileSync(mounts, "utf8");
  } catch {
    return undefined;
  }
  let debugfs: string | undefined;
  for (const line of text.split("\n")) {
    const [, where, type] = line.split(" ");
    if (!where) continue;
    const dir = where.replace(/\\040/g, " ");
    if (type === "tracefs") return dir;
    if (type === "debugfs") debugfs ??= dir;
  }
  return debugfs === undefined ? undefined : join(debugfs, "tracing");
}

/** The `kvm` events of a tracefs. Throws (the fs error) when the folder cannot be read: EACCES as non-root. */
export function kvmEvents(tracefs: string, subsystem = "kvm"): TraceEvent[] {
  const dir = join(tracefs, "events", subsystem);
  const out: TraceEvent[] = [];
  for (const name of readdirSync(dir).sort()) {
    let id: number;
    let format: string;
    try {
      id = Number(readFileSync(join(dir, name, "id"), "latin1").trim());
      format = readFileSync(join(dir, name, "format"), "latin1");
    } catch {
      continue; // `enable`, `filter`: files, not events
    }
    if (!Number.isSafeInteger(id) || id < 0) continue;
    const fields = new Set<string>();
    for (const m of format.matchAll(/field:[^;]*?\b(\w+)(?:\[\d*\])?;/g)) fields.add(m[1]);
    out.push({ name, id, fields, format });
  }
  return out;
}

/**
 * The `{ value, "NAME" }` pairs of a __print_symbolic() over `REC-><field>` in an event's print format (string
 * pieces such as `"KVM_EXIT_" "IO"` joined). `nth` picks among several: kvm_exit has the VMX table first
 * (`REC->isa == 1`) and the SVM table second. Empty when the format has none.
 */
export function symbolTable(format: string, field: string, nth = 0): Map<number, string> {
  const table = new Map<number, string>();
  const calls: string[] = [];
  for (
    let at = format.indexOf("__print_symbolic(");
    at >= 0;
    at = format.indexOf("__print_symbolic(", at + 1)
  ) {
    // The arguments end at the parenthesis that closes this call.
    let depth = 0;
    let end = format.length;
    for (let i = at + "__print_symbolic".length; i < format.length; i++) {
      if (format[i] === "(") depth++;
      else if (format[i] === ")" && --depth === 0) {
        end = i;
        break;
      }
    }
    const body = format.slice(at + "__print_symbolic(".length, end);
    const first = body.slice(0, body.indexOf(","));
    if (new RegExp(`REC->${field}\\b`).test(first)) calls.push(body);
  }
  const body = calls[nth];
  if (body === undefined) return table;
  for (const m of body.matchAll(/\{\s*([-+0-9a-fx ]+?)\s*,\s*((?:"[^"]*"\s*)+)\}/gi)) {
    const value = evalSmallSum(m[1]);
    const name = [...m[2].matchAll(/"([^"]*)"/g)].map((x) => x[1]).join("");
    if (value !== undefined && name) table.set(value, name);
  }
  return table;
}

/** `0x040 + 13` and plain numbers (as the kernel writes some table entries). */
function evalSmallSum(text: string): number | undefined {
  let sum = 0;
  for (const part of text.split("+")) {
    const t = part.trim();
    const v = /^-?(0x[0-9a-f]+|\d+)$/i.test(t) ? Number(t) : NaN;
    if (!Number.isFinite(v)) return undefined;
    sum += v;
  }
  return sum;
}
