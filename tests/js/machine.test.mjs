// The connection state machine of lectern.js (api/static/lectern-machine.js), input by input:
// no sockets, no timers, no fetch. Each test walks the transitions and checks the state and
// the effects the client would carry out.
import assert from "node:assert/strict";
import { test } from "node:test";

import { ConnectionMachine } from "../../api/static/lectern-machine.js";

const OPTS = { baseDelayMs: 100, maxDelayMs: 1000, upgradeAfterMs: 50, maxUpgradeAfterMs: 150 };

function machine(transports = ["ws", "sse", "poll"], random = () => 0.5) {
  return new ConnectionMachine(transports, OPTS, random);
}

const kinds = (effects) => effects.map((e) => e.do);

test("start, open, and a drop after opening backs off, then reconnects", () => {
  const m = machine();
  assert.equal(m.state, "idle");
  assert.deepEqual(m.send({ type: "start" }), [{ do: "connect" }]);
  assert.equal(m.status, "connecting");
  assert.deepEqual(m.send({ type: "start" }), []); // already started
  assert.deepEqual(m.send({ type: "opened" }), []); // best transport: no upgrade to schedule
  assert.equal(m.state, "open");
  const wait = m.send({ type: "lost", code: 1006, reason: "gone", opened: true });
  assert.deepEqual(wait, [{ do: "wait", ms: 50, reason: "gone" }]); // 0.5 * 100 * 2^0
  assert.equal(m.status, "reconnecting");
  assert.deepEqual(m.send({ type: "retry" }), [{ do: "connect" }]);
  assert.equal(m.status, "reconnecting"); // opened once: a reconnect, not a first connect
  m.send({ type: "lost", code: 1006, opened: true });
  assert.equal(m.attempt, 2); // the ceiling doubles per attempt...
  m.send({ type: "retry" });
  m.send({ type: "opened" });
  m.send({ type: "stable" }); // ...until the connection has stayed up
  assert.equal(m.attempt, 0);
});

test("close codes: stop, refresh the token, or reconnect", () => {
  const m = machine();
  m.send({ type: "start" });
  m.send({ type: "opened" });
  assert.deepEqual(m.send({ type: "lost", code: 4002, opened: true }), [
    { do: "refresh" },
    { do: "connect" },
  ]);
  m.send({ type: "opened" });
  assert.deepEqual(m.send({ type: "lost", code: 4501, reason: "revoked", opened: true }), [
    { do: "stop", code: 4501, reason: "revoked" },
  ]);
  assert.equal(m.state, "closed");
  assert.deepEqual(m.send({ type: "retry" }), []); // a stale timer changes nothing
  assert.deepEqual(m.send({ type: "start" }), [{ do: "connect" }]); // a new subscribe restarts
});

test("lost before the first frame: probe; the gateway answers, so move one step down", () => {
  const m = machine();
  m.send({ type: "start" });
  assert.deepEqual(m.send({ type: "lost", code: 1006, opened: false }), [{ do: "probe" }]);
  assert.equal(m.state, "probing");
  assert.deepEqual(m.send({ type: "retry" }), []); // not waiting: ignored
  assert.deepEqual(m.send({ type: "probed", kind: "ok" }), [{ do: "connect" }]);
  assert.equal(m.transport, "sse");
  assert.equal(m.switches, 1);
  assert.deepEqual(m.send({ type: "opened" }), [{ do: "upgradeIn", ms: 50 }]);
});

test("gateway down: back off on the same transport", () => {
  const m = machine();
  m.send({ type: "start" });
  m.send({ type: "lost", code: 1006, opened: false });
  assert.deepEqual(kinds(m.send({ type: "probed", kind: "down" })), ["wait"]);
  assert.equal(m.transport, "ws");
  assert.equal(m.switches, 0);
});

test("a transport that worked before moves down only after three failed opens", () => {
  const m = machine();
  m.send({ type: "start" });
  m.send({ type: "opened" });
  m.send({ type: "lost", code: 1006, opened: true });
  for (let i = 0; i < 2; i += 1) {
    m.send({ type: "retry" });
    m.send({ type: "lost", code: 1006, opened: false });
    assert.deepEqual(kinds(m.send({ type: "probed", kind: "ok" })), ["wait"]);
    assert.equal(m.transport, "ws");
  }
  m.send({ type: "retry" });
  m.send({ type: "lost", code: 1006, opened: false });
  assert.deepEqual(kinds(m.send({ type: "probed", kind: "ok" })), ["connect"]);
  assert.equal(m.transport, "sse");
});

test("the last transport never moves further down", () => {
  const m = machine(["poll"]);
  m.send({ type: "start" });
  m.send({ type: "lost", code: 1006, opened: false });
  assert.deepEqual(kinds(m.send({ type: "probed", kind: "ok" })), ["wait"]);
  assert.equal(m.rank, 0);
});

test("HTTP refusals: fatal stops, forbidden drops the topic, expired refreshes twice", () => {
  const m = machine(["sse", "poll"]);
  m.send({ type: "start" });
  const forbidden = { status: 403, code: "forbidden", message: "live:1:2: no such live session" };
  assert.deepEqual(m.send({ type: "lost", code: 1006, opened: false, http: forbidden }), [
    { do: "drop", message: forbidden.message },
    { do: "connect" },
  ]);
  const expired = { status: 401, code: "token_expired", message: "" };
  for (let i = 0; i < 2; i += 1) {
    assert.deepEqual(kinds(m.send({ type: "lost", code: 1006, opened: false, http: expired })), [
      "refresh",
      "connect",
    ]);
  }
  // A third expiry in a row: refresh, but probe first (is something else wrong?).
  const third = m.send({ type: "lost", code: 1006, opened: false, http: expired });
  assert.deepEqual(kinds(third), ["refresh", "probe"]);
  const fatal = { status: 401, code: "session_revoked", message: "" };
  assert.deepEqual(m.send({ type: "probed", kind: "fatal", http: fatal }), [
    { do: "stop", code: 4500, reason: "session_revoked" },
  ]);
});

test("backoff waits at least the server's hints", () => {
  const m = machine(["sse"], () => 0);
  m.send({ type: "start" });
  m.send({ type: "hint", ms: 2000 }); // SSE retry:
  m.send({ type: "opened" });
  assert.deepEqual(m.send({ type: "lost", code: 1006, opened: true }), [
    { do: "wait", ms: 2000, reason: undefined },
  ]);
  m.send({ type: "retry" });
  const busy = { status: 503, code: "unavailable", message: "" };
  m.send({ type: "lost", code: 1006, opened: true, http: busy, retryMs: 5000 });
  assert.equal(m.state, "waiting");
  m.send({ type: "retry" });
  m.send({ type: "opened" });
  const [wait] = m.send({ type: "lost", code: 1006, opened: true });
  assert.equal(wait.ms, 2000); // Retry-After counted once
});

test("upgrades: a better transport that opens is taken; otherwise retried later, doubling", () => {
  const m = machine();
  m.send({ type: "start" });
  m.send({ type: "lost", code: 1006, opened: false });
  m.send({ type: "probed", kind: "ok" });
  assert.deepEqual(m.send({ type: "opened" }), [{ do: "upgradeIn", ms: 50 }]);
  assert.deepEqual(m.send({ type: "noUpgrade" }), [{ do: "upgradeIn", ms: 100 }]);
  assert.deepEqual(m.send({ type: "noUpgrade" }), [{ do: "upgradeIn", ms: 150 }]); // capped
  assert.deepEqual(m.send({ type: "upgraded", rank: 0 }), [{ do: "connect" }]);
  assert.equal(m.transport, "ws");
  assert.equal(m.upgradeDelay, 50);
  assert.deepEqual(m.send({ type: "opened" }), []);
  assert.deepEqual(m.send({ type: "upgraded", rank: 0 }), []); // nothing better than ws
});

test("online reconnects at once from any state but open; close is final", () => {
  const m = machine();
  assert.deepEqual(m.send({ type: "online" }), []); // not started
  m.send({ type: "start" });
  m.send({ type: "opened" });
  assert.deepEqual(m.send({ type: "online" }), []);
  m.send({ type: "lost", code: 1006, opened: true });
  m.send({ type: "lost", code: 1006, opened: true }); // not open nor connecting: ignored
  assert.equal(m.attempt, 1);
  assert.deepEqual(m.send({ type: "online" }), [{ do: "connect" }]);
  assert.equal(m.attempt, 0);
  assert.deepEqual(m.send({ type: "close" }), [{ do: "stop", code: 1000, reason: "client closed" }]);
  assert.deepEqual(m.send({ type: "online" }), []);
  assert.equal(m.status, "closed");
});
