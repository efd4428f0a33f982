// Several vCPUs through the CLI on real KVM: the SDK's smp-hello guest wakes the APs with INIT-SIPI-SIPI through
// its local APIC; each AP prints its APIC id. A triple fault on one AP stops the whole VM with that vCPU's dump.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { CLI } from "../helpers/paths.js";
import { GUEST_OUT, guests } from "../helpers/guests.js";

function smpHello(...args: string[]) {
  guests(); // builds every Makefile image, smp-hello.elf among them
  const r = spawnSync(process.execPath, [CLI, "run", ...args, join(GUEST_OUT, "smp-hello.elf")], {
    encoding: "utf8",
    timeout: 120_000,
    input: "",
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

for (const n of [2, 4]) {
  test(`smp-hello with --cpus ${n}: every AP wakes and prints its own APIC id, the VM ends when all halt`, () => {
    const r = smpHello("--cpus", String(n));
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.match(r.stdout, new RegExp(`BSP: ${n} CPUs in the machine description`));
    const ids = [...r.stdout.matchAll(/^AP (\d+) up$/gm)].map((m) => Number(m[1])).sort();
    assert.deepEqual(
      ids,
      Array.from({ length: n - 1 }, (_, i) => i + 1),
      r.stdout,
    );
    assert.match(r.stdout, new RegExp(`BSP: ${n - 1} of ${n - 1} APs up`));
  });
}

test("a triple fault on an AP stops the whole VM: exit 4 and the dump of that vCPU", () => {
  const r = smpHello("--cpus", "3", "--cmdline", "ap-fault");
  assert.equal(r.status, 4, r.stdout + r.stderr);
  assert.match(r.stderr, /vmtool: guest fault: vCPU 1: triple fault \(KVM_EXIT_SHUTDOWN\)/);
  // kvm_pvm (and kvm_intel) keep the faulting state; kvm_amd INITs the vCPU before reporting the shutdown, and
  // the dump then says it shows the reset state (docs/svm.md).
  assert.match(
    r.stderr,
    /cpu mode: 32-bit protected mode|\(the reset state: kvm_amd INITs a vCPU on a triple fault/,
  );
  assert.equal(r.stderr.match(/guest fault/g)?.length, 1, "one dump only: the faulting vCPU's");
});

test("with one vCPU, smp-hello finds no AP and says so (exit 0: nothing to wait for)", () => {
  const r = smpHello();
  assert.equal(r.status, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /BSP: 0 of 0 APs up/);
});

test("COM1 written by three APs at once, with no lock in the guest: every byte arrives once", () => {
  const r = smpHello("--cpus", "4", "--cmdline", "uart", "--json");
  assert.equal(r.status, 0, r.stdout + r.stderr);
  // The UART's bytes, without the debug console's lines (which may sit before, after or inside them).
  const uart = r.stdout.replace(/AP \d+ up\n|BSP: [^\n]*\n/g, "");
  for (const id of ["1", "2", "3"])
    assert.equal(uart.split("").filter((c) => c === id).length, 64, `AP ${id}: ${r.stdout}`);
  assert.match(uart, /^[123]{192}$/);
  const stats = JSON.parse(r.stderr.trim().split("\n").pop()!) as { forwarded: number };
  // 64 bytes per AP, each a THR write after at least one LSR read: all forwarded to the I/O worker.
  assert.ok(stats.forwarded >= 3 * 64 * 2, `forwarded ${stats.forwarded}`);
});

test("the machine description lists each CPU of --cpus 3 with its APIC id (and none for one CPU)", () => {
  guests();
  const run = (...a: string[]) =>
    spawnSync(process.execPath, [CLI, "run", ...a, join(GUEST_OUT, "hello-long.elf")], {
      encoding: "utf8",
      timeout: 60_000,
      input: "",
    });
  const r = run("--cpus", "3");
  assert.equal(r.status, 0, r.stderr);
  for (let i = 0; i < 3; i++)
    assert.match(r.stdout, new RegExp(`^dev cpu${i} +cpu +mmio 0xfee00000\\+4096 apic id ${i}$`, "m"));
  const one = run();
  assert.equal(one.status, 0, one.stderr);
  assert.doesNotMatch(one.stdout, /^dev cpu/m);
});
