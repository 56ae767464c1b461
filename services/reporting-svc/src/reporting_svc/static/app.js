/* Ballast reporting dashboard: vanilla JS over this service's own REST API.
 *
 * Routes (in the URL hash): #/  overview · #/runs  runs · #/runs/<id>  one run ·
 * #/accounts/<id>  one account · #/review  proposals held for review · #/review/<id>  one
 * proposal (approve, reject, edit; its decision history) · #/exceptions  open breaks and
 * custodian exceptions (resolve: keep ours, accept the custodian's). Every view builds its layout once and re-loads its data on
 * refresh, so filters and focus survive the auto-refresh.
 *
 * Signing in: every data call carries a bearer token (docs/auth.md). The page takes it from
 * the sign-in form, or from `#token=<JWT>` in the URL (what `make demo` prints; a fragment
 * never reaches a server), and keeps it for this browser tab only (sessionStorage).
 */
"use strict";

const REFRESH_MS = 5000;
const PAGE_SIZE = 25;

// ---------------------------------------------------------------------------------------------
// helpers

function esc(value) {
  return String(value ?? "").replace(/[&<>"']/g, (c) => ({
    "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;",
  })[c]);
}

const TOKEN_KEY = "ballast.token";

function token() { return sessionStorage.getItem(TOKEN_KEY); }

// The token's claims, for showing who is signed in (the services verify it; this does not).
function claims(jwt) {
  try {
    const part = jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part.padEnd(part.length + (4 - part.length % 4) % 4, "=")));
  } catch (_) {
    return null;
  }
}

async function api(path) {
  const headers = { Accept: "application/json" };
  if (token()) headers.Authorization = "Bearer " + token();
  const response = await fetch(path, { headers });
  if (response.status === 401) {
    let detail = "Sign in to see this tenant's data.";
    try { detail = (await response.json()).detail || detail; } catch (_) { /* not JSON */ }
    showSignIn(detail);
    const error = new Error(detail);
    error.status = 401;
    throw error;
  }
  if (!response.ok) {
    let detail = response.statusText;
    try {
      const problem = await response.json();
      detail = problem.detail || problem.title || detail;
    } catch (_) { /* not JSON */ }
    const error = new Error(detail);
    error.status = response.status;
    throw error;
  }
  return response.json();
}

const moneyFormat = new Intl.NumberFormat("en-US", {
  style: "currency", currency: "USD", minimumFractionDigits: 2, maximumFractionDigits: 2,
});
const compactMoney = new Intl.NumberFormat("en-US", {
  style: "currency", currency: "USD", notation: "compact", maximumFractionDigits: 2,
});

function money(s, compact = false) {
  if (s === null || s === undefined) return "—";
  return (compact ? compactMoney : moneyFormat).format(Number(s));
}
function pct(s, digits = 2) {
  if (s === null || s === undefined) return "—";
  return (Number(s) * 100).toFixed(digits) + "%";
}
function signedPct(s, digits = 2) {
  if (s === null || s === undefined) return "—";
  const v = Number(s) * 100;
  return (v > 0 ? "+" : v < 0 ? "−" : "") + Math.abs(v).toFixed(digits) + "%";
}
function qty(s) {
  if (s === null || s === undefined) return "—";
  return Number(s).toLocaleString("en-US", { maximumFractionDigits: 6 });
}
function count(n) { return Number(n || 0).toLocaleString("en-US"); }
function when(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  return d.toLocaleString("en-US", {
    month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit",
  });
}
function shortId(id) { return String(id).slice(0, 8); }

function card(label, value, sub = "", alert = false) {
  return `<div class="card${alert ? " alert" : ""}"><div class="label">${esc(label)}</div>` +
    `<div class="value">${value}</div><div class="sub">${sub}</div></div>`;
}

const STATUS_BADGE = {
  filled: ["good", "Filled"],
  partially_filled: ["warn", "Partially filled"],
  approved: ["info", "Approved · sent"],
  proposed: ["", "Awaiting approval"],
  rejected: ["bad", "Rejected"],
  declined: ["", "Declined"],
  active: ["good", "Active"],
  suspended: ["warn", "Suspended"],
  closed: ["", "Closed"],
};
function badge(status) {
  const [cls, text] = STATUS_BADGE[status] || ["", status];
  return `<span class="badge ${cls}">${esc(text)}</span>`;
}

// Held from trading by the custodian's reconciliation (trading-hold-changed): the reason in words.
function heldBadge(a) {
  if (!a.held) return "";
  const title = `${a.held_reason || "held from trading"}${a.held_since ? ` · since ${when(a.held_since)}` : ""}`;
  return `<span class="badge bad held" title="${esc(title)}">Held</span>`;
}

function heldNote(a) {
  if (!a.held) return "";
  return `<div class="held-reason small">${esc(a.held_reason || "held from trading")}</div>`;
}

function runBar(run, big = false) {
  const total = run.trades || 0;
  if (!total) {
    return `<div class="progress${big ? " big" : ""}"><span class="seg-filled" style="width:${run.complete ? 100 : 0}%"></span></div>`;
  }
  const segs = [
    ["seg-filled", run.trades_filled],
    ["seg-rejected", run.trades_rejected],
    ["seg-declined", run.trades_declined],
    ["seg-partial", run.trades_partially_filled],
    ["seg-approved", run.trades_open - run.trades_awaiting_approval],
    ["seg-proposed", run.trades_awaiting_approval],
  ];
  const parts = segs.filter(([, n]) => n > 0).map(([cls, n]) =>
    `<span class="${cls}" style="width:${(100 * n) / total}%" title="${n}"></span>`);
  return `<div class="progress${big ? " big" : ""}">${parts.join("")}</div>`;
}

const TRIGGERS = {
  "model-change": "Model change", scan: "Drift scan", "interval-scan": "Scheduled drift scan",
  harvest: "Tax-loss harvest", "interval-harvest": "Scheduled tax-loss harvest", manual: "Manual run",
  cash: "Cash requests",
};

// What started the run: a model change names its model; a scan or harvest covers the book.
function runTitle(run) {
  const what = TRIGGERS[run.trigger] || (run.kind ? run.kind : "Rebalance run");
  if (run.model_id && run.model_id !== "*") {
    return `${esc(what)} · ${esc(run.model_id)} <span class="muted small">v${esc(run.model_version)}</span>`;
  }
  return esc(what);
}

function chunkState(run) {
  if (run.chunks === null || run.chunks === undefined) return `<span class="muted small">chunks not reported yet</span>`;
  const failed = run.chunks_failed ? ` · <span style="color:var(--bad)">${count(run.chunks_failed)} failed</span>` : "";
  return `<span class="small">${count(run.chunks_completed + run.chunks_failed)} / ${count(run.chunks)} chunks${failed}</span>`;
}

function runState(run) {
  if (run.complete) return `<span class="badge good">Complete</span>`;
  if (run.chunks === null || run.chunks === undefined || run.chunks_completed + run.chunks_failed < run.chunks) {
    return `<span class="badge info">Running chunks</span>`;
  }
  if (run.trades_awaiting_approval > 0 && run.trades_awaiting_approval === run.trades_open &&
      run.trades_partially_filled === 0 && run.fills_reflected === run.fills) {
    return `<span class="badge">Awaiting approval</span>`;
  }
  return `<span class="badge info">In progress</span>`;
}

function driftMeter(drift, tolerance, out, scale) {
  if (drift === null || drift === undefined) return `<span class="muted">—</span>`;
  const width = Math.min(100, (100 * Number(drift)) / scale);
  const tol = Math.min(100, (100 * Number(tolerance)) / scale);
  return `<div class="meter" title="tolerance ${pct(tolerance)}">` +
    `<div class="track"><div class="fill${out ? " bad" : ""}" style="width:${width}%"></div>` +
    `<div class="tol" style="left:${tol}%"></div></div>` +
    `<span class="num">${pct(drift)}</span></div>`;
}

function driftBar(difference, scale) {
  if (difference === null || difference === undefined) return "";
  const v = Number(difference);
  const half = Math.min(50, (50 * Math.abs(v)) / scale);
  const cls = v >= 0 ? "over" : "under";
  const style = v >= 0 ? `left:50%;width:${half}%` : `left:${50 - half}%;width:${half}%`;
  return `<div class="drift" title="${signedPct(v)} vs target"><span class="${cls}" style="${style}"></span></div>`;
}

function errorBox(error) {
  return `<div class="error">${esc(error.status === 404 ? "Not found: " : "Could not load: ")}${esc(error.message)}</div>`;
}

// ---------------------------------------------------------------------------------------------
// views: each returns a refresh function

const accountsState = {
  sort: "max_drift", order: "desc", search: "", model_id: "", out_of_tolerance: "", status: "",
  offset: 0,
};

function overview(view) {
  view.innerHTML = `
    <div class="page-head"><div><h1>Overview</h1>
      <div class="muted">Every account's book of record against its model, and the rebalance runs moving it there.</div></div></div>
    <div id="cards" class="cards"></div>
    <section class="panel">
      <div class="panel-head"><h2>Recent rebalance runs</h2><div class="spacer"></div><a href="#/runs">All runs →</a></div>
      <div id="runs"></div>
    </section>
    <section class="panel">
      <div class="panel-head">
        <h2>Accounts</h2><div class="spacer"></div>
        <div class="filters">
          <input type="search" id="f-search" placeholder="Search account or name" value="${esc(accountsState.search)}">
          <select id="f-model"><option value="">All models</option></select>
          <select id="f-oot">
            <option value="">Any drift</option>
            <option value="true">Out of tolerance</option>
            <option value="false">Within tolerance</option>
          </select>
          <select id="f-status">
            <option value="">Any status</option><option value="active">Active</option>
            <option value="suspended">Suspended</option><option value="closed">Closed</option>
          </select>
        </div>
      </div>
      <div id="accounts"></div>
      <div class="pager"><span id="page-info" class="muted small"></span>
        <button id="prev">← Previous</button><button id="next">Next →</button></div>
    </section>`;

  const search = view.querySelector("#f-search");
  const model = view.querySelector("#f-model");
  const oot = view.querySelector("#f-oot");
  const status = view.querySelector("#f-status");
  oot.value = accountsState.out_of_tolerance;
  status.value = accountsState.status;
  let typing;
  search.addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(() => { accountsState.search = search.value.trim(); accountsState.offset = 0; loadAccounts(); }, 250);
  });
  for (const [el, key] of [[model, "model_id"], [oot, "out_of_tolerance"], [status, "status"]]) {
    el.addEventListener("change", () => { accountsState[key] = el.value; accountsState.offset = 0; loadAccounts(); });
  }
  view.querySelector("#prev").addEventListener("click", () => {
    accountsState.offset = Math.max(0, accountsState.offset - PAGE_SIZE); loadAccounts();
  });
  view.querySelector("#next").addEventListener("click", () => {
    accountsState.offset += PAGE_SIZE; loadAccounts();
  });

  async function loadCards() {
    const s = await api("/summary");
    const by = s.trades_by_status || {};
    const open = (by.proposed || 0) + (by.approved || 0);
    view.querySelector("#cards").innerHTML = [
      card("Accounts", count(s.accounts), `${count(s.models)} models · ${count(s.securities)} securities`),
      card("Out of tolerance", count(s.accounts_out_of_tolerance),
        s.accounts_measured ? `${pct(s.accounts_out_of_tolerance / s.accounts_measured, 1)} of ${count(s.accounts_measured)} measured by the engine` : "no account measured yet", s.accounts_out_of_tolerance > 0),
      card("Market value", money(s.total_market_value, true), "cash and priced positions"),
      card("Rebalance runs", count(s.runs), `${count(s.proposals)} proposals`),
      card("Trades", count(s.trades), `${count(by.filled)} filled · ${count(by.partially_filled)} partial · ${count(open)} open · ${count(by.rejected)} rejected`),
      card("Fills in holdings", `${count(s.fills_reflected)}<span class="muted small"> / ${count(s.fills)}</span>`,
        "fills reflected by the book of record"),
    ].join("");
  }

  async function loadModels() {
    const models = (await api("/models?limit=1000")).items;
    const current = accountsState.model_id;
    model.innerHTML = `<option value="">All models</option>` + models.map((m) =>
      `<option value="${esc(m.model_id)}">${esc(m.name)} (v${m.version})</option>`).join("");
    model.value = current;
  }

  async function loadRuns() {
    const runs = (await api("/runs?limit=6")).items;
    view.querySelector("#runs").innerHTML = runs.length ? runsTable(runs) :
      `<div class="empty">No rebalance runs yet. A model change starts one.</div>`;
  }

  async function loadAccounts() {
    const q = new URLSearchParams({ limit: PAGE_SIZE, offset: accountsState.offset, sort: accountsState.sort, order: accountsState.order });
    for (const key of ["search", "model_id", "out_of_tolerance", "status"]) {
      if (accountsState[key]) q.set(key, accountsState[key]);
    }
    const page = await api(`/accounts?${q}`);
    // One scale for the whole page, so bars compare across rows.
    const scale = Math.max(0.0001, ...page.items.map((a) => Math.max(Number(a.max_drift || 0), Number(a.tolerance) * 2)));
    const cols = [
      ["account_id", "Account"], ["model_id", "Model"], ["status", "Status"],
      ["market_value", "Market value", "num"], ["cash", "Cash", "num"], ["max_drift", "Drift (engine's verdict)"],
      [null, "Measured"],
    ];
    const head = cols.map(([key, label, cls]) => {
      if (!key) return `<th>${label}</th>`;
      const arrow = accountsState.sort === key ? `<span class="arrow">${accountsState.order === "asc" ? "▲" : "▼"}</span>` : "";
      return `<th class="sortable ${cls || ""}" data-sort="${key}">${label}${arrow}</th>`;
    }).join("");
    const rows = page.items.map((a) => `
      <tr>
        <td><a href="#/accounts/${encodeURIComponent(a.account_id)}" class="mono">${esc(a.account_id)}</a>
            <div class="small muted">${esc(a.name)}</div></td>
        <td>${a.model_id ? `${esc(a.model_name || a.model_id)} <span class="muted small">v${esc(a.model_version ?? "?")}</span>` : `<span class="muted">none</span>`}</td>
        <td>${badge(a.status)} ${heldBadge(a)}${heldNote(a)}</td>
        <td class="num">${money(a.market_value)}</td>
        <td class="num">${money(a.cash)}</td>
        <td>${driftMeter(a.max_drift, a.tolerance, a.out_of_tolerance, scale)}</td>
        <td class="small">${a.last_measured ? `<a href="#/runs/${a.last_measured.run_id}">run ${shortId(a.last_measured.run_id)}</a> <span class="muted">${esc(when(a.last_measured.measured_at))}</span>` : `<span class="muted">never</span>`}</td>
      </tr>`).join("");
    view.querySelector("#accounts").innerHTML = page.items.length ?
      `<table><thead><tr>${head}</tr></thead><tbody>${rows}</tbody></table>` :
      `<table><thead><tr>${head}</tr></thead></table><div class="empty">No accounts match.</div>`;
    for (const th of view.querySelectorAll("th[data-sort]")) {
      th.addEventListener("click", () => {
        const key = th.dataset.sort;
        if (accountsState.sort === key) accountsState.order = accountsState.order === "asc" ? "desc" : "asc";
        else { accountsState.sort = key; accountsState.order = ["market_value", "cash", "max_drift"].includes(key) ? "desc" : "asc"; }
        accountsState.offset = 0;
        loadAccounts();
      });
    }
    const first = page.total ? page.offset + 1 : 0;
    view.querySelector("#page-info").textContent =
      `${count(first)}–${count(page.offset + page.items.length)} of ${count(page.total)}`;
    view.querySelector("#prev").disabled = page.offset === 0;
    view.querySelector("#next").disabled = page.next_offset === null;
  }

  return () => Promise.all([loadCards(), loadModels(), loadRuns(), loadAccounts()]);
}

function runsTable(runs) {
  const rows = runs.map((r) => `
    <tr>
      <td><a class="mono" href="#/runs/${r.run_id}">${shortId(r.run_id)}</a></td>
      <td>${runTitle(r)}<div>${chunkState(r)}</div></td>
      <td class="small">${esc(when(r.first_event_at))}</td>
      <td class="num">${count(r.accounts_measured)} <span class="muted small">/ ${count(r.accounts_out_of_tolerance)} out</span></td>
      <td class="num">${count(r.trades)}</td>
      <td style="min-width:180px">${runBar(r)}<div class="small muted">${count(r.trades_filled)} filled · ${count(r.trades_partially_filled)} partial · ${count(r.trades_rejected)} rejected · ${count(r.trades_declined)} declined · ${count(r.trades_open)} open</div></td>
      <td class="num">${count(r.fills_reflected)} <span class="muted small">/ ${count(r.fills)}</span></td>
      <td>${runState(r)}</td>
    </tr>`).join("");
  return `<table><thead><tr><th>Run</th><th>What</th><th>Started</th><th class="num">Accounts</th>
    <th class="num">Trades</th><th>Progress</th><th class="num">Fills in holdings</th><th>State</th></tr></thead>
    <tbody>${rows}</tbody></table>`;
}

function runsPage(view) {
  view.innerHTML = `
    <div class="page-head"><div><div class="crumbs"><a href="#/">Overview</a> / Runs</div><h1>Rebalance runs</h1>
      <div class="muted">A run starts when a model changes (every following account is rebalanced), on a drift scan or on a tax-loss harvest; it is worked in chunks of accounts.</div></div>
      <div class="filters"><select id="f-model"><option value="">All models</option></select></div></div>
    <section class="panel"><div id="runs"></div></section>`;
  const model = view.querySelector("#f-model");
  model.addEventListener("change", () => load());
  async function load() {
    const models = (await api("/models?limit=1000")).items;
    const current = model.value;
    model.innerHTML = `<option value="">All models</option>` + models.map((m) =>
      `<option value="${esc(m.model_id)}">${esc(m.name)}</option>`).join("");
    model.value = current;
    const q = new URLSearchParams({ limit: 100 });
    if (model.value) q.set("model_id", model.value);
    const runs = (await api(`/runs?${q}`)).items;
    view.querySelector("#runs").innerHTML = runs.length ? runsTable(runs) : `<div class="empty">No runs.</div>`;
  }
  return load;
}

function runPage(view, runId) {
  view.innerHTML = `<div id="head"></div><div id="cards" class="cards"></div>
    <section class="panel"><div class="panel-head"><h2>Progress</h2></div><div class="panel-body" id="bar"></div></section>
    <section class="panel"><div class="panel-head"><h2>Accounts in this run</h2><div class="spacer"></div><span class="muted small">largest measured drift first</span></div><div id="accounts"></div></section>`;
  return async () => {
    const [run, accounts] = await Promise.all([
      api(`/runs/${encodeURIComponent(runId)}`),
      api(`/runs/${encodeURIComponent(runId)}/accounts?limit=500`).then((page) => page.items),
    ]);
    view.querySelector("#head").innerHTML = `<div class="page-head"><div>
      <div class="crumbs"><a href="#/">Overview</a> / <a href="#/runs">Runs</a> / <span class="mono">${shortId(run.run_id)}</span></div>
      <h1>${runTitle(run)}</h1>
      <div class="muted mono small">${esc(run.run_id)}</div></div><div>${runState(run)}</div></div>`;
    view.querySelector("#cards").innerHTML = [
      card("Chunks", run.chunks === null ? "—" : `${count(run.chunks_completed + run.chunks_failed)}<span class="muted small"> / ${count(run.chunks)}</span>`,
        run.chunks === null ? "not reported yet" : `${count(run.accounts)} accounts · ${count(run.accounts_skipped)} skipped`, run.chunks_failed > 0),
      card("Accounts measured", count(run.accounts_measured), `${count(run.accounts_out_of_tolerance)} out of tolerance`, false),
      card("Proposals", `${count(run.proposals)}<span class="muted small"> / ${count(run.expected_proposals)}</span>`, `${count(run.proposals_approved)} approved`),
      card("Trades", `${count(run.trades)}<span class="muted small"> / ${count(run.expected_trades)}</span>`, `${count(run.trades_awaiting_approval)} awaiting approval`),
      card("Filled", count(run.trades_filled), `${count(run.trades_partially_filled)} partially`),
      card("Rejected", count(run.trades_rejected), "by the custodian", run.trades_rejected > 0),
      card("Estimated tax", run.estimated_tax != null ? money(run.estimated_tax) : "—",
        run.estimated_tax != null ? (Number(run.estimated_tax) < 0 ? "saved by the run's sells" : "on the run's realized gains") : "no tax lots"),
      card("Fills in holdings", `${count(run.fills_reflected)}<span class="muted small"> / ${count(run.fills)}</span>`, "reflected by the book of record"),
    ].join("");
    view.querySelector("#bar").innerHTML = `${runBar(run, true)}
      <div class="legend">
        <span><i class="seg-filled"></i>Filled ${count(run.trades_filled)}</span>
        <span><i class="seg-rejected"></i>Rejected ${count(run.trades_rejected)}</span>
        <span><i class="seg-declined"></i>Declined ${count(run.trades_declined)}</span>
        <span><i class="seg-partial"></i>Partially filled ${count(run.trades_partially_filled)}</span>
        <span><i class="seg-approved"></i>Approved, not filled ${count(run.trades_open - run.trades_awaiting_approval)}</span>
        <span><i class="seg-proposed"></i>Awaiting approval ${count(run.trades_awaiting_approval)}</span>
      </div>
      <dl class="kv small" style="margin-top:14px">
        <dt>First event</dt><dd>${esc(when(run.first_event_at))}</dd>
        <dt>Last event</dt><dd>${esc(when(run.last_event_at))}</dd>
        <dt>Last reconciled</dt><dd>${esc(when(run.last_reconciled_at))}</dd>
        <dt>Complete</dt><dd>${run.complete ? "yes: every chunk in, every trade filled, rejected or declined, every fill in holdings" : "not yet"}</dd>
        ${run.failed_chunks.map((f) => `<dt>Chunk ${f.chunk} failed</dt><dd>${count(f.accounts)} accounts: ${esc(f.error || "no reason given")}</dd>`).join("")}
      </dl>`;
    const rows = accounts.map((a) => {
      const done = a.trades_filled + a.trades_rejected + a.trades_declined;
      let state = `<span class="badge info">${count(a.trades_open)} open</span>`;
      if (a.trades === 0) state = `<span class="muted">no trades</span>`;
      else if (done === a.trades && a.fills_reflected === a.fills) state = `<span class="badge good">Done</span>`;
      else if (done === a.trades) state = `<span class="badge warn">Awaiting holdings</span>`;
      return `<tr>
        <td><a class="mono" href="#/accounts/${encodeURIComponent(a.account_id)}">${esc(a.account_id)}</a>
          <div class="small muted">${esc(a.name || "")}</div></td>
        <td class="num">${money(a.total_value)}</td>
        <td class="num">${pct(a.max_abs_drift)}</td>
        <td>${a.out_of_tolerance ? `<span class="badge bad">Out</span>` : a.out_of_tolerance === false ? `<span class="badge good">Within</span>` : ""}</td>
        <td class="num">${count(a.trades)}</td>
        <td class="num">${count(a.trades_filled)} / ${count(a.trades_rejected)}</td>
        <td class="num">${count(a.fills_reflected)} / ${count(a.fills)}</td>
        <td>${state}</td></tr>`;
    }).join("");
    view.querySelector("#accounts").innerHTML = accounts.length ? `<table><thead><tr>
      <th>Account</th><th class="num">Value measured</th><th class="num">Max drift</th><th>Tolerance</th>
      <th class="num">Trades</th><th class="num">Filled / rejected</th><th class="num">Fills in holdings</th><th>State</th>
      </tr></thead><tbody>${rows}</tbody></table>` : `<div class="empty">No accounts yet.</div>`;
  };
}

function accountPage(view, accountId) {
  view.innerHTML = `<div id="head"></div><div id="cards" class="cards"></div>
    <section class="panel"><div class="panel-head"><h2>Holdings vs model</h2><div class="spacer"></div>
      <span class="muted small" id="asof"></span></div><div id="holdings"></div></section>
    <section class="panel"><div class="panel-head"><h2>Tax lots</h2><div class="spacer"></div>
      <span class="muted small" id="lotsum"></span></div><div id="lots"></div></section>
    <section class="panel"><div class="panel-head"><h2>Trades</h2></div><div id="trades"></div></section>`;
  const id = encodeURIComponent(accountId);
  return async () => {
    const [a, h, trades, lots] = await Promise.all([
      api(`/accounts/${id}`), api(`/accounts/${id}/holdings`), api(`/accounts/${id}/trades`).then((page) => page.items),
      api(`/accounts/${id}/lots`),
    ]);
    view.querySelector("#head").innerHTML = `<div class="page-head"><div>
      <div class="crumbs"><a href="#/">Overview</a> / Accounts / <span class="mono">${esc(a.account_id)}</span></div>
      <h1>${esc(a.name)}</h1>
      <div class="muted"><span class="mono">${esc(a.account_id)}</span> · household ${esc(a.household_id)} ·
        ${esc(a.account_type === "ira" ? "IRA" : "Taxable")} ·
        ${a.model_id ? `model ${esc(a.model_name || a.model_id)} v${esc(a.model_version ?? "?")}` :
          a.sleeves && a.sleeves.length ? `UMA: ${a.sleeves.map((s) => `${esc(s.sleeve_id)} ${pct(s.weight, 0)} (${esc(s.model_id)})`).join(", ")}` : "no model"} ·
        ${a.auto_approve ? "trades approved automatically" : "trades wait for review"}</div>
      ${a.held ? `<div class="held-banner"><span class="badge bad">Held from trading</span>
        ${esc(a.held_reason || "")} <span class="muted small">${a.held_by_custodian ? `· custodian ${esc(a.held_by_custodian)}` : ""}${a.held_since ? ` · since ${esc(when(a.held_since))}` : ""}</span></div>` : ""}</div>
      <div>${badge(a.status)} ${heldBadge(a)}</div></div>`;
    const by = a.trades_by_status || {};
    view.querySelector("#cards").innerHTML = [
      card("Market value", money(a.market_value), a.unpriced_positions ? `${a.unpriced_positions} position(s) without a price` : "cash and positions"),
      card("Cash", money(a.cash), a.market_value && Number(a.market_value) > 0 ? `${pct(Number(a.cash) / Number(a.market_value))} of value` : ""),
      card("Drift", pct(a.max_drift), a.last_measured ? `the engine's verdict · tolerance ${pct(a.tolerance)}` : "not measured by a run yet", a.out_of_tolerance),
      card("Last measured", a.last_measured ? pct(a.last_measured.max_abs_drift) : "—",
        a.last_measured ? `<a href="#/runs/${a.last_measured.run_id}">run ${shortId(a.last_measured.run_id)}</a> · ${esc(when(a.last_measured.measured_at))}` : "no run yet"),
      card("Trades", count(Object.values(by).reduce((x, y) => x + y, 0)),
        `${count(by.filled)} filled · ${count(by.partially_filled)} partial · ${count((by.proposed || 0) + (by.approved || 0))} open · ${count(by.rejected)} rejected`),
    ].join("");
    view.querySelector("#asof").textContent = h.as_of ? `book of record as of ${h.as_of}` : "no holdings received yet";
    const scale = Math.max(0.02, ...h.lines.filter((l) => l.kind === "security" && l.difference !== null).map((l) => Math.abs(Number(l.difference))));
    const rows = h.lines.map((l) => `
      <tr class="${l.kind === "cash" ? "cash" : ""}">
        <td><strong>${esc(l.symbol)}</strong></td>
        <td>${esc(l.name || "")}<div class="small muted">${esc(l.sector || l.asset_class || "")}</div></td>
        <td class="num">${l.kind === "cash" ? "" : qty(l.quantity)}</td>
        <td class="num">${l.kind === "cash" ? "" : money(l.price)}</td>
        <td class="num">${money(l.market_value)}</td>
        <td class="num">${pct(l.weight)}</td>
        <td class="num">${l.kind === "cash" ? "" : pct(l.target_weight)}</td>
        <td class="num">${l.kind === "cash" ? "" : signedPct(l.difference)}</td>
        <td>${l.kind === "cash" ? "" : driftBar(l.difference, scale)}</td>
      </tr>`).join("");
    view.querySelector("#holdings").innerHTML = `<table><thead><tr><th>Symbol</th><th>Security</th>
      <th class="num">Quantity</th><th class="num">Price</th><th class="num">Market value</th>
      <th class="num">Weight</th><th class="num">Target</th><th class="num">Difference</th>
      <th>Under ◂ ▸ over</th></tr></thead><tbody>${rows}</tbody></table>`;
    view.querySelector("#lotsum").textContent = lots.lots.length ?
      `unrealized: short-term ${money(lots.unrealized_short_term)} · long-term ${money(lots.unrealized_long_term)}` +
      (lots.unpriced_lots ? ` · ${lots.unpriced_lots} lot(s) without a price` : "") : "";
    const lotRows = lots.lots.map((l) => `
      <tr>
        <td><strong>${esc(l.symbol)}</strong><div class="small muted mono">${esc(l.lot_id)}</div></td>
        <td class="small">${esc(l.acquired)}</td>
        <td>${l.term === "long" ? `<span class="badge good">Long</span>` : `<span class="badge">Short</span>`}</td>
        <td class="num">${qty(l.quantity)}</td>
        <td class="num">${money(l.cost_basis)}${Number(l.wash_adjustment) ? `<div class="small muted">incl. ${money(l.wash_adjustment)} wash sale</div>` : ""}</td>
        <td class="num">${money(l.market_value)}</td>
        <td class="num ${Number(l.unrealized_gain) < 0 ? "side-sell" : ""}">${money(l.unrealized_gain)}</td>
        <td class="small muted">${esc(l.sleeve_id || "")}</td>
      </tr>`).join("");
    view.querySelector("#lots").innerHTML = lots.lots.length ? `<table><thead><tr><th>Lot</th><th>Acquired</th>
      <th>Term</th><th class="num">Quantity</th><th class="num">Cost basis</th><th class="num">Market value</th>
      <th class="num">Unrealized</th><th>Sleeve</th></tr></thead><tbody>${lotRows}</tbody></table>` :
      `<div class="empty">No tax lots received yet (the book of record sends them with holdings).</div>`;
    const tradeRows = trades.map((t) => `
      <tr>
        <td class="small">${esc(when(t.proposed_at || t.approved_at))}</td>
        <td class="side-${esc(t.side)}">${esc(t.side.toUpperCase())}</td>
        <td><strong>${esc(t.symbol)}</strong></td>
        <td class="num">${qty(t.quantity)}</td>
        <td class="num">${qty(t.filled_quantity)}</td>
        <td class="num">${t.average_price ? money(t.average_price) : `<span class="muted">est. ${money(t.estimated_price)}</span>`}</td>
        <td>${badge(t.status)}${t.fills ? `<div class="small muted">${t.fills_reflected}/${t.fills} fills in holdings</div>` : ""}</td>
        <td class="explain">${t.reason ? `<span class="tag">${esc(t.reason)}</span>` : ""}${esc(t.explanation || "")}
          ${t.rejected_reason ? `<div class="small" style="color:var(--bad)">Rejected: ${esc(t.rejected_reason)}</div>` : ""}
          ${t.estimated_tax != null ? `<div class="small muted">estimated tax ${money(t.estimated_tax)}${t.lot_ids && t.lot_ids.length ? ` · lots ${esc(t.lot_ids.join(", "))}` : ""}</div>` : ""}
          ${t.sleeve_id ? `<div class="small muted">sleeve ${esc(t.sleeve_id)}</div>` : ""}
          ${t.declined_by ? `<div class="small muted">declined by ${esc(t.declined_by)}: ${esc(t.declined_reason || "")}</div>` : ""}
          ${t.approved_by ? `<div class="small muted">approved by ${esc(t.approved_by)}</div>` : ""}</td>
        <td class="small">${t.run_id ? `<a class="mono" href="#/runs/${t.run_id}">${shortId(t.run_id)}</a>` : ""}</td>
      </tr>`).join("");
    view.querySelector("#trades").innerHTML = trades.length ? `<table><thead><tr><th>When</th><th>Side</th>
      <th>Symbol</th><th class="num">Quantity</th><th class="num">Filled</th><th class="num">Avg price</th>
      <th>Status</th><th>Why</th><th>Run</th></tr></thead><tbody>${tradeRows}</tbody></table>` :
      `<div class="empty">No trades for this account.</div>`;
  };
}

// ---------------------------------------------------------------------------------------------
// review: proposals held for a person (account-svc decides; these routes forward to it)

// Roles whose token may decide proposals (docs/auth.md); account-svc checks again.
const DECIDER_ROLES = ["overlay-manager", "compliance", "admin"];

function canDecide() {
  const c = token() ? claims(token()) : null;
  return Boolean(c && (c.roles || []).some((r) => DECIDER_ROLES.includes(r)));
}

// A POST with a JSON body; a failure throws an Error whose message is the problem's detail
// and its field errors ("trades[1].quantity: ..."), with the problem itself as `.problem`.
async function post(path, body) {
  const headers = { Accept: "application/json", "Content-Type": "application/json" };
  if (token()) headers.Authorization = "Bearer " + token();
  if (window.crypto && crypto.randomUUID) headers["Idempotency-Key"] = crypto.randomUUID();
  const response = await fetch(path, { method: "POST", headers, body: JSON.stringify(body) });
  let payload = null;
  try { payload = await response.json(); } catch (_) { /* not JSON */ }
  if (response.status === 401) {
    showSignIn((payload && payload.detail) || "Sign in again to decide proposals.");
  }
  if (!response.ok) {
    const error = new Error(problemText(payload, response.statusText));
    error.status = response.status;
    error.problem = payload;
    throw error;
  }
  return payload;
}

function problemText(problem, fallback = "request failed") {
  if (!problem) return fallback;
  const fields = (problem.errors || []).map((e) => `${e.field}: ${e.message}`);
  return [problem.detail || problem.title || fallback, ...fields].join(" · ");
}

function flash(el, message, ok = false) {
  el.innerHTML = message ? `<div class="${ok ? "notice" : "error"}">${esc(message)}</div>` : "";
}

function sum(values) {
  return values.reduce((total, v) => total + Number(v || 0), 0);
}

// The proposal's figures as account-svc keeps them, else what its trades give.
function proposalValue(p) {
  if (p.buy_value != null && p.sell_value != null) return Number(p.buy_value) + Number(p.sell_value);
  return sum(p.trades.map((t) => t.estimated_value));
}
function proposalTax(p) {
  if (p.estimated_tax != null) return p.estimated_tax;
  const taxes = p.trades.filter((t) => t.estimated_tax != null).map((t) => t.estimated_tax);
  return taxes.length ? sum(taxes) : null;
}
function percentPoints(s) {  // account-svc's percents are points already (3.25 = 3.25%)
  return s === null || s === undefined ? "—" : Number(s).toFixed(2) + "%";
}
function age(iso) {
  const minutes = Math.max(0, (Date.now() - new Date(iso).getTime()) / 60000);
  if (minutes < 60) return `${Math.floor(minutes)} min`;
  if (minutes < 48 * 60) return `${Math.floor(minutes / 60)} h`;
  return `${Math.floor(minutes / 1440)} d`;
}
function routedBy(p) {
  if (!p.routed_by) return `<span class="muted">—</span>`;
  return `<span class="tag">${esc(p.routed_by)}</span>`;
}
function filterOf(routed) {  // "filter:<id>@<version>" -> <id>
  const match = /^filter:(.+)@\d+$/.exec(routed || "");
  return match ? match[1] : null;
}

// The nav link's count: a grouped count at account-svc, so at most every 30 s unless forced.
const HELD_COUNT_MS = 30000;
let heldCountAt = 0;

async function loadHeldCount(force = false) {
  const link = document.getElementById("held-count");
  if (!link || !token() || (!force && Date.now() - heldCountAt < HELD_COUNT_MS)) return;
  heldCountAt = Date.now();
  try {
    const counts = await api("/approvals/counts");
    const held = sum(counts.items.map((c) => c.proposals));
    link.textContent = held ? count(held) : "";
    link.hidden = !held;
  } catch (_) {
    link.hidden = true;  // account-svc unreachable: the Review page says why
  }
}

const reviewState = { routed_by: "", offset: 0, selected: new Set() };

function reviewPage(view) {
  const decider = canDecide();
  view.innerHTML = `
    <div class="page-head"><div><div class="crumbs"><a href="#/">Overview</a> / Review</div>
      <h1>Proposals held for review</h1>
      <div class="muted">Trades waiting for a person: approve, reject with a note, or edit them first. Every decision is recorded with who and when.</div></div>
      <div class="filters"><select id="f-routed"><option value="">Held by any rule</option></select></div></div>
    ${decider ? "" : `<div class="notice">Signed in as ${esc((claims(token())?.roles || []).join(", "))}: you can read proposals; deciding needs overlay-manager, compliance or admin.</div>`}
    <div id="review-message"></div>
    <section class="panel">
      <div class="panel-head"><h2>Pending proposals</h2><div class="spacer"></div>
        ${decider ? `<input type="text" id="bulk-note" class="note" placeholder="Note for the approvals (optional)" maxlength="1000">
        <button id="approve-selected" type="button" disabled>Approve selected</button>
        <button id="approve-filter" type="button" hidden>Approve all this filter selects</button>` : ""}
      </div>
      <div id="proposals"></div>
      <div class="pager"><span id="page-info" class="muted small"></span>
        <button id="prev">← Previous</button><button id="next">Next →</button></div>
    </section>`;
  const routed = view.querySelector("#f-routed");
  const message = view.querySelector("#review-message");
  let nextOffset = null;
  routed.addEventListener("change", () => {
    reviewState.routed_by = routed.value; reviewState.offset = 0; reviewState.selected.clear(); load();
  });
  view.querySelector("#prev").addEventListener("click", () => {
    reviewState.offset = Math.max(0, reviewState.offset - PAGE_SIZE); load();
  });
  view.querySelector("#next").addEventListener("click", () => {
    if (nextOffset !== null) { reviewState.offset = nextOffset; load(); }
  });

  function updateBulk() {
    const button = view.querySelector("#approve-selected");
    if (!button) return;
    button.disabled = reviewState.selected.size === 0;
    button.textContent = reviewState.selected.size ? `Approve selected (${reviewState.selected.size})` : "Approve selected";
    const byFilter = view.querySelector("#approve-filter");
    byFilter.hidden = !filterOf(reviewState.routed_by);
  }

  async function approveMany(body, what) {
    const note = view.querySelector("#bulk-note").value.trim();
    if (note) body.note = note;
    try {
      const result = await post("/approvals/proposals/approve", body);
      const skipped = result.skipped || [];
      const details = skipped.slice(0, 5).map((s) => `${shortId(s.proposal_id)}: ${s.reason}`).join("; ");
      flash(message, `${count(result.approved)} ${what} approved` +
        (skipped.length ? `; ${count(skipped.length)} skipped (${details}${skipped.length > 5 ? "; …" : ""})` : ""), true);
      reviewState.selected.clear();
      view.querySelector("#bulk-note").value = "";
    } catch (error) {
      flash(message, `Could not approve: ${error.message}`);
    }
    await load().catch(() => {});  // the next refresh says what failed
    loadHeldCount(true);
  }

  if (decider) {
    view.querySelector("#approve-selected").addEventListener("click", () =>
      approveMany({ proposal_ids: [...reviewState.selected] }, "selected proposal(s)"));
    view.querySelector("#approve-filter").addEventListener("click", () => {
      const filterId = filterOf(reviewState.routed_by);
      if (filterId && confirm(`Approve every pending proposal that filter ${filterId} selects?`)) {
        approveMany({ filter_id: filterId }, `proposal(s) of filter ${filterId}`);
      }
    });
  }

  async function loadRoutes() {
    const counts = (await api("/approvals/counts")).items;
    const current = reviewState.routed_by;
    routed.innerHTML = `<option value="">Held by any rule</option>` + counts.filter((c) => c.routed_by).map((c) =>
      `<option value="${esc(c.routed_by)}">${esc(c.routed_by)} (${count(c.proposals)})</option>`).join("");
    routed.value = current;
    routed.hidden = !counts.some((c) => c.routed_by);
  }

  async function load() {
    const q = new URLSearchParams({ status: "pending", limit: PAGE_SIZE, offset: reviewState.offset });
    if (reviewState.routed_by) q.set("routed_by", reviewState.routed_by);
    const page = await api(`/approvals/proposals?${q}`);
    nextOffset = page.next_offset ?? null;
    const rows = page.items.map((p) => `
      <tr>
        ${decider ? `<td><input type="checkbox" class="pick" data-id="${esc(p.proposal_id)}" ${reviewState.selected.has(p.proposal_id) ? "checked" : ""} aria-label="select proposal ${esc(shortId(p.proposal_id))}"></td>` : ""}
        <td><a class="mono" href="#/review/${encodeURIComponent(p.proposal_id)}">${esc(shortId(p.proposal_id))}</a></td>
        <td><a class="mono" href="#/accounts/${encodeURIComponent(p.account_id)}">${esc(p.account_id)}</a>
          ${p.decision_note ? `<div class="small muted">${esc(p.decision_note)}</div>` : ""}</td>
        <td>${esc(p.model_id)} <span class="muted small">v${esc(p.model_version)}</span></td>
        <td>${routedBy(p)}</td>
        <td class="num">${count(p.trades.length)}</td>
        <td class="num">${money(proposalValue(p))}</td>
        <td class="num">${money(proposalTax(p))}</td>
        <td class="num">${percentPoints(p.turnover_percent)}</td>
        <td class="num" title="${esc(when(p.received_at))}">${esc(age(p.received_at))}</td>
        <td><a href="#/review/${encodeURIComponent(p.proposal_id)}">Review →</a></td>
      </tr>`).join("");
    view.querySelector("#proposals").innerHTML = page.items.length ? `<table><thead><tr>
      ${decider ? `<th><input type="checkbox" id="pick-all" aria-label="select every proposal on this page"></th>` : ""}
      <th>Proposal</th><th>Account</th><th>Model</th><th>Held by</th><th class="num">Trades</th>
      <th class="num">Value</th><th class="num">Est. tax</th><th class="num">Turnover</th><th class="num">Age</th><th></th>
      </tr></thead><tbody>${rows}</tbody></table>` :
      `<div class="empty">Nothing waits for review${reviewState.routed_by ? " from this rule" : ""}.</div>`;
    for (const box of view.querySelectorAll(".pick")) {
      box.addEventListener("change", () => {
        if (box.checked) reviewState.selected.add(box.dataset.id); else reviewState.selected.delete(box.dataset.id);
        updateBulk();
      });
    }
    view.querySelector("#pick-all")?.addEventListener("change", (event) => {
      for (const box of view.querySelectorAll(".pick")) {
        box.checked = event.target.checked;
        if (box.checked) reviewState.selected.add(box.dataset.id); else reviewState.selected.delete(box.dataset.id);
      }
      updateBulk();
    });
    view.querySelector("#page-info").textContent = page.items.length ?
      `${count(reviewState.offset + 1)}–${count(reviewState.offset + page.items.length)}` : "";
    view.querySelector("#prev").disabled = reviewState.offset === 0;
    view.querySelector("#next").disabled = nextOffset === null;
    updateBulk();
  }

  return async () => { await Promise.all([loadRoutes(), load()]); };
}

// What an audit record of a proposal says, in words.
function historyDetail(record) {
  const after = record.after || {};
  const before = record.before || {};
  if (record.action === "edit") {
    const old = new Map((before.trades || []).map((t) => [t.trade_id, t]));
    const kept = new Map((after.trades || []).map((t) => [t.trade_id, t]));
    const changes = [];
    for (const [id, t] of old) {
      const now = kept.get(id);
      if (!now) changes.push(`${t.side} ${t.symbol} removed`);
      else if (Number(now.quantity) !== Number(t.quantity)) changes.push(`${t.side} ${t.symbol} ${qty(t.quantity)} → ${qty(now.quantity)}`);
    }
    return (changes.join(" · ") || "no change") + (after.note ? ` — “${after.note}”` : "");
  }
  const note = after.decision_note;
  const routing = after.routed_by ? ` (routed by ${after.routed_by})` : "";
  return (note ? `“${note}”` : "") + routing;
}

const HISTORY_ACTIONS = {
  approve: ["good", "Approved"], reject: ["bad", "Rejected"], edit: ["info", "Edited"], hold: ["warn", "Held"],
};

function proposalPage(view, proposalId) {
  const decider = canDecide();
  const id = encodeURIComponent(proposalId);
  let editing = false;
  let proposal = null;
  view.innerHTML = `<div id="head"></div><div id="cards" class="cards"></div><div id="message"></div>
    <section class="panel"><div class="panel-head"><h2>Trades</h2><div class="spacer"></div><div id="actions" class="filters"></div></div>
      <div id="trades"></div><div id="decide" class="panel-body" hidden></div></section>
    <section class="panel"><div class="panel-head"><h2>Decision history</h2><div class="spacer"></div>
      <span class="muted small">from account-svc's audit trail</span></div><div id="history"></div></section>`;
  const message = view.querySelector("#message");

  function renderActions() {
    const actions = view.querySelector("#actions");
    const decide = view.querySelector("#decide");
    if (!decider || !proposal || proposal.status !== "pending") {
      actions.innerHTML = proposal && proposal.status === "pending" ? `<span class="muted small">Deciding needs overlay-manager, compliance or admin.</span>` : "";
      decide.hidden = true;
      return;
    }
    if (editing) {
      actions.innerHTML = `<span class="muted small">Change quantities or tick trades to remove, then save.</span>`;
      decide.hidden = false;
      decide.innerHTML = `<div class="decide-row">
        <input type="text" id="edit-note" class="note" placeholder="Why (recorded with the edit)" maxlength="1000">
        <button type="button" id="save-edit" class="primary">Save edit</button>
        <button type="button" id="cancel-edit">Cancel</button></div>`;
      decide.querySelector("#save-edit").addEventListener("click", saveEdit);
      decide.querySelector("#cancel-edit").addEventListener("click", () => { editing = false; flash(message, ""); render(); });
      return;
    }
    actions.innerHTML = `<button type="button" id="edit">Edit</button>`;
    actions.querySelector("#edit").addEventListener("click", () => { editing = true; flash(message, ""); render(); });
    decide.hidden = false;
    decide.innerHTML = `<div class="decide-row">
      <input type="text" id="decision-note" class="note" placeholder="Note (required to reject)" maxlength="1000">
      <button type="button" id="approve" class="primary">Approve</button>
      <button type="button" id="reject" class="danger">Reject</button></div>`;
    decide.querySelector("#approve").addEventListener("click", () => decideProposal("approve"));
    decide.querySelector("#reject").addEventListener("click", () => decideProposal("reject"));
  }

  async function decideProposal(action) {
    const note = view.querySelector("#decision-note").value.trim();
    if (action === "reject" && !note) {
      flash(message, "Say why in the note: a rejection needs one.");
      view.querySelector("#decision-note").focus();
      return;
    }
    try {
      proposal = await post(`/approvals/proposals/${id}/${action}`, note ? { note } : {});
      flash(message, action === "approve" ? "Approved: the trades go to the custodian." : "Rejected: none of the trades will be sent.", true);
    } catch (error) {
      flash(message, `Could not ${action}: ${error.message}`);
    }
    await load().catch(() => {});  // the next refresh says what failed
    loadHeldCount(true);
  }

  async function saveEdit() {
    const trades = [];
    const remove = [];
    for (const row of view.querySelectorAll("tr[data-trade]")) {
      const tradeId = row.dataset.trade;
      const original = proposal.trades.find((t) => t.trade_id === tradeId);
      const input = row.querySelector("input.quantity");
      input.classList.remove("invalid");
      if (row.querySelector("input.remove").checked) remove.push(tradeId);
      else if (input.value.trim() !== String(original.quantity)) trades.push({ trade_id: tradeId, quantity: input.value.trim() });
    }
    const note = view.querySelector("#edit-note").value.trim();
    try {
      proposal = await post(`/approvals/proposals/${id}/edit`, { trades, remove, ...(note ? { note } : {}) });
      editing = false;
      flash(message, "Edited: the proposal waits for approval with the new trades.", true);
    } catch (error) {
      for (const problem of (error.problem && error.problem.errors) || []) {  // mark the inputs named
        const match = /^trades\[(\d+)\]/.exec(problem.field);
        const trade = match && trades[Number(match[1])];
        if (trade) view.querySelector(`tr[data-trade="${trade.trade_id}"] input.quantity`)?.classList.add("invalid");
      }
      flash(message, `Could not save the edit: ${error.message}`);
      return;
    }
    await load().catch(() => {});
  }

  function render() {
    const p = proposal;
    view.querySelector("#head").innerHTML = `<div class="page-head"><div>
      <div class="crumbs"><a href="#/">Overview</a> / <a href="#/review">Review</a> / <span class="mono">${esc(shortId(p.proposal_id))}</span></div>
      <h1>Proposal for <a class="mono" href="#/accounts/${encodeURIComponent(p.account_id)}">${esc(p.account_id)}</a></h1>
      <div class="muted">model ${esc(p.model_id)} v${esc(p.model_version)} ·
        <a href="#/runs/${encodeURIComponent(p.run_id)}">run ${esc(shortId(p.run_id))}</a> ·
        received ${esc(when(p.received_at))}${p.routed_by ? ` · routed by ${routedBy(p)}` : ""}
        ${p.decided_by ? ` · ${esc(p.status)} by ${esc(p.decided_by)} ${esc(when(p.decided_at))}` : ""}</div>
      ${p.decision_note ? `<div class="small">${esc(p.decision_note)}</div>` : ""}</div>
      <div>${badge(p.status === "pending" ? "proposed" : p.status)}</div></div>`;
    const tax = proposalTax(p);
    view.querySelector("#cards").innerHTML = [
      card("Trades", count(p.trades.length), `${count(p.trades.filter((t) => t.side === "buy").length)} buys · ${count(p.trades.filter((t) => t.side === "sell").length)} sells`),
      card("Buys", money(p.buy_value ?? sum(p.trades.filter((t) => t.side === "buy").map((t) => t.estimated_value))), "estimated value"),
      card("Sells", money(p.sell_value ?? sum(p.trades.filter((t) => t.side === "sell").map((t) => t.estimated_value))), "estimated value"),
      card("Estimated tax", money(tax), tax === null ? "not known" : Number(tax) < 0 ? "saved by the sells" : "on the sells' realized gains"),
      card("Turnover", percentPoints(p.turnover_percent), p.account_value != null ? `of ${money(p.account_value)}` : "account value not known"),
      card("Drift", p.drift_before_percent != null ? percentPoints(p.drift_before_percent) : "—",
        p.drift_after_percent != null ? `${percentPoints(p.drift_after_percent)} after (estimated)` : "largest security drift before"),
      ...(p.tracking_error_before_percent != null || p.tracking_error_after_percent != null
        ? [card("Tracking error", `${percentPoints(p.tracking_error_before_percent)} → ${percentPoints(p.tracking_error_after_percent)}`,
            "before → after, yearly, against the index")]
        : []),
    ].join("") + (p.notes && p.notes.length
      ? `<div class="card" style="grid-column: 1 / -1"><div class="label">Notes</div>${p.notes.map((n) => `<div class="small">${esc(n)}</div>`).join("")}</div>`
      : "");
    const rows = p.trades.map((t) => `
      <tr data-trade="${esc(t.trade_id)}">
        <td class="side-${esc(t.side)}">${esc(t.side.toUpperCase())}</td>
        <td><strong>${esc(t.symbol)}</strong>${t.sleeve_id ? `<div class="small muted">sleeve ${esc(t.sleeve_id)}</div>` : ""}</td>
        <td class="num">${editing ? `<input class="quantity" inputmode="decimal" value="${esc(t.quantity)}" aria-label="quantity of ${esc(t.symbol)}">` : qty(t.quantity)}</td>
        <td class="num">${money(t.estimated_price)}</td>
        <td class="num">${money(t.estimated_value)}</td>
        <td class="explain"><span class="tag">${esc(t.reason)}</span>${esc(t.explanation)}
          ${t.lot_ids && t.lot_ids.length ? `<div class="small muted">lots ${esc(t.lot_ids.join(", "))}</div>` : ""}</td>
        <td class="num">${t.estimated_tax != null ? money(t.estimated_tax) : `<span class="muted">—</span>`}</td>
        ${editing ? `<td><label class="small"><input type="checkbox" class="remove"> remove</label></td>` : ""}
      </tr>`).join("");
    view.querySelector("#trades").innerHTML = `<table><thead><tr><th>Side</th><th>Symbol</th>
      <th class="num">Quantity</th><th class="num">Est. price</th><th class="num">Est. value</th><th>Why</th>
      <th class="num">Est. tax</th>${editing ? "<th></th>" : ""}</tr></thead><tbody>${rows}</tbody></table>`;
    renderActions();
  }

  async function loadHistory() {
    const records = (await api(`/approvals/proposals/${id}/history`)).items;
    view.querySelector("#history").innerHTML = records.length ? `<table><thead><tr><th>When</th><th>Who</th><th>What</th><th>Details</th></tr></thead><tbody>
      ${records.map((r) => {
        const [cls, text] = HISTORY_ACTIONS[r.action] || ["", r.action];
        return `<tr><td class="small">${esc(when(r.recorded_at))}</td><td>${esc(r.actor)}</td>
          <td><span class="badge ${cls}">${esc(text)}</span></td><td class="explain">${esc(historyDetail(r))}</td></tr>`;
      }).join("")}</tbody></table>` : `<div class="empty">No decision or edit yet.</div>`;
  }

  async function load() {
    const [p] = await Promise.all([api(`/approvals/proposals/${id}`), loadHistory()]);
    proposal = p;
    if (!editing) render();  // an edit in progress keeps its inputs
  }
  return load;
}

// ---------------------------------------------------------------------------------------------
// exceptions: the custodians' days that do not agree with the book of record (taxlot-svc
// decides; these routes forward to it): open reconciliation breaks, file sets missing, late or
// refused, and securities the security master does not know

// Roles whose token may resolve breaks and exceptions (docs/auth.md); taxlot-svc checks again.
const OPERATOR_ROLES = ["operations", "admin"];

function canOperate() {
  const c = token() ? claims(token()) : null;
  return Boolean(c && (c.roles || []).some((r) => OPERATOR_ROLES.includes(r)));
}

// The nav link's count: open breaks, file-set and security exceptions, at most every 30 s.
const EXCEPTIONS_COUNT_MS = 30000;
let exceptionsCountAt = 0;

async function loadExceptionsCount(force = false) {
  const link = document.getElementById("exceptions-count");
  if (!link || !token() || (!force && Date.now() - exceptionsCountAt < EXCEPTIONS_COUNT_MS)) return;
  exceptionsCountAt = Date.now();
  try {
    const pages = await Promise.all([
      api("/custodian/breaks?status=open&limit=1000"),
      api("/custodian/exceptions?status=open&limit=1000"),
      api("/custodian/unknown-securities?status=open&limit=1000"),
    ]);
    const open = pages[0].breaks.length + pages[1].exceptions.length + pages[2].exceptions.length;
    const more = pages.some((p) => p.next_after !== null);
    link.textContent = open ? count(open) + (more ? "+" : "") : "";
    link.hidden = !open;
  } catch (_) {
    link.hidden = true;  // taxlot-svc unreachable: the Exceptions page says why
  }
}

// One side of a break in words: "10 sh · $100.00 · 2024-01-01", or cash.
function breakSide(side, kind) {
  if (!side) return `<span class="muted">none</span>`;
  if (kind === "cash") return money(side.cash);
  return `${qty(side.quantity)} sh · ${money(side.cost_basis)} · ${esc(side.acquired_on)}`;
}

function policyBadge(policy) {
  const tone = { suspend: "bad", flag: "warn", accept: "info" }[policy] || "";
  return `<span class="badge ${tone}">${esc(policy)}</span>`;
}

const exceptionsState = { custodian: "", after: 0, pages: [] };

function exceptionsPage(view) {
  const operator = canOperate();
  view.innerHTML = `
    <div class="page-head"><div><div class="crumbs"><a href="#/">Overview</a> / Exceptions</div>
      <h1>Exceptions</h1>
      <div class="muted">Where a custodian's day does not agree with the book of record: breaks found lot by lot, file sets missing, late or refused, securities the security master does not know. An account held by one is not traded until it is resolved.</div></div>
      <div class="filters"><input type="search" id="f-custodian" placeholder="Custodian" value="${esc(exceptionsState.custodian)}"></div></div>
    ${operator ? "" : `<div class="notice">Signed in as ${esc((claims(token())?.roles || []).join(", "))}: you can read exceptions; resolving them needs operations or admin.</div>`}
    <div id="exceptions-message"></div>
    <section class="panel">
      <div class="panel-head"><h2>Open breaks</h2><div class="spacer"></div>
        ${operator ? `<input type="text" id="break-note" class="note" placeholder="Note (required to resolve)" maxlength="1000">` : ""}
      </div>
      <div id="breaks"></div>
      <div class="pager"><span id="breaks-info" class="muted small"></span>
        <button id="breaks-first">⇤ First</button><button id="breaks-next">Next →</button></div>
    </section>
    <section class="panel">
      <div class="panel-head"><h2>File sets and securities</h2><div class="spacer"></div>
        ${operator ? `<input type="text" id="exception-note" class="note" placeholder="What was done (required to resolve)" maxlength="2000">` : ""}
      </div>
      <div id="file-exceptions"></div>
    </section>`;
  const message = view.querySelector("#exceptions-message");
  const custodian = view.querySelector("#f-custodian");
  let typing = null;
  let nextAfter = null;
  custodian.addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(() => {
      exceptionsState.custodian = custodian.value.trim();
      exceptionsState.after = 0;
      load();
    }, 250);
  });
  view.querySelector("#breaks-first").addEventListener("click", () => { exceptionsState.after = 0; load(); });
  view.querySelector("#breaks-next").addEventListener("click", () => {
    if (nextAfter !== null) { exceptionsState.after = nextAfter; load(); }
  });

  function noteOf(id) {
    const input = view.querySelector(id);
    const note = input ? input.value.trim() : "";
    if (!note) {
      flash(message, "Write a note first: why the break or exception is resolved so (it is kept in the audit trail).");
      input?.focus();
    }
    return note;
  }

  async function resolveBreak(id, resolution) {
    const note = noteOf("#break-note");
    if (!note) return;
    const words = resolution === "accept-custodian" ? "the custodian's figure accepted" : "ours kept";
    try {
      const result = await post(`/custodian/breaks/${encodeURIComponent(id)}/resolve`, { resolution, note });
      const adjusted = (result.adjustments || []).length;
      flash(message, `Break ${id} resolved: ${words}` +
        (adjusted ? ` (${adjusted} ledger entr${adjusted === 1 ? "y" : "ies"})` : "") +
        (result.account_released ? `; account ${result.account_id} released for trading` : ""), true);
      view.querySelector("#break-note").value = "";
    } catch (error) {
      flash(message, `Could not resolve break ${id}: ${error.message}`);
    }
    await load().catch(() => {});
    loadExceptionsCount(true);
  }

  async function resolveException(path, what) {
    const resolution = noteOf("#exception-note");
    if (!resolution) return;
    try {
      await post(path, { resolution });
      flash(message, `${what} resolved`, true);
      view.querySelector("#exception-note").value = "";
    } catch (error) {
      flash(message, `Could not resolve ${what}: ${error.message}`);
    }
    await load().catch(() => {});
    loadExceptionsCount(true);
  }

  function renderBreaks(page) {
    const rows = page.breaks.map((b) => `<tr>
      <td><a class="mono" href="#/accounts/${encodeURIComponent(b.account_id)}">${esc(b.account_id)}</a></td>
      <td><span class="tag">${esc(b.kind)}</span></td>
      <td>${b.symbol ? `<span class="mono">${esc(b.symbol)}</span>` : `<span class="muted">—</span>`}${b.lot_id ? ` <span class="small muted mono">${esc(b.lot_id)}</span>` : ""}</td>
      <td>${breakSide(b.ours, b.kind)}</td>
      <td>${breakSide(b.theirs, b.kind)}</td>
      <td>${policyBadge(b.policy)}</td>
      <td><span class="small">${esc(b.custodian)}</span><div class="small muted">${esc(b.business_date)}</div></td>
      ${operator ? `<td class="actions"><button type="button" data-break="${b.id}" data-resolution="keep-ours">Keep ours</button>
        <button type="button" data-break="${b.id}" data-resolution="accept-custodian">Accept the custodian's</button></td>` : ""}
    </tr>`).join("");
    const box = view.querySelector("#breaks");
    box.innerHTML = page.breaks.length ? `<table><thead><tr><th>Account</th><th>Kind</th><th>Symbol / lot</th>
      <th>Ours</th><th>Theirs</th><th>Policy</th><th>Day</th>${operator ? "<th></th>" : ""}</tr></thead><tbody>${rows}</tbody></table>` :
      `<div class="empty">No open break${exceptionsState.custodian ? " of this custodian" : ""}.</div>`;
    for (const button of box.querySelectorAll("[data-break]")) {
      button.addEventListener("click", () => resolveBreak(button.dataset.break, button.dataset.resolution));
    }
    nextAfter = page.next_after;
    view.querySelector("#breaks-next").disabled = nextAfter === null;
    view.querySelector("#breaks-first").disabled = exceptionsState.after === 0;
    view.querySelector("#breaks-info").textContent = page.breaks.length ?
      `${count(page.breaks.length)} shown${nextAfter !== null ? ", more on the next page" : ""}` : "";
  }

  function renderExceptions(files, securities) {
    const rows = [
      ...files.exceptions.map((e) => ({ ...e, path: `/custodian/exceptions/${e.id}/resolve` })),
      ...securities.exceptions.map((e) => ({ ...e, path: `/custodian/unknown-securities/${e.id}/resolve` })),
    ].sort((a, b) => String(a.opened_at).localeCompare(String(b.opened_at)));
    const box = view.querySelector("#file-exceptions");
    box.innerHTML = rows.length ? `<table><thead><tr><th>Kind</th><th>Custodian</th><th>Day</th><th>What</th><th>Opened</th>
      ${operator ? "<th></th>" : ""}</tr></thead><tbody>${rows.map((e, n) => `<tr>
        <td><span class="badge ${e.kind === "late" ? "warn" : "bad"}">${esc(e.kind)}</span></td>
        <td>${esc(e.custodian)}</td><td>${esc(e.business_date)}</td>
        <td>${esc(e.detail)}${(e.problems || []).length ? `<div class="small muted">${esc(e.problems.slice(0, 3).join(" · "))}${e.problems.length > 3 ? " …" : ""}</div>` : ""}
          ${e.deadline ? `<div class="small muted">due ${esc(when(e.deadline))}</div>` : ""}
          ${e.accounts_held ? `<div class="small muted">${count(e.accounts_held)} account(s) held</div>` : ""}</td>
        <td class="small">${esc(when(e.opened_at))}</td>
        ${operator ? `<td class="actions"><button type="button" data-exception="${n}">Resolve</button></td>` : ""}
      </tr>`).join("")}</tbody></table>` :
      `<div class="empty">No open file-set or security exception.</div>`;
    for (const button of box.querySelectorAll("[data-exception]")) {
      const e = rows[Number(button.dataset.exception)];
      const what = e.kind === "unknown-security" ? `unknown security ${e.symbol}` : `${e.custodian}'s ${e.kind} file set of ${e.business_date}`;
      button.addEventListener("click", () => resolveException(e.path, what));
    }
  }

  async function load() {
    const q = new URLSearchParams({ status: "open", limit: PAGE_SIZE, after: exceptionsState.after });
    const open = new URLSearchParams({ status: "open", limit: 1000 });
    if (exceptionsState.custodian) { q.set("custodian", exceptionsState.custodian); open.set("custodian", exceptionsState.custodian); }
    const [breaks, files, securities] = await Promise.all([
      api(`/custodian/breaks?${q}`), api(`/custodian/exceptions?${open}`), api(`/custodian/unknown-securities?${open}`),
    ]);
    renderBreaks(breaks);
    renderExceptions(files, securities);
  }
  return load;
}

// ---------------------------------------------------------------------------------------------
// router and refresh loop

let refreshCurrent = null;
let timer = null;

async function refresh() {
  loadHeldCount();
  loadExceptionsCount();
  if (!refreshCurrent) return;
  const view = document.getElementById("view");
  const stamp = document.getElementById("updated");
  try {
    await refreshCurrent();
    view.querySelector(":scope > .error")?.remove();
    stamp.textContent = "updated " + new Date().toLocaleTimeString("en-US");
  } catch (error) {
    if (error.status === 404) {  // nothing to refresh: say so, and offer the way back
      refreshCurrent = null;
      view.innerHTML = errorBox(error) + `<p><a href="#/">← Back to the overview</a></p>`;
      stamp.textContent = "";
      return;
    }
    view.querySelector(":scope > .error")?.remove();
    view.insertAdjacentHTML("afterbegin", errorBox(error));
    stamp.textContent = "update failed";
  }
}

// ---------------------------------------------------------------------------------------------
// signing in

function showWho() {
  const who = document.getElementById("who");
  const signOut = document.getElementById("sign-out");
  const c = token() ? claims(token()) : null;
  who.textContent = c ? `${c.sub} · ${c.tenant} · ${(c.roles || []).join(", ")}` : "";
  signOut.hidden = !c;
}

function showSignIn(reason) {
  refreshCurrent = null;
  clearInterval(timer);
  sessionStorage.removeItem(TOKEN_KEY);
  showWho();
  document.getElementById("updated").textContent = "";
  const view = document.getElementById("view");
  view.innerHTML = `
    <section class="panel sign-in">
      <h1>Sign in</h1>
      <p class="muted">${esc(reason)}</p>
      <form id="sign-in-form">
        <label for="token-input">Bearer token</label>
        <textarea id="token-input" rows="5" spellcheck="false" autocomplete="off"
          placeholder="eyJhbGciOiJFUzI1NiIs…" required></textarea>
        <p class="muted small">Your identity provider's access token. On a local stack:
          <code>ballast auth token --tenant demo --role overlay-manager</code></p>
        <button type="submit">Sign in</button>
      </form>
    </section>`;
  document.getElementById("sign-in-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = document.getElementById("token-input").value.trim().replace(/^Bearer\s+/i, "");
    if (!value) return;
    sessionStorage.setItem(TOKEN_KEY, value);
    showWho();
    route();
    schedule();
  });
  document.getElementById("token-input").focus();
}

function takeTokenFromUrl() {
  const match = location.hash.match(/^#token=([^&]+)/);
  if (!match) return;
  sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(match[1]));
  history.replaceState(null, "", location.pathname + "#/");  // out of the address bar and history
}

function route() {
  if (!token()) {
    showSignIn("Sign in to see this tenant's data.");
    return;
  }
  const hash = location.hash.replace(/^#/, "") || "/";
  const parts = hash.split("/").filter(Boolean).map(decodeURIComponent);
  const view = document.getElementById("view");
  let section = "overview";
  if (parts[0] === "accounts" && parts[1]) {
    refreshCurrent = accountPage(view, parts[1]);
  } else if (parts[0] === "runs" && parts[1]) {
    refreshCurrent = runPage(view, parts[1]);
    section = "runs";
  } else if (parts[0] === "runs") {
    refreshCurrent = runsPage(view);
    section = "runs";
  } else if (parts[0] === "review" && parts[1]) {
    refreshCurrent = proposalPage(view, parts[1]);
    section = "review";
  } else if (parts[0] === "review") {
    refreshCurrent = reviewPage(view);
    section = "review";
  } else if (parts[0] === "exceptions") {
    refreshCurrent = exceptionsPage(view);
    section = "exceptions";
  } else {
    refreshCurrent = overview(view);
  }
  for (const link of document.querySelectorAll("[data-nav]")) {
    link.classList.toggle("active", link.dataset.nav === section);
  }
  window.scrollTo(0, 0);
  refresh();
}

function schedule() {
  clearInterval(timer);
  if (document.getElementById("auto-refresh").checked) timer = setInterval(refresh, REFRESH_MS);
}

window.addEventListener("hashchange", route);
document.getElementById("auto-refresh").addEventListener("change", schedule);
document.getElementById("sign-out").addEventListener("click", () => showSignIn("Signed out."));
takeTokenFromUrl();
showWho();
route();
schedule();
