// Copying bytes out of a chain's device-readable buffers and into its device-writable ones. The segments
// were checked against guest RAM when the chain was taken; every copy still goes through GuestMemory.
import type { GuestMemory } from "../../memory/guest-memory.js";
import type { Segment } from "./virtqueue.js";

/** Copy up to `len` bytes starting `offset` bytes into the segments (fewer if the segments end first). */
export function gather(
  memory: GuestMemory,
  segments: readonly Segment[],
  offset: number,
  len: number,
): Uint8Array {
  const out = new Uint8Array(len);
  let done = 0;
  for (const s of segments) {
    if (done === len) break;
    if (offset >= s.len) {
      offset -= s.len;
      continue;
    }
    const n = Math.min(s.len - offset, len - done);
    out.set(memory.slice(s.gpa + offset, n), done);
    done += n;
    offset = 0;
  }
  return done === len ? out : out.subarray(0, done);
}

/**
 * Call `visit` with live views (no copy) of the segment bytes in [offset, offset+len): how devices fill
 * device-writable buffers in place (entropy, disk reads). Returns the number of bytes visited.
 */
export function forEachRange(
  memory: GuestMemory,
  segments: readonly Segment[],
  offset: number,
  len: number,
  visit: (view: Uint8Array, at: number) => void,
): number {
  let done = 0;
  for (const s of segments) {
    if (done === len) break;
    if (offset >= s.len) {
      offset -= s.len;
      continue;
    }
    const n = Math.min(s.len - offset, len - done);
    visit(memory.slice(s.gpa + offset, n), done);
    done += n;
    offset = 0;
  }
  return done;
}

/** Copy `data` into the segments starting `offset` bytes in; returns the number of bytes written. */
export function scatter(
  memory: GuestMemory,
  segments: readonly Segment[],
  offset: number,
  data: Uint8Array,
): number {
  return forEachRange(memory, segments, offset, data.length, (view, at) =>
    view.set(data.subarray(at, at + view.length)),
  );
}
