// The login page: email + password -> tokens in sessionStorage -> the user's home page.
import { $, ApiError, api, loadSession, saveSession } from "./app.js";
import { safeNext } from "./redirect.js";

function home(me) {
  const next = safeNext(new URLSearchParams(location.search).get("next"), location.origin);
  if (next) return next;
  const staff = me.role !== "student" && me.cohorts.some((c) => c.kind === "staff");
  return staff || me.role === "admin" ? "/instructor" : "/student";
}

async function signIn(event) {
  event.preventDefault();
  const error = $("#login-error");
  const button = $("#login-button");
  error.textContent = "";
  button.disabled = true;
  try {
    const tokens = await api("/api/v1/auth/login", {
      method: "POST",
      auth: false,
      body: { email: $("#email").value.trim(), password: $("#password").value },
    });
    saveSession(tokens);
    const me = await api("/api/v1/me");
    saveSession({ ...loadSession(), me });
    location.assign(home(me));
  } catch (err) {
    error.textContent =
      err instanceof ApiError && err.status === 401
        ? "Wrong email or password."
        : `Could not sign in (${err.code || err.message}).`;
    button.disabled = false;
  }
}

$("#login-form").addEventListener("submit", signIn);
const existing = loadSession();
if (existing && existing.me && !new URLSearchParams(location.search).get("next")) {
  location.replace(home(existing.me));
}
