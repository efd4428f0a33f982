// The stub through a small remote-protocol client of the test's own (packet by packet, so that every reply is
// checked as sent; it runs inside the kvm_amd VM of test/svm too): breakpoints, steps, watchpoints and Ctrl-C
// by the backend's method (kvm_pvm: 0xF1 and page protection; VMX/SVM: 0xCC with USE_SW_BP and DR7), and bad
// input of every kind: bad checksums, malformed packets, unmapped addresses, a second client, a client that
// vanishes mid-packet. vmtool never crashes; the guest finishes with its usual status.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { connect, type Socket } from "node:net";
import { mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CLI } from "../helpers/paths.js";
import { modesGuest } from "./harness.js";
import { checksum, framePacket } from "../../src/gdb/packets.js";

const work = mkdtempSync(join(tmpdir(), "vmtool-rsp-"));
process.on("exit", () => rmSync(work, { recursive: true, force: true }));

/** A remote-protocol client: acks, packets, replies in order. */
class Client {
  private buf = "";
  private waiters: (() => void)[] = [];
  closed = false;

  constructor(readonly socket: Socket) {
    socket.on("data", (d: Buffer) => {
      this.buf += d.toString("latin1");
      for (const w of this.waiters.splice(0)) w();
    });
    socket.on("close", () => {
      this.closed = true;
      for (const w of this.waiters.splice(0)) w();
    });
    socket.on("error", () => undefined);
  }

  static open(path: string): Promise<Client> {
    return new Promise((resolve, reject) => {
      const s = connect(path, () => resolve(new Client(s)));
      s.once("error", reject);
    });
  }

  raw(bytes: string): void {
    this.socket.write(Buffer.from(bytes, "latin1"));
  }

  /** The next thing the stub sent: '+', '-', or a packet's body (acked). */
  async next(): Promise<string> {
    for (;;) {
      const b = this.buf;
      if (b.startsWith("+") || b.startsWith("-")) {
        this.buf = b.slice(1);
        return b[0];
      }
      const m = /^\$([^#]*)#([0-9a-f]{2})/.exec(b);
      if (m) {
        this.buf = b.slice(m[0].length);
        assert.equal(parseInt(m[2], 16), checksum(Buffer.from(m[1], "latin1")), "the stub's checksum");
        this.raw("+");
        return m[1];
      }
      if (this.closed) return "<closed>";
      await new Promise<void>((r) => this.waiters.push(r));
    }
  }

  /** Send a packet; returns its reply (console O packets collected into `console`). */
  async ask(body: string, console: string[] = []): Promise<string> {
    this.socket.write(framePacket(body));
    assert.equal(await this.next(), "+", `ack of ${body}`);
    for (;;) {
      const r = await this.next();
      if (r.startsWith("O") && r !== "OK" && /^O[0-9a-f]+$/.test(r)) {
        console.push(Buffer.from(r.slice(1), "hex").toString());
        continue;
      }
      return r;
    }
  }
}

const le = (n: number, bytes: number) => {
  const b = Buffer.alloc(bytes);
  b.writeUIntLE(n, 0, bytes);
  return b.toString("hex");
};

/**
 * `vmtool run --gdb unix:SOCK --gdb-wait ARGS` as a child (its output collected; killed after 300 s): `until`
 * waits for a condition on what it printed, `ended` is its exit status, `stop` ends it.
 */
function startStub(sock: string, args: string[], env: NodeJS.ProcessEnv = process.env) {
  const vm = spawn(process.execPath, [CLI, "run", "--gdb", `unix:${sock}`, "--gdb-wait", ...args], {
    stdio: ["ignore", "pipe", "pipe"],
    env,
  });
  const out = { stdout: "", stderr: "" };
  vm.stdout.on("data", (d: Buffer) => (out.stdout += d.toString()));
  const stderrWaiters: (() => void)[] = [];
  vm.stderr.on("data", (d: Buffer) => {
    out.stderr += d.toString();
    for (const w of stderrWaiters.splice(0)) w();
  });
  const until = async (ok: () => boolean) => {
    while (!ok()) await new Promise<void>((r) => stderrWaiters.push(r));
  };
  const ended = new Promise<number | null>((resolve) => vm.on("close", (code) => resolve(code)));
  const timer = setTimeout(() => vm.kill("SIGKILL"), 300_000);
  const stop = () => {
    clearTimeout(timer);
    vm.kill("SIGKILL");
  };
  return { out, until, ended, stop };
}

test("the stub through its protocol: hardware breakpoints, steps, watchpoint, break-on io, Ctrl-C, bad input, a second client, a vanished one, reconnect, detach", async () => {
  const g = modesGuest();
  const s = g.sym;
  const sock = join(work, "stub.sock");
  const { out, until, ended, stop } = startStub(sock, [g.bin]);
  const listening = until(() => out.stderr.includes("listening"));
  try {
    await listening;
    assert.equal(statSync(sock).mode & 0o777, 0o600, "the socket is its owner's only");

    // A client that vanishes in the middle of a packet: nothing happens to the VM.
    const gone = await Client.open(sock);
    gone.raw("+$qSupported:multiprocess+;swbreak+#");
    gone.socket.destroy();
    await until(() => out.stderr.includes("debugger detached"));

    const c = await Client.open(sock);
    assert.match(
      await c.ask("qSupported:swbreak+;hwbreak+"),
      /PacketSize=.*qXfer:features:read\+.*swbreak\+/,
    );
    // A bad checksum is answered with '-'; the packet sent again is served.
    c.raw("$?#00");
    assert.equal(await c.next(), "-");
    assert.match(await c.ask("?"), /^T05thread:1;/);
    const xml = await c.ask("qXfer:features:read:target.xml:0,3fff");
    assert.match(xml, /^l.*<architecture>i8086<\/architecture>.*org\.vmtool\.x86\.sys/);
    // A second client is refused with an error, the first is not disturbed.
    const second = await Client.open(sock);
    assert.match(await second.ask("qSupported"), /^E\.vmtool: another gdb is attached/);
    assert.equal(await second.next(), "<closed>");
    assert.equal(await c.ask("QStartNoAckMode"), "OK");
    // From here on, no acks either way.
    const ask = async (body: string, consoleOut: string[] = []) => {
      if (process.env.RSP_DEBUG) process.stderr.write(`> ${body}\n`);
      c.socket.write(framePacket(body));
      for (;;) {
        const r = await c.next();
        if (r === "+") continue;
        if (/^O[0-9a-f]+$/.test(r)) {
          consoleOut.push(Buffer.from(r.slice(1), "hex").toString());
          continue;
        }
        return r;
      }
    };
    // Malformed packets and bad arguments.
    assert.equal(await ask("mzz,4"), "E01");
    assert.equal(await ask("m7c00"), "E01");
    assert.equal(await ask("pffff"), "E01");
    assert.equal(await ask("Z0,nothex,1"), "E01");
    assert.equal(await ask("Hg99"), "E01");
    assert.equal(await ask("vCont;x"), "E01");
    assert.equal(await ask("unknown-packet"), "");
    // Memory outside RAM, and a breakpoint there.
    assert.equal(await ask("m7fff0000000,10"), "E14");
    assert.match(await ask("Z0,7fff0000000,1"), /^E\..*not/);
    // monitor break-on io: a stop after the IN at real_in, the instruction complete (AL read), on either
    // backend (the port exit's instruction is completed by a KVM_RUN with immediate_exit).
    const rcmd = (t: string) => `qRcmd,${Buffer.from(t).toString("hex")}`;
    assert.equal(await ask(rcmd("break-on io 0x80")), "OK");
    const ioStop: string[] = [];
    assert.match(await ask("vCont;c", ioStop), /^T05thread:1;/);
    assert.match(ioStop.join(""), /stopped after exit IO \(port 0x80 in\)/);
    assert.equal((await ask("p8")).slice(0, 8), le(s.real_write, 4));
    // A hardware breakpoint in long mode: the stop says hwbreak, with a console notice of the mode.
    assert.equal(await ask(`Z1,${s.long_out.toString(16)},1`), "OK");
    const notices: string[] = [];
    const hit = await ask("vCont;c", notices);
    assert.match(hit, /^T05thread:1;hwbreak:;/);
    assert.match(notices.join(""), /now in long mode/);
    // The register layout stays i8086's: eip is 4 bytes at offset 32 of 'g'.
    const regs = await ask("g");
    assert.equal(regs.slice(64, 72), le(s.long_out, 4));
    assert.equal(await ask(`z1,${s.long_out.toString(16)},1`), "OK");
    // A single step over OUT is exact.
    assert.match(await ask("vCont;s:1"), /^T05thread:1;$/);
    assert.equal((await ask("p8")).slice(0, 8), le(s.long_out + 2, 4));
    // A range step inside the vCPU's code: stops at the first instruction outside it.
    assert.match(await ask(`vCont;r${s.long_out.toString(16)},${s.long_after_mmio.toString(16)}:1`), /^T05/);
    assert.equal((await ask("p8")).slice(0, 8), le(s.long_after_mmio, 4));
    // A write watchpoint on the counter: the stop is after the writing instruction, with the address.
    assert.equal(await ask(`Z2,${s.counter.toString(16)},4`), "OK");
    assert.match(await ask("vCont;c"), new RegExp(`^T05thread:1;watch:${s.counter.toString(16)};`));
    assert.equal((await ask("p8")).slice(0, 8), le(s.count_loop + 7, 4));
    assert.equal(await ask(`m${s.counter.toString(16)},4`), le(1, 4));
    assert.equal(await ask(`z2,${s.counter.toString(16)},4`), "OK");
    // Ctrl-C on the spinning guest.
    c.socket.write(framePacket("vCont;c"));
    c.raw("\x03");
    assert.match(await c.next(), /^T02thread:1;/);
    // Let it finish: go = 1, detach. The guest's own int3 reaches its handler (status 85).
    assert.equal(await ask(`M${s.go.toString(16)},4:${le(1, 4)}`), "OK");
    assert.equal(await ask("D"), "OK");
    const status = await ended;
    assert.match(out.stdout, /^RPLS\.*B$/);
    assert.equal(status, 85, out.stderr);
    assert.doesNotMatch(out.stderr, /internal error/);
  } finally {
    stop();
  }
});

test("software breakpoints through the protocol: the stop says swbreak, planted bytes never show in reads", async () => {
  const g = modesGuest();
  const s = g.sym;
  const sock = join(work, "stub-sw.sock");
  const { out, until, ended, stop } = startStub(sock, [g.bin]);
  try {
    await until(() => out.stderr.includes("listening"));
    const c = await Client.open(sock);
    const ask = (body: string, consoleOut: string[] = []) => c.ask(body, consoleOut);
    assert.match(await ask("qSupported:swbreak+;hwbreak+"), /swbreak\+/);
    const at = s.long_out.toString(16);
    const code = await ask(`m${at},2`);
    assert.equal(code, "b04c", "mov $'L',%al");
    assert.equal(await ask(`Z0,${at},1`), "OK");
    assert.equal(await ask(`m${at},2`), code, "the planted byte does not show");
    assert.match(await ask("vCont;c"), /^T05thread:1;swbreak:;/);
    assert.equal((await ask("p8")).slice(0, 8), le(s.long_out, 4));
    assert.equal(await ask(`m${at},2`), code, "nor while stopped at it");
    assert.equal(await ask(`z0,${at},1`), "OK");
    assert.equal(await ask(`m${at},2`), code);
    // Let it finish: the guest's own int3 reaches its handler (status 85).
    assert.equal(await ask(`M${s.go.toString(16)},4:${le(1, 4)}`), "OK");
    assert.equal(await ask("D"), "OK");
    assert.equal(await ended, 85, out.stderr);
    assert.match(out.stdout, /^RPLS\.*B$/);
  } finally {
    stop();
  }
});

test("the rest of the protocol: threads (two vCPUs), qAttached, qOffsets, G/P/X, vCont C/S/t, read and access watchpoints, k", async () => {
  const g = modesGuest();
  const s = g.sym;
  const sock = join(work, "stub2.sock");
  const { out, until, ended, stop } = startStub(sock, ["--cpus", "2", g.bin]);
  try {
    await until(() => out.stderr.includes("listening"));
    const c = await Client.open(sock);
    const ask = (body: string, consoleOut: string[] = []) => c.ask(body, consoleOut);
    assert.match(await ask("qSupported:swbreak+;hwbreak+;vContSupported+"), /vContSupported\+/);
    assert.match(await ask("vCont?"), /^vCont;c;C;s;S;t;r$/);
    assert.equal(await ask("qAttached"), "1");
    assert.equal(await ask("qOffsets"), "Text=0;Data=0;Bss=0");
    // Each vCPU a thread; the AP waits for INIT-SIPI.
    assert.equal(await ask("qfThreadInfo"), "m1,2");
    assert.equal(await ask("qsThreadInfo"), "l");
    assert.equal(await ask("qC"), "QC1");
    assert.equal(await ask("T2"), "OK");
    assert.equal(await ask("T3"), "E01");
    const extra = (t: number) => ask(`qThreadExtraInfo,${t}`).then((h) => Buffer.from(h, "hex").toString());
    assert.match(await extra(1), /vCPU 0.*real mode/);
    assert.match(await extra(2), /vCPU 1.*INIT-SIPI/);
    assert.equal(await ask("Hg2"), "OK");
    assert.match(await ask("p8"), /^[0-9a-f]{8}$/);
    assert.equal(await ask("Hg1"), "OK");
    // G writes what g read (unchanged), P one register: eax (register 0) of vCPU 0.
    const regs = await ask("g");
    assert.equal(await ask(`G${regs}`), "OK");
    assert.equal(await ask("g"), regs);
    assert.equal(await ask(`P0=${le(0x12345678, 4)}`), "OK");
    assert.equal(await ask("p0"), le(0x12345678, 4));
    // X (binary write, with an escaped '}' byte) and M, read back with m, in the guest's scratch data.
    const at = s.counter.toString(16);
    const old = await ask(`m${at},4`);
    // 0x7d is the escape byte: each data byte 0x7d is sent as 0x7d 0x5d.
    c.socket.write(
      framePacket(Buffer.concat([Buffer.from(`X${at},2:`), Buffer.from([0x7d, 0x5d, 0x7d, 0x5d])])),
    );
    assert.equal(await c.next(), "+");
    assert.equal(await c.next(), "OK");
    assert.equal(await ask(`m${at},2`), "7d7d");
    assert.equal(await ask(`M${at},4:${old}`), "OK");
    // Read and access watchpoints on the counter: the read watchpoint is served by the page method or
    // refused (empty: gdb then asks for an access one, as with QEMU); the access one stops at its write.
    const z3 = await ask(`Z3,${at},4`);
    assert.ok(z3 === "OK" || z3 === "", `Z3: ${z3}`);
    if (z3 === "OK") assert.equal(await ask(`z3,${at},4`), "OK");
    assert.equal(await ask(`Z4,${at},4`), "OK");
    // vCont;C (a signal given back is dropped: the guest has no signals) with t for the other thread.
    assert.match(await ask("vCont;C05:1;t"), new RegExp(`^T05thread:1;awatch:${at};`));
    assert.equal(await ask(`z4,${at},4`), "OK");
    // vCont;S steps like s.
    const before = Buffer.from((await ask("p8")).slice(0, 8), "hex").readUInt32LE(0);
    assert.match(await ask("vCont;S05:1"), /^T05thread:1;$/);
    const afterStep = Buffer.from((await ask("p8")).slice(0, 8), "hex").readUInt32LE(0);
    assert.ok(afterStep > before && afterStep - before <= 15, `one instruction: ${before} -> ${afterStep}`);
    // k ends the run with status 16.
    c.socket.write(framePacket("k"));
    assert.equal(await ended, 16, out.stderr);
    assert.equal(out.stdout.includes("B"), false, "the guest did not reach its end");
  } finally {
    stop();
  }
});

test("vmtool says it listens once the stub can answer: after every vCPU thread runs, with --gdb-wait after they wait at their first instruction", async () => {
  const g = modesGuest();
  const sock = join(work, "stub-ready.sock");
  // The start-up marks (docs/run.md) put each thread's steps on stderr in the order they happen.
  const { out, until, ended, stop } = startStub(sock, ["--cpus", "2", g.bin], {
    ...process.env,
    VMTOOL_STARTUP_MARKS: "1",
  });
  try {
    await until(() => out.stderr.includes("gdb: listening"));
    const before = out.stderr.slice(0, out.stderr.indexOf("gdb: listening"));
    // Both vCPU threads entered their run loop (and parked there) before the line.
    assert.equal(before.match(/startup: +[\d.]+ vcpu first KVM_RUN/g)?.length, 2, out.stderr);
    const c = await Client.open(sock);
    assert.match(await c.ask("qSupported"), /PacketSize/);
    assert.match(await c.ask("?"), /^T05thread:1;/);
    c.socket.write(framePacket("k"));
    assert.equal(await ended, 16, out.stderr);
  } finally {
    stop();
  }
});
