// Reading guest RAM from a client, by the fastest path the VMM offers:
//   - "mapping": VMTOOL_GET_RAM_MAPPING says guest RAM is a file (a memfd) held open by the VMM process as
//     descriptor FD; a client on the same host, as root or the same user, opens /proc/PID/fd/FD read-only and
//     maps it: a read is a copy out of the mapping, no message per page;
//   - "read-physical": otherwise (the VMM answers -KVM_EOPNOTSUPP, has no such command, or the file cannot
//     be opened or mapped from here), one READ_PHYSICAL per page, several in flight.
// `why` says which path is used and why, in words. Reads outside the mapped range go by READ_PHYSICAL.
import { closeSync, fstatSync, openSync, constants } from "node:fs";
import * as libc from "../kvm/libc.js";
import { GuestMemory } from "../memory/guest-memory.js";
import { hex } from "../format.js";
import { KvmiCommandError } from "./errors.js";
import { KVM_ENOENT, KVM_ENOSYS } from "./ids.js";
import type { KvmiClient } from "./client.js";
import type { RamMapping } from "./wire.js";

export type RamPath = "mapping" | "read-physical";

interface Mapped {
  addr: bigint;
  size: number;
  gpa: bigint;
  memory: GuestMemory;
}

/** "256 KiB", "64 MiB", "3.25 GiB". */
export function sizeText(n: bigint | number): string {
  const v = Number(n);
  for (const [unit, shift] of [
    ["GiB", 30],
    ["MiB", 20],
    ["KiB", 10],
  ] as const)
    if (v >= 2 ** shift) return `${Number((v / 2 ** shift).toFixed(2))} ${unit}`;
  return `${v} bytes`;
}

export class GuestRam {
  private closed = false;

  private constructor(
    private readonly client: KvmiClient,
    readonly path: RamPath,
    /** Why this path: "shared mapping of /proc/123/fd/7 (64 MiB at 0x0)", "the VMM cannot share ...". */
    readonly why: string,
    private readonly mapped: Mapped | undefined,
    /** READ_PHYSICAL requests in flight at a time on that path. */
    readonly window: number,
  ) {}

  /** Choose the path: the mapping when the VMM offers one and it can be opened here, else READ_PHYSICAL. */
  static async open(
    client: KvmiClient,
    opts: { useMapping?: boolean; window?: number } = {},
  ): Promise<GuestRam> {
    const window = opts.window ?? 64;
    if (opts.useMapping === false)
      return new GuestRam(client, "read-physical", "READ_PHYSICAL per page, as asked", undefined, window);
    let m: RamMapping | undefined;
    try {
      m = await client.getRamMapping();
    } catch (err) {
      if (err instanceof KvmiCommandError && [KVM_ENOSYS, KVM_ENOENT].includes(-err.err))
        return new GuestRam(
          client,
          "read-physical",
          "READ_PHYSICAL per page: the VMM has no VMTOOL_GET_RAM_MAPPING",
          undefined,
          window,
        );
      throw err;
    }
    if (!m)
      return new GuestRam(
        client,
        "read-physical",
        "READ_PHYSICAL per page: the VMM cannot share its RAM (VMTOOL_GET_RAM_MAPPING: -KVM_EOPNOTSUPP)",
        undefined,
        window,
      );
    const mapped = mapRam(m);
    if (typeof mapped === "string")
      return new GuestRam(client, "read-physical", `READ_PHYSICAL per page: ${mapped}`, undefined, window);
    return new GuestRam(
      client,
      "mapping",
      `shared read-only mapping of /proc/${m.pid}/fd/${m.fd} (${sizeText(m.size)} at ${hex(m.gpa)})`,
      mapped,
      window,
    );
  }

  /** The guest-physical range the mapping covers, when the path is "mapping". */
  get mappedRange(): { gpa: bigint; size: number } | undefined {
    return this.mapped ? { gpa: this.mapped.gpa, size: this.mapped.size } : undefined;
  }

  /** `length` bytes from `gpa`: a copy out of the mapping where it covers them, else READ_PHYSICAL. */
  async read(gpa: bigint, length: number): Promise<Buffer> {
    const m = this.mapped;
    if (this.closed) throw new Error("GuestRam: read after close");
    if (m && gpa >= m.gpa && gpa + BigInt(length) <= m.gpa + BigInt(m.size))
      return Buffer.from(m.memory.read(Number(gpa - m.gpa), length));
    return this.client.readMemory(gpa, length, this.window);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.mapped) libc.munmap(this.mapped.addr, this.mapped.size);
  }
}

/** Open and map the VMM's RAM file read-only; a string says why it cannot be. */
function mapRam(m: RamMapping): Mapped | string {
  const file = `/proc/${m.pid}/fd/${m.fd}`;
  if (m.size === 0n || m.size > BigInt(Number.MAX_SAFE_INTEGER) || m.fd < 0)
    return `the VMM's mapping (${file}, ${m.size} bytes) is not usable`;
  const size = Number(m.size);
  let fd: number;
  try {
    fd = openSync(file, constants.O_RDONLY);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? String(err);
    return `cannot open ${file} (${code}: another host, another user, or the VMM has ended)`;
  }
  try {
    // Pages past the file's end would fault (SIGBUS) when read: the file must hold all it claims.
    const st = fstatSync(fd);
    if (!st.isFile() || st.size < size)
      return `${file} holds ${st.size} bytes, less than the ${size} the VMM announced`;
    const addr = libc.mmap(null, size, libc.PROT_READ, libc.MAP_SHARED, fd, 0);
    if (addr === libc.MAP_FAILED) return `cannot map ${file} (${libc.errnoName(libc.errno())})`;
    return { addr, size, gpa: m.gpa, memory: new GuestMemory([{ gpa: 0, size, hostAddr: addr }]) };
  } finally {
    // The mapping keeps the file; the descriptor is not needed any more.
    closeSync(fd);
  }
}
