"""Tax alpha, tracking error and turnover of a run, and the index benchmark they refer to.

Tax alpha (as Chaudhuri, Burnham and Lo define it: the strategy's annualized after-tax return
minus the passive index's) is computed on money-weighted returns because of the deposits:
the monthly internal rate of return of the deposits and the after-tax final value,
annualized. `liquidated`: at the last date every open lot is sold and taxed at its term's
rate (a loss credited in `immediate` mode; netted with the carried-forward losses by
Schedule D in `carryforward` mode). `not liquidated`: the final value as it stands (in
`carryforward` mode an unused loss carried forward is valued at its term's rate).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ballast_engine.backtest.market import STEPS_PER_YEAR, Calendar, FloatArray, Market
from ballast_engine.backtest.simulate import Run, TaxAssumptions, TaxCredit, schedule_d


@dataclass(frozen=True, slots=True)
class Benchmark:
    """The cap-weighted index bought with the same deposits, never sold (index-level
    arithmetic: one lot per deposit, no stock is looked at)."""

    value: float
    liquidation_tax: float
    returns: FloatArray


def index_benchmark(
    market: Market, calendar: Calendar, deposits: FloatArray, taxes: TaxAssumptions
) -> Benchmark:
    """The index investor's final value and the tax of selling every deposit's units."""
    level = np.concatenate([[1.0], np.cumprod(1.0 + market.index_returns())])
    end = market.steps
    grown = deposits * level[end] / level
    gain = grown - deposits
    long_term = calendar.long_term[np.arange(end + 1), end]
    short, long = float(gain[~long_term].sum()), float(gain[long_term].sum())
    return Benchmark(float(grown.sum()), _tax(short, long, 0.0, 0.0, taxes), market.index_returns())


def _tax(
    short: float, long: float, carry_short: float, carry_long: float, t: TaxAssumptions
) -> float:
    if t.credit is TaxCredit.IMMEDIATE:
        return short * t.short_term_rate + long * t.long_term_rate
    net_short, net_long = schedule_d(short + carry_short, long + carry_long)
    return max(net_short, 0.0) * t.short_term_rate + max(net_long, 0.0) * t.long_term_rate


def annual_irr(deposits: FloatArray, final_value: float) -> float:
    """Annualized money-weighted return: deposits at dates 0..n-1, `final_value` at date n."""
    periods = (deposits.size - np.arange(deposits.size)).astype(float)

    def surplus(rate: float) -> float:
        return float((deposits * (1.0 + rate) ** periods).sum()) - final_value

    low, high = -0.5, 0.5
    for _ in range(200):
        mid = (low + high) / 2
        if surplus(mid) > 0:
            high = mid
        else:
            low = mid
    return float((1.0 + (low + high) / 2) ** STEPS_PER_YEAR - 1.0)


@dataclass(frozen=True, slots=True)
class RunMetrics:
    """The figures the report gives for one strategy (rates as fractions)."""

    final_value: float
    liquidation_tax: float
    after_tax_value: float
    irr_liquidated: float
    irr_not_liquidated: float
    tax_alpha_liquidated: float
    tax_alpha_not_liquidated: float
    tracking_error: float
    active_return: float
    turnover: float
    harvested_losses: float
    realized_short: float
    realized_long: float
    tax_paid: float
    contributions: float


def measure(
    run: Run, market: Market, calendar: Calendar, bench: Benchmark, taxes: TaxAssumptions
) -> RunMetrics:
    """Tax alpha (both ways), tracking error, turnover and harvest totals of `run`."""
    short, long = run.unrealized(market, calendar)
    liquidation = _tax(short, long, run.carry_short, run.carry_long, taxes)
    final = float(run.value[-1])
    kept = final
    if taxes.credit is TaxCredit.CARRYFORWARD:
        kept -= run.carry_short * taxes.short_term_rate + run.carry_long * taxes.long_term_rate
    bench_kept = bench.value
    irr_liq = annual_irr(run.deposits[:-1], final - liquidation)
    irr_kept = annual_irr(run.deposits[:-1], kept)
    bench_liq = annual_irr(run.deposits[:-1], bench.value - bench.liquidation_tax)
    bench_irr = annual_irr(run.deposits[:-1], bench_kept)
    years = market.steps / STEPS_PER_YEAR
    return RunMetrics(
        final_value=final,
        liquidation_tax=liquidation,
        after_tax_value=final - liquidation,
        irr_liquidated=irr_liq,
        irr_not_liquidated=irr_kept,
        tax_alpha_liquidated=irr_liq - bench_liq,
        tax_alpha_not_liquidated=irr_kept - bench_irr,
        tracking_error=tracking_error(run.returns, bench.returns),
        active_return=active_return(run.returns, bench.returns),
        turnover=float(run.sold.sum() / run.value[:-1].mean() / years),
        harvested_losses=float(run.harvested.sum()),
        realized_short=float(run.realized_short.sum()),
        realized_long=float(run.realized_long.sum()),
        tax_paid=float(run.tax_paid.sum()),
        contributions=float(run.deposits.sum()),
    )


def tracking_error(returns: FloatArray, index_returns: FloatArray) -> float:
    """Annualized standard deviation of the monthly active return."""
    active = returns - index_returns
    if active.size < 2:
        return 0.0
    return float(active.std(ddof=1) * np.sqrt(STEPS_PER_YEAR))


def active_return(returns: FloatArray, index_returns: FloatArray) -> float:
    """Annualized geometric return of the holdings over the index's, before taxes and
    deposits: the part of a tax alpha that is tracking, not tax."""
    relative = float(np.prod(1.0 + returns) / np.prod(1.0 + index_returns))
    return relative ** (STEPS_PER_YEAR / max(returns.size, 1)) - 1.0


def rolling_tracking_error(
    returns: FloatArray, index_returns: FloatArray, window: int = STEPS_PER_YEAR
) -> FloatArray:
    """Tracking error over the trailing `window` months at each month (NaN before)."""
    active = returns - index_returns
    out = np.full(active.size, np.nan)
    for t in range(window - 1, active.size):
        out[t] = active[t - window + 1 : t + 1].std(ddof=1) * np.sqrt(STEPS_PER_YEAR)
    return out
