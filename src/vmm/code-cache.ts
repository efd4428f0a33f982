// Loading a bundle of the installed command (scripts/bundle.mjs: the CLI, each thread's script) with V8's code
// cache. Compiling a bundle (V8 pre-parses every function in it) is the longest part of vmtool's own start-up
// after Node's: the CLI's ~1 MB takes ~20 ms on a fast host and over a second under a software CPU, each
// thread's ~110 KB a tenth of that (docs/run.md, "Start-up"). The build writes what V8 made of each bundle next
// to it (FILE.v8cache, from the same Node binary), and V8 then deserializes that instead of parsing. V8 checks
// the cache against the source and its own version and flags: a cache it rejects (another Node, other V8
// flags) costs nothing but the plain compile it replaces.
// Two caches of each bundle: the usual one holds what V8 compiles up front (the top level; every function is
// compiled on its first call), the eager one every function. The eager one is several times the size and takes
// longer to load, so only a long run whose first seconds are cold code, a Linux boot, prefers it
// (src/cli/vmtool.ts); the threads it starts then load theirs too (vcpu-thread.ts passes the preference on).
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname } from "node:path";
import { Script } from "node:vm";
import { startupMark } from "./startup-marks.js";

/** The cache's file, next to the bundle. */
export const cacheFile = (bundle: string): string => `${bundle}.v8cache`;

/** The eager cache's file, next to the bundle. */
export const eagerCacheFile = (bundle: string): string => `${bundle}.eager.v8cache`;

// On the global object, not in a module variable: the installed command's entry and its CLI are two bundles,
// each with its own copy of this module (scripts/bundle.mjs).
const EAGER = Symbol.for("vmtool.eagerCodeCaches");
const slot = globalThis as { [EAGER]?: true };

/** From now on this thread loads bundles with their eager caches, and the threads it starts do too. */
export function preferEagerCaches(): void {
  slot[EAGER] = true;
}

/** Whether preferEagerCaches was called in this thread. */
export const eagerCachesPreferred = (): boolean => slot[EAGER] === true;

/**
 * The bundle's source as one function of CommonJS's five arguments, the form Node's loader compiles too. The
 * build and the load must compile exactly this text: V8 accepts a cache only for the source it was made from.
 * A "#!" first line (the CLI's) is valid only at the very start of a script: it becomes a comment.
 */
export function wrapCommonJs(source: string): string {
  const body = source.startsWith("#!") ? `//${source.slice(2)}` : source;
  return `(function (exports, require, module, __filename, __dirname) {${body}\n})`;
}

/** Compile the wrapped source; with `cachedData`, V8 takes the code from it if it accepts it. */
export function compileBundle(file: string, source: string, cachedData?: Buffer): Script {
  return new Script(wrapCommonJs(source), { filename: file, cachedData });
}

/** The cache in `file`, or undefined when there is none. */
function readCache(file: string): Buffer | undefined {
  try {
    return readFileSync(file);
  } catch {
    return undefined;
  }
}

/** require(file) for a bundle, with its code cache (the eager one first, if preferred) when there is one. */
export function requireBundle(file: string): unknown {
  const eager = eagerCachesPreferred() ? readCache(eagerCacheFile(file)) : undefined;
  const cachedData = eager ?? readCache(cacheFile(file));
  if (cachedData === undefined) return createRequire(file)(file);
  const script = compileBundle(file, readFileSync(file, "utf8"), cachedData);
  const kind = eager ? "eager " : "";
  startupMark(
    script.cachedDataRejected
      ? `${kind}code cache rejected: compiled anew`
      : `compiled from the ${kind}code cache`,
  );
  const fn = script.runInThisContext() as (
    exports: unknown,
    require: NodeJS.Require,
    module: { exports: unknown },
    filename: string,
    dir: string,
  ) => void;
  const mod = { exports: {} as unknown };
  fn.call(mod.exports, mod.exports, createRequire(file), mod, file, dirname(file));
  return mod.exports;
}
