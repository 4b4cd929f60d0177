// The instructor's cohort view: progress and quiz statistics kept current by `staff:{cohort}`
// events, struggling-student alerts, who is in each live room, and the controls (schedule,
// start and end sessions, open a room to run its polls and Q&A, post announcements).
import {
  $,
  api,
  attempt,
  cohortPicker,
  el,
  fill,
  follow,
  gateway,
  logout,
  pct,
  pickCohort,
  requireUser,
  toast,
  when,
} from "./app.js";
import { announcementList } from "./announcements.js";
import { mountNotificationSettings } from "./notify-settings.js";
import { onlinePanel } from "./online.js";

const page = {
  me: null,
  cohort: null,
  detail: null,
  names: new Map(),
  kinds: new Map(), // user id -> member | staff
  online: null, // the "Online now" panel (online.js)
  sessions: new Map(),
  presence: new Map(), // session id -> {count, users}
  quizzes: [],
  stats: new Map(),
  dashboard: null,
  announcements: announcementList(),
  queue: [], // the grading queue: submissions with answers waiting for a human
};

function nameOf(userId) {
  return page.names.get(String(userId)) || `#${userId}`;
}

/** Run `fn` at most once per `ms`, trailing (events can come in bursts). */
function debounce(fn, ms) {
  let timer = null;
  return () => {
    clearTimeout(timer);
    timer = setTimeout(() => attempt(fn), ms);
  };
}

// -- loading --------------------------------------------------------------------------------

async function loadProgress() {
  page.detail = await api(`/api/v1/cohorts/${page.cohort.id}/progress/students`);
  for (const s of page.detail.per_student) page.names.set(String(s.user_id), s.display_name);
  renderProgress();
  renderGlance();
}

async function loadNames() {
  const people = await api(`/api/v1/cohorts/${page.cohort.id}/enrollments`).catch(() => []);
  for (const p of people) {
    page.names.set(String(p.user_id), p.display_name);
    page.kinds.set(String(p.user_id), p.kind);
  }
}

async function loadSessions() {
  const list = await api(`/api/v1/cohorts/${page.cohort.id}/sessions`);
  page.sessions = new Map(list.map((s) => [s.id, s]));
  renderSessions();
}

async function loadQuizStats() {
  page.quizzes = await api(`/api/v1/cohorts/${page.cohort.id}/quizzes`);
  const stats = await Promise.all(
    page.quizzes.map((q) => api(`/api/v1/quizzes/${q.id}/stats`).catch(() => null)),
  );
  page.stats = new Map(page.quizzes.map((q, i) => [q.id, stats[i]]));
  renderQuizStats();
}

function loadAnnouncements() {
  return page.announcements.load(page.cohort.id);
}

// The figures now (the scheduler's dashboard.update only comes when something happened).
async function loadDashboard() {
  page.dashboard = await api(`/api/v1/cohorts/${page.cohort.id}/dashboard`);
  for (const p of page.dashboard.online || []) {
    page.names.set(String(p.user_id), p.display_name);
    page.kinds.set(String(p.user_id), p.kind);
  }
  page.online.load(page.dashboard);
  renderGlance();
}

async function loadPrivacy() {
  const feed = await api(`/api/v1/cohorts/${page.cohort.id}/activity?limit=1`);
  $("#activity-privacy").value = feed.privacy;
}

async function loadQueue() {
  page.queue = await api(`/api/v1/cohorts/${page.cohort.id}/grading-queue`);
  renderQueue();
}

function loadAll() {
  return Promise.all([
    loadDashboard(),
    loadPrivacy(),
    loadQueue(),
    loadNames().then(loadProgress),
    loadSessions(),
    loadQuizStats(),
    loadAnnouncements(),
  ]);
}

const refreshStudents = debounce(loadProgress, 1500);
const refreshQuizStats = debounce(loadQuizStats, 1000);
const refreshQueue = debounce(loadQueue, 300);

// -- events ---------------------------------------------------------------------------------

function onStaffEvent(ev) {
  const d = ev.data || {};
  switch (ev.event) {
    case "staff.progress":
      if (page.detail) {
        Object.assign(page.detail, {
          total: d.total,
          students: d.students,
          average_percentage: d.average_percentage,
          lessons: d.lessons,
        });
        renderProgress();
        renderGlance();
      }
      refreshStudents(); // the per-student rows are not in the event
      break;
    case "online": // someone connected or left (a versioned change)
      page.online.event(d);
      if (Array.isArray(d.online) && d.online.some((id) => !page.names.has(String(id)))) {
        attempt(async () => {
          await loadNames(); // someone enrolled since the page loaded
          page.online.render();
        });
      }
      break;
    case "dashboard.update":
      page.dashboard = d;
      renderGlance();
      refreshQuizStats();
      break;
    case "presence":
      page.presence.set(d.session_id, { count: d.count, users: d.users });
      renderSessions();
      break;
    case "grading.waiting": // a new answer to grade: the event names it, the route details it
      refreshQueue();
      break;
    case "grading.resolved": // graded here or by a colleague: drop it at once
      page.queue = page.queue.filter((item) => item.submission_id !== d.submission_id);
      renderQueue();
      break;
    default:
      break;
  }
}

function onCohortEvent(ev) {
  const d = ev.data || {};
  switch (ev.event) {
    case "announcement.new":
      page.announcements.add(d);
      break;
    case "session.state":
      page.sessions.set(d.session.id, d.session);
      renderSessions();
      break;
    case "activity.settings":
      $("#activity-privacy").value = d.privacy;
      break;
    case "leaderboard.update": // a grade landed: the quiz statistics moved
    case "quiz.published":
      refreshQuizStats();
      break;
    default:
      break;
  }
}

// -- rendering ------------------------------------------------------------------------------

function renderGlance() {
  const d = page.detail;
  const dash = page.dashboard;
  $("#kpi-students").textContent = d ? d.students : dash ? dash.members : "–";
  $("#kpi-progress").textContent = d ? pct(d.average_percentage) : "–";
  if (dash) {
    $("#kpi-score").textContent =
      dash.average_percentage === null ? "–" : pct(dash.average_percentage);
    $("#kpi-subs").textContent = dash.submissions_24h;
    $("#kpi-pending").textContent = dash.pending_grading;
    $("#kpi-active").textContent = `${dash.active_24h ?? 0} / ${dash.active_7d ?? 0}`;
    const alerts = dash.alerts || [];
    fill(
      $("#struggling"),
      alerts.length
        ? el(
            "div",
            { class: "alert" },
            el("strong", {}, "May need help:"),
            el(
              "ul",
              { class: "plain" },
              alerts.map((a) =>
                el(
                  "li",
                  { class: "struggling", dataset: { user: a.user_id, rule: a.rule } },
                  el("strong", {}, a.name),
                  ` · ${a.reason}`,
                ),
              ),
            ),
          )
        : dash.struggling.length
          ? el(
              "div",
              { class: "alert" },
              el("strong", {}, "Struggling (quiz average under 50%): "),
              dash.struggling.map(nameOf).join(", "),
            )
          : null,
    );
  }
}

function renderProgress() {
  const d = page.detail;
  fill(
    $("#lesson-progress"),
    d.lessons.length
      ? d.lessons.map((l) => {
          const share = d.students ? (100 * l.completed_count) / d.students : 0;
          return el(
            "li",
            { dataset: { id: l.lesson_id, completed: l.completed_count } },
            el(
              "div",
              { class: "row" },
              el("span", { class: "grow body" }, l.title),
              el("span", { class: "muted lesson-count" }, `${l.completed_count} / ${d.students}`),
            ),
            el("div", { class: "bar" }, el("span", { style: { width: `${share}%` } })),
          );
        })
      : el("li", { class: "muted" }, "No lessons yet."),
  );
  fill(
    $("#student-rows"),
    d.per_student.map((s) =>
      el(
        "tr",
        { dataset: { user: s.user_id } },
        el("td", {}, el("button", { class: "link small secondary drill", onclick: () => attempt(() => openStudent(s.user_id)) }, s.display_name)),
        el("td", {}, `${s.completed_count} / ${d.total}`),
        el("td", {}, pct(s.percentage)),
      ),
    ),
  );
}

function renderSessions() {
  const list = [...page.sessions.values()].sort((a, b) => a.starts_at.localeCompare(b.starts_at));
  fill(
    $("#session-list"),
    list.length
      ? list.map((s) => {
          const here = page.presence.get(s.id);
          return el(
            "li",
            { dataset: { id: s.id, state: s.state } },
            el(
              "div",
              { class: "row" },
              el("strong", { class: "grow body" }, s.title),
              el("span", { class: "muted session-state" }, s.state),
            ),
            el("div", { class: "muted" }, when(s.starts_at)),
            here && s.state === "live"
              ? el(
                  "div",
                  { class: "muted online" },
                  `Online now (${here.count}): `,
                  (here.users || []).map(nameOf).join(", "),
                )
              : null,
            el(
              "div",
              { class: "row" },
              s.state === "scheduled"
                ? el("button", { class: "small start", onclick: () => transition(s.id, "start") }, "Start")
                : null,
              s.state === "live"
                ? el("button", { class: "small secondary end", onclick: () => transition(s.id, "end") }, "End")
                : null,
              s.state !== "ended" ? el("a", { href: `/live?session=${s.id}` }, "Run the room →") : null,
              s.state !== "scheduled"
                ? el("button", { class: "small secondary attendance-csv", onclick: () => attempt(() => downloadAttendance(s)) }, "Attendance CSV")
                : null,
            ),
          );
        })
      : el("li", { class: "muted" }, "No sessions yet."),
  );
}

function renderQuizStats() {
  fill(
    $("#quiz-rows"),
    page.quizzes.length
      ? page.quizzes.map((q) => {
          const s = page.stats.get(q.id);
          const avg = s && s.average_percentage !== null ? pct(s.average_percentage) : "–";
          const median = s && s.median_percentage !== null ? pct(s.median_percentage) : "–";
          return el(
            "tr",
            { dataset: { id: q.id } },
            el("td", {}, q.title),
            el("td", { class: "graded" }, s ? s.graded : "–"),
            el("td", { class: "average" }, avg),
            el("td", {}, median),
            el("td", {}, el("button", { class: "small secondary review", onclick: () => openReview(q) }, "Review")),
          );
        })
      : el("tr", {}, el("td", { colspan: 5, class: "muted" }, "No quizzes yet.")),
  );
}

function renderQueue() {
  const count = $("#grading-count");
  count.dataset.n = String(page.queue.length);
  count.textContent = page.queue.length ? `(${page.queue.length})` : "";
  fill(
    $("#grading-list"),
    page.queue.length
      ? page.queue.map((item) => {
          const form = el(
            "form",
            { class: "grade-form", dataset: { submission: item.submission_id } },
            el(
              "div",
              { class: "row" },
              el("strong", { class: "grow body" }, `${item.student_name} · ${item.quiz_title}`),
              el("span", { class: "muted" }, `attempt ${item.attempt} · ${item.score} / ${item.max_score} · ${when(item.submitted_at)}`),
            ),
            item.waiting.map((w) =>
              el(
                "fieldset",
                { class: "waiting", dataset: { question: w.question_id } },
                el("legend", { class: "body" }, w.prompt),
                el("p", { class: "body answer" }, "Answer: ", el("q", {}, String(w.answer ?? ""))),
                el("p", { class: "muted" }, `Accepted: ${w.accepted.join(" · ")}`),
                el(
                  "label",
                  {},
                  `Points (0–${w.max_points}) `,
                  el("input", {
                    type: "number",
                    class: "points",
                    name: `points-${w.question_id}`,
                    min: 0,
                    max: w.max_points,
                    step: "any",
                    required: true,
                    "aria-label": `Points for ${w.prompt}`,
                  }),
                ),
              ),
            ),
            el("textarea", { class: "comment", maxlength: 5000, placeholder: "Comment for the student (optional)", "aria-label": "Comment" }),
            el("button", { type: "submit", class: "small" }, "Save grade"),
          );
          form.addEventListener("submit", (event) => {
            event.preventDefault();
            gradeByHand(item, form);
          });
          return el("li", { dataset: { submission: item.submission_id } }, form);
        })
      : el("li", { class: "muted" }, "Nothing to grade."),
  );
}


// -- actions --------------------------------------------------------------------------------

/** One student in detail: lessons, grades, attendance and why they may need help. */
async function openStudent(userId) {
  const d = await api(`/api/v1/cohorts/${page.cohort.id}/students/${userId}`);
  const p = d.progress;
  fill(
    $("#student-detail"),
    el(
      "div",
      { class: "card-inset", dataset: { user: d.user_id } },
      el("h3", {}, d.display_name, el("span", { class: "muted" }, ` · ${d.email}`)),
      el("p", { class: "detail-progress" }, `${p.completed_count} of ${p.total} lessons done (${pct(p.percentage)})`),
      d.alerts.length
        ? el("ul", { class: "plain alert" }, d.alerts.map((a) => el("li", { class: "detail-alert" }, a.reason)))
        : null,
      el("h4", {}, "Quiz submissions"),
      el(
        "ul",
        { class: "plain" },
        d.submissions.length
          ? d.submissions.map((x) =>
              el(
                "li",
                { dataset: { submission: x.submission_id } },
                `${x.quiz_title} · attempt ${x.attempt} · `,
                x.status === "graded" ? `${x.score} / ${x.max_score}` : "grading…",
                x.review === "waiting" ? " · waiting for grading" : "",
              ),
            )
          : el("li", { class: "muted" }, "None yet."),
      ),
      el("h4", {}, "Live sessions"),
      el(
        "ul",
        { class: "plain" },
        d.attendance.length
          ? d.attendance.map((a) =>
              el("li", {}, `${a.title}: `, a.attended ? `${Math.round(a.seconds_attended / 60)} min` : "absent"),
            )
          : el("li", { class: "muted" }, "No session held yet."),
      ),
    ),
  );
}

async function downloadAttendance(s) {
  const text = await api(`/api/v1/sessions/${s.id}/attendance.csv`, { as: "text" });
  const url = URL.createObjectURL(new Blob([text], { type: "text/csv" }));
  const link = el("a", { href: url, download: `attendance-session-${s.id}.csv`, hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

async function transition(sessionId, action) {
  await attempt(async () => {
    const s = await api(`/api/v1/sessions/${sessionId}/${action}`, { method: "POST" });
    page.sessions.set(s.id, s);
    renderSessions();
  });
}

async function gradeByHand(item, form) {
  const points = {};
  for (const w of item.waiting) {
    const value = form.elements[`points-${w.question_id}`].value;
    if (value !== "") points[w.question_id] = Number(value);
  }
  const comment = form.querySelector(".comment").value.trim();
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  // One key per attempt at saving: resending after a lost response stores one feedback; a
  // new key only once this one was stored.
  item.key ??= `grade-${item.submission_id}-${Date.now()}`;
  const saved = await attempt(() =>
    api(`/api/v1/submissions/${item.submission_id}/feedback`, {
      method: "POST",
      body: { comment, question_points: points, client_key: item.key },
    }),
  );
  button.disabled = false;
  if (saved) item.key = null;
  if (saved && saved.review !== "waiting") {
    page.queue = page.queue.filter((q) => q.submission_id !== item.submission_id);
    renderQueue();
  }
}

/** Every submission of a quiz, each with a comment and score-override form. */
async function openReview(quiz) {
  const subs = await attempt(() => api(`/api/v1/quizzes/${quiz.id}/submissions`));
  if (!subs) return;
  const rows = subs
    .filter((s) => s.status === "graded")
    .map((s) => {
      const form = el(
        "form",
        { class: "review-form", dataset: { submission: s.id } },
        el(
          "div",
          { class: "row" },
          el("strong", { class: "grow" }, `${nameOf(s.user_id)} · attempt ${s.attempt}`),
          el("span", { class: "muted sub-score" }, `${s.score} / ${s.max_score}`, s.score_overridden ? " (set by hand)" : ""),
        ),
        el("textarea", { class: "comment", maxlength: 5000, placeholder: "Comment", "aria-label": "Comment" }),
        el(
          "div",
          { class: "row" },
          el("label", { class: "grow" }, "Set score ", el("input", { type: "number", class: "score", min: 0, max: s.max_score, step: "any", "aria-label": "Score" })),
          el("button", { type: "submit", class: "small" }, "Send feedback"),
        ),
      );
      form.addEventListener("submit", (event) => {
        event.preventDefault();
        const comment = form.querySelector(".comment").value.trim();
        const score = form.querySelector(".score").value;
        const body = { comment };
        if (score !== "") body.score = Number(score);
        attempt(async () => {
          const fb = await api(`/api/v1/submissions/${s.id}/feedback`, { method: "POST", body });
          fill(form.querySelector(".sub-score"), `${fb.score} / ${fb.max_score}`, fb.score_override !== null ? " (set by hand)" : "");
          form.querySelector(".comment").value = "";
          toast("Feedback sent.");
        });
      });
      return el("li", { dataset: { submission: s.id } }, form);
    });
  fill(
    $("#review-panel"),
    el("h3", {}, `Submissions: ${quiz.title}`),
    el("ul", { class: "plain" }, rows.length ? rows : el("li", { class: "muted" }, "No graded submissions yet.")),
  );
}

function wire() {
  $("#logout").addEventListener("click", logout);
  $("#activity-privacy").addEventListener("change", (event) =>
    attempt(async () => {
      await api(`/api/v1/cohorts/${page.cohort.id}/activity-settings`, {
        method: "PUT",
        body: { privacy: event.target.value },
      });
      toast("Activity feed updated.");
    }),
  );
  $("#announce-form").addEventListener("submit", (event) => {
    event.preventDefault();
    attempt(async () => {
      const title = $("#announce-title").value.trim();
      const body = $("#announce-body").value.trim();
      if (!title) return;
      const a = await api(`/api/v1/cohorts/${page.cohort.id}/announcements`, {
        method: "POST",
        body: { title, body },
      });
      $("#announce-title").value = "";
      $("#announce-body").value = "";
      onCohortEvent({ event: "announcement.new", data: a });
    });
  });
  const start = $("#session-start");
  const soon = new Date(Date.now() + 5 * 60000);
  soon.setSeconds(0, 0);
  start.value = new Date(soon.getTime() - soon.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
  $("#session-form").addEventListener("submit", (event) => {
    event.preventDefault();
    attempt(async () => {
      const title = $("#session-title").value.trim();
      const begins = new Date(start.value);
      const minutes = Number($("#session-minutes").value) || 60;
      if (!title || Number.isNaN(begins.getTime())) return;
      const s = await api(`/api/v1/cohorts/${page.cohort.id}/sessions`, {
        method: "POST",
        body: {
          title,
          starts_at: begins.toISOString(),
          ends_at: new Date(begins.getTime() + minutes * 60000).toISOString(),
        },
      });
      $("#session-title").value = "";
      page.sessions.set(s.id, s);
      renderSessions();
    });
  });
}

async function main() {
  page.me = await requireUser();
  page.cohort = pickCohort(page.me, ["staff"]);
  $("#who").textContent = page.me.display_name;
  wire();
  attempt(() => mountNotificationSettings($("#notify-settings")));
  if (!page.cohort) {
    $("#load-error").textContent = "You do not teach a cohort yet.";
    return;
  }
  fill($("#cohort"), cohortPicker(page.me, ["staff"], page.cohort));
  $("#enroll-link").href = `/enroll?cohort=${page.cohort.id}`;
  page.online = onlinePanel(
    $("#online"),
    (id) => ({ name: nameOf(id), kind: page.kinds.get(String(id)) || "member" }),
    () => attempt(loadDashboard),
  );
  const client = await gateway($("#conn"));
  await follow(
    client,
    { [`staff:${page.cohort.id}`]: onStaffEvent, [`cohort:${page.cohort.id}`]: onCohortEvent },
    loadAll,
    "the cohort",
  );
  document.body.dataset.ready = "true";
}

main();
