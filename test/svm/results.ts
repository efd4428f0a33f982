// Parsing what the kvm_amd VM writes to its result port (lines "SVM <kind> ...", see the init in
// scripts/svm-build-initramfs.sh, the job in kvm-amd.test.ts and reporter.ts).

export interface InnerTest {
  ok: boolean;
  name: string;
  nesting: number;
  suite: boolean;
  skip: boolean;
  /** The reason given with the skip, when there was one (Node's name filter gives NAME_FILTERED). */
  skipReason?: string;
  ms?: number;
  error?: string;
}

/** The skip reason Node's test runner gives a test that `--test-name-pattern` left out. */
export const NAME_FILTERED = "test name does not match pattern";

export interface FileResult {
  rc: number | undefined;
  tests: InnerTest[];
  output: string[];
  stderr: string[];
}

export interface SvmRun {
  begun: boolean;
  ended: boolean;
  release: string;
  insmod: Map<string, number>;
  params: Map<string, string>;
  devKvm: boolean;
  hostRc?: number;
  hostOut: string[];
  hostErr: string[];
  probeRc?: number;
  probeOut: string[];
  probeErr: string[];
  files: Map<string, FileResult>;
  dmesg: string[];
  /** Filled in by the harness. */
  qemuStatus: string;
  seconds: number;
  console: string;
}

export function parseResults(text: string): SvmRun {
  const run: SvmRun = {
    begun: false,
    ended: false,
    release: "",
    insmod: new Map(),
    params: new Map(),
    devKvm: false,
    hostOut: [],
    hostErr: [],
    probeOut: [],
    probeErr: [],
    files: new Map(),
    dmesg: [],
    qemuStatus: "",
    seconds: 0,
    console: "",
  };
  let file: FileResult | undefined;
  for (const raw of text.split("\n")) {
    const line = raw.replace(/\r$/, "");
    const m = /^SVM (\S+) ?(.*)$/.exec(line);
    if (!m) continue;
    const [, kind, rest] = m;
    const words = rest.split(" ");
    switch (kind) {
      case "begin":
        run.begun = true;
        run.release = rest;
        break;
      case "end":
        run.ended = true;
        break;
      case "insmod":
        run.insmod.set(words[0], Number(words[1]));
        break;
      case "param":
        run.params.set(words[0], words.slice(1).join(" "));
        break;
      case "devkvm":
        run.devKvm = rest === "yes";
        break;
      case "host-rc":
        run.hostRc = Number(rest);
        break;
      case "host-out":
        run.hostOut.push(rest);
        break;
      case "host-err":
        run.hostErr.push(rest);
        break;
      case "probe-rc":
        run.probeRc = Number(rest);
        break;
      case "probe-out":
        run.probeOut.push(rest);
        break;
      case "probe-err":
        run.probeErr.push(rest);
        break;
      case "file-begin":
        file = { rc: undefined, tests: [], output: [], stderr: [] };
        run.files.set(rest, file);
        break;
      case "file-end": {
        const f = run.files.get(words.slice(0, -1).join(" "));
        if (f) f.rc = Number(words[words.length - 1]);
        file = undefined;
        break;
      }
      case "test":
        try {
          file?.tests.push(JSON.parse(rest) as InnerTest);
        } catch {
          file?.output.push(`(unreadable result line) ${rest}`);
        }
        break;
      case "output":
        try {
          file?.output.push(JSON.parse(rest) as string);
        } catch {
          file?.output.push(rest);
        }
        break;
      case "file-stderr":
        file?.stderr.push(rest);
        break;
      case "dmesg":
        run.dmesg.push(rest);
        break;
    }
  }
  return run;
}
