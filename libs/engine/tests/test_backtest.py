"""The tax-alpha backtest: the market, the strategies, the figures and the wash-sale check."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
from ballast_engine.backtest import (
    BacktestConfig,
    Calendar,
    Deposits,
    Market,
    MarketConfig,
    TaxAssumptions,
    TaxCredit,
    check_wash_sales,
    run_backtest,
    run_strategy,
    simulate_market,
)
from ballast_engine.backtest.market import describe, month_ends
from ballast_engine.backtest.metrics import annual_irr
from ballast_engine.backtest.simulate import TradeLog
from ballast_engine.backtest.strategies import loss_harvest, substitute_weights
from ballast_engine.cli import main
from ballast_engine.tax import Fill, LedgerAccount, Side, TaxLedger

SMALL = MarketConfig(stocks=60, years=3, seed=7)
NO_OPTIMIZER = ("buy_and_hold", "loss_harvest", "loss_harvest_wash_sale")


# ----------------------------------------------------------------------------- the market
def test_market_is_reproducible_by_seed() -> None:
    a, b = simulate_market(SMALL), simulate_market(SMALL)
    assert np.array_equal(a.prices, b.prices)
    assert np.array_equal(a.sector, b.sector)
    assert a.dates == b.dates
    other = simulate_market(MarketConfig(stocks=60, years=3, seed=8))
    assert not np.allclose(a.prices, other.prices)


def test_default_market_has_the_stated_volatilities_and_correlations() -> None:
    market = simulate_market(MarketConfig())
    stats = describe(market)
    assert market.stocks == 500 and market.steps == 120
    assert set(np.unique(market.sector)) == set(range(11))
    assert np.bincount(market.sector).min() >= 40
    assert 0.13 <= stats.index_vol <= 0.23
    assert 0.25 <= stats.stock_vol_median <= 0.40
    assert stats.stock_vol_p10 >= 0.20 and stats.stock_vol_p90 <= 0.45
    assert 0.15 <= stats.correlation_across_sectors < stats.correlation_within_sector <= 0.6
    assert 0.04 <= stats.dispersion <= 0.11
    weights = market.index_weights()
    assert np.allclose(weights.sum(axis=1), 1.0)
    assert weights.max() < 0.1  # a realistic cap spread, not one name as the index


def test_factor_volatilities_match_the_config_on_a_long_path() -> None:
    config = MarketConfig(stocks=30, years=40, seed=3)
    market = simulate_market(config)
    annual = market.factor_returns.std(axis=0, ddof=1) * np.sqrt(12)
    assert annual[0] == pytest.approx(config.market_vol, rel=0.12)
    assert annual[1 : 1 + config.sectors] == pytest.approx(
        np.full(config.sectors, config.sector_vol), rel=0.15
    )


def test_bad_market_config_is_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="stocks"):
        simulate_market(MarketConfig(stocks=5))
    with pytest.raises(ValueError, match="years"):
        simulate_market(MarketConfig(years=0))


# ------------------------------------------------------------------------ buy-and-hold
def test_buy_and_hold_has_zero_tax_alpha_and_tracks_the_index() -> None:
    result = run_backtest(BacktestConfig(market=SMALL, strategies=("buy_and_hold",)))
    (bh,) = result.results
    m = bh.metrics
    assert abs(m.tax_alpha_liquidated) < 1e-9
    assert abs(m.tax_alpha_not_liquidated) < 1e-9
    assert m.tracking_error < 1e-9
    assert m.turnover == 0 and m.harvested_losses == 0
    assert m.final_value == pytest.approx(result.benchmark.value, rel=1e-12)
    assert m.liquidation_tax == pytest.approx(result.benchmark.liquidation_tax, rel=1e-9)
    assert (bh.run.trades.side > 0).all()
    assert bh.wash.violations == 0


def test_irr_of_a_known_growth() -> None:
    # 100 deposited, worth 100 * 1.01**12 after 12 months: 1% a month.
    deposits = np.zeros(12)
    deposits[0] = 100.0
    assert annual_irr(deposits, 100 * 1.01**12) == pytest.approx(1.01**12 - 1, abs=1e-9)


# ---------------------------------------------------------------- the harvest rule
def test_loss_harvest_under_the_wash_sale_rule_has_no_violations() -> None:
    config = BacktestConfig(
        market=MarketConfig(stocks=150, years=5, seed=11), strategies=NO_OPTIMIZER
    )
    result = run_backtest(config)
    by_name = {r.name: r for r in result.results}
    free, constrained = by_name["loss_harvest"], by_name["loss_harvest_wash_sale"]
    assert constrained.wash.loss_sales > 100
    assert constrained.wash.violations == 0
    # The unconstrained rule rebuys what it sold the same day: every loss sale is a wash.
    assert free.wash.violations == free.wash.loss_sales > 100
    assert constrained.metrics.tax_alpha_liquidated > 0
    assert free.metrics.tracking_error < 1e-9
    assert 0 < constrained.metrics.tracking_error < 0.05


def hand_market(prices: list[list[float]], sector: list[int], start: date) -> Market:
    return Market(
        dates=month_ends(start, len(prices)),
        prices=np.array(prices, dtype=float),
        shares_outstanding=np.ones(len(sector)),
        sector=np.array(sector, dtype=np.int64),
        symbols=tuple("ABCDEFG"[: len(sector)]),
    )


# Three stocks, A and B in one sector, C in another; one share each outstanding.
# Month-ends 2016-01-31, 02-29 (29 days later), 03-31 (31 days later), 04-30.
WORKED = hand_market(
    [[100, 100, 100], [80, 110, 100], [90, 110, 110], [90, 110, 110]],
    [0, 0, 1],
    date(2016, 1, 31),
)
WORKED_DEPOSITS = Deposits(initial=300.0, monthly=30.0)
RATES = TaxAssumptions(short_term_rate=0.35, long_term_rate=0.15)


def test_worked_case_without_the_wash_sale_rule() -> None:
    cal = Calendar.of(WORKED.dates)
    run = run_strategy("free", loss_harvest(False), WORKED, cal, WORKED_DEPOSITS, RATES)
    t = run.trades
    # Month 1: the A lot (1 share, basis 100) is worth 80: a short-term loss of 20, a credit
    # of 0.35 x 20 = 7. Cash 30 + 80 + 7 = 117; the book is B 110 + C 100 + 117 = 327 and
    # buys the index (80:110:100 of 290): A 327*80/290, B 327*110/290 - 110, C ... - 100.
    sells = t.side < 0
    assert t.stock[sells].tolist() == [0] and t.step[sells].tolist() == [1]
    assert run.realized_short[1] == pytest.approx(-20.0)
    assert run.tax_paid[1] == pytest.approx(-7.0)
    month1 = (t.step == 1) & (t.side > 0)
    assert t.value[month1] == pytest.approx(
        [327 * 80 / 290, 327 * 110 / 290 - 110, 327 * 100 / 290 - 100]
    )
    # Nothing is at a loss in month 2 (prices up or flat): the deposit buys the shortfalls.
    assert not ((t.step == 2) & (t.side < 0)).any()
    # A was sold at a loss and bought the same day: a wash sale, caught by the check.
    check = check_wash_sales(t, cal)
    assert (check.loss_sales, check.violations) == (1, 1)
    assert check.examples[0].purchase_steps == (1,)


def test_worked_case_with_the_wash_sale_rule() -> None:
    cal = Calendar.of(WORKED.dates)
    run = run_strategy("wash", loss_harvest(True), WORKED, cal, WORKED_DEPOSITS, RATES)
    t = run.trades
    # Month 1: A sold as above; A may not be bought until more than 30 days later, so its
    # weight goes to B (its sector): B 327*190/290 - 110, C 327*100/290 - 100, A nothing.
    month1 = (t.step == 1) & (t.side > 0)
    assert t.stock[month1].tolist() == [1, 2]
    assert t.value[month1] == pytest.approx([327 * 190 / 290 - 110, 327 * 100 / 290 - 100])
    # Month 2 (31 days later): A may be bought again. The 30 deposited go to the shortfalls
    # against the index (A 90, B 110, C 110 of 310); B is over its weight, so only A and C:
    b_held = 110 + (327 * 190 / 290 - 110)
    c_held = 110 + (327 * 100 / 290 - 100) * 1.1
    book = b_held + c_held + 30
    short_a, short_c = book * 90 / 310, book * 110 / 310 - c_held
    month2 = (t.step == 2) & (t.side > 0)
    assert t.stock[month2].tolist() == [0, 2]
    assert t.value[month2] == pytest.approx(
        [30 * short_a / (short_a + short_c), 30 * short_c / (short_a + short_c)]
    )
    check = check_wash_sales(t, cal)
    assert (check.loss_sales, check.violations) == (1, 0)


def test_a_loss_lot_waits_while_another_recent_purchase_would_wash_it() -> None:
    # Month-ends 2016-02-29, 03-31, 04-30 (30 days after 03-31), 05-31. A is bought at the
    # start and with the deposit of month 1 at the same price, then falls 10% in month 2.
    market = hand_market(
        [[100, 100, 100], [100, 100, 100], [90, 100, 100], [90, 100, 100]],
        [0, 0, 1],
        date(2016, 2, 29),
    )
    cal = Calendar.of(market.dates)
    deposits = Deposits(initial=300.0, monthly=30.0)
    wash = run_strategy("wash", loss_harvest(True), market, cal, deposits, RATES).trades
    free = run_strategy("free", loss_harvest(False), market, cal, deposits, RATES).trades
    first_lot, second_lot = wash.lot_id[(wash.stock == 0) & (wash.side > 0)][:2]
    # The month-1 purchase is 30 days old: selling the first lot at a loss would be washed
    # by it, so only the month-1 lot (whose own purchase does not count) is sold.
    assert wash.lot_id[wash.side < 0].tolist() == [second_lot]
    assert sorted(free.lot_id[free.side < 0].tolist()) == [first_lot, second_lot]
    assert check_wash_sales(wash, cal).violations == 0


def test_substitute_weights_stay_in_the_sector_and_sum_to_one() -> None:
    weights = np.array([0.1, 0.2, 0.3, 0.4])
    sector = np.array([0, 0, 1, 1])
    out = substitute_weights(weights, np.array([True, False, False, False]), sector)
    assert out.tolist() == pytest.approx([0.0, 0.3, 0.3, 0.4])
    # A whole sector blocked: its weight goes to every open name pro rata.
    out = substitute_weights(weights, np.array([True, True, False, False]), sector)
    assert out.tolist() == pytest.approx([0.0, 0.0, 0.3 / 0.7, 0.4 / 0.7])


# ------------------------------------------------------------------ the independent check
def _log(rows: list[tuple[int, int, int, int, float, float, float]]) -> TradeLog:
    step, stock, side, lot, shares, price, basis = (np.array(c) for c in zip(*rows, strict=True))
    return TradeLog(
        step.astype(np.int64),
        stock.astype(np.int64),
        side.astype(np.int64),
        lot.astype(np.int64),
        shares.astype(float),
        price.astype(float),
        basis.astype(float),
        np.zeros(len(rows), np.int64),
        np.zeros(len(rows), bool),
    )


def test_the_check_counts_a_purchase_inside_the_window_and_not_the_sold_lot_itself() -> None:
    cal = Calendar.of(month_ends(date(2016, 1, 31), 4))  # gaps of 29, 31 and 30 days
    # Lot 0 bought in month 0 and sold at a loss in month 1 (29 days after lot 1's purchase
    # in month 0 would not matter: lot 1 is bought in month 1, the sale day).
    washed = _log([(0, 0, 1, 0, 1, 100, 100), (1, 0, 1, 1, 1, 80, 80), (1, 0, -1, 0, 1, 80, 100)])
    assert check_wash_sales(washed, cal).violations == 1
    # The same sale with no other purchase: its own lot's purchase does not count.
    alone = _log([(0, 0, 1, 0, 1, 100, 100), (1, 0, -1, 0, 1, 80, 100)])
    assert check_wash_sales(alone, cal).violations == 0
    # A rebuy 31 days after the sale is outside the window; 30 days is inside.
    later = _log([(0, 0, 1, 0, 1, 100, 100), (1, 0, -1, 0, 1, 80, 100), (2, 0, 1, 1, 1, 80, 80)])
    assert check_wash_sales(later, cal).violations == 0
    inside = _log([(0, 0, 1, 0, 1, 100, 100), (2, 0, -1, 0, 1, 80, 100), (3, 0, 1, 1, 1, 80, 80)])
    assert check_wash_sales(inside, cal).violations == 1
    # A loss that rounds to nothing in cents is no loss (as in the ledger).
    dust = _log([(0, 0, 1, 0, 1, 100, 100), (1, 0, 1, 1, 1, 80, 80), (1, 0, -1, 0, 1, 99.996, 100)])
    assert check_wash_sales(dust, cal).loss_sales == 0
    # A sale at a gain is never a violation.
    gain = _log([(0, 0, 1, 0, 1, 100, 100), (1, 0, 1, 1, 1, 120, 120), (1, 0, -1, 0, 1, 120, 100)])
    assert check_wash_sales(gain, cal).violations == 0


def _ledger_washed(market: Market, trades: TradeLog) -> set[int]:
    """Lot ids whose sale the tax engine's ledger washes when the log is replayed."""
    ledger = TaxLedger([LedgerAccount("ACC", "HH")])
    for j in range(len(trades)):
        lot = f"L{trades.lot_id[j]}"
        ledger.apply(
            Fill(
                trade_id=f"T{j}",
                account="ACC",
                on=market.dates[trades.step[j]],
                symbol=market.symbols[trades.stock[j]],
                side=Side.BUY if trades.side[j] > 0 else Side.SELL,
                quantity=Decimal(repr(float(trades.shares[j]))),
                price=Decimal(repr(float(trades.price[j]))),
                lot_ids=(lot,),
            )
        )
    return {int(d.lot_id[1:].split("/")[0]) for d in ledger.disposals if d.washed_quantity > 0}


def test_the_check_agrees_with_the_tax_ledger_replaying_the_trade_log() -> None:
    market = simulate_market(MarketConfig(stocks=15, years=2, seed=5))
    cal = Calendar.of(market.dates)
    deposits, taxes = Deposits(100_000.0, 1_000.0), TaxAssumptions()
    for wash_sale in (False, True):
        trades = run_strategy("x", loss_harvest(wash_sale), market, cal, deposits, taxes).trades
        check = check_wash_sales(trades, cal)
        washed = _ledger_washed(market, trades)
        if wash_sale:
            assert washed == set() and check.violations == 0
        else:
            assert len(washed) > 10
            assert check.violations >= len(washed)


# --------------------------------------------------------------- tax modes and the command
def test_carryforward_mode_credits_nothing_during_the_run() -> None:
    market = simulate_market(SMALL)
    cal = Calendar.of(market.dates)
    taxes = TaxAssumptions(credit=TaxCredit.CARRYFORWARD)
    run = run_strategy("cf", loss_harvest(True), market, cal, Deposits(), taxes)
    assert (run.tax_paid == 0).all()  # the rule realizes losses only
    assert run.carry_short + run.carry_long == pytest.approx(
        run.realized_short.sum() + run.realized_long.sum()
    )


def test_the_command_prints_the_table_and_writes_json_and_png(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("matplotlib")
    out, png = tmp_path / "bt.json", tmp_path / "bt.png"
    args = [
        "backtest",
        "--years",
        "2",
        "--stocks",
        "40",
        "--no-progress",
        "--strategies",
        ",".join(NO_OPTIMIZER),
        "--out",
        str(out),
        "--plot",
        str(png),
    ]
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert "CBL rule, wash-sale rule" in text and "1.08%" in text and "0.82%" in text
    report = json.loads(out.read_text())
    assert report["strategies"]["loss_harvest_wash_sale"]["wash_sale_check"]["violations"] == 0
    assert len(report["series"]["dates"]) == 25
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--years", "0"], "--years must be at least 1, got 0"),
        (["--stocks", "5"], "--stocks must be at least 11"),
        (["--monthly", "-1"], "--monthly must not be negative"),
        (["--strategies", "nope"], "--strategies: unknown nope"),
    ],
)
def test_the_command_names_a_bad_argument(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["backtest", "--no-progress", *args])
    assert exit_.value.code == 2
    assert f"ballast backtest: error: {message}" in capsys.readouterr().err


# ---------------------------------------------------------------------- the optimizer
def test_the_optimizer_strategy_runs_on_the_same_path_without_wash_sales() -> None:
    pytest.importorskip("ballast_engine.optimizer")
    config = BacktestConfig(
        market=MarketConfig(stocks=40, years=1, seed=4),
        strategies=("loss_harvest_wash_sale", "optimizer"),
    )
    result = run_backtest(config)
    assert result.skipped == {}
    by_name = {r.name: r for r in result.results}
    optimized = by_name["optimizer"]
    assert optimized.wash.loss_sales > 0
    assert optimized.wash.violations == 0
    assert optimized.metrics.harvested_losses > 0
    # Same path, same deposits: both runs start from the same money.
    rule = by_name["loss_harvest_wash_sale"]
    assert optimized.run.deposits.tolist() == rule.run.deposits.tolist()
