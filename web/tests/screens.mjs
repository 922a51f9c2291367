// Every page of the dashboard, photographed as a person would look at it: the job list, a running
// copy, a completed one, a failed one, a live sync, a completed move and a plan, each at 1400 and
// 390 px wide, into target/screenshots/first-hour/. Not a test (node --test does not run it): run
// it by hand after a change to the page's look,
//   cd web/tests && MONGOFERRY_BIN=$CARGO_TARGET_DIR/debug/mongoferry node screens.mjs
// and look at the pictures. Everything it starts is stopped on every exit path; it gives up after
// two minutes.

import { mkdirSync } from "node:fs";
import path from "node:path";

import { ROOT, launchBrowser, runCommand, sample, startService, startTestServer, stopAll, waitFor } from "./harness.mjs";

const OUT = path.join(ROOT, "target", "screenshots", "first-hour");
const WIDTHS = [1400, 390];

const watchdog = setTimeout(() => {
  console.error("screens.mjs took more than 120 s: stopping");
  process.exit(1);
}, 120000);

async function main() {
  mkdirSync(OUT, { recursive: true });
  const [source, destination] = await Promise.all([startTestServer("source"), startTestServer("destination")]);
  await sample(source, "shop.orders", 3000, 200);
  await sample(source, "shop.customers", 300, 200);
  await runCommand(source, "archive", {
    insert: "orders",
    documents: Array.from({ length: 300 }, (_, i) => ({ _id: i, old: i % 2 === 0 })),
  });
  const service = await startService();
  const api = async (method, where, body) => {
    const response = await fetch(`${service.base}${where}`, {
      method,
      headers: { "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    return response.json();
  };
  const start = (spec) => api("POST", "/api/jobs", { from: source, to: destination, ...spec });
  const stateOf = async (id) => (await api("GET", `/api/jobs/${id}`)).state;

  const completed = await start({ namespaces: ["shop.customers:webcopy.customers"], workers: 2, batch_size: 50 });
  const failed = await start({ namespaces: ["shop.nothere:webcopy.nothere"] });
  const move = await start({ namespaces: ["archive.orders:cold.orders"], filter: { old: true }, mode: "move", workers: 2 });
  await waitFor("the short jobs to end", async () => {
    const states = await Promise.all([completed, failed, move].map((j) => stateOf(j.id)));
    return states.every((s) => ["completed", "failed"].includes(s));
  }, 30000);
  const sync = await start({ namespaces: ["shop.customers:synced.customers"], mode: "sync", workers: 2 });
  const running = await start({ namespaces: ["shop.orders:webmove.orders"], workers: 2, batch_size: 20, rate: 50 });
  await waitFor("the sync to be live", async () => (await api("GET", `/api/jobs/${sync.id}`)).progress?.sync?.phase === "live", 30000);

  const browser = await launchBrowser();
  try {
    for (const width of WIDTHS) {
      const context = await browser.newContext({ viewport: { width, height: 900 } });
      const page = await context.newPage();
      page.setDefaultTimeout(10000);
      page.on("pageerror", (error) => console.error(`page error: ${error.message}`));
      const shot = (name) => page.screenshot({ path: path.join(OUT, `${name}-${width}.png`), fullPage: true });

      await page.goto(`${service.base}/#/`);
      await page.locator("#job-list .job-row").first().waitFor();
      await shot("list");
      for (const [name, job] of [["running", running], ["completed", completed], ["failed", failed], ["sync", sync], ["move", move]]) {
        await page.goto(`${service.base}/#/jobs/${job.id}`);
        await page.locator("#job-state [data-state]").waitFor();
        // A running job's page a few seconds after it was opened, with its charts.
        if (name === "running" || name === "sync") await page.waitForTimeout(4000);
        await shot(name);
      }
      await page.goto(`${service.base}/#/`);
      await page.locator("#from").fill(source);
      await page.locator("#to").fill(destination);
      await page.locator("#namespaces").fill("shop.orders:webplan.orders\nshop.customers:archive.customers_2024");
      await page.locator("#plan-job").click();
      await page.locator("#plan tbody tr").first().waitFor({ timeout: 20000 });
      await shot("plan");
      await page.locator("#from").fill("");
      await page.locator("#to").fill("");
      await page.locator("#namespaces").fill("");
      await page.locator("#plan").evaluate((plan) => {
        plan.hidden = true;
      });
      await page.locator("#new-job").screenshot({ path: path.join(OUT, `form-empty-${width}.png`) });
      await context.close();
    }
  } finally {
    await browser.close();
  }
  console.log(`screenshots in ${OUT}`);
}

try {
  await main();
} finally {
  await stopAll();
  clearTimeout(watchdog);
}
