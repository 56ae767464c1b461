"""Wash sales: the matching rules (after the fact) and the blocks (before the fact).

After the fact (accounting), applied by :class:`~ballast_engine.tax.ledger.TaxLedger` as
trades arrive in date order:

* a taxable sale at a loss is matched to substantially identical shares bought within 30
  days before (and still held) or after it, in any account of the household, first bought
  first matched; shares of the purchase the sold shares came from never match;
* each matched share disallows the loss of one sold share (proportional disallowance);
  each replacement share absorbs one loss only;
* the disallowed loss is added to the replacement's basis and the sold shares' holding
  period is tacked onto the replacement's; in an IRA the loss is lost for good (no basis
  increase).

Before the fact (for the engine): :func:`buy_blocks` says what an account may not buy
without washing a recent loss, :func:`sell_blocks` which lots may not be sold at a loss
without being washed by a recent purchase.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date
from decimal import Decimal

from ballast_engine.tax.model import (
    WASH_WINDOW_DAYS,
    ZERO,
    Identity,
    Lot,
    prorate,
    shift,
)


def within_window(purchase: date, sale: date, days: int = WASH_WINDOW_DAYS) -> bool:
    """True when ``purchase`` is within ``days`` days before or after ``sale``."""
    return abs((purchase - sale).days) <= days


@dataclass(frozen=True, slots=True)
class Match:
    """Loss shares of one sale matched to shares of one replacement lot."""

    replacement_id: str
    quantity: Decimal
    disallowed: Decimal


def allocate_loss(
    quantity: Decimal, loss: Decimal, replacements: Sequence[tuple[str, Decimal]]
) -> tuple[list[Match], Decimal, Decimal]:
    """Match ``quantity`` loss shares carrying ``loss`` (positive) to replacement shares.

    Args:
        quantity: loss shares not yet matched.
        loss: the loss they carry, not yet disallowed (positive).
        replacements: (lot id, shares available) in matching order (first bought first).

    Returns:
        (matches, shares left unmatched, loss left allowed). The disallowed amounts are the
        loss prorated by shares in cents; matching every share disallows the loss exactly.
    """
    matches: list[Match] = []
    for lot_id, available in replacements:
        if quantity <= 0:
            break
        take = min(available, quantity)
        if take <= 0:
            continue
        disallowed = prorate(loss, take, quantity)
        matches.append(Match(lot_id, take, disallowed))
        quantity -= take
        loss -= disallowed
    return matches, quantity, loss


def wash_replacement(lot: Lot, disallowed: Decimal, held_days: int, *, ira: bool) -> Lot:
    """The replacement lot after absorbing a disallowed loss.

    Taxable: basis grows by ``disallowed`` and the holding period starts ``held_days``
    earlier (the sold shares' holding period is tacked on). IRA: nothing but the mark that
    these shares absorbed a loss (the loss is permanently disallowed).
    """
    if ira:
        return replace(lot, replacement=True)
    return replace(
        lot,
        replacement=True,
        cost_basis=lot.cost_basis + disallowed,
        wash_adjustment=lot.wash_adjustment + disallowed,
        holding_start=shift(lot.holding_start, -held_days),
    )


def replacement_candidates(
    household_lots: Iterable[Lot],
    symbols: Sequence[str],
    *,
    sold: date,
    exclude_purchase: str,
    days: int = WASH_WINDOW_DAYS,
) -> list[Lot]:
    """Open lots that would replace shares sold at a loss on ``sold``: substantially
    identical (``symbols``), bought within ``days`` before, not yet a replacement, not of
    the purchase ``exclude_purchase``; first bought first."""
    earliest = shift(sold, -days)
    found = [
        lot
        for lot in household_lots
        if lot.symbol in symbols
        and not lot.replacement
        and lot.purchase_id != exclude_purchase
        and earliest <= lot.acquired <= sold
    ]
    found.sort(key=lambda lot: (lot.acquired, lot.seq, lot.lot_id))
    return found


@dataclass(frozen=True, slots=True)
class LossWindow:
    """A recent loss sale whose shares are not all matched yet: buying a substantially
    identical security before ``sold + 30 days`` would wash (part of) it."""

    sale_id: str
    account: str
    symbol: str
    sold: date
    quantity: Decimal  # loss shares not matched yet
    loss: Decimal  # loss not disallowed yet (positive)


@dataclass(frozen=True, slots=True)
class BuyBlock:
    """Securities no account of the household may buy up to and including ``until``
    without washing ``loss`` (at most ``quantity`` shares would be washed)."""

    symbols: tuple[str, ...]
    until: date
    quantity: Decimal
    loss: Decimal
    sales: tuple[str, ...]

    @property
    def reason(self) -> str:
        names = "/".join(self.symbols)
        return (
            f"wash-sale avoidance: buying {names} on or before {self.until.isoformat()} "
            f"would disallow up to {self.loss} of recent losses ({self.quantity} shares)"
        )


def buy_blocks(
    windows: Iterable[LossWindow], on: date, identity: Identity | None = None
) -> list[BuyBlock]:
    """What a household may not buy on ``on`` without washing a recent loss.

    Args:
        windows: the household's loss sales with unmatched shares (any account).
        on: the day of the intended purchase.
        identity: which securities are substantially identical (default: same symbol).

    Returns:
        one block per group of substantially identical securities, sorted by symbol.
    """
    ident = identity or Identity()
    groups: dict[str, list[LossWindow]] = {}
    for w in windows:
        if w.quantity > 0 and w.sold <= on and within_window(on, w.sold):
            groups.setdefault(ident.key(w.symbol), []).append(w)
    blocks: list[BuyBlock] = []
    for _key, ws in sorted(groups.items()):
        blocks.append(
            BuyBlock(
                symbols=ident.members(ws[0].symbol),
                until=shift(max(w.sold for w in ws), WASH_WINDOW_DAYS),
                quantity=sum((w.quantity for w in ws), ZERO),
                loss=sum((w.loss for w in ws), ZERO),
                sales=tuple(sorted({w.sale_id for w in ws})),
            )
        )
    return blocks


def blocked_symbols(blocks: Iterable[BuyBlock]) -> frozenset[str]:
    return frozenset(s for b in blocks for s in b.symbols)


@dataclass(frozen=True, slots=True)
class SellBlock:
    """A lot that would be (partly) washed if sold at a loss up to and including
    ``until``, by recent purchases of substantially identical shares."""

    lot_id: str
    account: str
    symbol: str
    washable_quantity: Decimal
    until: date
    purchases: tuple[str, ...]

    @property
    def reason(self) -> str:
        return (
            f"wash-sale avoidance: selling lot {self.lot_id} of {self.symbol} at a loss on or "
            f"before {self.until.isoformat()} would be washed by recent purchases"
        )


def sell_blocks(
    account_lots: Iterable[Lot],
    household_lots: Iterable[Lot],
    on: date,
    *,
    identity: Identity | None = None,
    prices: Mapping[str, Decimal] | None = None,
) -> list[SellBlock]:
    """Lots of an account that may not be sold at a loss on ``on`` without a wash sale.

    Args:
        account_lots: the (taxable) account's open lots.
        household_lots: open lots of every account of the household (including these).
        on: the day of the intended sale.
        identity: which securities are substantially identical.
        prices: when given, only lots at a loss at these prices are reported.

    Returns:
        one block per lot that recent, unmatched purchases of another purchase would wash.
    """
    ident = identity or Identity()
    earliest = shift(on, -WASH_WINDOW_DAYS)
    recent: dict[str, list[Lot]] = {}
    for lot in household_lots:
        if not lot.replacement and earliest <= lot.acquired <= on:
            recent.setdefault(ident.key(lot.symbol), []).append(lot)
    blocks: list[SellBlock] = []
    for lot in account_lots:
        if prices is not None:
            price = prices.get(lot.symbol)
            if price is None or lot.quantity * price >= lot.cost_basis:
                continue
        same = recent.get(ident.key(lot.symbol), ())
        washers = [r for r in same if r.purchase_id != lot.purchase_id]
        if not washers:
            continue
        qty = min(lot.quantity, sum((r.quantity for r in washers), ZERO))
        blocks.append(
            SellBlock(
                lot_id=lot.lot_id,
                account=lot.account,
                symbol=lot.symbol,
                washable_quantity=qty,
                until=shift(max(r.acquired for r in washers), WASH_WINDOW_DAYS),
                purchases=tuple(sorted({r.purchase_id for r in washers})),
            )
        )
    return blocks
