// Every kvmi-v7 layout of src/kvmi-client/layouts.ts, checked field by field against gcc's offsetof/sizeof on
// C definitions written from the protocol's tables (the V7 column and the event layouts), and against the sizes
// the protocol states in words (544-byte events, 96-byte handshake, 472 + 16 n register replies...).
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, writeFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as L from "../../src/kvmi-client/layouts.js";
import type { FieldType, Layout } from "../../src/kvm/layout.js";

// The structs as the protocol's tables give them. kvm_regs, kvm_sregs, kvm_msrs and kvm_msr_entry are the
// kernel's own (<linux/kvm.h>), as in the real headers.
const C_STRUCTS = String.raw`
#include <stdio.h>
#include <stddef.h>
#include <linux/kvm.h>
typedef __u8 u8; typedef __u16 u16; typedef __u32 u32; typedef __u64 u64; typedef __s32 s32; typedef __s64 s64;
struct kvmi_msg_hdr { u16 id; u16 size; u32 seq; };
struct kvmi_error_code { s32 err; u32 padding; };
struct kvmi_vcpu_hdr { u16 vcpu; u16 padding1; u32 padding2; };
struct kvmi_qemu2introspector { u32 struct_size; u8 uuid[16]; u32 padding; s64 start_time; char name[64]; };
struct kvmi_introspector2qemu { u32 struct_size; u8 cookie_hash[20]; };
struct kvmi_features { u8 spp; u8 vmfunc; u8 eptp; u8 ve; u8 padding[4]; };
struct kvmi_get_version_reply { u32 version; u32 padding; struct kvmi_features features; };
struct kvmi_check_command { u16 id; u16 padding1; u32 padding2; };
struct kvmi_check_event { u16 id; u16 padding1; u32 padding2; };
struct kvmi_get_guest_info_reply { u32 vcpu_count; u32 padding[3]; };
struct kvmi_get_vcpu_info_reply { u64 tsc_speed; };
struct kvmi_pause_vcpu { u8 wait; u8 padding1; u16 padding2; u32 padding3; };
struct kvmi_control_vm_events { u16 event_id; u8 enable; u8 padding1; u32 padding2; };
struct kvmi_control_events { u16 event_id; u8 enable; u8 padding1; u32 padding2; };
struct kvmi_control_cr { u8 enable; u8 padding1; u16 padding2; u32 cr; };
struct kvmi_control_msr { u8 enable; u8 padding1; u16 padding2; u32 msr; };
struct kvmi_get_registers { u16 nmsrs; u16 padding1; u32 padding2; u32 msrs_idx[0]; };
struct kvmi_get_registers_reply { u32 mode; u32 padding; struct kvm_regs regs; struct kvm_sregs sregs;
  struct kvm_msrs msrs; };
struct kvmi_get_cpuid { u32 function; u32 index; };
struct kvmi_get_cpuid_reply { u32 eax; u32 ebx; u32 ecx; u32 edx; };
struct kvmi_read_physical { u64 gpa; u64 size; };
struct kvmi_write_physical { u64 gpa; u64 size; u8 data[0]; };
struct kvmi_inject_exception { u8 nr; u8 padding1; u16 padding2; u32 error_code; u64 address; };
struct kvmi_page_access_entry { u64 gpa; u8 access; u8 padding1; u16 padding2; u32 padding3; };
struct kvmi_set_page_access { u16 view; u16 count; u32 padding; struct kvmi_page_access_entry entries[0]; };
struct kvmi_get_mtrr_type { u64 gpa; };
struct kvmi_get_mtrr_type_reply { u8 type; u8 padding[7]; };
struct kvmi_control_cmd_response { u8 enable; u8 now; u16 padding1; u32 padding2; };
struct kvmi_get_max_gfn_reply { u64 gfn; };
struct kvmi_vcpu_translate_gva { u64 gva; };
struct kvmi_vcpu_translate_gva_reply { u64 gpa; };
struct kvmi_vcpu_get_xcr { u8 xcr; u8 padding[7]; };
struct kvmi_vcpu_get_xcr_reply { u64 value; };
struct kvmi_query_physical { u64 gfn; };
struct kvmi_query_physical_reply { u64 gfn; u64 size; };
struct kvmi_vcpu_control_singlestep { u8 enable; u8 padding[7]; };
struct kvmi_event_arch_msrs { u64 sysenter_cs, sysenter_esp, sysenter_eip, efer, star, lstar, cstar, pat,
  shadow_gs; };
struct kvmi_event_arch { u8 mode; u8 padding1; u16 view; u8 padding2[4]; struct kvm_regs regs;
  struct kvm_sregs sregs; struct kvmi_event_arch_msrs msrs; };
struct kvmi_event { u16 size; u16 vcpu; u8 event; u8 padding[3]; struct kvmi_event_arch arch; };
struct kvmi_event_cr { u16 cr; u16 padding[3]; u64 old_value; u64 new_value; };
struct kvmi_event_msr { u32 msr; u32 padding; u64 old_value; u64 new_value; };
struct kvmi_event_breakpoint { u64 gpa; u8 insn_len; u8 padding[7]; };
struct kvmi_event_pf { u64 gva; u64 gpa; u8 access; u8 padding1; u16 view; u32 padding2; };
struct kvmi_event_trap { u8 vector; u8 padding1; u16 padding2; u32 error_code; u64 cr2; };
struct kvmi_event_descriptor { u8 descriptor; u8 write; u8 padding[6]; };
struct kvmi_event_singlestep { u8 failed; u8 padding[7]; };
struct kvmi_event_cpuid { u32 function; u32 index; u8 insn_length; u8 padding1[3]; u32 padding2; };
struct kvmi_event_reply { u8 action; u8 event; u16 padding1; u32 padding2; };
struct kvmi_event_cr_reply { u64 new_val; };
struct kvmi_event_msr_reply { u64 new_val; };
struct kvmi_event_pf_reply { u64 ctx_addr; u32 ctx_size; u8 singlestep; u8 rep_complete; u16 padding;
  u8 ctx_data[256]; };
struct vmtool_memory_map_reply { u32 count; u32 padding; };
struct vmtool_memory_range { u64 gpa; u64 size; u32 kind; u32 padding; };
struct vmtool_ram_mapping_reply { u32 pid; s32 fd; u64 size; u64 gpa; };
struct vmtool_translate_explained { u64 gva; };
struct vmtool_translate_explained_reply { u32 mode; u32 levels; u64 gpa; u32 stop_reason; u32 padding; };
struct vmtool_walk_level { u32 level_kind; u32 padding; u64 entry_gpa; u64 entry_value; };
`;

/** Every field's offset, nested structs included (`arch.sregs.cr3`), and each struct's size. */
function facts(l: Layout, prefix = "", base = 0, out: string[] = []): string[] {
  if (!prefix) out.push(`${l.name} size ${l.size}`);
  for (const [name, info] of Object.entries(l.fields)) {
    const path = prefix + name;
    out.push(`${l.name}.${path} ${base + info.offset}`);
    const t: FieldType = info.type;
    if (typeof t === "object" && !("array" in t))
      facts(Object.assign({}, t, { name: l.name }), `${path}.`, base + info.offset, out);
  }
  return out;
}

test("every kvmi layout matches gcc's offsetof/sizeof on the protocol's C definitions", () => {
  const expected: string[] = [];
  for (const l of L.KVMI_LAYOUTS) expected.push(...facts(l));
  const lines = [C_STRUCTS, "int main(void) {"];
  for (const fact of expected) {
    const [key, kind] = fact.split(" ");
    if (kind === "size") lines.push(`printf("%s size %zu\\n", "${key}", sizeof(struct ${key}));`);
    else {
      const dot = key.indexOf(".");
      const type = key.slice(0, dot);
      const member = key.slice(dot + 1);
      lines.push(`printf("%s %zu\\n", "${key}", offsetof(struct ${type}, ${member}));`);
    }
  }
  lines.push("return 0; }");
  const dir = mkdtempSync(join(tmpdir(), "vmtool-kvmi-layout-"));
  try {
    writeFileSync(join(dir, "l.c"), lines.join("\n"));
    execFileSync("gcc", ["-Wall", "-Werror", "-o", join(dir, "l"), join(dir, "l.c")]);
    const out = execFileSync(join(dir, "l"), { encoding: "utf8" }).trim().split("\n");
    assert.deepEqual(out, expected);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("the sizes and offsets the protocol states in words", () => {
  assert.equal(L.kvmi_msg_hdr.size, 8);
  assert.equal(L.kvmi_qemu2introspector.size, 96);
  assert.equal(L.kvmi_qemu2introspector.off.name, 32); // libkvmi's minimum struct_size
  assert.equal(L.kvmi_introspector2qemu.size, 24);
  assert.equal(L.kvmi_event.size, 544);
  assert.equal(L.kvmi_event_arch.size, 536);
  assert.equal(L.kvmi_event_arch.off.regs, 8);
  assert.equal(L.kvmi_event_arch.off.sregs, 152);
  assert.equal(L.kvmi_event_arch.off.msrs, 464);
  assert.equal((L.kvmi_event_arch.fields.sregs.type as Layout<"cr3">).off.cr3, 240); // within kvm_sregs
  assert.equal(L.kvmi_get_registers_reply.off.regs, 8);
  assert.equal(L.kvmi_get_registers_reply.off.sregs, 152);
  assert.equal(L.kvmi_get_registers_reply.off.msrs, 464);
  assert.equal(L.kvmi_get_registers_reply.size + L.kvm_msr_entry.size * 3, 472 + 16 * 3);
  assert.equal(L.kvmi_get_version_reply.size, 16);
  assert.equal(L.kvmi_get_guest_info_reply.size, 16);
  for (const l of [L.kvmi_event_cr, L.kvmi_event_msr, L.kvmi_event_pf]) assert.equal(l.size, 24, l.name);
  for (const l of [L.kvmi_event_breakpoint, L.kvmi_event_trap, L.kvmi_event_cpuid])
    assert.equal(l.size, 16, l.name);
  assert.equal(L.kvmi_event_pf_reply.size, 272);
  // hookguest's replies: 16 bytes for a PAUSE event, 24 with a CR/MSR new_val, 288 for a PF.
  const head = L.kvmi_vcpu_hdr.size + L.kvmi_event_reply.size;
  assert.equal(head, 16);
  assert.equal(head + L.kvmi_event_msr_reply.size, 24);
  assert.equal(head + L.kvmi_event_pf_reply.size, 288);
  // A CR event message: 544 + 24 (hookguest trace: "CR event (568 B)").
  assert.equal(L.kvmi_event.size + L.kvmi_event_cr.size, 568);
  assert.equal(L.vmtool_memory_range.size, 24);
  assert.equal(L.vmtool_ram_mapping_reply.size, 24);
  assert.equal(L.vmtool_translate_explained_reply.size, 24);
  assert.equal(L.vmtool_walk_level.size, 24);
});
