// The read-API client: bearer token (session storage only), JSON reads, the live
// stream (SSE parsed from a fetch body, since EventSource cannot send a header) and
// downloads (fetched with the token, handed to the browser as a blob).

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

function headers() {
  const t = token() || memoryToken;
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
 * and `onState(connected)` on connect/disconnect. Reconnects after a drop. Returns a
 * function that stops it.
 */
export function stream(query, onEvent, onState) {
  let stopped = false;
  let controller = null;
  let delay = 1000;
  const run = async () => {
    while (!stopped) {
      controller = new AbortController();
      try {
        const response = await fetch(url("/stream", query), {
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
