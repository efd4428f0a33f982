// A strict parser of Prometheus' text format 0.0.4 and OpenMetrics 1.0.0, written from the format
// descriptions, for the tests: it throws on anything the formats do not allow (a bad name, a sample before its
// TYPE, a family split in two, a bad escape, histogram buckets out of order or not cumulative, a counter
// without `_total`, a missing `# EOF`), so that a test that parses the exporter's output checks all of that.

export interface ParsedSample {
  name: string;
  labels: Record<string, string>;
  value: number;
}
export interface ParsedFamily {
  name: string;
  type: string;
  help?: string;
  unit?: string;
  samples: ParsedSample[];
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

function parseValue(text: string, line: number): number {
  if (text === "+Inf") return Infinity;
  if (text === "-Inf") return -Infinity;
  if (text === "NaN") return NaN;
  if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(text))
    throw new Error(`line ${line}: bad value '${text}'`);
  return Number(text);
}

function parseLabels(s: string, line: number): [Record<string, string>, string] {
  const labels: Record<string, string> = {};
  let i = 0;
  if (s[i] !== "{") return [labels, s];
  i++;
  while (s[i] !== "}") {
    const m = /^([a-zA-Z_][a-zA-Z0-9_]*)="/.exec(s.slice(i));
    if (!m) throw new Error(`line ${line}: bad label at '${s.slice(i, i + 20)}'`);
    i += m[0].length;
    let v = "";
    for (;;) {
      const c = s[i++];
      if (c === undefined) throw new Error(`line ${line}: unterminated label value`);
      if (c === '"') break;
      if (c === "\\") {
        const e = s[i++];
        if (e === "\\") v += "\\";
        else if (e === '"') v += '"';
        else if (e === "n") v += "\n";
        else throw new Error(`line ${line}: bad escape \\${e}`);
      } else if (c === "\n") throw new Error(`line ${line}: raw newline in a label value`);
      else v += c;
    }
    if (m[1] in labels) throw new Error(`line ${line}: label ${m[1]} twice`);
    if (!LABEL.test(m[1])) throw new Error(`line ${line}: bad label name ${m[1]}`);
    labels[m[1]] = v;
    if (s[i] === ",") i++;
    else if (s[i] !== "}") throw new Error(`line ${line}: expected , or } at '${s.slice(i, i + 20)}'`);
  }
  return [labels, s.slice(i + 1)];
}

/** The family a sample of this name belongs to, for a family of this type. */
function belongs(family: ParsedFamily, sample: string, om: boolean): boolean {
  const n = family.name;
  switch (family.type) {
    case "counter":
      return om ? sample === `${n}_total` || sample === `${n}_created` : sample === n;
    case "histogram":
      return [`${n}_bucket`, `${n}_sum`, `${n}_count`, ...(om ? [`${n}_created`] : [])].includes(sample);
    case "info":
      return sample === `${n}_info`;
    default:
      return sample === n;
  }
}

export function parseExposition(text: string, format: "text" | "openmetrics"): Map<string, ParsedFamily> {
  const om = format === "openmetrics";
  if (!text.endsWith("\n")) throw new Error("the last line does not end with a newline");
  const lines = text.slice(0, -1).split("\n");
  const families = new Map<string, ParsedFamily>();
  let current: ParsedFamily | undefined;
  const series = new Set<string>();
  lines.forEach((l, idx) => {
    const line = idx + 1;
    if (om && l === "# EOF") {
      if (idx !== lines.length - 1) throw new Error(`line ${line}: # EOF before the end`);
      return;
    }
    if (l.startsWith("#")) {
      const m = /^# (HELP|TYPE|UNIT) ([^ ]+)(?: (.*))?$/.exec(l);
      if (!m) {
        if (om) throw new Error(`line ${line}: OpenMetrics has no comments: '${l}'`);
        return;
      }
      const [, kind, name, rest = ""] = m;
      if (!NAME.test(name)) throw new Error(`line ${line}: bad metric name ${name}`);
      if (current?.name !== name) {
        if (families.has(name)) throw new Error(`line ${line}: family ${name} appears twice`);
        current = { name, type: "untyped", samples: [] };
        families.set(name, current);
      }
      if (current.samples.length > 0) throw new Error(`line ${line}: ${kind} of ${name} after its samples`);
      if (kind === "TYPE") {
        const types = om
          ? ["counter", "gauge", "histogram", "gaugehistogram", "stateset", "info", "summary", "unknown"]
          : ["counter", "gauge", "histogram", "summary", "untyped"];
        if (!types.includes(rest)) throw new Error(`line ${line}: bad type ${rest}`);
        if (!om && rest === "counter" && !name.endsWith("_total"))
          throw new Error(`line ${line}: counter ${name} does not end with _total`);
        if (om && rest === "counter" && name.endsWith("_total"))
          throw new Error(`line ${line}: OpenMetrics counter family ${name} must not end with _total`);
        current.type = rest;
      } else if (kind === "HELP") {
        if (current.help !== undefined) throw new Error(`line ${line}: second HELP for ${name}`);
        if (/\\[^\\n"]/.test(rest.replace(/\\\\/g, ""))) throw new Error(`line ${line}: bad escape in HELP`);
        current.help = rest;
      } else {
        if (!om) throw new Error(`line ${line}: UNIT is OpenMetrics only`);
        if (!name.endsWith(`_${rest}`))
          throw new Error(`line ${line}: ${name} does not end with its unit ${rest}`);
        current.unit = rest;
      }
      return;
    }
    if (l.trim() === "") {
      if (om) throw new Error(`line ${line}: empty line`);
      return;
    }
    const nm = /^([a-zA-Z_:][a-zA-Z0-9_:]*)/.exec(l);
    if (!nm) throw new Error(`line ${line}: bad sample '${l}'`);
    const [labels, rest] = parseLabels(l.slice(nm[1].length), line);
    const vm = /^ (\S+)$/.exec(rest);
    if (!vm)
      throw new Error(`line ${line}: expected ' VALUE' (no timestamp) after the labels, got '${rest}'`);
    const value = parseValue(vm[1], line);
    if (!current || !belongs(current, nm[1], om))
      throw new Error(
        `line ${line}: sample ${nm[1]} outside its family (current: ${current?.name ?? "none"})`,
      );
    const key = nm[1] + JSON.stringify(Object.entries(labels).sort());
    if (series.has(key)) throw new Error(`line ${line}: series ${key} twice`);
    series.add(key);
    current.samples.push({ name: nm[1], labels, value });
  });
  if (om && lines[lines.length - 1] !== "# EOF") throw new Error("no # EOF at the end");
  for (const f of families.values()) if (f.type === "histogram") checkHistogram(f);
  return families;
}

/** Each series' buckets: `le` ascending, cumulative, +Inf last and equal to _count. */
function checkHistogram(f: ParsedFamily): void {
  const groups = new Map<string, ParsedSample[]>();
  const counts = new Map<string, number>();
  for (const s of f.samples) {
    const { le, ...rest } = s.labels;
    const key = JSON.stringify(Object.entries(rest).sort());
    if (s.name.endsWith("_bucket")) {
      if (le === undefined) throw new Error(`${f.name}: a bucket without le`);
      let g = groups.get(key);
      if (!g) groups.set(key, (g = []));
      g.push(s);
    } else if (s.name.endsWith("_count")) counts.set(key, s.value);
  }
  for (const [key, g] of groups) {
    let prevLe = -Infinity;
    let prev = 0;
    for (const b of g) {
      const le = parseValue(b.labels.le, 0);
      if (!(le > prevLe)) throw new Error(`${f.name}${key}: le ${b.labels.le} not ascending`);
      if (b.value < prev) throw new Error(`${f.name}${key}: bucket le=${b.labels.le} below the one before`);
      prevLe = le;
      prev = b.value;
    }
    if (g[g.length - 1].labels.le !== "+Inf") throw new Error(`${f.name}${key}: the last bucket is not +Inf`);
    if (counts.get(key) !== prev)
      throw new Error(`${f.name}${key}: _count ${counts.get(key)} != +Inf bucket ${prev}`);
  }
}

/** The value of one series: a sample name and labels that must all match (others may be present). */
export function valueOf(
  fams: Map<string, ParsedFamily>,
  sample: string,
  labels: Record<string, string>,
): number | undefined {
  for (const f of fams.values())
    for (const s of f.samples)
      if (s.name === sample && Object.entries(labels).every(([k, v]) => s.labels[k] === v)) return s.value;
  return undefined;
}
