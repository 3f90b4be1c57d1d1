// Browser tests of the fleet console, run by tests/tests/e2e/browser.rs against the real binaries
// (a control plane that requires a login, a simulated agent, and a bare session the Rust side
// uploads violation candidates through). playwright-core drives Debian's chromium; axe-core
// checks every page. Prints one JSON line of measurements (first paint and weight per page,
// event-to-DOM latencies) and exits non-zero on the first failed check.
//
// Environment: LW_URL, LW_OPERATOR_KEY, LW_ADMIN_KEY, LW_AGENT, LW_SITE, LW_BARE_SITE,
// LW_ARTIFACTS (screenshots, metrics), LW_SYNC (files exchanged with the Rust side),
// LW_CHROMIUM (default /usr/bin/chromium).

import assert from "node:assert/strict";
import { readFileSync, writeFileSync, existsSync } from "node:fs";
import { join } from "node:path";
import { checker, env, launch, sleep, step, summary } from "./lib.mjs";
const URL = env("LW_URL");
const ARTIFACTS = env("LW_ARTIFACTS");
const SYNC = env("LW_SYNC");
const SITE = env("LW_SITE");
const AGENT = env("LW_AGENT");
const metrics = { pages: {}, capture_to_dom_ms: [], restart_to_dom_ms: [], accessibility: {} };
// a console page shows stored captures only, through signed links
const checkPage = checker(ARTIFACTS, metrics,
  /^(https?:\/\/[^ /]+)?\/images\/[0-9a-f-]{36}\?expires=\d+&sig=[0-9a-f]+(&width=\d+)?$/);

async function waitForFile(path, ms) {
  const until = Date.now() + ms;
  while (!existsSync(path)) {
    if (Date.now() > until) throw new Error(`timed out after ${ms} ms waiting for ${path}`);
    await sleep(50);
  }
  return readFileSync(path, "utf8");
}

async function login(page, key) {
  await page.goto(`${URL}/login`);
  await page.fill("#key", key);
  await Promise.all([page.waitForURL(`${URL}/`), page.click("button[type=submit]")]);
}

async function main() {
  const browser = await launch();
  const context = await browser.newContext({ acceptDownloads: true, viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  const pageErrors = [];
  page.on("pageerror", (e) => pageErrors.push(String(e)));

  step("login is required");
  await page.goto(`${URL}/`);
  assert.match(page.url(), /\/login\?next=%2F$/, "an anonymous viewer is sent to the login page");
  await checkPage(page, "login");
  await page.fill("#key", "lw_0000_1111");
  await page.click("button[type=submit]");
  await page.locator(".error", { hasText: "invalid or revoked api key" }).waitFor();
  await login(page, env("LW_OPERATOR_KEY"));

  step("fleet overview, live");
  await page.locator(`tr[data-agent="${AGENT}"]`).waitFor();
  await checkPage(page, "fleet");
  // a new config version through the API: the agent applies it and its row follows, unreloaded
  const current = await gql(env("LW_ADMIN_KEY"), "query($s: String!) { siteConfig(siteId: $s) { version toml } }", { s: SITE });
  const pushed = await gql(env("LW_ADMIN_KEY"),
    "mutation($s: String!, $t: String!) { updateSiteConfig(siteId: $s, toml: $t, comment: \"fleet test\") { version } }",
    { s: SITE, t: current.siteConfig.toml });
  const v = pushed.updateSiteConfig.version;
  assert.ok(v > current.siteConfig.version);
  await page.waitForFunction(([agent, v]) => {
    const row = document.querySelector(`tr[data-agent="${agent}"]`);
    return row && row.children[5].textContent === `v${v}` && row.children[6].textContent.includes("applied");
  }, [AGENT, v], { timeout: 30_000 });

  step("captures arrive without a reload");
  await page.goto(`${URL}/captures`);
  await page.waitForSelector("[sse-swap=captures]");
  await page.evaluate(() => {
    window.__seen = {};
    const grid = document.getElementById("captures");
    const note = () => grid.querySelectorAll("[data-capture]").forEach((el) => {
      const id = el.getAttribute("data-capture");
      if (!(id in window.__seen)) window.__seen[id] = Date.now();
    });
    note();
    new MutationObserver(note).observe(grid, { childList: true, subtree: true });
  });
  // wait for the stream to be open before the uploads start
  await sleep(500);
  writeFileSync(join(SYNC, "captures-ready"), "");
  const uploads = JSON.parse(await waitForFile(join(SYNC, "uploads.json"), 60_000));
  const ids = Object.keys(uploads);
  await page.waitForFunction((ids) => ids.every((id) => id in window.__seen), ids, { timeout: 15_000 });
  const seenAt = await page.evaluate(() => window.__seen);
  for (const id of ids) metrics.capture_to_dom_ms.push(seenAt[id] - uploads[id]);
  await checkPage(page, "captures");

  step("capture detail");
  await page.click(`a[data-capture="${ids[ids.length - 1]}"]`);
  await page.locator("img.evidence").waitFor();
  await checkPage(page, "capture-detail");

  step("violation review: confirm with the keyboard, reject with a reason");
  await page.goto(`${URL}/review`);
  const first = await page.locator("article.review").getAttribute("data-violation");
  await page.locator("#confirm").waitFor();
  await checkPage(page, "review");
  await page.keyboard.press("c");
  await page.locator("#review-current .ok", { hasText: "confirmed" }).waitFor();
  const second = await page.locator("article.review").getAttribute("data-violation");
  assert.notEqual(second, first, "the next item follows a decision");
  await page.keyboard.press("r");
  assert.equal(await page.evaluate(() => document.activeElement.id), "reason");
  await page.keyboard.type("passenger hidden by the pillar");
  await page.keyboard.press("Enter");
  await page.locator("#review-current .ok", { hasText: "rejected" }).waitFor();
  const states = await gql(env("LW_ADMIN_KEY"),
    "query($a: ID!, $b: ID!) { a: violation(id: $a) { state reviewer capture { id imageSha256 } } b: violation(id: $b) { state reason } }",
    { a: first, b: second });
  assert.equal(states.a.state, "CONFIRMED");
  assert.equal(states.b.state, "REJECTED");
  assert.equal(states.b.reason, "passenger hidden by the pillar");

  step("evidence download");
  await page.goto(`${URL}/captures/${states.a.capture.id}`);
  const [download] = await Promise.all([page.waitForEvent("download"), page.click("text=Evidence package")]);
  const evidence = JSON.parse(readFileSync(await download.path(), "utf8"));
  assert.equal(evidence.violationId, first);
  assert.equal(evidence.images[0].sha256, states.a.capture.imageSha256);
  writeFileSync(join(ARTIFACTS, "evidence.json"), JSON.stringify(evidence, null, 2));

  step("site config: an error inline, then a fix that the agent applies");
  await page.goto(`${URL}/sites/${SITE}`);
  await checkPage(page, "site");
  const text = await page.inputValue("#toml");
  assert.ok(text.includes('id = "front"'), "the editor holds the newest config");
  await page.fill("#toml", text.replace('id = "front"', 'id = "front'));
  await page.click("text=Validate and push");
  const error = page.locator("#config-editor .error");
  await error.waitFor();
  assert.match(await error.textContent(), /line \d+/, "the validator's error names the line");
  await page.fill("#toml", text.replace('id = "front"', 'id = "side"'));
  await page.click("text=Validate and push");
  await page.locator("#config-editor .ok").waitFor();
  const version = Number((await page.locator("#config-editor .ok").textContent()).match(/v(\d+)/)[1]);
  await page.waitForFunction(([agent, v]) => {
    const row = document.querySelector(`#rollout tr[data-agent="${agent}"]`);
    return row && row.textContent.includes(`v${v}`) && row.textContent.includes("applied");
  }, [AGENT, version], { timeout: 30_000 });
  await page.screenshot({ path: join(ARTIFACTS, "site-applied.png"), fullPage: true });

  step("agent page: restart a component and watch it recover");
  await page.goto(`${URL}/agents/${AGENT}`);
  await page.locator("#components tr[data-component]").first().waitFor();
  await checkPage(page, "agent");
  const component = await page.locator("#components tr[data-component^=trigger]").first().getAttribute("data-component");
  await page.selectOption("#component", component);
  for (let i = 0; i < 5; i++) {
    const row = `#components tr[data-component="${component}"]`;
    const restarts = Number(await page.locator(`${row} td:nth-child(3)`).textContent());
    const clicked = Date.now();
    await page.click("button[value=restart]");
    await page.waitForFunction(([row, n]) => Number(document.querySelector(`${row} td:nth-child(3)`)?.textContent) > n,
      [row, restarts], { timeout: 15_000 });
    metrics.restart_to_dom_ms.push(Date.now() - clicked);
    await page.waitForFunction((row) => document.querySelector(`${row} .badge`)?.textContent === "running",
      row, { timeout: 15_000 });
  }

  step("jobs: counts, batch retry, queue controls");
  await page.goto(`${URL}/jobs?state=COMPLETED`);
  await page.locator("#queue-counts").waitFor();
  await checkPage(page, "jobs");
  const box = page.locator("#job-list input[type=checkbox]").first();
  const jobId = await box.getAttribute("value");
  await box.check();
  await page.click("#batch button[value=retry]");
  await page.locator("#batch-result .ok", { hasText: "1 of 1 jobs changed" }).waitFor();
  await page.selectOption("#queue-name", "webhooks");
  await page.click("#queue-controls button[value=pause]");
  await page.locator('#queue-counts tr[data-queue="webhooks"] .badge', { hasText: "paused" }).waitFor({ timeout: 10_000 });
  await page.click("#queue-controls button[value=resume]");
  await page.locator('#queue-counts tr[data-queue="webhooks"] .badge').waitFor({ state: "detached", timeout: 10_000 });
  await page.goto(`${URL}/jobs/${jobId}`);
  await checkPage(page, "job-detail");

  step("CSRF: a request without the session's token, or from another origin, is refused");
  await page.goto(`${URL}/jobs`);
  const statuses = await page.evaluate(async () => {
    const post = (headers) => fetch("/queues", { method: "POST", headers: { "content-type": "application/x-www-form-urlencoded", ...headers }, body: "name=webhooks&action=pause" }).then((r) => r.status);
    const token = document.querySelector("meta[name=csrf-token]").content;
    return { none: await post({}), wrong: await post({ "x-csrf-token": "0".repeat(64) }), right: await post({ "x-csrf-token": token }) };
  });
  assert.deepEqual(statuses, { none: 403, wrong: 403, right: 200 });
  await page.evaluate(async () => {
    const token = document.querySelector("meta[name=csrf-token]").content;
    await fetch("/queues", { method: "POST", headers: { "content-type": "application/x-www-form-urlencoded", "x-csrf-token": token }, body: "name=webhooks&action=resume" });
  });
  const token = await page.evaluate(() => document.querySelector("meta[name=csrf-token]").content);
  const cross = await context.request.post(`${URL}/queues`, {
    headers: { origin: "http://evil.example", "x-csrf-token": token }, form: { name: "webhooks", action: "pause" },
  });
  assert.equal(cross.status(), 403, "a cross-origin request is refused even with the token");

  step("sites list and admin as an admin; escaped data");
  await page.goto(`${URL}/sites`);
  await checkPage(page, "sites");
  await page.click("text=Log out");
  await page.waitForURL(/\/login/);
  await login(page, env("LW_ADMIN_KEY"));
  await page.goto(`${URL}/admin`);
  await page.locator("#audit").waitFor();
  await checkPage(page, "admin");
  assert.ok((await page.locator("#keys").textContent()).includes("<script>window.__xss=1</script>"),
    "a key name with markup shows as text");
  await page.goto(`${URL}/sites/${SITE}`);
  await page.locator("#versions").waitFor();
  assert.ok((await page.locator("#versions").textContent()).includes("<script>window.__xss=1</script>"),
    "a config comment with markup shows as text");
  assert.equal(await page.evaluate(() => window.__xss), undefined);
  await page.goto(`${URL}/agents/${encodeURIComponent(env("LW_BARE_AGENT"))}`);
  await page.locator("h1").waitFor();
  assert.ok((await page.locator("h1").textContent()).includes("<script>"), "an agent id with markup shows as text");
  assert.equal(await page.evaluate(() => window.__xss), undefined);

  step("logout ends the session");
  await page.click("text=Log out");
  await page.waitForURL(/\/login/);
  await page.goto(`${URL}/jobs`);
  assert.match(page.url(), /\/login\?next=%2Fjobs$/);

  assert.deepEqual(pageErrors, [], "scripts threw on a page");
  await browser.close();

  const out = {
    pages: metrics.pages,
    accessibility_minor_or_moderate: metrics.accessibility,
    capture_to_dom_ms: summary(metrics.capture_to_dom_ms),
    restart_click_to_dom_ms: summary(metrics.restart_to_dom_ms),
  };
  writeFileSync(join(ARTIFACTS, "metrics.json"), JSON.stringify(out, null, 2));
  console.log(JSON.stringify(out));
}

async function gql(key, query, variables) {
  const r = await fetch(`${URL}/graphql`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${key}` },
    body: JSON.stringify({ query, variables }),
  });
  const body = await r.json();
  if (body.errors) throw new Error(`graphql: ${JSON.stringify(body.errors)}`);
  return body.data;
}

main().catch((e) => {
  console.error(e && e.stack ? e.stack : String(e));
  process.exit(1);
});
