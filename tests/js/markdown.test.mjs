// safeHref (api/static/markdown.js): a lesson link is a link only for http(s) and relative
// targets; every other scheme, however spelled, leaves the label as plain text.
import assert from "node:assert/strict";
import { test } from "node:test";

import { safeHref } from "../../api/static/markdown.js";

test("http(s) and relative targets are kept", () => {
  for (const url of ["https://example.com/a?b=1#c", "HTTP://example.com", "//cdn.example/x", "/student", "#part-2", "notes.html", "?q=1"]) {
    assert.equal(safeHref(url), url);
  }
  assert.equal(safeHref("  /student  "), "/student");
});

test("other schemes and smuggled ones are refused", () => {
  for (const url of [
    "javascript:alert(1)",
    "JaVaScRiPt:alert(1)",
    "vbscript:msgbox",
    "data:text/html,<script>alert(1)</script>",
    "java\tscript:alert(1)",
    "java\nscript:alert(1)",
    "\u0001javascript:alert(1)",
    "file:///etc/passwd",
    "mailto:a@b.c",
    "",
    "   ",
  ]) {
    assert.equal(safeHref(url), null, JSON.stringify(url));
  }
});
