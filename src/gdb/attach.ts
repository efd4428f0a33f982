// `vmtool run --gdb`: the stub's place in a run. Listen before the guest starts, create the VM-control core
// and the stub once the vCPU threads run, say "listening" once the stub can answer, hand them every park, and
// at the end tell gdb how the run ended.
import type { Socket } from "node:net";
import { CTL, REQ, VcpuState } from "../vm/control-block.js";
import type { RunningMachine } from "../vmm/machine.js";
import { VmControl } from "../debug/vm-control.js";
import { GdbStub } from "./stub.js";
import { endpointText, listenGdb, type GdbEndpoint } from "./server.js";
import type { GdbArch } from "./registers.js";

export interface GdbRunOptions {
  endpoint: GdbEndpoint;
  /** Stop before the guest's first instruction until gdb lets it go (QEMU's -S). */
  wait: boolean;
  arch?: GdbArch;
}

export class GdbAttachment {
  private stub: GdbStub | undefined;
  private control: VmControl | undefined;
  private readonly pendingSockets: { socket: Socket; peer: string }[] = [];

  private closeServer: () => void = () => undefined;
  private announce: () => void = () => undefined;
  private finished = false;

  private constructor(
    private readonly opts: GdbRunOptions,
    private readonly log: (line: string) => void,
  ) {}

  /** Listen now (an unusable endpoint is one error line before any guest code runs). */
  static async listen(opts: GdbRunOptions, log: (line: string) => void): Promise<GdbAttachment> {
    const self = new GdbAttachment(opts, log);
    const { close } = await listenGdb(opts.endpoint, (socket, peer) => {
      if (self.stub) self.stub.attach(socket, peer);
      else self.pendingSockets.push({ socket, peer });
    });
    self.closeServer = close;
    const e = opts.endpoint;
    const target = e.kind === "unix" ? e.path : `${e.host === "127.0.0.1" ? "" : e.host}:${e.port}`;
    self.announce = () =>
      log(
        `gdb: listening on ${endpointText(e)} (gdb -ex 'target remote ${target}')` +
          (opts.wait ? "; the guest waits for gdb before its first instruction" : ""),
      );
    return self;
  }

  /** Before the run starts: the BSP's thread parks before its first KVM_RUN (--gdb-wait). */
  holdBeforeStart(control: SharedArrayBuffer): void {
    if (this.opts.wait) Atomics.or(new Int32Array(control), CTL.REQUEST, REQ.PAUSE);
  }

  onStart(m: RunningMachine): void {
    this.control = new VmControl(m);
    this.stub = new GdbStub(this.control, {
      arch: this.opts.arch,
      log: this.log,
      onKill: () => {
        for (const v of m.vcpus) v.control.stop();
      },
    });
    // Every vCPU parks until gdb says continue: the APs too (they wait for INIT-SIPI anyway).
    const held = this.opts.wait ? this.control.pause() : undefined;
    for (const p of this.pendingSockets.splice(0)) this.stub.attach(p.socket, p.peer);
    // "listening" is said once the stub answers at once: gdb gives up on a packet after 2 s (its
    // remotetimeout), and until every vCPU thread runs (with --gdb-wait: waits at its first instruction) the
    // stub's first answer waits for them, which on a slow machine takes longer than that.
    void (held ?? threadsRunning(m)).then(() => {
      if (!this.finished) this.announce();
    });
  }

  onPaused(m: RunningMachine): void {
    this.control?.onPaused(
      m.vcpus.findIndex((v) => v.control === m.control),
      m.stopKind ?? 0,
    );
  }

  /** gdb killed the guest. */
  get killed(): boolean {
    return this.stub?.killed ?? false;
  }

  /** The run is over with `status`: gdb is told (W packet), the socket closed. */
  async finish(status: number): Promise<void> {
    this.finished = true;
    try {
      await this.stub?.runEnded(status);
    } finally {
      this.closeServer();
    }
  }
}

/** Resolves once every vCPU thread has started its run loop (or already ended). */
async function threadsRunning(m: RunningMachine): Promise<void> {
  for (const { control } of m.vcpus)
    while (Atomics.load(control.ctl, CTL.STATE) === VcpuState.STARTING)
      await Atomics.waitAsync(control.ctl, CTL.STATE, VcpuState.STARTING, 1000).value;
}
