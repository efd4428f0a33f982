// The GDB remote serial protocol's framing: `$body#xx` packets (xx: the modulo-256 sum of the body's bytes, in
// hex), `+`/`-` acknowledgements, and the interrupt byte 0x03 sent outside any packet. The reader takes bytes
// as they come (a packet may arrive in pieces, or several in one chunk) and bounds what it keeps: a packet
// longer than its limit is dropped whole and reported, never buffered.
//
// Binary data (the X packet's payload, qXfer replies) is escaped: 0x7d ('}') followed by the byte XOR 0x20,
// for '#', '$', '}' and '*'.

/** What the reader found in the byte stream. */
export type WireEvent =
  | { kind: "packet"; body: Buffer }
  /** A packet whose checksum did not match (answered with '-' in acknowledgement mode). */
  | { kind: "bad-checksum"; body: Buffer; expected: number; got: number }
  /** A packet longer than the limit (dropped). */
  | { kind: "too-long"; length: number }
  | { kind: "ack" }
  | { kind: "nak" }
  | { kind: "interrupt" };

const DOLLAR = 0x24;
const HASH = 0x23;
const ESCAPE = 0x7d;
const INTERRUPT = 0x03;

export function checksum(body: Uint8Array): number {
  let sum = 0;
  for (const b of body) sum = (sum + b) & 0xff;
  return sum;
}

/** A whole packet on the wire for `body`. */
export function framePacket(body: Buffer | string): Buffer {
  const b = typeof body === "string" ? Buffer.from(body, "latin1") : body;
  const out = Buffer.alloc(b.length + 4);
  out[0] = DOLLAR;
  b.copy(out, 1);
  out[b.length + 1] = HASH;
  out.write(checksum(b).toString(16).padStart(2, "0"), b.length + 2, "latin1");
  return out;
}

/** Escape binary data for a packet body. */
export function escapeBinary(data: Uint8Array): Buffer {
  const out: number[] = [];
  for (const b of data) {
    if (b === HASH || b === DOLLAR || b === ESCAPE || b === 0x2a) out.push(ESCAPE, b ^ 0x20);
    else out.push(b);
  }
  return Buffer.from(out);
}

/** Undo escapeBinary (an escape byte at the very end is an error: undefined). */
export function unescapeBinary(data: Uint8Array): Buffer | undefined {
  const out = Buffer.alloc(data.length);
  let n = 0;
  for (let i = 0; i < data.length; i++) {
    if (data[i] === ESCAPE) {
      if (i + 1 >= data.length) return undefined;
      out[n++] = data[++i] ^ 0x20;
    } else out[n++] = data[i];
  }
  return out.subarray(0, n);
}

type State = "idle" | "body" | "sum1" | "sum2" | "skip" | "skip-sum1" | "skip-sum2";

/** Splits the incoming byte stream into WireEvents. */
export class PacketReader {
  private state: State = "idle";
  private body: number[] = [];
  private skipped = 0;
  private sumHex = "";

  constructor(private readonly maxBody: number) {}

  /** Take a chunk of bytes; returns what it completed, in order. */
  feed(chunk: Uint8Array): WireEvent[] {
    const events: WireEvent[] = [];
    for (const c of chunk) {
      switch (this.state) {
        case "idle":
          if (c === DOLLAR) {
            this.state = "body";
            this.body = [];
          } else if (c === 0x2b) events.push({ kind: "ack" });
          else if (c === 0x2d) events.push({ kind: "nak" });
          else if (c === INTERRUPT) events.push({ kind: "interrupt" });
          // Anything else between packets is noise: ignored, as gdb does.
          break;
        case "body":
          if (c === HASH) this.state = "sum1";
          else if (this.body.length >= this.maxBody) {
            this.skipped = this.body.length + 1;
            this.body = [];
            this.state = "skip";
          } else this.body.push(c);
          break;
        case "sum1":
          this.sumHex = String.fromCharCode(c);
          this.state = "sum2";
          break;
        case "sum2": {
          this.sumHex += String.fromCharCode(c);
          this.state = "idle";
          const body = Buffer.from(this.body);
          this.body = [];
          const got = /^[0-9a-fA-F]{2}$/.test(this.sumHex) ? parseInt(this.sumHex, 16) : -1;
          const expected = checksum(body);
          events.push(
            got === expected ? { kind: "packet", body } : { kind: "bad-checksum", body, expected, got },
          );
          break;
        }
        case "skip":
          if (c === HASH) this.state = "skip-sum1";
          else this.skipped++;
          break;
        case "skip-sum1":
          this.state = "skip-sum2";
          break;
        case "skip-sum2":
          this.state = "idle";
          events.push({ kind: "too-long", length: this.skipped });
          break;
      }
    }
    return events;
  }
}

/** Hex helpers for packet bodies. */
export function toHex(data: Uint8Array): string {
  return Buffer.from(data).toString("hex");
}

export function fromHex(text: string): Buffer | undefined {
  if (text.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(text)) return undefined;
  return Buffer.from(text, "hex");
}

/** A little-endian value of `bytes` bytes, as hex (register values in g/p packets). */
export function leHex(value: bigint, bytes: number): string {
  const b = Buffer.alloc(bytes);
  let v = BigInt.asUintN(bytes * 8, value);
  for (let i = 0; i < bytes; i++) {
    b[i] = Number(v & 0xffn);
    v >>= 8n;
  }
  return b.toString("hex");
}

export function leValue(bytes: Uint8Array): bigint {
  let v = 0n;
  for (let i = bytes.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(bytes[i]);
  return v;
}

/** A hex number as gdb writes them (no 0x), or undefined. */
export function parseHexNumber(text: string): bigint | undefined {
  if (!/^[0-9a-fA-F]{1,16}$/.test(text)) return undefined;
  return BigInt(`0x${text}`);
}
