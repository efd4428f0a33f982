// End to end: real guests under KVM (`vmtool run`) driving the devices through real port I/O, the in-kernel
// 8259 and IRQ 4. A hand-assembled real-mode guest checks the debug console and a 16-bit exit-port write; the
// UART self-test guest (guest/tests/uart-selftest.c, built here with gcc) checks registers, loopback, FIFO,
// the interrupt priority order, OUT2 gating and interrupts for bytes sent on vmtool's standard input.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CLI, DIST, ROOT } from "../helpers/paths.js";

interface Result {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `vmtool run ARGS`; `feed(stdout so far, stdin)` may write to the guest's standard input. */
function vmtoolRun(
  args: string[],
  feed?: (out: string, stdin: NodeJS.WritableStream) => void,
): Promise<Result> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, "run", ...args], { stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    const timer = setTimeout(() => child.kill("SIGKILL"), 60_000);
    child.stdout.setEncoding("latin1");
    child.stdout.on("data", (d: string) => {
      stdout += d;
      feed?.(stdout, child.stdin);
    });
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.stdin.on("error", () => {}); // the guest may end before reading everything
    child.on("error", reject);
    child.on("close", (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr });
    });
    if (!feed) child.stdin.end();
  });
}

test("real-mode guest: debug console output and presence check, 16-bit exit-port write", async () => {
  const dir = mkdtempSync(join(tmpdir(), "vmtool-devices-"));
  try {
    const image = join(dir, "ports.bin");
    // mov al,'A'; out 0xE9,al; in al,0xE9; out 0xE9,al; mov ax,0x1234; out 0xF4,ax; hlt
    writeFileSync(
      image,
      Uint8Array.of(0xb0, 0x41, 0xe6, 0xe9, 0xe4, 0xe9, 0xe6, 0xe9, 0xb8, 0x34, 0x12, 0xe7, 0xf4, 0xf4),
    );
    const r = await vmtoolRun(["--mode", "real", image]);
    assert.equal(r.stdout, "A\xe9", "the byte written, then the 0xE9 read back from the port");
    // (0x1234 << 1) | 1 = 0x2469; the OS keeps 8 bits: 0x69.
    assert.equal(r.status, 0x69, r.stderr);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

/** Builds guest/tests/uart-selftest.c like the SDK's Makefile builds its 32-bit examples. */
function buildSelfTest(): string {
  const sdk = join(ROOT, "guest");
  const out = join(DIST, "guests-devices");
  mkdirSync(out, { recursive: true });
  const cflags = [
    "-std=gnu11",
    "-O2",
    "-Wall",
    "-Wextra",
    "-Werror",
    "-ffreestanding",
    "-nostdlib",
    "-fno-pic",
    "-fno-pie",
    "-fno-stack-protector",
    "-fno-asynchronous-unwind-tables",
    "-fno-builtin",
    "-mgeneral-regs-only",
    "-m32",
    "-march=i686",
    `-I${join(sdk, "include")}`,
  ];
  const sources = ["lib/start32.S", "lib/printf.c", "lib/string.c", "tests/uart-selftest.c"];
  const objects = sources.map((s) => {
    const o = join(out, s.replace(/[/.]/g, "_") + ".o");
    execFileSync("gcc", [...cflags, "-c", join(sdk, s), "-o", o]);
    return o;
  });
  const elf = join(out, "uart-selftest.elf");
  execFileSync(
    "ld",
    [
      "-m",
      "elf_i386",
      "-nostdlib",
      "-static",
      "--build-id=none",
      "-z",
      "noexecstack",
      "-z",
      "max-page-size=0x1000",
    ].concat(["-T", join(sdk, "ld", "protected.ld"), ...objects, "-o", elf]),
  );
  return elf;
}

test("UART self-test guest: every check passes under KVM, with host input taken by interrupt", async () => {
  const elf = buildSelfTest();
  let sent = false;
  const r = await vmtoolRun([elf], (stdout, stdin) => {
    // Send only once the guest waits for input: earlier, loopback tests would swallow the bytes.
    if (!sent && stdout.includes("waiting for 3 bytes on COM1\n")) {
      sent = true;
      stdin.write("hi!");
      stdin.end();
    }
  });
  const fails = r.stdout.split("\n").filter((l) => l.startsWith("FAIL"));
  assert.deepEqual(fails, [], r.stdout + r.stderr);
  const summary = /uart-selftest: (\d+) checks, 0 failed/.exec(r.stdout);
  assert.ok(summary, `no summary line (status ${r.status}) in:\n${r.stdout}${r.stderr}`);
  assert.ok(Number(summary[1]) >= 30, `only ${summary[1]} checks ran`);
  assert.ok(r.stdout.includes(">"), "the byte written to THR under interrupts reached standard output");
  assert.equal(r.status, 0, r.stderr);
});
