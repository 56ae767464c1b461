"""All of taxlot-svc's SQL.

Entity reads use ``populate_existing``: a consumer batch applies several fills in one
session, and changes are written with Core statements, so an entity cached in the session
from an earlier fill must be refreshed, never reused.

The fills' hot path (locks, contexts, state reads, every batch write) runs on the session's
driver connection (``ballast_common.bulk``), in its transaction: one prepared statement
each, kept by the driver, with no statement built per call; its rows are driver records
(columns by name).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from ballast_common import audit, tenancy
from ballast_common.audit import AuditEntry
from ballast_common.book_loads import LoadProblem, StagedLoad, value_sql
from ballast_common.bulk import driver_connection, insert_columns, insert_rows
from ballast_common.contracts.book_files import BY_NAME
from ballast_common.uow import Cause
from sqlalchemy import delete, func, text, update
from sqlalchemy import select as sa_select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlmodel import SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from taxlot_svc.tables import (
    AccountBook,
    AccountInfo,
    AppliedFill,
    CorporateActionRecord,
    EquivalenceSetRecord,
    HouseholdState,
    LedgerEntry,
    OpenLot,
    PendingSnapshot,
    RealizedGain,
    SecurityPrice,
    SleeveCash,
    TaxInput,
    TaxSettings,
)

ZERO = Decimal(0)


def _t(entity: type[SQLModel]) -> Any:
    return entity.__table__  # type: ignore[attr-defined]


async def _run(session: AsyncSession, stmt: Any) -> Any:
    """Execute a Core statement on the session's connection (the ORM's per-statement work
    is most of the cost of a small statement, and nothing here needs it)."""
    connection = await session.connection()
    return await connection.execute(stmt)


async def _fetch(session: AsyncSession, sql: str, *args: Any) -> list[Any]:
    """Rows of a statement with positional parameters, run on the driver connection."""
    return list(await (await driver_connection(session)).fetch(sql, *args))


async def _execute(session: AsyncSession, sql: str, *args: Any) -> None:
    """A statement with positional parameters, run on the driver connection."""
    await (await driver_connection(session)).execute(sql, *args)


async def create_books(session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> set[str]:
    """Insert account books; returns the ids actually inserted (existing ones are skipped)."""
    inserted = await insert_rows(
        session,
        _t(AccountBook),
        rows,
        on_conflict="(account_id) DO NOTHING",
        returning="account_id",
    )
    return {r[0] for r in inserted}


async def existing_accounts(session: AsyncSession, account_ids: Sequence[str]) -> set[str]:
    """Those of ``account_ids`` that have a book."""
    if not account_ids:
        return set()
    rows = await _fetch(
        session,
        "SELECT account_id FROM account_books WHERE account_id = ANY($1::text[])",
        list(account_ids),
    )
    return {r[0] for r in rows}


async def get_book(
    session: AsyncSession,
    account_id: str,
    *,
    tenant: str | None = None,
    for_update: bool = False,
) -> Any:
    """The account's book row (cash, as_of, tenant, ...), or None (also when a `tenant` is
    given and the book is another tenant's)."""
    table = _t(AccountBook)
    stmt = sa_select(table).where(table.c.account_id == account_id)
    if tenant is not None:
        stmt = stmt.where(table.c.tenant == tenant)
    if for_update:
        stmt = stmt.with_for_update()
    return (await _run(session, stmt)).first()


async def set_cash(session: AsyncSession, account_id: str, cash: Decimal, as_of: date) -> None:
    table = _t(AccountBook)
    await _run(
        session,
        table.update()
        .where(table.c.account_id == account_id)
        .values(cash=cash, as_of=as_of, updated_at=datetime.now(UTC)),
    )


async def add_sleeve_cash(
    session: AsyncSession, amounts: Mapping[tuple[str, str], Decimal]
) -> None:
    """Record the cash of named sleeves, by (account, sleeve), in one statement."""
    keys = sorted(amounts)
    await insert_columns(
        session,
        _t(SleeveCash),
        {
            "account_id": [a for a, _ in keys],
            "sleeve": [s for _, s in keys],
            "amount": [amounts[k] for k in keys],
        },
    )


async def sleeve_cash_of(
    session: AsyncSession, account_ids: Sequence[str], *, for_update: bool = False
) -> dict[str, dict[str, Decimal]]:
    """The cash of each account's named sleeves (accounts kept whole are absent)."""
    if not account_ids:
        return {}
    rows = await _fetch(
        session,
        "SELECT account_id, sleeve, amount FROM sleeve_cash WHERE account_id = ANY($1::text[])"
        " ORDER BY account_id, sleeve" + (" FOR UPDATE" if for_update else ""),
        list(account_ids),
    )
    out: dict[str, dict[str, Decimal]] = {}
    for account, sleeve, amount in rows:
        out.setdefault(account, {})[sleeve] = amount
    return out


async def move_sleeve_cash(
    session: AsyncSession, account_id: str, changes: Mapping[str, Decimal]
) -> None:
    """Add ``changes`` to the cash of the account's named sleeves (a row per new sleeve)."""
    if not changes:
        return
    sleeves = sorted(changes)
    await _run(
        session,
        text(
            "INSERT INTO sleeve_cash (account_id, sleeve, amount, updated_at)"
            " SELECT :a, s, c, now() FROM unnest(CAST(:s AS text[]), CAST(:c AS numeric[]))"
            " AS u(s, c) ON CONFLICT (account_id, sleeve) DO UPDATE"
            " SET amount = sleeve_cash.amount + excluded.amount, updated_at = now()"
        ).bindparams(a=account_id, s=sleeves, c=[changes[x] for x in sleeves]),
    )


async def cash_transfer_entries(
    session: AsyncSession, account_id: str, cause: str, transfer_id: str
) -> list[Any]:
    """The cash entries (sleeve, amount) a cash transfer between sleeves journalled."""
    table = _t(LedgerEntry)
    stmt = (
        sa_select(table.c.sleeve, table.c.amount)
        .where(
            table.c.account_id == account_id,
            table.c.cause == cause,
            table.c.fill_id == transfer_id,
            table.c.kind == "cash",
        )
        .order_by(table.c.id)
    )
    return list((await _run(session, stmt)).all())


@dataclass(frozen=True)
class CashMove:
    """One cash entry of an approved proposal's movements: ``amount`` in (out of, negative)
    ``sleeve`` ('' = the account's own cash)."""

    proposal_id: str
    account_id: str
    sleeve: str
    amount: Decimal


async def book_cash_movements(
    session: AsyncSession,
    approvals: Mapping[str, tuple[str, Cause]],
    moves: Sequence[CashMove],
    causes: Mapping[str, Cause],
    cause: str,
) -> set[str]:
    """In one statement: record the approved proposals (``approvals``: proposal -> account and
    its trades-approved), and for those not recorded before, journal their ``moves`` (cause
    ``cause``, the proposal as reference, in order), add them to the named sleeves' cash,
    and ask for each of their accounts' holdings-reconciled following from ``causes`` (the
    account's approval). Returns the proposals booked now."""
    proposals = sorted(approvals)
    accounts = sorted(causes)
    stmt = text(
        "WITH booked AS (INSERT INTO approved_cash_movements"
        "  (proposal_id, account_id, event_id, booked_at)"
        "  SELECT *, now() FROM unnest(CAST(:p AS uuid[]), CAST(:pa AS text[]),"
        "  CAST(:pe AS uuid[])) ON CONFLICT (proposal_id) DO NOTHING"
        "  RETURNING proposal_id, account_id),"
        " m AS (SELECT m.* FROM unnest(CAST(:mp AS uuid[]), CAST(:ma AS text[]),"
        "  CAST(:ms AS text[]), CAST(:mc AS numeric[])) WITH ORDINALITY"
        "  AS m(proposal_id, account_id, sleeve, amount, n)"
        "  WHERE m.proposal_id IN (SELECT proposal_id FROM booked)),"
        " j AS (INSERT INTO ledger_entries (account_id, cause, fill_id, kind, amount, sleeve,"
        "  recorded_at) SELECT account_id, :cause, proposal_id::text, 'cash', amount, sleeve,"
        "  now() FROM m ORDER BY n),"
        " c AS (INSERT INTO sleeve_cash (account_id, sleeve, amount, updated_at)"
        "  SELECT account_id, sleeve, sum(amount), now() FROM m WHERE sleeve <> ''"
        "  GROUP BY account_id, sleeve ORDER BY account_id, sleeve"
        "  ON CONFLICT (account_id, sleeve) DO UPDATE"
        "  SET amount = sleeve_cash.amount + excluded.amount, updated_at = now()),"
        " s AS (INSERT INTO pending_snapshots (account_id, cause, fill_ids, action_id,"
        "  cause_event_id, traceparent, tracestate, requested_at)"
        "  SELECT r.account_id, :cause, '[]'::jsonb, NULL, r.event_id, r.tp, r.ts, now()"
        "  FROM unnest(CAST(:r AS text[]), CAST(:re AS uuid[]), CAST(:rtp AS text[]),"
        "  CAST(:rts AS text[])) AS r(account_id, event_id, tp, ts)"
        "  WHERE r.account_id IN (SELECT account_id FROM booked) ORDER BY r.account_id"
        "  ON CONFLICT (account_id) DO UPDATE SET cause = excluded.cause,"
        "  fill_ids = pending_snapshots.fill_ids || excluded.fill_ids,"
        "  cause_event_id = excluded.cause_event_id, traceparent = excluded.traceparent,"
        "  tracestate = excluded.tracestate)"
        " SELECT proposal_id::text FROM booked"
    ).bindparams(
        p=[UUID(x) for x in proposals],
        pa=[approvals[x][0] for x in proposals],
        pe=[approvals[x][1].id for x in proposals],
        mp=[UUID(m.proposal_id) for m in moves],
        ma=[m.account_id for m in moves],
        ms=[m.sleeve for m in moves],
        mc=[m.amount for m in moves],
        cause=cause,
        r=accounts,
        re=[causes[a].id for a in accounts],
        rtp=[causes[a].traceparent for a in accounts],
        rts=[causes[a].tracestate for a in accounts],
    )
    return set((await _run(session, stmt)).scalars())


async def add_lots(session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> None:
    await insert_rows(session, _t(OpenLot), rows)


async def add_ledger_entries(session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> None:
    await insert_rows(session, _t(LedgerEntry), rows)


async def add_realized_gains(session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> None:
    await insert_rows(session, _t(RealizedGain), rows)


async def open_lots(
    session: AsyncSession, account_id: str, symbol: str | None = None
) -> list[OpenLot]:
    stmt = select(OpenLot).where(OpenLot.account_id == account_id)
    if symbol is not None:
        stmt = stmt.where(OpenLot.symbol == symbol)
    stmt = stmt.order_by(
        col(OpenLot.symbol), col(OpenLot.acquired_on), col(OpenLot.seq), col(OpenLot.lot_id)
    )
    return list(await session.exec(stmt.execution_options(populate_existing=True)))


async def positions(
    session: AsyncSession, account_id: str, symbol: str | None = None
) -> list[tuple[str, Decimal, Decimal]]:
    """(symbol, quantity, cost basis) of every open position (or of one): the sums of its
    lots."""
    stmt = select(OpenLot.symbol, func.sum(OpenLot.quantity), func.sum(OpenLot.cost_basis)).where(
        OpenLot.account_id == account_id
    )
    if symbol is not None:
        stmt = stmt.where(OpenLot.symbol == symbol)
    stmt = stmt.group_by(col(OpenLot.symbol)).order_by(col(OpenLot.symbol))
    return [(s, q, b) for s, q, b in (await session.exec(stmt)).all()]


async def record_fills(session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> set[str]:
    """Insert applied fills (one statement, cash change 0 until :func:`finish_fills`);
    returns the ids inserted (a fill id applied before is skipped). The rows' fill ids are
    distinct."""
    columns: dict[str, list[Any]] = {
        name: [r[name] for r in rows]
        for name in (
            "fill_id",
            "account_id",
            "symbol",
            "side",
            "quantity",
            "price",
            "executed_at",
            "event_id",
            "client_order_id",
        )
    }
    columns["cash_change"] = [ZERO] * len(rows)
    inserted = await insert_columns(
        session,
        _t(AppliedFill),
        columns,
        on_conflict="(fill_id) DO NOTHING",
        returning="fill_id",
    )
    return {r[0] for r in inserted}


async def get_fills(session: AsyncSession, fill_ids: Sequence[str]) -> dict[str, Any]:
    """Applied fills by id (plain rows)."""
    if not fill_ids:
        return {}
    table = _t(AppliedFill)
    stmt = sa_select(table).where(table.c.fill_id.in_(list(fill_ids)))
    return {r.fill_id: r for r in (await _run(session, stmt)).all()}


async def realized_gains(
    session: AsyncSession, account_id: str, year: int | None = None
) -> list[RealizedGain]:
    stmt = select(RealizedGain).where(RealizedGain.account_id == account_id)
    if year is not None:
        stmt = stmt.where(
            col(RealizedGain.sold_on) >= date(year, 1, 1),
            col(RealizedGain.sold_on) <= date(year, 12, 31),
        )
    stmt = stmt.order_by(col(RealizedGain.sold_on), col(RealizedGain.seq), col(RealizedGain.id))
    return list(await session.exec(stmt))


async def ledger_entries(session: AsyncSession, account_id: str) -> list[LedgerEntry]:
    stmt = (
        select(LedgerEntry)
        .where(LedgerEntry.account_id == account_id)
        .order_by(col(LedgerEntry.id))
    )
    return list(await session.exec(stmt))


# --- households, settings, prices -------------------------------------------------------------


WRITES_LOCK = "taxlot-writes"


async def lock_writes(session: AsyncSession, *, exclusive: bool) -> None:
    """The service's write lock (transaction-scoped advisory lock). Consumers take it
    shared, then the locks of their households; REST writes (opening balances, corporate
    actions, sleeve transfers) take it exclusive and need no other. So a REST write never
    waits for a household lock while holding one, and consumers, whose batches take
    households in message order, never wait crosswise with it: no deadlock can involve a
    REST request. Taking it again in the same transaction is free."""
    fn = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
    await _execute(session, f"SELECT {fn}(hashtextextended($1, 0))", WRITES_LOCK)


async def lock_households(session: AsyncSession, households: Sequence[str]) -> None:
    """Serialize the changes of a household between consumers (transaction-scoped advisory
    locks, taken in sorted order, all in one statement)."""
    keys = [f"taxlot-household:{h}" for h in sorted(set(households))]
    if keys:
        # unnest yields the keys in array order: the locks are taken in that order
        await _execute(
            session,
            "SELECT count(pg_advisory_xact_lock(hashtextextended(k, 0)))"
            " FROM unnest($1::text[]) AS k",
            keys,
        )


async def household_state(session: AsyncSession, household: str) -> tuple[date | None, int]:
    """(last day applied, engine sequence counter) of a household; (None, 0) if new."""
    table = HouseholdState.__table__  # type: ignore[attr-defined]
    connection = await session.connection()
    row = (
        await connection.execute(
            sa_select(table.c.last_day, table.c.seq).where(table.c.household_id == household)
        )
    ).first()
    return (row[0], row[1]) if row is not None else (None, 0)


async def households_known(session: AsyncSession, households: Sequence[str]) -> set[str]:
    """Households that have had inputs applied."""
    if not households:
        return set()
    stmt = select(HouseholdState.household_id).where(
        col(HouseholdState.household_id).in_(households),
        col(HouseholdState.last_day).is_not(None),
    )
    return set(await session.exec(stmt))


async def set_household_states(
    session: AsyncSession, states: Mapping[str, tuple[date | None, int]]
) -> None:
    """Upsert households' last day and sequence counter (each only ever grows)."""
    households = sorted(states)
    await insert_columns(
        session,
        _t(HouseholdState),
        {
            "household_id": households,
            "last_day": [states[h][0] for h in households],
            "seq": [states[h][1] for h in households],
        },
        on_conflict="(household_id) DO UPDATE SET"
        " last_day = greatest(households.last_day, excluded.last_day),"
        " seq = greatest(households.seq, excluded.seq), updated_at = now()",
    )


async def reset_household_state(
    session: AsyncSession, household: str, last_day: date | None, seq: int
) -> None:
    """Set a household's last day exactly (after a whole-household replay: members may
    have left), keeping the sequence counter growing."""
    table = HouseholdState.__table__  # type: ignore[attr-defined]
    stmt = pg_insert(table).values(
        household_id=household, last_day=last_day, seq=seq, updated_at=datetime.now(UTC)
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["household_id"],
        set_={
            "last_day": stmt.excluded.last_day,
            "seq": func.greatest(table.c.seq, stmt.excluded.seq),
            "updated_at": stmt.excluded.updated_at,
        },
    )
    await _run(session, stmt)


async def account_infos(session: AsyncSession, account_ids: Sequence[str]) -> list[Any]:
    """(account_id, household_id, account_type) records of accounts account-svc described."""
    if not account_ids:
        return []
    return await _fetch(
        session,
        "SELECT account_id, household_id, account_type FROM accounts"
        " WHERE account_id = ANY($1::text[])",
        list(account_ids),
    )


async def household_members(session: AsyncSession, households: Sequence[str]) -> list[Any]:
    """(account_id, household_id, account_type) records of the households' accounts."""
    if not households:
        return []
    return await _fetch(
        session,
        "SELECT account_id, household_id, account_type FROM accounts"
        " WHERE household_id = ANY($1::text[]) ORDER BY account_id",
        list(households),
    )


async def upsert_account_infos(session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> None:
    """Accounts' household and type (and the tenant that named each, once known): rows of
    account_id, household_id, account_type, tenant (None keeps the one stored); one
    statement, one row per account."""
    if not rows:
        return
    ordered = sorted(rows, key=lambda r: r["account_id"])
    await insert_columns(
        session,
        _t(AccountInfo),
        {
            "account_id": [r["account_id"] for r in ordered],
            "household_id": [r["household_id"] for r in ordered],
            "account_type": [r["account_type"] for r in ordered],
            "tenant": [r["tenant"] for r in ordered],
        },
        on_conflict="(account_id) DO UPDATE SET household_id = excluded.household_id,"
        " account_type = excluded.account_type,"
        " tenant = coalesce(excluded.tenant, accounts.tenant), updated_at = now()",
    )


async def accounts_of_other_tenants(
    session: AsyncSession, account_ids: Sequence[str], tenant: str
) -> set[str]:
    """Those of ``account_ids`` that account-svc named for another tenant."""
    if not account_ids:
        return set()
    async with tenancy.across_tenants(session):
        rows = await _fetch(
            session,
            "SELECT account_id FROM accounts WHERE account_id = ANY($1::text[]) AND tenant <> $2",
            list(account_ids),
            tenant,
        )
    return {r[0] for r in rows}


async def get_tax_settings(session: AsyncSession, account_id: str) -> Any:
    table = _t(TaxSettings)
    stmt = sa_select(table).where(table.c.account_id == account_id)
    return (await _run(session, stmt)).first()


async def put_tax_settings(session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> set[str]:
    """Store accounts' relief method and rates (one row per account, one statement); returns
    the accounts whose settings changed (``updated_at`` moves only for them)."""
    if not rows:
        return set()
    ordered = sorted(rows, key=lambda r: r["account_id"])
    fields = ("method", "short_term_rate", "long_term_rate")
    changed = await insert_columns(
        session,
        _t(TaxSettings),
        {"account_id": [r["account_id"] for r in ordered]}
        | {f: [r[f] for r in ordered] for f in fields},
        on_conflict="(account_id) DO UPDATE SET method = excluded.method,"
        " short_term_rate = excluded.short_term_rate, long_term_rate = excluded.long_term_rate,"
        " updated_at = now() WHERE (tax_settings.method, tax_settings.short_term_rate,"
        " tax_settings.long_term_rate) IS DISTINCT FROM (excluded.method,"
        " excluded.short_term_rate, excluded.long_term_rate)",
        returning="account_id",
    )
    return {r[0] for r in changed}


# --- equivalence sets ---------------------------------------------------------------------------


async def upsert_equivalence_set(session: AsyncSession, values: Mapping[str, Any]) -> bool:
    """Store a set's version if it is newer than the stored one; True if stored."""
    table = _t(EquivalenceSetRecord)
    insert = pg_insert(EquivalenceSetRecord).values(dict(values))
    stmt = insert.on_conflict_do_update(
        index_elements=["set_id"],
        set_={
            "name": insert.excluded.name,
            "members": insert.excluded.members,
            "identical": insert.excluded.identical,
            "removed": insert.excluded.removed,
            "version": insert.excluded.version,
            "updated_at": datetime.now(UTC),
        },
        where=table.c.version < insert.excluded.version,
    ).returning(table.c.set_id)
    return (await _run(session, stmt)).first() is not None


async def identical_sets(session: AsyncSession) -> list[list[str]]:
    """Members of every equivalence set marked identical and not removed (by set id)."""
    table = _t(EquivalenceSetRecord)
    stmt = (
        sa_select(table.c.members)
        .where(table.c.identical.is_(True), table.c.removed.is_(False))
        .order_by(table.c.set_id)
    )
    return [list(m) for (m,) in (await _run(session, stmt)).all()]


async def equivalence_sets(session: AsyncSession) -> list[Any]:
    table = _t(EquivalenceSetRecord)
    return list((await _run(session, sa_select(table).order_by(table.c.set_id))).all())


async def upsert_prices(session: AsyncSession, prices: Mapping[str, Decimal]) -> None:
    """Store the security master's prices, in one statement."""
    symbols = sorted(prices)
    await insert_columns(
        session,
        _t(SecurityPrice),
        {"symbol": symbols, "price": [prices[s] for s in symbols]},
        on_conflict="(symbol) DO UPDATE SET price = excluded.price, updated_at = now()",
    )


async def master_prices(session: AsyncSession, symbols: Sequence[str]) -> dict[str, Decimal]:
    if not symbols:
        return {}
    stmt = select(col(SecurityPrice.symbol), col(SecurityPrice.price)).where(
        col(SecurityPrice.symbol).in_(symbols)
    )
    return {s: p for s, p in (await session.exec(stmt)).all()}


async def last_fill_prices(session: AsyncSession, symbols: Sequence[str]) -> dict[str, Decimal]:
    """The price of the latest fill of each symbol (any account)."""
    if not symbols:
        return {}
    stmt = text(
        "SELECT DISTINCT ON (symbol) symbol, price FROM applied_fills "
        "WHERE symbol = ANY(:symbols) ORDER BY symbol, executed_at DESC, applied_at DESC"
    ).bindparams(symbols=list(symbols))
    connection = await session.connection()
    return {s: p for s, p in (await connection.execute(stmt)).all()}


# --- replay inputs and derived rows ---------------------------------------------------------------


async def add_tax_inputs(session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> None:
    await insert_rows(session, _t(TaxInput), rows)


async def tax_inputs(
    session: AsyncSession, account_ids: Sequence[str], symbols: Sequence[str] | None = None
) -> list[Any]:
    """The inputs of ``account_ids`` (in ``symbols`` when given) in arrival order, as plain
    rows (attribute access by column name; read with Core: a replay reads thousands)."""
    if not account_ids:
        return []
    table = TaxInput.__table__  # type: ignore[attr-defined]
    stmt = sa_select(table).where(table.c.account_id.in_(account_ids))
    if symbols is not None:
        stmt = stmt.where(table.c.symbol.in_(symbols))
    stmt = stmt.order_by(table.c.id)
    connection = await session.connection()
    return list((await connection.execute(stmt)).all())


async def accounts_trading(session: AsyncSession, symbol: str) -> set[str]:
    """Accounts holding ``symbol`` now or with an input (opening lot, fill) in it."""
    held = select(OpenLot.account_id).where(OpenLot.symbol == symbol).distinct()
    traded = select(TaxInput.account_id).where(TaxInput.symbol == symbol).distinct()
    return set(await session.exec(held)) | set(await session.exec(traded))


async def opening_lots_before(
    session: AsyncSession, symbol: str, on: date
) -> list[tuple[str, date, str]]:
    """(account, book as-of, opening lot) of opening lots of ``symbol`` acquired before
    ``on`` in accounts whose opening balance is stated as of ``on`` or later."""
    stmt = (
        select(col(TaxInput.account_id), col(AccountBook.as_of), col(TaxInput.ref))
        .join(AccountBook, col(AccountBook.account_id) == col(TaxInput.account_id))
        .where(
            TaxInput.kind == "opening",
            TaxInput.symbol == symbol,
            col(TaxInput.trade_on) < on,
            col(AccountBook.as_of) >= on,
        )
        .order_by(col(TaxInput.account_id), col(TaxInput.id))
    )
    return [(a, d, r) for a, d, r in (await session.exec(stmt)).all()]


async def delete_lot_keys(session: AsyncSession, keys: Sequence[tuple[str, str]]) -> None:
    """Delete lots by (account, lot id), any number in one statement."""
    if keys:
        await _execute(
            session,
            "DELETE FROM lots l USING unnest($1::text[], $2::text[])"
            " AS k(account_id, lot_id) WHERE l.account_id = k.account_id"
            " AND l.lot_id = k.lot_id",
            [k[0] for k in keys],
            [k[1] for k in keys],
        )


async def update_gains_wash(
    session: AsyncSession, rows: Sequence[tuple[int, Decimal, Decimal, Decimal]]
) -> None:
    """Set (adjustment, washed quantity, permanent) of realized gains by row id, any
    number in one statement."""
    if rows:
        await _execute(
            session,
            "UPDATE realized_gains g SET adjustment = u.adjustment,"
            " washed_quantity = u.washed, permanent = u.permanent"
            " FROM unnest($1::bigint[], $2::numeric[], $3::numeric[], $4::numeric[])"
            " AS u(id, adjustment, washed, permanent) WHERE g.id = u.id",
            [r[0] for r in rows],
            [r[1] for r in rows],
            [r[2] for r in rows],
            [r[3] for r in rows],
        )


async def lots_of_pairs(
    session: AsyncSession, account_ids: Sequence[str], symbols: Sequence[str]
) -> list[Any]:
    """The open lots of each (account, symbol) pair (driver records)."""
    if not account_ids:
        return []
    return await _fetch(
        session,
        "SELECT l.* FROM unnest($1::text[], $2::text[]) AS p(account_id, symbol)"
        " JOIN lots l ON l.account_id = p.account_id AND l.symbol = p.symbol",
        list(account_ids),
        list(symbols),
    )


async def sales_of_pairs(
    session: AsyncSession, account_ids: Sequence[str], symbols: Sequence[str]
) -> list[Any]:
    """Every realized gain of each (account, symbol) pair (driver records)."""
    if not account_ids:
        return []
    return await _fetch(
        session,
        "SELECT g.* FROM unnest($1::text[], $2::text[]) AS p(account_id, symbol)"
        " JOIN realized_gains g ON g.account_id = p.account_id AND g.symbol = p.symbol",
        list(account_ids),
        list(symbols),
    )


async def derived_lots(
    session: AsyncSession, account_ids: Sequence[str], symbols: Sequence[str] | None = None
) -> list[Any]:
    """The stored open lots of ``account_ids`` (in ``symbols`` when given), plain rows."""
    if not account_ids:
        return []
    table = OpenLot.__table__  # type: ignore[attr-defined]
    stmt = sa_select(table).where(table.c.account_id.in_(account_ids))
    if symbols is not None:
        stmt = stmt.where(table.c.symbol.in_(symbols))
    connection = await session.connection()
    return list((await connection.execute(stmt)).all())


async def replace_derived(
    session: AsyncSession,
    account_ids: Sequence[str],
    symbols: Sequence[str] | None,
    lot_rows: Sequence[Mapping[str, Any]],
    gain_rows: Sequence[Mapping[str, Any]],
) -> None:
    """Replace every stored lot and realized gain of ``account_ids`` (in ``symbols`` when
    given) with a replay's: delete them all, insert the replay's."""
    if account_ids:
        lots = delete(OpenLot).where(col(OpenLot.account_id).in_(account_ids))
        gains = delete(RealizedGain).where(col(RealizedGain.account_id).in_(account_ids))
        if symbols is not None:
            lots = lots.where(col(OpenLot.symbol).in_(symbols))
            gains = gains.where(col(RealizedGain.symbol).in_(symbols))
        await session.exec(lots)
        await session.exec(gains)
    await add_lots(session, lot_rows)
    await add_realized_gains(session, gain_rows)


# --- snapshots (holdings-reconciled) ------------------------------------------------------------


async def request_snapshots(session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> None:
    """Ask for accounts' holdings-reconciled; a request already pending for an account
    absorbs this one (its fill ids are appended; the latest cause, causing event and trace
    win)."""
    ordered = sorted(rows, key=lambda r: r["account_id"])  # one order: no crosswise waits
    await insert_rows(
        session,
        _t(PendingSnapshot),
        [{**r, "fill_ids": json.dumps(list(r["fill_ids"]))} for r in ordered],
        on_conflict="(account_id) DO UPDATE SET cause = excluded.cause,"
        " fill_ids = pending_snapshots.fill_ids || excluded.fill_ids,"
        " action_id = coalesce(excluded.action_id, pending_snapshots.action_id),"
        " cause_event_id = excluded.cause_event_id, traceparent = excluded.traceparent,"
        " tracestate = excluded.tracestate",
    )


async def take_pending_snapshots(session: AsyncSession, limit: int) -> list[Any]:
    """Claim up to ``limit`` pending snapshot requests (rows locked by another
    transaction are skipped, so this never waits) and delete them (driver records)."""
    return await _fetch(
        session,
        "DELETE FROM pending_snapshots WHERE account_id IN ("
        " SELECT account_id FROM pending_snapshots ORDER BY requested_at, account_id"
        " LIMIT $1 FOR UPDATE SKIP LOCKED)"
        " RETURNING account_id, cause, fill_ids, action_id, cause_event_id, traceparent,"
        " tracestate",
        limit,
    )


async def lots_of_accounts(session: AsyncSession, account_ids: Sequence[str]) -> list[Any]:
    table = OpenLot.__table__  # type: ignore[attr-defined]
    stmt = (
        sa_select(table)
        .where(table.c.account_id.in_(account_ids))
        .order_by(table.c.account_id, table.c.symbol, table.c.acquired_on, table.c.seq)
    )
    connection = await session.connection()
    return list((await connection.execute(stmt)).all())


async def recent_loss_sales(
    session: AsyncSession, account_ids: Sequence[str], since: date
) -> list[Any]:
    """Loss sales (taxable, by fills) on or after ``since`` with shares not yet matched
    (driver records)."""
    return await _fetch(
        session,
        "SELECT * FROM realized_gains WHERE account_id = ANY($1::text[]) AND sold_on >= $2"
        " AND cause = 'fill' AND account_type = 'taxable' AND proceeds < cost_basis"
        " AND washed_quantity < quantity ORDER BY account_id, sold_on, seq",
        list(account_ids),
        since,
    )


async def books(
    session: AsyncSession,
    account_ids: Sequence[str],
    *,
    for_update: bool = True,
    tenant: str | None = None,
) -> list[Any]:
    """The books of those accounts (of `tenant` only, when given), in id order."""
    if not account_ids:
        return []
    table = _t(AccountBook)
    stmt = sa_select(table).where(table.c.account_id.in_(account_ids)).order_by(table.c.account_id)
    if tenant is not None:
        stmt = stmt.where(table.c.tenant == tenant)
    if for_update:
        stmt = stmt.with_for_update()
    return list((await _run(session, stmt)).all())


# --- corporate actions ------------------------------------------------------------------------


async def corporate_actions(session: AsyncSession) -> list[CorporateActionRecord]:
    stmt = select(CorporateActionRecord).order_by(
        col(CorporateActionRecord.effective_on), col(CorporateActionRecord.recorded_at)
    )
    return list(await session.exec(stmt.execution_options(populate_existing=True)))


async def get_corporate_action(
    session: AsyncSession, action_id: str
) -> CorporateActionRecord | None:
    stmt = select(CorporateActionRecord).where(CorporateActionRecord.action_id == action_id)
    return (await session.exec(stmt.execution_options(populate_existing=True))).first()


async def add_corporate_action(session: AsyncSession, values: Mapping[str, Any]) -> bool:
    """Insert an action; False if one with that id exists (a concurrent request won)."""
    stmt = (
        pg_insert(CorporateActionRecord)
        .values(dict(values))
        .on_conflict_do_nothing(index_elements=["action_id"])
        .returning(col(CorporateActionRecord.action_id))
    )
    return (await session.exec(stmt)).first() is not None


async def set_corporate_action_result(
    session: AsyncSession, action_id: str, result: Mapping[str, Any]
) -> None:
    await session.exec(
        update(CorporateActionRecord)
        .where(col(CorporateActionRecord.action_id) == action_id)
        .values(result=dict(result))
    )


async def actions_on(session: AsyncSession, symbols: Sequence[str]) -> list[CorporateActionRecord]:
    stmt = select(CorporateActionRecord).where(col(CorporateActionRecord.symbol).in_(symbols))
    return list(await session.exec(stmt))


async def get_input(session: AsyncSession, account_id: str, kind: str, ref: str) -> Any:
    table = TaxInput.__table__  # type: ignore[attr-defined]
    stmt = sa_select(table).where(
        table.c.account_id == account_id, table.c.kind == kind, table.c.ref == ref
    )
    connection = await session.connection()
    return (await connection.execute(stmt)).first()


# --- the fill's hot path: fewer round trips -----------------------------------------------------


async def lock_writes_reading_households(
    session: AsyncSession, account_ids: Sequence[str]
) -> dict[str, str]:
    """The write lock (shared) and, in the same round trip, the accounts' households as last
    committed BEFORE the lock was granted: guesses, to be checked under the households'
    locks (:func:`fill_contexts`). Accounts account-svc has not placed are absent."""
    [row] = await _fetch(
        session,
        "SELECT pg_advisory_xact_lock_shared(hashtextextended($1, 0)) AS locked,"
        " (SELECT coalesce(jsonb_object_agg(account_id, household_id), '{}') FROM accounts"
        "  WHERE account_id = ANY($2::text[])) AS households",
        WRITES_LOCK,
        list(account_ids),
    )
    return dict(row["households"])


@dataclass(frozen=True, slots=True)
class FillContext:
    """What applying fills needs of an account (see :func:`fill_contexts`)."""

    account_id: str
    locked: str  # the household locked for it
    tenant: str
    cash: Decimal
    as_of: date
    household_id: str | None
    account_type: str | None
    method: str | None
    last_day: date | None  # of the household locked for it
    seq: int | None
    identical_sets: list[list[str]] | None


async def fill_contexts(
    session: AsyncSession, households: Mapping[str, str]
) -> dict[str, FillContext]:
    """In one round trip, under the households' locks, for each account (mapped to the
    household locked for it): its book (locked, in account order), its household and type,
    its relief method, the state of the household locked for it (``locked``), and the
    members of the identical equivalence sets in force (``identical_sets``, a list of lists
    or null). Accounts without a book are absent."""
    accounts = sorted(households)
    rows = await _fetch(
        session,
        "SELECT b.account_id, g.household AS locked, b.tenant, b.cash, b.as_of,"
        " i.household_id, i.account_type, ts.method, h.last_day, h.seq,"
        " (SELECT jsonb_agg(e.members ORDER BY e.set_id) FROM equivalence_sets e"
        "   WHERE e.identical AND NOT e.removed) AS identical_sets"
        " FROM unnest($1::text[], $2::text[]) AS g(account_id, household)"
        " JOIN account_books b ON b.account_id = g.account_id"
        " LEFT JOIN accounts i ON i.account_id = b.account_id"
        " LEFT JOIN tax_settings ts ON ts.account_id = b.account_id"
        " LEFT JOIN households h ON h.household_id = g.household"
        " ORDER BY b.account_id FOR UPDATE OF b",
        accounts,
        [households[a] for a in accounts],
    )
    return {r["account_id"]: FillContext(**dict(r)) for r in rows}


async def finish_fills(
    session: AsyncSession,
    cash_changes: Mapping[str, Decimal],
    books: Mapping[str, tuple[Decimal, date]],
    snapshots: Mapping[str, tuple[Sequence[str], Cause]],
    households: Mapping[str, tuple[date | None, int]],
    sleeve_changes: Mapping[tuple[str, str], Decimal],
) -> None:
    """After a batch of fills, in one statement: each fill's cash change, each account's new
    cash and as-of, what the fills moved of named sleeves' cash, the request for each
    account's holdings-reconciled naming its fills and its cause (appended to a request
    already pending; the latest cause wins), and the households' new (last day, sequence
    counter) (each only grows)."""
    fills = sorted(cash_changes)
    accounts = sorted(books)
    requested = sorted(snapshots)
    states = sorted(households)
    sleeves = sorted(sleeve_changes)
    await _execute(
        session,
        "WITH f AS (UPDATE applied_fills a SET cash_change = u.c"
        "  FROM unnest($1::text[], $2::numeric[]) AS u(fill_id, c)"
        "  WHERE a.fill_id = u.fill_id),"
        " s AS (INSERT INTO sleeve_cash (account_id, sleeve, amount, updated_at)"
        "  SELECT *, now() FROM unnest($3::text[], $4::text[], $5::numeric[])"
        "  ON CONFLICT (account_id, sleeve) DO UPDATE"
        "  SET amount = sleeve_cash.amount + excluded.amount, updated_at = now()),"
        " h AS (INSERT INTO households (household_id, last_day, seq, updated_at)"
        "  SELECT * , now() FROM unnest($6::text[], $7::date[], $8::bigint[])"
        "  ON CONFLICT (household_id) DO UPDATE SET"
        "  last_day = greatest(households.last_day, excluded.last_day),"
        "  seq = greatest(households.seq, excluded.seq), updated_at = now()),"
        " p AS (INSERT INTO pending_snapshots (account_id, cause, fill_ids, action_id,"
        "  cause_event_id, traceparent, tracestate, requested_at)"
        "  SELECT r.account_id, 'fills', CAST(r.fids AS jsonb), NULL, r.event_id, r.tp, r.ts,"
        "  now() FROM unnest($9::text[], $10::text[], $11::uuid[], $12::text[], $13::text[])"
        "  AS r(account_id, fids, event_id, tp, ts)"
        "  ORDER BY r.account_id"
        "  ON CONFLICT (account_id) DO UPDATE SET cause = excluded.cause,"
        "  fill_ids = pending_snapshots.fill_ids || excluded.fill_ids,"
        "  cause_event_id = excluded.cause_event_id, traceparent = excluded.traceparent,"
        "  tracestate = excluded.tracestate)"
        " UPDATE account_books b SET cash = u.cash, as_of = u.as_of, updated_at = now()"
        " FROM unnest($14::text[], $15::numeric[], $16::date[])"
        " AS u(account_id, cash, as_of) WHERE b.account_id = u.account_id",
        fills,
        [cash_changes[x] for x in fills],
        [a for a, _ in sleeves],
        [x for _, x in sleeves],
        [sleeve_changes[k] for k in sleeves],
        states,
        [households[x][0] for x in states],
        [households[x][1] for x in states],
        requested,
        [json.dumps(list(snapshots[a][0])) for a in requested],
        [snapshots[a][1].id for a in requested],
        [snapshots[a][1].traceparent for a in requested],
        [snapshots[a][1].tracestate for a in requested],
        accounts,
        [books[a][0] for a in accounts],
        [books[a][1] for a in accounts],
    )


async def realized_between(
    session: AsyncSession, account_ids: Sequence[str], first: date, last: date
) -> list[Any]:
    """Realized gains of ``account_ids`` sold from ``first`` to ``last`` (driver records)."""
    return await _fetch(
        session,
        "SELECT * FROM realized_gains WHERE account_id = ANY($1::text[])"
        " AND sold_on >= $2 AND sold_on <= $3",
        list(account_ids),
        first,
        last,
    )


# --- book loads: the staged CSV files (ballast_common.book_loads) --------------------------------


class _Staged:
    """SQL names of a staged load's tables and of its columns' typed values (NULL for an
    optional column the file left out): the file's typed rows once there are, else its
    text cast."""

    def __init__(self, staged: StagedLoad) -> None:
        self._staged = staged

    def table(self, name: str) -> str:
        table = self._staged.typed_table(name) or self._staged.table(name)
        return '"' + table.replace('"', '""') + '"'

    def value(self, name: str, column: str, alias: str) -> str:
        if column not in self._staged.columns[name]:
            return "NULL"
        if self._staged.typed_table(name):
            return f'{alias}."{column}"'
        return value_sql(BY_NAME[name], column, alias)


def _cents_half_even(amount: str) -> str:
    """SQL rounding a non-negative amount to cents half-even, as the engine's ``money`` does
    (Postgres' ``round`` goes half away from zero)."""
    cents = f"({amount}) * 100"
    return (
        f"(CASE WHEN {cents} - trunc({cents}) = 0.5 AND mod(trunc({cents}), 2) = 0"
        f" THEN trunc({cents}) / 100 ELSE round({amount}, 2) END)"
    )


@dataclass(frozen=True)
class LoadRules:
    """What the book-load checks take from the service's rules: the id patterns (Postgres
    regular expressions) with their messages, and the corporate actions that refuse lots
    (symbol, lots acquired before this day are refused, message)."""

    account_pattern: str
    account_message: str
    symbol_pattern: str
    symbol_message: str
    reserved_lot_chars: str
    reserved_lot_message: str
    refusing_actions: Sequence[tuple[str, date, str]] = ()


async def book_load_problems(
    session: AsyncSession, staged: StagedLoad, rules: LoadRules, limit: int
) -> list[LoadProblem]:
    """taxlot-svc's checks of a staged load (each file's rows are sound already): accounts
    and ledgers, cash, positions against their lots, prices, lot dates and names, and the
    corporate actions an opening may not straddle. Each problem names file, line, column.
    Once the files passed (``staged.files_checked``), only what reads more than the files
    (the ledgers, prices and actions held, the as-of date) is checked again."""
    f = _Staged(staged)
    acc, cash, pos, lots, prices = (
        f.table(n) for n in ("accounts.csv", "cash.csv", "positions.csv", "lots.csv", "prices.csv")
    )
    a_id = f.value("accounts.csv", "account_id", "a")
    params: dict[str, Any] = {
        "account_pattern": rules.account_pattern,
        "account_message": rules.account_message,
        "symbol_pattern": rules.symbol_pattern,
        "symbol_message": rules.symbol_message,
        "reserved": rules.reserved_lot_chars,
        "reserved_message": rules.reserved_lot_message,
        "as_of": staged.as_of,
    }
    # (file, query, whether it reads the staged files alone)
    checks: list[tuple[str, str, bool]] = [
        (
            "accounts.csv",
            f"SELECT a.line, 'account_id', :account_message FROM {acc} a"
            f" WHERE {a_id} !~ :account_pattern",
            True,
        ),
        (
            "accounts.csv",
            f"SELECT a.line, 'account_id', 'account ' || {a_id} || ' already has a ledger'"
            f" FROM {acc} a JOIN account_books b ON b.account_id = {a_id}",
            False,
        ),
        (
            "accounts.csv",
            f"SELECT a.line, 'account_id', 'account ' || {a_id} || ' has no row in cash.csv'"
            f" FROM {acc} a WHERE NOT EXISTS (SELECT 1 FROM {cash} c"
            f" WHERE {f.value('cash.csv', 'account_id', 'c')} = {a_id})",
            True,
        ),
    ]
    c_id, c_sleeve = (f.value("cash.csv", c, "c") for c in ("account_id", "sleeve_id"))
    if c_sleeve == "NULL":  # without the column, the generic check of (account, sleeve) is off
        checks.append(
            (
                "cash.csv",
                f"SELECT line, 'account_id', 'the same account_id as line ' || first FROM"
                f" (SELECT c.line, min(c.line) OVER (PARTITION BY {c_id}) AS first"
                f" FROM {cash} c) d WHERE line <> first",
                True,
            )
        )
    for name, table in (("cash.csv", cash), ("positions.csv", pos), ("lots.csv", lots)):
        x_id = f.value(name, "account_id", "x")
        checks.append(
            (
                name,
                f"SELECT x.line, 'account_id', 'account ' || {x_id} || ' is not in accounts.csv'"
                f" FROM {table} x WHERE NOT EXISTS (SELECT 1 FROM {acc} a WHERE {a_id} = {x_id})",
                True,
            )
        )
    p_id, p_sym, p_qty = (
        f.value("positions.csv", c, "p") for c in ("account_id", "symbol", "quantity")
    )
    l_id, l_sym, l_qty, l_lot, l_on, l_sleeve = (
        f.value("lots.csv", c, "l")
        for c in ("account_id", "symbol", "quantity", "lot_id", "acquired_on", "sleeve_id")
    )
    if l_sleeve != "NULL" or c_sleeve != "NULL":
        # Sleeves are all or nothing per account (as in a REST opening).
        s_id, s_sleeve = (f.value("lots.csv", c, "s") for c in ("account_id", "sleeve_id"))
        checks.append(
            (
                "lots.csv",
                f"SELECT l.line, 'sleeve_id', 'required: account ' || {l_id} || ' puts"
                " holdings in sleeves (' || u.why || '), so every lot names its sleeve'"
                f" FROM {lots} l JOIN (SELECT DISTINCT ON (account_id) account_id, why FROM"
                f" (SELECT {s_id} AS account_id, 'lots.csv line ' || s.line || ' is in sleeve '"
                f" || {s_sleeve} AS why, 0 AS k, s.line FROM {lots} s WHERE {s_sleeve} IS NOT NULL"
                f" UNION ALL SELECT {c_id}, 'cash.csv line ' || c.line || ' is cash of sleeve '"
                f" || {c_sleeve}, 1, c.line FROM {cash} c WHERE {c_sleeve} IS NOT NULL) w"
                f" ORDER BY account_id, k, line) u ON u.account_id = {l_id}"
                f" WHERE {l_sleeve} IS NULL",
                True,
            )
        )
    checks += [
        (
            "positions.csv",
            f"SELECT p.line, 'symbol', :symbol_message FROM {pos} p"
            f" WHERE {p_sym} !~ :symbol_pattern",
            True,
        ),
        (
            "positions.csv",
            f"SELECT p.line, 'symbol', {p_sym} || ' has no price in prices.csv (and taxlot-svc"
            f" knows none)' FROM {pos} p WHERE NOT EXISTS (SELECT 1 FROM {prices} r"
            f" WHERE {f.value('prices.csv', 'symbol', 'r')} = {p_sym})"
            f" AND NOT EXISTS (SELECT 1 FROM prices k WHERE k.symbol = {p_sym})",
            False,
        ),
        (
            "positions.csv",
            f"SELECT p.line, 'quantity', 'quantity ' || trim_scale({p_qty}) || ' of ' || {p_sym}"
            f" || ' in account ' || {p_id} || ' differs from the sum of its lots in lots.csv, '"
            f" || coalesce(trim_scale(s.total), 0) FROM {pos} p LEFT JOIN"
            f" (SELECT {l_id} AS account_id, {l_sym} AS symbol, sum({l_qty}) AS total"
            f" FROM {lots} l GROUP BY 1, 2) s ON s.account_id = {p_id} AND s.symbol = {p_sym}"
            f" WHERE s.total IS DISTINCT FROM {p_qty}",
            True,
        ),
        (
            "lots.csv",
            f"SELECT l.line, 'symbol', 'account ' || {l_id} || ' has no position in ' || {l_sym}"
            f" || ' in positions.csv' FROM {lots} l WHERE NOT EXISTS (SELECT 1 FROM {pos} p"
            f" WHERE {p_id} = {l_id} AND {p_sym} = {l_sym})",
            True,
        ),
        (
            "lots.csv",
            f"SELECT l.line, 'acquired_on', {l_on} || ' is later than the as-of date '"
            f" || CAST(:as_of AS date) FROM {lots} l WHERE {l_on} > CAST(:as_of AS date)",
            False,
        ),
        (
            "lots.csv",
            f"SELECT l.line, 'lot_id', :reserved_message FROM {lots} l"
            f" WHERE {l_lot} ~ ('[' || :reserved || ']')",
            True,
        ),
        (
            "prices.csv",
            f"SELECT r.line, 'symbol', :symbol_message FROM {prices} r"
            f" WHERE {f.value('prices.csv', 'symbol', 'r')} !~ :symbol_pattern",
            True,
        ),
    ]
    problems: list[LoadProblem] = []
    connection = await session.connection()
    for name, sql, files_alone in checks:
        left = limit - len(problems)
        if left <= 0:
            return problems
        if files_alone and staged.files_checked:
            continue
        used = {k: v for k, v in params.items() if f":{k}" in sql}
        rows = await connection.execute(text(f"{sql} ORDER BY 1 LIMIT {left}"), used)
        problems += [LoadProblem(name, line, column, message) for line, column, message in rows]
    return problems + await lots_refused_by_actions(
        session, staged, rules.refusing_actions, limit - len(problems)
    )


async def lots_refused_by_actions(
    session: AsyncSession,
    staged: StagedLoad,
    refusing: Sequence[tuple[str, date, str]],
    limit: int,
) -> list[LoadProblem]:
    """Lots of lots.csv acquired before a corporate action that refuses them (symbol, day,
    message: see :class:`LoadRules`)."""
    if not refusing or limit <= 0:
        return []
    f = _Staged(staged)
    l_sym, l_on = (f.value("lots.csv", c, "l") for c in ("symbol", "acquired_on"))
    rows = await _run(
        session,
        text(
            f"SELECT l.line, r.message FROM {f.table('lots.csv')} l"
            " JOIN unnest(CAST(:symbols AS text[]), CAST(:days AS date[]),"
            " CAST(:messages AS text[])) AS r(symbol, day, message)"
            f" ON r.symbol = {l_sym} AND {l_on} < r.day ORDER BY 1 LIMIT :n"
        ).bindparams(
            symbols=[s for s, _, _ in refusing],
            days=[d for _, d, _ in refusing],
            messages=[m for _, _, m in refusing],
            n=limit,
        ),
    )
    return [LoadProblem("lots.csv", line, "acquired_on", message) for line, message in rows]


async def load_account_facts(session: AsyncSession, staged: StagedLoad) -> int:
    """Household and type of the loaded accounts (what account-changed will say; an account
    described by account-changed already keeps that)."""
    f = _Staged(staged)
    a_id = f.value("accounts.csv", "account_id", "a")
    kind = f.value("accounts.csv", "account_type", "a")
    result = await _run(
        session,
        text(
            "INSERT INTO accounts (account_id, household_id, account_type)"
            f" SELECT {a_id}, {f.value('accounts.csv', 'household_id', 'a')},"
            f" coalesce({kind}, 'taxable') FROM {f.table('accounts.csv')} a ORDER BY a.line"
            " ON CONFLICT (account_id) DO NOTHING"
        ),
    )
    return int(result.rowcount)


async def load_prices(session: AsyncSession, staged: StagedLoad) -> int:
    """The closes of prices.csv become each symbol's last known price."""
    f = _Staged(staged)
    result = await _run(
        session,
        text(
            "INSERT INTO prices (symbol, price)"
            f" SELECT {f.value('prices.csv', 'symbol', 'r')}, {f.value('prices.csv', 'price', 'r')}"
            f" FROM {f.table('prices.csv')} r ORDER BY r.line"
            " ON CONFLICT (symbol) DO UPDATE SET price = excluded.price, updated_at = now()"
        ),
    )
    return int(result.rowcount)


async def load_books(session: AsyncSession, staged: StagedLoad) -> int:
    """An account book (tenant, cash: the sum of its cash rows, as-of) per loaded account;
    returns how many were new (an account opened meanwhile is skipped and counted out)."""
    f = _Staged(staged)
    a_id = f.value("accounts.csv", "account_id", "a")
    c_id, c_amount = (f.value("cash.csv", x, "c") for x in ("account_id", "amount"))
    result = await _run(
        session,
        text(
            "INSERT INTO account_books (account_id, tenant, cash, as_of)"
            f" SELECT {a_id}, coalesce({f.value('accounts.csv', 'tenant', 'a')}, :tenant),"
            f" c.amount, :as_of FROM {f.table('accounts.csv')} a"
            f" JOIN (SELECT {c_id} AS account_id, sum({c_amount}) AS amount"
            f" FROM {f.table('cash.csv')} c GROUP BY 1) c ON c.account_id = {a_id}"
            " ORDER BY a.line ON CONFLICT (account_id) DO NOTHING"
        ).bindparams(tenant=staged.tenant, as_of=staged.as_of),
    )
    return int(result.rowcount)


async def load_sleeve_cash(session: AsyncSession, staged: StagedLoad) -> int:
    """The cash of the named sleeves of cash.csv (rows without a sleeve are the accounts'
    own cash: the book's cash less its sleeves')."""
    f = _Staged(staged)
    c_id, c_amount, c_sleeve = (
        f.value("cash.csv", x, "c") for x in ("account_id", "amount", "sleeve_id")
    )
    if c_sleeve == "NULL":
        return 0
    result = await _run(
        session,
        text(
            "INSERT INTO sleeve_cash (account_id, sleeve, amount)"
            f" SELECT {c_id}, {c_sleeve}, {c_amount} FROM {f.table('cash.csv')} c"
            f" WHERE {c_sleeve} IS NOT NULL ORDER BY 1, 2"
        ),
    )
    return int(result.rowcount)


def _typed_lots(staged: StagedLoad) -> str:
    """The load's lots with their households (a temporary table of the apply)."""
    return '"' + staged.table("lots.csv").replace('"', '""') + '_households"'


async def load_typed_lots(session: AsyncSession, staged: StagedLoad) -> int:
    """The lots of lots.csv typed once, with their account's household (the accounts' facts
    are loaded already): a table of this transaction that the writes below read, instead
    of casting the text of every staged row again in each of them."""
    f = _Staged(staged)
    v = lambda c: f.value("lots.csv", c, "l")  # noqa: E731
    result = await _run(
        session,
        text(
            f"CREATE TEMPORARY TABLE {_typed_lots(staged)} ON COMMIT DROP AS"
            f" SELECT l.line, {v('account_id')} AS account_id, {v('symbol')} AS symbol,"
            f" {v('lot_id')} AS lot_id, {v('quantity')} AS quantity,"
            f" {v('acquired_on')} AS acquired_on, {v('cost_basis')} AS cost_basis,"
            f" {_cents_half_even(v('cost_basis'))} AS cost_cents,"
            f" coalesce({v('sleeve_id')}, '') AS sleeve, i.household_id"
            f" FROM {f.table('lots.csv')} l JOIN accounts i ON i.account_id = {v('account_id')}"
        ),
    )
    return int(result.rowcount)


async def load_households_to_replay(
    session: AsyncSession, staged: StagedLoad, actions: Sequence[tuple[str, date]]
) -> list[str]:
    """Households of the loaded accounts that need the engine's replay: those with history
    (inputs applied before), and those holding, on an action's date, a security a recorded
    corporate action concerns (the replay applies it: a lot acquired before that date)."""
    f = _Staged(staged)
    a_id = f.value("accounts.csv", "account_id", "a")
    sql = (
        f"SELECT i.household_id FROM {f.table('accounts.csv')} a"
        f" JOIN accounts i ON i.account_id = {a_id}"
        " JOIN households h ON h.household_id = i.household_id WHERE h.last_day IS NOT NULL"
        f" UNION SELECT l.household_id FROM {_typed_lots(staged)} l"
        " JOIN unnest(CAST(:symbols AS text[]), CAST(:days AS date[])) AS c(symbol, day)"
        " ON c.symbol = l.symbol AND l.acquired_on < c.day ORDER BY 1"
    )
    rows = await _run(
        session,
        text(sql).bindparams(symbols=[s for s, _ in actions], days=[d for _, d in actions]),
    )
    return [r[0] for r in rows]


async def load_tax_inputs(session: AsyncSession, staged: StagedLoad, kind: str) -> int:
    """Every lot of lots.csv as an opening input (a buy at price 0 with its basis as fees,
    as the REST opening stores it), in file order (the arrival order)."""
    result = await _run(
        session,
        text(
            "INSERT INTO tax_inputs (account_id, kind, ref, trade_on, symbol, side, quantity,"
            " price, fees, lot_name, lot_ids, method, sleeve, to_sleeve)"
            " SELECT account_id, :kind, lot_id, acquired_on, symbol, 'buy', quantity, 0,"
            " cost_basis, lot_id, '', NULL, sleeve, NULL"
            f" FROM {_typed_lots(staged)} ORDER BY line"
        ).bindparams(kind=kind),
    )
    return int(result.rowcount)


async def load_ledger_entries(session: AsyncSession, staged: StagedLoad, cause: str) -> int:
    """The opening's journal: each account's cash (a row per sleeve), then each lot opened
    (in file order)."""
    f = _Staged(staged)
    a_id = f.value("accounts.csv", "account_id", "a")
    cash = await _run(
        session,
        text(
            "INSERT INTO ledger_entries (account_id, cause, kind, amount, sleeve)"
            f" SELECT {a_id}, :cause, 'cash', {f.value('cash.csv', 'amount', 'c')},"
            f" coalesce({f.value('cash.csv', 'sleeve_id', 'c')}, '')"
            f" FROM {f.table('accounts.csv')} a JOIN {f.table('cash.csv')} c"
            f" ON {f.value('cash.csv', 'account_id', 'c')} = {a_id} ORDER BY a.line, c.line"
        ).bindparams(cause=cause),
    )
    lots = await _run(
        session,
        text(
            "INSERT INTO ledger_entries (account_id, cause, kind, symbol, lot_id, quantity,"
            " amount) SELECT account_id, :cause, 'lot-open', symbol, lot_id, quantity,"
            f" cost_cents FROM {_typed_lots(staged)} ORDER BY line"
        ).bindparams(cause=cause),
    )
    return int(cash.rowcount) + int(lots.rowcount)


async def use_memory_for_sorts(session: AsyncSession, megabytes: int) -> None:
    """Let this transaction's sorts and hashes (a load's checks and writes over millions of
    staged rows) use this much memory each instead of spilling to disk."""
    await _run(session, text(f"SET LOCAL work_mem = '{int(megabytes)}MB'"))


async def load_lots(
    session: AsyncSession, staged: StagedLoad, cause: str, purchase_prefix: str, skip: Sequence[str]
) -> int:
    """The opening lots of households without history, as the engine's replay of their
    opening buys leaves them (no wash sale can arise among buys): basis in cents half-even,
    holding period from acquisition, the household's sequence in date then arrival order,
    purchase id ``<prefix><account>:<lot>``, the lot's sleeve. ``skip``: households replayed
    instead."""
    result = await _run(
        session,
        text(
            "INSERT INTO lots (account_id, lot_id, seq, symbol, quantity, cost_basis,"
            " acquired_on, holding_start, cause, fill_id, purchase_id, sleeve)"
            " SELECT account_id, lot_id, row_number() OVER (PARTITION BY household_id"
            " ORDER BY acquired_on, line), symbol, quantity, cost_cents, acquired_on,"
            " acquired_on, :cause, NULL, :prefix || account_id || ':' || lot_id, sleeve"
            f" FROM {_typed_lots(staged)} WHERE household_id <> ALL(CAST(:skip AS text[]))"
        ).bindparams(cause=cause, prefix=purchase_prefix, skip=list(skip)),
    )
    return int(result.rowcount)


async def load_household_states(
    session: AsyncSession, staged: StagedLoad, skip: Sequence[str]
) -> int:
    """Last day and sequence counter of the loaded households written directly (see
    :func:`load_lots`): as a replay of their opening buys leaves them."""
    f = _Staged(staged)
    a_id = f.value("accounts.csv", "account_id", "a")
    result = await _run(
        session,
        text(
            "INSERT INTO households (household_id, last_day, seq)"
            " SELECT i.household_id, max(l.last_day), coalesce(sum(l.lots), 0)"
            f" FROM {f.table('accounts.csv')} a JOIN accounts i ON i.account_id = {a_id}"
            " LEFT JOIN (SELECT account_id, max(acquired_on) AS last_day, count(*) AS lots"
            f" FROM {_typed_lots(staged)} GROUP BY account_id) l ON l.account_id = i.account_id"
            " WHERE i.household_id <> ALL(CAST(:skip AS text[])) GROUP BY i.household_id"
            " ORDER BY i.household_id ON CONFLICT (household_id) DO UPDATE SET"
            " last_day = excluded.last_day, seq = greatest(households.seq, excluded.seq),"
            " updated_at = now()"
        ).bindparams(skip=list(skip)),
    )
    return int(result.rowcount)


# The tables a book load fills in bulk: their statistics are refreshed before it commits.
LOADED_TABLES = (
    "account_books",
    "accounts",
    "households",
    "lots",
    "tax_inputs",
    "ledger_entries",
    "sleeve_cash",
    "prices",
)


async def analyze_loaded_tables(session: AsyncSession) -> None:
    """Fresh planner statistics of the tables a load filled (the load's own rows counted)."""
    # Without them the planner takes a freshly loaded book for empty tables: the loaded
    # rows' snapshots, and the fills that follow, would scan the book per statement.
    # The service's role does not own them: the schema's analyze_tables does it (tenancy.py).
    await _execute(session, f"SELECT analyze_tables({', '.join(repr(t) for t in LOADED_TABLES)})")


async def loaded_among(
    session: AsyncSession, staged: StagedLoad, account_ids: Sequence[str]
) -> set[str]:
    """Which of ``account_ids`` the load opens."""
    f = _Staged(staged)
    a_id = f.value("accounts.csv", "account_id", "a")
    rows = await _run(
        session,
        text(
            f"SELECT {a_id} FROM {f.table('accounts.csv')} a"
            f" WHERE {a_id} = ANY(CAST(:ids AS text[]))"
        ).bindparams(ids=list(account_ids)),
    )
    return {r[0] for r in rows}


async def loaded_books_page(
    session: AsyncSession, staged: StagedLoad, after_line: int, limit: int
) -> list[Any]:
    """The next ``limit`` loaded accounts after file line ``after_line``: line, account_id,
    tenant, cash, as_of, household_id."""
    f = _Staged(staged)
    a_id = f.value("accounts.csv", "account_id", "a")
    rows = await _run(
        session,
        text(
            "SELECT a.line, b.account_id, b.tenant, b.cash, b.as_of, i.household_id"
            f" FROM {f.table('accounts.csv')} a JOIN account_books b ON b.account_id = {a_id}"
            f" JOIN accounts i ON i.account_id = {a_id} WHERE a.line > :after"
            " ORDER BY a.line LIMIT :n"
        ).bindparams(after=after_line, n=limit),
    )
    return list(rows)


async def position_documents(session: AsyncSession, account_ids: Sequence[str]) -> dict[str, str]:
    """Each account's positions with their lots as the JSON of ``holdings-reconciled`` v2
    (``PositionV2``), built by the database: by symbol (code point order), lots in
    acquisition order, decimals as their exact text. Accounts without lots are absent."""
    if not account_ids:
        return {}
    # Written as text, not json_build_object: PostgreSQL's JSON puts spaces around every ':'
    # and ',' (14% more bytes on the bus for a lot-heavy book); this is the model's own text.
    rows = await _fetch(
        session,
        "SELECT account_id, '[' || string_agg(position, ',' ORDER BY symbol COLLATE \"C\")"
        " || ']' FROM (SELECT account_id, symbol, '{\"symbol\":' || to_json(symbol)::text"
        ' || \',"quantity":"\' || sum(quantity)::text || \'","cost_basis":"\''
        ' || sum(cost_basis)::text || \'","lots":[\' || string_agg(\'{"lot_id":\''
        ' || to_json(lot_id)::text || \',"quantity":"\' || quantity::text'
        ' || \'","acquired":\' || to_json(holding_start)::text || \',"cost_basis":"\''
        ' || cost_basis::text || \'","wash_adjustment":"\' || wash_adjustment::text'
        " || '\",\"sleeve_id\":' || coalesce(to_json(NULLIF(sleeve, ''))::text, 'null')"
        " || '}', ',' ORDER BY acquired_on, seq) || ']}' AS position"
        " FROM lots WHERE account_id = ANY($1::text[])"
        " GROUP BY account_id, symbol) p GROUP BY account_id",
        list(account_ids),
    )
    return {a: doc for a, doc in rows}


# --- the audit trail ----------------------------------------------------------------------------


async def append_audit(session: AsyncSession, tenant: str, entries: Sequence[AuditEntry]) -> None:
    """Add records to the tenant's hash chain, in the session's transaction."""
    await audit.append(session, tenant, entries)


# --- reconciliation of a custodian's day (taxlot_svc.custodian_day) ------------------------------


def _typed(staged: StagedLoad, name: str) -> str:
    """The quoted typed table of a staged custodian file (typed before checks and apply)."""
    table = staged.typed_table(name)
    if table is None:
        raise RuntimeError(f"{name} of load {staged.load_id} was not typed")
    return '"' + table.replace('"', '""') + '"'


def _decimals_json(prefix: str, present: str) -> str:
    """SQL of one side of a lot as JSON, decimals as their text (NULL when it has none)."""
    return (
        f"CASE WHEN {present} THEN jsonb_build_object("
        f"'quantity', trim_scale({prefix}_quantity)::text,"
        f" 'cost_basis', trim_scale({prefix}_basis)::text,"
        f" 'acquired_on', {prefix}_acquired::text) END"
    )


async def custodian_day_problems(
    session: AsyncSession, staged: StagedLoad, limit: int
) -> list[LoadProblem]:
    """Rows of another day (`as_of`), and lots or positions of an account without a cash row."""
    checks = []
    for name in ("cash.csv", "positions.csv", "lots.csv"):
        if "as_of" in staged.columns[name]:
            checks.append(
                f"SELECT '{name}', line, 'as_of', 'as_of ' || as_of::text || ' is not the "
                f"business date {staged.as_of.isoformat()}' FROM {_typed(staged, name)}"
                " WHERE as_of IS NOT NULL AND as_of <> :day"
            )
    for name in ("positions.csv", "lots.csv"):
        checks.append(
            f"SELECT '{name}', f.line, 'account_id', 'account ' || f.account_id || ' has no "
            f"row in cash.csv' FROM {_typed(staged, name)} f WHERE NOT EXISTS (SELECT 1 FROM"
            f" {_typed(staged, 'cash.csv')} c WHERE c.account_id = f.account_id)"
        )
    sql = " UNION ALL ".join(f"({c})" for c in checks) + f" ORDER BY 1, 2 LIMIT {int(limit)}"
    statement = text(sql).bindparams(day=staged.as_of) if ":day" in sql else text(sql)
    rows = await _run(session, statement)
    return [LoadProblem(f, int(line), c, m) for f, line, c, m in rows]


async def reconciled_load(
    session: AsyncSession, tenant: str, custodian: str, business_date: date
) -> str | None:
    """The load that reconciled this custodian's day already, if one did."""
    row = await _run(
        session,
        text(
            "SELECT load_id FROM reconciliations WHERE tenant = :tenant"
            " AND custodian = :custodian AND business_date = :day"
        ).bindparams(tenant=tenant, custodian=custodian, day=business_date),
    )
    found = row.first()
    return None if found is None else str(found[0])


async def reconcile_lots(
    session: AsyncSession,
    staged: StagedLoad,
    custodian: str,
    policies: Mapping[str, str],
    tolerance: Decimal,
) -> tuple[int, int]:
    """Compare the custodian's lots with the ledger's open lots (pieces `<lot>/<n>` summed
    back to their lot) of the accounts in cash.csv, in one FULL OUTER JOIN; store a break
    per difference. Returns (lots compared, lots matched)."""
    kinds = list(policies)
    sql = f"""
WITH accounts AS (SELECT account_id FROM {_typed(staged, "cash.csv")}),
ours AS (
    SELECT l.account_id, split_part(l.lot_id, '/', 1) AS lot_id, l.symbol,
           sum(l.quantity) AS quantity, sum(l.cost_basis) AS basis, min(l.acquired_on) AS acquired
    FROM lots l
    JOIN account_books b ON b.account_id = l.account_id AND b.tenant = :tenant
    JOIN accounts a ON a.account_id = l.account_id
    GROUP BY l.account_id, split_part(l.lot_id, '/', 1), l.symbol
),
theirs AS (
    SELECT account_id, lot_id, symbol, quantity, cost_basis AS basis, acquired_on AS acquired
    FROM {_typed(staged, "lots.csv")}
),
compared AS MATERIALIZED (
    SELECT coalesce(o.account_id, t.account_id) AS account_id,
           coalesce(o.lot_id, t.lot_id) AS lot_id, coalesce(o.symbol, t.symbol) AS symbol,
           o.quantity AS o_quantity, o.basis AS o_basis, o.acquired AS o_acquired,
           t.quantity AS t_quantity, t.basis AS t_basis, t.acquired AS t_acquired
    FROM ours o FULL OUTER JOIN theirs t
      ON t.account_id = o.account_id AND t.lot_id = o.lot_id AND t.symbol = o.symbol
),
found AS (
    SELECT c.*, k.kind FROM compared c
    CROSS JOIN LATERAL (VALUES
        ('missing', c.t_quantity IS NULL),
        ('extra', c.o_quantity IS NULL),
        ('quantity', c.o_quantity <> c.t_quantity),
        ('basis', abs(c.o_basis - c.t_basis) > :tolerance),
        ('date', c.o_acquired <> c.t_acquired)
    ) AS k(kind, broken)
    WHERE k.broken
),
stored AS (
    INSERT INTO reconciliation_breaks (tenant, custodian, business_date, account_id, kind,
        symbol, lot_id, ours, theirs, policy, status, load_id)
    SELECT :tenant, :custodian, :day, f.account_id, f.kind, f.symbol, f.lot_id,
           {_decimals_json("f.o", "f.o_quantity IS NOT NULL")},
           {_decimals_json("f.t", "f.t_quantity IS NOT NULL")},
           p.policy, 'open', :load_id
    FROM found f JOIN unnest(CAST(:kinds AS text[]), CAST(:policies AS text[])) AS p(kind, policy)
      ON p.kind = f.kind
    RETURNING 1
)
SELECT (SELECT count(*) FROM compared),
       (SELECT count(*) FROM compared WHERE o_quantity = t_quantity
            AND abs(o_basis - t_basis) <= :tolerance AND o_acquired = t_acquired),
       (SELECT count(*) FROM stored)
"""
    row = (
        await _run(
            session,
            text(sql).bindparams(
                tenant=staged.tenant,
                custodian=custodian,
                day=staged.as_of,
                load_id=staged.load_id,
                kinds=kinds,
                policies=[policies[k] for k in kinds],
                tolerance=tolerance,
            ),
        )
    ).one()
    return int(row[0]), int(row[1])


async def reconcile_cash(
    session: AsyncSession, staged: StagedLoad, custodian: str, policy: str, tolerance: Decimal
) -> int:
    """A `cash` break per account of cash.csv whose cash differs from its book's beyond the
    tolerance (or that has no book). Returns the breaks stored."""
    sql = f"""
INSERT INTO reconciliation_breaks (tenant, custodian, business_date, account_id, kind, symbol,
    lot_id, ours, theirs, policy, status, load_id)
SELECT :tenant, :custodian, :day, c.account_id, 'cash', NULL, NULL,
       CASE WHEN b.account_id IS NOT NULL THEN jsonb_build_object('cash', b.cash::text) END,
       jsonb_build_object('cash', c.amount::text), :policy, 'open', :load_id
FROM {_typed(staged, "cash.csv")} c
LEFT JOIN account_books b ON b.account_id = c.account_id AND b.tenant = :tenant
WHERE b.account_id IS NULL OR abs(b.cash - c.amount) > :tolerance
"""
    result = await _run(
        session,
        text(sql).bindparams(
            tenant=staged.tenant,
            custodian=custodian,
            day=staged.as_of,
            load_id=staged.load_id,
            policy=policy,
            tolerance=tolerance,
        ),
    )
    return int(result.rowcount)


async def supersede_breaks(session: AsyncSession, staged: StagedLoad, custodian: str) -> set[str]:
    """Today's comparison replaces the open breaks of earlier days of the accounts in this
    day's cash.csv (status `superseded`); returns those of them that a break suspended."""
    sql = f"""
UPDATE reconciliation_breaks r SET status = 'superseded'
 WHERE r.tenant = :tenant AND r.custodian = :custodian AND r.status = 'open'
   AND r.load_id <> :load_id
   AND r.account_id IN (SELECT account_id FROM {_typed(staged, "cash.csv")})
RETURNING r.account_id, r.policy
"""
    rows = await _run(
        session,
        text(sql).bindparams(tenant=staged.tenant, custodian=custodian, load_id=staged.load_id),
    )
    return {account_id for account_id, policy in rows if policy == "suspend"}


async def suspending_breaks(session: AsyncSession, tenant: str, load_id: str) -> list[Any]:
    """Per account of this load with a break whose policy suspends it, its first such break
    (account_id, kind, symbol, lot_id, ours, theirs)."""
    sql = """
SELECT DISTINCT ON (account_id) account_id, kind, symbol, lot_id, ours, theirs
  FROM reconciliation_breaks
 WHERE tenant = :tenant AND load_id = :load_id AND policy = 'suspend' AND status = 'open'
 ORDER BY account_id, id
"""
    return list(await _run(session, text(sql).bindparams(tenant=tenant, load_id=load_id)))


async def record_reconciliation(
    session: AsyncSession, staged: StagedLoad, custodian: str, lots_compared: int, matched: int
) -> dict[str, Any]:
    """The day's summary, counted from the breaks this load stored, kept and returned."""
    sql = f"""
INSERT INTO reconciliations (tenant, custodian, business_date, load_id, accounts, lots_compared,
    matched, breaks, accounts_with_breaks)
SELECT :tenant, :custodian, :day, :load_id, (SELECT count(*) FROM {_typed(staged, "cash.csv")}),
       :compared, :matched,
       coalesce((SELECT jsonb_object_agg(kind, n) FROM (SELECT kind, count(*) AS n
                 FROM reconciliation_breaks WHERE tenant = :tenant AND load_id = :load_id
                 GROUP BY kind) k), '{{}}'::jsonb),
       (SELECT count(DISTINCT account_id) FROM reconciliation_breaks
         WHERE tenant = :tenant AND load_id = :load_id)
RETURNING accounts, lots_compared, matched, breaks, accounts_with_breaks
"""
    row = (
        await _run(
            session,
            text(sql).bindparams(
                tenant=staged.tenant,
                custodian=custodian,
                day=staged.as_of,
                load_id=staged.load_id,
                compared=lots_compared,
                matched=matched,
            ),
        )
    ).one()
    return dict(row._mapping)


async def reconciliation(
    session: AsyncSession, tenant: str, custodian: str, business_date: date
) -> dict[str, Any] | None:
    """A custodian's day as reconciled for `tenant`, if it was."""
    row = (
        await _run(
            session,
            text(
                "SELECT tenant, custodian, business_date, load_id, accounts, lots_compared,"
                " matched, breaks, accounts_with_breaks, reconciled_at FROM reconciliations"
                " WHERE tenant = :tenant AND custodian = :custodian AND business_date = :day"
            ).bindparams(tenant=tenant, custodian=custodian, day=business_date),
        )
    ).first()
    return None if row is None else dict(row._mapping)


@dataclass(frozen=True)
class BreakFilter:
    """Which breaks a page holds (None: any)."""

    status: str | None = None
    account_id: str | None = None
    custodian: str | None = None
    business_date: date | None = None


async def breaks_page(
    session: AsyncSession, tenant: str, where: BreakFilter, after: int, limit: int
) -> list[dict[str, Any]]:
    """A page of the tenant's breaks in the order they were found (keyset: ids after `after`)."""
    rows = await _run(
        session,
        text(
            "SELECT id, custodian, business_date, account_id, kind, symbol, lot_id, ours,"
            " theirs, policy, status, load_id, found_at, resolution, resolved_by, resolved_at,"
            " resolution_note FROM reconciliation_breaks"
            " WHERE tenant = :tenant AND id > :after"
            " AND (CAST(:status AS text) IS NULL OR status = :status)"
            " AND (CAST(:account AS text) IS NULL OR account_id = :account)"
            " AND (CAST(:custodian AS text) IS NULL OR custodian = :custodian)"
            " AND (CAST(:day AS date) IS NULL OR business_date = :day)"
            " ORDER BY id LIMIT :limit"
        ).bindparams(
            tenant=tenant,
            after=after,
            status=where.status,
            account=where.account_id,
            custodian=where.custodian,
            day=where.business_date,
            limit=limit,
        ),
    )
    return [dict(r._mapping) for r in rows]


# --- transfer monitoring of the custodians' files (taxlot_svc.custodian_monitor) ---------------

HOLDING_EXCEPTIONS = ("missing", "empty", "truncated", "invalid")
_EXCEPTION_COLUMNS = (
    "id, custodian, business_date, kind, status, detail, problems, deadline, opened_at,"
    " resolved_at, resolved_by, resolution"
)


async def lock_transfer_exceptions(session: AsyncSession) -> None:
    """Serialize the writers of transfer exceptions (monitor, watcher's reports, arrivals,
    people) until the transaction ends, so a custodian is held and released once."""
    lock = "SELECT pg_advisory_xact_lock(hashtext('taxlot.transfer-exceptions'))"
    await _run(session, text(lock))


async def record_custodian_accounts(
    session: AsyncSession, staged: StagedLoad, custodian: str
) -> None:
    """The custodian's accounts become those of this day's cash.csv, unless a later day of
    the custodian was reconciled already (then only accounts it does not list are added)."""
    await _run(
        session,
        text(
            "INSERT INTO custodian_accounts (tenant, custodian, account_id, business_date)"
            f" SELECT :tenant, :custodian, account_id, :day FROM {_typed(staged, 'cash.csv')}"
            " ON CONFLICT (tenant, custodian, account_id) DO UPDATE"
            " SET business_date = excluded.business_date"
            " WHERE custodian_accounts.business_date < excluded.business_date"
        ).bindparams(tenant=staged.tenant, custodian=custodian, day=staged.as_of),
    )
    await _run(
        session,
        text(
            "DELETE FROM custodian_accounts WHERE tenant = :tenant AND custodian = :custodian"
            " AND business_date < :day AND NOT EXISTS (SELECT 1 FROM custodian_accounts l"
            " WHERE l.tenant = :tenant AND l.custodian = :custodian AND l.business_date > :day)"
        ).bindparams(tenant=staged.tenant, custodian=custodian, day=staged.as_of),
    )


async def monitored_custodians(session: AsyncSession) -> list[tuple[str, str, date]]:
    """Every tenant's custodian with a reconciled day, and its first such day."""
    rows = await _run(
        session,
        text(
            "SELECT tenant, custodian, min(business_date) FROM reconciliations"
            " GROUP BY tenant, custodian ORDER BY tenant, custodian"
        ),
    )
    return [(t, c, d) for t, c, d in rows]


async def held_custodians(session: AsyncSession, tenant: str | None = None) -> set[tuple[str, str]]:
    """(tenant, custodian) of every custodian with an open exception that holds its accounts."""
    rows = await _run(
        session,
        text(
            "SELECT DISTINCT tenant, custodian FROM transfer_exceptions WHERE status = 'open'"
            " AND kind = ANY(:kinds) AND (CAST(:tenant AS text) IS NULL OR tenant = :tenant)"
        ).bindparams(kinds=list(HOLDING_EXCEPTIONS), tenant=tenant),
    )
    return {(t, c) for t, c in rows}


async def open_missing_exceptions(
    session: AsyncSession, due: Sequence[tuple[str, str, date, datetime]]
) -> list[tuple[str, str, date, datetime]]:
    """A `missing` exception for each due (tenant, custodian, day, deadline) that was not
    reconciled and never had one (one a person resolved is not opened again). Returns those
    opened."""
    if not due:
        return []
    tenants, custodians, days, deadlines = (list(column) for column in zip(*due, strict=True))
    rows = await _run(
        session,
        text(
            "INSERT INTO transfer_exceptions (tenant, custodian, business_date, kind, status,"
            " detail, problems, deadline)"
            " SELECT d.tenant, d.custodian, d.day, 'missing', 'open',"
            " 'no file set by its deadline', '[]'::jsonb, d.deadline"
            " FROM unnest(CAST(:tenants AS text[]), CAST(:custodians AS text[]),"
            " CAST(:days AS date[]), CAST(:deadlines AS timestamptz[]))"
            " AS d(tenant, custodian, day, deadline)"
            " WHERE NOT EXISTS (SELECT 1 FROM reconciliations r WHERE r.tenant = d.tenant"
            " AND r.custodian = d.custodian AND r.business_date = d.day)"
            " AND NOT EXISTS (SELECT 1 FROM transfer_exceptions e WHERE e.tenant = d.tenant"
            " AND e.custodian = d.custodian AND e.business_date = d.day AND e.kind = 'missing')"
            " ON CONFLICT DO NOTHING"
            " RETURNING tenant, custodian, business_date, deadline"
        ).bindparams(tenants=tenants, custodians=custodians, days=days, deadlines=deadlines),
    )
    return sorted((t, c, d, dl) for t, c, d, dl in rows)


async def upsert_open_exception(
    session: AsyncSession,
    tenant: str,
    custodian: str,
    business_date: date,
    kind: str,
    detail: str,
    problems: Sequence[str],
    deadline: datetime | None,
) -> dict[str, Any]:
    """Open an exception of this kind for the custodian's day, or refresh the open one."""
    row = await _run(
        session,
        text(
            "INSERT INTO transfer_exceptions (tenant, custodian, business_date, kind, status,"
            " detail, problems, deadline)"
            " VALUES (:tenant, :custodian, :day, :kind, 'open', :detail,"
            " CAST(:problems AS jsonb), :deadline)"
            " ON CONFLICT (tenant, custodian, business_date, kind) WHERE status = 'open'"
            " DO UPDATE SET detail = excluded.detail, problems = excluded.problems"
            f" RETURNING {_EXCEPTION_COLUMNS}"
        ).bindparams(
            tenant=tenant,
            custodian=custodian,
            day=business_date,
            kind=kind,
            detail=detail,
            problems=json.dumps(list(problems)),
            deadline=deadline,
        ),
    )
    return dict(row.one()._mapping)


async def record_late_arrival(
    session: AsyncSession,
    tenant: str,
    custodian: str,
    business_date: date,
    deadline: datetime,
    detail: str,
) -> None:
    """A `late` exception, resolved by the arrival it records."""
    await _run(
        session,
        text(
            "INSERT INTO transfer_exceptions (tenant, custodian, business_date, kind, status,"
            " detail, problems, deadline, resolved_at, resolved_by, resolution)"
            " VALUES (:tenant, :custodian, :day, 'late', 'resolved', :detail, '[]'::jsonb,"
            " :deadline, now(), 'arrival', 'the file set arrived after its deadline')"
        ).bindparams(
            tenant=tenant, custodian=custodian, day=business_date, deadline=deadline, detail=detail
        ),
    )


async def resolve_day_exceptions(
    session: AsyncSession, tenant: str, custodian: str, business_date: date, resolution: str
) -> int:
    """Resolve the open exceptions of a custodian's day (its set arrived). Returns how many."""
    result = await _run(
        session,
        text(
            "UPDATE transfer_exceptions SET status = 'resolved', resolved_at = now(),"
            " resolved_by = 'arrival', resolution = :resolution"
            " WHERE tenant = :tenant AND custodian = :custodian AND business_date = :day"
            " AND status = 'open'"
        ).bindparams(tenant=tenant, custodian=custodian, day=business_date, resolution=resolution),
    )
    return int(result.rowcount)


async def resolve_exception(
    session: AsyncSession, tenant: str, exception_id: int, by: str, resolution: str
) -> dict[str, Any] | None:
    """Resolve one open exception of `tenant` (None: no open exception has this id)."""
    row = await _run(
        session,
        text(
            "UPDATE transfer_exceptions SET status = 'resolved', resolved_at = now(),"
            " resolved_by = :by, resolution = :resolution"
            " WHERE tenant = :tenant AND id = :id AND status = 'open'"
            f" RETURNING tenant, {_EXCEPTION_COLUMNS}"
        ).bindparams(tenant=tenant, id=exception_id, by=by, resolution=resolution),
    )
    found = row.first()
    return None if found is None else dict(found._mapping)


async def transfer_exception(
    session: AsyncSession, tenant: str, exception_id: int
) -> dict[str, Any] | None:
    """One exception of `tenant`, if it has it."""
    row = await _run(
        session,
        text(
            f"SELECT {_EXCEPTION_COLUMNS} FROM transfer_exceptions"
            " WHERE tenant = :tenant AND id = :id"
        ).bindparams(tenant=tenant, id=exception_id),
    )
    found = row.first()
    return None if found is None else dict(found._mapping)


@dataclass(frozen=True)
class ExceptionFilter:
    """Which transfer exceptions a page holds (None: any)."""

    status: str | None = None
    custodian: str | None = None
    business_date: date | None = None
    kind: str | None = None


async def transfer_exceptions_page(
    session: AsyncSession, tenant: str, where: ExceptionFilter, after: int, limit: int
) -> list[dict[str, Any]]:
    """A page of the tenant's transfer exceptions in the order opened (ids after `after`)."""
    rows = await _run(
        session,
        text(
            f"SELECT {_EXCEPTION_COLUMNS} FROM transfer_exceptions"
            " WHERE tenant = :tenant AND id > :after"
            " AND (CAST(:status AS text) IS NULL OR status = :status)"
            " AND (CAST(:custodian AS text) IS NULL OR custodian = :custodian)"
            " AND (CAST(:day AS date) IS NULL OR business_date = :day)"
            " AND (CAST(:kind AS text) IS NULL OR kind = :kind)"
            " ORDER BY id LIMIT :limit"
        ).bindparams(
            tenant=tenant,
            after=after,
            status=where.status,
            custodian=where.custodian,
            day=where.business_date,
            kind=where.kind,
            limit=limit,
        ),
    )
    return [dict(r._mapping) for r in rows]


async def custodian_accounts_page(
    session: AsyncSession, tenant: str, custodian: str, after: str, limit: int
) -> list[str]:
    """A page of the custodian's accounts (keyset: ids after `after`)."""
    rows = await _run(
        session,
        text(
            "SELECT account_id FROM custodian_accounts WHERE tenant = :tenant"
            " AND custodian = :custodian AND account_id > :after ORDER BY account_id LIMIT :limit"
        ).bindparams(tenant=tenant, custodian=custodian, after=after, limit=limit),
    )
    return [a for (a,) in rows]


_HELD_BY_BREAK = (
    "EXISTS (SELECT 1 FROM reconciliation_breaks b WHERE b.tenant = m.tenant"
    " AND b.account_id = m.account_id AND b.status = 'open' AND b.policy = 'suspend')"
)
_HELD_BY_TRANSFER = (
    "EXISTS (SELECT 1 FROM custodian_accounts o JOIN transfer_exceptions e"
    " ON e.tenant = o.tenant AND e.custodian = o.custodian AND e.status = 'open'"
    " AND e.kind = ANY(:kinds) WHERE o.tenant = m.tenant AND o.account_id = m.account_id)"
)


_HELD_BY_UNKNOWN_SECURITY = (
    "EXISTS (SELECT 1 FROM unknown_security_accounts u JOIN unknown_securities e"
    " ON e.tenant = u.tenant AND e.custodian = u.custodian AND e.symbol = u.symbol"
    " AND e.status = 'open' WHERE u.tenant = m.tenant AND u.account_id = m.account_id)"
)


async def releasable_accounts_page(
    session: AsyncSession, tenant: str, custodian: str, after: str, limit: int
) -> list[str]:
    """A page of the custodian's accounts that nothing holds any more: no open break that
    suspends them, no open transfer exception of a custodian of theirs, no position in a
    security the security master does not know."""
    rows = await _run(
        session,
        text(
            "SELECT m.account_id FROM custodian_accounts m WHERE m.tenant = :tenant"
            " AND m.custodian = :custodian AND m.account_id > :after"
            f" AND NOT {_HELD_BY_BREAK} AND NOT {_HELD_BY_TRANSFER}"
            f" AND NOT {_HELD_BY_UNKNOWN_SECURITY}"
            " ORDER BY m.account_id LIMIT :limit"
        ).bindparams(
            tenant=tenant,
            custodian=custodian,
            after=after,
            limit=limit,
            kinds=list(HOLDING_EXCEPTIONS),
        ),
    )
    return [a for (a,) in rows]


async def held_by_transfer_exceptions(
    session: AsyncSession, tenant: str, account_ids: Collection[str]
) -> set[str]:
    """Those of these accounts an open transfer exception of one of their custodians holds."""
    if not account_ids:
        return set()
    rows = await _run(
        session,
        text(
            "SELECT DISTINCT o.account_id FROM custodian_accounts o JOIN transfer_exceptions e"
            " ON e.tenant = o.tenant AND e.custodian = o.custodian AND e.status = 'open'"
            " AND e.kind = ANY(:kinds)"
            " WHERE o.tenant = :tenant AND o.account_id = ANY(CAST(:accounts AS text[]))"
        ).bindparams(tenant=tenant, accounts=list(account_ids), kinds=list(HOLDING_EXCEPTIONS)),
    )
    return {a for (a,) in rows}


_BREAK_COLUMNS = (
    "id, custodian, business_date, account_id, kind, symbol, lot_id, ours, theirs, policy,"
    " status, load_id, found_at"
)


async def resolve_break(
    session: AsyncSession, tenant: str, break_id: int, status: str
) -> tuple[dict[str, Any], bool, int] | None:
    """Give an open break `status`, its account's open breaks locked first (two people
    resolving an account's last two breaks see each other): the break as it is now, whether
    this call changed it, and how many open breaks still suspend its account. None: the
    tenant has no such break."""
    await _run(
        session,
        text(
            "SELECT id FROM reconciliation_breaks WHERE tenant = :tenant AND status = 'open'"
            " AND account_id = (SELECT account_id FROM reconciliation_breaks"
            " WHERE tenant = :tenant AND id = :id) ORDER BY id FOR UPDATE"
        ).bindparams(tenant=tenant, id=break_id),
    )
    # statements of their own after the lock: their snapshots see what its last holder committed
    changed = await _run(
        session,
        text(
            "UPDATE reconciliation_breaks SET status = :status"
            " WHERE tenant = :tenant AND id = :id AND status = 'open'"
        ).bindparams(tenant=tenant, id=break_id, status=status),
    )
    row = (
        await _run(
            session,
            text(
                f"SELECT {_BREAK_COLUMNS}, (SELECT count(*) FROM reconciliation_breaks o"
                " WHERE o.tenant = b.tenant AND o.account_id = b.account_id"
                " AND o.status = 'open' AND o.policy = 'suspend') AS still_suspending"
                " FROM reconciliation_breaks b WHERE tenant = :tenant AND id = :id"
            ).bindparams(tenant=tenant, id=break_id),
        )
    ).first()
    if row is None:
        return None
    found = dict(row._mapping)
    return found, bool(changed.rowcount), int(found.pop("still_suspending"))
