// Prometheus' text exposition formats, written by hand (the format is small; prom-client is deprecated and its
// successor needs Node 22): text 0.0.4, and OpenMetrics 1.0.0 for a scraper that asks for it. No timestamps
// (Prometheus stamps each scrape itself). Names and label names are checked here: a family with a bad name is a
// bug of the caller, thrown, never written.

export type FamilyType = "counter" | "gauge" | "histogram" | "info";

export type Labels = Readonly<Record<string, string>>;

/**
 * A label set written once (`vm="a",pid="1"`, names checked, values escaped) for the many samples that share
 * it: a scrape has ~10,000 samples over a few hundred label sets.
 */
export class RenderedLabels {
  private constructor(readonly text: string) {}

  static readonly EMPTY = new RenderedLabels("");

  static of(labels: Labels): RenderedLabels {
    return RenderedLabels.EMPTY.with(labels);
  }

  /** These labels followed by `labels` (in their order). */
  with(labels: Labels): RenderedLabels {
    let text = this.text;
    for (const k in labels) {
      checkLabelName(k, "a label set");
      text += `${text === "" ? "" : ","}${k}="${escapeLabel(labels[k])}"`;
    }
    return text === this.text ? this : new RenderedLabels(text);
  }
}

export interface Sample {
  /** Appended to the family's name: "_total", "_bucket", "_sum", "_count", "_info", or "". */
  suffix: string;
  labels: Labels | RenderedLabels;
  /** A histogram bucket's bound, written as the last label `le` (a number's text or `+Inf`: never escaped). */
  le?: string;
  value: number;
}

export interface Family {
  /**
   * The family's name as OpenMetrics means it: without `_total` (counters) or `_info` (info). Text 0.0.4 names
   * counters and info metrics with their suffix (its TYPE line names the samples).
   */
  name: string;
  type: FamilyType;
  help: string;
  /** OpenMetrics' UNIT (the name must end with `_<unit>`): "seconds", "bytes". */
  unit?: string;
  samples: Sample[];
}

export type Format = "text" | "openmetrics";

export const CONTENT_TYPES: Readonly<Record<Format, string>> = {
  text: "text/plain; version=0.0.4; charset=utf-8",
  openmetrics: "application/openmetrics-text; version=1.0.0; charset=utf-8",
};

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

/**
 * The format an Accept header asks for: OpenMetrics when it lists `application/openmetrics-text` (version 1.0.0
 * or none) with a q-value above that of text/plain, else text 0.0.4.
 */
export function negotiate(accept: string | undefined): Format {
  if (!accept) return "text";
  let om = -1;
  let text = -1;
  for (const part of accept.split(",")) {
    const [type, ...params] = part.split(";").map((s) => s.trim());
    let q = 1;
    let version: string | undefined;
    for (const p of params) {
      const [k, v] = p.split("=").map((s) => s.trim());
      if (k === "q") q = Number(v) || 0;
      if (k === "version") version = v;
    }
    if (type === "application/openmetrics-text" && (version === undefined || version === "1.0.0"))
      om = Math.max(om, q);
    if (type === "text/plain" || type === "*/*") text = Math.max(text, q);
  }
  return om > 0 && om >= text ? "openmetrics" : "text";
}

const NEEDS_ESCAPE = /[\\"\n]/;

/** A label value (and OpenMetrics' HELP): backslash, double quote and line feed escaped. */
export const escapeLabel = (v: string) =>
  NEEDS_ESCAPE.test(v) ? v.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n") : v;
/** Text 0.0.4's HELP: backslash and line feed escaped. */
const escapeHelp = (v: string) => v.replace(/\\/g, "\\\\").replace(/\n/g, "\\n");

/** A sample value: integers as integers, `+Inf`, `-Inf`, `NaN`, the rest as JavaScript's shortest form. */
export function formatValue(v: number): string {
  if (Number.isNaN(v)) return "NaN";
  if (v === Infinity) return "+Inf";
  if (v === -Infinity) return "-Inf";
  return String(v);
}

function checkLabelName(k: string, where: string): void {
  if (!LABEL.test(k) || k.startsWith("__")) throw new Error(`${where}: label name '${k}' is not valid`);
}

/** `{a="x",le="1e-9"}`, or "" for a sample without labels. */
function labelText(s: Sample): string {
  const text = s.labels instanceof RenderedLabels ? s.labels.text : RenderedLabels.of(s.labels).text;
  if (s.le === undefined) return text === "" ? "" : `{${text}}`;
  return text === "" ? `{le="${s.le}"}` : `{${text},le="${s.le}"}`;
}

function check(f: Family): void {
  if (!NAME.test(f.name)) throw new Error(`metric family name '${f.name}' is not valid`);
  if (f.unit !== undefined && !f.name.endsWith(`_${f.unit}`))
    throw new Error(`metric family ${f.name}: a unit ${f.unit} needs the name to end with _${f.unit}`);
  // Rendered label sets were checked when they were made.
  for (const s of f.samples)
    if (!(s.labels instanceof RenderedLabels)) for (const k in s.labels) checkLabelName(k, f.name);
}

/** Every family, in the given order, in one format. Families with no sample are left out. */
export function writeExposition(families: readonly Family[], format: Format): string {
  const out: string[] = [];
  const seen = new Set<string>();
  for (const f of families) {
    if (f.samples.length === 0) continue;
    check(f);
    if (seen.has(f.name)) throw new Error(`metric family ${f.name} written twice`);
    seen.add(f.name);
    if (format === "openmetrics") {
      out.push(`# TYPE ${f.name} ${f.type}\n`);
      if (f.unit) out.push(`# UNIT ${f.name} ${f.unit}\n`);
      out.push(`# HELP ${f.name} ${escapeLabel(f.help)}\n`);
    } else {
      // 0.0.4 has no info type (a gauge of value 1) and names a counter by its samples' name.
      const name = f.type === "counter" ? `${f.name}_total` : f.type === "info" ? `${f.name}_info` : f.name;
      out.push(`# HELP ${name} ${escapeHelp(f.help)}\n`);
      out.push(`# TYPE ${name} ${f.type === "info" ? "gauge" : f.type}\n`);
    }
    for (const s of f.samples) out.push(`${f.name}${s.suffix}${labelText(s)} ${formatValue(s.value)}\n`);
  }
  if (format === "openmetrics") out.push("# EOF\n");
  return out.join("");
}
