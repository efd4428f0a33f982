// A struct layout is declared once, as an ordered list of C fields; offsets, the size and the alignment follow
// the x86-64 System V rules (each field aligned to its own size, the struct to its largest member).
// test/kvm/struct-layout.test.ts compiles a C program against <linux/kvm.h> and checks every layout here.

export type Scalar = "u8" | "u16" | "u32" | "u64" | "i32" | "i64";
export type FieldType = Scalar | Layout | { array: Scalar | Layout; count: number };

export interface FieldInfo {
  offset: number;
  size: number;
  type: FieldType;
}

export interface Layout<Names extends string = string> {
  readonly name: string;
  readonly size: number;
  readonly align: number;
  readonly fields: { readonly [K in Names]: FieldInfo };
  /** Offsets by field name (shorthand for fields[name].offset). */
  readonly off: { readonly [K in Names]: number };
}

const SCALAR_SIZE: Record<Scalar, number> = { u8: 1, u16: 2, u32: 4, u64: 8, i32: 4, i64: 8 };

function sizeAlign(t: FieldType): [number, number] {
  if (typeof t === "string") return [SCALAR_SIZE[t], SCALAR_SIZE[t]];
  if ("array" in t) {
    const [s, a] = sizeAlign(t.array);
    return [s * t.count, a];
  }
  return [t.size, t.align];
}

/** Declare a C struct. `opts.size` pins the total size where the C struct has a trailing pad or union. */
export function struct<const F extends readonly (readonly [string, FieldType])[]>(
  name: string,
  fields: F,
  opts: { size?: number; packed?: boolean } = {},
): Layout<F[number][0]> {
  let offset = 0;
  let align = 1;
  const info: Record<string, FieldInfo> = {};
  const off: Record<string, number> = {};
  for (const [fname, type] of fields) {
    const [s, a] = sizeAlign(type);
    const fa = opts.packed ? 1 : a;
    offset = Math.ceil(offset / fa) * fa;
    info[fname] = { offset, size: s, type };
    off[fname] = offset;
    offset += s;
    align = Math.max(align, fa);
  }
  let size = Math.ceil(offset / align) * align;
  if (opts.size !== undefined) {
    if (opts.size < size) throw new Error(`layout ${name}: pinned size ${opts.size} < computed ${size}`);
    size = opts.size;
  }
  return {
    name,
    size,
    align,
    fields: info as Layout<F[number][0]>["fields"],
    off: off as Layout<F[number][0]>["off"],
  };
}

/** A union member placed at a fixed offset inside another struct (e.g. kvm_run's exit union at 32). */
export function at<N extends string>(base: number, layout: Layout<N>): { readonly [K in N]: number } {
  const o: Record<string, number> = {};
  for (const k of Object.keys(layout.off)) o[k] = base + (layout.off as Record<string, number>)[k];
  return o as { [K in N]: number };
}
