"""The skeleton's rebalancing rule: whole shares, sells first, never spends more than it has."""

from decimal import Decimal as D

import pytest
from rebalance_svc.rule import AccountDataError, rebalance_to_model

PRICES = {"AAA": D("100"), "BBB": D("50"), "CCC": D("20"), "OLD": D("10")}


def run(cash, holdings, targets, min_trade=D("0")):
    return rebalance_to_model(
        account_id="ACC-1",
        model_name="Core v2",
        cash=D(cash),
        holdings={k: D(v) for k, v in holdings.items()},
        targets={k: D(v) for k, v in targets.items()},
        prices=PRICES,
        min_trade_value=min_trade,
    )


def test_cash_only_account_buys_whole_shares_to_target():
    p = run("10000", {}, {"AAA": "0.5", "BBB": "0.3", "CCC": "0.2"})
    trades = {(t.symbol, t.side): t.quantity for t in p.trades}
    assert trades == {("AAA", "buy"): 50, ("BBB", "buy"): 60, ("CCC", "buy"): 100}
    assert p.cash_after == D("0.00")


def test_security_dropped_from_model_is_sold_and_proceeds_reinvested():
    p = run("0", {"AAA": "50", "OLD": "500"}, {"AAA": "0.5", "BBB": "0.5"})
    by = {(t.symbol, t.side): t for t in p.trades}
    assert by[("OLD", "sell")].quantity == 500
    assert by[("OLD", "sell")].reason == "model-change"
    assert "no longer holds it" in by[("OLD", "sell")].explanation
    assert by[("BBB", "buy")].quantity == 100
    assert ("AAA", "buy") not in by and ("AAA", "sell") not in by
    assert p.cash_after == D("0.00")


def test_never_spends_more_than_cash_plus_sales():
    p = run("333", {"CCC": "10"}, {"AAA": "1"})
    spent = sum(t.value for t in p.trades if t.side == "buy")
    received = sum(t.value for t in p.trades if t.side == "sell")
    assert spent <= D("333") + received
    assert p.cash_after >= 0


def test_a_balanced_account_gets_no_trades():
    p = run("0", {"AAA": "50", "BBB": "100"}, {"AAA": "0.5", "BBB": "0.5"})
    assert p.trades == []
    assert p.max_abs_drift == 0


def test_trades_below_the_minimum_are_not_proposed():
    p = run("60", {"AAA": "50", "BBB": "100"}, {"AAA": "0.5", "BBB": "0.5"}, min_trade=D("100"))
    assert p.trades == []


def test_drift_is_current_minus_target_weight():
    p = run("0", {"AAA": "60", "BBB": "80"}, {"AAA": "0.5", "BBB": "0.5"})
    drift = {d.symbol: d.drift for d in p.drift}
    assert drift == {"AAA": D("0.6") - D("0.5"), "BBB": D("0.4") - D("0.5")}


def test_missing_price_names_the_account_and_security():
    with pytest.raises(AccountDataError, match="account ACC-1: no price for ZZZ"):
        run("100", {"ZZZ": "1"}, {"AAA": "1"})


def test_securities_inside_their_range_are_not_traded():
    # AAA is 0.4% over target, BBB 0.4% under: inside a 0.5% range; OLD is not in the model
    holdings = {"AAA": "227", "BBB": "446", "OLD": "5"}
    p = run("0", holdings, {"AAA": "0.5", "BBB": "0.5"})
    p_ranged = rebalance_to_model(
        account_id="ACC-1",
        model_name="Core v2",
        cash=D("0"),
        holdings={k: D(v) for k, v in holdings.items()},
        targets={"AAA": D("0.5"), "BBB": D("0.5")},
        prices=PRICES,
        min_trade_value=D("0"),
        security_tolerance=D("0.005"),
    )
    assert {t.symbol for t in p.trades} >= {"AAA", "OLD"}
    assert [(t.symbol, t.side) for t in p_ranged.trades] == [("OLD", "sell")]
