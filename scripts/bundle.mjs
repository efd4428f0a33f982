#!/usr/bin/env node
// Bundles the compiled CLI into one file, and the vCPU thread's script into another, so that `vmtool` loads
// 2 files instead of ~60 modules (about half of vmtool's own start-up time: docs/run.md, "Start-up").
// Input: tsc's output (OUTDIR/src/**.js), so that each module keeps the place it has there.
//   OUTDIR/bundle/vmtool.js       the `vmtool` command (package.json "bin")
//   OUTDIR/bundle/vcpu-worker.js  the vCPU thread, started by the bundled CLI
// koffi stays outside (a native addon that finds its binary at run time).
// Usage: node scripts/bundle.mjs [OUTDIR]     (default dist; run after tsc into the same folder)
import { build } from "esbuild";
import { chmodSync, readFileSync } from "node:fs";
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

await build({
  ...common,
  entryPoints: [join(srcDir, "vmm", "vcpu-worker.js")],
  outfile: join(bundleDir, "vcpu-worker.js"),
});
const cli = join(bundleDir, "vmtool.js");
await build({
  ...common,
  entryPoints: [join(srcDir, "cli", "main.js")],
  outfile: cli,
  // vcpu-thread.ts starts this file instead of the separate modules (relative to vcpu-thread's own URL).
  define: {
    VMTOOL_WORKER_BUNDLE: JSON.stringify(
      relative(join(srcDir, "vmm"), join(bundleDir, "vcpu-worker.js")).split(sep).join("/"),
    ),
  },
});
chmodSync(cli, 0o755);
