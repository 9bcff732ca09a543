// The read-API client: bearer token (session storage only), JSON reads, the live
// stream (SSE parsed from a fetch body, since EventSource cannot send a header; one
// connection shared by the tabs that follow the same stream, none while a tab is
// hidden) and downloads (fetched with the token, handed to the browser as a blob).

const TOKEN_KEY = "llmtap.token";

export class Unauthorized extends Error {}

export class ApiError extends Error {
  constructor(status, type, message) {
    super(message || `HTTP ${status}`);
    this.status = status;
    this.type = type;
  }
}

export function token() {
  try {
    return sessionStorage.getItem(TOKEN_KEY);
  } catch {
    return null;
  }
}

export function setToken(value) {
  try {
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    // Storage may be disabled; the token then lives for this page load only.
  }
  memoryToken = value || null;
}

let memoryToken = null;

function currentToken() {
  return token() || memoryToken;
}

/** Whether a token was given (kept in session storage, or for this load only). */
export function hasToken() {
  return Boolean(currentToken());
}

function headers() {
  const t = currentToken();
  return t ? { Authorization: `Bearer ${t}` } : {};
}

/**
 * An id as a path segment. `@` stays as is: a tenant's client-chosen ids are stored
 * as `id@tenant`, and the API matches path segments as sent.
 */
export function pathId(id) {
  return encodeURIComponent(id).replace(/%40/g, "@");
}

/** `/api/v1` + path with the given query (an object or URLSearchParams). */
export function url(path, query) {
  const q = query instanceof URLSearchParams ? query : new URLSearchParams();
  if (query && !(query instanceof URLSearchParams)) {
    for (const [k, v] of Object.entries(query)) {
      if (v !== undefined && v !== null && v !== "") q.set(k, String(v));
    }
  }
  const s = q.toString();
  return `/api/v1${path}${s ? `?${s}` : ""}`;
}

async function failure(response) {
  if (response.status === 401) return new Unauthorized("token required");
  let type = "http";
  let message = `HTTP ${response.status}`;
  try {
    const body = await response.json();
    type = body?.error?.type || type;
    message = body?.error?.message || message;
  } catch {
    // Not JSON: keep the status line.
  }
  return new ApiError(response.status, type, message);
}

export async function get(path, query, signal) {
  const response = await fetch(url(path, query), { headers: headers(), signal });
  if (!response.ok) throw await failure(response);
  return response.json();
}

/** `path?query` fetched with the token, as a Blob (an attachment to preview). */
export async function blob(path, query) {
  const response = await fetch(url(path, query), { headers: headers() });
  if (!response.ok) throw await failure(response);
  return response.blob();
}

/** Downloads `path?query` as a file named `filename`, with the token. */
export async function download(path, query, filename) {
  const response = await fetch(url(path, query), { headers: headers() });
  if (!response.ok) throw await failure(response);
  const blob = await response.blob();
  const href = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = href;
  a.download = filename;
  a.rel = "noopener";
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(href), 60_000);
}

/**
 * Follows `/stream` with the given filters; calls `onEvent(name, data)` for each event
 * and `onState(connected)` on connect/disconnect, and `onResume()` when the tab shows
 * again after it was hidden or restored from the back/forward cache (events of that
 * time were not followed: read again). Returns a function that stops it.
 *
 * A browser opens at most six HTTP/1.1 connections to a host, and each stream holds
 * one for good: so a tab follows no stream while it is hidden, and the tabs of one
 * browser that follow the same stream with the same token share one connection. One
 * tab, the leader, holds a Web Lock named after the stream and reads it, and passes
 * each event on over a BroadcastChannel of the same name; the others listen there
 * and wait for the lock, so one of them reads on when the leader goes away.
 */
export function stream(query, onEvent, onState, { onResume } = {}) {
  const path = url("/stream", query);
  let stopped = false;
  let active = null; // stops the current connection or membership
  let generation = 0;
  let away = false;

  const start = async () => {
    const mine = ++generation;
    const stop = await follow(path, onEvent, onState);
    if (stopped || mine !== generation) stop();
    else active = stop;
  };
  const halt = () => {
    generation += 1;
    if (active) active();
    active = null;
  };
  const onVisibility = () => {
    if (stopped) return;
    if (document.visibilityState === "hidden") {
      away = true;
      halt();
      onState(false);
    } else if (away) {
      away = false;
      start();
      if (onResume) onResume();
    }
  };
  document.addEventListener("visibilitychange", onVisibility);
  if (document.visibilityState === "hidden") away = true;
  else start();
  return () => {
    stopped = true;
    document.removeEventListener("visibilitychange", onVisibility);
    halt();
  };
}

const sharing = typeof navigator !== "undefined" && navigator.locks && typeof BroadcastChannel === "function"
  && typeof crypto !== "undefined" && crypto.subtle;

/** Starts following `path`, shared with other tabs when the browser can; resolves to a stop function. */
async function follow(path, onEvent, onState) {
  if (!sharing) return connect(path, onEvent, onState);
  let name;
  try {
    // Named by the token too (hashed: names are visible to the origin's other tabs),
    // since tokens of different roles or tenants see different events.
    const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(`${currentToken() || ""}\n${path}`));
    name = `llmtap-stream-${[...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("")}`;
  } catch {
    return connect(path, onEvent, onState);
  }
  const channel = new BroadcastChannel(name);
  const waiting = new AbortController();
  let leading = false;
  let leaderOn = false;
  let stopConnection = null;
  let release = null;
  channel.onmessage = (message) => {
    const m = message.data || {};
    if (leading) {
      // A tab that joins asks whether the stream is connected.
      if (m.type === "hello") channel.postMessage({ type: "state", on: leaderOn });
      return;
    }
    if (m.type === "event") onEvent(m.name, m.data);
    else if (m.type === "state") onState(m.on);
  };
  channel.postMessage({ type: "hello" });
  navigator.locks.request(name, { signal: waiting.signal }, () => new Promise((resolve) => {
    leading = true;
    release = resolve;
    stopConnection = connect(path, (event, data) => {
      onEvent(event, data);
      channel.postMessage({ type: "event", name: event, data });
    }, (on) => {
      leaderOn = on;
      onState(on);
      channel.postMessage({ type: "state", on });
    });
  })).catch(() => {
    // Stopped while waiting for the lock.
  });
  return () => {
    waiting.abort();
    if (stopConnection) stopConnection();
    if (release) release();
    channel.close();
  };
}

/** One tab's own connection to `path`, reconnecting after a drop; returns a stop function. */
function connect(path, onEvent, onState) {
  let stopped = false;
  let controller = null;
  let delay = 1000;
  const run = async () => {
    while (!stopped) {
      controller = new AbortController();
      try {
        const response = await fetch(path, {
          headers: headers(),
          signal: controller.signal,
        });
        if (!response.ok) throw await failure(response);
        onState(true);
        delay = 1000;
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value;
          let cut;
          while ((cut = buffer.indexOf("\n\n")) >= 0) {
            const block = buffer.slice(0, cut);
            buffer = buffer.slice(cut + 2);
            let name = "message";
            const data = [];
            for (const line of block.split("\n")) {
              if (line.startsWith("event: ")) name = line.slice(7);
              else if (line.startsWith("data: ")) data.push(line.slice(6));
            }
            if (data.length) {
              try {
                onEvent(name, JSON.parse(data.join("\n")));
              } catch {
                // A malformed event is skipped; the next one is read.
              }
            }
          }
        }
      } catch (e) {
        if (stopped || e.name === "AbortError") return;
        if (e instanceof Unauthorized) {
          onState(false);
          return;
        }
      }
      if (stopped) return;
      onState(false);
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 30_000);
    }
  };
  run();
  return () => {
    stopped = true;
    if (controller) controller.abort();
  };
}
