// Notification settings, shared by the student and instructor pages: in-app and email per
// kind, quiet hours (local times in a time zone) and the opt-in daily digest email.
//
// The form is loaded from the API and saved with one PUT per resource; the server validates
// everything again (time format, known time zone, start differs from end), and its error is
// shown next to the Save button rather than losing what the user typed.
import { api, el, fill } from "./app.js";

function browserZone() {
  try {
    return Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
  } catch {
    return "UTC";
  }
}

function checkbox(name, checked, label) {
  return el("input", { type: "checkbox", name, checked, "aria-label": label });
}

/** Render the settings form into `root` (a container element) and wire it up. */
export async function mountNotificationSettings(root) {
  const [prefs, settings] = await Promise.all([
    api("/api/v1/me/notification-prefs"),
    api("/api/v1/me/notification-settings"),
  ]);
  const quiet = settings.quiet_hours;
  const rows = prefs.prefs.map((p) =>
    el(
      "tr",
      { dataset: { kind: p.kind } },
      el("td", {}, p.label),
      el("td", {}, checkbox("in_app", p.in_app, `${p.label}: in the app`)),
      el("td", {}, checkbox("email", p.email, `${p.label}: by email`)),
    ),
  );
  const status = el("p", { class: "muted", role: "status", id: "notify-settings-status" });
  const form = el(
    "form",
    { id: "notify-settings-form" },
    el(
      "table",
      {},
      el("thead", {}, el("tr", {}, el("th", {}, "Kind"), el("th", {}, "In app"), el("th", {}, "Email"))),
      el("tbody", {}, rows),
    ),
    el(
      "div",
      { class: "row" },
      el("label", {}, checkbox("quiet", Boolean(quiet), "Quiet hours"), " Quiet hours from "),
      el("input", { type: "time", name: "quiet_start", value: quiet ? quiet.start : "22:00", "aria-label": "Quiet hours start" }),
      el("span", {}, " to "),
      el("input", { type: "time", name: "quiet_end", value: quiet ? quiet.end : "07:00", "aria-label": "Quiet hours end" }),
    ),
    el(
      "div",
      { class: "row" },
      el("label", {}, "Time zone "),
      el("input", {
        type: "text",
        name: "time_zone",
        maxlength: 64,
        value: settings.time_zone === "UTC" && !quiet && !settings.digest ? browserZone() : settings.time_zone,
        "aria-label": "Time zone",
      }),
    ),
    el(
      "div",
      { class: "row" },
      el("label", {}, checkbox("digest", settings.digest, "Daily digest"), " Daily digest of unread notifications at "),
      el("input", { type: "time", name: "digest_time", value: settings.digest_time, "aria-label": "Digest time" }),
    ),
    el("div", { class: "row" }, el("button", { type: "submit", id: "notify-settings-save" }, "Save"), status),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const q = (name) => form.querySelector(`[name="${name}"]`);
    const body = {
      prefs: [...form.querySelectorAll("tbody tr")].map((tr) => ({
        kind: tr.dataset.kind,
        in_app: tr.querySelector('[name="in_app"]').checked,
        email: tr.querySelector('[name="email"]').checked,
      })),
    };
    const schedule = {
      quiet_hours: q("quiet").checked ? { start: q("quiet_start").value, end: q("quiet_end").value } : null,
      time_zone: q("time_zone").value.trim(),
      digest: q("digest").checked,
      digest_time: q("digest_time").value,
    };
    status.textContent = "Saving…";
    try {
      // The schedule first: it is the part the server may refuse (an unknown time zone), and
      // a refusal then leaves both resources as they were.
      await api("/api/v1/me/notification-settings", { method: "PUT", body: schedule });
      await api("/api/v1/me/notification-prefs", { method: "PUT", body });
      status.textContent = "Saved.";
    } catch (err) {
      status.textContent = `Not saved: ${err.message || err.code || "error"}`;
    }
  });
  fill(root, form);
}
