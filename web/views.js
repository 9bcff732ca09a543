// The Sessions, Agents, Stats and Rate limits views.

import * as api from "./api.js";
import { pathId } from "./api.js";
import { h, clear, fmtInt, fmtCost, fmtMs, fmtPct, fmtTime, when, badge, errorBox, dash } from "./dom.js";
import { barChart, timeChart } from "./chart.js";

function table(columns, rows, cls) {
  return h("div", { class: "table-wrap" }, h("table", { class: cls },
    h("thead", null, h("tr", null, columns.map(([label, num]) => h("th", { scope: "col", class: num ? "num" : null }, label)))),
    h("tbody", null, rows)));
}

function failed(main, e, ctx) {
  if (e instanceof api.Unauthorized) return ctx.signedOut();
  main.append(errorBox(e.message));
}

function span(first, last) {
  const ms = new Date(last).getTime() - new Date(first).getTime();
  return Number.isFinite(ms) ? fmtMs(ms) : dash;
}

// Sessions.

export function sessionsView(main, params, ctx) {
  const id = params.get("session");
  if (id) return sessionDetail(main, id, ctx);
  const state = { cursors: [], cursor: null, offset: 0 };
  const body = h("div");
  // Filters: days active (UTC, both inclusive), agent, model; kept in the address.
  const field = (label, input) => h("label", { class: "field" }, h("span", null, label), input);
  const input = (name, type, placeholder) =>
    h("input", { name, type, placeholder, value: params.get(name) || "", autocomplete: "off" });
  const form = h("form", { class: "filters session-filters" },
    field("From (UTC day)", input("from", "date")),
    field("To (UTC day)", input("to", "date")),
    field("Agent", input("agent", "search", "any")),
    field("Model", input("model", "search", "any")),
    h("div", { class: "filter-actions" }, h("button", { type: "button", class: "link", id: "clear-session-filters" }, "Clear")));
  const apply = () => {
    const p = new URLSearchParams({ view: "sessions" });
    for (const el of form.querySelectorAll("input[name]")) if (el.value.trim()) p.set(el.name, el.value.trim());
    ctx.setParams(p);
    state.cursors = [];
    state.cursor = null;
    state.offset = 0;
    load();
  };
  form.addEventListener("change", apply);
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    apply();
  });
  form.querySelector("#clear-session-filters").addEventListener("click", () => {
    for (const el of form.querySelectorAll("input")) el.value = "";
    apply();
  });
  main.append(h("h2", null, "Sessions"), form, body);
  let alive = true;
  // The API's `to` is exclusive: the day after the last day asked for.
  const dayAfter = (day) => {
    const d = new Date(`${day}T00:00:00Z`);
    if (Number.isNaN(d.getTime())) return null;
    return new Date(d.getTime() + 86400_000).toISOString().slice(0, 10);
  };
  async function load() {
    const filters = ctx.params();
    const q = {
      limit: 20,
      cursor: state.cursor,
      from: filters.get("from"),
      to: filters.get("to") ? dayAfter(filters.get("to")) : null,
      agent: filters.get("agent"),
      model: filters.get("model"),
    };
    let page;
    try {
      page = await api.get("/sessions", q);
    } catch (e) {
      return failed(clear(body), e, ctx);
    }
    if (!alive) return;
    const rows = page.items.map((x) => {
      const tr = h("tr", { class: "session", tabindex: "0" },
        h("td", null, h("a", { href: `/?view=sessions&session=${encodeURIComponent(x.id)}` }, x.subject || x.id)),
        h("td", null, x.agent || dash),
        h("td", { class: "num" }, fmtInt(x.calls)),
        h("td", { class: "num" }, `${fmtInt(x.input_tokens)} / ${fmtInt(x.output_tokens)}`),
        h("td", { class: "num" }, fmtCost(x.cost_usd)),
        h("td", null, when(x.first_at), " → ", when(x.last_at)),
        h("td", { class: "num" }, span(x.first_at, x.last_at)));
      tr.querySelector("a").addEventListener("click", (e) => {
        e.preventDefault();
        ctx.setParams(new URLSearchParams({ view: "sessions", session: x.id }), { render: true });
      });
      return tr;
    });
    const total = page.total_is_lower_bound ? `more than ${fmtInt(page.total)}` : fmtInt(page.total);
    const prev = h("button", { type: "button", disabled: !state.cursors.length }, "← Newer");
    const next = h("button", { type: "button", disabled: !page.next_cursor }, "Older →");
    prev.addEventListener("click", () => {
      state.cursor = state.cursors.pop() ?? null;
      state.offset = Math.max(0, state.offset - 20);
      load();
    });
    next.addEventListener("click", () => {
      state.cursors.push(state.cursor);
      state.cursor = page.next_cursor;
      state.offset += page.items.length;
      load();
    });
    clear(body).append(
      page.items.length
        ? table([["Subject"], ["Agent"], ["Calls", 1], ["Tokens in / out", 1], ["Cost", 1], ["Time span"], ["Duration", 1]], rows, "sessions")
        : h("p", { class: "muted" }, [...form.querySelectorAll("input")].some((el) => el.value)
          ? "No session matches these filters."
          : "No sessions yet: send x-llmtap-session-id with a conversation's calls, or let llmtap group them by conversation."),
      h("div", { class: "pager" },
        h("span", null, page.items.length ? `Showing ${fmtInt(state.offset + 1)} to ${fmtInt(state.offset + page.items.length)} of ${total}` : ""),
        h("span", { class: "pager-buttons" }, prev, next)));
  }
  load();
  return () => {
    alive = false;
  };
}

function sessionDetail(main, id, ctx) {
  const head = h("div");
  const body = h("div");
  const back = h("a", { href: "/?view=sessions" }, "← All sessions");
  back.addEventListener("click", (e) => {
    e.preventDefault();
    ctx.setParams(new URLSearchParams({ view: "sessions" }), { render: true });
  });
  main.append(back, head, body);
  let alive = true;
  async function load() {
    let s;
    try {
      s = await api.get(`/sessions/${pathId(id)}`, { conversation: "true" });
    } catch (e) {
      return failed(clear(body), e, ctx);
    }
    if (!alive) return;
    clear(head).append(
      h("h2", null, s.subject || `Session ${s.id}`),
      h("p", { class: "muted" }, `${s.agent || "unknown agent"} · ${fmtInt(s.calls)} calls · ${fmtInt(s.input_tokens)} / ${fmtInt(s.output_tokens)} tokens · ${fmtCost(s.cost_usd)} · ${fmtTime(s.first_at)} → ${fmtTime(s.last_at)}`));
    const rows = (s.timeline || []).map((t) => {
      const run = h("a", { href: `/?run=${encodeURIComponent(t.invocation_id)}` }, t.invocation_id);
      return h("tr", { class: `timeline-${t.kind}` },
        h("td", null, when(t.started_at)),
        h("td", null, t.kind === "http" ? h("span", { class: "kind-http" }, "tool HTTP")
          : t.kind === "mcp" ? h("span", { class: "kind-mcp" }, t.tool ? `MCP ${t.tool}` : `MCP ${t.mcp_method || "stream"}`)
          : h("span", { class: "kind-llm" }, `LLM r${t.round}`)),
        h("td", null, run),
        h("td", null, `${t.provider}${t.model ? ` / ${t.model}` : ""}`),
        h("td", null, badge(t.status)),
        h("td", { class: "num" }, t.kind !== "llm" ? dash : `${fmtInt(t.input_tokens)} / ${fmtInt(t.output_tokens)}`),
        h("td", { class: "num" }, fmtCost(t.cost_usd)),
        h("td", { class: "num" }, fmtMs(t.duration_ms)),
        h("td", null, t.stop_reason || (t.http_status ? `HTTP ${t.http_status}` : dash)));
    });
    clear(body).append(
      h("h3", null, "Conversation"),
      conversationList(s.conversation || []),
      h("h3", null, "Calls"),
      table([["When"], ["Kind"], ["Run"], ["Provider / model"], ["Status"], ["Tokens in / out", 1], ["Cost", 1], ["Duration", 1], ["Stop / HTTP"]], rows, "timeline"));
  }
  load();
  let timer = null;
  const stop = api.stream(new URLSearchParams({ type: "calls", session_id: id }), () => {
    if (timer) return;
    timer = setTimeout(() => {
      timer = null;
      load();
    }, 700);
  }, (on) => ctx.setLive(on), { onResume: () => load() });
  return () => {
    alive = false;
    stop();
    clearTimeout(timer);
    ctx.setLive(false);
  };
}

/**
 * A session read as a chat: each run's user turn, each round's reply, the tool calls
 * the model asked for with their arguments and results, the tool HTTP and MCP calls
 * captured, failures with their hint. Every entry opens its round.
 */
function conversationList(turns) {
  if (!turns.length) return h("p", { class: "muted" }, "Nothing said yet.");
  const who = {
    user: "User",
    reply: "Reply",
    tool_call: "Tool call",
    tool: "Tool HTTP call",
    failure: "Failed",
  };
  const list = h("ol", { class: "conversation" });
  for (const t of turns) {
    const href = `/?run=${encodeURIComponent(t.invocation_id)}&round=${t.round}`;
    const head = h("span", { class: "who" }, `${who[t.kind] || t.kind} · r${t.round} · `, when(t.at));
    const parts = [head];
    if (t.kind === "tool_call" || t.kind === "tool") {
      parts.push(h("strong", null, t.name || "tool"));
      if (t.http_status) parts.push(` HTTP ${t.http_status}`);
      if (t.arguments !== null && t.arguments !== undefined) {
        parts.push(h("pre", { class: "arguments" }, typeof t.arguments === "string" ? t.arguments : JSON.stringify(t.arguments)));
      }
      if (t.text) parts.push(h("pre", { class: "result" }, `→ ${t.text}`));
    } else if (t.kind === "failure") {
      parts.push(badge(t.status), t.http_status ? ` HTTP ${t.http_status}` : "");
      if (t.hint) parts.push(h("p", { class: "hint" }, t.hint));
    } else {
      parts.push(h("pre", null, t.text || "(no text)"));
    }
    const li = h("li", { class: `turn-${t.kind}`, tabindex: "0", dataset: { href } }, ...parts);
    const open = () => { window.location.href = href; };
    li.addEventListener("click", open);
    li.addEventListener("keydown", (e) => { if (e.key === "Enter") open(); });
    list.append(li);
  }
  return list;
}

// Agents.

export function agentsView(main, params, ctx) {
  main.append(h("h2", null, "Agents"));
  api.get("/agents").then((a) => {
    const rows = a.items.map((x) => h("tr", null,
      h("td", null, x.agent ? h("a", { href: `/?agent=${encodeURIComponent(x.agent)}` }, x.agent) : h("span", { class: "muted" }, "(no agent header)")),
      h("td", { class: "num" }, fmtInt(x.invocations)),
      h("td", { class: "num" }, fmtInt(x.calls)),
      h("td", { class: "num" }, fmtCost(x.cost_usd)),
      h("td", { class: "num" }, fmtCost(x.avg_cost_per_invocation_usd)),
      h("td", { class: `num ${x.error_rate > 0.05 ? "bad" : ""}` }, fmtPct(x.error_rate)),
      h("td", { class: "num" }, fmtMs(x.p50_latency_ms)),
      h("td", { class: "num" }, fmtMs(x.p95_latency_ms)),
      h("td", { class: "num" }, `${fmtInt(x.input_tokens)} / ${fmtInt(x.output_tokens)}`)));
    main.append(
      a.items.length
        ? table([["Agent"], ["Runs", 1], ["Calls", 1], ["Total cost", 1], ["Cost per run", 1], ["Error rate", 1], ["p50 latency", 1], ["p95 latency", 1], ["Tokens in / out", 1]], rows, "agents")
        : h("p", { class: "muted" }, "No agents yet: send x-llmtap-agent with each call."),
      h("p", { class: "muted" }, a.latency_note || ""));
  }, (e) => failed(main, e, ctx));
}

// Stats.

const GROUPS = ["model", "prompt", "agent", "provider", "trigger", "tenant", "day", "hour"];
const METRICS = [
  ["success_rate", "Success rate", (v) => fmtPct(v)],
  ["avg_latency_ms", "Average latency", (v) => fmtMs(v)],
  ["p95_latency_ms", "p95 latency", (v) => fmtMs(v)],
  ["avg_input_tokens", "Average input tokens", (v) => fmtInt(Math.round(v))],
  ["avg_output_tokens", "Average output tokens", (v) => fmtInt(Math.round(v))],
  ["cost_usd", "Cost", (v) => fmtCost(v)],
  ["calls", "Calls", (v) => fmtInt(v)],
];

export function statsView(main, params, ctx) {
  const group = GROUPS.includes(params.get("group_by")) ? params.get("group_by") : "model";
  const metric = METRICS.find(([k]) => k === params.get("metric")) || METRICS[0];
  const since = params.get("since") || "7d";
  const controls = h("form", { class: "filters" });
  const pick = (name, options, value) => {
    const el = h("select", { name });
    for (const [v, label] of options) el.append(h("option", { value: v, selected: v === value }, label));
    return h("label", { class: "field" }, h("span", null, name === "group_by" ? "Group by" : name === "metric" ? "Chart" : "Period"), el);
  };
  controls.append(
    pick("group_by", GROUPS.map((g) => [g, g === "prompt" ? "prompt version" : g]), group),
    pick("metric", METRICS.map(([k, l]) => [k, l]), metric[0]),
    pick("since", [["1d", "last 24 hours"], ["7d", "last 7 days"], ["30d", "last 30 days"]], since),
    h("label", { class: "field" }, h("span", null, "Agent"), h("input", { name: "agent", type: "search", value: params.get("agent") || "", placeholder: "any" })),
  );
  controls.addEventListener("change", () => {
    const p = new URLSearchParams({ view: "stats" });
    for (const el of controls.querySelectorAll("select, input")) if (el.value) p.set(el.name, el.value);
    ctx.setParams(p, { render: true });
  });
  controls.addEventListener("submit", (e) => e.preventDefault());
  const out = h("div", { class: "loading" }, "Computing…");
  main.append(h("h2", null, "Stats"), controls, out);
  const days = { "1d": 1, "7d": 7, "30d": 30 }[since] || 7;
  const q = { group_by: group, from: new Date(Date.now() - days * 86400_000).toISOString(), agent: params.get("agent") };
  api.get("/stats", q).then((st) => {
    clear(out).classList.remove("loading");
    if (!st.items.length) {
      out.append(h("p", { class: "muted" }, "No calls in this period."));
      return;
    }
    const label = (g) => (g === null ? "(none)" : g);
    out.append(...[
      h("h3", null, `${metric[1]} by ${group === "prompt" ? "prompt version" : group}`),
      h("div", { class: "chart-wrap" }, barChart(st.items.map((x) => ({
        label: label(x.group),
        value: x[metric[0]] ?? 0,
        text: metric[2](x[metric[0]]),
        cls: metric[0] === "success_rate" && x.success_rate < 0.95 ? "bar bar-bad" : "bar",
      })), { width: 900 })),
      table([[group === "prompt" ? "Prompt version" : group[0].toUpperCase() + group.slice(1)], ["Runs", 1], ["Failed runs", 1], ["LLM calls", 1], ["Tool calls", 1], ["Success rate", 1], ["Avg latency", 1], ["p95 latency", 1], ["Avg tokens in / out", 1], ["Cost", 1]],
        st.items.map((x) => h("tr", null,
          h("td", null, label(x.group)),
          h("td", { class: "num" }, fmtInt(x.runs)),
          h("td", { class: `num ${x.failed_runs > 0 ? "bad" : ""}` }, fmtInt(x.failed_runs)),
          h("td", { class: "num" }, fmtInt(x.calls)),
          h("td", { class: "num" }, fmtInt(x.tool_calls)),
          h("td", { class: `num ${x.success_rate < 0.95 ? "bad" : ""}` }, fmtPct(x.success_rate)),
          h("td", { class: "num" }, fmtMs(x.avg_latency_ms)),
          h("td", { class: "num" }, fmtMs(x.p95_latency_ms)),
          h("td", { class: "num" }, `${fmtInt(Math.round(x.avg_input_tokens))} / ${fmtInt(Math.round(x.avg_output_tokens))}`),
          h("td", { class: "num" }, fmtCost(x.cost_usd)))), "stats"),
      st.truncated ? h("p", { class: "warn" }, "More calls matched than one request aggregates; narrow the period.") : null,
      tools,
    ].filter(Boolean));
  }, (e) => failed(clear(out), e, ctx));
  // Tools: the tool calls of the period, per tool (calls, failures, p50 / p95).
  const tools = h("section", { class: "tools-section" }, h("h3", null, "Tools"));
  api.get("/stats", { ...q, group_by: "tool" }).then((st) => {
    tools.append(st.items.length
      ? table([["Tool"], ["Calls", 1], ["Failures", 1], ["p50 duration", 1], ["p95 duration", 1]],
        st.items.map((x) => h("tr", null,
          h("td", null, x.tool === null ? "(none)" : x.tool),
          h("td", { class: "num" }, fmtInt(x.calls)),
          h("td", { class: `num ${x.failures > 0 ? "bad" : ""}` }, fmtInt(x.failures)),
          h("td", { class: "num" }, fmtMs(x.p50_duration_ms)),
          h("td", { class: "num" }, fmtMs(x.p95_duration_ms)))), "tools")
      : h("p", { class: "muted" }, "No tool calls in this period."));
  }, (e) => failed(tools, e, ctx));
}

// Rate limits.

function meter(label, w) {
  if (!w || w.limit === null || w.limit === undefined || w.remaining === null || w.remaining === undefined) {
    return h("div", { class: "meter none" }, h("div", { class: "meter-label" }, label), h("div", { class: "muted" }, w && w.remaining !== null && w.remaining !== undefined ? `${fmtInt(w.remaining)} left (limit not reported)` : "not reported"));
  }
  const fraction = w.limit > 0 ? w.remaining / w.limit : 0;
  const fill = h("div", { class: `meter-fill ${fraction < 0.1 ? "low" : fraction < 0.3 ? "mid" : "ok"}` });
  fill.style.width = `${Math.max(0, Math.min(100, fraction * 100)).toFixed(1)}%`;
  const resetAt = w.reset_at ? new Date(w.reset_at) : null;
  const sameDay = resetAt && resetAt.toDateString() === new Date().toDateString();
  const at = resetAt ? (sameDay ? resetAt.toLocaleTimeString() : fmtTime(w.reset_at)) : null;
  const reset = w.has_reset
    ? `reset${at ? ` at ${at}` : ""} since this report`
    : at ? `resets ${at}` : w.reset_s !== null && w.reset_s !== undefined ? `resets in ${w.reset_s} s` : "";
  return h("div", { class: "meter" },
    h("div", { class: "meter-label" }, label, h("span", { class: "muted" }, ` ${reset}`)),
    h("div", { class: "meter-bar", role: "meter", "aria-valuemin": 0, "aria-valuemax": w.limit, "aria-valuenow": w.remaining }, fill),
    h("div", { class: "meter-text" }, `${fmtInt(w.remaining)} of ${fmtInt(w.limit)} left (${(fraction * 100).toFixed(1)} %)${w.has_reset ? " when reported" : ""}`));
}

export function rateLimitsView(main, params, ctx) {
  main.append(h("h2", null, "Rate limits"),
    h("p", { class: "muted" }, "The latest state each provider reported per API key and model, remaining capacity over the last 24 hours, and the 429s."));
  const out = h("div", { class: "ratelimits" });
  main.append(out);
  let alive = true;
  async function load() {
    let rl;
    try {
      rl = await api.get("/ratelimits", { series: "true", points: 300 });
    } catch (e) {
      if (e instanceof api.ApiError && e.status === 403) {
        clear(out).append(h("p", { class: "notice" }, e.message));
        return;
      }
      return failed(clear(out), e, ctx);
    }
    if (!alive) return;
    clear(out);
    if (!rl.items.length) {
      out.append(h("p", { class: "muted" }, "No provider has reported rate-limit headers yet."));
      return;
    }
    // In the API's order: the tightest headroom now first, stale states last.
    for (const x of rl.items) out.append(card(x));
  }
  function card(x) {
    const head = x.headroom_pct;
    const cls = x.stale ? "stale" : head === null || head === undefined ? "" : head < 10 ? "low" : head < 30 ? "mid" : "ok";
    const series = x.series || [];
    const lim = (w) => (w && w.limit ? w.limit : null);
    const line = (key, w, name, cls2) => ({
      name,
      cls: cls2,
      points: lim(w) ? series.filter((p) => p[key] !== null && p[key] !== undefined).map((p) => ({ t: new Date(p.at).getTime(), v: p[key] / lim(w) })) : [],
    });
    const marks = series.filter((p) => p.status === "rate_limited").map((p) => new Date(p.at).getTime());
    const lines = [line("requests_remaining", x.requests, "requests remaining", "s-requests"), line("tokens_remaining", x.tokens, "tokens remaining", "s-tokens"),
      line("input_tokens_remaining", x.input_tokens, "input tokens remaining", "s-input"), line("output_tokens_remaining", x.output_tokens, "output tokens remaining", "s-output")]
      .filter((l) => l.points.length);
    const now = Date.now();
    // The last 24 hours, or from a minute before the first point when the data is newer.
    const times = lines.flatMap((l) => l.points.map((p) => p.t)).concat(marks);
    const from = Math.max(now - 86400_000, Math.min(...times) - 60_000);
    const width = Math.max(600, (main.clientWidth || 1200) - 130);
    const chart = lines.length || marks.length
      ? timeChart(lines, marks, { width, height: 180, from, to: now })
      : h("p", { class: "muted" }, "No series points in the last 24 hours.");
    const headroom = x.stale
      ? [h("div", { class: "headroom-value" }, "reset"),
        h("div", { class: "headroom-label" }, `every window has reset since ${fmtTime(x.at)}${x.reported_headroom_pct !== null && x.reported_headroom_pct !== undefined ? ` (${x.reported_headroom_pct.toFixed(1)} % then)` : ""}; no current state`)]
      : [h("div", { class: "headroom-value" }, head === null || head === undefined ? dash : `${head.toFixed(1)} %`),
        h("div", { class: "headroom-label" }, "headroom now")];
    return h("section", { class: `rl-card${x.stale ? " stale" : ""}`, dataset: { provider: x.provider, model: x.model || "", key: x.key_fingerprint || "" } },
      h("div", { class: "rl-head" },
        h("div", null,
          h("h3", null, `${x.provider} · ${x.model || "any model"}`),
          h("div", { class: "muted mono" }, x.key_fingerprint ? `key ${x.key_fingerprint}` : "no key fingerprint"),
          h("div", { class: "muted" }, `last reported ${fmtTime(x.at)}`)),
        h("div", { class: `headroom ${cls}` }, headroom)),
      h("div", { class: "rl-body" },
        h("div", { class: "meters" },
          meter("Requests", x.requests),
          meter("Tokens", x.tokens),
          x.input_tokens ? meter("Input tokens", x.input_tokens) : null,
          x.output_tokens ? meter("Output tokens", x.output_tokens) : null),
        h("div", { class: "rl-counts" },
          h("div", { class: `count ${x.rate_limited_1h ? "bad" : ""}` }, h("div", { class: "count-value" }, fmtInt(x.rate_limited_1h)), h("div", { class: "count-label" }, "429s last hour")),
          h("div", { class: `count ${x.rate_limited_24h ? "bad" : ""}` }, h("div", { class: "count-value" }, fmtInt(x.rate_limited_24h)), h("div", { class: "count-label" }, "429s last 24 h")),
          h("div", { class: "count" }, h("div", { class: "count-value" }, x.last_retry_after_s !== null && x.last_retry_after_s !== undefined ? `${x.last_retry_after_s} s` : dash), h("div", { class: "count-label" }, "last retry-after")),
          h("div", { class: "count" }, h("div", { class: "count-value small" }, x.last_429_at ? when(x.last_429_at) : dash), h("div", { class: "count-label" }, "last 429")))),
      h("div", { class: "chart-wrap" }, chart,
        h("div", { class: "legend" }, lines.map((l) => h("span", { class: `key key-${l.cls}` }, l.name)), marks.length ? h("span", { class: "key key-429" }, "429") : null)));
  }
  load();
  const timer = setInterval(load, 15_000);
  return () => {
    alive = false;
    clearInterval(timer);
  };
}
