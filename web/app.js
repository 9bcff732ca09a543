// The page's entry point: sign-in, the header totals, navigation between views and
// the URL (every view and filter is a query parameter, so a view can be bookmarked).

import * as api from "./api.js";
import { h, clear, fmtInt, fmtCost, errorBox } from "./dom.js";
import { runsView } from "./runs.js";
import { sessionsView, agentsView, statsView, rateLimitsView } from "./views.js";

const VIEWS = {
  runs: runsView,
  sessions: sessionsView,
  agents: agentsView,
  stats: statsView,
  ratelimits: rateLimitsView,
};

const main = document.getElementById("main");
const statsBar = document.getElementById("stats-bar");
const login = document.getElementById("login");
let cleanup = null;

/** What views share: who is signed in, navigation, the header totals. */
const ctx = {
  who: null,
  params() {
    return new URLSearchParams(location.search);
  },
  /** Replaces the URL's query (push: a new history entry) and re-renders when asked. */
  setParams(params, { push = true, render = false } = {}) {
    const q = params.toString();
    const target = q ? `/?${q}` : "/";
    if (target !== `${location.pathname}${location.search}`) {
      if (push) history.pushState(null, "", target);
      else history.replaceState(null, "", target);
    }
    if (render) route();
  },
  refreshSummary: throttle(() => loadSummary(), 2000),
  setLive(on) {
    const dot = document.getElementById("live");
    dot.classList.toggle("on", on);
    dot.title = on ? "live: new records appear as they are stored" : "not connected to the live stream";
  },
  signedOut() {
    showLogin("The token was refused; sign in again.");
  },
};

function throttle(fn, ms) {
  let last = 0;
  let timer = null;
  return () => {
    const now = Date.now();
    if (now - last >= ms) {
      last = now;
      fn();
    } else if (!timer) {
      timer = setTimeout(() => {
        timer = null;
        last = Date.now();
        fn();
      }, ms - (now - last));
    }
  };
}

/** The browser's UTC offset as the API's `tz` (+HH:MM), when it is a whole quarter hour. */
function tzParam() {
  const minutes = -new Date().getTimezoneOffset();
  if (minutes % 15 !== 0) return "UTC";
  const sign = minutes < 0 ? "-" : "+";
  const abs = Math.abs(minutes);
  return `${sign}${String(Math.floor(abs / 60)).padStart(2, "0")}:${String(abs % 60).padStart(2, "0")}`;
}

async function loadSummary() {
  try {
    const s = await api.get("/summary", { tz: tzParam() });
    const stat = (label, value, cls, title) =>
      h("div", { class: `stat ${cls || ""}`, title }, h("div", { class: "stat-value" }, value), h("div", { class: "stat-label" }, label));
    clear(statsBar).append(
      stat("Total Runs", fmtInt(s.total_runs), "", `${fmtInt(s.total_calls)} calls in all`),
      stat("Today", fmtInt(s.runs_today), "", `${fmtInt(s.calls_today)} calls since ${new Date(s.today_starts_at).toLocaleString()}`),
      stat("Errors (24 h)", fmtInt(s.errors_24h), s.errors_24h > 0 ? "bad" : "", "failed calls in the last 24 hours"),
      stat("Cost Today", fmtCost(s.cost_today_usd), "", `${fmtInt(s.tokens_today?.total)} tokens today`),
    );
  } catch (e) {
    if (e instanceof api.Unauthorized) ctx.signedOut();
  }
}

function showLogin(message) {
  if (cleanup) cleanup();
  cleanup = null;
  clear(main);
  clear(statsBar);
  statsBar.classList.add("hidden");
  document.getElementById("login-error").textContent = message || "";
  login.classList.remove("hidden");
  document.getElementById("token").focus();
}

login.addEventListener("submit", async (event) => {
  event.preventDefault();
  const input = document.getElementById("token");
  api.setToken(input.value.trim());
  input.value = "";
  await boot();
});

document.getElementById("signout").addEventListener("click", () => {
  api.setToken(null);
  ctx.who = null;
  showLogin("");
});

document.getElementById("nav").addEventListener("click", navClick);
document.querySelector(".brand").addEventListener("click", navClick);

function navClick(event) {
  const a = event.target.closest("a[data-nav]");
  if (!a || event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return;
  event.preventDefault();
  ctx.setParams(new URLSearchParams(a.dataset.nav === "runs" ? "" : `view=${a.dataset.nav}`), { render: true });
}

window.addEventListener("popstate", () => route());

// Leaving the page closes the view's stream and timers (a page kept in the
// back/forward cache holds no connection); coming back from that cache draws the
// view again from fresh reads instead of showing what was pending when it left.
window.addEventListener("pagehide", () => {
  if (cleanup) cleanup();
  cleanup = null;
});
window.addEventListener("pageshow", (event) => {
  if (event.persisted) route();
});

function route() {
  if (!ctx.who) return;
  if (cleanup) cleanup();
  cleanup = null;
  const params = ctx.params();
  const name = VIEWS[params.get("view")] ? params.get("view") : "runs";
  for (const a of document.querySelectorAll("#nav a")) {
    a.classList.toggle("active", a.dataset.nav === name);
    if (a.dataset.nav === name) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  statsBar.classList.toggle("hidden", name !== "runs");
  if (name === "runs") loadSummary();
  clear(main);
  const stop = VIEWS[name](main, params, ctx);
  cleanup = typeof stop === "function" ? stop : null;
}

async function boot() {
  try {
    // Without a token, ask first whether one is needed: a /whoami refused with 401
    // would be a failed request (an error in the browser's console) on every visit.
    if (!api.hasToken() && (await api.get("/access")).tokens_required) {
      showLogin("");
      return;
    }
    ctx.who = await api.get("/whoami");
  } catch (e) {
    if (e instanceof api.Unauthorized) {
      showLogin(api.token() ? "That token was not accepted." : "");
    } else {
      clear(main).append(errorBox(`The read API did not answer: ${e.message}`));
    }
    return;
  }
  login.classList.add("hidden");
  const who = document.getElementById("who");
  who.textContent = ctx.who.tokens_required
    ? `${ctx.who.name} · ${ctx.who.role}${ctx.who.tenant ? ` · tenant ${ctx.who.tenant}` : ""}`
    : "";
  document.getElementById("signout").classList.toggle("hidden", !ctx.who.tokens_required);
  route();
}

boot();
