"""Direct-indexed sleeves through the optimizer (issue 12 item 4; docs/optimizer.md, "In the
services").

A sleeve (an SMA's one, or a UMA's) whose model is a direct index (model-changed's
`direct_index`) is proposed by `ballast_engine.optimizer.optimize` instead of the rule
engine: the rule engine's result for the account is the frame (the drift verdict, the
account's value, a UMA's cash between sleeves), and the sleeve's trades are replaced by the
optimizer's. Pure: plain data in, plain data out.

Personalization comes from what the account already is, through the engine's own rules:
exclusions are its do-not-hold restrictions and do-not-buy its buy blocks
(`restrictions.binding`); the lots, wash-sale buy blocks (the household's recent loss sales)
and sell blocks (recent purchases) are the tax engine's (`taxaware.tax_context`), made into
arrays by `optimizer.problem_from_lots`; the account's rates, its gain budget (else the
model's) less what it realized this year, its harvest thresholds (`harvesting.policy_of`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

import numpy as np
from ballast_common.contracts.events import ModelChangedV1, OptimizerSettingsV1
from ballast_engine.errors import EngineInputError
from ballast_engine.harvesting import policy_of
from ballast_engine.model import Account as EngineAccount
from ballast_engine.model import (
    LotSale,
    Reason,
    RebalanceResult,
    Reference,
    Sleeve,
    Trade,
)
from ballast_engine.optimizer import (
    OptimizedSleeve,
    OptimizedTrade,
    PlainSettings,
    problem_from_lots,
)
from ballast_engine.optimizer import optimize as optimize_sleeve
from ballast_engine.restrictions import binding
from ballast_engine.tax.harvest import HarvestPolicy
from ballast_engine.tax.model import EquivalenceSet as TaxEquivalenceSet
from ballast_engine.tax.model import Side
from ballast_engine.taxaware import tax_context

UNCLASSIFIED = "Unclassified"


# --------------------------------------------------------------------------------------------
# The index as the read model keeps it


def direct_index_doc(event: ModelChangedV1) -> dict[str, Any] | None:
    """What rebalance-svc keeps of a direct index: its risk model, settings, and each
    target's factor exposures (None: a plain model)."""
    if event.direct_index is None:
        return None
    doc: dict[str, Any] = event.direct_index.model_dump(mode="json")
    doc["exposures"] = {
        t.symbol: {f: format(v, "f") for f, v in t.factor_exposures.items()}
        for t in event.targets
        if t.factor_exposures
    }
    return doc


@dataclass(frozen=True)
class DirectIndex:
    """A direct-index model as the optimizer takes it: the index's names, weights (summing to
    1) and factor exposures, its risk model, and the manager's settings."""

    model_id: str
    names: tuple[str, ...]
    weights: np.ndarray  # (N,)
    exposures: np.ndarray  # (N, K)
    factors: tuple[str, ...]
    covariance: np.ndarray  # (K, K)
    specific_volatility: float
    settings: OptimizerSettingsV1

    @classmethod
    def of(cls, model_id: str, targets: Mapping[str, float], doc: Mapping[str, Any]) -> DirectIndex:
        """The index of a model's targets and its stored direct-index document."""
        risk = doc["risk_model"]
        factors = tuple(risk["factors"])
        names = tuple(sorted(s for s, w in targets.items() if w > 0))
        weights = np.array([targets[s] for s in names], dtype=np.float64)
        weights = weights / weights.sum()
        exposures = np.zeros((len(names), len(factors)))
        column = {f: k for k, f in enumerate(factors)}
        stored = doc.get("exposures", {})
        for i, symbol in enumerate(names):
            for factor, value in stored.get(symbol, {}).items():
                if factor in column:
                    exposures[i, column[factor]] = float(value)
        covariance = np.array(
            [[float(x) for x in row] for row in risk["covariance"]], dtype=np.float64
        ).reshape(len(factors), len(factors))
        return cls(
            model_id,
            names,
            weights,
            exposures,
            factors,
            covariance,
            float(risk["specific_volatility"]),
            OptimizerSettingsV1.model_validate(doc.get("settings", {})),
        )


# --------------------------------------------------------------------------------------------
# One sleeve through the optimizer


@dataclass(frozen=True)
class Optimized:
    """An account's result with its direct-index sleeves optimized: the rule engine's frame
    with their trades replaced, their tracking errors (the account's: its largest sleeve's)
    and the notes to carry on the proposal."""

    result: RebalanceResult
    tracking_error_before: float | None
    tracking_error_after: float | None
    notes: tuple[str, ...]
    sleeves_optimized: int
    # a bound gave way, or the rule engine answered for a sleeve: the notes say why
    relaxed: bool = False


class NotForOptimizer(Exception):
    """The sleeve cannot go to the optimizer; the rule engine's trades stand (the reason is
    noted on the proposal)."""


def plain_settings(
    settings: OptimizerSettingsV1, account: EngineAccount, *, harvest_run: bool
) -> PlainSettings:
    """The manager's plain settings for one account: the account's own gain budget wins over
    the model's; harvesting needs the client's harvesting on too (a harvest run: always)."""
    tax = account.tax
    budget: Decimal | float | None = settings.gain_budget
    if tax is not None and tax.gain_budget is not None:
        budget = tax.gain_budget.limit
    harvesting = settings.harvesting and (
        harvest_run or (tax is not None and tax.harvest is not None)
    )
    return PlainSettings(
        tax_sensitivity=settings.tax_sensitivity,
        tracking_tolerance=float(settings.tracking_tolerance),
        gain_budget=budget,
        harvesting=harvesting,
        tilts={f: float(v) for f, v in settings.tilts.items()},
        sector_bound=None if settings.sector_bound is None else float(settings.sector_bound),
    )


def optimize_sleeve_of(
    account: EngineAccount,
    sleeve: Sleeve,
    cash: float,
    reference: Reference,
    index: DirectIndex,
    realized_to_date: float,
    *,
    harvest_run: bool = False,
) -> OptimizedSleeve:
    """The optimizer's proposal for one sleeve of `account` holding `cash` (after the
    strategic rebalance's moves). Raises NotForOptimizer when it cannot take the sleeve."""
    tax = account.tax
    if tax is None:
        raise NotForOptimizer("no tax lots from the book of record yet")
    held = {h.symbol for h in sleeve.holdings if h.quantity > 0}
    names = list(index.names) + sorted(held - set(index.names))
    position = {s: i for i, s in enumerate(names)}
    n = len(names)
    restrictions = account.restrictions + sleeve.restrictions
    excluded = np.zeros(n, dtype=bool)
    buy_blocked = np.zeros(n, dtype=bool)
    for i, symbol in enumerate(names):
        bound = binding(symbol, restrictions, reference)
        if bound.do_not_sell is not None and symbol in held:
            raise NotForOptimizer(f"{symbol} may not be sold ({bound.do_not_sell.source})")
        excluded[i] = bound.do_not_hold is not None
        buy_blocked[i] = bound.do_not_buy is not None
    prices = np.empty(n)
    sector_of: list[str] = []
    for i, symbol in enumerate(names):
        security = reference.securities.get(symbol)
        price = None if security is None else security.price
        if price is None or not math.isfinite(price) or price <= 0:
            raise NotForOptimizer(f"{symbol} has no price")
        prices[i] = price
        sector_of.append((security.sector if security else None) or UNCLASSIFIED)
    sector_names = tuple(sorted(set(sector_of)))
    sectors = np.array([sector_names.index(s) for s in sector_of], dtype=np.int64)
    context = tax_context(replace(account, sleeves=(sleeve,)), reference)
    if context.no_lots:
        raise NotForOptimizer("a holding has no tax lots from the book of record")
    lots = [
        lot for key, p in context.positions.items() if key[0] == sleeve.sleeve_id for lot in p.lots
    ]
    buy_blocked |= np.array([s in context.buy_blocked for s in names], dtype=bool)
    weights = np.zeros(n)
    weights[: len(index.names)] = index.weights
    exposures = np.zeros((n, len(index.factors)))
    exposures[: len(index.names)] = index.exposures
    taxable = context.taxable
    problem = problem_from_lots(
        names=names,
        lots=lots,
        on=context.on,
        equivalence_sets=_equivalence_sets(reference, position),
        index_weights=weights,
        prices=prices,
        sectors=sectors,
        sector_names=sector_names,
        exposures=exposures,
        factor_names=index.factors,
        factor_cov=index.covariance,
        specific_vol=np.full(n, index.specific_volatility),
        cash=max(cash, 0.0),
        excluded=excluded,
        buy_blocked=buy_blocked,
        redistribution=index.settings.exclusion_rule,
        short_term_rate=float(context.rates.short_term) if taxable else 0.0,
        long_term_rate=float(context.rates.long_term) if taxable else 0.0,
        realized_to_date=realized_to_date,
        cash_reserve=sleeve.settings.cash_reserve,
        fractional=sleeve.settings.fractional,
        share_decimals=sleeve.settings.share_decimals,
        min_trade_value=sleeve.settings.min_trade_value,
        harvest_policy=policy_of(tax.harvest) if tax.harvest is not None else HarvestPolicy(),
        account_id=account.account_id,
        sleeve_id=sleeve.sleeve_id,
    )
    if context.washable:
        washable = np.array([lot_id in context.washable for lot_id in problem.lots.lot_ids])
        sell_blocked = problem.lots.sell_blocked
        merged = washable if sell_blocked is None else washable | sell_blocked
        problem = replace(problem, lots=replace(problem.lots, sell_blocked=merged))
    return optimize_sleeve(
        problem, plain_settings(index.settings, account, harvest_run=harvest_run)
    )


def _equivalence_sets(reference: Reference, position: Mapping[str, int]) -> list[TaxEquivalenceSet]:
    """The run's equivalence sets with at least two members among the sleeve's names."""
    out = []
    for e in reference.equivalence_sets:
        members = tuple(m for m in e.members if m in position)
        if len(members) > 1:
            out.append(TaxEquivalenceSet(e.set_id, members, e.identical))
    return out


# --------------------------------------------------------------------------------------------
# Back into the engine's result


def engine_trades(account_id: str, sleeve_id: str, trades: Sequence[OptimizedTrade]) -> list[Trade]:
    """The optimizer's trades as the engine's: a buy per name, a sell per name naming its
    lots (in the optimizer's order), their sentences kept."""
    grouped: dict[tuple[str, str], list[OptimizedTrade]] = {}
    for t in trades:
        grouped.setdefault((t.side, t.symbol), []).append(t)
    out = []
    for (side, symbol), parts in grouped.items():
        first = parts[0]
        lots = tuple(
            LotSale(
                p.lot_id,
                p.quantity,
                p.acquired or "",
                p.cost_basis or Decimal(0),
                p.estimated_value,
                p.gain or Decimal(0),
                p.term or "",
                p.estimated_tax or Decimal(0),
            )
            for p in parts
            if p.lot_id is not None
        )
        taxes = [p.estimated_tax for p in parts if p.estimated_tax is not None]
        out.append(
            Trade(
                account_id,
                sleeve_id,
                symbol,
                Side(side),
                sum((p.quantity for p in parts), Decimal(0)),
                first.price,
                sum((p.estimated_value for p in parts), Decimal(0)),
                Reason(max(parts, key=lambda p: p.estimated_value).reason),
                " ".join(dict.fromkeys(p.explanation for p in parts)),
                lots=lots,
                estimated_tax=sum(taxes, Decimal(0)) if taxes else None,
            )
        )
    return out


def with_sleeve_trades(
    base: RebalanceResult, sleeve_id: str, trades: Sequence[Trade], drift_after: float
) -> RebalanceResult:
    """`base` with the sleeve's trades replaced by `trades`: the summary's counts, values,
    turnover, cash after and drift after follow."""
    kept = [t for t in base.trades if t.sleeve_id != sleeve_id]
    replaced = [t for t in base.trades if t.sleeve_id == sleeve_id]
    all_trades = tuple(kept + list(trades))
    s = base.summary
    buys = [t for t in all_trades if t.side is Side.BUY]
    sells = [t for t in all_trades if t.side is Side.SELL]
    buy_value = sum((t.estimated_value for t in buys), Decimal(0))
    sell_value = sum((t.estimated_value for t in sells), Decimal(0))
    cash_after = s.cash_after - _net(replaced) + _net(trades)
    value = float(s.account_value)
    summary = replace(
        s,
        trade_count=len(all_trades),
        buy_count=len(buys),
        sell_count=len(sells),
        buy_value=buy_value,
        sell_value=sell_value,
        turnover=float(buy_value + sell_value) / 2 / value if value > 0 else 0.0,
        cash_after=cash_after,
        max_drift_after=drift_after,
        max_security_drift_after=drift_after,
    )
    return replace(base, trades=all_trades, summary=summary)


def _net(trades: Sequence[Trade]) -> Decimal:
    """Cash the trades bring in (sells) less what they spend (buys)."""
    return sum(
        (t.estimated_value if t.side is Side.SELL else -t.estimated_value for t in trades),
        Decimal(0),
    )


def security_drift_after(
    optimized: OptimizedSleeve, index: DirectIndex, prices: np.ndarray
) -> float:
    """The largest |weight − index weight| of a name after the trades, in the sleeve."""
    values = optimized.post_shares * prices
    total = float(values.sum()) + float(optimized.cash_after)
    if total <= 0 or not len(values):
        return 0.0
    weights = np.zeros(len(values))
    weights[: len(index.weights)] = index.weights
    return float(np.max(np.abs(values / total - weights)))


def notes_of(optimized: OptimizedSleeve, sleeve_id: str, uma: bool) -> list[str]:
    """What the proposal says of the sleeve's optimization: the explanation (a relaxation's
    reason, a fallback to the rules), prefixed with the sleeve of a UMA."""
    text = optimized.explanation.strip()
    if not text:
        return []
    return [f"sleeve {sleeve_id}: {text}" if uma else text]


def optimize_account(
    base: RebalanceResult,
    account: EngineAccount,
    reference: Reference,
    indexes: Mapping[str, DirectIndex],
    realized_to_date: float,
    *,
    harvest_run: bool = False,
) -> Optimized | None:
    """The account's result with each sleeve on a direct index proposed by the optimizer
    (None: no sleeve of it follows one). A sleeve the optimizer cannot take keeps the rule
    engine's trades, and the proposal says why."""
    on_index = [s for s in account.sleeves if s.model_id in indexes]
    if not on_index:
        return None
    frames = {f.sleeve_id: f for f in base.sleeves}
    uma = account.strategy_id is not None
    result = base
    notes: list[str] = []
    tracking: tuple[float, float] | None = None
    largest = -1.0
    done = 0
    relaxed = False
    for sleeve in on_index:
        index = indexes[sleeve.model_id]
        frame = frames.get(sleeve.sleeve_id)
        cash = (
            float(frame.cash_before + frame.cash_in - frame.cash_out)
            if frame is not None
            else sleeve.cash + account.cash
        )
        try:
            optimized = optimize_sleeve_of(
                account,
                sleeve,
                cash,
                reference,
                index,
                realized_to_date,
                harvest_run=harvest_run,
            )
        except (NotForOptimizer, EngineInputError) as exc:
            reason = exc.one_line() if isinstance(exc, EngineInputError) else str(exc)
            where = f"sleeve {sleeve.sleeve_id}: " if uma else ""
            notes.append(
                f"{where}the optimizer could not take this sleeve ({reason}); the rule engine "
                "proposed its trades"
            )
            relaxed = True
            continue
        relaxed = relaxed or bool(optimized.relaxations) or optimized.solver != "glop"
        done += 1
        names = list(index.names) + sorted(
            {h.symbol for h in sleeve.holdings if h.quantity > 0} - set(index.names)
        )
        prices = np.array([reference.securities[s].price or 0.0 for s in names], dtype=np.float64)
        trades = engine_trades(account.account_id, sleeve.sleeve_id, optimized.trades)
        result = with_sleeve_trades(
            result, sleeve.sleeve_id, trades, security_drift_after(optimized, index, prices)
        )
        notes += notes_of(optimized, sleeve.sleeve_id, uma)
        value = float(frame.value_before) if frame is not None else 0.0
        if value > largest:
            largest = value
            tracking = (optimized.tracking_error_before, optimized.tracking_error_after)
    return Optimized(
        result,
        tracking[0] if tracking else None,
        tracking[1] if tracking else None,
        tuple(notes),
        done,
        relaxed,
    )


def indexes_of(
    reference: Reference, documents: Mapping[str, Mapping[str, Any] | None]
) -> dict[str, DirectIndex]:
    """The direct indexes among the run's models (model id -> its stored document)."""
    out = {}
    for model_id, doc in documents.items():
        model = reference.models.get(model_id)
        if doc is not None and model is not None:
            targets = {e.symbol: e.weight for e in model.entries}
            out[model_id] = DirectIndex.of(model_id, targets, doc)
    return out
