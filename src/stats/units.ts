// Values in their units, as the descriptors say (a `_ns` stat is seconds with exponent -9), and the bounds of
// histogram buckets: what a screen shows and what an exporter writes. No I/O.
import type { StatDesc } from "./types.js";

/** The value in the stat's unit (seconds, bytes...): raw × base^exponent. */
export function inUnit(desc: StatDesc, raw: number): number {
  return raw * desc.scale;
}

/**
 * Bucket `i` of a histogram, in the stat's unit: [low, high). A log histogram's bucket 0 holds 0 and bucket
 * i > 0 holds [2^(i-1), 2^i) raw units; a linear one's bucket i holds [i, i+1) × bucket size. The last bucket
 * of either also holds everything above (high = Infinity).
 */
export function bucketBounds(desc: StatDesc, i: number): [number, number] {
  const last = i === desc.buckets - 1;
  if (desc.type === "log-hist") {
    if (i === 0) return [0, inUnit(desc, 1)];
    return [inUnit(desc, 2 ** (i - 1)), last ? Infinity : inUnit(desc, 2 ** i)];
  }
  const w = desc.bucketSize || 1;
  return [inUnit(desc, i * w), last ? Infinity : inUnit(desc, (i + 1) * w)];
}

const SI = [
  [1, ""],
  [1e-3, "m"],
  [1e-6, "µ"],
  [1e-9, "n"],
] as const;

/** Seconds as `1.01s`, `245ms`, `12.3µs`, `0s`. */
export function formatSeconds(s: number): string {
  if (s === 0) return "0s";
  if (!Number.isFinite(s)) return "∞";
  if (s >= 60) return `${s.toFixed(0)}s`;
  for (const [f, p] of SI) if (Math.abs(s) >= f) return `${trim(s / f)}${p}s`;
  return `${trim(s / 1e-9)}ns`;
}

const BINARY = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];

export function formatBytes(b: number): string {
  let i = 0;
  while (Math.abs(b) >= 1024 && i < BINARY.length - 1) {
    b /= 1024;
    i++;
  }
  return i === 0 ? `${Math.round(b)}B` : `${trim(b)}${BINARY[i]}`;
}

/** Three significant digits, no trailing zeros. */
function trim(v: number): string {
  const t = Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 10 ? v.toFixed(1) : v.toFixed(2);
  return t.includes(".") ? t.replace(/\.?0+$/, "") : t;
}

const isHistogram = (desc: StatDesc) => desc.type === "log-hist" || desc.type === "linear-hist";

/** A value of `desc` in its unit, for people: `1.01s`, `12KiB`, `yes`, `1234`. `count`: vCPUs summed. */
export function formatValue(desc: StatDesc, raw: number, vcpus?: number): string {
  // A histogram's value is its count of samples; the unit is its buckets' (histogramBar).
  if (isHistogram(desc)) return String(raw);
  switch (desc.unit) {
    case "seconds":
      return formatSeconds(inUnit(desc, raw));
    case "bytes":
      return formatBytes(inUnit(desc, raw));
    case "boolean":
      return vcpus === undefined || vcpus <= 1 ? (raw ? "yes" : "no") : `${raw}/${vcpus}`;
    default:
      return String(Math.round(inUnit(desc, raw)));
  }
}

/** A rate (raw units per second) for people: `12345`, `980ms/s` (seconds per second), `1.2MiB/s`. */
export function formatRate(desc: StatDesc, rawPerSecond: number): string {
  if (isHistogram(desc)) return String(Math.round(rawPerSecond));
  switch (desc.unit) {
    case "seconds":
      return `${formatSeconds(inUnit(desc, rawPerSecond))}/s`;
    case "bytes":
      return `${formatBytes(inUnit(desc, rawPerSecond))}/s`;
    default:
      return String(Math.round(inUnit(desc, rawPerSecond)));
  }
}

const BARS = " ▁▂▃▄▅▆▇█";

/**
 * A histogram as a small bar chart: one character per bucket from the first to the last non-empty one (height
 * by the square root of the count, so small buckets stay visible), with the range it covers.
 */
export function histogramBar(desc: StatDesc, buckets: readonly number[]): string {
  const first = buckets.findIndex((b) => b > 0);
  if (first < 0) return "";
  let last = buckets.length - 1;
  while (buckets[last] === 0) last--;
  const max = Math.sqrt(Math.max(...buckets));
  let bars = "";
  for (let i = first; i <= last; i++)
    bars += buckets[i] === 0 ? " " : BARS[Math.max(1, Math.round((8 * Math.sqrt(buckets[i])) / max))];
  const fmt = (v: number) =>
    desc.unit === "seconds" ? formatSeconds(v) : desc.unit === "bytes" ? formatBytes(v) : trim(v);
  const [lo] = bucketBounds(desc, first);
  const [, hi] = bucketBounds(desc, last);
  return `${bars}  ${fmt(lo)}..${fmt(hi)}`;
}
