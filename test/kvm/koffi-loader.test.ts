// src/kvm/koffi.ts: koffi's addon opened directly (the fast path) and koffi's own loader as the fallback. Each
// case runs in a fresh `node`, since the choice is made once per thread when the module is first evaluated.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import {
  copyFileSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { DIST, ROOT } from "../helpers/paths.js";

const KOFFI_MODULE = join(DIST, "src", "kvm", "koffi.js");
const LIBC_MODULE = join(DIST, "src", "kvm", "libc.js");
const KOFFI_VERSION = (
  JSON.parse(readFileSync(join(ROOT, "node_modules", "koffi", "package.json"), "utf8")) as { version: string }
).version;

interface Report {
  path: string;
  why: string | null;
  version: string;
  getpid: number;
  pid: number;
}

/** Runs an ES module script in a new node and returns the JSON it prints. */
function runScript(script: string, env: Record<string, string> = {}): Report {
  const r = spawnSync(process.execPath, ["--input-type=module", "-e", script], {
    encoding: "utf8",
    env: { ...process.env, VMTOOL_KOFFI_PACKAGE: "", ...env },
  });
  assert.equal(r.status, 0, `child failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as Report;
}

/** Loads `koffiUrl`, then calls getpid() through a library bound with it, and reports. */
function reportScript(koffiUrl: string): string {
  return `
    const k = await import(${JSON.stringify(koffiUrl)});
    const getpid = k.default.load("libc.so.6").func("int getpid()");
    console.log(JSON.stringify({ path: k.koffiLoadPath, why: k.koffiFallbackReason ?? null,
      version: k.default.version, getpid: getpid(), pid: process.pid }));`;
}

test("the fast path opens koffi's addon directly, and libc calls work through it", () => {
  const script = `
    const k = await import(${JSON.stringify(pathToFileURL(KOFFI_MODULE).href)});
    const libc = await import(${JSON.stringify(pathToFileURL(LIBC_MODULE).href)});
    console.log(JSON.stringify({ path: k.koffiLoadPath, why: k.koffiFallbackReason ?? null,
      version: k.default.version, getpid: libc.getpid(), pid: process.pid }));`;
  const r = runScript(script);
  assert.deepEqual(r, { path: "native", why: null, version: KOFFI_VERSION, getpid: r.pid, pid: r.pid });
});

test("VMTOOL_KOFFI_PACKAGE=1 forces koffi's own loader, which works the same", () => {
  const r = runScript(reportScript(pathToFileURL(KOFFI_MODULE).href), { VMTOOL_KOFFI_PACKAGE: "1" });
  assert.deepEqual(r, {
    path: "package",
    why: "VMTOOL_KOFFI_PACKAGE=1",
    version: KOFFI_VERSION,
    getpid: r.pid,
    pid: r.pid,
  });
});

test("the addon is opened once per thread: koffi's own loader afterwards gets the same module object", () => {
  const script = `
    const k = await import(${JSON.stringify(pathToFileURL(KOFFI_MODULE).href)});
    const pkg = (await import("koffi")).default;
    console.log(JSON.stringify({ path: k.koffiLoadPath, why: String(k.default === pkg), version: pkg.version,
      getpid: pkg.load("libc.so.6").func("int getpid()")(), pid: process.pid }));`;
  // Run from the repository root so that the bare "koffi" resolves.
  const child = spawnSync(process.execPath, ["--input-type=module", "-e", script], {
    encoding: "utf8",
    cwd: ROOT,
    env: { ...process.env, VMTOOL_KOFFI_PACKAGE: "" },
  });
  assert.equal(child.status, 0, child.stderr);
  const r = JSON.parse(child.stdout) as Report;
  assert.equal(r.path, "native");
  assert.equal(r.why, "true", "koffi's loader opened a second instance");
  assert.equal(r.getpid, r.pid);
});

test("a worker thread takes the fast path too", () => {
  const workerUrl = `data:text/javascript,${encodeURIComponent(reportScript(pathToFileURL(KOFFI_MODULE).href))}`;
  const script = `
    import { Worker } from "node:worker_threads";
    new Worker(new URL(${JSON.stringify(workerUrl)})).on("exit", (code) => (process.exitCode = code));`;
  const r = runScript(script);
  assert.equal(r.path, "native");
  assert.equal(r.getpid, r.pid);
});

/** A copy of koffi.js in a temporary folder whose node_modules holds what `layout` puts there. */
function withMovedLayout(layout: (nodeModules: string) => void, check: (r: Report) => void): void {
  const dir = mkdtempSync(join(tmpdir(), "vmtool-koffi-"));
  try {
    const nodeModules = join(dir, "node_modules");
    mkdirSync(nodeModules);
    // koffi itself is there (a link to the installed package), so its own loader still works.
    symlinkSync(join(ROOT, "node_modules", "koffi"), join(nodeModules, "koffi"));
    layout(nodeModules);
    const copy = join(dir, "lib", "koffi.js");
    mkdirSync(join(dir, "lib"));
    copyFileSync(KOFFI_MODULE, copy);
    writeFileSync(join(dir, "package.json"), '{"type":"module"}');
    check(runScript(reportScript(pathToFileURL(copy).href)));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test("a layout without the prebuilt package next to koffi falls back to koffi's loader", () => {
  withMovedLayout(
    () => {},
    (r) => {
      assert.equal(r.path, "package");
      assert.match(r.why ?? "", /@koromix\/koffi-linux-\w+ not found/);
      assert.equal(r.version, KOFFI_VERSION);
      assert.equal(r.getpid, r.pid);
    },
  );
});

test("a prebuilt package of another version is not opened: fallback", () => {
  withMovedLayout(
    (nodeModules) => {
      const real = join(ROOT, "node_modules", "@koromix", `koffi-linux-${process.arch}`);
      const fake = join(nodeModules, "@koromix", `koffi-linux-${process.arch}`);
      mkdirSync(fake, { recursive: true });
      writeFileSync(join(fake, "package.json"), '{"name":"fake","version":"0.0.1"}');
      symlinkSync(join(real, `linux_${process.arch}`), join(fake, `linux_${process.arch}`));
    },
    (r) => {
      assert.equal(r.path, "package");
      assert.match(r.why ?? "", /is not koffi /);
      assert.equal(r.version, KOFFI_VERSION);
      assert.equal(r.getpid, r.pid);
    },
  );
});
