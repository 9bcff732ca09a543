// The Runs view: filters (in the URL), one page of runs from /invocations, cursor
// paging, live rows from /stream, and a run expanded to its rounds and waterfall.

import * as api from "./api.js";
import { pathId } from "./api.js";
import { h, s, clear, fmtInt, fmtCount, fmtCost, fmtMs, fmtTime, when, whenInRun, badge, errorBox, dash, facts } from "./dom.js";
import { roundDetail } from "./round.js";

export const FILTERS = ["agent", "provider", "model", "status", "trigger", "has_session", "prompt", "user_id", "session_id", "tenant", "from", "to", "q"];
const PAGE = 20;
const STATUSES = ["success", "failed", "timeout", "rate_limited", "canceled", "unauthorized"];
const COLUMNS = ["ID", "When", "Agent", "Version", "Provider / model", "Tokens", "In / out", "Cost", "Latency", "Trigger", "Status", "Rounds"];

let firstDraw = true;

/** The API query of the filters in `params` (the URL). */
export function filterQuery(params, { live = false } = {}) {
  const q = new URLSearchParams();
  for (const name of FILTERS) {
    if (live && name === "q") continue;
    for (const v of params.getAll(name)) if (v !== "") q.append(name, v);
  }
  return q;
}

function localInput(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return "";
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

export function runsView(main, params, ctx) {
  const admin = ctx.who.role === "admin";
  const state = {
    cursors: [],
    cursor: null,
    offset: 0,
    rows: new Map(),
    open: params.get("run"),
    selected: null,
    total: 0,
    lowerBound: false,
    // Runs that started since the first page was read, seen while another page (or a
    // text search) is shown: counted once each, however many calls they make.
    pendingNew: new Set(),
    newestAtLoad: null,
    stopStream: null,
    generation: 0,
  };

  // Filters.
  const form = h("form", { class: "filters", id: "filters" });
  const field = (label, input) => h("label", { class: "field" }, h("span", null, label), input);
  const text = (name, placeholder, list) =>
    h("input", { name, type: "search", placeholder, value: params.get(name) || "", list, autocomplete: "off" });
  const choice = (name, options) => {
    const el = h("select", { name });
    for (const [value, label] of options) el.append(h("option", { value, selected: (params.get(name) || "") === value }, label));
    return el;
  };
  const lists = h("div", { class: "hidden" },
    h("datalist", { id: "dl-agent" }), h("datalist", { id: "dl-provider" }), h("datalist", { id: "dl-model" }), h("datalist", { id: "dl-prompt" }));
  form.append(...[
    lists,
    field("Agent", text("agent", "any", "dl-agent")),
    field("Provider", text("provider", "any", "dl-provider")),
    field("Model", text("model", "any", "dl-model")),
    field("Status", choice("status", [["", "any"], ...STATUSES.map((x) => [x, x.replace("_", " ")])])),
    field("Trigger", choice("trigger", [["", "any"], ["user", "user"], ["system", "system"], ["task", "task"]])),
    field("Short-term memory", choice("has_session", [["", "any"], ["true", "has a session"], ["false", "no session"]])),
    field("Prompt version", text("prompt", "name@version", "dl-prompt")),
    field("User", text("user_id", "user id")),
    field("Session", text("session_id", "session id")),
    field("Tenant", text("tenant", "tenant")),
    field("From", h("input", { name: "from", type: "datetime-local", value: localInput(params.get("from")) })),
    field("To", h("input", { name: "to", type: "datetime-local", value: localInput(params.get("to")) })),
    admin ? field("Search prompts", text("q", "text in prompts")) : null,
    h("div", { class: "filter-actions" },
      h("button", { type: "button", class: "link", id: "clear-filters" }, "Clear"),
      h("button", { type: "button", id: "export-csv", title: "Download the runs matching these filters as CSV" }, "Export CSV")),
  ].filter(Boolean));
  const loaded = new Set();
  form.addEventListener("focusin", (e) => {
    const name = e.target.name;
    if (["agent", "provider", "model", "prompt"].includes(name) && !loaded.has(name)) {
      loaded.add(name);
      fillDatalist(name);
    }
  });
  form.addEventListener("change", () => applyFilters());
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    applyFilters();
  });

  const notice = h("div", { class: "notice hidden", id: "new-runs", role: "status" });
  // A run the URL names that is not on the page shown (`/?run=ID` from a link).
  const linked = h("section", { class: "linked-run hidden", id: "linked-run" });
  const table = h("table", { class: "runs", id: "runs-table" },
    h("thead", null, h("tr", null, COLUMNS.map((c) => h("th", { scope: "col" }, c)))));
  const tbody = h("tbody");
  table.append(tbody);
  const pager = h("div", { class: "pager" });
  const message = h("div", { class: "message" });
  main.append(form, notice, message, linked, h("div", { class: "table-wrap" }, table), pager);

  form.querySelector("#clear-filters").addEventListener("click", () => {
    for (const el of form.querySelectorAll("input, select")) el.value = "";
    applyFilters();
  });
  form.querySelector("#export-csv").addEventListener("click", async (e) => {
    const button = e.currentTarget;
    button.disabled = true;
    try {
      await api.download("/invocations.csv", filterQuery(ctx.params()), `llmtap-runs-${new Date().toISOString().slice(0, 10)}.csv`);
    } catch (err) {
      message.replaceChildren(errorBox(`Export failed: ${err.message}`));
    } finally {
      button.disabled = false;
    }
  });

  async function fillDatalist(name) {
    const list = form.querySelector(`#dl-${name}`);
    try {
      let values = [];
      if (name === "agent") {
        const a = await api.get("/agents");
        values = a.items.map((x) => x.agent).filter(Boolean);
      } else {
        const week = new Date(Date.now() - 7 * 86400_000).toISOString();
        const st = await api.get("/stats", { group_by: name, from: week });
        values = st.items.map((x) => x.group).filter(Boolean);
      }
      for (const v of values) list.append(h("option", { value: v }));
    } catch {
      // Suggestions are a convenience; typing still works.
    }
  }

  function applyFilters() {
    const p = new URLSearchParams();
    for (const el of form.querySelectorAll("input[name], select[name]")) {
      let v = el.value.trim();
      if (!v) continue;
      if (el.type === "datetime-local") {
        const d = new Date(v);
        if (Number.isNaN(d.getTime())) continue;
        v = d.toISOString();
      }
      p.set(el.name, v);
    }
    ctx.setParams(p);
    state.cursors = [];
    state.cursor = null;
    state.offset = 0;
    state.open = null;
    load();
    follow();
  }

  async function load() {
    const generation = ++state.generation;
    const q = filterQuery(ctx.params());
    q.set("limit", PAGE);
    if (state.cursor) q.set("cursor", state.cursor);
    message.replaceChildren();
    let page;
    try {
      page = await api.get("/invocations", q);
    } catch (e) {
      if (generation !== state.generation) return;
      if (e instanceof api.Unauthorized) return ctx.signedOut();
      clear(tbody);
      message.replaceChildren(errorBox(e.message));
      return;
    }
    if (generation !== state.generation) return;
    state.total = page.total;
    state.lowerBound = page.total_is_lower_bound;
    state.next = page.next_cursor;
    if (!state.cursor) {
      state.newestAtLoad = page.items.length ? Date.parse(page.items[0].started_at) : null;
      state.pendingNew.clear();
      notice.classList.add("hidden");
    }
    clear(tbody);
    state.rows.clear();
    for (const inv of page.items) {
      const tr = rowFor(inv);
      state.rows.set(inv.id, tr);
      tbody.append(tr);
    }
    if (!page.items.length) {
      tbody.append(h("tr", { class: "empty" }, h("td", { colspan: COLUMNS.length }, "No runs match these filters yet.")));
    }
    drawPager();
    if (state.open && state.rows.has(state.open)) {
      closeLinked();
      expand(state.open, { keepRound: true });
    } else if (state.open) {
      showLinked(state.open);
    }
    if (firstDraw) {
      firstDraw = false;
      performance.mark("runs-table-drawn");
    }
  }

  function drawPager() {
    const count = [...state.rows.keys()].length;
    const total = state.lowerBound ? `more than ${fmtInt(state.total)}` : fmtInt(state.total);
    // Pages are PAGE rows each; the current one is where the offset falls.
    const pages = Math.max(1, Math.ceil(state.total / PAGE));
    const pageOf = state.lowerBound
      ? `page ${fmtInt(Math.floor(state.offset / PAGE) + 1)} of more than ${fmtInt(pages)}`
      : `page ${fmtInt(Math.floor(state.offset / PAGE) + 1)} of ${fmtInt(pages)}`;
    const label = count
      ? `Showing ${fmtInt(state.offset + 1)} to ${fmtInt(state.offset + count)} of ${total} · ${pageOf}`
      : "Showing 0 runs";
    const prev = h("button", { type: "button", disabled: !state.cursors.length, id: "prev-page" }, "← Newer");
    const next = h("button", { type: "button", disabled: !state.next, id: "next-page" }, "Older →");
    prev.addEventListener("click", () => {
      state.cursor = state.cursors.pop() ?? null;
      state.offset = Math.max(0, state.offset - PAGE);
      state.open = null;
      load();
    });
    next.addEventListener("click", () => {
      state.cursors.push(state.cursor);
      state.cursor = state.next;
      state.offset += count;
      state.open = null;
      load();
    });
    clear(pager).append(h("span", { id: "showing" }, label), h("span", { class: "pager-buttons" }, prev, next));
  }

  /** The run `id` opened from the URL although it is not on the page shown. */
  function showLinked(id) {
    const close = h("button", { type: "button", class: "link", id: "close-linked" }, "Close");
    close.addEventListener("click", () => collapse());
    const body = h("div", { class: "linked-body" }, h("div", { class: "loading" }, "Loading run…"));
    clear(linked).append(
      h("div", { class: "linked-head" },
        h("strong", null, "Run "), h("span", { class: "mono" }, id),
        h("span", { class: "muted" }, " (opened by its link; not on this page of the list) "), close),
      body);
    linked.dataset.id = id;
    linked.classList.remove("hidden");
    runDetail(body, id, ctx, Number(ctx.params().get("round")) || null);
  }

  function closeLinked() {
    clear(linked).classList.add("hidden");
    delete linked.dataset.id;
  }

  function rowFor(inv) {
    const provider = (inv.providers || []).join(", ");
    const model = inv.models && inv.models.length > 1 ? `${inv.model} +${inv.models.length - 1}` : inv.model;
    const tr = h("tr", { class: "run", tabindex: "-1", dataset: { id: inv.id, started: inv.started_at } },
      h("td", { class: "id mono", title: inv.id }, inv.id),
      h("td", null, when(inv.started_at)),
      h("td", null, inv.agent || dash),
      h("td", { class: "version", title: inv.prompt || "no prompt version sent (x-llmtap-prompt)" }, promptVersion(inv.prompt)),
      h("td", null, h("span", { class: "muted" }, provider || dash), provider && model ? " / " : "", model || ""),
      h("td", { class: "num tokens-total" }, totalTokens(inv)),
      h("td", { class: "num muted" }, `${fmtInt(inv.input_tokens)} / ${fmtInt(inv.output_tokens)}`),
      h("td", { class: "num" }, inv.cost_usd === null && inv.input_tokens !== null ? h("span", { class: "warn", title: "no price for this model" }, "no price") : fmtCost(inv.cost_usd)),
      h("td", { class: "num" }, fmtMs(inv.latency_ms)),
      h("td", null, inv.trigger || dash),
      h("td", null, badge(inv.status)),
      h("td", { class: "num" }, fmtInt(inv.rounds)),
    );
    tr.addEventListener("click", (e) => {
      if (e.target.closest("a, button")) return;
      select(inv.id);
      toggle(inv.id);
    });
    if (state.selected === inv.id) tr.classList.add("selected");
    if (state.open === inv.id) tr.classList.add("open");
    return tr;
  }

  function select(id) {
    for (const tr of tbody.querySelectorAll("tr.run.selected")) tr.classList.remove("selected");
    state.selected = id;
    const tr = state.rows.get(id);
    if (tr) {
      tr.classList.add("selected");
      tr.focus({ preventScroll: true });
      tr.scrollIntoView({ block: "nearest" });
    }
  }

  function toggle(id) {
    if (state.open === id) collapse();
    else expand(id);
  }

  function collapse() {
    closeLinked();
    const old = tbody.querySelector("tr.run-detail");
    if (old) old.remove();
    for (const tr of tbody.querySelectorAll("tr.run.open")) tr.classList.remove("open");
    state.open = null;
    const p = ctx.params();
    p.delete("run");
    p.delete("round");
    p.delete("tab");
    ctx.setParams(p, { push: false });
  }

  function expand(id, { keepRound = false } = {}) {
    const old = tbody.querySelector("tr.run-detail");
    if (old) old.remove();
    for (const tr of tbody.querySelectorAll("tr.run.open")) tr.classList.remove("open");
    const tr = state.rows.get(id);
    if (!tr) return;
    closeLinked();
    state.open = id;
    tr.classList.add("open");
    const p = ctx.params();
    p.set("run", id);
    if (!keepRound) {
      p.delete("round");
      p.delete("tab");
    }
    ctx.setParams(p, { push: false });
    const cell = h("td", { colspan: COLUMNS.length }, h("div", { class: "loading" }, "Loading run…"));
    const detailRow = h("tr", { class: "run-detail", dataset: { id } }, cell);
    tr.after(detailRow);
    runDetail(cell, id, ctx, Number(p.get("round")) || null);
  }

  // Live rows.
  function follow() {
    if (state.stopStream) state.stopStream();
    const q = filterQuery(ctx.params(), { live: true });
    q.set("type", "invocations");
    state.stopStream = api.stream(q, (name, inv) => {
      if (name !== "invocation") return;
      ctx.refreshSummary();
      live(inv);
    }, (on) => ctx.setLive(on), {
      // Back from a hidden tab (which holds no stream): read the page again.
      onResume: () => load(),
    });
  }

  function live(inv) {
    const existing = state.rows.get(inv.id);
    if (existing) {
      const tr = rowFor(inv);
      existing.replaceWith(tr);
      state.rows.set(inv.id, tr);
      if (state.open === inv.id) refreshOpen(inv.id);
      return;
    }
    if (linked.dataset.id === inv.id) refreshLinked(inv.id);
    const started = Date.parse(inv.started_at);
    if (state.cursor || ctx.params().get("q")) {
      // Another page (or a search the stream cannot apply) is shown: count the runs
      // that started after the first page was read, each once.
      if (state.newestAtLoad !== null && !(started > state.newestAtLoad)) return;
      state.pendingNew.add(inv.id);
      const n = state.pendingNew.size;
      notice.replaceChildren(
        `${fmtCount(n, "new run")} since this page was loaded. `,
        h("button", { type: "button", class: "link", id: "show-newest" }, "Show the newest"),
      );
      notice.querySelector("button").addEventListener("click", () => {
        state.cursors = [];
        state.cursor = null;
        state.offset = 0;
        load();
      });
      notice.classList.remove("hidden");
      return;
    }
    // A run older than every row of a full page belongs to a later page.
    const shown = [...state.rows.values()];
    if (shown.length >= PAGE && started < Date.parse(shown[shown.length - 1].dataset.started)) return;
    const empty = tbody.querySelector("tr.empty");
    if (empty) empty.remove();
    const tr = rowFor(inv);
    tr.classList.add("fresh");
    // Keep what the reader is looking at in place: note where a row below the new one
    // is (the open run, else the first row in view), and scroll by what it moved.
    const anchor = anchorRow();
    const anchorTop = anchor ? anchor.getBoundingClientRect().top : 0;
    const before = window.scrollY;
    // In start order: before the first row that started earlier.
    const next = shown.find((r) => Date.parse(r.dataset.started) < started);
    if (next) next.before(tr);
    else tbody.append(tr);
    state.total += 1;
    // Rows newest first in the map too, then one page at most: drop the oldest rows
    // that are neither open nor selected.
    state.rows = new Map([...tbody.querySelectorAll("tr.run")].map((r) => [r.dataset.id, r]));
    const ids = [...state.rows.keys()];
    let extra = state.rows.size - PAGE;
    for (let i = ids.length - 1; i >= 0 && extra > 0; i--) {
      const victim = ids[i];
      if (victim === state.open || victim === state.selected) continue;
      state.rows.get(victim).remove();
      state.rows.delete(victim);
      extra -= 1;
    }
    if (before > 0 && anchor && anchor.isConnected) {
      const moved = anchor.getBoundingClientRect().top - anchorTop;
      if (moved) window.scrollBy(0, moved);
    }
    drawPager();
  }

  /** The row whose place on screen the reader keeps: the open run, else the first row in view. */
  function anchorRow() {
    const open = state.open ? state.rows.get(state.open) : null;
    if (open && open.getBoundingClientRect().bottom > 0) return open;
    return [...state.rows.values()].find((r) => r.getBoundingClientRect().bottom > 0) || null;
  }

  let linkedTimer = null;
  function refreshLinked(id) {
    if (linkedTimer) return;
    linkedTimer = setTimeout(() => {
      linkedTimer = null;
      const body = linked.querySelector(".linked-body");
      if (!body || linked.dataset.id !== id) return;
      runDetail(body, id, ctx, Number(ctx.params().get("round")) || null, { quiet: true });
    }, 800);
  }

  let refreshTimer = null;
  function refreshOpen(id) {
    if (refreshTimer) return;
    refreshTimer = setTimeout(() => {
      refreshTimer = null;
      const row = tbody.querySelector("tr.run-detail");
      if (!row || row.dataset.id !== id) return;
      runDetail(row.firstChild, id, ctx, Number(ctx.params().get("round")) || null, { quiet: true });
    }, 800);
  }

  // Keyboard: j/k or arrows move, Enter opens or closes, Escape closes.
  function onKey(e) {
    if (e.target.closest("input, select, textarea") || e.ctrlKey || e.metaKey || e.altKey) return;
    // Enter on a button or link is that control's own click.
    if (e.key === "Enter" && e.target.closest("button, a")) return;
    const inRounds = e.target.closest("table.rounds");
    const rows = inRounds
      ? [...inRounds.querySelectorAll("tr.round")]
      : [...tbody.querySelectorAll("tr.run")];
    if (!rows.length) return;
    const current = inRounds ? e.target.closest("tr.round") : state.rows.get(state.selected);
    let i = rows.indexOf(current);
    if (e.key === "j" || e.key === "ArrowDown") i = Math.min(rows.length - 1, i + 1);
    else if (e.key === "k" || e.key === "ArrowUp") i = Math.max(0, i - 1);
    else if (e.key === "Enter") {
      if (current) current.click();
      e.preventDefault();
      return;
    } else if (e.key === "Escape") {
      if (state.open) collapse();
      return;
    } else return;
    e.preventDefault();
    if (inRounds) {
      rows[i].focus();
    } else {
      select(rows[i].dataset.id);
    }
  }
  document.addEventListener("keydown", onKey);

  load();
  follow();
  return () => {
    state.generation += 1;
    if (state.stopStream) state.stopStream();
    document.removeEventListener("keydown", onKey);
    ctx.setLive(false);
  };
}

/** The version part of a `name@version` prompt (the whole name when it has none). */
export function promptVersion(prompt) {
  if (!prompt) return dash;
  const at = prompt.lastIndexOf("@");
  return at >= 0 ? prompt.slice(at + 1) || dash : prompt;
}

/** Input plus output tokens of a run; a dash when neither was reported. */
function totalTokens(inv) {
  if (inv.input_tokens === null && inv.output_tokens === null) return dash;
  return fmtInt((inv.input_tokens || 0) + (inv.output_tokens || 0));
}

/** One run: its facts, waterfall and rounds; `openRound` opens that round's detail. */
export async function runDetail(cell, id, ctx, openRound, { quiet = false } = {}) {
  let detail;
  try {
    detail = await api.get(`/invocations/${pathId(id)}`, { calls: "false" });
  } catch (e) {
    if (e instanceof api.Unauthorized) return ctx.signedOut();
    if (quiet) return;
    clear(cell).append(errorBox(e instanceof api.ApiError && e.status === 404
      ? `There is no run ${id}: the link may be mistyped, or retention has removed the run.`
      : e.message));
    return;
  }
  const rounds = detail.rounds || [];
  const runStart = Math.min(...rounds.map((r) => Date.parse(r.started_at)).filter(Number.isFinite));
  const box = h("div", { class: "run-box" });
  const cost = detail.cost_usd === null && detail.unpriced_calls > 0
    ? h("span", { class: "warn" }, `no price for ${detail.unpriced_calls} call${detail.unpriced_calls === 1 ? "" : "s"}`)
    : fmtCost(detail.cost_usd);
  const session = detail.session_id
    ? h("a", { href: `/?view=sessions&session=${encodeURIComponent(detail.session_id)}`, class: "session-link" }, detail.session_id)
    : null;
  box.append(
    h("div", { class: "run-head" },
      facts([
        ["Run", h("span", { class: "mono" }, detail.id)],
        ["Agent", detail.agent],
        ["Status", badge(detail.status)],
        ["Outcome", detail.outcome ? h("span", { class: "outcome" }, detail.outcome.text) : null],
        ["Calls", `${fmtCount(detail.round_count, "round")} · ${fmtCount(detail.llm_calls, "LLM call")} · ${fmtCount(detail.tool_calls, "tool call")}`],
        ["Started", fmtTime(detail.started_at)],
        ["Latency", fmtMs(detail.latency_ms)],
        ["Tokens in / out", `${fmtInt(detail.usage?.input_tokens)} / ${fmtInt(detail.usage?.output_tokens)}`],
        ["Cost", cost],
        ["Trigger", detail.trigger],
        ["Tenant", detail.tenant],
        ["Session", session],
      ])),
  );
  // Failures with their hints: a round's failed attempts too (a recovered retry).
  const failed = rounds.flatMap((r) => (r.attempts || [r]).filter((a) => a.hint)
    .map((a) => ({ label: (r.attempts || []).length > 1 ? `r${r.round} attempt ${a.attempt}` : `r${r.round}`, hint: a.hint })));
  for (const f of failed.slice(0, 3)) {
    box.append(h("p", { class: "hint" }, h("strong", null, `${f.label}: `), f.hint));
  }
  if ((detail.mcp_servers || []).length) box.append(mcpServers(detail.mcp_servers));
  box.append(h("h3", null, "Timeline"), waterfall(detail, (n) => openRoundRow(n)));
  const table = h("table", { class: "rounds" },
    h("thead", null, h("tr", null, ["Round", "Started", "Model", "Tokens in / out", "Cost", "Latency", "TTFT", "Status", "Attempts", "Stop reason", "Tool calls"].map((c) => h("th", { scope: "col" }, c)))));
  const tbody = h("tbody");
  table.append(tbody);
  const rowsByRound = new Map();
  for (const r of rounds) {
    const tools = (r.tool_calls || []).map((t) => t.mcp
      // Joined to the MCP tools/call that ran it: its server, own duration and status.
      ? h("span", { class: `tool tool-mcp${t.mcp.status === "success" ? "" : " tool-failed"}`, dataset: { call: t.mcp.call_id },
        title: `MCP ${mcpServerName(t.mcp)} ${t.mcp.tool}: ${t.mcp.status}${t.mcp.error ? ` (JSON-RPC error ${t.mcp.error.code}: ${t.mcp.error.message})` : t.mcp.is_error ? " (tool error)" : ""}, ${fmtMs(t.mcp.duration_ms)}` },
        t.name, ` (${mcpServerName(t.mcp)}, ${fmtMs(t.mcp.duration_ms)}${t.mcp.status === "success" ? "" : `, ${t.mcp.status}`})`)
      : h("span", { class: "tool", title: t.duration_ms !== null && t.duration_ms !== undefined ? `result in round ${t.result_round} after ${fmtMs(t.duration_ms)}` : "no result seen" },
        t.name, t.duration_ms !== null && t.duration_ms !== undefined ? ` (${fmtMs(t.duration_ms)})` : ""));
    const tr = h("tr", { class: "round", tabindex: "0", dataset: { round: r.round } },
      h("td", { class: "mono" }, `r${r.round}`),
      h("td", { class: "started" }, whenInRun(r.started_at, runStart)),
      h("td", null, r.model || dash),
      h("td", { class: "num" }, `${fmtInt(r.input_tokens)} / ${fmtInt(r.output_tokens)}`),
      h("td", { class: "num" }, r.cost_usd === null && r.input_tokens !== null ? h("span", { class: "warn" }, "no price") : fmtCost(r.cost_usd)),
      h("td", { class: "num" }, fmtMs(r.latency_ms)),
      h("td", { class: "num" }, fmtMs(r.ttft_ms)),
      h("td", null, badge(r.status)),
      h("td", null, attemptsCell(r.attempts || [])),
      h("td", null, r.stop_reason || dash),
      h("td", null, tools.length ? tools : dash),
    );
    tr.addEventListener("click", () => openRoundRow(r.round));
    rowsByRound.set(r.round, tr);
    tbody.append(tr);
  }
  // A round opens below the rounds' scroll box, in the page's flow: long
  // conversations read with the page's scrollbar, under no sticky header.
  const roundSlot = h("div", { class: "round-slot" });
  box.append(h("h3", null, `Rounds (${fmtInt(rounds.length)})`), h("div", { class: "rounds-wrap" }, table), roundSlot);
  clear(cell).append(box);

  function openRoundRow(n, { push = true } = {}) {
    const old = roundSlot.querySelector(".round-detail");
    const wasOpen = old && Number(old.dataset.round) === n;
    if (old) old.remove();
    for (const r of tbody.querySelectorAll("tr.round.open")) r.classList.remove("open");
    const p = ctx.params();
    if (wasOpen && push) {
      p.delete("round");
      p.delete("tab");
      ctx.setParams(p, { push: false });
      return;
    }
    const tr = rowsByRound.get(n);
    if (!tr) return;
    tr.classList.add("open");
    p.set("round", n);
    ctx.setParams(p, { push: false });
    const panel = h("div", { class: "round-detail", dataset: { round: n } });
    roundSlot.append(panel);
    const index = rounds.findIndex((r) => r.round === n);
    roundDetail(panel, detail, index, ctx);
    if (push) {
      tr.scrollIntoView({ block: "nearest" });
      panel.scrollIntoView({ block: "start" });
    }
  }
  if (openRound && rowsByRound.has(openRound)) openRoundRow(openRound, { push: false });
}

/** An MCP server's name as its initialize answer gave it, else the provider it was reached through. */
export function mcpServerName(m) {
  return (m.server && m.server.name) || m.provider || "mcp";
}

/** The MCP servers of a run and the tools each offered (names only; viewers see them too). */
function mcpServers(servers) {
  const list = h("ul", { class: "mcp-servers" });
  for (const srv of servers) {
    const version = srv.server && srv.server.version ? ` ${srv.server.version}` : "";
    const via = srv.server && srv.server.name !== srv.provider ? ` via ${srv.provider}` : "";
    list.append(h("li", { class: "mcp-server", dataset: { provider: srv.provider } },
      h("strong", null, `${mcpServerName(srv)}${version}`), h("span", { class: "muted" }, `${via} · ${srv.transport}`),
      " offered ",
      srv.tools_offered.length
        ? srv.tools_offered.map((t) => h("span", { class: "tool" }, t))
        : h("span", { class: "muted" }, srv.tools_list_calls ? "no tools" : "(no tools/list seen)"),
      h("span", { class: "muted" }, ` · tools/list asked ${fmtInt(srv.tools_list_calls)}×${srv.sessions ? ` in ${fmtInt(srv.sessions)} session${srv.sessions === 1 ? "" : "s"}` : ""}`)));
  }
  return h("section", null, h("h3", null, "MCP servers"), list);
}

/** A round's attempts: each status, and the backoff waited before each retry. */
function attemptsCell(attempts) {
  if (attempts.length <= 1) return h("span", { class: "muted" }, "1");
  return h("span", { class: "attempts" }, ...attempts.map((a) => h("span", { class: "attempt", title: a.hint || a.status },
    a.backoff_ms !== null && a.backoff_ms !== undefined ? h("span", { class: "backoff" }, `backoff ${fmtMs(a.backoff_ms)}`) : null,
    badge(a.status), a.http_status ? ` ${a.http_status}` : "")));
}

/**
 * The waterfall: one bar per attempt of each round (and per tool HTTP call and MCP request when the
 * API lists them) on a shared time axis, time to first token marked on each bar, and
 * the gaps between LLM calls (tool time, backoff or agent time, as the API says), drawn and labelled. An
 * MCP tool call is labelled with its tool and server and drawn red when it failed;
 * notifications and the server's long-lived event stream are left out.
 */
function waterfall(detail, onPick) {
  const entries = (detail.rounds || []).flatMap((r) => {
    const attempts = r.attempts && r.attempts.length ? r.attempts : [{ attempt: 1, call_id: r.call_id, started_at: r.started_at, duration_ms: r.latency_ms, status: r.status }];
    return attempts.map((a) => {
      const start = new Date(a.started_at).getTime();
      const settled = a.call_id === r.call_id;
      return { kind: "llm", round: r.round, start, end: start + (a.duration_ms || 0), ttft: settled ? r.ttft_ms : null, status: a.status,
        label: attempts.length > 1 ? `r${r.round}.${a.attempt}` : `r${r.round}`, tools: settled ? r.tool_calls || [] : [] };
    });
  });
  for (const t of detail.timeline || []) {
    if (t.kind !== "http" && t.kind !== "mcp") continue;
    const start = new Date(t.started_at).getTime();
    const duration = t.duration_ms ?? t.latency_ms ?? 0;
    if (t.kind === "http") {
      entries.push({ kind: "http", start, end: start + duration, status: t.status, label: "http", title: `${t.provider || "tool"} ${t.path || ""}`.trim() });
      continue;
    }
    const mcp = t.mcp || {};
    if (!mcp.method || mcp.method.startsWith("notifications/")) continue;
    const server = (mcp.server && mcp.server.name) || t.provider || "mcp";
    const what = mcp.tool || mcp.target || mcp.method;
    const failure = mcp.error ? ` (JSON-RPC error ${mcp.error.code}: ${mcp.error.message})` : mcp.is_error ? " (tool error)" : "";
    // Who started it: the client (→ server) or the server (← a request the client answered).
    const fromServer = mcp.direction === "server_to_client";
    const pushed = (mcp.server_messages || []).length ? `; server sent ${mcp.server_messages.join(", ")}` : "";
    entries.push({ kind: "mcp", call: t.call_id, direction: mcp.direction, start, end: start + duration, status: t.status, label: fromServer ? "← mcp" : mcp.tool ? "tool" : "mcp",
      title: `MCP ${server} ${fromServer ? "← " : ""}${mcp.method}${mcp.tool ? ` ${what}` : mcp.target ? ` ${what}` : ""}${failure}${pushed}` });
  }
  entries.sort((a, b) => a.start - b.start);
  if (!entries.length) return h("p", { class: "muted" }, "No rounds recorded.");
  const t0 = Math.min(...entries.map((e) => e.start));
  const t1 = Math.max(...entries.map((e) => e.end), t0 + 1);
  const width = 1000;
  const labelW = 48;
  const rowH = entries.length > 100 ? 10 : 18;
  const height = entries.length * rowH + 24;
  const x = (t) => labelW + ((t - t0) / (t1 - t0)) * (width - labelW - 60);
  const svg = s("svg", { class: "chart waterfall", viewBox: `0 0 ${width} ${height}`, width, height, role: "img" });
  svg.append(s("title", {}, "Rounds on a time axis; gaps are tool time, backoff or agent time"));
  let lastLlmEnd = null;
  let llmSeen = 0;
  const gaps = detail.gaps || [];
  entries.forEach((e, i) => {
    const y = i * rowH + 4;
    const g = s("g", { class: `wf-row wf-${e.kind}`, "data-round": e.round ?? "", "data-call": e.call ?? "", "data-direction": e.direction ?? "" });
    if (rowH >= 14) g.append(s("text", { x: 4, y: y + rowH * 0.7, class: "label" }, e.label));
    // The API says what each gap between LLM calls was: tool time, backoff, agent time.
    const kind = e.kind === "llm" && llmSeen > 0 ? gaps[llmSeen - 1] : null;
    if (e.kind === "llm" && lastLlmEnd !== null && e.start > lastLlmEnd) {
      const gap = e.start - lastLlmEnd;
      const label = `${kind ? kind.label : "tool time"} ${fmtMs(gap)}`;
      g.append(s("line", { x1: x(lastLlmEnd), x2: x(e.start), y1: y + rowH / 2 - 1, y2: y + rowH / 2 - 1, class: `gap gap-${kind ? kind.kind : "tool"}` },
        s("title", {}, label)));
      if (rowH >= 14 && x(e.start) - x(lastLlmEnd) > 90) {
        g.append(s("text", { x: (x(lastLlmEnd) + x(e.start)) / 2, y: y + rowH / 2 - 4, "text-anchor": "middle", class: "gap-label" }, label));
      }
    }
    if (e.kind === "llm") llmSeen += 1;
    const bar = s("rect", { x: x(e.start), y, width: Math.max(2, x(e.end) - x(e.start)), height: rowH - 4, rx: 2, class: `bar status-${e.status || "pending"}` },
      s("title", {}, e.kind === "llm"
        ? `${e.label}: ${fmtMs(e.end - e.start)}${e.ttft !== null && e.ttft !== undefined ? `, first token after ${fmtMs(e.ttft)}` : ""}`
        : `${e.title}: ${fmtMs(e.end - e.start)}`));
    g.append(bar);
    if (e.kind === "llm" && e.ttft !== null && e.ttft !== undefined) {
      const tx = x(e.start + e.ttft);
      g.append(s("line", { x1: tx, x2: tx, y1: y - 1, y2: y + rowH - 3, class: "ttft" }));
    }
    if (rowH >= 14) g.append(s("text", { x: x(e.end) + 4, y: y + rowH * 0.7, class: "value" }, fmtMs(e.end - e.start)));
    if (e.kind === "llm") {
      lastLlmEnd = e.end;
      g.addEventListener("click", () => onPick(e.round));
    }
    svg.append(g);
  });
  svg.append(s("text", { x: labelW, y: height - 4, class: "axis" }, "0"),
    s("text", { x: width - 60, y: height - 4, class: "axis", "text-anchor": "end" }, fmtMs(t1 - t0)));
  const legend = h("div", { class: "legend" },
    h("span", { class: "key key-bar" }, "LLM round"),
    h("span", { class: "key key-ttft" }, "first token"),
    h("span", { class: "key key-gap" }, "gap: tool time, backoff or agent time"),
    (detail.timeline || []).some((t) => t.kind === "http") ? h("span", { class: "key key-http" }, "tool HTTP call") : null,
    (detail.timeline || []).some((t) => t.kind === "mcp") ? h("span", { class: "key key-mcp" }, "MCP request (red: failed)") : null);
  return h("div", { class: "waterfall-wrap" }, h("div", { class: "waterfall-scroll" }, svg), legend);
}
