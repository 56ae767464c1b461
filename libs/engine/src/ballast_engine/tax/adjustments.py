"""Adjustments: a lot set to a figure from outside the ledger (the custodian's, accepted at
reconciliation), applied in order with fills and corporate actions so that a replay keeps it.

An adjustment names a lot as reconciliation sees it: the lot ``L`` and every piece the ledger
split off it (``L/<n>``: wash-sale and sleeve splits), summed, in one account and security.
Its pieces keep their ids; the adjustment spreads over them by fixed rules (those of
taxlot-svc's accept statements, so the stored lots and a replay agree):

- ``quantity``: the pieces' shares become the given total; a decrease is taken from the
  latest pieces first (by seq, then id), an increase added to the first; a piece left with
  no share is closed. Their basis becomes the given one, or, if none is given, the pieces'
  basis scaled per share; each changed piece is scaled and the cents left over go to the
  first piece that remains.
- ``basis``: the pieces' total basis becomes the given one (the difference on the first piece).
- ``date``: every piece's acquisition date becomes the given one, and its holding start too
  (but a wash-sale replacement's, which carries the holding period of the shares it replaced).
- ``open``: a lot of the given quantity, basis and date (no piece of it may be open).
- ``close``: every piece closed without a sale: no disposal, no gain.

A quantity, basis, date or close of a lot with no open piece, and an open of a lot with one,
change nothing (the figure no longer applies: the next reconciliation finds the difference
again). Money is rounded to cents half away from zero, as the accept statements' SQL rounds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum

from ballast_engine.tax.errors import TaxInputError
from ballast_engine.tax.model import CENT, ZERO, Change, Lot


class AdjustmentKind(StrEnum):
    QUANTITY = "quantity"
    BASIS = "basis"
    DATE = "date"
    OPEN = "open"
    CLOSE = "close"


@dataclass(frozen=True, slots=True)
class Adjustment:
    """A lot set to a figure on ``on`` (see the module): ``quantity`` for quantity and open,
    ``basis`` for basis and open (optional for quantity: scaled per share when None),
    ``acquired`` for date and open. ``adjustment_id`` names it (the purchase of a lot it
    opens); ``ref`` says where it came from, for errors."""

    adjustment_id: str
    account: str
    on: date
    symbol: str
    lot_id: str
    kind: AdjustmentKind
    quantity: Decimal | None = None
    basis: Decimal | None = None
    acquired: date | None = None
    ref: str = ""


def cents(value: Decimal) -> Decimal:
    """An amount in cents, half away from zero (PostgreSQL's ``round(numeric, 2)``)."""
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def is_piece(lot: Lot, name: str) -> bool:
    """Whether ``lot`` is the lot ``name`` or a piece split off it (``<name>/<n>``)."""
    return lot.lot_id == name or lot.lot_id.startswith(name + "/")


def validate(adj: Adjustment) -> None:
    """Raise TaxInputError naming the field an adjustment of its kind lacks or has wrong."""
    if not isinstance(adj.kind, AdjustmentKind):
        raise TaxInputError(f"unknown adjustment {adj.kind!r}", field="kind")
    if not adj.lot_id:
        raise TaxInputError("an adjustment names the lot it adjusts", field="lot")
    needs_quantity = adj.kind in (AdjustmentKind.QUANTITY, AdjustmentKind.OPEN)
    if needs_quantity and adj.quantity is None:
        raise TaxInputError(f"a {adj.kind} adjustment needs a quantity", field="quantity")
    if adj.quantity is not None and adj.quantity < 0:
        raise TaxInputError(f"quantity must not be negative, got {adj.quantity}", field="quantity")
    if adj.kind is AdjustmentKind.OPEN and adj.quantity == 0:
        raise TaxInputError("an opened lot needs a positive quantity", field="quantity")
    needs_basis = adj.kind in (AdjustmentKind.BASIS, AdjustmentKind.OPEN)
    if needs_basis and adj.basis is None:
        raise TaxInputError(f"a {adj.kind} adjustment needs a basis", field="basis")
    if adj.basis is not None and adj.basis < 0:
        raise TaxInputError(f"basis must not be negative, got {adj.basis}", field="basis")
    needs_date = adj.kind in (AdjustmentKind.DATE, AdjustmentKind.OPEN)
    if needs_date and adj.acquired is None:
        raise TaxInputError(f"a {adj.kind} adjustment needs a date", field="acquired")


def _first(pieces: Sequence[Lot]) -> list[Lot]:
    return sorted(pieces, key=lambda lot: (lot.seq, lot.lot_id))


def adjust_pieces(pieces: Sequence[Lot], adj: Adjustment) -> dict[str, Lot | None]:
    """The pieces of the adjusted lot after ``adj`` (quantity, basis, date, close): each
    changed piece's id to the piece, or None when it is closed. Pure."""
    out: dict[str, Lot | None] = {}
    if adj.kind is AdjustmentKind.CLOSE:
        return {lot.lot_id: None for lot in pieces}
    if adj.kind is AdjustmentKind.DATE:
        assert adj.acquired is not None
        day = adj.acquired
        for lot in pieces:
            start = lot.holding_start if lot.replacement else day
            if lot.acquired != day or lot.holding_start != start:
                out[lot.lot_id] = replace(lot, acquired=day, holding_start=start)
        return out
    ordered = _first(pieces)
    total_basis = sum((lot.cost_basis for lot in pieces), ZERO)
    if adj.kind is AdjustmentKind.BASIS:
        assert adj.basis is not None
        delta = cents(adj.basis) - total_basis
        if delta:
            first = ordered[0]
            out[first.lot_id] = replace(first, cost_basis=first.cost_basis + delta)
        return out
    assert adj.kind is AdjustmentKind.QUANTITY and adj.quantity is not None
    total = sum((lot.quantity for lot in pieces), ZERO)
    wanted = adj.quantity
    target = cents(adj.basis) if adj.basis is not None else cents(total_basis * wanted / total)
    new_quantity = {lot.lot_id: lot.quantity for lot in ordered}
    if wanted >= total:
        new_quantity[ordered[0].lot_id] += wanted - total
    else:
        cut = total - wanted
        for lot in reversed(ordered):
            take = min(lot.quantity, cut)
            new_quantity[lot.lot_id] -= take
            cut -= take
    scaled: dict[str, Decimal] = {}
    for lot in ordered:
        q = new_quantity[lot.lot_id]
        if q == lot.quantity:
            scaled[lot.lot_id] = lot.cost_basis
        elif q == 0:
            scaled[lot.lot_id] = ZERO
        else:
            scaled[lot.lot_id] = cents(lot.cost_basis * q / lot.quantity)
    alive = [lot for lot in ordered if new_quantity[lot.lot_id] > 0]
    if alive:
        scaled[alive[0].lot_id] += target - sum(scaled.values(), ZERO)
    for lot in ordered:
        q, basis = new_quantity[lot.lot_id], scaled[lot.lot_id]
        if q == 0:
            out[lot.lot_id] = None
        elif q != lot.quantity or basis != lot.cost_basis:
            out[lot.lot_id] = replace(lot, quantity=q, cost_basis=basis)
    return out


def opened_lot(adj: Adjustment, seq: int) -> Lot:
    """The lot an ``open`` adjustment opens (its purchase is the adjustment)."""
    assert adj.quantity is not None and adj.basis is not None and adj.acquired is not None
    return Lot(
        lot_id=adj.lot_id,
        account=adj.account,
        symbol=adj.symbol,
        quantity=adj.quantity,
        cost_basis=cents(adj.basis),
        acquired=adj.acquired,
        holding_start=adj.acquired,
        purchase_id=adj.adjustment_id,
        seq=seq,
    )


def changes_of(
    cause: str, before: Sequence[Lot], after: dict[str, Lot | None], opened: Lot | None
) -> list[Change]:
    """The journal of an adjustment: the change of each piece (kind ``adjust``, ``close``
    or ``open``) in quantity and basis."""
    out: list[Change] = []
    for lot in before:
        if lot.lot_id not in after:
            continue
        new = after[lot.lot_id]
        if new is None:
            out.append(
                Change(cause, "close", lot.account, lot.lot_id, -lot.quantity, -lot.cost_basis)
            )
        else:
            out.append(
                Change(
                    cause,
                    "adjust",
                    lot.account,
                    lot.lot_id,
                    new.quantity - lot.quantity,
                    new.cost_basis - lot.cost_basis,
                    f"acquired {new.acquired}" if new.acquired != lot.acquired else "",
                )
            )
    if opened is not None:
        out.append(
            Change(cause, "open", opened.account, opened.lot_id, opened.quantity, opened.cost_basis)
        )
    return out
