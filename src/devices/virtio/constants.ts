// Numbers from the virtio 1.x specification ("Virtio Over MMIO", "Split Virtqueues", the device sections).
// Declared once here; every other virtio file names them from this table.

/** virtio-mmio register offsets (version 2, "modern" layout). All registers are 32 bits wide. */
export const MMIO_REG = {
  MAGIC_VALUE: 0x000,
  VERSION: 0x004,
  DEVICE_ID: 0x008,
  VENDOR_ID: 0x00c,
  DEVICE_FEATURES: 0x010,
  DEVICE_FEATURES_SEL: 0x014,
  DRIVER_FEATURES: 0x020,
  DRIVER_FEATURES_SEL: 0x024,
  QUEUE_SEL: 0x030,
  QUEUE_NUM_MAX: 0x034,
  QUEUE_NUM: 0x038,
  QUEUE_READY: 0x044,
  QUEUE_NOTIFY: 0x050,
  INTERRUPT_STATUS: 0x060,
  INTERRUPT_ACK: 0x064,
  STATUS: 0x070,
  QUEUE_DESC_LOW: 0x080,
  QUEUE_DESC_HIGH: 0x084,
  QUEUE_DRIVER_LOW: 0x090,
  QUEUE_DRIVER_HIGH: 0x094,
  QUEUE_DEVICE_LOW: 0x0a0,
  QUEUE_DEVICE_HIGH: 0x0a4,
  SHM_SEL: 0x0ac,
  SHM_LEN_LOW: 0x0b0,
  SHM_LEN_HIGH: 0x0b4,
  SHM_BASE_LOW: 0x0b8,
  SHM_BASE_HIGH: 0x0bc,
  QUEUE_RESET: 0x0c0,
  CONFIG_GENERATION: 0x0fc,
  CONFIG: 0x100,
} as const;

/** "virt" in little-endian. */
export const MMIO_MAGIC = 0x74726976;
export const MMIO_VERSION = 2;
/** Our vendor id: "VMTL" in little-endian (any value is allowed; drivers only print it). */
export const VMTOOL_VENDOR_ID = 0x4c544d56;
/** Size of one device's MMIO window: the registers (0x100) and up to 0x100 bytes of device configuration. */
export const MMIO_WINDOW_SIZE = 0x200;

/** Device status bits (driver progress, plus DEVICE_NEEDS_RESET set by the device). */
export const STATUS = {
  ACKNOWLEDGE: 1,
  DRIVER: 2,
  DRIVER_OK: 4,
  FEATURES_OK: 8,
  DEVICE_NEEDS_RESET: 64,
  FAILED: 128,
} as const;

/** Transport feature bits (numbers, not masks). */
export const F = {
  INDIRECT_DESC: 28,
  EVENT_IDX: 29,
  VERSION_1: 32,
  ACCESS_PLATFORM: 33,
  RING_PACKED: 34,
  IN_ORDER: 35,
  NOTIFICATION_DATA: 38,
  RING_RESET: 40,
} as const;

export function bit(n: number): bigint {
  return 1n << BigInt(n);
}

/** InterruptStatus bits. */
export const INT = { VRING: 1, CONFIG: 2 } as const;

/** Device ids ("Device Types"). */
export const DEVICE_ID = { NET: 1, BLOCK: 2, CONSOLE: 3, ENTROPY: 4 } as const;

/** Split virtqueue layout. */
export const VIRTQ = {
  DESC_SIZE: 16,
  DESC_F_NEXT: 1,
  DESC_F_WRITE: 2,
  DESC_F_INDIRECT: 4,
  AVAIL_F_NO_INTERRUPT: 1,
  USED_F_NO_NOTIFY: 1,
  /** Largest split queue the spec allows. */
  MAX_SIZE: 32768,
} as const;

/** Block device: feature bits, request types and statuses. */
export const BLK = {
  F_SIZE_MAX: 1,
  F_SEG_MAX: 2,
  F_RO: 5,
  F_BLK_SIZE: 6,
  F_FLUSH: 9,
  T_IN: 0,
  T_OUT: 1,
  T_FLUSH: 4,
  T_GET_ID: 8,
  S_OK: 0,
  S_IOERR: 1,
  S_UNSUPP: 2,
  SECTOR_SIZE: 512,
  ID_BYTES: 20,
  HEADER_SIZE: 16,
} as const;

/** Console device: feature bits. */
export const CONSOLE = { F_SIZE: 0, F_MULTIPORT: 1, F_EMERG_WRITE: 2 } as const;
