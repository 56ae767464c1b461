"""An independent wash-sale check over a trade log: it knows nothing of the strategies.

A violation is a sale at a loss of a name bought, in another purchase, within 30 days before
or after the sale (`tax.wash.within_window` on the trade dates, through `Calendar`), however
many shares; the purchase the sold lot came from is identified by its lot id in the log. A
loss is counted as the ledger counts it: proceeds and basis each rounded to cents.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ballast_engine.backtest.market import Calendar
from ballast_engine.backtest.simulate import TradeLog


@dataclass(frozen=True, slots=True)
class Violation:
    stock: int
    sold_step: int
    lot_id: int
    purchase_steps: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class WashCheck:
    loss_sales: int
    violations: int
    examples: tuple[Violation, ...]


def check_wash_sales(trades: TradeLog, calendar: Calendar, examples: int = 5) -> WashCheck:
    """Count loss sales that a purchase of the same name in its window would wash."""
    buy = trades.side > 0
    sell_loss = (trades.side < 0) & (np.round(trades.value, 2) < np.round(trades.basis, 2))
    dates, stocks = len(calendar.dates), int(trades.stock.max(initial=-1)) + 1
    bought = np.zeros((dates, max(stocks, 1)), dtype=np.int64)
    np.add.at(bought, (trades.step[buy], trades.stock[buy]), 1)

    buy_ids = trades.lot_id[buy]
    order = np.argsort(buy_ids)
    sold_ids = trades.lot_id[sell_loss]
    if buy_ids.size:
        pos = np.clip(np.searchsorted(buy_ids[order], sold_ids), 0, buy_ids.size - 1)
        own_step = trades.step[buy][order][pos]
        own_known = buy_ids[order][pos] == sold_ids
    else:
        own_step = np.zeros(sold_ids.size, np.int64)
        own_known = np.zeros(sold_ids.size, bool)

    stock = trades.stock[sell_loss]
    step = trades.step[sell_loss]
    window = calendar.in_window[:, step]  # dates x loss sales
    in_window = (window * bought[:, stock]).sum(axis=0)
    own = np.where(own_known, window[own_step, np.arange(step.size)], False)
    others = in_window - own.astype(np.int64)
    bad = np.flatnonzero(others > 0)
    shown = []
    for j in bad[:examples]:
        steps = np.flatnonzero(window[:, j] & (bought[:, stock[j]] > 0))
        shown.append(
            Violation(
                int(stock[j]),
                int(step[j]),
                int(sold_ids[j]),
                tuple(int(p) for p in steps if not (own_known[j] and p == own_step[j])),
            )
        )
    return WashCheck(int(sell_loss.sum()), int(bad.size), tuple(shown))
