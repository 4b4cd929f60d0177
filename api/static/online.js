// Who is online in the cohort, on the instructor dashboard: the list the dashboard route gives
// on load (`online`, `online_version`), then the `online` events of `staff:{cohort}`. Each
// carries the whole list with a version; an older version than the one shown is ignored (two
// gateways may publish their changes in either order). Names are rendered as text only.
import { el, fill } from "./app.js";

/**
 * `node`: the list's container; `person(userId)` gives `{name, kind}` of a cohort member or
 * staff (from the enrollments the page loaded). Returns `{load(board), event(data)}`.
 */
export function onlinePanel(node, person) {
  let version = -1;
  let users = [];

  function render() {
    const people = users
      .map((id) => ({ id, ...person(id) }))
      .sort((a, b) => a.name.localeCompare(b.name));
    fill(
      node,
      el("h3", {}, "Online now ", el("span", { id: "online-count", class: "muted" }, `${people.length}`)),
      people.length
        ? el(
            "ul",
            { id: "online-list", class: "plain online" },
            people.map((p) =>
              el(
                "li",
                { dataset: { user: p.id, kind: p.kind } },
                el("span", { class: "dot", "aria-hidden": "true" }),
                p.name,
                p.kind === "staff" ? el("span", { class: "muted" }, " (staff)") : null,
              ),
            ),
          )
        : el("p", { id: "online-list", class: "muted" }, "Nobody is connected right now."),
    );
  }

  return {
    /** The dashboard route's answer (a version of -1 means Redis could not say). */
    load(board) {
      if (board.online_version === undefined || board.online_version < version) return;
      version = board.online_version;
      users = (board.online || []).map((p) => p.user_id);
      render();
    },
    /** An `online` event. */
    event(data) {
      if (typeof data.version !== "number" || data.version < version) return;
      version = data.version;
      users = Array.isArray(data.users) ? data.users : [];
      render();
    },
  };
}
