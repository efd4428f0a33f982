// Parses what scripts/kernel-guest-init.sh wrote to the test VM's second serial port: "@@" event lines, debugfs
// trees with base64 file contents (turned back into bytes), and the guest's dmesg.
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";

/** One `@@TREE <phase> <guest time>` … `@@ENDTREE` block: the module's debugfs tree at that moment. */
export interface Tree {
  /** The guest's `date +%s` when the dump started. */
  time: number;
  /** Directories, relative to the module's root, with a leading slash (`/cpu-000`). */
  dirs: string[];
  /** File contents, byte for byte, by relative path (`/cpu-000/sysregs`). */
  files: Map<string, Buffer>;
  /** Files that vanished between the listing and the read. */
  gone: string[];
}

export interface GuestReport {
  /** Every `@@KIND args…` line outside trees and dmesg, split on spaces, `@@` removed. */
  events: string[][];
  trees: Map<string, Tree>;
  dmesg: string;
  /** The init reached its end (`@@DONE`). */
  done: boolean;
}

export function parseGuestReport(text: string): GuestReport {
  const report: GuestReport = { events: [], trees: new Map(), dmesg: "", done: false };
  const lines = text.replace(/\r/g, "").split("\n");
  let tree: Tree | null = null;
  let file: { path: string; b64: string[] } | null = null;
  let dmesg: string[] | null = null;
  for (const line of lines) {
    if (dmesg) {
      if (line === "@@ENDDMESG") {
        report.dmesg = dmesg.join("\n");
        dmesg = null;
      } else dmesg.push(line);
    } else if (file && tree) {
      if (line === "@@EOF") {
        tree.files.set(file.path, Buffer.from(file.b64.join(""), "base64"));
        file = null;
      } else file.b64.push(line.trim());
    } else if (tree) {
      const [kind, ...rest] = line.split(" ");
      const path = rest.join(" ");
      if (kind === "@@ENDTREE") tree = null;
      else if (kind === "@@DIR") tree.dirs.push(path);
      else if (kind === "@@FILE") file = { path, b64: [] };
      else if (kind === "@@GONE") tree.gone.push(path);
    } else if (line.startsWith("@@TREE ")) {
      const [, phase, time] = line.split(" ");
      tree = { time: Number(time), dirs: [], files: new Map(), gone: [] };
      report.trees.set(phase, tree);
    } else if (line === "@@DMESG") dmesg = [];
    else if (line === "@@DONE") report.done = true;
    else if (line.startsWith("@@")) report.events.push(line.slice(2).trimEnd().split(" "));
  }
  return report;
}

/** The arguments of the one event `kind phase …`; throws when it is missing. */
export function event(report: GuestReport, kind: string, phase: string): string[] {
  const found = report.events.find((e) => e[0] === kind && e[1] === phase);
  if (!found) throw new Error(`the guest did not report @@${kind} ${phase}`);
  return found.slice(2);
}

/** Writes a captured tree back as files under `dir` (e.g. `<tmp>/vmtool`), byte for byte. */
export function writeTree(tree: Tree, dir: string): void {
  mkdirSync(dir, { recursive: true });
  for (const d of tree.dirs) mkdirSync(join(dir, d), { recursive: true });
  for (const [path, bytes] of tree.files) {
    mkdirSync(dirname(join(dir, path)), { recursive: true });
    writeFileSync(join(dir, path), bytes);
  }
}

/** `vmtool_cpu=2 vmtool_vmcs=0` → { vmtool_cpu: 2, vmtool_vmcs: 0 } (active objects per slab cache). */
export function slabCounts(args: string[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const a of args) {
    const m = /^(\w+)=(\d+)$/.exec(a);
    if (m) out[m[1]] = Number(m[2]);
  }
  return out;
}

/** Lines of the kernel log that mean something went wrong in the kernel. */
export function kernelTroubles(log: string): string[] {
  return log
    .split("\n")
    .filter((l) => /\bBUG\b|WARNING|Oops|general protection|Call Trace|Kernel panic|Objects remaining/.test(l));
}
