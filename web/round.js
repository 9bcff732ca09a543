// One round's detail: Request / Response in conversation order, What changed since
// the previous round, Prompt, Cost and Metadata. Every text is set as text.

import * as api from "./api.js";
import { pathId } from "./api.js";
import { h, clear, fmtInt, fmtCount, fmtCost, fmtMs, fmtTime, fmtBytes, badge, errorBox, dash, facts, longText, prettyJson, maybeJson, copyButton } from "./dom.js";
import { curlCommand, pythonSnippet, replayProblem } from "./replay.js";

const TABS = [
  ["conversation", "Request / Response"],
  ["changes", "What changed"],
  ["prompt", "Prompt"],
  ["cost", "Cost"],
  ["metadata", "Metadata"],
];

const calls = new Map();

/** A call record by id, fetched once per page load (records do not change once stored). */
async function call(id) {
  if (!calls.has(id)) {
    const pending = api.get(`/calls/${pathId(id)}`);
    calls.set(id, pending);
    pending.catch(() => calls.delete(id));
  }
  return calls.get(id);
}

export async function roundDetail(td, detail, index, ctx) {
  const round = detail.rounds[index];
  td.append(h("div", { class: "loading" }, `Loading r${round.round}…`));
  let record;
  try {
    record = await call(round.call_id);
  } catch (e) {
    if (e instanceof api.Unauthorized) return ctx.signedOut();
    clear(td).append(errorBox(e.message));
    return;
  }
  const admin = ctx.who.role === "admin";
  const tabs = h("div", { class: "tabs", role: "tablist" });
  const panel = h("div", { class: "tab-panel", role: "tabpanel" });
  const box = h("div", { class: "round-box" },
    h("div", { class: "round-title" }, h("strong", null, `Round r${round.round}`), " ", badge(record.status), " ",
      h("span", { class: "muted mono" }, record.id), admin ? replayButtons(record) : null),
    roundCards(record),
    tabs, panel);
  clear(td).append(box);
  const current = ctx.params().get("tab");
  let active = TABS.some(([k]) => k === current) ? current : "conversation";
  const buttons = new Map();
  for (const [key, label] of TABS) {
    const b = h("button", { type: "button", role: "tab", class: "tab", dataset: { tab: key } }, label);
    b.addEventListener("click", () => show(key));
    buttons.set(key, b);
    tabs.append(b);
  }
  function show(key) {
    active = key;
    for (const [k, b] of buttons) {
      b.classList.toggle("active", k === key);
      b.setAttribute("aria-selected", k === key ? "true" : "false");
    }
    const p = ctx.params();
    p.set("tab", key);
    ctx.setParams(p, { push: false });
    clear(panel);
    const render = { conversation, changes, prompt, cost, metadata }[key];
    render(panel, record, detail, index, admin, ctx);
  }
  show(active);
}

/** Copy the round's request as a curl command or a Python snippet (admins: it needs the body). */
function replayButtons(record) {
  const problem = replayProblem(record);
  const attrs = problem ? { disabled: true, title: `Cannot replay: ${problem}` } : {};
  return h("span", { class: "replay" },
    copyButton("Copy as curl", () => curlCommand(record), { id: "copy-curl", title: "The request as a curl command; the key is read from an environment variable", ...attrs }),
    copyButton("Copy as Python", () => pythonSnippet(record), { id: "copy-python", title: "The request as a Python snippet (the provider's SDK where there is one); the key is read from an environment variable", ...attrs }));
}

/** The round at a glance: model, latency, tokens and cost. */
function roundCards(record) {
  const u = record.usage || {};
  const card = (label, value, sub, cls) => h("div", { class: `stat round-card ${cls}` },
    h("div", { class: "stat-label" }, label), h("div", { class: "stat-value" }, value), sub ? h("div", { class: "muted" }, sub) : null);
  const answered = record.response_model && record.response_model !== record.model ? `answered by ${record.response_model}` : null;
  const total = u.total_tokens ?? (u.input_tokens === null && u.output_tokens === null ? null : (u.input_tokens || 0) + (u.output_tokens || 0));
  return h("div", { class: "round-cards" },
    card("Model", record.model || record.response_model || dash, [record.provider, answered].filter(Boolean).join(" · "), "card-model"),
    card("Latency", fmtMs(record.latency_ms), record.ttft_ms !== null && record.ttft_ms !== undefined ? `first token ${fmtMs(record.ttft_ms)}` : null, "card-latency"),
    card("Tokens", fmtInt(total), `${fmtInt(u.input_tokens)} in / ${fmtInt(u.output_tokens)} out`, "card-tokens"),
    card("Cost", record.cost_usd === null || record.cost_usd === undefined ? dash : fmtCost(record.cost_usd), record.cost?.price_key || null, "card-cost"));
}

function hiddenForViewer() {
  return h("p", { class: "notice" }, "Prompts, messages, replies and tool arguments are not shown to viewer tokens.");
}

/** One message; `mark` is "memory" (from the session's previous run) or "earlier" (from this run's earlier rounds). */
function messageView(m, toolResults, mark = null) {
  const parts = [];
  if (m.text !== null && m.text !== undefined) {
    parts.push(longText(m.role === "tool" ? maybeJson(m.text) : m.text));
  }
  for (const tc of m.tool_calls || []) parts.push(toolCallView(tc, toolResults));
  for (const a of m.attachments || []) {
    const label = [a.type, a.media_type, a.filename, a.size !== undefined ? `${fmtInt(a.size)} bytes` : null, a.url]
      .filter(Boolean).join(" · ");
    parts.push(h("div", { class: "attachment-ref" }, h("span", { class: "tag" }, "attachment"), " ", label || prettyJson(a)));
  }
  if (!parts.length) parts.push(h("span", { class: "muted" }, m.text === "" ? "(empty text)" : "(no text)"));
  const head = h("div", { class: "msg-head" }, h("span", { class: `role role-${m.role}` }, m.role));
  if (mark === "memory") head.append(" ", h("span", { class: "tag memory", title: "Sent again from the session's previous run (short-term memory)" }, "memory"));
  if (mark === "earlier") head.append(" ", h("span", { class: "tag earlier", title: "Sent again from this run's earlier rounds" }, "earlier round"));
  if (m.tool_call_id) head.append(h("span", { class: "muted mono" }, ` result of ${m.tool_call_id}`));
  const markClass = mark === "memory" ? " msg-memory" : mark === "earlier" ? " msg-earlier" : "";
  return h("div", { class: `msg msg-${m.role}${markClass}` }, head, parts);
}

function toolCallView(tc, toolResults) {
  const el = h("div", { class: "tool-call" },
    h("div", { class: "tool-head" }, h("span", { class: "tag" }, "tool call"), " ", h("strong", null, tc.name), tc.id ? h("span", { class: "muted mono" }, ` ${tc.id}`) : null),
    h("pre", { class: "json" }, prettyJson(tc.arguments ?? {})));
  const result = toolResults && tc.id ? toolResults.get(tc.id) : null;
  if (result && result.mcp) {
    // The MCP tools/call that ran it: its server, own duration, status and result.
    const m = result.mcp;
    const server = (m.server && m.server.name) || m.provider;
    const failure = m.error ? `JSON-RPC error ${m.error.code}: ${m.error.message}` : m.is_error ? "the tool reported an error (isError)" : null;
    el.append(h("div", { class: `tool-result tool-mcp${failure ? " tool-failed" : ""}`, dataset: { call: m.call_id } },
      h("div", null, h("span", { class: "tag" }, "MCP"), " ", h("strong", null, server), h("span", { class: "muted" }, ` ${m.transport} · ${fmtMs(m.duration_ms)} · `), badge(m.status),
        failure ? h("span", { class: "warn" }, ` ${failure}`) : null),
      m.result_text !== null && m.result_text !== undefined ? longText(maybeJson(String(m.result_text)), 800) : null,
      m.structured_content !== null && m.structured_content !== undefined ? h("pre", { class: "json" }, prettyJson(m.structured_content)) : null));
  }
  if (result) {
    el.append(h("div", { class: "tool-result" },
      h("div", { class: "muted" }, result.result_round
        ? `Result in r${result.result_round} after ${fmtMs(result.duration_ms)}`
        : "No result in the next round"),
      result.result !== null && result.result !== undefined ? longText(maybeJson(String(result.result)), 800) : null));
  }
  return el;
}

function attachmentsView(record, admin) {
  const list = record.attachments || [];
  if (!list.length) return null;
  const table = h("table", { class: "attachments" },
    h("thead", null, h("tr", null, ["File", "Media type", "Size", "Source", "SHA-256 or URL", ""].map((c) => h("th", null, c)))));
  const body = h("tbody");
  for (const a of list) {
    let link = null;
    if (admin && a.sha256) {
      link = h("button", { type: "button", class: "link" }, "Download");
      link.addEventListener("click", () => api.download(`/blobs/${pathId(a.sha256)}`, null, a.filename || `attachment-${a.sha256.slice(0, 12)}`)
        .catch((e) => link.replaceWith(errorBox(e.message))));
    } else if (a.url) {
      link = h("span", { class: "muted", title: a.url }, "by URL");
    }
    const mirrored = a.source === "mirrored" && a.sha256;
    body.append(h("tr", { class: "attachment" },
      h("td", null, a.filename || "inline"),
      h("td", null, a.media_type || dash),
      h("td", { class: "num", title: a.size !== null && a.size !== undefined ? `${fmtInt(a.size)} bytes` : null }, fmtBytes(a.size)),
      h("td", { class: "source" }, mirrored ? "mirrored" : a.url ? "URL only" : a.source || dash),
      h("td", { class: "mono sha" }, a.sha256 || a.url || dash),
      h("td", null, link)));
    if (admin && mirrored && PREVIEWED.has(a.media_type)) {
      const cell = h("td", { colspan: 6, class: "preview" }, h("span", { class: "muted" }, "Loading preview…"));
      body.append(h("tr", { class: "attachment-preview" }, cell));
      preview(cell, a);
    }
  }
  table.append(body);
  return h("section", null, h("h4", null, `Attached files (${list.length})`), table);
}

/** Raster images only: an SVG is a document that can hold script. */
const PREVIEWED = new Set(["image/png", "image/jpeg", "image/gif", "image/webp"]);

/** An image attachment drawn from our own blob endpoint (fetched with the token). */
async function preview(cell, a) {
  try {
    const bytes = await api.blob(`/blobs/${pathId(a.sha256)}`);
    // The type is the one we allow, whatever the response claimed.
    const href = URL.createObjectURL(new Blob([bytes], { type: a.media_type }));
    const img = h("img", { class: "attachment-image", src: href, alt: a.filename || `attached ${a.media_type}` });
    img.addEventListener("load", () => setTimeout(() => URL.revokeObjectURL(href), 1000), { once: true });
    img.addEventListener("error", () => {
      URL.revokeObjectURL(href);
      clear(cell).append(h("span", { class: "muted" }, "The image could not be drawn."));
    }, { once: true });
    clear(cell).append(img);
  } catch (e) {
    clear(cell).append(errorBox(`Preview failed: ${e.message}`));
  }
}

async function conversation(panel, record, detail, index, admin, ctx) {
  if (!record.request && !record.response) {
    panel.append(hiddenForViewer());
    return;
  }
  // Which leading messages repeat earlier turns: derived by the API (`history`).
  const memory = record.history?.memory || 0;
  const earlier = record.history?.earlier_rounds || 0;
  const toolResults = new Map();
  for (const t of detail.rounds[index].tool_calls || []) if (t.id) toolResults.set(t.id, t);
  const attachments = attachmentsView(record, admin);
  if (attachments) panel.append(attachments);
  const req = record.request;
  if (req) {
    panel.append(h("h4", null, "Request"));
    if (req.system) panel.append(h("div", { class: "msg msg-system" }, h("div", { class: "msg-head" }, h("span", { class: "role role-system" }, "system")), longText(req.system)));
    if (memory) {
      panel.append(h("p", { class: "muted memory-note" }, `The first ${memory} message${memory === 1 ? " was" : "s were"} sent again from run ${record.history.memory_run_id} of session ${detail.session_id} (marked memory).`));
    }
    if (earlier) {
      panel.append(h("p", { class: "muted earlier-note" }, `${memory ? "Then " : "The first "}${earlier} message${earlier === 1 ? " repeats" : "s repeat"} this run's earlier rounds (marked earlier round).`));
    }
    (req.messages || []).forEach((m, i) => panel.append(messageView(m, null, i < memory ? "memory" : i < memory + earlier ? "earlier" : null)));
    if (req.tools && req.tools.length) {
      panel.append(h("details", { class: "tools-offered" }, h("summary", null, `${fmtCount(req.tools.length, "tool")} offered`),
        h("pre", { class: "json" }, prettyJson(req.tools))));
    }
  }
  const res = record.response;
  panel.append(h("h4", null, "Response"));
  if (!res) {
    panel.append(h("p", { class: "muted" }, "No response was parsed for this call."));
  } else {
    const reply = h("div", { class: "msg msg-assistant" }, h("div", { class: "msg-head" }, h("span", { class: "role role-assistant" }, "assistant")));
    if (res.thinking) reply.append(h("details", { class: "thinking" }, h("summary", null, `Thinking (${fmtInt(res.thinking.length)} characters)`), longText(res.thinking, 4000)));
    if (res.text) reply.append(longText(res.text));
    if (res.refusal) reply.append(h("p", { class: "warn" }, "Refusal: ", res.refusal));
    for (const tc of res.tool_calls || []) reply.append(toolCallView(tc, toolResults));
    if (!res.text && !res.thinking && !(res.tool_calls || []).length && !res.refusal) reply.append(h("p", { class: "muted" }, "(empty reply)"));
    if (res.text) reply.querySelector(".msg-head").append(" ", copyButton("Copy output", () => res.text, { id: "copy-output", title: "The reply's text" }));
    panel.append(reply);
  }
  if (record.error) panel.append(h("p", { class: "hint" }, record.hint || record.error.message || record.error.type));
  if (admin) {
    const raw = h("div", { class: "raw-links" }, "Raw bodies: ");
    for (const part of ["request", "response"]) {
      const b = h("button", { type: "button", class: "link" }, part);
      b.addEventListener("click", () => api.download(`/calls/${pathId(record.id)}/raw`, { part }, `${record.id}-${part}.txt`)
        .catch((e) => raw.append(errorBox(e.message))));
      raw.append(b, " ");
    }
    panel.append(raw);
  }
}

function sameMessage(a, b) {
  return a.role === b.role && (a.text ?? "") === (b.text ?? "") && (a.tool_call_id ?? "") === (b.tool_call_id ?? "")
    && JSON.stringify(a.tool_calls ?? []) === JSON.stringify(b.tool_calls ?? []);
}

async function changes(panel, record, detail, index, admin, ctx) {
  if (!record.request) {
    panel.append(hiddenForViewer());
    return;
  }
  const messages = record.request.messages || [];
  if (index === 0) {
    panel.append(h("p", { class: "muted" }, `First round: the whole context (${fmtCount(messages.length, "message")}) is new.`));
    for (const m of messages) panel.append(messageView(m));
    return;
  }
  const prevRound = detail.rounds[index - 1];
  panel.append(h("div", { class: "loading" }, `Comparing with r${prevRound.round}…`));
  let prev;
  try {
    prev = await call(prevRound.call_id);
  } catch (e) {
    if (e instanceof api.Unauthorized) return ctx.signedOut();
    clear(panel).append(errorBox(e.message));
    return;
  }
  clear(panel);
  const before = prev.request?.messages || [];
  let same = 0;
  while (same < before.length && same < messages.length && sameMessage(before[same], messages[same])) same += 1;
  const added = messages.slice(same);
  panel.append(h("p", { class: "muted" },
    `Compared with r${prevRound.round}: ${fmtCount(same, "message")} unchanged, ${added.length} added.`));
  if (same < before.length) {
    panel.append(h("p", { class: "warn" }, `${fmtCount(before.length - same, "message")} of r${prevRound.round}'s context changed or dropped here (the history was rewritten or trimmed).`));
  }
  if ((prev.request?.system ?? "") !== (record.request.system ?? "")) {
    panel.append(h("p", { class: "warn" }, "The system prompt changed:"), longText(record.request.system ?? "(none)"));
  }
  for (const m of added) panel.append(messageView(m));
  if (!added.length) panel.append(h("p", { class: "muted" }, "Nothing was added."));
}

/** `name@version` → [name, version]; the version is after the last `@`. */
function splitPrompt(text) {
  if (!text) return [null, null];
  const at = text.lastIndexOf("@");
  return at > 0 ? [text.slice(0, at), text.slice(at + 1) || null] : [text, null];
}

function prompt(panel, record) {
  const m = record.metadata || {};
  const [name, version] = splitPrompt(m.prompt);
  const [userName, userVersion] = splitPrompt(m.user_prompt);
  panel.append(facts([
    ["System prompt", name ?? h("span", { class: "muted" }, "not named (x-llmtap-prompt)")],
    ["System prompt version", m.prompt ? version || dash : null],
    // Shown when the request named a user prompt (x-llmtap-user-prompt) too.
    ["User prompt", m.user_prompt ? userName : undefined],
    ["User prompt version", m.user_prompt ? userVersion || dash : undefined],
  ]));
  if (!record.request) {
    panel.append(hiddenForViewer());
    return;
  }
  panel.append(h("h4", null, "Rendered system prompt"),
    record.request.system ? longText(record.request.system, 4000) : h("p", { class: "muted" }, "No system prompt."));
  const variables = (title, value, header, id) => {
    const head = h("h4", null, title);
    if (value === null || value === undefined) {
      return [head, h("p", { class: "muted" }, `No variables were sent (${header}).`)];
    }
    head.append(" ", copyButton("Copy as JSON", () => JSON.stringify(value, null, 2), { id, title: "The variables as JSON" }));
    return [head, h("pre", { class: "json" }, prettyJson(value))];
  };
  panel.append(...variables("System prompt variables (context snapshot)", m.prompt_variables, "x-llmtap-prompt-variables", "copy-variables"));
  if (m.user_prompt_variables !== null && m.user_prompt_variables !== undefined) {
    panel.append(...variables("User prompt variables", m.user_prompt_variables, "x-llmtap-user-prompt-variables", "copy-user-variables"));
  }
}

function cost(panel, record) {
  const u = record.usage || {};
  const c = record.cost;
  const used = [u.input_tokens, u.output_tokens, u.total_tokens].some((n) => n !== null && n !== undefined && n > 0);
  if (record.status !== "success" && !used && !c?.priced) {
    // A failed or refused call was not answered: no tokens, nothing billed. Whether
    // the model has a price does not come into it.
    const why = record.http_status ? `the provider answered HTTP ${record.http_status}` : "the call got no answer";
    panel.append(h("div", { class: "billed-nothing", role: "status" },
      h("strong", null, "Nothing was billed. "),
      `This call ended ${String(record.status || "unfinished").replace("_", " ")}: ${why} without a completion, so no tokens were used and there is nothing to price.`));
  } else if (record.cost_usd === null || record.cost_usd === undefined || !c || !c.priced) {
    panel.append(h("div", { class: "warning-box", role: "alert" },
      h("strong", null, "No price for this model. "),
      `${record.response_model || record.model || "This model"} is not priced${c?.unpriced_reason ? `: ${c.unpriced_reason}` : ""}. Add it to the price table (llmtap prices) and reprice.`));
  }
  const usd = (pusd) => (pusd === null || pusd === undefined ? dash : fmtCost(pusd / 1e12));
  const table = h("table", { class: "cost" },
    h("thead", null, h("tr", null, h("th", null, "Part"), h("th", { class: "num" }, "Tokens"), h("th", { class: "num" }, "Cost"))));
  const rows = [
    ["Input (all)", u.input_tokens, c ? c.input_pusd : null],
    ["Cache creation", u.cache_creation_tokens, c ? c.cache_creation_pusd : null],
    ["Cache read", u.cache_read_tokens, c ? c.cache_read_pusd : null],
    ["Output (all)", u.output_tokens, c ? c.output_pusd : null],
    ["of which reasoning", u.reasoning_tokens, c ? c.reasoning_pusd : null],
  ];
  const body = h("tbody");
  for (const [label, tokens, pusd] of rows) {
    body.append(h("tr", null, h("td", null, label), h("td", { class: "num" }, fmtInt(tokens)), h("td", { class: "num" }, c?.priced ? usd(pusd) : dash)));
  }
  body.append(h("tr", { class: "total" }, h("td", null, "Total"), h("td", { class: "num" }, fmtInt(u.total_tokens)),
    h("td", { class: "num" }, c?.priced ? usd(c.total_pusd) : dash)));
  table.append(body);
  panel.append(
    facts([
      ["Stop reason", record.stop_reason],
      ["Price-table entry", c?.price_key ?? null],
      ["Table version", c?.table_version ?? null],
      ["Long-context tier", c?.tier_above_input_tokens ? `above ${fmtInt(c.tier_above_input_tokens)} input tokens` : undefined],
    ]),
    table,
    h("p", { class: "muted" }, "Cache tokens are part of input; reasoning is part of output. Amounts are exact (picodollars) and summed without rounding."),
  );
  const entry = record.price_entry;
  if (entry) {
    const rate = (v, base) => (v === null || v === undefined ? `at the ${base} rate` : `$${v}`);
    const rows = (r) => [
      ["Input", rate(r.input)],
      ["Output", rate(r.output)],
      ["Cache read", rate(r.cache_read, "input")],
      ["Cache write", rate(r.cache_write, "input")],
      ["Cache write (1 h)", r.cache_write_1h === null ? undefined : rate(r.cache_write_1h, "cache write")],
      ["Reasoning", rate(r.reasoning, "output")],
    ];
    panel.append(h("h4", null, `Price-table entry ${entry.key} (${entry.unit})`), facts(rows(entry.rates)));
    for (const t of entry.tiers || []) {
      panel.append(h("p", { class: "muted" }, `Above ${fmtInt(t.above_input_tokens)} input tokens:`), facts(rows(t.rates)));
    }
    panel.append(h("p", { class: "muted" }, `Defined at ${entry.defined_at}${entry.note ? ` · ${entry.note}` : ""}.`,
      entry.same_version_as_call ? "" : ` The table has changed since this call was priced (now ${entry.table_version}); llmtap reprice updates old costs.`));
  }
}

function windowText(w) {
  if (!w) return null;
  const parts = [];
  if (w.remaining !== null && w.remaining !== undefined) parts.push(`${fmtInt(w.remaining)}${w.limit ? ` of ${fmtInt(w.limit)}` : ""} left`);
  if (w.reset_at) parts.push(`resets ${fmtTime(w.reset_at)}`);
  else if (w.reset_s !== null && w.reset_s !== undefined) parts.push(`resets in ${w.reset_s} s`);
  return parts.join(", ") || dash;
}

function metadata(panel, record, detail, index, admin) {
  const m = record.metadata || {};
  const rl = record.rate_limit;
  panel.append(facts([
    ["Triggered by", m.trigger],
    ["User", m.user_id],
    ["Task", m.task_id],
    ["Agent", m.agent],
    ["Tenant", m.tenant],
    ["Session", m.session_id],
    ["Prompt", m.prompt],
    ["Provider", record.provider],
    ["Model (requested)", record.model],
    ["Model (answered)", record.response_model],
    ["Status", badge(record.status)],
    ["HTTP status", record.http_status !== null ? String(record.http_status) : null],
    ["Error type", record.error?.type ?? null],
    ["Error message", record.error?.message ?? null],
    ["Hint", record.hint ?? null],
    ["Created", fmtTime(record.started_at)],
    ["Latency", fmtMs(record.latency_ms)],
    ["Time to first token", fmtMs(record.ttft_ms)],
    ["Streamed", record.stream ? "yes" : "no"],
    ["Key id", record.api_key_fingerprint
      ? h("span", { class: "mono", title: "The API key's fingerprint: the key itself is never stored" }, record.api_key_fingerprint)
      : h("span", { class: "muted" }, "no key sent")],
    ["Endpoint", `${record.method} ${record.path}`],
    ["Client IP", admin ? record.client?.ip ?? null : h("span", { class: "muted" }, "admins only (personal data)")],
    ["User agent", record.client?.user_agent ?? null],
  ]));
  if (Object.keys(m.properties || {}).length) {
    panel.append(h("h4", null, "Properties"), facts(Object.entries(m.properties)));
  }
  panel.append(h("h4", null, "Request parameters"));
  if (!record.request) panel.append(hiddenForViewer());
  else if (Object.keys(record.request.params || {}).length) {
    panel.append(facts(Object.entries(record.request.params).map(([k, v]) => [k, typeof v === "string" ? v : prettyJson(v)])));
  } else panel.append(h("p", { class: "muted" }, "No parameters."));
  panel.append(h("h4", null, "Rate-limit state reported on this call"));
  if (!rl) panel.append(h("p", { class: "muted" }, "The provider sent no rate-limit headers."));
  else {
    panel.append(facts([
      ["Requests", windowText(rl.requests)],
      ["Tokens", windowText(rl.tokens)],
      ["Input tokens", rl.input_tokens ? windowText(rl.input_tokens) : undefined],
      ["Output tokens", rl.output_tokens ? windowText(rl.output_tokens) : undefined],
      ["Retry after", rl.retry_after_s !== null && rl.retry_after_s !== undefined ? `${rl.retry_after_s} s` : null],
    ]));
  }
  if (record.parse_notes && record.parse_notes.length) {
    panel.append(h("h4", null, "Parse notes"), h("ul", null, record.parse_notes.map((n) => h("li", null, n))));
  }
}
