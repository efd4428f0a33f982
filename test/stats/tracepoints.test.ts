// KVM tracepoints counted through perf counters (root), for the test's own VM only (other VMs share this host):
// per thread of its process (-p). Compared with vmtool's own counters over a window between two moments the
// VM is stopped (SIGSTOP), when neither can move. Also kvm_stat's host-wide mode (-t: per-CPU counters).
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { CLI } from "../helpers/paths.js";
import { findTracefs, kvmEvents, symbolTable } from "../../src/stats/tracefs.js";
import { KVM_EXIT } from "../../src/kvm/ioctls.js";
import { busyGuest, runArgs } from "./guests.js";
import { event, isRoot, startVm, stat, waitFor, type JsonLine } from "./helpers.js";

const pvm = existsSync("/sys/module/kvm_pvm");
const skip = !isRoot && "tracepoints need root";

test(
  "the kernel's own reason tables, read from the tracepoints' formats, agree with <linux/kvm.h>",
  { skip },
  () => {
    const events = kvmEvents(findTracefs()!);
    const exit = events.find((e) => e.name === "kvm_userspace_exit")!;
    assert.ok(exit.fields.has("reason"));
    const table = symbolTable(exit.format, "reason");
    assert.ok(table.size >= 25, `${table.size} reasons`);
    for (const [value, name] of table)
      assert.equal(KVM_EXIT[name.replace(/^KVM_EXIT_/, "") as keyof typeof KVM_EXIT], value, name);
    const hw = events.find((e) => e.name === "kvm_exit")!;
    assert.equal(symbolTable(hw.format, "exit_reason", 0).get(12), "HLT", "VMX table first");
    assert.equal(symbolTable(hw.format, "exit_reason", 1).get(0x78), "hlt", "SVM table second");
  },
);

test(
  "tracepoints counted per thread of one VM (-p) agree with vmtool's own counters",
  { skip },
  async (t) => {
    const vm = startVm(t, runArgs(busyGuest()));
    await waitFor("the VM", () =>
      stat(["-1", "-p", String(vm.pid), "-f", "vmtool"]).stdout.includes("vmtool_exits") ? true : undefined,
    );
    const w = spawn(
      process.execPath,
      [CLI, "stat", "--json", "-p", String(vm.pid), "-s", "0.2", "--source", "tracepoints,vmtool"],
      {
        stdio: ["ignore", "pipe", "pipe"],
      },
    );
    t.after(() => w.kill("SIGKILL"));
    const lines: JsonLine[] = [];
    let buf = "";
    w.stdout.on("data", (d: Buffer) => {
      buf += d.toString();
      for (let nl = buf.indexOf("\n"); nl >= 0; nl = buf.indexOf("\n")) {
        lines.push(JSON.parse(buf.slice(0, nl)) as JsonLine);
        buf = buf.slice(nl + 1);
      }
    });
    const vmOf = (l: JsonLine) => l.vms.find((v) => v.pid === vm.pid);
    const total = (l: JsonLine, source: string, name: string) => event(vmOf(l), source, name)?.total ?? 0;
    const moving = (l: JsonLine) => (event(vmOf(l), "vmtool", "vmtool_exits")?.delta ?? 0) > 0;
    /** Two lines in a row in which nothing moved: the VM is stopped, and both sources were read after it. */
    const frozen = (from: number) =>
      waitFor("a stopped VM", () => {
        for (let i = from + 1; i < lines.length; i++)
          if (!moving(lines[i - 1]) && !moving(lines[i]) && i - 1 > from) return lines[i];
        return undefined;
      });
    await waitFor("counting", () => (lines.length > 2 && moving(lines.at(-1)!) ? true : undefined));
    vm.kill("SIGSTOP");
    const a = await frozen(lines.length);
    vm.kill("SIGCONT");
    await waitFor("running again", () =>
      lines.length > lines.indexOf(a) + 3 && moving(lines.at(-1)!) ? true : undefined,
    );
    vm.kill("SIGSTOP");
    const b = await frozen(lines.length);
    const d = (source: string, name: string) => total(b, source, name) - total(a, source, name);
    const pairs: [string, string][] = [
      ["kvm_userspace_exit(IO)", "vmtool_exits(IO)"],
      ["kvm_userspace_exit(MMIO)", "vmtool_exits(MMIO)"],
      ["kvm_userspace_exit(INTR)", "vmtool_exits(INTR)"],
      ["kvm_pio", "vmtool_exits(IO)"],
    ];
    assert.ok(
      d("vmtool", "vmtool_exits(IO)") > 100,
      `the guest ran: ${d("vmtool", "vmtool_exits(IO)")} IO exits`,
    );
    for (const [tp, own] of pairs) {
      // A thread stopped between KVM_RUN's return (where the tracepoint fires) and vmtool's count of that exit
      // is one behind at one end of the window: at most one apart.
      assert.ok(
        Math.abs(d("tracepoints", tp) - d("vmtool", own)) <= 1,
        `${tp} ${d("tracepoints", tp)} vs ${own} ${d("vmtool", own)}`,
      );
    }
    // Attributed to vCPU 0's thread (vmtool's counters say which thread runs it).
    const io = event(vmOf(b), "tracepoints", "kvm_userspace_exit(IO)")!;
    assert.equal(io.vcpus?.["0"]?.total, io.total);
    if (pvm) {
      assert.equal(total(b, "tracepoints", "kvm_exit"), 0);
      assert.ok(
        lines.some((l) =>
          l.notes.some((n) => /kvm_exit has not fired although kvm_userspace_exit has/.test(n)),
        ),
        "stat says kvm_exit never fires here",
      );
    }
    vm.kill("SIGCONT");
    w.kill("SIGTERM");
    assert.equal(await new Promise((r) => w.on("exit", r)), 0);
  },
);

test(
  "-t -1: kvm_stat's host-wide counting (one group per host CPU) sees this VM's exits",
  { skip },
  async (t) => {
    const vm = startVm(t, runArgs(busyGuest()));
    await waitFor("the VM", () =>
      stat(["-1", "-p", String(vm.pid), "-f", "vmtool"]).stdout.includes("vmtool_exits") ? true : undefined,
    );
    const r = stat(["-t", "-1", "-f", "kvm_userspace_exit|kvm_pio"]);
    assert.equal(r.status, 0, r.stderr);
    const row = (n: string) =>
      Number(new RegExp(`^${n.replace(/[()]/g, "\\$&")} +(\\d+) +(\\d+)$`, "m").exec(r.stdout)?.[2]);
    assert.ok(row("kvm_pio") > 100, r.stdout);
    assert.ok(row("kvm_userspace_exit(IO)") > 100, r.stdout);
    assert.ok(row("kvm_userspace_exit") >= row("kvm_userspace_exit(IO)") + row("kvm_userspace_exit(MMIO)"));
  },
);

test(
  "-t -p: -1 and -l -c of one VM's tracepoints, parsed as kvm_stat's users parse them",
  { skip },
  async (t) => {
    const vm = startVm(t, runArgs(busyGuest()));
    const pid = String(vm.pid);
    await waitFor("the VM", () =>
      stat(["-1", "-p", pid, "-f", "vmtool"]).stdout.includes("vmtool_exits") ? true : undefined,
    );
    // The guest makes one port write and one port read per round: kvm_pio's delta is that of the IO children.
    const one = stat(["-t", "-1", "-p", pid, "-f", "kvm_pio$|kvm_userspace_exit"]);
    assert.equal(one.status, 0, one.stderr);
    const rows = new Map(
      one.stdout
        .trimEnd()
        .split("\n")
        .map((l) => {
          const m = /^(\S+) +(\d+) +(\d+)$/.exec(l);
          assert.ok(m, `'${l}'`);
          return [m[1], Number(m[3])] as const;
        }),
    );
    assert.ok((rows.get("kvm_pio") ?? 0) > 100, one.stdout);
    assert.ok((rows.get("kvm_userspace_exit(IO)") ?? 0) > 100, one.stdout);
    assert.ok(
      Math.abs(rows.get("kvm_pio")! - rows.get("kvm_userspace_exit(IO)")!) <= 2,
      `one kvm_pio per port exit, give or take a moment at each end: ${one.stdout}`,
    );
    for (const n of rows.keys()) assert.match(n, /^(kvm_pio|kvm_userspace_exit)/, "only the -f events");
    // -l -c: a CSV header of the events, then one line of deltas per interval, every cell a number.
    const csv = stat([
      "-t",
      "-l",
      "-c",
      "-p",
      pid,
      "-s",
      "0.2",
      "--count",
      "2",
      "-f",
      "kvm_pio$|kvm_userspace_exit$",
    ]);
    assert.equal(csv.status, 0, csv.stderr);
    const [head, ...data] = csv.stdout.trimEnd().split("\n");
    assert.deepEqual(head.split(",").sort(), ["kvm_pio", "kvm_userspace_exit", "timestamp"]);
    assert.equal(data.length, 2);
    for (const d of data) {
      const cells = d.split(",");
      assert.equal(cells.length, 3, d);
      assert.ok(
        cells.slice(1).every((c) => /^\d+$/.test(c) && Number(c) > 0),
        d,
      );
    }
  },
);
