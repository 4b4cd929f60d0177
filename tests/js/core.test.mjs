// The pure core of lectern.js (api/static/lectern-core.js): frame and SSE parsing, refusal
// kinds, and the per-topic bookkeeping (dedup, cursors, tails, reset holding, refusals).
import assert from "node:assert/strict";
import { test } from "node:test";

import { SseParser, Topics, parseFrame, refusalKind } from "../../api/static/lectern-core.js";

const ev = (topic, id) => ({ type: "event", topic, id, event: "x", ts: 0, data: {} });
const tick = () => new Promise((resolve) => setTimeout(resolve, 0));

test("parseFrame accepts frames only", () => {
  assert.deepEqual(parseFrame('{"type":"hello","v":1}'), { type: "hello", v: 1 });
  for (const text of ["nope", "[1]", "null", '{"v":1}', '"hello"']) {
    assert.equal(parseFrame(text), null, text);
  }
});

test("SseParser keeps a half line, and a \\r that may start a \\r\\n, for the next chunk", () => {
  const p = new SseParser();
  assert.deepEqual(p.feed("event: hello\r"), []);
  assert.deepEqual(p.feed("\ndata: {}\r\n\r"), []);
  assert.deepEqual(p.feed("\nid: 1-0,2-0\ndata: a\ndata: b\n\n"), [
    { event: "hello", data: "{}", id: null, retry: null },
    { event: "message", data: "a\nb", id: "1-0,2-0", retry: null },
  ]);
  assert.deepEqual(p.feed("retry: x\n\n: comment\n\n"), []); // a bad retry: nothing to report
});

test("refusalKind sorts the gateway's HTTP refusals", () => {
  const kind = (status, code) => refusalKind({ status, code, message: "" });
  assert.equal(kind(401, "token_expired"), "expired");
  assert.equal(kind(401, "session_revoked"), "fatal");
  assert.equal(kind(403, "origin_not_allowed"), "fatal");
  assert.equal(kind(403, "forbidden"), "forbidden");
  assert.equal(kind(429, "too_many_connections"), "busy");
  assert.equal(kind(503, "unavailable"), "busy");
  assert.equal(kind(400, "no_topics"), "ok");
});

test("Topics delivers each event once, in order, and only to subscribed topics", () => {
  const topics = new Topics();
  const got = [];
  assert.equal(topics.add("a", (e) => got.push(e.id), { cursor: "5-0" }), true);
  assert.equal(topics.add("a", () => {}), false);
  topics.event(ev("a", "5-0")); // the cursor itself: already seen
  topics.event(ev("a", "6-0"));
  topics.event(ev("a", "6-0"));
  topics.event(ev("b", "1-0")); // not subscribed
  assert.deepEqual(got, ["6-0"]);
  assert.equal(topics.stats.duplicates, 2);
  assert.equal(topics.cursors.get("a"), "6-0");
  topics.setCursor("a", "5-9"); // never back
  assert.equal(topics.cursors.get("a"), "6-0");
});

test("a tail from the gateway sets the cursor of a subscribed topic that has none", () => {
  const topics = new Topics();
  topics.add("a", () => {});
  topics.add("b", () => {}, { cursor: "3-0" });
  topics.adopt("a", "9-0");
  topics.adopt("a", "10-0"); // has one now
  topics.adopt("b", "9-0"); // had one
  topics.adopt("c", "9-0"); // not subscribed
  topics.adopt("d", "");
  assert.deepEqual(Object.fromEntries(topics.cursors), { a: "9-0", b: "3-0" });
});

test("removing the last handler forgets the topic and its cursor", () => {
  const topics = new Topics();
  const one = () => {};
  const two = () => {};
  topics.add("a", one, { cursor: "1-0" });
  topics.add("a", two);
  assert.equal(topics.remove("a", one), false);
  assert.equal(topics.remove("a", one), false); // not there any more
  assert.equal(topics.remove("a", two), true);
  assert.deepEqual(topics.list(), []);
  assert.equal(topics.cursors.size, 0);
});

test("reset holds events until onReset answers, then delivers those after its cursor", async () => {
  const topics = new Topics();
  const got = [];
  let answer;
  const onReset = () => new Promise((resolve) => (answer = resolve));
  topics.add("a", (e) => got.push(e.id), { cursor: "1-0", onReset });
  topics.reset("a", "history_trimmed");
  assert.equal(topics.cursors.has("a"), false);
  topics.event(ev("a", "4-0"));
  topics.event(ev("a", "6-0"));
  topics.reset("a", "history_trimmed"); // already resetting: one hook call
  await tick();
  assert.deepEqual(got, []);
  answer("5-0");
  await tick();
  assert.deepEqual(got, ["6-0"]);
  assert.equal(topics.stats.resets, 2);
});

test("a failing onReset delivers everything held", async () => {
  const topics = new Topics();
  const got = [];
  const errors = console.error;
  console.error = () => {};
  try {
    topics.add("a", (e) => got.push(e.id), { onReset: () => Promise.reject(new Error("x")) });
    topics.reset("a");
    topics.event(ev("a", "2-0"));
    await tick();
    await tick();
  } finally {
    console.error = errors;
  }
  assert.deepEqual(got, ["2-0"]);
});

test("a refused topic is forgotten and its onError told", () => {
  const topics = new Topics();
  const errors = [];
  topics.add("staff:1", () => {}, { cursor: "1-0", onError: (e) => errors.push(e.code) });
  topics.refuse({ code: "forbidden", topic: "staff:1", message: "staff only" });
  topics.refuse({ code: "forbidden", topic: "staff:1", message: "again" });
  assert.deepEqual(errors, ["forbidden"]);
  assert.deepEqual(topics.list(), []);
});
