"""All of reporting-svc's SQL: idempotent upserts from events, and the report queries."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import CursorResult, Executable, func, text, tuple_
from sqlalchemy.dialects.postgresql import insert
from sqlmodel import col, delete, select
from sqlmodel.ext.asyncio.session import AsyncSession

from reporting_svc.tables import (
    Account,
    AccountDrift,
    AccountSleeve,
    Fill,
    HeldLot,
    HoldingsSnapshot,
    Model,
    ModelTarget,
    Position,
    Proposal,
    ReconciledFill,
    Run,
    RunDrift,
    Security,
    Trade,
)

Row = Mapping[str, Any]  # values to write
Record = dict[str, Any]  # a row read
SortKey = Literal["account_id", "name", "model_id", "market_value", "cash", "max_drift", "status"]


async def _run(
    session: AsyncSession, statement: Executable, params: Any = None
) -> CursorResult[Any]:
    """Execute Core SQL in the session's transaction (SQLModel's `exec` is for ORM selects)."""
    connection = await session.connection()
    return await connection.execute(statement, params)


# --- writes ---------------------------------------------------------------------------------


async def upsert_securities(session: AsyncSession, rows: Sequence[Row]) -> None:
    """Newer information wins; an older event for a symbol changes nothing."""
    stmt = insert(Security).values(list(rows))
    stmt = stmt.on_conflict_do_update(
        index_elements=["symbol"],
        set_={c: stmt.excluded[c] for c in ("name", "asset_class", "sector", "price")}
        | {"changed_at": stmt.excluded.changed_at},
        where=col(Security.changed_at) <= stmt.excluded.changed_at,
    )
    await _run(session, stmt)


async def upsert_model(
    session: AsyncSession, row: Row, targets: Sequence[tuple[str, Decimal]]
) -> bool:
    """Store a model version unless a newer one is stored; True if the targets were replaced."""
    stmt = insert(Model).values(dict(row))
    upsert = stmt.on_conflict_do_update(
        index_elements=["model_id"],
        set_={c: stmt.excluded[c] for c in ("name", "version", "changed_by", "changed_at")},
        where=col(Model.version) <= stmt.excluded.version,
    ).returning(col(Model.model_id))
    if (await _run(session, upsert)).first() is None:
        return False
    model_id = row["model_id"]
    await _run(session, delete(ModelTarget).where(col(ModelTarget.model_id) == model_id))
    await _run(
        session,
        insert(ModelTarget).values(
            [{"model_id": model_id, "symbol": s, "weight": w} for s, w in targets]
        ),
    )
    return True


async def upsert_account(session: AsyncSession, row: Row, sleeves: Sequence[Row]) -> None:
    """Store the account (and replace its sleeves) unless a newer change is stored."""
    stmt = insert(Account).values(dict(row))
    upsert = stmt.on_conflict_do_update(
        index_elements=["account_id"],
        set_={c: stmt.excluded[c] for c in row if c != "account_id"},
        where=col(Account.changed_at) <= stmt.excluded.changed_at,
    ).returning(col(Account.account_id))
    if (await _run(session, upsert)).first() is None:
        return
    await _run(
        session, delete(AccountSleeve).where(col(AccountSleeve.account_id) == row["account_id"])
    )
    if sleeves:
        await _run(session, insert(AccountSleeve).values(list(sleeves)))


async def sleeves_of(session: AsyncSession, account_id: str) -> list[AccountSleeve]:
    result = await session.exec(
        select(AccountSleeve)
        .where(AccountSleeve.account_id == account_id)
        .order_by(col(AccountSleeve.sleeve_id))
    )
    return list(result)


async def replace_holdings(
    session: AsyncSession, snapshot: Row, positions: Sequence[Row], lots: Sequence[Row]
) -> bool:
    """Replace the account's snapshot, positions and lots unless the stored snapshot is newer
    (by as_of date, then event time). True if replaced."""
    stmt = insert(HoldingsSnapshot).values(dict(snapshot))
    upsert = stmt.on_conflict_do_update(
        index_elements=["account_id"],
        set_={c: stmt.excluded[c] for c in snapshot if c != "account_id"},
        where=tuple_(col(HoldingsSnapshot.as_of), col(HoldingsSnapshot.event_time))
        <= tuple_(stmt.excluded.as_of, stmt.excluded.event_time),
    ).returning(col(HoldingsSnapshot.account_id))
    if (await _run(session, upsert)).first() is None:
        return False
    account_id = snapshot["account_id"]
    await _run(session, delete(Position).where(col(Position.account_id) == account_id))
    await _run(session, delete(HeldLot).where(col(HeldLot.account_id) == account_id))
    if positions:
        await _run(session, insert(Position).values(list(positions)))
    if lots:
        await _run(session, insert(HeldLot).values(list(lots)))
    return True


async def record_reconciled_fills(
    session: AsyncSession, account_id: str, fill_ids: Sequence[str], at: datetime
) -> None:
    if not fill_ids:
        return
    stmt = insert(ReconciledFill).values(
        [{"fill_id": f, "account_id": account_id, "reconciled_at": at} for f in set(fill_ids)]
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["fill_id"],
        set_={
            "reconciled_at": func.least(ReconciledFill.reconciled_at, stmt.excluded.reconciled_at)
        },
    )
    await _run(session, stmt)


async def upsert_run(
    session: AsyncSession, run_id: uuid.UUID, model_id: str, model_version: int, at: datetime
) -> None:
    stmt = insert(Run).values(
        run_id=run_id,
        model_id=model_id,
        model_version=model_version,
        first_event_at=at,
        last_event_at=at,
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["run_id"],
        set_={
            "first_event_at": func.least(Run.first_event_at, stmt.excluded.first_event_at),
            "last_event_at": func.greatest(Run.last_event_at, stmt.excluded.last_event_at),
        },
    )
    await _run(session, stmt)


async def upsert_drift(session: AsyncSession, run_row: Row, latest_row: Row) -> None:
    """Drift of one account in one run, and the account's latest drift if this is newer."""
    stmt = insert(RunDrift).values(dict(run_row))
    await _run(
        session,
        stmt.on_conflict_do_update(
            index_elements=["run_id", "account_id"],
            set_={c: stmt.excluded[c] for c in run_row if c not in ("run_id", "account_id")},
        ),
    )
    latest = insert(AccountDrift).values(dict(latest_row))
    await _run(
        session,
        latest.on_conflict_do_update(
            index_elements=["account_id"],
            set_={c: latest.excluded[c] for c in latest_row if c != "account_id"},
            where=col(AccountDrift.measured_at) <= latest.excluded.measured_at,
        ),
    )


async def upsert_proposed(session: AsyncSession, row: Row) -> None:
    """A proposal's run details (from trades-proposed)."""
    stmt = insert(Proposal).values(dict(row))
    await _run(
        session,
        stmt.on_conflict_do_update(
            index_elements=["proposal_id"],
            set_={c: stmt.excluded[c] for c in row if c != "proposal_id"},
        ),
    )


async def upsert_approved(
    session: AsyncSession, proposal_id: uuid.UUID, account_id: str, by: str, at: datetime
) -> None:
    stmt = insert(Proposal).values(
        proposal_id=proposal_id, account_id=account_id, approved_by=by, approved_at=at
    )
    await _run(
        session,
        stmt.on_conflict_do_update(
            index_elements=["proposal_id"],
            set_={
                "approved_by": func.coalesce(Proposal.approved_by, stmt.excluded.approved_by),
                "approved_at": func.coalesce(Proposal.approved_at, stmt.excluded.approved_at),
            },
        ),
    )


async def decline_proposal(
    session: AsyncSession,
    proposal_id: uuid.UUID,
    account_id: str,
    by: str,
    reason: str,
    at: datetime,
) -> None:
    """The first decline wins, so a replay changes nothing."""
    stmt = insert(Proposal).values(
        proposal_id=proposal_id,
        account_id=account_id,
        declined_by=by,
        declined_reason=reason,
        declined_at=at,
    )
    await _run(
        session,
        stmt.on_conflict_do_update(
            index_elements=["proposal_id"],
            set_={
                c: func.coalesce(getattr(Proposal, c), stmt.excluded[c])
                for c in ("declined_by", "declined_reason", "declined_at")
            },
        ),
    )


async def ensure_proposal(session: AsyncSession, proposal_id: uuid.UUID, account_id: str) -> None:
    await _run(
        session,
        insert(Proposal)
        .values(proposal_id=proposal_id, account_id=account_id)
        .on_conflict_do_nothing(index_elements=["proposal_id"]),
    )


_DETAILS = (
    "quantity",
    "estimated_price",
    "estimated_value",
    "reason",
    "explanation",
    "sleeve_id",
    "lot_ids",
    "estimated_tax",
)


async def upsert_trade_details(session: AsyncSession, rows: Sequence[Row]) -> None:
    """Trades as proposed or approved: their terms, and when they were proposed/approved
    (the first time wins, so a replay changes nothing)."""
    stmt = insert(Trade).values(list(rows))
    await _run(
        session,
        stmt.on_conflict_do_update(
            index_elements=["trade_id"],
            set_={
                **{c: stmt.excluded[c] for c in ("proposal_id", "symbol", "side", *_DETAILS)},
                "proposed_at": func.coalesce(Trade.proposed_at, stmt.excluded.proposed_at),
                "approved_at": func.coalesce(Trade.approved_at, stmt.excluded.approved_at),
                "updated_at": func.greatest(Trade.updated_at, stmt.excluded.updated_at),
            },
        ),
    )


async def ensure_trade(session: AsyncSession, row: Row) -> None:
    """A trade first seen through a fill or a reject: keep what is known, add the rest."""
    stmt = insert(Trade).values(dict(row))
    await _run(
        session,
        stmt.on_conflict_do_update(
            index_elements=["trade_id"],
            set_={
                "quantity": func.coalesce(Trade.quantity, stmt.excluded.quantity),
                "rejected_reason": func.coalesce(
                    Trade.rejected_reason, stmt.excluded.rejected_reason
                ),
                "rejected_at": func.coalesce(Trade.rejected_at, stmt.excluded.rejected_at),
                "updated_at": func.greatest(Trade.updated_at, stmt.excluded.updated_at),
            },
        ),
    )


async def insert_fill(session: AsyncSession, row: Row) -> bool:
    """Remember a fill; False if its id was already known."""
    stmt = (
        insert(Fill)
        .values(dict(row))
        .on_conflict_do_nothing(index_elements=["fill_id"])
        .returning(col(Fill.fill_id))
    )
    return (await _run(session, stmt)).first() is not None


_REFRESH = """
    UPDATE trades t
       SET filled_quantity = f.qty,
           average_price = f.avg_price,
           status = CASE
               WHEN t.rejected_reason IS NOT NULL THEN 'rejected'
               WHEN t.quantity IS NOT NULL AND f.qty >= t.quantity THEN 'filled'
               WHEN f.qty > 0 THEN 'partially_filled'
               WHEN f.declined THEN 'declined'
               WHEN t.approved_at IS NOT NULL THEN 'approved'
               ELSE 'proposed'
           END
      FROM (
          SELECT tt.trade_id,
                 COALESCE(SUM(fi.quantity), 0) AS qty,
                 ROUND(SUM(fi.quantity * fi.price) / NULLIF(SUM(fi.quantity), 0), 6) AS avg_price,
                 BOOL_OR(p.declined_at IS NOT NULL) AS declined
            FROM trades tt
            JOIN proposals p ON p.proposal_id = tt.proposal_id
            LEFT JOIN fills fi ON fi.trade_id = tt.trade_id
           WHERE {which}
           GROUP BY tt.trade_id
      ) f
     WHERE t.trade_id = f.trade_id
"""
_REFRESH_TRADES = text(_REFRESH.format(which="tt.trade_id = ANY(:ids)"))
_REFRESH_PROPOSAL = text(_REFRESH.format(which="tt.proposal_id = :proposal_id"))


async def refresh_trades(session: AsyncSession, trade_ids: Sequence[uuid.UUID]) -> None:
    """Derive filled quantity, average price and status from the stored facts."""
    await _run(session, _REFRESH_TRADES, {"ids": list(trade_ids)})


async def refresh_proposal_trades(session: AsyncSession, proposal_id: uuid.UUID) -> None:
    await _run(session, _REFRESH_PROPOSAL, {"proposal_id": proposal_id})


# --- reads ----------------------------------------------------------------------------------

# Market value per account (cash plus priced positions) and the largest absolute difference
# between a security's weight and its model target. Securities without a price are left out
# of the value and counted in `unpriced`.
_VALUATION = """
    mv AS (
        SELECT h.account_id, h.cash, h.as_of,
               h.cash + COALESCE(SUM(p.quantity * s.price), 0) AS market_value,
               COUNT(p.symbol) FILTER (WHERE s.symbol IS NULL) AS unpriced
          FROM holdings h
          LEFT JOIN positions p ON p.account_id = h.account_id AND p.quantity <> 0
          LEFT JOIN securities s ON s.symbol = p.symbol
         GROUP BY h.account_id, h.cash, h.as_of
    ),
    lines AS (
        SELECT p.account_id, p.symbol, p.quantity * s.price AS value, 0::numeric AS target
          FROM positions p JOIN securities s ON s.symbol = p.symbol
         WHERE p.quantity <> 0
        UNION ALL
        SELECT a.account_id, t.symbol, 0::numeric, t.weight
          FROM accounts a JOIN model_targets t ON t.model_id = a.model_id
        UNION ALL
        SELECT sl.account_id, t.symbol, 0::numeric, sl.weight * t.weight
          FROM account_sleeves sl JOIN model_targets t ON t.model_id = sl.model_id
    ),
    per_security AS (
        SELECT account_id, symbol, SUM(value) AS value, SUM(target) AS target
          FROM lines GROUP BY account_id, symbol
    ),
    drift AS (
        SELECT ps.account_id,
               ROUND(MAX(ABS(ps.value / mv.market_value - ps.target)), 8) AS max_drift
          FROM per_security ps JOIN mv ON mv.account_id = ps.account_id
         WHERE mv.market_value > 0
         GROUP BY ps.account_id
    ),
    overview AS (
        SELECT a.account_id, a.name, a.household_id, a.account_type, a.model_id,
               m.name AS model_name, m.version AS model_version, a.status, a.auto_approve,
               mv.cash, ROUND(mv.market_value, 2) AS market_value, mv.as_of AS holdings_as_of,
               COALESCE(mv.unpriced, 0) AS unpriced, d.max_drift,
               COALESCE(ad.tolerance, :default_tolerance) AS tolerance,
               COALESCE(d.max_drift > COALESCE(ad.tolerance, :default_tolerance), false)
                   AS out_of_tolerance,
               ad.run_id AS last_run_id, ad.max_abs_drift AS measured_drift,
               ad.out_of_tolerance AS measured_out_of_tolerance, ad.measured_at
          FROM accounts a
          LEFT JOIN models m ON m.model_id = a.model_id
          LEFT JOIN mv ON mv.account_id = a.account_id
          LEFT JOIN drift d ON d.account_id = a.account_id
          LEFT JOIN account_drift ad ON ad.account_id = a.account_id
    )
"""

ACCOUNT_SORTS: dict[SortKey, str] = {
    "account_id": "account_id",
    "name": "name",
    "model_id": "model_id",
    "market_value": "market_value",
    "cash": "cash",
    "max_drift": "max_drift",
    "status": "status",
}


async def account_overviews(
    session: AsyncSession,
    *,
    default_tolerance: Decimal,
    limit: int,
    offset: int,
    model_id: str | None = None,
    out_of_tolerance: bool | None = None,
    status: str | None = None,
    search: str | None = None,
    account_id: str | None = None,
    sort: SortKey = "account_id",
    descending: bool = False,
) -> tuple[int, list[Record]]:
    """(total matching, one page of account overviews)."""
    where = ["true"]
    params: dict[str, Any] = {"default_tolerance": default_tolerance}
    if model_id is not None:
        where.append("model_id = :model_id")
        params["model_id"] = model_id
    if out_of_tolerance is not None:
        where.append("out_of_tolerance = :oot")
        params["oot"] = out_of_tolerance
    if status is not None:
        where.append("status = :status")
        params["status"] = status
    if search:
        where.append("(account_id ILIKE :search OR name ILIKE :search)")
        params["search"] = f"%{search}%"
    if account_id is not None:
        where.append("account_id = :account_id")
        params["account_id"] = account_id
    order = ACCOUNT_SORTS[sort]
    direction = "DESC" if descending else "ASC"
    sql = f"""
        WITH {_VALUATION}
        SELECT *, COUNT(*) OVER () AS total FROM overview
         WHERE {" AND ".join(where)}
         ORDER BY {order} {direction} NULLS LAST, account_id
         LIMIT :limit OFFSET :offset
    """
    params.update(limit=limit, offset=offset)
    rows = [dict(r) for r in (await _run(session, text(sql), params)).mappings()]
    if rows:
        return int(rows[0]["total"]), rows
    if offset == 0:
        return 0, []
    count_sql = f"WITH {_VALUATION} SELECT COUNT(*) FROM overview WHERE {' AND '.join(where)}"
    total = (await _run(session, text(count_sql), params)).scalar_one()
    return int(total), []


async def account_known(session: AsyncSession, account_id: str) -> bool:
    if await session.get(Account, account_id) is not None:
        return True
    return await session.get(HoldingsSnapshot, account_id) is not None


async def get_account(session: AsyncSession, account_id: str) -> Account | None:
    return await session.get(Account, account_id)


async def get_holdings(session: AsyncSession, account_id: str) -> HoldingsSnapshot | None:
    return await session.get(HoldingsSnapshot, account_id)


async def get_model(session: AsyncSession, model_id: str) -> Model | None:
    return await session.get(Model, model_id)


async def get_account_drift(session: AsyncSession, account_id: str) -> AccountDrift | None:
    return await session.get(AccountDrift, account_id)


_HOLDING_LINES = text(
    """
    WITH lines AS (
        SELECT p.symbol, p.quantity, p.cost_basis, 0::numeric AS target
          FROM positions p
         WHERE p.account_id = :account_id AND p.quantity <> 0
        UNION ALL
        SELECT t.symbol, 0::numeric, 0::numeric, t.weight
          FROM accounts a JOIN model_targets t ON t.model_id = a.model_id
         WHERE a.account_id = :account_id
        UNION ALL
        SELECT t.symbol, 0::numeric, 0::numeric, sl.weight * t.weight
          FROM account_sleeves sl JOIN model_targets t ON t.model_id = sl.model_id
         WHERE sl.account_id = :account_id
    )
    SELECT l.symbol, SUM(l.quantity) AS quantity, SUM(l.cost_basis) AS cost_basis,
           SUM(l.target) AS target_weight, s.name, s.sector, s.asset_class, s.price
      FROM lines l LEFT JOIN securities s ON s.symbol = l.symbol
     GROUP BY l.symbol, s.name, s.sector, s.asset_class, s.price
     ORDER BY l.symbol
    """
)


async def holding_lines(session: AsyncSession, account_id: str) -> list[Record]:
    """Each held or targeted security of the account with its quantity, price and target."""
    result = await _run(session, _HOLDING_LINES, {"account_id": account_id})
    return [dict(r) for r in result.mappings()]


_LOTS = text(
    """
    SELECT l.lot_id, l.symbol, l.sleeve_id, l.quantity, l.acquired, l.cost_basis,
           l.wash_adjustment, s.price
      FROM lots l LEFT JOIN securities s ON s.symbol = l.symbol
     WHERE l.account_id = :account_id
     ORDER BY l.symbol, l.acquired, l.lot_id
    """
)


async def lots_of(session: AsyncSession, account_id: str) -> list[Record]:
    """The account's open tax lots with the security master's price (None if unpriced)."""
    result = await _run(session, _LOTS, {"account_id": account_id})
    return [dict(r) for r in result.mappings()]


_TRADES = text(
    """
    SELECT t.*, p.run_id, p.approved_by, p.declined_by, p.declined_reason, p.model_id,
           p.model_version,
           COALESCE(f.fills, 0) AS fills, COALESCE(f.reflected, 0) AS fills_reflected
      FROM trades t
      JOIN proposals p ON p.proposal_id = t.proposal_id
      LEFT JOIN LATERAL (
          SELECT COUNT(*) AS fills, COUNT(rf.fill_id) AS reflected
            FROM fills fi LEFT JOIN reconciled_fills rf ON rf.fill_id = fi.fill_id
           WHERE fi.trade_id = t.trade_id
      ) f ON true
     WHERE t.account_id = :account_id
     ORDER BY COALESCE(t.proposed_at, t.approved_at, t.updated_at) DESC, t.side DESC, t.symbol
     LIMIT :limit OFFSET :offset
    """
)


async def trades_of(
    session: AsyncSession, account_id: str, limit: int, offset: int
) -> list[Record]:
    result = await _run(
        session, _TRADES, {"account_id": account_id, "limit": limit, "offset": offset}
    )
    return [dict(r) for r in result.mappings()]


async def trade_status_counts(
    session: AsyncSession, account_id: str | None = None
) -> dict[str, int]:
    stmt = select(Trade.status, func.count()).group_by(col(Trade.status))
    if account_id is not None:
        stmt = stmt.where(Trade.account_id == account_id)
    return {status: int(n) for status, n in (await session.exec(stmt)).all()}


_RUNS = """
    SELECT r.run_id, r.model_id, r.model_version, r.first_event_at, r.last_event_at,
           d.measured AS accounts_measured, d.out_of_tolerance AS accounts_out_of_tolerance,
           pr.proposals, pr.approved AS proposals_approved,
           tr.trades, tr.filled, tr.partially_filled, tr.rejected, tr.declined, tr.approved,
           tr.proposed, tr.estimated_tax,
           fl.fills, fl.reflected AS fills_reflected, fl.last_reconciled_at
      FROM runs r
      LEFT JOIN LATERAL (
          SELECT COUNT(*) AS measured, COUNT(*) FILTER (WHERE out_of_tolerance) AS out_of_tolerance
            FROM run_drift WHERE run_id = r.run_id
      ) d ON true
      LEFT JOIN LATERAL (
          SELECT COUNT(*) AS proposals, COUNT(approved_at) AS approved
            FROM proposals WHERE run_id = r.run_id
      ) pr ON true
      LEFT JOIN LATERAL (
          SELECT COUNT(*) AS trades,
                 COUNT(*) FILTER (WHERE t.status = 'filled') AS filled,
                 COUNT(*) FILTER (WHERE t.status = 'partially_filled') AS partially_filled,
                 COUNT(*) FILTER (WHERE t.status = 'rejected') AS rejected,
                 COUNT(*) FILTER (WHERE t.status = 'declined') AS declined,
                 SUM(t.estimated_tax) FILTER (WHERE t.status <> 'declined') AS estimated_tax,
                 COUNT(*) FILTER (WHERE t.status = 'approved') AS approved,
                 COUNT(*) FILTER (WHERE t.status = 'proposed') AS proposed
            FROM trades t JOIN proposals p ON p.proposal_id = t.proposal_id
           WHERE p.run_id = r.run_id
      ) tr ON true
      LEFT JOIN LATERAL (
          SELECT COUNT(*) AS fills, COUNT(rf.fill_id) AS reflected,
                 MAX(rf.reconciled_at) AS last_reconciled_at
            FROM fills f JOIN proposals p ON p.proposal_id = f.proposal_id
            LEFT JOIN reconciled_fills rf ON rf.fill_id = f.fill_id
           WHERE p.run_id = r.run_id
      ) fl ON true
"""


async def run_progress(session: AsyncSession, run_id: uuid.UUID) -> Record | None:
    result = await _run(session, text(_RUNS + " WHERE r.run_id = :run_id"), {"run_id": run_id})
    row = result.mappings().first()
    return dict(row) if row is not None else None


async def list_runs(
    session: AsyncSession,
    *,
    model_id: str | None,
    model_version: int | None,
    limit: int,
    offset: int,
) -> list[Record]:
    where = ["true"]
    params: dict[str, Any] = {"limit": limit, "offset": offset}
    if model_id is not None:
        where.append("r.model_id = :model_id")
        params["model_id"] = model_id
    if model_version is not None:
        where.append("r.model_version = :model_version")
        params["model_version"] = model_version
    sql = (
        _RUNS
        + f" WHERE {' AND '.join(where)}"
        + " ORDER BY r.first_event_at DESC, r.run_id LIMIT :limit OFFSET :offset"
    )
    return [dict(r) for r in (await _run(session, text(sql), params)).mappings()]


async def summary_counts(session: AsyncSession, default_tolerance: Decimal) -> Record:
    sql = f"""
        WITH {_VALUATION}
        SELECT (SELECT COUNT(*) FROM accounts) AS accounts,
               (SELECT COUNT(*) FROM models) AS models,
               (SELECT COUNT(*) FROM securities) AS securities,
               (SELECT COUNT(*) FROM overview WHERE out_of_tolerance) AS out_of_tolerance,
               (SELECT COUNT(*) FROM runs) AS runs,
               (SELECT COUNT(*) FROM proposals) AS proposals,
               (SELECT COUNT(*) FROM fills) AS fills,
               (SELECT COUNT(*) FROM fills f JOIN reconciled_fills rf USING (fill_id))
                   AS fills_reflected,
               (SELECT COALESCE(ROUND(SUM(market_value), 2), 0) FROM mv) AS market_value
    """
    result = await _run(session, text(sql), {"default_tolerance": default_tolerance})
    return dict(result.mappings().one())


async def positions_of(session: AsyncSession, account_id: str) -> list[Position]:
    result = await session.exec(
        select(Position).where(Position.account_id == account_id).order_by(col(Position.symbol))
    )
    return list(result)


_RUN_ACCOUNTS = text(
    """
    WITH members AS (
        SELECT account_id FROM run_drift WHERE run_id = :run_id
        UNION
        SELECT account_id FROM proposals WHERE run_id = :run_id
    ),
    tr AS (
        SELECT p.account_id, COUNT(*) AS trades,
               COUNT(*) FILTER (WHERE t.status = 'filled') AS filled,
               COUNT(*) FILTER (WHERE t.status = 'rejected') AS rejected,
               COUNT(*) FILTER (WHERE t.status = 'declined') AS declined,
               COUNT(*) FILTER (WHERE t.status IN ('proposed', 'approved', 'partially_filled'))
                   AS open
          FROM proposals p JOIN trades t ON t.proposal_id = p.proposal_id
         WHERE p.run_id = :run_id
         GROUP BY p.account_id
    ),
    fl AS (
        SELECT p.account_id, COUNT(*) AS fills, COUNT(rf.fill_id) AS reflected
          FROM proposals p JOIN fills f ON f.proposal_id = p.proposal_id
          LEFT JOIN reconciled_fills rf ON rf.fill_id = f.fill_id
         WHERE p.run_id = :run_id
         GROUP BY p.account_id
    )
    SELECT m.account_id, a.name, d.total_value, d.max_abs_drift, d.out_of_tolerance,
           COALESCE(tr.trades, 0) AS trades, COALESCE(tr.filled, 0) AS filled,
           COALESCE(tr.rejected, 0) AS rejected, COALESCE(tr.declined, 0) AS declined,
           COALESCE(tr.open, 0) AS open,
           COALESCE(fl.fills, 0) AS fills, COALESCE(fl.reflected, 0) AS fills_reflected
      FROM members m
      LEFT JOIN accounts a ON a.account_id = m.account_id
      LEFT JOIN run_drift d ON d.run_id = :run_id AND d.account_id = m.account_id
      LEFT JOIN tr ON tr.account_id = m.account_id
      LEFT JOIN fl ON fl.account_id = m.account_id
     ORDER BY d.max_abs_drift DESC NULLS LAST, m.account_id
     LIMIT :limit OFFSET :offset
    """
)


async def run_accounts(
    session: AsyncSession, run_id: uuid.UUID, limit: int, offset: int
) -> list[Record]:
    """The accounts a run measured or proposed trades for, with their progress."""
    result = await _run(
        session, _RUN_ACCOUNTS, {"run_id": run_id, "limit": limit, "offset": offset}
    )
    return [dict(r) for r in result.mappings()]


_MODELS = text(
    """
    SELECT m.model_id, m.name, m.version, m.changed_by, m.changed_at,
           (SELECT COUNT(*) FROM model_targets t WHERE t.model_id = m.model_id) AS securities,
           (SELECT COUNT(*) FROM accounts a WHERE a.model_id = m.model_id)
             + (SELECT COUNT(DISTINCT sl.account_id) FROM account_sleeves sl
                 WHERE sl.model_id = m.model_id) AS accounts
      FROM models m ORDER BY m.model_id
    """
)


async def list_models(session: AsyncSession) -> list[Record]:
    return [dict(r) for r in (await _run(session, _MODELS)).mappings()]
