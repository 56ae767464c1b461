"""SQL of a custodian day's ingest (taxlot_svc.custodian_ingest): its transactions taken
once and applied set-based, the corporate actions of its file, and the original files kept.

Every statement works on the whole day at once (a custodian's day of 100,000 accounts has
~100k-300k transaction rows): the rows are taken into ``custodian_transactions`` with one
INSERT ... SELECT from the staged file, and each later step is one statement over the rows of
the load that are still ``pending``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import date
from typing import Any, cast

from ballast_common.book_loads import StagedLoad
from sqlalchemy import CursorResult, text
from sqlmodel.ext.asyncio.session import AsyncSession

CASH_TYPES = ("dividend", "fee", "deposit", "withdrawal")
CASH_IN = ("dividend", "deposit")
CAUSE = "custodian-day"  # the ledger entries' cause (and the snapshots')
LOT_BREAKS = ("missing", "extra", "quantity", "basis")


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _typed(staged: StagedLoad, name: str) -> str:
    table = staged.typed_table(name)
    assert table is not None, f"{name} is typed before a custodian day is applied"
    return _quote(table)


def _column(staged: StagedLoad, name: str, column: str, alias: str) -> str:
    """A typed column of a staged file, NULL when the file left the optional column out."""
    return f"{alias}.{_quote(column)}" if column in staged.columns[name] else "NULL"


async def _rows(session: AsyncSession, sql: str, **params: Any) -> list[dict[str, Any]]:
    result = await session.execute(text(sql), params)
    return [dict(r._mapping) for r in result]


async def _count(session: AsyncSession, sql: str, **params: Any) -> int:
    result = cast(CursorResult[Any], await session.execute(text(sql), params))
    return int(result.rowcount)


# --- transactions ---------------------------------------------------------------------------


async def take_transactions(session: AsyncSession, staged: StagedLoad, custodian: str) -> int:
    """The day's transaction rows not taken before (by custodian, transaction id and lot id)
    recorded as `pending` of this load; returns how many are new."""
    name = "transactions.csv"
    t = _typed(staged, name)

    def c(column: str) -> str:
        return _column(staged, name, column, "t")

    return await _count(
        session,
        "INSERT INTO custodian_transactions (tenant, custodian, transaction_id, lot_id,"
        " account_id, type, symbol, quantity, amount, price, trade_date, business_date,"
        " load_id, line, outcome)"
        f" SELECT :tenant, :custodian, t.transaction_id, coalesce({c('lot_id')}, ''),"
        f" t.account_id, t.type, {c('symbol')}, {c('quantity')}, {c('amount')}, {c('price')},"
        f" t.trade_date, :as_of, :load_id, t.line, 'pending' FROM {t} t ORDER BY t.line"
        " ON CONFLICT (tenant, custodian, transaction_id, lot_id) DO NOTHING",
        tenant=staged.tenant,
        custodian=custodian,
        as_of=staged.as_of,
        load_id=staged.load_id,
    )


# the columns each type of transaction needs (docs/custodian-files.md, transactions.csv)
NEEDED = {
    "buy": ("symbol", "quantity", "amount", "lot_id"),
    "sell": ("symbol", "quantity", "amount", "lot_id"),
    "dividend": ("symbol", "amount"),
    "fee": ("amount",),
    "deposit": ("amount",),
    "withdrawal": ("amount",),
    "transfer_in": ("symbol", "quantity", "lot_id"),
    "transfer_out": ("symbol", "quantity", "lot_id"),
}


async def transaction_problems(
    session: AsyncSession, staged: StagedLoad, limit: int
) -> list[tuple[int, str, str]]:
    """(line, column, type) of each transaction row without a column its type needs."""
    name = "transactions.csv"
    if not staged.has(name):
        return []
    needed = [(kind, column) for kind, columns in NEEDED.items() for column in columns]
    empty = " ".join(
        f"WHEN '{c}' THEN {_column(staged, name, c, 't')} IS NULL"
        for c in ("symbol", "quantity", "amount", "lot_id")
    )
    found = await _rows(
        session,
        f"SELECT t.line, n.col, n.kind FROM {_typed(staged, name)} t"
        " JOIN unnest(CAST(:kinds AS text[]), CAST(:cols AS text[])) AS n(kind, col)"
        f" ON n.kind = t.type WHERE CASE n.col {empty} END ORDER BY t.line, n.col LIMIT :limit",
        kinds=[k for k, _ in needed],
        cols=[c for _, c in needed],
        limit=limit,
    )
    return [(int(r["line"]), r["col"], r["kind"]) for r in found]


_PENDING = "c.tenant = :tenant AND c.load_id = :load_id AND c.outcome = 'pending'"


async def mark_without_ledger(session: AsyncSession, tenant: str, load_id: str) -> int:
    """Pending rows of accounts without a ledger of `tenant`: nothing to apply them to."""
    return await _count(
        session,
        "UPDATE custodian_transactions c SET outcome = 'no-ledger',"
        " reason = 'the account has no ledger here' WHERE " + _PENDING + " AND NOT EXISTS"
        " (SELECT 1 FROM account_books b WHERE b.account_id = c.account_id"
        " AND b.tenant = :tenant)",
        tenant=tenant,
        load_id=load_id,
    )


async def book_cash(session: AsyncSession, tenant: str, load_id: str, as_of: date) -> int:
    """Dividends, fees, deposits and withdrawals: a cash entry each in the ledger (the
    account's own cash) and the accounts' cash moved by their sum, in one statement; returns
    the rows booked."""
    result = await _rows(
        session,
        "WITH taken AS (UPDATE custodian_transactions c SET outcome = 'cash'"
        " WHERE " + _PENDING + " AND c.type = ANY(:cash_types)"
        " RETURNING c.account_id, c.transaction_id, c.type, c.symbol, c.amount, c.line),"
        " entries AS (INSERT INTO ledger_entries (account_id, cause, fill_id, kind, symbol,"
        " amount, sleeve)"
        " SELECT account_id, :cause, transaction_id, 'cash', symbol,"
        " CASE WHEN type = ANY(:cash_in) THEN amount ELSE -amount END, ''"
        " FROM taken ORDER BY line RETURNING account_id, amount),"
        " moved AS (UPDATE account_books b SET cash = b.cash + s.amount,"
        " as_of = greatest(b.as_of, :as_of), updated_at = now()"
        " FROM (SELECT account_id, sum(amount) AS amount FROM entries GROUP BY 1) s"
        " WHERE b.account_id = s.account_id RETURNING b.account_id)"
        " SELECT (SELECT count(*) FROM taken) AS rows, (SELECT count(*) FROM moved) AS accounts",
        tenant=tenant,
        load_id=load_id,
        cash_types=list(CASH_TYPES),
        cash_in=list(CASH_IN),
        cause=CAUSE,
        as_of=as_of,
    )
    return int(result[0]["rows"])


async def match_our_trades(session: AsyncSession, tenant: str, load_id: str) -> dict[str, int]:
    """Buys and sells Ballast ordered: the lot the custodian names was opened (a buy) or
    relieved on the trade date (a sell) by Ballast's fills, with the same quantity in all
    (`ours`: nothing to apply), or with another one (`mismatch`: not applied; the comparison
    finds the difference), as is a row whose transaction id is one of Ballast's fills of the
    account. Rows with no fill of theirs stay pending (client-directed)."""
    rows = await _rows(
        session,
        "WITH theirs AS (SELECT c.account_id, c.lot_id, c.type, c.trade_date,"
        " sum(c.quantity) AS quantity FROM custodian_transactions c"
        " WHERE " + _PENDING + " AND c.type IN ('buy', 'sell') AND c.lot_id <> ''"
        " GROUP BY 1, 2, 3, 4),"
        " ours AS (SELECT t.account_id, t.lot_id, t.type, t.trade_date,"
        " sum(abs(e.quantity)) AS quantity FROM theirs t"
        " JOIN ledger_entries e ON e.account_id = t.account_id AND e.cause = 'fill'"
        " AND e.kind = CASE t.type WHEN 'buy' THEN 'lot-open' ELSE 'lot-relieve' END"
        " AND (e.lot_id = t.lot_id OR left(e.lot_id, length(t.lot_id) + 1) = t.lot_id || '/')"
        " JOIN applied_fills f ON f.fill_id = e.fill_id"
        " AND (t.type = 'buy' OR (f.executed_at AT TIME ZONE 'UTC')::date = t.trade_date)"
        " GROUP BY 1, 2, 3, 4)"
        " UPDATE custodian_transactions c"
        " SET outcome = CASE WHEN o.quantity = t.quantity THEN 'ours' ELSE 'mismatch' END,"
        " reason = CASE WHEN o.quantity = t.quantity THEN NULL ELSE"
        " format('Ballast''s fills %s %s of lot %s, the custodian %s', t.type, o.quantity,"
        " t.lot_id, t.quantity) END"
        " FROM theirs t JOIN ours o USING (account_id, lot_id, type, trade_date)"
        " WHERE " + _PENDING + " AND c.account_id = t.account_id AND c.lot_id = t.lot_id"
        " AND c.type = t.type AND c.trade_date = t.trade_date RETURNING c.outcome",
        tenant=tenant,
        load_id=load_id,
    )
    # a transaction the custodian names by the id of a fill of ours (the fill id is the
    # custodian's execution id) is Ballast's even when its lots differ: never applied again
    rows += await _rows(
        session,
        "UPDATE custodian_transactions c SET outcome = 'mismatch',"
        " reason = format('Ballast''s fill %s %s other lots than the custodian''s %s',"
        " c.transaction_id, CASE c.type WHEN 'buy' THEN 'opened' ELSE 'relieved' END, c.lot_id)"
        " WHERE " + _PENDING + " AND c.type IN ('buy', 'sell') AND EXISTS (SELECT 1"
        " FROM applied_fills f WHERE f.fill_id = c.transaction_id"
        " AND f.account_id = c.account_id) RETURNING c.outcome",
        tenant=tenant,
        load_id=load_id,
    )
    found = {"ours": 0, "mismatch": 0}
    for r in rows:
        found[r["outcome"]] += 1
    return found


async def pending_trades(
    session: AsyncSession, tenant: str, load_id: str, after_line: int, limit: int
) -> list[dict[str, Any]]:
    """A page (by line) of the pending buys and sells (client-directed), each with the sleeve
    of the lot a sell names ('' = the account's own)."""
    return await _rows(
        session,
        "SELECT c.custodian, c.transaction_id, c.lot_id, c.account_id, c.type, c.symbol,"
        " c.quantity, c.amount, c.price, c.trade_date, c.line,"
        " coalesce((SELECT l.sleeve FROM lots l WHERE l.account_id = c.account_id"
        " AND (l.lot_id = c.lot_id OR left(l.lot_id, length(c.lot_id) + 1) = c.lot_id || '/')"
        " ORDER BY l.lot_id LIMIT 1), '') AS sleeve"
        " FROM custodian_transactions c WHERE " + _PENDING + " AND c.type IN ('buy', 'sell')"
        " AND c.line > :after ORDER BY c.line LIMIT :limit",
        tenant=tenant,
        load_id=load_id,
        after=after_line,
        limit=limit,
    )


async def set_outcomes(
    session: AsyncSession,
    tenant: str,
    load_id: str,
    lines: Sequence[int],
    outcome: str,
    reasons: Sequence[str | None] | None = None,
) -> None:
    """The outcome (and each row's reason) of some rows of a load, by line."""
    if not lines:
        return
    await session.execute(
        text(
            "UPDATE custodian_transactions c SET outcome = :outcome, reason = r.reason"
            " FROM unnest(CAST(:lines AS bigint[]), CAST(:reasons AS text[])) AS r(line, reason)"
            " WHERE c.tenant = :tenant AND c.load_id = :load_id AND c.line = r.line"
        ),
        {
            "tenant": tenant,
            "load_id": load_id,
            "outcome": outcome,
            "lines": list(lines),
            "reasons": list(reasons) if reasons is not None else [None] * len(lines),
        },
    )


async def set_outcomes_if_pending(
    session: AsyncSession, tenant: str, load_id: str, lines: Sequence[int], outcome: str
) -> None:
    """The outcome of those rows of a load, by line, that are still pending."""
    await session.execute(
        text(
            "UPDATE custodian_transactions c SET outcome = :outcome WHERE "
            + _PENDING
            + " AND c.line = ANY(CAST(:lines AS bigint[]))"
        ),
        {"tenant": tenant, "load_id": load_id, "outcome": outcome, "lines": list(lines)},
    )


async def take_transfers_in(
    session: AsyncSession, staged: StagedLoad, load_id: str, kind: str
) -> list[dict[str, Any]]:
    """Lots transferred in become opening inputs of their accounts (basis and acquisition
    date of the lot's row in lots.csv, the basis in proportion when the custodian shows
    fewer shares); a transfer whose lot lots.csv does not show is refused. Returns the
    accounts and symbols given lots."""
    lots = _typed(staged, "lots.csv")
    await _count(
        session,
        "UPDATE custodian_transactions c SET outcome = 'refused',"
        " reason = format('lot %s is not in lots.csv: its basis and date are unknown',"
        " c.lot_id) WHERE " + _PENDING + " AND c.type = 'transfer_in'"
        f" AND NOT EXISTS (SELECT 1 FROM {lots} l WHERE l.account_id = c.account_id"
        " AND l.lot_id = c.lot_id AND l.symbol = c.symbol)",
        tenant=staged.tenant,
        load_id=load_id,
    )
    await _count(
        session,
        "UPDATE custodian_transactions c SET outcome = 'refused',"
        " reason = format('lot %s is open here already', c.lot_id)"
        " WHERE " + _PENDING + " AND c.type = 'transfer_in' AND EXISTS (SELECT 1 FROM lots o"
        " WHERE o.account_id = c.account_id AND (o.lot_id = c.lot_id"
        " OR left(o.lot_id, length(c.lot_id) + 1) = c.lot_id || '/'))",
        tenant=staged.tenant,
        load_id=load_id,
    )
    return await _rows(
        session,
        "WITH taken AS (UPDATE custodian_transactions c SET outcome = 'transfer'"
        " WHERE " + _PENDING + " AND c.type = 'transfer_in'"
        " RETURNING c.custodian, c.transaction_id, c.lot_id, c.account_id, c.symbol,"
        " c.quantity, c.line),"
        " added AS (INSERT INTO tax_inputs (account_id, kind, ref, trade_on, symbol, side,"
        " quantity, price, fees, lot_name, lot_ids, method, sleeve)"
        " SELECT t.account_id, :kind, 'transfer:' || t.custodian || ':' || t.transaction_id"
        " || ':' || t.lot_id, l.acquired_on, t.symbol, 'buy', t.quantity, 0,"
        " round(l.cost_basis * t.quantity / l.quantity, 2), t.lot_id, '', NULL, ''"
        f" FROM taken t JOIN {lots} l ON l.account_id = t.account_id AND l.lot_id = t.lot_id"
        " ORDER BY t.line RETURNING account_id, symbol)"
        " SELECT DISTINCT account_id, symbol FROM added ORDER BY 1, 2",
        tenant=staged.tenant,
        load_id=load_id,
        kind=kind,
    )


# The day's transfers out per lot (summed over its rows), with what the lot holds here (its
# pieces `<lot>/<n>` summed back, as reconciliation sums them).
_TRANSFERS_OUT = (
    "asked AS (SELECT c.tenant, c.account_id, c.symbol, c.lot_id, sum(c.quantity) AS moved,"
    " min(c.custodian) AS custodian,"
    " min(c.business_date) AS business_date FROM custodian_transactions c"
    " WHERE " + _PENDING + " AND c.type = 'transfer_out'"
    " GROUP BY c.tenant, c.account_id, c.symbol, c.lot_id),"
    " held AS (SELECT a.account_id, a.symbol, a.lot_id, a.moved, a.custodian,"
    " a.business_date, (SELECT sum(l.quantity) FROM lots l WHERE l.account_id = a.account_id"
    " AND l.symbol = a.symbol AND (l.lot_id = a.lot_id"
    " OR left(l.lot_id, length(a.lot_id) + 1) = a.lot_id || '/')) AS open FROM asked a)"
)


async def take_transfers_out(
    session: AsyncSession, tenant: str, load_id: str
) -> list[dict[str, Any]]:
    """Lots transferred out leave the account without a sale: an adjustment input per lot,
    dated the business day (`close`, or `scale` to the shares left, its basis in
    proportion); a transfer of a lot not open here, or of more shares than it holds, is
    refused. Returns the accounts and symbols changed."""
    await _count(
        session,
        "WITH " + _TRANSFERS_OUT + " UPDATE custodian_transactions c SET outcome = 'refused',"
        " reason = CASE WHEN h.open IS NULL"
        " THEN format('lot %s of %s is not open here', c.lot_id, c.symbol)"
        " ELSE format('lot %s holds %s shares here; the day transfers %s out', c.lot_id,"
        " h.open, h.moved) END"
        " FROM held h WHERE " + _PENDING + " AND c.type = 'transfer_out'"
        " AND h.account_id = c.account_id AND h.symbol = c.symbol AND h.lot_id = c.lot_id"
        " AND (h.open IS NULL OR h.moved > h.open)",
        tenant=tenant,
        load_id=load_id,
    )
    return await _rows(
        session,
        "WITH " + _TRANSFERS_OUT + ","
        " taken AS (UPDATE custodian_transactions c SET outcome = 'transfer'"
        " WHERE " + _PENDING + " AND c.type = 'transfer_out' RETURNING c.account_id),"
        " added AS (INSERT INTO tax_inputs (account_id, kind, ref, trade_on, symbol, side,"
        " quantity, price, fees, lot_name, lot_ids, method, sleeve)"
        " SELECT h.account_id, 'adjust', 'transfer-out:' || h.custodian || ':'"
        " || h.business_date || ':' || h.lot_id, h.business_date, h.symbol, '',"
        " h.open - h.moved, 0, 0, h.lot_id, '',"
        " CASE WHEN h.moved = h.open THEN 'close' ELSE 'scale' END, ''"
        " FROM held h WHERE h.open IS NOT NULL AND h.moved <= h.open"
        " ORDER BY h.account_id, h.lot_id"
        " ON CONFLICT (account_id, kind, ref) DO NOTHING RETURNING account_id, symbol)"
        " SELECT DISTINCT account_id, symbol FROM added ORDER BY 1, 2",
        tenant=tenant,
        load_id=load_id,
    )


async def refuse_pending(
    session: AsyncSession, tenant: str, load_id: str, kind: str, reason: str
) -> int:
    """Pending rows of a type the ingest does not apply, refused with `reason`."""
    return await _count(
        session,
        "UPDATE custodian_transactions c SET outcome = 'refused', reason = :reason"
        " WHERE " + _PENDING + " AND c.type = :kind",
        tenant=tenant,
        load_id=load_id,
        kind=kind,
        reason=reason,
    )


async def request_day_snapshots(
    session: AsyncSession,
    tenant: str,
    load_id: str,
    traceparent: str | None,
    tracestate: str | None,
) -> int:
    """One holdings-reconciled requested per account the day's transactions changed
    (coalesced with a request pending for it, which keeps its fill ids)."""
    return await _count(
        session,
        "INSERT INTO pending_snapshots (account_id, cause, fill_ids, traceparent, tracestate)"
        " SELECT DISTINCT c.account_id, :cause, '[]'::jsonb, :traceparent, :tracestate"
        " FROM custodian_transactions c WHERE c.tenant = :tenant AND c.load_id = :load_id"
        " AND c.outcome IN ('cash', 'transfer', 'trade') ORDER BY 1"
        " ON CONFLICT (account_id) DO UPDATE SET cause = excluded.cause,"
        " cause_event_id = NULL, traceparent = excluded.traceparent,"
        " tracestate = excluded.tracestate",
        tenant=tenant,
        load_id=load_id,
        cause=CAUSE,
        traceparent=traceparent,
        tracestate=tracestate,
    )


async def outcomes(session: AsyncSession, tenant: str, load_id: str) -> dict[str, int]:
    """How many of the load's transaction rows ended how."""
    rows = await _rows(
        session,
        "SELECT outcome, count(*) AS n FROM custodian_transactions"
        " WHERE tenant = :tenant AND load_id = :load_id GROUP BY 1",
        tenant=tenant,
        load_id=load_id,
    )
    return {r["outcome"]: int(r["n"]) for r in rows}


async def first_refused(
    session: AsyncSession, tenant: str, load_id: str, limit: int
) -> list[dict[str, Any]]:
    """The first rows of the load not applied for a reason (refused, mismatched)."""
    return await _rows(
        session,
        "SELECT line, transaction_id, lot_id, account_id, type, outcome, reason"
        " FROM custodian_transactions WHERE tenant = :tenant AND load_id = :load_id"
        " AND outcome IN ('refused', 'mismatch') ORDER BY line LIMIT :limit",
        tenant=tenant,
        load_id=load_id,
        limit=limit,
    )


async def accounts_of_load(session: AsyncSession, tenant: str, load_id: str) -> list[str]:
    """The accounts whose lots the day's transfers changed."""
    rows = await _rows(
        session,
        "SELECT DISTINCT account_id FROM custodian_transactions WHERE tenant = :tenant"
        " AND load_id = :load_id AND outcome = 'transfer' ORDER BY 1",
        tenant=tenant,
        load_id=load_id,
    )
    return [r["account_id"] for r in rows]


# --- corporate actions ----------------------------------------------------------------------


async def corporate_action_rows(session: AsyncSession, staged: StagedLoad) -> list[dict[str, Any]]:
    """The rows of the day's corporate_actions.csv (a handful), in file order."""
    name = "corporate_actions.csv"
    if not staged.has(name):
        return []
    columns = (
        "new_symbol",
        "numerator",
        "denominator",
        "ratio",
        "cash_per_share",
        "basis_percent",
    )
    optional = ", ".join(f"{_column(staged, name, c, 'a')} AS {c}" for c in columns)
    return await _rows(
        session,
        "SELECT a.line, a.action_id, a.type, a.symbol, a.effective_date, "
        + optional
        + f" FROM {_typed(staged, name)} a ORDER BY a.line",
    )


async def suspend_unsynced_breaks(
    session: AsyncSession, tenant: str, load_id: str, notes: dict[str, str]
) -> int:
    """The load's lot breaks in a security of a corporate action of the day (`notes`: symbol
    -> the action in words) suspend their account, the action named on the break."""
    if not notes:
        return 0
    return await _count(
        session,
        "UPDATE reconciliation_breaks b SET policy = 'suspend',"
        " theirs = CASE WHEN b.theirs IS NULL THEN NULL"
        " ELSE b.theirs || jsonb_build_object('corporate_action', n.note) END,"
        " ours = CASE WHEN b.theirs IS NULL"
        " THEN b.ours || jsonb_build_object('corporate_action', n.note) ELSE b.ours END"
        " FROM unnest(CAST(:symbols AS text[]), CAST(:notes AS text[])) AS n(symbol, note)"
        " WHERE b.tenant = :tenant AND b.load_id = :load_id AND b.symbol = n.symbol"
        " AND b.kind = ANY(:kinds)",
        tenant=tenant,
        load_id=load_id,
        symbols=list(notes),
        notes=list(notes.values()),
        kinds=list(LOT_BREAKS),
    )


# --- original files -------------------------------------------------------------------------


async def add_file(session: AsyncSession, row: dict[str, Any]) -> int:
    """A kept file's row (its size and digest filled in once its chunks are written)."""
    result = await session.execute(
        text(
            "INSERT INTO custodian_day_files (tenant, custodian, business_date, name, size,"
            " sha256, manifest_sha256, received_by) VALUES (:tenant, :custodian,"
            " :business_date, :name, 0, '', :manifest_sha256, :received_by) RETURNING id"
        ),
        row,
    )
    return int(result.scalar_one())


async def add_chunk(session: AsyncSession, file_id: int, n: int, content: bytes) -> None:
    """One chunk of a kept file."""
    await session.execute(
        text("INSERT INTO custodian_day_file_chunks (file_id, n, content) VALUES (:f, :n, :c)"),
        {"f": file_id, "n": n, "c": content},
    )


async def finish_file(session: AsyncSession, file_id: int, size: int, sha256: str) -> int | None:
    """Record a kept file's size and digest; when the same bytes of the same file were kept
    before, drop this copy and return the first one's id."""
    same = await session.execute(
        text(
            "SELECT o.id FROM custodian_day_files f JOIN custodian_day_files o"
            " ON o.tenant = f.tenant AND o.custodian = f.custodian"
            " AND o.business_date = f.business_date AND o.name = f.name AND o.sha256 = :sha"
            " WHERE f.id = :id AND o.id <> f.id ORDER BY o.id LIMIT 1"
        ),
        {"id": file_id, "sha": sha256},
    )
    first = same.scalar_one_or_none()
    if first is not None:
        await session.execute(
            text("DELETE FROM custodian_day_file_chunks WHERE file_id = :id"), {"id": file_id}
        )
        await session.execute(
            text("DELETE FROM custodian_day_files WHERE id = :id"), {"id": file_id}
        )
        return int(first)
    await session.execute(
        text("UPDATE custodian_day_files SET size = :size, sha256 = :sha WHERE id = :id"),
        {"id": file_id, "size": size, "sha": sha256},
    )
    return None


async def kept_files(
    session: AsyncSession, tenant: str, custodian: str, business_date: date, name: str | None
) -> list[dict[str, Any]]:
    """The kept files of a custodian's day (of one name when given), newest first."""
    return await _rows(
        session,
        "SELECT id, custodian, business_date, name, size, sha256, manifest_sha256,"
        " received_by, received_at FROM custodian_day_files WHERE tenant = :tenant"
        " AND custodian = :custodian AND business_date = :day"
        " AND (CAST(:name AS text) IS NULL OR name = :name) AND sha256 <> ''"
        " ORDER BY name, id DESC",
        tenant=tenant,
        custodian=custodian,
        day=business_date,
        name=name,
    )


async def file_chunks(session: AsyncSession, file_id: int) -> AsyncIterator[bytes]:
    """A kept file's bytes, a chunk per statement (memory stays flat)."""
    n = 0
    while True:
        result = await session.execute(
            text(
                "SELECT n, content FROM custodian_day_file_chunks WHERE file_id = :f AND n >= :n"
                " ORDER BY n LIMIT 1"
            ),
            {"f": file_id, "n": n},
        )
        row = result.first()
        if row is None:
            return
        yield bytes(row.content)
        n = int(row.n) + 1
