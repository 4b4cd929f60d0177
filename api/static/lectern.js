/**
 * lectern.js: the browser client of the Lectern gateway (wire protocol v1; see README.md).
 * A plain ES module: no build step, no dependencies, no framework.
 *
 *   import { Lectern } from "/static/lectern.js";
 *
 *   const client = new Lectern({
 *     url: "https://rt.example.edu",              // the gateway (http or https)
 *     getToken: async ({ expired }) => (expired ? await refreshViaApi() : accessToken),
 *     onState: (s) => { badge.textContent = `${s.status} (${s.transport})`; },
 *   });
 *   const state = await api(`/api/v1/sessions/${id}/state`);   // a late joiner's snapshot
 *   const off = client.subscribe(state.topic, (ev) => apply(ev.event, ev.data), {
 *     cursor: state.cursor,                        // resume exactly after the snapshot
 *     onReset: async () => (await reload()).cursor, // history trimmed: refetch, new cursor
 *   });
 *   try {
 *     const { question_id } = await client.command("qa.ask", state.topic, { body: "Why?" });
 *   } catch (err) { console.log(err.code); }     // e.g. "rate_limited", "timeout"
 *   off(); client.close();
 *
 * Transports. WebSocket first (`/ws?token=`, JSON frames), then Server-Sent Events read with
 * fetch (`/sse?topics=&cursor=`, commands over `POST /cmd`), then long-poll (`/poll`, commands
 * over `POST /cmd`). A transport that fails before its first frame triggers a probe: an HTTP
 * `GET /poll` (no cursor, answers at once). If the gateway answers, the transport is blocked on
 * this network, so the client moves one step down at once and remembers it for the page's
 * lifetime; if it does not, the gateway is down and the client backs off on the same transport.
 * While on a fallback it retries the better transports now and then (`upgradeAfterMs`,
 * doubling) and switches up when one opens. `transports: ["sse", "poll"]` (or the pages'
 * `?transport=sse`) leaves WebSocket out entirely.
 *
 * Reconnecting. Exponential backoff with full jitter (`random(0, min(cap, base * 2^n))`), never
 * sooner than the server's SSE `retry:` or HTTP `Retry-After` hint; the attempt counter resets
 * only after `stableAfterMs` connected; the browser's `online` event reconnects at once. Close
 * codes: 4000-4499, 1001, 1005, 1006, 1011, 1012, 1013 reconnect; 4002/4003 first ask
 * `getToken({expired: true})`; 4500-4999 and the "fix the client" codes stop (status
 * `closed`). SSE and long-poll carry the same codes in their `closing` frame.
 *
 * Exactly once. The client keeps the last event ID per topic, resumes with it on every
 * reconnect and transport switch (WebSocket `sub` cursors, the SSE/poll compact cursor), and
 * drops every event whose ID is not newer (compared as numbers, "ms-seq"). A topic subscribed
 * without a cursor is first "primed" with its current tail (`GET /poll` without a cursor), so
 * even events published before its first delivery survive a disconnect. `reset` (history
 * trimmed) calls the topic's `onReset` hook; events arriving meanwhile are held and those not
 * covered by the cursor the hook returns are delivered after it.
 *
 * Commands. `command(name, topic, data)` resolves with the reply's `data` or rejects with a
 * `LecternError` whose `code` is the reply's error code, `timeout` (no reply in
 * `commandTimeoutMs`), `disconnected` (the connection dropped after sending: the command may or
 * may not have been applied) or `closed`. Commands issued while reconnecting wait for the
 * connection (within their timeout).
 */

export const TRANSPORTS = Object.freeze(["ws", "sse", "poll"]);

const DEFAULTS = {
  transports: TRANSPORTS,
  baseDelayMs: 500,
  maxDelayMs: 15000,
  stableAfterMs: 10000,
  helloTimeoutMs: 8000,
  commandTimeoutMs: 10000,
  pollTimeoutS: 25,
  upgradeAfterMs: 30000,
  maxUpgradeAfterMs: 300000,
  prime: true,
};

/** Close codes after which reconnecting is pointless (the client must change something). */
const TERMINAL_STANDARD = new Set([1000, 1002, 1003, 1007, 1008, 1009, 1010]);
const RECONNECT_STANDARD = new Set([1001, 1005, 1006, 1011, 1012, 1013, 1014]);
/** HTTP error codes (gateway refusals) that end the client. */
const FATAL_HTTP_CODES = new Set([
  "invalid_token",
  "missing_token",
  "session_revoked",
  "origin_not_allowed",
]);

export class LecternError extends Error {
  constructor(code, message, extra = {}) {
    super(message || code);
    this.name = "LecternError";
    this.code = code;
    Object.assign(this, extra);
  }
}

/** True when event ID `a` ("ms-seq") is strictly newer than `b`; numeric, no float rounding. */
export function idAfter(a, b) {
  const [ams, aseq = "0"] = String(a).split("-");
  const [bms, bseq = "0"] = String(b).split("-");
  if (ams.length !== bms.length) return ams.length > bms.length;
  if (ams !== bms) return ams > bms;
  if (aseq.length !== bseq.length) return aseq.length > bseq.length;
  return aseq > bseq;
}

export function isEventId(value) {
  return typeof value === "string" && /^\d{1,20}-\d{1,20}$/.test(value);
}

/** Full-jitter backoff: a uniform delay in [0, min(cap, base * 2^attempt)). */
export function backoffDelay(attempt, baseMs, capMs, random = Math.random) {
  const ceiling = Math.min(capMs, baseMs * 2 ** Math.min(attempt, 30));
  return Math.floor(random() * ceiling);
}

/** What a close code asks of the client: "reconnect", "refresh" (token first) or "stop". */
export function closeAction(code) {
  if (code === 4002 || code === 4003) return "refresh";
  if (code >= 4000 && code < 4500) return "reconnect";
  if (code >= 4500 && code < 5000) return "stop";
  if (RECONNECT_STANDARD.has(code)) return "reconnect";
  if (TERMINAL_STANDARD.has(code)) return "stop";
  return "reconnect";
}

/** The compact cursor of an SSE stream or long-poll: last IDs in topic order, comma-joined. */
export function compactCursor(topics, cursors) {
  return topics.map((t) => cursors.get(t) || "").join(",");
}

function gatewayError(status, body) {
  const err = body && body.error ? body.error : {};
  return { status, code: err.code || `http_${status}`, message: err.message || "" };
}

async function readJson(response) {
  try {
    return await response.json();
  } catch {
    return null;
  }
}

function retryAfterMs(response) {
  const value = Number(response.headers.get("Retry-After"));
  return Number.isFinite(value) && value > 0 ? value * 1000 : 0;
}

// -- transports ------------------------------------------------------------------------------
// Each reports to the client: client._opened(t), client._frame(t, frame), client._lost(t, info)
// with info = {code, reason, opened, http?: {status, code, message}, retryMs?}. close() is
// silent: a transport closed by the client reports nothing.

/**
 * What every transport shares: its state flags, and a close that runs once. `_lost` closes
 * and tells the client, which decides how to reconnect; subclasses free their own resources
 * in `_teardown`.
 */
class Transport {
  constructor(kind, client, token) {
    this.kind = kind;
    this.client = client;
    this.token = token;
    this.opened = false;
    this.dead = false;
  }

  _lost(info) {
    if (this.dead) return;
    this.close();
    this.client._lost(this, info);
  }

  close() {
    if (this.dead) return;
    this.dead = true;
    this._teardown();
  }
}

class WsTransport extends Transport {
  constructor(client, token) {
    super("ws", client, token);
    this.ws = null;
    this.refs = 0;
    this.lastRx = Date.now();
    this.pingSent = 0;
    this.heartbeatMs = 25000;
  }

  open() {
    const url = `${this.client.wsBase}/ws?token=${encodeURIComponent(this.token)}`;
    let ws;
    try {
      ws = new WebSocket(url, ["lectern.json"]);
    } catch (err) {
      queueMicrotask(() => this._lost({ code: 1006, reason: String(err), opened: false }));
      return;
    }
    this.ws = ws;
    this.helloTimer = setTimeout(() => {
      this._lost({ code: 1006, reason: "no hello", opened: false });
    }, this.client.opts.helloTimeoutMs);
    ws.onmessage = (msg) => this._message(msg);
    ws.onclose = (ev) => this._lost({ code: ev.code, reason: ev.reason, opened: this.opened });
    ws.onerror = () => {};
  }

  _message(msg) {
    if (this.dead) return;
    this.lastRx = Date.now();
    this.pingSent = 0;
    let frame;
    try {
      frame = JSON.parse(msg.data);
    } catch {
      return;
    }
    if (frame.type === "hello") {
      clearTimeout(this.helloTimer);
      this.heartbeatMs = Math.max(1000, (frame.heartbeat_s || 25) * 1000);
      this.watchdog = setInterval(() => this._watch(), Math.min(5000, this.heartbeatMs / 2));
      this.opened = true;
      this.sync(this.client._topicList(), []);
      this.client._opened(this, frame);
    }
    this.client._frame(this, frame);
  }

  /** App-level ping when quiet for a heartbeat (the browser hides WebSocket pings from JS). */
  _watch() {
    const quiet = Date.now() - this.lastRx;
    if (this.pingSent && Date.now() - this.pingSent > 10000) {
      this._lost({ code: 4004, reason: "ping timeout", opened: true });
    } else if (!this.pingSent && quiet > this.heartbeatMs) {
      this.pingSent = Date.now();
      this.send({ type: "ping", ref: "p" + ++this.refs });
    }
  }

  /** Subscribe `added` (with their cursors) and unsubscribe `removed`. */
  sync(added, removed) {
    if (!this.opened) return;
    if (removed.length) this.send({ type: "unsub", ref: "u" + ++this.refs, topics: removed });
    for (let i = 0; i < added.length; i += 64) {
      const topics = added.slice(i, i + 64);
      const cursors = {};
      for (const t of topics) {
        const c = this.client._cursors.get(t);
        if (c) cursors[t] = c;
      }
      this.send({ type: "sub", ref: "s" + ++this.refs, topics, cursors });
    }
  }

  send(frame) {
    if (this.ws && this.ws.readyState === 1) {
      this.ws.send(JSON.stringify(frame));
      return true;
    }
    return false;
  }

  get canSend() {
    return this.opened && !this.dead && this.ws && this.ws.readyState === 1;
  }

  _teardown() {
    clearTimeout(this.helloTimer);
    clearInterval(this.watchdog);
    const ws = this.ws;
    if (ws) {
      ws.onmessage = ws.onclose = ws.onerror = null;
      try {
        if (ws.readyState <= 1) ws.close(1000);
      } catch {
        // already closing
      }
    }
  }
}

/** Reads an HTTP response body as SSE blocks: calls onBlock({event, data, id, retry}). */
export async function readSse(body, onBlock, onActivity) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let block = { event: "message", data: [], id: null, retry: null };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    onActivity();
    buffer += value;
    let nl;
    while ((nl = buffer.search(/\r\n|\r|\n/)) >= 0) {
      if (buffer[nl] === "\r" && nl === buffer.length - 1) break; // maybe half of \r\n
      const line = buffer.slice(0, nl);
      buffer = buffer.slice(nl + (buffer.startsWith("\r\n", nl) ? 2 : 1));
      if (line === "") {
        if (block.data.length || block.retry !== null) {
          onBlock({ ...block, data: block.data.join("\n") });
        }
        block = { event: "message", data: [], id: null, retry: null };
        continue;
      }
      if (line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let val = colon < 0 ? "" : line.slice(colon + 1);
      if (val.startsWith(" ")) val = val.slice(1);
      if (field === "event") block.event = val;
      else if (field === "data") block.data.push(val);
      else if (field === "id") block.id = val;
      else if (field === "retry" && /^\d+$/.test(val)) block.retry = Number(val);
    }
  }
}

/** Server-Sent Events read with fetch (so the client sees `retry:` and sets headers). One
 * stream carries a fixed topic list; a topic change reopens it with the compact cursor. */
class SseTransport extends Transport {
  constructor(client, token) {
    super("sse", client, token);
    this.stream = null;
    this.heartbeatMs = 15000;
  }

  open() {
    const topics = this.client._topicList();
    if (!topics.length) {
      // Nothing to stream yet: "open" for commands (POST /cmd); a subscribe starts a stream.
      this._markOpen(null);
      return;
    }
    const stream = { ctrl: new AbortController(), topics, helloSeen: false };
    this.stream = stream;
    const cursor = compactCursor(topics, this.client._cursors);
    let url = `${this.client.base}/sse?topics=${encodeURIComponent(topics.join(","))}`;
    if (cursor.replace(/,/g, "")) url += `&cursor=${encodeURIComponent(cursor)}`;
    stream.helloTimer = setTimeout(() => {
      if (this.stream === stream) this._lost({ code: 1006, reason: "no hello", opened: this.opened });
    }, this.client.opts.helloTimeoutMs);
    this.lastRx = Date.now();
    this.watchdog = this.watchdog || setInterval(() => this._watch(), 5000);
    this._run(stream, url).catch((err) => {
      if (this.stream !== stream || this.dead) return;
      this._lost({ code: 1006, reason: String(err && err.message), opened: this.opened });
    });
  }

  async _run(stream, url) {
    const response = await fetch(url, {
      headers: { Authorization: `Bearer ${this.token}`, Accept: "text/event-stream" },
      cache: "no-store",
      signal: stream.ctrl.signal,
    });
    if (!response.ok) {
      const http = gatewayError(response.status, await readJson(response));
      this._lost({ code: 1006, reason: http.code, opened: this.opened, http,
        retryMs: retryAfterMs(response) });
      return;
    }
    let closing = null;
    await readSse(
      response.body,
      (block) => {
        if (this.stream !== stream) return;
        if (block.retry !== null) this.client._hintMs = block.retry;
        if (!block.data) return;
        let frame;
        try {
          frame = JSON.parse(block.data);
        } catch {
          return;
        }
        if (frame.type === "hello") {
          stream.helloSeen = true;
          clearTimeout(stream.helloTimer);
          this.heartbeatMs = Math.max(1000, (frame.heartbeat_s || 15) * 1000);
          this._markOpen(frame);
        } else if (frame.type === "closing") {
          closing = frame;
        }
        this.client._frame(this, frame);
      },
      () => {
        this.lastRx = Date.now();
      },
    );
    if (this.stream !== stream || this.dead) return;
    const info = closing
      ? { code: closing.code, reason: closing.reason, opened: this.opened }
      : { code: 1006, reason: "stream ended", opened: this.opened };
    this._lost(info);
  }

  _markOpen(hello) {
    if (this.opened) return;
    this.opened = true;
    this.client._opened(this, hello);
  }

  _watch() {
    if (this.stream && this.stream.helloSeen && Date.now() - this.lastRx > this.heartbeatMs * 2 + 5000) {
      this._lost({ code: 4004, reason: "heartbeat missed", opened: true });
    }
  }

  /** The topic list changed: reopen the stream from the current cursors. */
  sync() {
    if (this.dead) return;
    clearTimeout(this.resyncTimer);
    // Coalesce a burst of subscribe/unsubscribe calls into one reopen.
    this.resyncTimer = setTimeout(() => {
      if (this.dead) return;
      this._stopStream();
      this.open();
    }, 10);
  }

  get canSend() {
    return this.opened && !this.dead;
  }

  _stopStream() {
    const stream = this.stream;
    this.stream = null;
    if (stream) {
      clearTimeout(stream.helloTimer);
      stream.ctrl.abort();
    }
  }

  _teardown() {
    clearTimeout(this.resyncTimer);
    clearInterval(this.watchdog);
    this._stopStream();
  }
}

/** Long-poll: stateless requests carrying the compact cursor. */
class PollTransport extends Transport {
  constructor(client, token) {
    super("poll", client, token);
    this.ctrl = null;
    this.wake = null;
  }

  open() {
    this._loop().catch((err) => {
      if (!this.dead) this._lost({ code: 1006, reason: String(err && err.message), opened: this.opened });
    });
  }

  async _loop() {
    while (!this.dead) {
      const topics = this.client._topicList();
      if (!topics.length) {
        if (!this.opened) this._markOpen();
        await new Promise((resolve) => {
          this.wake = resolve;
        });
        continue;
      }
      const cursor = compactCursor(topics, this.client._cursors);
      const timeout = this.opened ? this.client.opts.pollTimeoutS : 0;
      let url = `${this.client.base}/poll?topics=${encodeURIComponent(topics.join(","))}`;
      url += `&timeout_s=${timeout}`;
      if (cursor.replace(/,/g, "")) url += `&cursor=${encodeURIComponent(cursor)}`;
      const ctrl = new AbortController();
      this.ctrl = ctrl;
      const started = Date.now();
      const guard = setTimeout(() => ctrl.abort(), (timeout + 15) * 1000);
      let response;
      try {
        response = await fetch(url, {
          headers: { Authorization: `Bearer ${this.token}` },
          cache: "no-store",
          signal: ctrl.signal,
        });
      } catch (err) {
        clearTimeout(guard);
        if (this.dead) return;
        if (ctrl.signal.aborted && this.ctrl !== ctrl) continue; // topics changed: re-poll
        this._lost({ code: 1006, reason: String(err && err.message), opened: this.opened });
        return;
      }
      const body = await readJson(response);
      clearTimeout(guard);
      if (this.dead) return;
      if (!response.ok || !body) {
        const http = gatewayError(response.status, body);
        this._lost({ code: 1006, reason: http.code, opened: this.opened, http,
          retryMs: retryAfterMs(response) });
        return;
      }
      if (this.ctrl !== ctrl) continue;
      const frames = body.frames || [];
      for (const frame of frames) this.client._frame(this, frame);
      // Topics with no position yet start at the tail the gateway gave.
      const slots = String(body.cursor || "").split(",");
      topics.forEach((t, i) => {
        if (slots[i] && !this.client._cursors.has(t) && this.client._topics.has(t)) {
          this.client._cursors.set(t, slots[i]);
        }
      });
      if (!this.opened) this._markOpen();
      else if (!frames.length && Date.now() - started < 250) {
        // A long-poll that came back at once with nothing (a gateway shutting down, a proxy
        // cutting it short): pause instead of spinning.
        await new Promise((resolve) => setTimeout(resolve, 1000));
      }
    }
  }

  _markOpen() {
    this.opened = true;
    this.client._opened(this, null);
  }

  sync() {
    if (this.dead) return;
    const ctrl = this.ctrl;
    this.ctrl = null;
    if (ctrl) ctrl.abort();
    if (this.wake) {
      const wake = this.wake;
      this.wake = null;
      wake();
    }
  }

  get canSend() {
    return this.opened && !this.dead;
  }

  _teardown() {
    if (this.ctrl) this.ctrl.abort();
    if (this.wake) this.wake();
  }
}

const TRANSPORT_CLASSES = { ws: WsTransport, sse: SseTransport, poll: PollTransport };

// -- the client ------------------------------------------------------------------------------

export class Lectern {
  /**
   * @param {object} opts
   * @param {string} opts.url the gateway's base URL (http:// or https://)
   * @param {(ctx: {expired: boolean}) => string|Promise<string>} opts.getToken
   * @param {string[]} [opts.transports] allowed transports, best first (default ws, sse, poll)
   * @param {(state: object) => void} [opts.onState] status changes (see `state`)
   */
  constructor(opts) {
    if (!opts || !opts.url || typeof opts.getToken !== "function") {
      throw new TypeError("Lectern needs {url, getToken}");
    }
    this.opts = { ...DEFAULTS, ...opts };
    this.base = String(opts.url).replace(/\/+$/, "");
    this.wsBase = this.base.replace(/^http/, "ws");
    this.transports = this.opts.transports.filter((t) => TRANSPORTS.includes(t));
    if (!this.transports.length) throw new TypeError("no usable transport");
    this.getToken = opts.getToken;
    /** topic -> {handlers: Set, onReset, onError, buffer: null|frame[], primed} */
    this._topics = new Map();
    /** topic -> last event ID delivered (the resume cursor) */
    this._cursors = new Map();
    this._pending = new Map();
    this._listeners = new Map();
    this._rank = 0;
    this._worked = new Set();
    this._failsBeforeOpen = 0;
    this._attempt = 0;
    this._refs = 0;
    this._conn = null;
    this._gen = 0;
    this._hintMs = 0;
    this._retryMs = 0;
    this._freshToken = false;
    this._closed = false;
    this._started = false;
    this._upgradeDelay = this.opts.upgradeAfterMs;
    this.stats = { events: 0, duplicates: 0, resets: 0, opens: 0, switches: 0, lastCode: 0 };
    this.state = { status: "idle", transport: this.transports[0], attempt: 0 };
    if (opts.onState) this.on("state", opts.onState);
    this._onOnline = () => this._online();
    this._onOffline = () => this._offline();
    if (typeof window !== "undefined") {
      window.addEventListener("online", this._onOnline);
      window.addEventListener("offline", this._onOffline);
    }
  }

  /** The transport in use (or being tried): "ws", "sse" or "poll". */
  get transport() {
    return this.transports[this._rank];
  }

  /** Listen to "state", "error" ({code, message, topic}), "reset" ({topic, reason}) or
   * "frame" (every server frame). Returns a function that removes the listener. */
  on(name, fn) {
    if (!this._listeners.has(name)) this._listeners.set(name, new Set());
    this._listeners.get(name).add(fn);
    return () => this._listeners.get(name).delete(fn);
  }

  _emit(name, value) {
    for (const fn of this._listeners.get(name) || []) {
      try {
        fn(value);
      } catch (err) {
        console.error("lectern listener failed", err);
      }
    }
  }

  _setState(status, extra = {}) {
    this.state = { status, transport: this.transport, attempt: this._attempt, ...extra };
    this._emit("state", this.state);
  }

  /** Start connecting (subscribe and command call it for you). */
  connect() {
    if (this._closed || this._started) return;
    this._started = true;
    this._connect();
  }

  /**
   * Receive the events of `topic`: `handler({topic, id, event, ts, data})`, each exactly once
   * and in order. `cursor`: resume after this event ID (e.g. from a snapshot). `onReset(topic,
   * reason)`: the history no longer reaches the cursor; refetch and return the new cursor (or
   * nothing). `onError({code, message})`: the gateway refused the topic. Returns `off()`.
   */
  subscribe(topic, handler, { cursor, onReset, onError } = {}) {
    let sub = this._topics.get(topic);
    const fresh = !sub;
    if (fresh) {
      sub = { handlers: new Set(), onReset: null, onError: null, buffer: null, primed: false };
      this._topics.set(topic, sub);
      if (isEventId(cursor)) {
        this._cursors.set(topic, cursor);
        sub.primed = true;
      }
    }
    if (onReset) sub.onReset = onReset;
    if (onError) sub.onError = onError;
    sub.handlers.add(handler);
    if (fresh) {
      if (this._conn) this._primeThenSync(topic);
      this.connect();
    }
    return () => this._unsubscribe(topic, handler);
  }

  _unsubscribe(topic, handler) {
    const sub = this._topics.get(topic);
    if (!sub) return;
    sub.handlers.delete(handler);
    if (sub.handlers.size) return;
    this._topics.delete(topic);
    this._cursors.delete(topic);
    if (this._conn) this._conn.sync([], [topic]);
  }

  async _primeThenSync(topic) {
    const conn = this._conn;
    await this._prime();
    if (this._conn === conn && conn && this._topics.has(topic)) conn.sync([topic], []);
  }

  /**
   * The current position of each topic (its newest event ID, "0-0" when it has none). Take it
   * *before* loading a snapshot from the API, then subscribe with it as `cursor`: every event
   * after the snapshot arrives, none is lost in between.
   */
  async tails(topics) {
    const answer = await this._probe(topics);
    if (answer.kind !== "ok") {
      const http = answer.http || {};
      throw new LecternError(http.code || "unavailable", http.message || "gateway unreachable");
    }
    const out = {};
    topics.forEach((t, i) => {
      if (isEventId(answer.slots[i])) out[t] = answer.slots[i];
    });
    return out;
  }

  /** Move the resume point of `topic` forward to `cursor` (never back). */
  setCursor(topic, cursor) {
    if (!isEventId(cursor)) return;
    const cur = this._cursors.get(topic);
    if (!cur || idAfter(cursor, cur)) this._cursors.set(topic, cursor);
  }

  /** The resume cursor of `topic`, or undefined. */
  cursor(topic) {
    return this._cursors.get(topic);
  }

  _topicList() {
    return [...this._topics.keys()];
  }

  /** Send a command; resolves with the reply's data, rejects with a LecternError. */
  command(name, topic, data = {}, { timeoutMs } = {}) {
    if (this._closed) return Promise.reject(new LecternError("closed", "client closed"));
    const ref = `c${++this._refs}.${Math.random().toString(36).slice(2, 8)}`;
    const frame = { type: "cmd", ref, name, data };
    if (topic) frame.topic = topic;
    return new Promise((resolve, reject) => {
      const entry = { frame, resolve, reject, sentOn: null, retried: false };
      entry.timer = setTimeout(() => {
        this._settle(ref, new LecternError("timeout", "no reply in time"));
      }, timeoutMs || this.opts.commandTimeoutMs);
      this._pending.set(ref, entry);
      this.connect();
      this._dispatch(entry);
    });
  }

  _settle(ref, error, data) {
    const entry = this._pending.get(ref);
    if (!entry) return;
    this._pending.delete(ref);
    clearTimeout(entry.timer);
    if (error) entry.reject(error);
    else entry.resolve(data);
  }

  _dispatch(entry) {
    const conn = this._conn;
    if (!conn || !conn.canSend || entry.sentOn) return; // sent when the connection opens
    if (conn.kind === "ws") {
      if (conn.send(entry.frame)) entry.sentOn = conn;
      return;
    }
    entry.sentOn = "http";
    this._post(entry);
  }

  async _post(entry) {
    const ref = entry.frame.ref;
    let response;
    let body;
    try {
      const token = await this._token(false);
      response = await fetch(`${this.base}/cmd`, {
        method: "POST",
        headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
        body: JSON.stringify(entry.frame),
        cache: "no-store",
      });
      body = await readJson(response);
    } catch (err) {
      this._settle(ref, new LecternError("unavailable", "gateway unreachable"));
      return;
    }
    if (body && body.type === "reply") {
      this._reply(body);
      return;
    }
    const http = gatewayError(response.status, body);
    if (http.code === "token_expired" && !entry.retried) {
      entry.retried = true;
      this._freshToken = true;
      this._post(entry);
      return;
    }
    this._settle(ref, new LecternError(http.code, http.message, { status: http.status }));
  }

  _reply(frame) {
    if (frame.ok) this._settle(frame.ref, null, frame.data);
    else {
      const err = frame.error || {};
      this._settle(frame.ref, new LecternError(err.code || "error", err.message));
    }
  }

  /** Stop for good: close the connection, reject pending commands, drop listeners. */
  close() {
    if (this._closed) return;
    this._closed = true;
    clearTimeout(this._retryTimer);
    clearTimeout(this._stableTimer);
    clearTimeout(this._upgradeTimer);
    if (this._conn) this._conn.close();
    this._conn = null;
    for (const ref of [...this._pending.keys()]) {
      this._settle(ref, new LecternError("closed", "client closed"));
    }
    if (typeof window !== "undefined") {
      window.removeEventListener("online", this._onOnline);
      window.removeEventListener("offline", this._onOffline);
    }
    this._setState("closed", { code: 1000 });
  }

  // -- connecting ----------------------------------------------------------------------------

  async _token(expired) {
    const want = expired || this._freshToken;
    if (!want && this._tokenValue) return this._tokenValue;
    this._tokenValue = await this.getToken({ expired: want });
    this._freshToken = false;
    return this._tokenValue;
  }

  async _connect() {
    if (this._closed) return;
    clearTimeout(this._retryTimer);
    const gen = ++this._gen;
    if (this._conn) this._drop(this._conn);
    this._setState(this.stats.opens ? "reconnecting" : "connecting");
    let token;
    try {
      token = await this._token(false);
      await this._prime();
    } catch (err) {
      if (gen === this._gen) this._retry(`token: ${err && err.message}`);
      return;
    }
    if (gen !== this._gen || this._closed) return;
    const Transport = TRANSPORT_CLASSES[this.transport];
    const conn = new Transport(this, token);
    this._conn = conn;
    conn.open();
  }

  /** Fill in the current tail of subscribed topics that have no cursor yet (best effort).
   * Calls are chained, so a topic subscribed during a prime waits for it. */
  _prime() {
    this._primeChain = (this._primeChain || Promise.resolve()).then(() => this._primeNow());
    return this._primeChain;
  }

  async _primeNow() {
    if (!this.opts.prime) return;
    const topics = [...this._topics.entries()]
      .filter(([t, sub]) => !sub.primed && !this._cursors.has(t))
      .map(([t]) => t);
    if (!topics.length) return;
    const answer = await this._probe(topics);
    if (answer.kind !== "ok") return;
    topics.forEach((t, i) => {
      const sub = this._topics.get(t);
      if (!sub) return;
      sub.primed = true;
      if (answer.slots[i] && !this._cursors.has(t)) this._cursors.set(t, answer.slots[i]);
    });
  }

  /** One `GET /poll` without a cursor: is the gateway there, is the token good, and where do
   * the topics end? -> {kind: "ok"|"down"|"expired"|"fatal"|"busy"|"forbidden", ...}. */
  async _probe(topics) {
    const list = topics && topics.length ? topics : this._topicList();
    let url = `${this.base}/poll?timeout_s=0`;
    if (list.length) url += `&topics=${encodeURIComponent(list.join(","))}`;
    let response;
    let body;
    try {
      const token = await this._token(false);
      response = await fetch(url, {
        headers: { Authorization: `Bearer ${token}` },
        cache: "no-store",
      });
      body = await readJson(response);
    } catch {
      return { kind: "down" };
    }
    if (response.ok && body) {
      return { kind: "ok", slots: String(body.cursor || "").split(",") };
    }
    const http = gatewayError(response.status, body);
    if (http.code === "token_expired") return { kind: "expired", http };
    if (FATAL_HTTP_CODES.has(http.code)) return { kind: "fatal", http };
    if (http.code === "forbidden") return { kind: "forbidden", http };
    if (http.code === "no_topics") return { kind: "ok", slots: [] };
    if (response.status === 429 || response.status >= 500) {
      return { kind: "busy", http, retryMs: retryAfterMs(response) };
    }
    return { kind: "ok", slots: [] };
  }

  _opened(conn, hello) {
    if (conn !== this._conn) return;
    this.stats.opens += 1;
    this._worked.add(conn.kind);
    this._failsBeforeOpen = 0;
    this._hello = hello;
    this._setState("open");
    clearTimeout(this._stableTimer);
    this._stableTimer = setTimeout(() => {
      this._attempt = 0;
    }, this.opts.stableAfterMs);
    for (const entry of this._pending.values()) this._dispatch(entry);
    this._scheduleUpgrade();
  }

  _frame(conn, frame) {
    if (conn !== this._conn) return;
    switch (frame.type) {
      case "event":
        this._deliver(frame);
        break;
      case "reply":
        this._reply(frame);
        break;
      case "reset":
        this._reset(frame.topic, frame.reason);
        break;
      case "error":
        this._topicError(frame);
        break;
      default:
        break;
    }
    this._emit("frame", frame);
  }

  _deliver(frame) {
    const last = this._cursors.get(frame.topic);
    if (last && !idAfter(frame.id, last)) {
      this.stats.duplicates += 1;
      return;
    }
    const sub = this._topics.get(frame.topic);
    if (!sub) return;
    this._cursors.set(frame.topic, frame.id);
    if (sub.buffer) {
      sub.buffer.push(frame);
      return;
    }
    this._handle(sub, frame);
  }

  _handle(sub, frame) {
    this.stats.events += 1;
    for (const handler of [...sub.handlers]) {
      try {
        handler(frame);
      } catch (err) {
        console.error("lectern handler failed", err);
      }
    }
  }

  _reset(topic, reason) {
    this.stats.resets += 1;
    this._cursors.delete(topic);
    const sub = this._topics.get(topic);
    this._emit("reset", { topic, reason });
    if (!sub || !sub.onReset || sub.buffer) return;
    sub.buffer = [];
    const finish = (cursor) => {
      const held = sub.buffer || [];
      sub.buffer = null;
      const floor = isEventId(cursor) ? cursor : null;
      if (floor) this.setCursor(topic, floor);
      for (const frame of held) {
        if (!floor || idAfter(frame.id, floor)) this._handle(sub, frame);
      }
    };
    Promise.resolve()
      .then(() => sub.onReset(topic, reason))
      .then(finish, (err) => {
        console.error("lectern onReset failed", err);
        finish(null);
      });
  }

  _topicError(frame) {
    const info = { code: frame.code, message: frame.message, topic: frame.topic, ref: frame.ref };
    const sub = frame.topic ? this._topics.get(frame.topic) : null;
    if (sub && (frame.code === "forbidden" || frame.code === "bad_topic")) {
      this._topics.delete(frame.topic);
      this._cursors.delete(frame.topic);
      if (sub.onError) sub.onError(info);
    }
    this._emit("error", info);
  }

  /** Forget `conn`: close it; commands sent on it will never get their reply. */
  _drop(conn) {
    if (this._conn === conn) this._conn = null;
    conn.close();
    clearTimeout(this._stableTimer);
    clearTimeout(this._upgradeTimer);
    for (const [ref, entry] of [...this._pending.entries()]) {
      if (entry.sentOn === conn) {
        this._settle(ref, new LecternError("disconnected", "connection lost before the reply"));
      }
    }
  }

  async _lost(conn, info) {
    if (conn !== this._conn || this._closed) return;
    this._drop(conn);
    this.stats.lastCode = info.code;
    if (info.retryMs) this._retryMs = info.retryMs;
    const gen = this._gen;
    if (info.http) {
      if (await this._httpRefusal(info.http)) return;
    } else {
      const action = closeAction(info.code);
      if (action === "stop") {
        this._stop(info.code, info.reason);
        return;
      }
      if (action === "refresh") this._freshToken = true;
    }
    if (!info.opened) {
      // Failed before its first frame: blocked, or is the gateway down? Ask it over HTTP.
      this._failsBeforeOpen += 1;
      const verdict = await this._probe();
      if (gen !== this._gen || this._closed) return;
      if (verdict.kind === "fatal") {
        this._stop(4500, verdict.http.code);
        return;
      }
      if (verdict.kind === "forbidden") {
        this._dropForbidden(verdict.http.message);
        this._connect();
        return;
      }
      if (verdict.kind === "expired") {
        this._freshToken = true;
        if (this._failsBeforeOpen <= 2) {
          this._connect();
          return;
        }
      }
      if (verdict.kind === "busy" && verdict.retryMs) this._retryMs = verdict.retryMs;
      const known = this._worked.has(this.transport);
      const blocked = verdict.kind === "ok" && (!known || this._failsBeforeOpen >= 3);
      if (blocked && this._rank < this.transports.length - 1) {
        this._rank += 1;
        this._failsBeforeOpen = 0;
        this.stats.switches += 1;
        this._connect();
        return;
      }
    }
    if (info.code === 4002 || info.code === 4003) {
      this._connect();
      return;
    }
    this._retry(info.reason);
  }

  /** An HTTP refusal seen by SSE or poll. Returns true when handled (stopped or reconnected). */
  async _httpRefusal(http) {
    if (FATAL_HTTP_CODES.has(http.code)) {
      this._stop(4500, http.code);
      return true;
    }
    if (http.code === "token_expired") {
      this._freshToken = true;
      this._failsBeforeOpen += 1;
      if (this._failsBeforeOpen <= 2) {
        this._connect();
        return true;
      }
    }
    if (http.code === "forbidden") {
      this._dropForbidden(http.message);
      this._connect();
      return true;
    }
    return false;
  }

  /** "topic: reason" from a 403: stop asking for that topic, tell its subscriber. */
  _dropForbidden(message) {
    const text = String(message || "");
    for (const topic of this._topicList()) {
      if (text.startsWith(`${topic}: `)) {
        this._topicError({ type: "error", code: "forbidden", message: text, topic });
        return;
      }
    }
  }

  _stop(code, reason) {
    clearTimeout(this._retryTimer);
    this._started = false;
    for (const ref of [...this._pending.keys()]) {
      this._settle(ref, new LecternError("closed", reason || "connection closed"));
    }
    this._setState("closed", { code, reason });
  }

  _retry(reason) {
    if (this._closed) return;
    const jitter = backoffDelay(this._attempt, this.opts.baseDelayMs, this.opts.maxDelayMs);
    // The SSE `retry:` hint applies to SSE; an HTTP Retry-After to the next attempt of any.
    const floor = Math.max(this.transport === "sse" ? this._hintMs : 0, this._retryMs);
    this._retryMs = 0;
    const delay = floor + jitter;
    this._attempt += 1;
    this._setState("reconnecting", { retryInMs: delay, reason });
    clearTimeout(this._retryTimer);
    this._retryTimer = setTimeout(() => this._connect(), delay);
  }

  _online() {
    if (this._closed || !this._started) return;
    if (this._conn && this._conn.opened) return;
    this._attempt = 0;
    this._connect();
  }

  _offline() {
    // The browser knows the network is gone: drop the transport now instead of waiting for
    // a heartbeat to time out, and wait for `online` (or the backoff timer).
    if (this._closed || !this._conn) return;
    this._lost(this._conn, { code: 1006, reason: "offline", opened: true });
  }

  // -- moving back up --------------------------------------------------------------------

  _scheduleUpgrade() {
    clearTimeout(this._upgradeTimer);
    if (this._rank === 0 || this._closed) return;
    this._upgradeTimer = setTimeout(() => this._tryUpgrade(), this._upgradeDelay);
  }

  async _tryUpgrade() {
    if (this._closed || !this._conn || !this._conn.opened) return;
    for (let rank = 0; rank < this._rank; rank += 1) {
      const kind = this.transports[rank];
      if (await this._testTransport(kind)) {
        if (this._closed || !this._conn) return;
        this._rank = rank;
        this._upgradeDelay = this.opts.upgradeAfterMs;
        this.stats.switches += 1;
        this._connect();
        return;
      }
    }
    this._upgradeDelay = Math.min(this._upgradeDelay * 2, this.opts.maxUpgradeAfterMs);
    this._scheduleUpgrade();
  }

  /** Open a throwaway connection of `kind` and wait for its hello. */
  async _testTransport(kind) {
    const token = await this._token(false).catch(() => null);
    if (!token) return false;
    const timeout = this.opts.helloTimeoutMs;
    if (kind === "ws") {
      return new Promise((resolve) => {
        let ws;
        try {
          ws = new WebSocket(`${this.wsBase}/ws?token=${encodeURIComponent(token)}`, [
            "lectern.json",
          ]);
        } catch {
          resolve(false);
          return;
        }
        const done = (ok) => {
          clearTimeout(timer);
          ws.onmessage = ws.onclose = ws.onerror = null;
          try {
            ws.close(1000);
          } catch {
            // closing already
          }
          resolve(ok);
        };
        const timer = setTimeout(() => done(false), timeout);
        ws.onmessage = (m) => done(String(m.data).includes('"hello"'));
        ws.onclose = () => done(false);
      });
    }
    if (kind === "sse") {
      const topics = this._topicList();
      if (!topics.length) return false;
      const ctrl = new AbortController();
      const timer = setTimeout(() => ctrl.abort(), timeout);
      try {
        const response = await fetch(
          `${this.base}/sse?topics=${encodeURIComponent(topics.join(","))}`,
          { headers: { Authorization: `Bearer ${token}` }, signal: ctrl.signal, cache: "no-store" },
        );
        if (!response.ok) return false;
        let ok = false;
        await readSse(
          response.body,
          (block) => {
            if (block.event === "hello") {
              ok = true;
              ctrl.abort();
            }
          },
          () => {},
        ).catch(() => {});
        return ok;
      } catch {
        return false;
      } finally {
        clearTimeout(timer);
        ctrl.abort();
      }
    }
    return true;
  }
}
