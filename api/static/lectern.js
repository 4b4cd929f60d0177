/** lectern.js: the browser client of the Lectern gateway (API: docs/pages.md; wire: docs/
 * protocol.md). It joins the pure core, the connection state machine and the transports, and
 * carries out what the machine decides: timers, tokens, trials, commands. */
import * as core from "./lectern-core.js";
import { ConnectionMachine } from "./lectern-machine.js";
import { TRANSPORT_CLASSES } from "./lectern-transports.js";

export * from "./lectern-core.js";
export { readSse } from "./lectern-transports.js";

const { LecternError, TRANSPORTS } = core;
const DEFAULTS = { transports: TRANSPORTS, baseDelayMs: 500, maxDelayMs: 15000,
  stableAfterMs: 10000, helloTimeoutMs: 8000, commandTimeoutMs: 10000, pollTimeoutS: 25,
  upgradeAfterMs: 30000, maxUpgradeAfterMs: 300000 };

export class Lectern {
  /** `opts`: `url` (the gateway, http or https), `getToken({expired})`, and optionally
   * `transports` (best first), `onState(state)` and the timings of DEFAULTS. */
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
    this.topics = new core.Topics();
    this.machine = new ConnectionMachine(this.transports, this.opts);
    Object.assign(this, { _pending: new Map(), _listeners: new Map(), _refs: 0, _gen: 0 });
    this.state = { status: "idle", transport: this.transport, attempt: 0 };
    if (opts.onState) this.on("state", opts.onState);
    this._onOnline = () => this._input({ type: "online" });
    // Offline: drop the transport now rather than wait for a heartbeat to time out.
    this._onOffline = () => this._conn && this.lost(this._conn, { code: 1006, reason: "offline",
      opened: true });
    globalThis.addEventListener?.("online", this._onOnline);
    globalThis.addEventListener?.("offline", this._onOffline);
  }
  get transport() { return this.machine.transport; }
  get stats() {
    const m = this.machine;
    return { ...this.topics.stats, opens: m.opens, switches: m.switches, lastCode: m.lastCode };
  }
  /** Listen to "state", "error" ({code, message, topic}), "reset" ({topic, reason}) or
   * "frame" (every server frame). Returns a function that removes the listener. */
  on(name, fn) {
    if (!this._listeners.has(name)) this._listeners.set(name, new Set());
    this._listeners.get(name).add(fn);
    return () => this._listeners.get(name).delete(fn);
  }
  _emit(name, value) { for (const fn of this._listeners.get(name) || []) core.safely(fn, value); }
  _setState(extra = {}) {
    const m = this.machine;
    this.state = { status: m.status, transport: m.transport, attempt: m.attempt, ...extra };
    this._emit("state", this.state);
  }
  /** Start connecting (subscribe and command call it for you). */
  connect() { if (!this._closed) this._input({ type: "start" }); }
  /** Events of `topic`, each once and in order, to `handler`; see docs/pages.md for `cursor`,
   * `onReset` and `onError`. Returns `off()`. */
  subscribe(topic, handler, options = {}) {
    if (this.topics.add(topic, handler, options)) {
      this._conn?.sync([topic], []);
      this.connect();
    }
    return () => this.topics.remove(topic, handler) && this._conn?.sync([], [topic]);
  }
  /** The current position of each topic: take it *before* loading a snapshot, subscribe from
   * it, and nothing is lost in between. */
  async tails(topics) {
    const { kind, http = {}, slots } = await this._trial("poll", topics);
    if (kind !== "ok") {
      throw new LecternError(http.code || "unavailable", http.message || "gateway unreachable");
    }
    const entries = topics.map((t, i) => [t, slots[i]]);
    return Object.fromEntries(entries.filter(([, slot]) => core.isEventId(slot)));
  }
  /** Move the resume point of `topic` forward (never back). */
  setCursor(topic, cursor) { this.topics.setCursor(topic, cursor); }
  cursor(topic) { return this.topics.cursors.get(topic); }
  /** Send a command: the reply's data, or a LecternError (the reply's code, "timeout",
   * "disconnected": maybe applied, "closed"). Waits for a connection within its timeout. */
  command(name, topic, data = {}, { timeoutMs } = {}) {
    if (this._closed) return Promise.reject(new LecternError("closed", "client closed"));
    const ref = `c${++this._refs}.${Math.random().toString(36).slice(2, 8)}`;
    const frame = { type: "cmd", ref, name, data, ...(topic ? { topic } : {}) };
    return new Promise((resolve, reject) => {
      const entry = { frame, resolve, reject, sentOn: null, retried: false };
      const late = () => this._settle(ref, new LecternError("timeout", "no reply in time"));
      entry.timer = setTimeout(late, timeoutMs || this.opts.commandTimeoutMs);
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
    return error ? entry.reject(error) : entry.resolve(data);
  }
  _settleAll(code, reason, sentOn) {
    for (const [ref, entry] of [...this._pending]) {
      if (!sentOn || entry.sentOn === sentOn) this._settle(ref, new LecternError(code, reason));
    }
  }
  _dispatch(entry) {
    const conn = this._conn;
    if (!conn || !conn.canSend || entry.sentOn) return; // sent when the connection opens
    if (conn.kind !== "ws") {
      entry.sentOn = "http";
      this._post(entry);
    } else if (conn.send(entry.frame)) entry.sentOn = conn;
  }
  async _post(entry) {
    const ref = entry.frame.ref;
    let response, body;
    try {
      const headers = { Authorization: `Bearer ${await this._token()}`,
        "Content-Type": "application/json" };
      const init = { method: "POST", headers, body: JSON.stringify(entry.frame) };
      response = await fetch(`${this.base}/cmd`, { ...init, cache: "no-store" });
      body = await response.json().catch(() => null);
    } catch {
      return this._settle(ref, new LecternError("unavailable", "gateway unreachable"));
    }
    if (body && body.type === "reply") return this._reply(body);
    const http = core.gatewayError(response.status, body);
    if (http.code === "token_expired" && !entry.retried) {
      entry.retried = this._freshToken = true;
      return this._post(entry);
    }
    this._settle(ref, new LecternError(http.code, http.message, { status: http.status }));
  }
  _reply({ ref, ok, data, error }) {
    this._settle(ref, ok ? null : new LecternError(error?.code || "error", error?.message), data);
  }
  /** Stop for good: close the connection, reject pending commands. */
  close() {
    if (this._closed) return;
    this._closed = true;
    globalThis.removeEventListener?.("online", this._onOnline);
    globalThis.removeEventListener?.("offline", this._onOffline);
    const stopped = this.machine.state === "closed"; // by the gateway, earlier
    this._input({ type: "close" });
    if (stopped) this._setState({ code: 1000 });
  }
  _input(input) {
    const before = this.machine.state;
    for (const effect of this.machine.send(input)) this._effect(effect);
    if (this.machine.state === "open" && before !== "open") this._setState();
  }
  _effect(effect) {
    clearTimeout(this._retryTimer);
    const { ms, code, reason } = effect;
    if (effect.do === "connect") this._connect();
    else if (effect.do === "probe") this._probe();
    else if (effect.do === "refresh") this._freshToken = true;
    else if (effect.do === "drop") this._dropForbidden(effect.message);
    else if (effect.do === "wait") {
      this._setState({ retryInMs: ms, reason });
      this._retryTimer = setTimeout(() => this._input({ type: "retry" }), ms);
    } else if (effect.do === "upgradeIn") {
      clearTimeout(this._upgradeTimer);
      this._upgradeTimer = setTimeout(() => this._tryUpgrade(), ms);
    } else if (effect.do === "stop") {
      if (this._conn) this._drop(this._conn);
      this._settleAll("closed", reason || "connection closed");
      this._setState({ code, reason });
    }
  }
  async _token() {
    const expired = !!this._freshToken;
    if (!expired && this._tokenValue) return this._tokenValue;
    this._tokenValue = await this.getToken({ expired });
    this._freshToken = false;
    return this._tokenValue;
  }
  async _connect() {
    const gen = ++this._gen;
    if (this._conn) this._drop(this._conn);
    this._setState();
    const token = await this._token().catch((err) => {
      const reason = `token: ${err && err.message}`;
      if (gen === this._gen) this._input({ type: "lost", code: 1006, reason, opened: true });
    });
    if (!token || gen !== this._gen || this.machine.state !== "connecting") return;
    this._conn = new TRANSPORT_CLASSES[this.transport](this, token);
    this._conn.open();
  }
  async _probe() {
    const gen = this._gen;
    const verdict = await this._trial("poll");
    if (gen === this._gen) this._input({ type: "probed", ...verdict });
  }
  /** Open a throwaway transport of `kind` as a probe (no subscription, no cursor), closed as
   * soon as it opens or fails. The "poll" one asks the gateway whether it is there, the token
   * good, and where `topics` end: {kind: "ok", slots} or {kind: "down"|refusalKind, http}. */
  async _trial(kind, topics = this.topics.list()) {
    const token = await this._token().catch(() => null);
    if (!token || (kind === "sse" && !topics.length)) return { kind: "down" };
    return new Promise((resolve) => {
      const slots = new Map();
      const done = (verdict) => {
        clearTimeout(timer);
        probe.close();
        resolve(verdict);
      };
      const lost = (t, { http, retryMs }) =>
        done(http ? { kind: core.refusalKind(http), http, retryMs, slots: [] } : { kind: "down" });
      const opened = () => done({ kind: "ok", slots: topics.map((t) => slots.get(t)) });
      const { base, wsBase, opts } = this;
      const adopt = (t, tail) => slots.set(t, tail);
      const host = { base, wsBase, opts, topics: { list: () => topics, cursors: slots, adopt },
        opened, lost, frame() {}, hint() {} };
      const probe = new TRANSPORT_CLASSES[kind](host, token, true);
      const timer = setTimeout(() => done({ kind: "down" }), this.opts.helloTimeoutMs);
      probe.open();
    });
  }
  // What the transports report (their host interface):
  opened(conn) {
    if (conn !== this._conn) return;
    this._input({ type: "opened" });
    clearTimeout(this._stableTimer);
    this._stableTimer = setTimeout(() => this._input({ type: "stable" }), this.opts.stableAfterMs);
    for (const entry of this._pending.values()) this._dispatch(entry);
  }
  frame(conn, frame) {
    if (conn !== this._conn) return;
    const { type, topic } = frame;
    if (type === "event") this.topics.event(frame);
    else if (type === "reply") this._reply(frame);
    else if (type === "subscribed") this.topics.adopt(topic, frame.tail);
    else if (type === "hello") {
      for (const [t, tail] of Object.entries(frame.tails || {})) this.topics.adopt(t, tail);
    } else if (type === "reset") {
      this.topics.reset(topic, frame.reason);
      this._emit("reset", { topic, reason: frame.reason });
    } else if (type === "error") this._topicError(frame);
    this._emit("frame", frame);
  }
  hint(ms) { this._input({ type: "hint", ms }); }
  lost(conn, info) {
    if (conn !== this._conn) return;
    this._drop(conn);
    this._input({ type: "lost", ...info });
  }
  /** Forget `conn`: close it; commands sent on it will never get their reply. */
  _drop(conn) {
    if (this._conn === conn) this._conn = null;
    conn.close();
    clearTimeout(this._stableTimer);
    clearTimeout(this._upgradeTimer);
    this._settleAll("disconnected", "connection lost before the reply", conn);
  }
  _topicError({ code, message, topic, ref }) {
    if (topic && (code === "forbidden" || code === "bad_topic")) {
      this.topics.refuse({ code, message, topic, ref });
    }
    this._emit("error", { code, message, topic, ref });
  }
  /** "topic: reason" from a 403: stop asking for that topic, tell its subscriber. */
  _dropForbidden(message) {
    const text = String(message || "");
    const topic = this.topics.list().find((t) => text.startsWith(`${t}: `));
    if (topic) this._topicError({ code: "forbidden", message: text, topic });
  }
  /** On a fallback: the client moves up to the first better transport whose trial opens. */
  async _tryUpgrade() {
    const gen = this._gen;
    for (let rank = 0; rank < this.machine.rank; rank += 1) {
      const { kind } = await this._trial(this.transports[rank]);
      if (gen !== this._gen) return;
      if (kind === "ok") return this._input({ type: "upgraded", rank });
    }
    this._input({ type: "noUpgrade" });
  }
}
