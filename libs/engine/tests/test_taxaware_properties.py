"""Property tests of tax-aware rebalancing and harvesting (hypothesis).

Invariants: a hard gain budget is never exceeded; no short-term gain lot is sold while
"avoid short-term gains" is on; nothing buy-blocked is bought; a loss lot a recent purchase
would wash is only sold when reported unavoidable; the lots named add up to the trade;
cash is never overspent; a harvest never buys a blocked or substantially identical
security and never spends more than it sold; the same input gives the same output.
``TAX_HYPOTHESIS_EXAMPLES`` (default 60, 600 with ``HYPOTHESIS_PROFILE=deep``) sets the depth.
"""

from __future__ import annotations

import os
from datetime import date, timedelta
from decimal import Decimal

from ballast_engine.harvesting import harvest
from ballast_engine.model import (
    Account,
    EquivalenceSet,
    GainBudgetSetting,
    HarvestSettings,
    Holding,
    LossSale,
    Model,
    ModelEntry,
    RebalanceInput,
    RecentPurchase,
    Reference,
    Request,
    RequestKind,
    Security,
    Settings,
    Side,
    Sleeve,
    TaxLot,
    TaxSettings,
)
from ballast_engine.rebalance import rebalance
from ballast_engine.tax.model import EquivalenceSet as TaxSet
from ballast_engine.tax.model import Identity, ReliefMethod
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

# ten times more with HYPOTHESIS_PROFILE=deep (conftest.py)
EXAMPLES = int(
    os.environ.get("TAX_HYPOTHESIS_EXAMPLES") or 60 * settings.default.max_examples // 100
)
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
AS_OF = date(2026, 11, 20)
SYMS = ["A", "B", "C", "D", "E"]


@st.composite
def cases(draw: st.DrawFn, harvesting: bool = False) -> RebalanceInput:
    n = draw(st.integers(2, 5))
    syms = SYMS[:n]
    prices = {s: draw(st.sampled_from([10.0, 25.0, 49.5, 100.0, 180.0])) for s in syms}
    in_model = syms[: max(1, n - draw(st.integers(0, 1)))]
    raw = [draw(st.integers(1, 5)) for _ in in_model]
    weights = [r / sum(raw) for r in raw]
    weights[-1] = 1.0 - sum(weights[:-1])
    model = Model("M", tuple(ModelEntry(s, w) for s, w in zip(in_model, weights, strict=True)))
    eq: tuple[EquivalenceSet, ...] = ()
    if n >= 3 and draw(st.booleans()):
        eq = (EquivalenceSet("set", tuple(syms[:3]), identical=draw(st.booleans())),)
    holdings = []
    k = 0
    for s in syms:
        if not draw(st.booleans()):
            continue
        lots = []
        for _ in range(draw(st.integers(1, 3))):
            q = draw(st.integers(1, 60))
            factor = draw(st.sampled_from([0.3, 0.7, 0.95, 1.0, 1.08, 1.6, 3.0]))
            days = draw(st.integers(0, 1500))
            k += 1
            lots.append(
                TaxLot(
                    f"L{k}",
                    float(q),
                    round(q * prices[s] * factor, 2),
                    (AS_OF - timedelta(days=days)).isoformat(),
                )
            )
        holdings.append(Holding(s, sum(lt.quantity for lt in lots), tuple(lots)))
    budget = None
    if draw(st.booleans()):
        budget = GainBudgetSetting(
            draw(st.sampled_from([0.0, 300.0, 2000.0])),
            draw(st.sampled_from([0.0, 250.0, 5000.0])),
            hard=draw(st.booleans()),
        )
    blocked = draw(st.lists(st.sampled_from(syms), max_size=2, unique=True))
    bought = draw(st.lists(st.sampled_from(syms), max_size=2, unique=True))
    tax = TaxSettings(
        AS_OF.isoformat(),
        short_term_rate=0.37,
        long_term_rate=0.2,
        avoid_short_term_gains=draw(st.booleans()),
        gain_budget=budget,
        harvest=HarvestSettings(
            draw(st.sampled_from([0.0, 5.0, 20.0])),
            draw(st.sampled_from([0.0, 50.0, 500.0])),
            swap_back=draw(st.booleans()),
        ),
        recent_loss_sales=tuple(
            LossSale(s, (AS_OF - timedelta(days=draw(st.integers(0, 40)))).isoformat(), 5, 1.0)
            for s in blocked
        ),
        recent_purchases=tuple(
            RecentPurchase(s, (AS_OF - timedelta(days=draw(st.integers(0, 40)))).isoformat(), 3)
            for s in bought
        ),
        method=ReliefMethod.MINTAX,
    )
    st_ = Settings(
        min_trade_value=draw(st.sampled_from([0.0, 100.0])),
        cash_reserve=draw(st.sampled_from([0.0, 50.0])),
    )
    cash = draw(st.sampled_from([0.0, 300.0, 5000.0]))
    account = Account("P", (Sleeve("s", "M", cash, tuple(holdings), st_),), tax=tax)
    req = Request()
    if not harvesting and draw(st.booleans()):
        req = Request(RequestKind.RAISE_CASH, draw(st.sampled_from([100.0, 1500.0])))
    ref = Reference({s: Security(s, p) for s, p in prices.items()}, {"M": model}, (), {}, eq)
    return RebalanceInput(account, ref, req)


def _lots_by_id(inp: RebalanceInput) -> dict[str, TaxLot]:
    return {lt.lot_id: lt for sl in inp.account.sleeves for h in sl.holdings for lt in h.lots}


@SETTINGS
@given(cases())
def test_tax_aware_invariants(inp: RebalanceInput) -> None:
    r = rebalance(inp)
    assert r.to_dict() == rebalance(inp).to_dict()  # same input, same output
    tax = inp.account.tax
    assert tax is not None and r.tax is not None
    codes = {n.code for n in r.notices}
    lots = _lots_by_id(inp)
    net = Decimal(0)
    for t in r.trades:
        if t.side is Side.BUY:
            assert t.symbol not in r.tax.buy_blocked
            assert t.estimated_tax is None
            continue
        assert t.estimated_tax is not None
        assert sum(lt.quantity for lt in t.lots) == t.quantity
        for lt in t.lots:
            assert Decimal(repr(lots[lt.lot_id].quantity)) >= lt.quantity > 0
            net += lt.gain
            if tax.avoid_short_term_gains:
                assert not (lt.term == "short" and lt.gain > 0)
            if lt.lot_id in r.tax.sell_blocked_lots and lt.gain < 0:
                assert "wash_sale_unavoidable" in codes
    b = tax.gain_budget
    if b is not None and b.hard:
        assert net <= max(Decimal(repr(b.remaining)), Decimal(0)) + Decimal("0.01")
    for s in r.sleeves:
        assert s.cash_after >= Decimal("-0.01")


def _identical_swap_back(cost: float) -> RebalanceInput:
    """Found by a deeper search: C is held and is substantially identical to the model's A
    (an ``identical`` set). A swap-back sold C and bought A: at a loss, a wash sale."""
    lot = TaxLot("L1", 1.0, cost, AS_OF.isoformat())
    tax = TaxSettings(
        AS_OF.isoformat(),
        short_term_rate=0.37,
        long_term_rate=0.2,
        harvest=HarvestSettings(0.0, 0.0, swap_back=True),
        method=ReliefMethod.MINTAX,
    )
    account = Account(
        "P", (Sleeve("s", "M", 0.0, (Holding("C", 1.0, (lot,)),), Settings()),), tax=tax
    )
    model = Model("M", (ModelEntry("A", 0.5), ModelEntry("B", 0.5)))
    eq = (EquivalenceSet("set", ("A", "B", "C"), identical=True),)
    ref = Reference({s: Security(s, 10.0) for s in "ABC"}, {"M": model}, (), {}, eq)
    return RebalanceInput(account, ref, Request())


@SETTINGS
@given(cases(harvesting=True))
@example(_identical_swap_back(10.0))
@example(_identical_swap_back(12.0))
def test_harvest_invariants(inp: RebalanceInput) -> None:
    r = harvest(inp)
    assert r.to_dict() == harvest(inp).to_dict()
    assert r.tax is not None
    ident = Identity.from_sets(
        [TaxSet(e.set_id, e.members, True) for e in inp.reference.equivalence_sets if e.identical]
    )
    blocked = {ident.key(s) for s in r.tax.buy_blocked}
    sold = {ident.key(t.symbol) for t in r.trades if t.side is Side.SELL}
    buys = [t for t in r.trades if t.side is Side.BUY]
    for t in buys:
        assert ident.key(t.symbol) not in blocked  # never buys a blocked symbol
        assert ident.key(t.symbol) not in sold  # nor one substantially identical to a sale
    proceeds = sum((t.estimated_value for t in r.trades if t.side is Side.SELL), Decimal(0))
    assert sum((t.estimated_value for t in buys), Decimal(0)) <= proceeds
    for t in r.trades:
        if t.side is Side.SELL:
            assert t.reason.value in ("tax-loss-harvest", "swap-back")
            for lt in t.lots:
                assert lt.lot_id not in r.tax.sell_blocked_lots or lt.gain >= 0
                assert lt.gain <= 0
            if t.reason.value == "tax-loss-harvest":
                assert t.estimated_tax is not None and t.estimated_tax < 0
    for s in r.sleeves:
        assert s.cash_after >= s.cash_before - Decimal("0.01")
