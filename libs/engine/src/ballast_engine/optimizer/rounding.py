"""From the LP's continuous trades to tradable ones: share increments, minimum trades, no
wash sale, the gain budget and the cash reserve kept, leftover cash invested.

Steps, each on whole arrays (Python loops only over the few names a repair touches):
1. buys round down to the share increment (1 share, or 10^-d when fractional), sales of a
   lot to the nearest increment; a lot sold (almost) whole is sold whole, and so are the lots
   of excluded names;
2. drop buys and sales below the minimum trade value (a sale closing a position, or of an
   excluded name, is exempt);
3. no wash sale: a wash group with a loss lot sold buys nothing;
4. the gain budget: gain lots are cut, most gain per share first, until the net realized
   gain fits (when the budget holds); gains that cannot be cut (excluded names) take more of
   the loss lots the LP used to make room (largest loss per share first);
5. the cash reserve: buys are cut, least underweight group first, until cash after trades
   is at least the reserve (0 when the reserve gave way);
6. leftover cash above the reserve buys whole increments of the most underweight buyable
   groups (not a wash group selling a loss), never past their target.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ballast_engine.optimizer.formulation import LinearProgram
from ballast_engine.optimizer.problem import BoolArray, FloatArray, Prepared

FULL_LOT = 1e-6  # relative: an LP sale this close to the lot is the whole lot


@dataclass(frozen=True, eq=False)
class Rounded:
    buys: FloatArray  # (N,) shares
    sells: FloatArray  # (L,) shares
    notices: tuple[str, ...]


def _down(x: FloatArray, quantum: float) -> FloatArray:
    # 1e-6 of an increment: a solver's 9.9999999 shares is 10
    return np.floor(x / quantum + 1e-6) * quantum


def cash_after(prep: Prepared, buys: FloatArray, sells: FloatArray) -> float:
    """Cash after the trades and their transaction costs."""
    p = prep.problem
    c = p.cost_rate
    return float(p.cash + (1 - c) * (sells @ prep.lot_price) - (1 + c) * (buys @ p.prices))


def round_trades(
    prep: Prepared,
    lp: LinearProgram,
    buys_lp: FloatArray,
    sells_lp: FloatArray,
    *,
    gain_room: float | None,
    reserve: float,
) -> Rounded:
    """Tradable buys per name and sells per lot from the LP's solution."""
    p = prep.problem
    quantum = 10.0 ** (-p.share_decimals) if p.fractional else 1.0
    qty = p.lots.quantity
    lot_name = p.lots.name
    notices: list[str] = []

    # 1. increments
    whole = (sells_lp >= qty * (1 - FULL_LOT)) | prep.excluded[lot_name]
    nearest = np.floor(np.maximum(sells_lp, 0) / quantum + 0.5 - 1e-9) * quantum
    sells = np.where(whole, qty, np.minimum(nearest, qty))
    buys = np.where(lp.buyable, _down(np.maximum(buys_lp, 0), quantum), 0.0)

    # 2. minimum trade value per name
    if p.min_trade_value > 0:
        sold_shares = np.bincount(lot_name, weights=sells, minlength=lp.n)
        sold_value = sold_shares * p.prices
        closing = sold_shares >= prep.shares - 1e-9
        small_sale = (sold_value > 0) & (sold_value < p.min_trade_value) & ~closing & ~prep.excluded
        small_buy = (buys > 0) & (buys * p.prices < p.min_trade_value)
        if small_sale.any() or small_buy.any():
            notices.append(
                f"{int(small_sale.sum() + small_buy.sum())} trades below the minimum of "
                f"${p.min_trade_value:,.2f} dropped"
            )
        sells = np.where(small_sale[lot_name], 0.0, sells)
        buys = np.where(small_buy, 0.0, buys)

    # 3. a wash group that sells a loss lot buys nothing
    wash = prep.identical_group
    loss_sold = (sells > 0) & (prep.gain_per_share < 0)
    washes = np.isin(wash, wash[lot_name[loss_sold]])
    if loss_sold.any():
        washing = washes & (buys > 0)
        if washing.any():
            buys = np.where(washing, 0.0, buys)
            notices.append(f"{int(washing.sum())} buys dropped: they would wash a loss sold here")

    # 4. the gain budget
    if gain_room is not None:
        realized = float(sells @ prep.gain_per_share)
        if realized > gain_room + 0.005:
            excess = realized - gain_room
            gain_lots = np.flatnonzero(
                (sells > 0) & (prep.gain_per_share > 0) & ~prep.excluded[lot_name]
            )
            for lot in gain_lots[np.argsort(-prep.gain_per_share[gain_lots], kind="stable")]:
                per_share = prep.gain_per_share[lot]
                cut = min(sells[lot], np.ceil(excess / per_share / quantum - 1e-9) * quantum)
                sells[lot] -= cut
                excess -= cut * per_share
                if excess <= 0.005:
                    break
            if excess > 0.005:  # forced gains: realize more of the losses the LP used
                sellable = lp.var_ub[lp.block("sell")] > 0
                buying = np.isin(wash[lot_name], wash[buys > 0])
                lossy = np.flatnonzero(
                    (prep.gain_per_share < 0) & sellable & ~buying & (sells < qty)
                )
                for lot in lossy[np.argsort(prep.gain_per_share[lossy], kind="stable")]:
                    per_share = -prep.gain_per_share[lot]
                    add = min(
                        qty[lot] - sells[lot],
                        np.ceil(excess / per_share / quantum - 1e-9) * quantum,
                    )
                    sells[lot] += add
                    excess -= add * per_share
                    if excess <= 0.005:
                        break
                washes = np.isin(wash, wash[lot_name[(sells > 0) & (prep.gain_per_share < 0)]])
            notices.append("sales cut to keep net realized gains within the budget")
            if p.min_trade_value > 0:
                _minimum_after_budget(prep, lp, sells, buys, quantum, notices)

    # 5. the cash reserve
    shortfall = reserve - cash_after(prep, buys, sells)
    if shortfall > 0.005:
        post = _group_active(prep, lp, buys, sells)
        for i in np.flatnonzero(buys > 0)[
            np.argsort(-post[np.flatnonzero(buys > 0)], kind="stable")
        ]:
            unit = p.prices[i] * (1 + p.cost_rate)
            cut = min(buys[i], np.ceil(shortfall / unit / quantum - 1e-9) * quantum)
            buys[i] -= cut
            shortfall -= cut * unit
            if shortfall <= 0.005:
                break
        if shortfall > 0.005:
            notices.append(f"cash stays ${shortfall:,.2f} short of the reserve")

    # 6. leftover cash to the most underweight buyable groups
    spare = cash_after(prep, buys, sells) - reserve
    if spare > 0:
        buys = _top_up(prep, lp, buys, sells, spare, quantum, lp.buyable & ~washes)
    return Rounded(buys, sells, tuple(notices))


def _minimum_after_budget(
    prep: Prepared,
    lp: LinearProgram,
    sells: FloatArray,
    buys: FloatArray,
    quantum: float,
    notices: list[str],
) -> None:
    """Sales the budget step left below the minimum: a gain sale goes; a loss sale that makes
    room for gains grows to the minimum (more loss keeps the budget)."""
    p = prep.problem
    lot_name = p.lots.name
    sold = np.bincount(lot_name, weights=sells, minlength=lp.n)
    value = sold * p.prices
    closing = sold >= prep.shares - 1e-9
    small = (value > 0) & (value < p.min_trade_value) & ~closing & ~prep.excluded
    sellable = lp.var_ub[lp.block("sell")] > 0
    buying = np.isin(prep.identical_group[lot_name], prep.identical_group[buys > 0])
    for i in np.flatnonzero(small).tolist():
        lots = np.flatnonzero(lot_name == i)
        if float(sells[lots] @ prep.gain_per_share[lots]) >= 0:
            sells[lots] = 0.0
            continue
        need = np.ceil((p.min_trade_value / p.prices[i] - sold[i]) / quantum - 1e-9) * quantum
        losses = lots[(prep.gain_per_share[lots] < 0) & sellable[lots] & ~buying[lots]]
        for lot in losses[np.argsort(prep.gain_per_share[losses], kind="stable")]:
            add = min(p.lots.quantity[lot] - sells[lot], need)
            sells[lot] += add
            need -= add
            if need <= 0:
                break
        if need > 0:
            notices.append(f"a sale of {p.names[i]} stays below the minimum: it keeps the budget")


def _group_active(
    prep: Prepared, lp: LinearProgram, buys: FloatArray, sells: FloatArray
) -> FloatArray:
    """Post-trade active weight of each name's group, per name."""
    p = prep.problem
    post = prep.shares + buys - np.bincount(p.lots.name, weights=sells, minlength=lp.n)
    group = prep.equivalence
    active = np.bincount(
        group, weights=post * p.prices / lp.value - lp.target_weights, minlength=lp.n_groups
    )
    return active[group]


def _top_up(
    prep: Prepared,
    lp: LinearProgram,
    buys: FloatArray,
    sells: FloatArray,
    spare: float,
    quantum: float,
    may_buy: BoolArray,
) -> FloatArray:
    p = prep.problem
    unit = p.prices * (1 + p.cost_rate)
    active = _group_active(prep, lp, buys, sells)
    room = -active * lp.value  # dollars below target
    candidates = np.flatnonzero(may_buy & (room >= unit * quantum))
    seen: set[int] = set()
    for i in candidates[np.argsort(active[candidates], kind="stable")]:
        g = int(prep.equivalence[i])
        if g in seen:
            continue  # one member of a group takes the group's room
        seen.add(g)
        add = _down(np.array([min(room[i], spare) / unit[i]]), quantum)[0]
        if add <= 0:
            continue
        if buys[i] == 0 and add * p.prices[i] < p.min_trade_value:
            continue
        buys[i] += add
        spare -= add * unit[i]
        if spare < float(unit.min()) * quantum:
            break
    return buys
