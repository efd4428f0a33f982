// A memory cgroup for one test: a child cgroup with a memory limit that a command is started inside, and its
// peak usage afterwards. Works with cgroup v1 (the memory controller's own hierarchy: memory.limit_in_bytes,
// memory.max_usage_in_bytes) and v2 (memory.max, memory.peak), as root. The child is made under the cgroup
// the test runs in, else at the top of the hierarchy; create() returns a reason instead when neither works
// (no memory controller, not root, a read-only cgroup file system).
import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";

export interface MemoryCgroup {
  readonly path: string;
  readonly version: 1 | 2;
  /** A shell command line that moves itself into the cgroup, then runs `argv` (exec, same pid). */
  wrap(argv: readonly string[]): string[];
  /** Highest memory use of the cgroup so far, in bytes (memory.max_usage_in_bytes or memory.peak). */
  peak(): number;
  /** Processes of the cgroup the kernel's OOM killer killed, when the kernel reports it. */
  oomKills(): number | undefined;
  /** Remove the cgroup (it must be empty: every process in it has ended). */
  remove(): void;
}

interface Hierarchy {
  version: 1 | 2;
  /** Mount point of the hierarchy. */
  mount: string;
  /** The cgroup this process is in, as a directory. */
  own: string;
}

function read(path: string): string {
  return readFileSync(path, "utf8").trim();
}

/** The hierarchies with a memory controller this process can see: v1's memory one first, then v2. */
function hierarchies(): Hierarchy[] {
  const cgroups = read("/proc/self/cgroup").split("\n");
  const mounts = read("/proc/self/mountinfo").split("\n");
  const found: Hierarchy[] = [];
  for (const m of mounts) {
    // id parent major:minor root mount-point options ... - fstype source super-options
    const [pre, post] = m.split(" - ");
    if (!post) continue;
    const f = pre.split(" ");
    const [fstype, , superOptions] = post.split(" ");
    const root = f[3];
    const mount = f[4];
    let path: string | undefined;
    let version: 1 | 2;
    if (fstype === "cgroup" && superOptions.split(",").includes("memory")) {
      version = 1;
      path = cgroups
        .map((l) => /^\d+:([^:]*):(.*)$/.exec(l))
        .find((x) => x?.[1].split(",").includes("memory"))?.[2];
    } else if (fstype === "cgroup2") {
      version = 2;
      if (!read(join(mount, "cgroup.controllers")).split(" ").includes("memory")) continue;
      path = cgroups.map((l) => /^0::(.*)$/.exec(l)).find((x) => x)?.[1];
    } else continue;
    if (path === undefined) continue;
    // The mount shows the hierarchy from `root` down (a cgroup namespace, a container).
    const inside = root === "/" ? path : path.startsWith(root) ? path.slice(root.length) : undefined;
    found.push({ version, mount, own: join(mount, inside ?? "/") });
  }
  return found.sort((a, b) => a.version - b.version);
}

function tryCreate(h: Hierarchy, parent: string, name: string, limit: number): MemoryCgroup | string {
  const path = join(parent, name);
  try {
    mkdirSync(path);
  } catch (e) {
    return `mkdir ${path}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`;
  }
  try {
    if (h.version === 1) {
      writeFileSync(join(path, "memory.limit_in_bytes"), String(limit));
      // With swap accounting, memory + swap too: a process that may swap out is not held to the limit.
      if (existsSync(join(path, "memory.memsw.limit_in_bytes")))
        writeFileSync(join(path, "memory.memsw.limit_in_bytes"), String(limit));
    } else {
      if (!existsSync(join(path, "memory.max"))) {
        // The parent must hand the memory controller down (possible when it holds no process itself).
        writeFileSync(join(parent, "cgroup.subtree_control"), "+memory");
      }
      writeFileSync(join(path, "memory.max"), String(limit));
      if (existsSync(join(path, "memory.swap.max"))) writeFileSync(join(path, "memory.swap.max"), "0");
      if (!existsSync(join(path, "memory.peak"))) throw new Error("no memory.peak (kernel before 5.19)");
    }
  } catch (e) {
    rmdirSync(path);
    return `${path}: ${e instanceof Error ? e.message : String(e)}`;
  }
  return {
    path,
    version: h.version,
    wrap: (argv) => ["/bin/sh", "-c", `echo $$ > "$0/cgroup.procs" && exec "$@"`, path, ...argv],
    peak: () => Number(read(join(path, h.version === 1 ? "memory.max_usage_in_bytes" : "memory.peak"))),
    oomKills: () => {
      const file = join(path, h.version === 1 ? "memory.oom_control" : "memory.events");
      const m = /^oom_kill (\d+)$/m.exec(read(file));
      return m ? Number(m[1]) : undefined;
    },
    remove: () => rmdirSync(path),
  };
}

/** A new memory cgroup limited to `limit` bytes, or the reason none could be made. */
export function createMemoryCgroup(name: string, limit: number): MemoryCgroup | string {
  const reasons: string[] = [];
  let all: Hierarchy[];
  try {
    all = hierarchies();
  } catch (e) {
    return `cannot read this process's cgroups: ${e instanceof Error ? e.message : String(e)}`;
  }
  if (all.length === 0) return "no cgroup hierarchy with the memory controller is mounted";
  for (const h of all)
    for (const parent of new Set([h.own, h.mount])) {
      const made = tryCreate(h, parent, name, limit);
      if (typeof made !== "string") return made;
      reasons.push(made);
    }
  return `no memory cgroup could be created (${reasons.join("; ")})`;
}
