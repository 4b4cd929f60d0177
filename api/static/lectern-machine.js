/** lectern-machine.js: the Lectern client's connection state machine (states, inputs and
 * effects: docs/pages.md). It owns no socket and no timer, so each transition is tested alone.
 * A transport lost before its first frame is probed for (is the gateway there? then this
 * transport is blocked: one step down); lost after opening, the client backs off. */
import { backoffDelay, closeAction, refusalKind } from "./lectern-core.js";

export class ConnectionMachine {
  constructor(transports, opts, random = Math.random) {
    // opts: baseDelayMs, maxDelayMs, upgradeAfterMs, maxUpgradeAfterMs. `fails` counts the
    // transports lost before their first frame since the last open; `hintMs` is the SSE
    // `retry:`, `retryMs` an HTTP Retry-After (for the next attempt only).
    Object.assign(this, { transports, opts, random, state: "idle", rank: 0, attempt: 0,
      fails: 0, worked: new Set(), opens: 0, switches: 0, lastCode: 0, hintMs: 0, retryMs: 0,
      upgradeDelay: opts.upgradeAfterMs });
  }
  get transport() { return this.transports[this.rank]; }
  /** The status pages see: idle, connecting, open, reconnecting or closed. */
  get status() {
    const connecting = this.opens ? "reconnecting" : "connecting";
    return { waiting: "reconnecting", connecting, probing: connecting }[this.state] || this.state;
  }
  /** Feed one input ({type, ...}); returns the effects. An input that does not apply in the
   * current state (a late probe answer, a timer after a close) returns none. */
  send(input) {
    const handler = this[`on_${input.type}`];
    if (!handler || (this.state === "closed" && input.type !== "start")) return [];
    return handler.call(this, input) || [];
  }
  /** Start, or start again after the gateway stopped the client (a new subscribe, command). */
  on_start() { return this.state === "idle" || this.state === "closed" ? this._connect() : []; }
  on_opened() {
    if (this.state !== "connecting") return [];
    Object.assign(this, { state: "open", opens: this.opens + 1, fails: 0 });
    this.worked.add(this.transport);
    return this.rank ? [{ do: "upgradeIn", ms: this.upgradeDelay }] : [];
  }
  on_stable() { if (this.state === "open") this.attempt = 0; }
  /** The transport ended: {code, reason, opened, http?, retryMs?}. */
  on_lost(info) {
    if (this.state !== "connecting" && this.state !== "open") return [];
    this.lastCode = info.code;
    if (info.retryMs) this.retryMs = info.retryMs;
    const out = [];
    if (info.http) {
      const kind = refusalKind(info.http);
      if (kind === "expired") this.fails += 1;
      const done = this._refused(kind, info.http, out);
      if (done) return done;
    } else {
      const action = closeAction(info.code);
      if (action === "stop") return this._stop(info.code, info.reason);
      if (action === "refresh") out.push({ do: "refresh" });
    }
    if (!info.opened) {
      this.fails += 1;
      this.state = "probing";
      return [...out, { do: "probe" }];
    }
    return [...out, ...this._again(info.reason)];
  }
  /** The probe's answer: {kind: "ok"|"down"|"expired"|"fatal"|"forbidden"|"busy", http?}. */
  on_probed({ kind, http, retryMs }) {
    if (this.state !== "probing") return [];
    const out = [];
    const done = this._refused(kind, http, out);
    if (done) return done;
    if (kind === "busy" && retryMs) this.retryMs = retryMs;
    const blocked = kind === "ok" && (!this.worked.has(this.transport) || this.fails >= 3);
    if (blocked && this.rank < this.transports.length - 1) {
      Object.assign(this, { rank: this.rank + 1, fails: 0, switches: this.switches + 1 });
      return [...out, ...this._connect()];
    }
    return [...out, ...this._again(http ? http.code : "gateway unreachable")];
  }
  on_retry() { return this.state === "waiting" ? this._connect() : []; }
  on_online() {
    if (this.state === "open" || this.state === "idle") return [];
    this.attempt = 0;
    return this._connect();
  }
  on_upgraded({ rank }) {
    if (this.state !== "open" || rank >= this.rank) return [];
    const upgradeDelay = this.opts.upgradeAfterMs;
    Object.assign(this, { rank, upgradeDelay, switches: this.switches + 1 });
    return this._connect();
  }
  on_noUpgrade() {
    if (this.state !== "open" || !this.rank) return [];
    this.upgradeDelay = Math.min(this.upgradeDelay * 2, this.opts.maxUpgradeAfterMs);
    return [{ do: "upgradeIn", ms: this.upgradeDelay }];
  }
  on_hint({ ms }) { this.hintMs = ms; }
  on_close() { return this._stop(1000, "client closed"); }
  /** Shared by HTTP refusals and probe answers; returns the effects when it decided. */
  _refused(kind, http, out) {
    if (kind === "fatal") return this._stop(4500, http.code);
    if (kind === "forbidden") return [{ do: "drop", message: http.message }, ...this._connect()];
    if (kind !== "expired") return null;
    out.push({ do: "refresh" });
    return this.fails <= 2 ? [...out, ...this._connect()] : null;
  }
  /** After a 4002/4003 the fresh token is the fix: no backoff. */
  _again(reason) {
    return closeAction(this.lastCode) === "refresh" ? this._connect() : this._wait(reason);
  }
  _connect() {
    this.state = "connecting";
    return [{ do: "connect" }];
  }
  _wait(reason) {
    const { baseDelayMs, maxDelayMs } = this.opts;
    const jitter = backoffDelay(this.attempt, baseDelayMs, maxDelayMs, this.random);
    // The SSE `retry:` hint applies to SSE; an HTTP Retry-After to the next attempt of any.
    const floor = Math.max(this.transport === "sse" ? this.hintMs : 0, this.retryMs);
    this.retryMs = 0;
    this.attempt += 1;
    this.state = "waiting";
    return [{ do: "wait", ms: floor + jitter, reason }];
  }
  _stop(code, reason) {
    this.state = "closed";
    return [{ do: "stop", code, reason }];
  }
}
