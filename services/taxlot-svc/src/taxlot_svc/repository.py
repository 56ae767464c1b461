"""All of taxlot-svc's SQL.

Entity reads use ``populate_existing``: a consumer batch applies several fills in one
session, and changes are written with Core statements, so an entity cached in the session
from an earlier fill must be refreshed, never reused.
"""

from __future__ import annotations

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
    LedgerEntry,
    OpenLot,
    RealizedGain,
    SecurityPrice,
    TaxInput,
    TaxSettings,
)


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
    result = await session.exec(
        select(AccountBook.account_id).where(col(AccountBook.account_id).in_(account_ids))
    )
    return set(result)


async def get_book(
    session: AsyncSession, account_id: str, *, for_update: bool = False
) -> AccountBook | None:
    stmt = select(AccountBook).where(AccountBook.account_id == account_id)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.exec(stmt.execution_options(populate_existing=True))).first()


async def set_cash(session: AsyncSession, account_id: str, cash: Decimal, as_of: date) -> None:
    await session.exec(
        update(AccountBook)
        .where(col(AccountBook.account_id) == account_id)
        .values(cash=cash, as_of=as_of, updated_at=datetime.now(UTC))
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


async def update_lot(
    session: AsyncSession, account_id: str, lot_id: str, quantity: Decimal, cost_basis: Decimal
) -> None:
    await session.exec(
        update(OpenLot)
        .where(col(OpenLot.account_id) == account_id, col(OpenLot.lot_id) == lot_id)
        .values(quantity=quantity, cost_basis=cost_basis)
    )


async def delete_lots(session: AsyncSession, account_id: str, lot_ids: Sequence[str]) -> None:
    if lot_ids:
        await session.exec(
            delete(OpenLot).where(
                col(OpenLot.account_id) == account_id, col(OpenLot.lot_id).in_(lot_ids)
            )
        )


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
    stmt = (
        pg_insert(AppliedFill)
        .values(dict(fill))
        .on_conflict_do_nothing(index_elements=["fill_id"])
        .returning(col(AppliedFill.fill_id))
    )
    return (await session.exec(stmt)).first() is not None


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


async def record_fill_cash(session: AsyncSession, fill_id: str, cash_change: Decimal) -> None:
    await session.exec(
        update(AppliedFill)
        .where(col(AppliedFill.fill_id) == fill_id)
        .values(cash_change=cash_change)
    )


# --- households, settings, prices -------------------------------------------------------------


async def lock_households(session: AsyncSession, households: Sequence[str]) -> None:
    """Serialize the replays of a household (transaction-scoped advisory locks, taken in
    one order so two events never wait on each other crosswise)."""
    connection = await session.connection()
    for household in sorted(set(households)):
        await connection.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"),
            {"k": f"taxlot-household:{household}"},
        )


async def account_infos(session: AsyncSession, account_ids: Sequence[str]) -> list[AccountInfo]:
    if not account_ids:
        return []
    stmt = select(AccountInfo).where(col(AccountInfo.account_id).in_(account_ids))
    return list(await session.exec(stmt.execution_options(populate_existing=True)))


async def household_members(session: AsyncSession, households: Sequence[str]) -> list[AccountInfo]:
    if not households:
        return []
    stmt = (
        select(AccountInfo)
        .where(col(AccountInfo.household_id).in_(households))
        .order_by(col(AccountInfo.account_id))
    )
    return list(await session.exec(stmt.execution_options(populate_existing=True)))


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


async def get_tax_settings(session: AsyncSession, account_id: str) -> TaxSettings | None:
    stmt = select(TaxSettings).where(TaxSettings.account_id == account_id)
    return (await session.exec(stmt.execution_options(populate_existing=True))).first()


async def put_tax_settings(session: AsyncSession, values: Mapping[str, Any]) -> None:
    row = dict(values)
    stmt = pg_insert(TaxSettings).values(row)
    stmt = stmt.on_conflict_do_update(
        index_elements=["account_id"],
        set_={
            **{k: v for k, v in row.items() if k != "account_id"},
            "updated_at": datetime.now(UTC),
        },
    )
    await session.exec(stmt)


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


async def last_input_day(session: AsyncSession, account_ids: Sequence[str]) -> date | None:
    if not account_ids:
        return None
    stmt = select(func.max(TaxInput.trade_on)).where(col(TaxInput.account_id).in_(account_ids))
    return (await session.exec(stmt)).first()


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


LOT_COLUMNS = (
    "account_id",
    "lot_id",
    "seq",
    "symbol",
    "quantity",
    "cost_basis",
    "acquired_on",
    "holding_start",
    "cause",
    "fill_id",
    "wash_adjustment",
    "replacement",
)
GAIN_COLUMNS = (
    "account_id",
    "fill_id",
    "lot_id",
    "symbol",
    "quantity",
    "proceeds",
    "cost_basis",
    "gain",
    "term",
    "acquired_on",
    "holding_start",
    "sold_on",
    "adjustment",
    "washed_quantity",
    "permanent",
    "account_type",
    "cause",
    "seq",
)


async def derived_rows(
    session: AsyncSession, account_ids: Sequence[str], symbols: Sequence[str] | None = None
) -> tuple[list[tuple[Any, ...]], list[tuple[int, tuple[Any, ...]]]]:
    """The stored derived rows of ``account_ids`` (in ``symbols`` when given): lots as
    tuples of LOT_COLUMNS, realized gains as (id, tuple of GAIN_COLUMNS)."""
    if not account_ids:
        return [], []
    connection = await session.connection()
    lots = OpenLot.__table__  # type: ignore[attr-defined]
    gains = RealizedGain.__table__  # type: ignore[attr-defined]
    lot_stmt = sa_select(*(lots.c[c] for c in LOT_COLUMNS)).where(
        lots.c.account_id.in_(account_ids)
    )
    gain_stmt = sa_select(gains.c.id, *(gains.c[c] for c in GAIN_COLUMNS)).where(
        gains.c.account_id.in_(account_ids)
    )
    if symbols is not None:
        lot_stmt = lot_stmt.where(lots.c.symbol.in_(symbols))
        gain_stmt = gain_stmt.where(gains.c.symbol.in_(symbols))
    lot_rows = [tuple(r) for r in (await connection.execute(lot_stmt)).all()]
    gain_rows = [(r[0], tuple(r[1:])) for r in (await connection.execute(gain_stmt)).all()]
    return lot_rows, gain_rows


async def write_derived(
    session: AsyncSession,
    *,
    delete_lots: Sequence[tuple[str, str]],
    add_lot_rows: Sequence[Mapping[str, Any]],
    delete_gains: Sequence[int],
    add_gain_rows: Sequence[Mapping[str, Any]],
) -> None:
    """Apply the difference between the stored derived rows and a replay's."""
    if delete_lots:
        await session.exec(
            delete(OpenLot).where(
                tuple_(col(OpenLot.account_id), col(OpenLot.lot_id)).in_(list(delete_lots))
            )
        )
    if delete_gains:
        await session.exec(delete(RealizedGain).where(col(RealizedGain.id).in_(delete_gains)))
    await add_lots(session, add_lot_rows)
    await add_realized_gains(session, add_gain_rows)


async def books(
    session: AsyncSession, account_ids: Sequence[str], *, for_update: bool = True
) -> list[AccountBook]:
    if not account_ids:
        return []
    stmt = (
        select(AccountBook)
        .where(col(AccountBook.account_id).in_(account_ids))
        .order_by(col(AccountBook.account_id))
    )
    if for_update:
        stmt = stmt.with_for_update()
    return list(await session.exec(stmt.execution_options(populate_existing=True)))


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
