// koffi, loaded without its JavaScript loader. `import koffi from "koffi"` costs ~12 ms per thread here (the
// package's ES modules, a prebuilt-package index that parses node's ELF header to tell glibc from musl,
// deprecation wrappers), and vmtool loads koffi in three threads. Opening the prebuilt addon ourselves with
// process.dlopen costs ~1 ms and gives the same API. Anything unexpected (another platform, musl, a moved
// package layout, a version mismatch) falls back to koffi's own CommonJS entry, so vmtool works wherever
// koffi does. VMTOOL_KOFFI_PACKAGE=1 forces that fallback (to compare, or to rule the fast path out).
import type koffiDefault from "koffi";
import { Module, createRequire } from "node:module";
import { closeSync, existsSync, openSync, readFileSync, readSync, realpathSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

export type Koffi = typeof koffiDefault;

/** Architectures whose koffi binary name carries an ABI suffix (hf/sf, f/d, le/be) that koffi works out. */
const ABI_SUFFIXED = new Set(["arm", "riscv32", "riscv64", "ppc64"]);

/** The dynamic loader named by node's own ELF header (PT_INTERP), or undefined if there is none. */
function elfInterpreter(file: string): string | undefined {
  const fd = openSync(file, "r");
  try {
    const head = Buffer.alloc(4096);
    const n = readSync(fd, head, 0, head.length, 0);
    // 64-bit little-endian ELF only (the platforms the fast path accepts).
    if (n < 64 || head.readUInt32BE(0) !== 0x7f454c46 || head[4] !== 2 || head[5] !== 1) return undefined;
    const phoff = Number(head.readBigUInt64LE(32));
    const phentsize = head.readUInt16LE(54);
    const phnum = head.readUInt16LE(56);
    const table = Buffer.alloc(phentsize * phnum);
    if (readSync(fd, table, 0, table.length, phoff) !== table.length) return undefined;
    for (let o = 0; o + 56 <= table.length; o += phentsize) {
      if (table.readUInt32LE(o) !== 3) continue; // PT_INTERP
      const off = Number(table.readBigUInt64LE(o + 8));
      const size = Number(table.readBigUInt64LE(o + 32));
      const name = Buffer.alloc(size);
      if (readSync(fd, name, 0, size, off) !== size) return undefined;
      return name.toString("latin1").replace(/\0.*$/s, "");
    }
    return undefined;
  } finally {
    closeSync(fd);
  }
}

/** koffi's package folder, found the way Node resolves a bare name (node_modules of each ancestor). */
function findKoffiPackage(from: string): string | undefined {
  for (let dir = from; ; dir = dirname(dir)) {
    if (basename(dir) !== "node_modules") {
      const candidate = join(dir, "node_modules", "koffi");
      if (existsSync(join(candidate, "package.json"))) return candidate;
    }
    if (dirname(dir) === dir) return undefined;
  }
}

function packageVersion(dir: string): unknown {
  return (JSON.parse(readFileSync(join(dir, "package.json"), "utf8")) as { version?: unknown }).version;
}

function loadNative(): Koffi {
  if (process.platform !== "linux") throw new Error(`no fast path on ${process.platform}`);
  if (ABI_SUFFIXED.has(process.arch)) throw new Error(`no fast path on ${process.arch}`);
  const interp = elfInterpreter(process.execPath);
  if (interp === undefined || basename(interp).startsWith("ld-musl-"))
    throw new Error(`node's C library is not glibc (interpreter ${interp ?? "none"})`);
  const koffiDir = findKoffiPackage(dirname(fileURLToPath(import.meta.url)));
  if (koffiDir === undefined) throw new Error("koffi package not found");
  const version = packageVersion(koffiDir);
  const prebuilt = `@koromix/koffi-${process.platform}-${process.arch}`;
  // npm nests the prebuilt package under koffi when it cannot hoist it next to koffi.
  const prebuiltDir = [join(koffiDir, "node_modules", prebuilt), join(dirname(koffiDir), prebuilt)].find(
    (d) => existsSync(join(d, "package.json")),
  );
  if (prebuiltDir === undefined) throw new Error(`${prebuilt} not found`);
  if (packageVersion(prebuiltDir) !== version) throw new Error(`${prebuilt} is not koffi ${String(version)}`);
  const binary = realpathSync(join(prebuiltDir, `linux_${process.arch}`, "koffi.node"));
  // Through require's cache, so that the addon is never opened twice in one thread: a second dlopen would
  // give a second koffi instance (its own types and libraries), and a later `import "koffi"` (koffi's own
  // loader requires this same file) must get this one.
  const cache = createRequire(import.meta.url).cache;
  const cached = cache[binary];
  let native: Koffi;
  if (cached?.loaded) native = cached.exports as Koffi;
  else {
    const mod = new Module(binary);
    mod.filename = binary;
    process.dlopen(mod, binary);
    mod.loaded = true;
    cache[binary] = mod;
    native = mod.exports as Koffi;
  }
  if (native.version !== version)
    throw new Error(`${binary} is version ${native.version}, not ${String(version)}`);
  return native;
}

function load(): { koffi: Koffi; path: "native" | "package"; why?: string } {
  if (process.env.VMTOOL_KOFFI_PACKAGE !== "1") {
    try {
      return { koffi: loadNative(), path: "native" };
    } catch (e) {
      return { koffi: loadPackage(), path: "package", why: (e as Error).message };
    }
  }
  return { koffi: loadPackage(), path: "package", why: "VMTOOL_KOFFI_PACKAGE=1" };
}

function loadPackage(): Koffi {
  return createRequire(import.meta.url)("koffi") as Koffi;
}

const loaded = load();

/** The koffi module object, the same API as `import koffi from "koffi"`. */
const koffi: Koffi = loaded.koffi;
export default koffi;
/** How koffi was loaded in this thread: "native" (the addon opened directly) or "package" (koffi's loader). */
export const koffiLoadPath = loaded.path;
/** Why the fast path was not taken (undefined when it was). */
export const koffiFallbackReason = loaded.why;
