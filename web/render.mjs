// Pure helpers of the dashboard: job views (as the API sends them) in, HTML text and numbers out.
// No DOM and no network here, so node's test runner checks them without a browser. Every value
// that reaches HTML goes through `esc`: namespaces, errors and reasons are user or server text.

/** Escapes text for HTML element content and quoted attribute values. */
export function esc(value) {
  return String(value ?? "")
    .replaceAll("&", "&amp;")
    .replaceAll("<", "&lt;")
    .replaceAll(">", "&gt;")
    .replaceAll('"', "&quot;")
    .replaceAll("'", "&#39;");
}

/**
 * States in which the job's run is over. `interrupted`: the service stopped before the job
 * finished; a restarted service continues it, as the same job, from its checkpoint.
 */
const FINAL_STATES = new Set(["completed", "failed", "cancelled", "interrupted"]);

export function isFinal(state) {
  return FINAL_STATES.has(state);
}

/**
 * Whether a view in `next` state is older than the one shown in state `shown`: a job that
 * completed, failed or was cancelled never runs again, so a view of it still active (a
 * command's answer overtaken by the event stream's final event) is stale. An interrupted job
 * does run again, when a restarted service continues it.
 */
export function isStale(shown, next) {
  return ["completed", "failed", "cancelled"].includes(shown) && !isFinal(next);
}

/**
 * Which commands a job in `state` accepts (the API answers 409 to the others). `mode`: the job's
 * (`copy` or `sync`, see `jobMode`); `phase`: a sync job's phase, if known. Only an active sync job
 * can be committed, and once its commit is under way (`committing`) there is nothing to ask again.
 */
export function allowedCommands(state, mode = "copy", phase = null) {
  return {
    pause: state === "pending" || state === "running",
    resume: state === "paused",
    cancel: !isFinal(state),
    tune: !isFinal(state),
    commit: mode === "sync" && !isFinal(state) && phase !== "committing" && phase !== "committed",
  };
}

/**
 * A job's mode: `sync` (copy, then follow the source's changes until committed), `move` (copy,
 * verify, then delete from the source), `reconcile` (write only what differs between the two
 * sides) or `copy`. A spec without a mode is a copy; a sync job's view also has a commit link, a
 * move's progress its move figures, a reconcile's its reconcile figures (a sync that lost its
 * history has those too, and stays a sync).
 */
export function jobMode(view) {
  if (view?.spec?.mode === "sync" || Boolean(view?.links?.commit)) return "sync";
  if (view?.spec?.mode === "move" || Boolean(view?.progress?.moves)) return "move";
  if (view?.spec?.mode === "reconcile" || Boolean(view?.progress?.reconcile)) return "reconcile";
  return "copy";
}

/** A count with thousands separators: 12345 -> "12,345". */
export function formatCount(n) {
  if (n === null || n === undefined || !Number.isFinite(n)) return "–";
  return Math.round(n).toLocaleString("en-US");
}

/** Documents (or bytes) per second: one decimal below 10, whole numbers above. */
export function formatRate(n) {
  if (n === null || n === undefined || !Number.isFinite(n)) return "–";
  return n < 10 ? n.toFixed(1) : formatCount(n);
}

export function formatBytes(n) {
  if (n === null || n === undefined || !Number.isFinite(n)) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${n} B` : `${value.toFixed(1)} ${units[unit]}`;
}

/** Seconds as "42 s", "3 min 20 s", "2 h 05 min". */
export function formatDuration(secs) {
  if (secs === null || secs === undefined || !Number.isFinite(secs)) return "–";
  if (secs < 1) return "< 1 s";
  const s = Math.round(secs);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, "0")} s`;
  const h = Math.floor(s / 3600);
  return `${h} h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")} min`;
}

/** A sync's lag in seconds: "0.4 s", "12 s", then "3 min 20 s" from a minute on. */
export function formatLag(secs) {
  if (secs === null || secs === undefined || !Number.isFinite(secs)) return "–";
  return secs < 60 ? `${formatRate(Math.max(0, secs))} s` : formatDuration(secs);
}

/**
 * Documents behind the job's position: written by this run, copied by an earlier run (the job
 * continued from its checkpoint), refused by the destination and, in a reconcile, found equal
 * (not written). Also fits a namespace's counts (`equal`); a job's are in its reconcile figures,
 * not counted for a sync (its reconcile after lost history comes after its copy).
 */
export function doneCount(progress) {
  if (!progress) return 0;
  const equal = progress.equal ?? (progress.sync ? 0 : progress.reconcile?.equal ?? 0);
  return (progress.docs ?? 0) + (progress.skipped ?? 0) + (progress.failed ?? 0) + equal;
}

/** Share done, 0..1, when the total is known. */
export function fraction(progress) {
  if (!progress || !progress.expected) return null;
  return Math.min(1, doneCount(progress) / progress.expected);
}

export function formatLimit(rate, unit) {
  return rate === null || rate === undefined ? "unlimited" : `${formatRate(rate)} ${unit}`;
}

/** The form fields a problem of the API's `problems` list belongs to (`null`: the form as a whole). */
export function problemField(problem) {
  const match = /^(from|to|namespaces?|filter|transform|workers|batch_size|rate_bytes|rate|strategy|adaptive|mode|keep_source|allow_transform_move|delete_extra|on_history_lost)\b/.exec(
    problem,
  );
  if (!match) return null;
  return match[1] === "namespace" ? "namespaces" : match[1];
}

/** Groups problems by field: `{ fields: {workers: [..]}, general: [..] }`. */
export function problemsByField(problems) {
  const fields = {};
  const general = [];
  for (const problem of problems) {
    const field = problemField(problem);
    if (field) (fields[field] ??= []).push(problem);
    else general.push(problem);
  }
  return { fields, general };
}

/**
 * Where the values of secret options are in a URI's query string, as [start, end) pairs, as the
 * service finds them: options whose name holds `password` (any case) and the `TOKEN`, `SECRET`
 * or `PASSWORD` entries of `authMechanismProperties`.
 */
function secretSpans(uri) {
  const spans = [];
  const query = uri.indexOf("?");
  if (query < 0) return spans;
  let optionStart = query + 1;
  for (const option of uri.slice(query + 1).split("&")) {
    const start = optionStart;
    optionStart += option.length + 1;
    const eq = option.indexOf("=");
    if (eq < 0) continue;
    const name = option.slice(0, eq);
    const valueStart = start + eq + 1;
    if (name.toLowerCase().includes("password")) {
      spans.push([valueStart, start + option.length]);
    } else if (name.toLowerCase() === "authmechanismproperties") {
      let entryStart = valueStart;
      for (const entry of option.slice(eq + 1).split(",")) {
        const from = entryStart;
        entryStart += entry.length + 1;
        const colon = entry.indexOf(":");
        if (colon < 0) continue;
        const key = entry.slice(0, colon).toUpperCase();
        if (["TOKEN", "SECRET", "PASSWORD"].some((k) => key.includes(k))) {
          spans.push([from + colon + 1, from + entry.length]);
        }
      }
    }
  }
  return spans;
}

/** Replaces the secrets of a connection string by `***`, as the service does. */
export function maskUri(uri) {
  for (const [start, end] of secretSpans(uri).reverse()) {
    uri = `${uri.slice(0, start)}***${uri.slice(end)}`;
  }
  const schemeEnd = uri.indexOf("://");
  if (schemeEnd < 0) return uri;
  const rest = uri.slice(schemeEnd + 3);
  const authorityEnd = rest.search(/[/?]/);
  const authority = authorityEnd < 0 ? rest : rest.slice(0, authorityEnd);
  const at = authority.lastIndexOf("@");
  if (at < 0) return uri;
  const colon = authority.slice(0, at).indexOf(":");
  const user = colon < 0 ? authority.slice(0, at) : `${authority.slice(0, colon)}:***`;
  return `${uri.slice(0, schemeEnd + 3)}${user}@${rest.slice(at + 1)}`;
}

/** True when a URI still holds a `***` a masked form field shows instead of a secret. */
export function hasMaskedSecret(uri) {
  const masked = maskUri(uri) === uri;
  return masked && (/:\*\*\*@/.test(uri) || secretSpans(uri).some(([a, b]) => uri.slice(a, b) === "***"));
}

/** Reads a whole-number form field: `{value}` (null when empty) or `{problem}`. */
export function parseWhole(name, text, badInput = false) {
  const trimmed = String(text ?? "").trim();
  if (badInput) return { problem: `${name}: not a number` };
  if (trimmed === "") return { value: null };
  const n = Number(trimmed);
  if (!Number.isInteger(n) || n < 0) return { problem: `${name}: must be a whole number, got ${trimmed}` };
  return { value: n };
}

/** Reads a rate field: `{value}` (null when empty: unlimited) or `{problem}`. */
export function parseRate(name, text, badInput = false) {
  const trimmed = String(text ?? "").trim();
  if (badInput) return { problem: `${name}: not a number` };
  if (trimmed === "") return { value: null };
  const n = Number(trimmed);
  if (!Number.isFinite(n)) return { problem: `${name}: not a number` };
  // Zero and negatives go to the API, which says why they are refused.
  return { value: n };
}

/** Reads the filter field: `{value}` (an object, or null when empty) or `{problem}`. */
export function parseFilter(text) {
  const trimmed = String(text ?? "").trim();
  if (trimmed === "") return { value: null };
  let value;
  try {
    value = JSON.parse(trimmed);
  } catch (e) {
    return { problem: `filter is not valid JSON: ${e.message}` };
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    return { problem: "filter must be a JSON object" };
  }
  return { value };
}

/**
 * Reads a transform file's text (`name`: the file's, for the problem): `{value}` (its object of
 * namespace patterns) or `{problem}`. The steps themselves are the service's to check.
 */
export function parseTransform(name, text) {
  let value;
  try {
    value = JSON.parse(String(text ?? ""));
  } catch (e) {
    return { problem: `transform file ${name} is not valid JSON: ${e.message}` };
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    return { problem: `transform file ${name} must be a JSON object of namespace patterns, each with a list of steps` };
  }
  return { value };
}

const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;

/** What a transform holds, in a line: "2 patterns, 5 steps". */
export function transformSummary(transform) {
  const lists = Object.values(transform ?? {});
  const steps = lists.reduce((sum, list) => sum + (Array.isArray(list) ? list.length : 0), 0);
  return `${plural(lists.length, "pattern")}, ${plural(steps, "step")}`;
}

/** One transform step as the service words it ("rename tel to phone"); any other shape as JSON. */
export function stepLabel(step) {
  const s = step ?? {};
  if (typeof s.drop === "string") return `drop ${s.drop}`;
  if (typeof s.rename === "string") return `rename ${s.rename} to ${s.to}`;
  if (typeof s.set === "string") return `set ${s.set} = ${JSON.stringify(s.value)}`;
  if (typeof s.redact === "string") return `redact ${s.redact}`;
  if (typeof s.hmac === "string") return `hmac ${s.hmac}`;
  return JSON.stringify(step);
}

/** Namespaces, one a line; blank lines are ignored. */
export function parseNamespaces(text) {
  return String(text ?? "")
    .split("\n")
    .map((line) => line.trim())
    .filter((line) => line !== "");
}

/**
 * Documents per second of each worker over the last `windowSecs`, from a list of samples
 * `{t, workers: {id: docs}}` (oldest first). A worker seen in only one sample has no rate yet.
 */
export function workerRates(samples, windowSecs = 5) {
  const rates = {};
  if (samples.length < 2) return rates;
  const last = samples[samples.length - 1];
  let first = samples[samples.length - 2];
  for (let i = samples.length - 2; i >= 0; i--) {
    if (last.t - samples[i].t > windowSecs) break;
    first = samples[i];
  }
  const dt = last.t - first.t;
  if (dt <= 0) return rates;
  for (const [id, docs] of Object.entries(last.workers)) {
    if (id in first.workers) rates[id] = Math.max(0, docs - first.workers[id]) / dt;
  }
  return rates;
}

function progressBar(progress, label) {
  const share = fraction(progress);
  if (share === null) return `<progress aria-label="${esc(label)}"></progress>`;
  return `<progress max="1" value="${share.toFixed(4)}" aria-label="${esc(label)}"></progress>`;
}

function percent(progress) {
  const share = fraction(progress);
  return share === null ? "" : `${Math.floor(share * 100)}%`;
}

/** A spec's namespace as the page shows it: "shop.orders:archive.orders" -> "shop.orders → archive.orders". */
export function namespaceLabel(name) {
  const colon = String(name).indexOf(":");
  return colon < 0 ? String(name) : `${name.slice(0, colon)} → ${name.slice(colon + 1)}`;
}

function namespacesSummary(view) {
  const names = view.spec?.namespaces ?? [];
  if (names.length === 0) return "";
  const more = names.length > 1 ? ` +${names.length - 1}` : "";
  return `${namespaceLabel(names[0])}${more}`;
}

/** The state as a badge. */
export function stateBadge(state) {
  return `<span class="state state-${esc(state)}" data-state="${esc(state)}">${esc(state)}</span>`;
}

/**
 * Seconds until the documents are copied, while the job copies them: null once it has ended, and
 * for a sync job past its initial copy (it follows changes until committed: no end to foresee).
 */
export function etaSecs(view) {
  const p = view.progress;
  if (!p || isFinal(view.state) || p.eta_secs === null || p.eta_secs === undefined) return null;
  if (p.sync && p.sync.phase !== "initial_copy") return null;
  return p.eta_secs;
}

/** States in which a job has ended for good (an interrupted job may still continue). */
const ENDED_STATES = new Set(["completed", "failed", "cancelled"]);

/** How long the job ran, in seconds, once it has ended for good; null before. */
export function tookSecs(view) {
  if (!ENDED_STATES.has(view.state) || !view.finished_at || !view.created_at) return null;
  return Math.max(0, view.finished_at - view.created_at);
}

/**
 * An ended job's average docs/s: the documents this run wrote over the time the job took. Null
 * while the job may still run, and when it wrote nothing or took no measurable time.
 */
export function averageRate(view) {
  const took = tookSecs(view);
  const docs = view.progress?.docs ?? 0;
  if (took === null || took <= 0 || docs <= 0) return null;
  return docs / took;
}

/**
 * What a chart with fewer than two points says instead of drawing an axis (empty when it has
 * enough to draw). `points`: its samples; `state`: the job's; `what`: the kind of samples missing
 * ("lag" for a sync's lag chart, whose samples start once the sync follows the changes).
 */
export function chartNote(points, state, what = "docs") {
  if (points >= 2) return "";
  if (isFinal(state)) {
    if (points === 0) {
      return state === "interrupted"
        ? "No samples: the job is not running (the service stopped)."
        : "No samples: the job ended before this page was opened.";
    }
    return "One sample only: the job ended before the second.";
  }
  if (what === "lag" && points === 0) return "No lag yet: it is measured once the sync follows the source's changes.";
  return "Collecting… the chart starts with the second sample.";
}

/** Why a job's namespace or worker table is empty, in words that are true for its state. */
export function notStartedNote(view, what) {
  const before = {
    failed: "The job failed before copying",
    cancelled: "The job was cancelled before copying",
    completed: "The job ended without copying",
    interrupted: "The service stopped before the job started copying",
  }[view.state];
  if (!before) return "Not started yet.";
  if (what === "workers") return `${before}: no worker ran.`;
  const names = view.spec?.namespaces ?? [];
  return names.length > 0 ? `${before}: nothing was copied of ${names.map(namespaceLabel).join(", ")}.` : `${before}.`;
}

/** A row's rate: docs/s now while the job is active, its average once it ended. */
function rowRate(view) {
  const p = view.progress;
  if (!isFinal(view.state)) return p ? `${esc(formatRate(p.docs_per_sec))} docs/s` : "";
  const average = averageRate(view);
  return average === null ? "" : `<span title="average over the job's duration">avg ${esc(formatRate(average))} docs/s</span>`;
}

/** A row's time: the ETA while the job copies, how long it took once it ended. */
function rowTime(view) {
  if (etaSecs(view) !== null) return `ETA ${esc(formatDuration(etaSecs(view)))}`;
  const took = tookSecs(view);
  return took === null ? "" : `took ${esc(formatDuration(took))}`;
}

/** One row of the job list. */
export function jobRowHtml(view) {
  const p = view.progress;
  const active = !isFinal(view.state);
  const failed = p?.failed ?? view.dead_letters?.count ?? 0;
  const skipped = p?.skipped ?? 0;
  const docs = p ? `${formatCount(p.docs)}${p.expected !== null && p.expected !== undefined ? ` / ${formatCount(p.expected)}` : ""}` : "–";
  return `<a class="job-row" href="#/jobs/${esc(view.id)}" data-job="${esc(view.id)}">
  <span class="job-id">#${esc(view.id)}</span>
  ${stateBadge(view.state)}
  <span class="job-ns" title="${esc((view.spec?.namespaces ?? []).map(namespaceLabel).join(", "))}">${esc(namespacesSummary(view))}</span>
  <span class="job-bar">${progressBar(p, `job ${view.id} progress`)}<span class="pct">${esc(percent(p))}</span></span>
  <span class="job-docs" data-field="docs">${esc(docs)} docs</span>
  <span class="job-rate" data-field="docs_per_sec">${rowRate(view)}</span>
  <span class="job-eta" data-field="eta">${rowTime(view)}</span>
  ${isHeld(view) ? `<span class="job-held" data-field="held" title="${esc(view.load_guard.reason ?? "held by the load guard")}">held</span>` : ""}
  ${jobMode(view) === "sync" ? `<span class="job-sync" data-field="sync">${esc(syncSummary(view))}</span>` : ""}
  ${jobMode(view) === "move" ? `<span class="job-move" data-field="move">${esc(moveSummary(view))}</span>` : ""}
  ${jobMode(view) === "reconcile" ? `<span class="job-reconcile" data-field="reconcile">${esc(reconcileSummary(view))}</span>` : ""}
  ${view.error ? `<span class="job-error${view.state === "failed" ? "" : " job-note"}" title="${esc(view.error)}">${esc(view.error)}</span>` : ""}
  ${skipped > 0 ? `<span class="job-skipped" data-field="skipped">${esc(formatCount(skipped))} copied before (continued from its checkpoint)</span>` : ""}
  ${failed > 0 ? `<span class="job-dead" data-field="failed">${esc(formatCount(failed))} failed docs</span>` : ""}
</a>`;
}

/** The job list, newest first. */
export function jobListHtml(views) {
  if (views.length === 0) return `<p class="empty">No jobs yet. Start one with the form.</p>`;
  return [...views]
    .sort((a, b) => b.id - a.id)
    .map(jobRowHtml)
    .join("\n");
}

function tile(label, value, field, extraClass = "") {
  return `<div class="tile${extraClass ? ` ${esc(extraClass)}` : ""}"><span class="tile-label">${esc(label)}</span><span class="tile-value" data-field="${esc(field)}">${esc(value)}</span></div>`;
}

/** The latest transient error the job retried, under the figures; nothing before the first. */
function lastRetryHtml(progress) {
  if (!progress?.retries || !progress.last_retry) return "";
  return `<p class="last-retry">Last retried error: <span data-field="last_retry">${esc(progress.last_retry)}</span></p>`;
}

/**
 * The figures at the top of a job's page; `now` in Unix seconds. The bar's position counts the
 * documents copied before and the failed ones; "documents" are those this run wrote.
 */
export function summaryHtml(view, now) {
  const p = view.progress;
  const active = !isFinal(view.state);
  const expected = p && p.expected !== null && p.expected !== undefined ? ` / ${formatCount(p.expected)}` : "";
  // The browser's clock may differ from the service's: never less than nothing.
  const elapsed = Math.max(0, (view.finished_at ?? now) - view.created_at);
  return `<div class="bar-line">${progressBar(p, "progress")}<span class="pct">${esc(percent(p))}</span></div>
<div class="tiles">
  ${tile("documents", p ? `${formatCount(p.docs)}${expected}` : "–", "docs")}
  ${averageRate(view) !== null ? tile("avg docs/s", formatRate(averageRate(view)), "docs_per_sec") : tile("docs/s", p && active ? formatRate(p.docs_per_sec) : "–", "docs_per_sec")}
  ${active ? tile("ETA", formatDuration(etaSecs(view)), "eta") : ""}
  ${p?.skipped > 0 ? tile("copied before", formatCount(p.skipped), "skipped") : ""}
  ${tile("failed", p ? formatCount(p.failed ?? 0) : "–", "failed", p?.failed > 0 ? "tile-warn" : "")}
  ${tile("retries", p ? formatCount(p.retries ?? 0) : "–", "retries")}
  ${tile("copied", p ? formatBytes(p.bytes) : "–", "bytes")}
  ${tile("workers", String(view.workers), "workers")}
  ${tile("rate limit", formatLimit(view.limits?.rate, "docs/s"), "rate_limit")}
  ${view.limits?.rate_bytes !== null && view.limits?.rate_bytes !== undefined ? tile("byte limit", formatLimit(view.limits.rate_bytes, "B/s"), "rate_bytes_limit") : ""}
  ${active ? tile("queue", p ? `${formatCount(p.queue_depth)} batches` : "–", "queue_depth") : ""}
  ${tile(active ? "running for" : "took", formatDuration(elapsed), "elapsed")}
</div>${lastRetryHtml(p)}`;
}

const MESSAGE_TITLES = { failed: "The job failed", interrupted: "Interrupted" };

/**
 * The job's error when it failed, or its message when it ended otherwise with one (interrupted by
 * a stop of the service, completed with failed documents): the latter in a warning's colours.
 */
export function errorHtml(view) {
  if (!view.error) return "";
  const title = MESSAGE_TITLES[view.state] ?? "Note";
  const kind = view.state === "failed" ? "error-box" : "error-box note-box";
  return `<div class="${kind}" role="alert"><strong>${esc(title)}</strong><pre data-field="error">${esc(view.error)}</pre></div>`;
}

/**
 * Documents the destination refused, when the service reports them (`dead_letters`: `count` and
 * the most recent ones, each with its namespace, `_id` in canonical Extended JSON and the reason).
 * Nothing when the view has no such field.
 */
export function deadLettersHtml(view) {
  const dead = view.dead_letters;
  if (!dead) return "";
  const recent = Array.isArray(dead.recent) ? dead.recent : [];
  const count = dead.count ?? recent.length;
  if (count === 0) {
    return `<section class="panel" id="dead-letters"><h3>Failed documents</h3><p class="muted" data-field="dead_count">None.</p></section>`;
  }
  const shown =
    recent.length < count
      ? `<p class="muted">The ${esc(formatCount(recent.length))} most recent of ${esc(formatCount(count))}.</p>`
      : "";
  const rows = recent
    .map(
      (d) => `<tr><td>${esc(d.ns)}</td><td><code>${esc(JSON.stringify(d.id))}</code></td><td>${esc(d.reason)}</td></tr>`,
    )
    .join("");
  return `<section class="panel" id="dead-letters"><h3>Failed documents <span class="count" data-field="dead_count">${esc(formatCount(count))}</span></h3>
${shown}<div class="scroll"><table><thead><tr><th>namespace</th><th>_id</th><th>reason</th></tr></thead><tbody>${rows}</tbody></table></div></section>`;
}

/** A sync's phases as the page names them, and what each means. */
const SYNC_PHASES = {
  initial_copy: ["initial copy", "Copying what the source holds; its changes meanwhile wait in its history."],
  catching_up: ["catching up", "Applying the changes made since the sync started."],
  live: ["live", "Level with the source: every change is applied as it comes. For the cutover, stop the writes to the source, then commit."],
  reconciling: [
    "history lost, reconciling",
    "The sync's saved position was gone from the source's history: the destination is being made equal to the source (only what differs is written), then the sync follows the changes from a new position.",
  ],
  committing: ["committing", "Applying every change up to the commit, then the job ends."],
  committed: ["committed", "Every change up to the commit is applied."],
};

/** The label of a sync phase (`initial_copy` -> "initial copy"); an unknown one as it is. */
export function phaseLabel(phase) {
  return SYNC_PHASES[phase]?.[0] ?? String(phase ?? "");
}

/**
 * The chart samples of a job's saved series (`GET /api/jobs/{id}/series`), oldest first: one per
 * time of its docs/s, with the rate limit and the lag of the same time (null where none).
 */
export function samplesFromSeries(series) {
  const valueAt = (name) => new Map((series?.[name] ?? []).map(([t, v]) => [t, v]));
  const limits = valueAt("rate_limit");
  const lags = valueAt("sync_lag_secs");
  return (series?.docs_per_sec ?? []).map(([t, docs]) => ({
    t,
    total: docs,
    limit: limits.get(t) ?? null,
    workers: {},
    workerRates: {},
    lag: lags.get(t) ?? null,
  }));
}

/** The phases in which a sync follows the source's changes, so has a lag. */
const LAGGING_PHASES = new Set(["catching_up", "live", "committing"]);

/**
 * A sync job's lag in seconds where it means something, else null: while the job is active and
 * follows the source's changes. Not during the initial copy (the service reports 0 until the
 * changes are followed) nor once the job has ended (nothing is followed any more).
 */
export function syncLag(view) {
  const sync = view?.progress?.sync;
  if (!sync || isFinal(view.state) || !LAGGING_PHASES.has(sync.phase)) return null;
  return Number.isFinite(sync.lag_secs) ? sync.lag_secs : null;
}

/**
 * A sync job's phase and lag in a few words, for its row in the job list: "sync live, lag 0.4 s";
 * without the lag where it means nothing (`syncLag`), "sync" alone before the job reports a
 * phase. Empty for a copy.
 */
export function syncSummary(view) {
  if (jobMode(view) !== "sync") return "";
  const sync = view.progress?.sync;
  if (!sync) return "sync";
  const lag = syncLag(view);
  return `sync ${phaseLabel(sync.phase)}${lag === null ? "" : `, lag ${formatLag(lag)}`}`;
}

/**
 * A sync job's panel: its phase (and what it means), its lag (where it means something: `syncLag`),
 * the changes applied (in all and by kind) and per second (while active). Empty for a copy; a
 * line saying it has not started for a sync job that has not reported a phase yet.
 */
export function syncHtml(view) {
  if (jobMode(view) !== "sync") return "";
  const sync = view.progress?.sync;
  if (!sync) {
    const why = isFinal(view.state) ? "No figures of the sync for this job." : "Not started yet: the copy comes first.";
    return `<section class="panel" id="sync"><h3>Live sync</h3><p class="muted" data-field="sync_phase">${esc(why)}</p></section>`;
  }
  const active = !isFinal(view.state);
  const applied = sync.applied ?? {};
  const kinds = [
    ["insert", "inserts"],
    ["update", "updates"],
    ["replace", "replaces"],
    ["delete", "deletes"],
    ["ddl", "schema changes"],
  ]
    .map(([key, label]) => `<li><span class="muted">${esc(label)}</span> <span data-field="applied_${esc(key)}">${esc(formatCount(applied[key] ?? 0))}</span></li>`)
    .join("");
  const meaning = SYNC_PHASES[sync.phase]?.[1] ?? "";
  return `<section class="panel" id="sync"><h3>Live sync <span class="phase phase-${esc(sync.phase)}" data-field="sync_phase" data-phase="${esc(sync.phase)}">${esc(phaseLabel(sync.phase))}</span></h3>
${meaning ? `<p class="muted">${esc(meaning)}</p>` : ""}${historyLostHtml(view)}
<div class="tiles">
  ${tile("lag", formatLag(syncLag(view)), "lag_secs")}
  ${tile("caught up", active ? (sync.caught_up ? "yes" : "no") : "–", "caught_up")}
  ${tile("events applied", formatCount(sync.events), "events")}
  ${tile("events/s", active ? formatRate(sync.events_per_sec) : "–", "events_per_sec")}
</div>
<ul class="applied" data-field="applied">${kinds}</ul></section>`;
}

/** A sync job's `can_commit` (`{ok, reasons}`), top-level or under `progress.sync`; null for others. */
export function canCommitOf(view) {
  return view?.can_commit ?? view?.progress?.sync?.can_commit ?? null;
}

/** A sync job's continuous verification, top-level or under `progress.sync`; null when off or not started. */
export function verificationOf(view) {
  return view?.verification ?? view?.progress?.sync?.verification ?? null;
}

/** Writes the source took after a sync's commit point, top-level or under `progress.sync`; null when none. */
export function writesAfterCommitOf(view) {
  return view?.writes_after_commit ?? view?.progress?.sync?.writes_after_commit ?? null;
}

/** A Unix time in seconds as the browser's local date and time ("–" when unknown). */
export function formatTime(secs) {
  if (secs === null || secs === undefined || !Number.isFinite(secs)) return "–";
  return new Date(secs * 1000).toLocaleString();
}

/** An `_id` (canonical Extended JSON, untrusted) as compact JSON text: escape it before HTML. */
export function compactId(id) {
  return JSON.stringify(id) ?? String(id);
}

/**
 * Why the Commit button is not ready: the reasons of `can_commit` while the job can be committed
 * and is not ready, else an empty list (ready, not a sync, or past its commit).
 */
export function commitReasons(view) {
  const can = canCommitOf(view);
  if (!can || can.ok) return [];
  const reasons = Array.isArray(can.reasons) ? can.reasons : [];
  return reasons.length > 0 ? reasons : ["the service gives no reason"];
}

/**
 * What the Commit button says beside it: "ready to commit", or "not ready to commit" and the
 * reasons as a list. Empty where there is no commit to make: not a sync, a sync without
 * `can_commit` yet, or one that cannot be committed (ended, or its commit under way).
 */
export function commitReadinessHtml(view) {
  if (jobMode(view) !== "sync") return "";
  const can = canCommitOf(view);
  if (!can || !allowedCommands(view.state, "sync", view.progress?.sync?.phase ?? null).commit) return "";
  if (can.ok) return `<p class="commit-ready" data-field="commit_ready" data-ready="true">ready to commit</p>`;
  const items = commitReasons(view)
    .map((r) => `<li>${esc(r)}</li>`)
    .join("");
  return `<div class="commit-not-ready" data-field="commit_ready" data-ready="false"><p>not ready to commit (an operator may commit anyway):</p><ul data-field="commit_reasons">${items}</ul></div>`;
}

/** The confirm dialog's part that says the job is not ready, and why (empty when ready). */
export function commitConfirmReasonsHtml(view) {
  const reasons = commitReasons(view);
  if (reasons.length === 0) return "";
  return `<p><strong>Not ready to commit:</strong></p><ul data-field="commit_reasons">${reasons.map((r) => `<li>${esc(r)}</li>`).join("")}</ul><p>Committing now may end the job unverified or behind the source.</p>`;
}

/** The continuous verification's phases as the page names them, and what each means. */
const VERIFICATION_PHASES = {
  initial: ["first pass", "Comparing every document once, in _id order, while changes are applied."],
  continuous: ["continuous", "Every document was compared once: what changes is compared again."],
  committed: ["committed", "The commit compared what changed since the last proof."],
};

function mismatchRow(m) {
  const repaired = m.repaired ? "yes" : "no";
  return `<tr><td>${esc(m.ns)}</td><td><code>${esc(compactId(m.id))}</code></td><td><span class="kind kind-${esc(m.kind)}">${esc(m.kind)}</span></td><td class="${m.repaired ? "" : "unrepaired"}">${repaired}</td></tr>`;
}

/**
 * A sync job's continuous verification: its phase, the documents compared, mismatches found,
 * repaired and unrepaired, the recheck list, the source time up to which both sides are proven
 * equal, the recent mismatches (namespace pair, `_id` as compact JSON, kind, repaired), and after
 * the commit what it proved (or why it did not). Empty for a copy or move; a line for a sync that
 * does not verify (`verify: off`) or has not started verifying.
 */
export function verificationHtml(view) {
  if (jobMode(view) !== "sync") return "";
  const v = verificationOf(view);
  if (!v) {
    let why = null;
    if (view.spec?.verify === "off") why = "Off: this job does not compare the two sides (verify: off).";
    else if (!isFinal(view.state)) why = "Not started yet: it begins once the initial copy is done.";
    if (!why) return "";
    return `<section class="panel" id="verification"><h3>Verification</h3><p class="muted" data-field="verification_phase">${esc(why)}</p></section>`;
  }
  const [label, meaning] = VERIFICATION_PHASES[v.phase] ?? [String(v.phase ?? ""), ""];
  const mode = v.repairs ? "Mismatches are repaired from the source." : "Mismatches are only reported (verify: report).";
  const compared = `${formatCount(v.verified_docs)}${
    Number.isFinite(v.compared_this_run) && v.compared_this_run !== v.verified_docs ? ` (${formatCount(v.compared_this_run)} by this run)` : ""
  }`;
  const through = Number.isFinite(v.through)
    ? `<p class="proven" data-field="verification_through">Proven equal through <time>${esc(formatTime(v.through))}</time> (source time).</p>`
    : `<p class="muted" data-field="verification_through">Not proven equal yet${v.phase === "initial" ? ": the first pass is under way" : ""}.</p>`;
  let commit = "";
  if (v.unproven) {
    commit = `<div class="error-box note-box" data-field="unproven"><strong>The commit did not prove equality</strong><pre>${esc(v.unproven)}</pre></div>`;
  } else if (Number.isFinite(v.verified_through)) {
    const rechecked = Number.isFinite(v.rechecked_at_commit) ? `, ${formatCount(v.rechecked_at_commit)} rechecked at commit` : "";
    commit = `<p class="verified" data-field="verified_through">Verified through <time>${esc(formatTime(v.verified_through))}</time>${esc(rechecked)}.</p>`;
  }
  const recent = Array.isArray(v.recent) ? v.recent : [];
  const shown =
    recent.length > 0 && recent.length < (v.mismatches ?? 0)
      ? ` <span class="muted">the ${esc(formatCount(recent.length))} most recent of ${esc(formatCount(v.mismatches))}</span>`
      : "";
  const table =
    recent.length > 0
      ? `<h4>Recent mismatches${shown}</h4><div class="scroll"><table data-field="mismatches_recent"><thead><tr><th>namespace</th><th>_id</th><th>kind</th><th>repaired</th></tr></thead><tbody>${[...recent]
          .reverse()
          .map(mismatchRow)
          .join("")}</tbody></table></div>`
      : "";
  const namespaces = Number.isFinite(v.namespaces) ? `${formatCount(v.namespaces_verified)} of ${formatCount(v.namespaces)}` : "–";
  return `<section class="panel" id="verification"><h3>Verification <span class="phase vphase-${esc(v.phase)}" data-field="verification_phase" data-phase="${esc(v.phase)}">${esc(label)}</span></h3>
<p class="muted">${esc(meaning)} ${esc(mode)}</p>
<div class="tiles">
  ${tile("compared", compared, "verified_docs")}
  ${tile("namespaces compared", namespaces, "namespaces_verified")}
  ${tile("mismatches", formatCount(v.mismatches ?? 0), "mismatches", v.mismatches > 0 ? "tile-warn" : "")}
  ${tile("repaired", formatCount(v.repaired ?? 0), "repaired")}
  ${tile("unrepaired", formatCount(v.unrepaired ?? 0), "unrepaired", v.unrepaired > 0 ? "tile-warn" : "")}
  ${tile("recheck pending", formatCount(v.recheck_pending ?? 0), "recheck_pending")}
</div>
${through}${commit}${table}</section>`;
}

/**
 * The warning of writes the source took after a sync's commit point: the application was not
 * fully stopped, and the destination does not have them. How many, in which namespaces, and the
 * first `_id`s (compact JSON). Empty when there were none.
 */
export function writesAfterCommitHtml(view) {
  const w = writesAfterCommitOf(view);
  if (!w || !(w.count > 0)) return "";
  const namespaces = Array.isArray(w.namespaces) ? w.namespaces : [];
  const ids = Array.isArray(w.ids) ? w.ids : [];
  const where = namespaces.length > 0 ? ` in ${namespaces.map((n) => `<code>${esc(n)}</code>`).join(", ")}` : "";
  const more = ids.length > 0 && ids.length < w.count ? ` (the first ${esc(formatCount(ids.length))})` : "";
  const idList = ids.length > 0 ? `<p>_ids${more}: ${ids.map((id) => `<code>${esc(compactId(id))}</code>`).join(", ")}</p>` : "";
  return `<div class="error-box note-box writes-after" role="alert" data-field="writes_after_commit"><strong>${esc(formatCount(w.count))} write${w.count === 1 ? "" : "s"} reached the source after the commit point</strong>
<p>${where ? `Written${where}. ` : ""}The application was not fully stopped: the destination does not have these writes.</p>${idList}</div>`;
}

/** A move that copies and verifies but deletes nothing: a rehearsal. */
function rehearsal(view) {
  return Boolean(view?.spec?.keep_source);
}

/**
 * A move job in a few words, for its row in the job list: "move: 1,200 moved" (what has left the
 * source), "move rehearsal: 1,200 verified" when the source is kept, plus what is still at the
 * source once the job has ended. Empty for other jobs.
 */
export function moveSummary(view) {
  if (jobMode(view) !== "move") return "";
  const moves = view.progress?.moves;
  if (!moves) return rehearsal(view) ? "move rehearsal" : "move";
  const done = rehearsal(view)
    ? `move rehearsal: ${formatCount(moves.verified)} verified`
    : `move: ${formatCount(moves.deleted)} moved`;
  return moves.left > 0 && isFinal(view.state) && !rehearsal(view) ? `${done}, ${formatCount(moves.left)} left at the source` : done;
}

/**
 * A move job's panel: its pass, the documents verified at the destination, deleted from the
 * source (moved), kept because they changed after their copy, deleted meanwhile by another
 * client, still at the source after the last pass, and the delete rate (while active). Empty
 * for other jobs.
 */
export function moveHtml(view) {
  if (jobMode(view) !== "move") return "";
  const moves = view.progress?.moves;
  const title = rehearsal(view) ? "Move rehearsal" : "Move";
  const meaning = rehearsal(view)
    ? "Copies and verifies each batch at the destination; the source is kept (keep_source)."
    : "Each batch is copied, found exactly so at the destination, then deleted from the source where unchanged.";
  if (!moves) {
    const why = isFinal(view.state) ? "No figures of the move for this job." : "Not started yet.";
    return `<section class="panel" id="move"><h3>${esc(title)}</h3><p class="muted">${esc(meaning)}</p><p class="muted" data-field="move_pass">${esc(why)}</p></section>`;
  }
  const active = !isFinal(view.state);
  const left = moves.left > 0 && !active;
  // A rehearsal deletes nothing: the source keeps every document, the verified ones included.
  const tiles = rehearsal(view)
    ? `${tile("verified", formatCount(moves.verified), "move_verified")}
  ${tile("kept at the source", formatCount(moves.verified), "move_kept")}`
    : `${tile("verified", formatCount(moves.verified), "move_verified")}
  ${tile("moved", formatCount(moves.deleted), "move_deleted")}
  ${tile("deletes/s", active ? formatRate(moves.deletes_per_sec) : "–", "deletes_per_sec")}
  ${tile("kept: changed", formatCount(moves.changed), "move_changed", moves.changed > 0 ? "tile-warn" : "")}
  ${tile("gone meanwhile", formatCount(moves.gone), "move_gone")}
  ${tile("left at the source", active ? "–" : formatCount(moves.left), "move_left", left ? "tile-warn" : "")}`;
  return `<section class="panel" id="move"><h3>${esc(title)} <span class="phase" data-field="move_pass">pass ${esc(formatCount(moves.pass))}</span></h3>
<p class="muted">${esc(meaning)}</p>
<div class="tiles">
  ${tiles}
</div>
${left && !rehearsal(view) ? `<p class="muted" data-field="move_left_note">Changed after their copy in every pass, or refused by the destination (see the failed documents): submit the move again to move them.</p>` : ""}</section>`;
}

/** Extras found only at the destination and left there (none when the reconcile deletes them). */
function keptExtra(r) {
  return r.delete_extra ? 0 : r.extra ?? 0;
}

/**
 * A reconcile job in a few words, for its row in the job list: "reconcile: 1,979 equal, 21
 * written, 6 extra kept" (or "… 6 extra deleted"; no extras, no word of them). Empty for other
 * jobs.
 */
export function reconcileSummary(view) {
  if (jobMode(view) !== "reconcile") return "";
  const r = view.progress?.reconcile;
  if (!r) return "reconcile";
  const parts = [`${formatCount(r.equal)} equal`, `${formatCount(r.written)} written`];
  if (r.delete_extra && r.deleted > 0) parts.push(`${formatCount(r.deleted)} extra deleted`);
  else if (keptExtra(r) > 0) parts.push(`${formatCount(keptExtra(r))} extra kept`);
  return `reconcile: ${parts.join(", ")}`;
}

/**
 * A reconcile's panel: the `_id`s compared, found equal (not written), written (missing or
 * different at the destination), and the extras (only at the destination), deleted or kept —
 * the first kept ones listed — with what each means; those a server-side hash proved equal
 * without reading them, when any. For a reconcile job, and for a sync that reconciled after its
 * history was lost; empty for other jobs.
 */
export function reconcileHtml(view) {
  const mode = jobMode(view);
  const r = view.progress?.reconcile;
  const afterLost = mode === "sync";
  if (mode !== "reconcile" && !(afterLost && r)) return "";
  const title = afterLost ? "Reconcile after lost history" : "Reconcile";
  const deletes = r ? Boolean(r.delete_extra) : Boolean(view.spec?.delete_extra);
  const meaning = `Both sides are read in _id order; only what differs is written. Documents only the destination holds are ${
    deletes ? "deleted (delete extra documents)." : "kept and reported (delete extra documents would delete them)."
  }`;
  if (!r) {
    const why = isFinal(view.state) ? "No figures of the reconcile for this job." : "Not started yet.";
    return `<section class="panel" id="reconcile"><h3>${esc(title)}</h3><p class="muted">${esc(meaning)}</p><p class="muted" data-field="reconcile_note">${esc(why)}</p></section>`;
  }
  const kept = keptExtra(r);
  const extraTile = deletes
    ? tile("extras deleted", formatCount(r.deleted), "reconcile_deleted")
    : tile("extras kept", formatCount(kept), "reconcile_kept", kept > 0 ? "tile-warn" : "");
  const words = `Of ${formatCount(r.compared)} _ids compared (seen on either side), ${formatCount(r.equal)} were equal on both sides and left alone; ${formatCount(r.missing)} were missing at the destination and ${formatCount(r.different)} different there: ${formatCount(r.written)} written from the source; ${formatCount(r.extra)} were only at the destination: ${deletes ? `${formatCount(r.deleted)} deleted` : "kept"}.`;
  const digested =
    r.digested > 0
      ? `<p class="muted" data-field="reconcile_digested">${esc(`${formatCount(r.digested)} of the equal documents were proven equal by a server-side hash of their range, without reading them.`)}</p>`
      : "";
  const first = Array.isArray(r.first_extra) ? r.first_extra : [];
  const shown = first.length < kept ? ` <span class="muted">the first ${esc(formatCount(first.length))} of ${esc(formatCount(kept))}</span>` : "";
  const extras =
    !deletes && first.length > 0
      ? `<h4>Kept at the destination${shown}</h4><div class="scroll"><table data-field="reconcile_first_extra"><thead><tr><th>namespace</th><th>_id</th></tr></thead><tbody>${first
          .map((e) => `<tr><td>${esc(e.ns)}</td><td><code>${esc(compactId(e.id))}</code></td></tr>`)
          .join("")}</tbody></table></div>`
      : "";
  return `<section class="panel" id="reconcile"><h3>${esc(title)}</h3>
<p class="muted">${esc(meaning)}</p>
<div class="tiles">
  ${tile("compared", formatCount(r.compared), "reconcile_compared")}
  ${tile("equal: not written", formatCount(r.equal), "reconcile_equal")}
  ${tile("written", formatCount(r.written), "reconcile_written")}
  ${tile("missing at the destination", formatCount(r.missing), "reconcile_missing")}
  ${tile("different there", formatCount(r.different), "reconcile_different")}
  ${tile("only at the destination", formatCount(r.extra), "reconcile_extra")}
  ${extraTile}
</div>
<p data-field="reconcile_words">${esc(words)}</p>${digested}${extras}</section>`;
}

/**
 * A sync whose saved position was gone from the source's history: when that was found, what the
 * source said, and whether the reconcile that follows is done. Empty otherwise.
 */
export function historyLostHtml(view) {
  const lost = view?.progress?.sync?.history_lost;
  if (!lost) return "";
  const outcome = lost.recovered
    ? "Recovered: the destination was reconciled with the source, and the sync follows the changes from a new position."
    : isFinal(view.state)
      ? "Not recovered."
      : "Not recovered yet: the destination is being reconciled with the source.";
  return `<div class="error-box note-box history-lost" data-field="history_lost" data-recovered="${lost.recovered ? "true" : "false"}"><strong>The source's history no longer held the sync's position</strong>
<p>Found <time>${esc(formatTime(lost.at))}</time>. The source said:</p><pre data-field="history_lost_reason">${esc(lost.reason)}</pre>
<p data-field="history_lost_outcome">${esc(outcome)}</p></div>`;
}

/** Adaptive mode: its target and its latest decision with the reason, then the recent ones. */
export function adaptiveHtml(view) {
  const adaptive = view.adaptive;
  if (!adaptive) return "";
  const config = adaptive.config ?? {};
  const decisions = adaptive.decisions ?? [];
  const last = decisions[decisions.length - 1];
  const head = `<h3>Adaptive mode <span class="muted">target ${esc(formatRate(config.target_ms))} ms${config.max_workers ? `, at most ${esc(config.max_workers)} workers` : ""}</span></h3>`;
  if (!last) return `<section class="panel" id="adaptive">${head}<p class="muted" data-field="adaptive_action">No decision yet.</p></section>`;
  const row = (d) =>
    `<tr><td>${esc(formatDuration(d.at_secs))}</td><td>${esc(d.action)}</td><td>${esc(d.latency_ms === null ? "–" : `${formatRate(d.latency_ms)} ms`)}</td><td>${esc(formatRate(d.docs_per_sec))}</td><td>${esc(d.workers)}</td><td>${esc(formatLimit(d.rate_cap, "docs/s"))}</td><td>${esc(d.reason)}</td></tr>`;
  const recent = decisions.slice(-8).reverse().map(row).join("");
  return `<section class="panel" id="adaptive">${head}
<p class="decision"><span class="action action-${esc(last.action)}" data-field="adaptive_action">${esc(last.action)}</span>
<span data-field="adaptive_reason">${esc(last.reason)}</span></p>
<p class="muted">now ${esc(last.workers)} workers, cap ${esc(formatLimit(last.rate_cap, "docs/s"))}</p>
<details><summary>Recent decisions</summary><div class="scroll"><table><thead><tr><th>at</th><th>action</th><th>latency</th><th>docs/s</th><th>workers</th><th>cap</th><th>reason</th></tr></thead><tbody>${recent}</tbody></table></div></details></section>`;
}

/**
 * The time ranges, `[start, end]` in Unix seconds, in which the load guard held the job, from its
 * decision changes (oldest first): a range runs from a change to held to the next change to not
 * held, or to `now` while the job is still held.
 */
export function heldRanges(decisions, now) {
  const ranges = [];
  let start = null;
  for (const d of decisions ?? []) {
    if (d.throttled && start === null) start = d.at;
    else if (!d.throttled && start !== null) {
      ranges.push([start, d.at]);
      start = null;
    }
  }
  if (start !== null) ranges.push([start, Math.max(start, now)]);
  return ranges;
}

/** Whether the load guard holds the job now (an ended job is held by nothing). */
export function isHeld(view) {
  return Boolean(view?.load_guard?.throttled) && !isFinal(view.state);
}

/**
 * The load guard's panel: held or writing and why, the signals' last values, those it could not
 * read, what it watches, and a sync's postponed commit. Empty when it watches nothing and holds
 * nothing.
 */
export function loadGuardHtml(view) {
  const guard = view?.load_guard;
  if (!guard || (!guard.settings && !guard.throttled)) return "";
  const held = isHeld(view);
  const word = held ? "Held" : isFinal(view.state) ? "Not held" : "Writing";
  // A reason while not held says why a hold was overruled (a sync's short oplog headroom); once
  // the job has ended, the last reason is history (its changes are listed below).
  const reason = guard.reason && !isFinal(view.state) ? `<span data-field="guard_reason">${esc(guard.reason)}</span>` : "";
  const signals = Object.entries(guard.signals ?? {});
  const signalRows = signals.map(([name, value]) => `<tr><td>${esc(name)}</td><td class="num">${esc(formatRate(value))}</td></tr>`).join("");
  const unread = (guard.unread ?? []).map((u) => `<li>${esc(u)}</li>`).join("");
  const settings = Object.entries(guard.settings ?? {})
    .map(([k, v]) => `<dt>${esc(k)}</dt><dd>${esc(typeof v === "string" ? v : JSON.stringify(v))}</dd>`)
    .join("");
  const changes = (guard.decisions ?? [])
    .slice(-8)
    .reverse()
    .map((d) => `<tr><td>${esc(formatTime(d.at))}</td><td>${d.throttled ? "held" : "released"}</td><td>${esc(d.reason ?? "")}</td></tr>`)
    .join("");
  return `<section class="panel" id="load-guard"><h3>Load guard</h3>
<p class="decision"><span class="guard-state guard-${held ? "held" : "writing"}" data-field="guard_state" data-held="${held ? "true" : "false"}">${esc(word)}</span>${reason}</p>
${guard.commit_postponed ? `<p class="guard-postponed" data-field="commit_postponed">Commit postponed: ${esc(guard.commit_postponed)}</p>` : ""}
${signals.length > 0 ? `<div class="scroll"><table data-field="guard_signals"><thead><tr><th>signal</th><th class="num">value</th></tr></thead><tbody>${signalRows}</tbody></table></div>` : ""}
${unread ? `<p class="danger">Could not read:</p><ul class="problems" data-field="guard_unread">${unread}</ul>` : ""}
${settings ? `<dl class="spec" data-field="guard_settings">${settings}</dl>` : `<p class="muted" data-field="guard_settings">Watches nothing.</p>`}
${changes ? `<details><summary>Recent changes</summary><div class="scroll"><table><thead><tr><th>at</th><th>now</th><th>reason</th></tr></thead><tbody>${changes}</tbody></table></div></details>` : ""}</section>`;
}

/** Service nodes sharing one state: what each does for the job (the one that runs it first). */
export function nodesHtml(view) {
  const nodes = view.nodes ?? [];
  if (nodes.length === 0) return "";
  const rows = nodes
    .map(
      (n) =>
        `<tr><td>${esc(n.node)}</td><td>${esc(n.role === "runs" ? "runs the job" : "helps")}</td><td><span class="state state-${esc(n.state)}">${esc(n.state)}</span></td><td>${esc(formatCount(n.docs))}</td><td>${esc(formatRate(n.docs_per_sec))}</td><td>${esc(n.workers)}</td></tr>`,
    )
    .join("");
  return `<section class="panel" id="nodes"><h3>Service nodes <span class="muted">${esc(`${nodes.length} on this job`)}</span></h3>
<div class="scroll"><table data-field="nodes"><thead><tr><th>node</th><th>role</th><th>its run</th><th>docs</th><th>docs/s</th><th>workers</th></tr></thead><tbody>${rows}</tbody></table></div></section>`;
}

export function namespacesHtml(view) {
  const list = view.progress?.namespaces ?? [];
  if (list.length === 0) return "";
  const rows = list
    .map((ns) => {
      const expected = ns.expected !== null && ns.expected !== undefined ? ` / ${formatCount(ns.expected)}` : "";
      const extras = [
        ns.skipped > 0 ? `${formatCount(ns.skipped)} copied before` : "",
        ns.failed > 0 ? `${formatCount(ns.failed)} failed` : "",
        ns.equal > 0 ? `${formatCount(ns.equal)} equal (not written)` : "",
        ns.deleted > 0 ? `${formatCount(ns.deleted)} of them deletes` : "",
      ].filter((e) => e !== "");
      const note = extras.length > 0 ? `<br><span class="muted">${esc(extras.join(", "))}</span>` : "";
      return `<tr><td>${esc(ns.source)}${ns.source === ns.destination ? "" : ` → ${esc(ns.destination)}`}</td>
<td>${progressBar(ns, `${ns.source} progress`)}${partitionsHtml(ns)}</td><td>${esc(formatCount(ns.docs))}${esc(expected)}${note}</td>
<td>${esc(formatBytes(ns.bytes))}</td><td>${ns.finished ? "done" : esc(formatRate(ns.docs_per_sec))}</td></tr>`;
    })
    .join("");
  return `<div class="scroll"><table><thead><tr><th>namespace</th><th>progress</th><th>docs</th><th>bytes</th><th>avg docs/s</th></tr></thead><tbody>${rows}</tbody></table></div>`;
}

/** A namespace read in `_id` ranges: one cell per partition, by its state. */
export function partitionsHtml(ns) {
  const parts = ns.partitions ?? [];
  if (parts.length === 0) return "";
  const complete = parts.filter((p) => p.state === "complete").length;
  const cells = parts
    .map(
      (p) =>
        `<span class="part part-${esc(p.state)}" title="${esc(`partition ${p.index + 1}: ${formatCount(p.done)} docs, ${p.state}`)}"></span>`,
    )
    .join("");
  return `<div class="parts" data-field="partitions" aria-label="${esc(`${complete} of ${parts.length} partitions complete`)}">${cells}</div>
<span class="muted">${esc(`${complete} of ${parts.length} partitions complete`)}</span>`;
}

export function workersHtml(view) {
  const list = view.progress?.workers ?? [];
  if (list.length === 0) return "";
  const rows = list
    .map(
      (w) =>
        `<tr><td>${esc(w.id)}</td><td><span class="wstate wstate-${esc(w.state)}">${esc(w.state)}</span></td><td>${esc(formatCount(w.docs))}</td><td>${esc(formatCount(w.batches))}</td><td>${esc(w.mean_fetch_ms.toFixed(1))}</td><td>${esc(w.mean_write_ms.toFixed(1))}</td></tr>`,
    )
    .join("");
  return `<div class="scroll"><table><thead><tr><th>worker</th><th>state</th><th>docs</th><th>batches</th><th>fetch ms</th><th>write ms</th></tr></thead><tbody>${rows}</tbody></table></div>`;
}

/** A spec's mode in words, with what changes its meaning (a move's rehearsal, a reconcile's deletes). */
function specMode(spec) {
  if (spec.mode === "move" && spec.keep_source) return "move (keep the source: a rehearsal)";
  if (spec.mode === "move" && spec.allow_transform_move) return "move (through the transform: only the transformed copies are left)";
  if (spec.mode === "reconcile") return spec.delete_extra ? "reconcile (delete extra documents)" : "reconcile (keep extra documents)";
  return spec.mode ?? "copy";
}

/** A transform's patterns, each with its steps in order, for the spec. */
export function transformHtml(transform) {
  const rows = Object.entries(transform)
    .map(([pattern, steps]) => {
      const list = Array.isArray(steps) ? steps.map(stepLabel) : [JSON.stringify(steps)];
      return `<li data-pattern="${esc(pattern)}"><code>${esc(pattern)}</code>: ${list.map(esc).join(", ")}</li>`;
    })
    .join("");
  return `<ul class="transform" data-field="transform">${rows}</ul>`;
}

/** The job's spec as the service shows it (URIs without passwords). */
export function specHtml(view) {
  const spec = view.spec ?? {};
  const item = (k, v) => `<dt>${esc(k)}</dt><dd>${esc(v)}</dd>`;
  return `<dl class="spec">
${item("from", spec.from)}
${item("to", spec.to)}
${item("mode", specMode(spec))}
${spec.on_history_lost ? item("on history lost", spec.on_history_lost) : ""}
${item("namespaces", (spec.namespaces ?? []).join(", "))}
${item("filter", spec.filter ? JSON.stringify(spec.filter) : "none")}
${spec.transform ? `<dt>transform</dt><dd>${transformHtml(spec.transform)}</dd>` : ""}
${item("batch size", spec.batch_size ?? "default")}
${spec.readers ? item("readers", spec.readers) : ""}
${spec.partition_docs !== undefined && spec.partition_docs !== null ? item("partition docs", spec.partition_docs) : ""}
${item("strategy", spec.strategy ?? "default")}
${item("started", new Date(view.created_at * 1000).toLocaleString())}
${view.finished_at ? item("ended", new Date(view.finished_at * 1000).toLocaleString()) : ""}
</dl>`;
}

/** Rate slider positions 0..1000 map to 1..100,000 docs/s on a log scale. */
/**
 * The job's schema work: its current step (an index build, say), the indexes built of those to
 * build, the collections dropped and created, the views, and every index the destination refused.
 * Empty until there is something to say.
 */
export function schemaHtml(view) {
  const schema = view.progress?.schema;
  if (!schema) return "";
  const { step, dropped = [], created = [], indexes_total: total = 0, indexes_built: built = 0, index_errors: errors = [], views = [] } = schema;
  if (!step && total === 0 && errors.length === 0 && dropped.length + created.length + views.length === 0) return "";
  const list = (label, names) => (names.length ? `<p><span class="muted">${label}:</span> ${names.map(esc).join(", ")}</p>` : "");
  const refused = errors
    .map((e) => `<li><strong>${esc(e.index)}</strong> of ${esc(e.namespace)}: ${esc(e.reason)}</li>`)
    .join("");
  return `<section class="panel" id="schema"><h3>Schema</h3>
${step ? `<p data-field="schema_step">${esc(step)}…</p>` : ""}
${total > 0 || errors.length > 0 ? `<p data-field="indexes">Indexes built: ${esc(built)} of ${esc(total)}</p>` : ""}
${list("Dropped first", dropped)}${list("Created", created)}${list("Views", views)}
${refused ? `<p class="danger">Indexes the destination refused:</p><ul class="problems" data-field="index_errors">${refused}</ul>` : ""}</section>`;
}

/**
 * A plan (`POST /api/plan`) as HTML: one row per namespace (documents, size, indexes to build,
 * the destination's state), the views, the estimate (labelled as one), and the problems, those
 * that would stop the job first.
 */
export function planHtml(plan) {
  // Each namespace on a line of its own, its figures under it: four columns fit the form's width.
  const rows = plan.namespaces
    .map(
      (n) => `<tbody data-ns="${esc(n.source)}"><tr class="plan-ns"><th colspan="4" scope="rowgroup" data-field="namespace">${esc(n.source)} → ${esc(n.destination)}</th></tr>\
<tr class="plan-figures"><td class="num" data-field="documents">${esc(formatCount(n.documents))}${n.partitions > 1 ? `<br><span class="muted" data-field="partitions">in ~${esc(n.partitions)} partitions</span>` : ""}</td><td class="num">${esc(formatBytes(n.bytes))}</td>\
<td class="num">${esc(n.indexes.length)}</td><td data-field="destination_state">${esc(n.destination_state)}</td></tr>\
${n.transform?.length ? `<tr class="plan-transform"><td colspan="4" data-field="transform"><span class="muted">transform:</span> ${n.transform.map(esc).join(", ")}</td></tr>` : ""}</tbody>`,
    )
    .join("");
  const views = plan.views
    .map((v) => `<li>view ${esc(v.source)} → ${esc(v.destination)} (on ${esc(v.view_on)}): ${esc(v.destination_state)}</li>`)
    .join("");
  const problems = [...plan.problems]
    .sort((a, b) => Number(b.blocks) - Number(a.blocks))
    .map((p) => `<li class="${p.blocks ? "blocks" : "note"}">${p.blocks ? "Blocks the job: " : ""}${esc(p.message)}</li>`)
    .join("");
  const estimate = plan.estimate
    ? `<p class="estimate" data-field="estimate">Estimate: ${plan.estimate.seconds < 1 ? "under a second" : `about ${esc(formatDuration(plan.estimate.seconds))}`} at \
${esc(formatRate(plan.estimate.docs_per_sec))} docs/s (${esc(plan.estimate.basis)})</p>`
    : "";
  const verdict = plan.blocked
    ? `<p class="verdict blocked" data-field="verdict">The job would not start.</p>`
    : `<p class="verdict" data-field="verdict">Nothing blocks the job.</p>`;
  return `<h3>Plan: nothing was written</h3>${verdict}
<table class="plan-table"><thead><tr><th class="num">Documents</th><th class="num">Size</th><th class="num">Indexes</th><th>Destination</th></tr></thead>
${rows}</table>
${views ? `<ul class="views">${views}</ul>` : ""}
<p data-field="totals">${esc(formatCount(plan.documents))} documents, ${esc(formatBytes(plan.bytes))}; indexes \
${plan.indexes === "none" ? "not built" : `built ${esc(plan.indexes)} the documents`}\
${plan.drop ? "; the destination's namespaces are <strong>dropped first</strong>" : ""}.</p>
${plan.deletes_from_source ? `<p class="deletes" data-field="deletes_from_source">A move: each batch is <strong>deleted from the source</strong> once found at the destination, unless it changed meanwhile.</p>` : ""}${plan.mode === "move" && !plan.deletes_from_source ? `<p data-field="deletes_from_source">A move rehearsal: the source is kept.</p>` : ""}
${estimate}${problems ? `<ul class="plan-problems">${problems}</ul>` : ""}`;
}

export const SLIDER_MAX = 1000;

export function sliderToRate(position) {
  const rate = 10 ** ((position / SLIDER_MAX) * 5);
  // Round to two significant digits, so the box shows round numbers.
  const magnitude = 10 ** Math.max(0, Math.floor(Math.log10(rate)) - 1);
  return Math.max(1, Math.round(rate / magnitude) * magnitude);
}

export function rateToSlider(rate) {
  if (rate === null || rate === undefined || rate <= 0) return SLIDER_MAX;
  return Math.round(Math.min(1, Math.log10(Math.max(1, rate)) / 5) * SLIDER_MAX);
}

/**
 * Server-sent events from the text received so far: the complete events (`{event, data}`, data
 * lines joined by "\n") and the rest, which waits for more text. The dashboard reads a job's
 * event stream with fetch(), which, unlike EventSource, can send the API token in a header.
 * Comments (keep-alives) and fields other than `event` and `data` are skipped.
 */
export function parseEvents(text) {
  // A final "\r" may be the first half of "\r\n": it waits for the next piece.
  const held = text.endsWith("\r") ? "\r" : "";
  const normalised = text.slice(0, text.length - held.length).replaceAll("\r\n", "\n").replaceAll("\r", "\n");
  const blocks = normalised.split("\n\n");
  const rest = blocks.pop() + held;
  const events = [];
  for (const block of blocks) {
    let event = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (line === "" || line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") event = value;
      else if (field === "data") data.push(value);
    }
    if (data.length > 0) events.push({ event, data: data.join("\n") });
  }
  return { events, rest };
}
