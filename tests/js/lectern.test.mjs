// Unit tests of api/static/lectern.js under Node's test runner, with a fake WebSocket and a
// fake fetch: cursor comparison, SSE parsing, close-code handling, exactly-once delivery across
// reconnects, reset handling and command replies. Run by tests/unit/test_lectern_js.py.
import assert from "node:assert/strict";
import { afterEach, test } from "node:test";

import {
  Lectern,
  backoffDelay,
  closeAction,
  compactCursor,
  idAfter,
  readSse,
} from "../../api/static/lectern.js";

const tick = (ms = 0) => new Promise((resolve) => setTimeout(resolve, ms));

async function until(check, ms = 2000) {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error("timed out");
    await tick(2);
  }
}

// -- pure helpers ------------------------------------------------------------------------------

test("idAfter compares ms then sequence as numbers", () => {
  assert.equal(idAfter("1732240000123-10", "1732240000123-9"), true);
  assert.equal(idAfter("1732240000123-9", "1732240000123-10"), false);
  assert.equal(idAfter("100-0", "99-5"), true);
  assert.equal(idAfter("99-5", "100-0"), false);
  assert.equal(idAfter("5-5", "5-5"), false);
  assert.equal(idAfter("1-0", "0-0"), true);
  // Beyond 2^53: no float rounding.
  assert.equal(idAfter("9007199254740993-0", "9007199254740992-0"), true);
});

test("closeAction follows the documented ranges", () => {
  for (const code of [4000, 4001, 4004, 4005, 4499, 1001, 1006, 1011, 1012]) {
    assert.equal(closeAction(code), "reconnect", String(code));
  }
  assert.equal(closeAction(4002), "refresh");
  assert.equal(closeAction(4003), "refresh");
  for (const code of [4500, 4501, 4502, 4503, 4999, 1000, 1002, 1003, 1007, 1009]) {
    assert.equal(closeAction(code), "stop", String(code));
  }
});

test("backoff is full jitter under an exponential ceiling", () => {
  assert.equal(backoffDelay(0, 500, 15000, () => 0.999), 499);
  assert.equal(backoffDelay(3, 500, 15000, () => 0.5), 2000);
  assert.equal(backoffDelay(30, 500, 15000, () => 0.999), 14985);
  assert.equal(backoffDelay(5, 500, 15000, () => 0), 0);
});

test("compactCursor keeps topic order with empty slots", () => {
  const cursors = new Map([["b", "2-0"], ["c", "3-1"]]);
  assert.equal(compactCursor(["a", "b", "c"], cursors), ",2-0,3-1");
});

test("readSse parses blocks split anywhere, comments and retry", async () => {
  const text = "retry: 2000\n\nevent: hello\ndata: {\"type\":\"hello\"}\n\n: hb\n\r\nid: 1-0\r\nevent: event\r\ndata: {\"a\":1}\r\n\r\n";
  const chunks = [];
  for (let i = 0; i < text.length; i += 7) chunks.push(text.slice(i, i + 7));
  const body = new ReadableStream({
    start(controller) {
      for (const c of chunks) controller.enqueue(new TextEncoder().encode(c));
      controller.close();
    },
  });
  const blocks = [];
  await readSse(body, (b) => blocks.push(b), () => {});
  assert.deepEqual(
    blocks.map((b) => [b.event, b.data, b.id, b.retry]),
    [
      ["message", "", null, 2000],
      ["hello", '{"type":"hello"}', null, null],
      ["event", '{"a":1}', "1-0", null],
    ],
  );
});

// -- the client with a fake gateway -----------------------------------------------------------

class FakeSocket {
  static all = [];
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.sent = [];
    FakeSocket.all.push(this);
  }
  static get last() {
    return FakeSocket.all[FakeSocket.all.length - 1];
  }
  open(user = "u1") {
    this.readyState = 1;
    this.receive({ type: "hello", v: 1, conn: "c", user, heartbeat_s: 25, limits: {} });
  }
  receive(frame) {
    this.onmessage && this.onmessage({ data: JSON.stringify(frame) });
  }
  send(text) {
    this.sent.push(JSON.parse(text));
  }
  frames(type) {
    return this.sent.filter((f) => f.type === type);
  }
  drop(code, reason = "") {
    this.readyState = 3;
    this.onclose && this.onclose({ code, reason });
  }
  close() {
    this.readyState = 3;
  }
}

function fakeFetch(handler) {
  return async (url, init = {}) => {
    const { status = 200, body = {}, stream } = (await handler(String(url), init)) || {};
    if (stream) {
      // An SSE response that stays open: the given text, then nothing until aborted.
      const readable = new ReadableStream({
        start(controller) {
          controller.enqueue(new TextEncoder().encode(stream));
          init.signal?.addEventListener("abort", () => controller.error(new Error("aborted")));
        },
      });
      return new Response(readable, { status, headers: { "Content-Type": "text/event-stream" } });
    }
    return new Response(JSON.stringify(body), {
      status,
      headers: { "Content-Type": "application/json" },
    });
  };
}

const clients = [];
afterEach(() => {
  // Closed clients hold no timers, so the runner can exit even after a failure.
  for (const c of clients.splice(0)) c.close();
});

function setup({ fetchHandler, tokens = ["t1", "t2", "t3"] } = {}) {
  FakeSocket.all = [];
  globalThis.WebSocket = FakeSocket;
  const calls = [];
  globalThis.fetch = fakeFetch(
    fetchHandler || ((url) => ({ body: { cursor: url.includes("topics=") ? "0-0" : "", frames: [] } })),
  );
  const asked = [];
  const client = new Lectern({
    url: "http://gw.test",
    baseDelayMs: 5,
    maxDelayMs: 20,
    getToken: ({ expired }) => {
      asked.push(expired);
      return tokens[Math.min(asked.length - 1, tokens.length - 1)];
    },
  });
  clients.push(client);
  return { client, asked, calls };
}

const ev = (topic, id, n) => ({
  type: "event",
  topic,
  id,
  event: "x",
  ts: 0,
  data: { n },
});

test("events are delivered once across a reconnect, resuming with the cursor", async () => {
  const { client } = setup();
  const got = [];
  client.subscribe("cohort:1", (e) => got.push(e.data.n), { cursor: "10-0" });
  await until(() => FakeSocket.last);
  const first = FakeSocket.last;
  first.open();
  assert.deepEqual(first.frames("sub")[0].cursors, { "cohort:1": "10-0" });
  first.receive(ev("cohort:1", "11-0", 1));
  first.receive(ev("cohort:1", "12-0", 2));
  first.drop(1006);
  await until(() => FakeSocket.all.length === 2);
  const second = FakeSocket.last;
  second.open();
  assert.deepEqual(second.frames("sub")[0].cursors, { "cohort:1": "12-0" });
  second.receive(ev("cohort:1", "12-0", 2)); // overlap: dropped
  second.receive(ev("cohort:1", "11-0", 1)); // older: dropped
  second.receive(ev("cohort:1", "12-1", 3));
  assert.deepEqual(got, [1, 2, 3]);
  assert.equal(client.stats.duplicates, 2);
  client.close();
});

test("a do-not-reconnect close code stops the client", async () => {
  const { client } = setup();
  client.subscribe("user:u1", () => {}, { cursor: "1-0" });
  await until(() => FakeSocket.last);
  FakeSocket.last.open();
  FakeSocket.last.drop(4501, "session revoked");
  await tick(60);
  assert.equal(FakeSocket.all.length, 1);
  assert.equal(client.state.status, "closed");
  assert.equal(client.state.code, 4501);
});

test("token expired (4002) asks for a fresh token and reconnects at once", async () => {
  const { client, asked } = setup();
  client.subscribe("user:u1", () => {}, { cursor: "1-0" });
  await until(() => FakeSocket.last);
  FakeSocket.last.open();
  FakeSocket.last.drop(4002, "token expired");
  await until(() => FakeSocket.all.length === 2);
  assert.deepEqual(asked, [false, true]);
  assert.match(FakeSocket.last.url, /token=t2/);
  client.close();
});

test("a WebSocket that never opens while HTTP answers falls back to SSE", async () => {
  const { client } = setup({
    fetchHandler: (url) => {
      if (url.includes("/sse")) {
        const hello = '{"type":"hello","heartbeat_s":15,"tails":{"cohort:1":"5-0"}}';
        return { stream: `retry: 2000\n\nevent: hello\ndata: ${hello}\n\n` };
      }
      return { body: { cursor: "5-0", frames: [] } };
    },
  });
  client.subscribe("cohort:1", () => {});
  await until(() => FakeSocket.last);
  FakeSocket.last.drop(1006); // refused before any frame
  await until(() => client.state.status === "open");
  assert.equal(client.transport, "sse");
  assert.equal(client.stats.switches, 1);
  assert.equal(client.cursor("cohort:1"), "5-0"); // the tail the SSE hello named
  client.close();
});

test("on a fallback the client retries the better transport and moves back up", async () => {
  FakeSocket.all = [];
  globalThis.WebSocket = FakeSocket;
  globalThis.fetch = fakeFetch((url) => {
    if (url.includes("/sse")) {
      const hello = '{"type":"hello","heartbeat_s":15,"tails":{"cohort:1":"5-0"}}';
      return { stream: `event: hello\ndata: ${hello}\n\n` };
    }
    return { body: { cursor: "5-0", frames: [] } };
  });
  const client = new Lectern({ url: "http://gw.test", getToken: () => "t", upgradeAfterMs: 20 });
  clients.push(client);
  client.subscribe("cohort:1", () => {});
  await until(() => FakeSocket.all.length === 1);
  FakeSocket.last.drop(1006); // blocked
  await until(() => client.transport === "sse" && client.state.status === "open");
  await until(() => FakeSocket.all.length === 2); // the upgrade probe
  FakeSocket.last.open();
  await until(() => FakeSocket.all.length === 3); // the real connection, on WebSocket again
  FakeSocket.last.open();
  await until(() => client.state.status === "open" && client.transport === "ws");
  assert.deepEqual(FakeSocket.last.frames("sub")[0].cursors, { "cohort:1": "5-0" });
});

test("when the gateway is down the client backs off on the same transport", async () => {
  const { client } = setup({
    fetchHandler: () => {
      throw new TypeError("connection refused");
    },
  });
  client.subscribe("cohort:1", () => {}, { cursor: "1-0" });
  await until(() => FakeSocket.all.length >= 1);
  FakeSocket.last.drop(1006);
  await until(() => FakeSocket.all.length >= 2);
  FakeSocket.last.drop(1006);
  await until(() => FakeSocket.all.length >= 3);
  assert.equal(client.transport, "ws"); // never moved down: nothing answered the probe
  assert.equal(client.stats.switches, 0);
  assert.equal(client.state.status, "connecting");
  client.close();
});

test("reset holds events until the refetch hook returns its cursor", async () => {
  const { client } = setup();
  const got = [];
  let release;
  const refetched = new Promise((resolve) => {
    release = resolve;
  });
  client.subscribe("live:1:2", (e) => got.push(e.id), {
    cursor: "1-0",
    onReset: () => refetched,
  });
  await until(() => FakeSocket.last);
  const ws = FakeSocket.last;
  ws.open();
  ws.receive({ type: "reset", topic: "live:1:2", reason: "history_trimmed" });
  ws.receive(ev("live:1:2", "50-0", 1)); // covered by the snapshot
  ws.receive(ev("live:1:2", "60-0", 2)); // newer than the snapshot
  assert.deepEqual(got, []);
  release("55-0");
  await until(() => got.length > 0);
  assert.deepEqual(got, ["60-0"]);
  assert.equal(client.cursor("live:1:2"), "60-0");
  client.close();
});

test("commands resolve with the reply and reject with its error code", async () => {
  const { client } = setup();
  await until(() => true);
  const ok = client.command("qa.ask", "live:1:2", { body: "why?" });
  const bad = client.command("poll.vote", "live:1:2", { poll_id: 1, option: 9 });
  await until(() => FakeSocket.last);
  const ws = FakeSocket.last;
  ws.open();
  await until(() => ws.frames("cmd").length === 2);
  const [a, b] = ws.frames("cmd");
  assert.equal(a.name, "qa.ask");
  ws.receive({ type: "reply", ref: a.ref, ok: true, data: { question_id: 7 } });
  ws.receive({ type: "reply", ref: b.ref, ok: false, error: { code: "invalid", message: "no" } });
  assert.deepEqual(await ok, { question_id: 7 });
  await assert.rejects(bad, (err) => err.code === "invalid");
  const lost = client.command("chat.send", "live:1:2", { body: "hi" });
  await until(() => ws.frames("cmd").length === 3);
  ws.drop(1006);
  await assert.rejects(lost, (err) => err.code === "disconnected");
  const slow = client.command("chat.send", "live:1:2", { body: "hi" }, { timeoutMs: 30 });
  await assert.rejects(slow, (err) => err.code === "timeout");
  client.close();
});
