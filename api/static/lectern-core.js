/** lectern-core.js: the Lectern client's pure core (docs/pages.md). No sockets, timers or
 * fetch, so that it runs in Node as is. */

export const TRANSPORTS = Object.freeze(["ws", "sse", "poll"]);

/** Standard close codes after which reconnecting is pointless (the client must change). */
const TERMINAL_STANDARD = new Set([1000, 1002, 1003, 1007, 1008, 1009, 1010]);
const FATAL_HTTP_CODES = new Set(["invalid_token", "missing_token", "session_revoked",
  "origin_not_allowed"]);

export class LecternError extends Error {
  constructor(code, message, extra = {}) {
    super(message || code);
    Object.assign(this, { name: "LecternError", code }, extra);
  }
}

/** True when event ID `a` ("ms-seq") is strictly newer than `b`; numeric, no float rounding. */
export function idAfter(a, b) {
  const [ams, aseq = "0"] = String(a).split("-");
  const [bms, bseq = "0"] = String(b).split("-");
  const cmp = (x, y) => x.length - y.length || (x > y) - (x < y); // digits: longer is bigger
  return (cmp(ams, bms) || cmp(aseq, bseq)) > 0;
}

export const isEventId = (value) => typeof value === "string" && /^\d{1,20}-\d{1,20}$/.test(value);

/** Full-jitter backoff: a uniform delay in [0, min(cap, base * 2^attempt)). */
export function backoffDelay(attempt, baseMs, capMs, random = Math.random) {
  return Math.floor(random() * Math.min(capMs, baseMs * 2 ** Math.min(attempt, 30)));
}

/** What a close code asks of the client: "reconnect", "refresh" (token first) or "stop". */
export function closeAction(code) {
  if (code === 4002 || code === 4003) return "refresh";
  if (code >= 4000 && code < 5000) return code < 4500 ? "reconnect" : "stop";
  return TERMINAL_STANDARD.has(code) ? "stop" : "reconnect";
}

/** The compact cursor of an SSE stream or long-poll: last IDs in topic order, comma-joined. */
export const compactCursor = (topics, cursors) => topics.map((t) => cursors.get(t) || "").join(",");

/** Call `fn(value)`; a throwing page callback is logged, never breaks the client. */
export function safely(fn, value) {
  try {
    return fn(value);
  } catch (err) {
    console.error("lectern callback failed", err);
  }
}

export function parseFrame(text) {
  try {
    const frame = JSON.parse(text);
    return typeof frame?.type === "string" ? frame : null;
  } catch {
    return null;
  }
}

/** A gateway HTTP refusal ({error: {code, message}}) as {status, code, message}. */
export function gatewayError(status, body) {
  const { code = `http_${status}`, message = "" } = body?.error || {};
  return { status, code, message };
}

/** What an HTTP refusal means to the client: "expired" (token), "fatal", "forbidden" (a
 * topic), "busy" (429/5xx: later) or "ok" (the gateway is there and answered). */
export function refusalKind(http) {
  if (http.code === "token_expired") return "expired";
  if (FATAL_HTTP_CODES.has(http.code)) return "fatal";
  if (http.code === "forbidden") return "forbidden";
  if (http.status === 429 || http.status >= 500) return "busy";
  return "ok";
}

/** Incremental `text/event-stream` parser: feed() decoded text in chunks cut anywhere, get
 * back the complete blocks {event, data, id, retry} (comments dropped). */
const emptyBlock = () => ({ event: "message", data: [], id: null, retry: null });

export class SseParser {
  buffer = "";
  block = emptyBlock();
  feed(text) {
    const out = [];
    this.buffer += text;
    let nl;
    while ((nl = this.buffer.search(/\r\n|\r|\n/)) >= 0) {
      if (this.buffer[nl] === "\r" && nl === this.buffer.length - 1) break; // half of \r\n?
      const line = this.buffer.slice(0, nl);
      this.buffer = this.buffer.slice(nl + (this.buffer.startsWith("\r\n", nl) ? 2 : 1));
      const b = this.block;
      if (line === "") {
        if (b.data.length || b.retry !== null) out.push({ ...b, data: b.data.join("\n") });
        this.block = emptyBlock();
      } else if (!line.startsWith(":")) {
        const [, field, val = ""] = /^([^:]*)(?:: ?(.*))?$/s.exec(line); // one space dropped
        if (field === "event") b.event = val;
        else if (field === "data") b.data.push(val);
        else if (field === "id") b.id = val;
        else if (field === "retry" && /^\d+$/.test(val)) b.retry = Number(val);
      }
    }
    return out;
  }
}

/** The subscriptions and their resume cursors (the last event ID delivered per topic). Events
 * not newer than the cursor are duplicates after a resume: dropped. */
export class Topics {
  subs = new Map(); // topic -> {handlers: Set, onReset, onError, held: null|frame[]}
  cursors = new Map(); // topic -> the last event ID delivered
  stats = { events: 0, duplicates: 0, resets: 0 };
  list() { return [...this.subs.keys()]; }
  /** Add `handler` to `topic`; true when the topic is new. */
  add(topic, handler, { cursor, onReset, onError } = {}) {
    const fresh = !this.subs.has(topic);
    if (fresh) {
      this.subs.set(topic, { handlers: new Set(), onReset: null, onError: null, held: null });
      if (isEventId(cursor)) this.cursors.set(topic, cursor);
    }
    const sub = this.subs.get(topic);
    sub.onReset = onReset || sub.onReset;
    sub.onError = onError || sub.onError;
    sub.handlers.add(handler);
    return fresh;
  }
  /** Remove `handler`; true when `topic` has none left (it is forgotten). */
  remove(topic, handler) {
    const sub = this.subs.get(topic);
    return !!sub && sub.handlers.delete(handler) && !sub.handlers.size && this.forget(topic);
  }
  forget(topic) {
    this.cursors.delete(topic);
    return this.subs.delete(topic);
  }
  /** Move the cursor of `topic` forward only. */
  setCursor(topic, cursor) {
    if (!isEventId(cursor)) return;
    const cur = this.cursors.get(topic);
    if (!cur || idAfter(cursor, cur)) this.cursors.set(topic, cursor);
  }
  /** A tail from the gateway (`subscribed`, the SSE hello, a poll) starts a topic that has no
   * cursor yet, so a reconnect before its first event loses nothing. */
  adopt(topic, tail) {
    if (isEventId(tail) && this.subs.has(topic) && !this.cursors.has(topic)) {
      this.cursors.set(topic, tail);
    }
  }
  /** An `event` frame: to the handlers once, in order (held while the topic resets). */
  event(frame) {
    const last = this.cursors.get(frame.topic);
    if (last && !idAfter(frame.id, last)) {
      this.stats.duplicates += 1;
      return;
    }
    const sub = this.subs.get(frame.topic);
    if (!sub) return;
    this.cursors.set(frame.topic, frame.id);
    if (sub.held) sub.held.push(frame);
    else this._handle(sub, frame);
  }
  _handle(sub, frame) {
    this.stats.events += 1;
    for (const handler of [...sub.handlers]) safely(handler, frame);
  }
  /** A `reset`: the cursor is forgotten; with an `onReset` hook the topic's events are held
   * until the hook says where its refetched state ends, then those after it are delivered. */
  reset(topic, reason) {
    this.stats.resets += 1;
    this.cursors.delete(topic);
    const sub = this.subs.get(topic);
    if (!sub || !sub.onReset || sub.held) return;
    sub.held = [];
    const resume = (cursor) => {
      const [held, floor] = [sub.held || [], isEventId(cursor) ? cursor : null];
      sub.held = null;
      if (floor) this.setCursor(topic, floor);
      for (const f of held) if (!floor || idAfter(f.id, floor)) this._handle(sub, f);
    };
    Promise.resolve()
      .then(() => sub.onReset(topic, reason))
      .then(resume, (err) => resume(console.error("lectern onReset failed", err)));
  }
  /** The gateway refused a topic (`forbidden`, `bad_topic`): forgotten, its onError told. */
  refuse(info) {
    const sub = this.subs.get(info.topic);
    if (sub && this.forget(info.topic) && sub.onError) safely(sub.onError, info);
  }
}
