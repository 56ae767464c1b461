"""All of reporting-svc's SQL: set-based upserts from batches of events, and the report
queries over the stored read models.

Writes take a batch's rows as arrays (`unnest`) so a consumer batch costs one statement per
table, whatever its size. They run on the session's driver connection
(`ballast_common.bulk`), in its transaction: one prepared statement each, kept by the
driver, and no per-call statement building. Concurrency: a transaction that changes an
account's holdings, trades or fills first takes the account's `account_valuations` row
(`lock_accounts`, in account order), so what it derives from other tables (a trade's fills,
an account's value) sees every change committed by the transaction before it. Revaluing on
new prices takes the prices lock exclusively; holdings batches take it shared.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any, Literal

from ballast_common import tenancy
from ballast_common.bulk import driver_connection, insert_columns
from sqlalchemy import CursorResult, Executable, func, text
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from reporting_svc.tables import (
    Account,
    AccountSleeve,
    HoldingsSnapshot,
    Model,
    ModelTarget,
    Position,
    Trade,
    WebhookAttempt,
)

Row = Mapping[str, Any]  # values to write
Record = dict[str, Any]  # a row read
SortKey = Literal["account_id", "name", "model_id", "market_value", "cash", "max_drift", "status"]

PRICES_LOCK = "reporting-svc:prices"


async def _run(
    session: AsyncSession, statement: Executable, params: Any = None
) -> CursorResult[Any]:
    """Execute Core SQL in the session's transaction (SQLModel's `exec` is for ORM selects)."""
    connection = await session.connection()
    return await connection.execute(statement, params)


async def _write(session: AsyncSession, sql: str, *args: Any) -> int:
    """Run a write with positional parameters on the driver connection, in the session's
    transaction; returns the rows it changed."""
    status = await (await driver_connection(session)).execute(sql, *args)
    count = status.rsplit(" ", 1)[-1]
    return int(count) if count.isdigit() else 0


async def _fetch_first_column(session: AsyncSession, sql: str, *args: Any) -> list[Any]:
    """The first column of what a statement (a write ... RETURNING) gives, in order."""
    return [r[0] for r in await (await driver_connection(session)).fetch(sql, *args)]


def _unnest(columns: Mapping[str, str]) -> str:
    """`unnest($1::a_type[], ...) AS u(a, ...)`: one array parameter per column, in order."""
    arrays = ", ".join(f"${n}::{t}[]" for n, t in enumerate(columns.values(), 1))
    return f"unnest({arrays}) AS u({', '.join(columns)})"


def _arrays(rows: Sequence[Row], columns: Mapping[str, str]) -> list[list[Any]]:
    """The parameters of `_unnest(columns)`: each column's values, in order."""
    return [[r[c] for r in rows] for c in columns]


def _json_list(values: Sequence[str] | None) -> str | None:
    """A per-row list travels as JSON text (arrays of arrays cannot be unnested by row)."""
    return None if values is None else json.dumps(list(values))


def _table(entity: Any) -> Any:
    return entity.__table__


# --- locks ----------------------------------------------------------------------------------


async def lock_prices(session: AsyncSession, *, exclusive: bool) -> None:
    """Revaluing on new prices excludes holdings batches, so neither misses the other's rows."""
    fn = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
    await _write(session, f"SELECT {fn}(hashtext($1))", PRICES_LOCK)


async def lock_accounts(session: AsyncSession, account_ids: Sequence[str]) -> None:
    """Take the accounts' valuation rows (made if missing) in account order until commit."""
    ids = sorted(set(account_ids))
    if not ids:
        return
    await _write(
        session,
        "INSERT INTO account_valuations (account_id, updated_at)"
        " SELECT a, now() FROM unnest($1::text[]) AS a ORDER BY a"
        " ON CONFLICT (account_id) DO NOTHING",
        ids,
    )
    await _write(
        session,
        "SELECT account_id FROM account_valuations WHERE account_id = ANY($1::text[])"
        " ORDER BY account_id FOR NO KEY UPDATE",
        ids,
    )


# --- securities, models, accounts -----------------------------------------------------------

_SECURITY_COLUMNS = {
    "symbol": "text",
    "name": "text",
    "asset_class": "text",
    "sector": "text",
    "price": "numeric",
    "changed_at": "timestamptz",
}


async def upsert_securities(session: AsyncSession, rows: Sequence[Row]) -> list[str]:
    """Upsert securities, newer wins; returns the symbols whose price is new or changed."""
    sql = f"""
        WITH incoming AS (SELECT * FROM {_unnest(_SECURITY_COLUMNS)}),
        before AS (SELECT s.symbol, s.price FROM securities s JOIN incoming USING (symbol)),
        written AS (
            INSERT INTO securities (symbol, name, asset_class, sector, price, changed_at)
            SELECT * FROM incoming ORDER BY symbol
            ON CONFLICT (symbol) DO UPDATE
               SET name = EXCLUDED.name, asset_class = EXCLUDED.asset_class,
                   sector = EXCLUDED.sector, price = EXCLUDED.price,
                   changed_at = EXCLUDED.changed_at
             WHERE securities.changed_at <= EXCLUDED.changed_at
            RETURNING symbol, price
        )
        SELECT w.symbol FROM written w LEFT JOIN before b USING (symbol)
         WHERE b.price IS DISTINCT FROM w.price
         ORDER BY w.symbol
    """
    return await _fetch_first_column(session, sql, *_arrays(rows, _SECURITY_COLUMNS))


_MODEL_COLUMNS = {
    "model_id": "text",
    "tenant": "text",
    "name": "text",
    "version": "int",
    "changed_by": "text",
    "changed_at": "timestamptz",
}
_TARGET_COLUMNS = {"model_id": "text", "symbol": "text", "weight": "numeric"}


async def upsert_models(session: AsyncSession, rows: Sequence[Row]) -> list[str]:
    """Store model versions unless a newer one is stored; returns the models written."""
    sql = f"""
        INSERT INTO models ({", ".join(_MODEL_COLUMNS)})
        SELECT * FROM {_unnest(_MODEL_COLUMNS)} ORDER BY model_id
        ON CONFLICT (model_id) DO UPDATE
           SET tenant = EXCLUDED.tenant, name = EXCLUDED.name, version = EXCLUDED.version,
               changed_by = EXCLUDED.changed_by, changed_at = EXCLUDED.changed_at
         WHERE models.version <= EXCLUDED.version
        RETURNING model_id
    """
    return await _fetch_first_column(session, sql, *_arrays(rows, _MODEL_COLUMNS))


async def replace_targets(
    session: AsyncSession, model_ids: Sequence[str], targets: Sequence[Row]
) -> None:
    """The targets of these models become `targets`."""
    if not model_ids:
        return
    await _write(
        session, "DELETE FROM model_targets WHERE model_id = ANY($1::text[])", list(model_ids)
    )
    await insert_columns(
        session,
        _table(ModelTarget),
        {c: [t[c] for t in targets] for c in _TARGET_COLUMNS},
    )


_ACCOUNT_COLUMNS = {
    "account_id": "text",
    "household_id": "text",
    "name": "text",
    "account_type": "text",
    "model_id": "text",
    "status": "text",
    "auto_approve": "boolean",
    "tenant": "text",
    "changed_at": "timestamptz",
}
_SLEEVE_COLUMNS = {
    "account_id": "text",
    "sleeve_id": "text",
    "model_id": "text",
    "weight": "numeric",
}


async def upsert_accounts(session: AsyncSession, rows: Sequence[Row]) -> list[str]:
    """Store accounts unless a newer change is stored; returns the accounts written."""
    names = ", ".join(_ACCOUNT_COLUMNS)
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in _ACCOUNT_COLUMNS if c != "account_id")
    sql = f"""
        INSERT INTO accounts ({names})
        SELECT * FROM {_unnest(_ACCOUNT_COLUMNS)} ORDER BY account_id
        ON CONFLICT (account_id) DO UPDATE SET {updates}
         WHERE accounts.changed_at <= EXCLUDED.changed_at
        RETURNING account_id
    """
    return await _fetch_first_column(session, sql, *_arrays(rows, _ACCOUNT_COLUMNS))


async def replace_sleeves(
    session: AsyncSession, account_ids: Sequence[str], sleeves: Sequence[Row]
) -> None:
    """A UMA's sleeves are replaced with its account (none for an SMA)."""
    if not account_ids:
        return
    await _write(
        session,
        "DELETE FROM account_sleeves WHERE account_id = ANY($1::text[])",
        list(account_ids),
    )
    await insert_columns(
        session,
        _table(AccountSleeve),
        {c: [s[c] for s in sleeves] for c in _SLEEVE_COLUMNS},
    )


async def list_accounts_in_valuations(session: AsyncSession, account_ids: Sequence[str]) -> None:
    """Copy tenant, name, model and status of these (just written) accounts to their
    valuations."""
    await _write(
        session,
        """
        INSERT INTO account_valuations (account_id, tenant, name, model_id, status, updated_at)
        SELECT account_id, tenant, name, model_id, status, now() FROM accounts
         WHERE account_id = ANY($1::text[]) ORDER BY account_id
        ON CONFLICT (account_id) DO UPDATE
           SET tenant = EXCLUDED.tenant, name = EXCLUDED.name, model_id = EXCLUDED.model_id,
               status = EXCLUDED.status, updated_at = EXCLUDED.updated_at
        """,
        list(account_ids),
    )


_HOLD_COLUMNS = {
    "account_id": "text",
    "tenant": "text",
    "held": "boolean",
    "reason": "text",
    "custodian": "text",
    "business_date": "date",
    "held_since": "timestamptz",
    "changed_at": "timestamptz",
    "continues": "boolean",  # no release before the hold in its batch: it may continue ours
}


async def upsert_holds(session: AsyncSession, rows: Sequence[Row]) -> list[str]:
    """Store holds and releases unless a newer one is stored (a hold that continues the
    stored one keeps its start); returns the accounts written."""
    stored = [c for c in _HOLD_COLUMNS if c != "continues"]
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in stored if c != "account_id")
    sql = f"""
        WITH incoming AS (SELECT * FROM {_unnest(_HOLD_COLUMNS)})
        INSERT INTO account_holds ({", ".join(stored)})
        SELECT i.account_id, i.tenant, i.held, i.reason, i.custodian, i.business_date,
               CASE WHEN i.held AND i.continues AND h.held
                    THEN LEAST(h.held_since, i.held_since) ELSE i.held_since END,
               i.changed_at
          FROM incoming i LEFT JOIN account_holds h USING (account_id)
         ORDER BY i.account_id
        ON CONFLICT (account_id) DO UPDATE SET {updates}
         WHERE account_holds.changed_at < EXCLUDED.changed_at
        RETURNING account_id
    """
    return await _fetch_first_column(session, sql, *_arrays(rows, _HOLD_COLUMNS))


async def sleeves_of(session: AsyncSession, account_id: str) -> list[AccountSleeve]:
    result = await session.exec(
        select(AccountSleeve)
        .where(AccountSleeve.account_id == account_id)
        .order_by(col(AccountSleeve.sleeve_id))
    )
    return list(result)


# --- holdings and valuations ----------------------------------------------------------------

_SNAPSHOT_COLUMNS = {
    "account_id": "text",
    "as_of": "date",
    "cash": "numeric",
    "cause": "text",
    "fill_ids": "text",
    "event_id": "uuid",
    "event_time": "timestamptz",
}


async def upsert_snapshots(session: AsyncSession, snapshots: Sequence[Row]) -> list[str]:
    """Store snapshots unless a newer (as_of, event time) is stored; returns those stored."""
    params = _arrays(snapshots, _SNAPSHOT_COLUMNS)
    params[list(_SNAPSHOT_COLUMNS).index("fill_ids")] = [
        _json_list(s["fill_ids"]) for s in snapshots
    ]
    sql = f"""
        INSERT INTO holdings (account_id, as_of, cash, cause, fill_ids, event_id, event_time)
        SELECT account_id, as_of, cash, cause,
               ARRAY(SELECT jsonb_array_elements_text(CAST(fill_ids AS jsonb))),
               event_id, event_time
          FROM {_unnest(_SNAPSHOT_COLUMNS)} ORDER BY account_id
        ON CONFLICT (account_id) DO UPDATE
           SET as_of = EXCLUDED.as_of, cash = EXCLUDED.cash, cause = EXCLUDED.cause,
               fill_ids = EXCLUDED.fill_ids, event_id = EXCLUDED.event_id,
               event_time = EXCLUDED.event_time
         WHERE (holdings.as_of, holdings.event_time) <= (EXCLUDED.as_of, EXCLUDED.event_time)
        RETURNING account_id
    """
    return await _fetch_first_column(session, sql, *params)


# Positions as the snapshots state them; numbers travel as decimal text (as the events
# carry them) and the database reads them: far cheaper than a Decimal each.
_POSITION_COLUMNS = ("account_id", "symbol", "quantity", "cost_basis")
# Those gone are deleted, new or changed ones written, the rest left alone (a snapshot
# after a fill mostly repeats the one before): one statement. No ORDER BY: the
# accounts' valuation rows are locked first (lock_accounts), so no other transaction
# writes these rows meanwhile.
_REPLACE_POSITIONS = """
    WITH incoming AS (
        SELECT account_id, symbol, CAST(quantity AS numeric) AS quantity,
               CAST(cost_basis AS numeric) AS cost_basis
          FROM unnest($2::text[], $3::text[], $4::text[], $5::text[])
               AS u(account_id, symbol, quantity, cost_basis)
    ),
    gone AS (
        DELETE FROM positions p
         WHERE p.account_id = ANY($1::text[])
           AND NOT EXISTS (SELECT 1 FROM incoming i
                            WHERE i.account_id = p.account_id AND i.symbol = p.symbol)
    )
    INSERT INTO positions (account_id, symbol, quantity, cost_basis)
    SELECT * FROM incoming i
     -- an unchanged row is not even locked (ON CONFLICT would lock it to compare)
     WHERE NOT EXISTS (SELECT 1 FROM positions p
                        WHERE p.account_id = i.account_id AND p.symbol = i.symbol
                          AND p.quantity = i.quantity AND p.cost_basis = i.cost_basis)
    ON CONFLICT (account_id, symbol) DO UPDATE
       SET quantity = EXCLUDED.quantity, cost_basis = EXCLUDED.cost_basis
     WHERE (positions.quantity, positions.cost_basis)
           IS DISTINCT FROM (EXCLUDED.quantity, EXCLUDED.cost_basis)
"""
# An account's lots are one document: written whole when it changed, left alone when not.
_REPLACE_LOTS = """
    INSERT INTO account_lots (account_id, lots)
    SELECT account_id, CAST(lots AS json)
      FROM unnest($1::text[], $2::text[]) AS u(account_id, lots)
    ON CONFLICT (account_id) DO UPDATE SET lots = EXCLUDED.lots
     WHERE CAST(account_lots.lots AS text) <> CAST(EXCLUDED.lots AS text)
"""


async def replace_positions_and_lots(
    session: AsyncSession,
    account_ids: Sequence[str],
    positions: Mapping[str, Sequence[Any]],
    lots: Sequence[str],
) -> None:
    """The positions and lots of these accounts become the given ones (positions column by
    column, numbers as decimal text; lots as each account's JSON array, in account order)."""
    if not account_ids:
        return
    ids = list(account_ids)
    await _write(session, _REPLACE_POSITIONS, ids, *(positions[c] for c in _POSITION_COLUMNS))
    await _write(session, _REPLACE_LOTS, ids, list(lots))


_RECONCILED_COLUMNS = {"fill_id": "text", "account_id": "text", "reconciled_at": "timestamptz"}


async def record_reconciled_fills(session: AsyncSession, rows: Sequence[Row]) -> None:
    """Fills a holdings snapshot reflected (each fill id once, with its earliest time)."""
    if not rows:
        return
    sql = f"""
        INSERT INTO reconciled_fills (fill_id, account_id, reconciled_at)
        SELECT * FROM {_unnest(_RECONCILED_COLUMNS)} ORDER BY fill_id
        ON CONFLICT (fill_id) DO UPDATE SET reconciled_at = EXCLUDED.reconciled_at
         WHERE EXCLUDED.reconciled_at < reconciled_fills.reconciled_at
    """
    await _write(session, sql, *_arrays(rows, _RECONCILED_COLUMNS))


# The value of each account in {accounts}: cash plus its priced positions, with the positions
# it holds and those the security master has no price for.
_REVALUE = """
    UPDATE account_valuations v
       SET cash = n.cash, holdings_as_of = n.as_of, securities_value = n.securities_value,
           market_value = n.cash + n.securities_value, positions = n.positions,
           unpriced_positions = n.unpriced, updated_at = now()
      FROM (
          SELECT h.account_id, h.cash, h.as_of,
                 COALESCE(SUM(p.quantity * s.price), 0) AS securities_value,
                 COUNT(p.symbol) AS positions,
                 COUNT(p.symbol) FILTER (WHERE s.symbol IS NULL) AS unpriced
            FROM holdings h
            LEFT JOIN positions p ON p.account_id = h.account_id AND p.quantity <> 0
            LEFT JOIN securities s ON s.symbol = p.symbol
           WHERE h.account_id IN ({accounts})
           GROUP BY h.account_id, h.cash, h.as_of
      ) n
     WHERE v.account_id = n.account_id
"""
_REVALUE_ACCOUNTS = _REVALUE.format(accounts="SELECT unnest($1::text[])")
_REVALUE_HOLDERS = _REVALUE.format(
    accounts="SELECT account_id FROM positions WHERE symbol = ANY($1::text[])"
)


async def revalue_accounts(session: AsyncSession, account_ids: Sequence[str]) -> None:
    """Value these accounts from their stored holdings and the current prices."""
    if account_ids:
        await _write(session, _REVALUE_ACCOUNTS, sorted(account_ids))


async def revalue_holders(session: AsyncSession, symbols: Sequence[str]) -> int:
    """Revalue every account holding one of these symbols; returns how many."""
    if not symbols:
        return 0
    return await _write(session, _REVALUE_HOLDERS, list(symbols))


_VERDICT_COLUMNS = {
    "account_id": "text",
    "run_id": "uuid",
    "max_abs_drift": "numeric",
    "tolerance": "numeric",
    "out_of_tolerance": "boolean",
    "measured_at": "timestamptz",
}


async def record_verdicts(session: AsyncSession, rows: Sequence[Row]) -> None:
    """Each account's drift verdict from the engine, unless a later one is stored."""
    sql = f"""
        INSERT INTO account_valuations (account_id, drift_run_id, max_abs_drift, tolerance,
                                        out_of_tolerance, measured_at, updated_at)
        SELECT account_id, run_id, max_abs_drift, tolerance, out_of_tolerance, measured_at,
               now()
          FROM {_unnest(_VERDICT_COLUMNS)} ORDER BY account_id
        ON CONFLICT (account_id) DO UPDATE
           SET drift_run_id = EXCLUDED.drift_run_id, max_abs_drift = EXCLUDED.max_abs_drift,
               tolerance = EXCLUDED.tolerance, out_of_tolerance = EXCLUDED.out_of_tolerance,
               measured_at = EXCLUDED.measured_at, updated_at = EXCLUDED.updated_at
         WHERE account_valuations.measured_at IS NULL
            OR account_valuations.measured_at <= EXCLUDED.measured_at
    """
    await _write(session, sql, *_arrays(rows, _VERDICT_COLUMNS))


# --- runs -----------------------------------------------------------------------------------

_RUN_COLUMNS = {
    "run_id": "uuid",
    "tenant": "text",
    "model_id": "text",
    "model_version": "int",
    "first_event_at": "timestamptz",
    "last_event_at": "timestamptz",
}


async def upsert_runs(session: AsyncSession, rows: Sequence[Row]) -> None:
    """Runs first seen through their drift or proposals; only their event times change after."""
    sql = f"""
        INSERT INTO runs ({", ".join(_RUN_COLUMNS)})
        SELECT * FROM {_unnest(_RUN_COLUMNS)} ORDER BY run_id
        ON CONFLICT (run_id) DO UPDATE
           SET first_event_at = LEAST(runs.first_event_at, EXCLUDED.first_event_at),
               last_event_at = GREATEST(runs.last_event_at, EXCLUDED.last_event_at)
         WHERE EXCLUDED.first_event_at < runs.first_event_at
            OR EXCLUDED.last_event_at > runs.last_event_at
    """
    await _write(session, sql, *_arrays(rows, _RUN_COLUMNS))


_CHUNK_RUN_COLUMNS = {
    **_RUN_COLUMNS,
    "kind": "text",
    "trigger": "text",
    "chunks": "int",
}
_CHUNK_COLUMNS = {
    "run_id": "uuid",
    "chunk": "int",
    "chunks": "int",
    "status": "text",
    "accounts": "int",
    "accounts_evaluated": "int",
    "accounts_out_of_tolerance": "int",
    "accounts_skipped": "int",
    "proposals": "int",
    "trades": "int",
    "error": "text",
    "reported_at": "timestamptz",
}


async def record_chunks(session: AsyncSession, runs: Sequence[Row], chunks: Sequence[Row]) -> None:
    """Store chunk reports (completed replaces failed) and their runs' kind and totals."""
    run_names = ", ".join(_CHUNK_RUN_COLUMNS)
    await _write(
        session,
        f"""
        INSERT INTO runs ({run_names})
        SELECT * FROM {_unnest(_CHUNK_RUN_COLUMNS)} ORDER BY run_id
        ON CONFLICT (run_id) DO UPDATE
           SET tenant = EXCLUDED.tenant,
               model_id = EXCLUDED.model_id, model_version = EXCLUDED.model_version,
               kind = EXCLUDED.kind, trigger = EXCLUDED.trigger, chunks = EXCLUDED.chunks,
               first_event_at = LEAST(runs.first_event_at, EXCLUDED.first_event_at),
               last_event_at = GREATEST(runs.last_event_at, EXCLUDED.last_event_at)
        """,
        *_arrays(runs, _CHUNK_RUN_COLUMNS),
    )
    chunk_names = ", ".join(_CHUNK_COLUMNS)
    chunk_updates = ", ".join(
        f"{c} = EXCLUDED.{c}" for c in _CHUNK_COLUMNS if c not in ("run_id", "chunk")
    )
    await _write(
        session,
        f"""
        INSERT INTO run_chunks ({chunk_names})
        SELECT * FROM {_unnest(_CHUNK_COLUMNS)} ORDER BY run_id, chunk
        ON CONFLICT (run_id, chunk) DO UPDATE SET {chunk_updates}
         WHERE run_chunks.status = 'failed' AND EXCLUDED.status = 'completed'
        """,
        *_arrays(chunks, _CHUNK_COLUMNS),
    )
    await _write(
        session,
        """
        UPDATE runs r
           SET chunks_completed = c.completed, chunks_failed = c.failed,
               accounts = c.accounts, accounts_evaluated = c.evaluated,
               accounts_skipped = c.skipped, expected_proposals = c.proposals,
               expected_trades = c.trades
          FROM (
              SELECT run_id,
                     COUNT(*) FILTER (WHERE status = 'completed') AS completed,
                     COUNT(*) FILTER (WHERE status = 'failed') AS failed,
                     SUM(accounts) AS accounts, SUM(accounts_evaluated) AS evaluated,
                     SUM(accounts_skipped) AS skipped, SUM(proposals) AS proposals,
                     SUM(trades) AS trades
                FROM run_chunks WHERE run_id = ANY($1::uuid[]) GROUP BY run_id
          ) c
         WHERE r.run_id = c.run_id
        """,
        sorted({r["run_id"] for r in runs}),
    )


_DRIFT_COLUMNS = {
    "run_id": "uuid",
    "account_id": "text",
    "total_value": "numeric",
    "max_abs_drift": "numeric",
    "tolerance": "numeric",
    "out_of_tolerance": "boolean",
    "measured_at": "timestamptz",
}


async def upsert_run_drift(session: AsyncSession, rows: Sequence[Row]) -> None:
    """Drift of accounts measured by runs (a later measurement of the pair wins)."""
    names = ", ".join(_DRIFT_COLUMNS)
    updates = ", ".join(
        f"{c} = EXCLUDED.{c}" for c in _DRIFT_COLUMNS if c not in ("run_id", "account_id")
    )
    sql = f"""
        INSERT INTO run_drift ({names})
        SELECT * FROM {_unnest(_DRIFT_COLUMNS)} ORDER BY run_id, account_id
        ON CONFLICT (run_id, account_id) DO UPDATE SET {updates}
         WHERE run_drift.measured_at <= EXCLUDED.measured_at
    """
    await _write(session, sql, *_arrays(rows, _DRIFT_COLUMNS))


# --- proposals, trades, fills ---------------------------------------------------------------

_PROPOSED_COLUMNS = {
    "proposal_id": "uuid",
    "account_id": "text",
    "run_id": "uuid",
    "model_id": "text",
    "model_version": "int",
    "cash_before": "numeric",
    "cash_after_estimated": "numeric",
    "proposed_at": "timestamptz",
}


async def upsert_proposed(session: AsyncSession, rows: Sequence[Row]) -> None:
    """Proposals' run details (from trades-proposed)."""
    names = ", ".join(_PROPOSED_COLUMNS)
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in _PROPOSED_COLUMNS if c != "proposal_id")
    sql = f"""
        INSERT INTO proposals ({names})
        SELECT * FROM {_unnest(_PROPOSED_COLUMNS)} ORDER BY proposal_id
        ON CONFLICT (proposal_id) DO UPDATE SET {updates}
    """
    await _write(session, sql, *_arrays(rows, _PROPOSED_COLUMNS))


_MARK_COLUMNS = {"proposal_id": "uuid", "account_id": "text", "by": "text", "at": "timestamptz"}


async def approve_proposals(session: AsyncSession, rows: Sequence[Row]) -> None:
    """The first approval of a proposal wins, so a replay changes nothing."""
    sql = f"""
        INSERT INTO proposals (proposal_id, account_id, approved_by, approved_at)
        SELECT * FROM {_unnest(_MARK_COLUMNS)} ORDER BY proposal_id
        ON CONFLICT (proposal_id) DO UPDATE
           SET approved_by = EXCLUDED.approved_by, approved_at = EXCLUDED.approved_at
         WHERE proposals.approved_at IS NULL
    """
    await _write(session, sql, *_arrays(rows, _MARK_COLUMNS))


_DECLINE_COLUMNS = {**_MARK_COLUMNS, "reason": "text"}


async def decline_proposals(session: AsyncSession, rows: Sequence[Row]) -> None:
    """The first decline of a proposal wins, so a replay changes nothing."""
    sql = f"""
        INSERT INTO proposals (proposal_id, account_id, declined_by, declined_at,
                               declined_reason)
        SELECT * FROM {_unnest(_DECLINE_COLUMNS)} ORDER BY proposal_id
        ON CONFLICT (proposal_id) DO UPDATE
           SET declined_by = EXCLUDED.declined_by, declined_at = EXCLUDED.declined_at,
               declined_reason = EXCLUDED.declined_reason
         WHERE proposals.declined_at IS NULL
    """
    await _write(session, sql, *_arrays(rows, _DECLINE_COLUMNS))


_ENSURE_PROPOSAL_COLUMNS = {"proposal_id": "uuid", "account_id": "text"}


async def ensure_proposals(session: AsyncSession, rows: Sequence[Row]) -> None:
    """Proposals first seen through a fill or a reject."""
    sql = f"""
        INSERT INTO proposals (proposal_id, account_id)
        SELECT * FROM {_unnest(_ENSURE_PROPOSAL_COLUMNS)} ORDER BY proposal_id
        ON CONFLICT (proposal_id) DO NOTHING
    """
    await _write(session, sql, *_arrays(rows, _ENSURE_PROPOSAL_COLUMNS))


_DETAIL_COLUMNS = {
    "trade_id": "uuid",
    "proposal_id": "uuid",
    "account_id": "text",
    "symbol": "text",
    "side": "text",
    "quantity": "numeric",
    "estimated_price": "numeric",
    "estimated_value": "numeric",
    "reason": "text",
    "explanation": "text",
    "sleeve_id": "text",
    "lot_ids": "text",
    "estimated_tax": "numeric",
    "proposed_at": "timestamptz",
    "approved_at": "timestamptz",
    "status": "text",
    "updated_at": "timestamptz",
}
_DETAILS = (
    "proposal_id",
    "symbol",
    "side",
    "quantity",
    "estimated_price",
    "estimated_value",
    "reason",
    "explanation",
    "sleeve_id",
    "lot_ids",
    "estimated_tax",
)


_APPROVED_TERMS_WIN = (
    "CASE WHEN trades.approved_at IS NOT NULL AND EXCLUDED.approved_at IS NULL"
    " THEN trades.{c} ELSE EXCLUDED.{c} END"
)


async def upsert_trade_details(session: AsyncSession, rows: Sequence[Row]) -> list[uuid.UUID]:
    """Trades' terms as proposed or approved (the first proposed/approved time wins), with
    their run and status, so a trade without fills or reject is complete in one write; a
    replay writes nothing. Returns the trades whose fills or reject need `refresh_trades`."""
    params = _arrays(rows, _DETAIL_COLUMNS)
    params[list(_DETAIL_COLUMNS).index("lot_ids")] = [_json_list(r["lot_ids"]) for r in rows]
    names = [c for c in _DETAIL_COLUMNS if c not in ("lot_ids", "status")]
    sql = f"""
        INSERT INTO trades ({", ".join(names)}, lot_ids, status, run_id, filled_quantity)
        SELECT {", ".join(f"u.{c}" for c in names)},
               CASE WHEN u.lot_ids IS NOT NULL
                    THEN ARRAY(SELECT jsonb_array_elements_text(CAST(u.lot_ids AS jsonb))) END,
               CASE WHEN p.declined_at IS NOT NULL THEN 'declined'
                    -- proposed after its proposal's approval, which left it out
                    WHEN p.approved_at IS NOT NULL AND u.approved_at IS NULL THEN 'declined'
                    ELSE u.status END,
               p.run_id, 0
          FROM {_unnest(_DETAIL_COLUMNS)}
          LEFT JOIN proposals p ON p.proposal_id = u.proposal_id
         ORDER BY u.trade_id
        ON CONFLICT (trade_id) DO UPDATE
           -- the approved terms (a person may have edited them) win over the proposed ones
           SET {", ".join(f"{c} = {_APPROVED_TERMS_WIN.format(c=c)}" for c in _DETAILS)},
               proposed_at = COALESCE(trades.proposed_at, EXCLUDED.proposed_at),
               approved_at = COALESCE(trades.approved_at, EXCLUDED.approved_at),
               updated_at = GREATEST(trades.updated_at, EXCLUDED.updated_at),
               run_id = COALESCE(EXCLUDED.run_id, trades.run_id),
               -- fills, a reject or a decline decide the status (refresh_trades)
               status = CASE WHEN trades.status NOT IN ('proposed', 'approved')
                             THEN trades.status
                             WHEN COALESCE(trades.approved_at, EXCLUDED.approved_at) IS NULL
                             THEN 'proposed' ELSE 'approved' END
         WHERE (({", ".join(f"trades.{c}" for c in _DETAILS)})
               IS DISTINCT FROM ({", ".join(f"EXCLUDED.{c}" for c in _DETAILS)})
               AND (EXCLUDED.approved_at IS NOT NULL OR trades.approved_at IS NULL))
            OR (trades.proposed_at IS NULL AND EXCLUDED.proposed_at IS NOT NULL)
            OR (trades.approved_at IS NULL AND EXCLUDED.approved_at IS NOT NULL)
            OR (trades.run_id IS NULL AND EXCLUDED.run_id IS NOT NULL)
        RETURNING trade_id, (fills > 0 OR rejected_reason IS NOT NULL) AS derived
    """
    written = await (await driver_connection(session)).fetch(sql, *params)
    return [r["trade_id"] for r in written if r["derived"]]


async def decline_trades_left_out(session: AsyncSession, proposal_ids: Sequence[uuid.UUID]) -> None:
    """Trades of these approved proposals that their approval left out (removed by a person
    before approving) are declined."""
    if proposal_ids:
        await _write(
            session,
            "UPDATE trades SET status = 'declined' WHERE proposal_id = ANY($1::uuid[])"
            " AND approved_at IS NULL AND status = 'proposed'",
            sorted(set(proposal_ids)),
        )


_ENSURE_COLUMNS = {
    "trade_id": "uuid",
    "proposal_id": "uuid",
    "account_id": "text",
    "symbol": "text",
    "side": "text",
    "quantity": "numeric",
    "rejected_reason": "text",
    "rejected_at": "timestamptz",
    "status": "text",
    "updated_at": "timestamptz",
}


async def ensure_trades(session: AsyncSession, rows: Sequence[Row]) -> None:
    """Trades first seen through a fill or a reject: keep what is known, add the rest (a
    trade that gains nothing is not written)."""
    sql = f"""
        INSERT INTO trades ({", ".join(_ENSURE_COLUMNS)}, filled_quantity)
        SELECT *, 0 FROM {_unnest(_ENSURE_COLUMNS)} ORDER BY trade_id
        ON CONFLICT (trade_id) DO UPDATE
           SET quantity = COALESCE(trades.quantity, EXCLUDED.quantity),
               rejected_reason = COALESCE(trades.rejected_reason, EXCLUDED.rejected_reason),
               rejected_at = COALESCE(trades.rejected_at, EXCLUDED.rejected_at),
               updated_at = GREATEST(trades.updated_at, EXCLUDED.updated_at)
         WHERE (trades.quantity IS NULL AND EXCLUDED.quantity IS NOT NULL)
            OR (trades.rejected_reason IS NULL AND EXCLUDED.rejected_reason IS NOT NULL)
    """
    await _write(session, sql, *_arrays(rows, _ENSURE_COLUMNS))


_FILL_COLUMNS = {
    "fill_id": "text",
    "trade_id": "uuid",
    "proposal_id": "uuid",
    "account_id": "text",
    "symbol": "text",
    "side": "text",
    "quantity": "numeric",
    "price": "numeric",
    "executed_at": "timestamptz",
}


async def insert_fills(session: AsyncSession, rows: Sequence[Row]) -> int:
    """Remember fills (a known fill id is skipped); returns how many were new."""
    sql = f"""
        INSERT INTO fills ({", ".join(_FILL_COLUMNS)})
        SELECT * FROM {_unnest(_FILL_COLUMNS)} ORDER BY fill_id
        ON CONFLICT (fill_id) DO NOTHING
    """
    return await _write(session, sql, *_arrays(rows, _FILL_COLUMNS))


# Filled quantity, average price, fills (and those reflected in holdings), run and status of
# trades, from the stored facts; a trade whose facts did not change is not written.
_REFRESH = """
    UPDATE trades t
       SET filled_quantity = f.qty, average_price = f.avg_price, fills = f.fills,
           fills_reflected = f.reflected, reconciled_at = f.reconciled_at, run_id = f.run_id,
           status = f.status
      FROM (
          SELECT tt.trade_id, p.run_id,
                 COALESCE(SUM(fi.quantity), 0) AS qty,
                 ROUND(SUM(fi.quantity * fi.price) / NULLIF(SUM(fi.quantity), 0), 6) AS avg_price,
                 COUNT(fi.fill_id) AS fills, COUNT(rf.fill_id) AS reflected,
                 MAX(rf.reconciled_at) AS reconciled_at,
                 CASE
                     WHEN tt.rejected_reason IS NOT NULL THEN 'rejected'
                     WHEN tt.quantity IS NOT NULL AND COALESCE(SUM(fi.quantity), 0) >= tt.quantity
                         THEN 'filled'
                     WHEN COALESCE(SUM(fi.quantity), 0) > 0 THEN 'partially_filled'
                     WHEN p.declined_at IS NOT NULL THEN 'declined'
                     WHEN tt.approved_at IS NOT NULL THEN 'approved'
                     -- removed from its proposal before the proposal was approved
                     WHEN p.approved_at IS NOT NULL THEN 'declined'
                     ELSE 'proposed'
                 END AS status
            FROM trades tt
            JOIN proposals p ON p.proposal_id = tt.proposal_id
            LEFT JOIN fills fi ON fi.trade_id = tt.trade_id
            LEFT JOIN reconciled_fills rf ON rf.fill_id = fi.fill_id
           WHERE {which}
           GROUP BY tt.trade_id, tt.rejected_reason, tt.quantity, tt.approved_at, p.run_id,
                    p.declined_at, p.approved_at
      ) f
     WHERE t.trade_id = f.trade_id
       AND (t.filled_quantity, t.average_price, t.fills, t.fills_reflected, t.reconciled_at,
            t.run_id, t.status)
           IS DISTINCT FROM
           (f.qty, f.avg_price, f.fills, f.reflected, f.reconciled_at, f.run_id, f.status)
"""
_REFRESH_TRADES = _REFRESH.format(which="tt.trade_id = ANY($1::uuid[])")
_REFRESH_PROPOSALS = _REFRESH.format(which="tt.proposal_id = ANY($1::uuid[])")
_REFRESH_FILLED = _REFRESH.format(
    which="tt.trade_id IN (SELECT trade_id FROM fills WHERE fill_id = ANY($1::text[]))"
)


async def refresh_trades(session: AsyncSession, trade_ids: Sequence[uuid.UUID]) -> None:
    """Derive filled quantity, average price, fills, run and status of these trades."""
    if trade_ids:
        await _write(session, _REFRESH_TRADES, sorted(set(trade_ids)))


async def refresh_proposal_trades(session: AsyncSession, proposal_ids: Sequence[uuid.UUID]) -> None:
    """The same for every trade of these proposals."""
    if proposal_ids:
        await _write(session, _REFRESH_PROPOSALS, sorted(set(proposal_ids)))


async def refresh_filled_trades(session: AsyncSession, fill_ids: Sequence[str]) -> None:
    """The same for the trades of these fills (a snapshot reflected them)."""
    if fill_ids:
        await _write(session, _REFRESH_FILLED, sorted(set(fill_ids)))


# --- reads ----------------------------------------------------------------------------------

# Sortable columns of account_valuations; each has an index (column, account_id).
ACCOUNT_SORTS: dict[SortKey, str] = {
    "account_id": "account_id",
    "name": "name",
    "model_id": "model_id",
    "market_value": "market_value",
    "cash": "cash",
    "max_drift": "max_abs_drift",
    "status": "status",
}

_OVERVIEW_COLUMNS = """
    a.account_id, a.name, a.household_id, a.account_type, a.model_id,
    m.name AS model_name, m.version AS model_version, a.status, a.auto_approve,
    v.cash, ROUND(v.market_value, 2) AS market_value,
    ROUND(v.securities_value, 2) AS securities_value, v.holdings_as_of, v.positions,
    v.unpriced_positions, v.max_abs_drift AS max_drift, v.tolerance, v.out_of_tolerance,
    v.drift_run_id, v.measured_at,
    COALESCE(h.held, false) AS held, h.reason AS held_reason, h.held_since,
    h.custodian AS held_by_custodian
"""


async def account_page(
    session: AsyncSession,
    tenant: str,
    *,
    limit: int,
    offset: int,
    model_id: str | None = None,
    out_of_tolerance: bool | None = None,
    status: str | None = None,
    search: str | None = None,
    sort: SortKey = "account_id",
    descending: bool = False,
) -> tuple[int, list[Record]]:
    """(total matching, a page of the tenant's overviews) in index order, nulls last, ties
    by id."""
    # the tenant's accounts known from account-changed
    where = ["v.tenant = :tenant", "v.status IS NOT NULL"]
    params: dict[str, Any] = {
        "tenant": tenant,
        "limit": limit,
        "offset": offset,
        "n": limit + offset,
    }
    if model_id is not None:
        where.append("v.model_id = :model_id")
        params["model_id"] = model_id
    if out_of_tolerance is not None:
        where.append("v.out_of_tolerance = :oot")
        params["oot"] = out_of_tolerance
    if status is not None:
        where.append("v.status = :status")
        params["status"] = status
    if search:
        where.append("(v.account_id ILIKE :search OR v.name ILIKE :search)")
        params["search"] = f"%{search}%"
    matching = " AND ".join(where)
    direction = "DESC" if descending else "ASC"
    column = f"v.{ACCOUNT_SORTS[sort]}"
    if sort == "account_id":
        ordered = f"""
            SELECT v.account_id, 0 AS part, v.account_id AS key FROM account_valuations v
             WHERE {matching} ORDER BY v.account_id {direction} LIMIT :limit OFFSET :offset
        """
    else:
        ordered = f"""
            SELECT * FROM (
                (SELECT v.account_id, 0 AS part, {column} AS key FROM account_valuations v
                  WHERE {matching} AND {column} IS NOT NULL
                  ORDER BY {column} {direction}, v.account_id {direction} LIMIT :n)
                UNION ALL
                (SELECT v.account_id, 1, NULL FROM account_valuations v
                  WHERE {matching} AND {column} IS NULL
                  ORDER BY {column} {direction}, v.account_id {direction} LIMIT :n)
            ) u ORDER BY part, key {direction}, account_id {direction}
            LIMIT :limit OFFSET :offset
        """
    sql = f"""
        WITH page AS ({ordered})
        SELECT {_OVERVIEW_COLUMNS}
          FROM page
          JOIN account_valuations v ON v.account_id = page.account_id
          JOIN accounts a ON a.account_id = page.account_id
          LEFT JOIN models m ON m.model_id = a.model_id
          LEFT JOIN account_holds h ON h.account_id = a.account_id AND h.tenant = a.tenant
         ORDER BY page.part, page.key {direction}, page.account_id {direction}
    """
    rows = [dict(r) for r in (await _run(session, text(sql), params)).mappings()]
    if offset == 0 and len(rows) < limit:
        return len(rows), rows
    if model_id is None and status is None and not search and await _whole_book(session, tenant):
        # the book's tallies know these totals; counting them would read every account
        tally = (
            (
                await _run(
                    session,
                    text(
                        "SELECT COALESCE(SUM(accounts), 0) AS listed,"
                        " COALESCE(SUM(accounts_out_of_tolerance), 0) AS out FROM book_tallies"
                    ),
                )
            )
            .mappings()
            .one()
        )
        listed, out = int(tally["listed"]), int(tally["out"])
        return {None: listed, True: out, False: listed - out}[out_of_tolerance], rows
    count = f"SELECT COUNT(*) FROM account_valuations v WHERE {matching}"
    return int((await _run(session, text(count), params)).scalar_one()), rows


_ONE_OVERVIEW = text(
    f"""
    SELECT {_OVERVIEW_COLUMNS}
      FROM accounts a
      LEFT JOIN account_valuations v ON v.account_id = a.account_id
      LEFT JOIN models m ON m.model_id = a.model_id
      LEFT JOIN account_holds h ON h.account_id = a.account_id AND h.tenant = a.tenant
     WHERE a.account_id = :account_id AND a.tenant = :tenant
    """
)


async def account_overview(session: AsyncSession, tenant: str, account_id: str) -> Record | None:
    """One account's overview, or None if account-changed never named it for `tenant`."""
    params = {"account_id": account_id, "tenant": tenant}
    row = (await _run(session, _ONE_OVERVIEW, params)).mappings().first()
    return dict(row) if row is not None else None


async def account_known(session: AsyncSession, tenant: str, account_id: str) -> bool:
    """Whether account-changed named the account, for `tenant`."""
    account = await session.get(Account, account_id)
    return account is not None and account.tenant == tenant


async def _whole_book(session: AsyncSession, tenant: str) -> bool:
    """Whether every account is the tenant's (then the book's tallies are the tenant's):
    the two ends of the tenant index."""
    async with tenancy.across_tenants(session):  # every tenant's accounts, counted only
        row = (
            await _run(
                session, text("SELECT min(tenant) AS low, max(tenant) AS high FROM accounts")
            )
        ).one()
    return bool(row.low == tenant and row.high == tenant)


async def get_account(session: AsyncSession, account_id: str) -> Account | None:
    return await session.get(Account, account_id)


async def get_holdings(session: AsyncSession, account_id: str) -> HoldingsSnapshot | None:
    return await session.get(HoldingsSnapshot, account_id)


async def get_model(session: AsyncSession, model_id: str) -> Model | None:
    return await session.get(Model, model_id)


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
           COALESCE(l.wash_adjustment, 0) AS wash_adjustment, s.price
      FROM account_lots a
     CROSS JOIN LATERAL json_to_recordset(a.lots)
           AS l(lot_id text, symbol text, sleeve_id text, quantity numeric, acquired date,
                cost_basis numeric, wash_adjustment numeric)
      LEFT JOIN securities s ON s.symbol = l.symbol
     WHERE a.account_id = :account_id
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
           p.model_version
      FROM trades t
      JOIN proposals p ON p.proposal_id = t.proposal_id
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


async def trade_status_counts(session: AsyncSession, account_id: str) -> dict[str, int]:
    """How many of the account's trades are in each status."""
    stmt = (
        select(Trade.status, func.count())
        .where(Trade.account_id == account_id)
        .group_by(col(Trade.status))
    )
    return {status: int(n) for status, n in (await session.exec(stmt)).all()}


TALLY_COUNTS = (
    "accounts_measured",
    "accounts_out_of_tolerance",
    "proposals",
    "proposals_approved",
    "trades",
    "trades_proposed",
    "trades_approved",
    "trades_partially_filled",
    "trades_filled",
    "trades_rejected",
    "trades_declined",
    "taxed_trades",
    "fills",
    "fills_reflected",
)
_TALLY_SUMS = ", ".join(
    [f"COALESCE(SUM({c}), 0) AS {c}" for c in TALLY_COUNTS]
    + [
        "COALESCE(SUM(estimated_tax), 0) AS estimated_tax",
        "MAX(last_reconciled_at) AS last_reconciled_at",
    ]
)

_RUNS = f"""
    WITH page AS (
        SELECT * FROM runs r WHERE {{where}} ORDER BY {{order}} LIMIT :limit OFFSET :offset
    )
    SELECT page.*, t.*
      FROM page
      LEFT JOIN LATERAL (
          SELECT {_TALLY_SUMS} FROM run_tallies rt WHERE rt.run_id = page.run_id
      ) t ON true
     ORDER BY {{order}}
"""


async def run_progress(session: AsyncSession, tenant: str, run_id: uuid.UUID) -> Record | None:
    """A run of the tenant with its tallies, or None."""
    sql = _RUNS.format(where="r.run_id = :run_id AND r.tenant = :tenant", order="run_id")
    params = {"run_id": run_id, "tenant": tenant, "limit": 1, "offset": 0}
    row = (await _run(session, text(sql), params)).mappings().first()
    return dict(row) if row is not None else None


async def list_runs(
    session: AsyncSession,
    tenant: str,
    *,
    model_id: str | None,
    model_version: int | None,
    kind: str | None,
    limit: int,
    offset: int,
) -> list[Record]:
    """A page of the tenant's runs, newest first, with their tallies."""
    where = ["r.tenant = :tenant"]
    params: dict[str, Any] = {"tenant": tenant, "limit": limit, "offset": offset}
    if model_id is not None:
        where.append("r.model_id = :model_id")
        params["model_id"] = model_id
    if model_version is not None:
        where.append("r.model_version = :model_version")
        params["model_version"] = model_version
    if kind is not None:
        where.append("r.kind = :kind")
        params["kind"] = kind
    sql = _RUNS.format(where=" AND ".join(where), order="first_event_at DESC, run_id")
    return [dict(r) for r in (await _run(session, text(sql), params)).mappings()]


async def failed_chunks(session: AsyncSession, run_ids: Sequence[uuid.UUID]) -> list[Record]:
    """The failed chunks of these runs, with why."""
    if not run_ids:
        return []
    result = await _run(
        session,
        text(
            "SELECT run_id, chunk, accounts, error FROM run_chunks"
            " WHERE run_id = ANY(:ids) AND status = 'failed' ORDER BY run_id, chunk"
        ),
        {"ids": list(run_ids)},
    )
    return [dict(r) for r in result.mappings()]


_SMALL_COUNTS = """
    SELECT (SELECT COUNT(*) FROM models WHERE tenant = :tenant) AS models,
           (SELECT COUNT(*) FROM securities) AS securities,
           (SELECT COUNT(*) FROM runs WHERE tenant = :tenant) AS runs
"""
_SUMMARY = text(
    f"""{_SMALL_COUNTS}, t.*
      FROM (SELECT {_TALLY_SUMS}, COALESCE(SUM(accounts), 0) AS accounts,
                   COALESCE(SUM(market_value), 0) AS market_value
              FROM book_tallies) t
    """
)
# What the book's tallies count (migration fba27cd91b78), over one tenant's rows.
_TRADE_STATUSES = ("proposed", "approved", "partially_filled", "filled", "rejected", "declined")
_TENANT_SUMMARY = text(
    f"""{_SMALL_COUNTS}, t.*, p.*, tr.*
      FROM (SELECT COUNT(*) FILTER (WHERE v.status IS NOT NULL) AS accounts,
                   COUNT(*) FILTER (WHERE v.status IS NOT NULL AND v.measured_at IS NOT NULL)
                       AS accounts_measured,
                   COUNT(*) FILTER (WHERE v.status IS NOT NULL AND v.out_of_tolerance)
                       AS accounts_out_of_tolerance,
                   COALESCE(SUM(v.market_value), 0) AS market_value
              FROM account_valuations v WHERE v.tenant = :tenant) t,
           (SELECT COUNT(*) AS proposals,
                   COUNT(*) FILTER (WHERE p.approved_at IS NOT NULL) AS proposals_approved
              FROM proposals p JOIN accounts a ON a.account_id = p.account_id
             WHERE a.tenant = :tenant) p,
           (SELECT COUNT(*) AS trades,
                   {
        ", ".join(
            f"COUNT(*) FILTER (WHERE tr.status = '{s}') AS trades_{s}" for s in _TRADE_STATUSES
        )
    },
                   COUNT(*) FILTER (WHERE tr.estimated_tax IS NOT NULL
                                      AND tr.status <> 'declined') AS taxed_trades,
                   COALESCE(SUM(tr.estimated_tax) FILTER (WHERE tr.status <> 'declined'), 0)
                       AS estimated_tax,
                   COALESCE(SUM(tr.fills), 0) AS fills,
                   COALESCE(SUM(tr.fills_reflected), 0) AS fills_reflected,
                   MAX(tr.reconciled_at) AS last_reconciled_at
              FROM trades tr JOIN accounts a ON a.account_id = tr.account_id
             WHERE a.tenant = :tenant) tr
    """
)


async def summary_counts(session: AsyncSession, tenant: str) -> Record:
    """Counts of small tables and the tenant's tallies: the book's, kept by triggers, when
    every account is the tenant's; else summed over the tenant's rows."""
    whole_book = await _whole_book(session, tenant)
    return await tenant_summary_counts(session, tenant, from_tallies=whole_book)


async def tenant_summary_counts(
    session: AsyncSession, tenant: str, *, from_tallies: bool
) -> Record:
    """The tenant's summary counts, from the book's tallies or summed over its rows."""
    sql = _SUMMARY if from_tallies else _TENANT_SUMMARY
    return dict((await _run(session, sql, {"tenant": tenant})).mappings().one())


async def positions_of(session: AsyncSession, account_id: str) -> list[Position]:
    result = await session.exec(
        select(Position).where(Position.account_id == account_id).order_by(col(Position.symbol))
    )
    return list(result)


# Accounts a run measured (largest drift first), then those it proposed trades for without
# measuring them (a harvest): each part read in its index's order, only as far as the page.
_RUN_ACCOUNTS = text(
    """
    WITH measured AS (
        SELECT d.account_id, 0 AS part, d.total_value, d.max_abs_drift, d.out_of_tolerance
          FROM run_drift d WHERE d.run_id = :run_id
           AND EXISTS (SELECT 1 FROM accounts a
                        WHERE a.account_id = d.account_id AND a.tenant = :tenant)
         ORDER BY d.max_abs_drift DESC, d.account_id DESC LIMIT :n
    ),
    unmeasured AS (
        SELECT p.account_id, 1 AS part, NULL::numeric AS total_value,
               NULL::numeric AS max_abs_drift, NULL::boolean AS out_of_tolerance
          FROM proposals p
         WHERE p.run_id = :run_id
           AND EXISTS (SELECT 1 FROM accounts a
                        WHERE a.account_id = p.account_id AND a.tenant = :tenant)
           AND NOT EXISTS (SELECT 1 FROM run_drift d
                            WHERE d.run_id = :run_id AND d.account_id = p.account_id)
         ORDER BY p.account_id DESC LIMIT :n
    ),
    page AS (
        SELECT * FROM measured UNION ALL SELECT * FROM unmeasured
         ORDER BY part, max_abs_drift DESC, account_id DESC LIMIT :limit OFFSET :offset
    )
    SELECT page.account_id, a.name, page.total_value, page.max_abs_drift,
           page.out_of_tolerance, tr.*
      FROM page
      LEFT JOIN accounts a ON a.account_id = page.account_id
      LEFT JOIN LATERAL (
          SELECT COUNT(*) AS trades,
                 COUNT(*) FILTER (WHERE t.status = 'filled') AS filled,
                 COUNT(*) FILTER (WHERE t.status = 'rejected') AS rejected,
                 COUNT(*) FILTER (WHERE t.status = 'declined') AS declined,
                 COUNT(*) FILTER (WHERE t.status IN ('proposed', 'approved', 'partially_filled'))
                     AS open,
                 COALESCE(SUM(t.fills), 0) AS fills,
                 COALESCE(SUM(t.fills_reflected), 0) AS fills_reflected
            FROM trades t WHERE t.run_id = :run_id AND t.account_id = page.account_id
      ) tr ON true
     ORDER BY page.part, page.max_abs_drift DESC, page.account_id DESC
    """
)


async def run_accounts(
    session: AsyncSession, tenant: str, run_id: uuid.UUID, limit: int, offset: int
) -> list[Record]:
    """A page of the tenant's accounts a run measured or proposed trades for, with their
    progress."""
    params = {
        "tenant": tenant,
        "run_id": run_id,
        "limit": limit,
        "offset": offset,
        "n": limit + offset,
    }
    return [dict(r) for r in (await _run(session, _RUN_ACCOUNTS, params)).mappings()]


_MODELS = text(
    """
    SELECT m.model_id, m.name, m.version, m.changed_by, m.changed_at,
           (SELECT COUNT(*) FROM model_targets t WHERE t.model_id = m.model_id) AS securities,
           (SELECT COUNT(*) FROM accounts a
             WHERE a.model_id = m.model_id AND a.tenant = :tenant)
             + (SELECT COUNT(DISTINCT sl.account_id) FROM account_sleeves sl
                  JOIN accounts a ON a.account_id = sl.account_id
                 WHERE sl.model_id = m.model_id AND a.tenant = :tenant) AS accounts
      FROM models m WHERE m.tenant = :tenant ORDER BY m.model_id LIMIT :limit OFFSET :offset
    """
)


async def list_models(session: AsyncSession, tenant: str, limit: int, offset: int) -> list[Record]:
    """The tenant's models, by id, with how many securities and of its accounts each has."""
    params = {"tenant": tenant, "limit": limit, "offset": offset}
    return [dict(r) for r in (await _run(session, _MODELS, params)).mappings()]


# --- webhooks (docs/webhooks.md) --------------------------------------------------------------

_SUBSCRIPTION_COLUMNS = (
    "id, url, event_types, description, created_by, created_at,"
    " CASE WHEN previous_secret_until > now() THEN previous_secret_until END"
    " AS previous_secret_until"
)
_DELIVERY_COLUMNS = (
    "id, subscription_id, message_id, event_type, status, attempts, next_attempt_at,"
    " created_at, delivered_at, last_status_code, last_error"
)


async def tenants_subscribed(
    session: AsyncSession, event_type: str, tenants: Sequence[str]
) -> set[str]:
    """Which of `tenants` have a live subscription to `event_type`."""
    rows = await (await driver_connection(session)).fetch(
        "SELECT DISTINCT tenant FROM webhook_subscriptions WHERE tenant = ANY($2::text[])"
        " AND $1::text = ANY(event_types) AND deleted_at IS NULL",
        event_type,
        list(tenants),
    )
    return {r[0] for r in rows}


async def insert_webhook_deliveries(
    session: AsyncSession,
    event_type: str,
    *,
    message_ids: Sequence[uuid.UUID],
    tenants: Sequence[str],
    bodies: Sequence[str],
    channel: str,
) -> int:
    """One pending delivery per event and live subscription of its tenant to `event_type`,
    in one statement (an event queued before for a subscription is left alone); NOTIFY
    `channel` at commit when any was queued. Returns how many were queued."""
    count = await (await driver_connection(session)).fetchval(
        "WITH queued AS ("
        " INSERT INTO webhook_deliveries (id, subscription_id, tenant, message_id, event_type,"
        "  body, status, attempts, next_attempt_at, created_at)"
        " SELECT gen_random_uuid(), s.id, e.tenant, e.message_id, $1::text, e.body, 'pending',"
        "  0, now(), now()"
        " FROM unnest($2::uuid[], $3::text[], $4::text[]) AS e(message_id, tenant, body)"
        " JOIN webhook_subscriptions s ON s.tenant = e.tenant"
        "  AND $1::text = ANY(s.event_types) AND s.deleted_at IS NULL"
        " ON CONFLICT (subscription_id, message_id) DO NOTHING RETURNING 1)"
        " SELECT count(*) FROM (SELECT 1 FROM queued) q,"
        " LATERAL (SELECT pg_notify($5::text, '')) n",
        event_type,
        list(message_ids),
        list(tenants),
        list(bodies),
        channel,
    )
    return int(count or 0)


async def insert_webhook_subscription(session: AsyncSession, **values: Any) -> Record:
    """Store a new subscription; its row with the secret."""
    row = await (await driver_connection(session)).fetchrow(
        "INSERT INTO webhook_subscriptions (id, tenant, url, event_types, description, secret,"
        " created_by, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, now())"
        f" RETURNING {_SUBSCRIPTION_COLUMNS}, secret",
        values["id"],
        values["tenant"],
        values["url"],
        values["event_types"],
        values["description"],
        values["secret"],
        values["created_by"],
    )
    return dict(row)


async def webhook_subscriptions(
    session: AsyncSession, tenant: str, limit: int, offset: int
) -> list[Record]:
    """A page of the tenant's live subscriptions, oldest first."""
    rows = await (await driver_connection(session)).fetch(
        f"SELECT {_SUBSCRIPTION_COLUMNS} FROM webhook_subscriptions"
        " WHERE tenant = $1 AND deleted_at IS NULL ORDER BY created_at, id LIMIT $2 OFFSET $3",
        tenant,
        limit,
        offset,
    )
    return [dict(r) for r in rows]


async def webhook_subscription(
    session: AsyncSession, tenant: str, subscription_id: uuid.UUID
) -> Record | None:
    """One of the tenant's live subscriptions."""
    row = await (await driver_connection(session)).fetchrow(
        f"SELECT {_SUBSCRIPTION_COLUMNS} FROM webhook_subscriptions"
        " WHERE tenant = $1 AND id = $2 AND deleted_at IS NULL",
        tenant,
        subscription_id,
    )
    return None if row is None else dict(row)


async def delete_webhook_subscription(
    session: AsyncSession, tenant: str, subscription_id: uuid.UUID
) -> bool:
    """Mark a live subscription deleted and cancel its pending deliveries; whether it was."""
    deleted = await (await driver_connection(session)).fetchval(
        "WITH gone AS (UPDATE webhook_subscriptions SET deleted_at = now()"
        "  WHERE tenant = $1 AND id = $2 AND deleted_at IS NULL RETURNING id),"
        " cancelled AS (UPDATE webhook_deliveries d SET status = 'cancelled',"
        "  next_attempt_at = NULL FROM gone WHERE d.subscription_id = gone.id"
        "  AND d.status = 'pending')"
        " SELECT count(*) FROM gone",
        tenant,
        subscription_id,
    )
    return bool(deleted)


async def rotate_webhook_secret(
    session: AsyncSession,
    tenant: str,
    subscription_id: uuid.UUID,
    secret: str,
    grace: timedelta,
) -> Record | None:
    """Replace a live subscription's secret, the current one signing on for `grace`."""
    row = await (await driver_connection(session)).fetchrow(
        "UPDATE webhook_subscriptions SET previous_secret = secret,"
        " previous_secret_until = now() + $4::interval, secret = $3"
        " WHERE tenant = $1 AND id = $2 AND deleted_at IS NULL"
        " RETURNING id, secret, previous_secret_until",
        tenant,
        subscription_id,
        secret,
        grace,
    )
    return None if row is None else dict(row)


async def webhook_deliveries(
    session: AsyncSession,
    tenant: str,
    subscription_id: uuid.UUID,
    status: str | None,
    limit: int,
    offset: int,
) -> list[Record]:
    """A page of a subscription's deliveries, newest first."""
    rows = await (await driver_connection(session)).fetch(
        f"SELECT {_DELIVERY_COLUMNS} FROM webhook_deliveries"
        " WHERE tenant = $1 AND subscription_id = $2 AND ($3::text IS NULL OR status = $3)"
        " ORDER BY created_at DESC, id LIMIT $4 OFFSET $5",
        tenant,
        subscription_id,
        status,
        limit,
        offset,
    )
    return [dict(r) for r in rows]


async def webhook_attempts(
    session: AsyncSession, delivery_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[Record]]:
    """Every attempt of the deliveries, oldest first, by delivery."""
    attempts: dict[uuid.UUID, list[Record]] = {d: [] for d in delivery_ids}
    if not delivery_ids:
        return attempts
    rows = await (await driver_connection(session)).fetch(
        "SELECT delivery_id, attempted_at, status_code, error, duration_ms"
        " FROM webhook_attempts WHERE delivery_id = ANY($1::uuid[]) ORDER BY delivery_id, id",
        list(delivery_ids),
    )
    for r in rows:
        attempts[r["delivery_id"]].append(dict(r))
    return attempts


async def webhook_delivery_status(
    session: AsyncSession, tenant: str, delivery_id: uuid.UUID
) -> str | None:
    """The status of a delivery of one of the tenant's live subscriptions (locked)."""
    status = await (await driver_connection(session)).fetchval(
        "SELECT d.status FROM webhook_deliveries d JOIN webhook_subscriptions s"
        " ON s.id = d.subscription_id AND s.deleted_at IS NULL"
        " WHERE d.tenant = $1 AND d.id = $2 FOR UPDATE OF d",
        tenant,
        delivery_id,
    )
    return None if status is None else str(status)


async def requeue_webhook_delivery(
    session: AsyncSession, tenant: str, delivery_id: uuid.UUID, channel: str
) -> Record:
    """Make a delivery pending and due now with no attempts counted; NOTIFY `channel`."""
    row = await (await driver_connection(session)).fetchrow(
        "UPDATE webhook_deliveries SET status = 'pending', attempts = 0,"
        " next_attempt_at = now(), delivered_at = NULL WHERE tenant = $1 AND id = $2"
        f" RETURNING {_DELIVERY_COLUMNS}, pg_notify($3::text, '') AS notified",
        tenant,
        delivery_id,
        channel,
    )
    return dict(row)


async def claim_webhook_deliveries(
    session: AsyncSession, limit: int, lease: timedelta
) -> list[Record]:
    """Take up to `limit` due deliveries that no other dispatcher holds (SKIP LOCKED):
    count the attempt and move them `lease` ahead, so that one whose sender died is taken
    again then. With the secrets that sign them (the previous one while in its grace)."""
    rows = await (await driver_connection(session)).fetch(
        "WITH due AS (SELECT id FROM webhook_deliveries"
        "  WHERE status = 'pending' AND next_attempt_at <= now()"
        "  ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED)"
        " UPDATE webhook_deliveries d SET attempts = d.attempts + 1,"
        "  next_attempt_at = now() + $2::interval, last_attempt_at = now()"
        " FROM due, webhook_subscriptions s WHERE d.id = due.id AND s.id = d.subscription_id"
        " RETURNING d.id, d.message_id, d.body, d.attempts, s.url, s.secret,"
        "  CASE WHEN s.previous_secret_until > now() THEN s.previous_secret END"
        "  AS previous_secret",
        limit,
        lease,
    )
    return [dict(r) for r in rows]


async def record_webhook_outcomes(session: AsyncSession, outcomes: Sequence[Row]) -> None:
    """Store each attempt in the log and its delivery's new state (one statement each);
    a delivery requeued or cancelled meanwhile keeps that."""
    if not outcomes:
        return
    await _write(
        session,
        "UPDATE webhook_deliveries d SET status = o.status, next_attempt_at = o.next_attempt_at,"
        " last_status_code = o.status_code, last_error = o.error,"
        " delivered_at = CASE WHEN o.status = 'delivered' THEN o.attempted_at END"
        " FROM unnest($1::uuid[], $2::text[], $3::timestamptz[], $4::int[], $5::text[],"
        "  $6::timestamptz[], $7::int[]) AS o(id, status, next_attempt_at, status_code, error,"
        "  attempted_at, attempts)"
        " WHERE d.id = o.id AND d.status = 'pending' AND d.attempts = o.attempts",
        [o["delivery_id"] for o in outcomes],
        [o["status"] for o in outcomes],
        [o["next_attempt_at"] for o in outcomes],
        [o["status_code"] for o in outcomes],
        [o["error"] for o in outcomes],
        [o["attempted_at"] for o in outcomes],
        [o["attempts"] for o in outcomes],
    )
    await insert_columns(
        session,
        _table(WebhookAttempt),
        {
            "delivery_id": [o["delivery_id"] for o in outcomes],
            "attempted_at": [o["attempted_at"] for o in outcomes],
            "status_code": [o["status_code"] for o in outcomes],
            "error": [o["error"] for o in outcomes],
            "duration_ms": [o["duration_ms"] for o in outcomes],
        },
    )


async def next_webhook_due_in(session: AsyncSession) -> float | None:
    """Seconds until the earliest pending delivery is due (None: none pending)."""
    seconds = await (await driver_connection(session)).fetchval(
        "SELECT extract(epoch FROM min(next_attempt_at) - clock_timestamp())::float8"
        " FROM webhook_deliveries WHERE status = 'pending'"
    )
    return None if seconds is None else float(seconds)
