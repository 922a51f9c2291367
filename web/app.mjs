// The dashboard of `mongoferry serve`: job views from the API in, the page out.
//
// Two screens, chosen by the URL's hash: `#/` (the form and the job list, polled every second:
// one request lists every job, so many running jobs never use up the browser's six connections
// per host) and `#/jobs/{id}` (one job, fed by its event stream: figures, charts, controls, its
// load guard, held or writing and why, with the times it held shaded on the docs/s chart; for a
// sync job also its phase, lag, changes applied, a lag chart, its continuous verification, the
// writes the source took after the commit point, and the Commit button with why it is not ready).
// The form's transform file is read and parsed in the browser (a file that is not a JSON object
// is refused there, naming it) and sent as the spec's `transform`. Passwords and secrets typed
// into the form are replaced by the service's masked URI once the job is accepted. A service
// started with an API token answers 401 until the page has it: the page then asks for it once,
// keeps it in this tab's sessionStorage (never in a URL, a cookie or localStorage) and sends it
// as `Authorization: Bearer` with every request — the event stream too, which is why it is read
// with fetch() rather than EventSource (which cannot send headers).

import * as R from "./render.mjs";

const LIST_EVERY_MS = 1000;
/**
 * Samples kept per job for the charts: the job's saved series (at most 1,000 points, its whole
 * life) and about 15 minutes more at one a second.
 */
const KEPT_SAMPLES = 2000;
const MIN_SAMPLE_GAP_SECS = 0.5;
const WORKER_COLOURS = ["#d9480f", "#2b8a3e", "#7048e8", "#c2255c", "#1098ad", "#e67700", "#5c940d", "#862e9c"];

const $ = (selector) => document.querySelector(selector);

/** Where this tab keeps the API token, for as long as the tab lives. */
const TOKEN_KEY = "mongoferry.token";
/** How long a broken event stream waits before it connects again. */
const RECONNECT_MS = 2000;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** The parts of a job's screen drawn from its view. */
const JOB_PARTS = ["#job-state", "#job-error", "#job-writes-after", "#summary", "#job-guard", "#job-sync", "#job-verification", "#commit-readiness", "#job-move", "#job-reconcile", "#job-adaptive", "#job-schema", "#job-dead", "#job-namespaces", "#job-workers", "#job-spec"];

/**
 * Replaces an element's content only when it changed, so a refresh every second does not move
 * the keyboard focus, a text selection or an opened `<details>` for nothing.
 */
const rendered = new WeakMap();

function setHtml(element, html) {
  if (rendered.get(element) === html) return;
  const opened = [...element.querySelectorAll("details")].map((d) => d.open);
  element.innerHTML = html;
  rendered.set(element, html);
  element.querySelectorAll("details").forEach((d, i) => {
    if (opened[i]) d.open = true;
  });
}

const page = {
  listTimer: null,
  listGeneration: 0,
  events: null,
  /** The timer that looks again at an interrupted job (a restarted service may continue it). */
  recheck: null,
  jobId: null,
  /** The job's latest view shown (the commit dialog lists its reasons not to commit yet). */
  view: null,
  /** The state the job's screen shows, to tell a stale view from a newer one. */
  shownState: null,
  charts: { job: null, workers: null, lag: null, workerIds: "" },
  /** The time ranges in which the load guard held the job, shaded on its docs/s chart. */
  held: [],
  /** Chart samples per job id, kept while the page is open. */
  samples: new Map(),
  resize: null,
  /** Said once on the next job screen (set by the form). */
  notice: "",
};

// ---------------------------------------------------------------- the token

/** The headers every request carries: the token when the page has one. */
function authHeaders(extra = {}) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  return token ? { ...extra, authorization: `Bearer ${token}` } : extra;
}

/** While the sign-in dialog is open: the promise every refused request waits on. */
let signingIn = null;

/**
 * Asks for the token (once, however many requests were refused meanwhile) and resolves when a
 * new one is entered. `refused`: the page had a token and the service turned it down.
 */
function askToken(refused) {
  if (signingIn) return signingIn;
  if (refused) sessionStorage.removeItem(TOKEN_KEY);
  $("#sign-in-problem").textContent = refused ? "The service refused that token. Check it and try again." : "";
  $("#token").value = "";
  $("#sign-out").hidden = true;
  setConnection("this service needs its API token");
  signingIn = new Promise((resolve) => {
    const form = $("#sign-in-form");
    const submit = (event) => {
      event.preventDefault();
      const token = $("#token").value.trim();
      if (!token) return;
      sessionStorage.setItem(TOKEN_KEY, token);
      $("#token").value = "";
      form.removeEventListener("submit", submit);
      $("#sign-in").close();
      $("#sign-out").hidden = false;
      setConnection("");
      signingIn = null;
      resolve();
    };
    form.addEventListener("submit", submit);
  });
  $("#sign-in").showModal();
  $("#token").focus();
  return signingIn;
}

/** A fetch with the token that, when the service asks for one, asks the operator and tries again. */
async function authorizedFetch(path, init = {}) {
  for (;;) {
    const hadToken = Boolean(sessionStorage.getItem(TOKEN_KEY));
    const response = await fetch(path, { ...init, headers: authHeaders(init.headers) });
    if (response.status !== 401) return response;
    await askToken(hadToken);
  }
}

// ---------------------------------------------------------------- API

/**
 * One API call: `{status, ok, data}`; `status` 0 when the service could not be reached. Every
 * request that changes something says `Content-Type: application/json` (the service refuses it
 * otherwise, so that no other site's page can send it), the bodiless commands too.
 */
async function api(method, path, body) {
  let response;
  try {
    response = await authorizedFetch(path, {
      method,
      headers: method === "GET" ? {} : { "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    return { status: 0, ok: false, data: { error: `the service is unreachable (${e.message})` } };
  }
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = { error: `unexpected answer (HTTP ${response.status})` };
  }
  return { status: response.status, ok: response.ok, data };
}

function setConnection(text) {
  $("#connection").textContent = text;
}

// ---------------------------------------------------------------- routing

function route() {
  const match = /^#\/jobs\/(\d+)$/.exec(location.hash);
  if (match) showJob(Number(match[1]));
  else showHome();
}

function leaveJob() {
  if (page.events) page.events.abort();
  page.events = null;
  clearTimeout(page.recheck);
  page.recheck = null;
  page.jobId = null;
  page.view = null;
  page.shownState = null;
  for (const key of ["job", "workers", "lag"]) {
    if (page.charts[key]) page.charts[key].destroy();
    page.charts[key] = null;
  }
  page.charts.workerIds = "";
  page.held = [];
  $("#lag-panel").hidden = true;
  $("#commit").hidden = true;
  for (const id of JOB_PARTS) {
    $(id).innerHTML = "";
    rendered.delete($(id));
  }
}

function showHome() {
  leaveJob();
  $("#job-view").hidden = true;
  $("#home-view").hidden = false;
  document.title = "mongoferry";
  pollList(++page.listGeneration);
}

// ---------------------------------------------------------------- the job list

async function pollList(generation) {
  clearTimeout(page.listTimer);
  const result = await api("GET", "/api/jobs");
  // A later navigation started its own loop (or left the list): this one ends.
  if (generation !== page.listGeneration || $("#home-view").hidden) return;
  if (result.ok) {
    setConnection("");
    setHtml($("#job-list"), R.jobListHtml(result.data.jobs));
  } else {
    setConnection(result.data?.error ?? "cannot list the jobs");
  }
  page.listTimer = setTimeout(() => pollList(generation), LIST_EVERY_MS);
}

// ---------------------------------------------------------------- the form

const FORM_FIELDS = ["from", "to", "namespaces", "filter", "transform", "mode", "keep_source", "allow_transform_move", "delete_extra", "on_history_lost", "workers", "batch_size", "rate", "strategy", "rate_bytes", "adaptive"];

function clearProblems() {
  $("#form-problems").innerHTML = "";
  for (const field of FORM_FIELDS) {
    $(`#problems-${field}`).innerHTML = "";
    $(`#${field}`).removeAttribute("aria-invalid");
  }
}

function showProblems(problems) {
  const { fields, general } = R.problemsByField(problems);
  let first = null;
  for (const [field, list] of Object.entries(fields)) {
    const input = $(`#${field}`);
    if (!input) {
      general.push(...list);
      continue;
    }
    $(`#problems-${field}`).innerHTML = list.map((p) => `<li>${R.esc(p)}</li>`).join("");
    input.setAttribute("aria-invalid", "true");
    if (field === "strategy" || field === "rate_bytes" || field === "adaptive") $(".more").open = true;
    first ??= input;
  }
  if (general.length > 0) {
    $("#form-problems").innerHTML = `<ul>${general.map((p) => `<li>${R.esc(p)}</li>`).join("")}</ul>`;
  }
  if (first) first.focus();
}

/**
 * The chosen transform file, read and parsed: `{}` when none is chosen, else `{name, value}` or
 * `{name, problem}`. Read again at each submit, so a file edited since it was chosen is sent as
 * it is now.
 */
async function readTransform() {
  const file = $("#transform").files[0];
  if (!file) return {};
  let text;
  try {
    text = await file.text();
  } catch (e) {
    return { name: file.name, problem: `transform file ${file.name} cannot be read: ${e.message}` };
  }
  return { name: file.name, ...R.parseTransform(file.name, text) };
}

/** Says under the file input what the chosen file holds, or why it cannot be used. */
async function showTransform() {
  const read = await readTransform();
  const summary = $("#transform-summary");
  $("#problems-transform").innerHTML = read.problem ? `<li>${R.esc(read.problem)}</li>` : "";
  if (read.problem) $("#transform").setAttribute("aria-invalid", "true");
  else $("#transform").removeAttribute("aria-invalid");
  summary.textContent = read.value ? `${read.name}: ${R.transformSummary(read.value)}` : "";
  summary.hidden = !read.value;
  $("#transform-clear").hidden = read.name === undefined;
  modeOptions();
}

/**
 * Shows the options that mean something for the chosen mode: keeping the source and moving
 * through a transform for a move (the latter once a file is chosen), deleting extras for a
 * reconcile, what to do when the source's history is lost for a sync.
 */
function modeOptions() {
  const mode = $("#mode").value;
  $("#keep-source-field").hidden = mode !== "move";
  $("#allow-transform-move-field").hidden = mode !== "move" || $("#transform").files.length === 0;
  $("#delete-extra-field").hidden = mode !== "reconcile";
  $("#on-history-lost-field").hidden = mode !== "sync";
}

/** The spec the form describes, or the problems found before asking the service. */
async function readForm() {
  const problems = [];
  const spec = {
    from: $("#from").value.trim(),
    to: $("#to").value.trim(),
    namespaces: R.parseNamespaces($("#namespaces").value),
    mode: $("#mode").value,
  };
  if (spec.mode === "move" && $("#keep_source").checked) spec.keep_source = true;
  if (spec.mode === "reconcile" && $("#delete_extra").checked) spec.delete_extra = true;
  if (spec.mode === "sync" && $("#on_history_lost").checked) spec.on_history_lost = "reconcile";
  for (const field of ["from", "to"]) {
    if (R.hasMaskedSecret(spec[field])) {
      problems.push(`${field}: a password or secret is masked (***); type it again`);
    }
  }
  const filter = R.parseFilter($("#filter").value);
  if (filter.problem) problems.push(filter.problem);
  else if (filter.value) spec.filter = filter.value;
  const transform = await readTransform();
  if (transform.problem) problems.push(transform.problem);
  else if (transform.value) spec.transform = transform.value;
  if (spec.mode === "move" && spec.transform && $("#allow_transform_move").checked) spec.allow_transform_move = true;
  for (const field of ["workers", "batch_size"]) {
    const input = $(`#${field}`);
    const parsed = R.parseWhole(field, input.value, input.validity.badInput);
    if (parsed.problem) problems.push(parsed.problem);
    else if (parsed.value !== null) spec[field] = parsed.value;
  }
  for (const field of ["rate", "rate_bytes"]) {
    const input = $(`#${field}`);
    const parsed = R.parseRate(field, input.value, input.validity.badInput);
    if (parsed.problem) problems.push(parsed.problem);
    else if (parsed.value !== null) spec[field] = parsed.value;
  }
  if ($("#strategy").value) spec.strategy = $("#strategy").value;
  const adaptive = $("#adaptive");
  const target = R.parseRate("adaptive", adaptive.value, adaptive.validity.badInput);
  if (target.problem) problems.push(target.problem);
  else if (target.value !== null) spec.adaptive = { target_ms: target.value };
  return { spec, problems };
}

async function submitJob(event) {
  event.preventDefault();
  clearProblems();
  const button = $("#submit-job");
  // Disabled while the transform file is read too: a second click then sends no second job.
  button.disabled = true;
  const { spec, problems } = await readForm();
  if (problems.length > 0) {
    button.disabled = false;
    showProblems(problems);
    return;
  }
  const result = await api("POST", "/api/jobs", spec);
  button.disabled = false;
  if (!result.ok) {
    // The URIs stay as typed, so the operator fixes the problem without retyping everything.
    const problems = result.data?.problems ?? [result.data?.error ?? `HTTP ${result.status}`];
    showProblems(problems);
    return;
  }
  // The job is accepted: the form keeps the URIs as the service shows them, without passwords.
  $("#from").value = result.data.spec.from;
  $("#to").value = result.data.spec.to;
  // 200 instead of 202: the same job is already active, and the service answered with it.
  page.notice = result.status === 200 ? "The same job was already active: this is that job." : "";
  location.hash = `#/jobs/${result.data.id}`;
}

/** Asks the service what the form's job would do, and shows it under the form. */
async function planJob() {
  clearProblems();
  const button = $("#plan-job");
  button.disabled = true;
  const { spec, problems } = await readForm();
  if (problems.length > 0) {
    button.disabled = false;
    showProblems(problems);
    return;
  }
  const shown = $("#plan");
  shown.hidden = false;
  shown.innerHTML = "<p>Reading both clusters…</p>";
  const result = await api("POST", "/api/plan", spec);
  button.disabled = false;
  if (!result.ok) {
    shown.hidden = true;
    showProblems(result.data?.problems ?? [result.data?.error ?? `HTTP ${result.status}`]);
    return;
  }
  shown.innerHTML = R.planHtml(result.data);
}

// ---------------------------------------------------------------- one job

async function showJob(id) {
  leaveJob();
  clearTimeout(page.listTimer);
  page.listGeneration++;
  page.jobId = id;
  $("#home-view").hidden = true;
  $("#job-view").hidden = false;
  $("#job-title").textContent = `Job ${id}`;
  $("#job-report").href = `/api/jobs/${id}/report`;
  document.title = `job ${id} · mongoferry`;
  $("#job-live").textContent = "";
  controlStatus(page.notice ?? "", false);
  page.notice = "";
  $("#job-missing").hidden = true;
  $("#job-body").hidden = false;
  for (const input of ["#rate-box", "#workers-box"]) delete $(input).dataset.dirty;

  const result = await api("GET", `/api/jobs/${id}`);
  if (page.jobId !== id) return;
  if (!result.ok) {
    $("#job-body").hidden = true;
    $("#job-missing").hidden = false;
    $("#job-missing").textContent = result.data?.error ?? `job ${id} cannot be shown`;
    return;
  }
  // The job's whole history first, then the event stream extends it.
  const series = await api("GET", `/api/jobs/${id}/series`);
  if (page.jobId !== id) return;
  if (series.ok) page.samples.set(id, R.samplesFromSeries(series.data.series));
  makeCharts(result.data);
  update(result.data);
  if (result.data.state === "interrupted") watchInterrupted(result.data);
  else if (!R.isFinal(result.data.state)) follow(result.data);
}

/**
 * Follows the job's event stream until its final state: read with fetch(), so that it carries
 * the token; connected again after a break, as EventSource would.
 */
async function follow(view) {
  const events = new AbortController();
  page.events = events;
  const current = () => page.events === events;
  while (current()) {
    let response;
    try {
      response = await authorizedFetch(view.links.events, { headers: { accept: "text/event-stream" }, cache: "no-store", signal: events.signal });
    } catch {
      if (!current()) return;
      $("#job-live").textContent = "reconnecting…";
      await sleep(RECONNECT_MS);
      continue;
    }
    if (!current()) return;
    if (!response.ok) {
      // 429: the service has too many streams open; anything else will not change by waiting.
      const busy = response.status === 429;
      $("#job-live").textContent = busy ? "the service is busy: retrying…" : "disconnected: reload to retry";
      if (!busy) {
        page.events = null;
        return;
      }
      await sleep(5000);
      continue;
    }
    $("#job-live").textContent = "live";
    const ended = await readEvents(response, events);
    if (ended || !current()) return;
    $("#job-live").textContent = "reconnecting…";
    await sleep(RECONNECT_MS);
  }
}

/** Shows the events of one response until the job's final state (true) or the stream's end. */
async function readEvents(response, events) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffered = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done || page.events !== events) return false;
      const parsed = R.parseEvents(buffered + value);
      buffered = parsed.rest;
      for (const message of parsed.events) {
        if (message.event !== "state" && message.event !== "progress") continue;
        const next = JSON.parse(message.data);
        update(next);
        if (R.isFinal(next.state)) {
          // The service ends the stream after the final state.
          events.abort();
          page.events = null;
          if (next.state === "interrupted") watchInterrupted(next);
          else $("#job-live").textContent = "ended";
          return true;
        }
      }
    }
  } catch {
    // The connection broke, or the page left the job (abort).
    return false;
  }
}

/**
 * Downloads the job's report, a self-contained HTML file (`job-ID-report.html`) to keep or attach
 * to a ticket. Fetched with the token, if any; saved as a file rather than opened from a Blob
 * URL, which would inherit this page's Content-Security-Policy and lose the report's own styles.
 */
async function downloadReport(event) {
  event.preventDefault();
  const path = $("#job-report").getAttribute("href");
  try {
    const response = await authorizedFetch(path);
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const url = URL.createObjectURL(new Blob([await response.text()], { type: "text/html" }));
    const link = document.createElement("a");
    link.href = url;
    link.download = `job-${page.jobId}-report.html`;
    link.click();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
  } catch (e) {
    controlStatus(`cannot load the report: ${e.message}`, true);
  }
}

/** The API's description or the metrics, fetched with the token, shown in a dialog. */
async function showRaw(path) {
  let text;
  try {
    const response = await authorizedFetch(path);
    text = await response.text();
    if (path.endsWith(".json")) text = JSON.stringify(JSON.parse(text), null, 2);
  } catch (e) {
    text = `cannot load ${path}: ${e.message}`;
  }
  $("#raw-title").textContent = path;
  $("#raw-text").textContent = text;
  $("#raw").showModal();
}

/**
 * An interrupted job is continued, as the same job, by a restarted service: the page asks for it
 * every few seconds (the service may be down meanwhile) and follows it again once it moves on.
 */
function watchInterrupted(view) {
  $("#job-live").textContent = "interrupted: waiting for the service to continue it";
  clearTimeout(page.recheck);
  page.recheck = setTimeout(async () => {
    page.recheck = null;
    if (page.jobId !== view.id) return;
    const result = await api("GET", `/api/jobs/${view.id}`);
    if (page.jobId !== view.id || page.events || page.recheck) return;
    if (!result.ok || result.data.state === "interrupted") {
      watchInterrupted(view);
      return;
    }
    update(result.data);
    if (R.isFinal(result.data.state)) $("#job-live").textContent = "ended";
    else follow(result.data);
  }, 3000);
}

function update(view) {
  if (view.id !== page.jobId) return;
  // A command's answer may arrive after the stream's final event: it is the older view.
  if (R.isStale(page.shownState, view.state)) return;
  page.shownState = view.state;
  page.view = view;
  const mode = R.jobMode(view);
  const allowed = R.allowedCommands(view.state, mode, view.progress?.sync?.phase ?? null);
  setHtml($("#job-state"), R.stateBadge(view.state));
  setHtml($("#job-error"), R.errorHtml(view));
  setHtml($("#summary"), R.summaryHtml(view, Date.now() / 1000));
  setHtml($("#job-guard"), R.loadGuardHtml(view));
  page.held = R.heldRanges(view.load_guard?.decisions, view.finished_at ?? Date.now() / 1000);
  setHtml($("#job-writes-after"), R.writesAfterCommitHtml(view));
  setHtml($("#job-sync"), R.syncHtml(view));
  setHtml($("#job-verification"), R.verificationHtml(view));
  setHtml($("#job-move"), R.moveHtml(view));
  setHtml($("#job-reconcile"), R.reconcileHtml(view));
  setHtml($("#job-adaptive"), R.adaptiveHtml(view));
  setHtml($("#job-nodes"), R.nodesHtml(view));
  setHtml($("#job-schema"), R.schemaHtml(view));
  setHtml($("#job-dead"), R.deadLettersHtml(view));
  setHtml($("#job-namespaces"), R.namespacesHtml(view) || `<p class="muted" data-field="namespaces_note">${R.esc(R.notStartedNote(view, "namespaces"))}</p>`);
  setHtml($("#job-workers"), R.workersHtml(view) || `<p class="muted" data-field="workers_note">${R.esc(R.notStartedNote(view, "workers"))}</p>`);
  setHtml($("#job-spec"), R.specHtml(view));
  // A job in a final state takes no command: no greyed-out controls that look usable. An
  // interrupted job gets them back when a restarted service continues it.
  $("#controls").hidden = R.isFinal(view.state);
  $("#pause").disabled = !allowed.pause;
  $("#resume").disabled = !allowed.resume;
  $("#cancel").disabled = !allowed.cancel;
  $("#commit").hidden = mode !== "sync";
  $("#commit").disabled = !allowed.commit;
  // Not ready (see can_commit): said beside the button, which stays usable (an operator may
  // commit anyway, after the dialog lists the reasons).
  const notReady = allowed.commit && R.commitReasons(view).length > 0;
  $("#commit").classList.toggle("not-ready", notReady);
  $("#commit").dataset.ready = notReady ? "false" : "true";
  setHtml($("#commit-readiness"), R.commitReadinessHtml(view));
  for (const id of ["#rate-box", "#rate-slider", "#rate-unlimited", "#workers-box", "#workers-apply"]) {
    $(id).disabled = !allowed.tune;
  }
  // What the operator is typing is left alone; otherwise the boxes show the job's settings.
  const rateBox = $("#rate-box");
  if (!rateBox.dataset.dirty && document.activeElement !== rateBox) {
    rateBox.value = view.limits?.rate ?? "";
    $("#rate-slider").value = R.rateToSlider(view.limits?.rate);
  }
  const workersBox = $("#workers-box");
  if (!workersBox.dataset.dirty && document.activeElement !== workersBox) workersBox.value = view.workers;
  if (view.progress && !R.isFinal(view.state)) addSample(view);
  else drawCharts();
}

// ---------------------------------------------------------------- charts

function samplesOf(id) {
  if (!page.samples.has(id)) page.samples.set(id, []);
  return page.samples.get(id);
}

function addSample(view) {
  const samples = samplesOf(view.id);
  const workers = {};
  for (const w of view.progress.workers) workers[w.id] = w.docs;
  const sample = {
    t: Date.now() / 1000,
    total: view.progress.docs_per_sec,
    limit: view.limits?.rate ?? null,
    workers,
    lag: R.syncLag(view),
  };
  // Views that arrive together (the page's first request, a state change, a command's answer)
  // make one point, so the chart keeps about one point a second.
  if (samples.length > 0 && sample.t - samples[samples.length - 1].t < MIN_SAMPLE_GAP_SECS) samples.pop();
  samples.push(sample);
  sample.workerRates = R.workerRates(samples);
  if (samples.length > KEPT_SAMPLES) samples.splice(0, samples.length - KEPT_SAMPLES);
  drawCharts();
}

/** The x axis' tick spacings, in seconds: from a second to an hour. */
const TIME_INCRS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600];

/** A tick's label: the browser's local time of day, to the second ("22:46:52"). */
function clockTime(secs) {
  const at = new Date(secs * 1000);
  return [at.getHours(), at.getMinutes(), at.getSeconds()].map((n) => String(n).padStart(2, "0")).join(":");
}

/** A chart's options; its y axis starts at 0 and shows at least up to `floor`. */
function chartOptions(element, series, floor = 10) {
  return {
    width: Math.max(240, element.clientWidth),
    height: 220,
    series: [{}, ...series],
    scales: {
      // One point (or none) has no span: uPlot would then stretch the axis over years.
      x: { time: true, range: (_u, min, max) => (min === null || min === max ? [(max ?? 0) - 60, (max ?? 0) + 1] : [min, max]) },
      y: { range: (_u, _min, max) => [0, Math.max(floor, (max ?? 0) * 1.15)] },
    },
    // Ticks a whole number of seconds apart, labelled as clock times (not ":15.500").
    axes: [{ incrs: TIME_INCRS, space: 70, values: (_u, ticks) => ticks.map(clockTime) }, { size: 56 }],
    legend: { live: false },
    cursor: { drag: { x: false, y: false } },
  };
}

/**
 * Shades the time ranges in which the load guard held the job, under the docs/s chart's lines
 * (uPlot's drawClear hook runs once the canvas is cleared, before the axes and series).
 */
function shadeHeld(u) {
  const { left, top, width, height } = u.bbox;
  u.ctx.save();
  u.ctx.fillStyle = "rgba(240, 140, 0, 0.16)";
  for (const [start, end] of page.held) {
    const x0 = Math.max(left, u.valToPos(start, "x", true));
    const x1 = Math.min(left + width, u.valToPos(end, "x", true));
    if (x1 > x0) u.ctx.fillRect(x0, top, x1 - x0, height);
  }
  u.ctx.restore();
}

/** The job's charts; a sync job's lag chart too (`view`: the job's first view). */
function makeCharts(view) {
  const element = $("#chart-job");
  element.textContent = "";
  element.dataset.points = "0";
  const options = chartOptions(element, [
    { label: "docs/s", stroke: "#1c7ed6", width: 2, fill: "rgba(28,126,214,0.08)" },
    { label: "rate limit", stroke: "#868e96", width: 1, dash: [6, 4] },
  ]);
  options.hooks = { drawClear: [shadeHeld] };
  page.charts.job = new uPlot(options, [[], [], []], element);
  $("#chart-workers").textContent = "";
  $("#chart-workers").dataset.points = "0";
  page.charts.workerIds = "";
  const sync = R.jobMode(view) === "sync";
  $("#lag-panel").hidden = !sync;
  if (sync) {
    const lag = $("#chart-lag");
    lag.textContent = "";
    lag.dataset.points = "0";
    page.charts.lag = new uPlot(
      chartOptions(lag, [{ label: "lag (s)", stroke: "#7048e8", width: 2, fill: "rgba(112,72,232,0.08)" }], 1),
      [[], []],
      lag,
    );
  }
  drawCharts();
}

/** The worker chart has one series per worker ever seen; a new worker rebuilds it. */
function workerChart(ids) {
  const key = ids.join(",");
  if (page.charts.workers && page.charts.workerIds === key) return page.charts.workers;
  if (page.charts.workers) page.charts.workers.destroy();
  const element = $("#chart-workers");
  element.textContent = "";
  const series = ids.map((id, i) => ({
    label: `worker ${id}`,
    stroke: WORKER_COLOURS[i % WORKER_COLOURS.length],
    width: 1.5,
  }));
  page.charts.workers = new uPlot(chartOptions(element, series), [[], ...ids.map(() => [])], element);
  page.charts.workerIds = key;
  return page.charts.workers;
}

/**
 * Shows a chart once it has two points; before, its note says why it has none (a chart of one
 * point or none has no time span: its axis would mean nothing).
 */
function showChart(selector, points, what) {
  const element = $(selector);
  const note = $(`${selector}-note`);
  element.dataset.points = String(points);
  const words = R.chartNote(points, page.shownState, what);
  note.textContent = words;
  note.hidden = words === "";
  if (element.hidden !== (words !== "")) {
    element.hidden = words !== "";
    if (!element.hidden) fitCharts();
  }
}

function drawCharts() {
  if (!page.charts.job || page.jobId === null) return;
  const samples = samplesOf(page.jobId);
  const times = samples.map((s) => s.t);
  page.charts.job.setData([times, samples.map((s) => s.total), samples.map((s) => s.limit)]);
  showChart("#chart-job", samples.length);
  $("#chart-job").dataset.held = String(page.held.length);
  $("#chart-job-held").hidden = page.held.length === 0;

  const ids = [...new Set(samples.flatMap((s) => Object.keys(s.workers)))].map(Number).sort((a, b) => a - b);
  const withRates = samples.filter((s) => Object.keys(s.workerRates ?? {}).length > 0);
  const chart = workerChart(ids);
  chart.setData([withRates.map((s) => s.t), ...ids.map((id) => withRates.map((s) => s.workerRates[id] ?? null))]);
  showChart("#chart-workers", withRates.length);
  $("#chart-workers").dataset.series = String(ids.length);

  if (page.charts.lag) {
    // Points where the lag means something (see R.syncLag): gaps elsewhere.
    page.charts.lag.setData([times, samples.map((s) => s.lag)]);
    showChart("#chart-lag", samples.filter((s) => s.lag !== null).length, "lag");
  }
}

function fitCharts() {
  for (const [key, selector] of [["job", "#chart-job"], ["workers", "#chart-workers"], ["lag", "#chart-lag"]]) {
    const chart = page.charts[key];
    const width = Math.max(240, $(selector).clientWidth);
    if (chart && chart.width !== width) chart.setSize({ width, height: 220 });
  }
}

// ---------------------------------------------------------------- controls

function controlStatus(text, isError) {
  const status = $("#control-status");
  status.textContent = text;
  status.classList.toggle("error", Boolean(isError));
}

async function command(path, method, body, done) {
  const id = page.jobId;
  const result = await api(method, `/api/jobs/${id}${path}`, body);
  if (page.jobId !== id) return;
  if (!result.ok) {
    controlStatus(result.data?.error ?? `HTTP ${result.status}`, true);
    return;
  }
  controlStatus(done(result.data), false);
  update(result.data);
}

async function applyRate(rate) {
  const box = $("#rate-box");
  delete box.dataset.dirty;
  await command("", "PATCH", { rate }, (view) => `rate limit: ${R.formatLimit(view.limits.rate, "docs/s")}`);
}

function rateFromBox() {
  const box = $("#rate-box");
  const parsed = R.parseRate("rate", box.value, box.validity.badInput);
  if (parsed.problem) {
    controlStatus(parsed.problem, true);
    return;
  }
  applyRate(parsed.value);
}

function wireControls() {
  $("#pause").addEventListener("click", () => command("/pause", "POST", undefined, () => "pausing after the batches in flight"));
  $("#resume").addEventListener("click", () => command("/resume", "POST", undefined, () => "resumed"));
  $("#cancel").addEventListener("click", () => {
    $("#confirm-title").textContent = `Cancel job ${page.jobId}?`;
    $("#confirm-cancel").showModal();
  });
  $("#confirm-keep").addEventListener("click", () => $("#confirm-cancel").close());
  $("#confirm-yes").addEventListener("click", () => {
    $("#confirm-cancel").close();
    command("/cancel", "POST", undefined, () => "cancelling after the batches in flight");
  });
  $("#commit").addEventListener("click", () => {
    $("#commit-title").textContent = `Commit job ${page.jobId}?`;
    const reasons = page.view ? R.commitConfirmReasonsHtml(page.view) : "";
    $("#commit-reasons").innerHTML = reasons;
    $("#commit-yes").textContent = reasons ? "Commit anyway" : "Commit";
    $("#confirm-commit").showModal();
  });
  $("#commit-keep").addEventListener("click", () => $("#confirm-commit").close());
  $("#commit-yes").addEventListener("click", () => {
    $("#confirm-commit").close();
    command("/commit", "POST", {}, () => "committing: applying every change up to now, then the job ends");
  });

  const rateBox = $("#rate-box");
  rateBox.addEventListener("input", () => {
    rateBox.dataset.dirty = "1";
  });
  // "change" fires on Enter and when the box loses focus after an edit.
  rateBox.addEventListener("change", rateFromBox);
  const slider = $("#rate-slider");
  slider.addEventListener("input", () => {
    rateBox.value = R.sliderToRate(Number(slider.value));
    rateBox.dataset.dirty = "1";
  });
  slider.addEventListener("change", () => applyRate(R.sliderToRate(Number(slider.value))));
  $("#rate-unlimited").addEventListener("click", () => applyRate(null));

  const workersBox = $("#workers-box");
  workersBox.addEventListener("input", () => {
    workersBox.dataset.dirty = "1";
  });
  const applyWorkers = () => {
    const parsed = R.parseWhole("workers", workersBox.value, workersBox.validity.badInput);
    if (parsed.problem || parsed.value === null) {
      controlStatus(parsed.problem ?? "workers: give a number", true);
      return;
    }
    delete workersBox.dataset.dirty;
    command("", "PATCH", { workers: parsed.value }, (view) => `workers: ${view.workers}`);
  };
  workersBox.addEventListener("keydown", (e) => {
    if (e.key === "Enter") applyWorkers();
  });
  $("#workers-apply").addEventListener("click", applyWorkers);
}

// ---------------------------------------------------------------- start

function wireSession() {
  // The dialog stays until a token is given: without one, the page can show nothing.
  $("#sign-in").addEventListener("cancel", (event) => event.preventDefault());
  $("#sign-out").hidden = !sessionStorage.getItem(TOKEN_KEY);
  $("#sign-out").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    location.reload();
  });
  for (const link of document.querySelectorAll("a[data-raw]")) {
    link.addEventListener("click", (event) => {
      // Without a token the link works as any; with one, the page fetches it with the header.
      if (!sessionStorage.getItem(TOKEN_KEY)) return;
      event.preventDefault();
      showRaw(link.getAttribute("href"));
    });
  }
  $("#raw-close").addEventListener("click", () => $("#raw").close());
  $("#job-report").addEventListener("click", downloadReport);
}

function start() {
  wireSession();
  $("#job-form").addEventListener("submit", submitJob);
  $("#plan-job").addEventListener("click", planJob);
  $("#transform").addEventListener("change", showTransform);
  // A file input cannot be emptied by the operator otherwise (cancelling its dialog keeps the file).
  $("#transform-clear").addEventListener("click", () => {
    $("#transform").value = "";
    showTransform();
  });
  $("#mode").addEventListener("change", modeOptions);
  modeOptions();
  wireControls();
  window.addEventListener("hashchange", route);
  page.resize = new ResizeObserver(() => fitCharts());
  page.resize.observe($("main"));
  route();
}

start();
