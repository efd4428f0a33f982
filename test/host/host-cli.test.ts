// `vmtool host` run for real on this machine: its verdict, backend and capabilities compared with what the test
// reads directly from /dev/kvm and /sys/module; and run as an unprivileged user, where it must say what it could
// not read and exit 6 (when /dev/kvm is not open to that user).
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { CLI } from "../helpers/paths.js";
import { Kvm } from "../../src/kvm/system.js";
import { KVM_CAP } from "../../src/kvm/caps.js";

const vmtool = (...args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8" });
const haveKvm = existsSync("/dev/kvm") && process.getuid?.() === 0;

test(
  "verdict, backend and caps agree with /dev/kvm and /sys/module",
  { skip: !haveKvm && "needs /dev/kvm and root" },
  () => {
    const r = vmtool("host", "--json");
    assert.equal(r.status, 0, r.stderr);
    const rep = JSON.parse(r.stdout);
    assert.equal(rep.canRunVms, true);
    assert.match(rep.verdict, /^KVM acceleration can be used/);
    const kvm = Kvm.open();
    try {
      assert.equal(rep.kvm.apiVersion, kvm.apiVersion());
      for (const name of Object.keys(KVM_CAP))
        assert.equal(rep.kvm.caps[name], kvm.checkExtension(name), `KVM_CAP_${name}`);
      assert.equal(rep.kvm.supportedCpuid.entries, kvm.cpuid("supported").length);
      assert.equal(rep.kvm.msrs.saved, kvm.msrIndexList("saved").length);
      assert.deepEqual(
        rep.kvm.msrs.feature.map((m: { index: string }) => Number(m.index)),
        kvm.msrIndexList("feature"),
      );
    } finally {
      kvm.close();
    }
    const modules = ["kvm_intel", "kvm_amd", "kvm_pvm"].filter((m) => existsSync(`/sys/module/${m}`));
    assert.deepEqual(
      rep.backends.map((b: { module: string }) => b.module),
      modules,
    );
    for (const b of rep.backends) {
      const params = readdirSync(`/sys/module/${b.module}/parameters`).sort();
      assert.deepEqual(Object.keys(b.parameters).sort(), params);
      for (const p of params)
        assert.equal(
          b.parameters[p],
          readFileSync(`/sys/module/${b.module}/parameters/${p}`, "utf8").trim(),
          p,
        );
    }
    // CPUID facts against /proc/cpuinfo.
    const cpuinfo = readFileSync("/proc/cpuinfo", "utf8");
    assert.equal(rep.cpu.vendor, /vendor_id\s*:\s*(\S+)/.exec(cpuinfo)![1]);
    assert.equal(rep.hypervisor.present, /\bhypervisor\b/.test(cpuinfo));
    assert.equal(
      rep.virtualization,
      /\bvmx\b/.test(cpuinfo) ? "vmx" : /\bsvm\b/.test(cpuinfo) ? "svm" : null,
    );

    // Text: verdict first, then PASS/WARN/FAIL lines; --caps lists every capability.
    const t = vmtool("host", "--caps");
    assert.equal(t.status, 0);
    const lines = t.stdout.split("\n");
    assert.equal(lines[0], rep.verdict);
    assert.ok(lines.slice(2).some((l) => /^PASS {2}KVM module\s+\S+/.test(l)));
    assert.ok(
      lines.every(
        (l, i) => i < 2 || l === "" || !/^(PASS|WARN|FAIL)/.test(l) || /^(PASS|WARN|FAIL) {2}/.test(l),
      ),
    );
    for (const name of ["KVM_CAP_USER_MEMORY", "KVM_CAP_NR_VCPUS"])
      assert.match(t.stdout, new RegExp(`${name}\\s`));
  },
);

test(
  "without root: says what it could not read, exit 6 when /dev/kvm is closed to the user",
  { skip: !haveKvm && "needs root to switch user" },
  () => {
    const mode = statSync("/dev/kvm").mode;
    const openToOthers = (mode & 0o006) === 0o006;
    const r = spawnSync(
      "setpriv",
      ["--reuid=65534", "--regid=65534", "--clear-groups", process.execPath, CLI, "host", "--json"],
      {
        encoding: "utf8",
      },
    );
    const rep = JSON.parse(r.stdout);
    if (openToOthers) {
      assert.equal(r.status, 0);
      return;
    }
    assert.equal(r.status, 6);
    assert.equal(rep.canRunVms, false);
    assert.match(rep.verdict, /^KVM acceleration cannot be used: \/dev\/kvm: permission denied/);
    assert.ok(rep.notRead.some((n: string) => /capabilities/.test(n)));
    assert.equal(rep.kvm.accessible, false);
    // What does not need /dev/kvm is still there: the CPU (CPUID runs unprivileged) and the backend's parameters.
    assert.equal(rep.cpu.vendor, /vendor_id\s*:\s*(\S+)/.exec(readFileSync("/proc/cpuinfo", "utf8"))![1]);
    assert.ok(rep.backends.length > 0);
    const t = spawnSync(
      "setpriv",
      ["--reuid=65534", "--regid=65534", "--clear-groups", process.execPath, CLI, "host"],
      {
        encoding: "utf8",
      },
    );
    assert.equal(t.status, 6);
    assert.match(t.stdout.split("\n")[0], /^KVM acceleration cannot be used/);
    assert.match(t.stdout, /^FAIL {2}\/dev\/kvm is accessible/m);
    assert.match(t.stdout, /^Not read:/m);
  },
);

test("--help documents the exit statuses", () => {
  const r = vmtool("host", "--help");
  assert.equal(r.status, 0);
  assert.match(r.stdout, /Exit status 0 when VMs can run, 6 when not/);
});
