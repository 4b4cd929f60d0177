// The cohort's announcements as the student and instructor dashboards both show them in
// `#announcement-list`: loaded with the page, kept current by `announcement.new` (an
// announcement the instructor just posted may arrive both ways: shown once).
import { $, api, el, fill, when } from "./app.js";

/** The list; `empty` is the line shown when there are none (none shown when not given). */
export function announcementList(empty) {
  let items = [];
  const render = () =>
    fill(
      $("#announcement-list"),
      items.length || !empty
        ? items.map((a) =>
            el(
              "li",
              { dataset: { id: a.id } },
              el("h3", { class: "body" }, a.title),
              a.body ? el("p", { class: "body" }, a.body) : null,
              el("p", { class: "muted" }, a.author_name || "", " · ", when(a.created_at)),
            ),
          )
        : el("li", { class: "muted" }, empty),
    );
  return {
    async load(cohortId) {
      items = await api(`/api/v1/cohorts/${cohortId}/announcements`);
      render();
    },
    add(announcement) {
      if (items.some((a) => a.id === announcement.id)) return;
      items.unshift(announcement);
      render();
    },
  };
}
