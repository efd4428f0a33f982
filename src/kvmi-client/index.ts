// vmtool's KVMI client library: the tool's side of the kvmi-v7 dialect (docs/introspection.md, "The client
// library"). Everything a script needs is exported here.
export {
  KvmiClient,
  Batch,
  actionValue,
  pagePieces,
  type ClientOptions,
  type PageAccess,
  type Paused,
} from "./client.js";
export { KvmiConnection, DEFAULT_MAX_QUEUED_EVENTS, DEFAULT_REPLY_TIMEOUT_MS } from "./connection.js";
export type { ConnectionOptions, EventWait, Handshake } from "./connection.js";
export { acceptOne, connectTo, KvmiConnectError, type ListenOptions } from "./transport.js";
export { GuestRam, type RamPath } from "./ram.js";
export { SoftwareBreakpoints, INT3, type Breakpoint } from "./breakpoints.js";
export * from "./errors.js";
export * from "./ids.js";
export type {
  EventKind,
  EventMsrs,
  EventReplyData,
  Features,
  KvmiEvent,
  MemoryRange,
  MsrValue,
  PfReplyData,
  RamMapping,
  RegistersReply,
  TranslationWalk,
  WalkLevel,
} from "./wire.js";
