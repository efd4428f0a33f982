// The uncompressed vmlinux inside a bzImage, as the kernel's extract-vmlinux finds it: the compressed payload
// (its place and length from the setup header, protocol 2.08+), told by its magic bytes and decompressed with
// the host's tool for that format. The payload ends with the kernel's 4-byte little-endian uncompressed size
// (the build's size_append), which is cut off before decompressing and checked against the result.
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";

const FORMATS = [
  { name: "xz", magic: [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00], cmd: ["xz", "-dc"] },
  { name: "gzip", magic: [0x1f, 0x8b], cmd: ["gzip", "-dc"] },
  { name: "zstd", magic: [0x28, 0xb5, 0x2f, 0xfd], cmd: ["zstd", "-qdc"] },
  { name: "lz4", magic: [0x02, 0x21, 0x4c, 0x18], cmd: ["lz4", "-dc"] },
] as const;

/** Write the vmlinux of the bzImage at `bzImage` to DIR/vmlinux (once) and return its path. */
export function extractVmlinux(bzImage: string, dir: string): string {
  const out = join(dir, "vmlinux");
  if (existsSync(out) && statSync(out).size > 0) return out;
  const b = readFileSync(bzImage);
  const setupSects = b[0x1f1] === 0 ? 4 : b[0x1f1];
  const payloadOffset = b.readUInt32LE(0x248);
  const payloadLength = b.readUInt32LE(0x24c);
  const start = (setupSects + 1) * 512 + payloadOffset;
  const payload = b.subarray(start, start + payloadLength - 4);
  const size = b.readUInt32LE(start + payloadLength - 4);
  const f = FORMATS.find((x) => x.magic.every((m, i) => payload[i] === m));
  if (!f) throw new Error(`${bzImage}: payload at ${start} starts ${payload.subarray(0, 6).toString("hex")}`);
  const vmlinux = execFileSync(f.cmd[0], f.cmd.slice(1), { input: payload, maxBuffer: 1 << 30 });
  if (vmlinux.length !== size)
    throw new Error(`${bzImage}: ${f.name} payload gave ${vmlinux.length} bytes, the kernel says ${size}`);
  writeFileSync(out, vmlinux);
  return out;
}
