"""The optimizer's answer: trades with reasons and sentences, tax, tracking error, turnover."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import numpy as np

from ballast_engine.optimizer.formulation import LinearProgram, objective_of
from ballast_engine.optimizer.problem import FloatArray, Prepared
from ballast_engine.optimizer.rounding import cash_after
from ballast_engine.tax.choice import estimate_tax
from ballast_engine.tax.model import CENT, WASH_WINDOW_DAYS, TaxRates

WHOLE = Decimal(1)


@dataclass(frozen=True, slots=True)
class Relaxation:
    """A bound that gave way so the problem could be solved, and why."""

    bound: str  # factor | sector | position | gain_budget | reserve
    reason: str


@dataclass(frozen=True, slots=True)
class OptimizedTrade:
    """A buy of a name or a sell of one lot. ``reason`` uses the engine's reason codes."""

    symbol: str
    side: str  # buy | sell
    quantity: Decimal
    price: float
    estimated_value: Decimal
    reason: str  # drift | restriction | tax-loss-harvest | replacement | invest_cash | cash_need
    explanation: str
    lot_id: str | None = None
    acquired: str | None = None
    cost_basis: Decimal | None = None
    gain: Decimal | None = None
    term: str | None = None
    estimated_tax: Decimal | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "symbol": self.symbol,
            "side": self.side,
            "quantity": str(self.quantity),
            "price": self.price,
            "estimated_value": str(self.estimated_value),
            "reason": self.reason,
            "explanation": self.explanation,
        }
        if self.lot_id is not None:
            d |= {
                "lot_id": self.lot_id,
                "acquired": self.acquired,
                "cost_basis": str(self.cost_basis),
                "gain": str(self.gain),
                "term": self.term,
                "estimated_tax": str(self.estimated_tax),
            }
        return d


@dataclass(frozen=True, eq=False)
class OptimizedSleeve:
    """Trades and what they do. ``solver`` is ``glop`` or ``rules`` (the rule engine's
    fallback, ``explanation`` says why); ``relaxations`` the bounds that gave way."""

    account_id: str
    sleeve_id: str
    trades: tuple[OptimizedTrade, ...]
    short_term_gain: Decimal
    long_term_gain: Decimal
    estimated_tax: Decimal
    tracking_error_before: float
    tracking_error_after: float
    turnover: float
    cash_before: Decimal
    cash_after: Decimal
    objective: float
    solver: str
    status: str
    relaxations: tuple[Relaxation, ...]
    explanation: str
    notices: tuple[str, ...] = ()
    post_shares: FloatArray = field(default_factory=lambda: np.zeros(0))
    timings_ms: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "account_id": self.account_id,
            "sleeve_id": self.sleeve_id,
            "trades": [t.to_dict() for t in self.trades],
            "short_term_gain": str(self.short_term_gain),
            "long_term_gain": str(self.long_term_gain),
            "estimated_tax": str(self.estimated_tax),
            "tracking_error_before": round(self.tracking_error_before, 6),
            "tracking_error_after": round(self.tracking_error_after, 6),
            "turnover": round(self.turnover, 6),
            "cash_before": str(self.cash_before),
            "cash_after": str(self.cash_after),
            "solver": self.solver,
            "status": self.status,
            "relaxations": [{"bound": r.bound, "reason": r.reason} for r in self.relaxations],
            "explanation": self.explanation,
            "notices": list(self.notices),
        }


def tracking_error(prep: Prepared, shares: FloatArray, cash: float) -> float:
    """Ex-ante yearly tracking error against the index, from the factor model."""
    p = prep.problem
    values = shares * p.prices
    total = cash + float(values.sum())
    active = values / total - p.index_weights
    factor = p.exposures.T @ active
    variance = float(factor @ p.factor_cov @ factor) + float(np.sum((active * p.specific_vol) ** 2))
    return float(np.sqrt(max(variance, 0.0)))


def _written(values: FloatArray, decimals: int) -> list[str]:
    """Each value as ``f"{x:.{decimals}f}"`` writes it (the same rounding), in one call."""
    return (f"%.{decimals}f," * len(values) % tuple(values.tolist())).split(",")[:-1]


def _quantities(values: FloatArray, decimals: int) -> list[Decimal]:
    """Share quantities: trailing zeros dropped, never an exponent (20, not 2E+1)."""
    written = [Decimal(q) for q in _written(values, decimals)]
    if decimals == 0:
        return written
    return [q.quantize(WHOLE) if q == q.to_integral_value() else q.normalize() for q in written]


def dollars(x: float) -> Decimal:
    """An engine float as money: its exact binary value rounded half-even to cents."""
    return Decimal(f"{x:.2f}")


def _pts(x: float) -> str:
    return f"{x * 100:.2f}"


def _sale_sentence(
    kind: str,
    quantity: Decimal,
    symbol: str,
    lot_id: str,
    term: str,
    gain: Decimal,
    gain_value: float,
    tax: Decimal,
    detail: str,
    off: float,
    target: float,
) -> str:
    """The sentence of one lot sale (``kind`` is its reason; ``detail`` the redistribution
    rule or the buy-back date; ``off`` the group's weight above its ``target``)."""
    sold = f"{quantity} {symbol} (lot {lot_id}, {term}-term "
    sold += f"{'gain' if gain >= 0 else 'loss'} ${abs(gain_value):,.2f})"
    if kind == "restriction":
        why = f"Sell {sold}: {symbol} is excluded by the client; its index weight goes {detail}."
    elif kind == "tax-loss-harvest":
        why = (
            f"Sell {sold} to harvest the loss (saves about ${-tax:,.2f}); {symbol} is not "
            f"bought back before {detail}."
        )
    elif kind == "drift":
        why = f"Sell {sold}: {symbol} is {_pts(off)} points above its {_pts(target)}% target."
    else:
        why = f"Sell {sold} to fund the trades that bring the sleeve closer to its index."
    if gain > 0:
        why += f" Estimated tax ${tax:,.2f}."
    return why


def _buy_sentence(
    kind: str, quantity: Decimal, symbol: str, replaced: str, off: float, target: float
) -> str:
    """The sentence of one buy (``replaced``: the names it replaces; ``off`` the group's
    weight below its ``target``)."""
    if kind == "replacement":
        return (
            f"Buy {quantity} {symbol} to replace {replaced}, sold for its loss (equivalents keep "
            "the exposure)."
        )
    if kind == "drift":
        return (
            f"Buy {quantity} {symbol}: {symbol} is {_pts(off)} points below its "
            f"{_pts(target)}% target."
        )
    return f"Buy {quantity} {symbol} to keep sector and factor exposures close to the index."


def build_trades(
    prep: Prepared, lp: LinearProgram, buys: FloatArray, sells: FloatArray
) -> tuple[tuple[OptimizedTrade, ...], Decimal, Decimal]:
    """Trades with reasons and one-line sentences; the short- and long-term gains."""
    p = prep.problem
    decimals = p.share_decimals if p.fractional else 0
    group = prep.equivalence
    group_target = np.bincount(group, weights=lp.target_weights, minlength=lp.n_groups)
    group_before = np.bincount(
        group, weights=prep.shares * p.prices / lp.value, minlength=lp.n_groups
    )
    trades: list[OptimizedTrade] = []
    st = lt = Decimal(0)
    rates = (Decimal(repr(p.short_term_rate)), Decimal(repr(p.long_term_rate)))
    buyback = (p.on + timedelta(days=WASH_WINDOW_DAYS + 1)).isoformat()
    rule = p.redistribution.replace("_", " ")
    lot_ids = p.lots.lot_ids
    # the numbers of every sold lot at once; the loop only turns them into trades
    sold_lots = np.flatnonzero(sells > 0)
    names = p.lots.name[sold_lots]
    qty = sells[sold_lots]
    basis = p.lots.basis[sold_lots] * qty / p.lots.quantity[sold_lots]
    starts = np.datetime_as_string(p.lots.holding_start[sold_lots], unit="D").tolist()
    lot_group = group[names]
    over = group_before[lot_group] > group_target[lot_group]
    above_by = (group_before - group_target).tolist()
    below_by = (group_target - group_before).tolist()
    targets = group_target.tolist()
    gain_values = qty * prep.lot_price[sold_lots] - basis
    rows = zip(
        sold_lots.tolist(),
        p.names[names].tolist(),
        p.prices[names].tolist(),
        _quantities(qty, decimals),
        _written(qty * p.prices[names], 2),
        _written(basis, 2),
        _written(gain_values, 2),
        gain_values.tolist(),
        prep.long_term[sold_lots].tolist(),
        starts,
        prep.excluded[names].tolist(),
        (lp.harvested[names] & prep.harvestable[sold_lots]).tolist(),
        over.tolist(),
        lot_group.tolist(),
        strict=True,
    )
    replaced: dict[int, list[str]] = {}  # group -> names sold there to harvest a loss
    for (
        lot,
        symbol,
        price,
        quantity,
        value,
        lot_basis,
        gain_cents,
        gain_value,
        long_term,
        start,
        out,
        harvest,
        above,
        g,
    ) in rows:
        gain = Decimal(gain_cents)
        term = "long" if long_term else "short"
        tax = (gain * rates[long_term]).quantize(CENT, rounding=ROUND_HALF_EVEN)
        if long_term:
            lt += gain
        else:
            st += gain
        if out:
            reason, detail = "restriction", rule
        elif harvest and gain < 0:
            reason, detail = "tax-loss-harvest", buyback
            replaced.setdefault(g, []).append(symbol)
        elif above:
            reason, detail = "drift", ""
        else:
            reason, detail = "cash_need", ""
        lot_id = lot_ids[lot]
        trades.append(
            OptimizedTrade(
                symbol,
                "sell",
                quantity,
                price,
                Decimal(value),
                reason,
                _sale_sentence(
                    reason,
                    quantity,
                    symbol,
                    lot_id,
                    term,
                    gain,
                    gain_value,
                    tax,
                    detail,
                    above_by[g],
                    targets[g],
                ),
                lot_id,
                start,
                Decimal(lot_basis),
                gain,
                term,
                tax,
            )
        )
    bought = np.flatnonzero(buys > 0)
    for symbol, price, quantity, value, g in zip(
        p.names[bought].tolist(),
        p.prices[bought].tolist(),
        _quantities(buys[bought], decimals),
        _written(buys[bought] * p.prices[bought], 2),
        group[bought].tolist(),
        strict=True,
    ):
        gap = below_by[g]
        if g in replaced:
            reason, detail = "replacement", ", ".join(sorted(set(replaced[g])))
        elif gap > 0:
            reason, detail = "drift", ""
        else:
            reason, detail = "invest_cash", ""
        trades.append(
            OptimizedTrade(
                symbol,
                "buy",
                quantity,
                price,
                Decimal(value),
                reason,
                _buy_sentence(reason, quantity, symbol, detail, gap, targets[g]),
            )
        )
    return tuple(trades), st, lt


def tax_of(prep: Prepared, st: Decimal, lt: Decimal) -> Decimal:
    """Estimated tax of the realized gains, terms netted (``tax.choice.estimate_tax``)."""
    p = prep.problem
    rates = TaxRates(Decimal(repr(p.short_term_rate)), Decimal(repr(p.long_term_rate)))
    return estimate_tax(st, lt, rates)


def finish(
    prep: Prepared,
    lp: LinearProgram,
    buys: FloatArray,
    sells: FloatArray,
    *,
    solver_name: str,
    status: str,
    relaxations: tuple[Relaxation, ...],
    notices: tuple[str, ...],
    lead: str,
    timings: dict[str, float],
    trades: tuple[OptimizedTrade, ...] | None = None,
    tracking: tuple[float, float] | None = None,
) -> OptimizedSleeve:
    """The result of a trade list: trades, tax, tracking error before/after, turnover."""
    p = prep.problem
    if trades is None:
        trades, st, lt = build_trades(prep, lp, buys, sells)
    else:
        st = sum((t.gain or Decimal(0) for t in trades if t.term == "short"), Decimal(0))
        lt = sum((t.gain or Decimal(0) for t in trades if t.term == "long"), Decimal(0))
    bought = float(buys @ p.prices)
    sold = float(sells @ prep.lot_price)
    cash = cash_after(prep, buys, sells)
    post = prep.shares + buys - np.bincount(p.lots.name, weights=sells, minlength=lp.n)
    te_before, te_after = tracking or (
        tracking_error(prep, prep.shares, p.cash),
        tracking_error(prep, post, cash),
    )
    turnover = (bought + sold) / (2 * lp.value)
    tax = tax_of(prep, st, lt)
    sentence = [lead] if lead else []
    if not trades:
        sentence.append("No trade improves the sleeve enough to pay for its cost and tax.")
    else:
        harvested = sum(1 for t in trades if t.reason == "tax-loss-harvest")
        sentence.append(
            f"{len(trades)} trades ({harvested} lots harvested): tracking error {te_before:.2%} → "
            f"{te_after:.2%} a year, turnover {turnover:.2%}, estimated tax ${tax:,.2f}."
        )
    for r in relaxations:
        sentence.append(r.reason[0].upper() + r.reason[1:] + ".")
    emptied = [p.sector_names[s] for s in lp.personalized.whole_sectors_excluded]
    if emptied:
        where = "pro rata" if p.redistribution != "equivalence" else "by equivalence set"
        notices = (
            *notices,
            f"every name of {', '.join(emptied)} is excluded: its weight goes {where} "
            "to the other sectors",
        )
    return OptimizedSleeve(
        account_id=p.account_id,
        sleeve_id=p.sleeve_id,
        trades=tuple(trades),
        short_term_gain=st,
        long_term_gain=lt,
        estimated_tax=tax,
        tracking_error_before=te_before,
        tracking_error_after=te_after,
        turnover=turnover,
        cash_before=dollars(p.cash),
        cash_after=dollars(cash),
        objective=objective_of(lp, prep, buys, sells),
        solver=solver_name,
        status=status,
        relaxations=relaxations,
        explanation=" ".join(sentence),
        notices=notices,
        post_shares=post,
        timings_ms=timings,
    )
