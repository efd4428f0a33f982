// Finds the tree to observe and turns every way of not finding it into one actionable error line:
// debugfs not mounted (with the mount command, or --mount), root-only permissions, the module not loaded.
import { readFileSync, readdirSync, statSync } from "node:fs";
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { DebugfsUnavailableError, ObserverOptionError } from "./errors.js";
import { ModuleSource, type ModuleReadOptions } from "./module-tree.js";
import { KvmSource } from "./kvm-tree.js";
import type { Source } from "./types.js";

export const DEFAULT_DEBUGFS = "/sys/kernel/debug";
const MOUNT_CMD = `mount -t debugfs none ${DEFAULT_DEBUGFS}`;

export type SourceChoice = "vmtool" | "kvm" | "auto";

export interface OpenOptions extends ModuleReadOptions {
  source: SourceChoice;
  /** Another debugfs mount point, or a copied tree (either a debugfs root or the `vmtool/` folder itself). */
  debugfs?: string;
  /** Mount debugfs at the default place when it is not (root only). */
  mount?: boolean;
}

/** Is a debugfs mounted exactly at `dir` (per /proc/self/mounts)? */
export function isDebugfsMounted(dir: string): boolean {
  let mounts: string;
  try {
    mounts = readFileSync("/proc/self/mounts", "utf8");
  } catch {
    return true; // no /proc: cannot tell, let the reads speak
  }
  return mounts.split("\n").some((line) => {
    const [, where, type] = line.split(" ");
    return type === "debugfs" && where?.replace(/\\040/g, " ") === dir;
  });
}

function mountDebugfs(): void {
  if (process.getuid?.() !== 0)
    throw new DebugfsUnavailableError(
      `--mount needs root: debugfs can only be mounted by root (sudo ${MOUNT_CMD})`,
    );
  const r = spawnSync("mount", ["-t", "debugfs", "none", DEFAULT_DEBUGFS], { encoding: "utf8" });
  if (r.error || r.status !== 0)
    throw new DebugfsUnavailableError(
      `could not mount debugfs at ${DEFAULT_DEBUGFS}: ${(r.stderr || r.error?.message || "").trim() || `mount exited ${r.status}`}`,
    );
}

type Kind = "dir" | "missing" | "denied" | "other";
function kindOf(path: string): Kind {
  try {
    return statSync(path).isDirectory() ? "dir" : "other";
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return code === "EACCES" || code === "EPERM"
      ? "denied"
      : code === "ENOENT" || code === "ENOTDIR"
        ? "missing"
        : "other";
  }
}

function denied(path: string): DebugfsUnavailableError {
  return new DebugfsUnavailableError(
    `permission denied reading ${path}: debugfs is readable by root only (run as root, e.g. sudo vmtool …)`,
  );
}

/** Does `dir` look like the module's folder itself (a copied `vmtool/` tree)? */
function looksLikeModuleTree(names: string[]): boolean {
  return names.some((n) => n === "vmx-basic" || n === "svm-features" || /^cpu-\d{3,}$/.test(n));
}

/** Resolve the options to one pollable source, or throw one clear error. */
export function openSource(opts: OpenOptions): Source {
  const explicit = opts.debugfs !== undefined;
  const root = opts.debugfs ?? DEFAULT_DEBUGFS;
  if (!explicit && !isDebugfsMounted(root)) {
    if (opts.mount) mountDebugfs();
    else
      throw new DebugfsUnavailableError(
        `debugfs is not mounted at ${root}: mount it with '${MOUNT_CMD}' as root, or run with --mount`,
      );
  }
  let names: string[];
  try {
    names = readdirSync(root);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "EACCES" || code === "EPERM") throw denied(root);
    if (code === "ENOENT") throw new ObserverOptionError(`--debugfs ${root}: no such directory`);
    if (code === "ENOTDIR") throw new ObserverOptionError(`--debugfs ${root}: not a directory`);
    throw new DebugfsUnavailableError(`cannot read ${root}: ${(err as Error).message}`);
  }

  let moduleRoot: string | null = null;
  if (names.includes("vmtool")) {
    const k = kindOf(join(root, "vmtool"));
    if (k === "denied") throw denied(join(root, "vmtool"));
    if (k === "dir") moduleRoot = join(root, "vmtool");
  } else if (explicit && looksLikeModuleTree(names)) {
    moduleRoot = root;
  }
  let kvmRoot: string | null = null;
  if (names.includes("kvm")) {
    const k = kindOf(join(root, "kvm"));
    if (k === "denied") throw denied(join(root, "kvm"));
    if (k === "dir") kvmRoot = join(root, "kvm");
  }

  const readOpts: ModuleReadOptions = { sysregs: opts.sysregs, info: opts.info, globals: opts.globals };
  const noModule =
    `the vmtool module is not loaded (no ${join(root, "vmtool")}): load it (insmod kernel/vmtool.ko), ` +
    `or use --source kvm to observe vCPUs through KVM's own debugfs`;
  const noKvm = `no KVM debugfs at ${join(root, "kvm")}: KVM is not loaded (modprobe kvm_intel or kvm_amd)`;
  switch (opts.source) {
    case "vmtool":
      if (!moduleRoot) throw new DebugfsUnavailableError(noModule);
      return new ModuleSource(moduleRoot, readOpts);
    case "kvm":
      if (!kvmRoot) throw new DebugfsUnavailableError(noKvm);
      return new KvmSource(kvmRoot);
    case "auto":
      if (moduleRoot) return new ModuleSource(moduleRoot, readOpts);
      if (kvmRoot) return new KvmSource(kvmRoot);
      throw new DebugfsUnavailableError(
        `neither the vmtool module (${join(root, "vmtool")}) nor KVM (${join(root, "kvm")}) is in debugfs at ${root}`,
      );
  }
}

/** Parse `--source`. */
export function parseSource(text: string): SourceChoice {
  if (text === "vmtool" || text === "kvm" || text === "auto") return text;
  throw new ObserverOptionError(`--source: '${text}' is not one of vmtool, kvm, auto`);
}
