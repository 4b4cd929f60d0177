/**
 * Where a page may send the browser after signing in: a path on this origin, or nowhere.
 * Pure (no DOM), so tests/js/redirect.test.mjs checks it under Node.
 */

// Browsers read "\" as "/" and drop tabs and newlines inside URLs, so "/\evil.example" and
// "/\t/evil.example" both mean "//evil.example", another site. Such input is refused outright.
const UNSAFE = /[\\\u0000-\u001f\u007f]/;

/**
 * `next` as a same-origin path ("/live?session=3"), or null when it is missing, not a path
 * starting with a single "/", or would resolve to any other origin.
 */
export function safeNext(next, origin) {
  if (typeof next !== "string" || !next.startsWith("/") || next.startsWith("//")) return null;
  if (UNSAFE.test(next)) return null;
  let url;
  try {
    url = new URL(next, origin);
  } catch {
    return null;
  }
  // "/.//evil.example" resolves to the path "//evil.example": same origin here, but as the
  // next location it is protocol-relative, another site.
  if (url.origin !== new URL(origin).origin || url.pathname.startsWith("//")) return null;
  return url.pathname + url.search + url.hash;
}
