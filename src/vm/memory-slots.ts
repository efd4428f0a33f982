// Guest RAM as KVM memory slots, page by page when pages are protected. KVM has no per-page access control
// a user-space VMM can set, but a memory slot can be read-only (KVM_MEM_READONLY: a guest write exits to user
// space as an MMIO write, with its address and data) or absent (reads and writes exit as MMIO). So protecting a
// page splits the slot that holds it: the runs of pages with the same access become slots of their own.
//
// While slots change, a page may be briefly in no slot: a guest access to it then exits as MMIO too. The vCPU
// thread serves any MMIO exit inside RAM from RAM itself (and reports it only if the page is protected), so
// that window is invisible to the guest.
import * as libc from "../kvm/libc.js";
import { KVM, KVM_MEM_READONLY } from "../kvm/ioctls.js";
import { kvm_userspace_memory_region } from "../kvm/structs.js";
import { VmConfigError } from "./errors.js";

export const PAGE_SIZE = 4096;

/** What the guest may do with a page without exiting: everything, read only, or nothing. */
export type PageAccess = "rw" | "r" | "none";

interface Slot {
  id: number;
  gpa: number;
  size: number;
  readOnly: boolean;
}

export class MemorySlots {
  private slots: Slot[];
  /** Pages whose access is not "rw", by page number. */
  private readonly protectedPages = new Map<number, "r" | "none">();
  /**
   * One bit per page of RAM, set while the page is protected, in shared memory: the vCPU threads look at it
   * when an MMIO exit lands inside RAM (protectedBit()).
   */
  readonly bitmap: SharedArrayBuffer;
  private readonly bits: Uint8Array;
  private readonly region = Buffer.alloc(kvm_userspace_memory_region.size);

  /** `maxSlots`: what the VM allows (KVM_CAP_NR_MEMSLOTS); slot 0 already holds all of RAM. */
  constructor(
    private readonly vmFd: number,
    private readonly hostAddr: bigint,
    readonly size: number,
    private readonly maxSlots: number,
  ) {
    this.slots = [{ id: 0, gpa: 0, size, readOnly: false }];
    this.bitmap = new SharedArrayBuffer(Math.ceil(size / PAGE_SIZE / 8));
    this.bits = new Uint8Array(this.bitmap);
  }

  /** How the guest may access the page at `gpa` without exiting. */
  access(gpa: number): PageAccess {
    return this.protectedPages.get(Math.floor(gpa / PAGE_SIZE)) ?? "rw";
  }

  /** How many pages are protected. */
  get protectedCount(): number {
    return this.protectedPages.size;
  }

  /** Whether any page is protected (the vCPU then checks MMIO exits inside RAM for it). */
  get anyProtected(): boolean {
    return this.protectedPages.size > 0;
  }

  /**
   * Set the access of the pages in [gpa, gpa + len) (whole pages; the range must lie inside RAM), and
   * re-register the slots. Throws VmConfigError when KVM has too few slots for the layout (nothing changes
   * then).
   */
  setAccess(gpa: number, len: number, access: PageAccess): void {
    if (
      !Number.isSafeInteger(gpa) ||
      !Number.isSafeInteger(len) ||
      gpa < 0 ||
      len <= 0 ||
      gpa + len > this.size
    )
      throw new VmConfigError(`pages 0x${gpa.toString(16)}+0x${len.toString(16)} are not inside guest RAM`);
    const first = Math.floor(gpa / PAGE_SIZE);
    const last = Math.floor((gpa + len - 1) / PAGE_SIZE);
    const before = new Map(this.protectedPages);
    for (let p = first; p <= last; p++) {
      if (access === "rw") this.protectedPages.delete(p);
      else this.protectedPages.set(p, access);
    }
    const sync = () => {
      for (let p = first; p <= last; p++) {
        const mask = 1 << (p & 7);
        this.bits[p >> 3] = this.protectedPages.has(p) ? this.bits[p >> 3] | mask : this.bits[p >> 3] & ~mask;
      }
    };
    const layout = this.layout();
    if (layout.length > this.maxSlots) {
      this.protectedPages.clear();
      for (const [k, v] of before) this.protectedPages.set(k, v);
      throw new VmConfigError(
        `${layout.length} memory slots needed for the protected pages, this KVM allows ${this.maxSlots}`,
      );
    }
    // The bits first when protecting (an exit in the window between slot changes is then reported), last when
    // lifting (a write that raced the change is still served from RAM, only not reported).
    if (access !== "rw") sync();
    this.apply(layout);
    if (access === "rw") sync();
  }

  /** The slots the current protection needs: the runs of pages with the same access, "none" runs left out. */
  private layout(): Omit<Slot, "id">[] {
    const pages = [...this.protectedPages.keys()].sort((a, b) => a - b);
    const out: Omit<Slot, "id">[] = [];
    let at = 0; // next page not yet placed
    const total = this.size / PAGE_SIZE;
    let i = 0;
    while (at < total) {
      if (i < pages.length && pages[i] === at) {
        // A run of protected pages with the same access.
        const access = this.protectedPages.get(at);
        let end = at + 1;
        i++;
        while (i < pages.length && pages[i] === end && this.protectedPages.get(end) === access) {
          end++;
          i++;
        }
        if (access === "r") out.push({ gpa: at * PAGE_SIZE, size: (end - at) * PAGE_SIZE, readOnly: true });
        at = end;
      } else {
        const end = i < pages.length ? pages[i] : total;
        out.push({ gpa: at * PAGE_SIZE, size: (end - at) * PAGE_SIZE, readOnly: false });
        at = end;
      }
    }
    return out;
  }

  /** Replace the registered slots with `layout`: slots that stay are kept, the others deleted, then added. */
  private apply(layout: Omit<Slot, "id">[]): void {
    const same = (a: Omit<Slot, "id">, b: Omit<Slot, "id">) =>
      a.gpa === b.gpa && a.size === b.size && a.readOnly === b.readOnly;
    const keep = this.slots.filter((s) => layout.some((l) => same(l, s)));
    for (const s of this.slots) if (!keep.includes(s)) this.register(s.id, s.gpa, 0, false);
    const used = new Set(keep.map((s) => s.id));
    const next: Slot[] = [...keep];
    for (const l of layout) {
      if (keep.some((s) => same(l, s))) continue;
      let id = 0;
      while (used.has(id)) id++;
      used.add(id);
      this.register(id, l.gpa, l.size, l.readOnly);
      next.push({ id, ...l });
    }
    this.slots = next.sort((a, b) => a.gpa - b.gpa);
  }

  /** KVM_SET_USER_MEMORY_REGION (size 0 deletes the slot). */
  private register(id: number, gpa: number, size: number, readOnly: boolean): void {
    const o = kvm_userspace_memory_region.off;
    const b = this.region;
    b.fill(0);
    b.writeUInt32LE(id, o.slot);
    b.writeUInt32LE(readOnly ? KVM_MEM_READONLY : 0, o.flags);
    b.writeBigUInt64LE(BigInt(gpa), o.guest_phys_addr);
    b.writeBigUInt64LE(BigInt(size), o.memory_size);
    b.writeBigUInt64LE(size === 0 ? 0n : this.hostAddr + BigInt(gpa), o.userspace_addr);
    if (libc.ioctlPtr(this.vmFd, KVM.SET_USER_MEMORY_REGION, b) < 0)
      throw new libc.SysError("KVM_SET_USER_MEMORY_REGION", libc.errno());
  }

  /** The registered slots, by address (for tests and `vmtool introspect info`). */
  describe(): readonly { id: number; gpa: number; size: number; readOnly: boolean }[] {
    return this.slots.map((s) => ({ ...s }));
  }
}

/** Whether the page holding `gpa` is protected, in a MemorySlots bitmap seen from any thread. */
export function protectedBit(bits: Uint8Array, gpa: number): boolean {
  const p = Math.floor(gpa / PAGE_SIZE);
  return (bits[p >> 3] & (1 << (p & 7))) !== 0;
}
