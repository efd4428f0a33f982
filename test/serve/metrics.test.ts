// /metrics of a real `vmtool serve` while a real `vmtool run` makes a known number of exits: every line
// passes the strict parser in both formats, the VM's counters equal what the guest did, its vCPU's placement and
// info series are there, the Content-Type is always sent, gzip when asked.
import { test } from "node:test";
import assert from "node:assert/strict";
import { gunzipSync } from "node:zlib";
import { countedVm, get, startServe, until } from "./helpers.js";
import { parseExposition, valueOf } from "./parser.js";

const isRoot = process.getuid?.() === 0;

test("a VM's exit counters in /metrics equal the guest's exits; the text passes the parser", async (t) => {
  const vm = countedVm(t, 1000);
  const srv = await startServe(t);
  const pid = String(vm.pid);
  const fams = await until(
    "the VM's settled port counter",
    async () => {
      const r = await get(`${srv.url}/metrics`);
      const p = parseExposition(r.text, "text");
      return valueOf(p, "vmtool_vcpu_mmio_exits_total", { pid, direction: "write" }) === 1000 ? p : undefined;
    },
    60_000,
  );
  assert.equal(
    valueOf(fams, "vmtool_vcpu_port_exits_total", { pid, vcpu: "0", port: "0x80", direction: "out" }),
    1000,
  );
  assert.equal(valueOf(fams, "vmtool_vcpu_port_exits_total", { pid, port: "0x81", direction: "in" }), 1000);
  assert.equal(
    valueOf(fams, "vmtool_vcpu_mmio_exits_total", { pid, address: "0xe0000000", direction: "read" }),
    1000,
  );
  assert.equal(valueOf(fams, "vmtool_vcpu_exits_total", { pid, reason: "IO" }), 2000);
  assert.equal(valueOf(fams, "vmtool_vcpu_exits_total", { pid, reason: "MMIO" }), 2000);
  // KVM's own count of the MMIO exits, from the binary stats.
  assert.equal(valueOf(fams, "kvm_vcpu_mmio_exits_total", { pid, vcpu: "0" }), 2000);
  assert.ok(valueOf(fams, "kvm_vcpu_exits_total", { pid, vcpu: "0" })! >= 4000);
  assert.equal(fams.get("kvm_vcpu_exits_total")?.type, "counter");
  assert.equal(fams.get("kvm_vcpu_halt_wait_seconds")?.type, "histogram");
  assert.equal(fams.get("kvm_vcpu_blocking")?.type, "gauge");
  assert.equal(valueOf(fams, "vmtool_vm_info", { pid, vmm: "vmtool", vcpus: "1" }), 1);
  assert.equal(valueOf(fams, "vmtool_exporter_collector_up", { collector: "kvm_stats" }), 1);
  assert.equal(valueOf(fams, "vmtool_exporter_collector_up", { collector: "host" }), 1);
  assert.ok(valueOf(fams, "vmtool_exporter_scrape_duration_seconds", {})! > 0);
  assert.ok(valueOf(fams, "vmtool_host_info", {}) === 1);
  if (isRoot) {
    // The observer (KVM's debugfs, root) places the vCPU's thread on a host CPU.
    assert.equal(valueOf(fams, "vmtool_exporter_collector_up", { collector: "placement" }), 1);
    assert.ok(valueOf(fams, "vmtool_vcpu_last_host_cpu", { pid, vcpu: "0" }) !== undefined);
  }
  for (const f of fams.values()) assert.match(f.name, /^(kvm|vmtool)_/, f.name);

  // OpenMetrics when asked (as Prometheus asks), gzip when asked; Content-Type always.
  const om = await get(`${srv.url}/metrics`, {
    Accept: "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3",
    "Accept-Encoding": "gzip",
  });
  assert.equal(om.status, 200);
  assert.equal(om.headers["content-type"], "application/openmetrics-text; version=1.0.0; charset=utf-8");
  assert.equal(om.headers["content-encoding"], "gzip");
  const p = parseExposition(gunzipSync(om.body).toString(), "openmetrics");
  assert.equal(p.get("vmtool_vcpu_port_exits")?.type, "counter");
  assert.equal(p.get("vmtool_vm")?.type, "info");
  assert.equal(valueOf(p, "vmtool_vcpu_port_exits_total", { pid, port: "0x80" }), 1000);
  const plain = await get(`${srv.url}/metrics`);
  assert.equal(plain.headers["content-type"], "text/plain; version=0.0.4; charset=utf-8");
  assert.equal(plain.headers["content-encoding"], undefined);
  assert.ok(!/ \d+ \d+$/m.test(plain.text), "no timestamps");

  // A VM that ends leaves /metrics (its series go stale in Prometheus); a new one is a new pid label.
  vm.kill("SIGKILL");
  await vm.ended;
  await until("the ended VM gone from /metrics", async () => {
    const r = await get(`${srv.url}/metrics`);
    return valueOf(parseExposition(r.text, "text"), "vmtool_vm_info", { pid }) === undefined
      ? true
      : undefined;
  });
});
