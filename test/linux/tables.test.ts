// The platform tables a Linux guest gets (src/loader/linux/tables/): every ACPI table and the MP tables parsed
// back byte by byte and checksummed, the DSDT (and a DSDT with long packages, for PkgLength's longer forms)
// disassembled by ACPICA's own iasl, the tables found where the kernel looks for them, the zero page pointing at
// the RSDP, and machines the tables cannot describe refused with one line. No guest boots here
// (test/linux/boot.test.ts boots Debian's kernel on them).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { InputError } from "../../src/errors.js";
import {
  RSDP_ADDR,
  buildPlatformTables,
  planBzImage,
  type PlatformMachine,
  type PlatformTables,
} from "../../src/loader/linux/index.js";
import { ACPI_AREA, MAX_TABLE_CPUS, MP_AREA } from "../../src/loader/linux/tables/index.js";
import * as aml from "../../src/loader/linux/tables/aml.js";
import { CMOS_PORT, S5_SLEEP_TYPE, sdt } from "../../src/loader/linux/tables/acpi.js";
import { S5_SLEEP_TYPE as DEVICE_S5 } from "../../src/devices/acpi-sleep.js";
import { CMOS_PORT as RTC_DEVICE_PORT } from "../../src/devices/cmos-rtc.js";
import { PORTS, LAYOUT } from "../../src/vm/machine-layout.js";
import { planVirtio } from "../../src/devices/virtio/placement.js";
import { CLI } from "../helpers/paths.js";
import { debianKernel, runCmd } from "./helpers.js";

let dir: string;
before(() => {
  dir = mkdtempSync(join(tmpdir(), "vmtool-tables-"));
});
after(() => rmSync(dir, { recursive: true, force: true }));

/** The machine `vmtool run --kernel K --cpus N --rng --console --disk a --disk b` has. */
function machine(cpus: number): PlatformMachine {
  const virtio = planVirtio({
    rng: true,
    console: true,
    disks: [
      { path: "a", readOnly: false },
      { path: "b", readOnly: true },
    ],
  });
  return { cpus, virtio: virtio.map(({ base, size, irq }) => ({ base, size, irq })) };
}

/** The BIOS area as the guest sees it after the tables are written (from 0xE0000). */
function area(t: PlatformTables): Uint8Array {
  const mem = new Uint8Array(0x2_0000);
  for (const p of t.pieces) mem.set(p.bytes, p.gpa - 0xe_0000);
  return mem;
}

function sum(b: Uint8Array): number {
  return b.reduce((s, x) => (s + x) & 0xff, 0);
}

const text = (b: Uint8Array) => new TextDecoder("latin1").decode(b);
const hexN = (n: number, w: number) => `0x${n.toString(16).toUpperCase().padStart(w, "0")}`;

/** An ACPI table at `gpa` of the area: its header fields, its bytes (by its own length), checksum checked. */
function table(mem: Uint8Array, gpa: number, signature: string) {
  const at = gpa - 0xe_0000;
  assert.ok(at >= 0 && at + 36 <= mem.length, `table ${signature} at ${gpa.toString(16)} outside the area`);
  const v = new DataView(mem.buffer, mem.byteOffset + at);
  const length = v.getUint32(4, true);
  const bytes = mem.subarray(at, at + length);
  assert.equal(text(bytes.subarray(0, 4)), signature);
  assert.equal(bytes.length, length, `${signature}: its length runs past the area`);
  assert.equal(sum(bytes), 0, `${signature}: checksum`);
  assert.equal(text(bytes.subarray(10, 16)), "VMTOOL");
  return { bytes, v: new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength), revision: bytes[8] };
}

/** What Linux's acpi_find_root_pointer does: "RSD PTR " on 16-byte boundaries of 0xE0000-0xFFFFF, checksums valid. */
function scanRsdp(mem: Uint8Array): number | undefined {
  for (let at = 0; at + 36 <= mem.length; at += 16)
    if (text(mem.subarray(at, at + 8)) === "RSD PTR " && sum(mem.subarray(at, at + 20)) === 0) {
      if (mem[at + 15] >= 2 && sum(mem.subarray(at, at + 36)) !== 0) continue;
      return 0xe_0000 + at;
    }
  return undefined;
}

/** Walk every table from the RSDP: RSDP -> XSDT -> FADT (-> DSDT), MADT. */
function walk(mem: Uint8Array) {
  const rsdpAt = scanRsdp(mem);
  assert.equal(rsdpAt, RSDP_ADDR, "the kernel's scan finds the RSDP at RSDP_ADDR");
  const r = mem.subarray(rsdpAt - 0xe_0000, rsdpAt - 0xe_0000 + 36);
  const rv = new DataView(r.buffer, r.byteOffset, 36);
  assert.equal(r[15], 2, "RSDP revision 2");
  assert.equal(rv.getUint32(20, true), 36, "RSDP length");
  assert.equal(rv.getUint32(16, true), 0, "no RSDT");
  const xsdt = table(mem, Number(rv.getBigUint64(24, true)), "XSDT");
  const entries: number[] = [];
  for (let off = 36; off < xsdt.bytes.length; off += 8) entries.push(Number(xsdt.v.getBigUint64(off, true)));
  const sigs = entries.map((a) => text(mem.subarray(a - 0xe_0000, a - 0xe_0000 + 4)));
  assert.deepEqual(sigs, ["FACP", "APIC"]);
  const fadt = table(mem, entries[0], "FACP");
  const madt = table(mem, entries[1], "APIC");
  const dsdtAt = Number(fadt.v.getBigUint64(140, true));
  assert.equal(fadt.v.getUint32(40, true), dsdtAt, "DSDT and X_DSDT agree");
  const dsdt = table(mem, dsdtAt, "DSDT");
  return { fadt, madt, dsdt, all: [xsdt, fadt, madt, dsdt] };
}

test("every ACPI table is found from the RSDP by the kernel's scan, inside the ACPI area, checksummed", () => {
  for (const cpus of [1, 2, 64, MAX_TABLE_CPUS]) {
    const t = buildPlatformTables(machine(cpus));
    assert.equal(t.rsdp, RSDP_ADDR);
    const mem = area(t);
    const { all } = walk(mem);
    for (const tb of all) {
      const at = tb.bytes.byteOffset + 0xe_0000;
      assert.ok(at >= ACPI_AREA.base && at + tb.bytes.length <= ACPI_AREA.end, "inside the ACPI area");
    }
    // Nothing overlaps: pieces sorted by address end before the next begins.
    const pieces = [...t.pieces].sort((a, b) => a.gpa - b.gpa);
    for (let i = 1; i < pieces.length; i++)
      assert.ok(pieces[i - 1].gpa + pieces[i - 1].bytes.length <= pieces[i].gpa, "pieces overlap");
  }
});

test("FADT: revision 6, 276 bytes, hardware-reduced, sleep control/status registers on the power-off ports", () => {
  const { fadt } = walk(area(buildPlatformTables(machine(1))));
  assert.equal(fadt.revision, 6);
  assert.equal(fadt.bytes.length, 276);
  const flags = fadt.v.getUint32(112, true);
  assert.ok(flags & (1 << 20), "HW_REDUCED_ACPI");
  assert.equal(fadt.v.getUint16(46, true), 0, "no SCI");
  for (const off of [56, 64, 76, 80]) assert.equal(fadt.v.getUint32(off, true), 0, `legacy block at ${off}`);
  const gas = (off: number) => ({
    space: fadt.bytes[off],
    bits: fadt.bytes[off + 1],
    access: fadt.bytes[off + 3],
    address: Number(fadt.v.getBigUint64(off + 4, true)),
  });
  assert.deepEqual(gas(244), { space: 1, bits: 8, access: 1, address: PORTS.ACPI_SLEEP });
  assert.deepEqual(gas(256), { space: 1, bits: 8, access: 1, address: PORTS.ACPI_SLEEP + 1 });
  assert.equal(fadt.bytes[108], 0x32, "CMOS century byte");
  const boot = fadt.v.getUint16(109, true);
  assert.equal(boot & (1 << 5), 0, "the CMOS RTC is present");
  assert.ok(boot & (1 << 2), "no VGA");
});

test("MADT: a local APIC per vCPU, KVM's IOAPIC, the ISA override for IRQ 0, LINT1 as NMI", () => {
  for (const cpus of [1, 3, MAX_TABLE_CPUS]) {
    const { madt } = walk(area(buildPlatformTables(machine(cpus))));
    assert.equal(madt.v.getUint32(36, true), LAYOUT.LAPIC);
    const lapics: number[] = [];
    const ioapics: { id: number; address: number; gsiBase: number }[] = [];
    const overrides: { bus: number; irq: number; gsi: number; flags: number }[] = [];
    const nmis: { uid: number; flags: number; lint: number }[] = [];
    for (let off = 44; off < madt.bytes.length;) {
      const [type, len] = [madt.bytes[off], madt.bytes[off + 1]];
      assert.ok(len >= 2 && off + len <= madt.bytes.length, `entry at ${off}`);
      if (type === 0) {
        assert.equal(len, 8);
        assert.equal(madt.bytes[off + 2], madt.bytes[off + 3], "processor UID = APIC id");
        assert.equal(madt.v.getUint32(off + 4, true), 1, "enabled");
        lapics.push(madt.bytes[off + 3]);
      } else if (type === 1)
        ioapics.push({
          id: madt.bytes[off + 2],
          address: madt.v.getUint32(off + 4, true),
          gsiBase: madt.v.getUint32(off + 8, true),
        });
      else if (type === 2)
        overrides.push({
          bus: madt.bytes[off + 2],
          irq: madt.bytes[off + 3],
          gsi: madt.v.getUint32(off + 4, true),
          flags: madt.v.getUint16(off + 8, true),
        });
      else if (type === 4)
        nmis.push({
          uid: madt.bytes[off + 2],
          flags: madt.v.getUint16(off + 3, true),
          lint: madt.bytes[off + 5],
        });
      else assert.fail(`unexpected MADT entry type ${type}`);
      off += len;
    }
    assert.deepEqual(
      lapics,
      Array.from({ length: cpus }, (_, i) => i),
    );
    assert.deepEqual(ioapics, [{ id: cpus, address: LAYOUT.IOAPIC, gsiBase: 0 }]);
    assert.deepEqual(overrides, [{ bus: 0, irq: 0, gsi: 0, flags: 5 }]);
    assert.deepEqual(nmis, [{ uid: 0xff, flags: 5, lint: 1 }]);
  }
});

function iasl(): string {
  const found = ["/usr/bin/iasl", "/usr/sbin/iasl"].find((p) => existsSync(p));
  if (!found) assert.fail("iasl not found: apt-get install acpica-tools");
  return found;
}

/** iasl -d on the table's bytes: the ASL it prints (its disassembler refuses a malformed table). */
function disassemble(bytes: Uint8Array, name: string): string {
  const dat = join(dir, `${name}.dat`);
  writeFileSync(dat, bytes);
  const r = runCmd(iasl(), ["-d", dat], 60_000);
  assert.equal(r.status, 0, `iasl -d ${name}: ${r.stdout}${r.stderr}`);
  return readFileSync(join(dir, `${name}.dsl`), "utf8");
}

test("DSDT disassembled by iasl: COM1 (PNP0501, 0x3F8, IRQ 4), the RTC (PNP0B00, 0x70, IRQ 8), each virtio-mmio device with its window and IRQ, _S5", () => {
  const m = machine(2);
  const { dsdt } = walk(area(buildPlatformTables(m)));
  assert.equal(CMOS_PORT, RTC_DEVICE_PORT);
  const asl = disassemble(dsdt.bytes, "dsdt");
  assert.match(asl, /DefinitionBlock \("", "DSDT", 2, "VMTOOL"/);
  assert.doesNotMatch(asl, /\b(Error|Warning|Unknown|Unresolved)\b/i, asl);
  const devices = [...asl.matchAll(/Device \((\w+)\)\s*\{([\s\S]*?)\n {8}\}/g)].map((x) => ({
    name: x[1],
    body: x[2],
  }));
  assert.deepEqual(
    devices.map((d) => d.name),
    ["COM1", "RTC", ...m.virtio.map((_, i) => `V00${i}`)],
  );
  assert.match(devices[1].body, /EisaId \("PNP0B00"\)/);
  assert.match(
    devices[1].body,
    new RegExp(`IO \\(Decode16,\\s*${hexN(CMOS_PORT, 4)},\\s*// Range Minimum\\s*${hexN(CMOS_PORT, 4)},`),
  );
  assert.match(devices[1].body, /0x02,\s*\/\/ Length/);
  assert.match(
    devices[1].body,
    /Interrupt \(ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, \)\s*\{\s*0x00000008,/,
  );
  assert.match(devices[0].body, /EisaId \("PNP0501"\)/);
  assert.match(devices[0].body, /IO \(Decode16,\s*0x03F8,\s*\/\/ Range Minimum\s*0x03F8,/);
  assert.match(devices[0].body, /0x08,\s*\/\/ Length/);
  assert.match(
    devices[0].body,
    /Interrupt \(ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, \)\s*\{\s*0x00000004,/,
  );
  m.virtio.forEach((d, i) => {
    const b = devices[i + 2].body;
    assert.match(b, /Name \(_HID, "LNRO0005"\)/);
    assert.match(b, new RegExp(`Name \\(_UID, ${i === 0 ? "Zero" : i === 1 ? "One" : hexN(i, 2)}\\)`));
    assert.match(
      b,
      new RegExp(
        `Memory32Fixed \\(ReadWrite,\\s*${hexN(d.base, 8)},\\s*// Address Base\\s*${hexN(d.size, 8)},`,
      ),
    );
    assert.match(
      b,
      new RegExp(
        `Interrupt \\(ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, \\)\\s*\\{\\s*${hexN(d.irq, 8)},`,
      ),
    );
  });
  // \_S5_'s first element is the sleep type the power-off device takes.
  const s5 = /Name \(_S5, Package \(0x04\)[^{]*\{\s*(\w+),/.exec(asl);
  assert.ok(s5, asl);
  assert.equal(Number(s5[1]), S5_SLEEP_TYPE);
  assert.equal(S5_SLEEP_TYPE, DEVICE_S5);
});

test("FADT and MADT disassembled by iasl: hardware-reduced, the sleep registers, two local APICs", () => {
  const { fadt, madt } = walk(area(buildPlatformTables(machine(2))));
  const f = disassemble(fadt.bytes, "facp");
  assert.match(f, /Hardware Reduced \(V5\) : 1/);
  assert.match(
    f,
    /Sleep Control Register : \[Generic Address Structure\][\s\S]*?Space ID : 01 \[SystemIO\][\s\S]*?Address : 0000000000000600/,
  );
  assert.match(
    f,
    /Sleep Status Register : \[Generic Address Structure\][\s\S]*?Space ID : 01 \[SystemIO\][\s\S]*?Address : 0000000000000601/,
  );
  const a = disassemble(madt.bytes, "apic");
  assert.equal((a.match(/Subtable Type : 00 \[Processor Local APIC\]/g) ?? []).length, 2);
  assert.match(a, /Subtable Type : 01 \[I\/O APIC\][\s\S]*?Address : FEC00000/);
  assert.match(a, /Subtable Type : 04 \[Local APIC NMI\][\s\S]*?Interrupt Input LINT : 01/);
  for (const t of [f, a]) assert.doesNotMatch(t, /Invalid|\*\*\*\*/);
});

test("AML PkgLength: one byte up to 63, then two, three and four bytes, each read back by iasl", () => {
  const decode = (b: Uint8Array): number => {
    const extra = b[0] >> 6;
    if (extra === 0) return b[0] & 0x3f;
    let v = b[0] & 0x0f;
    for (let i = 1; i <= extra; i++) v |= b[i] << (4 + 8 * (i - 1));
    return v;
  };
  for (const [body, bytes] of [
    [0, 1],
    [62, 1],
    [63, 2],
    [4093, 2],
    [4094, 3],
    [(1 << 20) - 4, 3],
    [(1 << 20) - 3, 4],
    [aml.PKG_LENGTH_MAX - 4, 4],
  ] as const) {
    const p = aml.pkgLength(body);
    assert.equal(p.length, bytes, `body ${body}`);
    assert.equal(decode(p), body + bytes, `body ${body}: PkgLength counts its own bytes`);
  }
  assert.throws(() => aml.pkgLength(aml.PKG_LENGTH_MAX - 3), aml.AmlError);
  // Buffers of each length class inside a scope, disassembled: iasl reads the lengths back as written.
  const sizes = [10, 61, 62, 63, 300, 4090, 5000, 70_000];
  const body = aml.scope("\\_SB", [
    aml.device(
      "TEST",
      sizes.map((n, i) => aml.name(`B${i}`, aml.buffer(new Uint8Array(n).fill(0xa5)))),
    ),
  ]);
  const asl = disassemble(sdt("DSDT", 2, body), "pkglen");
  const read = [...asl.matchAll(/Name \(B(\d), Buffer \(0x([0-9A-F]+)\)/g)].map((x) => [
    Number(x[1]),
    parseInt(x[2], 16),
  ]);
  assert.deepEqual(
    read,
    sizes.map((n, i) => [i, n]),
    asl.slice(0, 2000),
  );
});

test("AML integers, strings, names and EISA ids encode as ACPICA reads them", () => {
  assert.deepEqual([...aml.integer(0)], [0x00]);
  assert.deepEqual([...aml.integer(1)], [0x01]);
  assert.deepEqual([...aml.integer(0xfe)], [0x0a, 0xfe]);
  assert.deepEqual([...aml.integer(0x3f8)], [0x0b, 0xf8, 0x03]);
  assert.deepEqual([...aml.integer(0xd000_0000)], [0x0c, 0x00, 0x00, 0x00, 0xd0]);
  assert.deepEqual([...aml.integer(0x1_0000_0000)], [0x0e, 0, 0, 0, 0, 1, 0, 0, 0]);
  assert.deepEqual([...aml.eisaId("PNP0501")], [0x0c, 0x41, 0xd0, 0x05, 0x01]);
  assert.deepEqual([...aml.nameString("\\_SB.COM1")], [0x5c, 0x2e, ...Buffer.from("_SB_COM1")]);
  assert.deepEqual([...aml.nameString("^^A.B.C")], [0x5e, 0x5e, 0x2f, 3, ...Buffer.from("A___B___C___")]);
  assert.throws(() => aml.nameString("toolong"), aml.AmlError);
  assert.throws(() => aml.nameString("1ABC"), aml.AmlError);
  assert.throws(() => aml.integer(-1), aml.AmlError);
  assert.throws(() => aml.string("a\u0000b"), aml.AmlError);
  const body = [
    aml.name("INT0", aml.integer(0x1234_5678_9abcn)),
    aml.name("STR0", aml.string("vmtool")),
    aml.name("PKG0", aml.pkg([aml.integer(7), aml.string("x"), aml.pkg([aml.integer(0x100)])])),
    aml.name("\\_SB.EID0", aml.eisaId("PNP0B00")),
  ];
  const asl = disassemble(sdt("SSDT", 2, aml.amlConcat([aml.scope("\\_SB", []), ...body])), "ssdt");
  assert.match(asl, /Name \(INT0, 0x0000123456789ABC\)/);
  assert.match(asl, /Name \(STR0, "vmtool"\)/);
  assert.match(
    asl,
    /Name \(PKG0, Package \(0x03\)\s*\{\s*0x07,\s*"x",\s*Package \(0x01\)\s*\{\s*0x0100\s*\}\s*\}\)/,
  );
  // EisaId("PNP0B00"): iasl names it as such only under _HID/_CID; elsewhere it shows the DWord.
  assert.match(asl, /Name \(\\_SB\.EID0, 0x000BD041\)/);
});

test("MP tables: the floating pointer in the kernel's scan range, the configuration table checksummed and complete", () => {
  for (const cpus of [1, 2, 16]) {
    const mem = area(buildPlatformTables(machine(cpus)));
    // Linux's smp_scan_config: "_MP_" on 16-byte boundaries of 0xF0000-0xFFFFF, length 1, checksum 0.
    let fp = -1;
    for (let at = MP_AREA.base - 0xe_0000; at + 16 <= mem.length; at += 16)
      if (
        text(mem.subarray(at, at + 4)) === "_MP_" &&
        mem[at + 8] === 1 &&
        sum(mem.subarray(at, at + 16)) === 0
      ) {
        fp = at;
        break;
      }
    assert.ok(fp >= 0, "floating pointer found");
    const fv = new DataView(mem.buffer, fp, 16);
    assert.equal(mem[fp + 9], 4, "MP spec 1.4");
    assert.equal(mem[fp + 11], 0, "a configuration table, not a default configuration");
    assert.equal(mem[fp + 12] & 0x80, 0, "virtual wire mode (no IMCR)");
    const cfg = fv.getUint32(4, true) - 0xe_0000;
    const cv = new DataView(mem.buffer, cfg);
    assert.equal(text(mem.subarray(cfg, cfg + 4)), "PCMP");
    const len = cv.getUint16(4, true);
    assert.equal(sum(mem.subarray(cfg, cfg + len)), 0, "configuration table checksum");
    assert.ok(cfg + 0xe_0000 + len <= MP_AREA.end);
    assert.equal(cv.getUint32(36, true), LAYOUT.LAPIC);
    const count = cv.getUint16(34, true);
    const cpusSeen: { id: number; flags: number }[] = [];
    const buses: string[] = [];
    const ioapics: { id: number; flags: number; address: number }[] = [];
    const ints: string[] = [];
    const locals: string[] = [];
    let off = cfg + 44;
    for (let i = 0; i < count; i++) {
      const type = mem[off];
      if (type === 0) {
        cpusSeen.push({ id: mem[off + 1], flags: mem[off + 3] });
        off += 20;
        continue;
      }
      if (type === 1) buses.push(`${mem[off + 1]}:${text(mem.subarray(off + 2, off + 8)).trim()}`);
      else if (type === 2)
        ioapics.push({
          id: mem[off + 1],
          flags: mem[off + 3],
          address: new DataView(mem.buffer, off).getUint32(4, true),
        });
      else if (type === 3)
        ints.push(`${mem[off + 1]} ${mem[off + 4]}:${mem[off + 5]}->${mem[off + 6]}:${mem[off + 7]}`);
      else if (type === 4) locals.push(`${mem[off + 1]}->${mem[off + 6]}:${mem[off + 7]}`);
      else assert.fail(`entry type ${type}`);
      off += 8;
    }
    assert.equal(off - cfg, len, "the entries fill the table");
    assert.deepEqual(
      cpusSeen,
      Array.from({ length: cpus }, (_, i) => ({ id: i, flags: i === 0 ? 3 : 1 })),
    );
    assert.deepEqual(buses, ["0:ISA"]);
    assert.deepEqual(ioapics, [{ id: cpus, flags: 1, address: LAYOUT.IOAPIC }]);
    const expected = [0, 1, ...Array.from({ length: 13 }, (_, i) => i + 3)].map(
      (irq) => `0 0:${irq}->${cpus}:${irq}`,
    );
    assert.deepEqual(ints, expected, "ISA IRQs onto the same IOAPIC pins, no cascade");
    assert.deepEqual(locals, ["3->255:0", "1->255:1"], "ExtINT on LINT0, NMI on LINT1, every CPU");
  }
});

test("a machine the tables cannot describe is refused with one line", () => {
  for (const cpus of [0, MAX_TABLE_CPUS + 1, 1000]) {
    assert.throws(
      () => buildPlatformTables({ cpus, virtio: [] }),
      (e: unknown) =>
        e instanceof InputError &&
        !e.message.includes("\n") &&
        /--cpus \d+: the ACPI and MP tables describe 1 to 254 vCPUs/.test(e.message),
    );
  }
  // More devices than the ACPI area holds (vmtool itself stops at 9: this is the tables' own bound).
  const many = {
    cpus: 1,
    virtio: Array.from({ length: 2000 }, (_, i) => ({ base: 0xd000_0000 + i * 0x200, size: 0x200, irq: 5 })),
  };
  assert.throws(
    () => buildPlatformTables(many),
    (e: unknown) =>
      e instanceof InputError &&
      !e.message.includes("\n") &&
      /^the ACPI tables for 1 vCPU and 2000 virtio devices need \d+ bytes, more than their 65536 at 0xe0000\.\.0xeffff$/.test(
        e.message,
      ),
  );
});

test("the zero page points at the RSDP (acpi_rsdp_addr) the tables give", () => {
  const kernel = readFileSync(debianKernel());
  const tables = buildPlatformTables(machine(2));
  const plan = planBzImage(kernel, "vmlinuz", {
    memSize: 256 << 20,
    cmdline: "console=ttyS0",
    acpiRsdp: tables.rsdp,
  });
  const zp = new DataView(plan.zeroPage.buffer, plan.zeroPage.byteOffset);
  assert.equal(Number(zp.getBigUint64(0x70, true)), RSDP_ADDR);
  const none = planBzImage(kernel, "vmlinuz", { memSize: 256 << 20, cmdline: "console=ttyS0" });
  assert.equal(new DataView(none.zeroPage.buffer).getBigUint64(0x70, true), 0n);
});

test("vmtool run --kernel: virtio_mmio.device= words are added only with acpi=off (the kernel then reads no DSDT)", () => {
  const kernel = debianKernel();
  // A command line that fills the kernel's 2,047 bytes with console=ttyS0 added: one more word is too long.
  // --mem 32M is too small for the kernel, a refusal that comes after the command line's check, before any VM.
  const pad = (last: string) =>
    `vmtool.pad=${"x".repeat(2047 - " console=ttyS0".length - "vmtool.pad=".length - ` ${last}`.length)} ${last}`;
  const run = (cmdline: string) =>
    runCmd(
      process.execPath,
      [CLI, "run", "--kernel", kernel, "--rng", "--mem", "32M", "--cmdline", cmdline],
      60_000,
    );
  const off = run(pad("acpi=off"));
  assert.equal(off.status, 2, off.stderr);
  assert.match(
    off.stderr,
    /^vmtool: error: --cmdline: the kernel's command line would be 2085 bytes; \S+ takes at most 2047/m,
  );
  const on = run(pad("acpi=on"));
  assert.equal(on.status, 2, on.stderr);
  assert.match(
    on.stderr,
    /give --mem \d+M or more/,
    "the same length without acpi=off fits: no word was added",
  );
});
