"""Tax-loss harvesting: find lots whose loss passes the thresholds, sell them, buy a
replacement that is not substantially identical, never create a wash sale.

A harvest is refused (listed in ``skipped`` with the reason) when selling would be washed
by a recent household purchase, when no replacement can be bought without washing a loss
(its own recent loss sale, or a loss harvested in the same run), or when no replacement
has a price. After a harvest the household must not buy the sold security (or anything
substantially identical) until ``swap_back_on``: the ledger's buy blocks say so.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

from ballast_engine.tax.model import (
    WASH_WINDOW_DAYS,
    ZERO,
    EquivalenceSet,
    Identity,
    Lot,
    TaxRates,
    Term,
    money,
    shift,
)


@dataclass(frozen=True, slots=True)
class HarvestPolicy:
    """Thresholds a lot's loss must reach: percent of basis AND dollars.

    ``schedule`` tightens (or loosens) them through the year: entries
    ``(from_month, percent, dollars)`` apply from that month on.
    """

    min_loss_percent: Decimal = Decimal(10)
    min_loss_dollars: Decimal = Decimal(100)
    schedule: tuple[tuple[int, Decimal, Decimal], ...] = ()
    swap_back: bool = True
    share_quantum: Decimal = Decimal(1)

    def thresholds(self, on: date) -> tuple[Decimal, Decimal]:
        pct, dollars = self.min_loss_percent, self.min_loss_dollars
        for month, p, d in sorted(self.schedule):
            if on.month >= month:
                pct, dollars = p, d
        return pct, dollars


@dataclass(frozen=True, slots=True)
class HarvestCandidate:
    lot: Lot
    price: Decimal
    loss: Decimal  # positive
    loss_percent: Decimal
    term: Term
    tax_saved: Decimal


@dataclass(frozen=True, slots=True)
class HarvestProposal:
    """Sell ``lots`` of ``sell_symbol`` at a loss and buy ``buy_quantity`` of
    ``buy_symbol`` with the proceeds; ``reason`` is a sentence a client can read."""

    account: str
    sell_symbol: str
    lots: tuple[tuple[str, Decimal], ...]
    quantity: Decimal
    proceeds: Decimal
    loss: Decimal
    tax_saved: Decimal
    buy_symbol: str
    buy_quantity: Decimal
    swap_back_on: date | None
    reason: str


@dataclass(frozen=True, slots=True)
class HarvestPlan:
    proposals: list[HarvestProposal] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (symbol, reason)

    @property
    def tax_saved(self) -> Decimal:
        return sum((p.tax_saved for p in self.proposals), ZERO)


def replacements_from_sets(
    sets: Iterable[EquivalenceSet], identity: Identity | None = None
) -> dict[str, list[str]]:
    """Replacements named by equivalence sets: for each member, the other members of its
    sets, in set order, leaving out those substantially identical to it."""
    ident = identity or Identity.from_sets([s for s in sets if s.identical])
    out: dict[str, list[str]] = {}
    for eq in sets:
        for symbol in eq.members:
            mine = out.setdefault(symbol, [])
            for other in eq.members:
                if other != symbol and other not in mine and not ident.identical(symbol, other):
                    mine.append(other)
    return out


def harvest_candidates(
    lots: Iterable[Lot],
    prices: Mapping[str, Decimal],
    on: date,
    policy: HarvestPolicy,
    rates: TaxRates,
) -> list[HarvestCandidate]:
    """Lots at a loss of at least the percent and dollar thresholds in force on ``on``,
    largest tax saved first."""
    pct, dollars = policy.thresholds(on)
    out: list[HarvestCandidate] = []
    for lot in lots:
        price = prices.get(lot.symbol)
        if price is None or lot.cost_basis <= 0:
            continue
        loss = lot.cost_basis - money(lot.quantity * price)
        if loss <= 0:
            continue
        loss_pct = loss * 100 / lot.cost_basis
        if loss_pct < pct or loss < dollars:
            continue
        term = lot.term_on(on)
        out.append(
            HarvestCandidate(lot, price, loss, loss_pct, term, money(loss * rates.rate(term)))
        )
    out.sort(key=lambda c: (-c.tax_saved, c.lot.symbol, c.lot.acquired, c.lot.seq))
    return out


def propose_harvests(
    account: str,
    lots: Sequence[Lot],
    prices: Mapping[str, Decimal],
    on: date,
    policy: HarvestPolicy,
    rates: TaxRates,
    *,
    replacements: Mapping[str, Sequence[str]],
    identity: Identity | None = None,
    buy_blocked: Collection[str] = (),
    sell_blocked: Collection[str] = (),
) -> HarvestPlan:
    """Harvest proposals for one taxable account.

    Args:
        account: the account.
        lots: its open lots.
        prices: current prices (securities and replacements).
        on: trade date.
        policy: thresholds, swap back, share quantum of the replacement buy.
        rates: the account's tax rates (for the tax saved).
        replacements: per security, the replacements named by its model or equivalence
            set, best first.
        identity: which securities are substantially identical.
        buy_blocked: symbols the household may not buy now (``TaxLedger.buy_blocks``).
        sell_blocked: ids of lots a recent purchase would wash (``TaxLedger.sell_blocks``).

    Returns:
        proposals (largest tax saved first) and the securities skipped, with reasons.
    """
    ident = identity or Identity()
    plan = HarvestPlan()
    by_symbol = _candidates_by_symbol(lots, prices, on, policy, rates, sell_blocked, plan)
    selling = {ident.key(s) for s in by_symbol}
    blocked = {ident.key(s) for s in buy_blocked}
    buying: set[str] = set()
    order = sorted(by_symbol, key=lambda s: (-sum(c.tax_saved for c in by_symbol[s]), s))
    for symbol in order:
        if ident.key(symbol) in buying:
            plan.skipped.append((symbol, "bought as a replacement in this run: selling would wash"))
            selling.discard(ident.key(symbol))
            continue
        choice, why = _replacement(symbol, replacements, prices, ident, blocked, selling)
        if choice is None:
            plan.skipped.append((symbol, why))
            selling.discard(ident.key(symbol))
            continue
        plan.proposals.append(
            _proposal(account, symbol, by_symbol[symbol], choice, prices, on, policy)
        )
        buying.add(ident.key(choice))
    return plan


def _candidates_by_symbol(
    lots: Sequence[Lot],
    prices: Mapping[str, Decimal],
    on: date,
    policy: HarvestPolicy,
    rates: TaxRates,
    sell_blocked: Collection[str],
    plan: HarvestPlan,
) -> dict[str, list[HarvestCandidate]]:
    """The harvest candidates per symbol, best first; a lot a recent purchase would wash is
    skipped (and noted in ``plan``)."""
    by_symbol: dict[str, list[HarvestCandidate]] = {}
    for cand in harvest_candidates(lots, prices, on, policy, rates):
        if cand.lot.lot_id in sell_blocked:
            plan.skipped.append(
                (cand.lot.symbol, f"lot {cand.lot.lot_id}: a recent purchase would wash the loss")
            )
            continue
        by_symbol.setdefault(cand.lot.symbol, []).append(cand)
    return by_symbol


def _replacement(
    symbol: str,
    replacements: Mapping[str, Sequence[str]],
    prices: Mapping[str, Decimal],
    ident: Identity,
    blocked: set[str],
    selling: set[str],
) -> tuple[str | None, str]:
    """The first named replacement that may be bought, or ``None`` and why none may."""
    why = "no replacement named"
    for repl in replacements.get(symbol, ()):
        key = ident.key(repl)
        if key == ident.key(symbol):
            why = f"{repl} is substantially identical to {symbol}"
        elif key in blocked:
            why = f"buying {repl} would wash a recent loss"
        elif key in selling:
            why = f"{repl} is harvested at a loss in this run"
        elif repl not in prices or prices[repl] <= 0:
            why = f"no price for {repl}"
        else:
            return repl, why
    return None, why


def _proposal(
    account: str,
    symbol: str,
    cands: list[HarvestCandidate],
    choice: str,
    prices: Mapping[str, Decimal],
    on: date,
    policy: HarvestPolicy,
) -> HarvestProposal:
    """Sell every candidate lot of ``symbol``, buy ``choice`` with the proceeds."""
    pct, dollars = policy.thresholds(on)
    quantity = sum((c.lot.quantity for c in cands), ZERO)
    price = cands[0].price
    proceeds = money(quantity * price)
    loss = sum((c.loss for c in cands), ZERO)
    saved = sum((c.tax_saved for c in cands), ZERO)
    buy_qty = Decimal(math.floor(proceeds / prices[choice] / policy.share_quantum))
    buy_qty *= policy.share_quantum
    swap = shift(on, WASH_WINDOW_DAYS + 1) if policy.swap_back else None
    basis = sum((c.lot.cost_basis for c in cands), ZERO)
    reason = (
        f"Tax-loss harvest: {symbol} is down {money(loss * 100 / basis)}% "
        f"(${loss} on {len(cands)} lot{'s' if len(cands) > 1 else ''}), past the "
        f"{pct}% and ${dollars} thresholds; selling saves an estimated ${saved} in tax, "
        f"and buying {choice}, which is similar but not substantially identical, keeps "
        f"the exposure"
        + (f"; it can be swapped back on or after {swap.isoformat()}." if swap else ".")
    )
    return HarvestProposal(
        account=account,
        sell_symbol=symbol,
        lots=tuple((c.lot.lot_id, c.lot.quantity) for c in cands),
        quantity=quantity,
        proceeds=proceeds,
        loss=loss,
        tax_saved=saved,
        buy_symbol=choice,
        buy_quantity=buy_qty,
        swap_back_on=swap,
        reason=reason,
    )
