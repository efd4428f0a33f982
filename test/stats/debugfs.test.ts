// KVM's debugfs files (`<debugfs>/kvm/<pid>-<fd>/`), kvm_stat's other source, for a real `vmtool run`: every
// file the test itself can read is reported with its value, every file that refuses reads (EPERM under the
// kernel's lockdown) is named, and neither is fatal. The VM is stopped (SIGSTOP) so that nothing moves.
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { busyGuest, runArgs } from "./guests.js";
import { event, isRoot, jsonLines, startVm, stat, waitFor } from "./helpers.js";

const KVM_DEBUGFS = "/sys/kernel/debug/kvm";

test(
  "debugfs: readable files reported with their values, refused ones named, vCPU threads found",
  { skip: (!isRoot && "debugfs needs root") || (!existsSync(KVM_DEBUGFS) && "debugfs is not mounted") },
  async (t) => {
    const vm = startVm(t, runArgs(busyGuest()));
    const folder = await waitFor("the VM's debugfs folder", () =>
      readdirSync(KVM_DEBUGFS).find((n) => n.startsWith(`${vm.pid}-`)),
    );
    await waitFor("the VM", () =>
      stat(["-1", "-p", String(vm.pid), "-f", "vmtool"]).stdout.includes("vmtool_exits") ? true : undefined,
    );
    vm.kill("SIGSTOP");
    // What the files say, read as `cat` reads them.
    const readable = new Map<string, number>();
    const refused = new Map<string, string>();
    for (const f of readdirSync(join(KVM_DEBUGFS, folder))) {
      const p = join(KVM_DEBUGFS, folder, f);
      if (!statSync(p).isFile() || f === "mmu_rmaps_stat") continue;
      try {
        readable.set(f, Number(readFileSync(p, "latin1").trim()));
      } catch (e) {
        refused.set(f, (e as NodeJS.ErrnoException).code ?? "?");
      }
    }
    assert.ok(readable.size > 0, `some files are readable: refused ${[...refused.keys()].join(" ")}`);
    const r = stat([
      "--json",
      "-i",
      "-p",
      String(vm.pid),
      "--count",
      "1",
      "-s",
      "0.1",
      "--source",
      "debugfs",
    ]);
    assert.equal(r.status, 0, r.stderr);
    const v = jsonLines(r.stdout)
      .at(-1)
      ?.vms.find((x) => x.pid === vm.pid);
    assert.ok(v, r.stdout);
    assert.equal(v.sources.debugfs.used, true, JSON.stringify(v.sources.debugfs));
    for (const [f, value] of readable) assert.equal(event(v, "debugfs", f)?.total, value, f);
    assert.equal(v.events.filter((e) => e.source === "debugfs").length, readable.size);
    if (refused.size === 0) assert.equal(v.sources.debugfs.note, undefined);
    else {
      const note = v.sources.debugfs.note ?? "";
      assert.match(
        note,
        new RegExp(`^${refused.size} of ${refused.size + readable.size} files not readable: `),
      );
      for (const [f, code] of refused) {
        assert.match(note, new RegExp(`\\b${f}\\b`), f);
        if (code === "EPERM") assert.match(note, /EPERM \(the kernel's lockdown restricts debugfs\)/);
      }
    }
    // vcpu0/pid names the thread that runs vCPU 0.
    const tid = Number(readFileSync(join(KVM_DEBUGFS, folder, "vcpu0", "pid"), "latin1").trim());
    assert.equal(v.threads["0"], tid);
    assert.ok(existsSync(`/proc/${vm.pid}/task/${tid}`), `thread ${tid} of ${vm.pid}`);
    vm.kill("SIGCONT");
  },
);
