// Live quiz mode in the live room (docs/api.md, "Live quiz"): staff start one of the cohort's
// quizzes, move on and end it; students answer each question before its deadline; everyone
// sees the results of each question and the leaderboard.
//
// Time: the deadline is the server's. The state route says how much time was left when it
// answered, which gives this page the server's clock (`skew`); events carry the deadline.
import { $, api, attempt, el, fill, toast } from "./app.js";

/**
 * The quiz card: `load(state.quiz)` from the room state, `apply(event)` for `quiz.*` events
 * (true when it was one). `command(name, data)` sends a room command.
 */
export function liveQuiz({ command, staff, cohortId, meId }) {
  let quiz = null; // the room state's quiz, kept up to date by the events
  let skew = 0; // server clock minus this page's clock, in ms
  let answered = 0; // staff: answers to the current question so far
  let choices = null; // staff: the cohort's quizzes for the start form

  function timeLeft() {
    if (!quiz || !quiz.open) return 0;
    return Math.max(0, Date.parse(quiz.deadline) - (Date.now() + skew));
  }

  function load(state) {
    quiz = state || null;
    if (quiz && quiz.open) skew = Date.parse(quiz.deadline) - quiz.time_left_ms - Date.now();
    answered = quiz && quiz.results ? quiz.results.answered : 0;
    render();
  }

  function apply(ev) {
    const d = ev.data || {};
    switch (ev.event) {
      case "quiz.question":
        if (!quiz || quiz.live_quiz_id !== d.live_quiz_id || quiz.index !== d.index) {
          const carried = quiz && quiz.live_quiz_id === d.live_quiz_id ? quiz : null;
          quiz = {
            ...d,
            state: "running",
            open: true,
            results: null,
            leaderboard: carried ? carried.leaderboard : { players: 0, top: [], final: false },
            my_answer: null,
            my_score: carried ? carried.my_score : 0,
            my_rank: carried ? carried.my_rank : null,
          };
          answered = 0;
          render();
        }
        return true;
      case "quiz.results":
        if (quiz && quiz.live_quiz_id === d.live_quiz_id && quiz.index === d.index) {
          quiz.results = d;
          quiz.open = false;
          render();
        }
        return true;
      case "quiz.leaderboard":
        if (quiz && quiz.live_quiz_id === d.live_quiz_id) {
          quiz.leaderboard = { players: d.players, top: d.top, final: d.final };
          const mine = d.top.find((row) => String(row.user_id) === String(meId));
          if (mine) {
            quiz.my_score = mine.score;
            quiz.my_rank = mine.rank;
          }
          render();
        }
        return true;
      case "quiz.ended":
        if (quiz && quiz.live_quiz_id === d.live_quiz_id) {
          quiz.state = "ended";
          quiz.open = false;
          render();
        }
        return true;
      case "quiz.answered":
        if (quiz && quiz.live_quiz_id === d.live_quiz_id && quiz.index === d.index) {
          answered = Math.max(answered, d.answered);
          const node = $("#quiz-answered");
          if (node) node.textContent = `${answered} answered`;
        }
        return true;
      default:
        return false;
    }
  }

  async function send(value) {
    const q = quiz;
    try {
      await command("quiz.answer", { live_quiz_id: q.live_quiz_id, question: q.index, answer: value });
      if (quiz === q) quiz.my_answer = value;
    } catch (err) {
      if (err.code === "already_answered" && quiz === q) quiz.my_answer = quiz.my_answer ?? value;
      toast(`${err.code}: ${err.message}`);
    }
    render();
  }

  function answerForm(q) {
    const question = q.question;
    if (question.type === "single_choice") {
      return question.options.map((label, i) =>
        el("button", { class: "secondary quiz-choice", dataset: { option: i }, onclick: () => send(i) }, label),
      );
    }
    if (question.type === "multiple_choice") {
      return el(
        "form",
        {
          id: "quiz-multi",
          onsubmit: (event) => {
            event.preventDefault();
            const picked = [...document.querySelectorAll("#quiz-multi input:checked")].map((b) => Number(b.value));
            if (picked.length) send(picked);
          },
        },
        question.options.map((label, i) =>
          el("label", { class: "poll-option" }, el("input", { type: "checkbox", value: i }), " ", label),
        ),
        el("button", { type: "submit", class: "small" }, "Answer"),
      );
    }
    const input = el("input", {
      id: "quiz-text",
      type: question.type === "numeric" ? "number" : "text",
      step: "any",
      maxlength: 1000,
      class: "grow",
      "aria-label": "Your answer",
    });
    return el(
      "form",
      {
        class: "row",
        onsubmit: (event) => {
          event.preventDefault();
          const text = input.value.trim();
          if (text) send(question.type === "numeric" ? Number(text) : text);
        },
      },
      input,
      el("button", { type: "submit", class: "small" }, "Answer"),
    );
  }

  function mineText(q) {
    const a = q.my_answer;
    const options = q.question.options || [];
    if (Array.isArray(a)) return a.map((i) => options[i]).join(", ");
    if (typeof a === "number" && options.length) return options[a];
    return String(a);
  }

  function verdict(q) {
    const r = q.results;
    if (staff || q.my_answer === null || q.my_answer === undefined) return null;
    if (!r.correct) return el("p", { class: "muted quiz-verdict" }, "Your answer is in.");
    const mine = [].concat(q.my_answer).slice().sort((x, y) => x - y);
    const right = mine.length === r.correct.length && mine.every((v, i) => v === r.correct[i]);
    return el("p", { class: "quiz-verdict", dataset: { right } }, right ? "✔ You got it right" : "✘ Not this time");
  }

  function resultsView(q) {
    const r = q.results;
    const options = q.question.options;
    const rows = [
      el("p", { class: "muted quiz-summary" }, `${r.answered} answered · ${r.outcomes.correct} right`),
    ];
    if (options && r.counts) {
      const correct = new Set(r.correct || []);
      rows.push(
        el(
          "div",
          { class: "tally", id: "quiz-distribution" },
          options.map((label, i) => {
            const share = r.answered ? Math.round((100 * r.counts[i]) / r.answered) : 0;
            return [
              el(
                "div",
                { class: correct.has(i) ? "quiz-right" : null },
                el("div", {}, correct.has(i) ? `✔ ${label}` : label),
                el("div", { class: "bar" }, el("span", { style: { width: `${share}%` } })),
              ),
              el("div", { class: "count", dataset: { option: i } }, String(r.counts[i])),
            ];
          }),
        ),
      );
    }
    rows.push(verdict(q));
    return rows;
  }

  function leaderboardView(q) {
    const board = q.leaderboard;
    if (!board || !board.top.length) return null;
    return [
      el("h3", {}, board.final ? "Final standings" : "Leaderboard"),
      el(
        "ol",
        { class: "plain quiz-leaderboard" },
        board.top.map((row) =>
          el(
            "li",
            { dataset: { user: row.user_id } },
            el("span", { class: "rank" }, `${row.rank}. `),
            el("span", { class: "name" }, row.name),
            el("span", { class: "score muted" }, ` ${row.score}`),
          ),
        ),
      ),
    ];
  }

  function staffControls(q) {
    if (q && q.state === "running") {
      const last = q.index + 1 >= q.count;
      return el(
        "div",
        { class: "row" },
        el("span", { id: "quiz-answered", class: "muted" }, `${answered} answered`),
        last
          ? null
          : el(
              "button",
              { id: "quiz-next", class: "small", onclick: () => attempt(() => command("quiz.next", { live_quiz_id: q.live_quiz_id })) },
              q.open ? "Close and next question" : "Next question",
            ),
        el(
          "button",
          { id: "quiz-end", class: "small secondary", onclick: () => attempt(() => command("quiz.end", { live_quiz_id: q.live_quiz_id })) },
          "End quiz",
        ),
      );
    }
    const select = el("select", { id: "quiz-pick", "aria-label": "Quiz" });
    // One limit for every question ("20"), or one per question ("10, 30, 60").
    const limit = el("input", {
      id: "quiz-limit",
      type: "text",
      value: "20",
      inputmode: "numeric",
      pattern: "\\d+(\\s*,\\s*\\d+)*",
      class: "minutes",
      "aria-label": "Seconds per question (or one per question, comma-separated)",
    });
    const form = el(
      "form",
      {
        id: "quiz-start-form",
        class: "row",
        onsubmit: (event) => {
          event.preventDefault();
          const quizId = Number(select.value);
          const limits = limit.value.split(",").map((x) => Number(x.trim())).filter((x) => x > 0);
          const timing = limits.length > 1 ? { time_limits_s: limits } : { time_limit_s: limits[0] || 20 };
          if (quizId) attempt(() => command("quiz.start", { quiz_id: quizId, ...timing }));
        },
      },
      select,
      limit,
      el("span", { class: "muted" }, "s per question"),
      el("button", { type: "submit", class: "small" }, "Start quiz"),
    );
    const options = (list) =>
      fill(select, list.length ? list.map((x) => el("option", { value: x.id }, x.title)) : el("option", { value: "" }, "No quizzes in this cohort"));
    if (choices) options(choices);
    else
      api(`/api/v1/cohorts/${cohortId}/quizzes`)
        .then((list) => {
          choices = list;
          options(list);
        })
        .catch(() => options([]));
    return form;
  }

  function render() {
    const body = $("#quiz-body");
    if (!body) return;
    const q = quiz;
    const parts = [];
    if (staff) parts.push(staffControls(q));
    if (!q) {
      parts.push(el("p", { class: "muted" }, staff ? "Start a quiz for the room." : "No quiz yet."));
      fill(body, parts);
      return;
    }
    parts.push(
      el("p", { class: "muted quiz-status", dataset: { state: q.state, open: q.open } }, `${q.title} · question ${q.index + 1} of ${q.count}`, q.state === "ended" ? " · ended" : ""),
      el("h3", { class: "quiz-prompt" }, q.question.prompt),
    );
    if (q.open) {
      parts.push(el("p", { class: "quiz-timer" }, `${Math.ceil(timeLeft() / 1000)} s left`));
      if (!staff && (q.my_answer === null || q.my_answer === undefined)) parts.push(answerForm(q));
      else if (!staff) parts.push(el("p", { class: "quiz-mine" }, "Your answer: ", el("strong", {}, mineText(q)), " · waiting for the results"));
      else if (q.question.options) parts.push(el("ul", {}, q.question.options.map((label) => el("li", {}, label))));
    } else if (q.results) {
      if (!staff && q.my_answer !== null && q.my_answer !== undefined) {
        parts.push(el("p", { class: "quiz-mine" }, "Your answer: ", el("strong", {}, mineText(q))));
      }
      parts.push(resultsView(q));
    } else {
      parts.push(el("p", { class: "muted" }, "Time is up: the results are coming."));
    }
    parts.push(leaderboardView(q));
    if (!staff && q.my_score) parts.push(el("p", { class: "muted quiz-score" }, `Your score: ${q.my_score}`));
    fill(body, parts);
  }

  // The countdown: only the number changes, so only it is rewritten.
  setInterval(() => {
    const node = document.querySelector(".quiz-timer");
    if (node && quiz && quiz.open) node.textContent = `${Math.ceil(timeLeft() / 1000)} s left`;
  }, 250);

  return { load, apply };
}
