// An 8-byte access that crosses a page boundary reaches user space as the pieces KVM splits it into (3 and 5
// bytes at 0xD0000FFD): the bus hands each device exactly those bytes, no more (a device registered by an exit
// hook on the vCPU's own bus records what it gets), and the guest reads back what the device answered.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { runMachine } from "../../src/vmm/machine.js";
import { assembleBytes } from "../vm/asm.js";

const GUEST = assembleBytes(
  `.code64
  mov $0x8877665544332211, %rax
  mov $0xd0000ffd, %ebx
  mov %rax, (%rbx)
  mov (%rbx), %rcx
  mov $0x0403020100fffefd, %rdx
  mov $2, %al
  cmp %rdx, %rcx
  jne 1f
  mov $1, %al
1: out %al, $0xf4
  cli
  hlt`,
  0x100000,
  64,
);

test("a page-crossing 8-byte MMIO write and read arrive as 3 and 5 bytes, each exactly its own bytes", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "vmtool-mmio-pieces-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const log = join(dir, "accesses.jsonl");
  const hook = join(dir, "device-hook.mjs");
  // The device answers a read at offset o with bytes o, o+1, ... (low 8 bits each).
  writeFileSync(
    hook,
    `import { appendFileSync } from "node:fs";
     export default (ctx) => {
       ctx.mmio.register(0xd0000f00, 0x200, {
         name: "recorder",
         mmioRead(offset, data) {
           for (let i = 0; i < data.length; i++) data[i] = (offset + i) & 0xff;
           appendFileSync(${JSON.stringify(log)}, JSON.stringify({ op: "read", offset, len: data.length }) + "\\n");
         },
         mmioWrite(offset, data) {
           appendFileSync(${JSON.stringify(log)}, JSON.stringify({ op: "write", offset, bytes: [...data] }) + "\\n");
         },
       });
       return () => undefined;
     };`,
  );
  const r = await runMachine({
    memSize: 16 << 20,
    stdin: false,
    hookModules: [pathToFileURL(hook).href],
    load: (mem) => {
      mem.write(0x100000, GUEST);
      return { mode: "long", entry: 0x100000 };
    },
  });
  const accesses = readFileSync(log, "utf8")
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l) as unknown);
  assert.deepEqual(accesses, [
    { op: "write", offset: 0xfd, bytes: [0x11, 0x22, 0x33] },
    { op: "write", offset: 0x100, bytes: [0x44, 0x55, 0x66, 0x77, 0x88] },
    { op: "read", offset: 0xfd, len: 3 },
    { op: "read", offset: 0x100, len: 5 },
  ]);
  assert.deepEqual(
    [r.end.kind, r.end.kind === "exit-port" && r.end.value],
    ["exit-port", 1],
    "the guest read the pieces back",
  );
});
