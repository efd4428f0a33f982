// Real gdb (batch mode) against `vmtool run --gdb` and real guests with symbols: the mode-walking guest
// (guest/tests/gdb-modes.S: real -> protected -> long mode), the SMP example with two and four vCPUs, the
// demo guest. Each test asserts what gdb printed and how vmtool ended.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { runWithGdb, modesGuest, hx, freePort, gdbHasPython, findInElf } from "./harness.js";
import { spawnSync } from "node:child_process";
import { createServer } from "node:net";
import { readFileSync } from "node:fs";
import { CLI } from "../helpers/paths.js";
import { GUEST_OUT, guests } from "../helpers/guests.js";
import { GDB_ARCHES, targetXml } from "../../src/gdb/registers.js";

function smpHello(): string {
  guests();
  return join(GUEST_OUT, "smp-hello.elf");
}
import { ROOT } from "../helpers/paths.js";

const SCRIPT = join(ROOT, "guest", "gdb", "vmtool.gdb");

/** The lines of `out` after the first line that contains `marker`. */
function after(out: string, marker: string): string {
  const i = out.indexOf(marker);
  assert.ok(i >= 0, `gdb's output has '${marker}':\n${out}`);
  return out.slice(i + marker.length);
}

/**
 * guest/gdb/vmtool.gdb needs a gdb with Python (its vmtool-reconnect is a Python command); without one (the
 * kvm_amd harness's gdb-minimal) the scripts use gdb's own commands for the same thing.
 */
const PY = gdbHasPython();
const helpers = PY ? [`source ${SCRIPT}`] : [];
const reconnect = PY ? ["vmtool-reconnect"] : ["disconnect", "target remote {target}"];

test("real -> protected -> long mode with hardware breakpoints: stepi, x/i per mode, hbreak, mode notice, reconnect, exact stepi over in/out/MMIO, watch, the guest's own int3", async () => {
  const g = modesGuest();
  const s = g.sym;
  const r = await runWithGdb({
    guest: g.bin,
    args: ["--gdb-wait"],
    script: [
      // Symbols after connecting: gdb keeps the i8086 layout it got (the ELF is a 64-bit file).
      `symbol-file ${g.elf}`,
      ...helpers,
      "echo @@real\\n",
      "info registers eip cs cs_base",
      "x/2i $pc",
      "stepi",
      "stepi",
      "echo @@rip-after-2\\n",
      "p/x $eip",
      "hbreak real_in",
      "continue",
      "echo @@in\\n",
      "stepi",
      "p/x $eip",
      "hbreak protected_out",
      "continue",
      "echo @@protected\\n",
      "info registers cs cr0",
      "x/1i $pc",
      "hbreak long_out",
      "continue",
      "echo @@reconnect\\n",
      ...reconnect,
      "echo @@long\\n",
      "info registers rip efer cs_attr gdtr_limit",
      "x/1i $pc",
      "delete",
      "stepi",
      "p/x $rip",
      "stepi",
      "p/x $rip",
      "stepi",
      "p/x $rip",
      "stepi",
      "echo @@after-mmio\\n",
      "p/x $rip",
      "watch *(int *)&counter",
      "continue",
      "echo @@watch\\n",
      "p/x $rip",
      "delete",
      "set var *(int *)&go = 1",
      "continue",
    ],
  });
  const o = r.gdb;
  // Real mode: 16-bit disassembly at 0x7c00, two exact steps.
  const real = after(o, "@@real");
  assert.match(real, /eip\s+0x7c00/);
  assert.match(real, /cs\s+0x0\s/);
  assert.match(real, /cli\s*\n.*xor\s+%ax,%ax/);
  assert.match(after(o, "@@rip-after-2"), /= 0x7c03/);
  // A hardware breakpoint in real mode, then a step over `in` lands on the next instruction.
  assert.match(o, /Hardware assisted breakpoint 1 at .*\s+Breakpoint 1, .*real_in/);
  assert.match(after(o, "@@in"), new RegExp(`= ${hx(s.real_write)}`));
  // A hardware breakpoint in protected mode; 32-bit disassembly; the mode notice.
  assert.match(o, /vmtool: vCPU 0 is now in protected mode; gdb was given the i8086 register layout/);
  const prot = after(o, "@@protected");
  assert.match(prot, /cs\s+0x8\s/);
  assert.match(prot, /cr0\s+0x\w+\s+\[ PE ET /);
  assert.match(prot, /mov\s+\$0x50,%al/);
  assert.match(o, /vmtool: vCPU 0 is now in long mode \(64-bit\)/);
  // After reconnecting: the x86-64 layout, vmtool's registers, exact steps over OUT and the MMIO write.
  const long = after(o, "@@long");
  assert.match(long, new RegExp(`rip\\s+${hx(s.long_out)}`));
  assert.match(long, /efer\s+0x500\s+\[ LME LMA \]/);
  assert.match(long, /cs_attr\s+0xa09[ab]/);
  assert.match(long, /gdtr_limit\s+0x1f/);
  assert.match(long, /mov\s+\$0x4c,%al/);
  const rips = [...long.matchAll(/\$\d+ = (0x[0-9a-f]+)/g)].map((m) => parseInt(m[1], 16));
  // mov $'L',%al (2) / out (2) / mov $MMIO,%edi (5) / movl $0x55,(%rdi) (6)
  assert.deepEqual(rips.slice(0, 4), [s.long_out + 2, s.long_out + 4, s.long_mmio, s.long_after_mmio]);
  // The watchpoint stops after the writing instruction (incl counter, 7 bytes), with the old and new value.
  const watch = after(o, "@@after-mmio");
  assert.match(watch, /Old value = 0\s+New value = 1/);
  assert.match(after(o, "@@watch"), new RegExp(`= ${hx(s.count_loop + 7)}`));
  // The guest's own int3 went to its #BP handler, which wrote 0x2a to the exit port: status 85.
  assert.match(o, /exited with code 0125/);
  assert.match(r.stdout, /^RPLS\.*B$/);
  assert.equal(r.status, 85, r.stderr);
});

test("software breakpoints: break in real and long mode, an exact stepi from one, the guest's own int3 after them", async () => {
  const g = modesGuest();
  const s = g.sym;
  const r = await runWithGdb({
    guest: g.bin,
    args: ["--gdb-wait"],
    script: [
      `symbol-file ${g.elf}`,
      ...helpers,
      "break real_in",
      "continue",
      "echo @@in\\n",
      "p/x $eip",
      "stepi",
      "p/x $eip",
      "break long_out",
      "continue",
      "echo @@long\\n",
      "p/x $eip",
      "delete",
      // In the x86-64 layout, gdb writes the guest's int.
      ...reconnect,
      "set var *(int *)&go = 1",
      "continue",
    ],
  });
  const o = r.gdb;
  assert.match(o, /Breakpoint 1, .*real_in/);
  const rips = [...after(o, "@@in").matchAll(/\$\d+ = (0x[0-9a-f]+)/g)].map((m) => parseInt(m[1], 16));
  assert.deepEqual(rips, [s.real_in, s.real_write, s.long_out]);
  assert.match(o, /Breakpoint 2, .*long_out/);
  assert.match(o, /exited with code 0125/);
  assert.match(r.stdout, /^RPLS\.*B$/);
  assert.equal(r.status, 85, r.stderr);
});

test("gdb takes every register layout under every OS ABI it may choose (none, GNU/Linux, an ELF32 file's)", () => {
  const dir = mkdtempSync(join(tmpdir(), "vmtool-tdesc-"));
  try {
    for (const arch of GDB_ARCHES) {
      const xml = join(dir, `${arch.replace(":", "_")}.xml`);
      writeFileSync(xml, targetXml(arch));
      for (const osabi of ["none", "GNU/Linux", undefined]) {
        const args = ["-batch", "-nx"];
        // No `set osabi`: gdb takes the file's (a 32-bit ELF with no ABI note: gdb's default, GNU/Linux).
        if (osabi) args.push("-ex", `set osabi ${osabi}`);
        else if (arch !== "i386:x86-64") args.push(smpHello());
        args.push("-ex", `set tdesc filename ${xml}`, "-ex", "show architecture");
        let out: string;
        try {
          out = execFileSync("gdb", args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
        } catch (e) {
          const x = e as { stdout?: string; stderr?: string };
          assert.fail(`gdb ${arch} osabi ${osabi ?? "of the file"}: ${x.stdout ?? ""}${x.stderr ?? ""}`);
        }
        assert.doesNotMatch(
          out,
          /internal-error|rejected/,
          `${arch} osabi ${osabi ?? "of the file"}: ${out}`,
        );
        // With a 32-bit file and the i8086 layout gdb shows the file's i386 (it disassembles as i8086 once
        // connected: the real-mode test).
        if (osabi) assert.match(out, new RegExp(`currently "${arch}"`), `${arch} osabi ${osabi}: ${out}`);
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("a 32-bit guest under gdb's GNU/Linux OS ABI: gdb connects and reads fs_base", async () => {
  const r = await runWithGdb({
    guest: smpHello(),
    file: smpHello(),
    before: ["set osabi GNU/Linux"],
    args: ["--gdb-wait"],
    script: ["echo @@regs\\n", "info registers eip fs_base cr0", "kill"],
  });
  assert.doesNotMatch(r.gdb, /internal-error/);
  assert.match(after(r.gdb, "@@regs"), /fs_base\s+0x0/);
  assert.equal(r.status, 16, r.stderr);
});

test("gdb -ex 'target remote :PORT' guest.elf works with nothing else: --gdb tcp::PORT on 127.0.0.1", async () => {
  const r = await runWithGdb({
    guest: smpHello(),
    file: smpHello(),
    tcp: true,
    args: ["--gdb-wait"],
    script: ["echo @@regs\\n", "info registers eip cr0", "x/1i $pc", "kill"],
  });
  const regs = after(r.gdb, "@@regs");
  assert.match(r.stderr, /gdb: listening on 127\.0\.0\.1:\d+/);
  assert.match(regs, /eip\s+0x[0-9a-f]+\s+0x[0-9a-f]+ <_start/);
  assert.match(regs, /cr0\s+0x\w+\s+\[ PE /);
  assert.equal(r.status, 16, r.stderr);
});

test("bad --gdb options: one error line, status 2, nothing touched", async () => {
  const g = modesGuest();
  const dir = mkdtempSync(join(tmpdir(), "vmtool-gdb-opts-"));
  const busy = createServer();
  try {
    const file = join(dir, "not-a-socket");
    writeFileSync(file, "keep me");
    const port = await freePort();
    await new Promise<void>((resolve) => busy.listen(port, "127.0.0.1", resolve));
    const cases: [string[], RegExp][] = [
      [["--gdb-wait"], /--gdb-wait needs --gdb/],
      [["--gdb-arch", "i386"], /--gdb-arch needs --gdb/],
      [["-s", "--gdb", "tcp::1"], /give one of -s and --gdb/],
      [["--gdb", "tcp::99999"], /'99999' is not a TCP port/],
      [["--gdb", "tcp:::1:5"], /IPv6 address in brackets/],
      [["--gdb", "unix:"], /no socket path/],
      [["--gdb", `unix:${file}`], /the path exists and is not a socket/],
      [["--gdb", `tcp::${port}`], /cannot listen: EADDRINUSE/],
      [["--gdb", "tcp::1", "--gdb-arch", "sparc"], /--gdb-arch/],
      [["--gdb", "tcp::1", "--introspect", `listen:${join(dir, "k")}`], /give one of them/],
    ];
    for (const [args, msg] of cases) {
      const r = spawnSync(process.execPath, [CLI, "run", ...args, g.bin], {
        encoding: "utf8",
        timeout: 60_000,
      });
      assert.equal(r.status, 2, `${args.join(" ")}: ${r.stderr}`);
      assert.match(r.stderr, msg, args.join(" "));
      // (The option parser's own errors add the hint "(run with --help for usage)".)
      const lines = r.stderr
        .trim()
        .split("\n")
        .filter((l) => !/^\(run with --help/.test(l));
      assert.equal(lines.length, 1, `one line: ${r.stderr}`);
      assert.equal(r.stdout, "", "the guest never ran");
    }
    assert.equal(readFileSync(file, "utf8"), "keep me");
  } finally {
    busy.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("Ctrl-C stops a spinning guest; detach lets it finish with its usual exit status", async () => {
  const g = modesGuest();
  let interrupted = false;
  let seen: number | undefined;
  const r = await runWithGdb({
    guest: g.bin,
    file: g.elf,
    // The guest is running when gdb connects: whatever its mode then, the x86-64 layout of the ELF.
    args: ["--gdb-arch", "i386:x86-64"],
    script: [
      "echo @@continuing\\n",
      "continue",
      "echo @@stopped\\n",
      "p/x $rip",
      "set var *(int *)&go = 1",
      "detach",
    ],
    // Once gdb runs `continue` and the guest spins, interrupt gdb (it sends 0x03 to the stub) until it stops.
    // Once gdb has run `continue` and the guest prints again (it runs), interrupt gdb once: it sends 0x03.
    onGdbOutput: (gdbOut, guestOut, gdb) => {
      if (!gdbOut.includes("@@continuing")) return true;
      seen ??= guestOut.length;
      if (guestOut.length === seen) return true;
      interrupted = true;
      gdb.kill("SIGINT");
      return false;
    },
  });
  assert.ok(interrupted, `the guest spun: ${r.stdout}`);
  assert.match(r.gdb, /received signal SIGINT/);
  const rip = parseInt(/= (0x[0-9a-f]+)/.exec(after(r.gdb, "@@stopped"))?.[1] ?? "0", 16);
  assert.ok(rip >= g.sym.spin && rip < g.sym.guest_int3, `stopped in the spin loop: ${hx(rip)}`);
  assert.match(r.gdb, /Remote target\) detached/);
  assert.match(r.stdout, /^RPLS\.*B$/);
  assert.equal(r.status, 85, r.stderr);
});

test("kill ends the run with status 16", async () => {
  const g = modesGuest();
  const r = await runWithGdb({ guest: g.bin, args: ["--gdb-wait"], script: ["stepi", "kill"] });
  assert.match(r.gdb, /killed/);
  assert.equal(r.status, 16, r.stderr);
  assert.equal(r.stdout, "");
});

test("monitor commands: mode, regs sys, translate, phys, sstep, help", async () => {
  const g = modesGuest();
  const r = await runWithGdb({
    guest: g.bin,
    args: ["--gdb-wait"],
    script: [
      `symbol-file ${g.elf}`,
      ...helpers,
      "monitor help",
      "hbreak long_write",
      "continue",
      ...reconnect,
      PY ? "vmtool-mode" : "monitor mode",
      PY ? "vmtool-sys" : "monitor regs sys",
      "monitor translate 0x8008",
      "monitor translate 0x7fffffff0000",
      "monitor phys on",
      "x/1wx 0x8008",
      "monitor phys off",
      "monitor sstep irq on",
      "monitor sstep",
      "monitor nonsense",
      "kill",
    ],
  });
  const o = r.gdb;
  assert.match(o, /translate ADDR/);
  assert.match(o, /vCPU 0: long mode \(64-bit\), 4-level paging, CS 64-bit code, CPL 0/);
  assert.match(o, /gdb's register layout: i386:x86-64/);
  assert.match(o, /cr0\s+0x\w+\s+PE .*PG/);
  assert.match(o, /efer\s+0x\w+\s+LME LMA/);
  assert.match(o, /cs\s+0x0018/);
  // The walk, level by level, through the guest's own tables (CR3 0x20000, a 2 MiB page at 0).
  assert.match(o, /linear 0x8008: 4-level paging, CR3 0x20000/);
  assert.match(o, /PML4E\[0\] at 0x20000 = 0x0+21023 .*-> page-directory-pointer table 0x21000/);
  assert.match(o, /PDE\[0\]\s+at 0x22000 = 0x0+e3 .*PS -> 2 MiB page 0x0/);
  assert.match(o, /= physical 0x8008 \(2 MiB page 0x0 \+ 0x8008\), in guest RAM/);
  assert.match(o, /PML4E\[255\] at 0x207f8 = 0x0+\s+not present\s+no translation: the PML4E is not present/);
  assert.match(o, /0x8008:\s+0x00000003/);
  assert.match(o, /single steps: interrupts delivered/);
  assert.match(o, /unknown monitor command 'nonsense'/);
  assert.equal(r.status, 16);
});

test("monitor exits and break-on: stop after the next port access, MMIO access, exit reason", async () => {
  const g = modesGuest();
  const s = g.sym;
  const r = await runWithGdb({
    guest: g.bin,
    args: ["--gdb-wait"],
    script: [
      `symbol-file ${g.elf}`,
      "monitor exits",
      "monitor break-on io 0x10000",
      "monitor break-on exit NONSENSE",
      "monitor break-on io 0x80",
      "continue",
      "echo @@io\\n",
      "p/x $pc",
      "monitor break-on mmio 0xd0001002",
      "continue",
      "echo @@mmio\\n",
      "p/x $pc",
      "monitor exits",
      "monitor break-on exit io",
      "monitor break-on off",
      "kill",
    ],
  });
  const o = r.gdb;
  assert.match(o, /vCPU 0: no exit yet/);
  assert.match(o, /break-on io: PORT is 0\.\.0xffff/);
  assert.match(o, /'NONSENSE' is not a KVM exit reason/);
  // After the IN (2 bytes) at real_in: the next instruction, with the exit named.
  assert.match(o, /vmtool: vCPU 0 stopped after exit IO \(port 0x80 in\)/);
  assert.match(after(o, "@@io"), new RegExp(`= ${hx(s.real_write)}`));
  // The 4-byte write at 0xd0001000 covers 0xd0001002; the stop is after the instruction.
  assert.match(o, /stopped after exit MMIO \(0xd0001000, 4 bytes written\)/);
  const mmio = after(o, "@@mmio");
  assert.match(mmio, new RegExp(`= ${hx(s.long_after_mmio)}`));
  assert.match(mmio, /last exit: MMIO \(6\) 0xd0001000 write/);
  // R, P, L on 0xE9 and the IN: four port exits, and the MMIO write.
  assert.match(mmio, /IO\s+4\n/);
  assert.match(mmio, /MMIO\s+1\n/);
  assert.match(o, /the next IO exit stops the VM/);
  assert.match(o, /break-on: off/);
  assert.equal(r.status, 16, r.stderr);
});

/** pit-ticks (10 timer ticks awaited in `sti; hlt; mov ticks,%eax; cmp; jbe`, 1 kHz PIT on IRQ 0) and its loop. */
function pitTicks() {
  guests();
  const elf = join(GUEST_OUT, "pit-ticks.elf");
  const loop = findInElf(elf, [0xfb, 0xf4]);
  assert.ok(loop !== undefined, "the sti; hlt loop of pit-ticks");
  return {
    elf,
    inLoop: `($pc >= ${hx(loop)} && $pc < ${hx(loop + 16)})`,
    toLoop: [`hbreak *${hx(loop)}`, "continue", "delete"],
  };
}

test("single steps hold interrupts off by default, also over HLT with the in-kernel irqchip; monitor sstep irq on lets them in", async () => {
  const { elf, inLoop, toLoop } = pitTicks();
  // 150 steps (30 rounds of the loop, over 30 HLTs) with interrupts held off: never outside the loop.
  const blocked = await runWithGdb({
    guest: elf,
    file: elf,
    args: ["--pit", "--gdb-wait"],
    script: [
      ...toLoop,
      "set $t0 = (int)ticks",
      "set $i = 0",
      "set $out = 0",
      "while $i < 150",
      "  stepi",
      `  if !${inLoop}`,
      "    set $out = $out + 1",
      "  end",
      "  set $i = $i + 1",
      "end",
      "echo @@blocked\\n",
      "p $out",
      "p (int)ticks - $t0",
      "kill",
    ],
  });
  assert.match(
    after(blocked.gdb, "@@blocked"),
    /\$\d+ = 0\s+\$\d+ = 0/,
    "no step left the loop, no tick taken",
  );
  assert.equal(blocked.status, 16, blocked.stderr);

  // With interrupts let in, a step lands in the timer handler (bounded: the PIT ticks every millisecond).
  const irq = await runWithGdb({
    guest: elf,
    file: elf,
    args: ["--pit", "--gdb-wait"],
    script: [
      ...toLoop,
      "monitor sstep irq on",
      "set $i = 0",
      `while $i < 5000 && ${inLoop}`,
      "  stepi",
      "  set $i = $i + 1",
      "end",
      "echo @@irq\\n",
      "info symbol $pc",
      "kill",
    ],
  });
  assert.match(irq.gdb, /interrupts delivered\. An interrupt taken during a step has the trap flag/);
  assert.match(after(irq.gdb, "@@irq"), /pit_isr|pit_handler|pic_eoi/);
  assert.equal(irq.status, 16, irq.stderr);
});

test("steps over HLT with the in-kernel irqchip, then detach: the guest finishes as it does without gdb", async () => {
  const { elf, toLoop } = pitTicks();
  // 20 steps: four rounds of the loop, over four HLTs.
  const r = await runWithGdb({
    guest: elf,
    file: elf,
    args: ["--pit", "--gdb-wait"],
    script: [...toLoop, ...Array<string>(20).fill("stepi"), "detach"],
  });
  assert.match(r.stdout, /pit-ticks: 10 timer interrupts on IRQ 0/);
  assert.equal(r.status, 0, r.stderr);
});

test("a fault stops the VM for gdb instead of ending the run: the state is readable, continue faults again, kill", async () => {
  guests();
  const elf = join(GUEST_OUT, "triple-fault.elf");
  const r = await runWithGdb({
    guest: elf,
    file: elf,
    args: ["--gdb-wait"],
    script: [
      "continue",
      "echo @@fault\\n",
      "p/x $pc",
      "p/x $cs",
      "p/x $idtr_limit",
      "monitor exits",
      "continue",
      "echo @@again\\n",
      "kill",
    ],
  });
  const o = r.gdb;
  // A triple fault (SIGSEGV) or, where KVM's emulator runs the guest, an emulation failure (SIGILL).
  assert.match(o, /vmtool: the guest cannot go on: .*; the vCPU is stopped for inspection/);
  const [pc, cs, idtrLimit] = [...after(o, "@@fault").matchAll(/\$\d+ = (0x[0-9a-f]+)/g)]
    .slice(0, 3)
    .map((m) => parseInt(m[1], 16));
  if (pc === 0xfff0 && cs === 0xf000) {
    // kvm_amd INITs the vCPU on a triple fault: the registers are the reset state, and gdb is told so.
    assert.match(o, /Its registers are the reset state, not the state at the fault/);
    assert.equal(idtrLimit, 0xffff, "the reset IDTR");
  } else {
    assert.doesNotMatch(o, /reset state/);
    assert.equal(idtrLimit, 0, "registers readable: the guest's empty IDT");
  }
  assert.match(o, /Program received signal (SIGSEGV|SIGILL)/);
  assert.match(after(o, "@@fault"), /Program (received|terminated with) signal (SIGSEGV|SIGILL)/);
  assert.equal(r.stdout, "!");
  assert.equal(r.status, 16, r.stderr);
});

for (const [cpus, name] of [
  [2, "two"],
  [4, "four"],
] as const) {
  test(`${name} vCPUs are threads: info threads, thread N, step one while the others stay stopped`, async () => {
    const r = await runWithGdb({
      guest: smpHello(),
      file: smpHello(),
      args: ["--gdb-wait", "--cpus", String(cpus)],
      script: [
        "hbreak ap_main",
        "continue",
        "set $ap = $_thread",
        "echo @@hit\\n",
        "info threads",
        "set scheduler-locking on",
        "thread 1",
        "echo @@bsp-before\\n",
        "p/x $pc",
        'eval "thread %d", $ap',
        "echo @@ap-before\\n",
        "p/x $pc",
        "delete",
        "stepi",
        "stepi",
        "echo @@ap-after\\n",
        "p/x $pc",
        "thread 1",
        "echo @@bsp-after\\n",
        "p/x $pc",
        "set scheduler-locking off",
        "continue",
      ],
    });
    const o = r.gdb;
    assert.match(o, /Thread \d+ hit (Hardware assisted )?Breakpoint 1, .*ap_main/);
    for (let t = 1; t <= cpus; t++)
      assert.match(after(o, "@@hit"), new RegExp(`Thread ${t} .*vCPU ${t - 1}`));
    const pc = (marker: string) => parseInt(/= (0x[0-9a-f]+)/.exec(after(o, marker))?.[1] ?? "-1", 16);
    assert.equal(pc("@@bsp-after"), pc("@@bsp-before"), "vCPU 0 stayed stopped");
    assert.notEqual(pc("@@ap-after"), pc("@@ap-before"), "the AP stepped");
    assert.match(r.stdout, new RegExp(`BSP: ${cpus - 1} of ${cpus - 1} APs up`));
    assert.equal(r.status, 0, r.stderr);
  });
}
