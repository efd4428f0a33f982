// `vmtool run --introspect`: the introspection socket set up before the guest starts (connect mode: the tool
// is listening, vmtool connects and does the handshake before any guest code runs, so no event is missed) or
// while it runs (listen mode: tools connect when they like, one at a time), and the KVMI server over the
// VM-control core for each connected tool.
import type { Server, Socket } from "node:net";
import { VmControl } from "../debug/vm-control.js";
import type { RunningMachine } from "../vmm/machine.js";
import {
  Connection,
  connectTo,
  handshake,
  listenOn,
  newHandshakeInfo,
  type Endpoint,
  type HandshakeInfo,
} from "./connection.js";
import { IntrospectionError } from "./errors.js";
import { KvmiServer, type IntrospectionOptions } from "./server.js";

export { parseEndpoint, type Endpoint } from "./connection.js";

export interface IntrospectSetup {
  endpoint: Endpoint;
  /** The VM's name in the handshake (`--name`). */
  name: string;
  replyTimeoutMs: number;
  onTimeout: "continue" | "stop";
  log: (line: string) => void;
  /** How long to keep trying to reach a listening tool (connect mode). */
  connectRetryMs?: number;
}

export class Introspection {
  private core: VmControl | undefined;
  private machine: RunningMachine | undefined;
  private server: KvmiServer | undefined;
  private listener: Server | undefined;
  private pendingSocket: Socket | undefined;
  private readonly info: HandshakeInfo;

  private constructor(private readonly setup: IntrospectSetup) {
    this.info = newHandshakeInfo(setup.name);
  }

  /** Reach the tool (connect mode: connected and handshaken when this resolves) or start listening. */
  static async prepare(setup: IntrospectSetup): Promise<Introspection> {
    const i = new Introspection(setup);
    const ep = setup.endpoint;
    if (ep.kind === "vsock")
      throw new IntrospectionError(
        "--introspect vsock: Node.js has no vsock sockets; use connect:PATH or listen:PATH",
      );
    if (ep.kind === "connect") {
      const s = await connectTo(ep.path, setup.connectRetryMs);
      try {
        await handshake(s, i.info);
      } catch (e) {
        s.destroy();
        throw e;
      }
      i.pendingSocket = s;
    } else {
      i.listener = await listenOn(ep.path, (s) => void i.accept(s));
    }
    return i;
  }

  /** A tool whose handshake is under way (listen mode). */
  private handshaking: Socket | undefined;

  /** The run has started: serve the tool already connected (connect mode), or those that come (listen mode). */
  attach(machine: RunningMachine): void {
    this.machine = machine;
    this.core = new VmControl(machine);
    if (this.pendingSocket) this.serve(this.pendingSocket);
    this.pendingSocket = undefined;
  }

  /** runMachine's onPaused: hand the stop to the core. */
  onPaused(m: RunningMachine): void {
    this.core?.onPaused(m.index, m.stopKind ?? 0);
  }

  private async accept(s: Socket): Promise<void> {
    // One tool at a time, counted from its first byte of handshake (and none before the run started).
    if (this.server || this.handshaking || !this.core) {
      s.destroy();
      this.setup.log("introspection: a second tool connected while one is attached: refused");
      return;
    }
    this.handshaking = s;
    try {
      await handshake(s, this.info);
    } catch (e) {
      s.destroy();
      this.setup.log(`introspection: a tool's handshake failed: ${(e as Error).message}`);
      return;
    } finally {
      this.handshaking = undefined;
    }
    this.serve(s);
  }

  private serve(s: Socket): void {
    const core = this.core;
    const machine = this.machine;
    if (!core || !machine) return;
    core.arm();
    const opts: IntrospectionOptions = {
      replyTimeoutMs: this.setup.replyTimeoutMs,
      onTimeout: this.setup.onTimeout,
      log: this.setup.log,
      stopRun: (why) => machine.end({ kind: "peer", reason: why }),
    };
    const holder: { server?: KvmiServer } = {};
    const conn = new Connection(s, (m) => holder.server?.handle(m));
    const server = new KvmiServer(core, conn, opts);
    holder.server = server;
    this.server = server;
    conn.onClose(() => {
      if (this.server === server) this.server = undefined;
    });
  }

  /** The run is over (or vmtool stops): UNHOOK to the tool, close everything. */
  finish(): void {
    this.server?.unhook();
    this.server = undefined;
    this.core?.close();
    this.pendingSocket?.destroy();
    this.listener?.close();
  }
}
