// Guest RAM's host mapping is 2 MiB-aligned and advised MADV_HUGEPAGE, so that transparent huge pages back
// what a guest touches (and KVM can map it with 2 MiB pages): a real guest writes one byte in each 4 KiB page
// of 16 MiB of its RAM, and the vmtool process's /proc/PID/smaps entry for guest RAM shows the alignment, the
// advice (VmFlags hg) and AnonHugePages covering that range. RAM that nothing writes stays unpopulated.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, readFileSync, writeFileSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CLI } from "../helpers/paths.js";
import { assembleBytes } from "../vm/asm.js";

const MiB = 1 << 20;
const THP = "/sys/kernel/mm/transparent_hugepage/enabled";
const thpMode = existsSync(THP) ? /\[(\w+)\]/.exec(readFileSync(THP, "utf8"))?.[1] : undefined;
const skip =
  thpMode === undefined || thpMode === "never"
    ? `transparent huge pages are ${thpMode ?? "not built into this kernel"} here`
    : undefined;

/** Writes one byte per 4 KiB page of [8 MiB, 24 MiB), then says "!" on the debug console and spins. */
const TOUCH = `
.code64
  mov $0x800000, %rdi
1:
  movb $1, (%rdi)
  add $4096, %rdi
  cmp $0x1800000, %rdi
  jb 1b
  mov $0x21, %al
  out %al, $0xe9
2:
  pause
  jmp 2b
`;

interface Smaps {
  start: bigint;
  sizeKb: number;
  rssKb: number;
  anonHugeKb: number;
  flags: string[];
}

/** The smaps entries of process `pid` whose size is `sizeKb`. */
function mappingsOfSize(pid: number, sizeKb: number): Smaps[] {
  const found: Smaps[] = [];
  let cur: Smaps | undefined;
  for (const line of readFileSync(`/proc/${pid}/smaps`, "utf8").split("\n")) {
    const head = /^([0-9a-f]+)-[0-9a-f]+ /.exec(line);
    if (head) {
      cur = { start: BigInt(`0x${head[1]}`), sizeKb: 0, rssKb: 0, anonHugeKb: 0, flags: [] };
      found.push(cur);
      continue;
    }
    if (!cur) continue;
    const kv = /^(\w+):\s+(.*)$/.exec(line);
    if (!kv) continue;
    if (kv[1] === "Size") cur.sizeKb = parseInt(kv[2], 10);
    else if (kv[1] === "Rss") cur.rssKb = parseInt(kv[2], 10);
    else if (kv[1] === "AnonHugePages") cur.anonHugeKb = parseInt(kv[2], 10);
    else if (kv[1] === "VmFlags") cur.flags = kv[2].trim().split(/\s+/);
  }
  return found.filter((m) => m.sizeKb === sizeKb);
}

test(
  "guest RAM is 2 MiB-aligned, advised MADV_HUGEPAGE, and what the guest touches is backed by huge pages",
  { skip },
  async () => {
    const dir = mkdtempSync(join(tmpdir(), "vmtool-thp-"));
    try {
      const guest = join(dir, "touch.bin");
      writeFileSync(guest, assembleBytes(TOUCH, 0x10_0000, 64));
      const child = spawn(
        process.execPath,
        [CLI, "run", "--mode", "long", "--load", "0x100000", "--mem", "96M", guest],
        {
          stdio: ["ignore", "pipe", "pipe"],
        },
      );
      let out = "";
      let err = "";
      child.stderr.on("data", (b: Buffer) => (err += b.toString()));
      const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
      await new Promise<void>((resolve) => {
        child.stdout.on("data", (b: Buffer) => {
          out += b.toString();
          if (out.includes("!")) resolve();
        });
        void exited.then(() => resolve());
      });
      assert.equal(out, "!", `the guest did not finish touching its RAM\n${err}`);
      const ram = mappingsOfSize(child.pid as number, (96 * MiB) / 1024);
      child.kill("SIGTERM");
      assert.equal(await exited, 143, err);
      assert.equal(
        ram.length,
        1,
        `one 96 MiB mapping: ${JSON.stringify(ram, (_, v) => (typeof v === "bigint" ? v.toString(16) : v))}`,
      );
      const [m] = ram;
      assert.equal(m.start % BigInt(2 * MiB), 0n, `guest RAM at 0x${m.start.toString(16)}`);
      assert.ok(m.flags.includes("hg"), `VmFlags ${m.flags.join(" ")} lack hg (MADV_HUGEPAGE)`);
      // 16 MiB touched in 2 MiB-aligned guest (and so host) pages: eight huge pages, unless the host had none
      // free at that moment (then the kernel falls back to 4 KiB pages: allow a little of that).
      assert.ok(
        m.anonHugeKb >= 12 * 1024,
        `AnonHugePages ${m.anonHugeKb} kB of the 16 MiB the guest touched (Rss ${m.rssKb} kB)`,
      );
      // The rest was never touched: not populated (the image, its boot data and what the guest wrote).
      assert.ok(m.rssKb <= 24 * 1024, `Rss ${m.rssKb} kB: RAM the guest did not touch was populated`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  },
);
