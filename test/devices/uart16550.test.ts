// The 16550A UART as a state machine: every register, every interrupt source and how it clears, the priority
// order, FIFO trigger levels, overrun, loopback, divisor latch, scratch, OUT2 gating, host input queue.
import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { ByteQueue } from "../../src/devices/byte-queue.js";
import {
  FCR,
  IER,
  IIR,
  LCR,
  LSR,
  MCR,
  MSR,
  Uart16550,
  type UartOptions,
} from "../../src/devices/uart16550.js";

const RBR = 0,
  THR = 0,
  DLL = 0,
  IER_ = 1,
  DLM = 1,
  IIR_ = 2,
  FCR_ = 2,
  LCR_ = 3,
  MCR_ = 4,
  LSR_ = 5,
  MSR_ = 6,
  SCR = 7;

/** A UART with a recording sink and IRQ line; `out()` is what it transmitted, `edges` every level it drove. */
function rig(opts: Partial<UartOptions> = {}) {
  const sent: number[] = [];
  const edges: boolean[] = [];
  const uart = new Uart16550({
    sink: (b) => sent.push(...b),
    irq: { setLevel: (h) => edges.push(h) },
    ...opts,
  });
  const rd = (r: number) => uart.pioRead(r, 1);
  const wr = (r: number, v: number) => uart.pioWrite(r, 1, v);
  const out = () => Buffer.from(sent).toString("latin1");
  const iirId = () => rd(IIR_) & 0x0f;
  return { uart, rd, wr, sent, edges, out, iirId };
}

const bytes = (s: string) => new Uint8Array(Buffer.from(s, "latin1"));

describe("reset state", () => {
  test("registers read their documented reset values", () => {
    const { rd } = rig();
    assert.equal(rd(IER_), 0);
    assert.equal(rd(IIR_), 0x01, "no interrupt pending, FIFOs off");
    assert.equal(rd(LCR_), 0);
    assert.equal(rd(MCR_), 0);
    assert.equal(rd(LSR_), LSR.THRE | LSR.TEMT, "0x60: transmitter empty, no data");
    assert.equal(rd(MSR_), MSR.CTS | MSR.DSR | MSR.DCD, "a ready far end, no deltas at power-on");
    assert.equal(rd(SCR), 0);
  });
});

describe("THR / RBR", () => {
  test("bytes written to THR reach the sink in order; LSR stays THRE|TEMT", () => {
    const { wr, rd, out } = rig();
    for (const c of "hello\n") wr(THR, c.charCodeAt(0));
    assert.equal(out(), "hello\n");
    assert.equal(rd(LSR_) & (LSR.THRE | LSR.TEMT), LSR.THRE | LSR.TEMT);
  });

  test("pushInput sets DR; RBR reads the bytes in order, then DR clears and RBR keeps the last byte", () => {
    const { uart, rd, wr } = rig();
    wr(FCR_, FCR.ENABLE);
    assert.equal(uart.pushInput(bytes("ab")), 2);
    assert.equal(rd(LSR_) & LSR.DR, LSR.DR);
    assert.equal(rd(RBR), 0x61);
    assert.equal(rd(RBR), 0x62);
    assert.equal(rd(LSR_) & LSR.DR, 0);
    assert.equal(rd(RBR), 0x62, "an empty RBR still holds its last byte");
  });

  test("16450 mode (FIFO off) holds one byte; the host queue feeds the next as soon as RBR is read", () => {
    const { uart, rd } = rig();
    uart.pushInput(bytes("xyz"));
    assert.equal(uart.state().rxFifo.length, 1);
    assert.equal(uart.state().hostInputWaiting, 2);
    assert.equal(String.fromCharCode(rd(RBR), rd(RBR), rd(RBR)), "xyz");
    assert.equal(rd(LSR_) & (LSR.DR | LSR.OE), 0, "nothing lost, no overrun");
  });
});

describe("divisor latch and scratch", () => {
  test("DLAB switches offsets 0/1 to DLL/DLM; the baud rate follows; THR and IER are untouched", () => {
    const { uart, rd, wr, sent } = rig();
    wr(IER_, IER.ERBFI);
    wr(LCR_, LCR.DLAB | 0x03);
    wr(DLL, 0x01);
    wr(DLM, 0x00);
    assert.equal(uart.baudRate, 115200);
    wr(DLL, 0x80);
    wr(DLM, 0x01);
    assert.equal(rd(DLL), 0x80);
    assert.equal(rd(DLM), 0x01);
    assert.equal(uart.state().divisor, 0x180);
    assert.equal(uart.baudRate, 300);
    assert.equal(sent.length, 0, "DLL writes transmit nothing");
    wr(LCR_, 0x03);
    assert.equal(rd(IER_), IER.ERBFI, "IER kept its value");
    assert.equal(rd(LCR_), 0x03);
    wr(DLL, 0x41); // now THR
    assert.deepEqual(sent, [0x41]);
    wr(LCR_, LCR.DLAB);
    assert.equal(rd(DLL), 0x80, "the divisor survived the THR write");
  });

  test("divisor 0 means no baud rate", () => {
    const { uart, wr } = rig();
    wr(LCR_, LCR.DLAB);
    wr(DLL, 0);
    wr(DLM, 0);
    assert.equal(uart.baudRate, 0);
  });

  test("SCR stores any byte", () => {
    const { rd, wr } = rig();
    for (const v of [0x00, 0x55, 0xaa, 0xff]) {
      wr(SCR, v);
      assert.equal(rd(SCR), v);
    }
  });

  test("LCR stores word length, stop bits and parity; IER keeps only bits 0-3; MCR only bits 0-4", () => {
    const { rd, wr } = rig();
    wr(LCR_, 0x3f);
    assert.equal(rd(LCR_), 0x3f);
    wr(LCR_, 0x03);
    wr(IER_, 0xff);
    assert.equal(rd(IER_), 0x0f);
    wr(IER_, 0);
    wr(MCR_, 0xff);
    assert.equal(rd(MCR_), 0x1f);
  });

  test("LSR and MSR ignore writes", () => {
    const { rd, wr } = rig();
    wr(LSR_, 0xff);
    assert.equal(rd(LSR_), 0x60);
    wr(MSR_, 0x0f);
    assert.equal(rd(MSR_), 0xb0);
  });
});

describe("FIFO control", () => {
  test("IIR bits 6-7 show FIFO mode; disabling it drops the FIFO contents", () => {
    const { uart, rd, wr } = rig();
    wr(FCR_, FCR.ENABLE);
    assert.equal(rd(IIR_) & 0xc0, 0xc0);
    uart.pushInput(bytes("abc"));
    wr(FCR_, 0);
    assert.equal(rd(IIR_) & 0xc0, 0);
    assert.equal(uart.state().rxFifo.length, 0, "the FIFO was emptied");
  });

  test("the 16-byte FIFO fills from the host queue, the rest waits in the queue", () => {
    const { uart, rd, wr } = rig();
    wr(FCR_, FCR.ENABLE);
    uart.pushInput(bytes("0123456789abcdefXYZ"));
    assert.equal(uart.state().rxFifo.length, 16);
    assert.equal(uart.state().hostInputWaiting, 3);
    let got = "";
    while (rd(LSR_) & LSR.DR) got += String.fromCharCode(rd(RBR));
    assert.equal(got, "0123456789abcdefXYZ");
    assert.equal(rd(LSR_) & LSR.OE, 0);
  });

  test("FCR bit 1 empties the receive FIFO (host input waiting then moves in); bit 2 is harmless", () => {
    const { uart, rd, wr } = rig({ input: new ByteQueue(0) });
    wr(FCR_, FCR.ENABLE);
    uart.pushInput(bytes("abc"));
    wr(FCR_, FCR.ENABLE | FCR.CLEAR_RX | FCR.CLEAR_TX);
    assert.equal(rd(LSR_) & LSR.DR, 0);
    assert.equal(rd(IIR_) & 0xc0, 0xc0, "FIFO mode stays on");
  });

  test("with FCR bit 0 clear, the other bits are not written", () => {
    const { uart, wr } = rig({ input: new ByteQueue(0) });
    wr(FCR_, FCR.ENABLE | 0xc0); // trigger 14
    uart.pushInput(bytes("a"));
    wr(FCR_, FCR.ENABLE); // trigger 1, data stays
    assert.equal(uart.state().triggerLevel, 1);
    wr(FCR_, 0xc0 | FCR.CLEAR_RX); // FIFO off: bits 1-7 ignored
    assert.equal(uart.state().fifoEnabled, false);
    assert.equal(uart.state().triggerLevel, 1);
  });

  for (const [bits, level] of [
    [0x00, 1],
    [0x40, 4],
    [0x80, 8],
    [0xc0, 14],
  ] as const) {
    test(`trigger level ${level}: received-data interrupt at ${level} bytes, character timeout below`, () => {
      const { uart, wr, iirId, rd } = rig({ input: new ByteQueue(0) });
      wr(FCR_, FCR.ENABLE | bits);
      wr(IER_, IER.ERBFI);
      assert.equal(iirId(), IIR.NONE);
      for (let i = 1; i <= level; i++) {
        uart.pushInput(Uint8Array.of(0x30 + i));
        assert.equal(iirId(), i < level ? IIR.TIMEOUT : IIR.RX_DATA, `after ${i} bytes`);
      }
      // Reading drops below the trigger: the timeout indication takes over, until the FIFO is empty.
      rd(RBR);
      assert.equal(iirId(), level > 1 ? IIR.TIMEOUT : IIR.NONE);
      while (rd(LSR_) & LSR.DR) rd(RBR);
      assert.equal(iirId(), IIR.NONE);
    });
  }
});

describe("overrun", () => {
  test("FIFO mode: a 17th byte on a raw line sets OE and is lost; the first 16 stay", () => {
    const { uart, rd, wr } = rig({ input: new ByteQueue(0) });
    wr(FCR_, FCR.ENABLE);
    assert.equal(uart.pushInput(bytes("0123456789abcdefZ")), 16, "16 kept, 1 lost");
    const lsr = rd(LSR_);
    assert.equal(lsr & (LSR.OE | LSR.DR), LSR.OE | LSR.DR);
    assert.equal(rd(LSR_) & LSR.OE, 0, "reading LSR cleared OE");
    let got = "";
    while (rd(LSR_) & LSR.DR) got += String.fromCharCode(rd(RBR));
    assert.equal(got, "0123456789abcdef");
  });

  test("16450 mode: the new byte overwrites RBR", () => {
    const { uart, rd } = rig({ input: new ByteQueue(0) });
    uart.pushInput(bytes("ab"));
    assert.equal(rd(LSR_) & LSR.OE, LSR.OE);
    assert.equal(rd(RBR), 0x62);
  });

  test("with a host queue nothing is lost until the queue is full too", () => {
    const { uart, rd, wr } = rig({ input: new ByteQueue(4) });
    wr(FCR_, FCR.ENABLE);
    assert.equal(uart.pushInput(bytes("0123456789abcdef")), 16);
    assert.equal(uart.pushInput(bytes("WXYZ")), 4, "queued");
    assert.equal(rd(LSR_) & LSR.OE, 0);
    assert.equal(uart.pushInput(bytes("!")), 0, "queue full and FIFO full: overrun");
    assert.equal(rd(LSR_) & LSR.OE, LSR.OE);
    let got = "";
    while (rd(LSR_) & LSR.DR) got += String.fromCharCode(rd(RBR));
    assert.equal(got, "0123456789abcdefWXYZ");
  });
});

describe("line status errors", () => {
  test("parity/framing errors show when the character reaches the top of the FIFO; LSR read clears them", () => {
    const { uart, rd, wr } = rig();
    wr(FCR_, FCR.ENABLE);
    uart.receiveFromLine(0x41);
    uart.receiveFromLine(0x42, { parity: true });
    uart.receiveFromLine(0x43, { framing: true });
    let lsr = rd(LSR_);
    assert.equal(lsr & (LSR.PE | LSR.FE), 0, "top character is clean");
    assert.equal(lsr & LSR.FIFO_ERROR, LSR.FIFO_ERROR, "bit 7: an error character is in the FIFO");
    assert.equal(rd(RBR), 0x41);
    lsr = rd(LSR_);
    assert.equal(lsr & (LSR.PE | LSR.FE), LSR.PE, "0x42 at the top: parity error");
    assert.equal(lsr & LSR.FIFO_ERROR, LSR.FIFO_ERROR, "0x43 still carries an error");
    assert.equal(rd(LSR_) & LSR.PE, 0, "cleared by the read");
    assert.equal(rd(RBR), 0x42);
    lsr = rd(LSR_);
    assert.equal(lsr & (LSR.PE | LSR.FE), LSR.FE);
    assert.equal(rd(LSR_) & LSR.FIFO_ERROR, 0, "no more error characters behind the top one");
  });

  test("a break loads one zero character and sets BI; FIFO error bit is 0 in 16450 mode", () => {
    const { uart, rd } = rig();
    uart.receiveBreak();
    const lsr = rd(LSR_);
    assert.equal(lsr & (LSR.BI | LSR.DR | LSR.FIFO_ERROR), LSR.BI | LSR.DR);
    assert.equal(rd(RBR), 0);
    assert.equal(rd(LSR_) & LSR.BI, 0);
  });
});

describe("interrupt sources and their clearing", () => {
  test("line status: enabled by ELSI, cleared by reading LSR", () => {
    const { uart, rd, wr, iirId } = rig({ input: new ByteQueue(0) });
    wr(IER_, IER.ELSI);
    uart.pushInput(bytes("ab")); // overrun in 16450 mode
    assert.equal(iirId(), IIR.LINE);
    assert.equal(iirId(), IIR.LINE, "reading IIR does not clear it");
    rd(RBR);
    assert.equal(iirId(), IIR.LINE, "nor does reading RBR");
    rd(LSR_);
    assert.equal(iirId(), IIR.NONE);
  });

  test("received data: enabled by ERBFI, cleared by reading RBR", () => {
    const { uart, rd, wr, iirId } = rig();
    uart.pushInput(bytes("a"));
    assert.equal(iirId(), IIR.NONE, "not enabled");
    wr(IER_, IER.ERBFI);
    assert.equal(iirId(), IIR.RX_DATA);
    rd(LSR_);
    assert.equal(iirId(), IIR.RX_DATA, "reading LSR does not clear it");
    rd(RBR);
    assert.equal(iirId(), IIR.NONE);
  });

  test("THRE: raised when ETBEI is enabled while THR is empty; cleared by reading IIR", () => {
    const { rd, wr, iirId } = rig();
    wr(IER_, IER.ETBEI);
    assert.equal(iirId(), IIR.THRE);
    assert.equal(iirId(), IIR.NONE, "the IIR read that reported it cleared it");
    wr(IER_, IER.ETBEI);
    assert.equal(iirId(), IIR.NONE, "re-writing the same IER does not re-arm it");
    wr(IER_, 0);
    wr(IER_, IER.ETBEI);
    assert.equal(rd(IIR_), IIR.THRE, "enabling again does");
  });

  test("THRE: cleared by writing THR, and raised again when THR empties (at once here)", () => {
    const r = rig();
    r.wr(IER_, IER.ETBEI);
    const before = r.edges.length;
    r.wr(MCR_, MCR.OUT2);
    assert.deepEqual(r.edges.slice(before), [true]);
    r.wr(THR, 0x41);
    assert.deepEqual(r.edges.slice(before), [true, false, true], "the line drops and rises: a fresh edge");
    assert.equal(r.iirId(), IIR.THRE);
  });

  test("THRE is not cleared by an IIR read that reports a higher-priority source", () => {
    const { uart, rd, wr, iirId } = rig();
    wr(IER_, IER.ETBEI | IER.ERBFI);
    uart.pushInput(bytes("a"));
    assert.equal(iirId(), IIR.RX_DATA);
    rd(RBR);
    assert.equal(iirId(), IIR.THRE, "still pending behind the received data");
    assert.equal(iirId(), IIR.NONE);
  });

  test("modem status: enabled by EDSSI, each delta bit, cleared by reading MSR", () => {
    const { uart, rd, wr, iirId } = rig();
    wr(IER_, IER.EDSSI);
    assert.equal(iirId(), IIR.NONE);
    uart.setModemInputs({ cts: false });
    assert.equal(iirId(), IIR.MODEM);
    assert.equal(rd(MSR_), MSR.DSR | MSR.DCD | MSR.DCTS);
    assert.equal(iirId(), IIR.NONE);
    uart.setModemInputs({ dsr: false, dcd: false });
    assert.equal(rd(MSR_), MSR.DDSR | MSR.DDCD);
    uart.setModemInputs({ ri: true });
    assert.equal(rd(MSR_), MSR.RI, "RI rising is not a TERI");
    assert.equal(iirId(), IIR.NONE);
    uart.setModemInputs({ ri: false });
    assert.equal(rd(MSR_), MSR.TERI, "RI's trailing edge is");
    assert.equal(rd(MSR_), 0);
  });

  test("priority: line status > received data > THRE > modem status", () => {
    const { uart, rd, wr, iirId } = rig({ input: new ByteQueue(0) });
    wr(FCR_, FCR.ENABLE);
    uart.setModemInputs({ cts: false });
    wr(IER_, IER.ERBFI | IER.ETBEI | IER.ELSI | IER.EDSSI);
    uart.pushInput(bytes("0123456789abcdefZ")); // data + overrun
    assert.equal(iirId(), IIR.LINE);
    rd(LSR_);
    assert.equal(iirId(), IIR.RX_DATA);
    while (rd(LSR_) & LSR.DR) rd(RBR);
    assert.equal(iirId(), IIR.THRE);
    assert.equal(iirId(), IIR.MODEM);
    rd(MSR_);
    assert.equal(iirId(), IIR.NONE);
  });

  test("character timeout ranks with received data, above THRE", () => {
    const { uart, rd, wr, iirId } = rig();
    wr(FCR_, FCR.ENABLE | 0x80); // trigger 8
    wr(IER_, IER.ERBFI | IER.ETBEI);
    uart.pushInput(bytes("abc"));
    assert.equal(iirId(), IIR.TIMEOUT);
    assert.equal(rd(IIR_), 0xc0 | IIR.TIMEOUT, "with the FIFO bits");
    while (rd(LSR_) & LSR.DR) rd(RBR);
    assert.equal(iirId(), IIR.THRE);
  });

  test("disabling a source in IER hides it at once", () => {
    const { uart, wr, iirId } = rig();
    wr(IER_, IER.ERBFI);
    uart.pushInput(bytes("a"));
    assert.equal(iirId(), IIR.RX_DATA);
    wr(IER_, 0);
    assert.equal(iirId(), IIR.NONE);
  });
});

describe("IRQ line", () => {
  test("out2 gate (default): the line follows the pending state only while OUT2 is set", () => {
    const { uart, rd, wr, edges } = rig();
    wr(IER_, IER.ERBFI);
    uart.pushInput(bytes("a"));
    assert.deepEqual(edges, [], "OUT2 clear: nothing reaches the PIC");
    assert.equal(uart.interruptPending, true);
    wr(MCR_, MCR.OUT2);
    assert.deepEqual(edges, [true]);
    rd(RBR);
    assert.deepEqual(edges, [true, false]);
    uart.pushInput(bytes("b"));
    wr(MCR_, 0);
    assert.deepEqual(edges, [true, false, true, false], "clearing OUT2 drops the line");
  });

  test("out2 gate: loopback disconnects the line (the chip forces OUT2 inactive)", () => {
    const { uart, wr, edges } = rig();
    wr(MCR_, MCR.OUT2 | MCR.LOOP);
    wr(IER_, IER.ERBFI);
    wr(THR, 0x41);
    assert.equal(uart.interruptPending, true);
    assert.deepEqual(edges, []);
  });

  test("always gate (QEMU's behaviour): the line follows the pending state whatever MCR says", () => {
    const { uart, rd, wr, edges } = rig({ irqGate: "always" });
    wr(IER_, IER.ERBFI);
    uart.pushInput(bytes("a"));
    assert.deepEqual(edges, [true]);
    assert.equal(uart.irqOutput, true);
    rd(RBR);
    assert.deepEqual(edges, [true, false]);
  });

  test("the line is only driven on a change of level", () => {
    const { uart, wr, edges } = rig({ irqGate: "always" });
    wr(IER_, IER.ERBFI);
    uart.pushInput(bytes("abc"));
    wr(SCR, 1);
    wr(LCR_, 3);
    assert.deepEqual(edges, [true]);
  });
});

describe("loopback", () => {
  test("TX goes to RX (not to the sink); host input waits until loopback ends", () => {
    const { uart, rd, wr, out } = rig();
    wr(FCR_, FCR.ENABLE);
    wr(MCR_, MCR.LOOP);
    uart.pushInput(bytes("host"));
    assert.equal(rd(LSR_) & LSR.DR, 0, "the receiver hears only the transmitter");
    for (const c of "loop") wr(THR, c.charCodeAt(0));
    assert.equal(out(), "");
    let got = "";
    while (rd(LSR_) & LSR.DR) got += String.fromCharCode(rd(RBR));
    assert.equal(got, "loop");
    wr(MCR_, 0);
    got = "";
    while (rd(LSR_) & LSR.DR) got += String.fromCharCode(rd(RBR));
    assert.equal(got, "host", "nothing typed was lost");
  });

  test("loopback overruns like a wire: 17 bytes into a 16-byte FIFO", () => {
    const { rd, wr } = rig();
    wr(FCR_, FCR.ENABLE);
    wr(MCR_, MCR.LOOP);
    for (let i = 0; i < 17; i++) wr(THR, 0x40 + i);
    assert.equal(rd(LSR_) & LSR.OE, LSR.OE);
    assert.equal(rd(RBR), 0x40);
  });

  test("modem outputs feed modem inputs: RTS→CTS, DTR→DSR, OUT1→RI, OUT2→DCD, with deltas", () => {
    const { rd, wr } = rig();
    wr(MCR_, MCR.LOOP);
    // Entering loopback drops the far end's CTS/DSR/DCD: their deltas are set.
    assert.equal(rd(MSR_), MSR.DCTS | MSR.DDSR | MSR.DDCD);
    wr(MCR_, MCR.LOOP | MCR.RTS);
    assert.equal(rd(MSR_), MSR.CTS | MSR.DCTS);
    wr(MCR_, MCR.LOOP | MCR.DTR);
    assert.equal(rd(MSR_), MSR.DSR | MSR.DDSR | MSR.DCTS);
    wr(MCR_, MCR.LOOP | MCR.OUT1);
    assert.equal(rd(MSR_), MSR.RI | MSR.DDSR);
    wr(MCR_, MCR.LOOP | MCR.OUT2);
    assert.equal(rd(MSR_), MSR.DCD | MSR.DDCD | MSR.TERI);
    wr(MCR_, MCR.LOOP | 0x0f);
    assert.equal(rd(MSR_) & 0xf0, 0xf0, "Linux's loopback probe: all four inputs follow");
  });

  test("a break sent in loopback is received (BI, one zero character); data sent during it is lost", () => {
    const { rd, wr } = rig();
    wr(FCR_, FCR.ENABLE);
    wr(MCR_, MCR.LOOP);
    wr(LCR_, 0x03 | LCR.BREAK);
    wr(THR, 0x41);
    wr(LCR_, 0x03);
    const lsr = rd(LSR_);
    assert.equal(lsr & (LSR.BI | LSR.DR), LSR.BI | LSR.DR);
    assert.equal(rd(RBR), 0);
    assert.equal(rd(LSR_) & LSR.DR, 0);
  });
});

describe("wide accesses", () => {
  test("a 2-byte write splits into two byte writes (THR then IER); a 4-byte read gathers four registers", () => {
    const { rd, uart, sent } = rig();
    uart.pioWrite(0, 2, 0x0141); // THR = 'A', IER = ERBFI
    assert.deepEqual(sent, [0x41]);
    assert.equal(rd(IER_), IER.ERBFI);
    uart.pioWrite(7, 1, 0x5a);
    assert.equal(uart.pioRead(4, 4), 0x5a_b0_60_00, "MCR, LSR, MSR, SCR");
    assert.equal(uart.pioRead(7, 2), 0xff5a, "past offset 7 reads all ones");
  });
});

describe("host queue across threads", () => {
  test("pollInput moves bytes a producer left in the queue and raises the interrupt", () => {
    const input = new ByteQueue(64);
    const { uart, wr, edges, iirId } = rig({ input, irqGate: "always" });
    wr(IER_, IER.ERBFI);
    input.push(bytes("hi"));
    assert.equal(iirId(), IIR.NONE, "not seen before the poll");
    uart.pollInput();
    assert.equal(iirId(), IIR.RX_DATA);
    assert.deepEqual(edges, [true]);
  });
});
