// KVM's binary statistics of real `vmtool run` VMs, read by `vmtool stat` in another process (copies of the
// stats fds the run holds, through pidfd_getfd), against what the run itself counted (--stats) and against
// vmtool's live counters.
import { test } from "node:test";
import assert from "node:assert/strict";
import { closeSync, existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import * as libc from "../../src/kvm/libc.js";
import { KVM } from "../../src/kvm/ioctls.js";
import { scanProcess } from "../../src/stats/discover.js";
import { pidfdGetfd, pidfdOpen } from "../../src/stats/sys.js";
import { GUEST_OUT, guests } from "../helpers/guests.js";
import { join } from "node:path";
import { countedGuest, runArgs } from "./guests.js";
import { event, jsonLines, startVm, stat, waitFor, type JsonVm } from "./helpers.js";

/** kvm_pvm emulates port I/O on a path that does not count `io_exits` (KVM's handle_io on VMX/SVM does). */
const pvm = existsSync("/sys/module/kvm_pvm");

interface RunStats {
  byReason: { key: string; count: number }[];
  byAddress: { key: string; count: number }[];
}
const lastJson = (stderr: string) => JSON.parse(stderr.trim().split("\n").pop()!) as RunStats;
const reason = (s: RunStats, k: string) => s.byReason.find((r) => r.key === k)?.count ?? 0;
const address = (s: RunStats, k: string) => s.byAddress.find((r) => r.key === k)?.count ?? 0;

function oneVm(stdout: string, pid: number): JsonVm {
  const lines = jsonLines(stdout);
  const vm = lines.at(-1)?.vms.find((v) => v.pid === pid);
  assert.ok(vm, `vmtool stat saw pid ${pid}:\n${stdout}`);
  return vm;
}

test("binary stats of a vmtool run, read from another process, match its own --stats", async (t) => {
  const loops = 1000;
  const vm = startVm(t, [...runArgs(countedGuest(loops), "--stats", "--json")]);
  // The guest's exits are done once vmtool's own live counters say so (the guest then spins without exits).
  await waitFor("the guest's 4 exits per round", () => {
    const r = stat(["--json", "-i", "-p", String(vm.pid), "--count", "1", "-s", "0.1", "--source", "vmtool"]);
    const v = r.status === 0 ? jsonLines(r.stdout).at(-1)?.vms[0] : undefined;
    return event(v, "vmtool", "vmtool_exits(MMIO)")?.total === 2 * loops ? true : undefined;
  });
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
    "stats,vmtool",
  ]);
  assert.equal(r.status, 0, r.stderr);
  const v = oneVm(r.stdout, vm.pid);
  assert.deepEqual(v.sources.stats, { used: true }, JSON.stringify(v.sources));
  assert.equal(v.vmm, "vmtool");
  const kvm = (n: string) => event(v, "stats", n)?.total;
  // Why the stats fds the VMM holds are what gets copied: a copy of its VM fd is refused (EIO: KVM answers no
  // VM ioctl from a process whose mm is not the VM's).
  const p = scanProcess(vm.pid);
  assert.ok(p && typeof p === "object");
  const pidfd = pidfdOpen(vm.pid);
  const vmCopy = pidfdGetfd(pidfd, p.vmFds[0]);
  assert.ok(vmCopy >= 0, `pidfd_getfd of the VM fd: ${vmCopy}`);
  assert.equal(libc.ioctlInt(vmCopy, KVM.GET_STATS_FD, 0), -1);
  assert.equal(libc.errnoName(libc.errno()), "EIO");
  closeSync(vmCopy);
  closeSync(pidfd);
  // The run's own count, as it ends.
  vm.kill("SIGTERM");
  assert.equal(await vm.ended, 143, vm.stderr());
  const own = lastJson(vm.stderr());
  assert.equal(reason(own, "MMIO"), 2 * loops);
  assert.equal(reason(own, "IO"), 2 * loops);
  // Every MMIO exit goes to user space: KVM's count is the run's, exactly.
  assert.equal(kvm("mmio_exits"), reason(own, "MMIO"));
  assert.equal(kvm("io_exits"), pvm ? 0 : reason(own, "IO"), `io_exits on ${pvm ? "kvm_pvm" : "this KVM"}`);
  // KVM counts every exit, also those it handles itself: at least the run's (its last one, SIGTERM's, after).
  assert.ok(kvm("exits")! >= reason(own, "IO") + reason(own, "MMIO"), `exits ${kvm("exits")}`);
  // vmtool's live counters, read while the run was going, say what --stats said at its end.
  assert.equal(event(v, "vmtool", "vmtool_exits(IO)")?.total, reason(own, "IO"));
  assert.equal(event(v, "vmtool", "vmtool_io(0x80,out)")?.total, address(own, "port 0x80 out"));
  assert.equal(event(v, "vmtool", "vmtool_io(0x81,in)")?.total, address(own, "port 0x81 in"));
  assert.equal(
    event(v, "vmtool", "vmtool_mmio(0xe0000000,read)")?.total,
    address(own, "mmio 0xe0000000 read"),
  );
  assert.equal(
    event(v, "vmtool", "vmtool_mmio(0xe0000000,write)")?.total,
    address(own, "mmio 0xe0000000 write"),
  );
  // Types and units come from the descriptors.
  const wait = event(v, "stats", "halt_wait_ns")!;
  assert.deepEqual([wait.type, wait.unit, wait.scale], ["cumulative", "seconds", 1e-9]);
  assert.equal(event(v, "stats", "blocking")?.unit, "boolean");
  assert.equal(event(v, "stats", "halt_wait_hist")?.type, "log-hist");
  assert.equal(event(v, "stats", "max_mmu_rmap_size")?.type, "peak");
});

test("--cpus 2: each vCPU's values apart, and halt_wait_hist's buckets agree with halt_wait_ns", async (t) => {
  guests();
  const elf = join(GUEST_OUT, "smp-hello.elf");
  const vm = startVm(t, ["run", "--cpus", "2", "--cmdline", "stay", "--stats", "--json", elf]);
  await waitFor("both CPUs up", () => (/BSP: 1 of 1 APs up\n/.test(vm.stdout()) ? true : undefined));
  // The BSP sleeps in `sti; hlt`: vmtool's halt checks wake it now and then, each wait goes into the histogram.
  const before = stat([
    "--json",
    "-i",
    "-p",
    String(vm.pid),
    "--count",
    "1",
    "-s",
    "0.1",
    "--source",
    "stats",
  ]);
  const waitsBefore = event(oneVm(before.stdout, vm.pid), "stats", "halt_wait_hist")?.total ?? 0;
  await waitFor(
    "halt waits",
    () => {
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
        "stats",
      ]);
      return (event(oneVm(r.stdout, vm.pid), "stats", "halt_wait_hist")?.total ?? 0) > waitsBefore + 2
        ? true
        : undefined;
    },
    30_000,
  );
  // Stopped, nothing moves: the values read are one consistent state.
  vm.kill("SIGSTOP");
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
    "stats,vmtool",
  ]);
  assert.equal(r.status, 0, r.stderr);
  const v = oneVm(r.stdout, vm.pid);
  assert.deepEqual(v.vcpus, [0, 1]);
  assert.ok(
    v.threads["0"] > 0 && v.threads["1"] > 0 && v.threads["0"] !== v.threads["1"],
    JSON.stringify(v.threads),
  );
  // The AP printed "AP 1 up\n" on the debug console, one OUT per byte; the BSP printed the rest.
  const console = event(v, "vmtool", "vmtool_io(0xe9,out)")!;
  assert.equal(console.vcpus?.["1"].total, "AP 1 up\n".length);
  assert.equal(console.vcpus?.["0"].total, vm.stdout().length - "AP 1 up\n".length);
  for (const id of ["0", "1"]) {
    const exits = event(v, "stats", "exits")!.vcpus![id].total;
    // A kick can end KVM_RUN before the guest ran (immediate_exit): vmtool sees an INTR exit, KVM counts none.
    const kicks = event(v, "vmtool", "vmtool_exits(INTR)")?.vcpus?.[id]?.total ?? 0;
    const own = event(v, "vmtool", "vmtool_exits")!.vcpus![id].total - kicks;
    assert.ok(exits >= own, `vCPU ${id}: KVM counted ${exits} exits, vmtool ${own} besides kicks`);
  }
  const exits = event(v, "stats", "exits")!;
  assert.equal(
    exits.total,
    exits.vcpus!["0"].total + exits.vcpus!["1"].total,
    "the VM's value is its vCPUs' sum",
  );
  // Bucket i > 0 of a log histogram holds waits of [2^(i-1), 2^i) ns: the waits' sum lies within the buckets'.
  const hist = event(v, "stats", "halt_wait_hist")!.vcpus!["0"].buckets!;
  const ns = event(v, "stats", "halt_wait_ns")!.vcpus!["0"].total;
  assert.equal(hist.length, 32);
  const low = hist.reduce((s, c, i) => s + c * (i === 0 ? 0 : 2 ** (i - 1)), 0);
  const high = hist.reduce((s, c, i) => s + c * 2 ** i, 0);
  assert.ok(hist.reduce((s, c) => s + c, 0) > 2, `some waits: ${hist.join(" ")}`);
  assert.ok(low <= ns && ns < high, `halt_wait_ns ${ns} within the buckets' [${low}, ${high})`);
  vm.kill("SIGCONT");
  vm.kill("SIGTERM");
  assert.equal(await vm.ended, 143);
  const own = lastJson(vm.stderr());
  assert.equal(address(own, "port 0xe9 out"), console.total, "--stats counted the same console writes");
});

test("a VMM that holds stats fds and publishes nothing (as QEMU 8.1 and later): its fds found and copied", async (t) => {
  // A run directory where no `vmtool stat` looks: this run is, to stat, any VMM holding stats fds.
  const runtime = mkdtempSync(join(tmpdir(), "unpublished-"));
  t.after(() => rmSync(runtime, { recursive: true, force: true }));
  const loops = 1000;
  const vm = startVm(t, runArgs(countedGuest(loops)), { ...process.env, XDG_RUNTIME_DIR: runtime });
  const args = ["--json", "-i", "-p", String(vm.pid), "--count", "2", "-s", "0.1"];
  const v = await waitFor("the guest's MMIO exits, counted by KVM", () => {
    const r = stat(args);
    const got =
      r.status === 0
        ? jsonLines(r.stdout)
            .at(-1)
            ?.vms.find((x) => x.pid === vm.pid)
        : undefined;
    return event(got, "stats", "mmio_exits")?.total === 2 * loops ? got : undefined;
  });
  assert.deepEqual(v.sources.stats, { used: true });
  assert.match(v.sources.vmtool?.note ?? "", /publishes no counters/);
  assert.equal(event(v, "vmtool", "vmtool_exits"), undefined);
  assert.equal(event(v, "stats", "exits")?.vcpus?.["0"]?.total, event(v, "stats", "exits")?.total);
  vm.kill("SIGTERM");
  assert.equal(await vm.ended, 143, vm.stderr());
});
