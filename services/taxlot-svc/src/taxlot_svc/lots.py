"""Pure lot arithmetic of the book: buys open lots, sells relieve them (FIFO for now).

The rules themselves (relief order, cent rounding of basis and proceeds, short/long term)
are the tax engine's (``ballast_engine.tax``): this module only converts the service's rows
to the engine's :class:`~ballast_engine.tax.Lot` and its reliefs back into plain results the
repository can store. No I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from ballast_engine.tax import InsufficientQuantityError, Lot, Method, open_lot, relieve

# The method every sell uses until accounts carry their own (issue 4: LIFO, HIFO, min-tax,
# specific lots named in the order).
RELIEF_METHOD = Method.FIFO


@dataclass(frozen=True, slots=True)
class LotState:
    """An open lot as the book stores it."""

    lot_id: str
    symbol: str
    quantity: Decimal
    cost_basis: Decimal
    acquired_on: date
    holding_start: date
    seq: int = 0


@dataclass(frozen=True, slots=True)
class GainLine:
    """The realized result of selling (part of) one lot."""

    lot_id: str
    symbol: str
    quantity: Decimal
    proceeds: Decimal
    cost_basis: Decimal
    gain: Decimal
    term: str  # "short" | "long"
    acquired_on: date
    holding_start: date
    sold_on: date


@dataclass(frozen=True, slots=True)
class ReliefPlan:
    """What a sell does to a position: gains realized, lots closed, lots reduced."""

    gains: list[GainLine]
    closed: list[str]  # lot ids relieved completely
    reduced: list[LotState]  # lots partly relieved, with what is left of them
    proceeds: Decimal  # cash the sale brings, in cents


class OversellError(Exception):
    """A sell larger than the open position; nothing is relieved."""

    def __init__(self, account: str, symbol: str, requested: Decimal, held: Decimal) -> None:
        self.account = account
        self.symbol = symbol
        self.requested = requested
        self.held = held
        super().__init__(
            f"sell of {requested} {symbol} in account {account} exceeds the open position "
            f"of {held} {symbol}"
        )


def purchase(
    *, lot_id: str, account: str, symbol: str, quantity: Decimal, price: Decimal, on: date
) -> LotState:
    """The lot a buy of ``quantity`` at ``price`` opens; its basis (in cents) is also the
    cash the buy costs."""
    lot = open_lot(
        lot_id=lot_id,
        account=account,
        symbol=symbol,
        quantity=quantity,
        price=price,
        acquired=on,
    )
    return LotState(
        lot_id=lot.lot_id,
        symbol=symbol,
        quantity=lot.quantity,
        cost_basis=lot.cost_basis,
        acquired_on=lot.acquired,
        holding_start=lot.holding_start,
    )


def relieve_position(
    *,
    account: str,
    symbol: str,
    lots: Sequence[LotState],
    quantity: Decimal,
    price: Decimal,
    sold_on: date,
    sale_id: str = "",
) -> ReliefPlan:
    """Relieve ``quantity`` shares of one position sold at ``price`` on ``sold_on``, FIFO.

    Raises :class:`OversellError` when the position holds fewer shares than sold.
    """
    held = sum((lot.quantity for lot in lots), Decimal(0))
    if quantity > held:
        raise OversellError(account, symbol, quantity, held)
    engine_lots = [_to_engine(account, lot) for lot in lots]
    try:
        reliefs, remaining = relieve(
            engine_lots, quantity, RELIEF_METHOD, price=price, sold=sold_on, sale_id=sale_id
        )
    except InsufficientQuantityError as exc:  # the check above should make this unreachable
        raise OversellError(account, symbol, quantity, held) from exc
    left = {lot.lot_id: lot for lot in remaining}
    gains: list[GainLine] = []
    closed: list[str] = []
    reduced: list[LotState] = []
    for relief in reliefs:
        lot = relief.lot
        gains.append(
            GainLine(
                lot_id=lot.lot_id,
                symbol=symbol,
                quantity=relief.quantity,
                proceeds=relief.proceeds,
                cost_basis=relief.cost_basis,
                gain=relief.gain,
                term=relief.term.value,
                acquired_on=lot.acquired,
                holding_start=lot.holding_start,
                sold_on=sold_on,
            )
        )
        rest = left.get(lot.lot_id)
        if rest is None:
            closed.append(lot.lot_id)
        else:
            reduced.append(
                LotState(
                    lot_id=rest.lot_id,
                    symbol=symbol,
                    quantity=rest.quantity,
                    cost_basis=rest.cost_basis,
                    acquired_on=rest.acquired,
                    holding_start=rest.holding_start,
                    seq=rest.seq,
                )
            )
    proceeds = sum((g.proceeds for g in gains), Decimal(0))
    return ReliefPlan(gains=gains, closed=closed, reduced=reduced, proceeds=proceeds)


def _to_engine(account: str, lot: LotState) -> Lot:
    return Lot(
        lot_id=lot.lot_id,
        account=account,
        symbol=lot.symbol,
        quantity=lot.quantity,
        cost_basis=lot.cost_basis,
        acquired=lot.acquired_on,
        holding_start=lot.holding_start,
        purchase_id=lot.lot_id,
        seq=lot.seq,
    )
