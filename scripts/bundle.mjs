#!/usr/bin/env node
// Bundles the compiled CLI into one file, and the vCPU thread's script into another, so that `vmtool` loads
// a few files instead of ~60 modules (about half of vmtool's own start-up time: docs/run.md, "Start-up").
// Input: tsc's output (OUTDIR/src/**.js), so that each module keeps the place it has there.
//   OUTDIR/bundle/vmtool.js       the `vmtool` command (package.json "bin"), and its lazily loaded chunks
//   OUTDIR/bundle/vcpu-worker.js  a vCPU thread, started by the bundled command
//   OUTDIR/bundle/io-worker.js    the I/O worker, started by the bundled command
// koffi stays outside (a native addon that finds its binary at run time).
// Usage: node scripts/bundle.mjs [OUTDIR]     (default dist; run after tsc into the same folder)
import { build } from "esbuild";
import { chmodSync, readFileSync, rmSync } from "node:fs";
import { dirname, join, relative, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
const outDir = resolve(ROOT, process.argv[2] ?? "dist");
const srcDir = join(outDir, "src");
const bundleDir = join(outDir, "bundle");

// Modules find files next to themselves through import.meta.url (the demo guest, data/, exit-hook modules
// loaded by URL in the vCPU thread): inside a bundle it would name the bundle. Each module's
// import.meta.url therefore becomes its own compiled file's URL, relative to the bundle (so the package
// may still be moved or installed anywhere).
const ownUrl = {
  name: "own-import-meta-url",
  setup(b) {
    b.onLoad({ filter: /\.js$/ }, (args) => {
      if (!args.path.startsWith(srcDir + sep)) return undefined;
      const rel = relative(bundleDir, args.path).split(sep).join("/");
      const code = readFileSync(args.path, "utf8").replaceAll(
        "import.meta.url",
        `new URL(${JSON.stringify(rel)}, import.meta.url).href`,
      );
      return { contents: code, loader: "js", resolveDir: dirname(args.path) };
    });
  },
};

const common = {
  bundle: true,
  platform: "node",
  format: "esm",
  target: "node20",
  external: ["koffi"],
  plugins: [ownUrl],
  logLevel: "warning",
  // commander and cli-table3 are CommonJS: their require() of Node's built-in modules needs a real require.
  banner: {
    js: 'import { createRequire as __vmtoolRequire } from "node:module"; const require = __vmtoolRequire(import.meta.url);',
  },
};

rmSync(bundleDir, { recursive: true, force: true });
// Each thread's script is one file of its own (a new thread loads nothing it does not run).
for (const name of ["vcpu-worker", "io-worker"])
  await build({
    ...common,
    entryPoints: [join(srcDir, "vmm", `${name}.js`)],
    outfile: join(bundleDir, `${name}.js`),
  });
// The command: the modules every subcommand needs in vmtool.js, each lazily imported layer (the loaders, the
// VM, the stats tables, the other subcommands' work) in a chunk of its own, loaded only when used.
await build({
  ...common,
  entryPoints: { vmtool: join(srcDir, "cli", "main.js") },
  outdir: bundleDir,
  splitting: true,
  chunkNames: "[name]-[hash]",
  // The threads' scripts, relative to src/vmm/ (vcpu-thread.ts and machine.ts start them from there).
  define: {
    VMTOOL_THREAD_BUNDLES: JSON.stringify(relative(join(srcDir, "vmm"), bundleDir).split(sep).join("/")),
  },
});
chmodSync(join(bundleDir, "vmtool.js"), 0o755);
