// CI: drives the dashboard of a running `pocket serve` in headless Chromium (Debian's
// /usr/bin/chromium through playwright-core): sign in (a wrong key first), check the page
// shows instances, queue and charts with data, approve the pending tool call, and check the
// task completes. Environment: POCKET_URL, POCKET_KEY, SCREENSHOT (PNG path).
import assert from "node:assert/strict";
import { chromium } from "playwright-core";

const base = process.env.POCKET_URL;
const key = process.env.POCKET_KEY;
const screenshot = process.env.SCREENSHOT || "dashboard.png";
assert.ok(base && key, "POCKET_URL and POCKET_KEY are required");

const log = (...a) => console.log("dashboard:", ...a);

async function api(method, path, body) {
  const resp = await fetch(base + path, {
    method,
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await resp.text();
  assert.ok(resp.ok, `${method} ${path}: ${resp.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

async function until(what, check, timeoutMs = 30_000) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

// Work for the charts and tables, and one task whose calculator call needs approval.
const plain = [];
for (const [i, priority] of [[17, 0], [23, 5], [31, -2], [41, 5], [53, 1], [67, 0]]) {
  plain.push((await api("POST", "/v1/tasks", { task: `What is ${i} * 3?`, priority })).id);
}
const guarded = (await api("POST", "/v1/tasks", { task: "What is 6 * 7?", agent: "guarded" })).id;
log(`submitted ${plain.length} tasks and ${guarded} (needs approval)`);
const pending = await until("the approval request", async () => {
  const list = (await api("GET", "/v1/approvals")).approvals;
  return list.length === 1 ? list[0] : null;
});
assert.equal(pending.tool, "calculator");
for (const id of plain) {
  await until(`task ${id}`, async () => (await api("GET", `/v1/tasks/${id}`)).status === "succeeded");
}
log("plain tasks succeeded; approval", pending.id, "waiting");

// Without credentials there is nothing to see.
const bare = await fetch(base + "/v1/monitor");
assert.equal(bare.status, 401);

const browser = await chromium.launch({ executablePath: "/usr/bin/chromium" });
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  const problems = [];
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("console", (m) => { if (m.type() === "error") problems.push(`console: ${m.text()}`); });

  const first = await page.goto(base + "/");
  assert.equal(first.status(), 401, "the page needs a session");
  await page.fill("#key", "not-the-key");
  await page.click("button[type=submit]");
  await page.waitForSelector("text=That key is not valid.");
  assert.equal((await context.cookies()).length, 0, "no cookie for a wrong key");
  // The 401 of the wrong key shows up as a console error; only later ones count.
  problems.length = 0;

  await page.fill("#key", key);
  await Promise.all([page.waitForURL(base + "/"), page.click("button[type=submit]")]);
  await page.waitForSelector("#instances tr td .badge");
  const cookies = await context.cookies();
  const session = cookies.find((c) => c.name === "pocket_session");
  assert.ok(session, "session cookie set");
  assert.equal(session.httpOnly, true);
  assert.equal(session.sameSite, "Strict");
  assert.ok(!session.value.includes(key), "the cookie is not the key");
  assert.equal(await page.evaluate(() => document.cookie), "", "scripts cannot read the cookie");
  log("signed in");

  // Instances, queue, breakers, charts.
  const instances = await page.locator("#instances tr").count();
  assert.ok(instances >= 3, `instance rows (with header): ${instances}`);
  await page.waitForSelector("#tiles [data-tile=succeeded] b");
  const succeeded = Number(await page.textContent("#tiles [data-tile=succeeded] b"));
  assert.ok(succeeded >= plain.length, `succeeded tile ${succeeded}`);
  const queueText = await page.textContent("#queue");
  assert.match(queueText, /succeeded/);
  assert.match(queueText, /waiting approval/);
  assert.equal(await page.locator("#charts .chart svg").count(), 4);
  // The live series samples every 5 s; wait for a throughput line with the finished tasks.
  await page.waitForSelector("#charts [data-chart=throughput] polyline", { timeout: 30_000 });
  await page.waitForFunction(() => {
    const b = document.querySelector("#charts [data-chart=throughput] .label b");
    return b && parseFloat(b.textContent) >= 0 && document.querySelector("#charts [data-chart=latency] polyline");
  }, null, { timeout: 30_000 });
  log("instances, queue and charts shown");

  // Approve from the page.
  const row = page.locator(`#approvals tr[data-approval-id="${pending.id}"]`);
  await row.waitFor();
  assert.match(await row.textContent(), /calculator/);
  await row.locator("button.approve").click();
  await page.waitForSelector(`#approvals tr[data-approval-id="${pending.id}"]`, { state: "detached" });
  await page.waitForSelector("#approvals td.empty");
  const done = await until("the approved task", async () => {
    const t = await api("GET", `/v1/tasks/${guarded}`);
    return ["succeeded", "failed", "cancelled"].includes(t.status) ? t : null;
  });
  assert.equal(done.status, "succeeded", JSON.stringify(done));
  assert.match(JSON.stringify(done.result ?? done), /42/);
  assert.equal((await api("GET", "/v1/approvals")).approvals.length, 0);
  log("approved from the page; the task succeeded");

  // Let the tiles catch up and the live series grow a little, then keep a picture.
  await page.waitForFunction((n) => {
    const b = document.querySelector("#tiles [data-tile=succeeded] b");
    const samples = parseInt(document.querySelector("#range-note").textContent, 10);
    return b && Number(b.textContent) >= n && samples >= 3;
  }, plain.length + 1, { timeout: 30_000 });
  const maxThroughput = await page.textContent("#charts [data-chart=throughput] .label:last-child span:last-child");
  assert.match(maxThroughput, /max [1-9]/, "the throughput chart counted the finished tasks");
  await page.screenshot({ path: screenshot, fullPage: true });
  log("screenshot", screenshot);
  assert.deepEqual(problems, [], "no script errors or refused resources");

  // Signing out ends the session.
  await Promise.all([page.waitForURL(base + "/"), page.click("header button[type=submit]")]);
  await page.waitForSelector("#key");
  const after = await page.evaluate(async () => (await fetch("/v1/monitor")).status);
  assert.equal(after, 401);
  log("signed out");
} finally {
  await browser.close();
}
log("ok");
