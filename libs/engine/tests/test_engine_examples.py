"""Worked examples, one (or a few) per setting, with trades computed by hand."""

from __future__ import annotations

from decimal import Decimal

import pytest
from ballast_engine.builders import reference, restriction, scenario, securities, sleeve, sma
from ballast_engine.model import (
    Account,
    Band,
    BandKind,
    FreedCashPolicy,
    Model,
    ModelEntry,
    RangeKind,
    Reason,
    RebalanceRange,
    Request,
    RequestKind,
    Scope,
    Security,
    Settings,
    Strategy,
    StrategyEntry,
)
from ballast_engine.rebalance import rebalance


def trades(r):  # type: ignore[no-untyped-def]
    """{symbol: signed quantity} of a result."""
    return {t.symbol: (1 if t.side.value == "buy" else -1) * float(t.quantity) for t in r.trades}


def model(**weights: float) -> Model:
    return Model("M", tuple(ModelEntry(s, w) for s, w in weights.items()))


SECS = securities({"A": 100.0, "B": 100.0, "C": 100.0, "D": 100.0, "X": 100.0})


def run(
    holdings, cash=0.0, m=None, settings=None, restrictions=(), request=None, secs=None, **ref_kw
):  # type: ignore[no-untyped-def]
    ref = reference(secs or SECS, [m or model(A=0.5, B=0.5)], **ref_kw)
    acct = sma("ACC", "M", holdings, cash, settings, restrictions)
    return rebalance(scenario(acct, ref, request))


# --- drift, bands, minimums ---------------------------------------------------------------


def test_drift_trades_back_to_target_with_reasons_and_sentences() -> None:
    r = run({"A": 52, "B": 48})
    assert trades(r) == {"A": -2, "B": 2}
    assert {t.reason for t in r.trades} == {Reason.DRIFT}
    sell = next(t for t in r.trades if t.symbol == "A")
    assert sell.estimated_value == Decimal("200.00")
    assert "Sell 2 shares of A" in sell.explanation and "target 50.00%" in sell.explanation


def test_security_weight_range_no_trade_while_inside() -> None:
    inside = Settings(security_band=Band(BandKind.ABSOLUTE, 0.02))
    assert run({"A": 51, "B": 49}, settings=inside).trades == ()
    relative = Settings(security_band=Band(BandKind.RELATIVE, 0.01))  # 49.5%–50.5%
    assert trades(run({"A": 51, "B": 49}, settings=relative)) == {"A": -1, "B": 1}


def test_minimum_trade_value_and_shares() -> None:
    r = run({"A": 52, "B": 48}, settings=Settings(min_trade_value=250))
    assert r.trades == ()
    assert {n.code for n in r.notices} == {"below_minimum"}
    assert run({"A": 52, "B": 48}, settings=Settings(min_trade_shares=3)).trades == ()
    assert trades(run({"A": 53, "B": 47}, settings=Settings(min_trade_shares=3))) == {
        "A": -3,
        "B": 3,
    }


def test_minimum_opening_trade() -> None:
    m = model(A=0.95, B=0.05)
    # B opens with 5 shares; the $100 left buys one more A (closer to its $10,070 target)
    assert trades(run({"A": 100}, 600, m)) == {"A": 1, "B": 5}
    r = run({"A": 100}, 600, m, Settings(min_opening_trade_value=1000))
    assert trades(r) == {"A": 1}


def test_closing_sale_is_exempt_from_minimums() -> None:
    r = run({"A": 50, "B": 50, "X": 1}, settings=Settings(min_trade_value=500))
    assert trades(r) == {"X": -1}
    assert r.trades[0].reason is Reason.NOT_IN_MODEL and r.trades[0].closes_position


# --- rounding and cash -------------------------------------------------------------------


def test_whole_shares_never_overspend_and_top_up_leftover() -> None:
    secs = securities({"A": 300.0, "B": 300.0})
    r = run({}, 1000.0, secs=secs)
    # 1 + 1 shares by rounding down, then one more A (closer to its $500 target), $100 left
    assert trades(r) == {"A": 2, "B": 1}
    assert r.sleeves[0].cash_after == Decimal("100.00")


def test_fractional_shares() -> None:
    secs = {"A": Security("A", 300.0, fractional=True)}
    m = model(A=1.0)
    assert trades(run({}, 1000.0, m, secs=secs)) == {"A": 3}
    r = run({}, 1000.0, m, Settings(fractional=True, share_decimals=3), secs=secs)
    assert trades(r) == {"A": 3.333}
    assert r.trades[0].quantity == Decimal("3.333")
    # the security must be eligible too
    ineligible = {"A": Security("A", 300.0, fractional=False)}
    assert trades(run({}, 1000.0, m, Settings(fractional=True), secs=ineligible)) == {"A": 3}


def test_cash_target_and_reserve() -> None:
    secs = securities({"A": 10.0})
    m = model(A=1.0)
    assert trades(run({}, 10_000.0, m, Settings(cash_target=0.05), secs=secs)) == {"A": 950}
    r = run({}, 10_000.0, m, Settings(cash_target=0.05, cash_reserve=2000), secs=secs)
    assert trades(r) == {"A": 800}
    # below the reserve: sell to restore it
    r = run({"A": 1000}, 0.0, m, Settings(cash_reserve=500), secs=secs)
    assert trades(r) == {"A": -50}


def test_cash_band_no_trade_while_inside() -> None:
    s = Settings(
        cash_target=0.02,
        cash_band=Band(BandKind.ABSOLUTE, 0.01),
        security_band=Band(BandKind.ABSOLUTE, 0.02),
    )
    assert run({"A": 49, "B": 49}, 200.0, settings=s).trades == ()  # cash 2% exactly
    assert run({"A": 49, "B": 48}, 300.0, settings=s).trades == ()  # 3%: on the edge
    r = run({"A": 48, "B": 48}, 400.0, settings=s)  # 4%: invest down to 2%
    assert trades(r) == {"A": 1, "B": 1}
    assert {t.reason for t in r.trades} == {Reason.INVEST_CASH}


# --- restrictions and freed cash ---------------------------------------------------------


def test_do_not_buy_with_each_freed_cash_policy() -> None:
    dnb = [restriction("do_not_buy", "B")]
    pro = run({}, 10_000.0, restrictions=dnb)
    assert trades(pro) == {"A": 100}
    cash = run({}, 10_000.0, settings=Settings(freed_cash=FreedCashPolicy.CASH), restrictions=dnb)
    assert trades(cash) == {"A": 50}
    assert cash.sleeves[0].cash_after == Decimal("5000.00")
    secs = securities(
        {
            "A": (100.0, "eq", "Tech", False),
            "B": (100.0, "eq", "Tech", False),
            "C": (100.0, "eq", "Energy", False),
            "D": (100.0, "eq", "Energy", False),
        }
    )
    m = model(A=0.4, B=0.2, C=0.2, D=0.2)
    sector = run(
        {},
        10_000.0,
        m,
        Settings(freed_cash=FreedCashPolicy.SECTOR),
        [restriction("do_not_buy", "C")],
        secs=secs,
    )
    assert trades(sector) == {"A": 40, "B": 20, "D": 40}


def test_do_not_buy_keeps_what_is_held_and_never_buys() -> None:
    r = run({"B": 20}, 8000.0, restrictions=[restriction("do_not_buy", "B", source="advisor")])
    assert trades(r) == {"A": 80}  # B's missing 30% goes to A (pro rata over buyable)


def test_do_not_sell_keeps_an_overweight_position() -> None:
    r = run({"A": 80, "B": 20}, restrictions=[restriction("do_not_sell", "A")])
    assert r.trades == ()
    r = run({"X": 10, "A": 45, "B": 45}, restrictions=[restriction("do_not_sell", "X")])
    assert r.trades == ()
    assert any(n.code == "kept_do_not_sell" for n in r.notices)


def test_do_not_sell_floor_is_not_cut_so_the_reserve_sells_only_what_it_needs() -> None:
    # S0 ($1, Health, do-not-sell by sector) and S2 ($29, do-not-buy) at 50/50; S1 ($7, not in
    # the model) do-not-sell; a $1,500 reserve, no cash, freed weight kept as cash. S1's
    # $14,798 eats S0's target but not S0's own $29 (do-not-sell), so the targets add up:
    # the reserve sells 52 S2 ($1,508, the least that reaches $1,500), and the projected
    # result is stable (the engine used to sell 55, then 4 more on every rebalance)
    secs = securities(
        {
            "S0": (1.0, "eq", "Health", False),
            "S1": (7.0, "eq", "Tech", False),
            "S2": (29.0, "eq", "Tech", False),
        }
    )
    s = Settings(share_decimals=0, cash_reserve=1500.0, freed_cash=FreedCashPolicy.CASH)
    restr = [
        restriction("do_not_buy", "S2"),
        restriction("do_not_sell", "S1"),
        restriction("do_not_sell", "Health", "sector"),
    ]
    ref = reference(secs, [model(S0=0.5, S2=0.5)])
    acct = sma("A", "M", {"S0": 29, "S1": 2114, "S2": 303}, 0.0, s, restr)
    r = rebalance(scenario(acct, ref))
    assert trades(r) == {"S2": -52}
    assert r.sleeves[0].cash_after == Decimal("1508.00")
    held = {"S0": 29, "S1": 2114, "S2": 251}
    again = rebalance(scenario(sma("A", "M", held, 1508.0, s, restr), ref))
    assert again.trades == ()


def test_do_not_hold_by_sector_and_list() -> None:
    secs = securities(
        {
            "A": (100.0, "eq", "Tech", False),
            "B": (100.0, "eq", "Energy", False),
            "X": (100.0, "eq", "Energy", False),
        }
    )
    r = run(
        {"A": 40, "B": 40, "X": 20},
        restrictions=[restriction("do_not_hold", "Energy", "sector")],
        secs=secs,
    )
    assert trades(r) == {"A": 60, "B": -40, "X": -20}
    sold = next(t for t in r.trades if t.symbol == "B")
    assert sold.reason is Reason.RESTRICTION and "sector Energy" in sold.explanation
    r = run(
        {"A": 50, "B": 50},
        restrictions=[restriction("do_not_hold", "esg", "list")],
        lists={"esg": ["B"]},
    )
    assert trades(r) == {"A": 50, "B": -50}


def test_do_not_sell_and_do_not_hold_conflict_is_reported_not_guessed() -> None:
    r = run(
        {"A": 50, "B": 50},
        restrictions=[
            restriction("do_not_hold", "B", source="client"),
            restriction("do_not_sell", "B", source="advisor"),
        ],
    )
    assert r.trades == ()
    (n,) = [n for n in r.notices if n.code == "restriction_conflict"]
    assert n.symbol == "B" and "client" in n.message and "advisor" in n.message


# --- hold / replacement, equivalence sets, share-based models ----------------------------


def test_hold_security_is_kept_and_replacement_bought() -> None:
    m = Model("M", (ModelEntry("A", 0.8), ModelEntry("B", 0.2, hold=True, replacement="C")))
    assert trades(run({}, 10_000.0, m)) == {"A": 80, "C": 20}
    r = run({"A": 80, "B": 10}, 1000.0, m)
    assert trades(r) == {"C": 10}
    assert (
        r.trades[0].reason is Reason.REPLACEMENT and "replacement for B" in r.trades[0].explanation
    )
    # a hold position above its target is trimmed like any other
    assert trades(run({"A": 70, "B": 30}, 0.0, m)) == {"A": 10, "B": -10}


def test_equivalent_holding_counts_and_is_not_swapped() -> None:
    secs = securities({"SPY": 500.0, "IVV": 500.0, "A": 100.0})
    m = Model("M", (ModelEntry("SPY", 1.0),))
    r = run({"IVV": 12}, 4000.0, m, secs=secs, equivalence=[["SPY", "IVV"]])
    assert trades(r) == {"SPY": 8}  # IVV's 60% counts; SPY fills the rest, IVV is kept
    # overweight group: the non-model member is sold first, never swapped for SPY
    r = run(
        {"IVV": 12, "SPY": 8},
        0.0,
        Model("M", (ModelEntry("SPY", 0.9), ModelEntry("A", 0.1))),
        secs=secs,
        equivalence=[["SPY", "IVV"]],
    )
    assert trades(r) == {"IVV": -2, "A": 10}
    # the model security is do-not-buy: its equivalent is bought instead
    r = run(
        {},
        5000.0,
        m,
        restrictions=[restriction("do_not_buy", "SPY")],
        secs=secs,
        equivalence=[["SPY", "IVV"]],
    )
    assert trades(r) == {"IVV": 10}


def test_share_based_model_weights_follow_prices() -> None:
    secs = securities({"A": 10.0, "B": 5.0})
    m = Model("M", (ModelEntry("A", shares=10), ModelEntry("B", shares=20)), kind="shares")
    assert trades(run({}, 1000.0, m, secs=secs)) == {"A": 50, "B": 100}
    m_cash = Model(
        "M", (ModelEntry("A", shares=10), ModelEntry("B", shares=20)), kind="shares", cash=100.0
    )
    assert trades(run({}, 1500.0, m_cash, secs=secs)) == {"A": 50, "B": 100}


# --- raise cash / invest cash ------------------------------------------------------------


def test_raise_cash_sells_overweight_first_and_only_sells() -> None:
    r = run({"A": 60, "B": 40}, request=Request(RequestKind.RAISE_CASH, 1000.0))
    assert trades(r) == {"A": -10}
    assert r.trades[0].reason is Reason.CASH_NEED and "withdrawal" in r.trades[0].explanation
    assert r.sleeves[0].cash_out == Decimal("1000.00")
    assert [m.purpose for m in r.cash_movements] == ["withdrawal"]
    r = run({"A": 50, "B": 50}, request=Request(RequestKind.RAISE_CASH, 2000.0))
    assert trades(r) == {"A": -10, "B": -10}


def test_invest_cash_buys_underweight_first_and_only_buys() -> None:
    r = run({"A": 40, "B": 60}, request=Request(RequestKind.INVEST_CASH, 2000.0))
    assert trades(r) == {"A": 20}
    assert r.trades[0].reason is Reason.INVEST_CASH
    r = run({"A": 40, "B": 70, "X": 5}, request=Request(RequestKind.INVEST_CASH, 1000.0))
    assert trades(r) == {"A": 10}  # nothing sold, not even X (not in model)


# --- strategic ---------------------------------------------------------------------------


_TARGET = RebalanceRange()


def uma(values, targets, band=0.05, rr=_TARGET, cash=0.0, kind=BandKind.ABSOLUTE):  # type: ignore[no-untyped-def]
    """A UMA of one $100 fractional security per sleeve; ``band``: one width or one per sleeve."""
    syms = [f"S{k}" for k in range(len(values))]
    secs = {s: Security(s, 100.0, f"class{k}", fractional=True) for k, s in enumerate(syms)}
    models = [Model(f"M{k}", (ModelEntry(s, 1.0),)) for k, s in enumerate(syms)]
    widths = band if isinstance(band, list) else [band] * len(values)
    strat = Strategy(
        "ST",
        tuple(
            StrategyEntry(f"M{k}", t, Band(kind, w))
            for k, (t, w) in enumerate(zip(targets, widths, strict=True))
        ),
        rr,
    )
    fr = Settings(fractional=True, share_decimals=4)
    sleeves = tuple(
        sleeve(f"s{k}", f"M{k}", {s: v / 100.0}, 0.0, fr)
        for k, (s, v) in enumerate(zip(syms, values, strict=True))
    )
    acct = Account("U", sleeves, cash=cash, strategy_id="ST")
    return scenario(acct, reference(secs, models, [strat]))


def moves(r):  # type: ignore[no-untyped-def]
    return [(m.from_sleeve, m.to_sleeve, float(m.amount)) for m in r.cash_movements]


@pytest.mark.parametrize(
    ("rr", "moved"),
    [
        (RebalanceRange(RangeKind.TARGET), 1000.0),
        (RebalanceRange(RangeKind.BAND), 500.0),
        (RebalanceRange(RangeKind.INTERIOR, 50.0), 750.0),
    ],
)
def test_rebalance_ranges(rr, moved) -> None:  # type: ignore[no-untyped-def]
    r = rebalance(uma([6000, 4000], [0.5, 0.5], rr=rr))
    assert moves(r) == [("s0", "s1", moved)]
    assert trades(r) == {"S0": -moved / 100, "S1": moved / 100}
    assert r.trades[0].reason is Reason.CASH_NEED and "sleeve s1" in r.trades[0].explanation


def test_in_band_models_are_left_alone() -> None:
    r = rebalance(uma([5400, 4600], [0.5, 0.5]))
    assert r.trades == () and r.cash_movements == ()


def test_step2_leftover_goes_to_in_band_models_highest_dollar_drift_first() -> None:
    r = rebalance(uma([4700, 2800, 2500], [0.4, 0.3, 0.3]))
    assert sorted(moves(r)) == [("s0", "s1", 200.0), ("s0", "s2", 500.0)]
    # band range: s0 gives 1 point; it all goes to s2 (drift 4) before s1 (drift 2)
    r = rebalance(uma([4600, 2800, 2600], [0.4, 0.3, 0.3], rr=RebalanceRange(RangeKind.BAND)))
    assert moves(r) == [("s0", "s2", 100.0)]


def test_step3_leftover_goes_in_one_point_passes_to_the_farthest_sleeve() -> None:
    # band range: s0 50% -> 45% (band), s2 24% -> 25% (band); the 4 points left go one point
    # ($1,000) at a time to the sleeve farthest below target: s2 (5 points), then s1 and s2
    # at 4 points each (equal: the lower sleeve id, s1, first), s2, s1
    r = rebalance(uma([50_000, 26_000, 24_000], [0.4, 0.3, 0.3], rr=RebalanceRange(RangeKind.BAND)))
    after = {
        i.sleeve_id: round(i.weight, 4) for i in r.drift_after.items if i.level.value == "sleeve"
    }
    assert after == {"s0": 0.45, "s1": 0.28, "s2": 0.27}
    assert net_cash(r) == {"s0": -5000, "s1": 2000, "s2": 3000}


# Seed 003 ("Iterative Approach to Multi-Model Rebalancing"): Large, Mid and Small Cap at
# 50/30/20, an interior range half way between band and target (Large and Mid bands ±3
# points, so their rebalance points are 1.5 points from target; Small ±5, 2.5 points).
SEED_TARGETS = [0.5, 0.3, 0.2]
SEED_BANDS = [0.03, 0.03, 0.05]
HALF_WAY = RebalanceRange(RangeKind.INTERIOR, 50.0)


def net_cash(r):  # type: ignore[no-untyped-def]
    """{sleeve: cash received (+) or given (-)} of a result."""
    return {s.sleeve_id: s.cash_in - s.cash_out for s in r.sleeves}


def sleeve_weights(r):  # type: ignore[no-untyped-def]
    return {
        i.sleeve_id: round(i.weight, 4) for i in r.drift_after.items if i.level.value == "sleeve"
    }


def test_seed_passes_leave_small_cap_one_point_and_mid_cap_half_a_point_from_target() -> None:
    # $1M: Large 55% (out of band above 53%), Mid 26.5% (out below 27%), Small 18% (in band,
    # above its point 17.5%), $5,000 unallocated. Step 1: Large -> 51.5% gives $35,000, Mid ->
    # 28.5% takes $20,000; step 2: nobody is beyond its point; $20,000 (2 points) is left.
    # Pass 1: Small is farthest (2 points; Mid 1.5) and gets $10,000; pass 2: Mid (1.5 vs 1)
    # gets $10,000. Small ends 1 point from target, Mid 0.5 (the seed's closing note).
    r = rebalance(
        uma([550_000, 265_000, 180_000], SEED_TARGETS, SEED_BANDS, HALF_WAY, cash=5_000.0)
    )
    assert net_cash(r) == {"s0": -35_000, "s1": 30_000, "s2": 10_000}
    assert sleeve_weights(r) == {"s0": 0.515, "s1": 0.295, "s2": 0.19}
    assert trades(r) == {"S0": -350, "S1": 300, "S2": 100}


def test_seed_next_pass_goes_to_small_cap_not_mid_cap() -> None:
    # as above with $2,500 more left after the steps (Small starts at 17.75%, Large at
    # 55.25%): the third pass goes to Small (1.25 points from target) and not to Mid (0.5)
    r = rebalance(
        uma([552_500, 265_000, 177_500], SEED_TARGETS, SEED_BANDS, HALF_WAY, cash=5_000.0)
    )
    assert net_cash(r) == {"s0": -37_500, "s1": 30_000, "s2": 12_500}
    assert sleeve_weights(r) == {"s0": 0.515, "s1": 0.295, "s2": 0.19}


def test_deposit_with_every_model_in_band_goes_in_passes() -> None:
    # $975,000 in band (Large 500k, Mid 290k, Small 185k) and a $15,000 deposit: the account
    # is $990,000 and a pass $9,900. Small is 1.31 points below target and Mid 0.71: Small
    # gets $9,900, then Mid (0.71 vs 0.31 points) the $5,100 left. Nothing is sold.
    inp = uma([500_000, 290_000, 185_000], SEED_TARGETS, SEED_BANDS, HALF_WAY)
    r = rebalance(scenario(inp.account, inp.reference, Request(RequestKind.INVEST_CASH, 15_000.0)))
    assert net_cash(r) == {"s0": 0, "s1": 5_100, "s2": 9_900}
    assert trades(r) == {"S1": 51, "S2": 99}


def test_withdrawal_is_taken_in_passes_from_the_farthest_above_target() -> None:
    # raise $50,000 from $1M (Large 52%, Mid 30%, Small 18%; Mid's band ±4): the account is
    # $950,000 and a pass $9,500. Large (54.7%) is out of band and gives down to 51.5%
    # ($30,750); $19,250 is still owed. Mid is 1.58 points above target, Large 1.5: Mid gives
    # $9,500, then Large (1.5 vs 0.58) $9,500, then Mid the last $250. Small gives nothing.
    inp = uma([520_000, 300_000, 180_000], SEED_TARGETS, [0.03, 0.04, 0.05], HALF_WAY)
    r = rebalance(scenario(inp.account, inp.reference, Request(RequestKind.RAISE_CASH, 50_000.0)))
    assert net_cash(r) == {"s0": -40_250, "s1": -9_750, "s2": 0}
    assert all(t.side.value == "sell" for t in r.trades)


def test_unallocated_cash_and_withdrawal_in_a_uma() -> None:
    r = rebalance(uma([5000, 4000], [0.5, 0.5], cash=1000.0))
    assert moves(r) == [(None, "s1", 1000.0)]
    inp = uma([6000, 4000], [0.5, 0.5])
    r = rebalance(scenario(inp.account, inp.reference, Request(RequestKind.RAISE_CASH, 2000.0)))
    assert moves(r) == [("s0", None, 2000.0)]
    assert all(t.side.value == "sell" for t in r.trades)
    r = rebalance(
        scenario(inp.account, inp.reference, Request(RequestKind.REBALANCE, scope=Scope.TACTICAL))
    )
    assert r.cash_movements == () and r.trades == ()


def test_relative_bands() -> None:
    # 50% ±10% relative = 45%–55%: 56% is out, back to target
    r = rebalance(uma([5600, 4400], [0.5, 0.5], band=0.10, kind=BandKind.RELATIVE))
    assert moves(r) == [("s0", "s1", 600.0)]
