// Browser tests of the agent's local UI, run by tests/tests/e2e/local_ui.rs against a real agent
// with vision (its id has markup in it). Every page is checked (axe-core, screenshot, no script
// from data, frames only from the UI's own released-frame route); a component is restarted and
// watched recovering; a wrong calibration shows the validator's field and line; a polygon is
// dragged, then calibrated and applied, and the next released frame carries it. Prints one JSON
// line of measurements.
//
// Environment: LW_UI (the UI's base URL, with a trailing slash), LW_ARTIFACTS.

import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { checker, env, launch, step, summary } from "./lib.mjs";

const UI = env("LW_UI").replace(/\/$/, "");
const ARTIFACTS = env("LW_ARTIFACTS");
const metrics = { pages: {}, restart_to_dom_ms: [], accessibility: {} };
const checkPage = checker(ARTIFACTS, metrics, /^\/cameras\/[^/]+\/frame\.jpg\?c=[0-9a-f-]{36}$/);
const CALIBRATED = "front_passenger: 44,44 300,44 300,200 44,200\n" +
  "driver: 340,40 600,40 600,200 340,200\nrear_row_1: 60,210 580,210 580,340 60,340";

async function main() {
  const browser = await launch();
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const pageErrors = [];
  page.on("pageerror", (e) => pageErrors.push(String(e)));

  step("site view: the scan profile, lane events and counters, live");
  await page.goto(`${UI}/`);
  await page.locator("#scan-figure circle").first().waitFor();
  await page.locator("#lane-events li:not(.muted)").first().waitFor({ timeout: 30_000 });
  assert.ok((await page.locator(".who").textContent()).includes("<img src=x onerror"), "the agent id shows as text");
  await checkPage(page, "agent-site");
  const at = await page.locator("#scan-figure").innerHTML();
  await page.waitForFunction((before) => document.querySelector("#scan-figure").innerHTML !== before, at, { timeout: 10_000 });

  step("cameras: the released frame with its sections and masked faces");
  await page.goto(`${UI}/cameras`);
  await page.locator('article[data-camera="front"] img').waitFor({ timeout: 30_000 });
  assert.equal(await page.locator('article[data-camera="front"] polygon[data-section]').count(), 3);
  await page.locator('article[data-camera="front"]', { hasText: "frames/s" }).waitFor({ timeout: 10_000 });
  await checkPage(page, "agent-cameras");

  step("components: restart one and watch it recover; the log level filter");
  await page.goto(`${UI}/components`);
  await page.locator("#components tr[data-component]").first().waitFor();
  await checkPage(page, "agent-components");
  assert.ok((await page.locator("#logs").textContent()).includes("agent-<img src=x onerror"),
    "a log line whose field holds markup shows as text");
  await page.selectOption("#component", "trigger");
  for (let i = 0; i < 5; i++) {
    const row = '#components tr[data-component="trigger"]';
    const before = Number(await page.locator(`${row} td:nth-child(3)`).textContent());
    const clicked = Date.now();
    await page.click("button[value=restart]");
    await page.waitForFunction(([row, n]) => Number(document.querySelector(`${row} td:nth-child(3)`)?.textContent) > n,
      [row, before], { timeout: 15_000 });
    metrics.restart_to_dom_ms.push(Date.now() - clicked);
    await page.waitForFunction((row) => document.querySelector(`${row} .badge`)?.textContent === "running", row, { timeout: 15_000 });
  }
  await page.selectOption("#level", "warn");
  await Promise.all([page.waitForURL(/level=warn/), page.click("form.filters button")]);
  const levels = await page.locator("#logs li strong").allTextContents();
  assert.ok(levels.every((l) => l === "WARN" || l === "ERROR"), `only warnings and errors: ${levels}`);
  const csrf = await page.evaluate(() => fetch("/components/command", { method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded" }, body: "action=restart&component=trigger" }).then((r) => r.status));
  assert.equal(csrf, 403, "a command without the CSRF token is refused");

  step("buffer and uplink");
  await page.goto(`${UI}/buffer`);
  await page.locator("#classes").waitFor();
  await checkPage(page, "agent-buffer");

  step("calibration: a refused edit shows field and line; a dragged handle edits the text");
  await page.goto(`${UI}/calibration`);
  await page.locator("#sections-front").waitFor();
  await page.locator('svg[data-edit-polygons] circle[data-handle="0:0"]').waitFor();
  await checkPage(page, "agent-calibration");
  const lanes = await page.inputValue("#lanes");
  await page.fill("#lanes", "99");
  await page.click("text=Validate and apply");
  const error = page.locator("#calibration .error");
  await error.waitFor();
  assert.match(await error.textContent(), /site\.lanes \(line \d+\)/);
  await page.fill("#lanes", lanes);
  const text = await page.inputValue("#sections-front");
  const handle = page.locator('svg[data-edit-polygons] circle[data-handle="0:0"]');
  const box = await handle.boundingBox();
  await page.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
  await page.mouse.down();
  await page.mouse.move(box.x + 30, box.y + 20, { steps: 4 });
  await page.mouse.up();
  assert.notEqual(await page.inputValue("#sections-front"), text, "dragging a handle moves its point");

  step("calibration: applied in place, and the next released frame carries it");
  await page.fill("#sections-front", CALIBRATED);
  await page.click("text=Validate and apply");
  await page.locator("#calibration .ok", { hasText: "Applied" }).waitFor({ timeout: 15_000 });
  await page.goto(`${UI}/cameras`);
  await page.waitForFunction(() => {
    const p = document.querySelector('article[data-camera="front"] polygon[data-section="front_passenger"]');
    return p && p.getAttribute("points").startsWith("44,44");
  }, null, { timeout: 60_000 });
  await page.screenshot({ path: join(ARTIFACTS, "agent-calibrated.png"), fullPage: true });

  assert.deepEqual(pageErrors, [], "scripts threw on a page");
  await browser.close();
  const out = { pages: metrics.pages, accessibility_minor_or_moderate: metrics.accessibility,
    restart_click_to_dom_ms: summary(metrics.restart_to_dom_ms) };
  writeFileSync(join(ARTIFACTS, "agent-metrics.json"), JSON.stringify(out, null, 2));
  console.log(JSON.stringify(out));
}

main().catch((e) => {
  console.error(e && e.stack ? e.stack : String(e));
  process.exit(1);
});
