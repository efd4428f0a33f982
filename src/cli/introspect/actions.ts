// What each `vmtool introspect` subcommand does, over the KVMI client library (src/kvmi-client). Commands that
// need a consistent view (registers, translations, virtual reads, a dump) pause the vCPUs they read and resume
// them before they end; a pause lasts only as long as the connection that asked for it (KVMI's rule).
import { closeSync, constants, fstatSync, lstatSync, openSync, writeSync } from "node:fs";
import { printJson, writeStderr, writeStdout } from "../action.js";
import { UsageError, parseIntOption } from "../errors.js";
import { hex } from "../../format.js";
import { readInputFile } from "../../files/input-file.js";
import { KvmiClient, type Paused } from "../../kvmi-client/client.js";
import { KvmiCommandError } from "../../kvmi-client/errors.js";
import {
  Access,
  COMMAND_NAMES,
  Ev,
  EVENT_NAMES,
  KVM_ENOENT,
  KVM_ENOSYS,
  MEMORY_KIND_RAM,
  Msg,
  VM_EVENTS,
  kvmErrorText,
  type ActionName,
} from "../../kvmi-client/ids.js";
import { GuestRam, sizeText } from "../../kvmi-client/ram.js";
import { SoftwareBreakpoints } from "../../kvmi-client/breakpoints.js";
import type { KvmiEvent, MemoryRange } from "../../kvmi-client/wire.js";
import { openClient, seconds, untilInterrupted, type ConnectOptions } from "./connect.js";
import { OutputFileError, VmmCannotError, VmmRefusedError } from "./errors.js";
import { readElfSymbols } from "./elf-symbols.js";
import {
  REGS_MSRS,
  eventJson,
  eventLine,
  hexdump,
  memoryMapLines,
  regsJson,
  regsText,
  walkJson,
  walkText,
} from "./render.js";
import { COMMAND_REASONS, EVENT_REASONS } from "./support.js";

/** One JSON object on one line (64-bit values as hex strings, as printJson). */
function jsonLine(data: unknown): string {
  return JSON.stringify(data, (_k, v: unknown) => (typeof v === "bigint" ? `0x${v.toString(16)}` : v)) + "\n";
}

async function withClient<T>(opts: ConnectOptions, fn: (c: KvmiClient) => Promise<T>): Promise<T> {
  const client = await openClient(opts);
  try {
    return await fn(client);
  } finally {
    client.close();
  }
}

function vcpuOption(text: string | undefined, count: number): number[] {
  if (text === undefined) return Array.from({ length: count }, (_, i) => i);
  const v = Number(parseIntOption(text, "--vcpu", { min: 0n, max: 65535n }));
  if (v >= count)
    throw new UsageError(`--vcpu ${v}: the VM has ${count} vCPU${count === 1 ? "" : "s"} (0..${count - 1})`);
  return [v];
}

/** Pause `vcpus` (all of them: one batch; one: a single PAUSE_VCPU), run `fn`, resume even if it fails. */
async function paused<T>(
  client: KvmiClient,
  vcpus: number[],
  count: number,
  fn: (p: Paused) => Promise<T>,
): Promise<T> {
  const p = vcpus.length === count ? await client.pauseAll({ count }) : await client.pause(vcpus[0]);
  try {
    return await fn(p);
  } finally {
    if (!client.connection.isClosed) client.resume(p);
  }
}

// ---- info ----

interface Check {
  id: number;
  name: string;
  supported: boolean;
  error?: string;
  why?: string;
}

async function checks(
  ids: ReadonlyMap<number, string>,
  check: (id: number) => Promise<number>,
  reasons: ReadonlyMap<number, string>,
): Promise<Check[]> {
  const entries = [...ids.entries()];
  const answers = await Promise.all(entries.map(([id]) => check(id)));
  return entries.map(([id, name], i) => {
    const err = answers[i];
    if (err === 0) return { id, name, supported: true };
    const why = reasons.get(id);
    return { id, name, supported: false, error: kvmErrorText(err), ...(why ? { why } : {}) };
  });
}

export async function infoAction(opts: ConnectOptions): Promise<void> {
  await withClient(opts, async (c) => {
    const { vcpuCount } = await c.getGuestInfo();
    const [tsc, maxGfn, commands, events] = await Promise.all([
      Promise.all(Array.from({ length: vcpuCount }, (_, v) => c.getVcpuInfo(v).then((i) => i.tscSpeed))),
      c.getMaxGfn(),
      checks(COMMAND_NAMES, (id) => c.checkCommand(id), COMMAND_REASONS),
      checks(EVENT_NAMES, (id) => c.checkEvent(id), EVENT_REASONS),
    ]);
    let memoryMap: MemoryRange[] | null = null;
    let memoryMapWhy: string | undefined;
    try {
      memoryMap = await c.getMemoryMap();
    } catch (err) {
      if (!(err instanceof KvmiCommandError)) throw err;
      memoryMapWhy = `VMTOOL_GET_MEMORY_MAP: ${kvmErrorText(err.err)}`;
    }
    const ram = await GuestRam.open(c);
    ram.close();
    const hs = c.handshake;
    const report = {
      vm: {
        name: hs.name,
        uuid: hs.uuid,
        startTime: new Date(Number(hs.startTime) * 1000).toISOString(),
        handshakeSize: hs.structSize,
      },
      protocol: { version: c.version, features: c.features },
      vcpus: tsc.map((hz, vcpu) => ({ vcpu, tscHz: Number(hz) })),
      maxGfn,
      memoryMap,
      ...(memoryMapWhy ? { memoryMapWhy } : {}),
      ramAccess: { path: ram.path, why: ram.why },
      commands,
      events,
    };
    if (opts.json === true) {
      printJson(report);
      return;
    }
    const lines = [
      `VM ${hs.name || "(no name)"}  uuid ${hs.uuid}  started ${report.vm.startTime}`,
      `KVMI version ${c.version}; features: ${Object.entries(c.features)
        .map(([k, v]) => `${k} ${v ? "yes" : "no"}`)
        .join(", ")}`,
      `vCPUs: ${vcpuCount}` +
        (tsc.length ? ` (TSC ${tsc.map((hz) => `${(Number(hz) / 1e6).toFixed(0)} MHz`).join(", ")})` : ""),
      `guest frames: 0..${hex(maxGfn - 1n)} (GET_MAX_GFN ${hex(maxGfn)})`,
      "memory map:",
      ...(memoryMap ? memoryMapLines(memoryMap) : [`  not available (${memoryMapWhy ?? ""})`]),
      `reading RAM: ${ram.path === "mapping" ? "shared mapping" : "READ_PHYSICAL"}: ${ram.why}`,
      "",
      "commands:",
      ...checkLines(commands),
      "",
      "events:",
      ...checkLines(events),
    ];
    writeStdout(lines.join("\n") + "\n");
  });
}

function checkLines(list: readonly Check[]): string[] {
  return list.map(
    (c) =>
      `  ${c.supported ? "yes" : "no "} ${c.name.padEnd(28)} ${(c.id >= 0x100 ? hex(c.id) : String(c.id)).padStart(6)}` +
      (c.supported ? "" : `  ${c.error ?? ""}${c.why ? `: ${c.why}` : ""}`),
  );
}

// ---- pause / resume ----

export async function pauseAction(opts: ConnectOptions & { vcpu?: string; for?: string }): Promise<void> {
  const holdMs = opts.for === undefined ? undefined : seconds(opts.for, "--for", 0, 86400 * 365) * 1000;
  await withClient(opts, async (c) => {
    const { vcpuCount } = await c.getGuestInfo();
    const vcpus = vcpuOption(opts.vcpu, vcpuCount);
    const stop = untilInterrupted();
    try {
      const p = vcpus.length === vcpuCount ? await c.pauseAll({ count: vcpuCount }) : await c.pause(vcpus[0]);
      const stops = p.events.map((e) => ({ vcpu: e.vcpu, rip: e.regs.rip, mode: e.mode, cr3: e.sregs.cr3 }));
      if (opts.json === true) writeStdout(jsonLine({ paused: stops }));
      else
        writeStdout(
          stops
            .map((s) => `vCPU ${s.vcpu} paused at rip=${hex(s.rip)} (mode ${s.mode}, cr3=${hex(s.cr3)})`)
            .join("\n") +
            `\nholding ${stops.length === 1 ? "it" : "them"} ${holdMs === undefined ? "until Ctrl-C" : `for ${holdMs / 1000} s`}\n`,
        );
      // Hold: until the time is up, a signal, or the VMM goes away. Events that come meanwhile are answered.
      const timer = holdMs === undefined ? undefined : setTimeout(stop.stop, holdMs);
      for (;;) {
        const ev = await c.nextEvent({ signal: stop.signal });
        if (!ev) break;
        if (ev.kind !== "unhook") c.reply(ev, "continue");
      }
      if (timer) clearTimeout(timer);
      if (c.connection.closeReason) throw c.connection.closeReason;
      c.resume(p);
      await c.getGuestInfo(); // a round trip: the replies are out before the connection closes
      if (opts.json === true) writeStdout(jsonLine({ resumed: vcpus }));
      else writeStdout(`resumed ${vcpus.map((v) => `vCPU ${v}`).join(", ")}\n`);
    } finally {
      stop.done();
    }
  });
}

/**
 * Make sure every vCPU runs: pause them all (one batch), answer CONTINUE to whatever events come before
 * their PAUSE events (a vCPU left waiting in an event sends its PAUSE event only once that is answered), then
 * CONTINUE the PAUSE events.
 */
export async function resumeAction(opts: ConnectOptions): Promise<void> {
  await withClient(opts, async (c) => {
    const { vcpuCount } = await c.getGuestInfo();
    const released: KvmiEvent[] = [];
    const p = await c.pauseAllAnswering(
      (ev) => {
        if (ev.kind === "unhook") return;
        c.reply(ev, "continue");
        released.push(ev);
      },
      { count: vcpuCount },
    );
    c.resume(p);
    await c.getGuestInfo();
    if (opts.json === true)
      printJson({
        running: vcpuCount,
        released: released.map((e) => ({ vcpu: e.vcpu, event: e.kind, seq: e.seq })),
      });
    else
      writeStdout(
        `${vcpuCount} vCPU${vcpuCount === 1 ? "" : "s"} running` +
          (released.length
            ? `; answered CONTINUE to ${released.length} waiting event(s): ${released.map((e) => `vCPU ${e.vcpu} ${e.kind}`).join(", ")}`
            : "") +
          "\n",
      );
  });
}

// ---- regs ----

export async function regsAction(opts: ConnectOptions & { vcpu?: string }): Promise<void> {
  await withClient(opts, async (c) => {
    const { vcpuCount } = await c.getGuestInfo();
    const vcpus = vcpuOption(opts.vcpu, vcpuCount);
    const results = await paused(c, vcpus, vcpuCount, async () => {
      const out = [];
      for (const v of vcpus) {
        let r;
        try {
          r = await c.getRegisters(
            v,
            REGS_MSRS.map(([i]) => i),
          );
        } catch (err) {
          // A VMM that cannot read one of those MSRs: the registers without them.
          if (!(err instanceof KvmiCommandError)) throw err;
          r = await c.getRegisters(v);
        }
        out.push({ vcpu: v, r });
      }
      return out;
    });
    if (opts.json === true) printJson({ vcpus: results.map(({ vcpu, r }) => regsJson(vcpu, r)) });
    else writeStdout(results.map(({ vcpu, r }) => regsText(vcpu, r)).join("\n"));
  });
}

// ---- memory ----

/** The largest read shown as a hexdump; with --out, the largest read at all. */
const MAX_HEXDUMP = 1 << 20;
const MAX_READ = 1 << 30;

function address(text: string, what: string): bigint {
  return parseIntOption(text, what, { min: 0n, max: (1n << 64n) - 1n });
}

/** The GPAs of the pages of [gva, gva + len) through `vcpu`'s paging: one piece per page. */
async function translatePieces(
  c: KvmiClient,
  vcpu: number,
  gva: bigint,
  len: number,
): Promise<{ gpa: bigint; size: number }[]> {
  const out: { gpa: bigint; size: number }[] = [];
  let done = 0;
  while (done < len) {
    const at = gva + BigInt(done);
    const size = Math.min(len - done, 4096 - Number(at % 4096n));
    const gpa = await c.translateGva(vcpu, at);
    if (gpa === undefined)
      throw new VmmRefusedError(`${hex(at)} is not mapped on vCPU ${vcpu} (VCPU_TRANSLATE_GVA)`);
    out.push({ gpa, size });
    done += size;
  }
  return out;
}

/** Open --out FILE for writing: a regular file (created, or truncated), never a FIFO or device. */
function openOutput(path: string): number {
  let st;
  try {
    st = lstatSync(path);
  } catch {
    // created below
  }
  if (st && !st.isFile()) throw new UsageError(`${path}: not a regular file (the output is written there)`);
  let fd: number;
  try {
    fd = openSync(
      path,
      constants.O_WRONLY |
        constants.O_CREAT |
        constants.O_TRUNC |
        constants.O_NOFOLLOW |
        constants.O_NONBLOCK,
      0o644,
    );
  } catch (err) {
    throw new UsageError(`${path}: cannot create (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
  }
  if (!fstatSync(fd).isFile()) {
    closeSync(fd);
    throw new UsageError(`${path}: not a regular file (the output is written there)`);
  }
  return fd;
}

function writeAt(fd: number, path: string, data: Uint8Array, position: number): void {
  let off = 0;
  try {
    while (off < data.length) off += writeSync(fd, data, off, data.length - off, position + off);
  } catch (err) {
    throw new OutputFileError(path, (err as NodeJS.ErrnoException).code ?? String(err));
  }
}

export async function readAction(
  addr: string,
  lenText: string,
  opts: ConnectOptions & { virt?: boolean; vcpu?: string; out?: string },
): Promise<void> {
  const at = address(addr, opts.virt === true ? "GVA" : "GPA");
  const len = Number(
    parseIntOption(lenText, "LEN", { min: 1n, max: BigInt(opts.out ? MAX_READ : MAX_HEXDUMP) }),
  );
  if (at + BigInt(len) > 1n << 64n)
    throw new UsageError(`${hex(at)}+${hex(len)} wraps around the address space`);
  const fd = opts.out !== undefined ? openOutput(opts.out) : undefined;
  try {
    await withClient(opts, async (c) => {
      let bytes: Buffer;
      if (opts.virt === true) {
        const { vcpuCount } = await c.getGuestInfo();
        const [vcpu] = vcpuOption(opts.vcpu ?? "0", vcpuCount);
        bytes = await paused(c, [vcpu], vcpuCount, async () => {
          const parts = [];
          for (const p of await translatePieces(c, vcpu, at, len))
            parts.push(await c.readPhysical(p.gpa, p.size));
          return Buffer.concat(parts);
        });
      } else {
        const ram = await GuestRam.open(c);
        try {
          bytes = await ram.read(at, len);
        } finally {
          ram.close();
        }
      }
      if (fd !== undefined && opts.out !== undefined) {
        writeAt(fd, opts.out, bytes, 0);
        if (opts.json === true)
          printJson({ address: at, virtual: opts.virt === true, length: len, file: opts.out });
      } else if (opts.json === true)
        printJson({ address: at, virtual: opts.virt === true, length: len, hex: bytes.toString("hex") });
      else writeStdout(hexdump(at, bytes));
    });
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/** Bytes from "90 90 cc", "9090cc" or "0x90,0x90". */
function parseBytes(text: string): Uint8Array {
  const t = text.replace(/0x/gi, "").replace(/[\s,:]/g, "");
  if (t.length === 0 || t.length % 2 !== 0 || !/^[0-9a-f]+$/i.test(t))
    throw new UsageError(`'${text}' is not a sequence of hexadecimal bytes (for example "90 90 cc")`);
  return Buffer.from(t, "hex");
}

export async function writeAction(
  addr: string,
  data: string | undefined,
  opts: ConnectOptions & { virt?: boolean; vcpu?: string; file?: string },
): Promise<void> {
  const at = address(addr, opts.virt === true ? "GVA" : "GPA");
  if ((data === undefined) === (opts.file === undefined))
    throw new UsageError('give the bytes to write: as an argument ("90 90 cc") or with --file FILE');
  const bytes =
    data !== undefined
      ? parseBytes(data)
      : readInputFile(opts.file ?? "", 16 << 20, "16 MiB (the most `write` writes)");
  if (bytes.length === 0) throw new UsageError(`${opts.file ?? ""}: empty: nothing to write`);
  await withClient(opts, async (c) => {
    if (opts.virt === true) {
      const { vcpuCount } = await c.getGuestInfo();
      const [vcpu] = vcpuOption(opts.vcpu ?? "0", vcpuCount);
      await paused(c, [vcpu], vcpuCount, async () => {
        let off = 0;
        for (const p of await translatePieces(c, vcpu, at, bytes.length)) {
          await c.writePhysical(p.gpa, bytes.subarray(off, off + p.size));
          off += p.size;
        }
      });
    } else await c.writeMemory(at, bytes);
    if (opts.json === true) printJson({ address: at, virtual: opts.virt === true, length: bytes.length });
    else
      writeStdout(
        `wrote ${bytes.length} byte${bytes.length === 1 ? "" : "s"} at ${hex(at)}${opts.virt === true ? " (virtual)" : ""}\n`,
      );
  });
}

export async function translateAction(
  gvaText: string,
  opts: ConnectOptions & { vcpu?: string },
): Promise<void> {
  const gva = address(gvaText, "GVA");
  await withClient(opts, async (c) => {
    const { vcpuCount } = await c.getGuestInfo();
    const [vcpu] = vcpuOption(opts.vcpu ?? "0", vcpuCount);
    const explained = (await c.checkCommand(Msg.VMTOOL_TRANSLATE_EXPLAINED)) === 0;
    await paused(c, [vcpu], vcpuCount, async () => {
      if (explained) {
        const w = await c.translateExplained(vcpu, gva);
        if (opts.json === true) printJson(walkJson(gva, vcpu, w));
        else writeStdout(walkText(gva, vcpu, w));
        return;
      }
      // A VMM without vmtool's extension: the answer, without the walk.
      const gpa = await c.translateGva(vcpu, gva);
      if (opts.json === true) printJson({ gva, vcpu, gpa: gpa ?? null, levels: null });
      else
        writeStdout(
          `${hex(gva)} on vCPU ${vcpu}: ${gpa === undefined ? "not mapped" : `-> ${hex(gpa)}`} ` +
            "(the VMM has no VMTOOL_TRANSLATE_EXPLAINED: no level-by-level walk)\n",
        );
    });
  });
}

// ---- dump ----

/** RAM ranges: from the memory map, else everything below GET_MAX_GFN. */
async function ramRanges(c: KvmiClient): Promise<{ ranges: { gpa: bigint; size: bigint }[]; from: string }> {
  try {
    const map = await c.getMemoryMap();
    return { ranges: map.filter((r) => r.kind === MEMORY_KIND_RAM), from: "VMTOOL_GET_MEMORY_MAP" };
  } catch (err) {
    if (!(err instanceof KvmiCommandError) || ![KVM_ENOSYS, KVM_ENOENT].includes(-err.err)) throw err;
    return { ranges: [{ gpa: 0n, size: (await c.getMaxGfn()) << 12n }], from: "GET_MAX_GFN" };
  }
}

const DUMP_CHUNK = 1 << 20;

export async function dumpAction(
  file: string,
  opts: ConnectOptions & { live?: boolean; mapping?: boolean },
): Promise<void> {
  const fd = openOutput(file);
  const progress = process.stderr.isTTY && opts.json !== true;
  try {
    await withClient(opts, async (c) => {
      const { vcpuCount } = await c.getGuestInfo();
      const { ranges, from } = await ramRanges(c);
      const total = ranges.reduce((a, r) => a + r.size, 0n);
      const ram = await GuestRam.open(c, { useMapping: opts.mapping !== false });
      const started = process.hrtime.bigint();
      let done = 0n;
      let shown = 0;
      const work = async () => {
        for (const r of ranges)
          for (let off = 0n; off < r.size; off += BigInt(DUMP_CHUNK)) {
            const n = Number(r.size - off < BigInt(DUMP_CHUNK) ? r.size - off : BigInt(DUMP_CHUNK));
            writeAt(fd, file, await ram.read(r.gpa + off, n), Number(r.gpa + off));
            done += BigInt(n);
            if (progress && Date.now() - shown > 100) {
              shown = Date.now();
              writeStderr(
                `\rdumping ${sizeText(done)} of ${sizeText(total)} (${Number((done * 100n) / (total || 1n))}%)`,
              );
            }
          }
      };
      try {
        if (opts.live === true) await work();
        else
          await paused(
            c,
            Array.from({ length: vcpuCount }, (_, i) => i),
            vcpuCount,
            work,
          );
      } finally {
        ram.close();
        if (progress) writeStderr("\r\x1b[K");
      }
      const secs = Number(process.hrtime.bigint() - started) / 1e9;
      const mbs = Number(total) / 1e6 / Math.max(secs, 1e-9);
      const summary = {
        file,
        bytes: total,
        ranges: ranges.map((r) => ({ gpa: r.gpa, size: r.size })),
        rangesFrom: from,
        paused: opts.live !== true,
        path: ram.path,
        why: ram.why,
        seconds: Number(secs.toFixed(3)),
        mbPerSecond: Number(mbs.toFixed(1)),
      };
      if (opts.json === true) printJson(summary);
      else
        writeStdout(
          `dumped ${sizeText(total)} of RAM (${ranges.length} range${ranges.length === 1 ? "" : "s"}, at their guest-physical offsets) to ${file} ` +
            `in ${secs.toFixed(2)} s (${mbs.toFixed(0)} MB/s), ${opts.live === true ? "live" : "vCPUs paused"}; ${ram.why}\n`,
        );
    });
  } finally {
    closeSync(fd);
  }
}

// ---- events ----

export interface EventsOptions extends ConnectOptions {
  break?: string[];
  elf?: string;
  singlestep?: boolean;
  vcpu?: string;
  msr?: string[];
  msrValue?: string[];
  writeProtect?: string[];
  pfAction: string;
  action: string;
  once?: boolean;
  count?: string;
  for?: string;
}

function actionName(text: string, what: string, allowed: readonly ActionName[]): ActionName {
  if (!(allowed as readonly string[]).includes(text))
    throw new UsageError(`${what}: '${text}' is not one of ${allowed.join(", ")}`);
  return text as ActionName;
}

interface Plan {
  breaks: { spec: string; gva: bigint; symbol: boolean }[];
  msrs: number[];
  msrValues: Map<number, bigint>;
  pages: bigint[];
  pfAction: ActionName;
  action: ActionName;
  keep: boolean;
  count: number | undefined;
  forMs: number | undefined;
}

/** Every option checked before connecting: bad input is reported with nothing done. */
function plan(opts: EventsOptions): Plan {
  const symbols = opts.elf !== undefined ? readElfSymbols(opts.elf, `--elf ${opts.elf}`) : undefined;
  const breaks = (opts.break ?? []).map((spec) => {
    if (/^(0x[0-9a-f_]+|0o[0-7]+|0b[01]+|\d+)$/i.test(spec))
      return { spec, gva: address(spec, "--break"), symbol: false };
    if (!symbols) throw new UsageError(`--break ${spec}: a symbol needs --elf FILE (the guest's executable)`);
    return { spec, gva: symbols.resolve(spec), symbol: true };
  });
  const msr = (t: string, what: string) => Number(parseIntOption(t, what, { min: 0n, max: 0xffffffffn }));
  const msrs = (opts.msr ?? []).map((t) => msr(t, "--msr"));
  const msrValues = new Map<number, bigint>();
  for (const t of opts.msrValue ?? []) {
    const m = /^([^=]+)=(.+)$/.exec(t);
    if (!m) throw new UsageError(`--msr-value ${t}: give MSR=VALUE (0xc0000081=0x23001000000000)`);
    const index = msr(m[1], "--msr-value");
    msrValues.set(index, parseIntOption(m[2], "--msr-value", { min: 0n, max: (1n << 64n) - 1n }));
    if (!msrs.includes(index)) msrs.push(index);
  }
  const pages: bigint[] = [];
  for (const t of opts.writeProtect ?? []) {
    const m = /^([^:+]+)(?:[:+](.+))?$/.exec(t);
    if (!m) throw new UsageError(`--write-protect ${t}: give GPA or GPA:LEN`);
    const gpa = address(m[1], "--write-protect");
    const len =
      m[2] === undefined ? 1n : parseIntOption(m[2], "--write-protect LEN", { min: 1n, max: 1n << 30n });
    for (let p = gpa & ~0xfffn; p < gpa + len; p += 0x1000n) if (!pages.includes(p)) pages.push(p);
  }
  if (pages.length > 4096) throw new UsageError(`--write-protect: ${pages.length} pages, at most 4096`);
  const count =
    opts.count === undefined
      ? undefined
      : Number(parseIntOption(opts.count, "--count", { min: 1n, max: 1n << 40n }));
  const forMs = opts.for === undefined ? undefined : seconds(opts.for, "--for", 0, 86400 * 365) * 1000;
  if (breaks.length === 0 && msrs.length === 0 && pages.length === 0 && opts.singlestep !== true)
    throw new UsageError("nothing to watch: give --break, --singlestep, --msr or --write-protect");
  return {
    breaks,
    msrs,
    msrValues,
    pages,
    pfAction: actionName(opts.pfAction, "--pf-action", ["continue", "retry", "crash"]),
    action: actionName(opts.action, "--action", ["continue", "retry", "crash"]),
    keep: opts.once !== true,
    count,
    forMs,
  };
}

/** The events a plan needs, each checked with CHECK_EVENT first (what the VMM cannot do is said before anything is done). */
async function requireEvents(c: KvmiClient, ids: number[]): Promise<void> {
  for (const id of ids) {
    const err = await c.checkEvent(id);
    if (err !== 0)
      throw new VmmCannotError(
        `the VMM cannot deliver ${EVENT_NAMES.get(id) ?? id} events (CHECK_EVENT: ${kvmErrorText(err)})`,
      );
  }
}

export async function eventsAction(opts: EventsOptions): Promise<void> {
  const p = plan(opts);
  await withClient(opts, async (c) => {
    const { vcpuCount } = await c.getGuestInfo();
    const stepVcpus = opts.singlestep === true ? vcpuOption(opts.vcpu, vcpuCount) : [];
    const all = Array.from({ length: vcpuCount }, (_, i) => i);
    const canStep =
      (await c.checkCommand(Msg.VCPU_CONTROL_SINGLESTEP)) === 0 && (await c.checkEvent(Ev.SINGLESTEP)) === 0;
    const keep = p.keep && canStep;
    // RETRY on a write-protected page: the page is opened for the one write, then protected again after a
    // single step, so that every write is an event (without single steps it stays open: one event per page).
    const reprotect = p.pages.length > 0 && p.pfAction === "retry" && canStep;
    const needed = [
      ...(p.breaks.length ? [Ev.BREAKPOINT] : []),
      ...(stepVcpus.length || (p.breaks.length && keep) || reprotect ? [Ev.SINGLESTEP] : []),
      ...(p.msrs.length ? [Ev.MSR] : []),
      ...(p.pages.length ? [Ev.PF] : []),
    ];
    await requireEvents(c, needed);
    const out = (ev: KvmiEvent, extra: { label?: string; reply: string; note?: string }) =>
      writeStdout(opts.json === true ? jsonLine(eventJson(ev, extra)) : eventLine(ev, extra) + "\n");
    const bps = new SoftwareBreakpoints(c, keep, (v) => stepVcpus.includes(v));
    const enabled: number[] = [];
    const protectedPages = new Set<bigint>();
    const pf: PfState = { reprotect, stepVcpus, opened: new Map() };
    const stop = untilInterrupted();
    let shown = 0;
    let ended: string | undefined;
    try {
      // Set up with every vCPU paused: nothing is hit before it is all in place.
      await paused(c, all, vcpuCount, async () => {
        for (const id of needed) {
          await c.controlEvent(id, true);
          enabled.push(id);
        }
        for (const b of p.breaks) {
          const gpa = await c.translateGva(0, b.gva);
          if (gpa === undefined)
            throw new VmmRefusedError(`--break ${b.spec}: ${hex(b.gva)} is not mapped on vCPU 0`);
          await bps.add(gpa, b.symbol ? b.spec : hex(b.gva));
        }
        for (const v of all) for (const m of p.msrs) await c.controlMsr(v, m, true);
        for (const v of stepVcpus) await c.controlSinglestep(v, true);
        if (p.pages.length) {
          await c.setPageAccess(p.pages.map((gpa) => ({ gpa, access: Access.R | Access.X })));
          for (const g of p.pages) protectedPages.add(g);
        }
      });
      writeStderr(
        `watching: ${[
          ...bps.all.map((b) => `breakpoint ${b.label} (gpa ${hex(b.gpa)})`),
          ...p.msrs.map((m) => `writes to MSR ${hex(m)}`),
          ...(p.pages.length
            ? [
                `writes to ${p.pages.length} page(s)${p.pfAction === "retry" && !reprotect ? " (each page unprotected at its first write: the VMM cannot single-step)" : ""}`,
              ]
            : []),
          ...(stepVcpus.length ? [`single steps of vCPU ${stepVcpus.join(", ")}`] : []),
        ].join(
          ", ",
        )}${p.breaks.length && !keep ? " (breakpoints are removed when hit: the VMM cannot single-step)" : ""}; Ctrl-C ends\n`,
      );
      const timer = p.forMs === undefined ? undefined : setTimeout(stop.stop, p.forMs);
      try {
        while (p.count === undefined || shown < p.count) {
          const ev = await c.nextEvent({ signal: stop.signal });
          if (!ev) break;
          if (ev.kind === "unhook") {
            out(ev, { reply: "none", note: "the VMM unhooks: it pauses, migrates or ends" });
            ended = "unhook";
            break;
          }
          if (await handleEvent(c, ev, p, bps, protectedPages, pf, out)) shown++;
        }
      } finally {
        if (timer) clearTimeout(timer);
      }
    } finally {
      stop.done();
      if (!c.connection.isClosed && ended !== "unhook")
        await undo(c, all, bps, enabled, p.msrs, stepVcpus, protectedPages);
    }
    if (c.connection.closeReason && ended !== "unhook") throw c.connection.closeReason;
  });
}

/** Write-protected pages opened for one write (RETRY), to be protected again after the vCPU's next step. */
interface PfState {
  reprotect: boolean;
  stepVcpus: number[];
  /** vCPU -> the pages it was let write, until its SINGLESTEP event. */
  opened: Map<number, Set<bigint>>;
}

/** Answer one event as the plan says; true when it was shown (a step over a breakpoint is not). */
async function handleEvent(
  c: KvmiClient,
  ev: KvmiEvent,
  p: Plan,
  bps: SoftwareBreakpoints,
  protectedPages: Set<bigint>,
  pf: PfState,
  out: (ev: KvmiEvent, extra: { label?: string; reply: string; note?: string }) => void,
): Promise<boolean> {
  switch (ev.kind) {
    case "breakpoint": {
      const bp = bps.owner(ev);
      if (bp) {
        out(ev, { label: bp.label, reply: bps.keep ? "stepped over" : "removed, retry" });
        await bps.answerBreakpoint(ev);
      } else {
        out(ev, { note: "not one of ours: the guest's own int3", reply: p.action });
        c.reply(ev, p.action);
      }
      return true;
    }
    case "singlestep": {
      const opened = pf.opened.get(ev.vcpu);
      if (opened) {
        // The write that was let through is done: protect its pages again.
        pf.opened.delete(ev.vcpu);
        await c.setPageAccess([...opened].map((gpa) => ({ gpa, access: Access.R | Access.X })));
        if (!bps.isStepping(ev.vcpu) && !pf.stepVcpus.includes(ev.vcpu)) {
          await c.controlSinglestep(ev.vcpu, false);
          c.reply(ev, "continue");
          return false;
        }
      }
      if (await bps.answerSinglestep(ev)) return false;
      out(ev, { reply: "continue" });
      c.reply(ev, "continue");
      return true;
    }
    case "msr": {
      const value = p.msrValues.get(ev.msr);
      out(ev, { reply: value === undefined ? "continue" : `continue, new value ${hex(value)}` });
      c.reply(ev, "continue", value === undefined ? {} : { newValue: value });
      return true;
    }
    case "pf": {
      const page = ev.gpa & ~0xfffn;
      if (p.pfAction === "retry" && protectedPages.has(page)) {
        // RETRY re-executes the write: it can only succeed once the page is writable again (as hookguest).
        await c.setPageAccess([{ gpa: page, access: Access.RWX }]);
        if (pf.reprotect) {
          // ... and protected again after one step, once the write is done.
          const opened = pf.opened.get(ev.vcpu) ?? new Set<bigint>();
          if (opened.size === 0 && !bps.isStepping(ev.vcpu) && !pf.stepVcpus.includes(ev.vcpu))
            await c.controlSinglestep(ev.vcpu, true);
          opened.add(page);
          pf.opened.set(ev.vcpu, opened);
          out(ev, { reply: "retry", note: "page open for this write" });
        } else {
          protectedPages.delete(page);
          out(ev, { reply: "retry", note: "page unprotected" });
        }
        c.reply(ev, "retry");
        if (
          !pf.reprotect &&
          protectedPages.size === 0 &&
          p.breaks.length === 0 &&
          p.msrs.length === 0 &&
          pf.stepVcpus.length === 0
        )
          throw new VmmCannotError(
            "every write-protected page is unprotected now (with --pf-action retry a page stays open after its first write when the VMM cannot single-step): no further event can come",
          );
      } else {
        out(ev, { reply: p.pfAction });
        c.reply(ev, p.pfAction);
      }
      return true;
    }
    case "pause":
      c.reply(ev, "continue");
      return false;
    default:
      out(ev, { reply: p.action });
      c.reply(ev, p.action);
      return true;
  }
}

/**
 * Put the VM back as it was: pause every vCPU, put the original bytes back, stop stepping, disable the events
 * and lift the page restrictions, then resume. Events that come meanwhile are answered so that every vCPU can
 * reach its PAUSE.
 */
async function undo(
  c: KvmiClient,
  all: number[],
  bps: SoftwareBreakpoints,
  enabled: number[],
  msrs: number[],
  stepVcpus: number[],
  pages: Set<bigint>,
): Promise<void> {
  let unhooked = false;
  let paused: Paused;
  try {
    paused = await c.pauseAllAnswering(
      async (ev) => {
        if (ev.kind === "unhook") {
          unhooked = true;
          return;
        }
        const bp = bps.owner(ev);
        if (bp) await bps.remove(bp);
        c.reply(ev, bp ? "retry" : "continue");
      },
      { count: all.length },
    );
  } catch (err) {
    if (c.connection.isClosed) return; // the connection is over: nothing left to undo through it
    throw err;
  }
  if (unhooked) return;
  await bps.removeAll();
  for (const v of new Set([...stepVcpus, ...all]))
    await c.controlSinglestep(v, false).catch(ignoreUnsupported);
  for (const v of all) for (const m of msrs) await c.controlMsr(v, m, false);
  if (pages.size) await c.setPageAccess([...pages].map((gpa) => ({ gpa, access: Access.RWX })));
  for (const id of enabled) if (!VM_EVENTS.has(id)) await c.controlEvent(id, false);
  c.resume(paused);
  await c.getGuestInfo();
}

function ignoreUnsupported(err: unknown): void {
  if (err instanceof KvmiCommandError) return;
  throw err;
}
