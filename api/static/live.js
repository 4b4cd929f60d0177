// The live session room: Q&A, the current poll, chat, reactions, who is here, the
// instructor's banner, and (for staff) the room's controls.
//
// Late joiner: GET /api/v1/sessions/{id}/state gives the room and, per topic, the cursor it
// was taken at; subscribing with that cursor replays exactly what happened since.
import { $, api, attempt, el, fill, gateway, requireUser, toast, when } from "./app.js";
import { liveQuiz } from "./live_quiz.js";

const REACTIONS = ["👍", "👏", "❤️", "😂", "😮", "🎉", "🤔", "🙋"];
const CHAT_KEEP = 200;

const params = new URLSearchParams(location.search);
const sessionId = Number(params.get("session"));

const room = {
  session: null,
  staff: false,
  questions: new Map(),
  order: [],
  myVotes: new Set(),
  poll: null,
  history: [], // earlier polls of the session, newest first
  chat: [],
  reactions: {},
  here: { count: 0, users: null },
  banner: null,
  recording: null,
};

let me = null;
let client = null;
let quizCard = null; // live_quiz.js: the live quiz card
let names = new Map();
const myQuestions = new Set(); // ids of questions asked here (anonymous ones name nobody)

/** Who wrote something: "You", the display name the server sent with it, or for anonymous
 * questions "Anonymous" (the room never learns the asker). */
function who(user, name, anonymous = false) {
  if (anonymous) return "Anonymous";
  if (user === null || user === undefined) return "someone";
  if (String(user) === String(me.id)) return "You";
  return name || names.get(String(user)) || `#${user}`;
}

function isMine(q) {
  return q.mine || myQuestions.has(q.id) || (q.user !== null && String(q.user) === String(me.id));
}

function command(name, data) {
  return client.command(name, room.session.topic, data);
}

// -- state ----------------------------------------------------------------------------------

function load(state) {
  room.session = state.session;
  room.questions = new Map(state.questions.map((q) => [q.id, q]));
  for (const q of state.questions) if (q.mine) myQuestions.add(q.id);
  room.order = state.questions.map((q) => q.id);
  room.myVotes = new Set(state.my_votes);
  room.poll = state.poll;
  room.history = (state.polls || []).slice(1);
  room.chat = state.chat.slice(-CHAT_KEEP);
  room.reactions = { ...state.reactions };
  room.here = state.here;
  room.banner = state.banner;
  room.recording = state.recording;
  quizCard.load(state.quiz);
  renderAll();
}

function apply(ev) {
  const d = ev.data || {};
  if (ev.event.startsWith("quiz.") && quizCard.apply(ev)) return;
  switch (ev.event) {
    case "qa.updated": {
      const q = d.question;
      if (q.dismissed) {
        room.questions.delete(q.id);
        room.order = room.order.filter((id) => id !== q.id);
      } else {
        room.questions.set(q.id, q);
        if (!room.order.includes(q.id)) room.order.push(q.id);
      }
      renderQuestions();
      break;
    }
    case "qa.cleared": {
      const gone = new Set(d.question_ids);
      for (const id of gone) room.questions.delete(id);
      room.order = room.order.filter((id) => !gone.has(id));
      renderQuestions();
      break;
    }
    case "qa.ranked":
      room.order = d.order.slice();
      renderQuestions();
      break;
    case "poll.opened":
      if (room.poll && room.poll.id !== d.poll.id) room.history.unshift(room.poll);
      room.poll = { ...d.poll, tally: null, my_vote: null, my_choices: [], total: 0 };
      renderPoll();
      break;
    case "poll.votes": // the counts come along when the poll shows results live
      if (room.poll && room.poll.id === d.poll_id) {
        room.poll.total = d.total;
        if (d.tally) room.poll.tally = d.tally;
        renderPoll();
      }
      break;
    case "poll.tally": // staff only: live counts (and the voters of a named poll)
      if (room.poll && room.poll.id === d.poll_id) {
        room.poll.tally = { counts: d.counts, total: d.total, percentages: d.percentages };
        room.poll.total = d.total;
        if (d.voters) room.poll.voters = d.voters;
        renderPoll();
      }
      break;
    case "poll.closed":
    case "poll.revealed":
      if (!room.poll || room.poll.id === d.poll.id) {
        room.poll = { ...(room.poll || {}), ...d.poll };
        if (d.tally) room.poll.tally = d.tally;
        renderPoll();
      }
      break;
    case "chat.message":
      if (!room.chat.some((m) => m.id === d.message.id)) {
        room.chat.push(d.message);
        room.chat = room.chat.slice(-CHAT_KEEP);
        renderChat();
      }
      break;
    case "chat.deleted":
      room.chat = room.chat.filter((m) => m.id !== d.message_id);
      renderChat();
      break;
    case "reactions":
      for (const [emoji, n] of Object.entries(d.counts || {})) {
        room.reactions[emoji] = (room.reactions[emoji] || 0) + n;
      }
      renderReactions(d.counts);
      break;
    case "presence.count":
      room.here = { ...room.here, count: d.count };
      renderHere();
      break;
    case "presence": // staff topic: who exactly
      if (d.session_id === room.session.id) {
        room.here = { count: d.count, users: d.users };
        renderHere();
      }
      break;
    case "broadcast":
      room.banner = d;
      renderBanner();
      break;
    case "broadcast.cleared":
      room.banner = null;
      renderBanner();
      break;
    case "recording.status":
      room.recording = d;
      renderSession();
      break;
    case "session.state":
      room.session = { ...room.session, ...d.session };
      renderSession();
      break;
    default:
      break;
  }
}

// -- rendering ------------------------------------------------------------------------------

function renderAll() {
  renderSession();
  renderBanner();
  renderQuestions();
  renderPoll();
  renderChat();
  renderReactions();
  renderHere();
}

function renderSession() {
  const s = room.session;
  document.title = `Lectern · ${s.title}`;
  $("#title").textContent = s.title;
  const stateText = { scheduled: "not started yet", live: "live now", ended: "ended" };
  $("#session-state").textContent = stateText[s.state] || s.state;
  $("#session-state").dataset.state = s.state;
  const rec = room.recording && room.recording.state === "started";
  // The worker only lets an absolute https URL through; checked again before it becomes a link.
  const url = !rec && room.recording && room.recording.url;
  if (url && url.startsWith("https://")) {
    fill(
      $("#recording"),
      el("a", { href: url, target: "_blank", rel: "noopener noreferrer" }, "Watch the recording"),
    );
  } else {
    $("#recording").textContent = rec ? "⏺ recording" : "";
  }
  $("#staff-controls").hidden = !room.staff;
  $("#session-start").disabled = s.state !== "scheduled";
  $("#session-end").disabled = s.state !== "live";
  $("#recording-toggle").textContent = rec ? "Stop recording" : "Start recording";
}

function renderBanner() {
  const node = $("#banner");
  const shown = Boolean(room.banner && room.banner.text);
  $("#broadcast-clear").disabled = !shown;
  if (!shown) {
    node.classList.add("hidden");
    return;
  }
  fill(node, el("strong", {}, "📣 "), el("span", { class: "body" }, room.banner.text));
  node.classList.remove("hidden");
}

function questionItem(q) {
  const voted = room.myVotes.has(q.id);
  const mine = isMine(q);
  const classes = ["question", q.pinned && "pinned", q.answered && "answered"];
  const item = el(
    "li",
    { class: classes.filter(Boolean).join(" "), dataset: { id: q.id } },
    el(
      "div",
      { class: "votes" },
      el("strong", { class: "vote-count" }, q.votes),
      room.staff
        ? el("span", { class: "muted" }, "votes")
        : el(
            "button",
            {
              class: "small secondary upvote",
              disabled: voted || mine,
              "aria-label": "Upvote",
              onclick: () => upvote(q.id),
            },
            voted ? "▲ voted" : "▲",
          ),
    ),
    el(
      "div",
      {},
      el("div", { class: "body" }, q.body),
      el(
        "div",
        { class: "muted" },
        q.pinned ? "📌 pinned · " : "",
        el("span", { class: "asker" }, mine && q.anonymous ? "You (anonymous)" : who(q.user, q.name, q.anonymous)),
        " · ",
        when(q.created_at),
      ),
    ),
  );
  if (q.answered) {
    item.append(
      el(
        "div",
        { class: "answer" },
        el("strong", {}, "Answer: "),
        el("span", { class: "answer-text" }, q.answer || "answered live"),
      ),
    );
  }
  if (room.staff) {
    const input = el("input", {
      type: "text",
      class: "answer-input grow",
      maxlength: 2000,
      placeholder: q.answered ? "Edit the answer" : "Type an answer",
      "aria-label": "Answer",
    });
    item.append(
      el(
        "form",
        {
          class: "actions row answer-form",
          onsubmit: (e) => {
            e.preventDefault();
            const text = input.value.trim();
            attempt(async () => {
              await command("qa.answer", { question_id: q.id, answer: text || null });
              input.value = "";
            });
          },
        },
        input,
        el("button", { type: "submit", class: "small answer-send" }, "Answer"),
        el(
          "button",
          {
            type: "button",
            class: "small secondary pin",
            onclick: () =>
              attempt(() => command(q.pinned ? "qa.unpin" : "qa.pin", { question_id: q.id })),
          },
          q.pinned ? "Unpin" : "Pin",
        ),
        el(
          "button",
          {
            type: "button",
            class: "small secondary dismiss",
            onclick: () => attempt(() => command("qa.dismiss", { question_id: q.id })),
          },
          "Dismiss",
        ),
      ),
    );
  }
  return item;
}

function renderQuestions() {
  const ids = room.order.filter((id) => room.questions.has(id));
  for (const id of room.questions.keys()) if (!ids.includes(id)) ids.push(id);
  const list = $("#qa-list");
  // Keep the focused answer box (an instructor typing) across re-renders.
  const active = document.activeElement;
  const typing = active && active.classList.contains("answer-input") ? active : null;
  const typingId = typing ? typing.closest("li").dataset.id : null;
  const items = ids.map((id) => questionItem(room.questions.get(id)));
  if (!items.length) items.push(el("li", { class: "muted" }, "No questions yet."));
  fill(list, items);
  if (typingId) {
    const input = list.querySelector(`li[data-id="${typingId}"] .answer-input`);
    if (input) {
      input.value = typing.value;
      input.focus();
    }
  }
}

function tallyView(p) {
  return el(
    "div",
    { class: "tally", id: p === room.poll ? "poll-tally" : null },
    p.options.map((label, i) => [
      el(
        "div",
        { dataset: { option: i } },
        el("div", {}, label, (p.my_choices || []).includes(i) ? " (your vote)" : ""),
        el("div", { class: "bar" }, el("span", { style: { width: `${p.tally.percentages[i] || 0}%` } })),
        room.staff && p.voters && p.voters[i] && p.voters[i].length
          ? el("div", { class: "muted voters" }, p.voters[i].join(", "))
          : null,
      ),
      el("div", { class: "count", dataset: { option: i } }, `${p.tally.counts[i] || 0} · ${p.tally.percentages[i] || 0}%`),
    ]),
  );
}

/** Seconds left on an open poll's timer (null: no timer). */
function secondsLeft(p) {
  if (!p.closes_at || p.state !== "open") return null;
  return Math.max(0, Math.ceil((Date.parse(p.closes_at) - Date.now()) / 1000));
}

const RESULTS_TEXT = {
  live: "results shown live",
  after_close: "results shown when voting closes",
  on_reveal: "results shown when revealed",
  never: "results stay with the instructor",
};

function renderPoll() {
  const body = $("#poll-body");
  const p = room.poll;
  if (!p) {
    fill(body, el("p", { class: "muted" }, "No poll yet."));
    renderHistory();
    return;
  }
  const status = { open: "Voting is open", closed: "Voting closed", revealed: "Results" }[p.state];
  const left = secondsLeft(p);
  const parts = [
    el("h3", { class: "poll-question" }, p.question),
    el(
      "p",
      { class: "muted poll-status", dataset: { state: p.state } },
      status,
      typeof p.total === "number" ? ` · ${p.total} votes` : "",
      left !== null ? el("span", { class: "poll-timer" }, ` · closes in ${left} s`) : "",
    ),
    el(
      "p",
      { class: "muted poll-settings" },
      p.kind === "multiple" ? "Pick any that apply" : "Pick one",
      " · ",
      p.anonymous === false ? "named: the instructor sees who voted what" : "anonymous",
      " · ",
      RESULTS_TEXT[p.results] || "",
    ),
  ];
  // The server sends counts only to those who may see them (staff always).
  const showTally = Boolean(p.tally);
  if (showTally) parts.push(tallyView(p));
  if (!room.staff && p.state === "open") {
    const mine = new Set(p.my_choices || (p.my_vote !== null && p.my_vote !== undefined ? [p.my_vote] : []));
    if (p.kind === "multiple") {
      const boxes = p.options.map((label, i) =>
        el("label", { class: "poll-option" }, el("input", { type: "checkbox", class: "choice", value: i, checked: mine.has(i) }), " ", label),
      );
      parts.push(
        el(
          "form",
          {
            id: "poll-multi",
            onsubmit: (event) => {
              event.preventDefault();
              const picked = [...body.querySelectorAll("input.choice:checked")].map((b) => Number(b.value));
              if (picked.length) vote({ options: picked });
            },
          },
          boxes,
          el("button", { type: "submit", class: "small vote-multi" }, mine.size ? "Change vote" : "Vote"),
        ),
      );
    } else {
      parts.push(
        p.options.map((label, i) =>
          el(
            "div",
            { class: "poll-option" },
            el(
              "button",
              { class: `secondary vote${mine.has(i) ? " mine" : ""}`, dataset: { option: i }, onclick: () => vote({ option: i }) },
              label,
            ),
          ),
        ),
      );
    }
  } else if (!showTally) {
    parts.push(el("ul", {}, p.options.map((label) => el("li", {}, label))));
  }
  if (room.staff && p.state !== "revealed") {
    parts.push(
      el(
        "div",
        { class: "row" },
        p.state === "open"
          ? el(
              "button",
              { id: "poll-close", class: "small secondary", onclick: () => attempt(() => command("poll.close", { poll_id: p.id })) },
              "Close voting",
            )
          : null,
        p.results !== "never"
          ? el(
              "button",
              { id: "poll-reveal", class: "small", onclick: () => attempt(() => command("poll.reveal", { poll_id: p.id })) },
              "Reveal results",
            )
          : null,
      ),
    );
  }
  fill(body, parts);
  renderHistory();
}

function renderHistory() {
  const list = $("#poll-history");
  const past = room.history.filter((p) => !room.poll || p.id !== room.poll.id);
  list.hidden = !past.length;
  fill(
    list,
    past.length ? el("h3", {}, "Earlier polls") : null,
    past.map((p) =>
      el(
        "div",
        { class: "past-poll", dataset: { id: p.id, state: p.state } },
        el("p", { class: "body" }, el("strong", {}, p.question), el("span", { class: "muted" }, ` · ${p.total || 0} votes`)),
        p.tally ? tallyView(p) : el("p", { class: "muted" }, "Results not shown."),
      ),
    ),
  );
}

// The countdown of a timed poll: only the number changes, so only it is rewritten.
setInterval(() => {
  const node = document.querySelector(".poll-timer");
  if (node && room.poll) node.textContent = ` · closes in ${secondsLeft(room.poll)} s`;
}, 500);

function renderChat() {
  const list = $("#chat-list");
  const atBottom = list.scrollTop + list.clientHeight >= list.scrollHeight - 8;
  fill(
    list,
    room.chat.map((m) =>
      el(
        "li",
        { dataset: { id: m.id } },
        el("span", { class: "who" }, who(m.user, m.name)),
        el("span", { class: "body" }, m.body),
        String(m.user) === String(me.id) || room.staff
          ? el(
              "button",
              {
                class: "small secondary delete",
                "aria-label": "Delete message",
                onclick: () => attempt(() => command("chat.delete", { message_id: m.id })),
              },
              "✕",
            )
          : null,
      ),
    ),
  );
  if (atBottom) list.scrollTop = list.scrollHeight;
}

function renderReactions(burst) {
  const totals = Object.entries(room.reactions)
    .filter(([, n]) => n > 0)
    .map(([emoji, n]) => `${emoji} ${n}`);
  $("#reaction-counts").textContent = totals.length ? totals.join("  ") : "No reactions yet.";
  if (burst) {
    const text = Object.entries(burst)
      .map(([emoji, n]) => `${emoji}×${n}`)
      .join(" ");
    $("#reaction-counts").dataset.last = text;
  }
}

function renderHere() {
  $("#here-count").textContent = room.here.count;
  if (room.staff && room.here.users) {
    $("#online").textContent = `Here now: ${room.here.users.map((u) => who(u)).join(", ") || "nobody"}`;
  }
}

// -- actions --------------------------------------------------------------------------------

async function upvote(questionId) {
  try {
    await command("qa.upvote", { question_id: questionId });
    room.myVotes.add(questionId);
  } catch (err) {
    if (err.code === "already_voted") room.myVotes.add(questionId);
    else toast(`${err.code}: ${err.message}`);
  }
  renderQuestions();
}

async function vote(choice) {
  const p = room.poll;
  try {
    const r = await command("poll.vote", { poll_id: p.id, ...choice });
    if (room.poll && room.poll.id === p.id) {
      room.poll.my_vote = r.option;
      room.poll.my_choices = r.options;
    }
    renderPoll();
  } catch (err) {
    toast(`${err.code}: ${err.message}`);
  }
}

async function suggestSimilar() {
  const body = $("#qa-input").value.trim();
  const box = $("#qa-similar");
  if (body.split(/\s+/).length < 2) {
    fill(box);
    return;
  }
  const { matches } = await command("qa.similar", { body });
  if ($("#qa-input").value.trim() !== body) return; // typed on meanwhile: a newer hint comes
  fill(
    box,
    matches.length
      ? [
          el("p", { class: "muted" }, "Similar question already asked:"),
          ...matches.map((m) =>
            el(
              "div",
              { class: "row similar", dataset: { id: m.question_id } },
              el("span", { class: "grow body" }, m.body),
              room.myVotes.has(m.question_id) || myQuestions.has(m.question_id)
                ? el("span", { class: "muted" }, `▲ ${m.votes}`)
                : el(
                    "button",
                    { type: "button", class: "small secondary upvote-similar", onclick: () => upvote(m.question_id).then(suggestSimilar) },
                    `▲ Upvote instead (${m.votes})`,
                  ),
            ),
          ),
        ]
      : null,
  );
}

function onSubmit(selector, fn) {
  $(selector).addEventListener("submit", (event) => {
    event.preventDefault();
    attempt(fn);
  });
}

function wire() {
  onSubmit("#qa-form", async () => {
    const input = $("#qa-input");
    const body = input.value.trim();
    if (!body) return;
    const anonymous = $("#qa-anonymous").checked;
    const { question_id } = await command("qa.ask", { body, anonymous });
    myQuestions.add(question_id);
    input.value = "";
    fill($("#qa-similar"));
    renderQuestions();
  });
  // "Already asked?": while typing, ask the server for similar questions on the board.
  let typing = null;
  $("#qa-input").addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(() => attempt(suggestSimilar), 350);
  });
  onSubmit("#chat-form", async () => {
    const input = $("#chat-input");
    const body = input.value.trim();
    if (!body) return;
    input.value = "";
    try {
      await command("chat.send", { body });
    } catch (err) {
      input.value = body;
      throw err;
    }
  });
  onSubmit("#broadcast-form", async () => {
    const input = $("#broadcast-text");
    const text = input.value.trim();
    if (!text) return;
    await command("broadcast", { text });
    input.value = "";
  });
  onSubmit("#poll-form", async () => {
    const question = $("#poll-question").value.trim();
    const options = $("#poll-options")
      .value.split("\n")
      .map((s) => s.trim())
      .filter(Boolean);
    const settings = {
      kind: $("#poll-kind").value,
      results: $("#poll-results").value,
      anonymous: !$("#poll-named").checked,
    };
    const seconds = Number($("#poll-duration").value);
    if (seconds) settings.duration_s = seconds;
    await command("poll.open", { question, options, ...settings });
    $("#poll-question").value = "";
    $("#poll-options").value = "";
  });
  $("#session-start").addEventListener("click", () =>
    attempt(async () => {
      room.session = { ...room.session, ...(await api(`/api/v1/sessions/${sessionId}/start`, { method: "POST" })) };
      renderSession();
    }),
  );
  $("#session-end").addEventListener("click", () =>
    attempt(async () => {
      room.session = { ...room.session, ...(await api(`/api/v1/sessions/${sessionId}/end`, { method: "POST" })) };
      renderSession();
    }),
  );
  $("#broadcast-clear").addEventListener("click", () =>
    attempt(() => command("broadcast.clear", {})),
  );
  $("#qa-clear-answered").addEventListener("click", () =>
    attempt(() => command("qa.clear_answered", {})),
  );
  $("#recording-toggle").addEventListener("click", () =>
    attempt(() => {
      const on = room.recording && room.recording.state === "started";
      return command("recording.set", { state: on ? "stopped" : "started" });
    }),
  );
  fill(
    $("#reaction-buttons"),
    REACTIONS.map((emoji) =>
      el(
        "button",
        { class: "small react", "aria-label": `React ${emoji}`, onclick: () => attempt(() => command("react", { emoji })) },
        emoji,
      ),
    ),
  );
}

async function main() {
  me = await requireUser();
  if (!sessionId) {
    $("#load-error").textContent = "No session given (?session=ID).";
    return;
  }
  client = await gateway($("#conn"));
  let state;
  try {
    state = await api(`/api/v1/sessions/${sessionId}/state`);
  } catch (err) {
    $("#load-error").textContent = `Could not load the session (${err.code}).`;
    return;
  }
  const cohortId = state.session.cohort_id;
  room.staff =
    me.role === "admin" || me.cohorts.some((c) => c.id === cohortId && c.kind === "staff");
  $("#back").href = room.staff ? `/instructor?cohort=${cohortId}` : `/student?cohort=${cohortId}`;
  if (room.staff) {
    const people = await api(`/api/v1/cohorts/${cohortId}/enrollments`).catch(() => []);
    names = new Map(people.map((p) => [String(p.user_id), p.display_name]));
  }
  quizCard = liveQuiz({ command, staff: room.staff, cohortId, meId: me.id });
  wire();
  load(state);
  // Reset (history trimmed while we were away): take a new snapshot; its cursor tells the
  // client which of the events held meanwhile are newer than the snapshot.
  const resync = async (topic) => {
    const fresh = await api(`/api/v1/sessions/${sessionId}/state`);
    load(fresh);
    return fresh.cursors[topic];
  };
  for (const [topic, cursor] of Object.entries(state.cursors)) {
    client.subscribe(topic, apply, { cursor, onReset: resync });
  }
  document.body.dataset.ready = "true";
}

main();
