// The student dashboard: lessons and progress, quizzes, notifications, announcements, the
// cohort leaderboard and the live sessions, all kept current by the gateway.
//
// Consistency: the page takes the gateway's position of its topics *first*, then loads the
// snapshots from the API, then subscribes from that position, so no event falls between the
// snapshot and the stream. Every handler is idempotent (events carry absolute values or ids),
// so an event the snapshot already reflects changes nothing.
import {
  $,
  api,
  attempt,
  cohortPicker,
  el,
  fill,
  follow,
  gateway,
  loadSession,
  logout,
  pct,
  pickCohort,
  refreshTokens,
  requireUser,
  saveSession,
  toast,
  when,
} from "./app.js";
import { renderMarkdown } from "./markdown.js";
import { announcementList } from "./announcements.js";
import { mountNotificationSettings } from "./notify-settings.js";
import { enqueue, startOfflineQueue, unreachable } from "./offline-queue.js";

const page = {
  me: null,
  cohort: null,
  progress: null,
  quizzes: [],
  latest: new Map(), // quiz id -> latest submission (or graded event)
  graded: new Map(), // submission id -> quiz.graded data
  notifications: [],
  unread: 0,
  announcements: announcementList("No announcements."),
  board: null,
  sessions: new Map(),
  feedback: [], // newest first
  activity: { privacy: "initials", items: [] }, // the cohort feed, newest first
  lessonId: null, // the lesson open in the reader
  certificate: null, // milestones with unlocked_at, and the certificate once complete
};

// -- loading --------------------------------------------------------------------------------

async function loadProgress() {
  page.progress = await api(`/api/v1/cohorts/${page.cohort.id}/progress`);
  renderProgress();
}

async function loadCertificate() {
  page.certificate = await api(`/api/v1/cohorts/${page.cohort.id}/certificate`);
  renderCertificate();
}

async function loadQuizzes() {
  page.quizzes = await api(`/api/v1/cohorts/${page.cohort.id}/quizzes`);
  await Promise.all(
    page.quizzes
      .filter((q) => q.attempts_used > 0)
      .map(async (q) => {
        const subs = await api(`/api/v1/quizzes/${q.id}/submissions`).catch(() => []);
        const last = subs.reduce((a, b) => (!a || b.attempt > a.attempt ? b : a), null);
        if (last) page.latest.set(q.id, last);
      }),
  );
  renderQuizzes();
}

async function loadNotifications() {
  const result = await api("/api/v1/notifications?limit=30");
  page.notifications = result.items;
  page.unread = result.unread_count;
  renderNotifications();
}

function loadAnnouncements() {
  return page.announcements.load(page.cohort.id);
}

async function loadBoard() {
  page.board = await api(`/api/v1/cohorts/${page.cohort.id}/leaderboard`);
  renderBoard();
}

async function loadSessions() {
  const list = await api(`/api/v1/cohorts/${page.cohort.id}/sessions`);
  page.sessions = new Map(list.map((s) => [s.id, s]));
  renderSessions();
}

async function loadFeedback() {
  page.feedback = await api(`/api/v1/cohorts/${page.cohort.id}/feedback`);
  renderFeedback();
}

async function loadActivity() {
  page.activity = await api(`/api/v1/cohorts/${page.cohort.id}/activity`);
  renderActivity();
}

function loadAll() {
  return Promise.all([
    loadActivity(),
    loadFeedback(),
    loadProgress(),
    loadCertificate(),
    loadQuizzes(),
    loadNotifications(),
    loadAnnouncements(),
    loadBoard(),
    loadSessions(),
  ]);
}

// -- events ---------------------------------------------------------------------------------

function onUserEvent(ev) {
  const d = ev.data || {};
  switch (ev.event) {
    case "progress.update": {
      if (d.cohort_id !== page.cohort.id || !page.progress) return;
      const mark = page.progress.lessons.find((l) => l.lesson_id === d.lesson_id);
      if (mark) mark.completed = d.completed;
      Object.assign(page.progress, {
        completed_count: d.completed_count,
        total: d.total,
        percentage: d.percentage,
      });
      renderProgress();
      break;
    }
    case "certificate.progress":
      if (d.cohort_id !== page.cohort.id) return;
      toast(
        d.milestone === 100
          ? "Course complete: your certificate is ready!"
          : `Milestone: ${pct(d.milestone)} of the course done!`,
      );
      attempt(loadCertificate); // unlocked_at and the certificate come from the server
      break;
    case "quiz.graded":
      page.graded.set(d.submission_id, d);
      page.latest.set(d.quiz_id, { ...d, id: d.submission_id, status: "graded" });
      renderQuizzes();
      break;
    case "feedback.posted": {
      const f = d.feedback;
      if (f.cohort_id !== page.cohort.id) return;
      if (!page.feedback.some((x) => x.id === f.id)) page.feedback.unshift(f);
      renderFeedback();
      // The grade may have moved (hand-graded answers, an override): show the new one.
      const last = page.latest.get(f.quiz_id);
      if (last && last.id === f.submission_id) {
        Object.assign(last, { score: f.score, max_score: f.max_score, percentage: f.percentage, status: "graded" });
        renderQuizzes();
      }
      break;
    }
    case "enrollment.changed":
      attempt(() => onEnrollment(d));
      break;
    case "notification.new":
      if (!page.notifications.some((n) => n.id === d.id)) {
        page.notifications.unshift(d);
        if (!d.read) page.unread += 1;
        renderNotifications();
      }
      break;
    case "notification.read":
      for (const n of page.notifications) if (d.all || d.ids.includes(n.id)) n.read = true;
      page.unread = d.unread_count;
      renderNotifications();
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
    case "leaderboard.update":
      onBoardUpdate(d);
      break;
    case "session.state":
      page.sessions.set(d.session.id, d.session);
      renderSessions();
      break;
    case "quiz.published":
      loadQuizzes();
      break;
    case "lesson.changed":
      // Titles, order and the lesson list come with the progress snapshot; the open lesson
      // is fetched again (or closed when deleted).
      attempt(loadProgress);
      if (d.lesson_id === page.lessonId) {
        if (d.op === "deleted") closeLesson("This lesson was removed.");
        else attempt(() => openLesson(d.lesson_id));
      }
      break;
    case "activity":
      if (!page.activity.items.some((a) => a.id === d.id)) {
        page.activity.items.unshift(d);
        page.activity.items = page.activity.items.slice(0, 50);
        renderActivity();
      }
      break;
    case "activity.settings": // the history is rendered with the new setting: reload it
      attempt(loadActivity);
      break;
    default:
      break;
  }
}

// The event carries only the top entries: a student below them keeps their row (the rank
// they had) at once, then the API gives their current rank. `boardSeq` drops a stale answer
// when another update arrived while it was in flight.
let boardSeq = 0;

function onBoardUpdate(d) {
  const seq = ++boardSeq;
  const mine = d.entries.find((e) => e.user_id === page.me.id) || null;
  page.board = { ...d, me: mine || (page.board && page.board.me) || null };
  renderBoard();
  if (mine) return;
  attempt(async () => {
    const fresh = await api(`/api/v1/cohorts/${page.cohort.id}/leaderboard?limit=1`);
    if (seq !== boardSeq) return;
    page.board = { ...page.board, me: fresh.me };
    renderBoard();
  });
}

// -- rendering ------------------------------------------------------------------------------

function renderProgress() {
  const p = page.progress;
  const bar = $("#progress-bar");
  bar.firstElementChild.style.width = `${p.percentage}%`;
  bar.setAttribute("aria-valuenow", String(Math.round(p.percentage)));
  bar.dataset.percentage = String(p.percentage);
  $("#progress-text").textContent =
    `${p.completed_count} of ${p.total} lessons done (${pct(p.percentage)})`;
  fill(
    $("#lessons"),
    p.lessons.map((l) =>
      el(
        "li",
        { class: `lesson${l.completed ? " done" : ""}`, dataset: { id: l.lesson_id } },
        el(
          "button",
          { class: "link title open-lesson", onclick: () => attempt(() => openLesson(l.lesson_id)) },
          l.title,
        ),
        l.completed
          ? el("span", { class: "muted" }, "done")
          : l.pending
            ? el("span", { class: "muted pending" }, "saved offline")
            : el(
              "button",
              { class: "small secondary complete", onclick: () => complete(l.lesson_id) },
              "Mark complete",
            ),
      ),
    ),
  );
  renderLessonActions();
}

function renderCertificate() {
  const c = page.certificate;
  fill(
    $("#milestones"),
    c.milestones.map((m) =>
      el(
        "li",
        {
          class: `milestone${m.unlocked ? " unlocked" : ""}`,
          dataset: { milestone: m.milestone, unlocked: String(m.unlocked) },
          title: m.unlocked ? `Unlocked ${when(m.unlocked_at)}` : "Not yet",
        },
        el("strong", {}, `${m.milestone}%`),
        el("span", { class: "muted when" }, m.unlocked ? when(m.unlocked_at) : "locked"),
      ),
    ),
  );
  const cert = c.certificate;
  fill(
    $("#certificate"),
    cert
      ? el(
          "div",
          { class: "certificate", dataset: { code: cert.code } },
          el("h3", {}, "Certificate of completion"),
          el("p", {}, "This certifies that ", el("strong", { class: "cert-name" }, cert.student_name)),
          el("p", {}, "completed ", el("strong", { class: "cert-course" }, cert.cohort_title), ` on ${new Date(cert.issued_at).toLocaleDateString()}.`),
          el("p", { class: "muted" }, "Certificate code ", el("code", { class: "cert-code" }, cert.code)),
          el("button", { class: "small secondary", onclick: () => window.print() }, "Print"),
        )
      : null,
  );
}

function scoreText(s) {
  if (!s) return "";
  if (s.status !== "graded") return "grading…";
  return `${s.score} / ${s.max_score} (${pct(s.percentage)})`;
}

function renderQuizzes() {
  fill(
    $("#quiz-list"),
    page.quizzes.length
      ? page.quizzes.map((q) => {
          const last = page.latest.get(q.id);
          const left = q.max_attempts - q.attempts_used;
          return el(
            "li",
            { class: "row", dataset: { id: q.id } },
            el("span", { class: "grow" }, q.title),
            last
              ? el(
                  "span",
                  { class: last.status === "graded" ? "score" : "pending", dataset: { status: last.status } },
                  scoreText(last),
                )
              : null,
            left > 0
              ? el("button", { class: "small take", onclick: () => openQuiz(q.id) }, "Take quiz")
              : el("span", { class: "muted" }, "no attempts left"),
          );
        })
      : el("li", { class: "muted" }, "No quizzes yet."),
  );
  const panel = $("#quiz-panel");
  const sid = Number(panel.dataset.submission || 0);
  if (sid && page.graded.has(sid)) showResult(page.graded.get(sid));
}

function renderNotifications() {
  const count = $("#unread");
  count.dataset.n = String(page.unread);
  count.textContent = page.unread ? String(page.unread) : "";
  fill(
    $("#notification-list"),
    page.notifications.length
      ? page.notifications.map((n) =>
          el(
            "li",
            { class: n.read ? "" : "unread", dataset: { id: n.id } },
            el("div", { class: "body" }, n.title),
            n.body ? el("div", { class: "muted body" }, n.body) : null,
            el(
              "div",
              { class: "row" },
              el("span", { class: "muted grow" }, when(n.created_at)),
              n.read
                ? null
                : el("button", { class: "small secondary mark-read", onclick: () => markRead(n.id) }, "Mark read"),
            ),
          ),
        )
      : el("li", { class: "muted" }, "Nothing yet."),
  );
}

const ACTIVITY_TEXT = {
  "member.joined": () => "joined the cohort",
  "lesson.completed": (a) => `completed lesson “${a.subject_title}”`,
  "quiz.passed": (a) => `passed quiz “${a.subject_title}”`,
};

function renderActivity() {
  const feed = page.activity;
  fill(
    $("#activity-list"),
    feed.privacy === "off"
      ? el("li", { class: "muted" }, "Your instructors turned the activity feed off.")
      : feed.items.length
        ? feed.items.map((a) =>
            el(
              "li",
              { dataset: { id: a.id, kind: a.kind } },
              el("strong", { class: "actor" }, a.actor),
              " ",
              el("span", { class: "what" }, (ACTIVITY_TEXT[a.kind] || (() => a.kind))(a)),
              el("span", { class: "muted" }, ` · ${when(a.created_at)}`),
            ),
          )
        : el("li", { class: "muted" }, "Nothing yet."),
  );
}

function renderFeedback() {
  fill(
    $("#feedback-list"),
    page.feedback.length
      ? page.feedback.map((f) =>
          el(
            "li",
            { dataset: { id: f.id, submission: f.submission_id } },
            el(
              "div",
              { class: "row" },
              el("strong", { class: "grow body" }, f.quiz_title),
              el("span", { class: "feedback-score" }, `${f.score} / ${f.max_score} (${pct(f.percentage)})`),
            ),
            f.comment ? el("p", { class: "body feedback-comment" }, f.comment) : null,
            el("p", { class: "muted" }, f.author_name || "Your instructor", " · ", when(f.created_at)),
          ),
        )
      : el("li", { class: "muted" }, "No feedback yet."),
  );
}


function renderBoard() {
  const b = page.board;
  const rows = b.entries.map((e) =>
    el(
      "tr",
      { class: e.user_id === page.me.id ? "me" : "", dataset: { user: e.user_id } },
      el("td", {}, e.rank),
      el("td", {}, e.user_id === page.me.id ? `${e.display_name} (you)` : e.display_name),
      el("td", {}, e.score),
    ),
  );
  if (b.me && !b.entries.some((e) => e.user_id === page.me.id)) {
    rows.push(
      el(
        "tr",
        { class: "me", dataset: { user: page.me.id } },
        el("td", {}, b.me.rank),
        el("td", {}, "You"),
        el("td", {}, b.me.score),
      ),
    );
  }
  if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: 3, class: "muted" }, "No grades yet.")));
  fill($("#leaderboard-rows"), rows);
}

function renderSessions() {
  const list = [...page.sessions.values()].sort((a, b) => a.starts_at.localeCompare(b.starts_at));
  fill(
    $("#session-list"),
    list.length
      ? list.map((s) =>
          el(
            "li",
            { class: "row", dataset: { id: s.id, state: s.state } },
            el("span", { class: "grow" }, s.title, el("span", { class: "muted" }, ` · ${when(s.starts_at)}`)),
            s.state === "ended"
              ? el("span", { class: "muted" }, "ended")
              : el("a", { href: `/live?session=${s.id}` }, s.state === "live" ? "Join now" : "Open room"),
          ),
        )
      : el("li", { class: "muted" }, "No sessions scheduled."),
  );
}

// -- the lesson reader ---------------------------------------------------------------------

let lessonSeq = 0;

/** Show lesson `id` (title and Markdown body); a newer call wins over a slower older one. */
async function openLesson(id) {
  const seq = ++lessonSeq;
  const lesson = await api(`/api/v1/lessons/${id}`);
  if (seq !== lessonSeq) return;
  page.lessonId = lesson.id;
  const card = $("#lesson");
  card.dataset.id = String(lesson.id);
  card.dataset.version = String(lesson.version);
  $("#lesson-title").textContent = lesson.title;
  const body = $("#lesson-body");
  body.replaceChildren(renderMarkdown(lesson.body));
  if (!lesson.body.trim()) body.append(el("p", { class: "muted" }, "This lesson has no text yet."));
  renderLessonActions();
}

/** The reader's "Mark complete": only for an open lesson not done (nor queued offline). */
function renderLessonActions() {
  const id = page.lessonId;
  const mark = id && page.progress && page.progress.lessons.find((l) => l.lesson_id === id);
  fill(
    $("#lesson-actions"),
    mark && !mark.completed && !mark.pending
      ? el("button", { class: "small complete", onclick: () => complete(id) }, "Mark complete")
      : null,
  );
}

function closeLesson(message) {
  lessonSeq += 1;
  page.lessonId = null;
  const card = $("#lesson");
  delete card.dataset.id;
  $("#lesson-title").textContent = "Lesson";
  fill($("#lesson-body"), message ? el("p", { class: "muted" }, message) : null);
  renderLessonActions();
}

// -- enrollment -----------------------------------------------------------------------------

/** Enrollment changed: take a token with the new claims, then the new /me. Losing this cohort
 * says so and stops the page; any other change updates the cohort picker. */
async function onEnrollment(d) {
  await refreshTokens();
  const me = await api("/api/v1/me");
  saveSession({ ...loadSession(), me });
  page.me = me;
  if (!page.cohort) {
    if (d.enrolled) location.reload(); // the first cohort: load the whole dashboard
    return;
  }
  const still = me.cohorts.some((c) => c.id === page.cohort.id);
  if (!still) {
    $("#load-error").textContent =
      `You are no longer enrolled in ${page.cohort.title}. Pick another cohort or ask your instructor.`;
    document.querySelector("main").classList.add("hidden");
  }
  fill($("#cohort"), cohortPicker(me, ["member"], still ? page.cohort : null));
}

// -- actions --------------------------------------------------------------------------------

async function complete(lessonId) {
  if (!navigator.onLine) return completeOffline(lessonId);
  await attempt(async () => {
    try {
      const state = await api(`/api/v1/lessons/${lessonId}/complete`, { method: "PUT" });
      // The progress.update event updates every tab; this makes this one snappy.
      onUserEvent({ event: "progress.update", data: state });
    } catch (err) {
      if (!unreachable(err)) throw err;
      await completeOffline(lessonId);
    }
  });
}

// Offline: queue the completion (one key per lesson: completing is for good) and show it as
// pending; the queue sends it when the browser is back online (offline-queue.js).
async function completeOffline(lessonId) {
  await enqueue({ type: "lesson.complete", key: `complete-${lessonId}`, lesson_id: lessonId });
  const mark = page.progress && page.progress.lessons.find((l) => l.lesson_id === lessonId);
  if (mark) mark.pending = true;
  renderProgress();
}

function onSynced(results) {
  for (const r of results) {
    if (r.type !== "lesson.complete" || !page.progress) continue;
    const mark = page.progress.lessons.find((l) => `complete-${l.lesson_id}` === r.key);
    if (mark) mark.pending = false;
    if (r.status === "rejected") toast(`Not saved: ${r.error}`);
    else onUserEvent({ event: "progress.update", data: r.data });
  }
  if (page.progress) renderProgress();
}

async function markRead(id) {
  await attempt(() => api(`/api/v1/notifications/${id}/read`, { method: "POST" }));
}

function questionField(q) {
  const name = `q-${q.id}`;
  switch (q.type) {
    case "single_choice":
      return q.options.map((o, i) =>
        el("label", {}, el("input", { type: "radio", name, value: i }), " ", o),
      );
    case "multiple_choice":
      return q.options.map((o, i) =>
        el("label", {}, el("input", { type: "checkbox", name, value: i }), " ", o),
      );
    case "numeric":
      return el("input", { type: "number", step: "any", name, "aria-label": q.prompt });
    default:
      return el("input", { type: "text", name, "aria-label": q.prompt });
  }
}

function collect(form, questions) {
  const answers = {};
  for (const q of questions) {
    const name = `q-${q.id}`;
    if (q.type === "single_choice") {
      const picked = form.querySelector(`input[name="${name}"]:checked`);
      if (picked) answers[q.id] = Number(picked.value);
    } else if (q.type === "multiple_choice") {
      answers[q.id] = [...form.querySelectorAll(`input[name="${name}"]:checked`)].map((i) =>
        Number(i.value),
      );
    } else {
      const value = form.elements[name].value.trim();
      if (value) answers[q.id] = q.type === "numeric" ? Number(value) : value;
    }
  }
  return answers;
}

async function openQuiz(quizId) {
  const quiz = await attempt(() => api(`/api/v1/quizzes/${quizId}`));
  if (!quiz) return;
  const panel = $("#quiz-panel");
  delete panel.dataset.submission;
  const form = el(
    "form",
    { id: "quiz-form", dataset: { quiz: quiz.id } },
    el("h3", {}, quiz.title),
    quiz.questions.map((q) =>
      el("fieldset", { dataset: { question: q.id } }, el("legend", { class: "body" }, q.prompt), questionField(q)),
    ),
    el("button", { type: "submit" }, "Submit answers"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    submitQuiz(quiz, form);
  });
  fill(panel, form);
}

async function submitQuiz(quiz, form) {
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  const sub = await attempt(() =>
    api(`/api/v1/quizzes/${quiz.id}/submissions`, {
      method: "POST",
      body: { answers: collect(form, quiz.questions) },
    }),
  );
  if (!sub) {
    button.disabled = false;
    return;
  }
  const panel = $("#quiz-panel");
  panel.dataset.submission = String(sub.id);
  const summary = page.quizzes.find((q) => q.id === quiz.id);
  if (summary) summary.attempts_used = Math.max(summary.attempts_used, sub.attempt);
  if (!page.latest.has(quiz.id) || page.latest.get(quiz.id).id !== sub.id) page.latest.set(quiz.id, sub);
  fill(panel, el("p", { id: "quiz-result", class: "pending", dataset: { status: "pending" } }, "Submitted. Grading…"));
  const graded = page.graded.get(sub.id);
  if (graded || sub.status === "graded") showResult(graded || { ...sub, submission_id: sub.id });
  renderQuizzes();
}

function showResult(result) {
  const panel = $("#quiz-panel");
  fill(
    panel,
    el(
      "div",
      { id: "quiz-result", class: "score", dataset: { status: "graded" } },
      el("p", {}, "Score: ", el("span", { class: "quiz-score" }, `${result.score} / ${result.max_score}`), ` (${pct(result.percentage)})`),
      result.feedback ? el("p", { class: "muted body" }, result.feedback) : null,
    ),
  );
  panel.dataset.submission = String(result.submission_id);
}

// -- start ----------------------------------------------------------------------------------

async function main() {
  page.me = await requireUser();
  page.cohort = pickCohort(page.me, ["member"]);
  $("#who").textContent = page.me.display_name;
  $("#logout").addEventListener("click", logout);
  $("#bell").addEventListener("click", () => {
    const panel = $("#notifications");
    panel.classList.toggle("hidden");
    $("#bell").setAttribute("aria-expanded", String(!panel.classList.contains("hidden")));
  });
  $("#read-all").addEventListener("click", () =>
    attempt(() => api("/api/v1/notifications/read-all", { method: "POST" })),
  );
  $("#notification-settings").addEventListener("toggle", (e) => {
    if (e.target.open) attempt(() => mountNotificationSettings($("#notify-settings")));
  });
  if (!page.cohort) {
    $("#load-error").textContent = "You are not enrolled in a cohort yet.";
    // Still listen: the first enrollment loads the dashboard.
    const waiting = await gateway($("#conn"));
    await follow(waiting, { [`user:${page.me.id}`]: onUserEvent }, async () => {}, "your account");
    document.body.dataset.ready = "true";
    return;
  }
  fill($("#cohort"), cohortPicker(page.me, ["member"], page.cohort));
  startOfflineQueue(page.me.id, onSynced);
  const client = await gateway($("#conn"));
  await follow(
    client,
    { [`user:${page.me.id}`]: onUserEvent, [`cohort:${page.cohort.id}`]: onCohortEvent },
    loadAll,
    "the dashboard",
  );
  document.body.dataset.ready = "true";
}

main();
