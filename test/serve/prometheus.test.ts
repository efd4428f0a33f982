// Debian's Prometheus scraping a real `vmtool serve` while a guest with a known number of exits runs: the
// target is up with no scrape error, and Prometheus' HTTP API answers the VM's counters with the guest's
// counts. Prometheus runs with a scrape config of its own, on a free loopback port, storing in a temporary
// folder.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { countedVm, get, startServe, until } from "./helpers.js";

const PROMETHEUS = "/usr/bin/prometheus";

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer();
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

interface Vector {
  status: string;
  data: { resultType: string; result: Array<{ metric: Record<string, string>; value: [number, string] }> };
}

test(
  "Prometheus scrapes vmtool serve: target up, the VM's counters equal the guest's exits",
  {
    skip: existsSync(PROMETHEUS) ? false : "Debian's prometheus is not installed (.ci/run installs it)",
  },
  async (t) => {
    const vm = countedVm(t, 1000);
    const srv = await startServe(t);
    const dir = mkdtempSync(join(tmpdir(), "vmtool-prometheus-"));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const config = join(dir, "prometheus.yml");
    writeFileSync(
      config,
      [
        "global:",
        "  scrape_interval: 1s",
        "  scrape_timeout: 1s",
        "scrape_configs:",
        "  - job_name: vmtool",
        "    static_configs:",
        `      - targets: ['127.0.0.1:${srv.port}']`,
        "",
      ].join("\n"),
    );
    const port = await freePort();
    const prom = spawn(
      PROMETHEUS,
      [
        `--config.file=${config}`,
        `--storage.tsdb.path=${join(dir, "data")}`,
        `--web.listen-address=127.0.0.1:${port}`,
        "--log.level=warn",
      ],
      { stdio: ["ignore", "ignore", "pipe"] },
    );
    let log = "";
    prom.stderr.on("data", (d: Buffer) => (log += d.toString()));
    const exited = new Promise<void>((r) => prom.on("exit", () => r()));
    t.after(async () => {
      prom.kill("SIGTERM");
      await exited;
    });
    const api = `http://127.0.0.1:${port}/api/v1`;
    const query = async (q: string) => {
      const r = await get(`${api}/query?query=${encodeURIComponent(q)}`);
      if (r.status !== 200) return undefined;
      const v = JSON.parse(r.text) as Vector;
      return v.status === "success" ? v.data.result : undefined;
    };
    const pid = String(vm.pid);

    // The guest's counts settle after its 1000 rounds; the exporter exports them as they are at each scrape.
    const series = await until(
      "Prometheus to have the VM's settled port counter",
      async () => {
        const r = await query(`vmtool_vcpu_port_exits_total{pid="${pid}",port="0x80",direction="out"}`);
        return r?.length === 1 && r[0].value[1] === "1000" ? r : undefined;
      },
      120_000,
    );
    assert.equal(series[0].metric.job, "vmtool");
    assert.equal(series[0].metric.vcpu, "0");
    assert.equal(series[0].metric.vm, "node");
    const io = await query(`sum by (reason) (vmtool_vcpu_exits_total{pid="${pid}"})`);
    const byReason = Object.fromEntries(io!.map((s) => [s.metric.reason, s.value[1]]));
    assert.equal(byReason.IO, "2000");
    assert.equal(byReason.MMIO, "2000");
    assert.equal((await query(`kvm_vcpu_mmio_exits_total{pid="${pid}"}`))?.[0]?.value[1], "2000");
    // The counter no longer moves: its rate over the last scrapes is 0 (a counter, not a gauge, for Prometheus).
    const rate = await until("two scrapes of the settled counter", async () => {
      const r = await query(`rate(vmtool_vcpu_port_exits_total{pid="${pid}",port="0x80"}[5s])`);
      return r?.length === 1 ? r : undefined;
    });
    assert.equal(Number(rate[0].value[1]), 0);
    // Its type as Prometheus recorded it (under the OpenMetrics family name when it scraped OpenMetrics).
    const meta = JSON.parse((await get(`${api}/metadata`)).text) as {
      data: Record<string, Array<{ type: string; unit: string }> | undefined>;
    };
    const family = meta.data.vmtool_vcpu_port_exits ?? meta.data.vmtool_vcpu_port_exits_total;
    assert.equal(family?.[0]?.type, "counter");
    assert.equal((meta.data.kvm_vcpu_halt_wait_seconds ?? [])[0]?.type, "histogram");

    // The target is up, with no scrape error (a missing Content-Type or a bad line would show here).
    const up = await query('up{job="vmtool"}');
    assert.equal(up?.[0]?.value[1], "1");
    const targets = JSON.parse((await get(`${api}/targets`)).text) as {
      data: { activeTargets: Array<{ health: string; lastError: string; scrapePool: string }> };
    };
    const target = targets.data.activeTargets.find((x) => x.scrapePool === "vmtool");
    assert.equal(target?.health, "up", target?.lastError);
    assert.equal(target?.lastError, "");
    assert.equal((await query('vmtool_exporter_collector_up{collector="kvm_stats"}'))?.[0]?.value[1], "1");
    assert.doesNotMatch(log, /level=error/, log);
  },
);
