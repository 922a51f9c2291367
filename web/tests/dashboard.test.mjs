// The dashboard in a real browser: Debian's chromium (headless, driven by playwright-core) against
// a real `mongoferry serve` and two SecantusDB test servers. One operator's session, in order,
// against a service that asks for an API token: the page loads from the binary alone and asks for
// the token (a wrong one is refused; the right one goes nowhere but into the requests' headers),
// the form shows the API's problems, a job started from the form fills its chart and counts,
// pauses, resumes, takes a new rate limit and worker count live, is cancelled after a
// confirmation; a failed job shows its error; a job whose documents the destination refuses lists
// them; a sync job started from the form goes live, shows its lag (with a chart) and the changes
// it applies, and a confirmed commit completes it; a move job planned and started from the form
// shows what it moved, and only the selected documents leave the source; adaptive mode shows its
// decision; the page fits a narrow window; a sync job's verification panel shows its first pass,
// rogue writes at the destination as mismatches (a hostile _id as text), and the Commit button
// says why it is not ready, in its confirmation too, then after a commit anyway what was not
// proven and a write after the commit point; a reconcile job started from the form shows what
// it found equal, wrote and kept at the destination, and deletes the extras when asked; a job
// held by its flag file shows its load guard held and why (in the list too, and shaded on its
// chart), then writing once the file is gone, and completes; a job
// running when the service stops is shown interrupted, and the same page follows it again when
// the restarted service continues it; a service without a token needs no sign-in. A chart of
// fewer than two points says so in words instead of drawing an axis; a job in a final state shows
// no controls, and an ended one its average rate and how long it took. A transform file chosen in
// the form is summed up, planned and applied to the copied documents; one that is not JSON is
// refused in the page. Screenshots go to target/screenshots/. Any page error or console error
// fails the run; every wait is bounded; the run leaves no temporary directory.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";

import { countDocuments, dropDatabases, launchBrowser, leftTempDirs, removeTempDir, runCommand, sample, screenshotPath, sleep, startService, startTestServer, stopAll, stopChild, tempDir, waitFor } from "./harness.mjs";

const DOCS = 8000;
/** With MONGOFERRY_TEST_URI (a real mongod for both sides), databases of this run only. */
const SHARED_URI = process.env.MONGOFERRY_TEST_URI;
const PREFIX = SHARED_URI ? `mfweb${process.pid}_` : "";
const ns = (name) => PREFIX + name;
const PASSWORD = "s3cret-Pw";
/** The service's API token, in a file only the test and the service read. */
const TOKEN = "dashboard-T0ken-0123456789abcdef";
const tokenDir = tempDir();
const tokenFile = path.join(tokenDir, "token");
writeFileSync(tokenFile, `${TOKEN}\n`, { mode: 0o600 });
/** The whole file must finish well within the suite's budget; this stops a wedged run. */
const WATCHDOG_MS = 180000;

const watchdog = setTimeout(() => {
  console.error(`the browser tests took more than ${WATCHDOG_MS / 1000} s: stopping`);
  process.exit(1);
}, WATCHDOG_MS);
watchdog.unref();

let source;
let destination;
let service;
let browser;
let page;
/** Page errors, console errors and requests that left the service, found at any time. */
const problems = [];
/** Console errors the browser logs for answers the test asks for on purpose (a 400, a 409). */
let expectedFailures = 0;
/** While the test has stopped the service on purpose, the page's failed requests are expected. */
let serviceDown = false;

describe("the dashboard in a browser", { timeout: WATCHDOG_MS }, () => {
  before(async () => {
    [source, destination] = SHARED_URI
      ? [SHARED_URI, SHARED_URI]
      : await Promise.all([startTestServer("source"), startTestServer("destination")]);
    await sample(source, ns("shop.orders"), DOCS, 200);
    service = await startService({ tokenFile });
    browser = await launchBrowser();
    const context = await browser.newContext({ viewport: { width: 1366, height: 900 } });
    page = await context.newPage();
    page.setDefaultTimeout(10000);
    page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
    page.on("console", (message) => {
      if (message.type() !== "error") return;
      // Chrome logs every 4xx answer to fetch as a console error; only those the test provokes pass.
      if (expectedFailures > 0 && /status of 4\d\d/.test(message.text())) {
        expectedFailures--;
        return;
      }
      if (serviceDown && /ERR_CONNECTION_REFUSED/.test(message.text())) return;
      problems.push(`console error: ${message.text()}`);
    });
    page.on("request", (request) => {
      if (!request.url().startsWith(service.base) && !request.url().startsWith("data:")) {
        problems.push(`request outside the service: ${request.url()}`);
      }
      if (request.url().includes(TOKEN)) problems.push(`the token is in a URL: ${request.url()}`);
      const sent = request.headers().authorization;
      if (request.url().includes("/api/") && sent !== undefined && sent !== `Bearer ${TOKEN}` && !sent.includes("wrong")) {
        problems.push(`unexpected authorization header on ${request.url()}`);
      }
    });
  });

  after(async () => {
    try {
      if (browser) await browser.close();
      if (SHARED_URI) await dropDatabases(SHARED_URI, PREFIX);
    } finally {
      // The services first, then their directories (a service writes its state as it stops).
      await stopAll();
      clearTimeout(watchdog);
    }
    assert.deepEqual(leftTempDirs(), [], "the run left temporary directories behind");
  });

  /** Fails the current test on anything the browser reported so far. */
  function assertNoProblems() {
    assert.deepEqual(problems, [], "the browser reported problems");
  }

  const text = (selector) => page.locator(selector).innerText();
  const number = async (selector) => Number((await text(selector)).split("/")[0].replaceAll(",", "").trim());
  const docs = () => number('#summary [data-field="docs"]');
  const docsPerSec = () => number('#summary [data-field="docs_per_sec"]');
  const points = async (selector) => Number(await page.locator(selector).getAttribute("data-points"));
  const state = () => page.locator("#job-state [data-state]").getAttribute("data-state");
  /** Each chart: drawn with two points or more, else hidden behind its note in words. */
  const chartsAgree = () =>
    page.evaluate(() =>
      ["#chart-job", "#chart-workers"].every((id) => {
        const chart = document.querySelector(id);
        const note = document.querySelector(`${id}-note`);
        const enough = Number(chart.dataset.points) >= 2;
        return enough ? !chart.hidden && note.hidden : chart.hidden && !note.hidden && note.textContent.trim() !== "";
      }),
    );

  async function waitForState(expected, timeoutMs = 10000) {
    await waitFor(`state ${expected}`, async () => (await state()) === expected, timeoutMs);
  }

  async function api(method, path, body) {
    const response = await fetch(`${service.base}${path}`, {
      method,
      headers: { "content-type": "application/json", authorization: `Bearer ${TOKEN}` },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    return { status: response.status, body: await response.json() };
  }

  /** Gives the token to a page that asks for it (a service on another address is another origin). */
  async function signIn() {
    await page.locator("#sign-in").waitFor({ state: "visible" });
    await page.locator("#token").fill(TOKEN);
    await page.locator("#sign-in-submit").click();
    await page.locator("#sign-in").waitFor({ state: "hidden" });
  }

  async function fillForm(fields) {
    await page.goto(`${service.base}/#/`);
    for (const id of ["from", "to", "namespaces", "filter", "workers", "batch_size", "rate"]) {
      await page.locator(`#${id}`).fill(fields[id] === undefined ? "" : String(fields[id]));
    }
    await page.locator("#mode").selectOption(fields.mode ?? "copy");
    if (fields.adaptive !== undefined) {
      await page.locator(".more summary").click();
      await page.locator("#adaptive").fill(String(fields.adaptive));
    }
  }

  const withLogin = (uri, password) => uri.replace(/^(mongodb(?:\+srv)?:\/\/)(?:[^@/?]*@)?/, `$1ferry:${password}@`);
  const withPassword = (uri) => withLogin(uri, PASSWORD);

  test("the page and all it loads come from the binary, and it asks for the token once", async () => {
    // The list's first request is refused (401) until the page has the token; then a wrong one.
    expectedFailures = 2;
    const response = await page.goto(`${service.base}/`);
    assert.equal(response.status(), 200);
    assert.match(response.headers()["content-security-policy"], /default-src 'self'/);
    const dialog = page.locator("#sign-in");
    await dialog.waitFor({ state: "visible" });
    assert.equal(await text("#connection"), "this service needs its API token");
    await page.screenshot({ path: screenshotPath("00-sign-in"), fullPage: true });
    await page.locator("#token").fill("a-wrong-token-0123456789");
    await page.locator("#sign-in-submit").click();
    await page.locator("#sign-in-problem").filter({ hasText: "refused" }).waitFor();
    assert.ok(await dialog.isVisible(), "the dialog stays after a wrong token");
    await page.keyboard.press("Escape");
    assert.ok(await dialog.isVisible(), "the dialog cannot be dismissed without a token");
    await page.locator("#token").fill(TOKEN);
    await page.locator("#sign-in-submit").click();
    await dialog.waitFor({ state: "hidden" });
    await page.locator("#job-list .empty").waitFor();
    await waitFor("the console errors of the expected 401s", () => expectedFailures === 0, 5000, 50);
    // Kept in this tab only: not in the page, a URL, localStorage or a cookie.
    assert.equal(await page.evaluate(() => sessionStorage.getItem("mongoferry.token")), TOKEN);
    assert.equal(await page.evaluate(() => localStorage.length), 0);
    assert.deepEqual(await page.context().cookies(), []);
    assert.ok(!(await page.content()).includes(TOKEN), "the token is in the page");
    assert.ok(!page.url().includes(TOKEN));
    assert.ok(await page.locator("#sign-out").isVisible());
    // The links to the API's description and the metrics fetch them with the token.
    await page.locator('a[href="/metrics"]').click();
    await page.locator("#raw").waitFor({ state: "visible" });
    await waitFor("the metrics", async () => (await text("#raw-text")).includes("# TYPE mongoferry_docs_copied_total counter"), 5000);
    await page.locator("#raw-close").click();
    assert.equal(await text("#job-list .empty"), "No jobs yet. Start one with the form.");
    assert.equal(await page.evaluate(() => typeof uPlot), "function");
    await page.screenshot({ path: screenshotPath("01-home-empty"), fullPage: true });
    assertNoProblems();
  });

  test("the form shows problems next to their fields and keeps what was typed", async () => {
    let posts = 0;
    const countPosts = (request) => {
      if (request.method() === "POST") posts++;
    };
    page.on("request", countPosts);
    try {
      await fillForm({ from: withPassword(source), to: destination, namespaces: ns("shop.orders"), filter: "{bad json" });
      await page.locator("#submit-job").click();
      await page.locator("#problems-filter li").waitFor();
      assert.match(await text("#problems-filter"), /filter is not valid JSON/);
      assert.equal(posts, 0, "a filter that is not JSON is caught before asking the service");

      await page.locator("#filter").fill("");
      await page.locator("#namespaces").fill("shop");
      await page.locator("#workers").fill("0");
      await page.locator("#batch_size").fill("0");
      await page.locator("#rate").fill("-5");
      expectedFailures = 1;
      await page.locator("#submit-job").click();
      await page.locator("#problems-workers li").waitFor();
      assert.equal(posts, 1);
      assert.equal(await text("#problems-namespaces"), 'namespace "shop": expected db.collection');
      assert.equal(await text("#problems-workers"), "workers: must be 1 to 256 workers, got 0");
      assert.equal(await text("#problems-batch_size"), "batch_size: must be 1 to 100000 documents, got 0");
      assert.equal(await text("#problems-rate"), "rate: must be 0.001 to 1000000000 documents per second, got -5");
      assert.equal(await text("#problems-filter"), "", "the fixed filter's problem is gone");
      assert.equal(await page.locator("#workers").getAttribute("aria-invalid"), "true");
      // Nothing typed is lost on a refusal.
      assert.equal(await page.locator("#from").inputValue(), withPassword(source));
      await page.screenshot({ path: screenshotPath("02-form-problems"), fullPage: true });
      await waitFor("the console error of the expected 400", () => expectedFailures === 0, 5000, 50);
    } finally {
      page.off("request", countPosts);
      expectedFailures = 0;
    }
    assertNoProblems();
  });

  test("the plan shows what a job would do, and starts nothing", async () => {
    await fillForm({ from: source, to: destination, namespaces: `${ns("shop.orders")}:${ns("plan.orders")}` });
    await page.locator("#plan-job").click();
    const row = page.locator("#plan tbody");
    await row.first().waitFor({ timeout: 20000 });
    assert.equal(await row.count(), 1);
    assert.equal(await row.locator('[data-field="namespace"]').innerText(), `${ns("shop.orders")} → ${ns("plan.orders")}`);
    const cells = await row.first().locator("td").allInnerTexts();
    assert.equal(cells[0], "8,000");
    assert.equal(cells[3], "absent");
    // Every header whole, and nothing of the table cut off at the form's width.
    const clipped = await page.locator("#plan").evaluate((plan) => plan.scrollWidth > plan.clientWidth + 1);
    assert.ok(!clipped, "the plan's table is wider than the form");
    assert.equal(await text('#plan [data-field="verdict"]'), "Nothing blocks the job.");
    assert.match(await text('#plan [data-field="estimate"]'), /^Estimate: (about .*|under a second) at .* docs\/s \(an estimate/);
    assert.equal((await api("GET", "/api/jobs")).body.jobs.length, 0, "a plan starts no job");
    await page.screenshot({ path: screenshotPath("02b-plan"), fullPage: true });
    assertNoProblems();
  });

  test("a job started from the form fills its chart and its counts rise", async () => {
    await fillForm({ from: source, to: destination, namespaces: `${ns("shop.orders")}:${ns("copy.orders")}`, workers: 2, batch_size: 20, rate: 100 });
    await page.locator("#submit-job").click();
    await page.waitForURL(/#\/jobs\/1$/);
    await waitForState("running");
    // Seconds after it opened, a chart of fewer than two points says so in words, without an axis.
    assert.ok(await chartsAgree(), "a chart with fewer than two points draws an axis, or one with two has none");
    if ((await points("#chart-job")) < 2) {
      assert.equal(await text("#chart-job-note"), "Collecting… the chart starts with the second sample.");
    }
    assert.ok(await page.locator("#job-view").isVisible());
    assert.ok(!(await page.locator("#home-view").isVisible()), "one screen at a time");
    await page.goBack();
    await page.locator('#job-list [data-job="1"]').waitFor();
    assert.ok(!(await page.locator("#job-view").isVisible()), "one screen at a time");
    assert.match(await text('#job-list [data-job="1"]'), /running/);
    // The same spec again while the job runs: the service answers with that job.
    await page.locator("#submit-job").click();
    await page.waitForURL(/#\/jobs\/1$/);
    await waitForState("running");
    assert.equal(await text("#control-status"), "The same job was already active: this is that job.");
    assert.equal((await api("GET", "/api/jobs")).body.jobs.length, 1);

    const first = await docs();
    await waitFor("the job chart to gain points", async () => (await points("#chart-job")) >= 4, 15000);
    await waitFor("the worker chart to gain points", async () => (await points("#chart-workers")) >= 3, 10000);
    assert.equal(await page.locator("#chart-workers").getAttribute("data-series"), "2");
    assert.equal(await page.locator("#chart-job canvas").count(), 1);
    assert.ok(await page.locator("#chart-job canvas").isVisible());
    assert.ok(await chartsAgree());
    await waitFor("the count to rise", async () => (await docs()) >= first + 150, 10000);
    assert.equal(await text('#summary [data-field="rate_limit"]'), "100 docs/s");
    assert.equal(await text("#job-live"), "live");
    // The schema panel: the destination collection was created with the source's options.
    assert.match(await text("#job-schema"), new RegExp(`Created: ${ns("copy.orders").replace(".", "\\.")}`));
    await page.screenshot({ path: screenshotPath("03-job-running"), fullPage: true });
    assertNoProblems();
  });

  test("pause stops the counts and resume starts them again", async () => {
    await page.locator("#pause").click();
    await waitForState("paused");
    assert.ok(await page.locator("#pause").isDisabled());
    // The batches in flight finish; then nothing moves.
    await waitFor("every worker to be paused", async () => {
      const states = await page.locator("#job-workers td .wstate").allInnerTexts();
      return states.length > 0 && states.every((s) => s === "paused" || s === "stopped");
    }, 10000);
    const held = await docs();
    await sleep(2500);
    assert.equal(await docs(), held, "documents were copied while paused");
    const api1 = await api("GET", "/api/jobs/1");
    assert.equal(api1.body.progress.docs, held, "the page shows the service's count");
    await page.screenshot({ path: screenshotPath("04-job-paused"), fullPage: true });

    await page.locator("#resume").click();
    await waitForState("running");
    await waitFor("the count to rise after resume", async () => (await docs()) > held + 50, 10000);
    assertNoProblems();
  });

  test("a new rate limit and worker count apply while the job runs", async () => {
    const box = page.locator("#rate-box");
    await box.fill("400");
    await box.press("Enter");
    await waitFor("the new limit to show", async () => (await text('#summary [data-field="rate_limit"]')) === "400 docs/s", 5000);
    assert.equal((await api("GET", "/api/jobs/1")).body.limits.rate, 400);
    await waitFor("the measured rate to follow the higher limit", async () => (await docsPerSec()) >= 300, 15000);
    const fast = await docsPerSec();
    assert.ok(fast <= 480, `measured ${fast} docs/s over a 400 docs/s limit`);

    await page.locator("#workers-box").fill("3");
    await page.locator("#workers-apply").click();
    await waitFor("three workers", async () => (await text('#summary [data-field="workers"]')) === "3", 5000);
    await waitFor("a third worker in the chart", async () => (await page.locator("#chart-workers").getAttribute("data-series")) === "3", 10000);

    // The slider: position 320 of 1000 on the log scale is 40 docs/s.
    await page.locator("#rate-slider").evaluate((slider) => {
      slider.value = "320";
      slider.dispatchEvent(new Event("input", { bubbles: true }));
      slider.dispatchEvent(new Event("change", { bubbles: true }));
    });
    await waitFor("the slider's limit to show", async () => (await text('#summary [data-field="rate_limit"]')) === "40 docs/s", 5000);
    assert.equal(await box.inputValue(), "40");
    await waitFor("the measured rate to follow the lower limit", async () => (await docsPerSec()) <= 60, 15000);
    await page.screenshot({ path: screenshotPath("05-job-rate-changed"), fullPage: true });
    assertNoProblems();
  });

  test("cancel asks first, then stops the job", async () => {
    await page.locator("#cancel").click();
    const dialog = page.locator("#confirm-cancel");
    await dialog.waitFor({ state: "visible" });
    assert.equal(await text("#confirm-title"), "Cancel job 1?");
    await page.screenshot({ path: screenshotPath("06-cancel-confirm") });
    await page.locator("#confirm-keep").click();
    await dialog.waitFor({ state: "hidden" });
    await sleep(500);
    assert.equal(await state(), "running", "keeping the job running does not cancel it");

    await page.locator("#cancel").click();
    await page.locator("#confirm-yes").click();
    await waitForState("cancelled", 15000);
    await waitFor("the stream to end", async () => (await text("#job-live")) === "ended", 5000);
    for (const control of ["#pause", "#resume", "#cancel", "#rate-box", "#workers-apply"]) {
      assert.ok(await page.locator(control).isDisabled(), `${control} is disabled on an ended job`);
    }
    assert.ok(await page.locator("#controls").isHidden(), "an ended job shows no controls");
    assert.ok(await chartsAgree());
    const view = (await api("GET", "/api/jobs/1")).body;
    assert.equal(view.state, "cancelled");
    assert.ok(view.progress.docs < DOCS, "the job stopped before the end");
    assert.equal(await docs(), view.progress.docs);
    await page.screenshot({ path: screenshotPath("07-job-cancelled"), fullPage: true });
    assertNoProblems();
  });

  test("a failed job shows its error on its page and in the list", async () => {
    await fillForm({ from: source, to: destination, namespaces: `${ns("shop.nothere")}:${ns("copy.nothere")}` });
    await page.locator("#submit-job").click();
    await page.waitForURL(/#\/jobs\/2$/);
    await waitForState("failed", 20000);
    const error = await text('#job-error [data-field="error"]');
    assert.match(error, /shop\.nothere/);
    assert.match(error, /not found/);
    assert.equal(await page.locator("#dead-letters").count(), 0, "no failed-documents panel without dead_letters");
    // What is true of a job that failed before copying: no controls, no empty axes, no "not started".
    assert.ok(await page.locator("#controls").isHidden(), "a failed job shows no controls");
    assert.ok(await chartsAgree());
    assert.match(await text("#chart-job-note"), /^(No samples|One sample only)/);
    assert.match(await text('#job-namespaces [data-field="namespaces_note"]'), /^The job failed before copying: nothing was copied of .*shop\.nothere → .*copy\.nothere\.$/);
    assert.equal(await text('#job-workers [data-field="workers_note"]'), "The job failed before copying: no worker ran.");
    await page.screenshot({ path: screenshotPath("08-job-failed"), fullPage: true });

    await page.locator(".back").click();
    const row = page.locator('#job-list [data-job="2"]');
    await row.waitFor();
    assert.match(await row.innerText(), /failed/);
    assert.match(await row.locator(".job-error").innerText(), /shop\.nothere/);
    assertNoProblems();
  });

  test("credentials are masked once a job is submitted", async () => {
    // The test servers need no login, so a password makes this job fail at the destination:
    // the error names the server, without the password.
    await fillForm({ from: source, to: withPassword(destination), namespaces: `${ns("shop.orders")}:${ns("masked.orders")}` });
    await page.locator("#submit-job").click();
    await page.waitForURL(/#\/jobs\/3$/);
    await waitForState("failed", 20000);
    assert.match(await text('#job-error [data-field="error"]'), /ferry:\*\*\*@/);
    assert.match(await text("#job-spec"), /ferry:\*\*\*@/);
    assert.ok(!(await page.content()).includes(PASSWORD), "the password is on the job's page");
    await page.goBack();
    await page.locator('#job-list [data-job="3"]').waitFor();
    assert.equal(await page.locator("#to").inputValue(), withLogin(destination, "***"));
    assert.ok(!(await page.content()).includes(PASSWORD), "the password is on the home page");
    // Sending the masked URI again is caught before it reaches the service.
    await page.locator("#submit-job").click();
    await page.locator("#problems-to li").waitFor();
    assert.equal(await text("#problems-to"), "to: a password or secret is masked (***); type it again");
    await page.screenshot({ path: screenshotPath("09-masked"), fullPage: true });
    assertNoProblems();
  });

  test("documents the destination refuses are listed, and the job completes with their count", async () => {
    // A unique index of the destination's own refuses all but one of the sample documents whose
    // qty (their _id) is below 31: none has a "tag", so they collide. 30 of 300.
    const [COUNT, REFUSED] = [300, 30];
    const target = ns("refused.people");
    await sample(source, ns("shop.people"), COUNT, 200);
    const dot = target.indexOf(".");
    await runCommand(destination, target.slice(0, dot), {
      createIndexes: target.slice(dot + 1),
      indexes: [{ key: { tag: 1 }, name: "one_untagged", unique: true, partialFilterExpression: { qty: { $lt: 31 } } }],
    });
    await fillForm({ from: source, to: destination, namespaces: `${ns("shop.people")}:${target}`, workers: 2, batch_size: 20 });
    await page.locator("#submit-job").click();
    await page.waitForURL(/#\/jobs\/4$/);
    await waitForState("completed", 20000);
    const view = (await api("GET", "/api/jobs/4")).body;
    assert.equal(view.progress.failed, REFUSED, JSON.stringify(view.progress));
    assert.equal(view.progress.docs, COUNT - REFUSED);
    assert.equal(view.dead_letters.count, REFUSED);

    // The job's message, its figures: every document accounted for.
    const message = await text('#job-error [data-field="error"]');
    assert.match(message, /^completed with 30 failed documents/);
    assert.equal(message, view.error);
    assert.equal(await text('#summary [data-field="failed"]'), "30");
    assert.equal(await text('#summary [data-field="docs"]'), "270 / 300");
    assert.equal(await text("#summary .pct"), "100%", "refused documents count towards the position");
    assert.ok(await page.locator("#controls").isHidden(), "a completed job shows no controls");
    const average = view.progress.docs / (view.finished_at - view.created_at);
    assert.equal(await page.locator('#summary .tile:has([data-field="docs_per_sec"]) .tile-label').textContent(), "avg docs/s");
    assert.ok(Math.abs((await docsPerSec()) - average) <= Math.max(1, average * 0.01), `${await docsPerSec()} shown, ${average} docs/s on average`);

    // The panel: the count, and each listed document's namespace, _id and reason as the API has them.
    const panel = page.locator("#dead-letters");
    await panel.waitFor();
    assert.equal(await panel.locator('[data-field="dead_count"]').innerText(), "30");
    const recent = view.dead_letters.recent;
    assert.ok(recent.length > 0 && recent.length < REFUSED, `${recent.length} listed`);
    assert.match(await panel.innerText(), new RegExp(`The ${recent.length} most recent of 30`));
    const rows = await panel.locator("tbody tr").evaluateAll((trs) => trs.map((tr) => [...tr.cells].map((td) => td.innerText)));
    assert.equal(rows.length, recent.length);
    for (const [i, [namespace, id, reason]] of rows.entries()) {
      assert.equal(namespace, target);
      assert.equal(id, JSON.stringify(recent[i].id));
      assert.ok(Number(JSON.parse(id).$numberLong) < 31, "only documents below 31 were refused");
      assert.equal(reason, recent[i].reason);
      assert.ok(reason.trim() !== "", "each refusal has its reason");
    }
    await page.screenshot({ path: screenshotPath("10-failed-documents"), fullPage: true });

    // The list says so too.
    await page.locator(".back").click();
    const row = page.locator('#job-list [data-job="4"]');
    await row.waitFor();
    assert.equal(await row.locator("[data-state]").innerText(), "completed");
    assert.equal(await row.locator(".job-dead").innerText(), "30 failed docs");
    assert.match(await row.locator(".job-error").innerText(), /^completed with 30 failed documents/);
    assert.match(await row.locator(".job-rate").innerText(), /^avg [\d,.]+ docs\/s$/);
    assert.match(await row.locator(".job-eta").innerText(), /^took /);
    assert.equal(await row.locator(".job-ns").innerText(), `${ns("shop.people")} → ${target}`);

    // Opened after it ended (a new page): its chart shows the series the service kept of the
    // whole run; the worker chart, drawn from the live stream alone, says in words why it is empty.
    await row.click();
    await page.waitForURL(/#\/jobs\/4$/);
    await page.reload();
    await waitForState("completed");
    const saved = await page.evaluate(async () => {
      const response = await fetch("/api/jobs/4/series", { headers: { authorization: `Bearer ${sessionStorage.getItem("mongoferry.token")}` } });
      return (await response.json()).series.docs_per_sec.length;
    });
    assert.ok(saved >= 2, `the run was sampled from its start to its end: ${saved} points`);
    await waitFor("the saved series on the chart", async () => (await points("#chart-job")) === saved, 5000);
    assert.ok(await page.locator("#chart-job").isVisible());
    assert.ok(await page.locator("#chart-job-note").isHidden());
    assert.equal(await text("#chart-workers-note"), "No samples: the job ended before this page was opened.");
    assert.ok(await page.locator("#controls").isHidden());
    assertNoProblems();
  });

  test("a job's report opens from its page as one self-contained page that fetches nothing", async () => {
    // From the job's page: the link fetches the report with the token and saves it as a file.
    await page.goto(`${service.base}/#/jobs/4`);
    await waitForState("completed");
    const [download] = await Promise.all([page.waitForEvent("download"), page.locator("#job-report").click()]);
    assert.equal(download.suggestedFilename(), "job-4-report.html");
    const saved = readFileSync(await download.path(), "utf8");
    assert.match(saved, /^<!DOCTYPE html>/);
    assert.match(saved, /id="report-dead-letters"/);
    assert.doesNotMatch(saved, new RegExp(`${PASSWORD}|${TOKEN}`));

    // Opened by itself in a fresh browser context: the one request is the page; nothing else,
    // from the service or anywhere, is asked for while it is read.
    const context = await browser.newContext({
      viewport: { width: 1200, height: 900 },
      extraHTTPHeaders: { authorization: `Bearer ${TOKEN}` },
    });
    try {
      const requests = [];
      await context.route("**/*", (route) => {
        requests.push(route.request().url());
        return route.continue();
      });
      const report = await context.newPage();
      const errors = [];
      report.on("pageerror", (error) => errors.push(error.message));
      report.on("console", (message) => message.type() === "error" && errors.push(message.text()));
      const response = await report.goto(`${service.base}/api/jobs/4/report`);
      assert.equal(response.status(), 200);
      assert.match(response.headers()["content-security-policy"], /default-src 'none'/);
      await report.waitForLoadState("networkidle");
      assert.deepEqual(requests, [`${service.base}/api/jobs/4/report`]);
      assert.deepEqual(errors, []);
      // What a person reads: the figures, the timeline, a chart, the dead letters, the spec.
      assert.match(await report.locator("#report-figures").innerText(), /270/);
      assert.match(await report.locator("#report-timeline").innerText(), /running[\s\S]*completed/);
      assert.ok((await report.locator("#report-charts svg").count()) >= 1, "a chart of the saved series");
      assert.ok(await report.locator("#report-charts svg").first().isVisible());
      assert.match(await report.locator("#report-dead-letters").innerText(), /30/);
      assert.doesNotMatch(await report.locator("body").innerText(), new RegExp(PASSWORD));
      await report.screenshot({ path: screenshotPath("10b-job-report"), fullPage: true });
    } finally {
      await context.close();
    }
    assertNoProblems();
  });

  test("a sync job goes live, shows its lag and the changes it applies, and a commit completes it", async () => {
    const [COUNT, INSERTED] = [400, 6];
    const from = ns("live.items");
    const dot = from.indexOf(".");
    const [db, collection] = [from.slice(0, dot), from.slice(dot + 1)];
    await sample(source, from, COUNT, 200);
    await fillForm({ from: source, to: destination, namespaces: `${from}:${ns("synced.items")}`, workers: 2, batch_size: 50, mode: "sync" });
    await page.locator("#submit-job").click();
    await page.waitForURL(/#\/jobs\/5$/);
    await page.locator("#sync").waitFor();
    const job = (await api("GET", "/api/jobs/5")).body;
    assert.equal(job.spec.mode, "sync", "the form sends the mode");
    assert.equal(job.links.commit, "/api/jobs/5/commit");
    assert.match(await text("#job-spec"), /mode\s+sync/);
    assert.ok(await page.locator("#commit").isVisible(), "a sync job has a Commit button");
    assert.ok(!(await page.locator("#lag-panel").isHidden()), "a sync job has a lag chart");

    const phase = () => page.locator('#sync [data-field="sync_phase"]').getAttribute("data-phase");
    const syncNumber = (field) => number(`#sync [data-field="${field}"]`);
    await waitFor("the live phase", async () => (await page.locator("#sync [data-phase]").count()) === 1 && (await phase()) === "live", 30000);
    assert.equal(await text("#job-live"), "live");
    await waitFor("a lag value", async () => /^\d+(\.\d)? s$/.test(await text('#sync [data-field="lag_secs"]')), 5000);
    await waitFor("the lag chart to gain points", async () => (await points("#chart-lag")) >= 2, 10000);
    assert.equal(await page.locator("#chart-lag canvas").count(), 1);
    assert.ok(await page.locator("#commit").isEnabled());

    // Changes at the source while live: applied, and counted by kind.
    const before = await syncNumber("events");
    const inserted = await syncNumber("applied_insert");
    const documents = Array.from({ length: INSERTED }, (_, i) => ({ _id: `live-${i}`, n: i }));
    await runCommand(source, db, { insert: collection, documents, ordered: true });
    await waitFor("the changes applied", async () => (await syncNumber("applied_insert")) >= inserted + INSERTED, 15000);
    assert.ok((await syncNumber("events")) >= before + INSERTED);
    await waitFor("the page to be live again", async () => (await phase()) === "live", 10000);
    await page.screenshot({ path: screenshotPath("11a-sync-live"), fullPage: true });

    // The commit asks first.
    await page.locator("#commit").click();
    const dialog = page.locator("#confirm-commit");
    await dialog.waitFor({ state: "visible" });
    assert.equal(await text("#commit-title"), "Commit job 5?");
    await page.locator("#commit-keep").click();
    await dialog.waitFor({ state: "hidden" });
    await sleep(500);
    assert.equal(await state(), "running", "keeping the sync running does not commit it");
    assert.equal(await phase(), "live");

    await page.locator("#commit").click();
    const commitRequest = page.waitForRequest((r) => r.method() === "POST" && r.url() === `${service.base}/api/jobs/5/commit`);
    await page.locator("#commit-yes").click();
    const sent = await commitRequest;
    assert.equal(sent.postData(), "{}");
    assert.equal(sent.headers()["content-type"], "application/json");
    await waitForState("completed", 20000);
    await waitFor("the committed phase", async () => (await phase()) === "committed", 5000);
    await waitFor("the stream to end", async () => (await text("#job-live")) === "ended", 5000);
    assert.ok(await page.locator("#commit").isDisabled(), "an ended sync cannot be committed again");
    const view = (await api("GET", "/api/jobs/5")).body;
    assert.equal(view.state, "completed");
    assert.equal(view.error, null);
    assert.equal(view.progress.sync.phase, "committed");
    assert.equal(view.progress.sync.applied.insert, await syncNumber("applied_insert"));
    assert.equal(await text('#sync [data-field="lag_secs"]'), "–", "an ended sync has no lag");
    await page.screenshot({ path: screenshotPath("11b-sync-committed"), fullPage: true });

    // The list says it is a sync, and how it ended.
    await page.locator(".back").click();
    const row = page.locator('#job-list [data-job="5"]');
    await row.waitFor();
    assert.equal(await row.locator("[data-state]").innerText(), "completed");
    assert.equal(await row.locator(".job-sync").innerText(), "sync committed");
    assertNoProblems();
  });

  test("a move job shows what it moved, and only the selected documents leave the source", async () => {
    const [COUNT, SELECTED] = [400, 200];
    const from = ns("archive.orders");
    const to = ns("cold.orders");
    const dot = from.indexOf(".");
    const documents = Array.from({ length: COUNT }, (_, i) => ({ _id: i, old: i % 2 === 0, pad: "x".repeat(100) }));
    await runCommand(source, from.slice(0, dot), { insert: from.slice(dot + 1), documents, ordered: true });
    await fillForm({ from: source, to: destination, namespaces: `${from}:${to}`, filter: '{"old": true}', workers: 2, batch_size: 20, rate: 100, mode: "move" });
    assert.ok(await page.locator("#keep_source").isVisible(), "a move can keep its source");

    // The plan says the source loses what moves.
    await page.locator("#plan-job").click();
    await page.locator('#plan [data-field="deletes_from_source"]').waitFor({ timeout: 20000 });
    assert.match(await text('#plan [data-field="deletes_from_source"]'), /deleted from the source/);
    assert.equal(await text('#plan [data-field="documents"]'), "200");

    await page.locator("#submit-job").click();
    await page.waitForURL(/#\/jobs\/6$/);
    await page.locator("#move").waitFor();
    assert.ok(await page.locator("#commit").isHidden(), "a move is not committed");
    assert.match(await text("#job-spec"), /mode\s+move/);
    // Rate 100 docs/s: the deletes follow the copy, within the same limit, for about two seconds.
    await waitFor("a delete rate while it runs", async () => (await state()) === "running" && (await number('#move [data-field="deletes_per_sec"]')) > 0, 15000);
    assert.ok((await number('#move [data-field="deletes_per_sec"]')) <= 150, "the deletes keep to the rate limit");
    await waitForState("completed", 30000);
    await waitFor("the final figures", async () => (await number('#move [data-field="move_deleted"]')) === SELECTED, 5000);
    assert.equal(await number('#move [data-field="move_verified"]'), SELECTED);
    assert.equal(await number('#move [data-field="move_changed"]'), 0);
    assert.equal(await number('#move [data-field="move_left"]'), 0);
    await page.screenshot({ path: screenshotPath("11c-move"), fullPage: true });

    const view = (await api("GET", "/api/jobs/6")).body;
    assert.equal(view.spec.mode, "move");
    assert.equal(view.error, null);
    assert.equal(view.progress.moves.deleted, SELECTED);
    // Both sides, through a client of their own.
    assert.equal(await countDocuments(source, from, { old: true }), 0, "the selected documents left the source");
    assert.equal(await countDocuments(source, from, { old: false }), COUNT - SELECTED, "the others stay");
    assert.equal(await countDocuments(destination, to, { old: true }), SELECTED);
    assert.equal(await countDocuments(destination, to, {}), SELECTED);

    await page.locator(".back").click();
    const row = page.locator('#job-list [data-job="6"]');
    await row.waitFor();
    assert.equal(await row.locator(".job-move").innerText(), "move: 200 moved");
    assertNoProblems();
  });

  test("adaptive mode shows its current decision", async () => {
    await fillForm({ from: source, to: destination, namespaces: `${ns("shop.orders")}:${ns("adaptive.orders")}`, workers: 2, batch_size: 20, rate: 200, adaptive: 2000 });
    await page.locator("#submit-job").click();
    await page.waitForURL(/#\/jobs\/7$/);
    await waitFor("an adaptive decision", async () => {
      const action = page.locator('#adaptive [data-field="adaptive_action"]');
      return (await action.count()) === 1 && ["increase", "decrease", "hold"].includes(await action.innerText());
    }, 15000);
    assert.match(await text('#adaptive [data-field="adaptive_reason"]'), /\w/);
    assert.match(await text("#adaptive h3"), /target 2,000 ms/);
    await page.screenshot({ path: screenshotPath("11-adaptive"), fullPage: true });
    assertNoProblems();
  });

  test("the pages fit a narrow window", async () => {
    await page.setViewportSize({ width: 390, height: 844 });
    const fits = () => page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth + 1);
    // No two parts of a job's row drawn over each other.
    const overlaps = () =>
      page.evaluate(() => {
        const found = [];
        for (const row of document.querySelectorAll("#job-list .job-row")) {
          const parts = [...row.children].filter((c) => c.getClientRects().length > 0 && c.textContent.trim() !== "");
          // Where the text is drawn, also past its box, unless the box clips it (ellipsis).
          const boxes = parts.map((c) => {
            if (getComputedStyle(c).overflow === "hidden") return c.getBoundingClientRect();
            const range = document.createRange();
            range.selectNodeContents(c);
            return range.getBoundingClientRect();
          });
          for (let i = 0; i < boxes.length; i++) {
            for (let j = i + 1; j < boxes.length; j++) {
              const [a, b] = [boxes[i], boxes[j]];
              if (a.left < b.right - 1 && b.left < a.right - 1 && a.top < b.bottom - 1 && b.top < a.bottom - 1) {
                found.push(`${row.dataset.job}: ${parts[i].className} / ${parts[j].className}`);
              }
            }
          }
        }
        return found;
      });
    await page.goto(`${service.base}/#/jobs/5`);
    await waitForState("completed");
    await page.locator("#sync [data-phase]").waitFor();
    assert.ok(await fits(), "the sync job's page scrolls sideways at 390 px");
    await page.goto(`${service.base}/#/jobs/6`);
    await waitForState("completed");
    await page.locator("#move [data-field=move_pass]").waitFor();
    assert.ok(await fits(), "the move job's page scrolls sideways at 390 px");
    await page.goto(`${service.base}/#/jobs/7`);
    await waitForState("running");
    await waitFor("the chart to gain points", async () => (await points("#chart-job")) >= 2, 10000);
    assert.ok(await fits(), "the job page scrolls sideways at 390 px");
    await page.screenshot({ path: screenshotPath("12-narrow-job"), fullPage: true });
    await page.goto(`${service.base}/#/`);
    await page.locator("#job-list .job-row").first().waitFor();
    assert.ok(await fits(), "the home page scrolls sideways at 390 px");
    assert.deepEqual(await overlaps(), [], "parts of job rows overlap at 390 px");
    await page.setViewportSize({ width: 1100, height: 900 });
    assert.deepEqual(await overlaps(), [], "parts of job rows overlap at 1100 px");
    await page.setViewportSize({ width: 1366, height: 900 });
    assert.deepEqual(await overlaps(), [], "parts of job rows overlap at 1366 px");
    await page.screenshot({ path: screenshotPath("14-laptop-home"), fullPage: true });
    await page.setViewportSize({ width: 390, height: 844 });
    await page.screenshot({ path: screenshotPath("13-narrow-home"), fullPage: true });
    const cancelled = await api("POST", "/api/jobs/7/cancel");
    assert.equal(cancelled.status, 200);
    assertNoProblems();
  });

  test("a job read in partitions shows each partition's progress", async () => {
    await page.setViewportSize({ width: 1366, height: 900 });
    const namespaces = [`${ns("shop.orders")}:${ns("parts.orders")}`];
    const started = await api("POST", "/api/jobs", { from: source, to: destination, namespaces, workers: 2, batch_size: 50, readers: 2, partition_docs: 1000, rate: 1500 });
    assert.equal(started.status, 202, JSON.stringify(started.body));
    await page.goto(`${service.base}/#/jobs/${started.body.id}`);
    const cells = page.locator('#job-namespaces [data-field="partitions"] .part');
    await waitFor("the partitions", async () => (await cells.count()) >= 4, 15000);
    await waitFor("two partitions read at once", async () => (await page.locator("#job-namespaces .part-reading").count()) >= 2, 15000);
    await page.screenshot({ path: screenshotPath("15-partitions"), fullPage: true });
    await waitForState("completed", 30000);
    const all = await cells.count();
    await waitFor("every partition complete", async () => (await page.locator("#job-namespaces .part-complete").count()) === all, 10000);
    assert.match(await text("#job-namespaces"), new RegExp(`${all} of ${all} partitions complete`));
    assert.equal(await countDocuments(destination, ns("parts.orders")), DOCS);
    assertNoProblems();
  });

  test("a sync job shows its verification, and the Commit button says why it is not ready", async () => {
    await page.setViewportSize({ width: 1366, height: 900 });
    const COUNT = 200;
    const [from, to] = [ns("verify.items"), ns("verified.items")];
    const dot = to.indexOf(".");
    const [db, collection] = [to.slice(0, dot), to.slice(dot + 1)];
    await sample(source, from, COUNT, 100);
    // Only reported: the rogue writes below stay, and hold the commit back.
    const started = await api("POST", "/api/jobs", { from: source, to: destination, namespaces: [`${from}:${to}`], mode: "sync", verify: "report", workers: 2, batch_size: 100, commit_watch_secs: 4 });
    assert.equal(started.status, 202, JSON.stringify(started.body));
    const id = started.body.id;
    await page.goto(`${service.base}/#/jobs/${id}`);
    await page.locator("#verification").waitFor();
    const readiness = (value) => page.locator(`#commit-readiness [data-ready="${value}"]`);
    const verifying = (field) => `#verification [data-field="${field}"]`;
    const vphase = () => page.locator(verifying("verification_phase")).getAttribute("data-phase");

    // The first pass over both sides, then ready.
    await waitFor("ready to commit", async () => (await readiness("true").count()) === 1, 30000);
    assert.equal(await text("#commit-readiness"), "ready to commit");
    assert.equal(await page.locator("#commit").getAttribute("data-ready"), "true");
    assert.equal(await vphase(), "continuous");
    assert.equal(await number(verifying("verified_docs")), COUNT);
    assert.equal(await number(verifying("mismatches")), 0);
    assert.match(await text(verifying("verification_through")), /^Proven equal through \S/);
    assert.match(await text("#verification"), /only reported \(verify: report\)/);

    // Rogue writes at the destination: an extra document with a hostile _id, and a delete.
    const hostile = { "<img src=x onerror=alert(1)>": 1 };
    await runCommand(destination, db, { insert: collection, documents: [{ _id: hostile, rogue: true }] });
    await runCommand(destination, db, { delete: collection, deletes: [{ q: { rogue: { $exists: false } }, limit: 1 }] });
    await waitFor("the two mismatches reported", async () => (await number(verifying("unrepaired"))) === 2, 20000);
    await waitFor("not ready to commit", async () => (await readiness("false").count()) === 1, 5000);
    const reasons = await page.locator('#commit-readiness [data-field="commit_reasons"] li').allInnerTexts();
    assert.ok(reasons.includes("2 mismatches are unrepaired"), JSON.stringify(reasons));
    assert.equal(await page.locator("#commit").getAttribute("data-ready"), "false");
    assert.ok(await page.locator("#commit").isEnabled(), "not ready, the button still commits");
    assert.equal(await number(verifying("mismatches")), 2);
    assert.equal(await number(verifying("repaired")), 0);
    // The recent mismatches: the hostile _id shown as text, never as markup.
    const rows = page.locator(`${verifying("mismatches_recent")} tbody tr`);
    assert.equal(await rows.count(), 2);
    const table = await page.locator(verifying("mismatches_recent")).innerText();
    // Canonical Extended JSON, as the service sends it.
    assert.ok(table.includes('{"<img src=x onerror=alert(1)>":{"$numberInt":"1"}}'), table);
    assert.ok(table.includes(`${from} -> ${to}`), table);
    assert.match(table, /extra/);
    assert.match(table, /missing/);
    assert.equal(await page.locator("#job-body img").count(), 0, "an _id became markup");
    await page.screenshot({ path: screenshotPath("18a-sync-not-ready"), fullPage: true });

    // The confirmation lists the reasons; committing anyway is the operator's call.
    await page.locator("#commit").click();
    const dialog = page.locator("#confirm-commit");
    await dialog.waitFor({ state: "visible" });
    const listed = await page.locator('#commit-reasons [data-field="commit_reasons"] li').allInnerTexts();
    assert.deepEqual(listed, reasons);
    assert.equal(await text("#commit-yes"), "Commit anyway");
    await page.locator("#commit-yes").click();
    await dialog.waitFor({ state: "hidden" });

    // Committed: the sides still differ, so the commit says it proved nothing. A write at the
    // source within the watch after the commit point is a warning.
    await waitFor("the committed verification", async () => (await api("GET", `/api/jobs/${id}`)).body.verification?.phase === "committed", 20000);
    await runCommand(source, from.slice(0, from.indexOf(".")), { insert: from.slice(from.indexOf(".") + 1), documents: [{ _id: "late", n: 1 }] });
    await waitForState("completed", 20000);
    await waitFor("the committed phase shown", async () => (await vphase()) === "committed", 5000);
    assert.match(await text('#verification [data-field="unproven"]'), /The commit did not prove equality\s+2 documents differed at the commit/);
    const view = (await api("GET", `/api/jobs/${id}`)).body;
    assert.equal(view.writes_after_commit?.count, 1, JSON.stringify(view.writes_after_commit));
    await waitFor("the writes after the commit", async () => (await page.locator('#job-writes-after [data-field="writes_after_commit"]').count()) === 1, 5000);
    const warning = await text('#job-writes-after [data-field="writes_after_commit"]');
    assert.match(warning, /^1 write reached the source after the commit point/);
    assert.ok(warning.includes(from) && warning.includes('"late"'), warning);
    assert.ok(await page.locator("#controls").isHidden(), "an ended sync shows no commit");
    await page.screenshot({ path: screenshotPath("18b-sync-unproven"), fullPage: true });
    assertNoProblems();
  });

  test("a reconcile job started from the form writes only what differs, and deletes extras when asked", async () => {
    await page.setViewportSize({ width: 1366, height: 900 });
    const [from, to] = [ns("rec.items"), ns("reced.items")];
    const dot = from.indexOf(".");
    const item = (i, v = "same") => ({ _id: i, v, pad: "x".repeat(50) });
    // The source holds 0..29; the destination 0..19 equal, 20..24 different, 100..102 only there.
    await runCommand(source, from.slice(0, dot), { insert: from.slice(dot + 1), documents: Array.from({ length: 30 }, (_, i) => item(i)), ordered: true });
    const [db, collection] = [to.slice(0, to.indexOf(".")), to.slice(to.indexOf(".") + 1)];
    const theirs = [...Array.from({ length: 25 }, (_, i) => item(i, i < 20 ? "same" : "changed")), ...[100, 101, 102].map((i) => item(i))];
    await runCommand(destination, db, { insert: collection, documents: theirs, ordered: true });
    const figure = (name) => number(`#reconcile [data-field="reconcile_${name}"]`);

    await fillForm({ from: source, to: destination, namespaces: `${from}:${to}`, workers: 1, batch_size: 10, mode: "reconcile" });
    assert.ok(await page.locator("#delete_extra").isVisible(), "a reconcile may delete extras");
    assert.ok(await page.locator("#keep_source").isHidden(), "keeping the source is a move's");
    assert.ok(await page.locator("#on_history_lost").isHidden(), "lost history is a sync's");
    await page.locator("#delete_extra").setChecked(false);
    await page.locator("#submit-job").click();
    await page.waitForURL(/#\/jobs\/\d+$/);
    const kept = Number(/(\d+)$/.exec(page.url())[1]);
    await page.locator("#reconcile").waitFor();
    await waitForState("completed", 30000);
    await waitFor("the final figures", async () => (await figure("written")) === 10, 5000);
    assert.equal(await figure("compared"), 33);
    assert.equal(await figure("equal"), 20);
    assert.equal(await figure("missing"), 5);
    assert.equal(await figure("different"), 5);
    assert.equal(await figure("extra"), 3);
    assert.equal(await figure("kept"), 3);
    assert.equal(await text("#summary .pct"), "100%", "the equal documents count in the job's progress");
    assert.equal(await page.locator('#reconcile [data-field="reconcile_first_extra"] tbody tr').count(), 3);
    assert.equal(await text("#job-error strong"), "Note", "kept extras are a note, not an error");
    assert.match(await text('#job-error [data-field="error"]'), /only the destination holds/);
    assert.ok(await page.locator("#commit").isHidden(), "a reconcile is not committed");
    assert.match(await text("#job-spec"), /mode\s+reconcile \(keep extra documents\)/);
    await page.screenshot({ path: screenshotPath("16b-reconcile"), fullPage: true });
    const view = (await api("GET", `/api/jobs/${kept}`)).body;
    assert.equal(view.spec.mode, "reconcile");
    assert.ok(!view.spec.delete_extra, "delete_extra is sent only when checked");
    assert.equal(await countDocuments(destination, to, {}), 33, "the extras stay");
    assert.equal(await countDocuments(destination, to, { v: "same" }), 33, "the different ones were written");

    // Again, deleting the extras: everything else is now equal, and nothing else is written.
    await fillForm({ from: source, to: destination, namespaces: `${from}:${to}`, workers: 1, batch_size: 10, mode: "reconcile" });
    await page.locator("#delete_extra").setChecked(true);
    await page.locator("#submit-job").click();
    await page.waitForURL(new RegExp(`#/jobs/${kept + 1}$`));
    await waitForState("completed", 30000);
    await waitFor("the final figures", async () => (await figure("deleted")) === 3, 5000);
    assert.equal(await figure("equal"), 30);
    assert.equal(await figure("written"), 0);
    assert.equal(await page.locator("#reconcile [data-field=reconcile_kept]").count(), 0);
    assert.equal(await page.locator("#job-error").innerText(), "", "no extras kept, no note");
    assert.equal((await api("GET", `/api/jobs/${kept + 1}`)).body.spec.delete_extra, true);
    assert.equal(await countDocuments(destination, to, {}), 30, "the extras are gone");

    await page.locator(".back").click();
    await page.locator(`#job-list [data-job="${kept}"]`).waitFor();
    assert.equal(await page.locator(`#job-list [data-job="${kept}"] .job-reconcile`).innerText(), "reconcile: 20 equal, 10 written, 3 extra kept");
    assert.equal(await page.locator(`#job-list [data-job="${kept + 1}"] .job-reconcile`).innerText(), "reconcile: 30 equal, 0 written, 3 extra deleted");
    await page.setViewportSize({ width: 390, height: 844 });
    assert.ok(await page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth + 1), "the job list scrolls sideways at 390 px");
    await page.screenshot({ path: screenshotPath("16c-reconcile-narrow-home"), fullPage: true });
    await page.setViewportSize({ width: 1366, height: 900 });
    assertNoProblems();
  });

  test("a job held by its flag file shows its load guard Held and why, then Writing once the file is gone", async () => {
    await page.setViewportSize({ width: 1366, height: 900 });
    const flagDir = tempDir();
    const flag = path.join(flagDir, "hold");
    writeFileSync(flag, "");
    try {
      const started = await api("POST", "/api/jobs", {
        from: source,
        to: destination,
        namespaces: [`${ns("shop.orders")}:${ns("guard.orders")}`],
        workers: 2,
        batch_size: 100,
        // Slow enough that the page sees the job write between the release and its end.
        rate: 2000,
        throttle_flag_file: flag,
        guard_interval_ms: 200,
      });
      assert.equal(started.status, 202, JSON.stringify(started.body));
      const id = started.body.id;
      const guardState = page.locator('#load-guard [data-field="guard_state"]');

      // In the list first: a held job says so in its row.
      await page.goto(`${service.base}/#/`);
      await page.locator(`#job-list [data-job="${id}"] .job-held`).waitFor({ timeout: 10000 });
      assert.match(await page.locator(`#job-list [data-job="${id}"] .job-held`).getAttribute("title"), /flag file/);

      await page.goto(`${service.base}/#/jobs/${id}`);
      await waitFor("the guard to hold the job", async () => (await guardState.count()) === 1 && (await guardState.getAttribute("data-held")) === "true", 10000);
      assert.equal(await guardState.innerText(), "Held");
      assert.match(await text('#load-guard [data-field="guard_reason"]'), /flag file/);
      assert.ok((await text('#load-guard [data-field="guard_settings"]')).includes(flag), "the settings name the flag file");
      assert.equal(await state(), "running");
      // The held range is shaded on the chart, and its hint says what the shade means.
      await waitFor("the chart to gain points", async () => (await points("#chart-job")) >= 2, 10000);
      await waitFor("a held range on the chart", async () => (await page.locator("#chart-job").getAttribute("data-held")) === "1", 5000);
      assert.ok(await page.locator("#chart-job-held").isVisible());
      assert.ok((await docs()) < DOCS, "the held job copied everything");
      await page.screenshot({ path: screenshotPath("16d-load-guard-held"), fullPage: true });

      rmSync(flag);
      await waitFor("the guard to release the job", async () => (await guardState.innerText()) === "Writing", 10000);
      assert.equal(await guardState.getAttribute("data-held"), "false");
      await waitForState("completed", 30000);
      assert.equal(await guardState.innerText(), "Not held");
      // The range ended with the release: still one, closed.
      assert.equal(await page.locator("#chart-job").getAttribute("data-held"), "1");
      assert.equal(await countDocuments(destination, ns("guard.orders")), DOCS);
      await page.screenshot({ path: screenshotPath("16e-load-guard-released"), fullPage: true });
      assertNoProblems();
    } finally {
      removeTempDir(flagDir);
    }
  });

  test("a transform file chosen in the form shapes the copied documents; a file that is not JSON is refused before asking", async () => {
    const COUNT = 200;
    const from = ns("shop.masked");
    const to = ns("transformed.masked");
    await sample(source, from, COUNT, 200);
    const fileDir = tempDir();
    const good = path.join(fileDir, "mask.json");
    writeFileSync(good, JSON.stringify({ [from]: [{ drop: "pad" }, { set: "env", value: "staging" }] }));
    const bad = path.join(fileDir, "notes.txt");
    writeFileSync(bad, "drop pad\n");
    let posts = 0;
    const countPosts = (request) => {
      if (request.method() === "POST") posts++;
    };
    page.on("request", countPosts);
    try {
      // A fresh page: a hash change keeps what earlier tests typed in fields fillForm leaves alone
      // (adaptive). The token stays in this tab's sessionStorage.
      await page.goto("about:blank");
      await fillForm({ from: source, to: destination, namespaces: `${from}:${to}`, workers: 2, batch_size: 50 });
      const input = page.locator("#transform");

      // Not JSON: said as soon as it is chosen, naming the file, and again on submit; nothing sent.
      await input.setInputFiles(bad);
      await page.locator("#problems-transform li").waitFor();
      assert.match(await text("#problems-transform"), /^transform file notes\.txt is not valid JSON: /);
      assert.ok(await page.locator("#transform-summary").isHidden());
      await page.locator("#submit-job").click();
      await page.locator("#submit-job:enabled").waitFor();
      assert.match(await text("#problems-transform"), /^transform file notes\.txt is not valid JSON: /);
      assert.equal(await input.getAttribute("aria-invalid"), "true");
      assert.equal(posts, 0, "a transform file that is not JSON is caught before asking the service");
      assert.match(page.url(), /#\/$/);
      await page.screenshot({ path: screenshotPath("16f-transform-not-json"), fullPage: true });

      // A good file: its summary replaces the problem; the plan lists the namespace's steps.
      await input.setInputFiles(good);
      await waitFor("the transform's summary", async () => (await page.locator("#transform-summary").isVisible()) && (await text("#transform-summary")) === "mask.json: 1 pattern, 2 steps", 5000);
      assert.equal(await text("#problems-transform"), "");
      assert.equal(await input.getAttribute("aria-invalid"), null);
      await page.locator("#plan-job").click();
      await page.locator('#plan [data-field="transform"]').waitFor({ timeout: 20000 });
      assert.equal(await text('#plan [data-field="transform"]'), 'transform: drop pad, set env = "staging"');
      assert.equal(posts, 1, "the plan's request only");
      await page.screenshot({ path: screenshotPath("16g-transform-plan"), fullPage: true });

      await page.locator("#submit-job").click();
      const url = await waitFor("the job's page", () => /#\/jobs\/(\d+)$/.exec(page.url()), 10000, 50);
      const id = Number(url[1]);
      await waitForState("completed", 30000);
      const view = (await api("GET", `/api/jobs/${id}`)).body;
      assert.deepEqual(view.spec.transform, { [from]: [{ drop: "pad" }, { set: "env", value: "staging" }] });
      assert.equal(view.progress.docs, COUNT, JSON.stringify(view.progress));
      assert.equal(view.spec.adaptive ?? null, null, "a form of this test's fields only");
      // The job's spec shows the transform, pattern by pattern.
      assert.equal(await text(`#job-spec [data-field="transform"] li[data-pattern="${from}"]`), `${from}: drop pad, set env = "staging"`);
      assert.equal(await countDocuments(destination, to), COUNT);
      assert.equal(await countDocuments(destination, to, { pad: { $exists: true } }), 0, "pad was dropped");
      assert.equal(await countDocuments(destination, to, { env: "staging" }), COUNT, "env was set");
      assert.equal(await countDocuments(source, from, { pad: { $exists: true } }), COUNT, "the source is untouched");
      await page.screenshot({ path: screenshotPath("16h-transform-job"), fullPage: true });

      // A move through a transform deletes the originals: refused until the operator says so
      // with the checkbox that shows for a move once a file is chosen.
      const moving = ns("shop.moved");
      const moved = ns("transformed.moved");
      await sample(source, moving, COUNT, 200);
      const moveFile = path.join(fileDir, "move.json");
      writeFileSync(moveFile, JSON.stringify({ [moving]: [{ drop: "pad" }] }));
      await page.goto("about:blank");
      await fillForm({ from: source, to: destination, namespaces: `${moving}:${moved}`, workers: 2, batch_size: 50, mode: "move" });
      const consent = page.locator("#allow-transform-move-field");
      assert.ok(await consent.isHidden(), "no transform chosen yet");
      await input.setInputFiles(moveFile);
      await consent.waitFor({ state: "visible", timeout: 5000 });
      expectedFailures = 1;
      await page.locator("#submit-job").click();
      await page.locator("#problems-transform li").waitFor({ timeout: 10000 });
      assert.match(await text("#problems-transform"), /a move deletes the source's originals/);
      await waitFor("the console error of the expected 400", () => expectedFailures === 0, 5000, 50);
      assert.equal(await countDocuments(source, moving), COUNT, "nothing was moved");
      await page.screenshot({ path: screenshotPath("16i-transform-move-refused"), fullPage: true });
      await page.locator("#allow_transform_move").check();
      await page.locator("#submit-job").click();
      const moveUrl = await waitFor("the move's page", () => /#\/jobs\/(\d+)$/.exec(page.url()), 10000, 50);
      await waitForState("completed", 30000);
      const moveView = (await api("GET", `/api/jobs/${Number(moveUrl[1])}`)).body;
      assert.equal(moveView.spec.allow_transform_move, true, JSON.stringify(moveView.spec));
      assert.equal(await countDocuments(destination, moved, { pad: { $exists: false } }), COUNT);
      assert.equal(await countDocuments(source, moving), 0, "the originals were deleted");
      // Away from a move, the checkbox is hidden (and readForm sends it for a move only).
      await page.goto(`${service.base}/#/`);
      await page.locator("#mode").selectOption("copy");
      assert.ok(await consent.isHidden());
      assertNoProblems();
    } finally {
      expectedFailures = 0;
      page.off("request", countPosts);
      removeTempDir(fileDir);
    }
  });

  test("a service without a token needs no sign-in, and its events still stream", async () => {
    const open = await startService();
    const context = await browser.newContext({ viewport: { width: 1366, height: 900 } });
    const tab = await context.newPage();
    const errors = [];
    tab.on("pageerror", (error) => errors.push(`page error: ${error.message}`));
    tab.on("console", (message) => {
      if (message.type() === "error") errors.push(`console error: ${message.text()}`);
    });
    tab.on("request", (request) => {
      if (request.headers().authorization !== undefined) errors.push(`a token was sent to ${request.url()}`);
    });
    try {
      await tab.goto(`${open.base}/#/`);
      await tab.locator("#job-list .empty").waitFor();
      assert.ok(!(await tab.locator("#sign-in").isVisible()), "no sign-in without a token");
      assert.ok(await tab.locator("#sign-out").isHidden());
      for (const [id, value] of [["from", source], ["to", destination], ["namespaces", `${ns("shop.orders")}:${ns("open.orders")}`], ["workers", "1"], ["batch_size", "20"], ["rate", "100"]]) {
        await tab.locator(`#${id}`).fill(value);
      }
      await tab.locator("#submit-job").click();
      await tab.waitForURL(/#\/jobs\/1$/);
      await waitFor("the stream to be live", async () => (await tab.locator("#job-live").innerText()) === "live", 10000);
      const copied = async () => Number((await tab.locator('#summary [data-field="docs"]').innerText()).split("/")[0].replaceAll(",", "").trim());
      await waitFor("the count to rise from the events", async () => (await copied()) >= 100, 10000);
      await tab.locator("#pause").click();
      await waitFor("paused", async () => (await tab.locator("#job-state [data-state]").getAttribute("data-state")) === "paused", 10000);
      await tab.locator("#cancel").click();
      await tab.locator("#confirm-yes").click();
      await waitFor("the stream to end", async () => (await tab.locator("#job-live").innerText()) === "ended", 15000);
      await tab.screenshot({ path: screenshotPath("17-no-token"), fullPage: true });
      assert.deepEqual(errors, []);
    } finally {
      await context.close();
      open.child.kill("SIGTERM");
    }
    assertNoProblems();
  });

  // Last: it stops a service of its own, with history, and starts it again on the same address.
  // Small batches, so the batches in flight end well within the 5 s shutdown timeout at this rate.
  test("a job running when the service stops is shown interrupted, and followed again when a restarted service continues it", async () => {
    const stateDir = tempDir();
    try {
      const state = path.join(stateDir, "jobs.json");
      // The page leaves the other service first: its job list polls that service every second.
      await page.goto("about:blank");
      service = await startService({ state, tokenFile });
      await page.setViewportSize({ width: 1366, height: 900 });
      const started = await api("POST", "/api/jobs", { from: source, to: destination, namespaces: [`${ns("shop.orders")}:${ns("stopped.orders")}`], workers: 2, batch_size: 20, rate: 100 });
      assert.equal(started.status, 202, JSON.stringify(started.body));
      const id = started.body.id;
      expectedFailures = 1;
      await page.goto(`${service.base}/#/jobs/${id}`);
      await signIn();
      await waitFor("the console error of the expected 401", () => expectedFailures === 0, 5000, 50);
      await waitForState("running");
      await waitFor("the stream to be live", async () => (await text("#job-live")) === "live", 5000);
      await waitFor("documents copied", async () => (await docs()) > 0, 10000);

      serviceDown = true;
      service.child.kill("SIGTERM");
      await waitForState("interrupted", 15000);
      assert.equal(await text("#job-error strong"), "Interrupted");
      assert.match(await text('#job-error [data-field="error"]'), /^interrupted: the service stopped; it continues from its checkpoint/);
      assert.equal(await text("#job-live"), "interrupted: waiting for the service to continue it");
      for (const control of ["#pause", "#resume", "#cancel", "#rate-box", "#workers-apply"]) {
        assert.ok(await page.locator(control).isDisabled(), `${control} is disabled on an interrupted job`);
      }
      assert.equal(await text('#summary [data-field="docs_per_sec"]'), "–");
      assert.ok(await page.locator("#controls").isHidden(), "an interrupted job shows no controls");
      await page.screenshot({ path: screenshotPath("15-job-interrupted"), fullPage: true });
      await waitFor("the service to exit after SIGTERM", () => service.child.exitCode !== null || service.child.signalCode !== null, 15000);
      assert.equal(service.child.exitCode, 0, service.log.join("\n"));

      // The same page, without a reload, follows the job the restarted service continues.
      service = await startService({ state, tokenFile, listen: service.base.replace("http://", "") });
      await waitForState("running", 15000);
      await waitFor("the stream to be live again", async () => (await text("#job-live")) === "live", 10000);
      assert.ok(await page.locator("#controls").isVisible(), "the continued job has its controls again");
      serviceDown = false;
      const continued = await docs();
      await waitFor("more documents copied", async () => (await docs()) > continued, 15000);
      await page.screenshot({ path: screenshotPath("16-job-continued"), fullPage: true });
      const cancelled = await api("POST", `/api/jobs/${id}/cancel`);
      assert.equal(cancelled.status, 200, JSON.stringify(cancelled.body));
      await waitForState("cancelled", 15000);
      assert.equal(await text("#job-live"), "ended");
      assert.ok(!service.log.join("\n").includes(TOKEN), "the token is in the service's log");
      // The service writes its state as it stops: its directory goes once it has exited, and
      // stays gone.
      await stopChild(service.child);
      assert.ok(existsSync(path.join(stateDir, "jobs.json")), "the service kept its state in the directory");
      removeTempDir(stateDir);
      await sleep(300);
      assert.ok(!existsSync(stateDir), "the state directory came back");
      assertNoProblems();
    } finally {
      serviceDown = false;
      await stopChild(service.child);
      removeTempDir(stateDir);
    }
  });
});
