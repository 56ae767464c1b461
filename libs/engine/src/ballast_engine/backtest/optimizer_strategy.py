"""Ballast's optimizer (`ballast_engine.optimizer.optimize`) as a backtest strategy.

Each month the sleeve (every open lot, the index weights, the market's own factor model,
the month's cash) goes to the optimizer as a `SleeveProblem` with the backtest's rates and
fractional shares; the wash-sale state comes from the same rules the CBL strategy uses
(names sold at a loss inside the window may not be bought, lots a recent purchase would wash
may not be sold at a loss). Its sells (per lot) and buys (per name) become the `Decision`.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import numpy as np

from ballast_engine.backtest.simulate import Decision, StepView, Strategy, StrategyUnavailable
from ballast_engine.backtest.strategies import buy_blocked, washable_lots
from ballast_engine.tax.harvest import HarvestPolicy

try:  # another engineer's package: without it the backtest runs the other strategies
    from ballast_engine.optimizer import LotArrays, PlainSettings, SleeveProblem, optimize
except ImportError as missing:  # pragma: no cover - depends on what is installed
    UNAVAILABLE: str | None = f"ballast_engine.optimizer cannot be imported ({missing})"
else:
    UNAVAILABLE = None

# Every loss is a candidate, as in the CBL rule (the engine's default thresholds, 10% and
# $100 a lot, would leave the small lots of monthly deposits alone).
HARVEST = HarvestPolicy(min_loss_percent=Decimal(0), min_loss_dollars=Decimal("0.01"))


def optimizer_strategy() -> Strategy:
    """The optimizer wrapped as a `Strategy`; `StrategyUnavailable` when it cannot run."""
    if UNAVAILABLE is not None:
        raise StrategyUnavailable(UNAVAILABLE + "; the optimizer strategy is skipped")
    # "Tax sensitivity high, stay within about 1% of the index, harvest losses."
    settings = PlainSettings(tax_sensitivity="high", tracking_tolerance=0.01, harvesting=True)

    def decide(view: StepView) -> Decision:
        market, lots = view.market, view.lots
        day = market.dates[view.step]
        starts = np.array(market.dates, dtype="datetime64[D]")[lots.acquired]
        problem = SleeveProblem(
            names=np.array(market.symbols),
            index_weights=view.index_weights,
            prices=view.prices,
            sectors=market.sector,
            sector_names=tuple(f"sector_{j}" for j in range(int(market.sector.max()) + 1)),
            exposures=market.exposures,
            factor_names=market.factor_names,
            factor_cov=np.diag(market.factor_vol**2),
            specific_vol=market.specific_vol,
            lots=LotArrays(
                name=lots.stock,
                quantity=lots.shares.copy(),
                basis=lots.basis.copy(),
                holding_start=starts,
                lot_ids=tuple(str(i) for i in lots.lot_id),
                sell_blocked=washable_lots(view),
            ),
            cash=view.cash,
            on=day,
            buy_blocked=buy_blocked(view, np.zeros(market.stocks, bool)),
            short_term_rate=view.taxes.short_term_rate,
            long_term_rate=view.taxes.long_term_rate,
            fractional=True,
            share_decimals=6,
            harvest_policy=HARVEST,
        )
        return decision_of(optimize(problem, settings), view)

    return decide


def decision_of(result: Any, view: StepView) -> Decision:
    """The optimizer's trades as shares to sell per lot and dollars to buy per name."""
    lots = view.lots
    position = {int(lot_id): j for j, lot_id in enumerate(lots.lot_id)}
    symbol_index = {s: i for i, s in enumerate(view.market.symbols)}
    sell = np.zeros(len(lots))
    buy = np.zeros(view.market.stocks)
    for trade in result.trades:
        if trade.side == "sell" and trade.lot_id is not None:
            sell[position[int(trade.lot_id)]] += float(trade.quantity)
        elif trade.side == "buy":
            buy[symbol_index[trade.symbol]] += (
                float(trade.quantity) * view.prices[symbol_index[trade.symbol]]
            )
    return Decision(sell, buy_value=buy)
