#!/usr/bin/env node
// Bundles the compiled modules into the few files the installed `vmtool` command loads (docs/run.md,
// "Start-up"): loading ~60 ES modules cost more than their code.
// Input: tsc's output (OUTDIR/src/**.js), so that each module keeps the place it has there.
//   OUTDIR/bundle/vmtool.cjs       the `vmtool` command (package.json "bin"): a tiny entry that starts the
//                                  vCPU thread of `vmtool run`, then loads the CLI
//   OUTDIR/bundle/cli.cjs          the command line interface and every layer it loads (lazily evaluated)
//   OUTDIR/bundle/*.v8cache        V8's code cache of cli.cjs and of each thread's script
//                                  (src/vmm/code-cache.ts), and *.eager.v8cache, each with every function compiled
//   OUTDIR/bundle/vcpu-worker.cjs  a vCPU thread
//   OUTDIR/bundle/io-worker.cjs    the I/O worker
//   OUTDIR/bundle/thread.cjs       what a thread starts: loads vcpu-worker.cjs or io-worker.cjs
// Why CommonJS: the sources are ES modules, but in Node 20 loading an ES module goes through the ESM loader
// (asynchronous jobs, URL resolution, linking), ~20 ms more per short run on the main thread and ~5 ms more
// per worker here than the same code as one CommonJS file. The sources therefore avoid top-level await.
// Why two files for the command: the entry is parsed in a few hundred microseconds, so the vCPU thread starts
// ~10 ms earlier than if the whole CLI had to be parsed first.
// Usage: node scripts/bundle.mjs [OUTDIR]     (default dist; run after tsc into the same folder)
import { build } from "esbuild";
import { spawnSync } from "node:child_process";
import { chmodSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join, relative, resolve, sep } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
const outDir = resolve(ROOT, process.argv[2] ?? "dist");
const srcDir = join(outDir, "src");
const bundleDir = join(outDir, "bundle");

// Modules find files next to themselves through import.meta.url (the demo guest, data/, the threads' scripts,
// exit-hook modules loaded by URL in the vCPU thread): inside a bundle it would name the bundle, and CommonJS
// has no import.meta at all. Each module's import.meta.url therefore becomes its own compiled file's URL,
// relative to the bundle's file (so the package may still be moved or installed anywhere).
const ownUrl = {
  name: "own-import-meta-url",
  setup(b) {
    b.onLoad({ filter: /\.js$/ }, (args) => {
      if (!args.path.startsWith(srcDir + sep)) return undefined;
      const rel = relative(bundleDir, args.path).split(sep).join("/");
      const code = readFileSync(args.path, "utf8").replaceAll(
        "import.meta.url",
        `new URL(${JSON.stringify(rel)}, __vmtoolBundleUrl).href`,
      );
      return { contents: code, loader: "js", resolveDir: dirname(args.path) };
    });
  },
};

const common = {
  bundle: true,
  platform: "node",
  format: "cjs",
  target: "node20",
  plugins: [ownUrl],
  logLevel: "warning",
  banner: { js: 'const __vmtoolBundleUrl = require("node:url").pathToFileURL(__filename).href;' },
  // The threads' scripts, relative to src/vmm/ (vcpu-thread.ts and machine.ts start them from there).
  define: {
    VMTOOL_THREAD_BUNDLES: JSON.stringify(relative(join(srcDir, "vmm"), bundleDir).split(sep).join("/")),
  },
};

rmSync(bundleDir, { recursive: true, force: true });
// Each thread's script is one file of its own (a new thread loads nothing it does not run), started through a
// tiny entry that loads it with its code cache (src/vmm/thread-entry.ts).
for (const name of ["vcpu-worker", "io-worker", "thread-entry"])
  await build({
    ...common,
    entryPoints: [join(srcDir, "vmm", `${name}.js`)],
    outfile: join(bundleDir, `${name === "thread-entry" ? "thread" : name}.cjs`),
  });
// The CLI: everything in one file; the layers it imports lazily (loaders, VM, other subcommands) are only
// evaluated when used.
await build({
  ...common,
  entryPoints: [join(srcDir, "cli", "main.js")],
  outfile: join(bundleDir, "cli.cjs"),
});
// V8's code cache of the CLI and of each thread's script, loaded with them (src/vmm/code-cache.ts): made by this
// Node binary, as `npm install` and `npm run build` run it.
const { cacheFile, compileBundle } = await import(join(srcDir, "vmm", "code-cache.js"));
const cliBundle = join(bundleDir, "cli.cjs");
const cachedBundles = [cliBundle, join(bundleDir, "vcpu-worker.cjs"), join(bundleDir, "io-worker.cjs")];
for (const f of cachedBundles)
  writeFileSync(cacheFile(f), compileBundle(f, readFileSync(f, "utf8")).createCachedData());
// The eager caches (every function compiled), for `vmtool run --kernel` (src/vmm/code-cache.ts). V8 stamps a
// cache with a hash of its flags and rejects one made under others: --no-lazy is set only while the sources
// compile, and the usual --lazy is back when the caches are written. In a process of its own: this one's V8
// would hand back the scripts it compiled above (its in-memory compilation cache), lazy functions and all.
const eager = spawnSync(
  process.execPath,
  [
    "--input-type=module",
    "-e",
    `import { readFileSync, writeFileSync } from "node:fs";
import { setFlagsFromString } from "node:v8";
const [, code, ...bundles] = process.argv;
const { compileBundle, eagerCacheFile } = await import(code);
setFlagsFromString("--no-lazy");
const scripts = bundles.map((b) => compileBundle(b, readFileSync(b, "utf8")));
setFlagsFromString("--lazy");
bundles.forEach((b, i) => writeFileSync(eagerCacheFile(b), scripts[i].createCachedData()));`,
    pathToFileURL(join(srcDir, "vmm", "code-cache.js")).href,
    ...cachedBundles,
  ],
  { stdio: "inherit" },
);
if (eager.status !== 0) throw new Error(`bundle: the eager code caches: status ${eager.status}`);
// The entry: its own small modules, and the CLI as a file it loads (never bundled into it).
const cliExternal = {
  name: "cli-external",
  setup(b) {
    b.onResolve({ filter: /^\.\/main\.js$/ }, () => ({ path: "./cli.cjs", external: true }));
  },
};
await build({
  ...common,
  plugins: [ownUrl, cliExternal],
  // The dynamic import() of main.js is the unbundled path only (dist/src/cli/vmtool.js run as is).
  supported: { "dynamic-import": false },
  define: {
    ...common.define,
    VMTOOL_CLI_BUNDLE: JSON.stringify(relative(join(srcDir, "cli"), cliBundle).split(sep).join("/")),
  },
  entryPoints: [join(srcDir, "cli", "vmtool.js")],
  outfile: join(bundleDir, "vmtool.cjs"),
});
chmodSync(join(bundleDir, "vmtool.cjs"), 0o755);
