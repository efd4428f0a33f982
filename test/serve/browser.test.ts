// The dashboard in Debian's Chromium, driven by playwright-core (no browser is downloaded): the page loads with
// no console error (a CSP violation would be one), shows a VM the test starts, its chart gets new points, the
// vCPU map shows its vCPU (root: the observer reads KVM's debugfs), a VM that ends is marked ended, a lost
// connection is said and comes back by itself, and the page is keyboard-reachable. Screenshots (1280×800
// light and dark, and a narrow window) are written to <dist>/test-artifacts/.
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { DIST } from "../helpers/paths.js";
import { busyGuest, runArgs } from "../stats/guests.js";
import { startVm } from "../stats/helpers.js";
import { startServe } from "./helpers.js";

// The page's document as the functions run in the browser below use it (the tests compile without the DOM lib).
interface PageElement {
  textContent: string | null;
  className: string;
  classList: { contains(c: string): boolean };
  getAttribute(name: string): string | null;
}
declare const document: {
  getElementById(id: string): PageElement | null;
  querySelector(selector: string): PageElement | null;
  activeElement: PageElement | null;
  documentElement: { scrollWidth: number; clientWidth: number };
  body: { dataset: Record<string, string | undefined> };
};

const CHROMIUM = "/usr/bin/chromium";
const ARTIFACTS = join(DIST, "test-artifacts");
const isRoot = process.getuid?.() === 0;

test(
  "the dashboard in Chromium: a VM appears, its chart moves, its vCPU is mapped, it ends; reconnects",
  {
    skip: existsSync(CHROMIUM) ? false : "Debian's chromium is not installed (.ci/run installs it)",
  },
  async (t) => {
    mkdirSync(ARTIFACTS, { recursive: true });
    const profile = mkdtempSync(join(tmpdir(), "vmtool-chromium-"));
    t.after(() => rmSync(profile, { recursive: true, force: true }));
    const srv = await startServe(t, ["--interval", "0.5"]);
    const browser = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      viewport: { width: 1280, height: 800 },
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
      ],
    });
    t.after(() => browser.close());
    const page = browser.pages()[0] ?? (await browser.newPage());
    const problems: string[] = [];
    page.on("console", (m) => {
      if (m.type() === "error" || m.type() === "warning") problems.push(`${m.type()}: ${m.text()}`);
    });
    page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
    page.on("requestfailed", (r) => {
      // The stream is cut on purpose below; anything else failing is a problem.
      if (!r.url().endsWith("/events")) problems.push(`request failed: ${r.url()}`);
    });
    await page.goto(srv.url + "/");
    await page.waitForFunction(() => document.getElementById("status")?.textContent === "live", null, {
      timeout: 30_000,
    });
    await page.waitForFunction(
      () => !document.getElementById("verdict")?.textContent?.includes("reading"),
      null,
      {
        timeout: 30_000,
      },
    );

    const vm = startVm(t, runArgs(busyGuest()));
    const card = page.locator(`article.vm[data-pid="${vm.pid}"]`);
    await card.waitFor({ timeout: 60_000 });
    assert.match((await card.locator("header").textContent()) ?? "", new RegExp(`pid ${vm.pid}`));
    const points = async () => Number((await card.locator(".chart").getAttribute("data-points")) ?? 0);
    await page.waitForFunction(
      (pid) =>
        Number(document.querySelector(`article.vm[data-pid="${pid}"] .chart`)?.getAttribute("data-points")) >=
        2,
      vm.pid,
      { timeout: 60_000 },
    );
    const before = await points();
    await page.waitForFunction(
      ([pid, n]) =>
        Number(document.querySelector(`article.vm[data-pid="${pid}"] .chart`)?.getAttribute("data-points")) >
        n,
      [vm.pid, before] as const,
      { timeout: 60_000 },
    );
    assert.equal(await card.locator("canvas").count(), 1, "uPlot drew the chart");
    const facts = (await card.locator(".facts").textContent()) ?? "";
    assert.match(facts, /vmtool run's exit counters/, "each number says where it comes from");
    assert.match((await card.locator(".rows").textContent()) ?? "", /0x80/, "the per-port rows");
    if (isRoot)
      await page.locator(`#map-table tr[data-pid="${vm.pid}"][data-vcpu="0"]`).waitFor({ timeout: 60_000 });
    await page.screenshot({ path: join(ARTIFACTS, "serve-dashboard.png"), fullPage: true });
    await page.emulateMedia({ colorScheme: "dark" });
    await page.screenshot({ path: join(ARTIFACTS, "serve-dashboard-dark.png"), fullPage: true });
    await page.emulateMedia({ colorScheme: "light" });
    await page.setViewportSize({ width: 420, height: 800 });
    await page.screenshot({ path: join(ARTIFACTS, "serve-dashboard-narrow.png"), fullPage: true });
    const overflow = await page.evaluate(
      () => document.documentElement.scrollWidth - document.documentElement.clientWidth,
    );
    assert.ok(overflow <= 0, `a narrow window scrolls sideways by ${overflow}px`);
    await page.setViewportSize({ width: 1280, height: 800 });

    // Keyboard: the first Tab reaches the skip link, which leads to the VMs; the VM's own link is reachable.
    await page.keyboard.press("Tab");
    assert.equal(await page.evaluate(() => document.activeElement?.className), "skip");
    const navLink = page.locator(`#vm-nav a`, { hasText: `[${vm.pid}]` });
    await navLink.focus();
    await page.keyboard.press("Enter");
    assert.match(page.url(), /#vm-/);

    // The VM ends: marked ended without a reload.
    vm.kill("SIGKILL");
    await vm.ended;
    await page.waitForFunction(
      (pid) => document.querySelector(`article.vm[data-pid="${pid}"]`)?.classList.contains("ended"),
      vm.pid,
      {
        timeout: 60_000,
      },
    );
    assert.equal(await card.locator(".state").textContent(), "ended");

    // The server goes away: the page says so; a server on the same port again: it comes back by itself.
    srv.child.kill("SIGTERM");
    await srv.ended;
    await page.waitForFunction(() => document.getElementById("status")?.textContent?.includes("lost"), null, {
      timeout: 30_000,
    });
    const again = await startServe(t, ["--interval", "0.5"], srv.port);
    await page.waitForFunction(() => document.getElementById("status")?.textContent === "live", null, {
      timeout: 60_000,
    });
    assert.equal(again.port, srv.port);
    const frameAfter = Number(await page.evaluate(() => document.body.dataset.frame));
    assert.ok(frameAfter >= 1);
    assert.deepEqual(problems, [], problems.join("\n"));
  },
);
