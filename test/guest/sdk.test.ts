// The guest SDK used from outside the repository, as docs/guest-sdk.md tells a user to: the documented shell
// blocks run as they are written (only the path in VMTOOL_SDK= replaced) in empty folders under the system's
// temporary folder, with `vmtool` on PATH, and their guests' output compared with the output the page shows.
// Then the SDK's 64-bit MMIO accessors (access sizes and order, under --trace) and its command-line helper,
// with guests built through guest/template's Makefile.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { chmodSync, cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CLI, ROOT } from "../helpers/paths.js";

const SDK = join(ROOT, "guest");
const DOC = join(ROOT, "docs", "guest-sdk.md");

/** A fresh folder outside the repository, removed after the test, with a `vmtool` command in its bin/. */
function scratch(t: { after(fn: () => void): void }): { dir: string; env: NodeJS.ProcessEnv } {
  const dir = mkdtempSync(join(tmpdir(), "vmtool-sdk-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const bin = join(dir, "bin");
  mkdirSync(bin);
  writeFileSync(join(bin, "vmtool"), `#!/bin/sh\nexec '${process.execPath}' '${CLI}' "$@"\n`);
  chmodSync(join(bin, "vmtool"), 0o755);
  const work = join(dir, "work");
  mkdirSync(work);
  return { dir: work, env: { ...process.env, PATH: `${bin}:${process.env.PATH ?? ""}` } };
}

/** The fenced block that follows the HTML comment starting with `marker` in docs/guest-sdk.md. */
function docBlock(marker: string, nth = 0): string {
  const doc = readFileSync(DOC, "utf8");
  let at = -1;
  for (let i = 0; i <= nth; i++) {
    at = doc.indexOf(`<!-- ${marker}`, at + 1);
    assert.ok(at >= 0, `docs/guest-sdk.md has no block marked "${marker}" (#${nth + 1})`);
  }
  const m = /```[a-z]*\n([\s\S]*?)```/.exec(doc.slice(at));
  assert.ok(m, `no fenced block after "${marker}"`);
  return m[1];
}

/** Runs a documented shell block in `dir` with the real SDK path in its VMTOOL_SDK= line. */
function runBlock(script: string, dir: string, env: NodeJS.ProcessEnv): string {
  assert.match(script, /^VMTOOL_SDK=\/path\/to\/vmtool\/guest$/m, "the block sets VMTOOL_SDK as documented");
  const r = spawnSync("sh", ["-eu", "-c", script.replace(/^VMTOOL_SDK=.*$/m, `VMTOOL_SDK='${SDK}'`)], {
    cwd: dir,
    env,
    encoding: "utf8",
    timeout: 120_000,
  });
  assert.equal(r.status, 0, `the documented commands failed (status ${r.status}):\n${script}\n${r.stderr}`);
  assert.equal(r.stderr, "", "nothing on standard error (no compiler or linker warning either)");
  return r.stdout;
}

test("docs/guest-sdk.md: the template, copied to an empty folder, builds and runs as documented", (t) => {
  const { dir, env } = scratch(t);
  const stdout = runBlock(docBlock("test/guest/sdk.test.ts runs this block", 0), dir, env);
  assert.equal(stdout, docBlock("the output of the block above", 0));
});

test("docs/guest-sdk.md: the build by hand works as written, with no linker warning", (t) => {
  const { dir, env } = scratch(t);
  writeFileSync(join(dir, "my.c"), docBlock("test/guest/sdk.test.ts writes this block to my.c"));
  const stdout = runBlock(docBlock("test/guest/sdk.test.ts runs this block", 1), dir, env);
  assert.equal(stdout, docBlock("the output of the block above", 1));
});

/** Copies guest/template to a fresh folder, puts `source` in hello.c and builds it (64-bit or 32-bit). */
function buildFromTemplate(t: { after(fn: () => void): void }, source: string, bits: 32 | 64): string {
  const { dir } = scratch(t);
  cpSync(join(SDK, "template"), dir, { recursive: true });
  writeFileSync(join(dir, "hello.c"), source);
  if (bits === 32) {
    const mk = readFileSync(join(dir, "Makefile"), "utf8")
      .replaceAll("VMTOOL_CFLAGS64", "VMTOOL_CFLAGS32")
      .replaceAll("VMTOOL_LDFLAGS64", "VMTOOL_LDFLAGS32")
      .replaceAll("VMTOOL_LIB64", "VMTOOL_LIB32")
      .replaceAll("VMTOOL_LD_LONG", "VMTOOL_LD_PROTECTED");
    writeFileSync(join(dir, "Makefile"), mk);
  }
  execFileSync("make", ["-s", "-C", dir, `VMTOOL_SDK=${SDK}`], { stdio: ["ignore", "pipe", "pipe"] });
  return join(dir, "hello.elf");
}

const vmtool = (...args: string[]) =>
  spawnSync(process.execPath, [CLI, "run", ...args], { encoding: "utf8", timeout: 60_000 });

test("mmio_read64/mmio_write64: one 8-byte access in 64-bit code, low half then high half in 32-bit code", (t) => {
  // 0xD0000000 with no device there: writes are ignored, reads are all ones, and --trace shows each access.
  const source = `#include <vmtool/io.h>
#include <vmtool/printf.h>
int main(void) {
  mmio_write64(0xD0000000u, 0x1122334455667788ull);
  uint64_t v = mmio_read64(0xD0000000u);
  printf("read %x %x\\n", (unsigned)(v >> 32), (unsigned)v);
  return 0;
}
`;
  const accesses = (elf: string) => {
    const r = vmtool("--trace", elf);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, "read ffffffff ffffffff\n");
    return r.stderr
      .split("\n")
      .filter((l) => /^#\d+ MMIO /.test(l))
      .map((l) => l.replace(/^#\d+ MMIO /, "").replace(/ rip=.*$/, ""));
  };
  assert.deepEqual(accesses(buildFromTemplate(t, source, 64)), [
    "addr=0xd0000000 size=8 write data=0x1122334455667788",
    "addr=0xd0000000 size=8 read",
  ]);
  assert.deepEqual(accesses(buildFromTemplate(t, source, 32)), [
    "addr=0xd0000000 size=4 write data=0x55667788",
    "addr=0xd0000004 size=4 write data=0x11223344",
    "addr=0xd0000000 size=4 read",
    "addr=0xd0000004 size=4 read",
  ]);
});

test("vmtool_cmdline_has/value: whole words and keys, never vmtool's appended virtio_mmio.device= words", (t) => {
  const source = `#include <vmtool/boot_info.h>
#include <vmtool/cmdline.h>
#include <vmtool/printf.h>
static const char *const words[] = {"virtio", "mmio", "device", "virtio_mmio.device", "quiet", "name", "nam", ""};
static const char *const keys[] = {"virtio", "virtio_mmio.device", "name", "nam", "empty", "quiet", "long", ""};
int main(const struct vmtool_boot_info *bi) {
  const char *c = vmtool_cmdline(bi);
  for (unsigned i = 0; i < sizeof words / sizeof words[0]; i++) printf("has %s %d\\n", words[i], vmtool_cmdline_has(c, words[i]));
  for (unsigned i = 0; i < sizeof keys / sizeof keys[0]; i++) {
    char buf[8] = "unset";
    int n = vmtool_cmdline_value(c, keys[i], buf, sizeof buf);
    printf("value %s %d '%s'\\n", keys[i], n, n < 0 ? "-" : buf);
  }
  return 0;
}
`;
  const elf = buildFromTemplate(t, source, 64);
  const r = vmtool("--rng", "--cmdline", "  quiet\tname=bob names=x empty= long=0123456789", elf);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(
    r.stdout,
    [
      "has virtio 0",
      "has mmio 0",
      "has device 0",
      "has virtio_mmio.device 0", // a key=value word is not the bare word
      "has quiet 1",
      "has name 0",
      "has nam 0",
      "has  0",
      "value virtio -1 '-'",
      "value virtio_mmio.device 18 '0x200@0'", // vmtool's own word, found by its whole key; cut to 7 bytes
      "value name 3 'bob'",
      "value nam -1 '-'",
      "value empty 0 ''",
      "value quiet -1 '-'",
      "value long 10 '0123456'",
      "value  -1 '-'",
      "",
    ].join("\n"),
  );
});
