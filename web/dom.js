// DOM building and formatting. Data only ever reaches the page as text nodes or
// attribute values set through the DOM API: nothing here parses HTML.

/**
 * `h("td", {class: "x", title: "y", onclick: f}, child, ...)`: an element. Children
 * are nodes, strings (as text), numbers, arrays, or null/false (skipped).
 */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  if (attrs) {
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
      else if (k === "class") el.className = v;
      else if (k === "dataset") Object.assign(el.dataset, v);
      else if (k === "value") el.value = v;
      else if (k === "checked" || k === "selected" || k === "open" || k === "disabled") el[k] = Boolean(v);
      else el.setAttribute(k, v === true ? "" : String(v));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.append(c);
    else el.append(document.createTextNode(String(c)));
  }
}

const SVG_NS = "http://www.w3.org/2000/svg";

/** An SVG element; attributes are presentation attributes, not CSS. */
export function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null) continue;
    if (k === "class") el.setAttribute("class", v);
    else el.setAttribute(k, String(v));
  }
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (c instanceof Node) el.append(c);
    else el.append(document.createTextNode(String(c)));
  }
  return el;
}

export function clear(el) {
  while (el.firstChild) el.firstChild.remove();
  return el;
}

export const dash = "—";

export function fmtInt(n) {
  return n === null || n === undefined ? dash : Number(n).toLocaleString();
}

/** `n` and its noun, singular for one ("1 tool call", "2 rounds"). */
export function fmtCount(n, noun) {
  return `${fmtInt(n)} ${noun}${n === 1 ? "" : "s"}`;
}

export function fmtCost(usd) {
  if (usd === null || usd === undefined) return dash;
  if (usd === 0) return "$0";
  if (usd < 0.01) return `$${usd.toFixed(5)}`;
  if (usd < 100) return `$${usd.toFixed(4)}`;
  return `$${usd.toLocaleString(undefined, { maximumFractionDigits: 2 })}`;
}

export function fmtMs(ms) {
  if (ms === null || ms === undefined) return dash;
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(2)} s`;
  return `${(ms / 60_000).toFixed(1)} min`;
}

export function fmtPct(fraction) {
  if (fraction === null || fraction === undefined) return dash;
  return `${(fraction * 100).toFixed(1)} %`;
}

/** The exact time in the browser's time zone. */
export function fmtTime(iso) {
  if (!iso) return dash;
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return d.toLocaleString(undefined, {
    year: "numeric",
    month: "short",
    day: "numeric",
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
    fractionalSecondDigits: 3,
    timeZoneName: "short",
  });
}

/** The clock time to the millisecond, in the browser's time zone: `14:03:22.418`. */
export function fmtClock(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return dash;
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

export function relTime(iso, now = Date.now()) {
  const t = new Date(iso).getTime();
  if (Number.isNaN(t)) return dash;
  const s = Math.round((now - t) / 1000);
  if (s < 5) return "just now";
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  if (s < 30 * 86400) return `${Math.floor(s / 86400)} d ago`;
  return new Date(iso).toLocaleDateString();
}

/** `<time>` with a relative label and the exact local time (milliseconds too) on hover. */
export function when(iso) {
  return h("time", { datetime: iso, title: fmtTime(iso), class: "rel" }, relTime(iso));
}

/**
 * A time inside a run, where relative labels say nothing ("2 min ago" for two rounds
 * 400 ms apart): the clock time to the millisecond and the offset from the run's
 * start, the date and the relative time on hover.
 */
export function whenInRun(iso, runStartMs) {
  const t = new Date(iso).getTime();
  const offset = Number.isFinite(t) && Number.isFinite(runStartMs) ? t - runStartMs : null;
  return h("time", { datetime: iso, title: `${fmtTime(iso)} (${relTime(iso)})`, class: "exact" },
    fmtClock(iso),
    offset !== null ? h("span", { class: "muted offset" }, ` +${fmtMs(offset)}`) : null);
}

const STATUS_LABEL = {
  success: "success",
  failed: "failed",
  timeout: "timeout",
  rate_limited: "rate limited",
  canceled: "canceled",
  unauthorized: "unauthorized",
};

export function badge(status) {
  const key = status || "pending";
  return h("span", { class: `badge badge-${key}` }, STATUS_LABEL[key] || key);
}

/** Text that may be long: the first part, with a button that shows the rest. */
export function longText(text, limit = 1200, cls = "text") {
  const pre = h("pre", { class: cls });
  if (text.length <= limit) {
    pre.textContent = text;
    return pre;
  }
  pre.textContent = `${text.slice(0, limit)}…`;
  const more = h("button", { type: "button", class: "link more" }, `Show all (${text.length.toLocaleString()} characters)`);
  let open = false;
  more.addEventListener("click", () => {
    open = !open;
    pre.textContent = open ? text : `${text.slice(0, limit)}…`;
    more.textContent = open ? "Show less" : `Show all (${text.length.toLocaleString()} characters)`;
  });
  return h("div", { class: "long" }, pre, more);
}

/** JSON pretty-printed as text; a string holding JSON is parsed first. */
export function prettyJson(value) {
  if (typeof value === "string") {
    try {
      return JSON.stringify(JSON.parse(value), null, 2);
    } catch {
      return value;
    }
  }
  return JSON.stringify(value, null, 2);
}

/** Tries to pretty-print text that looks like JSON; other text is returned as is. */
export function maybeJson(text) {
  const t = text.trim();
  if ((t.startsWith("{") && t.endsWith("}")) || (t.startsWith("[") && t.endsWith("]"))) {
    try {
      return JSON.stringify(JSON.parse(t), null, 2);
    } catch {
      return text;
    }
  }
  return text;
}

/** A definition list from [label, value] pairs; values are nodes or text. */
export function facts(pairs) {
  const dl = h("dl", { class: "facts" });
  for (const [k, v] of pairs) {
    if (v === undefined) continue;
    dl.append(h("dt", null, k), h("dd", null, v === null || v === "" ? dash : v));
  }
  return dl;
}

/** `1.5 KB`, `3.2 MB`, `512 B`: a byte count for people (1 KB = 1,024 B). */
export function fmtBytes(n) {
  if (n === null || n === undefined) return dash;
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  if (n < 1024 * 1024 * 1024) return `${(n / (1024 * 1024)).toFixed(1)} MB`;
  return `${(n / (1024 * 1024 * 1024)).toFixed(1)} GB`;
}

/**
 * Copies `text` to the clipboard. The Clipboard API needs a secure context (https or
 * loopback); elsewhere a hidden text area and the copy command do it.
 */
export async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    await navigator.clipboard.writeText(text);
    return;
  }
  const area = h("textarea", { class: "offscreen", readonly: true });
  area.value = text;
  document.body.append(area);
  area.select();
  const copied = document.execCommand("copy");
  area.remove();
  if (!copied) throw new Error("the browser refused to copy");
}

/** A button that copies what `produce()` returns and says so on itself. */
export function copyButton(label, produce, attrs = {}) {
  const button = h("button", { type: "button", class: "copy", ...attrs }, label);
  button.addEventListener("click", async () => {
    try {
      await copyText(produce());
      button.textContent = "Copied";
    } catch (e) {
      button.textContent = `Copy failed: ${e.message}`;
    }
    setTimeout(() => {
      button.textContent = label;
    }, 1500);
  });
  return button;
}

export function errorBox(message) {
  return h("div", { class: "error-box", role: "alert" }, message);
}
