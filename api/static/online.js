// Who is online in the cohort, on the instructor dashboard: the list the dashboard route gives
// on load (`online`, `online_version`), then the `online` events of `staff:{cohort}`, each a
// change (`online`: ids who came, `offline`: ids who went) with the version it leads to.
// Version N + 1 applies on top of N; one not newer than the list is ignored (two gateways may
// publish in either order); after a gap the change is applied and the list is reloaded.
// Names are rendered as text only.
import { el, fill } from "./app.js";

/**
 * `node`: the panel; `person(userId)` gives `{name, kind}` of a cohort member or staff (from
 * the enrollments the page loaded); `reload()` fetches the dashboard again and hands it to
 * `load`. Returns `{load(board), event(data)}`.
 */
export function onlinePanel(node, person, reload) {
  let version = -1;
  let users = new Set();
  let reloading = null;

  function render() {
    const people = [...users]
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

  function catchUp() {
    if (reloading) return;
    reloading = setTimeout(() => {
      reloading = null;
      Promise.resolve(reload()).catch(() => {});
    }, 300);
  }

  return {
    /** The dashboard route's answer (a version of -1 means Redis could not say). */
    load(board) {
      const v = board.online_version;
      if (typeof v !== "number" || v < version) return; // -1 (unknown) keeps what is shown
      version = v;
      users = new Set((board.online || []).map((p) => p.user_id));
      render();
    },
    /** An `online` event. */
    event(data) {
      if (typeof data.version !== "number" || data.version <= version) return;
      if (data.version !== version + 1) catchUp(); // a change went missing or comes later
      version = data.version;
      for (const id of data.offline || []) users.delete(id);
      for (const id of data.online || []) users.add(id);
      render();
    },
    /** Render again (names arrived). */
    render,
  };
}
