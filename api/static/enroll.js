// Enroll from a CSV file (staff of a cohort, and admins): pick the cohort and the file, upload
// it to `POST /api/v1/cohorts/{id}/enrollments/import`, and watch the per-row report fill in
// from the `import.progress` events of `staff:{cohort}` (the gateway lets only that cohort's
// staff subscribe). The final event carries the counts; the page then reads
// `GET /api/v1/imports/{id}` once, so a row whose event was missed still shows. Every value
// from the file or the server is rendered as text.
import {
  $,
  ApiError,
  api,
  attempt,
  el,
  fill,
  gateway,
  loadSession,
  logout,
  refreshTokens,
  requireUser,
  toLogin,
} from "./app.js";

const MAX_BYTES = 2 * 1024 * 1024; // the server's limit (workers/csv_import.py MAX_BYTES)

const page = {
  me: null,
  client: null,
  cohort: null, // the cohort id whose staff topic is followed
  off: null, // unsubscribes it
  current: null, // the import shown: {id, total, processed, status, counts, error}
  rows: new Map(), // line -> row result
  early: new Map(), // import id -> events that arrived before the upload's answer
  events: 0, // import.progress events applied to the report shown
};

const LABELS = {
  created: "Enrolled",
  already_enrolled: "Skipped: already enrolled",
  invalid: "Error",
};

// -- upload ---------------------------------------------------------------------------------

/** POST the file as text/csv (api() sends JSON only); an expired token is refreshed once. */
async function upload(cohortId, file) {
  const send = () =>
    fetch(`/api/v1/cohorts/${cohortId}/enrollments/import`, {
      method: "POST",
      headers: {
        Accept: "application/json",
        "Content-Type": "text/csv",
        Authorization: `Bearer ${(loadSession() || {}).access_token || ""}`,
      },
      body: file,
      cache: "no-store",
    });
  let response = await send();
  if (response.status === 401) {
    try {
      await refreshTokens();
    } catch {
      return toLogin();
    }
    response = await send();
  }
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    const err = (data && data.error) || {};
    throw new ApiError(response.status, err.code || `http_${response.status}`, err.message);
  }
  return data;
}

/** Words for a refused upload. */
function refusal(err) {
  switch (err.status) {
    case 400:
      return `The file could not be read: ${err.message || err.code}.`;
    case 401:
    case 403:
      return "Only the staff of this cohort can enroll students in it.";
    case 404:
      return "This cohort does not exist any more.";
    case 413:
      return "The file is too large: 2 MiB at most.";
    case 415:
      return "Send a CSV file.";
    default:
      return `The upload failed (${err.code || err.status}). Try again.`;
  }
}

/** A reason not to send `file` at all, or "". */
function precheck(file) {
  if (!file) return "Choose a CSV file first.";
  if (file.size === 0) return "The file is empty.";
  if (file.size > MAX_BYTES) return "The file is too large: 2 MiB at most.";
  return "";
}

async function onSubmit(event) {
  event.preventDefault();
  const error = $("#upload-error");
  const cohortId = Number($("#upload-cohort").value);
  const file = $("#upload-file").files[0];
  error.textContent = precheck(file);
  if (error.textContent) return;
  const button = $("#upload-button");
  button.disabled = true;
  try {
    await follow(cohortId); // before the upload: no event of it can be missed
    const started = await upload(cohortId, file);
    show(started);
    for (const data of page.early.get(started.id) || []) onProgress(data);
    page.early.clear();
  } catch (err) {
    error.textContent = err instanceof ApiError ? refusal(err) : `The upload failed: ${err.message}`;
  } finally {
    button.disabled = false;
  }
}

// -- events ---------------------------------------------------------------------------------

/** Follow `staff:{cohortId}` from its current end (once per cohort chosen). */
async function follow(cohortId) {
  if (page.cohort === cohortId) return;
  if (page.off) page.off();
  const topic = `staff:${cohortId}`;
  const cursors = await page.client.tails([topic]).catch(() => ({}));
  page.cohort = cohortId;
  page.off = page.client.subscribe(topic, onStaffEvent, {
    cursor: cursors[topic],
    onReset: async () => {
      if (page.current) await reload(page.current.id);
    },
  });
}

function onStaffEvent(ev) {
  if (ev.event !== "import.progress") return;
  const d = ev.data || {};
  if (page.current && d.import_id === page.current.id) onProgress(d);
  else if (d.uploaded_by === page.me.id) {
    // Perhaps the upload in flight, faster than its answer: kept until the answer names it.
    const list = page.early.get(d.import_id) || [];
    list.push(d);
    page.early.set(d.import_id, list);
  }
}

function onProgress(d) {
  const cur = page.current;
  page.events += 1;
  for (const row of d.rows || []) page.rows.set(row.line, row);
  cur.processed = Math.max(cur.processed, d.processed || 0);
  if (d.status === "done" || d.status === "failed") {
    cur.status = d.status;
    cur.counts = d.counts || null;
    cur.error = d.error || null;
    attempt(() => reload(cur.id)); // anything an event did not bring
  } else if (cur.status === "pending") cur.status = d.status;
  render();
}

async function reload(importId) {
  const data = await api(`/api/v1/imports/${importId}`);
  if (!page.current || page.current.id !== importId) return;
  for (const row of data.results) page.rows.set(row.line, row);
  Object.assign(page.current, {
    processed: Math.max(page.current.processed, data.processed),
    status: page.current.status === "done" ? "done" : data.status,
    error: data.error,
  });
  render();
}

// -- rendering ------------------------------------------------------------------------------

function show(started) {
  page.current = {
    id: started.id,
    total: started.total,
    processed: started.processed,
    status: started.status,
    counts: null,
    error: started.error,
  };
  page.rows = new Map(started.results.map((r) => [r.line, r]));
  page.events = 0;
  $("#report").classList.remove("hidden");
  render();
}

function summary(cur, rows) {
  if (cur.status === "failed") return `The import failed: ${cur.error || "unknown error"}.`;
  if (cur.status !== "done") return "Enrolling… rows appear as they are done.";
  const enrolled = rows.filter((r) => r.status === "created");
  const skipped = rows.filter((r) => r.status === "already_enrolled").length;
  const errors = rows.filter((r) => r.status === "invalid");
  const fresh = enrolled.filter((r) => r.new_user).length;
  const parts = [
    `${enrolled.length} enrolled (${fresh} new ${fresh === 1 ? "account" : "accounts"})`,
    `${skipped} skipped (already enrolled)`,
    `${errors.length} ${errors.length === 1 ? "error" : "errors"}`,
  ];
  const where = errors.length ? ` in rows ${errors.map((r) => r.line).join(", ")}` : "";
  return `Done: ${parts.join(", ")}${where}.`;
}

function render() {
  const cur = page.current;
  const rows = [...page.rows.values()].sort((a, b) => a.line - b.line);
  const report = $("#report");
  report.dataset.status = cur.status;
  report.dataset.import = cur.id;
  report.dataset.events = page.events;
  $("#report-progress").textContent = `${Math.min(cur.processed, cur.total)} / ${cur.total} rows`;
  $("#report-summary").textContent = summary(cur, rows);
  fill(
    $("#report-rows"),
    rows.map((r) =>
      el(
        "tr",
        { dataset: { line: r.line, status: r.status } },
        el("td", {}, String(r.line)),
        el("td", {}, r.email),
        el("td", { class: "status" }, r.status === "created" && r.new_user ? "Enrolled (new account)" : LABELS[r.status] || r.status),
        el("td", { class: "reason" }, r.reason || ""),
      ),
    ),
  );
}

// -- start ----------------------------------------------------------------------------------

async function main() {
  page.me = await requireUser();
  $("#who").textContent = page.me.display_name;
  $("#logout").addEventListener("click", logout);
  const mine = page.me.cohorts.filter((c) => c.kind === "staff" || page.me.role === "admin");
  if (!mine.length) {
    $("#load-error").textContent = "Only a cohort's staff can enroll students from a file.";
    document.body.dataset.ready = "true";
    return;
  }
  const wanted = Number(new URLSearchParams(location.search).get("cohort"));
  fill(
    $("#upload-cohort"),
    mine.map((c) => el("option", { value: c.id, selected: c.id === wanted }, c.title)),
  );
  $("#back").href = `/instructor?cohort=${$("#upload-cohort").value}`;
  $("#upload-cohort").addEventListener("change", (event) => {
    $("#back").href = `/instructor?cohort=${event.target.value}`;
    attempt(() => follow(Number(event.target.value)));
  });
  $("#upload-form").addEventListener("submit", (event) => attempt(() => onSubmit(event)));
  $("#upload").classList.remove("hidden");
  page.client = await gateway($("#conn"));
  await follow(Number($("#upload-cohort").value));
  document.body.dataset.ready = "true";
}

main();
