// `vmtool host` run for real on this machine: its verdict, backend and capabilities compared with what the test
// reads directly from /dev/kvm (a C program compiled here against <linux/kvm.h>, so that none of vmtool's own
// KVM bindings is its own oracle) and /sys/module; and run as an unprivileged user, where it must say what it
// could not read and exit 6 (when /dev/kvm is not open to that user).
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CLI } from "../helpers/paths.js";
import { KVM_CAP } from "../../src/kvm/caps.js";

const vmtool = (...args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8" });
const haveKvm = existsSync("/dev/kvm") && process.getuid?.() === 0;

/** What /dev/kvm says, read by plain ioctls in C. The capability names come from vmtool's table, their numbers
 * from the kernel header (test/kvm/caps.test.ts checks that the two agree). */
interface KvmFacts {
  api: number;
  caps: Map<string, number>;
  cpuidEntries: number;
  hypervisorSignature: string;
  savedMsrs: number;
  /** Each feature MSR's index and its value read alone with KVM_GET_MSRS, or "unreadable". */
  featureMsrs: { index: number; value: string }[];
}

function probeKvm(): KvmFacts {
  const capLines = Object.keys(KVM_CAP)
    .map(
      (n) => `  r = ioctl(kvm, KVM_CHECK_EXTENSION, KVM_CAP_${n}); printf("cap ${n} %d\\n", r < 0 ? 0 : r);`,
    )
    .join("\n");
  const source = `#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
int main(void) {
  int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC), r;
  if (kvm < 0) { perror("/dev/kvm"); return 1; }
  printf("api %d\\n", ioctl(kvm, KVM_GET_API_VERSION, 0));
${capLines}
  for (unsigned n = 1;; n *= 2) {
    struct kvm_cpuid2 *c = calloc(1, sizeof *c + n * sizeof c->entries[0]);
    c->nent = n;
    if (ioctl(kvm, KVM_GET_SUPPORTED_CPUID, c) == 0) {
      printf("cpuid %u\\n", c->nent);
      for (unsigned i = 0; i < c->nent; i++)
        if (c->entries[i].function == 0x40000000) {
          char sig[13] = {0};
          memcpy(sig, &c->entries[i].ebx, 4); memcpy(sig + 4, &c->entries[i].ecx, 4); memcpy(sig + 8, &c->entries[i].edx, 4);
          printf("signature %s\\n", sig);
        }
      break;
    }
    if (errno != E2BIG) { perror("KVM_GET_SUPPORTED_CPUID"); return 1; }
    free(c);
  }
  struct kvm_msr_list probe = {0};
  ioctl(kvm, KVM_GET_MSR_INDEX_LIST, &probe); /* E2BIG, with the count */
  printf("saved %u\\n", probe.nmsrs);
  probe.nmsrs = 0;
  ioctl(kvm, KVM_GET_MSR_FEATURE_INDEX_LIST, &probe);
  struct kvm_msr_list *f = calloc(1, sizeof *f + probe.nmsrs * sizeof f->indices[0]);
  f->nmsrs = probe.nmsrs;
  if (ioctl(kvm, KVM_GET_MSR_FEATURE_INDEX_LIST, f) < 0) { perror("KVM_GET_MSR_FEATURE_INDEX_LIST"); return 1; }
  for (unsigned i = 0; i < f->nmsrs; i++) {
    struct { struct kvm_msrs h; struct kvm_msr_entry e; } m = {{.nmsrs = 1}, {.index = f->indices[i]}};
    if (ioctl(kvm, KVM_GET_MSRS, &m) == 1) printf("feature 0x%x 0x%llx\\n", f->indices[i], (unsigned long long)m.e.data);
    else printf("feature 0x%x unreadable\\n", f->indices[i]);
  }
  return 0;
}
`;
  const dir = mkdtempSync(join(tmpdir(), "vmtool-host-probe-"));
  try {
    writeFileSync(join(dir, "probe.c"), source);
    execFileSync("gcc", ["-O1", "-o", join(dir, "probe"), join(dir, "probe.c")]);
    const facts: KvmFacts = {
      api: -1,
      caps: new Map(),
      cpuidEntries: -1,
      hypervisorSignature: "",
      savedMsrs: -1,
      featureMsrs: [],
    };
    for (const line of execFileSync(join(dir, "probe"), { encoding: "utf8" }).trim().split("\n")) {
      const [what, a, b] = line.split(" ");
      if (what === "api") facts.api = Number(a);
      else if (what === "cap") facts.caps.set(a, Number(b));
      else if (what === "cpuid") facts.cpuidEntries = Number(a);
      else if (what === "signature") facts.hypervisorSignature = a;
      else if (what === "saved") facts.savedMsrs = Number(a);
      else if (what === "feature") facts.featureMsrs.push({ index: Number(a), value: b });
    }
    return facts;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test(
  "verdict, backend and caps agree with /dev/kvm and /sys/module",
  { skip: !haveKvm && "needs /dev/kvm and root" },
  () => {
    const r = vmtool("host", "--json");
    assert.equal(r.status, 0, r.stderr);
    const rep = JSON.parse(r.stdout);
    assert.equal(rep.canRunVms, true);
    assert.match(rep.verdict, /^KVM acceleration can be used/);
    const kvm = probeKvm();
    assert.equal(rep.kvm.apiVersion, kvm.api);
    assert.equal(kvm.caps.size, Object.keys(KVM_CAP).length);
    for (const [name, value] of kvm.caps) assert.equal(rep.kvm.caps[name], value, `KVM_CAP_${name}`);
    assert.ok(kvm.caps.get("USER_MEMORY")! > 0, "the probe read the capabilities");
    assert.equal(rep.kvm.supportedCpuid.entries, kvm.cpuidEntries);
    assert.equal(rep.kvm.supportedCpuid.hypervisorSignature ?? "", kvm.hypervisorSignature);
    assert.equal(rep.kvm.msrs.saved, kvm.savedMsrs);
    assert.deepEqual(
      rep.kvm.msrs.feature.map((m: { index: string; value: string }) => ({
        index: Number(m.index),
        value: m.value,
      })),
      kvm.featureMsrs,
    );
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
