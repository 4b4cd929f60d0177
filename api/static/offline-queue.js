// Operations recorded while offline, kept in IndexedDB (one database per user) and sent to
// `POST /api/v1/sync` when the browser is back online (docs/api.md, "Offline sync").
//
// Guarantees: an operation leaves the queue only after the server answered for it, so a flush
// cut short is simply repeated; every operation carries an idempotency key, so the repeat
// applies nothing twice on the server. Queuing an operation under a key already queued replaces
// it (completing the same lesson twice offline is one operation).
import { api } from "./app.js";

const STORE = "ops";
const BATCH = 100; // the server's limit per request

let userId = null;
let flushing = null;

function open() {
  return new Promise((resolve, reject) => {
    const request = indexedDB.open(`lectern-offline-${userId}`, 1);
    request.onupgradeneeded = () => request.result.createObjectStore(STORE, { keyPath: "key" });
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

async function inStore(mode, fn) {
  const db = await open();
  try {
    return await new Promise((resolve, reject) => {
      const tx = db.transaction(STORE, mode);
      const result = fn(tx.objectStore(STORE));
      tx.oncomplete = () => resolve(result && "result" in result ? result.result : undefined);
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error);
    });
  } finally {
    db.close();
  }
}

/** Queue `op` (`{type, key, ...}`); its `client_ts` is now. */
export async function enqueue(op) {
  const entry = { ...op, client_ts: new Date().toISOString(), queued_at: Date.now() };
  await inStore("readwrite", (store) => store.put(entry));
}

/** The queued operations, oldest first. */
export async function pending() {
  const all = (await inStore("readonly", (store) => store.getAll())) || [];
  return all.sort((a, b) => a.queued_at - b.queued_at);
}

/** Send the queue; resolves to the server's results (empty when nothing was queued). At most
 * one flush runs at a time: a second call shares the running one. */
export function flush() {
  if (!flushing) {
    flushing = (async () => {
      const results = [];
      const ops = await pending();
      for (let i = 0; i < ops.length; i += BATCH) {
        const batch = ops.slice(i, i + BATCH).map(({ queued_at, ...op }) => op);
        const answer = await api("/api/v1/sync", { method: "POST", body: { operations: batch } });
        await inStore("readwrite", (store) => {
          for (const r of answer.results) store.delete(r.key);
        });
        results.push(...answer.results);
      }
      return results;
    })().finally(() => {
      flushing = null;
    });
  }
  return flushing;
}

/** Whether `err` is the browser failing to reach the server (as opposed to an answer). */
export function unreachable(err) {
  return !navigator.onLine || err instanceof TypeError;
}

/** Use the queue of user `id`: flush now and whenever the browser comes back online, passing
 * the results to `onResults`. */
export function startOfflineQueue(id, onResults) {
  userId = id;
  const run = () =>
    flush()
      .then((results) => results.length && onResults(results))
      .catch(() => {}); // still unreachable: the next "online" event tries again
  window.addEventListener("online", run);
  run();
}
