// `vmtool vmx` for real: this machine has no VMX (AMD under PVM) and must say so cleanly; saved values decode;
// bad --msr-file contents give one error line and exit 2; the module source reads a debugfs-shaped folder
// (a stand-in for a loaded vmtool.ko, which this kernel cannot load).
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, writeFileSync, mkdirSync, rmSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CLI, ROOT } from "../helpers/paths.js";

// A bound on every run: a FIFO or /dev/zero as --msr-file once blocked or ate memory until killed.
const vmtool = (...args: string[]) =>
  spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8", timeout: 20_000, killSignal: "SIGKILL" });
const fixture = (name: string) => join(ROOT, "test", "arch", "fixtures", name);
const tmp = mkdtempSync(join(tmpdir(), "vmtool-vmx-"));
test.after(() => rmSync(tmp, { recursive: true, force: true }));

const hasVmx = /\bvmx\b/.test(readFileSync("/proc/cpuinfo", "utf8"));

test(
  "no VMX on this machine: one line, exit 6, and JSON says vmx:false with each source's reason",
  { skip: hasVmx },
  () => {
    const r = vmtool("vmx", "--debugfs", join(tmp, "no-debugfs"));
    assert.equal(r.status, 6);
    assert.equal(r.stdout, "");
    assert.equal(r.stderr.trim().split("\n").length, 1);
    assert.match(r.stderr, /^vmtool: no VMX: this CPU \(\w+\) does not report VMX/);
    const j = vmtool("vmx", "--json", "--debugfs", join(tmp, "no-debugfs"));
    assert.equal(j.status, 6);
    const out = JSON.parse(j.stdout);
    assert.equal(out.vmx, false);
    assert.equal(out.source, null);
    assert.equal(out.tried.length, 3);
    // Each explicit source gives its own one-line reason.
    for (const s of ["module", "msr", "kvm"]) {
      const e = vmtool("vmx", "--source", s, "--debugfs", join(tmp, "no-debugfs"));
      assert.equal(e.status, 6, s);
      assert.equal(e.stderr.trim().split("\n").length, 1, s);
    }
  },
);

test("--msr-file with a real Intel dump: JSON groups, fields and the source", () => {
  const r = vmtool("vmx", "--json", "--msr-file", fixture("intel-coffee-lake-i7-9750h.msr"));
  assert.equal(r.status, 0, r.stderr);
  const j = JSON.parse(r.stdout);
  assert.equal(j.source, "file");
  assert.equal(j.msrs["0x480"], "0xda040000000004");
  const pin = j.groups.find((g: { msr: string }) => g.msr === "0x481");
  assert.deepEqual(
    pin.fields.find((f: { name: string }) => f.name === "Process posted interrupts"),
    { name: "Process posted interrupts", bit: 7, value: "no" },
  );
  const basic = j.groups.find((g: { msr: string }) => g.msr === "0x480");
  assert.deepEqual(basic.fields[1], { name: "VMCS size (bytes)", bits: [32, 44], value: 1024 });
  const text = vmtool("vmx", "--msr-file", fixture("intel-coffee-lake-i7-9750h.msr"));
  assert.match(text.stdout, /^source: file /);
  assert.match(text.stdout, /CR3-load exiting\s+default/);
  // The JSON form of the same values decodes the same.
  const asJson = join(tmp, "coffee.json");
  writeFileSync(asJson, JSON.stringify(j.msrs));
  const r2 = vmtool("vmx", "--json", "--msr-file", asJson);
  assert.deepEqual(JSON.parse(r2.stdout).groups, j.groups);
});

test("bad --msr-file contents: one error line, exit 2", () => {
  const cases: [string, string, RegExp][] = [
    ["not-hex", "0x480 0xzz\n", /is not a hexadecimal number/],
    ["unknown", "0x10 0x1\n", /is not a VMX capability MSR/],
    ["wide", "0x480 0x1ffffffffffffffff\n", /wider than 64 bits/],
    ["dup-text", "0x480 0x1\n0x480 0x2\n", /given twice/],
    ["dup-json", '{"0x480": "0x1", "0x480": "0x2"}', /given twice/],
    ["dup-spelling", '{"0x480": "0x1", "480": "0x2"}', /given twice/],
    ["empty", "", /empty file/],
    ["comments-only", "# nothing\n", /no MSR values/],
    ["three-words", "0x480 0x1 0x2\n", /expected "INDEX VALUE"/],
    ["bad-json", '{"0x480": ', /not valid JSON/],
    ["json-number", '{"0x480": 5}', /hex string/],
  ];
  for (const [name, content, re] of cases) {
    const p = join(tmp, name);
    writeFileSync(p, content);
    const r = vmtool("vmx", "--msr-file", p);
    assert.equal(r.status, 2, `${name}: ${r.stderr}`);
    assert.equal(r.stdout, "", name);
    assert.equal(r.stderr.trim().split("\n").length, 1, name);
    assert.match(r.stderr, re, name);
  }
  const missing = vmtool("vmx", "--msr-file", join(tmp, "does-not-exist"));
  assert.equal(missing.status, 2);
  assert.match(missing.stderr, /no such file/);
  assert.equal(vmtool("vmx", "--source", "bogus").status, 2);
  assert.equal(vmtool("vmx", "--cpu", "x").status, 2);
});

test("--msr-file that is a FIFO, /dev/zero, or too large: one line, exit 2, at once", () => {
  const fifo = join(tmp, "msr-fifo");
  spawnSync("mkfifo", [fifo]);
  const big = join(tmp, "big-msrs.txt");
  writeFileSync(big, "0x480 0xda040000000004\n".repeat(60_000)); // 1.38 MB
  const cases: [string, RegExp][] = [
    [fifo, /: is a FIFO, not a regular file$/],
    ["/dev/zero", /\/dev\/zero: is a character device, not a regular file$/],
    [big, /: 1380000 bytes: larger than the 1 MiB a file of saved MSR values may have$/],
  ];
  for (const [path, says] of cases) {
    const r = vmtool("vmx", "--msr-file", path);
    assert.equal(r.status, 2, `${path}: status ${r.status} signal ${r.signal} ${r.stderr}`);
    assert.equal(r.stdout, "");
    assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
    assert.match(r.stderr.trim(), says);
  }
  // A procfs file reports no size: it is read (bounded) and its content judged like any other.
  const proc = vmtool("vmx", "--msr-file", "/proc/self/status");
  assert.equal(proc.status, 2);
  assert.match(proc.stderr, /\/proc\/self\/status:1: MSR index 'Name' is not a hexadecimal number/);
});

test("--source module reads the module's debugfs files (vmx-basic and siblings) and skips garbage", () => {
  const dir = join(tmp, "debugfs", "vmtool");
  mkdirSync(join(dir, "cpu-000"), { recursive: true });
  const files: Record<string, string> = {
    "vmx-basic": "0x00da040000000004\n",
    "vmx-pinbased-ctls": "0x0000007f00000016\n",
    "vmx-true-pinbased-ctls": "0x0000007f00000016\n",
    "feature-control": "0x0000000000020005\n",
    "vmx-misc": "not a number\n",
  };
  for (const [f, v] of Object.entries(files)) writeFileSync(join(dir, f), v);
  const r = vmtool("vmx", "--source", "module", "--json", "--debugfs", join(tmp, "debugfs"));
  assert.equal(r.status, 0, r.stderr);
  const j = JSON.parse(r.stdout);
  assert.equal(j.source, "module");
  assert.deepEqual(Object.keys(j.msrs), ["0x3a", "0x480", "0x481", "0x48d"]);
  assert.deepEqual(
    j.groups.map((g: { msr: string }) => g.msr),
    ["0x3a", "0x480", "0x481"],
  );
  // Auto order: the module comes first when it is there.
  assert.equal(
    JSON.parse(vmtool("vmx", "--json", "--debugfs", join(tmp, "debugfs")).stdout).source,
    "module",
  );
});
