"""Tax-aware lot choice for the engine: which lots to sell, at what tax cost.

Lots are ranked by tax cost per share (gain per share times the rate of the lot's term;
a loss is a negative cost, i.e. a benefit), so losses go first, then long-term gains,
short-term gains last. A yearly realized-gain budget caps the net gain (hard limit: the
choice stops short and reports the shortfall; warning: it sells and says so), and "avoid
short-term gains" leaves short-term gain lots alone. Lots whose loss a recent purchase
would wash are used only when nothing else is left, with a warning.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

from ballast_engine.tax.errors import TaxInputError
from ballast_engine.tax.lots import mintax_key
from ballast_engine.tax.model import ZERO, Disposal, Lot, TaxRates, Term, money


@dataclass(frozen=True, slots=True)
class GainBudget:
    """A yearly cap on net realized gains. ``hard``: never exceed it; else warn."""

    limit: Decimal
    realized_to_date: Decimal = ZERO
    hard: bool = True

    @property
    def remaining(self) -> Decimal:
        return self.limit - self.realized_to_date


@dataclass(frozen=True, slots=True)
class LotPolicy:
    avoid_short_term_gains: bool = False
    budget: GainBudget | None = None


@dataclass(frozen=True, slots=True)
class LotPick:
    lot_id: str
    quantity: Decimal
    gain: Decimal
    term: Term
    tax: Decimal


@dataclass(frozen=True, slots=True)
class LotChoice:
    """The lots chosen for a sale and what they realize; ``shortfall`` is the quantity the
    policy did not allow (0 when the whole quantity was chosen)."""

    picks: list[LotPick]
    quantity: Decimal
    shortfall: Decimal
    short_term_gain: Decimal
    long_term_gain: Decimal
    tax_cost: Decimal
    warnings: list[str] = field(default_factory=list)

    @property
    def lot_ids(self) -> tuple[str, ...]:
        return tuple(p.lot_id for p in self.picks)


def rank_lots(
    lots: Iterable[Lot],
    price: Decimal,
    on: date,
    rates: TaxRates,
    *,
    washable: Collection[str] = (),
) -> list[Lot]:
    """Lots best sold first: in min-tax order (``lots.mintax_key``: lowest tax cost per
    share, long-term before short-term on ties, then oldest); loss lots in ``washable`` (ids
    of lots a recent purchase would wash) last."""

    def key(lot: Lot) -> tuple[int, Decimal, int, date, int, str]:
        washed = lot.lot_id in washable and lot.quantity * price < lot.cost_basis
        return (int(washed), *mintax_key(lot, price, on, rates))

    return sorted(lots, key=key)


def _floor_to(value: Decimal, quantum: Decimal) -> Decimal:
    return Decimal(math.floor(value / quantum)) * quantum


def choose_lots(
    lots: Sequence[Lot],
    quantity: Decimal,
    price: Decimal,
    on: date,
    rates: TaxRates,
    *,
    policy: LotPolicy | None = None,
    washable: Collection[str] = (),
    share_quantum: Decimal = Decimal("0.000001"),
) -> LotChoice:
    """Choose lots to sell ``quantity`` shares at ``price`` on ``on`` at the least tax.

    Args:
        lots: the position's open lots.
        quantity: shares to sell, > 0.
        price: expected price per share.
        on: trade date (decides each lot's term).
        rates: the account's tax rates.
        policy: avoid short-term gains and/or a realized-gain budget.
        washable: ids of lots whose loss would be washed (see
            :func:`~ballast_engine.tax.wash.sell_blocks`).
        share_quantum: smallest tradable quantity, used when a hard budget cuts a lot.

    Returns:
        the picks, realized gains by term, the estimated tax cost (negative: saved), the
        shortfall when the policy stops the sale early, and warnings.
    """
    if quantity <= 0:
        raise TaxInputError(f"quantity must be positive, got {quantity}", field="quantity")
    policy = policy or LotPolicy()
    budget = policy.budget
    picks: list[LotPick] = []
    warnings: list[str] = []
    left = quantity
    net_gain = ZERO
    skipped_st = False
    budget_stop = False
    for lot in rank_lots(lots, price, on, rates, washable=washable):
        if left <= 0:
            break
        term = lot.term_on(on)
        gain_ps = price - lot.basis_per_share
        if policy.avoid_short_term_gains and term is Term.SHORT and gain_ps > 0:
            skipped_st = True
            continue
        take = min(lot.quantity, left)
        if budget is not None and gain_ps > 0:
            take, stopped = _within_budget(
                lot, take, gain_ps, budget, budget.remaining - net_gain, share_quantum, warnings
            )
            budget_stop = budget_stop or stopped
        if take <= 0:
            continue
        pick = _pick(lot, take, price, term, rates)
        if lot.lot_id in washable and pick.gain < 0:
            warnings.append(f"lot {lot.lot_id}: the loss would be washed by a recent purchase")
        picks.append(pick)
        net_gain += pick.gain
        left -= take
    if left > 0:
        warnings.append(_shortfall_warning(left, quantity, budget_stop, skipped_st))
    st = sum((p.gain for p in picks if p.term is Term.SHORT), ZERO)
    lt = sum((p.gain for p in picks if p.term is Term.LONG), ZERO)
    return LotChoice(
        picks=picks,
        quantity=quantity - left,
        shortfall=left,
        short_term_gain=st,
        long_term_gain=lt,
        tax_cost=sum((p.tax for p in picks), ZERO),
        warnings=warnings,
    )


def _within_budget(
    lot: Lot,
    take: Decimal,
    gain_ps: Decimal,
    budget: GainBudget,
    allowed: Decimal,
    share_quantum: Decimal,
    warnings: list[str],
) -> tuple[Decimal, bool]:
    """The shares of a gain lot the budget lets a sale take (``allowed``: gain left in the
    budget) and whether a hard budget stopped it; a warn-only budget warns instead."""
    fits = _floor_to(allowed / gain_ps, share_quantum) if allowed > 0 else ZERO
    if take <= fits:
        return take, False
    if budget.hard:
        return fits, True
    warnings.append(f"lot {lot.lot_id}: realized gains exceed the budget of {budget.limit}")
    return take, False


def _pick(lot: Lot, take: Decimal, price: Decimal, term: Term, rates: TaxRates) -> LotPick:
    """``take`` shares of ``lot`` sold at ``price``: the gain and its tax."""
    basis = lot.cost_basis if take == lot.quantity else money(lot.basis_per_share * take)
    gain = money(price * take) - basis
    return LotPick(lot.lot_id, take, gain, term, money(gain * rates.rate(term)))


def _shortfall_warning(
    left: Decimal, quantity: Decimal, budget_stop: bool, skipped_st: bool
) -> str:
    why = []
    if budget_stop:
        why.append("the realized-gain budget")
    if skipped_st:
        why.append("avoiding short-term gains")
    if not why:
        why.append("the open position")
    return f"{left} of {quantity} shares not chosen: limited by {' and '.join(why)}"


def estimate_tax(short_term_gain: Decimal, long_term_gain: Decimal, rates: TaxRates) -> Decimal:
    """Linear tax estimate of realized gains: each term at its rate, losses as a benefit,
    after netting a loss of one term against a gain of the other (as Schedule D does)."""
    st, lt = short_term_gain, long_term_gain
    if st < 0 < lt:
        lt, st = max(lt + st, ZERO), min(lt + st, ZERO)
    elif lt < 0 < st:
        st, lt = max(st + lt, ZERO), min(st + lt, ZERO)
    return money(st * rates.short_term + lt * rates.long_term)


def estimate_disposals(disposals: Iterable[Disposal], rates: TaxRates) -> Decimal:
    """Tax estimate of realized disposals (taxable accounts, after wash adjustments)."""
    st = lt = ZERO
    for d in disposals:
        if not d.reportable:
            continue
        if d.term is Term.SHORT:
            st += d.gain_loss
        else:
            lt += d.gain_loss
    return estimate_tax(st, lt, rates)
