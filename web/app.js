// vmtool serve's dashboard: one EventSource (/events) carries the host's facts once and a frame of every VM per
// interval; this script draws them. No framework; uPlot draws the charts. Nothing here writes to the server.
/* global uPlot */
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const POINTS = 300; // per chart: five minutes at 1 s
  const COLORS = ["#0969da", "#cf222e", "#1a7f37", "#bf8700", "#8250df", "#bf3989", "#1b7c83", "#953800"];
  const WORDS = {
    vmtool: "vmtool run's exit counters",
    stats: "KVM binary stats (KVM_GET_STATS_FD)",
    tracepoints: "KVM tracepoints (perf counters)",
    debugfs: "KVM debugfs",
    none: "no source",
  };
  /** key -> { card, chart, reasons, data, ended, endedAt } */
  const vms = new Map();
  let es;

  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "text") e.textContent = v;
      else if (k === "class") e.className = v;
      else e.setAttribute(k, v);
    }
    for (const c of kids) if (c !== null && c !== undefined) e.append(c);
    return e;
  }

  function fmt(n) {
    if (n === null || n === undefined || Number.isNaN(n)) return "–";
    const a = Math.abs(n);
    if (a >= 1e9) return (n / 1e9).toFixed(2) + " G";
    if (a >= 1e6) return (n / 1e6).toFixed(2) + " M";
    if (a >= 1e4) return (n / 1e3).toFixed(1) + " k";
    return a >= 100 || Number.isInteger(n) ? String(Math.round(n)) : n.toFixed(1);
  }
  function fmtSeconds(s) {
    if (s === null || s === undefined) return "–";
    if (s === 0) return "0 s";
    if (s >= 1) return s.toFixed(2) + " s";
    if (s >= 1e-3) return (s * 1e3).toFixed(1) + " ms";
    return (s * 1e6).toFixed(1) + " µs";
  }
  function age(seconds) {
    if (seconds < 60) return Math.max(0, Math.round(seconds)) + "s";
    if (seconds < 3600) return Math.round(seconds / 60) + "m";
    return Math.round(seconds / 3600) + "h";
  }

  function status(kind, text) {
    const s = $("status");
    s.className = "status " + kind;
    s.textContent = text;
  }

  function renderHost(h) {
    if (h.error) {
      $("verdict").textContent = "host facts could not be read: " + h.error;
      return;
    }
    $("verdict").replaceChildren(
      el("strong", { text: h.verdict }),
      el("br"),
      `${h.vendor} ${h.model} · hardware virtualization: ${h.virtualization} · KVM: ${h.modules.join(", ") || "none"}`,
    );
    $("checks-body").replaceChildren(
      ...h.checks.map((c) =>
        el(
          "tr",
          {},
          el("td", { text: c.check }),
          el("td", { class: c.status, text: c.status }),
          el("td", { text: c.detail }),
        ),
      ),
    );
    const caps = h.capabilities;
    const body = [el("p", { class: "muted source", text: caps.note || `decoded from ${caps.from}` })];
    for (const g of caps.groups)
      body.push(
        el(
          "details",
          {},
          el("summary", { text: g.name }),
          el(
            "table",
            {},
            el(
              "tbody",
              {},
              ...g.fields.map((f) => el("tr", {}, el("td", { text: f.name }), el("td", { text: f.value }))),
            ),
          ),
        ),
      );
    const params = Object.entries(h.parameters || {});
    for (const [mod, ps] of params)
      body.push(
        el(
          "details",
          {},
          el("summary", { text: `${mod} parameters` }),
          el(
            "table",
            {},
            el(
              "tbody",
              {},
              ...Object.entries(ps).map(([k, v]) =>
                el("tr", {}, el("td", { text: k }), el("td", { text: v })),
              ),
            ),
          ),
        ),
      );
    $("caps-body").replaceChildren(...body);
  }

  function cssVar(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  }

  function makeChart(v) {
    const box = v.card.querySelector(".chart");
    box.replaceChildren();
    if (v.chart) v.chart.destroy();
    const fg = cssVar("--fg");
    const grid = cssVar("--line");
    const axis = { stroke: fg, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 } };
    v.chart = new uPlot(
      {
        width: Math.max(200, box.clientWidth || 500),
        height: 200,
        scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(10, max * 1.1)] } },
        axes: [
          { ...axis, label: "time" },
          { ...axis, label: "exits per second", size: 60, values: (u, ticks) => ticks.map(fmt) },
        ],
        series: [
          { label: "time" },
          ...v.reasons.map((r, i) => ({
            label: r,
            stroke: COLORS[i % COLORS.length],
            width: 2,
            value: (u, x) => (x === null ? "–" : fmt(x) + "/s"),
          })),
        ],
      },
      v.data,
      box,
    );
  }

  function card(vm) {
    const id = `vm-${vm.pid}-${vms.size}`;
    const c = el(
      "article",
      { class: "vm", id, "aria-labelledby": id + "-h", tabindex: "-1", "data-pid": String(vm.pid) },
      el(
        "header",
        {},
        el("h3", { id: id + "-h", text: `${vm.name}` }),
        el("span", { class: "muted", text: `pid ${vm.pid}` }),
        el("span", { class: "badge state", text: "running" }),
      ),
      el("dl", { class: "facts" }),
      el("p", { class: "muted source exits-source" }),
      el("div", { class: "chart", role: "img", "aria-label": `exits per second of ${vm.name} by reason` }),
      el("div", { class: "rows" }),
    );
    $("vm-list").append(c);
    $("vm-nav").append(el("a", { href: "#" + id, text: `${vm.name} [${vm.pid}]` }));
    return c;
  }

  function fact(label, value, source) {
    return el(
      "div",
      source ? { title: "from " + source } : {},
      el("dt", { text: label }),
      el("dd", { text: value }),
      source ? el("dd", { class: "muted source", text: source }) : null,
    );
  }

  function markEnded(v) {
    if (v.ended) return;
    v.ended = true;
    v.card.classList.add("ended");
    const b = v.card.querySelector(".state");
    b.textContent = "ended";
    b.classList.add("ended");
  }

  function updateVm(vm, t) {
    let v = vms.get(vm.key);
    if (!v) {
      v = { card: card(vm), chart: null, reasons: [], data: [[]], ended: false };
      vms.set(vm.key, v);
    }
    if (vm.ended) markEnded(v);
    const rates = vm.exits.rates;
    // Reasons that ever counted (the tracepoints' table has ~25, mostly 0 for a given guest).
    const reasons = Object.keys(vm.exits.totals)
      .filter((r) => vm.exits.totals[r] > 0 || v.reasons.includes(r))
      .sort();
    let rebuild = !v.chart;
    for (const r of reasons)
      if (!v.reasons.includes(r)) {
        v.reasons.push(r);
        v.data.push(v.data[0].map(() => null));
        rebuild = true;
      }
    if (rates) {
      v.data[0].push(t / 1000);
      v.reasons.forEach((r, i) => v.data[i + 1].push(rates[r] ?? null));
      if (v.data[0].length > POINTS) for (const s of v.data) s.shift();
    }
    if (rebuild) makeChart(v);
    else v.chart.setData(v.data);
    // How many points the chart holds (the page's tests read it).
    v.card.querySelector(".chart").dataset.points = String(v.data[0].length);
    const total = rates ? Object.values(rates).reduce((a, b) => a + b, 0) : null;
    const halt = vm.halt;
    v.card
      .querySelector(".facts")
      .replaceChildren(
        ...[
          fact("VMM", vm.vmm),
          fact("vCPUs", String(vm.vcpus.length)),
          fact("exits/s", fmt(total), WORDS[vm.exits.source]),
          vm.kvmExits ? fact("KVM exits/s", fmt(vm.kvmExits.rate), WORDS.stats) : null,
          halt
            ? fact("halted", halt.rate === null ? "–" : fmtSeconds(halt.rate) + "/s", WORDS[halt.source])
            : null,
          fact("sources", vm.sources.join(", ") || "none"),
        ].filter(Boolean),
      );
    v.card.querySelector(".exits-source").textContent =
      `chart: ${vm.exits.what}, from ${WORDS[vm.exits.source]}`;
    const rowsBox = v.card.querySelector(".rows");
    if (vm.rows.length === 0) rowsBox.replaceChildren();
    else
      rowsBox.replaceChildren(
        el(
          "table",
          {},
          el("caption", {
            class: "muted source",
            text: "exits by port and MMIO address (vmtool run's exit counters)",
          }),
          el(
            "thead",
            {},
            el(
              "tr",
              {},
              el("th", { scope: "col", text: "kind" }),
              el("th", { scope: "col", text: "address" }),
              el("th", { scope: "col", text: "access" }),
              el("th", { scope: "col", class: "num", text: "exits/s" }),
              el("th", { scope: "col", class: "num", text: "total" }),
            ),
          ),
          el(
            "tbody",
            {},
            ...vm.rows.map((r) =>
              el(
                "tr",
                {},
                el("td", { text: r.kind }),
                el("td", { text: r.address }),
                el("td", { text: r.direction }),
                el("td", { class: "num", text: fmt(r.rate) }),
                el("td", { class: "num", text: fmt(r.total) }),
              ),
            ),
          ),
        ),
      );
  }

  function renderMap(p, t) {
    const table = $("map-table");
    if (p.error) {
      $("map-note").textContent = "vCPU placement unavailable: " + p.error;
      table.replaceChildren();
      return;
    }
    $("map-note").textContent = p.vcpus.length ? "" : "No vCPU thread seen yet.";
    const now = t / 1000;
    const cpus = [];
    for (let i = 0; i < Math.max(p.onlineCpus, ...p.cpus.map((c) => c + 1)); i++) cpus.push(i);
    const head = el(
      "tr",
      {},
      el("th", { scope: "col", text: "vCPU" }),
      ...cpus.map((c) => el("th", { scope: "col", class: "num", text: `cpu ${c}` })),
    );
    const rows = p.vcpus.map((v) => {
      const cells = cpus.map((c) => {
        const s = v.seen.find((x) => x.cpu === c);
        if (!s) return el("td", { class: "cell" });
        const a = s.lastSeen === null ? null : now - s.lastSeen;
        const cls = a === null ? "r3" : a < 2 ? "r0" : a < 10 ? "r1" : a < 60 ? "r2" : "r3";
        const text = (v.cpu === c ? "● " : "") + (a === null ? "·" : age(a));
        return el("td", {
          class: "cell " + cls,
          text,
          title: `${v.vm} vCPU ${v.vcpu} on cpu ${c}: ${a === null ? "placed, not seen running" : "seen " + age(a) + " ago"}`,
        });
      });
      return el(
        "tr",
        { "data-pid": String(v.pid), "data-vcpu": String(v.vcpu) },
        el("th", { scope: "row", text: `${v.vm} [${v.pid}] vcpu${v.vcpu}` }),
        ...cells,
      );
    });
    table.replaceChildren(el("thead", {}, head), el("tbody", {}, ...rows));
  }

  function onFrame(f) {
    const present = new Set();
    for (const vm of f.vms) {
      present.add(vm.key);
      updateVm(vm, f.t);
    }
    // A VM missing from a frame has ended (its process is gone).
    for (const [key, v] of vms) if (!present.has(key)) markEnded(v);
    const running = [...vms.values()].filter((v) => !v.ended).length;
    $("vm-count").textContent =
      `(${running} running${vms.size > running ? `, ${vms.size - running} ended` : ""})`;
    $("no-vms").hidden = vms.size > 0;
    renderMap(f.placement, f.t);
    document.body.dataset.frame = String(f.id);
  }

  function connect() {
    es = new EventSource("/events");
    es.addEventListener("open", () => status("live", "live"));
    es.addEventListener("error", () => {
      status("lost", "connection lost: reconnecting…");
      // The browser retries by itself unless the server refused the stream; then try again here.
      if (es.readyState === EventSource.CLOSED) setTimeout(connect, 3000);
    });
    es.addEventListener("host", (e) => renderHost(JSON.parse(e.data)));
    es.addEventListener("frame", (e) => onFrame(JSON.parse(e.data)));
  }

  new ResizeObserver(() => {
    for (const v of vms.values()) {
      const box = v.card.querySelector(".chart");
      if (v.chart && box.clientWidth > 0) v.chart.setSize({ width: box.clientWidth, height: 200 });
    }
  }).observe($("vm-list"));
  // Axes and grid take the theme's colours when a chart is made: make them again when the theme changes.
  matchMedia("(prefers-color-scheme: dark)").addEventListener("change", () => {
    for (const v of vms.values()) if (v.chart) makeChart(v);
  });
  connect();
})();
