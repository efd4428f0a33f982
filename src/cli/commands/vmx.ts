// `vmtool vmx`: not written yet (see the open issue for this part).
import type { Command } from "commander";
import { VmtoolError } from "../errors.js";

export function register(program: Command): void {
  program
    .command("vmx")
    .description("(not available yet)")
    .action(() => {
      throw new VmtoolError("'vmtool vmx' is not available yet");
    });
}
