// Paths the tests need, found from the compiled test file's own location (works for any tsc --outDir at the
// repository root: dist/, .dist-foo/ ...).
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";

const here = dirname(fileURLToPath(import.meta.url)); // <outDir>/test/helpers
/** The compiled output folder (dist/ or another --outDir). */
export const DIST = join(here, "..", "..");
/** The repository root. */
export const ROOT = join(DIST, "..");
/** The compiled vmtool command. */
export const CLI = join(DIST, "src", "cli", "main.js");
