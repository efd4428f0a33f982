// The layers below the CLI never import from it (errors carry no exit status; printing and statuses are the
// CLI's), and each imports only from layers below it. Read from the sources, so a new import is caught at once.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, readdirSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { ROOT } from "../helpers/paths.js";

const SRC = join(ROOT, "src");

function sources(dir: string, out: string[] = []): string[] {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) sources(p, out);
    else if (name.endsWith(".ts")) out.push(p);
  }
  return out;
}

/** The top folder under src/ of every module a file imports ("errors.ts" for src/errors.ts). */
function importedLayers(file: string): string[] {
  const text = readFileSync(file, "utf8");
  const out: string[] = [];
  for (const m of text.matchAll(/(?:from|import)\s*\(?\s*"(\.{1,2}\/[^"]+)"/g)) {
    const target = relative(SRC, resolve(dirname(file), m[1]));
    out.push(target.split("/")[0].replace(/\.js$/, ".ts"));
  }
  return out;
}

const ALLOWED: Record<string, string[]> = {
  files: ["files", "kvm", "errors.ts", "format.ts"],
  backends: ["backends", "files", "devices", "kvm", "errors.ts", "format.ts"],
  loader: ["loader", "files", "memory", "vm", "kvm", "errors.ts", "format.ts"],
  arch: ["arch", "files", "errors.ts", "format.ts"],
  host: ["host", "arch", "files", "kvm", "errors.ts", "format.ts"],
  observer: ["observer", "arch", "files", "errors.ts", "format.ts"],
};

for (const [layer, allowed] of Object.entries(ALLOWED)) {
  test(`src/${layer} imports only from ${allowed.join(", ")}`, () => {
    const files = sources(join(SRC, layer));
    assert.ok(files.length > 0, `src/${layer} has no sources`);
    const bad = files.flatMap((f) =>
      importedLayers(f)
        .filter((l) => !allowed.includes(l))
        .map((l) => `${relative(ROOT, f)} imports from src/${l}`),
    );
    assert.deepEqual(bad, []);
  });
}
