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
  when,
} from "./app.js";

const page = {
  me: null,
  cohort: null,
  detail: null,
  names: new Map(),
  sessions: new Map(),
  presence: new Map(), // session id -> {count, users}
  quizzes: [],
  stats: new Map(),
  dashboard: null,
  announcements: [],
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
  for (const p of people) page.names.set(String(p.user_id), p.display_name);
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

async function loadAnnouncements() {
  page.announcements = await api(`/api/v1/cohorts/${page.cohort.id}/announcements`);
  renderAnnouncements();
}

function loadAll() {
  return Promise.all([
    loadNames().then(loadProgress),
    loadSessions(),
    loadQuizStats(),
    loadAnnouncements(),
  ]);
}

const refreshStudents = debounce(loadProgress, 1500);
const refreshQuizStats = debounce(loadQuizStats, 1000);

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
    case "dashboard.update":
      page.dashboard = d;
      renderGlance();
      refreshQuizStats();
      break;
    case "presence":
      page.presence.set(d.session_id, { count: d.count, users: d.users });
      renderSessions();
      break;
    default:
      break;
  }
}

function onCohortEvent(ev) {
  const d = ev.data || {};
  switch (ev.event) {
    case "announcement.new":
      if (!page.announcements.some((a) => a.id === d.id)) {
        page.announcements.unshift(d);
        renderAnnouncements();
      }
      break;
    case "session.state":
      page.sessions.set(d.session.id, d.session);
      renderSessions();
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
    fill(
      $("#struggling"),
      dash.struggling.length
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
        el("td", {}, s.display_name),
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
          );
        })
      : el("tr", {}, el("td", { colspan: 4, class: "muted" }, "No quizzes yet.")),
  );
}

function renderAnnouncements() {
  fill(
    $("#announcement-list"),
    page.announcements.map((a) =>
      el(
        "li",
        { dataset: { id: a.id } },
        el("h3", { class: "body" }, a.title),
        a.body ? el("p", { class: "body" }, a.body) : null,
        el("p", { class: "muted" }, a.author_name || "", " · ", when(a.created_at)),
      ),
    ),
  );
}

// -- actions --------------------------------------------------------------------------------

async function transition(sessionId, action) {
  await attempt(async () => {
    const s = await api(`/api/v1/sessions/${sessionId}/${action}`, { method: "POST" });
    page.sessions.set(s.id, s);
    renderSessions();
  });
}

function wire() {
  $("#logout").addEventListener("click", logout);
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
  if (!page.cohort) {
    $("#load-error").textContent = "You do not teach a cohort yet.";
    return;
  }
  fill($("#cohort"), cohortPicker(page.me, ["staff"], page.cohort));
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
