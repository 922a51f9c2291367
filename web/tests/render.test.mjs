// The dashboard's pure helpers (web/render.mjs), without a browser: escaping, problem-to-field
// mapping, form parsing, masking, rates, the position (documents copied before and failed count),
// the interrupted state, the panels for errors, failed documents, retries and adaptive mode, and a
// sync job's mode, phase, lag, changes applied and commit; its continuous verification (phase,
// figures, recent mismatches, what the commit proved), the writes after its commit point, and why
// its Commit button is not ready; a sync that lost its history (phase, notice); a reconcile's
// mode, panel (equal, written, extras deleted or kept), row and progress; the load guard's panel,
// its held ranges (shaded on the chart) and a held job's row; a transform file read, summed up
// and shown in the spec and the plan.

import { test } from "node:test";
import assert from "node:assert/strict";

import * as R from "../render.mjs";

test("escapes every value put into HTML", () => {
  assert.equal(R.esc(`<img src=x onerror="a('b')">&`), "&lt;img src=x onerror=&quot;a(&#39;b&#39;)&quot;&gt;&amp;");
  assert.equal(R.esc(null), "");
  const row = R.jobRowHtml({
    id: 7,
    state: "failed",
    spec: { namespaces: ["<b>x</b>.y"] },
    error: "<script>alert(1)</script>",
    progress: null,
  });
  assert.ok(!row.includes("<script>"), row);
  assert.ok(!row.includes("<b>"), row);
  assert.ok(row.includes("&lt;script&gt;alert(1)&lt;/script&gt;"));
});

test("maps the API's problems to the form's fields", () => {
  const problems = [
    "from: http://x is not a mongodb:// or mongodb+srv:// URI",
    "to: a MongoDB URI is required",
    'namespace "shop": expected db.collection',
    "namespaces: destination a.b is named twice",
    "filter is not valid JSON: expected value at line 1 column 1",
    "workers: must be 1 to 256 workers, got 0",
    "batch_size: must be 1 to 100000 documents, got 0",
    "rate: must be 0.001 to 1000000000 documents per second, got -1",
    "rate_bytes: must be 1 to 10000000000000 bytes per second, got 0",
    "adaptive.target_ms: must be 1 to 600000 milliseconds, got 0",
    "connect_timeout: must be 0.001 to 3600 seconds, got 0",
  ];
  const { fields, general } = R.problemsByField(problems);
  assert.deepEqual(Object.keys(fields).sort(), [
    "adaptive",
    "batch_size",
    "filter",
    "from",
    "namespaces",
    "rate",
    "rate_bytes",
    "to",
    "workers",
  ]);
  assert.equal(fields.namespaces.length, 2);
  assert.deepEqual(fields.rate, ["rate: must be 0.001 to 1000000000 documents per second, got -1"]);
  assert.deepEqual(general, ["connect_timeout: must be 0.001 to 3600 seconds, got 0"]);
  // A malformed request has no field.
  assert.equal(R.problemField("malformed request: invalid type: string \"x\", expected usize"), null);
});

test("masks passwords like the service does", () => {
  assert.equal(R.maskUri("mongodb://ferry:s3cret@h:27017/?directConnection=true"), "mongodb://ferry:***@h:27017/?directConnection=true");
  assert.equal(R.maskUri("mongodb+srv://u:p@a@cluster.example/db"), "mongodb+srv://u:***@cluster.example/db");
  assert.equal(R.maskUri("mongodb://h:1/?x=a@b"), "mongodb://h:1/?x=a@b");
  assert.equal(R.maskUri("mongodb://user@h"), "mongodb://user@h");
  assert.ok(R.hasMaskedSecret("mongodb://ferry:***@h/"));
  assert.ok(!R.hasMaskedSecret("mongodb://ferry:s3cret@h/"));
  const secrets = "mongodb://h/?tlsCertificateKeyFilePassword=k3y&authMechanismProperties=SERVICE_NAME:m,AWS_SESSION_TOKEN:t0k";
  const masked = "mongodb://h/?tlsCertificateKeyFilePassword=***&authMechanismProperties=SERVICE_NAME:m,AWS_SESSION_TOKEN:***";
  assert.equal(R.maskUri(secrets), masked);
  assert.ok(R.hasMaskedSecret(masked));
  assert.ok(!R.hasMaskedSecret(secrets));
  assert.ok(!R.hasMaskedSecret("mongodb://h/?appName=***"));
});

test("parses the form's fields", () => {
  assert.deepEqual(R.parseNamespaces(" shop.orders \n\n a.b:c.d\n"), ["shop.orders", "a.b:c.d"]);
  assert.deepEqual(R.parseFilter(""), { value: null });
  assert.deepEqual(R.parseFilter('{"n": {"$gt": 5}}'), { value: { n: { $gt: 5 } } });
  assert.match(R.parseFilter("{bad").problem, /^filter is not valid JSON/);
  assert.equal(R.parseFilter("[1]").problem, "filter must be a JSON object");
  assert.deepEqual(R.parseWhole("workers", ""), { value: null });
  assert.deepEqual(R.parseWhole("workers", "0"), { value: 0 });
  assert.match(R.parseWhole("workers", "2.5").problem, /^workers: must be a whole number/);
  assert.equal(R.parseWhole("workers", "", true).problem, "workers: not a number");
  assert.deepEqual(R.parseRate("rate", " 250 "), { value: 250 });
  assert.deepEqual(R.parseRate("rate", "-1"), { value: -1 });
});

test("formats figures", () => {
  assert.equal(R.formatCount(1234567), "1,234,567");
  assert.equal(R.formatRate(3.14159), "3.1");
  assert.equal(R.formatRate(2500.4), "2,500");
  assert.equal(R.formatBytes(512), "512 B");
  assert.equal(R.formatBytes(1536), "1.5 KiB");
  assert.equal(R.formatDuration(0.2), "< 1 s");
  assert.equal(R.formatDuration(42), "42 s");
  assert.equal(R.formatDuration(200), "3 min 20 s");
  assert.equal(R.formatDuration(7500), "2 h 05 min");
  assert.equal(R.formatDuration(null), "–");
  assert.equal(R.formatLimit(null, "docs/s"), "unlimited");
  assert.equal(R.formatLimit(400, "docs/s"), "400 docs/s");
});

test("computes each worker's rate over the last seconds", () => {
  const samples = [
    { t: 100, workers: { 0: 0, 1: 0 } },
    { t: 101, workers: { 0: 50, 1: 20 } },
    { t: 102, workers: { 0: 100, 1: 40, 2: 0 } },
  ];
  assert.deepEqual(R.workerRates(samples.slice(0, 1)), {});
  // Worker 2 was seen once: no rate yet.
  assert.deepEqual(R.workerRates(samples), { 0: 50, 1: 20 });
  // Only the window counts: with 1 s, the rate is that of the last second.
  const later = [...samples, { t: 110, workers: { 0: 900, 1: 40, 2: 10 } }];
  assert.deepEqual(R.workerRates(later, 5), { 0: 100, 1: 0, 2: 1.25 });
});

test("a job's saved series become chart samples, the limit and lag at their times", () => {
  assert.deepEqual(R.samplesFromSeries(undefined), []);
  assert.deepEqual(R.samplesFromSeries({ workers: [[1, 4]] }), []);
  const samples = R.samplesFromSeries({
    docs_per_sec: [[100, 10], [101, 20], [102, 30]],
    rate_limit: [[101, 500]],
    sync_lag_secs: [[100, 0.5], [102, 1.5]],
  });
  assert.deepEqual(
    samples.map((s) => [s.t, s.total, s.limit, s.lag]),
    [[100, 10, null, 0.5], [101, 20, 500, null], [102, 30, null, 1.5]],
  );
  assert.deepEqual(samples[0].workers, {});
});

test("the rate slider is logarithmic and round-trips round numbers", () => {
  assert.equal(R.sliderToRate(0), 1);
  assert.equal(R.sliderToRate(R.SLIDER_MAX), 100000);
  for (const rate of [5, 40, 300, 1000, 25000]) {
    assert.equal(R.sliderToRate(R.rateToSlider(rate)), rate, `rate ${rate}`);
  }
  assert.equal(R.rateToSlider(null), R.SLIDER_MAX);
});

test("commands follow the job's state", () => {
  assert.deepEqual(R.allowedCommands("running"), { pause: true, resume: false, cancel: true, tune: true, commit: false });
  assert.deepEqual(R.allowedCommands("paused"), { pause: false, resume: true, cancel: true, tune: true, commit: false });
  assert.deepEqual(R.allowedCommands("completed"), { pause: false, resume: false, cancel: false, tune: false, commit: false });
});

test("only an active sync job can be committed, once", () => {
  for (const state of ["pending", "running", "paused"]) {
    assert.equal(R.allowedCommands(state, "sync").commit, true, state);
    assert.equal(R.allowedCommands(state, "sync", "live").commit, true, state);
    assert.equal(R.allowedCommands(state, "copy").commit, false, state);
  }
  for (const state of ["completed", "failed", "cancelled", "interrupted"]) {
    assert.equal(R.allowedCommands(state, "sync", "live").commit, false, state);
  }
  // Asked already: the commit is under way.
  assert.equal(R.allowedCommands("running", "sync", "committing").commit, false);
  assert.equal(R.allowedCommands("running", "sync", "committed").commit, false);
  // The other commands do not depend on the mode.
  const { commit: _s, ...sync } = R.allowedCommands("running", "sync", "live");
  const { commit: _c, ...copy } = R.allowedCommands("running");
  assert.deepEqual(sync, copy);
});

const baseView = {
  id: 3,
  state: "failed",
  spec: { from: "mongodb://u:***@a/", to: "mongodb://b/", namespaces: ["shop.orders"] },
  workers: 2,
  limits: { rate: null, rate_bytes: null },
  created_at: 1000,
  finished_at: 1010,
  error: "namespace shop.nothere not found on the source",
  progress: { docs: 10, bytes: 100, expected: 20, docs_per_sec: 0, eta_secs: null, queue_depth: 0, namespaces: [], workers: [] },
};

test("shows nothing for failed documents when the view has no dead_letters", () => {
  assert.equal(R.deadLettersHtml(baseView), "");
});

test("lists a job's failed documents when the view has them", () => {
  const view = {
    ...baseView,
    dead_letters: {
      count: 3,
      recent: [
        { ns: "shop.orders", id: { $oid: "65f0c0ffee00000000000001" }, reason: "document too large <16 MiB>" },
        { ns: "shop.orders", id: { $numberInt: "42" }, reason: "validation failed" },
      ],
    },
  };
  const html = R.deadLettersHtml(view);
  assert.match(html, /data-field="dead_count">3</);
  assert.match(html, /The 2 most recent of 3/);
  assert.ok(html.includes("{&quot;$oid&quot;:&quot;65f0c0ffee00000000000001&quot;}"), html);
  assert.ok(html.includes("{&quot;$numberInt&quot;:&quot;42&quot;}"), html);
  assert.ok(html.includes("document too large &lt;16 MiB&gt;"), html);
  assert.match(R.deadLettersHtml({ ...baseView, dead_letters: { count: 0, recent: [] } }), /None\./);
  assert.match(R.jobRowHtml(view), /3 failed docs/);
  assert.doesNotMatch(R.jobRowHtml(baseView), /failed docs/);
});

test("shows a failed job's error", () => {
  const html = R.errorHtml(baseView);
  assert.match(html, /The job failed/);
  assert.match(html, /namespace shop.nothere not found on the source/);
  assert.equal(R.errorHtml({ ...baseView, error: null }), "");
});

test("shows adaptive mode's latest decision and its reason", () => {
  assert.equal(R.adaptiveHtml(baseView), "");
  const view = {
    ...baseView,
    adaptive: {
      config: { target_ms: 150, max_workers: 8, interval_ms: null },
      decisions: [
        { at_secs: 1, action: "increase", latency_ms: 20, docs_per_sec: 900, workers: 3, rate_cap: null, reason: "first" },
        { at_secs: 2, action: "decrease", latency_ms: 400, docs_per_sec: 1000, workers: 2, rate_cap: 700, reason: "batch latency 400 ms over the 150 ms target" },
      ],
    },
  };
  const html = R.adaptiveHtml(view);
  assert.match(html, /data-field="adaptive_action">decrease</);
  assert.match(html, /batch latency 400 ms over the 150 ms target/);
  assert.match(html, /now 2 workers, cap 700 docs\/s/);
  assert.match(R.adaptiveHtml({ ...baseView, adaptive: { config: { target_ms: 150 }, decisions: [] } }), /No decision yet/);
});

test("summarises a job's progress", () => {
  const html = R.summaryHtml({ ...baseView, state: "running", finished_at: null, limits: { rate: 400, rate_bytes: null }, progress: { ...baseView.progress, docs_per_sec: 123.4, eta_secs: 30 } }, 1065);
  assert.match(html, /data-field="docs">10 \/ 20</);
  assert.match(html, /data-field="docs_per_sec">123</);
  assert.match(html, /data-field="eta">30 s</);
  assert.match(html, /data-field="rate_limit">400 docs\/s</);
  assert.match(html, /<progress max="1" value="0.5000"/);
  assert.match(html, /running for<\/span><span class="tile-value" data-field="elapsed">1 min 05 s</);
  // A browser clock behind the service's shows no negative time.
  assert.match(R.summaryHtml({ ...baseView, state: "running", finished_at: null }, 900), /data-field="elapsed">&lt; 1 s</);
});

test("the position counts documents copied before and failed ones", () => {
  assert.equal(R.doneCount(null), 0);
  assert.equal(R.doneCount({ docs: 10 }), 10, "views without the counts still work");
  const progress = { ...baseView.progress, docs: 4, skipped: 10, failed: 1, expected: 20 };
  assert.equal(R.doneCount(progress), 15);
  assert.equal(R.fraction(progress), 0.75);
  // Never past the end, should the source have shrunk since it was counted.
  assert.equal(R.fraction({ docs: 5, skipped: 20, failed: 0, expected: 20 }), 1);
  assert.equal(R.fraction({ docs: 5, skipped: 0, failed: 0, expected: null }), null);
});

test("shows what was copied before, failed and retried on a job's page", () => {
  const running = { ...baseView, state: "running", finished_at: null, error: null };
  const fresh = R.summaryHtml({ ...running, progress: { ...baseView.progress, skipped: 0, failed: 0, retries: 0, last_retry: null } }, 1005);
  assert.doesNotMatch(fresh, /copied before/, "nothing copied before: no tile");
  assert.match(fresh, /data-field="failed">0</);
  assert.match(fresh, /data-field="retries">0</);
  assert.doesNotMatch(fresh, /last_retry/);
  assert.doesNotMatch(fresh, /tile-warn/);

  const progress = {
    ...baseView.progress,
    docs: 1200,
    skipped: 5000,
    failed: 30,
    expected: 10000,
    retries: 3,
    last_retry: "connection reset by <peer>",
  };
  const html = R.summaryHtml({ ...running, progress }, 1005);
  assert.match(html, /data-field="docs">1,200 \/ 10,000</, "documents are those this run wrote");
  assert.match(html, /copied before<\/span><span class="tile-value" data-field="skipped">5,000</);
  assert.match(html, /<div class="tile tile-warn"><span class="tile-label">failed<\/span><span class="tile-value" data-field="failed">30</);
  assert.match(html, /data-field="retries">3</);
  assert.match(html, /data-field="last_retry">connection reset by &lt;peer&gt;</);
  assert.match(html, /<progress max="1" value="0.6230"/, "(1,200 + 5,000 + 30) of 10,000");
  assert.match(html, /<span class="pct">62%</);
  // A job whose view has no progress yet shows dashes.
  assert.match(R.summaryHtml({ ...running, progress: null }, 1005), /data-field="failed">–</);
});

test("a job's row says what was copied before and what failed", () => {
  const view = { ...baseView, state: "running", error: null, progress: { ...baseView.progress, docs: 5, skipped: 12, failed: 2, expected: 20 } };
  const row = R.jobRowHtml(view);
  assert.match(row, /data-field="skipped">12 copied before \(continued from its checkpoint\)</);
  assert.match(row, /data-field="failed">2 failed docs</);
  assert.match(row, /<progress max="1" value="0.9500"/);
  assert.match(row, /data-field="docs">5 \/ 20 docs</);
  const plain = R.jobRowHtml({ ...view, progress: { ...view.progress, skipped: 0, failed: 0 } });
  assert.doesNotMatch(plain, /copied before|failed docs/);
});

test("the namespaces table counts what was copied before and failed", () => {
  const namespace = (name, counts) => ({ source: name, destination: name, bytes: 0, finished: false, docs_per_sec: 1, ...counts });
  const html = R.namespacesHtml({
    ...baseView,
    progress: {
      ...baseView.progress,
      namespaces: [namespace("a.b", { docs: 10, skipped: 60, failed: 5, expected: 100 }), namespace("c.d", { docs: 4, skipped: 0, failed: 0, expected: 8 })],
    },
  });
  assert.match(html, /<progress max="1" value="0.7500" aria-label="a.b progress">/);
  assert.match(html, /10 \/ 100<br><span class="muted">60 copied before, 5 failed<\/span>/);
  assert.match(html, /<progress max="1" value="0.5000" aria-label="c.d progress">/);
  assert.match(html, /4 \/ 8<\/td>/, "no note without documents copied before or failed");
});

test("a namespace read in partitions shows one cell per partition, by state", () => {
  const partitions = [
    { index: 0, done: 1000, state: "complete" },
    { index: 1, done: 250, state: "reading" },
    { index: 2, done: 0, state: "waiting" },
  ];
  const ns = { source: "a.b", destination: "a.b", bytes: 0, finished: false, docs_per_sec: 1, docs: 1250, skipped: 0, failed: 0, expected: 3000, partitions };
  const html = R.namespacesHtml({ ...baseView, progress: { ...baseView.progress, namespaces: [ns] } });
  assert.match(html, /<div class="parts" data-field="partitions" aria-label="1 of 3 partitions complete">/);
  assert.match(html, /<span class="part part-complete" title="partition 1: 1,000 docs, complete"><\/span>/);
  assert.match(html, /<span class="part part-reading" title="partition 2: 250 docs, reading"><\/span>/);
  assert.match(html, /<span class="part part-waiting" title="partition 3: 0 docs, waiting"><\/span>/);
  assert.doesNotMatch(R.partitionsHtml({ ...ns, partitions: [] }), /part/);
});

test("service nodes sharing a job are listed, the one running it first", () => {
  assert.equal(R.nodesHtml(baseView), "");
  const nodes = [
    { node: "ferry-1:42:a1b2", role: "runs", state: "running", docs: 1200, bytes: 1, docs_per_sec: 300, workers: 4 },
    { node: "ferry-2:7:<x>", role: "helps", state: "paused", docs: 800, bytes: 1, docs_per_sec: 0, workers: 4 },
  ];
  const html = R.nodesHtml({ ...baseView, nodes });
  assert.match(html, /2 on this job/);
  assert.match(html, /<tr><td>ferry-1:42:a1b2<\/td><td>runs the job<\/td><td><span class="state state-running">running<\/span><\/td><td>1,200<\/td><td>300<\/td><td>4<\/td><\/tr>/);
  assert.match(html, /ferry-2:7:&lt;x&gt;<\/td><td>helps<\/td>/);
});

test("an interrupted job is over until the service starts again", () => {
  assert.ok(R.isFinal("interrupted"));
  assert.deepEqual(R.allowedCommands("interrupted"), { pause: false, resume: false, cancel: false, tune: false, commit: false });
  assert.equal(R.stateBadge("interrupted"), '<span class="state state-interrupted" data-state="interrupted">interrupted</span>');
  const message = "interrupted: the service stopped; it continues from its checkpoint when the service starts again";
  const view = { ...baseView, state: "interrupted", error: message, progress: { ...baseView.progress, docs_per_sec: 50, eta_secs: 12 } };
  const box = R.errorHtml(view);
  assert.match(box, /^<div class="error-box note-box" role="alert"><strong>Interrupted<\/strong>/);
  assert.ok(box.includes(message));
  // Over: no rate, no ETA, and the time it ran.
  const row = R.jobRowHtml(view);
  assert.match(row, /data-field="docs_per_sec"><\/span>/);
  assert.match(row, /data-field="eta"><\/span>/);
  assert.match(row, /class="job-error job-note"/);
  assert.match(R.summaryHtml(view, 2000), /took<\/span><span class="tile-value" data-field="elapsed">10 s</);
});

test("a completed job's message is a note, a failed job's error is not", () => {
  const completed = { ...baseView, state: "completed", error: "completed with 30 failed documents (kept with their reasons in x)" };
  assert.match(R.errorHtml(completed), /^<div class="error-box note-box" role="alert"><strong>Note<\/strong>/);
  assert.match(R.errorHtml(baseView), /^<div class="error-box" role="alert"><strong>The job failed<\/strong>/);
  assert.match(R.jobRowHtml(baseView), /class="job-error"/);
});

test("reads server-sent events as they arrive, in any pieces", () => {
  const stream = 'event: state\ndata: {"id":1}\n\n: keep-alive\n\nevent: progress\r\ndata: {"a":\r\ndata: 2}\r\n\r\nevent: state\ndata: {"id"';
  const whole = R.parseEvents(stream);
  assert.deepEqual(whole.events, [
    { event: "state", data: '{"id":1}' },
    { event: "progress", data: '{"a":\n2}' },
  ]);
  assert.equal(whole.rest, 'event: state\ndata: {"id"');
  // Cut anywhere, fed piece by piece, the same events come out.
  for (let cut = 1; cut < stream.length; cut++) {
    let rest = "";
    const seen = [];
    for (const piece of [stream.slice(0, cut), stream.slice(cut)]) {
      const parsed = R.parseEvents(rest + piece);
      seen.push(...parsed.events);
      rest = parsed.rest;
    }
    assert.deepEqual(seen, whole.events, `cut at ${cut}`);
  }
  assert.deepEqual(R.parseEvents("").events, []);
  assert.deepEqual(R.parseEvents("data:x\n\n").events, [{ event: "message", data: "x" }]);
});

test("a view of an ended job still active is stale; an interrupted job may run again", () => {
  assert.equal(R.isStale("cancelled", "running"), true);
  assert.equal(R.isStale("completed", "paused"), true);
  assert.equal(R.isStale("failed", "pending"), true);
  assert.equal(R.isStale("cancelled", "cancelled"), false);
  assert.equal(R.isStale("interrupted", "running"), false);
  assert.equal(R.isStale("running", "cancelled"), false);
  assert.equal(R.isStale(null, "running"), false);
});

test("a plan shows its namespaces, estimate and problems, blocking ones first, escaped", () => {
  const plan = {
    namespaces: [
      { source: "shop.orders", destination: "<x>.orders", documents: 12000, bytes: 12288000, indexes: ["qty_1 {\"qty\":1}"], destination_state: "absent" },
    ],
    views: [{ source: "shop.v", destination: "x.v", view_on: "orders", destination_state: "absent" }],
    problems: [
      { message: "a note", blocks: false },
      { message: "x.words exists with other options", blocks: true },
    ],
    documents: 12000,
    bytes: 12288000,
    estimate: { seconds: 90, docs_per_sec: 133.3, basis: "an estimate: 133 documents read in 1.00 s" },
    drop: false,
    indexes: "after",
    blocked: true,
  };
  const html = R.planHtml(plan);
  assert.ok(html.includes("&lt;x&gt;.orders") && !html.includes("<x>"), html);
  assert.ok(html.includes("12,000"), html);
  assert.ok(html.includes("The job would not start."), html);
  assert.ok(html.indexOf("Blocks the job: x.words") < html.indexOf("a note"), "blocking problems first");
  assert.ok(html.includes("Estimate: about 1 min 30 s at 133 docs/s (an estimate"), html);
  const quick = R.planHtml({ ...plan, estimate: { ...plan.estimate, seconds: 0.2 } });
  assert.ok(quick.includes("Estimate: under a second at 133 docs/s"), quick);
  assert.ok(html.includes("view shop.v → x.v (on orders)"), html);
  const fine = R.planHtml({ ...plan, problems: [], blocked: false, estimate: null, drop: true, indexes: "none" });
  assert.ok(fine.includes("Nothing blocks the job.") && fine.includes("dropped first") && fine.includes("not built"), fine);
  assert.ok(!html.includes("partitions"), "a namespace read whole says nothing of partitions");
  const parted = R.planHtml({ ...plan, namespaces: [{ ...plan.namespaces[0], partitions: 8 }] });
  assert.ok(parted.includes('<span class="muted" data-field="partitions">in ~8 partitions</span>'), parted);
});

test("the schema panel shows the index builds and what the destination refused", () => {
  assert.equal(R.schemaHtml({ progress: null }), "");
  assert.equal(R.schemaHtml({ progress: { schema: { step: null, dropped: [], created: [], indexes_total: 0, indexes_built: 0, index_errors: [], views: [] } } }), "");
  const html = R.schemaHtml({
    progress: {
      schema: {
        step: "building index qty_1 of a.b (2 of 3)",
        dropped: [],
        created: ["a.b"],
        indexes_total: 3,
        indexes_built: 1,
        index_errors: [{ namespace: "a.b", index: "t_<text>", reason: "text indexes are not supported" }],
        views: ["a.v"],
      },
    },
  });
  assert.ok(html.includes("building index qty_1 of a.b (2 of 3)…"), html);
  assert.ok(html.includes("Indexes built: 1 of 3"), html);
  assert.ok(html.includes("t_&lt;text&gt;") && html.includes("text indexes are not supported"), html);
  assert.ok(html.includes("Created:</span> a.b") && html.includes("Views:</span> a.v"), html);
});

const syncProgress = (sync) => ({ ...baseView.progress, docs_per_sec: 0, sync });
const syncView = (state, sync) => ({
  ...baseView,
  state,
  error: null,
  finished_at: null,
  spec: { ...baseView.spec, mode: "sync" },
  links: { self: "/api/jobs/3", commit: "/api/jobs/3/commit" },
  progress: syncProgress(sync),
});
const live = { phase: "live", lag_secs: 0.42, caught_up: false, events: 1234, applied: { insert: 1200, update: 20, replace: 3, delete: 10, ddl: 1 }, events_per_sec: 56.7 };

test("a job's mode: sync from its spec or its commit link, copy otherwise", () => {
  assert.equal(R.jobMode(baseView), "copy");
  assert.equal(R.jobMode({ ...baseView, spec: { ...baseView.spec, mode: "copy" } }), "copy");
  assert.equal(R.jobMode({ ...baseView, spec: { ...baseView.spec, mode: "sync" } }), "sync");
  assert.equal(R.jobMode({ ...baseView, links: { commit: "/api/jobs/3/commit" } }), "sync");
  assert.equal(R.jobMode({}), "copy");
  // The spec shows it; a spec without one is a copy.
  assert.match(R.specHtml(baseView), /<dt>mode<\/dt><dd>copy<\/dd>/);
  assert.match(R.specHtml(syncView("running", live)), /<dt>mode<\/dt><dd>sync<\/dd>/);
  assert.match(R.specHtml({ ...baseView, spec: { ...baseView.spec, mode: "<b>" } }), /<dd>&lt;b&gt;<\/dd>/);
});

test("a copy job has no sync panel and no sync in its row", () => {
  const copy = { ...baseView, state: "running", progress: { ...baseView.progress, sync: null } };
  assert.equal(R.syncHtml(copy), "");
  assert.equal(R.syncSummary(copy), "");
  assert.equal(R.syncLag(copy), null);
  assert.ok(!R.jobRowHtml(copy).includes("job-sync"));
  assert.equal(R.syncHtml(baseView), "", "a view without progress.sync");
});

test("a sync job's panel shows its phase, lag, changes applied by kind and per second", () => {
  const html = R.syncHtml(syncView("running", live));
  assert.match(html, /data-field="sync_phase" data-phase="live">live<\/span>/);
  assert.match(html, /data-field="lag_secs">0.4 s</);
  assert.match(html, /data-field="caught_up">no</);
  assert.match(html, /data-field="events">1,234</);
  assert.match(html, /data-field="events_per_sec">57</);
  assert.match(html, /data-field="applied_insert">1,200</);
  assert.match(html, /data-field="applied_update">20</);
  assert.match(html, /data-field="applied_replace">3</);
  assert.match(html, /data-field="applied_delete">10</);
  assert.match(html, /data-field="applied_ddl">1</);
  assert.match(R.syncHtml(syncView("running", { ...live, lag_secs: 200, caught_up: true })), /data-field="lag_secs">3 min 20 s</);
  assert.match(R.syncHtml(syncView("running", { ...live, lag_secs: 0, caught_up: true })), /data-field="caught_up">yes</);
});

test("each sync phase has its label, and an unknown one is shown escaped", () => {
  const labels = { initial_copy: "initial copy", catching_up: "catching up", live: "live", committing: "committing", committed: "committed" };
  for (const [phase, label] of Object.entries(labels)) {
    assert.equal(R.phaseLabel(phase), label);
    const html = R.syncHtml(syncView(phase === "committed" ? "completed" : "running", { ...live, phase }));
    assert.ok(html.includes(`class="phase phase-${phase}" data-field="sync_phase" data-phase="${phase}">${label}</span>`), html);
    assert.match(R.syncSummary(syncView("running", { ...live, phase })), new RegExp(`^sync ${label}`));
  }
  const odd = R.syncHtml(syncView("running", { ...live, phase: '<img src=x onerror="x">' }));
  assert.ok(!odd.includes("<img"), odd);
  assert.ok(odd.includes("&lt;img src=x onerror=&quot;x&quot;&gt;"), odd);
});

test("the lag is shown only while the sync follows the source's changes", () => {
  assert.equal(R.syncLag(syncView("running", live)), 0.42);
  assert.equal(R.syncLag(syncView("running", { ...live, phase: "catching_up", lag_secs: 30 })), 30);
  assert.equal(R.syncLag(syncView("running", { ...live, phase: "committing" })), 0.42);
  // The initial copy reports 0 until the changes are followed; an ended job follows nothing.
  assert.equal(R.syncLag(syncView("running", { ...live, phase: "initial_copy", lag_secs: 0 })), null);
  assert.equal(R.syncLag(syncView("completed", { ...live, phase: "committed", lag_secs: 0 })), null);
  assert.equal(R.syncLag(syncView("cancelled", { ...live, lag_secs: 99 })), null);
  assert.equal(R.syncLag(syncView("running", null)), null);
  assert.match(R.syncHtml(syncView("running", { ...live, phase: "initial_copy" })), /data-field="lag_secs">–</);
  const ended = R.syncHtml(syncView("completed", { ...live, phase: "committed", lag_secs: 0 }));
  assert.match(ended, /data-field="lag_secs">–</);
  assert.match(ended, /data-field="events_per_sec">–</);
  assert.match(ended, /data-field="events">1,234</, "an ended job keeps its count");
  assert.equal(R.formatLag(0), "0.0 s");
  assert.equal(R.formatLag(12.4), "12 s");
  assert.equal(R.formatLag(-0.5), "0.0 s", "a clock ahead of the source's never shows a negative lag");
  assert.equal(R.formatLag(3700), "1 h 01 min");
  assert.equal(R.formatLag(null), "–");
});

test("a sync job past its initial copy has no ETA: it follows changes until committed", () => {
  const copying = syncView("running", { ...live, phase: "initial_copy" });
  copying.progress.eta_secs = 12;
  assert.equal(R.etaSecs(copying), 12);
  assert.match(R.summaryHtml(copying, 2000), /data-field="eta">12 s</);
  assert.match(R.jobRowHtml(copying), /data-field="eta">ETA 12 s</);
  const following = syncView("running", live);
  following.progress.eta_secs = 0;
  assert.equal(R.etaSecs(following), null);
  assert.match(R.summaryHtml(following, 2000), /data-field="eta">–</);
  assert.match(R.jobRowHtml(following), /data-field="eta"><\/span>/);
  // A copy's ETA, as before: while active.
  assert.equal(R.etaSecs({ ...baseView, state: "running", progress: { ...baseView.progress, eta_secs: 5 } }), 5);
  assert.equal(R.etaSecs({ ...baseView, progress: { ...baseView.progress, eta_secs: 5 } }), null);
});

test("a sync job not started yet says so; an ended one without figures says that", () => {
  const pending = { ...syncView("pending", null), progress: null };
  assert.match(R.syncHtml(pending), /Not started yet/);
  assert.equal(R.syncSummary(pending), "sync");
  assert.match(R.syncHtml({ ...pending, state: "completed" }), /No figures of the sync/);
});

test("a sync job's row shows its phase and lag, briefly and escaped", () => {
  const row = R.jobRowHtml(syncView("running", live));
  assert.match(row, /<span class="job-sync" data-field="sync">sync live, lag 0.4 s<\/span>/);
  assert.match(R.jobRowHtml(syncView("completed", { ...live, phase: "committed", lag_secs: 0 })), /data-field="sync">sync committed<\/span>/);
  assert.match(R.jobRowHtml(syncView("running", { ...live, phase: "a<b" })), /data-field="sync">sync a&lt;b<\/span>/, "an unknown phase, escaped, without a lag");
});

const moveView = (state, moves, spec = {}) => ({
  ...baseView,
  state,
  error: null,
  spec: { ...baseView.spec, mode: "move", ...spec },
  progress: { ...baseView.progress, moves },
});
const moving = { pass: 1, verified: 1200, deleted: 1150, changed: 7, gone: 2, conflicts: 0, left: 0, deletes_per_sec: 310.4 };

test("a job's mode: move from its spec or its move figures", () => {
  assert.equal(R.jobMode(moveView("running", null)), "move");
  assert.equal(R.jobMode({ ...baseView, progress: { ...baseView.progress, moves: moving } }), "move");
  assert.equal(R.allowedCommands("running", "move").commit, false, "only a sync is committed");
  assert.match(R.specHtml(moveView("running", moving)), /<dt>mode<\/dt><dd>move<\/dd>/);
  assert.match(R.specHtml(moveView("running", moving, { keep_source: true })), /<dd>move \(keep the source: a rehearsal\)<\/dd>/);
  assert.match(R.specHtml(moveView("running", moving, { allow_transform_move: true })), /<dd>move \(through the transform: only the transformed copies are left\)<\/dd>/);
  assert.equal(R.moveHtml(baseView), "", "a copy has no move panel");
  assert.equal(R.moveSummary(baseView), "");
  assert.ok(!R.jobRowHtml(baseView).includes("job-move"));
});

test("a move job's panel shows what was verified, moved, kept because it changed, and the delete rate", () => {
  const html = R.moveHtml(moveView("running", moving));
  assert.match(html, /data-field="move_pass">pass 1</);
  assert.match(html, /data-field="move_verified">1,200</);
  assert.match(html, /data-field="move_deleted">1,150</);
  assert.match(html, /data-field="deletes_per_sec">310</);
  assert.match(html, /data-field="move_changed">7</);
  assert.match(html, /data-field="move_gone">2</);
  assert.match(html, /data-field="move_left">–</, "what is left is known once the job ends");
  assert.match(R.jobRowHtml(moveView("running", moving)), /data-field="move">move: 1,150 moved</);

  const ended = moveView("completed", { ...moving, left: 7, deletes_per_sec: 0 });
  const endedHtml = R.moveHtml(ended);
  assert.match(endedHtml, /data-field="move_left">7</);
  assert.match(endedHtml, /data-field="deletes_per_sec">–</);
  assert.ok(endedHtml.includes("submit the move again"), endedHtml);
  assert.equal(R.moveSummary(ended), "move: 1,150 moved, 7 left at the source");

  const rehearsal = moveView("completed", { ...moving, deleted: 0, changed: 0 }, { keep_source: true });
  assert.match(R.moveHtml(rehearsal), /<h3>Move rehearsal /);
  assert.equal(R.moveSummary(rehearsal), "move rehearsal: 1,200 verified");
  // A rehearsal keeps everything at the source: never "0 moved" nor "left at the source".
  const kept = R.moveHtml({ ...rehearsal, progress: { ...rehearsal.progress, moves: { ...rehearsal.progress.moves, left: 1200 } } });
  assert.match(kept, /data-field="move_kept">1,200</);
  assert.doesNotMatch(kept, /move_left|move_deleted/);
  assert.ok(R.moveHtml(moveView("pending", null)).includes("Not started yet."));
});

test("the plan says when a move deletes from the source", () => {
  const plan = { namespaces: [], views: [], problems: [], documents: 10, bytes: 100, estimate: null, drop: false, indexes: "after", blocked: false };
  assert.ok(!R.planHtml({ ...plan, mode: "copy", deletes_from_source: false }).includes("deletes_from_source"));
  assert.ok(R.planHtml({ ...plan, mode: "move", deletes_from_source: true }).includes("<strong>deleted from the source</strong>"));
  assert.ok(R.planHtml({ ...plan, mode: "move", deletes_from_source: false }).includes("A move rehearsal: the source is kept."));
});

test("a chart with fewer than two points says why in words, true for the job's state", () => {
  assert.equal(R.chartNote(2, "running"), "", "two points draw a chart");
  assert.equal(R.chartNote(0, "running"), "Collecting… the chart starts with the second sample.");
  assert.equal(R.chartNote(1, "paused"), "Collecting… the chart starts with the second sample.");
  assert.equal(R.chartNote(0, null), "Collecting… the chart starts with the second sample.");
  assert.equal(R.chartNote(0, "completed"), "No samples: the job ended before this page was opened.");
  assert.equal(R.chartNote(0, "failed"), "No samples: the job ended before this page was opened.");
  assert.equal(R.chartNote(1, "cancelled"), "One sample only: the job ended before the second.");
  assert.match(R.chartNote(0, "interrupted"), /not running/);
  assert.match(R.chartNote(0, "running", "lag"), /^No lag yet/);
});

test("a job that did not start copying says so in its namespace and worker panels", () => {
  const view = { ...baseView, state: "failed", spec: { namespaces: ["shop.nothere:copy.nothere", "a.b"] }, progress: null };
  assert.equal(R.notStartedNote(view, "namespaces"), "The job failed before copying: nothing was copied of shop.nothere → copy.nothere, a.b.");
  assert.equal(R.notStartedNote(view, "workers"), "The job failed before copying: no worker ran.");
  assert.equal(R.notStartedNote({ ...view, state: "cancelled" }, "workers"), "The job was cancelled before copying: no worker ran.");
  assert.equal(R.notStartedNote({ ...view, state: "pending" }, "namespaces"), "Not started yet.");
  assert.equal(R.notStartedNote({ ...view, state: "running" }, "workers"), "Not started yet.");
});

test("an ended job shows its average rate and how long it took, on its page and in the list", () => {
  const done = { ...baseView, state: "completed", created_at: 1000, finished_at: 1040, spec: { namespaces: ["shop.orders:archive.orders"] }, progress: { ...baseView.progress, docs: 2000, docs_per_sec: 0 } };
  assert.equal(R.tookSecs(done), 40);
  assert.equal(R.averageRate(done), 50);
  const summary = R.summaryHtml(done, 5000);
  assert.match(summary, /avg docs\/s<\/span><span class="tile-value" data-field="docs_per_sec">50</);
  assert.match(summary, /took<\/span><span class="tile-value" data-field="elapsed">40 s</);
  assert.ok(!summary.includes('data-field="eta"') && !summary.includes('data-field="queue_depth"'), "no ETA or queue once ended");
  const row = R.jobRowHtml(done);
  assert.match(row, /avg 50 docs\/s/);
  assert.match(row, /data-field="eta">took 40 s</);
  assert.match(row, /class="job-ns" title="shop.orders → archive.orders">shop.orders → archive.orders</);
  // Nothing written, or no time measured: no average.
  assert.equal(R.averageRate({ ...done, progress: { ...done.progress, docs: 0 } }), null);
  assert.equal(R.averageRate({ ...done, finished_at: 1000 }), null);
  // Still running, or interrupted (it may continue): the rate now, no average.
  assert.equal(R.averageRate({ ...done, state: "running", finished_at: null }), null);
  assert.equal(R.averageRate({ ...done, state: "interrupted" }), null);
});

test("a plan puts each namespace on a line of its own, its figures under it", () => {
  const html = R.planHtml({
    namespaces: [{ source: "shop.orders", destination: "archive.orders", documents: 5, bytes: 10, indexes: [], destination_state: "absent" }],
    views: [],
    problems: [],
    documents: 5,
    bytes: 10,
    estimate: null,
    drop: false,
    indexes: "after",
    blocked: false,
  });
  assert.match(html, /<tr class="plan-ns"><th colspan="4" scope="rowgroup" data-field="namespace">shop.orders → archive.orders<\/th><\/tr>/);
  assert.match(html, /<th class="num">Documents<\/th><th class="num">Size<\/th><th class="num">Indexes<\/th><th>Destination<\/th>/);
});

// A sync's continuous verification and its cutover (issue 28).
const verification = {
  phase: "continuous",
  repairs: true,
  verified_docs: 3000,
  compared_this_run: 3000,
  namespaces_verified: 1,
  namespaces: 1,
  mismatches: 3,
  repaired: 3,
  unrepaired: 0,
  recheck_pending: 2,
  through: 1796615173.0,
  recent: [
    { ns: "s.c -> d.c", id: { $numberLong: "10" }, kind: "different", repaired: true },
    { ns: "s.c -> d.c", id: "extra", kind: "extra", repaired: true },
  ],
};
/** A sync view as the API sends it: `can_commit` and `verification` top-level and under progress.sync. */
const verifiedView = (state, sync, v, canCommit, extra = {}) => {
  const view = syncView(state, { ...sync, verification: v, can_commit: canCommit, ...extra });
  return { ...view, can_commit: canCommit, ...(v ? { verification: v } : {}), ...extra };
};
const ready = { ok: true, reasons: [] };
const notReady = {
  ok: false,
  reasons: [
    "the initial verification is not finished (1000 documents compared, 0 of 1 namespaces)",
    "the lag is 7.2 s, over the limit of 5 s (commit_max_lag_secs)",
  ],
};

test("the Commit button says it is ready when can_commit holds", () => {
  const view = verifiedView("running", live, verification, ready);
  assert.deepEqual(R.canCommitOf(view), ready);
  assert.deepEqual(R.commitReasons(view), []);
  const html = R.commitReadinessHtml(view);
  assert.match(html, /data-field="commit_ready" data-ready="true">ready to commit</);
  assert.equal(R.commitConfirmReasonsHtml(view), "", "the dialog lists nothing when ready");
  // Read under progress.sync too (an older view without the top-level copy).
  const nested = syncView("running", { ...live, can_commit: ready });
  assert.match(R.commitReadinessHtml(nested), /ready to commit/);
});

test("the Commit button says why it is not ready, and the dialog lists the reasons", () => {
  const view = verifiedView("running", { ...live, lag_secs: 7.2 }, { ...verification, phase: "initial" }, notReady);
  assert.deepEqual(R.commitReasons(view), notReady.reasons);
  const html = R.commitReadinessHtml(view);
  assert.match(html, /data-ready="false"/);
  assert.match(html, /not ready to commit/);
  assert.match(html, /<li>the initial verification is not finished \(1000 documents compared, 0 of 1 namespaces\)<\/li>/);
  assert.match(html, /<li>the lag is 7.2 s, over the limit of 5 s \(commit_max_lag_secs\)<\/li>/);
  const dialog = R.commitConfirmReasonsHtml(view);
  assert.equal((dialog.match(/<li>/g) ?? []).length, 2, dialog);
  assert.match(dialog, /Not ready to commit/);
  // Reasons are server text: escaped.
  const hostile = verifiedView("running", live, verification, { ok: false, reasons: ["<img src=x onerror=alert(1)>"] });
  for (const out of [R.commitReadinessHtml(hostile), R.commitConfirmReasonsHtml(hostile)]) {
    assert.ok(!out.includes("<img"), out);
    assert.ok(out.includes("&lt;img src=x onerror=alert(1)&gt;"), out);
  }
  // Not ok and no reason given: still not ready, and says so.
  assert.deepEqual(R.commitReasons(verifiedView("running", live, null, { ok: false, reasons: [] })), ["the service gives no reason"]);
});

test("the Commit button says nothing for a copy or a move, nor once the sync cannot be committed", () => {
  const copy = { ...baseView, state: "running", can_commit: notReady };
  assert.equal(R.commitReadinessHtml(copy), "", "a copy has no commit");
  const move = { ...copy, spec: { ...copy.spec, mode: "move" } };
  assert.equal(R.commitReadinessHtml(move), "", "a move has no commit");
  assert.equal(R.verificationHtml(copy), "");
  assert.equal(R.verificationHtml(move), "");
  const committing = verifiedView("running", { ...live, phase: "committing" }, verification, { ok: false, reasons: ["the commit is under way"] });
  assert.equal(R.commitReadinessHtml(committing), "");
  const committed = verifiedView("completed", { ...live, phase: "committed" }, verification, { ok: false, reasons: ["the job is committed"] });
  assert.equal(R.commitReadinessHtml(committed), "");
  // A sync before its first figures: nothing to say yet.
  assert.equal(R.commitReadinessHtml({ ...syncView("running", live), progress: null }), "");
});

test("the verification panel shows its phase, figures and the time proven equal", () => {
  const view = verifiedView("running", live, verification, ready);
  const html = R.verificationHtml(view);
  assert.match(html, /id="verification"/);
  assert.match(html, /data-field="verification_phase" data-phase="continuous">continuous</);
  assert.match(html, /data-field="verified_docs">3,000</);
  assert.match(html, /data-field="namespaces_verified">1 of 1</);
  assert.match(html, /<div class="tile tile-warn"><span class="tile-label">mismatches<\/span><span class="tile-value" data-field="mismatches">3</);
  assert.match(html, /data-field="repaired">3</);
  assert.match(html, /data-field="unrepaired">0</);
  assert.match(html, /data-field="recheck_pending">2</);
  assert.match(html, /repaired from the source/);
  assert.ok(html.includes(`Proven equal through <time>${R.esc(new Date(1796615173000).toLocaleString())}</time>`), html);
  // The first pass: named so, and nothing proven yet.
  const first = R.verificationHtml(
    verifiedView("running", live, { ...verification, phase: "initial", through: null, verified_docs: 1000, compared_this_run: 400, namespaces_verified: 0, mismatches: 0, repaired: 0, recent: [] }, notReady),
  );
  assert.match(first, /data-phase="initial">first pass</);
  assert.match(first, /data-field="verified_docs">1,000 \(400 by this run\)</);
  assert.match(first, /data-field="namespaces_verified">0 of 1</);
  assert.match(first, /Not proven equal yet: the first pass is under way\./);
  assert.ok(!first.includes("<table"), "no mismatch, no table");
  // Report only: said so, and unrepaired ones stand out.
  const report = R.verificationHtml(verifiedView("running", live, { ...verification, repairs: false, repaired: 0, unrepaired: 3 }, notReady));
  assert.match(report, /only reported \(verify: report\)/);
  assert.match(report, /tile-warn"><span class="tile-label">unrepaired<\/span><span class="tile-value" data-field="unrepaired">3</);
});

test("a sync without verification says so; a copy or an ended sync without it says nothing", () => {
  const off = { ...syncView("running", live), spec: { ...syncView("running", live).spec, verify: "off" } };
  assert.match(R.verificationHtml(off), /Off: this job does not compare the two sides \(verify: off\)/);
  assert.match(R.verificationHtml(syncView("running", { ...live, phase: "initial_copy" })), /Not started yet/);
  assert.equal(R.verificationHtml(syncView("completed", { ...live, phase: "committed" })), "");
});

test("the recent mismatches are a table, newest first, their _ids as escaped compact JSON", () => {
  const hostile = { "<img src=x onerror=alert(1)>": 1 };
  const v = {
    ...verification,
    mismatches: 12,
    repaired: 11,
    unrepaired: 1,
    recent: [
      { ns: "s.c -> d.c", id: { $numberLong: "10" }, kind: "different", repaired: true },
      { ns: "s.<b>c</b> -> d.c", id: hostile, kind: "missing", repaired: false },
    ],
  };
  const html = R.verificationHtml(verifiedView("running", live, v, notReady));
  assert.ok(!html.includes("<img"), html);
  assert.ok(!html.includes("<b>"), html);
  assert.ok(html.includes("<code>{&quot;&lt;img src=x onerror=alert(1)&gt;&quot;:1}</code>"), html);
  assert.ok(html.includes('<code>{&quot;$numberLong&quot;:&quot;10&quot;}</code>'), html);
  assert.match(html, /<th>namespace<\/th><th>_id<\/th><th>kind<\/th><th>repaired<\/th>/);
  const rows = html.match(/<tr><td>[^]*?<\/tr>/g);
  assert.equal(rows.length, 2);
  // Newest last in the view: first in the table.
  assert.match(rows[0], /s\.&lt;b&gt;c&lt;\/b&gt; -&gt; d\.c/);
  assert.match(rows[0], />missing<\/span><\/td><td class="unrepaired">no<\/td>/);
  assert.match(rows[1], />different<\/span><\/td><td class="">yes<\/td>/);
  assert.match(html, /the 2 most recent of 12/);
  // A hostile kind is escaped too.
  const odd = R.verificationHtml(verifiedView("running", live, { ...v, recent: [{ ns: "a", id: 1, kind: '"><script>x</script>', repaired: false }] }, notReady));
  assert.ok(!odd.includes("<script>"), odd);
});

test("after a commit that proved equality: verified through its time, and how many it rechecked", () => {
  const v = { ...verification, phase: "committed", verified_through: 1796615180.0, rechecked_at_commit: 1234 };
  const html = R.verificationHtml(verifiedView("completed", { ...live, phase: "committed", lag_secs: 0 }, v, { ok: false, reasons: ["the job is committed"] }));
  assert.match(html, /data-phase="committed">committed</);
  assert.ok(
    html.includes(`data-field="verified_through">Verified through <time>${R.esc(new Date(1796615180000).toLocaleString())}</time>, 1,234 rechecked at commit.</p>`),
    html,
  );
  assert.ok(!html.includes('data-field="unproven"'));
});

test("after a commit that did not prove equality: the reason, as a warning", () => {
  const v = { ...verification, phase: "committed", unproven: "1 mismatch stayed after <repair>" };
  const html = R.verificationHtml(verifiedView("completed", { ...live, phase: "committed", lag_secs: 0 }, v, { ok: false, reasons: ["the job is committed"] }));
  assert.match(html, /<div class="error-box note-box" data-field="unproven"><strong>The commit did not prove equality<\/strong><pre>1 mismatch stayed after &lt;repair&gt;<\/pre><\/div>/);
  assert.ok(!html.includes('data-field="verified_through"'));
});

test("writes the source took after the commit point are a warning, escaped", () => {
  const none = verifiedView("completed", { ...live, phase: "committed" }, verification, { ok: false, reasons: [] });
  assert.equal(R.writesAfterCommitHtml(none), "");
  assert.equal(R.writesAfterCommitHtml(baseView), "");
  const writes = { count: 3, namespaces: ["s.c", "s.<i>d</i>"], ids: ["late", { "<img src=x onerror=alert(1)>": 1 }] };
  const view = verifiedView("completed", { ...live, phase: "committed" }, verification, { ok: false, reasons: [] }, { writes_after_commit: writes });
  const html = R.writesAfterCommitHtml(view);
  assert.match(html, /role="alert" data-field="writes_after_commit"/);
  assert.match(html, /<strong>3 writes reached the source after the commit point<\/strong>/);
  assert.match(html, /Written in <code>s\.c<\/code>, <code>s\.&lt;i&gt;d&lt;\/i&gt;<\/code>\./);
  assert.match(html, /The application was not fully stopped/);
  assert.match(html, /_ids \(the first 2\): <code>&quot;late&quot;<\/code>, <code>\{&quot;&lt;img src=x onerror=alert\(1\)&gt;&quot;:1\}<\/code>/);
  assert.ok(!html.includes("<img") && !html.includes("<i>"), html);
  // One write, read under progress.sync as well.
  const one = syncView("completed", { ...live, phase: "committed", writes_after_commit: { count: 1, namespaces: ["s.c"], ids: ["late"] } });
  assert.match(R.writesAfterCommitHtml(one), /<strong>1 write reached the source after the commit point<\/strong>/);
  assert.match(R.writesAfterCommitHtml(one), /_ids: <code>&quot;late&quot;<\/code>/);
});

const reconcileView = (state, reconcile, spec = {}) => ({
  ...baseView,
  state,
  error: null,
  spec: { ...baseView.spec, mode: "reconcile", ...spec },
  progress: { ...baseView.progress, ...(reconcile ? { reconcile } : {}) },
});
const reconciled = {
  compared: 2006,
  equal: 1979,
  written: 21,
  deleted: 0,
  missing: 10,
  different: 11,
  extra: 6,
  delete_extra: false,
  first_extra: [
    { ns: "db.c", id: { $numberInt: "10000" } },
    { ns: "db.<c>", id: "<img src=x>" },
  ],
};

test("a job's mode: reconcile from its spec or its reconcile figures; a sync that reconciled stays a sync", () => {
  assert.equal(R.jobMode(reconcileView("running", null)), "reconcile");
  assert.equal(R.jobMode({ ...baseView, progress: { ...baseView.progress, reconcile: reconciled } }), "reconcile");
  assert.equal(R.jobMode({ ...syncView("running", { ...live, phase: "reconciling" }), progress: { ...syncProgress(live), reconcile: reconciled } }), "sync");
  assert.equal(R.allowedCommands("running", "reconcile").commit, false, "only a sync is committed");
  assert.match(R.specHtml(reconcileView("running", reconciled)), /<dt>mode<\/dt><dd>reconcile \(keep extra documents\)<\/dd>/);
  assert.match(R.specHtml(reconcileView("running", reconciled, { delete_extra: true })), /<dd>reconcile \(delete extra documents\)<\/dd>/);
  assert.match(R.specHtml({ ...baseView, spec: { ...baseView.spec, mode: "sync", on_history_lost: "reconcile" } }), /<dt>on history lost<\/dt><dd>reconcile<\/dd>/);
  assert.equal(R.reconcileHtml(baseView), "", "a copy has no reconcile panel");
  assert.equal(R.reconcileHtml(moveView("running", moving)), "", "nor a move");
  assert.equal(R.reconcileHtml(syncView("running", live)), "", "nor a sync that did not lose its history");
  assert.equal(R.reconcileSummary(baseView), "");
  assert.ok(!R.jobRowHtml(baseView).includes("job-reconcile"));
});

test("the form's problems about deleting extras and lost history go to their fields", () => {
  const { fields, general } = R.problemsByField([
    "delete_extra: only a reconcile deletes what the destination alone holds",
    "on_history_lost: only a sync follows the source's history",
    "mode: unknown mode",
  ]);
  assert.deepEqual(Object.keys(fields).sort(), ["delete_extra", "mode", "on_history_lost"]);
  assert.deepEqual(general, []);
});

test("a reconcile's panel shows what was compared, equal, written, and the extras kept, escaped", () => {
  const html = R.reconcileHtml(reconcileView("completed", reconciled));
  assert.match(html, /<section class="panel" id="reconcile"><h3>Reconcile<\/h3>/);
  assert.match(html, /data-field="reconcile_compared">2,006</);
  assert.match(html, /data-field="reconcile_equal">1,979</);
  assert.match(html, /data-field="reconcile_written">21</);
  assert.match(html, /data-field="reconcile_missing">10</);
  assert.match(html, /data-field="reconcile_different">11</);
  assert.match(html, /data-field="reconcile_extra">6</);
  assert.match(html, /tile-warn"><span class="tile-label">extras kept<\/span><span class="tile-value" data-field="reconcile_kept">6</);
  assert.doesNotMatch(html, /reconcile_deleted/, "nothing is deleted when extras are kept");
  assert.ok(html.includes("kept and reported"), html);
  assert.ok(html.includes("1,979 were equal on both sides and left alone"), html);
  assert.ok(html.includes("21 written from the source"), html);
  // The first kept extras, their _ids as escaped compact JSON; two of six shown.
  assert.match(html, /Kept at the destination <span class="muted">the first 2 of 6<\/span>/);
  assert.ok(html.includes("<td>db.c</td><td><code>{&quot;$numberInt&quot;:&quot;10000&quot;}</code></td>"), html);
  assert.ok(html.includes("db.&lt;c&gt;") && html.includes("&quot;&lt;img src=x&gt;&quot;"), html);
  assert.ok(!html.includes("<img") && !html.includes("<c>"), html);
  assert.doesNotMatch(html, /reconcile_digested/, "no digest line when nothing was digested");

  const digested = R.reconcileHtml(reconcileView("completed", { ...reconciled, digested: 1500 }));
  assert.match(digested, /data-field="reconcile_digested">1,500 of the equal documents were proven equal by a server-side hash/);

  const deleting = R.reconcileHtml(
    reconcileView("completed", { ...reconciled, deleted: 6, delete_extra: true, first_extra: undefined }, { delete_extra: true }),
  );
  assert.match(deleting, /data-field="reconcile_deleted">6</);
  assert.doesNotMatch(deleting, /reconcile_kept|reconcile_first_extra/);
  assert.ok(deleting.includes("are deleted"), deleting);

  assert.match(R.reconcileHtml(reconcileView("pending", null)), /data-field="reconcile_note">Not started yet.</);
  assert.match(R.reconcileHtml(reconcileView("failed", null)), /No figures of the reconcile for this job./);
});

test("a reconcile job's row says what was equal, written and kept or deleted", () => {
  assert.match(R.jobRowHtml(reconcileView("completed", reconciled)), /data-field="reconcile">reconcile: 1,979 equal, 21 written, 6 extra kept<\/span>/);
  assert.equal(R.reconcileSummary(reconcileView("completed", { ...reconciled, delete_extra: true, deleted: 6 })), "reconcile: 1,979 equal, 21 written, 6 extra deleted");
  assert.equal(R.reconcileSummary(reconcileView("running", { ...reconciled, extra: 0, first_extra: undefined })), "reconcile: 1,979 equal, 21 written");
  assert.equal(R.reconcileSummary(reconcileView("pending", null)), "reconcile");
  // A reconcile that kept extras completes with a message: a note, as for other jobs.
  const noted = { ...reconcileView("completed", reconciled), error: "6 extra documents kept at the destination" };
  assert.match(R.errorHtml(noted), /class="error-box note-box"/);
});

test("a reconcile's progress moves with the comparison: equal documents count as done", () => {
  assert.equal(R.doneCount({ docs: 21, skipped: 0, failed: 0, equal: 1979 }), 2000);
  assert.equal(R.fraction({ docs: 21, equal: 979, expected: 2000 }), 0.5);
  // The job's own counts have its equal documents in its reconcile figures.
  const job = { ...baseView.progress, docs: 21, expected: 2000, reconcile: { ...reconciled, equal: 1979 } };
  assert.equal(R.doneCount(job), 2000);
  assert.match(R.summaryHtml({ ...reconcileView("completed", null), progress: job }, 2000), /<progress max="1" value="1.0000"/);
  assert.equal(R.doneCount({ docs: 5, sync: live, reconcile: reconciled }), 5, "a sync's reconcile does not move its copy's bar");
  const html = R.namespacesHtml({
    ...baseView,
    progress: {
      ...baseView.progress,
      namespaces: [{ source: "a.b", destination: "a.b", bytes: 0, finished: false, docs_per_sec: 1, docs: 25, equal: 75, deleted: 4, expected: 200 }],
    },
  });
  assert.match(html, /<progress max="1" value="0.5000" aria-label="a.b progress">/);
  assert.match(html, /25 \/ 200<br><span class="muted">75 equal \(not written\), 4 of them deletes<\/span>/);
});

test("a sync that lost its history says so: its phase in words, when, why, and whether it recovered", () => {
  assert.equal(R.phaseLabel("reconciling"), "history lost, reconciling");
  const lost = { at: 1700000000, reason: "<b>Resume of change stream was not possible</b>", recovered: false };
  const reconciling = { ...syncView("running", { ...live, phase: "reconciling", history_lost: lost }) };
  reconciling.progress = { ...reconciling.progress, reconcile: { ...reconciled, first_extra: undefined } };
  assert.equal(R.syncSummary(reconciling), "sync history lost, reconciling");
  assert.equal(R.syncLag(reconciling), null, "no lag while reconciling");
  const html = R.syncHtml(reconciling);
  assert.match(html, /data-field="sync_phase" data-phase="reconciling">history lost, reconciling<\/span>/);
  assert.match(html, /data-field="history_lost" data-recovered="false"/);
  assert.ok(html.includes(R.esc(R.formatTime(1700000000))), html);
  assert.match(html, /data-field="history_lost_reason">&lt;b&gt;Resume of change stream was not possible&lt;\/b&gt;</);
  assert.match(html, /Not recovered yet: the destination is being reconciled/);
  assert.ok(!html.includes("<b>"), html);
  // Its reconcile's figures show in a panel of their own.
  assert.match(R.reconcileHtml(reconciling), /<h3>Reconcile after lost history<\/h3>/);
  assert.match(R.reconcileHtml(reconciling), /data-field="reconcile_written">21</);

  const recovered = syncView("running", { ...live, history_lost: { ...lost, recovered: true } });
  assert.match(R.historyLostHtml(recovered), /data-recovered="true"/);
  assert.match(R.historyLostHtml(recovered), /Recovered: the destination was reconciled/);
  assert.match(R.historyLostHtml(syncView("failed", { ...live, history_lost: lost })), /Not recovered.</);
  assert.equal(R.historyLostHtml(syncView("running", live)), "", "nothing when the history was not lost");
});

test("held ranges run from each change to held to the next release, or to now", () => {
  assert.deepEqual(R.heldRanges([], 100), []);
  assert.deepEqual(R.heldRanges(undefined, 100), []);
  const decisions = [
    { at: 10, throttled: true, reason: "flag file /tmp/x exists" },
    { at: 15, throttled: false, reason: null },
    // A change of reason only, while not held (a sync's short oplog headroom), starts nothing.
    { at: 20, throttled: false, reason: "not held, oplog headroom 1200 s < 3600 s: flag file /tmp/x exists" },
    { at: 30, throttled: true, reason: "flag file /tmp/x exists" },
    // Held for another reason: the same range goes on.
    { at: 32, throttled: true, reason: "destination lag 3.2 s > 1 s" },
  ];
  assert.deepEqual(R.heldRanges(decisions, 40), [
    [10, 15],
    [30, 40],
  ]);
  // The list holds the latest 100 changes: it may start with a release.
  assert.deepEqual(R.heldRanges([{ at: 5, throttled: false, reason: null }, { at: 8, throttled: true, reason: "x" }, { at: 9, throttled: false, reason: null }], 50), [[8, 9]]);
  // A browser clock behind the service's never makes a range end before it starts.
  assert.deepEqual(R.heldRanges([{ at: 100, throttled: true, reason: "x" }], 90), [[100, 100]]);
});

const guarded = (guard, state = "running") => ({
  id: 3,
  state,
  spec: { namespaces: ["shop.orders"] },
  progress: null,
  load_guard: { throttled: false, reason: null, signals: {}, unread: [], decisions: [], settings: null, commit_postponed: null, ...guard },
});

test("the load guard's panel shows nothing when it watches nothing", () => {
  assert.equal(R.loadGuardHtml(guarded({})), "");
  assert.equal(R.loadGuardHtml({ id: 1, state: "running" }), "");
});

test("the load guard's panel: held and why, signals, unread ones, settings and a postponed commit, escaped", () => {
  const html = R.loadGuardHtml(
    guarded({
      throttled: true,
      reason: "flag file /tmp/<b>hold</b> exists",
      signals: { "source:connections.current": 612, "destination lag ms": 0.5 },
      unread: ["source:<i>x</i>: no such field"],
      decisions: [{ at: 1700000000, throttled: true, reason: "flag file /tmp/<b>hold</b> exists" }],
      settings: { max_load: "source:connections.current>500", throttle_flag_file: "/tmp/<b>hold</b>", guard_interval_ms: 200 },
      commit_postponed: "flag file <u>/tmp/later</u> exists",
    }),
  );
  assert.match(html, /data-field="guard_state" data-held="true">Held</);
  assert.ok(html.includes('<span data-field="guard_reason">flag file /tmp/&lt;b&gt;hold&lt;/b&gt; exists</span>'), html);
  assert.ok(html.includes("<td>source:connections.current</td><td class=\"num\">612</td>"), html);
  assert.ok(html.includes("<td>destination lag ms</td><td class=\"num\">0.5</td>"), html);
  assert.ok(html.includes("<li>source:&lt;i&gt;x&lt;/i&gt;: no such field</li>"), html);
  assert.ok(html.includes("<dt>max_load</dt><dd>source:connections.current&gt;500</dd>"), html);
  assert.ok(html.includes("<dt>guard_interval_ms</dt><dd>200</dd>"), html);
  assert.ok(html.includes("Commit postponed: flag file &lt;u&gt;/tmp/later&lt;/u&gt; exists"), html);
  for (const tag of ["<b>", "<i>", "<u>"]) assert.ok(!html.includes(tag), `${tag} in ${html}`);
});

test("the load guard's panel says Writing, with the reason a hold was overruled, and Not held once ended", () => {
  const settings = { throttle_flag_file: "/tmp/hold" };
  const writing = R.loadGuardHtml(guarded({ settings, reason: "not held, oplog headroom 1200 s < 3600 s: flag file /tmp/hold exists" }));
  assert.match(writing, /data-held="false">Writing</);
  assert.match(writing, /data-field="guard_reason">not held, oplog headroom/);
  assert.ok(!writing.includes("guard_signals"), "no signal table without signals");
  assert.ok(!writing.includes("guard_unread"));
  assert.ok(!writing.includes("commit_postponed"));
  const ended = R.loadGuardHtml(guarded({ settings, throttled: true, reason: "flag file /tmp/hold exists" }, "cancelled"));
  assert.match(ended, /data-held="false">Not held</);
  assert.ok(!ended.includes("guard_reason"), ended);
  // Held by the service's flag file without settings of its own: the panel still shows.
  assert.match(R.loadGuardHtml(guarded({ throttled: true, reason: "the service's flag file /x exists" })), /Held<\/span>.*the service&#39;s flag file/);
});

test("a held job's row says so, with the reason as its title; a writing or ended one does not", () => {
  const held = R.jobRowHtml(guarded({ throttled: true, reason: 'flag file "/tmp/<x>" exists', settings: {} }));
  assert.ok(held.includes('<span class="job-held" data-field="held" title="flag file &quot;/tmp/&lt;x&gt;&quot; exists">held</span>'), held);
  assert.ok(!R.jobRowHtml(guarded({ settings: {} })).includes("job-held"));
  assert.ok(!R.jobRowHtml(guarded({ throttled: true, settings: {} }, "completed")).includes("job-held"));
});

test("reads a transform file: an object of patterns, else a problem naming the file", () => {
  const text = '{"shop.users": [{"drop": "pad"}, {"set": "env", "value": "staging"}], "logs.*": [{"redact": "ip"}]}';
  const read = R.parseTransform("mask.json", text);
  assert.deepEqual(read, { value: { "shop.users": [{ drop: "pad" }, { set: "env", value: "staging" }], "logs.*": [{ redact: "ip" }] } });
  // In the order written: a namespace two patterns match gets their steps in that order.
  assert.deepEqual(Object.keys(read.value), ["shop.users", "logs.*"]);
  assert.match(R.parseTransform("notes.txt", "drop pad").problem, /^transform file notes\.txt is not valid JSON: /);
  assert.match(R.parseTransform("empty.json", "").problem, /^transform file empty\.json is not valid JSON/);
  for (const other of ["[]", "null", "3", '"x"']) {
    assert.equal(R.parseTransform("t.json", other).problem, "transform file t.json must be a JSON object of namespace patterns, each with a list of steps");
  }
  // Its problems go under the file input, as the service's do ("transform: shop.users, step 1 …").
  assert.equal(R.problemField(R.parseTransform("t.json", "[]").problem), "transform");
  assert.equal(R.problemField('transform: shop.users, step 1 {"drop":1}: expected a path'), "transform");
  // The move's consent to keep only transformed copies has its own checkbox.
  assert.equal(R.problemField("allow_transform_move: only a move deletes from the source"), "allow_transform_move");
});

test("a transform's summary counts its patterns and steps", () => {
  assert.equal(R.transformSummary({ "a.b": [{ drop: "x" }, { redact: "y" }], "c.*": [{ hmac: "z" }, { drop: "p" }, { drop: "q" }] }), "2 patterns, 5 steps");
  assert.equal(R.transformSummary({ "a.b": [{ drop: "x" }] }), "1 pattern, 1 step");
  assert.equal(R.transformSummary({}), "0 patterns, 0 steps");
  // A pattern without a list (the service refuses it) has no steps to count.
  assert.equal(R.transformSummary({ "a.b": { drop: "x" } }), "1 pattern, 0 steps");
});

test("each transform step is worded as the service words it", () => {
  assert.equal(R.stepLabel({ drop: "a.b" }), "drop a.b");
  assert.equal(R.stepLabel({ rename: "tel", to: "phone" }), "rename tel to phone");
  assert.equal(R.stepLabel({ set: "env", value: "staging" }), 'set env = "staging"');
  assert.equal(R.stepLabel({ set: "n", value: { a: [1] } }), 'set n = {"a":[1]}');
  assert.equal(R.stepLabel({ redact: "ssn" }), "redact ssn");
  assert.equal(R.stepLabel({ hmac: "email" }), "hmac email");
  assert.equal(R.stepLabel({ shout: "x" }), '{"shout":"x"}');
  assert.equal(R.stepLabel(null), "null");
});

test("the spec shows a transform's patterns and steps, escaped, and nothing without one", () => {
  assert.ok(!R.specHtml(baseView).includes("transform"), "no transform, no row");
  const transform = { "shop.users": [{ drop: "pad" }, { set: "env", value: "<b>staging</b>" }], "<i>x</i>.*": [{ rename: "a", to: "b" }] };
  const html = R.specHtml({ ...baseView, spec: { ...baseView.spec, transform } });
  assert.ok(html.includes("<dt>transform</dt>"), html);
  assert.ok(html.includes('<li data-pattern="shop.users"><code>shop.users</code>: drop pad, set env = &quot;&lt;b&gt;staging&lt;/b&gt;&quot;</li>'), html);
  assert.ok(html.includes('<li data-pattern="&lt;i&gt;x&lt;/i&gt;.*"><code>&lt;i&gt;x&lt;/i&gt;.*</code>: rename a to b</li>'), html);
  assert.ok(!html.includes("<b>") && !html.includes("<i>"), html);
});

test("a plan shows each namespace's transform steps, escaped", () => {
  const namespace = { source: "shop.users", destination: "copy.users", documents: 3, bytes: 300, indexes: [], destination_state: "absent" };
  const plan = { namespaces: [namespace], views: [], problems: [], documents: 3, bytes: 300, estimate: null, drop: false, indexes: "after", blocked: false };
  assert.ok(!R.planHtml(plan).includes("plan-transform"), "no transform, no row");
  const html = R.planHtml({ ...plan, namespaces: [{ ...namespace, transform: ["drop pad", 'set env = "<b>"'] }] });
  assert.ok(html.includes('<td colspan="4" data-field="transform"><span class="muted">transform:</span> drop pad, set env = &quot;&lt;b&gt;&quot;</td>'), html);
});
