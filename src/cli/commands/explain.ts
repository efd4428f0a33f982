// `vmtool explain`: the reference tables a learner keeps open (exit reasons, VMCS fields, VM-instruction errors,
// MSRs, CPUID leaves). Tables live in data/*.json with their sources; lookups in src/arch/explain.ts.
import { Command, Option } from "commander";

type Json = { json?: boolean };

async function show(json: boolean | undefined, data: unknown, text: () => string): Promise<void> {
  const { printJson, writeStdout } = await import("../action.js");
  if (json) printJson(data);
  else writeStdout(text() + "\n");
}

export function register(program: Command): void {
  const explain = program
    .command("explain")
    .description(
      "reference tables: exit reasons (VMX, SVM, KVM), VMCS fields, VM-instruction errors, MSRs, CPUID leaves",
    );

  explain
    .command("exit <reason>")
    .description(
      "an exit reason by number or name: VMX basic exit reasons, SVM exit codes and KVM_EXIT_* (all that match)",
    )
    .addOption(new Option("--table <table>", "only this table").choices(["vmx", "svm", "kvm"]))
    .option("--json", "print JSON")
    .action(async (reason: string, opts: Json & { table?: "vmx" | "svm" | "kvm" }) => {
      const { explainExit } = await import("../../arch/explain.js");
      const hits = explainExit(reason, opts.table);
      await show(opts.json, hits, () =>
        hits
          .map(
            (h) =>
              `${h.title} ${h.number} (${h.hex}): ${h.name}\n  ${h.description}` +
              (h.fields ? `\n  look at: ${h.fields}` : "") +
              `\n  source: ${h.source}`,
          )
          .join("\n\n"),
      );
    });

  explain
    .command("vmcs [field]")
    .description(
      "a VMCS field by encoding (0x681e) or name (GUEST_RIP), with its encoding decoded; or --group",
    )
    .option(
      "--group <group>",
      "list a group: guest-state, host-state, vm-execution-control, vm-exit-control, vm-entry-control, vm-exit-information",
    )
    .option("--json", "print JSON")
    .action(async (field: string | undefined, opts: Json & { group?: string }) => {
      const { explainVmcs, vmcsGroup } = await import("../../arch/explain.js");
      const { UsageError } = await import("../errors.js");
      if (opts.group !== undefined) {
        if (field !== undefined) throw new UsageError("give either a field or --group, not both");
        const g = vmcsGroup(opts.group);
        const Table = (await import("cli-table3")).default;
        const t = new Table({
          head: ["encoding", "name", "width", "type", "index"],
          style: { head: [], border: [], compact: true },
        });
        for (const f of g.fields)
          t.push([`0x${f.encoding.toString(16).padStart(4, "0")}`, f.name, f.width, f.type, f.index]);
        await show(opts.json, g, () => `${g.group}: ${g.description}\n${t.toString()}`);
        return;
      }
      if (field === undefined) throw new UsageError("give a VMCS field (encoding or name) or --group GROUP");
      const a = explainVmcs(field);
      const d = a.decoded;
      await show(opts.json, a, () =>
        [
          `VMCS encoding 0x${d.encoding.toString(16).padStart(4, "0")}` +
            (a.field ? `: ${a.field.name}` : ": no field of vmtool's table"),
          a.field ? `  group:  ${a.field.group} (${a.groupDescription})` : "",
          `  access: ${d.access}${d.access === "high" ? " (the upper 32 bits of a 64-bit field)" : ""}  (bit 0)`,
          `  index:  ${d.index}  (bits 9:1)`,
          `  type:   ${d.type}  (bits 11:10)`,
          `  width:  ${d.width}  (bits 14:13)`,
          d.reservedBitsSet
            ? "  reserved bits (12, 15-31) are set: VMREAD/VMWRITE fail with VM-instruction error 12"
            : "",
        ]
          .filter((l) => l !== "")
          .join("\n"),
      );
    });

  explain
    .command("vm-instruction-error <n>")
    .description("a VM-instruction error number (VMCS field VM_INSTRUCTION_ERROR, 0x4400)")
    .option("--json", "print JSON")
    .action(async (n: string, opts: Json) => {
      const { explainVmInstructionError } = await import("../../arch/explain.js");
      const e = explainVmInstructionError(n);
      await show(
        opts.json,
        e,
        () => `VM-instruction error ${e.number}: ${e.description}\n  source: ${e.source}`,
      );
    });

  explain
    .command("msr <index> [value]")
    .description(
      "a virtualization MSR by index or name; with a value, a VMX capability MSR is decoded field by field",
    )
    .option("--json", "print JSON")
    .action(async (index: string, value: string | undefined, opts: Json) => {
      const { explainMsr } = await import("../../arch/explain.js");
      const { groupsText } = await import("../../host/vmx-text.js");
      const m = explainMsr(index, value);
      await show(
        opts.json,
        m,
        () =>
          `MSR ${m.index}: ${m.name}\n  ${m.description}\n  source: ${m.reference}` +
          (m.decoded ? `\n\n${groupsText([m.decoded]).trimEnd()}` : ""),
      );
    });

  explain
    .command("cpuid <leaf>")
    .description(
      "a virtualization-related CPUID leaf (0x1, 0x40000000, 0x40000001, 0x80000001, 0x8000000a ...)",
    )
    .option("--json", "print JSON")
    .action(async (leaf: string, opts: Json) => {
      const { explainCpuid } = await import("../../arch/explain.js");
      const e = explainCpuid(leaf);
      await show(opts.json, e, () => {
        const lines = [`CPUID leaf 0x${e.leaf.toString(16)}: ${e.name}`, `  ${e.description}`];
        for (const [reg, bits] of Object.entries(e.registers))
          for (const [b, name] of Object.entries(bits ?? {}))
            lines.push(`  ${reg.toUpperCase()}[${b}]`.padEnd(14) + name);
        lines.push(`  source: ${e.source}`);
        return lines.join("\n");
      });
    });
}
