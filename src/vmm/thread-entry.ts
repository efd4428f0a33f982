// The script a bundled thread starts with (scripts/bundle.mjs: thread.cjs): it loads that thread's own bundle,
// named by its first argument ("vcpu-worker" or "io-worker", threadScript in vcpu-thread.ts), with its code
// cache (code-cache.ts): the eager one when the second argument says "eager". Only the bundled command starts
// threads through this file.
import { fileURLToPath } from "node:url";
import { preferEagerCaches, requireBundle } from "./code-cache.js";

declare const VMTOOL_THREAD_BUNDLES: string | undefined;

const name = process.argv[2];
if (typeof VMTOOL_THREAD_BUNDLES !== "string" || (name !== "vcpu-worker" && name !== "io-worker"))
  throw new Error(`thread-entry: no thread bundle for ${name}`);
if (process.argv[3] === "eager") preferEagerCaches();
requireBundle(fileURLToPath(new URL(`${VMTOOL_THREAD_BUNDLES}/${name}.cjs`, import.meta.url)));
