// Every subcommand of vmtool, in the order `vmtool --help` lists them.
// Each module exports `register(program)`, which declares the subcommand and its options.
import type { Command } from "commander";
import { register as run } from "./run.js";
import { register as host } from "./host.js";
import { register as vmx } from "./vmx.js";
import { register as explain } from "./explain.js";
import { register as vcpus } from "./vcpus.js";
import { register as watch } from "./watch.js";
import { register as stat } from "./stat.js";
import { register as serve } from "./serve.js";
import { register as introspect } from "./introspect.js";

export const commands: Readonly<Record<string, (program: Command) => void>> = {
  run,
  host,
  vmx,
  explain,
  vcpus,
  watch,
  stat,
  serve,
  introspect,
};
