"""The backtest's PNG: cumulative harvested losses and trailing tracking error over time.

matplotlib is an optional dependency (the engine's `backtest` extra), imported only here.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np

from ballast_engine.backtest.metrics import rolling_tracking_error
from ballast_engine.backtest.runner import BacktestResult


class PlotUnavailable(Exception):
    """matplotlib is not installed."""


def require_matplotlib() -> None:
    """Raise `PlotUnavailable` (saying how to install it) when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise PlotUnavailable(
            "matplotlib is not installed: it is the engine's optional `backtest` extra "
            "(make bench-backtest installs it)"
        ) from None


def write_plot(result: BacktestResult, path: Path) -> None:
    """Write the two-panel PNG of `result` to `path`."""
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dates: list[date] = list(result.market.dates)
    deposited = np.cumsum(result.config.deposits.schedule(result.market.steps))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7.5), sharex=True)
    for r in result.results:
        top.plot(dates, 100 * np.cumsum(r.run.harvested) / deposited, label=r.label)
        te = rolling_tracking_error(r.run.returns, result.benchmark.returns)
        bottom.plot(dates[1:], 100 * te, label=r.label)
    top.set_ylabel("cumulative harvested losses\n(% of money deposited)")
    top.set_title(
        f"Tax-loss harvesting backtest: {result.market.stocks} stocks, "
        f"{result.market.steps // 12} years, seed {result.config.market.seed}"
    )
    top.legend(loc="upper left")
    top.grid(alpha=0.3)
    bottom.set_ylabel("tracking error vs index\n(trailing 12 months, %/yr)")
    bottom.axhline(1.0, color="grey", linestyle="--", linewidth=0.8)
    bottom.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
