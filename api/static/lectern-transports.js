/** lectern-transports.js: the Lectern client's thin transports (WebSocket, SSE read with fetch,
 * long-poll). Each reports to its host: opened(t, hello), frame(t, frame), lost(t, {code, reason,
 * opened, http?, retryMs?}) and hint(ms) (SSE `retry:`); close() is silent. The host also gives
 * base, wsBase, opts and topics (list, cursors, adopt: a core Topics). A `probe` transport (a
 * trial) subscribes nothing and sends no cursor. */
import { SseParser, compactCursor, gatewayError, parseFrame } from "./lectern-core.js";

export async function readSse(body, onBlock, onActivity) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  const parser = new SseParser();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    onActivity();
    for (const block of parser.feed(value)) onBlock(block);
  }
}

class Transport {
  constructor(host, token, probe = false) {
    Object.assign(this, { host, token, probe, opened: false, dead: false, refs: 0 });
  }
  get canSend() { return this.opened && !this.dead; }
  _markOpen(hello) {
    if (this.opened) return;
    this.opened = true;
    if (this.kind === "ws" && !this.probe) this.sync(this.host.topics.list(), []);
    this.host.opened(this, hello);
  }
  /** The hello opens the transport; its heartbeat paces the watchdog. */
  _hello(frame, defaultS) {
    clearTimeout(this.helloTimer);
    this.heartbeatMs = Math.max(1000, (frame.heartbeat_s || defaultS) * 1000);
    this.watchdog ||= setInterval(() => this._watch(), Math.min(5000, this.heartbeatMs / 2));
    this._markOpen(frame);
  }
  _lost(info) {
    if (this.dead) return;
    this.close();
    this.host.lost(this, info);
  }
  _fail(err) { this._lost({ code: 1006, reason: String(err?.message), opened: this.opened }); }
  /** A gateway's HTTP refusal, reported as lost (the machine reads `http`). */
  async _refused(response) {
    const http = gatewayError(response.status, await response.json().catch(() => null));
    const retryS = Number(response.headers.get("Retry-After"));
    this._lost({ code: 1006, reason: http.code, opened: this.opened, http,
      retryMs: Number.isFinite(retryS) && retryS > 0 ? retryS * 1000 : 0 });
  }
  /** GET `/sse` or `/poll` for `topics`, from their compact cursor (none for a probe). */
  _get(path, topics, signal, query = "") {
    let url = `${this.host.base}/${path}?topics=${encodeURIComponent(topics.join(","))}${query}`;
    const cursor = this.probe ? "" : compactCursor(topics, this.host.topics.cursors);
    if (cursor.replace(/,/g, "")) url += `&cursor=${encodeURIComponent(cursor)}`;
    const headers = { Authorization: `Bearer ${this.token}`, Accept: "text/event-stream" };
    return fetch(url, { headers, cache: "no-store", signal });
  }
  close() {
    if (this.dead) return;
    this.dead = true;
    clearTimeout(this.helloTimer);
    clearTimeout(this.resyncTimer);
    clearInterval(this.watchdog);
    this._teardown();
  }
}

export class WsTransport extends Transport {
  kind = "ws";
  open() {
    const url = `${this.host.wsBase}/ws?token=${encodeURIComponent(this.token)}`;
    try {
      this.ws = new WebSocket(url, ["lectern.json"]);
    } catch (err) {
      return queueMicrotask(() => this._fail(err));
    }
    this.lastRx = Date.now();
    const wait = this.host.opts.helloTimeoutMs;
    this.helloTimer = setTimeout(() => this._fail(new Error("no hello")), wait);
    this.ws.onmessage = (msg) => this._message(msg);
    this.ws.onclose = (ev) => this._lost({ code: ev.code, reason: ev.reason, opened: this.opened });
    this.ws.onerror = () => {};
  }
  _message(msg) {
    if (this.dead) return;
    [this.lastRx, this.pingSent] = [Date.now(), 0];
    const frame = parseFrame(msg.data);
    if (!frame) return;
    if (frame.type === "hello" && !this.opened) this._hello(frame, 25);
    this.host.frame(this, frame);
  }
  /** App-level ping when quiet for a heartbeat (the browser hides WebSocket pings from JS). */
  _watch() {
    if (this.pingSent && Date.now() - this.pingSent > 10000) {
      this._lost({ code: 4004, reason: "ping timeout", opened: true });
    } else if (!this.pingSent && Date.now() - this.lastRx > this.heartbeatMs) {
      this.pingSent = Date.now();
      this.send({ type: "ping", ref: "p" + ++this.refs });
    }
  }
  /** Subscribe `added` (with their cursors), 64 a frame, and unsubscribe `removed`. */
  sync(added, removed) {
    if (!this.opened) return;
    if (removed.length) this.send({ type: "unsub", ref: "u" + ++this.refs, topics: removed });
    const known = this.host.topics.cursors;
    for (let i = 0; i < added.length; i += 64) {
      const topics = added.slice(i, i + 64);
      const cursors = Object.fromEntries(topics.filter((t) => known.has(t)).map((t) =>
        [t, known.get(t)]));
      this.send({ type: "sub", ref: "s" + ++this.refs, topics, cursors });
    }
  }
  send(frame) {
    if (!this.canSend || this.ws.readyState !== 1) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }
  _teardown() {
    const ws = this.ws;
    if (!ws) return;
    ws.onmessage = ws.onclose = ws.onerror = null;
    if (ws.readyState <= 1) ws.close(1000);
  }
}

/** SSE read with fetch (so the client sees `retry:` and sends a header). One stream carries a
 * fixed topic list; a topic change reopens it from the current cursors. */
export class SseTransport extends Transport {
  kind = "sse";
  open() {
    const topics = this.host.topics.list();
    // Nothing to stream yet: "open" for commands (POST /cmd); a subscribe starts a stream.
    if (!topics.length) return this._markOpen(null);
    const stream = (this.stream = { ctrl: new AbortController() });
    this.helloTimer = setTimeout(() => {
      if (this.stream === stream) this._fail(new Error("no hello"));
    }, this.host.opts.helloTimeoutMs);
    this.lastRx = Date.now();
    this.heartbeatMs ||= 15000;
    this.watchdog ||= setInterval(() => this._watch(), 5000);
    this._run(stream, topics).catch((err) => this.stream === stream && this._fail(err));
  }
  async _run(stream, topics) {
    const response = await this._get("sse", topics, stream.ctrl.signal);
    if (!response.ok) return this._refused(response);
    let closing = null;
    const onBlock = (block) => {
      if (this.stream !== stream) return;
      if (block.retry !== null) this.host.hint(block.retry);
      const frame = block.data ? parseFrame(block.data) : null;
      if (frame?.type === "hello") {
        stream.helloSeen = true;
        this._hello(frame, 15);
      }
      if (frame?.type === "closing") closing = frame;
      if (frame) this.host.frame(this, frame);
    };
    await readSse(response.body, onBlock, () => (this.lastRx = Date.now()));
    if (this.stream !== stream || this.dead) return;
    const { code = 1006, reason = "stream ended" } = closing || {};
    this._lost({ code, reason, opened: this.opened });
  }
  _watch() {
    if (this.stream?.helloSeen && Date.now() - this.lastRx > this.heartbeatMs * 2 + 5000) {
      this._lost({ code: 4004, reason: "heartbeat missed", opened: true });
    }
  }
  /** The topic list changed: reopen the stream (a burst of changes, once). */
  sync() {
    clearTimeout(this.resyncTimer);
    this.resyncTimer = setTimeout(() => {
      this._teardown();
      if (!this.dead) this.open();
    }, 10);
  }
  _teardown() {
    clearTimeout(this.helloTimer);
    this.stream?.ctrl.abort();
    this.stream = null;
  }
}

/** Long-poll: stateless requests carrying the compact cursor. */
export class PollTransport extends Transport {
  kind = "poll";
  open() { this._loop().catch((err) => !this.dead && this._fail(err)); }
  async _loop() {
    while (!this.dead) {
      const topics = this.host.topics.list();
      if (!topics.length && !this.probe) {
        this._markOpen(null);
        if (!this.dead) await new Promise((resolve) => (this.wake = resolve));
        continue;
      }
      const timeout = this.opened ? this.host.opts.pollTimeoutS : 0;
      const ctrl = (this.ctrl = new AbortController());
      const started = Date.now();
      const guard = setTimeout(() => ctrl.abort(), (timeout + 15) * 1000);
      let response, body;
      try {
        response = await this._get("poll", topics, ctrl.signal, `&timeout_s=${timeout}`);
        body = response.ok ? await response.json().catch(() => null) : null;
      } catch (err) {
        if (this.dead || (ctrl.signal.aborted && this.ctrl !== ctrl)) continue; // topics changed
        throw err;
      } finally {
        clearTimeout(guard);
      }
      if (this.dead) return;
      if (!body) return this._refused(response);
      if (this.ctrl !== ctrl) continue;
      const frames = body.frames || [];
      for (const frame of frames) this.host.frame(this, frame);
      // Topics with no position yet start at the tail the gateway gave.
      const slots = String(body.cursor || "").split(",");
      topics.forEach((t, i) => this.host.topics.adopt(t, slots[i]));
      if (!this.opened) this._markOpen(null);
      else if (!frames.length && Date.now() - started < 250) {
        // Back at once with nothing (a gateway shutting down, a proxy cutting it short): pause.
        await new Promise((resolve) => setTimeout(resolve, 1000));
      }
    }
  }
  /** The topic list changed: cut the waiting poll short, or wake the idle loop. */
  sync() { this._teardown(); }
  _teardown() {
    this.ctrl?.abort();
    this.wake?.();
    this.ctrl = this.wake = null;
  }
}

export const TRANSPORT_CLASSES = { ws: WsTransport, sse: SseTransport, poll: PollTransport };
