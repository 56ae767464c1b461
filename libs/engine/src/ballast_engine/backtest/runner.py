"""Run every strategy on the same market path and gather the report."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ballast_engine.backtest.market import (
    Calendar,
    Market,
    MarketConfig,
    MarketStats,
    describe,
    simulate_market,
)
from ballast_engine.backtest.metrics import (
    Benchmark,
    RunMetrics,
    index_benchmark,
    measure,
    rolling_tracking_error,
)
from ballast_engine.backtest.optimizer_strategy import optimizer_strategy
from ballast_engine.backtest.simulate import (
    Deposits,
    Run,
    Strategy,
    StrategyUnavailable,
    TaxAssumptions,
    run_strategy,
)
from ballast_engine.backtest.strategies import buy_and_hold, loss_harvest
from ballast_engine.backtest.washcheck import WashCheck, check_wash_sales

# Chaudhuri, Burnham and Lo (FAJ 2020), CRSP 500 largest, 1926-2018, 15%/35% rates.
PUBLISHED_TAX_ALPHA = {"loss_harvest": 0.0108, "loss_harvest_wash_sale": 0.0082}


@dataclass(frozen=True, slots=True)
class StrategySpec:
    name: str
    label: str
    make: Callable[[], Strategy]
    external: bool = False  # another package's code: a failure skips it, with the reason


STRATEGIES: dict[str, StrategySpec] = {
    spec.name: spec
    for spec in (
        StrategySpec("buy_and_hold", "buy-and-hold index", lambda: buy_and_hold),
        StrategySpec("loss_harvest", "CBL rule, no wash-sale rule", lambda: loss_harvest(False)),
        StrategySpec(
            "loss_harvest_wash_sale", "CBL rule, wash-sale rule", lambda: loss_harvest(True)
        ),
        StrategySpec("optimizer", "Ballast optimizer", optimizer_strategy, external=True),
    )
}


@dataclass(frozen=True, slots=True)
class BacktestConfig:
    market: MarketConfig = field(default_factory=MarketConfig)
    deposits: Deposits = field(default_factory=Deposits)
    taxes: TaxAssumptions = field(default_factory=TaxAssumptions)
    strategies: tuple[str, ...] = tuple(STRATEGIES)


@dataclass(frozen=True, slots=True)
class StrategyResult:
    name: str
    label: str
    run: Run
    metrics: RunMetrics
    wash: WashCheck


@dataclass(frozen=True, slots=True)
class BacktestResult:
    config: BacktestConfig
    market: Market
    market_stats: MarketStats
    benchmark: Benchmark
    results: tuple[StrategyResult, ...]
    skipped: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data (rates as fractions, money in dollars)."""
        cfg = self.config
        dates = [d.isoformat() for d in self.market.dates]
        return {
            "format": "ballast.backtest/1",
            "config": {
                "market": {
                    k: (str(v) if k == "start" else v) for k, v in asdict(cfg.market).items()
                },
                "deposits": asdict(cfg.deposits),
                "taxes": {**asdict(cfg.taxes), "credit": cfg.taxes.credit.value},
                "steps": self.market.steps,
                "step": "month",
            },
            "assumptions": ASSUMPTIONS,
            "market_stats": self.market_stats.to_dict(),
            "benchmark": {
                "final_value": round(self.benchmark.value, 2),
                "liquidation_tax": round(self.benchmark.liquidation_tax, 2),
            },
            "strategies": {
                r.name: {
                    "label": r.label,
                    **{k: _round(v) for k, v in asdict(r.metrics).items()},
                    "published_tax_alpha": PUBLISHED_TAX_ALPHA.get(r.name),
                    "trades": len(r.run.trades),
                    "wash_sale_check": {
                        "loss_sales": r.wash.loss_sales,
                        "violations": r.wash.violations,
                        "examples": [
                            {
                                "symbol": self.market.symbols[v.stock],
                                "sold": dates[v.sold_step],
                                "bought": [dates[p] for p in v.purchase_steps],
                            }
                            for v in r.wash.examples
                        ],
                    },
                }
                for r in self.results
            },
            "skipped": self.skipped,
            "series": self.series(),
        }

    def series(self) -> dict[str, Any]:
        """Monthly series for the plot: cumulative harvested losses (fraction of money
        deposited so far) and trailing 12-month tracking error, per strategy."""
        deposited = np.cumsum(self.results[0].run.deposits) if self.results else np.zeros(0)
        out: dict[str, Any] = {"dates": [d.isoformat() for d in self.market.dates]}
        for r in self.results:
            out[r.name] = {
                "harvested_fraction": [
                    round(float(x), 6) for x in np.cumsum(r.run.harvested) / deposited
                ],
                "rolling_tracking_error": [
                    None if np.isnan(x) else round(float(x), 6)
                    for x in np.concatenate(
                        [[np.nan], rolling_tracking_error(r.run.returns, self.benchmark.returns)]
                    )
                ],
            }
        return out


ASSUMPTIONS = [
    "tax alpha = annualized after-tax money-weighted return (IRR of the deposits and the "
    "final value) of the strategy minus that of the cap-weighted index bought with the same "
    "deposits and never sold (Chaudhuri, Burnham and Lo define it on returns; deposits make "
    "it an IRR)",
    "rates: 35% short-term, 15% long-term (term by the engine's tax.model.term_of)",
    "immediate credit (the paper's): each month's realized gains are taxed and losses "
    "credited at their term's rate, the credit reinvested at once (the investor has other "
    "gains or income to absorb them); carryforward: yearly Schedule D netting, losses "
    "carried forward with their character, nothing credited during the run",
    "liquidated: every lot sold at the last date and taxed (losses credited); not "
    "liquidated: the final value as it stands (an unused carryforward valued at its rate)",
    "no dividends, no transaction costs, fractional shares, trades at month-end prices",
    "wash-sale rule: the engine's tax.wash.within_window (30 days before or after) on the "
    "trade dates; the CBL rule under it buys the sold name's sector peers pro rata until "
    "the window has passed and does not sell a loss lot another recent purchase would wash",
    "Ballast optimizer: tax sensitivity high, tracking tolerance 1%, harvesting on with every "
    "loss a candidate, the market's own factor model as risk model, fractional shares; its "
    "transaction cost (0.05% a dollar) is in its objective only, no cost is charged here",
    "tracking error: annualized standard deviation of the monthly return difference to the "
    "index; turnover: value sold per year over the average portfolio value",
]


def _round(value: float) -> float:
    return round(value, 6) if abs(value) < 10 else round(value, 2)


ProgressFn = Callable[[str, int, int], None]


def run_backtest(config: BacktestConfig, progress: ProgressFn | None = None) -> BacktestResult:
    """Simulate the market, run each strategy on it, measure each; `progress(name, step,
    steps)` is called after every simulated month."""
    unknown = [s for s in config.strategies if s not in STRATEGIES]
    if unknown:
        raise ValueError(f"unknown strategy {', '.join(unknown)}; known: {', '.join(STRATEGIES)}")
    market = simulate_market(config.market)
    calendar = Calendar.of(market.dates)
    bench = index_benchmark(market, calendar, config.deposits.schedule(market.steps), config.taxes)
    results: list[StrategyResult] = []
    skipped: dict[str, str] = {}
    for name in config.strategies:
        spec = STRATEGIES[name]
        try:
            strategy = spec.make()
        except StrategyUnavailable as exc:
            skipped[name] = str(exc)
            continue

        def tick(step: int, name: str = name) -> None:
            if progress is not None:
                progress(name, step + 1, market.steps)

        try:
            run = run_strategy(
                name, strategy, market, calendar, config.deposits, config.taxes, tick
            )
        except Exception as exc:
            if not spec.external:
                raise
            skipped[name] = f"failed: {type(exc).__name__}: {exc}"
            continue
        results.append(
            StrategyResult(
                name,
                spec.label,
                run,
                measure(run, market, calendar, bench, config.taxes),
                check_wash_sales(run.trades, calendar),
            )
        )
    return BacktestResult(config, market, describe(market), bench, tuple(results), skipped)
