"""The SQL of breaks resolved with the custodian's figure and of unknown securities
(taxlot_svc.break_resolution, taxlot_svc.unknown_securities).

Every adjustment is set-based: one statement per break kind for any number of breaks, each
writing the ledger's rows (lots, cash) and its journal (`ledger_entries`, cause
`reconciliation:<break id>`) together, and only where the ledger is still as the break found
it (or already the custodian's): a break whose lot or cash changed since is left alone.

A lot adjustment also writes what a replay of the household needs to make it again: a
`tax_inputs` row (kind `adjust`, ref `reconciliation:<break id>`, see
`taxlot_svc.book.ADJUSTMENTS`) dated the break's business day, or the household's last day
if that is later, and the household's last day moves to that date (an input dated before
it is then late and replays the household, putting the adjustment after it). The statements
spread an adjustment over a lot's pieces by the rules of `ballast_engine.tax.adjustments`,
which the replay applies: both give the same lots.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from ballast_common.book_loads import StagedLoad
from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from taxlot_svc.repository import HOLDING_EXCEPTIONS

CAUSE_PREFIX = "reconciliation:"


async def _run(session: AsyncSession, sql: str, **params: Any) -> Any:
    connection = await session.connection()
    return await connection.execute(text(sql).bindparams(**params))


def _typed(staged: StagedLoad, name: str) -> str:
    """The quoted typed table of a staged file."""
    table = staged.typed_table(name)
    if table is None:
        raise RuntimeError(f"{name} of load {staged.load_id} was not typed")
    return '"' + table.replace('"', '""') + '"'


# The breaks of a kind among :ids whose account has a ledger of the tenant, with the
# account's household, its sequence counter and the date the adjustment takes in its inputs.
_BREAKS = """
b AS (
    SELECT r.id, r.account_id, r.lot_id, r.symbol, r.ours, r.theirs, hh.household_id,
           coalesce(h.seq, 0) AS household_seq,
           greatest(r.business_date, h.last_day) AS effective_on
      FROM reconciliation_breaks r
      JOIN account_books ab ON ab.account_id = r.account_id AND ab.tenant = r.tenant
      LEFT JOIN accounts a ON a.account_id = r.account_id
      CROSS JOIN LATERAL (SELECT coalesce(a.household_id, 'account:' || r.account_id)
                          AS household_id) hh
      LEFT JOIN households h ON h.household_id = hh.household_id
     WHERE r.tenant = :tenant AND r.id = ANY(CAST(:ids AS bigint[])) AND r.kind = '{kind}'
)"""
# The pieces of each break's lot (`<lot>/<n>` as a wash sale leaves them), with the lot's sums.
_PIECES = """
p AS (
    SELECT b.id AS break_id, b.ours, b.theirs, l.account_id, l.lot_id, l.symbol, l.seq,
           l.quantity, l.cost_basis, l.acquired_on, l.replacement,
           sum(l.quantity) OVER w AS o_q, sum(l.cost_basis) OVER w AS o_basis,
           min(l.acquired_on) OVER w AS o_acquired,
           row_number() OVER (PARTITION BY b.id ORDER BY l.seq, l.lot_id COLLATE "C") AS rank
      FROM b JOIN lots l ON l.account_id = b.account_id AND l.symbol = b.symbol
       AND split_part(l.lot_id, '/', 1) = b.lot_id
    WINDOW w AS (PARTITION BY b.id)
)"""
_ENTRY_COLUMNS = "account_id, cause, fill_id, kind, symbol, lot_id, quantity, amount, sleeve"


def _adjust_inputs(applied: str, method: str, quantity: str, basis: str, acquired: str) -> str:
    """A CTE writing the `adjust` input of each break whose id `applied` selects (SQL
    expressions over `b` for its kind, quantity, basis and acquisition date)."""
    return f"""
inputs AS (
    INSERT INTO tax_inputs (account_id, kind, ref, trade_on, symbol, side, quantity, price,
        fees, lot_name, lot_ids, method, sleeve, acquired_on)
    SELECT b.account_id, 'adjust', '{CAUSE_PREFIX}' || b.id, b.effective_on, b.symbol, '',
           {quantity}, 0, {basis}, b.lot_id, '', {method}, '', {acquired}
      FROM b WHERE b.id IN ({applied}) ORDER BY b.id
    ON CONFLICT (account_id, kind, ref) DO NOTHING
)"""


_THEIR_QUANTITY = "(b.theirs->>'quantity')::numeric"
_THEIR_BASIS = "round((b.theirs->>'cost_basis')::numeric, 2)"
_THEIR_DATE = "(b.theirs->>'acquired_on')::date"

_ACCEPT_MISSING = f"""
WITH {_BREAKS.format(kind="missing")}, {_PIECES},
ok AS (SELECT * FROM p WHERE o_q = (ours->>'quantity')::numeric),
gone AS (
    DELETE FROM lots l USING ok
     WHERE l.account_id = ok.account_id AND l.lot_id = ok.lot_id
    RETURNING ok.break_id, l.account_id, l.lot_id, l.symbol, l.quantity, l.cost_basis
),
entries AS (
    INSERT INTO ledger_entries ({_ENTRY_COLUMNS})
    SELECT account_id, '{CAUSE_PREFIX}' || break_id, NULL, 'lot-relieve', symbol, lot_id,
           quantity, cost_basis, '' FROM gone
),
{_adjust_inputs("SELECT break_id FROM gone", "'close'", "0", "0", "NULL")}
SELECT DISTINCT break_id FROM gone
"""

_ACCEPT_EXTRA = f"""
WITH {_BREAKS.format(kind="extra")},
ok AS (
    SELECT b.*, row_number() OVER (PARTITION BY b.household_id ORDER BY b.id) AS n FROM b
     WHERE NOT EXISTS (SELECT 1 FROM lots l WHERE l.account_id = b.account_id
                        AND split_part(l.lot_id, '/', 1) = b.lot_id)
       AND EXISTS (SELECT 1 FROM prices s WHERE s.symbol = b.symbol)
       AND NOT EXISTS (SELECT 1 FROM unknown_securities e WHERE e.tenant = :tenant
                        AND e.symbol = b.symbol AND e.status = 'open')
),
opened AS (
    INSERT INTO lots (account_id, lot_id, seq, symbol, quantity, cost_basis, acquired_on,
        holding_start, cause, fill_id, purchase_id, sleeve)
    SELECT ok.account_id, ok.lot_id, ok.household_seq + ok.n, ok.symbol,
           (ok.theirs->>'quantity')::numeric, round((ok.theirs->>'cost_basis')::numeric, 2),
           (ok.theirs->>'acquired_on')::date, (ok.theirs->>'acquired_on')::date,
           'reconciliation', NULL, '{CAUSE_PREFIX}' || ok.id, ''
      FROM ok ORDER BY ok.id
    ON CONFLICT (account_id, lot_id) DO NOTHING
    RETURNING account_id, lot_id, symbol, quantity, cost_basis, purchase_id
),
entries AS (
    INSERT INTO ledger_entries ({_ENTRY_COLUMNS})
    SELECT account_id, purchase_id, NULL, 'lot-open', symbol, lot_id, quantity, cost_basis, ''
      FROM opened
),
applied AS (SELECT CAST(substr(purchase_id, {len(CAUSE_PREFIX) + 1}) AS bigint) AS id FROM opened),
{_adjust_inputs("SELECT id FROM applied", "'open'", _THEIR_QUANTITY, _THEIR_BASIS, _THEIR_DATE)}
SELECT id FROM applied
"""

# quantity: the lot's shares become the custodian's; a decrease is taken from its latest
# pieces first, an increase added to its first; its basis becomes the custodian's (or, if
# the custodian gave none, ours scaled per share), each changed piece scaled and the cents
# left over on the first piece that remains
_ACCEPT_QUANTITY = f"""
WITH {_BREAKS.format(kind="quantity")}, {_PIECES},
q AS (
    SELECT p.*, (theirs->>'quantity')::numeric AS t_q,
           coalesce(sum(quantity) OVER (PARTITION BY break_id
                    ORDER BY seq DESC, lot_id COLLATE "C" DESC
                    ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS later
      FROM p
),
ok AS (
    SELECT q.*,
           CASE WHEN t_q >= o_q THEN quantity + CASE WHEN rank = 1 THEN t_q - o_q ELSE 0 END
                ELSE quantity - least(quantity, greatest(0, (o_q - t_q) - later)) END AS new_q,
           coalesce(round((theirs->>'cost_basis')::numeric, 2),
                    round(o_basis * t_q / o_q, 2)) AS target
      FROM q WHERE o_q = (ours->>'quantity')::numeric OR o_q = t_q
),
scaled AS (
    SELECT ok.*,
           CASE WHEN new_q = quantity THEN cost_basis WHEN new_q = 0 THEN 0
                ELSE round(cost_basis * new_q / quantity, 2) END AS scaled_basis,
           row_number() OVER (PARTITION BY break_id
                              ORDER BY new_q = 0, seq, lot_id COLLATE "C") AS alive
      FROM ok
),
fin AS (
    SELECT scaled.*, scaled_basis + CASE WHEN alive = 1
           THEN target - sum(scaled_basis) OVER (PARTITION BY break_id) ELSE 0 END AS new_basis
      FROM scaled
),
changed AS (
    UPDATE lots l SET quantity = f.new_q, cost_basis = f.new_basis FROM fin f
     WHERE l.account_id = f.account_id AND l.lot_id = f.lot_id AND f.new_q > 0
       AND (l.quantity <> f.new_q OR l.cost_basis <> f.new_basis)
),
removed AS (
    DELETE FROM lots l USING fin f
     WHERE l.account_id = f.account_id AND l.lot_id = f.lot_id AND f.new_q = 0
),
entries AS (
    INSERT INTO ledger_entries ({_ENTRY_COLUMNS})
    SELECT account_id, '{CAUSE_PREFIX}' || break_id, NULL, 'lot-adjust', symbol, lot_id,
           new_q - quantity, new_basis - cost_basis, '' FROM fin
     WHERE new_q <> quantity OR new_basis <> cost_basis
),
{
    _adjust_inputs(
        "SELECT break_id FROM fin",
        "CASE WHEN b.theirs->>'cost_basis' IS NULL THEN 'scale' ELSE 'quantity' END",
        _THEIR_QUANTITY,
        f"coalesce({_THEIR_BASIS}, 0)",
        "NULL",
    )
}
SELECT DISTINCT break_id FROM fin
"""

# basis: the lot's total basis becomes the custodian's (the difference on its first piece)
_ACCEPT_BASIS = f"""
WITH {_BREAKS.format(kind="basis")}, {_PIECES},
ok AS (
    SELECT p.*, round((theirs->>'cost_basis')::numeric, 2) - o_basis AS delta FROM p
     WHERE o_basis = (ours->>'cost_basis')::numeric
        OR o_basis = round((theirs->>'cost_basis')::numeric, 2)
),
changed AS (
    UPDATE lots l SET cost_basis = l.cost_basis + ok.delta FROM ok
     WHERE l.account_id = ok.account_id AND l.lot_id = ok.lot_id AND ok.rank = 1
       AND ok.delta <> 0
),
entries AS (
    INSERT INTO ledger_entries ({_ENTRY_COLUMNS})
    SELECT account_id, '{CAUSE_PREFIX}' || break_id, NULL, 'lot-adjust', symbol, lot_id, 0,
           delta, '' FROM ok WHERE rank = 1 AND delta <> 0
),
{_adjust_inputs("SELECT break_id FROM ok", "'basis'", "0", _THEIR_BASIS, "NULL")}
SELECT DISTINCT break_id FROM ok
"""

# date: the lot's acquisition date becomes the custodian's, and so does its holding start
# (but a wash-sale replacement piece's, which carries the washed lot's holding period)
_ACCEPT_DATE = f"""
WITH {_BREAKS.format(kind="date")}, {_PIECES},
ok AS (
    SELECT p.*, (theirs->>'acquired_on')::date AS t_acquired FROM p
     WHERE o_acquired = (ours->>'acquired_on')::date
        OR o_acquired = (theirs->>'acquired_on')::date
),
changed AS (
    UPDATE lots l SET acquired_on = ok.t_acquired,
           holding_start = CASE WHEN l.replacement THEN l.holding_start ELSE ok.t_acquired END
      FROM ok
     WHERE l.account_id = ok.account_id AND l.lot_id = ok.lot_id
       AND l.acquired_on <> ok.t_acquired
),
entries AS (
    INSERT INTO ledger_entries ({_ENTRY_COLUMNS})
    SELECT account_id, '{CAUSE_PREFIX}' || break_id, NULL, 'lot-adjust', symbol, lot_id, 0, 0,
           '' FROM ok WHERE acquired_on <> t_acquired
),
{_adjust_inputs("SELECT break_id FROM ok", "'date'", "0", "0", _THEIR_DATE)}
SELECT DISTINCT break_id FROM ok
"""

# cash: the account's cash becomes the custodian's (its sleeves keep theirs)
_ACCEPT_CASH = f"""
WITH {_BREAKS.format(kind="cash")},
ok AS (
    SELECT b.id, b.account_id, ab.cash AS old, (b.theirs->>'cash')::numeric AS new
      FROM b JOIN account_books ab ON ab.account_id = b.account_id
     WHERE ab.cash = (b.ours->>'cash')::numeric OR ab.cash = (b.theirs->>'cash')::numeric
),
changed AS (
    UPDATE account_books ab SET cash = ok.new, updated_at = now() FROM ok
     WHERE ab.account_id = ok.account_id AND ab.cash <> ok.new
),
entries AS (
    INSERT INTO ledger_entries ({_ENTRY_COLUMNS})
    SELECT account_id, '{CAUSE_PREFIX}' || id, NULL, 'cash', NULL, NULL, NULL, new - old, ''
      FROM ok WHERE new <> old
)
SELECT id FROM ok
"""

# in this order: a lot whose basis and quantity are both accepted ends with the custodian's
ACCEPT_BY_KIND = {
    "missing": _ACCEPT_MISSING,
    "extra": _ACCEPT_EXTRA,
    "date": _ACCEPT_DATE,
    "basis": _ACCEPT_BASIS,
    "quantity": _ACCEPT_QUANTITY,
    "cash": _ACCEPT_CASH,
}


# the households of the adjustments written: their last day (and sequence counter, for the
# lots opened) move up to them, so an input dated earlier replays the household
_ADVANCE_HOUSEHOLDS = f"""
INSERT INTO households (household_id, last_day, seq, updated_at)
SELECT coalesce(a.household_id, 'account:' || t.account_id), max(t.trade_on),
       coalesce(max(l.seq), 0), now()
  FROM reconciliation_breaks r
  JOIN tax_inputs t ON t.account_id = r.account_id AND t.kind = 'adjust'
   AND t.ref = '{CAUSE_PREFIX}' || r.id
  LEFT JOIN accounts a ON a.account_id = t.account_id
  LEFT JOIN lots l ON l.account_id = t.account_id AND l.purchase_id = t.ref
 WHERE r.id = ANY(CAST(:ids AS bigint[]))
 GROUP BY 1
ON CONFLICT (household_id) DO UPDATE
   SET last_day = greatest(households.last_day, excluded.last_day),
       seq = greatest(households.seq, excluded.seq), updated_at = now()
"""


async def accept_custodian_figures(
    session: AsyncSession, tenant: str, break_ids: Sequence[int]
) -> set[int]:
    """Adjust the ledger to the custodian's figure of each break (one statement per kind);
    returns the breaks adjusted (the others' ledger changed since, or has no book)."""
    applied: set[int] = set()
    if not break_ids:
        return applied
    ids = sorted(set(break_ids))
    for sql in ACCEPT_BY_KIND.values():
        rows = await _run(session, sql, tenant=tenant, ids=ids)
        applied |= {int(i) for (i,) in rows}
    await _run(session, _ADVANCE_HOUSEHOLDS, ids=sorted(applied))
    return applied


async def accept_policy_breaks(session: AsyncSession, tenant: str, load_id: str) -> list[int]:
    """The open breaks of a load whose policy accepts the custodian's figure."""
    rows = await _run(
        session,
        "SELECT id FROM reconciliation_breaks WHERE tenant = :tenant AND load_id = :load_id"
        " AND policy = 'accept' AND status = 'open' ORDER BY id",
        tenant=tenant,
        load_id=load_id,
    )
    return [int(i) for (i,) in rows]


async def record_resolution(
    session: AsyncSession,
    tenant: str,
    break_ids: Collection[int],
    resolution: str,
    by: str,
    note: str,
) -> list[dict[str, Any]]:
    """Breaks resolved (status, how, by whom, when, why); returns (kind, account_id) of each."""
    if not break_ids:
        return []
    rows = await _run(
        session,
        "UPDATE reconciliation_breaks SET status = 'resolved', resolution = :resolution,"
        " resolved_by = :by, resolved_at = now(), resolution_note = :note"
        " WHERE tenant = :tenant AND id = ANY(CAST(:ids AS bigint[]))"
        " RETURNING id, kind, account_id",
        tenant=tenant,
        ids=sorted(break_ids),
        resolution=resolution,
        by=by,
        note=note,
    )
    return [dict(r._mapping) for r in rows]


async def request_reconciled_snapshots(
    session: AsyncSession,
    break_ids: Collection[int],
    traceparent: str | None,
    tracestate: str | None,
) -> int:
    """Ask for holdings-reconciled (cause `reconciliation`) of the breaks' accounts, in one
    statement; a pending request of an account absorbs it. Returns how many accounts."""
    if not break_ids:
        return 0
    result = await _run(
        session,
        "INSERT INTO pending_snapshots (account_id, cause, fill_ids, action_id, cause_event_id,"
        " traceparent, tracestate)"
        " SELECT DISTINCT r.account_id, 'reconciliation', CAST('[]' AS jsonb), NULL,"
        " CAST(NULL AS uuid), :traceparent, :tracestate FROM reconciliation_breaks r"
        " JOIN account_books ab ON ab.account_id = r.account_id"
        " WHERE r.id = ANY(CAST(:ids AS bigint[])) ORDER BY r.account_id"
        " ON CONFLICT (account_id) DO UPDATE SET cause = excluded.cause,"
        " cause_event_id = excluded.cause_event_id, traceparent = excluded.traceparent,"
        " tracestate = excluded.tracestate",
        ids=sorted(break_ids),
        traceparent=traceparent,
        tracestate=tracestate,
    )
    return int(result.rowcount)


async def accepted_counts(session: AsyncSession, break_ids: Collection[int]) -> dict[str, int]:
    """How many of these breaks there are of each kind."""
    rows = await _run(
        session,
        "SELECT kind, count(*) FROM reconciliation_breaks"
        " WHERE id = ANY(CAST(:ids AS bigint[])) GROUP BY kind",
        ids=sorted(break_ids),
    )
    return {k: int(n) for k, n in rows}


async def ledger_of_breaks(session: AsyncSession, break_ids: Collection[int]) -> list[Any]:
    """The ledger entries written for these breaks (account, kind, lot, quantity, amount)."""
    rows = await _run(
        session,
        "SELECT account_id, cause, kind, symbol, lot_id, quantity, amount FROM ledger_entries"
        " WHERE cause = ANY(CAST(:causes AS text[])) ORDER BY id",
        causes=[f"{CAUSE_PREFIX}{i}" for i in sorted(break_ids)],
    )
    return [dict(r._mapping) for r in rows]


# --- unknown securities -----------------------------------------------------------------------

# the files a symbol is looked for in, in this order for "first seen"
SYMBOL_FILES = ("positions.csv", "lots.csv", "transactions.csv", "prices.csv")
_UNKNOWN_COLUMNS = (
    "id, custodian, business_date, symbol, cusip, name, first_file, first_line, rows,"
    " last_business_date, status, opened_at, resolved_at, resolved_by, resolution"
)


def _symbols_seen(staged: StagedLoad) -> str:
    """SQL of every row of the staged files that names a symbol: (file, file order, line,
    symbol)."""
    parts = []
    for order, name in enumerate(SYMBOL_FILES):
        if staged.has(name) and "symbol" in staged.columns.get(name, ()):
            parts.append(
                f"SELECT '{name}' AS file, {order} AS file_order, line, symbol"
                f" FROM {_typed(staged, name)} WHERE symbol IS NOT NULL"
            )
    return " UNION ALL ".join(parts)


async def record_unknown_securities(
    session: AsyncSession, staged: StagedLoad, custodian: str
) -> int:
    """An open exception per symbol of the staged files the security master does not know
    (the open one of the custodian and symbol refreshed); returns how many symbols."""
    seen = _symbols_seen(staged)
    if not seen:
        return 0
    prices_cols = staged.columns.get("prices.csv", ()) if staged.has("prices.csv") else ()
    described = (
        "SELECT DISTINCT ON (symbol) symbol, "
        + ("cusip" if "cusip" in prices_cols else "CAST(NULL AS text) AS cusip")
        + ", "
        + ("name" if "name" in prices_cols else "CAST(NULL AS text) AS name")
        + f" FROM {_typed(staged, 'prices.csv')} ORDER BY symbol, line"
        if prices_cols
        else "SELECT CAST(NULL AS text) AS symbol, CAST(NULL AS text) AS cusip,"
        " CAST(NULL AS text) AS name WHERE false"
    )
    sql = f"""
WITH seen AS ({seen}),
unknown AS (
    SELECT symbol, count(*) AS rows,
           (array_agg(file ORDER BY file_order, line))[1] AS first_file,
           (array_agg(line ORDER BY file_order, line))[1] AS first_line
      FROM seen s WHERE NOT EXISTS (SELECT 1 FROM prices p WHERE p.symbol = s.symbol)
     GROUP BY symbol
),
described AS ({described})
INSERT INTO unknown_securities (tenant, custodian, business_date, symbol, cusip, name,
    first_file, first_line, rows, last_business_date, load_id, status)
SELECT :tenant, :custodian, :day, u.symbol, d.cusip, d.name, u.first_file, u.first_line,
       u.rows, :day, :load_id, 'open'
  FROM unknown u LEFT JOIN described d ON d.symbol = u.symbol
ON CONFLICT (tenant, custodian, symbol) WHERE status = 'open' DO UPDATE
   SET rows = excluded.rows, load_id = excluded.load_id,
       last_business_date = greatest(unknown_securities.last_business_date,
                                     excluded.last_business_date),
       cusip = coalesce(excluded.cusip, unknown_securities.cusip),
       name = coalesce(excluded.name, unknown_securities.name)
"""
    result = await _run(
        session,
        sql,
        tenant=staged.tenant,
        custodian=custodian,
        day=staged.as_of,
        load_id=staged.load_id,
    )
    return int(result.rowcount)


async def replace_unknown_holders(
    session: AsyncSession, staged: StagedLoad, custodian: str
) -> tuple[set[str], list[tuple[str, str]]]:
    """The day's accounts' positions in securities of an open unknown-security exception
    replace those kept of them. Returns (accounts an unknown security held before, (account,
    symbol) of the first such position of each account now)."""
    held_before = await _run(
        session,
        "DELETE FROM unknown_security_accounts a WHERE a.tenant = :tenant"
        " AND a.custodian = :custodian"
        f" AND a.account_id IN (SELECT account_id FROM {_typed(staged, 'cash.csv')})"
        " AND EXISTS (SELECT 1 FROM unknown_securities e WHERE e.tenant = a.tenant"
        " AND e.custodian = a.custodian AND e.symbol = a.symbol AND e.status = 'open')"
        " RETURNING a.account_id",
        tenant=staged.tenant,
        custodian=custodian,
    )
    before = {a for (a,) in held_before}
    await _run(
        session,
        "DELETE FROM unknown_security_accounts WHERE tenant = :tenant AND custodian = :custodian"
        f" AND account_id IN (SELECT account_id FROM {_typed(staged, 'cash.csv')})",
        tenant=staged.tenant,
        custodian=custodian,
    )
    rows = await _run(
        session,
        "WITH held AS (INSERT INTO unknown_security_accounts (tenant, custodian, symbol,"
        " account_id, business_date)"
        " SELECT DISTINCT :tenant, :custodian, p.symbol, p.account_id, :day"
        f" FROM {_typed(staged, 'positions.csv')} p"
        " JOIN unknown_securities e ON e.tenant = :tenant AND e.custodian = :custodian"
        " AND e.symbol = p.symbol AND e.status = 'open'"
        " RETURNING account_id, symbol)"
        " SELECT DISTINCT ON (account_id) account_id, symbol FROM held"
        " ORDER BY account_id, symbol",
        tenant=staged.tenant,
        custodian=custodian,
        day=staged.as_of,
    )
    return before, [(a, s) for a, s in rows]


@dataclass(frozen=True)
class UnknownFilter:
    """Which unknown-security exceptions a page holds (None: any)."""

    status: str | None = None
    custodian: str | None = None
    business_date: date | None = None
    symbol: str | None = None


async def unknown_securities_page(
    session: AsyncSession, tenant: str, where: UnknownFilter, after: int, limit: int
) -> list[dict[str, Any]]:
    """A page of the tenant's unknown securities in the order opened (ids after `after`),
    each with how many accounts it holds."""
    rows = await _run(
        session,
        f"SELECT {_UNKNOWN_COLUMNS}, (SELECT count(*) FROM unknown_security_accounts a"
        " WHERE a.tenant = e.tenant AND a.custodian = e.custodian AND a.symbol = e.symbol"
        " AND e.status = 'open') AS accounts_held"
        " FROM unknown_securities e WHERE tenant = :tenant AND id > :after"
        " AND (CAST(:status AS text) IS NULL OR status = :status)"
        " AND (CAST(:custodian AS text) IS NULL OR custodian = :custodian)"
        " AND (CAST(:day AS date) IS NULL OR business_date = :day)"
        " AND (CAST(:symbol AS text) IS NULL OR symbol = :symbol)"
        " ORDER BY id LIMIT :limit",
        tenant=tenant,
        after=after,
        status=where.status,
        custodian=where.custodian,
        day=where.business_date,
        symbol=where.symbol,
        limit=limit,
    )
    return [dict(r._mapping) for r in rows]


async def resolve_unknown_security(
    session: AsyncSession, tenant: str, exception_id: int, by: str, resolution: str
) -> dict[str, Any] | None:
    """Resolve one open unknown security of `tenant` (None: no open one has this id)."""
    rows = await _run(
        session,
        "UPDATE unknown_securities SET status = 'resolved', resolved_at = now(),"
        " resolved_by = :by, resolution = :resolution"
        " WHERE tenant = :tenant AND id = :id AND status = 'open'"
        f" RETURNING tenant, {_UNKNOWN_COLUMNS}",
        tenant=tenant,
        id=exception_id,
        by=by,
        resolution=resolution,
    )
    found = rows.first()
    return None if found is None else dict(found._mapping)


async def unknown_security(
    session: AsyncSession, tenant: str, exception_id: int
) -> dict[str, Any] | None:
    """One unknown security of `tenant`, if it has it."""
    rows = await _run(
        session,
        f"SELECT {_UNKNOWN_COLUMNS} FROM unknown_securities WHERE tenant = :tenant AND id = :id",
        tenant=tenant,
        id=exception_id,
    )
    found = rows.first()
    return None if found is None else dict(found._mapping)


async def resolve_known_symbols(session: AsyncSession, symbols: Sequence[str]) -> list[Any]:
    """Every tenant's open unknown securities among `symbols` resolved (the security master
    brought them); returns (tenant, custodian, symbol, business_date) of each."""
    if not symbols:
        return []
    rows = await _run(
        session,
        "UPDATE unknown_securities SET status = 'resolved', resolved_at = now(),"
        " resolved_by = 'securities-changed', resolution = 'the security master added it'"
        " WHERE status = 'open' AND symbol = ANY(CAST(:symbols AS text[]))"
        " RETURNING tenant, custodian, symbol, last_business_date",
        symbols=sorted(set(symbols)),
    )
    return list(rows)


_HELD_ELSEWHERE = """
NOT EXISTS (SELECT 1 FROM reconciliation_breaks b WHERE b.tenant = a.tenant
            AND b.account_id = a.account_id AND b.status = 'open' AND b.policy = 'suspend')
AND NOT EXISTS (SELECT 1 FROM custodian_accounts o JOIN transfer_exceptions e
            ON e.tenant = o.tenant AND e.custodian = o.custodian AND e.status = 'open'
            AND e.kind = ANY(CAST(:kinds AS text[]))
            WHERE o.tenant = a.tenant AND o.account_id = a.account_id)
AND NOT EXISTS (SELECT 1 FROM unknown_security_accounts u JOIN unknown_securities e
            ON e.tenant = u.tenant AND e.custodian = u.custodian AND e.symbol = u.symbol
            AND e.status = 'open' WHERE u.tenant = a.tenant AND u.account_id = a.account_id)
"""


async def releasable_unknown_holders(
    session: AsyncSession, resolved: Sequence[tuple[str, str, str]]
) -> list[Any]:
    """(tenant, account_id, custodian, business_date) of the accounts these resolved
    (tenant, custodian, symbol) held that nothing holds any more."""
    if not resolved:
        return []
    tenants, custodians, symbols = (list(c) for c in zip(*resolved, strict=True))
    rows = await _run(
        session,
        "SELECT DISTINCT ON (a.tenant, a.account_id) a.tenant, a.account_id, a.custodian,"
        " a.business_date FROM unknown_security_accounts a"
        " JOIN unnest(CAST(:tenants AS text[]), CAST(:custodians AS text[]),"
        " CAST(:symbols AS text[])) AS r(tenant, custodian, symbol)"
        " ON r.tenant = a.tenant AND r.custodian = a.custodian AND r.symbol = a.symbol"
        f" WHERE {_HELD_ELSEWHERE} ORDER BY a.tenant, a.account_id",
        tenants=tenants,
        custodians=custodians,
        symbols=symbols,
        kinds=list(HOLDING_EXCEPTIONS),
    )
    return list(rows)


async def held_by_unknown_securities(
    session: AsyncSession, tenant: str, account_ids: Collection[str]
) -> set[str]:
    """Those of these accounts an open unknown-security exception holds."""
    if not account_ids:
        return set()
    rows = await _run(
        session,
        "SELECT DISTINCT u.account_id FROM unknown_security_accounts u JOIN unknown_securities e"
        " ON e.tenant = u.tenant AND e.custodian = u.custodian AND e.symbol = u.symbol"
        " AND e.status = 'open'"
        " WHERE u.tenant = :tenant AND u.account_id = ANY(CAST(:accounts AS text[]))",
        tenant=tenant,
        accounts=sorted(account_ids),
    )
    return {a for (a,) in rows}
