"""The strategies the backtest compares, each a `Strategy`: `StepView -> Decision`.

* `buy_and_hold`: deposits buy the index at its weights; nothing is ever sold.
* `loss_harvest(wash_sale=False)`: the rule of Chaudhuri, Burnham and Lo (FAJ 2020): every
  month every lot showing a loss is sold and the proceeds (with the deposit and the tax
  credit) buy the index back at once, so the sold names are bought again the same day.
* `loss_harvest(wash_sale=True)`: the same rule kept clear of wash sales with the engine's
  rules (`Calendar`, built from `tax.wash.within_window` and `tax.model.term_of`):
  - a name sold at a loss is not bought until its window has passed (the first month-end
    more than 30 days after the sale); its index weight goes to the other names of its
    sector pro rata (the substitute), and comes back to it afterwards: later deposits and
    proceeds fill it first (swap back without selling a substitute at a gain);
  - a loss lot is not sold while another purchase of the same name is less than 31 days old
    (that purchase would wash the loss); the lot waits for a later month.
"""

from __future__ import annotations

import numpy as np

from ballast_engine.backtest.market import BoolArray, FloatArray
from ballast_engine.backtest.simulate import NO_STEP, Decision, Lots, StepView, Strategy


def buy_and_hold(view: StepView) -> Decision:
    """Never sell; invest the cash at the index weights."""
    return Decision(np.zeros(len(view.lots)), target_weights=view.index_weights)


def loss_lots(view: StepView) -> BoolArray:
    """Open lots worth less than their basis at this step's prices."""
    lots = view.lots
    return lots.shares * view.prices[lots.stock] < lots.basis


def washable_lots(view: StepView) -> BoolArray:
    """Lots that another purchase of the same name, still inside its window, would wash."""
    lots = view.lots
    last, prev = view.last_buy[lots.stock], view.previous_buy[lots.stock]
    other = np.where(last == lots.acquired, prev, last)
    has_other = other != NO_STEP
    window = view.calendar.in_window[np.where(has_other, other, 0), view.step]
    return has_other & window


def buy_blocked(view: StepView, sold_at_loss_now: BoolArray) -> BoolArray:
    """Names whose purchase now would wash a loss sold inside the window (or this step)."""
    last = view.last_loss_sale
    sold_before = last != NO_STEP
    window = view.calendar.in_window[np.where(sold_before, last, 0), view.step]
    return (sold_before & window) | sold_at_loss_now


def substitute_weights(weights: FloatArray, blocked: BoolArray, sector: np.ndarray) -> FloatArray:
    """Index weights with each blocked name's weight moved to the unblocked names of its
    sector in proportion to their weights (to every unblocked name if its sector has none)."""
    out = np.where(blocked, 0.0, weights)
    sectors = int(sector.max()) + 1
    lost = np.bincount(sector, weights=np.where(blocked, weights, 0.0), minlength=sectors)
    open_weight = np.bincount(sector, weights=out, minlength=sectors)
    movable = open_weight > 0
    scale = np.ones(sectors)
    scale[movable] += lost[movable] / open_weight[movable]
    out = out * scale[sector]
    stranded = lost[~movable].sum()
    if stranded > 0 and out.sum() > 0:
        out += out / out.sum() * stranded
    return out


def loss_harvest(wash_sale: bool) -> Strategy:
    """The monthly sell-every-loss rule, with or without the wash-sale constraint."""

    def decide(view: StepView) -> Decision:
        lots: Lots = view.lots
        losing = loss_lots(view)
        if not wash_sale:
            return Decision(np.where(losing, lots.shares, 0.0), target_weights=view.index_weights)
        selling = losing & ~washable_lots(view)
        sold_now = np.zeros(view.market.stocks, bool)
        sold_now[lots.stock[selling]] = True
        blocked = buy_blocked(view, sold_now)
        targets = substitute_weights(view.index_weights, blocked, view.market.sector)
        return Decision(np.where(selling, lots.shares, 0.0), target_weights=targets)

    return decide
