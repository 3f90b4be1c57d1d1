// Helpers both browser suites share: launching Debian's chromium, and the checks every page
// gets (screenshot, first paint and weight, axe-core with no serious or critical violation, no
// script injected through data, only signed links to stored images).

import assert from "node:assert/strict";
import { readFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { createRequire } from "node:module";
import { chromium } from "playwright-core";

const require = createRequire(import.meta.url);
const AXE = readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
export const step = (what) => process.stderr.write(`[browser] ${what}\n`);

export function env(name) {
  const v = process.env[name];
  if (!v) throw new Error(`environment variable ${name} is not set`);
  return v;
}

export function percentile(values, p) {
  if (!values.length) return null;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

export function summary(values) {
  return { n: values.length, p50: percentile(values, 50), p95: percentile(values, 95), max: values.length ? Math.max(...values) : null };
}

export async function launch() {
  return chromium.launch({
    executablePath: process.env.LW_CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-dev-shm-usage"],
  });
}

/// The page checker: `imagePattern` is what every <img src> must match.
export function checker(artifacts, metrics, imagePattern) {
  mkdirSync(artifacts, { recursive: true });
  return async function checkPage(page, name) {
    await page.waitForLoadState("load");
    await sleep(300);
    await page.screenshot({ path: join(artifacts, `${name}.png`), fullPage: true });
    const m = await page.evaluate(() => {
      const paint = performance.getEntriesByType("paint").find((e) => e.name === "first-contentful-paint");
      const nav = performance.getEntriesByType("navigation")[0];
      const resources = performance.getEntriesByType("resource");
      const weight = (nav ? nav.transferSize || nav.encodedBodySize : 0) +
        resources.reduce((sum, r) => sum + (r.transferSize || r.encodedBodySize || 0), 0);
      return { fcp_ms: paint ? Math.round(paint.startTime) : null, weight_bytes: weight };
    });
    metrics.pages[name] = m;
    await page.addScriptTag({ content: AXE });
    const result = await page.evaluate(async () => {
      const r = await window.axe.run(document, { resultTypes: ["violations"] });
      return r.violations.map((v) => ({ id: v.id, impact: v.impact, nodes: v.nodes.length, help: v.help,
        target: v.nodes[0] && v.nodes[0].target.join(" ") }));
    });
    metrics.accessibility[name] = result.map((v) => `${v.impact}:${v.id}`);
    const serious = result.filter((v) => v.impact === "serious" || v.impact === "critical");
    assert.deepEqual(serious, [], `${name}: serious or critical accessibility violations`);
    assert.equal(await page.evaluate(() => window.__xss), undefined, `${name}: injected script ran`);
    const images = await page.evaluate(() => [...document.images].map((i) => i.getAttribute("src")));
    for (const src of images) {
      assert.match(src, imagePattern, `${name}: image ${src} is not one the page may show`);
    }
    // every image (lazy ones scrolled into view first) loads and decodes
    await page.evaluate(async () => {
      for (const img of document.images) { img.loading = "eager"; }
      await Promise.all([...document.images].map((img) => img.decode().catch(() => {})));
    });
    const broken = await page.evaluate(() => [...document.images].filter((i) => !i.complete || i.naturalWidth === 0).map((i) => i.src));
    assert.deepEqual(broken, [], `${name}: images that did not load`);
  };
}
