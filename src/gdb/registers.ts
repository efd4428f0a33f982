// The registers gdb sees, one layout per architecture (i8086 and i386: 32-bit registers; i386:x86-64: 64-bit),
// and the target description (target.xml) that tells gdb the layout. gdb fixes the layout when it connects,
// so the `g` packet always has the layout that was described, whatever mode the guest is in now: in the 32-bit
// layouts a 64-bit register shows its low half.
//
// Beyond gdb's own features (core, sse, segments) two of vmtool's own:
//   org.vmtool.x86.control  k_gs_base, CR0, CR2, CR3, CR4, CR8 and EFER (bit names shown by gdb);
//   org.vmtool.x86.sys      each segment's hidden part (base, limit, attributes in the VMX access-rights
//                           format), LDTR and TR, GDTR and IDTR, DR0-DR3, DR6, DR7 and the APIC base.
import type { Regs, Segment, Sregs } from "../vm/vcpu-state.js";
import type { DebugRegs } from "../debug/vm-control.js";
import { kvm_fpu } from "../kvm/structs.js";

export type GdbArch = "i8086" | "i386" | "i386:x86-64";
export const GDB_ARCHES: readonly GdbArch[] = ["i8086", "i386", "i386:x86-64"];

/** A stopped vCPU's state, as read for gdb. */
export interface CpuState {
  regs: Regs;
  sregs: Sregs;
  /** struct kvm_fpu, raw. */
  fpu: Buffer;
  dr: DebugRegs;
  kGsBase: bigint;
}

/** Which part of CpuState a register write changes (written back to the vCPU as a whole). */
export type StatePart = "regs" | "sregs" | "fpu" | "dr" | "kgsbase";

export interface RegisterDef {
  name: string;
  bits: number;
  type: string;
  feature: string;
  group?: string;
  get(s: CpuState): bigint | Buffer;
  /** Changes `s`; returns the part changed (undefined: the register is read-only). */
  set?(s: CpuState, v: Buffer): StatePart | undefined;
}

const F = kvm_fpu.off;
const le = (b: Buffer): bigint => {
  let v = 0n;
  for (let i = b.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i]);
  return v;
};

type RegName = keyof Regs;
const SEGS = ["cs", "ss", "ds", "es", "fs", "gs"] as const;

function gpr(name: string, reg: RegName, bits: number, type = bits === 64 ? "int64" : "int32"): RegisterDef {
  return {
    name,
    bits,
    type,
    feature: "core",
    get: (s) => s.regs[reg],
    set: (s, v) => {
      const old = s.regs[reg];
      const mask = (1n << BigInt(bits)) - 1n;
      s.regs[reg] = (old & ~mask) | le(v);
      return "regs";
    },
  };
}

/** VMX access rights: type, S, DPL, P, AVL, L, D/B, G, unusable (bit 16). */
export function segmentAttributes(g: Segment): number {
  return (
    (g.type & 0xf) |
    (g.s << 4) |
    ((g.dpl & 3) << 5) |
    (g.present << 7) |
    (g.avl << 12) |
    (g.l << 13) |
    (g.db << 14) |
    (g.g << 15) |
    (g.unusable << 16)
  );
}

function setSegmentAttributes(g: Segment, a: number): void {
  g.type = a & 0xf;
  g.s = (a >> 4) & 1;
  g.dpl = (a >> 5) & 3;
  g.present = (a >> 7) & 1;
  g.avl = (a >> 12) & 1;
  g.l = (a >> 13) & 1;
  g.db = (a >> 14) & 1;
  g.g = (a >> 15) & 1;
  g.unusable = (a >> 16) & 1;
}

function selector(seg: (typeof SEGS)[number]): RegisterDef {
  return {
    name: seg,
    bits: 32,
    type: "int32",
    feature: "core",
    get: (s) => BigInt(s.sregs[seg].selector),
    // A selector written alone changes only the visible part (the hidden part is the vmtool feature's).
    set: (s, v) => {
      s.sregs[seg].selector = Number(le(v) & 0xffffn);
      return "sregs";
    },
  };
}

/** ftag as the full 16-bit tag word (FXSAVE keeps an abridged one: one bit per register, 1 = not empty). */
function fullTag(fpu: Buffer): bigint {
  const abridged = fpu[F.ftwx];
  const top = (fpu.readUInt16LE(F.fsw) >> 11) & 7;
  let tag = 0;
  for (let p = 0; p < 8; p++) {
    let t = 3; // empty
    if (abridged & (1 << p)) {
      const st = (p - top + 8) & 7;
      const at = F.fpr + 16 * st;
      const exp = fpu.readUInt16LE(at + 8) & 0x7fff;
      const mant = fpu.readBigUInt64LE(at);
      if (exp === 0x7fff) t = 2;
      else if (exp === 0) t = mant === 0n ? 1 : 2;
      else t = mant >> 63n ? 0 : 2;
    }
    tag |= t << (2 * p);
  }
  return BigInt(tag);
}

function x87(): RegisterDef[] {
  const out: RegisterDef[] = [];
  for (let i = 0; i < 8; i++)
    out.push({
      name: `st${i}`,
      bits: 80,
      type: "i387_ext",
      feature: "core",
      get: (s) => s.fpu.subarray(F.fpr + 16 * i, F.fpr + 16 * i + 10),
      set: (s, v) => {
        v.copy(s.fpu, F.fpr + 16 * i, 0, 10);
        return "fpu";
      },
    });
  const u32 = (
    name: string,
    get: (f: Buffer) => bigint,
    set?: (f: Buffer, v: bigint) => void,
    group = "float",
  ): RegisterDef => ({
    name,
    bits: 32,
    type: "int",
    feature: "core",
    group,
    get: (s) => get(s.fpu),
    set: set
      ? (s, v) => {
          set(s.fpu, le(v));
          return "fpu";
        }
      : undefined,
  });
  out.push(
    u32(
      "fctrl",
      (f) => BigInt(f.readUInt16LE(F.fcw)),
      (f, v) => f.writeUInt16LE(Number(v & 0xffffn), F.fcw),
    ),
    u32(
      "fstat",
      (f) => BigInt(f.readUInt16LE(F.fsw)),
      (f, v) => f.writeUInt16LE(Number(v & 0xffffn), F.fsw),
    ),
    u32("ftag", fullTag, (f, v) => {
      let ab = 0;
      for (let p = 0; p < 8; p++) if (((v >> BigInt(2 * p)) & 3n) !== 3n) ab |= 1 << p;
      f[F.ftwx] = ab;
    }),
    u32("fiseg", (f) => (f.readBigUInt64LE(F.last_ip) >> 32n) & 0xffffn),
    u32(
      "fioff",
      (f) => f.readBigUInt64LE(F.last_ip) & 0xffffffffn,
      (f, v) => f.writeBigUInt64LE((f.readBigUInt64LE(F.last_ip) & ~0xffffffffn) | v, F.last_ip),
    ),
    u32("foseg", (f) => (f.readBigUInt64LE(F.last_dp) >> 32n) & 0xffffn),
    u32(
      "fooff",
      (f) => f.readBigUInt64LE(F.last_dp) & 0xffffffffn,
      (f, v) => f.writeBigUInt64LE((f.readBigUInt64LE(F.last_dp) & ~0xffffffffn) | v, F.last_dp),
    ),
    u32(
      "fop",
      (f) => BigInt(f.readUInt16LE(F.last_opcode) & 0x7ff),
      (f, v) => f.writeUInt16LE(Number(v & 0x7ffn), F.last_opcode),
    ),
  );
  return out;
}

function sse(count: number): RegisterDef[] {
  const out: RegisterDef[] = [];
  for (let i = 0; i < count; i++)
    out.push({
      name: `xmm${i}`,
      bits: 128,
      type: "vec128",
      feature: "sse",
      group: "vector",
      get: (s) => s.fpu.subarray(F.xmm + 16 * i, F.xmm + 16 * i + 16),
      set: (s, v) => {
        v.copy(s.fpu, F.xmm + 16 * i, 0, 16);
        return "fpu";
      },
    });
  out.push({
    name: "mxcsr",
    bits: 32,
    type: "i386_mxcsr",
    feature: "sse",
    group: "vector",
    get: (s) => BigInt(s.fpu.readUInt32LE(F.mxcsr)),
    set: (s, v) => {
      s.fpu.writeUInt32LE(Number(le(v) & 0xffffffffn), F.mxcsr);
      return "fpu";
    },
  });
  return out;
}

// In the 32-bit layouts fs_base and gs_base are in vmtool's feature, not gdb's org.gnu.gdb.i386.segments: gdb
// 13 with the GNU/Linux OS ABI (its default for an ELF32 file, or `set osabi GNU/Linux`) aborts on an i386
// description that has that feature without org.gnu.gdb.i386.linux ("tdesc_use_registers: Assertion
// `data->arch_regs.size () <= num_regs' failed"), and <osabi>none</osabi> does not win over a file's own ABI.
function segmentBases(bits: number): RegisterDef[] {
  return (["fs", "gs"] as const).map((seg) => ({
    name: `${seg}_base`,
    bits,
    type: bits === 64 ? "int64" : "int32",
    feature: bits === 64 ? "segments" : "control",
    get: (s: CpuState) => s.sregs[seg].base,
    set: (s: CpuState, v: Buffer) => {
      s.sregs[seg].base = le(v);
      return "sregs" as const;
    },
  }));
}

function control(): RegisterDef[] {
  const cr = (name: "cr0" | "cr2" | "cr3" | "cr4" | "cr8" | "efer", type = "int64"): RegisterDef => ({
    name,
    bits: 64,
    type,
    feature: "control",
    group: "system",
    get: (s) => s.sregs[name],
    set: (s, v) => {
      s.sregs[name] = le(v);
      return "sregs";
    },
  });
  return [
    {
      name: "k_gs_base",
      bits: 64,
      type: "int64",
      feature: "control",
      group: "system",
      get: (s) => s.kGsBase,
      set: (s, v) => {
        s.kGsBase = le(v);
        return "kgsbase";
      },
    },
    cr("cr0", "vmtool_cr0"),
    cr("cr2"),
    cr("cr3"),
    cr("cr4", "vmtool_cr4"),
    cr("cr8"),
    cr("efer", "vmtool_efer"),
  ];
}

function sys(): RegisterDef[] {
  const out: RegisterDef[] = [];
  const hidden = (
    name: string,
    seg: keyof Sregs & ("cs" | "ss" | "ds" | "es" | "fs" | "gs" | "tr" | "ldt"),
  ) => {
    const g = (s: CpuState) => s.sregs[seg];
    const parts: RegisterDef[] = [];
    if (seg === "tr" || seg === "ldt")
      parts.push({
        name,
        bits: 32,
        type: "int32",
        feature: "sys",
        group: "system",
        get: (s) => BigInt(g(s).selector),
        set: (s, v) => {
          g(s).selector = Number(le(v) & 0xffffn);
          return "sregs";
        },
      });
    if (seg !== "fs" && seg !== "gs")
      parts.push({
        name: `${name}_base`,
        bits: 64,
        type: "int64",
        feature: "sys",
        group: "system",
        get: (s) => g(s).base,
        set: (s, v) => {
          g(s).base = le(v);
          return "sregs";
        },
      });
    parts.push(
      {
        name: `${name}_limit`,
        bits: 32,
        type: "int32",
        feature: "sys",
        group: "system",
        get: (s) => BigInt(g(s).limit >>> 0),
        set: (s, v) => {
          g(s).limit = Number(le(v) & 0xffffffffn);
          return "sregs";
        },
      },
      {
        name: `${name}_attr`,
        bits: 32,
        type: "int32",
        feature: "sys",
        group: "system",
        get: (s) => BigInt(segmentAttributes(g(s))),
        set: (s, v) => {
          setSegmentAttributes(g(s), Number(le(v) & 0x1ffffn));
          return "sregs";
        },
      },
    );
    return parts;
  };
  for (const seg of SEGS) out.push(...hidden(seg, seg));
  out.push(...hidden("ldtr", "ldt"), ...hidden("tr", "tr"));
  for (const t of ["gdt", "idt"] as const)
    out.push(
      {
        name: `${t}r_base`,
        bits: 64,
        type: "int64",
        feature: "sys",
        group: "system",
        get: (s) => s.sregs[t].base,
        set: (s, v) => {
          s.sregs[t].base = le(v);
          return "sregs";
        },
      },
      {
        name: `${t}r_limit`,
        bits: 32,
        type: "int32",
        feature: "sys",
        group: "system",
        get: (s) => BigInt(s.sregs[t].limit),
        set: (s, v) => {
          s.sregs[t].limit = Number(le(v) & 0xffffn);
          return "sregs";
        },
      },
    );
  for (const [name, i] of [
    ["dr0", 0],
    ["dr1", 1],
    ["dr2", 2],
    ["dr3", 3],
  ] as const)
    out.push({
      name,
      bits: 64,
      type: "int64",
      feature: "sys",
      group: "system",
      get: (s) => s.dr.db[i],
      set: (s, v) => {
        s.dr.db[i] = le(v);
        return "dr";
      },
    });
  for (const name of ["dr6", "dr7"] as const)
    out.push({
      name,
      bits: 64,
      type: "int64",
      feature: "sys",
      group: "system",
      get: (s) => s.dr[name],
      set: (s, v) => {
        s.dr[name] = le(v);
        return "dr";
      },
    });
  out.push({
    name: "apic_base",
    bits: 64,
    type: "int64",
    feature: "sys",
    group: "system",
    get: (s) => s.sregs.apic_base,
    set: (s, v) => {
      s.sregs.apic_base = le(v);
      return "sregs";
    },
  });
  return out;
}

function eflags(): RegisterDef {
  return {
    name: "eflags",
    bits: 32,
    type: "i386_eflags",
    feature: "core",
    get: (s) => s.regs.rflags & 0xffffffffn,
    set: (s, v) => {
      s.regs.rflags = le(v) | 2n;
      return "regs";
    },
  };
}

/** The registers of `arch`, in gdb's numbering (the order of the `g` packet). */
export function registerLayout(arch: GdbArch): RegisterDef[] {
  const core: RegisterDef[] =
    arch === "i386:x86-64"
      ? [
          ...(
            [
              ["rax", "rax"],
              ["rbx", "rbx"],
              ["rcx", "rcx"],
              ["rdx", "rdx"],
              ["rsi", "rsi"],
              ["rdi", "rdi"],
            ] as const
          ).map(([n, r]) => gpr(n, r, 64)),
          gpr("rbp", "rbp", 64, "data_ptr"),
          gpr("rsp", "rsp", 64, "data_ptr"),
          ...(["r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"] as const).map((r) => gpr(r, r, 64)),
          gpr("rip", "rip", 64, "code_ptr"),
        ]
      : [
          gpr("eax", "rax", 32),
          gpr("ecx", "rcx", 32),
          gpr("edx", "rdx", 32),
          gpr("ebx", "rbx", 32),
          gpr("esp", "rsp", 32, "data_ptr"),
          gpr("ebp", "rbp", 32, "data_ptr"),
          gpr("esi", "rsi", 32),
          gpr("edi", "rdi", 32),
          gpr("eip", "rip", 32, "code_ptr"),
        ];
  const wide = arch === "i386:x86-64";
  return [
    ...core,
    eflags(),
    ...SEGS.map(selector),
    ...x87(),
    ...sse(wide ? 16 : 8),
    ...segmentBases(wide ? 64 : 32),
    ...control(),
    ...sys(),
  ];
}

/** Bytes of one register's value as gdb wants it (little-endian, its size). */
export function registerBytes(def: RegisterDef, s: CpuState): Buffer {
  const v = def.get(s);
  const n = def.bits / 8;
  if (Buffer.isBuffer(v)) return Buffer.from(v.subarray(0, n));
  const b = Buffer.alloc(n);
  let x = BigInt.asUintN(def.bits, v);
  for (let i = 0; i < n; i++) {
    b[i] = Number(x & 0xffn);
    x >>= 8n;
  }
  return b;
}

const FEATURE_NAMES: Record<string, string> = {
  core: "org.gnu.gdb.i386.core",
  sse: "org.gnu.gdb.i386.sse",
  segments: "org.gnu.gdb.i386.segments",
  control: "org.vmtool.x86.control",
  sys: "org.vmtool.x86.sys",
};

const flag = (name: string, bit: number) => `<field name="${name}" start="${bit}" end="${bit}"/>`;
/** The named bits of CR0, CR4 and EFER ([name, bit]), for the target description and `monitor regs sys`. */
export const CR0_FLAGS: readonly (readonly [string, number])[] = [
  ["PE", 0],
  ["MP", 1],
  ["EM", 2],
  ["TS", 3],
  ["ET", 4],
  ["NE", 5],
  ["WP", 16],
  ["AM", 18],
  ["NW", 29],
  ["CD", 30],
  ["PG", 31],
];
export const CR4_FLAGS: readonly (readonly [string, number])[] = [
  ["VME", 0],
  ["PVI", 1],
  ["TSD", 2],
  ["DE", 3],
  ["PSE", 4],
  ["PAE", 5],
  ["MCE", 6],
  ["PGE", 7],
  ["PCE", 8],
  ["OSFXSR", 9],
  ["OSXMMEXCPT", 10],
  ["UMIP", 11],
  ["LA57", 12],
  ["VMXE", 13],
  ["SMXE", 14],
  ["FSGSBASE", 16],
  ["PCIDE", 17],
  ["OSXSAVE", 18],
  ["SMEP", 20],
  ["SMAP", 21],
  ["PKE", 22],
];
export const EFER_FLAGS: readonly (readonly [string, number])[] = [
  ["SCE", 0],
  ["LME", 8],
  ["LMA", 10],
  ["NXE", 11],
  ["SVME", 12],
  ["LMSLE", 13],
  ["FFXSR", 14],
  ["TCE", 15],
];
const flagFields = (bits: readonly (readonly [string, number])[]) =>
  bits.map(([n, b]) => flag(n, b)).join("");

const TYPES: Record<string, string> = {
  core: `<flags id="i386_eflags" size="4">${[
    ["CF", 0],
    ["", 1],
    ["PF", 2],
    ["AF", 4],
    ["ZF", 6],
    ["SF", 7],
    ["TF", 8],
    ["IF", 9],
    ["DF", 10],
    ["OF", 11],
    ["NT", 14],
    ["RF", 16],
    ["VM", 17],
    ["AC", 18],
    ["VIF", 19],
    ["VIP", 20],
    ["ID", 21],
  ]
    .map(([n, b]) => flag(n as string, b as number))
    .join("")}</flags>`,
  sse:
    `<vector id="v4f" type="ieee_single" count="4"/><vector id="v2d" type="ieee_double" count="2"/>` +
    `<vector id="v16i8" type="int8" count="16"/><vector id="v8i16" type="int16" count="8"/>` +
    `<vector id="v4i32" type="int32" count="4"/><vector id="v2i64" type="int64" count="2"/>` +
    `<union id="vec128"><field name="v4_float" type="v4f"/><field name="v2_double" type="v2d"/>` +
    `<field name="v16_int8" type="v16i8"/><field name="v8_int16" type="v8i16"/>` +
    `<field name="v4_int32" type="v4i32"/><field name="v2_int64" type="v2i64"/>` +
    `<field name="uint128" type="uint128"/></union>` +
    `<flags id="i386_mxcsr" size="4">${(
      [
        ["IE", 0],
        ["DE", 1],
        ["ZE", 2],
        ["OE", 3],
        ["UE", 4],
        ["PE", 5],
        ["DAZ", 6],
        ["IM", 7],
        ["DM", 8],
        ["ZM", 9],
        ["OM", 10],
        ["UM", 11],
        ["PM", 12],
        ["FZ", 15],
      ] as const
    )
      .map(([n, b]) => flag(n, b))
      .join("")}</flags>`,
  control:
    `<flags id="vmtool_cr0" size="8">${flagFields(CR0_FLAGS)}</flags>` +
    `<flags id="vmtool_cr4" size="8">${flagFields(CR4_FLAGS)}</flags>` +
    `<flags id="vmtool_efer" size="8">${flagFields(EFER_FLAGS)}</flags>`,
};

/** target.xml for `arch`. */
export function targetXml(arch: GdbArch): string {
  const regs = registerLayout(arch);
  const features = [...new Set(regs.map((r) => r.feature))];
  const body = features
    .map((f) => {
      const list = regs
        .map((r, i) => ({ r, i }))
        .filter(({ r }) => r.feature === f)
        .map(
          ({ r, i }) =>
            `<reg name="${r.name}" bitsize="${r.bits}" type="${r.type}" regnum="${i}"${r.group ? ` group="${r.group}"` : ""}/>`,
        )
        .join("");
      return `<feature name="${FEATURE_NAMES[f]}">${TYPES[f] ?? ""}${list}</feature>`;
    })
    .join("");
  return (
    `<?xml version="1.0"?><!DOCTYPE target SYSTEM "gdb-target.dtd">` +
    `<target version="1.0"><architecture>${arch}</architecture><osabi>none</osabi>${body}</target>`
  );
}

/** The gdb architecture for a CPU mode. */
export function archForMode(mode: CpuMode): GdbArch {
  return mode === "real" ? "i8086" : mode === "long" ? "i386:x86-64" : "i386";
}

export type CpuMode = "real" | "protected" | "long" | "compat" | "vm86";

/** The mode a vCPU is in, from its control registers and CS. */
export function cpuMode(s: Sregs, rflags: bigint): CpuMode {
  if ((s.cr0 & 1n) === 0n) return "real";
  if (s.efer & 0x400n) return s.cs.l ? "long" : "compat";
  if (rflags & 0x20000n) return "vm86";
  return "protected";
}

/** What gdb's layout for `arch` means for a guest in `mode`: undefined when they agree. */
export function layoutMismatch(arch: GdbArch, mode: CpuMode): string | undefined {
  const want = archForMode(mode === "compat" ? "protected" : mode === "vm86" ? "real" : mode);
  if (want === arch) return undefined;
  return want;
}
