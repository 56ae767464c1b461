"""The tax-alpha backtest: strategies run on one seeded synthetic market, side by side.

    from ballast_engine.backtest import BacktestConfig, run_backtest

    result = run_backtest(BacktestConfig())        # 500 stocks, 10 years, seed 1
    result.to_dict()                               # the JSON report
    for r in result.results:
        r.metrics.tax_alpha_liquidated, r.metrics.tracking_error, r.wash.violations

Pure (no I/O): the market (`market`), the simulator (`simulate`), the strategies
(`strategies`, and the optimizer's adapter), the figures (`metrics`), the independent
wash-sale check (`washcheck`). The command (`ballast backtest`, `cli`) and the PNG (`plot`,
matplotlib) sit on top. The term and wash-window rules are the tax engine's
(`tax.model.term_of`, `tax.wash.within_window`), evaluated on the market's dates by
`market.Calendar`. See docs/backtest.md.
"""

from ballast_engine.backtest.market import Calendar, Market, MarketConfig, simulate_market
from ballast_engine.backtest.runner import (
    PUBLISHED_TAX_ALPHA,
    STRATEGIES,
    BacktestConfig,
    BacktestResult,
    StrategyResult,
    run_backtest,
)
from ballast_engine.backtest.simulate import (
    Decision,
    Deposits,
    StepView,
    Strategy,
    StrategyUnavailable,
    TaxAssumptions,
    TaxCredit,
    run_strategy,
)
from ballast_engine.backtest.washcheck import WashCheck, check_wash_sales

__all__ = [
    "PUBLISHED_TAX_ALPHA",
    "STRATEGIES",
    "BacktestConfig",
    "BacktestResult",
    "Calendar",
    "Decision",
    "Deposits",
    "Market",
    "MarketConfig",
    "StepView",
    "Strategy",
    "StrategyResult",
    "StrategyUnavailable",
    "TaxAssumptions",
    "TaxCredit",
    "WashCheck",
    "check_wash_sales",
    "run_backtest",
    "run_strategy",
    "simulate_market",
]
