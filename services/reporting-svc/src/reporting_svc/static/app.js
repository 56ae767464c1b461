/* Ballast reporting dashboard: vanilla JS over this service's own REST API.
 *
 * Routes (in the URL hash): #/  overview · #/runs  runs · #/runs/<id>  one run ·
 * #/accounts/<id>  one account. Every view builds its layout once and re-loads its data on
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
// router and refresh loop

let refreshCurrent = null;
let timer = null;

async function refresh() {
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
