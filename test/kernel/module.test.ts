// vmtool.ko in a real kernel: Debian's generic kernel booted under QEMU (TCG, so no VMX: the no-VMX path, SVM
// facts with -cpu max). The guest's init (scripts/kernel-guest-init.sh) loads the module, dumps the debugfs tree,
// changes interval_ms, takes CPUs offline and online, unloads; then loads the test build (invented VMCS
// addresses) for the entry files, reads racing updates and hot-plug, and eviction. Here we check what it
// reported, fail on any kernel trouble line, and feed the captured tree to `vmtool vcpus --debugfs`.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, realpathSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { CLI, ROOT } from "../helpers/paths.js";
import {
  event,
  kernelTroubles,
  parseGuestReport,
  slabCounts,
  writeTree,
  type GuestReport,
  type Tree,
} from "./guest-report.js";

const work = mkdtempSync(join(tmpdir(), "vmtool-kernel-"));
after(() => rmSync(work, { recursive: true, force: true }));

before(
  () => {
    execFileSync(join(ROOT, "scripts", "kernel-build-initramfs.sh"), [work], { stdio: ["ignore", "pipe", "inherit"] });
  },
  { timeout: 600_000 },
);

test("the module builds warning-free against the Debian kernel's headers (W=1), both variants", () => {
  for (const variant of ["real", "fake"]) {
    const log = readFileSync(join(work, `build-${variant}.log`), "utf8");
    assert.match(log, /LD \[M\]\s+\S+vmtool\.ko/, `${variant}: no vmtool.ko linked:\n${log}`);
    const bad = log.split("\n").filter((l) => /warning|error/i.test(l));
    assert.deepEqual(bad, [], `${variant} build printed:\n${log}`);
  }
});

const GLOBAL_VALUE = /^0x[0-9a-f]{16}\n$/;
const SYSREGS = /^cr0 0x([0-9a-f]{16})\ncr2 0x[0-9a-f]{16}\ncr3 0x([0-9a-f]{16})\ncr4 0x([0-9a-f]{16})\ncr8 0x[0-9a-f]{16}\n$/;
// CPUID 0x8000000A EDX bits and the names Linux gives them in /proc/cpuinfo.
const SVM_FLAGS: Record<number, string> = { 0: "npt", 1: "lbrv", 3: "nrip_save", 4: "tsc_scale", 5: "vmcb_clean" };

function cpuDir(cpu: number): string {
  return `/cpu-${String(cpu).padStart(3, "0")}`;
}

function checkSysregs(tree: Tree, cpus: number): void {
  for (let cpu = 0; cpu < cpus; cpu++) {
    const bytes = tree.files.get(`${cpuDir(cpu)}/sysregs`);
    assert.ok(bytes, `no sysregs for cpu ${cpu}`);
    const m = SYSREGS.exec(bytes.toString("latin1"));
    assert.ok(m, `cpu ${cpu} sysregs: ${JSON.stringify(bytes.toString("latin1"))}`);
    const [cr0, cr3, cr4] = [m[1], m[2], m[3]].map((h) => BigInt("0x" + h));
    // A 64-bit kernel runs with protection and paging on (CR0.PE, CR0.PG), PAE on (CR4.PAE), a page table.
    assert.equal(cr0 & 0x80000001n, 0x80000001n, `cpu ${cpu} cr0`);
    assert.equal(cr4 & 0x20n, 0x20n, `cpu ${cpu} cr4`);
    assert.notEqual(cr3, 0n, `cpu ${cpu} cr3`);
  }
}

/** Names of the VMCS entry files (without .info) in one CPU's directory of a tree or listing. */
function entryNames(names: string[]): string[] {
  return names.filter((n) => /^[0-9a-f]+$/.test(n)).sort();
}

/** The addresses the test build invents on `cpu` (kernel/vmtool.c, VMTOOL_FAKE_VMCS). */
function fakeAddresses(cpu: number, count: number): string[] {
  return Array.from({ length: count }, (_, i) => (0x7f000000 + cpu * 0x100000 + i * 0x1000).toString(16)).sort();
}

for (const smp of [1, 2]) {
  describe(`Debian kernel under QEMU TCG, -smp ${smp}`, () => {
    let report: GuestReport;
    let console: string;

    before(
      () => {
        const r = spawnSync(join(ROOT, "scripts", "kernel-boot.sh"), [work, String(smp), "150"], { stdio: "inherit" });
        console = readFileSync(join(work, `console-smp${smp}.log`), "latin1");
        const dump = readFileSync(join(work, `dump-smp${smp}.log`), "latin1");
        assert.equal(r.status, 0, `QEMU exited with ${r.status}; console:\n${console.slice(-4000)}`);
        report = parseGuestReport(dump);
        assert.ok(report.done, `the guest's init did not finish; console:\n${console.slice(-4000)}`);
      },
      { timeout: 200_000 },
    );

    test("no BUG, WARNING, Oops, general protection or leak report in the kernel log", () => {
      assert.deepEqual(kernelTroubles(console), []);
      assert.deepEqual(kernelTroubles(report.dmesg), []);
      assert.match(report.dmesg, /vmtool: loaded: /);
      assert.match(report.dmesg, /vmtool: unloaded/);
    });

    test("the guest runs the fetched kernel with the CPUs asked for", () => {
      const release = readFileSync(join(dirname(realpathSync(join(work, "vmlinuz"))), "release"), "utf8").trim();
      assert.deepEqual(event(report, "START", release), [`cpus=${smp}`]);
    });

    test("load: interval_ms out of bounds is refused, defaults are 1000 and 512", () => {
      assert.notEqual(event(report, "INSMOD", "real-bad-interval")[0], "0");
      assert.equal(event(report, "INSMOD", "real")[0], "0");
      assert.deepEqual(event(report, "PARAM", "real"), ["interval_ms", "1000"]);
      assert.equal(report.events.find((e) => e[0] === "PARAM" && e[2] === "max_vmcs")?.[3], "512");
      assert.match(report.dmesg, /`5' invalid for parameter `interval_ms'/);
    });

    test("global files: no VMX under TCG (no vmx-* files, and the log says why), SVM facts as 0x%016llx", () => {
      const tree = report.trees.get("real-loaded")!;
      const globals = [...tree.files.keys()].filter((p) => p.split("/").length === 2).sort();
      assert.deepEqual(globals, ["/svm-features", "/svm-nasid", "/svm-revision", "/vm-cr"]);
      for (const g of globals) assert.match(tree.files.get(g)!.toString("latin1"), GLOBAL_VALUE, g);
      assert.match(report.dmesg, /CPUID\.1:ECX\[5\] \(VMX\) is clear: no vmx-\* files/);
      const value = (name: string) => BigInt(tree.files.get(name)!.toString("latin1").trim());
      assert.ok(value("/svm-revision") >= 1n);
      assert.ok(value("/svm-nasid") >= 1n);
      // The feature word agrees with the flags the guest kernel shows in /proc/cpuinfo.
      const flags = new Set(report.events.find((e) => e[0] === "CPUFLAGS")!.slice(1));
      assert.ok(flags.has("svm"));
      const features = value("/svm-features");
      for (const [bit, name] of Object.entries(SVM_FLAGS))
        assert.equal(flags.has(name), (features & (1n << BigInt(bit))) !== 0n, `${name} (bit ${bit})`);
    });

    test("one cpu-NNN per CPU with sysregs read on that CPU; one bound thread per CPU", () => {
      const tree = report.trees.get("real-loaded")!;
      const cpus = Array.from({ length: smp }, (_, i) => cpuDir(i));
      assert.deepEqual(tree.dirs, cpus);
      checkSysregs(tree, smp);
      // No VMX: nothing but sysregs in the CPU directories.
      assert.deepEqual(
        [...tree.files.keys()].filter((p) => p.startsWith("/cpu-")).sort(),
        cpus.map((c) => `${c}/sysregs`),
      );
      const threads = event(report, "THREADS", "real-loaded").sort();
      assert.deepEqual(
        threads,
        Array.from({ length: smp }, (_, i) => `vmtool/${i}@${i}`),
      );
      assert.deepEqual(slabCounts(event(report, "SLABS", "real-loaded")), { vmtool_cpu: smp, vmtool_vmcs: 0 });
    });

    test("interval_ms: 10..60000 accepted at run time, anything else refused and the value kept", () => {
      const writes = report.events.filter((e) => e[0] === "WRITE" && e[1] === "interval_ms").slice(0, 10);
      const got = writes.map(([, , value, status, readBack]) => [value, status === "0" ? "ok" : "refused", readBack]);
      assert.deepEqual(got, [
        ["[250]", "ok", "250"],
        ["[10]", "ok", "10"],
        ["[60000]", "ok", "60000"],
        ["[9]", "refused", "60000"],
        ["[60001]", "refused", "60000"],
        ["[abc]", "refused", "60000"],
        ["[-1]", "refused", "60000"],
        ["[]", "ok", "60000"], // an empty write stores nothing
        ["[4294967296]", "refused", "60000"],
        ["[1000]", "ok", "1000"],
      ]);
      const maxVmcs = report.events.find((e) => e[0] === "WRITE" && e[1] === "max_vmcs")!;
      assert.notEqual(maxVmcs[3], "0", "max_vmcs is read-only at run time");
      assert.equal(maxVmcs[4], "512");
    });

    test("CPU hot-plug: the directory and the thread go with the CPU and come back with it", (t) => {
      if (smp < 2) {
        t.skip("one CPU: nothing to take offline");
        return;
      }
      for (let cpu = 1; cpu < smp; cpu++) {
        const others = Array.from({ length: smp }, (_, i) => i).filter((i) => i !== cpu);
        assert.deepEqual(
          event(report, "CPUDIRS", `real-offline-cpu${cpu}`),
          others.map((i) => cpuDir(i).slice(1)),
        );
        assert.deepEqual(
          event(report, "THREADS", `real-offline-cpu${cpu}`).sort(),
          others.map((i) => `vmtool/${i}@${i}`),
        );
        assert.equal(slabCounts(event(report, "SLABS", `real-offline-cpu${cpu}`)).vmtool_cpu, smp - 1);
        assert.deepEqual(
          event(report, "CPUDIRS", `real-online-cpu${cpu}`),
          Array.from({ length: smp }, (_, i) => cpuDir(i).slice(1)),
        );
        assert.deepEqual(
          event(report, "THREADS", `real-online-cpu${cpu}`).sort(),
          Array.from({ length: smp }, (_, i) => `vmtool/${i}@${i}`),
        );
      }
      const hotplug = report.events.filter((e) => e[0] === "HOTPLUG");
      assert.ok(hotplug.length >= 2 && hotplug.every((e) => e[3] === "0"), JSON.stringify(hotplug));
      checkSysregs(report.trees.get("real-after-hotplug")!, smp);
    });

    test("unload: tree removed, threads stopped, both slab caches empty and destroyed", () => {
      assert.equal(event(report, "RMMOD", "real")[0], "0");
      assert.deepEqual(event(report, "EXISTS", "real-unloaded"), ["no"]);
      assert.deepEqual(event(report, "THREADS", "real-unloaded"), []);
      assert.deepEqual(event(report, "SLABS", "real-unloaded"), []);
    });

    test("test build: one 32-byte time file and one .info per VMCS seen, in the original format", () => {
      assert.equal(event(report, "INSMOD", "fake")[0], "0");
      const tree = report.trees.get("fake-stable")!;
      assert.deepEqual(tree.gone, []);
      assert.deepEqual(slabCounts(event(report, "SLABS", "fake-loaded")), { vmtool_cpu: smp, vmtool_vmcs: 3 * smp });
      for (let cpu = 0; cpu < smp; cpu++) {
        const dir = cpuDir(cpu);
        const names = [...tree.files.keys()].filter((p) => p.startsWith(dir + "/")).map((p) => p.slice(dir.length + 1));
        const entries = entryNames(names);
        assert.deepEqual(entries, fakeAddresses(cpu, 3));
        assert.deepEqual(names.sort(), [...entries.flatMap((e) => [e, `${e}.info`]), "sysregs"].sort());
        for (const e of entries) {
          const bytes = tree.files.get(`${dir}/${e}`)!;
          assert.equal(bytes.length, 32);
          const m = /^(\d+)\0+$/.exec(bytes.toString("latin1"));
          assert.ok(m, JSON.stringify(bytes.toString("latin1")));
          const seconds = Number(m[1]);
          // Sightings go on while the dump runs, which takes seconds under TCG on a loaded host.
          assert.ok(seconds <= tree.time + 30 && seconds >= tree.time - 10, `${seconds} vs guest time ${tree.time}`);
          const info = tree.files.get(`${dir}/${e}.info`)!.toString("latin1");
          const im = /^last_seen_ns (\d+)\nfirst_seen_ns (\d+)\nsightings (\d+)\n$/.exec(info);
          assert.ok(im, JSON.stringify(info));
          const [last, first, count] = [BigInt(im[1]), BigInt(im[2]), Number(im[3])];
          assert.ok(first <= last);
          assert.ok(count >= 2, `sightings ${count}`);
          // Read a moment after the time file: the same second, or a later one.
          const infoSeconds = Number(last / 1_000_000_000n);
          assert.ok(infoSeconds >= seconds && infoSeconds <= seconds + 2, `${infoSeconds} vs ${seconds}`);
        }
      }
    });

    test("`vmtool vcpus --debugfs` parses the tree the real module wrote", () => {
      const tree = report.trees.get("fake-stable")!;
      const dir = join(work, `tree-smp${smp}`);
      writeTree(tree, join(dir, "vmtool"));
      const r = spawnSync(
        process.execPath,
        [CLI, "vcpus", "--debugfs", dir, "--source", "vmtool", "--sysregs", "--json"],
        { encoding: "utf8" },
      );
      assert.equal(r.status, 0, r.stderr);
      const doc = JSON.parse(r.stdout) as {
        source: string;
        globals: Array<{ name: string; value: string }>;
        cpus: Array<{
          cpu: number;
          sysregs?: Record<string, unknown>;
          vcpus: Array<{ vcpu: string; lastSeen: number; sightings?: number }>;
        }>;
        problems: unknown[];
      };
      assert.equal(doc.source, "vmtool");
      assert.deepEqual(doc.problems, []);
      assert.deepEqual(
        doc.globals.map((g) => [g.name, g.value]).sort(),
        [...tree.files]
          .filter(([p]) => p.split("/").length === 2)
          .map(([p, b]) => [p.slice(1), b.toString("latin1").trim()])
          .sort(),
      );
      assert.deepEqual(
        doc.cpus.map((c) => c.cpu),
        Array.from({ length: smp }, (_, i) => i),
      );
      for (const c of doc.cpus) {
        assert.deepEqual(c.vcpus.map((v) => v.vcpu).sort(), fakeAddresses(c.cpu, 3));
        assert.ok(c.sysregs, `no sysregs for cpu ${c.cpu}`);
        for (const v of c.vcpus) {
          const file = tree.files.get(`${cpuDir(c.cpu)}/${v.vcpu}`)!.toString("latin1");
          const info = tree.files.get(`${cpuDir(c.cpu)}/${v.vcpu}.info`)!.toString("latin1");
          assert.ok(Math.abs(v.lastSeen - parseInt(file, 10)) < 3, `${v.lastSeen} vs ${file}`);
          assert.equal(v.sightings, Number(/sightings (\d+)/.exec(info)![1]));
        }
      }
    });

    test("reads racing updates, interval changes and hot-plug; an open file holds the module", () => {
      assert.deepEqual(
        event(report, "CPUDIRS", "fake-after-race"),
        Array.from({ length: smp }, (_, i) => cpuDir(i).slice(1)),
      );
      assert.deepEqual(slabCounts(event(report, "SLABS", "fake-after-race")), { vmtool_cpu: smp, vmtool_vmcs: 3 * smp });
      assert.notEqual(event(report, "RMMOD", "fake-busy")[0], "0", "rmmod must be refused while a file is open");
      assert.equal(event(report, "RMMOD", "fake-race")[0], "0");
      assert.deepEqual(event(report, "SLABS", "fake-unloaded"), []);
    });

    test("a new interval_ms takes effect at once: the sleeping threads are woken", () => {
      assert.equal(event(report, "INSMOD", "fake-slow")[0], "0");
      assert.deepEqual(event(report, "ENTRIES", "slow"), ["1"]);
      assert.deepEqual(event(report, "ENTRIES", "fast"), ["3"]);
      // A thread asleep for 60 s is stopped at once too (else this boot would have timed out).
      assert.equal(event(report, "RMMOD", "fake-slow")[0], "0");
    });

    test("eviction: at most max_vmcs entries per CPU, least recently seen dropped, all freed at unload", () => {
      assert.equal(event(report, "INSMOD", "fake-evict")[0], "0");
      // Exact counts: slub_debug caches keep no per-CPU slabs. A thread evicting right then briefly holds
      // max_vmcs + 1 (the new entry is allocated first); without eviction there would be 6 per CPU.
      const counts = slabCounts(event(report, "SLABS", "fake-evict"));
      assert.equal(counts.vmtool_cpu, smp);
      assert.ok(counts.vmtool_vmcs >= 4 * smp && counts.vmtool_vmcs <= 5 * smp, JSON.stringify(counts));
      for (let cpu = 0; cpu < smp; cpu++) {
        const mine = report.events.find((e) => e[0] === "LIST" && e[2] === cpuDir(cpu).slice(1))?.slice(3);
        assert.ok(mine, `no listing of ${cpuDir(cpu)}`);
        const entries = entryNames(mine);
        assert.ok(entries.length >= 1 && entries.length <= 5, mine.join(" ")); // listed while entries churn
        const allowed = new Set(fakeAddresses(cpu, 6));
        for (const e of entries) assert.ok(allowed.has(e), e);
      }
      assert.equal(event(report, "RMMOD", "fake-evict")[0], "0");
      assert.deepEqual(event(report, "SLABS", "fake-evict-unloaded"), []);
      assert.deepEqual(event(report, "EXISTS", "fake-unloaded"), ["no"]);
    });
  });
}
