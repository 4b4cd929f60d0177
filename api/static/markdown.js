/**
 * A small, strict Markdown subset for lesson bodies, rendered straight to DOM nodes.
 *
 * Safety: nothing here ever parses HTML. Every piece of the source ends up as a text node or
 * as an element this module creates itself, so `<script>` or `"><img onerror=…>` in a lesson
 * is shown as the characters it is. Links keep only `http:`, `https:` and relative targets
 * (`/path`, `#id`, `page.html`); any other scheme (`javascript:`, `data:`, `vbscript:`) makes
 * the link plain text. Links open with `rel="noopener noreferrer"`.
 *
 * Blocks: `#`–`######` headings, paragraphs (lines joined), `-`/`*`/`+` and `1.` lists,
 * `>` quotes, fenced code (```), `---` rules. Inline: `` `code` ``, `**bold**`, `*em*` /
 * `_em_`, `[text](url)`, and `\` escaping the next punctuation character.
 */

const SAFE_SCHEME = /^(https?:)?\/\//i;
const ANY_SCHEME = /^[a-z][a-z0-9+.-]*:/i;

/** The link target when it is http(s) or relative, else null. Control characters and spaces
 * (which browsers strip, turning `java\tscript:` into `javascript:`) disqualify a target. */
export function safeHref(raw) {
  const url = raw.trim();
  if (!url || /[\u0000-\u0020\u007f]/.test(url)) return null;
  if (SAFE_SCHEME.test(url)) return url;
  if (ANY_SCHEME.test(url)) return null;
  return url;
}

function node(tag, children = [], attrs = {}) {
  const n = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
  for (const c of children) n.append(c);
  return n;
}

/** Inline spans of one line (or joined paragraph) as an array of nodes and strings. */
export function inline(text) {
  const out = [];
  let plain = "";
  const flush = () => {
    if (plain) out.push(plain);
    plain = "";
  };
  let i = 0;
  while (i < text.length) {
    const ch = text[i];
    const rest = text.slice(i);
    if (ch === "\\" && i + 1 < text.length && /[!-/:-@[-`{-~]/.test(text[i + 1])) {
      plain += text[i + 1];
      i += 2;
      continue;
    }
    if (ch === "`") {
      const end = text.indexOf("`", i + 1);
      if (end > i + 1) {
        flush();
        out.push(node("code", [text.slice(i + 1, end)]));
        i = end + 1;
        continue;
      }
    }
    if (rest.startsWith("**")) {
      const end = text.indexOf("**", i + 2);
      if (end > i + 2) {
        flush();
        out.push(node("strong", inline(text.slice(i + 2, end))));
        i = end + 2;
        continue;
      }
    }
    if (ch === "*" || ch === "_") {
      const end = text.indexOf(ch, i + 1);
      if (end > i + 1 && text[i + 1] !== " ") {
        flush();
        out.push(node("em", inline(text.slice(i + 1, end))));
        i = end + 1;
        continue;
      }
    }
    if (ch === "[") {
      const link = /^\[([^\]]+)\]\(([^()\s]*)\)/.exec(rest);
      if (link) {
        flush();
        const href = safeHref(link[2]);
        const label = inline(link[1]);
        out.push(
          href === null
            ? node("span", label, { class: "unsafe-link" })
            : node("a", label, { href, rel: "noopener noreferrer", target: "_blank" }),
        );
        i += link[0].length;
        continue;
      }
    }
    plain += ch;
    i += 1;
  }
  flush();
  return out;
}

const LIST_ITEM = /^\s{0,3}([-*+]|\d{1,9}[.)])\s+(.*)$/;

/** Render `source` (a lesson body) into a DocumentFragment. */
export function renderMarkdown(source) {
  const lines = String(source || "").replace(/\r\n?/g, "\n").split("\n");
  const frag = document.createDocumentFragment();
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (!line.trim()) {
      i += 1;
      continue;
    }
    if (/^\s{0,3}```/.test(line)) {
      const code = [];
      i += 1;
      while (i < lines.length && !/^\s{0,3}```/.test(lines[i])) code.push(lines[i++]);
      i += 1; // the closing fence (or the end)
      frag.append(node("pre", [node("code", [code.join("\n")])]));
      continue;
    }
    const heading = /^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$/.exec(line);
    if (heading) {
      frag.append(node(`h${heading[1].length}`, inline(heading[2])));
      i += 1;
      continue;
    }
    if (/^\s{0,3}([-*_])(\s*\1){2,}\s*$/.test(line)) {
      frag.append(node("hr"));
      i += 1;
      continue;
    }
    if (/^\s{0,3}>/.test(line)) {
      const quoted = [];
      while (i < lines.length && /^\s{0,3}>/.test(lines[i])) {
        quoted.push(lines[i++].replace(/^\s{0,3}>\s?/, ""));
      }
      frag.append(node("blockquote", [renderMarkdown(quoted.join("\n"))]));
      continue;
    }
    const item = LIST_ITEM.exec(line);
    if (item) {
      const ordered = /\d/.test(item[1]);
      const items = [];
      while (i < lines.length) {
        const m = LIST_ITEM.exec(lines[i]);
        if (!m || /\d/.test(m[1]) !== ordered) break;
        items.push(node("li", inline(m[2])));
        i += 1;
      }
      frag.append(node(ordered ? "ol" : "ul", items));
      continue;
    }
    const para = [];
    while (
      i < lines.length &&
      lines[i].trim() &&
      !/^\s{0,3}(```|#{1,6}\s|>)/.test(lines[i]) &&
      !LIST_ITEM.test(lines[i])
    ) {
      para.push(lines[i++].trim());
    }
    frag.append(node("p", inline(para.join(" "))));
  }
  return frag;
}
