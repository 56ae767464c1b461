"""Pure lot operations: open, order, relieve, split, move between sleeves, value.

These functions take and return plain data (tuples/lists of :class:`Lot`), never mutate
their input, and do no I/O, so the ledger here and taxlot-svc's Postgres repository share
them: load the position's lots, call :func:`relieve`, store the reliefs and the remaining
lots.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date
from decimal import Decimal

from ballast_engine.tax.errors import InsufficientQuantityError, TaxInputError, UnknownLotError
from ballast_engine.tax.model import (
    DEFAULT_TAX_RATES,
    ZERO,
    Lot,
    Relief,
    ReliefMethod,
    TaxRates,
    Term,
    money,
    prorate,
)


def open_lot(
    *,
    lot_id: str,
    account: str,
    symbol: str,
    quantity: Decimal,
    price: Decimal,
    acquired: date,
    fees: Decimal = ZERO,
    purchase_id: str = "",
    sleeve: str = "",
    seq: int = 0,
) -> Lot:
    """A new lot from a purchase: basis is ``quantity * price + fees`` in cents.

    Args:
        lot_id: the lot's name (unique within the account).
        account: the account holding it.
        symbol: the security.
        quantity: shares bought, > 0.
        price: price per share, >= 0.
        acquired: trade date.
        fees: commissions and fees, added to basis.
        purchase_id: the purchase (defaults to ``lot_id``).
        sleeve: the sleeve of a UMA holding the lot.
        seq: tie-breaker among lots of the same day.
    """
    if quantity <= 0:
        raise TaxInputError(f"quantity must be positive, got {quantity}", field="quantity")
    if price < 0:
        raise TaxInputError(f"price must not be negative, got {price}", field="price")
    if fees < 0:
        raise TaxInputError(f"fees must not be negative, got {fees}", field="fees")
    return Lot(
        lot_id=lot_id,
        account=account,
        symbol=symbol,
        quantity=quantity,
        cost_basis=money(quantity * price + fees),
        acquired=acquired,
        holding_start=acquired,
        purchase_id=purchase_id or lot_id,
        sleeve=sleeve,
        seq=seq,
    )


def split_lot(lot: Lot, quantity: Decimal, new_id: str) -> tuple[Lot, Lot | None]:
    """Split ``quantity`` shares off ``lot``: (the part, named ``new_id``; the rest or None).

    Basis is prorated in cents and the rest keeps what is left, so the two bases add up to
    the original exactly. Splitting the whole lot returns the lot itself (renamed).
    """
    if quantity <= 0 or quantity > lot.quantity:
        raise InsufficientQuantityError(
            f"cannot split {quantity} shares off lot {lot.lot_id} of {lot.quantity}"
        )
    if quantity == lot.quantity:
        return replace(lot, lot_id=new_id), None
    basis = prorate(lot.cost_basis, quantity, lot.quantity)
    adj = prorate(lot.wash_adjustment, quantity, lot.quantity) if lot.wash_adjustment else ZERO
    # Built directly rather than with dataclasses.replace: this is the ledger's hot path.
    part = Lot(
        new_id,
        lot.account,
        lot.symbol,
        quantity,
        basis,
        lot.acquired,
        lot.holding_start,
        lot.purchase_id,
        lot.sleeve,
        lot.seq,
        lot.replacement,
        adj,
    )
    rest = Lot(
        lot.lot_id,
        lot.account,
        lot.symbol,
        lot.quantity - quantity,
        lot.cost_basis - basis,
        lot.acquired,
        lot.holding_start,
        lot.purchase_id,
        lot.sleeve,
        lot.seq,
        lot.replacement,
        lot.wash_adjustment - adj,
    )
    return part, rest


def _acq_key(lot: Lot) -> tuple[date, int, str]:
    return (lot.acquired, lot.seq, lot.lot_id)


def tax_cost_per_share(lot: Lot, price: Decimal, on: date, rates: TaxRates) -> Decimal:
    """Tax owed (negative: saved) per share of ``lot`` sold at ``price`` on ``on``."""
    return (price - lot.basis_per_share) * rates.rate(lot.term_on(on))


def mintax_key(
    lot: Lot, price: Decimal, on: date, rates: TaxRates
) -> tuple[Decimal, int, date, int, str]:
    """Where min-tax puts a lot sold at ``price`` on ``on``, the one definition (the engine's
    sells and the ledger's relief): lowest tax cost per share at the account's rates first (a
    loss is a negative cost, so the loss saving most tax per share goes first), long-term
    before short-term on equal cost, then oldest."""
    long_first = 0 if lot.term_on(on) is Term.LONG else 1
    return (tax_cost_per_share(lot, price, on, rates), long_first, *_acq_key(lot))


def order_lots(
    lots: Sequence[Lot],
    method: ReliefMethod,
    *,
    net_price: Decimal | None = None,
    on: date | None = None,
    rates: TaxRates = DEFAULT_TAX_RATES,
) -> list[Lot]:
    """The lots in the order ``method`` relieves them (ties by acquisition date, then seq).

    ``net_price`` (proceeds per share after fees), ``on`` and ``rates`` are needed by min-tax
    only (``mintax_key``).
    """
    if method is ReliefMethod.FIFO:
        return sorted(lots, key=_acq_key)
    if method is ReliefMethod.LIFO:
        return sorted(lots, key=lambda lot: (-lot.acquired.toordinal(), -lot.seq, lot.lot_id))
    if method is ReliefMethod.HIFO:
        return sorted(lots, key=lambda lot: (-lot.basis_per_share, *_acq_key(lot)))
    if method is ReliefMethod.MINTAX:
        if net_price is None or on is None:
            raise TaxInputError("min-tax relief needs the sale price and date")
        price, day = net_price, on
        return sorted(lots, key=lambda lot: mintax_key(lot, price, day, rates))
    raise TaxInputError(f"unknown relief method {method!r}", field="method")


def _matches(lot: Lot, name: str) -> bool:
    # Lots split by the ledger are named "<name>/<n>"; naming the original still finds them.
    return lot.lot_id == name or lot.lot_id.startswith(name + "/")


def select_lots(
    lots: Sequence[Lot],
    quantity: Decimal,
    method: ReliefMethod,
    *,
    lot_ids: Sequence[str] = (),
    net_price: Decimal | None = None,
    on: date | None = None,
    rates: TaxRates = DEFAULT_TAX_RATES,
) -> list[tuple[Lot, Decimal]]:
    """Which lots, and how many shares of each, a relief of ``quantity`` takes.

    Named ``lot_ids`` (specific identification) take precedence over ``method`` and must
    cover the quantity on their own.
    """
    if quantity <= 0:
        raise TaxInputError(f"quantity must be positive, got {quantity}", field="quantity")
    if lot_ids:
        ordered: list[Lot] = []
        for name in lot_ids:
            found = [lot for lot in sorted(lots, key=_acq_key) if _matches(lot, name)]
            if not found:
                raise UnknownLotError(f"lot {name!r} is not open in this position", field="lot")
            ordered.extend(lot for lot in found if lot not in ordered)
    else:
        ordered = order_lots(lots, method, net_price=net_price, on=on, rates=rates)
    picks: list[tuple[Lot, Decimal]] = []
    left = quantity
    for lot in ordered:
        if left <= 0:
            break
        take = min(lot.quantity, left)
        picks.append((lot, take))
        left -= take
    if left > 0:
        available = quantity - left
        what = "the named lots hold" if lot_ids else "the open position is"
        raise InsufficientQuantityError(
            f"cannot relieve {quantity} shares: {what} {available}", field="quantity"
        )
    return picks


def relieve(
    lots: Sequence[Lot],
    quantity: Decimal,
    method: ReliefMethod,
    *,
    price: Decimal,
    sold: date,
    fees: Decimal = ZERO,
    lot_ids: Sequence[str] = (),
    sale_id: str = "",
    rates: TaxRates = DEFAULT_TAX_RATES,
) -> tuple[list[Relief], list[Lot]]:
    """Relieve ``quantity`` shares sold at ``price`` from ``lots``.

    Args:
        lots: the open lots of one position (one account, security and sleeve).
        quantity: shares sold, > 0 and at most the position (else
            :class:`InsufficientQuantityError`).
        method: FIFO, LIFO, HIFO or MINTAX (ignored when ``lot_ids`` is given).
        price: price per share.
        sold: trade date.
        fees: selling costs, deducted from proceeds.
        lot_ids: lots named in the order (specific identification).
        sale_id: recorded on each relief.
        rates: the account's tax rates (min-tax weighs gains by them).

    Returns:
        (reliefs, remaining lots). Net proceeds ``quantity * price - fees`` (in cents) are
        split across the reliefs by quantity, the last one taking the rest.
    """
    if price < 0:
        raise TaxInputError(f"price must not be negative, got {price}", field="price")
    if fees < 0:
        raise TaxInputError(f"fees must not be negative, got {fees}", field="fees")
    if quantity <= 0:
        raise TaxInputError(f"quantity must be positive, got {quantity}", field="quantity")
    net = money(quantity * price - fees)
    picks = select_lots(
        lots, quantity, method, lot_ids=lot_ids, net_price=net / quantity, on=sold, rates=rates
    )
    reliefs: list[Relief] = []
    taken: dict[str, Decimal] = {}
    proceeds_left, qty_left = net, quantity
    for lot, take in picks:
        proceeds = prorate(proceeds_left, take, qty_left)
        proceeds_left -= proceeds
        qty_left -= take
        basis = prorate(lot.cost_basis, take, lot.quantity)
        reliefs.append(Relief(lot, take, basis, proceeds, sold, sale_id))
        taken[lot.lot_id] = take
    remaining: list[Lot] = []
    for lot in lots:
        sold_qty = taken.get(lot.lot_id)
        if sold_qty is None:
            remaining.append(lot)
        elif sold_qty < lot.quantity:
            _, rest = split_lot(lot, sold_qty, lot.lot_id)
            assert rest is not None
            remaining.append(rest)
    return reliefs, remaining


def move_lots(
    lots: Sequence[Lot],
    quantity: Decimal,
    to_sleeve: str,
    *,
    method: ReliefMethod = ReliefMethod.FIFO,
    lot_ids: Sequence[str] = (),
    new_id: Callable[[Lot], str] | None = None,
) -> tuple[list[Lot], list[Lot]]:
    """Move ``quantity`` shares to another sleeve of the same account: no taxable event.

    Lots keep their basis, dates and purchase. A partly moved lot is split; the moved part
    is named by ``new_id(lot)`` (default ``"<lot_id>/<to_sleeve>"``).

    Returns:
        (moved lots, now in ``to_sleeve``; lots left where they were).
    """
    picks = select_lots(lots, quantity, method, lot_ids=lot_ids)
    namer = new_id or (lambda lot: f"{lot.lot_id}/{to_sleeve}")
    taken = {lot.lot_id: take for lot, take in picks}
    moved: list[Lot] = []
    remaining: list[Lot] = []
    for lot in lots:
        moving = taken.get(lot.lot_id)
        if moving is None:
            remaining.append(lot)
            continue
        if moving == lot.quantity:
            moved.append(replace(lot, sleeve=to_sleeve))
            continue
        part, rest = split_lot(lot, moving, namer(lot))
        assert rest is not None
        moved.append(replace(part, sleeve=to_sleeve))
        remaining.append(rest)
    return moved, remaining


@dataclass(frozen=True, slots=True)
class LotValuation:
    """Unrealized gain or loss of one lot at a price on a day."""

    lot: Lot
    price: Decimal
    market_value: Decimal
    unrealized: Decimal
    term: Term

    @property
    def unrealized_pct(self) -> Decimal:
        if self.lot.cost_basis == 0:
            return ZERO
        return self.unrealized / self.lot.cost_basis


def value_lots(lots: Sequence[Lot], prices: Mapping[str, Decimal], on: date) -> list[LotValuation]:
    """Unrealized gain/loss per lot at ``prices`` (symbol -> price) on ``on``.

    A lot whose security has no price raises :class:`TaxInputError` naming it.
    """
    out: list[LotValuation] = []
    for lot in lots:
        price = prices.get(lot.symbol)
        if price is None:
            raise TaxInputError(f"no price for {lot.symbol} (lot {lot.lot_id})", field="price")
        mv = money(lot.quantity * price)
        out.append(LotValuation(lot, price, mv, mv - lot.cost_basis, lot.term_on(on)))
    return out
