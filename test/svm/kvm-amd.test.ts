// vmtool's VMM tests under a second KVM backend: Debian's kvm_amd (AMD SVM with nested paging) inside a QEMU
// TCG virtual machine (`-cpu max`). Builds the initramfs (scripts/svm-build-initramfs.sh), boots it, runs the
// test files of inner-tests.ts inside with `node --test`, and turns the results that come back on the second
// serial port into one subtest per inner test file, with a subtest per inner test. See docs/svm.md.
import { test, before } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, writeFileSync, readFileSync, rmSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { ROOT, DIST, CLI } from "../helpers/paths.js";
import { guests } from "../helpers/guests.js";
import { INNER_TESTS } from "./inner-tests.js";
import { NAME_FILTERED, parseResults, type SvmRun } from "./results.js";
import type { Probe } from "./probe.js";

/** Only stops a hung VM: the whole boot, test run and power-off took 200-300 s on an idle 2-core host, 472 s
 * with a load average near 4, and did not end within 480 s near 7. */
const QEMU_TIMEOUT_MS = 1_500_000;
/**
 * VMTOOL_SVM_ONLY=word[,word...]: run only the inner test files whose path contains one of the words (a
 * development run of one area; the full list runs otherwise).
 */
const ONLY_WORDS = (process.env.VMTOOL_SVM_ONLY ?? "").split(",").filter((w) => w !== "");
const SELECTED = INNER_TESTS.filter(
  (t) => ONLY_WORDS.length === 0 || ONLY_WORDS.some((w) => t.file.includes(w)),
);

/** One inner test file that hangs is killed after this (or its own `timeoutS`), so the others still run and report. */
const FILE_TIMEOUT_S = 120;

function sh(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/** The script the init runs inside (busybox sh; `say` and fd 3 write to the result port). */
function job(): string {
  const lines = [
    // Guest images come built from the host (test/helpers/guests.ts): no compiler inside.
    "export VMTOOL_GUESTS_PREBUILT=1",
    `if node "$dist/src/cli/main.js" host --json >/tmp/host.json 2>/tmp/host.err; then say host-rc 0; else say host-rc $?; fi`,
    `sed 's/^/SVM host-out /' /tmp/host.json >&3`,
    `sed 's/^/SVM host-err /' /tmp/host.err >&3`,
    `if node "$dist/test/svm/probe.js" >/tmp/probe.json 2>/tmp/probe.err; then say probe-rc 0; else say probe-rc $?; fi`,
    `sed 's/^/SVM probe-out /' /tmp/probe.json >&3`,
    `sed 's/^/SVM probe-err /' /tmp/probe.err >&3`,
  ];
  for (const { file: t, only, timeoutS = FILE_TIMEOUT_S } of SELECTED) {
    const js = `$dist/${t.replace(/\.ts$/, ".js")}`;
    const pattern = only ? ` --test-name-pattern=${sh(only)}` : "";
    lines.push(
      `say file-begin ${sh(t)}`,
      `node --test${pattern} --test-reporter="./$dist/test/svm/reporter.js" "${js}" 2>/tmp/stderr >&3 &`,
      // A watchdog rather than `timeout`: a file that hangs is reported with the state of every task (where each
      // one sleeps in the kernel, and the blocked ones through SysRq-w into dmesg), then killed; a process that
      // even SIGKILL cannot end is left behind so that the other files still run and report.
      `pid=$!; n=0; while kill -0 $pid 2>/dev/null && [ $n -lt ${timeoutS} ]; do sleep 1; n=$((n + 1)); done`,
      `if kill -0 $pid 2>/dev/null; then`,
      `  echo "hung after ${timeoutS} s; tasks not sleeping (task state wchan cmdline):" >>/tmp/stderr`,
      `  for d in /proc/[0-9]*/task/[0-9]*; do echo "$d $(cut -d' ' -f3 $d/stat 2>/dev/null) $(cat $d/wchan 2>/dev/null) $(tr '\\0' ' ' <$d/../../cmdline 2>/dev/null | cut -c1-60)"; done | awk '$2 != "S" && $2 != "I"' >>/tmp/stderr`,
      `  echo w >/proc/sysrq-trigger; kill -9 $pid; sleep 5`,
      `  if kill -0 $pid 2>/dev/null; then echo "still alive after SIGKILL" >>/tmp/stderr; rc=255; else wait $pid; rc=$?; fi`,
      `else wait $pid; rc=$?; fi`,
      `tail -n 80 /tmp/stderr | sed 's/^/SVM file-stderr /' >&3`,
      `say file-end ${sh(t)} $rc`,
    );
  }
  return lines.join("\n") + "\n";
}

function have(cmd: string): boolean {
  try {
    execFileSync("sh", ["-c", `command -v ${cmd}`], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

async function bootAndRun(): Promise<SvmRun> {
  for (const cmd of ["qemu-system-x86_64", "busybox", "cpio"])
    if (!have(cmd))
      throw new Error(`${cmd} not found: apt-get install qemu-system-x86 busybox-static cpio (see .ci/run)`);
  guests(); // into DIST/guests, which the initramfs carries
  const dir = mkdtempSync(join(tmpdir(), "vmtool-svm-"));
  try {
    writeFileSync(join(dir, "job"), job());
    const initrd = join(dir, "initrd.gz");
    const kernel = execFileSync(
      join(ROOT, "scripts", "svm-build-initramfs.sh"),
      [relative(ROOT, DIST) || ".", initrd, join(dir, "job")],
      { cwd: ROOT, encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] },
    ).trim();
    const console_ = join(dir, "console.log");
    const results = join(dir, "results.log");
    const args = [
      // One CPU: with -smp 2 the whole VM froze now and then in the middle of a vmtool run (no kernel message,
      // not even the inner watchdog ran again: docs/svm.md); kicks of a vCPU running on the other CPU go through
      // IPIs into a nested guest under QEMU's software CPU, the suspected part.
      ...["-accel", "tcg", "-cpu", "max", "-smp", "1", "-m", "2048"],
      ...["-display", "none", "-monitor", "none", "-no-reboot", "-nodefaults"],
      ...["-serial", `file:${console_}`, "-serial", `file:${results}`],
      ...["-kernel", kernel, "-initrd", initrd],
      ...["-append", "console=ttyS0 panic=-1 quiet"],
    ];
    const t0 = Date.now();
    const status = await new Promise<string>((resolve, reject) => {
      const q = spawn("qemu-system-x86_64", args, { stdio: ["ignore", "ignore", "pipe"] });
      let err = "";
      q.stderr.on("data", (b: Buffer) => (err += b.toString()));
      const timer = setTimeout(() => {
        q.kill("SIGKILL");
        resolve(`killed after ${QEMU_TIMEOUT_MS / 1000} s`);
      }, QEMU_TIMEOUT_MS);
      q.on("error", (e) => {
        clearTimeout(timer);
        reject(e);
      });
      q.on("exit", (code, signal) => {
        clearTimeout(timer);
        resolve(code === 0 ? "ok" : `qemu exited with ${code ?? signal}: ${err.trim()}`);
      });
    });
    const run = parseResults(existsSync(results) ? readFileSync(results, "utf8") : "");
    run.qemuStatus = status;
    run.seconds = (Date.now() - t0) / 1000;
    run.console = existsSync(console_) ? readFileSync(console_, "utf8") : "";
    return run;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

let run: SvmRun;
before(async () => {
  run = await bootAndRun();
});

/** What goes with a failure: the QEMU status and the end of the guest kernel's log. */
function guestLog(): string {
  const log = run.dmesg.length > 0 ? run.dmesg : run.console.split("\n");
  return `\nQEMU: ${run.qemuStatus}\n--- guest kernel log (last 40 lines) ---\n${log.slice(-40).join("\n")}`;
}

test("the kvm_amd VM boots, loads kvm_amd with nested paging, and reports back", (t) => {
  t.diagnostic(`boot + tests + power-off: ${run.seconds.toFixed(1)} s (QEMU: ${run.qemuStatus})`);
  assert.ok(run.begun, `nothing came back from the VM${guestLog()}`);
  for (const m of ["irqbypass", "ccp", "kvm", "kvm-amd"])
    assert.equal(run.insmod.get(m), 0, `insmod ${m} failed${guestLog()}`);
  assert.equal(run.devKvm, true, `/dev/kvm missing${guestLog()}`);
  assert.equal(run.params.get("npt"), "Y", `kvm_amd.npt is ${run.params.get("npt")}${guestLog()}`);
  assert.equal(run.params.get("nested"), "1");
  assert.ok(run.ended, `the VM did not finish the job${guestLog()}`);
  assert.equal(run.qemuStatus, "ok");
});

for (const { file, only } of SELECTED) {
  test(`kvm_amd: ${file}`, async (t) => {
    const r = run.files.get(file);
    assert.ok(r, `${file} did not run inside the VM${guestLog()}`);
    // Every test that is not a suite (describe), at any depth: a suite only fails through its tests.
    const tests = r.tests.filter((x) => !x.suite);
    // The tests the name filter left out are one note, not one skipped test each: they were left out on
    // purpose (inner-tests.ts says why), and a skip of their own would hide the real skips among them.
    const filtered = tests.filter((x) => x.skip && x.skipReason === NAME_FILTERED);
    if (only !== undefined)
      t.diagnostic(`${filtered.length} of ${tests.length} tests left out by the name filter ${only}`);
    else assert.deepEqual(filtered, [], `${file} has no name filter, yet tests were left out by one`);
    const kept = tests.filter((x) => !filtered.includes(x));
    assert.ok(
      kept.some((x) => !x.skip),
      `${file}: no test ran inside (name filter ${only ?? "none"})\n${r.stderr.join("\n")}${guestLog()}`,
    );
    for (const inner of kept) {
      const skip = inner.skip
        ? `skipped inside${inner.skipReason ? `: ${inner.skipReason}` : ""}`
        : undefined;
      await t.test(inner.name, { skip }, () => {
        if (!inner.ok)
          assert.fail(`${inner.error ?? "failed"}\n${r.output.slice(-30).join("\n")}${guestLog()}`);
      });
    }
    assert.equal(r.rc, 0, `node --test ${file} exited with ${r.rc}\n${r.stderr.join("\n")}${guestLog()}`);
  });
}

test("vmtool host inside reports SVM, NPT and kvm_amd with its parameters", (t) => {
  const help = execFileSync(process.execPath, [CLI, "--help"], { encoding: "utf8" });
  if (run.hostRc !== 0 && /host\s+\(not available yet\)/.test(help)) {
    t.skip("`vmtool host` is not written yet");
    return;
  }
  assert.equal(run.hostRc, 0, `vmtool host --json failed inside: ${run.hostErr.join("\n")}`);
  const report = JSON.parse(run.hostOut.join("\n")) as {
    canRunVms: boolean;
    virtualization: string | null;
    svm?: { revision: number; asids: number; features: string[] };
    backends: { module: string; parameters: Record<string, string> }[];
    kvm: { present: boolean; accessible: boolean };
  };
  const out = `\n${run.hostOut.join("\n").slice(0, 3000)}`;
  assert.equal(report.virtualization, "svm", out);
  assert.equal(report.canRunVms, true, out);
  assert.ok(report.kvm.present && report.kvm.accessible, out);
  // QEMU's -cpu max: SVM revision 1, 8 ASIDs, nested paging (CPUID 0x8000000A EDX bit 0).
  assert.ok(report.svm, `no svm section${out}`);
  assert.ok(
    report.svm.features.some((f) => /^NP\b/.test(f)),
    `nested paging missing from ${report.svm.features.join(", ")}`,
  );
  const amd = report.backends.find((b) => b.module === "kvm_amd");
  assert.ok(amd, `kvm_amd not among the backends ${report.backends.map((b) => b.module).join(", ")}`);
  // Its parameters as the init read them from /sys/module/kvm_amd/parameters.
  assert.ok(run.params.size > 5);
  for (const [k, v] of run.params) assert.equal(amd.parameters[k], v, `kvm_amd parameter ${k}`);
});

test("backend differences: the probe runs under kvm_amd and on the host, and their guests exit alike", (t) => {
  assert.equal(run.probeRc, 0, `the probe failed inside: ${run.probeErr.join("\n")}${guestLog()}`);
  const inside = JSON.parse(run.probeOut.join("")) as Probe;
  const here = JSON.parse(
    execFileSync(process.execPath, [join(DIST, "test", "svm", "probe.js")], { encoding: "utf8" }),
  ) as Probe;
  for (const section of ["caps", "reset", "cpuid", "exits"] as const) {
    const a = here[section] as Record<string, unknown>;
    const b = inside[section] as Record<string, unknown>;
    for (const k of new Set([...Object.keys(a), ...Object.keys(b)]))
      if (JSON.stringify(a[k]) !== JSON.stringify(b[k]))
        t.diagnostic(`${section}.${k}: host ${JSON.stringify(a[k])} | kvm_amd ${JSON.stringify(b[k])}`);
  }
  // Speed is measured by scripts/svm-bench.sh, not here. The same guests must give the same exits: where they
  // do not, the VMM has a backend difference to handle.
  assert.deepEqual(Object.keys(inside.exits), Object.keys(here.exits));
  for (const g of Object.keys(here.exits)) assert.deepEqual(inside.exits[g], here.exits[g], `guest "${g}"`);
});
