// The dashboard's files, read once at start into memory (with their gzip): the page, its script and style from
// the package's web/ folder, and uPlot (the chart library, an npm dependency) from its own package. Nothing is
// fetched from elsewhere: the page works on a machine without internet.
import { existsSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";
import { VmtoolError } from "../errors.js";

export interface Asset {
  type: string;
  body: Buffer;
  gzip: Buffer;
}

const TYPES: Readonly<Record<string, string>> = {
  html: "text/html; charset=utf-8",
  js: "text/javascript; charset=utf-8",
  css: "text/css; charset=utf-8",
};

/** The package's web/ folder: the first folder above this module that holds web/index.html. */
export function webDir(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 8; i++) {
    if (existsSync(join(dir, "web", "index.html"))) return join(dir, "web");
    dir = dirname(dir);
  }
  throw new VmtoolError("vmtool's web/ folder (the dashboard) was not found next to the installed code");
}

/** URL path -> asset. */
export function loadAssets(dir = webDir()): Map<string, Asset> {
  const req = createRequire(import.meta.url);
  const files: Array<[string, string]> = [
    ["/index.html", join(dir, "index.html")],
    ["/assets/app.js", join(dir, "app.js")],
    ["/assets/app.css", join(dir, "app.css")],
    ["/assets/uPlot.iife.min.js", req.resolve("uplot/dist/uPlot.iife.min.js")],
    ["/assets/uPlot.min.css", req.resolve("uplot/dist/uPlot.min.css")],
  ];
  const out = new Map<string, Asset>();
  for (const [path, file] of files) {
    const body = readFileSync(file);
    out.set(path, { type: TYPES[file.slice(file.lastIndexOf(".") + 1)], body, gzip: gzipSync(body) });
  }
  return out;
}
