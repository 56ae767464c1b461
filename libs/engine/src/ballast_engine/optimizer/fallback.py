"""When the LP cannot answer (solver failure, time-out, infeasible even relaxed), the rule
engine does: the sleeve becomes an engine account (model = personalized index, exclusions =
do-not-hold, wash-sale buy blocks = do-not-buy, sell-blocked loss lots = a recent purchase of
that security, min-tax lot order, the gain budget as a hard budget) and
``ballast_engine.rebalance.rebalance`` proposes the trades with its own reasons and
sentences. The result says it came from the rules, and why.
"""

from __future__ import annotations

import time
from datetime import timedelta

import numpy as np

from ballast_engine.model import (
    Account,
    GainBudgetSetting,
    Holding,
    Model,
    ModelEntry,
    RebalanceInput,
    RecentPurchase,
    Reference,
    Request,
    Restriction,
    RestrictionKind,
    RestrictionScope,
    Security,
    Settings,
    Side,
    Sleeve,
    TaxLot,
    TaxSettings,
)
from ballast_engine.model import EquivalenceSet as EngineSet
from ballast_engine.optimizer.formulation import LinearProgram
from ballast_engine.optimizer.problem import Prepared
from ballast_engine.optimizer.result import OptimizedSleeve, OptimizedTrade, finish
from ballast_engine.optimizer.settings import PlainSettings
from ballast_engine.rebalance import rebalance
from ballast_engine.tax.model import ReliefMethod

MODEL_ID = "personalized-index"


def engine_input(prep: Prepared, lp: LinearProgram, plain: PlainSettings) -> RebalanceInput:
    """The sleeve as the rule engine's account, reference and request."""
    p = prep.problem
    names = [str(s) for s in p.names]
    weights = lp.personalized.weights
    total = float(weights.sum())
    securities = {
        s: Security(
            s, float(p.prices[i]), "equity", p.sector_names[int(p.sectors[i])], p.fractional
        )
        for i, s in enumerate(names)
    }
    entries = tuple(
        ModelEntry(names[i], weight=float(weights[i]) / total)
        for i in np.flatnonzero((weights > 0) & ~prep.excluded)
    )
    lots_of: dict[int, list[TaxLot]] = {}
    for lot in range(len(p.lots.quantity)):
        lots_of.setdefault(int(p.lots.name[lot]), []).append(
            TaxLot(
                p.lots.lot_ids[lot],
                float(p.lots.quantity[lot]),
                float(p.lots.basis[lot]),
                str(p.lots.holding_start[lot]),
            )
        )
    holdings = tuple(
        Holding(names[i], float(sum(t.quantity for t in lots)), tuple(lots))
        for i, lots in sorted(lots_of.items())
    )
    restrictions = tuple(
        Restriction(RestrictionKind.DO_NOT_HOLD, RestrictionScope.SECURITY, names[i], "client")
        for i in np.flatnonzero(prep.excluded)
    ) + tuple(
        Restriction(
            RestrictionKind.DO_NOT_BUY, RestrictionScope.SECURITY, names[i], "wash-sale rule"
        )
        for i in np.flatnonzero(prep.buy_blocked & ~prep.excluded)
    )
    blocked = sorted({int(p.lots.name[lot]) for lot in np.flatnonzero(prep.sell_blocked)})
    purchases = tuple(
        RecentPurchase(
            names[i], (p.on - timedelta(days=1)).isoformat(), 1.0, f"sell-block-{names[i]}"
        )
        for i in blocked
    )
    budget = None
    if plain.gain_budget is not None:
        budget = GainBudgetSetting(float(plain.gain_budget), p.realized_to_date, hard=True)
    sets: dict[int, list[str]] = {}
    if p.equivalence is not None:
        for i in np.flatnonzero(p.equivalence >= 0):
            sets.setdefault(int(p.equivalence[i]), []).append(names[i])
    identical = prep.problem.identical
    equivalence_sets = tuple(
        EngineSet(
            f"set-{k}",
            tuple(members),
            bool(identical is not None and identical[names.index(members[0])]),
        )
        for k, members in sorted(sets.items())
        if len(members) > 1
    )
    account = Account(
        account_id=p.account_id or "sleeve",
        sleeves=(
            Sleeve(
                p.sleeve_id,
                MODEL_ID,
                float(p.cash),
                holdings,
                Settings(
                    min_trade_value=p.min_trade_value,
                    fractional=p.fractional,
                    share_decimals=p.share_decimals,
                    cash_reserve=p.cash_reserve,
                ),
                restrictions,
            ),
        ),
        tax=TaxSettings(
            as_of=p.on.isoformat(),
            method=ReliefMethod.MINTAX,
            short_term_rate=p.short_term_rate,
            long_term_rate=p.long_term_rate,
            gain_budget=budget,
            recent_purchases=purchases,
        ),
    )
    reference = Reference(
        securities=securities,
        models={MODEL_ID: Model(MODEL_ID, entries)},
        equivalence_sets=equivalence_sets,
    )
    return RebalanceInput(account, reference, Request())


def rule_engine_result(
    prep: Prepared, lp: LinearProgram, plain: PlainSettings, lead: str
) -> OptimizedSleeve:
    """The rule engine's trades for the sleeve, as an optimizer result saying so."""
    started = time.perf_counter()
    p = prep.problem
    result = rebalance(engine_input(prep, lp, plain))
    position = {str(s): i for i, s in enumerate(p.names)}
    lot_index = {lot_id: k for k, lot_id in enumerate(p.lots.lot_ids)}
    buys = np.zeros(p.n_names)
    sells = np.zeros(len(p.lots.quantity))
    trades: list[OptimizedTrade] = []
    for t in result.trades:
        i = position[t.symbol]
        if t.side is Side.BUY:
            buys[i] += float(t.quantity)
            trades.append(
                OptimizedTrade(
                    t.symbol,
                    "buy",
                    t.quantity,
                    t.price,
                    t.estimated_value,
                    t.reason.value,
                    t.explanation,
                )
            )
            continue
        for sale in t.lots:
            k = lot_index[sale.lot_id]
            sells[k] += float(sale.quantity)
            trades.append(
                OptimizedTrade(
                    t.symbol,
                    "sell",
                    sale.quantity,
                    t.price,
                    sale.proceeds,
                    t.reason.value,
                    t.explanation,
                    lot_id=sale.lot_id,
                    acquired=sale.acquired,
                    cost_basis=sale.cost_basis,
                    gain=sale.gain,
                    term=sale.term,
                    estimated_tax=sale.tax,
                )
            )
    notices = tuple(n.message for n in result.notices) if result.notices else ()
    return finish(
        prep,
        lp,
        buys,
        sells,
        solver_name="rules",
        status="fallback",
        relaxations=(),
        notices=notices,
        lead=lead,
        timings={"rules": (time.perf_counter() - started) * 1e3},
        trades=tuple(trades),
    )
