"""rebalance-svc's reads as plain rows (no ORM object per row): a drift scan's plain SMAs as
arrays, in one statement (no Decimal per holding either), and the security master every
engine reference is built from (`preparation.engine_reference`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from rebalance_svc.engine_input import SecurityRow

# Each account's holdings in code-point order of their symbols (COLLATE "C": the order in
# which engine_input.engine_account lists them) and as float8 (numeric to float8 rounds
# correctly, as Python's float(Decimal) does): the engine gets the same numbers either way.
# Trades in flight: one index probe per account (LIMIT 1), not a pass over the table.
_SMA_BOOKS = text(
    "SELECT c.account_id, c.amount::float8, coalesce(h.symbols, '{}'), "
    "coalesce(h.quantities, '{}'), f.account_id IS NOT NULL "
    "FROM cash c LEFT JOIN LATERAL ("
    'SELECT array_agg(symbol ORDER BY symbol COLLATE "C") AS symbols, '
    'array_agg(quantity::float8 ORDER BY symbol COLLATE "C") AS quantities '
    "FROM holdings WHERE account_id = c.account_id AND quantity <> 0"
    ") h ON true LEFT JOIN LATERAL ("
    "SELECT t.account_id FROM trades_in_flight t WHERE t.account_id = c.account_id LIMIT 1"
    ") f ON true WHERE c.account_id = ANY(:ids) ORDER BY c.account_id"
)


@dataclass(frozen=True, slots=True)
class SmaBook:
    """One account's book for a scan: cash, non-zero holdings (symbols in code-point order,
    shares) and whether trades it was proposed are still in flight."""

    cash: float
    symbols: list[str]
    quantities: list[float]
    in_flight: bool


async def sma_books(session: AsyncSession, account_ids: Sequence[str]) -> dict[str, SmaBook]:
    """The books of these accounts that have been reconciled (the others are absent)."""
    if not account_ids:
        return {}
    rows = await session.execute(_SMA_BOOKS, {"ids": list(account_ids)})
    return {
        account_id: SmaBook(cash, list(symbols), list(quantities), bool(in_flight))
        for account_id, cash, symbols, quantities, in_flight in rows.all()
    }


async def securities(session: AsyncSession) -> dict[str, SecurityRow]:
    """The security master as plain rows (no ORM object per security)."""
    rows = await session.execute(
        text("SELECT symbol, price, asset_class, sector, fractional_eligible FROM securities")
    )
    return {r[0]: SecurityRow(*r) for r in rows.all()}
