/**
 * What every Lectern page shares: the signed-in session, calls to the JSON API (with token
 * refresh), the gateway client, and DOM helpers that only ever set text (never innerHTML).
 */
import { Lectern } from "./lectern.js";

const STORE = "lectern.session";

export function loadSession() {
  try {
    return JSON.parse(sessionStorage.getItem(STORE) || "null");
  } catch {
    return null;
  }
}

export function saveSession(session) {
  sessionStorage.setItem(STORE, JSON.stringify(session));
}

export function clearSession() {
  sessionStorage.removeItem(STORE);
}

/** Send the visitor to the login page, coming back here afterwards. */
export function toLogin() {
  clearSession();
  const next = location.pathname + location.search;
  location.replace(`/?next=${encodeURIComponent(next)}`);
  return new Promise(() => {}); // the page is going away
}

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message || code);
    this.status = status;
    this.code = code;
  }
}

let refreshing = null;

/** Rotate the refresh token (one request at a time per tab). */
export function refreshTokens() {
  if (!refreshing) {
    refreshing = (async () => {
      const session = loadSession();
      if (!session || !session.refresh_token) throw new ApiError(401, "no_session");
      const response = await fetch("/api/v1/auth/refresh", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ refresh_token: session.refresh_token }),
      });
      const data = await response.json().catch(() => null);
      if (!response.ok || !data) {
        const err = (data && data.error) || {};
        throw new ApiError(response.status, err.code || "refresh_failed", err.message);
      }
      saveSession({ ...session, ...data });
      return data.access_token;
    })().finally(() => {
      refreshing = null;
    });
  }
  return refreshing;
}

/** Call the JSON API. Throws ApiError; an expired access token is refreshed once. With
 * `as: "text"` a successful answer is returned as text (a CSV export). */
export async function api(path, { method = "GET", body, auth = true, as = "json" } = {}) {
  const send = () => {
    const session = loadSession();
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (auth && session) headers.Authorization = `Bearer ${session.access_token}`;
    return fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
  };
  let response = await send();
  if (response.status === 401 && auth) {
    try {
      await refreshTokens();
    } catch {
      return toLogin();
    }
    response = await send();
    if (response.status === 401) return toLogin();
  }
  if (response.status === 204) return null;
  if (as === "text" && response.ok) return response.text();
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    const err = (data && data.error) || {};
    throw new ApiError(response.status, err.code || `http_${response.status}`, err.message);
  }
  return data;
}

let configPromise = null;
export function config() {
  if (!configPromise) configPromise = fetch("/config.json").then((r) => r.json());
  return configPromise;
}

/** Transports the page may use: all, or what `?transport=` asks for (tests, debugging). */
export function transportsFromUrl() {
  const wanted = new URLSearchParams(location.search).get("transport");
  if (wanted === "ws") return ["ws"];
  if (wanted === "sse") return ["sse", "poll"];
  if (wanted === "poll") return ["poll"];
  return ["ws", "sse", "poll"];
}

/** The page's gateway client: tokens from the session, refreshed on 4002/4003. */
export async function gateway(indicator) {
  const { gateway_url: url } = await config();
  const client = new Lectern({
    url,
    transports: transportsFromUrl(),
    getToken: async ({ expired }) => {
      if (expired) {
        try {
          return await refreshTokens();
        } catch {
          return toLogin();
        }
      }
      const session = loadSession();
      return session ? session.access_token : toLogin();
    },
  });
  if (indicator) showConnection(client, indicator);
  client.on("state", (s) => {
    if (s.status === "closed" && s.code >= 4500) toLogin();
  });
  window.lectern = client; // for the console and the browser tests
  return client;
}

/**
 * Follow `handlers` (topic -> event handler) with no gap between the page's data and its events:
 * take each topic's current position first, then `load()` the data from the API, then subscribe
 * from those positions. A `reset` (history no longer reaches back) reloads and resumes from the
 * position taken before that reload. A failed first load shows `what` in #load-error.
 */
export async function follow(client, handlers, load, what) {
  const topics = Object.keys(handlers);
  const cursors = await client.tails(topics).catch(() => ({}));
  try {
    await load();
  } catch (err) {
    $("#load-error").textContent = `Could not load ${what} (${err.code || err.message}).`;
  }
  const onReset = async (topic) => {
    const fresh = await client.tails([topic]).catch(() => ({}));
    await load();
    return fresh[topic];
  };
  for (const topic of topics) {
    client.subscribe(topic, handlers[topic], { cursor: cursors[topic], onReset });
  }
}

const TRANSPORT_NAMES = { ws: "WebSocket", sse: "SSE fallback", poll: "long-poll fallback" };

/** Keep `node` showing the connection: connected / reconnecting / transport name. */
export function showConnection(client, node) {
  const render = (state) => {
    node.dataset.status = state.status;
    node.dataset.transport = state.transport;
    const name = TRANSPORT_NAMES[state.transport] || state.transport;
    const text = {
      idle: "not connected",
      connecting: `connecting (${name})`,
      open: `live · ${name}`,
      reconnecting: "reconnecting…",
      closed: "disconnected",
    }[state.status];
    node.textContent = text || state.status;
    node.title = state.reason ? `last close: ${state.reason}` : "";
  };
  render(client.state);
  client.on("state", render);
}

/** The signed-in user, or off to the login page. */
export async function requireUser() {
  const session = loadSession();
  if (!session || !session.access_token) return toLogin();
  if (!session.me) {
    session.me = await api("/api/v1/me");
    saveSession({ ...loadSession(), me: session.me });
  }
  return session.me;
}

export async function logout() {
  try {
    await api("/api/v1/auth/logout", { method: "POST" });
  } catch {
    // signed out locally all the same
  }
  clearSession();
  location.replace("/");
}

// -- DOM ------------------------------------------------------------------------------------

/**
 * `el("li", {class: "x", onclick: fn, dataset: {id: 3}}, "text", child)`: children are nodes
 * or strings, and strings always become text nodes, so user text can never become markup.
 */
export function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key === "style") Object.assign(node.style, value); // CSSOM: allowed by the CSP
    else if (key.startsWith("on") && typeof value === "function") {
      node.addEventListener(key.slice(2), value);
    } else node.setAttribute(key, value === true ? "" : String(value));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
}

/** Replace the children of `node`. */
export function fill(node, ...children) {
  node.replaceChildren();
  append(node, children);
  return node;
}

export const $ = (selector, root = document) => root.querySelector(selector);

let toastTimer = null;
export function toast(text) {
  let node = $(".toast");
  if (!node) {
    node = el("div", { class: "toast", role: "status" });
    document.body.append(node);
  }
  node.textContent = text;
  node.classList.remove("hidden");
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => node.classList.add("hidden"), 4000);
}

/** Run `fn`; show its failure as a toast instead of an unhandled rejection. */
export async function attempt(fn) {
  try {
    return await fn();
  } catch (err) {
    toast(`${err.code || "error"}: ${err.message || ""}`);
    return undefined;
  }
}

/** A timestamp for people: the time alone when it is today, else date and time. */
export function when(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return "";
  const time = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  if (d.toDateString() === new Date().toDateString()) return time;
  return `${d.toLocaleDateString([], { month: "short", day: "numeric" })}, ${time}`;
}

export function pct(value) {
  return `${Math.round(Number(value) || 0)}%`;
}

/** The page's cohort: `?cohort=`, else the first of the user's cohorts of `kind`. */
export function pickCohort(me, kinds) {
  const wanted = Number(new URLSearchParams(location.search).get("cohort"));
  const mine = me.cohorts.filter((c) => kinds.includes(c.kind) || me.role === "admin");
  return mine.find((c) => c.id === wanted) || mine[0] || null;
}

/** A <select> that reloads the page on another cohort. */
export function cohortPicker(me, kinds, current) {
  const mine = me.cohorts.filter((c) => kinds.includes(c.kind) || me.role === "admin");
  if (mine.length < 2) return el("span", { class: "muted" }, current ? current.title : "");
  const select = el(
    "select",
    {
      "aria-label": "Cohort",
      onchange: (e) => {
        const url = new URL(location.href);
        url.searchParams.set("cohort", e.target.value);
        location.assign(url);
      },
    },
    mine.map((c) =>
      el("option", { value: c.id, selected: current && c.id === current.id }, c.title),
    ),
  );
  return select;
}
