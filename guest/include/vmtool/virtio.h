/* The guest SDK's virtio driver core: virtio 1.x over the virtio-mmio transport (version 2 registers) with
 * split virtqueues, written from the virtio 1.x specification ("Virtio Over MMIO", "Split Virtqueues",
 * "Device Initialization"). Header-only (static inline) so that any guest built with the SDK's usual
 * library objects links it, 32-bit or 64-bit.
 *
 * What it does:
 *  - find a device: from vmtool's machine description (vmtool_virtio_find) or by probing a known address
 *    (vmtool_virtio_probe: magic "virt", version 2, the wanted device ID);
 *  - initialize it: reset, ACKNOWLEDGE, DRIVER, feature negotiation (VIRTIO_F_VERSION_1 required, plus the
 *    optional features the caller asks for and the device offers), FEATURES_OK checked, then the caller
 *    sets up its queues and calls vmtool_virtio_driver_ok;
 *  - one split queue per struct vmtool_virtq, laid out in memory the caller provides;
 *  - submit one descriptor chain, notify, wait for the used ring by polling (with a TSC time limit) or
 *    take it after an interrupt (vmtool_virtq_take, vmtool_virtio_ack_interrupt);
 *  - reset.
 *
 * Deliberately small: one chain in flight per queue at a time (every request the examples make is
 * synchronous), descriptors always start at index 0, no event-index or indirect descriptors. The device
 * may be hostile to nothing here: the guest trusts its device. Ordering: x86 keeps stores in order and
 * loads in order, so a compiler barrier is enough between filling the ring and publishing avail->idx, and
 * between seeing used->idx move and reading the used element. */
#ifndef VMTOOL_VIRTIO_H
#define VMTOOL_VIRTIO_H

#include <stdint.h>
#include <vmtool/boot_info.h>
#include <vmtool/io.h>

/* ---- virtio-mmio registers (offsets from the transport's base) */
#define VIRTIO_MMIO_MAGIC_VALUE 0x000 /* 0x74726976, "virt" */
#define VIRTIO_MMIO_VERSION 0x004     /* 2 for virtio 1.x (1 is the legacy interface) */
#define VIRTIO_MMIO_DEVICE_ID 0x008   /* 0: no device behind this transport */
#define VIRTIO_MMIO_VENDOR_ID 0x00c
#define VIRTIO_MMIO_DEVICE_FEATURES 0x010
#define VIRTIO_MMIO_DEVICE_FEATURES_SEL 0x014
#define VIRTIO_MMIO_DRIVER_FEATURES 0x020
#define VIRTIO_MMIO_DRIVER_FEATURES_SEL 0x024
#define VIRTIO_MMIO_QUEUE_SEL 0x030
#define VIRTIO_MMIO_QUEUE_NUM_MAX 0x034
#define VIRTIO_MMIO_QUEUE_NUM 0x038
#define VIRTIO_MMIO_QUEUE_READY 0x044
#define VIRTIO_MMIO_QUEUE_NOTIFY 0x050
#define VIRTIO_MMIO_INTERRUPT_STATUS 0x060
#define VIRTIO_MMIO_INTERRUPT_ACK 0x064
#define VIRTIO_MMIO_STATUS 0x070
#define VIRTIO_MMIO_QUEUE_DESC_LOW 0x080
#define VIRTIO_MMIO_QUEUE_DESC_HIGH 0x084
#define VIRTIO_MMIO_QUEUE_DRIVER_LOW 0x090 /* the available ring */
#define VIRTIO_MMIO_QUEUE_DRIVER_HIGH 0x094
#define VIRTIO_MMIO_QUEUE_DEVICE_LOW 0x0a0 /* the used ring */
#define VIRTIO_MMIO_QUEUE_DEVICE_HIGH 0x0a4
#define VIRTIO_MMIO_CONFIG_GENERATION 0x0fc
#define VIRTIO_MMIO_CONFIG 0x100 /* device-specific configuration space */

#define VIRTIO_MMIO_MAGIC 0x74726976u

/* ---- device IDs */
#define VIRTIO_ID_NET 1
#define VIRTIO_ID_BLOCK 2
#define VIRTIO_ID_CONSOLE 3
#define VIRTIO_ID_RNG 4

/* ---- device status bits */
#define VIRTIO_STATUS_ACKNOWLEDGE 1
#define VIRTIO_STATUS_DRIVER 2
#define VIRTIO_STATUS_DRIVER_OK 4
#define VIRTIO_STATUS_FEATURES_OK 8
#define VIRTIO_STATUS_DEVICE_NEEDS_RESET 64
#define VIRTIO_STATUS_FAILED 128

/* ---- feature bits (bit numbers in the 64-bit feature set) */
#define VIRTIO_F_INDIRECT_DESC 28
#define VIRTIO_F_EVENT_IDX 29
#define VIRTIO_F_VERSION_1 32
#define VIRTIO_BLK_F_RO 5
#define VIRTIO_FEATURE(bit) (1ull << (bit))

/* ---- InterruptStatus bits */
#define VIRTIO_INT_USED_BUFFER 1
#define VIRTIO_INT_CONFIG_CHANGE 2

/* ---- split virtqueue layout (little-endian; x86 is) */
#define VIRTQ_DESC_F_NEXT 1
#define VIRTQ_DESC_F_WRITE 2 /* the device writes this buffer (else it reads it) */
#define VIRTQ_DESC_F_INDIRECT 4

struct virtq_desc {
  uint64_t addr;
  uint32_t len;
  uint16_t flags;
  uint16_t next;
};
struct virtq_avail {
  uint16_t flags;
  volatile uint16_t idx;
  uint16_t ring[]; /* size entries, then used_event */
};
struct virtq_used_elem {
  uint32_t id; /* head of the chain */
  uint32_t len; /* bytes the device wrote */
};
struct virtq_used {
  volatile uint16_t flags;
  volatile uint16_t idx;
  struct virtq_used_elem ring[]; /* size entries, then avail_event */
};

/* Bytes of queue memory for SIZE entries: descriptor table (16-byte aligned, where the memory starts),
 * available ring right after it, used ring at the next 4-byte boundary. The memory must be 16-byte aligned;
 * declare it with VMTOOL_VIRTQ_MEMORY. */
#define VMTOOL_VIRTQ_USED_OFFSET(size) ((16u * (size) + 6u + 2u * (size) + 3u) & ~3u)
#define VMTOOL_VIRTQ_BYTES(size) (VMTOOL_VIRTQ_USED_OFFSET(size) + 6u + 8u * (size))
#define VMTOOL_VIRTQ_MEMORY(name, size) static uint8_t name[VMTOOL_VIRTQ_BYTES(size)] __attribute__((aligned(16)))

/* A time limit for vmtool_virtq_wait, in TSC cycles: 2^33 (seconds on any host). It is time, not a count of
 * spins, because the device is served by another host thread whose speed depends on the host (docs/svm.md). */
#define VMTOOL_VIRTIO_WAIT_DEFAULT (1ull << 33)
#define VMTOOL_VIRTIO_WAIT_FOREVER 0ull

/* Results: 0 or a positive value on success, one of these on failure. */
#define VMTOOL_VIRTIO_ERR_NO_DEVICE (-1)    /* no virtio-mmio v2 device with that ID */
#define VMTOOL_VIRTIO_ERR_NO_VERSION_1 (-2) /* the device does not offer VIRTIO_F_VERSION_1 */
#define VMTOOL_VIRTIO_ERR_FEATURES (-3)     /* the device cleared FEATURES_OK: it refused our features */
#define VMTOOL_VIRTIO_ERR_QUEUE (-4)        /* no such queue, already in use, or too small */
#define VMTOOL_VIRTIO_ERR_TIMEOUT (-5)      /* the used ring did not move in time */
#define VMTOOL_VIRTIO_ERR_ARGS (-6)         /* a bad argument (queue size, chain length, busy queue) */

struct vmtool_virtio_dev {
  uintptr_t base;     /* the transport's registers */
  uint32_t device_id; /* VIRTIO_ID_... */
  uint32_t irq;       /* ISA IRQ from the machine description, VMTOOL_IRQ_NONE when unknown */
  uint64_t features;  /* negotiated by vmtool_virtio_init */
};

struct vmtool_virtq {
  struct vmtool_virtio_dev *dev;
  uint16_t index; /* queue number on the device */
  uint16_t size;  /* entries, a power of 2 */
  struct virtq_desc *desc;
  struct virtq_avail *avail;
  struct virtq_used *used;
  uint16_t last_used; /* used->idx we have consumed up to */
  uint16_t in_flight; /* chains submitted and not yet taken (0 or 1 here) */
};

/* One buffer of a chain; device_writes: the device fills it (VIRTQ_DESC_F_WRITE). */
struct vmtool_virtq_buf {
  const volatile void *addr;
  uint32_t len;
  uint32_t device_writes;
};

static inline uint32_t vmtool_virtio_read(const struct vmtool_virtio_dev *d, uint32_t off) {
  return mmio_read32(d->base + off);
}
static inline void vmtool_virtio_write(const struct vmtool_virtio_dev *d, uint32_t off, uint32_t v) {
  mmio_write32(d->base + off, v);
}
static inline uint64_t vmtool_virtio_rdtsc(void) {
  uint32_t lo, hi;
  __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
  return ((uint64_t)hi << 32) | lo;
}
#define VMTOOL_VIRTIO_BARRIER() __asm__ volatile("" ::: "memory")

/* Is there a virtio-mmio version-2 transport at BASE with device ID DEVICE_ID (0: any device)? Fills DEV. */
static inline int vmtool_virtio_probe(uintptr_t base, uint32_t device_id, struct vmtool_virtio_dev *dev) {
  dev->base = base;
  dev->irq = VMTOOL_IRQ_NONE;
  dev->features = 0;
  uint32_t id = vmtool_virtio_read(dev, VIRTIO_MMIO_DEVICE_ID);
  dev->device_id = id;
  if (vmtool_virtio_read(dev, VIRTIO_MMIO_MAGIC_VALUE) != VIRTIO_MMIO_MAGIC ||
      vmtool_virtio_read(dev, VIRTIO_MMIO_VERSION) != 2 || id == 0 || (device_id && id != device_id))
    return VMTOOL_VIRTIO_ERR_NO_DEVICE;
  return 0;
}

/* The NTH (from 0) virtio-mmio device with DEVICE_ID listed in vmtool's machine description, checked by
 * probing its registers. Fills DEV (irq included). */
static inline int vmtool_virtio_find(const struct vmtool_boot_info *bi, uint32_t device_id, uint32_t nth,
                                     struct vmtool_virtio_dev *dev) {
  if (!vmtool_boot_info_valid(bi)) return VMTOOL_VIRTIO_ERR_NO_DEVICE;
  for (uint32_t i = 0; i < bi->dev_entry_count; i++) {
    const struct vmtool_dev_entry *e = vmtool_dev_entry(bi, i);
    if (e->kind != VMTOOL_DEV_VIRTIO_MMIO || e->space != VMTOOL_SPACE_MMIO || e->device_id != device_id) continue;
    if (nth-- > 0) continue;
    if ((uint64_t)(uintptr_t)e->base != e->base) return VMTOOL_VIRTIO_ERR_NO_DEVICE; /* above 4 GiB, 32-bit */
    int r = vmtool_virtio_probe((uintptr_t)e->base, device_id, dev);
    dev->irq = e->irq;
    return r;
  }
  return VMTOOL_VIRTIO_ERR_NO_DEVICE;
}

/* Reset the device (Status = 0) and wait until it reads back 0, as the spec asks before reuse. */
static inline void vmtool_virtio_reset(struct vmtool_virtio_dev *dev) {
  vmtool_virtio_write(dev, VIRTIO_MMIO_STATUS, 0);
  while (vmtool_virtio_read(dev, VIRTIO_MMIO_STATUS) != 0) __asm__ volatile("pause");
}

static inline uint32_t vmtool_virtio_status(const struct vmtool_virtio_dev *dev) {
  return vmtool_virtio_read(dev, VIRTIO_MMIO_STATUS);
}

/* The device's 64-bit feature set. */
static inline uint64_t vmtool_virtio_device_features(const struct vmtool_virtio_dev *dev) {
  vmtool_virtio_write(dev, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
  uint64_t hi = vmtool_virtio_read(dev, VIRTIO_MMIO_DEVICE_FEATURES);
  vmtool_virtio_write(dev, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
  return (hi << 32) | vmtool_virtio_read(dev, VIRTIO_MMIO_DEVICE_FEATURES);
}

/* Steps 1-6 of the spec's device initialization: reset, ACKNOWLEDGE, DRIVER, negotiate features (VERSION_1
 * plus those of WANTED the device offers; the result is in dev->features), FEATURES_OK and check it stuck.
 * On failure the device is left with FAILED set. Next: vmtool_virtq_setup for each queue, then
 * vmtool_virtio_driver_ok. */
static inline int vmtool_virtio_init(struct vmtool_virtio_dev *dev, uint64_t wanted) {
  vmtool_virtio_reset(dev);
  vmtool_virtio_write(dev, VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE);
  vmtool_virtio_write(dev, VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
  uint64_t offered = vmtool_virtio_device_features(dev);
  if (!(offered & VIRTIO_FEATURE(VIRTIO_F_VERSION_1))) {
    vmtool_virtio_write(dev, VIRTIO_MMIO_STATUS,
                        VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FAILED);
    return VMTOOL_VIRTIO_ERR_NO_VERSION_1;
  }
  uint64_t accepted = offered & (wanted | VIRTIO_FEATURE(VIRTIO_F_VERSION_1));
  vmtool_virtio_write(dev, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
  vmtool_virtio_write(dev, VIRTIO_MMIO_DRIVER_FEATURES, (uint32_t)accepted);
  vmtool_virtio_write(dev, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
  vmtool_virtio_write(dev, VIRTIO_MMIO_DRIVER_FEATURES, (uint32_t)(accepted >> 32));
  uint32_t s = VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK;
  vmtool_virtio_write(dev, VIRTIO_MMIO_STATUS, s);
  if (!(vmtool_virtio_status(dev) & VIRTIO_STATUS_FEATURES_OK)) {
    vmtool_virtio_write(dev, VIRTIO_MMIO_STATUS, s | VIRTIO_STATUS_FAILED);
    return VMTOOL_VIRTIO_ERR_FEATURES;
  }
  dev->features = accepted;
  return 0;
}

/* Step 8: the driver is ready; the device may use its queues from now on. */
static inline void vmtool_virtio_driver_ok(struct vmtool_virtio_dev *dev) {
  vmtool_virtio_write(dev, VIRTIO_MMIO_STATUS,
                      VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK |
                          VIRTIO_STATUS_DRIVER_OK);
}

/* Read and acknowledge InterruptStatus (from an interrupt handler, or after polling); returns the bits. */
static inline uint32_t vmtool_virtio_ack_interrupt(struct vmtool_virtio_dev *dev) {
  uint32_t s = vmtool_virtio_read(dev, VIRTIO_MMIO_INTERRUPT_STATUS);
  if (s) vmtool_virtio_write(dev, VIRTIO_MMIO_INTERRUPT_ACK, s);
  return s;
}

/* Device configuration space, 32 bits at OFFSET (e.g. virtio-blk's capacity at 0). */
static inline uint32_t vmtool_virtio_config32(const struct vmtool_virtio_dev *dev, uint32_t offset) {
  return vmtool_virtio_read(dev, VIRTIO_MMIO_CONFIG + offset);
}
/* 64 bits at OFFSET, read again while ConfigGeneration changes under us (the spec's rule for wide fields). */
static inline uint64_t vmtool_virtio_config64(const struct vmtool_virtio_dev *dev, uint32_t offset) {
  uint32_t gen, lo, hi;
  do {
    gen = vmtool_virtio_read(dev, VIRTIO_MMIO_CONFIG_GENERATION);
    lo = vmtool_virtio_config32(dev, offset);
    hi = vmtool_virtio_config32(dev, offset + 4);
  } while (gen != vmtool_virtio_read(dev, VIRTIO_MMIO_CONFIG_GENERATION));
  return ((uint64_t)hi << 32) | lo;
}

/* Step 7 for one queue: lay out a split queue of SIZE entries (a power of 2, at most QueueNumMax) in MEM
 * (VMTOOL_VIRTQ_BYTES(SIZE) bytes, 16-byte aligned; zeroed here), tell the device where, and enable it. */
static inline int vmtool_virtq_setup(struct vmtool_virtio_dev *dev, struct vmtool_virtq *q, uint16_t index,
                                     void *mem, uint16_t size) {
  if (size == 0 || (size & (size - 1)) || ((uintptr_t)mem & 15)) return VMTOOL_VIRTIO_ERR_ARGS;
  vmtool_virtio_write(dev, VIRTIO_MMIO_QUEUE_SEL, index);
  if (vmtool_virtio_read(dev, VIRTIO_MMIO_QUEUE_READY) != 0) return VMTOOL_VIRTIO_ERR_QUEUE;
  if (vmtool_virtio_read(dev, VIRTIO_MMIO_QUEUE_NUM_MAX) < size) return VMTOOL_VIRTIO_ERR_QUEUE;
  volatile uint8_t *m = mem;
  for (uint32_t i = 0; i < VMTOOL_VIRTQ_BYTES(size); i++) m[i] = 0;
  q->dev = dev;
  q->index = index;
  q->size = size;
  q->desc = mem;
  q->avail = (struct virtq_avail *)((uint8_t *)mem + 16u * size);
  q->used = (struct virtq_used *)((uint8_t *)mem + VMTOOL_VIRTQ_USED_OFFSET(size));
  q->last_used = 0;
  q->in_flight = 0;
  uint64_t d = (uintptr_t)q->desc, a = (uintptr_t)q->avail, u = (uintptr_t)q->used;
  vmtool_virtio_write(dev, VIRTIO_MMIO_QUEUE_NUM, size);
  vmtool_virtio_write(dev, VIRTIO_MMIO_QUEUE_DESC_LOW, (uint32_t)d);
  vmtool_virtio_write(dev, VIRTIO_MMIO_QUEUE_DESC_HIGH, (uint32_t)(d >> 32));
  vmtool_virtio_write(dev, VIRTIO_MMIO_QUEUE_DRIVER_LOW, (uint32_t)a);
  vmtool_virtio_write(dev, VIRTIO_MMIO_QUEUE_DRIVER_HIGH, (uint32_t)(a >> 32));
  vmtool_virtio_write(dev, VIRTIO_MMIO_QUEUE_DEVICE_LOW, (uint32_t)u);
  vmtool_virtio_write(dev, VIRTIO_MMIO_QUEUE_DEVICE_HIGH, (uint32_t)(u >> 32));
  vmtool_virtio_write(dev, VIRTIO_MMIO_QUEUE_READY, 1);
  return 0;
}

/* Publish the chain at descriptor 0 on the available ring and notify the device. */
static inline void vmtool_virtq_publish_(struct vmtool_virtq *q) {
  uint16_t idx = q->avail->idx;
  q->avail->ring[idx & (q->size - 1)] = 0; /* the chain's head */
  VMTOOL_VIRTIO_BARRIER(); /* the ring entry before the index that publishes it */
  q->avail->idx = (uint16_t)(idx + 1);
  VMTOOL_VIRTIO_BARRIER();
  q->in_flight = 1;
  vmtool_virtio_write(q->dev, VIRTIO_MMIO_QUEUE_NOTIFY, q->index);
}

/* Put a chain of N buffers (descriptors 0..N-1) on the available ring and notify the device. One chain in
 * flight per queue: take the previous one first. */
static inline int vmtool_virtq_submit(struct vmtool_virtq *q, const struct vmtool_virtq_buf *bufs, uint16_t n) {
  if (n == 0 || n > q->size || q->in_flight) return VMTOOL_VIRTIO_ERR_ARGS;
  for (uint16_t i = 0; i < n; i++) {
    struct virtq_desc *d = &q->desc[i];
    d->addr = (uintptr_t)bufs[i].addr;
    d->len = bufs[i].len;
    d->flags = (uint16_t)((bufs[i].device_writes ? VIRTQ_DESC_F_WRITE : 0) | (i + 1 < n ? VIRTQ_DESC_F_NEXT : 0));
    d->next = (uint16_t)(i + 1 < n ? i + 1 : 0);
  }
  vmtool_virtq_publish_(q);
  return 0;
}

/* Submit the same chain again (the descriptors the last submit wrote; the buffers' contents may have
 * changed): what a loop of identical requests needs, without rewriting descriptors. Guest instructions are
 * what costs here (kvm_pvm emulates ring 0), so the benchmark guests use this. */
static inline int vmtool_virtq_resubmit(struct vmtool_virtq *q) {
  if (q->in_flight) return VMTOOL_VIRTIO_ERR_ARGS;
  vmtool_virtq_publish_(q);
  return 0;
}

/* Without waiting: if the device has used our chain, consume it, store the bytes it wrote in *LEN (may be
 * 0) and return 1; else 0. For guests woken by the device's interrupt. */
static inline int vmtool_virtq_take(struct vmtool_virtq *q, uint32_t *len) {
  if (q->used->idx == q->last_used) return 0;
  VMTOOL_VIRTIO_BARRIER(); /* the index before the element it publishes */
  const struct virtq_used_elem *e = &q->used->ring[q->last_used & (q->size - 1)];
  if (len) *len = e->len;
  q->last_used++;
  q->in_flight = 0;
  return 1;
}

/* Poll the used ring until our chain comes back (TSC_LIMIT cycles at most; VMTOOL_VIRTIO_WAIT_FOREVER: no
 * limit). Returns the bytes the device wrote, or VMTOOL_VIRTIO_ERR_TIMEOUT. Does not touch InterruptStatus. */
static inline int32_t vmtool_virtq_wait(struct vmtool_virtq *q, uint64_t tsc_limit) {
  uint32_t len;
  if (tsc_limit == VMTOOL_VIRTIO_WAIT_FOREVER) {
    while (!vmtool_virtq_take(q, &len)) __asm__ volatile("pause");
    return (int32_t)len;
  }
  for (uint64_t t0 = vmtool_virtio_rdtsc(); !vmtool_virtq_take(q, &len);)
    if (vmtool_virtio_rdtsc() - t0 > tsc_limit) return VMTOOL_VIRTIO_ERR_TIMEOUT;
  return (int32_t)len;
}

/* Submit and wait: the usual synchronous request. */
static inline int32_t vmtool_virtq_call(struct vmtool_virtq *q, const struct vmtool_virtq_buf *bufs, uint16_t n,
                                        uint64_t tsc_limit) {
  int r = vmtool_virtq_submit(q, bufs, n);
  return r < 0 ? r : vmtool_virtq_wait(q, tsc_limit);
}

#endif
