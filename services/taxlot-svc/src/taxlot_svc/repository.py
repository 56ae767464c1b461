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

from sqlalchemy import delete, func, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlmodel import SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from taxlot_svc.tables import AccountBook, AppliedFill, LedgerEntry, OpenLot, RealizedGain


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


async def positions(session: AsyncSession, account_id: str) -> list[tuple[str, Decimal, Decimal]]:
    """(symbol, quantity, cost basis) of every open position: the sums of its lots."""
    stmt = (
        select(OpenLot.symbol, func.sum(OpenLot.quantity), func.sum(OpenLot.cost_basis))
        .where(OpenLot.account_id == account_id)
        .group_by(col(OpenLot.symbol))
        .order_by(col(OpenLot.symbol))
    )
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


async def realized_gains(session: AsyncSession, account_id: str) -> list[RealizedGain]:
    stmt = (
        select(RealizedGain)
        .where(RealizedGain.account_id == account_id)
        .order_by(col(RealizedGain.sold_on), col(RealizedGain.id))
    )
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
