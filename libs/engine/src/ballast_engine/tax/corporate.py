"""Corporate actions on lots: pure functions from (action, lots of one position) to the
lots after the action, the sales it caused and the cash income it paid.

:meth:`TaxLedger.apply_action <ballast_engine.tax.ledger.TaxLedger.apply_action>` applies an
action to every account holding the security, once per ``action_id``.

Fractions: when the new quantity of a lot is not a multiple of ``share_quantum`` (1 = whole
shares; e.g. 0.000001 for fractional direct-indexing accounts), the fraction is paid in
cash (``cash_price`` per new share): a sale on the action date with the basis the fraction
carries and the lot's holding period. Fractions are settled lot by lot.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from decimal import Decimal
from fractions import Fraction

from ballast_engine.tax.errors import CorporateActionError
from ballast_engine.tax.lots import relieve
from ballast_engine.tax.model import ZERO, Lot, Relief, ReliefMethod, money

ONE = Decimal(1)


@dataclass(frozen=True, slots=True)
class Split:
    """``numerator`` new shares for every ``denominator`` old (2-for-1: 2, 1; a 1-for-10
    reverse split: 1, 10). Total basis and dates are unchanged."""

    action_id: str
    symbol: str
    on: date
    numerator: int
    denominator: int
    cash_price: Decimal = ZERO
    share_quantum: Decimal = ONE


@dataclass(frozen=True, slots=True)
class SymbolChange:
    """New ticker/CUSIP for the same security: lots, basis and dates unchanged."""

    action_id: str
    symbol: str
    on: date
    new_symbol: str


@dataclass(frozen=True, slots=True)
class CashMerger:
    """The security is bought out for cash: every lot is sold at ``cash_per_share``."""

    action_id: str
    symbol: str
    on: date
    cash_per_share: Decimal


@dataclass(frozen=True, slots=True)
class StockMerger:
    """Each old share becomes ``ratio`` shares of ``new_symbol``; basis and holding period
    carry over."""

    action_id: str
    symbol: str
    on: date
    new_symbol: str
    ratio: Decimal
    cash_price: Decimal = ZERO
    share_quantum: Decimal = ONE


@dataclass(frozen=True, slots=True)
class SpinOff:
    """Each share receives ``ratio`` shares of ``new_symbol``; ``basis_percent`` of each
    lot's basis moves to the new shares, which keep the lot's holding period."""

    action_id: str
    symbol: str
    on: date
    new_symbol: str
    ratio: Decimal
    basis_percent: Decimal
    cash_price: Decimal = ZERO
    share_quantum: Decimal = ONE


@dataclass(frozen=True, slots=True)
class CashDividend:
    """Cash paid per share held: income, lots unchanged."""

    action_id: str
    symbol: str
    on: date
    per_share: Decimal


CorporateAction = Split | SymbolChange | CashMerger | StockMerger | SpinOff | CashDividend


@dataclass(frozen=True, slots=True)
class ActionOutcome:
    """``kept``: the position's lots after the action (same symbol); ``new_lots``: lots of
    another symbol (merger, spin-off, symbol change); ``reliefs``: sales caused (cash
    merger, cash in lieu); ``income``: cash dividend."""

    kept: list[Lot] = field(default_factory=list)
    new_lots: list[Lot] = field(default_factory=list)
    reliefs: list[Relief] = field(default_factory=list)
    income: Decimal = ZERO


def _dec(value: Fraction) -> Decimal:
    return Decimal(value.numerator) / Decimal(value.denominator)


def _convert(
    lot: Lot,
    ratio: Fraction,
    *,
    quantum: Decimal,
    cash_price: Decimal,
    on: date,
    sale_id: str,
    symbol: str,
    lot_id: str,
    basis: Decimal,
) -> tuple[Lot | None, Relief | None]:
    """``lot`` (carrying ``basis``) turned into ``quantity * ratio`` shares of ``symbol``,
    with the fraction below ``quantum`` paid in cash."""
    exact = Fraction(lot.quantity) * ratio
    q = Fraction(quantum)
    whole = Decimal(math.floor(exact / q)) * quantum
    frac = exact - Fraction(whole)
    converted = replace(lot, symbol=symbol, lot_id=lot_id, quantity=whole, cost_basis=basis)
    if frac == 0:
        return converted, None
    frac_basis = basis if whole == 0 else money(_dec(Fraction(basis) * frac / exact))
    relief = Relief(
        lot=replace(converted, quantity=_dec(exact), cost_basis=basis),
        quantity=_dec(frac).quantize(Decimal("0.00000001")),
        cost_basis=frac_basis,
        proceeds=money(_dec(frac * Fraction(cash_price))),
        sold=on,
        sale_id=sale_id,
    )
    if whole == 0:
        return None, relief
    return replace(converted, cost_basis=basis - frac_basis), relief


def _check(action: CorporateAction) -> None:
    def bad(problem: str) -> CorporateActionError:
        return CorporateActionError(problem, ref=f"action {action.action_id}")

    if not action.action_id:
        raise CorporateActionError("a corporate action needs an action id")
    if isinstance(action, Split) and (action.numerator <= 0 or action.denominator <= 0):
        raise bad(f"split ratio must be positive, got {action.numerator}:{action.denominator}")
    if isinstance(action, StockMerger | SpinOff) and action.ratio <= 0:
        raise bad(f"ratio must be positive, got {action.ratio}")
    if isinstance(action, SymbolChange | StockMerger | SpinOff) and (
        not action.new_symbol or action.new_symbol == action.symbol
    ):
        raise bad(f"new symbol must differ from {action.symbol}")
    if isinstance(action, SpinOff) and not (0 <= action.basis_percent <= 100):
        raise bad(f"basis percent must be within 0..100, got {action.basis_percent}")
    if isinstance(action, Split | StockMerger | SpinOff):
        if action.share_quantum <= 0:
            raise bad(f"share quantum must be positive, got {action.share_quantum}")
        if action.cash_price < 0:
            raise bad(f"cash price must not be negative, got {action.cash_price}")
    if isinstance(action, CashMerger) and action.cash_per_share < 0:
        raise bad(f"cash per share must not be negative, got {action.cash_per_share}")
    if isinstance(action, CashDividend) and action.per_share < 0:
        raise bad(f"dividend per share must not be negative, got {action.per_share}")


def apply_to_lots(action: object, lots: Sequence[Lot]) -> ActionOutcome:
    """Apply ``action`` to the lots of one position (one account and security).

    Raises:
        CorporateActionError: an invalid action, or a position without lots.
    """
    if not isinstance(action, CorporateAction):
        raise CorporateActionError(f"unknown corporate action {type(action).__name__}")
    _check(action)
    if not lots:
        raise CorporateActionError(f"{action.symbol} is not held", ref=f"action {action.action_id}")
    sale_id = action.action_id
    if isinstance(action, CashDividend):
        total = sum((lot.quantity for lot in lots), ZERO)
        return ActionOutcome(kept=list(lots), income=money(total * action.per_share))
    if isinstance(action, SymbolChange):
        return ActionOutcome(new_lots=[replace(lot, symbol=action.new_symbol) for lot in lots])
    if isinstance(action, CashMerger):
        total = sum((lot.quantity for lot in lots), ZERO)
        reliefs, _ = relieve(
            lots,
            total,
            ReliefMethod.FIFO,
            price=action.cash_per_share,
            sold=action.on,
            sale_id=sale_id,
        )
        return ActionOutcome(reliefs=reliefs)
    kept: list[Lot] = []
    new: list[Lot] = []
    reliefs = []
    for lot in lots:
        if isinstance(action, Split):
            out, relief = _split_lot(action, lot, sale_id)
            if out is not None:
                kept.append(out)
        elif isinstance(action, StockMerger):
            out, relief = _merged_lot(action, lot, sale_id)
            if out is not None:
                new.append(out)
        else:
            parent, out, relief = _spun_off_lot(action, lot, sale_id)
            kept.append(parent)
            if out is not None:
                new.append(out)
        if relief is not None:
            reliefs.append(relief)
    return ActionOutcome(kept=kept, new_lots=new, reliefs=reliefs)


def _split_lot(action: Split, lot: Lot, sale_id: str) -> tuple[Lot | None, Relief | None]:
    """The lot after a split (same symbol, id and basis), the fraction paid in cash."""
    return _convert(
        lot,
        Fraction(action.numerator, action.denominator),
        quantum=action.share_quantum,
        cash_price=action.cash_price,
        on=action.on,
        sale_id=sale_id,
        symbol=lot.symbol,
        lot_id=lot.lot_id,
        basis=lot.cost_basis,
    )


def _merged_lot(action: StockMerger, lot: Lot, sale_id: str) -> tuple[Lot | None, Relief | None]:
    """The lot as shares of the acquirer (same id and basis), the fraction paid in cash."""
    return _convert(
        lot,
        Fraction(action.ratio),
        quantum=action.share_quantum,
        cash_price=action.cash_price,
        on=action.on,
        sale_id=sale_id,
        symbol=action.new_symbol,
        lot_id=lot.lot_id,
        basis=lot.cost_basis,
    )


def _spun_off_lot(action: SpinOff, lot: Lot, sale_id: str) -> tuple[Lot, Lot | None, Relief | None]:
    """The parent lot with its basis reduced, the spun-off lot carrying the rest of the basis
    (and of the wash adjustment), and the spun-off fraction paid in cash."""
    child_basis = money(lot.cost_basis * action.basis_percent / 100)
    child_adj = money(lot.wash_adjustment * action.basis_percent / 100)
    parent = replace(
        lot,
        cost_basis=lot.cost_basis - child_basis,
        wash_adjustment=lot.wash_adjustment - child_adj,
    )
    out, relief = _convert(
        replace(lot, wash_adjustment=child_adj),
        Fraction(action.ratio),
        quantum=action.share_quantum,
        cash_price=action.cash_price,
        on=action.on,
        sale_id=sale_id,
        symbol=action.new_symbol,
        lot_id=f"{lot.lot_id}~{action.new_symbol}",
        basis=child_basis,
    )
    return parent, out, relief
