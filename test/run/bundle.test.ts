// The bundled `vmtool` command (package.json "bin": scripts/bundle.mjs packs the compiled modules into
// bundle/vmtool.cjs, cli.cjs and one script per thread): the same guests as the compiled modules, the same
// output and statuses, files found next to the original modules (the demo guest), and the start-up timeline
// marks. The bundle is built here into a package folder of its own, outside the repository, so that the tests
// never replace the installed command (dist/bundle/) and the package is shown to work where it is moved.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawnSync, type SpawnSyncReturns } from "node:child_process";
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CLI, DIST, ROOT } from "../helpers/paths.js";
import { guests } from "../helpers/guests.js";
import { craftElf, pvhNote } from "../linux/pvh-elf.js";

/** The package folder: its own copy of tsc's output (dist/src), guest/, data/ and node_modules linked in. */
const PKG = mkdtempSync(join(tmpdir(), "vmtool-bundle-"));
const BUNDLE = join(PKG, "dist", "bundle", "vmtool.cjs");

function run(cli: string, args: string[], env: NodeJS.ProcessEnv = {}): SpawnSyncReturns<string> {
  return spawnSync(process.execPath, [cli, ...args], {
    encoding: "utf8",
    timeout: 60_000,
    env: { ...process.env, VMTOOL_STARTUP_MARKS: "", ...env },
  });
}

describe("the bundled vmtool command", () => {
  // Built here from this output folder's compiled modules, so that it is never older than they are. The
  // compiled modules are copied, not linked: the bundler would follow a link back to DIST, and each module's
  // import.meta.url must name its file inside the package.
  before(() => {
    mkdirSync(join(PKG, "dist"));
    cpSync(join(DIST, "src"), join(PKG, "dist", "src"), { recursive: true });
    for (const dir of ["guest", "data", "node_modules"]) symlinkSync(join(ROOT, dir), join(PKG, dir));
    execFileSync(process.execPath, [join(ROOT, "scripts", "bundle.mjs"), join(PKG, "dist")], {
      stdio: "pipe",
    });
  });
  after(() => rmSync(PKG, { recursive: true, force: true }));

  test("runs the built-in demo guest exactly as the compiled modules do", () => {
    const a = run(BUNDLE, ["run"]);
    const b = run(CLI, ["run"]);
    assert.equal(a.status, 0, a.stderr);
    assert.match(a.stdout, /Hello from vmtool's demo guest/);
    assert.equal(a.stdout, b.stdout);
    assert.equal(a.stderr, "");
  });

  test("halt (0), exit port ((V << 1) | 1) and a triple fault (4, register dump) end with their statuses", () => {
    const g = guests();
    assert.equal(run(BUNDLE, ["run", g.halt]).status, 0);
    // pit-ticks without --pit finds no PIT, says so and returns 1, which its start file writes to port 0xF4.
    const exitPort = run(BUNDLE, ["run", g.pitTicks]);
    assert.equal(exitPort.status, (1 << 1) | 1, exitPort.stderr);
    assert.match(exitPort.stdout, /PIT/);
    assert.equal(exitPort.stderr, "");
    const f = run(BUNDLE, ["run", g.tripleFault]);
    assert.equal(f.status, 4);
    assert.match(f.stderr, /guest fault: triple fault/);
    assert.match(f.stderr, /rip=/i);
  });

  test("--trace and --stats --json reach the bundled vCPU thread", () => {
    const r = run(BUNDLE, ["run", "--trace", "--json", guests().helloReal]);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /hello from real mode/);
    assert.match(r.stderr, /^#1 IO port=0xe9 size=1 out data=0x68 /m);
    const json = JSON.parse(r.stderr.trim().split("\n").at(-1)!) as {
      exits: number;
      byAddress: { key: string }[];
    };
    assert.ok(json.exits > 10);
    assert.ok(
      json.byAddress.some((a) => a.key === "port 0xe9 out"),
      JSON.stringify(json),
    );
  });

  test("bad input: one error line, exit 2; --help exits 0", () => {
    const r = run(BUNDLE, ["run", "/nonexistent/guest.bin"]);
    assert.equal(r.status, 2);
    assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
    assert.match(r.stderr, /^vmtool: error: .*guest\.bin/);
    const h = run(BUNDLE, ["run", "--help"]);
    assert.equal(h.status, 0);
    assert.match(h.stdout, /Usage: vmtool run/);
  });

  test("the early vCPU thread: a wrong guess of its options is replaced, a failing command does not hang", () => {
    // "--trace" here is the value of --cmdline: the thread started with tracing is ended and a right one runs.
    const r = run(BUNDLE, ["run", "--cmdline", "--trace", guests().helloReal]);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /hello from real mode/);
    assert.equal(r.stderr, "");
    for (const cli of [BUNDLE, CLI]) {
      const bad = run(cli, ["run", "--mem", "1", guests().halt]);
      assert.equal(bad.status, 2);
      assert.match(bad.stderr, /^vmtool: error: --mem/);
      const missing = run(cli, ["run", "--stats", "/nonexistent/guest.bin"]);
      assert.equal(missing.status, 2);
      assert.equal(missing.stderr.trim().split("\n").length, 1, missing.stderr);
    }
  });

  test("VMTOOL_STARTUP_MARKS=1 prints a timeline from both threads, in order; without it nothing", () => {
    const timeline = (args: string[]) => {
      const r = run(BUNDLE, args, { VMTOOL_STARTUP_MARKS: "1" });
      assert.equal(r.status, 0, r.stderr);
      const marks = r.stderr
        .trim()
        .split("\n")
        .map((l) => /^startup: +([\d.]+) (main|vcpu) (.+)$/.exec(l));
      assert.ok(
        marks.every((m) => m !== null),
        r.stderr,
      );
      const seen = marks.map((m) => `${m[2]} ${m[3]}`);
      const at = (what: string) => Number(marks[seen.indexOf(what)][1]);
      return { seen, at, text: r.stderr };
    };
    // Two vCPUs: each has its thread, the first started before the command line is parsed.
    const two = timeline(["run", "--cpus", "2", guests().halt]);
    for (const want of [
      "main vCPU thread spawned",
      "main VM created",
      "main options checked",
      "main vCPUs created",
      "vcpu vCPU received",
      "vcpu first KVM_RUN",
      "main vCPU thread's result received",
      "main VM closed",
      "main process exit",
    ])
      assert.ok(two.seen.includes(want), `${want} missing in:\n${two.text}`);
    // One clock for both threads: the vCPU thread receives its vCPU after the main thread created it.
    assert.ok(two.at("vcpu vCPU received") >= two.at("main vCPUs created"), two.text);
    // The order that keeps a short run short (docs/run.md, "Start-up"): the thread before the CLI is even
    // loaded, the VM before the remaining options and the image are checked.
    assert.ok(two.at("main vCPU thread spawned") < two.at("main command line interface loaded"), two.text);
    assert.ok(two.at("main VM created") <= two.at("main options checked"), two.text);
    assert.ok(two.at("main process exit") >= two.at("vcpu first KVM_RUN"), two.text);
    // One vCPU that nothing may park: its loop runs on the main thread, and no thread is started.
    const one = timeline(["run", guests().halt]);
    for (const want of ["main vCPUs created", "main first KVM_RUN", "main vCPU thread's result received"])
      assert.ok(one.seen.includes(want), `${want} missing in:\n${one.text}`);
    assert.ok(!one.seen.some((s) => s.startsWith("vcpu ") || s === "main vCPU thread spawned"), one.text);
    assert.ok(one.at("main first KVM_RUN") >= one.at("main vCPUs created"), one.text);
    assert.equal(run(BUNDLE, ["run", guests().halt]).stderr, "");
  });

  test("the CLI and both threads' scripts load from their V8 code caches; a bad or missing cache is only slower", () => {
    const compiled = (r: SpawnSyncReturns<string>) =>
      r.stderr
        .split("\n")
        .filter((l) => / (main|vcpu) (compiled from the code cache|code cache rejected)/.test(l));
    // The demo guest writes to COM1, which on two vCPUs is the I/O worker's: three threads start beside main.
    const r = run(BUNDLE, ["run", "--cpus", "2"], { VMTOOL_STARTUP_MARKS: "1" });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /I\/O worker started/);
    const marks = compiled(r);
    assert.equal(marks.length, 4, r.stderr);
    assert.ok(
      marks.every((l) => l.endsWith("compiled from the code cache")),
      r.stderr,
    );
    const demo = r.stdout;
    const cache = join(PKG, "dist", "bundle", "cli.cjs.v8cache");
    const good = readFileSync(cache);
    try {
      writeFileSync(cache, Buffer.from("not a code cache"));
      const bad = run(BUNDLE, ["run", "--cpus", "2"], { VMTOOL_STARTUP_MARKS: "1" });
      assert.equal(bad.status, 0, bad.stderr);
      assert.equal(bad.stdout, demo);
      assert.ok(
        compiled(bad).some((l) => / main code cache rejected/.test(l)),
        bad.stderr,
      );
      rmSync(cache);
      const none = run(BUNDLE, ["run", "--cpus", "2"], { VMTOOL_STARTUP_MARKS: "1" });
      assert.equal(none.status, 0, none.stderr);
      assert.equal(none.stdout, demo);
      assert.ok(!compiled(none).some((l) => / main /.test(l)), none.stderr);
    } finally {
      writeFileSync(cache, good);
    }
  });

  test("`run --kernel` loads the eager code caches, in the CLI and in every thread; a bad or missing one is only slower", () => {
    const bundleDir = join(PKG, "dist", "bundle");
    const eager = join(bundleDir, "cli.cjs.eager.v8cache");
    const good = readFileSync(eager);
    // Made with every function compiled: several times the usual cache (the top level only).
    for (const name of ["cli", "vcpu-worker", "io-worker"]) {
      const usual = readFileSync(join(bundleDir, `${name}.cjs.v8cache`)).length;
      const all = readFileSync(join(bundleDir, `${name}.cjs.eager.v8cache`)).length;
      assert.ok(all > 2 * usual, `${name}: eager cache ${all} bytes, usual ${usual}`);
    }
    // A PVH kernel of three instructions: `mov $5, %al; out %al, $0xf4; hlt`, and the banner the summary names.
    const kernel = join(PKG, "tiny.elf");
    const code = Buffer.from([0xb0, 0x05, 0xe6, 0xf4, 0xf4]);
    const banner = Buffer.from("\0Linux version 9.9.9-test (nobody@nowhere) #1 SMP\0");
    writeFileSync(
      kernel,
      craftElf({
        loads: [{ paddr: 0x10_0000, data: Buffer.concat([code, banner]) }],
        notes: [pvhNote(0x10_0000)],
      }),
    );
    // Two vCPUs: a vCPU thread each, and the I/O worker a kernel's platform brings.
    const args = ["run", "--kernel", kernel, "--mem", "16M", "--cpus", "2"];
    const marks = (r: SpawnSyncReturns<string>) =>
      r.stderr.split("\n").filter((l) => / (compiled from the|code cache rejected)/.test(l));
    const withoutMarks = (r: SpawnSyncReturns<string>) =>
      r.stderr
        .split("\n")
        .filter((l) => !l.startsWith("startup:"))
        .join("\n");
    const plain = run(BUNDLE, args);
    assert.equal(plain.status, 11, plain.stderr);
    assert.match(plain.stderr, /^vmtool: Linux 9\.9\.9-test, PVH, 16 MiB, 2 vCPUs/);
    const r = run(BUNDLE, args, { VMTOOL_STARTUP_MARKS: "1" });
    assert.equal(r.status, 11, r.stderr);
    assert.equal(withoutMarks(r), plain.stderr);
    // The CLI, two vCPU threads and the I/O worker.
    assert.equal(marks(r).length, 4, r.stderr);
    assert.ok(
      marks(r).every((l) => l.endsWith("compiled from the eager code cache")),
      r.stderr,
    );
    // Other commands keep the usual caches.
    const demo = run(BUNDLE, ["run", "--cpus", "2"], { VMTOOL_STARTUP_MARKS: "1" });
    assert.equal(demo.status, 0, demo.stderr);
    assert.ok(
      marks(demo).length === 4 && marks(demo).every((l) => l.endsWith("compiled from the code cache")),
      demo.stderr,
    );
    try {
      writeFileSync(eager, Buffer.from("not a code cache"));
      const bad = run(BUNDLE, args, { VMTOOL_STARTUP_MARKS: "1" });
      assert.match(bad.stderr, / main eager code cache rejected: compiled anew/);
      assert.equal(bad.status, 11);
      assert.equal(withoutMarks(bad), plain.stderr);
      rmSync(eager);
      const none = run(BUNDLE, args, { VMTOOL_STARTUP_MARKS: "1" });
      assert.match(none.stderr, / main compiled from the code cache/);
      assert.equal(none.status, 11);
      assert.equal(withoutMarks(none), plain.stderr);
    } finally {
      writeFileSync(eager, good);
    }
  });
});
