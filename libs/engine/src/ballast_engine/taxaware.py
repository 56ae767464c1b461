"""Tax-aware rebalancing: the rebalancer with lots, tax rates, a gain budget and wash sales.

An account with ``Account.tax`` set is rebalanced here (``rebalance`` routes it); an account
without tax settings never comes here, so its result is exactly what it was.

1. **Wash sales before the fact.** Securities the household may not buy now without washing
   a recent loss (``tax.recent_loss_sales``, substantially identical members included)
   become do-not-buy for this rebalance, source ``wash-sale rule``. Lots a recent
   purchase would wash (this account's lots of the last 30 days, ``tax.recent_purchases``
   of the household, or a buy of the same security in this very proposal) are not sold at a
   loss, unless the sleeve cannot raise the cash it must (then they are, with a warning).
2. **Sell caps.** The rebalance is run, each proposed sale is given lots in the account's
   order (``mintax``: tax cost per share, losses first, long-term before short-term, as
   ``tax.choice.rank_lots``), and the lots a setting forbids are left out: short-term gain
   lots when "avoid short-term gains" is on, washable loss lots, and gain lots past a hard
   yearly gain budget (shared by the whole account; losses sold make room; the gain lots
   with the least tax per dollar raised go first). Where a sale needs more shares than its
   allowed lots give, the security gets a *sell cap* (``keep_shares`` of the tactical
   planner: the rest stays, freed cash and buys shrink) and the account is rebalanced
   again, until every sale fits. A warn-only budget never cuts: it warns.
3. **Explained.** Each sell names its lots (``Trade.lots``, ``lot_ids``; an IRA's too, in
   its relief order, so the custodian relieves the lots the ledger does) and carries its
   estimated tax (gain × the term's rate, negative = saved); a capped sale says why in its
   sentence and in a ``tax_sell_limited`` notice; ``RebalanceResult.tax`` sums the gains by
   term, the estimated tax (terms netted as on Schedule D), the budget before and after,
   the wash-sale blocks and the warnings.

Pure: no I/O, no clock (the trade date is ``tax.as_of``); the same input gives the same output.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import date
from decimal import Decimal
from typing import NoReturn

from ballast_engine.amounts import (
    decimal_of,
    floor_to_unit,
    number_text,
    share_unit,
    shares_text,
    usd,
)
from ballast_engine.core import rebalance_account
from ballast_engine.errors import SettingError
from ballast_engine.model import (
    TRADE_FIELDS,
    Account,
    Holding,
    LotSale,
    Notice,
    Reference,
    Request,
    Restriction,
    RestrictionKind,
    RestrictionScope,
    Side,
    TaxLot,
    TaxReport,
    TaxSettings,
    Trade,
)
from ballast_engine.model import RebalanceResult as Result
from ballast_engine.tax.choice import estimate_tax, rank_lots
from ballast_engine.tax.lots import order_lots
from ballast_engine.tax.model import (
    RELIEF_METHOD_NAMES,
    WASH_WINDOW_DAYS,
    ZERO,
    Identity,
    Lot,
    ReliefMethod,
    TaxRates,
    Term,
    money,
    shift,
)
from ballast_engine.tax.model import EquivalenceSet as TaxEquivalenceSet
from ballast_engine.tax.wash import BuyBlock, LossWindow, SellBlock, buy_blocks, sell_blocks
from ballast_engine.validate import ref_index

WASH_SOURCE = "wash-sale rule"  # source of the do-not-buy restrictions buy blocks become
ACCOUNT_TYPES = ("taxable", "ira")
MAX_ROUNDS = 8  # capped re-runs before the safe fallback
_QTY_TOL = Decimal("0.000001")

Key = tuple[str, str]  # (sleeve id, symbol)


# --------------------------------------------------------------------------------------------
# Inputs -> tax engine data


def _date(text: str, *, account: str, field: str, sleeve: str | None = None) -> date:
    try:
        return date.fromisoformat(text)
    except (TypeError, ValueError):
        raise SettingError(
            f"must be an ISO date (YYYY-MM-DD), got {text!r}",
            account=account,
            sleeve=sleeve,
            field=field,
        ) from None


@dataclass(frozen=True, slots=True)
class SaleOrder:
    """How an account orders the lots it sells: its relief method, the trade date, its rates
    and the loss lots a recent purchase would wash (sold last)."""

    method: ReliefMethod
    on: date
    rates: TaxRates
    washable: frozenset[str]

    def rank(self, lots: list[Lot], price: Decimal) -> list[Lot]:
        """The lots in the order the account sells them."""
        if self.method is ReliefMethod.MINTAX:
            return rank_lots(lots, price, self.on, self.rates, washable=self.washable)
        return order_lots(lots, self.method)


class Position:
    """A holding with lots: what the price is, and its lots as the tax engine's (``lots``)
    and in the order they are sold (``ranked``), both made when first read: most positions
    of a rebalance sell nothing. The lots were checked when the position was made."""

    __slots__ = (
        "_lots",
        "_ranked",
        "account_id",
        "first_seq",
        "holding",
        "key",
        "order",
        "price",
        "qty",
        "unit",
    )

    def __init__(
        self, key: Key, unit: float, price: Decimal, holding: Holding, account_id: str, seq: int
    ) -> None:
        self.key, self.qty, self.unit, self.price = key, holding.quantity, unit, price
        self.holding, self.account_id = holding, account_id
        self.first_seq = seq  # the sale-order tie-break of its lots, numbered across the account
        self.order: SaleOrder | None = None  # set when the account's context is made
        self._lots: list[Lot] | None = None
        self._ranked: list[Lot] | None = None

    @property
    def lots(self) -> list[Lot]:
        if self._lots is None:
            self._lots = _holding_lots(self.account_id, self.key[0], self.holding, self.first_seq)
        return self._lots

    @property
    def ranked(self) -> list[Lot]:
        if self._ranked is None:
            assert self.order is not None, "a position is ranked once its context is made"
            self._ranked = self.order.rank(self.lots, self.price)
        return self._ranked


@dataclass(slots=True)
class TaxContext:
    """Everything tax-aware rebalancing and harvesting need about one account."""

    account: Account  # with the wash-sale do-not-buy restrictions added
    settings: TaxSettings
    on: date
    taxable: bool
    rates: TaxRates
    method: ReliefMethod
    identity: Identity
    positions: dict[Key, Position]
    no_lots: set[Key]  # holdings without lots (taxable accounts: not named, not estimated)
    blocks: list[BuyBlock]
    buy_blocked: frozenset[str]  # symbols the household may not buy now
    sell_blocks: list[SellBlock]
    washable: frozenset[str]  # lot ids a recent purchase would wash if sold at a loss
    prices: dict[str, Decimal]

    def term(self, lot: Lot) -> Term:
        return lot.term_on(self.on)


def identity_of(ref: Reference, account: str = "") -> Identity:
    """Substantially identical securities: the equivalence sets marked ``identical``."""
    sets = [
        TaxEquivalenceSet(e.set_id, tuple(e.members), True)
        for e in ref.equivalence_sets
        if e.identical
    ]
    try:
        return Identity.from_sets(sets)
    except ValueError as exc:
        raise SettingError(str(exc), account=account, field="equivalence_sets") from None


def _check_settings(tax: TaxSettings, aid: str) -> tuple[date, ReliefMethod, TaxRates]:
    on = _date(tax.as_of, account=aid, field="tax.as_of")
    if tax.account_type not in ACCOUNT_TYPES:
        raise SettingError(
            f"must be one of {', '.join(ACCOUNT_TYPES)}, got {tax.account_type!r}",
            account=aid,
            field="tax.account_type",
        )
    if tax.method not in RELIEF_METHOD_NAMES:
        raise SettingError(
            f"must be one of {', '.join(RELIEF_METHOD_NAMES)}, got {tax.method!r}",
            account=aid,
            field="tax.method",
        )
    for name in ("short_term_rate", "long_term_rate"):
        r = getattr(tax, name)
        if not (isinstance(r, int | float) and math.isfinite(r) and 0 <= r <= 1):
            raise SettingError(
                f"must be a rate between 0 and 1, got {r!r}", account=aid, field=f"tax.{name}"
            )
    b = tax.gain_budget
    if b is not None and not (math.isfinite(b.limit) and math.isfinite(b.realized_to_date)):
        raise SettingError("must be finite amounts", account=aid, field="tax.gain_budget")
    h = tax.harvest
    if h is not None:
        if not (0 <= h.min_loss_percent <= 100 and h.min_loss_dollars >= 0):
            raise SettingError(
                "thresholds must be a percent in 0-100 and dollars >= 0",
                account=aid,
                field="tax.harvest",
            )
        for month, pct, dollars in h.schedule:
            if not (1 <= month <= 12 and 0 <= pct <= 100 and dollars >= 0):
                raise SettingError(
                    f"schedule entry ({month}, {pct}, {dollars}): month 1-12, percent 0-100, "
                    "dollars >= 0",
                    account=aid,
                    field="tax.harvest.schedule",
                )
    rates = TaxRates(decimal_of(tax.short_term_rate), decimal_of(tax.long_term_rate))
    return on, ReliefMethod(tax.method), rates


def _decimal_prices(ref: Reference) -> dict[str, Decimal]:
    """Every usable price as the tax engine's Decimal, worked out once per reference (a book
    shares one reference over thousands of accounts). Read only."""
    cached: dict[str, Decimal] = ref_index(ref).decimal_prices
    if not cached:
        cached.update(
            (s, decimal_of(sec.price))
            for s, sec in ref.securities.items()
            if sec.price is not None and math.isfinite(sec.price) and sec.price > 0
        )
    return cached


def tax_context(account: Account, ref: Reference) -> TaxContext:
    """Check the account's tax settings and lots and turn them into tax-engine data:
    lots per holding, buy blocks (household loss sales) and sell blocks (recent purchases).

    Raises:
        SettingError: a bad date, rate, method, threshold or lot, naming the field.
    """
    tax = account.tax
    aid = account.account_id
    if tax is None:
        raise SettingError("the account has no tax settings", account=aid, field="tax")
    on, method, rates = _check_settings(tax, aid)
    ident = identity_of(ref, aid)
    prices = _decimal_prices(ref)
    taxable = tax.account_type == "taxable"
    positions, no_lots, recent = _positions(account, ref, on, prices)
    # buy blocks: recent household loss sales not yet matched
    blocks = buy_blocks(_loss_windows(tax, aid, on), on, ident)
    blocked = frozenset(s for b in blocks for s in b.symbols)
    purchases = _household_purchases(tax, aid, on)
    sblocks = _sell_blocks(positions, recent, purchases, on, ident, prices) if taxable else []
    washable = frozenset(b.lot_id for b in sblocks)
    order = SaleOrder(method, on, rates, washable)
    for p in positions.values():
        p.order = order
    return TaxContext(
        account=_with_wash_restrictions(account, blocked, ref),
        settings=tax,
        on=on,
        taxable=taxable,
        rates=rates,
        method=method,
        identity=ident,
        positions=positions,
        no_lots=no_lots,
        blocks=blocks,
        buy_blocked=blocked,
        sell_blocks=sblocks,
        washable=washable,
        prices=prices,
    )


def _sell_blocks(
    positions: Mapping[Key, Position],
    recent: set[str],
    purchases: list[Lot],
    on: date,
    ident: Identity,
    prices: Mapping[str, Decimal],
) -> list[SellBlock]:
    """Sell blocks of the account's lots: by its own lots of the last 30 days and the
    household's purchases. Only lots of a security (or a substantially identical one)
    bought in the window can be washed, so only those positions' lots are looked at (in
    the account's order, as the whole account's would be)."""
    keys = {ident.key(s) for s in recent} | {ident.key(p.symbol) for p in purchases}
    account_lots = [
        lot for key, p in positions.items() if ident.key(key[1]) in keys for lot in p.lots
    ]
    return sell_blocks(account_lots, account_lots + purchases, on, identity=ident, prices=prices)


def _positions(
    account: Account, ref: Reference, on: date, prices: Mapping[str, Decimal]
) -> tuple[dict[Key, Position], set[Key], set[str]]:
    """The account's holdings with lots as positions (their lots checked), the holdings
    without lots, and the symbols of lots bought in the wash-sale window (replacement lots
    excepted: they wash nothing)."""
    positions: dict[Key, Position] = {}
    no_lots: set[Key] = set()
    seen_ids: set[str] = set()
    recent: set[str] = set()
    earliest = shift(on, -WASH_WINDOW_DAYS)
    seq = 0  # the lots' sale-order tie-break, across the account
    for sl in account.sleeves:
        st = sl.settings
        for h in sl.holdings:
            key = (sl.sleeve_id, h.symbol)
            if h.quantity <= 0:
                continue
            if not h.lots:
                no_lots.add(key)
                continue
            first = seq
            seq += _check_lots(account.account_id, sl.sleeve_id, h, on, seen_ids, earliest, recent)
            sec = ref.securities[h.symbol]
            unit = share_unit(st.fractional, sec.fractional, st.share_decimals)
            positions[key] = Position(key, unit, prices[h.symbol], h, account.account_id, first)
    return positions, no_lots, recent


def _check_lots(
    aid: str,
    sleeve_id: str,
    h: Holding,
    on: date,
    seen_ids: set[str],
    earliest: date,
    recent: set[str],
) -> int:
    """Check a holding's tax lots; returns how many have shares (the others are left out)
    and adds its symbol to ``recent`` if one was bought on or after ``earliest``."""
    count = 0
    for tl in h.lots:
        try:
            acquired: date | None = date.fromisoformat(tl.acquired)
        except (TypeError, ValueError):
            acquired = None
        if tl.lot_id in seen_ids or acquired is None or acquired > on or not 0 <= tl.cost < INF:
            _lot_problem(aid, sleeve_id, h, tl, on, seen_ids)
        seen_ids.add(tl.lot_id)
        if tl.quantity > 0:
            count += 1
            if acquired >= earliest and not tl.replacement:
                recent.add(h.symbol)
    return count


INF = math.inf


def _lot_problem(
    aid: str, sleeve_id: str, h: Holding, tl: TaxLot, on: date, seen_ids: set[str]
) -> NoReturn:
    """Raise the first problem of a lot that has one, naming the field."""
    where = {"account": aid, "sleeve": sleeve_id}
    if tl.lot_id in seen_ids:
        raise SettingError(
            f"tax lot {tl.lot_id!r} appears twice in the account",
            security=h.symbol,
            field="lots.lot_id",
            **where,
        )
    acquired = _date(tl.acquired, field="lots.acquired", **where)
    if acquired > on:
        raise SettingError(
            f"tax lot {tl.lot_id!r} was acquired {acquired} after the trade date {on} (tax.as_of)",
            security=h.symbol,
            field="lots.acquired",
            **where,
        )
    raise SettingError(
        f"tax lot {tl.lot_id!r} cost must be an amount >= 0, got {tl.cost!r}",
        security=h.symbol,
        field="lots.cost",
        **where,
    )


def _holding_lots(aid: str, sleeve_id: str, h: Holding, seq: int) -> list[Lot]:
    """A holding's tax lots (checked by ``_check_lots``) as the tax engine's lots, numbered
    after ``seq``; lots of no shares are left out."""
    lots: list[Lot] = []
    for tl in h.lots:
        if tl.quantity <= 0:
            continue
        seq += 1
        acquired = date.fromisoformat(tl.acquired)
        q = tl.quantity
        # a whole number of shares as decimal_of gives it, without the text in between
        quantity = Decimal(int(q)) if q < 1e15 and q == int(q) else decimal_of(q)
        lots.append(
            Lot(  # lot_id, account, symbol, quantity, cost_basis, acquired, holding_start,
                # purchase_id, sleeve, seq, replacement
                tl.lot_id,
                aid,
                h.symbol,
                quantity,
                money(decimal_of(tl.cost)),
                acquired,
                acquired,
                tl.lot_id,
                sleeve_id,
                seq,
                tl.replacement,
            )
        )
    return lots


def _loss_windows(tax: TaxSettings, aid: str, on: date) -> list[LossWindow]:
    """The household's recent loss sales, checked, as wash-sale windows."""
    windows = []
    for i, ls in enumerate(tax.recent_loss_sales):
        sold = _date(ls.sold_on, account=aid, field=f"tax.recent_loss_sales[{i}].sold_on")
        if sold > on:
            raise SettingError(
                f"loss sale of {ls.symbol} on {sold} is after the trade date {on}",
                account=aid,
                field=f"tax.recent_loss_sales[{i}].sold_on",
            )
        if not (math.isfinite(ls.quantity) and ls.quantity >= 0 and ls.loss_per_share >= 0):
            raise SettingError(
                "quantity and loss_per_share must be non-negative",
                account=aid,
                field=f"tax.recent_loss_sales[{i}]",
            )
        qty = decimal_of(ls.quantity)
        windows.append(
            LossWindow(
                f"loss-sale-{i}",
                "",
                ls.symbol,
                sold,
                qty,
                money(qty * decimal_of(ls.loss_per_share)),
            )
        )
    return windows


def _household_purchases(tax: TaxSettings, aid: str, on: date) -> list[Lot]:
    """The household's recent purchases in other accounts, checked, as lots (for the sell
    blocks)."""
    out = []
    for i, rp in enumerate(tax.recent_purchases):
        acquired = _date(rp.acquired, account=aid, field=f"tax.recent_purchases[{i}].acquired")
        if acquired > on:
            raise SettingError(
                f"purchase of {rp.symbol} on {acquired} is after the trade date {on}",
                account=aid,
                field=f"tax.recent_purchases[{i}].acquired",
            )
        if not (math.isfinite(rp.quantity) and rp.quantity > 0):
            raise SettingError(
                "quantity must be positive", account=aid, field=f"tax.recent_purchases[{i}]"
            )
        out.append(
            Lot(
                lot_id=f"household-purchase-{i}",
                account="",
                symbol=rp.symbol,
                quantity=decimal_of(rp.quantity),
                cost_basis=ZERO,
                acquired=acquired,
                holding_start=acquired,
                purchase_id=rp.purchase_id or f"household-purchase-{i}",
            )
        )
    return out


def _with_wash_restrictions(account: Account, blocked: frozenset[str], ref: Reference) -> Account:
    """The account with a do-not-buy restriction (source ``WASH_SOURCE``) on each security
    the household may not buy now."""
    extra = tuple(
        Restriction(RestrictionKind.DO_NOT_BUY, RestrictionScope.SECURITY, s, WASH_SOURCE)
        for s in sorted(blocked)
        if s in ref.securities
    )
    return replace(account, restrictions=account.restrictions + extra) if extra else account


# --------------------------------------------------------------------------------------------
# Lot allocation under the settings


@dataclass(slots=True)
class Allocation:
    """Lots allowed for the proposed sales: per position the (lot, shares) picks in sale
    order and why a sale could not be covered in full (``short_term``, ``wash``,
    ``budget``)."""

    picks: dict[Key, list[tuple[Lot, Decimal]]]
    allowed: dict[Key, Decimal]
    limits: dict[Key, set[str]]


def lot_gain(lot: Lot, quantity: Decimal, price: Decimal) -> tuple[Decimal, Decimal, Decimal]:
    """(proceeds, basis, gain) of ``quantity`` shares of ``lot`` sold at ``price``."""
    basis = lot.cost_basis if quantity == lot.quantity else money(lot.basis_per_share * quantity)
    proceeds = money(price * quantity)
    return proceeds, basis, proceeds - basis


def blocked_reason(
    ctx: TaxContext, lot: Lot, price: Decimal, washable: Iterable[str] | frozenset[str]
) -> str | None:
    """Why this lot may not be sold now (None: it may)."""
    gain_ps = price - lot.basis_per_share
    if ctx.settings.avoid_short_term_gains and gain_ps > 0 and ctx.term(lot) is Term.SHORT:
        return "short_term"
    if gain_ps < 0 and lot.lot_id in washable:
        return "wash"
    return None


def allocate_lots(
    ctx: TaxContext, desired: Mapping[Key, Decimal], washable: frozenset[str]
) -> Allocation:
    """Choose the lots of the proposed sales (``desired`` shares per position) under the
    account's settings; ``washable`` are the loss lots that may not be sold."""
    picks: dict[Key, list[tuple[Lot, Decimal]]] = {}
    limits: dict[Key, set[str]] = {}
    segs: list[tuple[Key, int, Lot, Decimal]] = []
    for key in sorted(desired):
        pos = ctx.positions[key]
        left = desired[key]
        skipped: set[str] = set()
        for i, lot in enumerate(pos.ranked):
            if left <= 0:
                break
            why = blocked_reason(ctx, lot, pos.price, washable)
            if why is not None:
                skipped.add(why)
                continue
            take = min(lot.quantity, left)
            left -= take
            segs.append((key, i, lot, take))
        if left > _QTY_TOL:
            limits[key] = skipped or {"lots"}
    budget = ctx.settings.gain_budget
    admitted: list[tuple[Key, int, Lot, Decimal]] = []
    if budget is not None and budget.hard:
        gains = []
        room = max(decimal_of(budget.remaining), ZERO)
        for seg in segs:
            key, _i, lot, q = seg
            g = lot_gain(lot, q, ctx.positions[key].price)[2]
            if g <= 0:
                admitted.append(seg)
                room -= g  # a loss makes room
            else:
                gains.append(seg)

        def cost(seg: tuple[Key, int, Lot, Decimal]) -> tuple[Decimal, Key, int]:
            key, i, lot, _q = seg
            price = ctx.positions[key].price
            rate = ctx.rates.rate(ctx.term(lot))
            return ((price - lot.basis_per_share) * rate / price, key, i)

        for seg in sorted(gains, key=cost):
            key, i, lot, q = seg
            pos = ctx.positions[key]
            g = lot_gain(lot, q, pos.price)[2]
            if g <= room:
                admitted.append(seg)
                room -= g
                continue
            limits.setdefault(key, set()).add("budget")
            unit = decimal_of(pos.unit)
            gain_ps = pos.price - lot.basis_per_share
            fits = (room / gain_ps / unit).to_integral_value(rounding="ROUND_FLOOR") * unit
            fits = min(fits, q)
            while fits > 0 and lot_gain(lot, fits, pos.price)[2] > room:
                fits -= unit
            if fits > 0:
                admitted.append((key, i, lot, fits))
                room -= lot_gain(lot, fits, pos.price)[2]
    else:
        admitted = segs
    admitted.sort(key=lambda s: (s[0], s[1]))
    allowed: dict[Key, Decimal] = dict.fromkeys(desired, ZERO)
    for key, _i, lot, q in admitted:
        picks.setdefault(key, []).append((lot, q))
        allowed[key] += q
    return Allocation(picks, allowed, limits)


# --------------------------------------------------------------------------------------------
# The capped rebalance


def _sells(ctx: TaxContext, result: Result) -> dict[Key, Decimal]:
    out: dict[Key, Decimal] = {}
    for t in result.trades:
        key = (t.sleeve_id, t.symbol)
        if t.side is Side.SELL and key in ctx.positions:
            out[key] = out.get(key, ZERO) + t.quantity
    return out


def _same_run_washable(ctx: TaxContext, result: Result, sells: Mapping[Key, Decimal]) -> set[str]:
    """Loss lots of sales whose security (or a substantially identical one) the same
    proposal buys: selling them at a loss would be washed by that purchase."""
    bought = {ctx.identity.key(t.symbol) for t in result.trades if t.side is Side.BUY}
    out: set[str] = set()
    for key in sells:
        if ctx.identity.key(key[1]) in bought:
            pos = ctx.positions[key]
            out.update(lot.lot_id for lot in pos.lots if lot.basis_per_share > pos.price)
    return out


@dataclass(slots=True)
class _Run:
    result: Result
    alloc: Allocation
    limits: dict[Key, set[str]]
    washable: frozenset[str]
    fallback: bool = False


def _capped(ctx: TaxContext, ref: Reference, req: Request, base: Result, strict: bool) -> _Run:
    """The core rebalance run again with sell caps until every sale fits the lots the tax
    settings allow (``strict``: washable loss lots are not sold), else the safe fallback."""
    keep: dict[str, dict[str, float]] = {}
    limits: dict[Key, set[str]] = {}
    washable = ctx.washable if strict else frozenset()
    result = base

    def tighten(key: Key, allowed: Decimal) -> None:
        pos = ctx.positions[key]
        cap = floor_to_unit(float(allowed), pos.unit)
        k = max(pos.qty - cap, 0.0)
        sleeve = keep.setdefault(key[0], {})
        sleeve[key[1]] = max(sleeve.get(key[1], 0.0), k)

    for _ in range(MAX_ROUNDS):
        sells = _sells(ctx, result)
        if strict:
            washable = washable | _same_run_washable(ctx, result, sells)
        alloc = allocate_lots(ctx, sells, washable)
        over = [k for k in sorted(sells) if alloc.allowed[k] < sells[k] - _QTY_TOL]
        if not over:
            return _Run(result, alloc, limits, washable)
        for key in over:
            limits.setdefault(key, set()).update(alloc.limits.get(key, {"lots"}))
            tighten(key, alloc.allowed[key])
        result = rebalance_account(ctx.account, ref, req, keep)
    # did not settle: sell only what realizes no gain at all, then (if even that does not
    # fit) nothing of a position with lots
    for attempt in range(2):
        for key, pos in ctx.positions.items():
            if attempt == 0:
                ok = sum(
                    (
                        lot.quantity
                        for lot in pos.lots
                        if lot.basis_per_share >= pos.price
                        and blocked_reason(ctx, lot, pos.price, washable) is None
                    ),
                    ZERO,
                )
            else:
                ok = ZERO
            tighten(key, ok)
            limits.setdefault(key, set())
        result = rebalance_account(ctx.account, ref, req, keep)
        sells = _sells(ctx, result)
        alloc = allocate_lots(ctx, sells, washable)
        if all(alloc.allowed[k] >= sells[k] - _QTY_TOL for k in sells):
            break
    return _Run(result, alloc, limits, washable, fallback=True)


_SHORTFALL = ("cash_shortfall", "withdrawal_shortfall")


def rebalance_tax_aware(account: Account, ref: Reference, req: Request) -> Result:
    """Tax-aware rebalance of one validated account (``Account.tax`` set): the core's
    rebalance with the lots the settings allow, explained (see the module docstring)."""
    ctx = tax_context(account, ref)
    base = rebalance_account(ctx.account, ref, req)
    if not ctx.taxable:
        return _annotate(ctx, base, base, None)
    run = _capped(ctx, ref, req, base, strict=True)
    if any("wash" in v for v in run.limits.values()) and _shortfalls(run.result) > _shortfalls(
        base
    ):
        # keeping the washable lots leaves the sleeve short of cash it must raise (a
        # withdrawal, the reserve): selling them is unavoidable, and reported
        loose = _capped(ctx, ref, req, base, strict=False)
        if _shortfalls(loose.result) < _shortfalls(run.result):
            run = loose
    return _annotate(ctx, base, run.result, run)


def _shortfalls(result: Result) -> int:
    return sum(1 for n in result.notices if n.code in _SHORTFALL)


# --------------------------------------------------------------------------------------------
# Explanations and the tax report


def lot_sales(ctx: TaxContext, picks: list[tuple[Lot, Decimal]], price: Decimal) -> list[LotSale]:
    out = []
    for lot, q in picks:
        proceeds, basis, gain = lot_gain(lot, q, price)
        term = ctx.term(lot)
        out.append(
            LotSale(
                lot.lot_id,
                q,
                lot.acquired.isoformat(),
                basis,
                proceeds,
                gain,
                term.value,
                money(gain * ctx.rates.rate(term)),
            )
        )
    return out


def name_lots(picks: list[tuple[Lot, Decimal]], quantity: Decimal) -> list[tuple[Lot, Decimal]]:
    """The first ``quantity`` shares of the allowed picks, in sale order."""
    out = []
    left = quantity
    for lot, q in picks:
        if left <= 0:
            break
        take = min(q, left)
        out.append((lot, take))
        left -= take
    return out


def lots_sentence(sales: list[LotSale]) -> str:
    parts = [
        f"{s.lot_id} ({shares_text(s.quantity)} bought {s.acquired}, {s.term}-term "
        f"{'gain' if s.gain >= 0 else 'loss'} {usd(abs(s.gain))})"
        for s in sales
    ]
    tax = sum((s.tax for s in sales), ZERO)
    what = f"estimated tax {usd(tax)}" if tax >= 0 else f"estimated tax saved {usd(-tax)}"
    return f" Lots relieved: {'; '.join(parts)}; {what}."


def limit_reasons(ctx: TaxContext, why: set[str]) -> str:
    texts = []
    b = ctx.settings.gain_budget
    if "budget" in why and b is not None:
        texts.append(
            f"more would take this year's net realized gains past the hard budget of "
            f"{usd(money(decimal_of(b.limit)))} ({usd(money(decimal_of(b.remaining)))} left "
            "before this proposal)"
        )
    if "short_term" in why:
        texts.append("the other lots would realize short-term gains, which this account avoids")
    if "wash" in why:
        texts.append(
            "the other lots would be sold at a loss that a recent purchase of the same (or a "
            "substantially identical) security in the household would wash (wash-sale "
            "avoidance)"
        )
    if not texts:
        texts.append("the tax settings allow no more")
    return " and ".join(texts)


@dataclass(slots=True)
class _Realized:
    """What the proposal's sells realize: gains by term and the washable loss lots sold."""

    short_term: Decimal
    long_term: Decimal
    washed: list[str] = field(default_factory=list)

    def add(self, ctx: TaxContext, sales: list[LotSale]) -> None:
        for s in sales:
            if s.term == Term.SHORT.value:
                self.short_term += s.gain
            else:
                self.long_term += s.gain
            if s.gain < 0 and s.lot_id in ctx.washable:
                self.washed.append(s.lot_id)


def _annotate(ctx: TaxContext, base: Result, result: Result, run: _Run | None) -> Result:
    """Lots, estimated tax and explanations on the trades; tax notices and the report."""
    notices = [
        Notice("wash_sale_buy_block", b.reason, None, "/".join(b.symbols)) for b in ctx.blocks
    ]
    desired = _sells(ctx, base) if run is not None else {}
    final = _sells(ctx, result) if run is not None else {}
    realized = _Realized(money(ZERO), money(ZERO))
    new_trades: dict[int, Trade] = {}
    no_lots_noted: set[Key] = set()
    for t in result.trades:
        key = (t.sleeve_id, t.symbol)
        if t.side is not Side.SELL:
            continue
        if not ctx.taxable:
            new_trades[id(t)] = _untaxed_sell(ctx, t)
            continue
        if key not in ctx.positions:
            if key not in no_lots_noted:
                no_lots_noted.add(key)
                notices.append(_no_lots_notice(t))
            continue
        assert run is not None
        new_trades[id(t)] = _sell_with_lots(ctx, t, run, desired, final, realized)
    if run is not None:
        notices.extend(_limit_notices(ctx, run, desired, final))
    notices.extend(_realized_warnings(ctx, realized))
    return replace(
        result,
        trades=tuple(new_trades.get(id(t), t) for t in result.trades),
        sleeves=tuple(
            replace(s, trades=tuple(new_trades.get(id(t), t) for t in s.trades))
            for s in result.sleeves
        ),
        notices=tuple(result.notices) + tuple(notices),
        tax=_tax_report(ctx, realized, notices),
    )


def _no_lots_notice(t: Trade) -> Notice:
    return Notice(
        "no_tax_lots",
        f"{t.symbol} has no tax lots: the sale names no lots and its tax is not estimated",
        t.sleeve_id,
        t.symbol,
    )


def _untaxed_sell(ctx: TaxContext, t: Trade) -> Trade:
    """A sell of an account that pays no tax on it (an IRA): no estimated tax, and still the
    lots it relieves, the first in the account's relief order within the sleeve, so the
    ledger and the custodian relieve the same lots (versus purchase). A holding without lots
    names none."""
    pos = ctx.positions.get((t.sleeve_id, t.symbol))
    if pos is None:
        return replace(t, estimated_tax=money(ZERO))
    picks = name_lots([(lot, lot.quantity) for lot in pos.ranked], t.quantity)
    sales = tuple(replace(s, tax=money(ZERO)) for s in lot_sales(ctx, picks, pos.price))
    named = ", ".join(f"{s.lot_id} ({shares_text(s.quantity)})" for s in sales)
    text = f"{t.explanation} Lots relieved: {named}; no tax in this account."
    return with_tax(t, text, sales, money(ZERO))


def _sell_with_lots(
    ctx: TaxContext,
    t: Trade,
    run: _Run,
    desired: Mapping[Key, Decimal],
    final: Mapping[Key, Decimal],
    realized: _Realized,
) -> Trade:
    """A sell naming the lots it relieves, with their estimated tax, and a sentence that
    says so (and why it sells less than the rebalance wanted, if it does)."""
    key = (t.sleeve_id, t.symbol)
    pos = ctx.positions[key]
    sales = lot_sales(ctx, name_lots(run.alloc.picks.get(key, []), t.quantity), pos.price)
    realized.add(ctx, sales)
    text = t.explanation + lots_sentence(sales)
    want = desired.get(key, ZERO)
    if key in run.limits and want > final.get(key, ZERO):
        text += (
            f" Only {number_text(t.quantity)} of the {shares_text(want)} the rebalance wanted "
            f"are sold: {limit_reasons(ctx, run.limits[key])}."
        )
    return with_tax(t, text, tuple(sales), sum((s.tax for s in sales), money(ZERO)))


# the fields _holding_lots passes to a Lot by position, in order
_LOT_FIELDS = (
    "lot_id",
    "account",
    "symbol",
    "quantity",
    "cost_basis",
    "acquired",
    "holding_start",
    "purchase_id",
    "sleeve",
    "seq",
    "replacement",
)
assert tuple(f.name for f in fields(Lot))[: len(_LOT_FIELDS)] == _LOT_FIELDS
assert len(TRADE_FIELDS) == 13  # with_tax passes every field, in TRADE_FIELDS's order


def with_tax(t: Trade, explanation: str, lots: tuple[LotSale, ...], tax: Decimal) -> Trade:
    """The trade with its sentence, the lots it relieves and its estimated tax (as
    ``dataclasses.replace`` makes it, in one call: every sell of a book goes through here)."""
    return Trade(
        t.account_id,
        t.sleeve_id,
        t.symbol,
        t.side,
        t.quantity,
        t.price,
        t.estimated_value,
        t.reason,
        explanation,
        t.opens_position,
        t.closes_position,
        lots,
        tax,
    )


def _limit_notices(
    ctx: TaxContext, run: _Run, desired: Mapping[Key, Decimal], final: Mapping[Key, Decimal]
) -> list[Notice]:
    """A notice per position sold less than the rebalance wanted, and one if the limits
    did not settle."""
    notices = []
    for key in sorted(run.limits):
        want = desired.get(key, ZERO)
        got = final.get(key, ZERO)
        if want > got:
            notices.append(
                Notice(
                    "tax_sell_limited",
                    f"{key[1]}: {number_text(got)} of the {shares_text(want)} the rebalance "
                    f"wanted are sold; {limit_reasons(ctx, run.limits[key])}",
                    key[0],
                    key[1],
                )
            )
    if run.fallback:
        notices.append(
            Notice(
                "tax_fallback",
                "the tax limits did not settle in a few passes: only sales that realize no "
                "gain were kept",
            )
        )
    return notices


def _realized_warnings(ctx: TaxContext, realized: _Realized) -> list[Notice]:
    """Warnings about what the sells realize: washed losses, a warn-only budget exceeded."""
    notices = []
    if realized.washed:
        notices.append(
            Notice(
                "wash_sale_unavoidable",
                "lots "
                + ", ".join(sorted(set(realized.washed)))
                + " are sold at a loss although a recent household purchase will wash the "
                "loss: the cash could not be raised otherwise",
            )
        )
    budget = ctx.settings.gain_budget
    net = realized.short_term + realized.long_term
    if budget is not None and not budget.hard and net > decimal_of(budget.remaining):
        notices.append(
            Notice(
                "gain_budget_exceeded",
                f"this proposal realizes {usd(net)} of net gains, past the "
                f"{usd(money(decimal_of(budget.remaining)))} left in the yearly budget of "
                f"{usd(money(decimal_of(budget.limit)))} (a warning: the budget is not a hard "
                "limit)",
            )
        )
    return notices


def _tax_report(ctx: TaxContext, realized: _Realized, notices: list[Notice]) -> TaxReport:
    """The result's tax report: gains, estimated tax, the budget, blocks and warnings."""
    st_gain, lt_gain = realized.short_term, realized.long_term
    net = st_gain + lt_gain
    budget = ctx.settings.gain_budget
    remaining = money(decimal_of(budget.remaining)) if budget is not None else None
    return TaxReport(
        as_of=ctx.on.isoformat(),
        account_type=ctx.settings.account_type,
        short_term_gain=st_gain,
        long_term_gain=lt_gain,
        estimated_tax=estimate_tax(st_gain, lt_gain, ctx.rates) if ctx.taxable else money(ZERO),
        budget_limit=money(decimal_of(budget.limit)) if budget is not None else None,
        budget_remaining_before=remaining,
        budget_remaining_after=remaining - net if remaining is not None else None,
        budget_hard=budget.hard if budget is not None else None,
        buy_blocked=tuple(sorted(ctx.buy_blocked)),
        sell_blocked_lots=tuple(sorted(ctx.washable)),
        warnings=tuple(n.message for n in notices if n.code != "wash_sale_buy_block"),
    )


__all__ = [
    "WASH_SOURCE",
    "Allocation",
    "Position",
    "TaxContext",
    "allocate_lots",
    "rebalance_tax_aware",
    "tax_context",
]
