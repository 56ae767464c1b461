"""All of taxlot-svc's SQL.

Entity reads use ``populate_existing``: a consumer batch applies several fills in one
session, and changes are written with Core statements, so an entity cached in the session
from an earlier fill must be refreshed, never reused.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import delete, func, text, tuple_, update
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
    TaxInput,
    TaxSettings,
)


def _t(entity: type[SQLModel]) -> Any:
    return entity.__table__  # type: ignore[attr-defined]


async def _run(session: AsyncSession, stmt: Any) -> Any:
    """Execute a Core statement on the session's connection (the ORM's per-statement work
    is most of the cost of a small statement, and nothing here needs it)."""
    connection = await session.connection()
    return await connection.execute(stmt)


async def _insert_many(
    session: AsyncSession, entity: type[SQLModel], rows: Sequence[Mapping[str, Any]]
) -> None:
    """Bulk insert in ONE statement: each column travels as one array parameter and
    ``unnest`` turns the arrays back into rows (far fewer round trips and far less
    per-row work than an executemany). All rows must have the same keys."""
    if not rows:
        return
    table = entity.__table__  # type: ignore[attr-defined]
    names = list(rows[0])
    dialect = session.get_bind().dialect
    arrays = ", ".join(
        f"CAST(:{name} AS {table.c[name].type.compile(dialect=dialect)}[])" for name in names
    )
    columns = ", ".join(f'"{name}"' for name in names)
    statement = text(f'INSERT INTO "{table.name}" ({columns}) SELECT * FROM unnest({arrays})')
    connection = await session.connection()
    await connection.execute(statement, {name: [row[name] for row in rows] for name in names})


async def create_books(session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> set[str]:
    """Insert account books; returns the ids actually inserted (existing ones are skipped)."""
    if not rows:
        return set()
    stmt = (
        pg_insert(AccountBook)
        .values(list(rows))
        .on_conflict_do_nothing(index_elements=["account_id"])
        .returning(col(AccountBook.account_id))
    )
    return set((await session.exec(stmt)).scalars())


async def existing_accounts(session: AsyncSession, account_ids: Sequence[str]) -> set[str]:
    if not account_ids:
        return set()
    table = _t(AccountBook)
    stmt = sa_select(table.c.account_id).where(table.c.account_id.in_(account_ids))
    return {r[0] for r in (await _run(session, stmt)).all()}


async def get_book(session: AsyncSession, account_id: str, *, for_update: bool = False) -> Any:
    """The account's book row (cash, as_of, tenant, ...), or None."""
    table = _t(AccountBook)
    stmt = sa_select(table).where(table.c.account_id == account_id)
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


async def add_lots(session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> None:
    if rows:
        await _insert_many(session, OpenLot, rows)


async def add_ledger_entries(session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> None:
    if rows:
        await _insert_many(session, LedgerEntry, rows)


async def add_realized_gains(session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> None:
    if rows:
        await _insert_many(session, RealizedGain, rows)


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


async def record_fill(session: AsyncSession, fill: Mapping[str, Any]) -> bool:
    """Insert an applied fill; False if a fill with that id was applied before."""
    table = _t(AppliedFill)
    stmt = (
        pg_insert(table)
        .values(dict(fill))
        .on_conflict_do_nothing(index_elements=["fill_id"])
        .returning(table.c.fill_id)
    )
    return (await _run(session, stmt)).first() is not None


async def get_fill(session: AsyncSession, fill_id: str) -> AppliedFill | None:
    return await session.get(AppliedFill, fill_id)


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
    connection = await session.connection()
    await connection.execute(text(f"SELECT {fn}(hashtextextended(:k, 0))"), {"k": WRITES_LOCK})


async def lock_households(session: AsyncSession, households: Sequence[str]) -> None:
    """Serialize the changes of a household between consumers (transaction-scoped advisory
    locks, taken in sorted order)."""
    connection = await session.connection()
    for household in sorted(set(households)):
        await connection.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"),
            {"k": f"taxlot-household:{household}"},
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
    if not states:
        return
    table = HouseholdState.__table__  # type: ignore[attr-defined]
    stmt = pg_insert(table).values(
        [
            {"household_id": h, "last_day": d, "seq": n, "updated_at": datetime.now(UTC)}
            for h, (d, n) in sorted(states.items())
        ]
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["household_id"],
        set_={
            "last_day": func.greatest(table.c.last_day, stmt.excluded.last_day),
            "seq": func.greatest(table.c.seq, stmt.excluded.seq),
            "updated_at": stmt.excluded.updated_at,
        },
    )
    await _run(session, stmt)


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
    """(account_id, household_id, account_type) rows of accounts account-svc described."""
    if not account_ids:
        return []
    table = _t(AccountInfo)
    stmt = sa_select(table.c.account_id, table.c.household_id, table.c.account_type).where(
        table.c.account_id.in_(account_ids)
    )
    return list((await _run(session, stmt)).all())


async def household_members(session: AsyncSession, households: Sequence[str]) -> list[Any]:
    if not households:
        return []
    table = _t(AccountInfo)
    stmt = (
        sa_select(table.c.account_id, table.c.household_id, table.c.account_type)
        .where(table.c.household_id.in_(households))
        .order_by(table.c.account_id)
    )
    return list((await _run(session, stmt)).all())


async def upsert_account_info(
    session: AsyncSession, account_id: str, household_id: str, account_type: str
) -> None:
    stmt = pg_insert(AccountInfo).values(
        account_id=account_id, household_id=household_id, account_type=account_type
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["account_id"],
        set_={
            "household_id": household_id,
            "account_type": account_type,
            "updated_at": datetime.now(UTC),
        },
    )
    await session.exec(stmt)


async def get_tax_settings(session: AsyncSession, account_id: str) -> Any:
    table = _t(TaxSettings)
    stmt = sa_select(table).where(table.c.account_id == account_id)
    return (await _run(session, stmt)).first()


async def put_tax_settings(session: AsyncSession, values: Mapping[str, Any]) -> bool:
    """Store an account's relief method and rates; True if they changed (``updated_at``
    moves only then)."""
    row = dict(values)
    insert = pg_insert(TaxSettings).values(row)
    fields = [k for k in row if k != "account_id"]
    table = _t(TaxSettings)
    stmt = insert.on_conflict_do_update(
        index_elements=["account_id"],
        set_={**{k: insert.excluded[k] for k in fields}, "updated_at": datetime.now(UTC)},
        where=tuple_(*[table.c[k] for k in fields]).is_distinct_from(
            tuple_(*[insert.excluded[k] for k in fields])
        ),
    ).returning(table.c.account_id)
    return (await _run(session, stmt)).first() is not None


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
    if not prices:
        return
    stmt = pg_insert(SecurityPrice).values(
        [{"symbol": s, "price": p} for s, p in sorted(prices.items())]
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["symbol"],
        set_={"price": stmt.excluded.price, "updated_at": datetime.now(UTC)},
    )
    await session.exec(stmt)


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
    if rows:
        await _insert_many(session, TaxInput, rows)


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


async def symbol_lots(
    session: AsyncSession, account_ids: Sequence[str], symbols: Sequence[str]
) -> list[Any]:
    """The open lots of ``symbols`` in ``account_ids`` (plain rows)."""
    table = OpenLot.__table__  # type: ignore[attr-defined]
    stmt = sa_select(table).where(
        table.c.account_id.in_(account_ids), table.c.symbol.in_(list(symbols))
    )
    connection = await session.connection()
    return list((await connection.execute(stmt)).all())


async def symbol_sales(
    session: AsyncSession, account_ids: Sequence[str], symbols: Sequence[str]
) -> list[Any]:
    """Every realized gain of ``symbols`` in ``account_ids`` (plain rows)."""
    table = _t(RealizedGain)
    stmt = sa_select(table).where(
        table.c.account_id.in_(account_ids), table.c.symbol.in_(list(symbols))
    )
    return list((await _run(session, stmt)).all())


async def delete_lot_keys(session: AsyncSession, keys: Sequence[tuple[str, str]]) -> None:
    if keys:
        table = _t(OpenLot)
        await _run(
            session,
            table.delete().where(tuple_(table.c.account_id, table.c.lot_id).in_(list(keys))),
        )


async def update_gain_wash(
    session: AsyncSession, gain_id: int, adjustment: Decimal, washed: Decimal, permanent: Decimal
) -> None:
    table = _t(RealizedGain)
    await _run(
        session,
        table.update()
        .where(table.c.id == gain_id)
        .values(adjustment=adjustment, washed_quantity=washed, permanent=permanent),
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
    absorbs this one (its fill ids are appended; the latest cause wins)."""
    if not rows:
        return
    table = PendingSnapshot.__table__  # type: ignore[attr-defined]
    ordered = sorted(rows, key=lambda r: r["account_id"])  # one order: no crosswise waits
    stmt = pg_insert(table).values(list(ordered))
    stmt = stmt.on_conflict_do_update(
        index_elements=["account_id"],
        set_={
            "cause": stmt.excluded.cause,
            "fill_ids": table.c.fill_ids.op("||")(stmt.excluded.fill_ids),
            "action_id": func.coalesce(stmt.excluded.action_id, table.c.action_id),
        },
    )
    await _run(session, stmt)


async def take_pending_snapshots(session: AsyncSession, limit: int) -> list[Any]:
    """Claim up to ``limit`` pending snapshot requests (rows locked by another
    transaction are skipped, so this never waits) and delete them."""
    stmt = text(
        "DELETE FROM pending_snapshots WHERE account_id IN ("
        " SELECT account_id FROM pending_snapshots ORDER BY requested_at, account_id"
        " LIMIT :n FOR UPDATE SKIP LOCKED)"
        " RETURNING account_id, cause, fill_ids, action_id"
    ).bindparams(n=limit)
    connection = await session.connection()
    return list((await connection.execute(stmt)).all())


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
    """Loss sales (taxable, by fills) on or after ``since`` with shares not yet matched."""
    table = RealizedGain.__table__  # type: ignore[attr-defined]
    stmt = (
        sa_select(table)
        .where(
            table.c.account_id.in_(account_ids),
            table.c.sold_on >= since,
            table.c.cause == "fill",
            table.c.account_type == "taxable",
            table.c.proceeds < table.c.cost_basis,
            table.c.washed_quantity < table.c.quantity,
        )
        .order_by(table.c.account_id, table.c.sold_on, table.c.seq)
    )
    connection = await session.connection()
    return list((await connection.execute(stmt)).all())


async def books(
    session: AsyncSession, account_ids: Sequence[str], *, for_update: bool = True
) -> list[Any]:
    if not account_ids:
        return []
    table = _t(AccountBook)
    stmt = sa_select(table).where(table.c.account_id.in_(account_ids)).order_by(table.c.account_id)
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


async def lock_writes_reading_household(session: AsyncSession, account_id: str) -> str | None:
    """The write lock (shared) and, in the same round trip, the account's household as
    last committed BEFORE the lock was granted: a guess, to be checked under the household
    lock (:func:`fill_context`)."""
    stmt = text(
        "SELECT pg_advisory_xact_lock_shared(hashtextextended(:k, 0)) AS locked,"
        " (SELECT household_id FROM accounts WHERE account_id = :a) AS household"
    ).bindparams(k=WRITES_LOCK, a=account_id)
    row = (await _run(session, stmt)).one()
    return row.household


async def fill_context(session: AsyncSession, account_id: str, household: str) -> Any:
    """In one round trip, under the household lock: the account's book (locked), its
    household and type, its relief method, the state of ``household``, and the members of
    the identical equivalence sets in force (``identical_sets``, a list of lists or null).
    None if the account has no book."""
    stmt = text(
        "SELECT b.tenant, b.cash, b.as_of, i.household_id, i.account_type, ts.method,"
        " h.last_day, h.seq,"
        " (SELECT jsonb_agg(e.members ORDER BY e.set_id) FROM equivalence_sets e"
        "   WHERE e.identical AND NOT e.removed) AS identical_sets"
        " FROM account_books b"
        " LEFT JOIN accounts i ON i.account_id = b.account_id"
        " LEFT JOIN tax_settings ts ON ts.account_id = b.account_id"
        " LEFT JOIN households h ON h.household_id = :h"
        " WHERE b.account_id = :a FOR UPDATE OF b"
    ).bindparams(a=account_id, h=household)
    return (await _run(session, stmt)).first()


async def finish_fill(
    session: AsyncSession,
    account_id: str,
    fill_id: str,
    cash: Decimal,
    as_of: date,
    cash_change: Decimal,
    household: tuple[str, date, int] | None,
) -> None:
    """In one statement: the account's new cash and as-of, the fill's cash change, the
    request for the account's holdings-reconciled (naming the fill) and, when given, the
    household's new (last day, sequence counter) (each only grows)."""
    state = ""
    params: dict[str, Any] = {
        "c": cash_change,
        "f": fill_id,
        "fids": json.dumps([fill_id]),
        "cash": cash,
        "d": as_of,
        "a": account_id,
    }
    if household is not None:
        state = (
            " h AS (INSERT INTO households (household_id, last_day, seq, updated_at)"
            " VALUES (:h, :hd, :hs, now()) ON CONFLICT (household_id) DO UPDATE SET"
            " last_day = greatest(households.last_day, excluded.last_day),"
            " seq = greatest(households.seq, excluded.seq), updated_at = now()),"
        )
        params.update(h=household[0], hd=household[1], hs=household[2])
    stmt = text(
        "WITH f AS (UPDATE applied_fills SET cash_change = :c WHERE fill_id = :f),"
        + state
        + " p AS (INSERT INTO pending_snapshots (account_id, cause, fill_ids, action_id,"
        " requested_at) VALUES (:a, 'fills', CAST(:fids AS jsonb), NULL, now())"
        " ON CONFLICT (account_id) DO UPDATE SET cause = excluded.cause,"
        " fill_ids = pending_snapshots.fill_ids || excluded.fill_ids)"
        " UPDATE account_books SET cash = :cash, as_of = :d, updated_at = now()"
        " WHERE account_id = :a"
    ).bindparams(**params)
    await _run(session, stmt)


async def realized_between(
    session: AsyncSession, account_ids: Sequence[str], first: date, last: date
) -> list[Any]:
    """Realized gains of ``account_ids`` sold from ``first`` to ``last`` (plain rows)."""
    table = _t(RealizedGain)
    stmt = sa_select(table).where(
        table.c.account_id.in_(account_ids), table.c.sold_on >= first, table.c.sold_on <= last
    )
    return list((await _run(session, stmt)).all())
