// Saved VMX capability values (`vmtool vmx --msr-file FILE`): a JSON object {"0x480": "0xda040000000004", ...}
// or text lines "0x480 0xda040000000004" (also "480 da040000000004", what a loop over `rdmsr -x` prints).
// Indices and values are hexadecimal, with or without 0x. Every problem is one MsrFileError naming file and line.
import { readInputFile } from "../../files/input-file.js";
import { MsrFileError } from "../errors.js";
import { hex, isVmxCapabilityMsr } from "./decode.js";

const HEX = /^(?:0x)?([0-9a-f]+)$/i;

function parseHex(text: string, what: string, where: string): bigint {
  const m = HEX.exec(text);
  if (!m) throw new MsrFileError(`${where}: ${what} '${text}' is not a hexadecimal number`);
  const v = BigInt(`0x${m[1]}`);
  if (v >= 1n << 64n) throw new MsrFileError(`${where}: ${what} '${text}' is wider than 64 bits`);
  return v;
}

function addEntry(out: Map<number, bigint>, key: string, value: string, where: string): void {
  const index = parseHex(key, "MSR index", where);
  if (index > 0xffffffffn || !isVmxCapabilityMsr(Number(index)))
    throw new MsrFileError(
      `${where}: MSR ${key} is not a VMX capability MSR (expected 0x480-0x493 or 0x3a IA32_FEATURE_CONTROL)`,
    );
  const n = Number(index);
  if (out.has(n)) throw new MsrFileError(`${where}: MSR ${hex(n)} is given twice`);
  out.set(n, parseHex(value, `value of MSR ${hex(n)}`, where));
}

/** Parse the text of a saved-values file; `name` is used in error messages. */
export function parseMsrText(text: string, name: string): Map<number, bigint> {
  const out = new Map<number, bigint>();
  const trimmed = text.trim();
  if (trimmed === "")
    throw new MsrFileError(`${name}: empty file (expected MSR values: "0x480 0x..." lines or JSON)`);
  if (trimmed.startsWith("{")) {
    let obj: unknown;
    try {
      obj = JSON.parse(trimmed);
    } catch (err) {
      throw new MsrFileError(`${name}: not valid JSON: ${(err as Error).message}`);
    }
    if (obj === null || typeof obj !== "object" || Array.isArray(obj))
      throw new MsrFileError(`${name}: expected a JSON object of "index": "value" strings`);
    // JSON.parse keeps only the last of two equal keys: find the keys in the text to catch duplicates.
    const keys = [...trimmed.matchAll(/"((?:[^"\\]|\\.)*)"\s*:/g)].map((m) => m[1]);
    const seen = new Set<string>();
    for (const k of keys) {
      if (seen.has(k)) throw new MsrFileError(`${name}: MSR ${k} is given twice`);
      seen.add(k);
    }
    for (const [k, v] of Object.entries(obj as Record<string, unknown>)) {
      if (typeof v !== "string" && typeof v !== "number")
        throw new MsrFileError(`${name}: key "${k}": expected a hexadecimal string value`);
      if (typeof v === "number")
        throw new MsrFileError(`${name}: key "${k}": write the value as a hex string ("0x...")`);
      addEntry(out, k, v, `${name}: key "${k}"`);
    }
  } else {
    const lines = text.split("\n");
    lines.forEach((line, i) => {
      const body = line.replace(/#.*/, "").trim();
      if (body === "") return;
      const parts = body.split(/[\s:=]+/).filter((p) => p !== "");
      if (parts.length !== 2)
        throw new MsrFileError(`${name}:${i + 1}: expected "INDEX VALUE" (two hex numbers), got '${body}'`);
      addEntry(out, parts[0], parts[1], `${name}:${i + 1}`);
    });
  }
  if (out.size === 0) throw new MsrFileError(`${name}: no MSR values in the file`);
  return out;
}

/** The most a file of saved values is read: all the VMX MSRs in any spelling, with comments, fit many times. */
export const MAX_MSR_FILE = 1 << 20;

/** Read and parse a saved-values file: a regular file (or a procfs-like one) of at most MAX_MSR_FILE bytes. */
export function readMsrFile(path: string): Map<number, bigint> {
  const bytes = readInputFile(path, MAX_MSR_FILE, "the 1 MiB a file of saved MSR values may have");
  return parseMsrText(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("utf8"), path);
}
