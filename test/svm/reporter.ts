// A reporter for Node's test runner, used inside the kvm_amd VM (`node --test --test-reporter=<this>`):
// one line per finished test, "SVM test {json}", so the host can rebuild pass/fail per inner test from the
// serial port (see kvm-amd.test.ts). Output lines of the tests themselves are forwarded too, for failures.

interface TestEventData {
  name?: string;
  nesting?: number;
  file?: string;
  skip?: boolean | string;
  todo?: boolean | string;
  message?: string;
  details?: { duration_ms?: number; type?: string; error?: unknown };
}

/** The innermost useful message of a test failure (the runner wraps the assertion error in `cause`). */
function errorText(err: unknown): string {
  let e = err as { cause?: unknown; message?: string; stack?: string } | undefined;
  while (e && typeof e === "object" && e.cause && typeof e.cause === "object") e = e.cause;
  if (!e) return "";
  const stack = typeof e.stack === "string" ? e.stack.split("\n").slice(0, 6).join("\n") : "";
  return stack || (e.message ?? JSON.stringify(e));
}

export default async function* svmReporter(
  source: AsyncIterable<{ type: string; data: TestEventData }>,
): AsyncGenerator<string> {
  for await (const ev of source) {
    const d = ev.data;
    if (ev.type === "test:pass" || ev.type === "test:fail") {
      const line = {
        ok: ev.type === "test:pass",
        name: d.name,
        nesting: d.nesting,
        suite: d.details?.type === "suite",
        skip: d.skip !== undefined && d.skip !== false,
        skipReason: typeof d.skip === "string" ? d.skip : undefined,
        ms: d.details?.duration_ms,
        error: ev.type === "test:fail" ? errorText(d.details?.error) : undefined,
      };
      yield `SVM test ${JSON.stringify(line)}\n`;
    } else if (ev.type === "test:stdout" || ev.type === "test:stderr") {
      for (const l of (d.message ?? "").split("\n"))
        if (l.length > 0) yield `SVM output ${JSON.stringify(l)}\n`;
    }
  }
}
