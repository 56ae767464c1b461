"""Tax-aware rebalancing: worked examples computed by hand, one (or a few) per setting.

Prices, lots and rates are chosen so every figure can be checked on paper; the comments
give the arithmetic.
"""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest
from ballast_engine.errors import EngineInputError
from ballast_engine.model import (
    Account,
    Book,
    EquivalenceSet,
    GainBudgetSetting,
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
    Side,
    Sleeve,
    TaxLot,
    TaxSettings,
)
from ballast_engine.rebalance import rebalance, rebalance_book
from ballast_engine.tax.model import ReliefMethod
from ballast_engine.taxaware import WASH_SOURCE

AS_OF = "2026-11-20"


def ref(*entries: tuple[str, float], prices: dict[str, float] | None = None, eq=()) -> Reference:
    prices = prices or {"A": 100.0, "B": 100.0}
    secs = {s: Security(s, p) for s, p in prices.items()}
    return Reference(
        secs,
        {"M": Model("M", tuple(ModelEntry(s, w) for s, w in entries))},
        equivalence_sets=tuple(eq),
    )


def acct(holdings: tuple[Holding, ...], tax: TaxSettings | None, cash: float = 0.0) -> Account:
    return Account("T1", (Sleeve("s", "M", cash, holdings),), tax=tax)


def trades(r):
    return {(t.symbol, t.side.value): float(t.quantity) for t in r.trades}


def sell(r, symbol):
    return next(t for t in r.trades if t.symbol == symbol and t.side is Side.SELL)


def codes(r) -> set[str]:
    return {n.code for n in r.notices}


# A: 150 shares at $100. L1: 50 bought 2020 for $40 (long-term gain $60/sh, tax 20% = $12/sh);
# L2: 50 bought 2026-06 for $120 (short-term loss $20/sh, 37% = -$7.40/sh);
# L3: 50 bought 2026-08 for $240 (short-term loss $140/sh = -$51.80/sh).
LOTS_ABC = (
    TaxLot("L1", 50, 2000.0, "2020-01-01"),
    TaxLot("L2", 50, 6000.0, "2026-06-01"),
    TaxLot("L3", 50, 12000.0, "2026-08-01"),
)
HALF = ref(("A", 0.5), ("B", 0.5))


def test_min_tax_names_lots_losses_first_and_estimates_tax() -> None:
    # value 15,000: A's target 7,500 -> sell 75 A, buy 75 B
    r = rebalance(
        RebalanceInput(
            acct((Holding("A", 150, LOTS_ABC),), TaxSettings(AS_OF, method=ReliefMethod.MINTAX)),
            HALF,
        )
    )
    assert trades(r) == {("A", "sell"): 75, ("B", "buy"): 75}
    s = sell(r, "A")
    assert s.lot_ids == ("L3", "L2")  # the biggest tax saving per share first
    assert [(lt.quantity, lt.gain, lt.term) for lt in s.lots] == [
        (Decimal(50), Decimal("-7000.00"), "short"),
        (Decimal(25), Decimal("-500.00"), "short"),
    ]
    assert s.estimated_tax == Decimal("-2775.00")  # -(7000 + 500) x 37%
    assert "Lots relieved: L3" in s.explanation and "estimated tax saved $2,775.00" in s.explanation
    assert r.tax is not None and r.tax.short_term_gain == Decimal("-7500.00")
    assert r.tax.estimated_tax == Decimal("-2775.00")
    d = r.to_dict()
    assert (
        d["trades"][0]["lot_ids"] == ["L3", "L2"] and d["trades"][0]["estimated_tax"] == "-2775.00"
    )
    assert "lot_ids" not in d["trades"][1]  # buys carry no lots
    assert d["tax"]["estimated_tax"] == "-2775.00"


@pytest.mark.parametrize(
    ("method", "lots", "tax"),
    [
        # FIFO: L1 50 (gain 3,000 x 20% = 600) + L2 25 (loss 500 x 37% = -185)
        ("fifo", ("L1", "L2"), Decimal("415.00")),
        # LIFO: L3 50 (-2,590) + L2 25 (-185)
        ("lifo", ("L3", "L2"), Decimal("-2775.00")),
        # HIFO: highest basis per share first, the same lots here
        ("hifo", ("L3", "L2"), Decimal("-2775.00")),
    ],
)
def test_other_methods(method: str, lots: tuple[str, ...], tax: Decimal) -> None:
    a = acct((Holding("A", 150, LOTS_ABC),), TaxSettings(AS_OF, method=ReliefMethod(method)))
    s = sell(rebalance(RebalanceInput(a, HALF)), "A")
    assert s.lot_ids == lots and s.estimated_tax == tax


# A: 150 at $100. G1: 50 bought 2020 at $40 (long-term gain $60/sh);
# G2: 50 bought 2026-06 at $80 (short-term gain $20/sh); G3: 50 bought 2025-08 at $90
# (long-term gain $10/sh). Tax cost per share: G3 $2, G2 $7.40, G1 $12.
LOTS_GAIN = (
    TaxLot("G1", 50, 2000.0, "2020-01-01"),
    TaxLot("G2", 50, 4000.0, "2026-06-01"),
    TaxLot("G3", 50, 4500.0, "2025-08-01"),
)


def test_hard_gain_budget_caps_the_sale_and_shrinks_the_buy() -> None:
    # $1,000 left. G2 is short-term (avoided). G3 50 sh: +$500; $500 left buys 8 sh of G1
    # (8 x $60 = $480; 9 would be $540). 58 of 75 shares are sold, and B buys only 58.
    tax = TaxSettings(
        AS_OF,
        avoid_short_term_gains=True,
        gain_budget=GainBudgetSetting(3000.0, 2000.0),
        method=ReliefMethod.MINTAX,
    )
    r = rebalance(RebalanceInput(acct((Holding("A", 150, LOTS_GAIN),), tax), HALF))
    assert trades(r) == {("A", "sell"): 58, ("B", "buy"): 58}
    s = sell(r, "A")
    assert [(lt.lot_id, lt.quantity) for lt in s.lots] == [("G3", 50), ("G1", 8)]
    assert s.estimated_tax == Decimal("196.00")  # (500 + 480) x 20%
    assert "Only 58 of the 75 shares" in s.explanation and "hard budget" in s.explanation
    assert "tax_sell_limited" in codes(r)
    assert r.tax is not None and r.tax.budget_remaining_after == Decimal("20.00")
    assert r.sleeves[0].cash_after >= 0


def test_losses_make_room_in_the_budget() -> None:
    # no room left ($0), but selling L3 (loss $7,000) lets gains of up to $7,000 through
    lots = (TaxLot("W", 10, 1500.0, "2020-01-01"), TaxLot("G", 100, 1000.0, "2020-01-01"))
    tax = TaxSettings(
        AS_OF, gain_budget=GainBudgetSetting(5000.0, 5000.0), method=ReliefMethod.MINTAX
    )
    # 110 A at $100 = 11,000 -> sell 55: W 10 (loss 500), then G 45 x $90 = 4,050 > 500:
    # only floor(500 / 90) = 5 shares of G -> 15 sold
    r = rebalance(RebalanceInput(acct((Holding("A", 110, lots),), tax), HALF))
    s = sell(r, "A")
    assert [(lt.lot_id, lt.quantity) for lt in s.lots] == [("W", 10), ("G", 5)]
    assert sum(lt.gain for lt in s.lots) <= 0


def test_warn_only_budget_sells_and_warns() -> None:
    # same account, budget only a warning: 75 shares, G3 50 (+500) and G1 25 (+1,500)
    tax = TaxSettings(
        AS_OF,
        avoid_short_term_gains=True,
        gain_budget=GainBudgetSetting(3000.0, 2000.0, hard=False),
        method=ReliefMethod.MINTAX,
    )
    r = rebalance(RebalanceInput(acct((Holding("A", 150, LOTS_GAIN),), tax), HALF))
    assert trades(r) == {("A", "sell"): 75, ("B", "buy"): 75}
    assert sell(r, "A").lot_ids == ("G3", "G1")
    assert "gain_budget_exceeded" in codes(r)
    assert r.tax is not None and r.tax.budget_remaining_after == Decimal("-1000.00")


def test_avoid_short_term_gains() -> None:
    # 120 A: S1 20 long-term gain, S2 100 short-term gain; sell 60 wanted
    lots = (TaxLot("S1", 20, 800.0, "2020-01-01"), TaxLot("S2", 100, 8000.0, "2026-05-01"))
    plain = rebalance(
        RebalanceInput(
            acct((Holding("A", 120, lots),), TaxSettings(AS_OF, method=ReliefMethod.MINTAX)), HALF
        )
    )
    s = sell(plain, "A")
    # S2 costs $20 x 37% = $7.40/sh, S1 $60 x 20% = $12/sh: S2 first
    assert float(s.quantity) == 60 and s.lot_ids == ("S2",)
    assert s.estimated_tax == Decimal("444.00")  # 60 x 20 x 37%
    avoid = TaxSettings(AS_OF, avoid_short_term_gains=True, method=ReliefMethod.MINTAX)
    r = rebalance(RebalanceInput(acct((Holding("A", 120, lots),), avoid), HALF))
    assert trades(r) == {("A", "sell"): 20, ("B", "buy"): 20}
    s = sell(r, "A")
    assert s.lot_ids == ("S1",) and "short-term gains" in s.explanation


def test_buy_block_becomes_do_not_buy_wash_sale() -> None:
    # the spouse sold B at a loss ten days ago: B may not be bought; its weight goes to A
    tax = TaxSettings(
        AS_OF, recent_loss_sales=(LossSale("B", "2026-11-10", 30, 2.0),), method=ReliefMethod.MINTAX
    )
    lots = (TaxLot("L", 100, 9000.0, "2020-01-01"),)
    r = rebalance(RebalanceInput(acct((Holding("A", 100, lots),), tax), HALF))
    assert not any(t.side is Side.BUY and t.symbol == "B" for t in r.trades)
    assert "wash_sale_buy_block" in codes(r)
    assert r.tax is not None and r.tax.buy_blocked == ("B",)
    # after the window (31 days) it is bought again
    later = replace(tax, as_of="2026-12-11")
    r2 = rebalance(RebalanceInput(acct((Holding("A", 100, lots),), later), HALF))
    assert trades(r2) == {("A", "sell"): 50, ("B", "buy"): 50}


def test_buy_block_reaches_identical_members() -> None:
    # B and B2 are substantially identical (two share classes): a loss sale of B2 blocks B
    prices = {"A": 100.0, "B": 100.0, "B2": 100.0}
    eq = (EquivalenceSet("classes", ("B", "B2"), identical=True),)
    reference = ref(("A", 0.5), ("B", 0.5), prices=prices, eq=eq)
    tax = TaxSettings(
        AS_OF,
        recent_loss_sales=(LossSale("B2", "2026-11-10", 30, 2.0),),
        method=ReliefMethod.MINTAX,
    )
    r = rebalance(RebalanceInput(acct((Holding("A", 100),), tax), reference))
    bought = {t.symbol for t in r.trades if t.side is Side.BUY}
    assert not bought & {"B", "B2"}
    assert r.tax is not None and set(r.tax.buy_blocked) == {"B", "B2"}
    assert any(WASH_SOURCE in n.message or "wash" in n.message for n in r.notices)


def test_recent_purchase_keeps_the_loss_lot() -> None:
    # A at $100: W 50 bought 2025 at $120 (loss), K 50 bought 2020 at $50 (gain $50/sh)
    lots = (TaxLot("W", 50, 6000.0, "2025-01-01"), TaxLot("K", 50, 2500.0, "2020-01-01"))
    free = rebalance(
        RebalanceInput(
            acct((Holding("A", 100, lots),), TaxSettings(AS_OF, method=ReliefMethod.MINTAX)), HALF
        )
    )
    assert sell(free, "A").lot_ids == ("W",)  # the loss first: -1,000 x 20% = -200
    assert sell(free, "A").estimated_tax == Decimal("-200.00")
    # the spouse bought A five days ago: selling W at a loss would be washed -> K instead
    tax = TaxSettings(
        AS_OF,
        recent_purchases=(RecentPurchase("A", "2026-11-15", 10, "P-9"),),
        method=ReliefMethod.MINTAX,
    )
    r = rebalance(RebalanceInput(acct((Holding("A", 100, lots),), tax), HALF))
    s = sell(r, "A")
    assert float(s.quantity) == 50 and s.lot_ids == ("K",)
    assert s.estimated_tax == Decimal("500.00")  # 50 x $50 x 20%
    assert r.tax is not None and r.tax.sell_blocked_lots == ("W",)


def test_washable_lot_sold_only_when_unavoidable() -> None:
    # only loss lots a recent purchase would wash, and a withdrawal to pay: sold, and said
    lots = (TaxLot("W", 100, 12000.0, "2025-01-01"),)
    tax = TaxSettings(
        AS_OF,
        recent_purchases=(RecentPurchase("A", "2026-11-15", 10, "P-9"),),
        method=ReliefMethod.MINTAX,
    )
    a = Account("T1", (Sleeve("s", "M", 0.0, (Holding("A", 100, lots),)),), tax=tax)
    req = Request(RequestKind.RAISE_CASH, 5000.0)
    r = rebalance(RebalanceInput(a, ref(("A", 1.0)), req))
    assert trades(r) == {("A", "sell"): 50}
    assert "wash_sale_unavoidable" in codes(r)
    assert "withdrawal_shortfall" not in codes(r)
    # a plain rebalance has no such need: nothing is sold at a washed loss
    r2 = rebalance(RebalanceInput(a, HALF))
    assert ("A", "sell") not in trades(r2)
    assert "tax_sell_limited" in codes(r2)


def test_loss_sale_washed_by_a_buy_in_the_same_proposal_is_avoided() -> None:
    # two sleeves: sleeve 1 sells A at a loss, sleeve 2 buys A with its cash -> the sale
    # would be washed by the purchase; it is not made
    reference = Reference(
        {"A": Security("A", 100.0), "B": Security("B", 100.0)},
        {
            "M1": Model("M1", (ModelEntry("A", 0.5), ModelEntry("B", 0.5))),
            "M2": Model("M2", (ModelEntry("A", 1.0),)),
        },
    )
    lots = (TaxLot("W", 100, 12000.0, "2025-01-01"),)
    a = Account(
        "T1",
        (
            Sleeve("s1", "M1", 0.0, (Holding("A", 100, lots),)),
            Sleeve("s2", "M2", 5000.0, ()),
        ),
        tax=TaxSettings(AS_OF, method=ReliefMethod.MINTAX),
    )
    plain = rebalance(RebalanceInput(replace(a, tax=None), reference))
    assert any(t.symbol == "A" and t.side is Side.SELL for t in plain.trades)
    r = rebalance(RebalanceInput(a, reference))
    assert not any(t.symbol == "A" and t.side is Side.SELL for t in r.trades)
    assert any(t.symbol == "A" and t.side is Side.BUY for t in r.trades)
    assert any(n.code == "tax_sell_limited" and "wash" in n.message for n in r.notices)


def test_ira_realizes_nothing_but_respects_buy_blocks() -> None:
    tax = TaxSettings(
        AS_OF,
        account_type="ira",
        recent_loss_sales=(LossSale("B", "2026-11-10", 30, 2.0),),
        method=ReliefMethod.MINTAX,
    )
    r = rebalance(RebalanceInput(acct((Holding("A", 150, LOTS_ABC),), tax), HALF))
    assert not any(t.side is Side.BUY and t.symbol == "B" for t in r.trades)
    tax2 = TaxSettings(
        AS_OF, account_type="ira", avoid_short_term_gains=True, method=ReliefMethod.MINTAX
    )
    r2 = rebalance(RebalanceInput(acct((Holding("A", 150, LOTS_GAIN),), tax2), HALF))
    assert trades(r2) == {("A", "sell"): 75, ("B", "buy"): 75}
    assert sell(r2, "A").estimated_tax == Decimal("0.00")


def test_an_ira_sell_names_its_lots_in_the_relief_order_without_tax() -> None:
    # 75 A sold FIFO: all of L1 (2020), 25 of L2 (2026-06); the gains are not taxed
    tax = TaxSettings(AS_OF, account_type="ira", method=ReliefMethod.FIFO)
    r = rebalance(RebalanceInput(acct((Holding("A", 150, LOTS_ABC),), tax), HALF))
    a = sell(r, "A")
    assert a.quantity == 75 and a.lot_ids == ("L1", "L2")
    assert [lt.quantity for lt in a.lots] == [50, 25]
    assert all(lt.tax == 0 for lt in a.lots) and a.estimated_tax == 0
    assert a.explanation.endswith(
        "Lots relieved: L1 (50 shares), L2 (25 shares); no tax in this account."
    )
    assert r.tax is not None and r.tax.estimated_tax == 0
    assert r.to_dict()["trades"][0]["lot_ids"] == ["L1", "L2"]


def test_without_binding_settings_the_trades_are_the_plain_ones() -> None:
    a = acct((Holding("A", 150, LOTS_ABC),), TaxSettings(AS_OF, method=ReliefMethod.MINTAX))
    plain = rebalance(RebalanceInput(replace(a, tax=None), HALF))
    taxed = rebalance(RebalanceInput(a, HALF))
    assert trades(plain) == trades(taxed)
    pd = plain.to_dict()
    assert "tax" not in pd and all("lot_ids" not in t for t in pd["trades"])


def test_holding_without_lots_is_reported() -> None:
    r = rebalance(
        RebalanceInput(
            acct((Holding("A", 150),), TaxSettings(AS_OF, method=ReliefMethod.MINTAX)), HALF
        )
    )
    s = sell(r, "A")
    assert s.lots == () and s.estimated_tax is None
    assert "no_tax_lots" in codes(r)


@pytest.mark.parametrize(
    ("tax", "field"),
    [
        (TaxSettings("2026-13-01", method=ReliefMethod.MINTAX), "tax.as_of"),
        (TaxSettings(AS_OF, method="random"), "tax.method"),
        (
            TaxSettings(AS_OF, short_term_rate=1.5, method=ReliefMethod.MINTAX),
            "tax.short_term_rate",
        ),
        (TaxSettings(AS_OF, account_type="roth", method=ReliefMethod.MINTAX), "tax.account_type"),
        (
            TaxSettings("2019-01-01", method=ReliefMethod.MINTAX),
            "lots.acquired",
        ),  # a lot bought after the trade date
        (
            TaxSettings(
                AS_OF,
                recent_loss_sales=(LossSale("B", "2026-12-01", 1, 1.0),),
                method=ReliefMethod.MINTAX,
            ),
            "tax.recent_loss_sales[0].sold_on",
        ),
    ],
)
def test_bad_tax_input_names_the_field(tax: TaxSettings, field: str) -> None:
    a = acct((Holding("A", 150, LOTS_ABC),), tax)
    with pytest.raises(EngineInputError) as err:
        rebalance(RebalanceInput(a, HALF))
    assert err.value.field == field and err.value.account == "T1"
    book = rebalance_book(Book(HALF, (a,), Request()))
    assert len(book.failures) == 1 and book.failures[0].detail["field"] == field


def test_duplicate_lot_ids_are_an_error() -> None:
    lots = (TaxLot("X", 75, 1.0, "2020-01-01"), TaxLot("X", 75, 1.0, "2020-01-01"))
    with pytest.raises(EngineInputError, match="appears twice"):
        rebalance(
            RebalanceInput(
                acct((Holding("A", 150, lots),), TaxSettings(AS_OF, method=ReliefMethod.MINTAX)),
                HALF,
            )
        )


def test_uma_budget_is_shared_by_the_sleeves() -> None:
    # two sleeves drift apart (strategy 50/50, band ±5): the strategic move sells gains in
    # the overweight sleeve; with no budget left and no losses, no gain is realized at all
    from ballast_engine.model import Band, BandKind, Strategy, StrategyEntry

    reference = Reference(
        {"A": Security("A", 100.0), "B": Security("B", 100.0)},
        {"MA": Model("MA", (ModelEntry("A", 1.0),)), "MB": Model("MB", (ModelEntry("B", 1.0),))},
        {
            "S": Strategy(
                "S",
                (
                    StrategyEntry("MA", 0.5, Band(BandKind.ABSOLUTE, 0.05)),
                    StrategyEntry("MB", 0.5, Band(BandKind.ABSOLUTE, 0.05)),
                ),
            )
        },
    )
    a = Account(
        "U",
        (
            Sleeve("sa", "MA", 0.0, (Holding("A", 80, (TaxLot("GA", 80, 4000.0, "2020-01-01"),)),)),
            Sleeve("sb", "MB", 0.0, (Holding("B", 20, (TaxLot("GB", 20, 1000.0, "2020-01-01"),)),)),
        ),
        strategy_id="S",
        tax=TaxSettings(
            AS_OF, gain_budget=GainBudgetSetting(1000.0, 1000.0), method=ReliefMethod.MINTAX
        ),
    )
    plain = rebalance(RebalanceInput(replace(a, tax=None), reference))
    assert any(t.side is Side.SELL for t in plain.trades)
    r = rebalance(RebalanceInput(a, reference))
    assert not any(t.side is Side.SELL for t in r.trades)
    assert r.tax is not None and r.tax.long_term_gain == 0
    assert r.sleeves[0].cash_after >= 0 and r.sleeves[1].cash_after >= 0
    assert "tax_sell_limited" in codes(r)
    # $300 of room: 6 shares of GA ($50 gain each) may go
    a2 = replace(
        a,
        tax=TaxSettings(
            AS_OF, gain_budget=GainBudgetSetting(1300.0, 1000.0), method=ReliefMethod.MINTAX
        ),
    )
    r2 = rebalance(RebalanceInput(a2, reference))
    assert trades(r2)[("A", "sell")] == 6 and r2.tax is not None
    assert r2.tax.long_term_gain == Decimal("300.00")
