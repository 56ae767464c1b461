"""The core rebalance of one validated account, tax-blind: cash between sleeves (the
strategy's allocation, or the request's cash spread over the sleeves), then each sleeve's
trades (the tactical planner), then the result (sleeves, cash movements, drift before and
after, notices, summary).

The layers above call it: the tax-aware layer (``ballast_engine.taxaware``) runs it again
with sell caps (``keep``: shares of a security a sleeve keeps), and ``ballast_engine.rebalance``
chooses the layer for an account. Nothing here knows about tax lots.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import fields
from decimal import Decimal

from ballast_engine.account_drift import (
    DriftMaxima,
    SleeveTargets,
    drift_item_list,
    drift_maxima,
    sleeve_targets,
    sleeve_weights,
)
from ballast_engine.amounts import CENT, cents
from ballast_engine.errors import SettingError
from ballast_engine.model import (
    Account,
    AccountDrift,
    CashMovement,
    Notice,
    RebalanceRange,
    RebalanceResult,
    Reference,
    Request,
    RequestKind,
    RestrictionKind,
    Scope,
    Side,
    Sleeve,
    SleeveResult,
    Summary,
    Trade,
)
from ballast_engine.restrictions import binding
from ballast_engine.strategic import (
    Allocation,
    SleeveState,
    allocate,
    apply_strategy,
    implicit_strategy,
)
from ballast_engine.tactical import (
    BUY_ONLY,
    FULL,
    SELL_ONLY,
    SleeveOutcome,
    money,
    rebalance_sleeve,
)

Keep = Mapping[str, Mapping[str, float]]  # sleeve id -> symbol -> shares a sell cap keeps

_SLEEVE_RESULT_FIELDS = (
    "sleeve_id",
    "model_id",
    "trades",
    "cash_before",
    "cash_in",
    "cash_out",
    "cash_after",
    "value_before",
    "value_after",
    "projected_holdings",
    "projected_weights",
)
assert tuple(f.name for f in fields(SleeveResult))[:11] == _SLEEVE_RESULT_FIELDS

_MODE = {
    RequestKind.REBALANCE: FULL,
    RequestKind.RAISE_CASH: SELL_ONLY,
    RequestKind.INVEST_CASH: BUY_ONLY,
}
_TARGET = RebalanceRange()


def rebalance_account(
    account: Account, ref: Reference, req: Request, keep: Keep | None = None
) -> RebalanceResult:
    """Rebalance one validated account without tax awareness; ``keep``: per sleeve, shares
    of each security the tax-aware sell cap keeps."""
    keep = keep or {}
    withdrawal = req.amount if req.kind is RequestKind.RAISE_CASH else 0.0
    deposit = req.amount if req.kind is RequestKind.INVEST_CASH else 0.0
    mode = _MODE[req.kind]
    strategy = ref.strategies.get(account.strategy_id) if account.strategy_id else None
    strategic = strategy is not None and req.scope is not Scope.TACTICAL
    if req.scope is Scope.STRATEGIC and strategy is None:
        raise SettingError(
            "strategic scope needs an account with a strategy",
            account=account.account_id,
            field="scope",
        )
    states = [
        SleeveState(
            sl.sleeve_id,
            sl.model_id,
            sleeve_value(sl, ref),
            capacity(account, sl, ref, keep.get(sl.sleeve_id))
            if (withdrawal or strategic)
            else 0.0,
        )
        for sl in account.sleeves
    ]
    unallocated = account.cash + deposit
    pool = unallocated - withdrawal
    alloc = None
    if strategic or abs(pool) > 0.005:
        rebalance_range = strategy.rebalance_range if strategic else _TARGET  # type: ignore[union-attr]
        if strategic:
            apply_strategy(states, strategy)
        else:
            implicit_strategy(states)
        alloc = allocate(
            states,
            pool=pool,
            rebalance_range=rebalance_range,
            allow_give=mode != BUY_ONLY,
            allow_receive=mode != SELL_ONLY,
            move_models=strategic,
        )
    movements = (
        cash_movements(account.account_id, states, alloc, unallocated, withdrawal) if alloc else []
    )
    outcomes = _sleeve_outcomes(account, ref, mode, alloc, movements, deposit, keep)
    unalloc_after = alloc.unallocated_after if alloc else pool
    return assemble_result(account, ref, req, outcomes, movements, unalloc_after, withdrawal)


def sleeve_value(sleeve: Sleeve, ref: Reference) -> float:
    """A sleeve's cash plus its holdings at the reference's prices."""
    secs = ref.securities
    return sleeve.cash + sum(h.quantity * secs[h.symbol].price for h in sleeve.holdings)


def capacity(
    account: Account, sleeve: Sleeve, ref: Reference, keep: Mapping[str, float] | None = None
) -> float:
    """Most cash a sleeve can give: cash above its reserve plus holdings it may sell
    (``keep``: shares the tax-aware sell cap keeps)."""
    # only do-not-sell restrictions block selling (an account may carry dozens of
    # wash-sale do-not-buys)
    do_not_sell = tuple(
        r
        for r in account.restrictions + sleeve.restrictions
        if r.kind is RestrictionKind.DO_NOT_SELL
    )
    cap = sleeve.cash - sleeve.settings.cash_reserve
    for h in sleeve.holdings:
        p = ref.securities[h.symbol].price
        if do_not_sell and binding(h.symbol, do_not_sell, ref).blocks_selling:
            continue
        if keep and h.symbol in keep:
            cap += max(h.quantity - keep[h.symbol], 0.0) * p
            continue
        cap += h.quantity * p
    return max(cap, 0.0)


def _sleeve_outcomes(
    account: Account,
    ref: Reference,
    mode: str,
    alloc: Allocation | None,
    movements: list[CashMovement],
    deposit: float,
    keep: Keep,
) -> list[SleeveOutcome]:
    """Each sleeve planned and traded with the cash it receives or gives."""
    deltas = alloc.deltas if alloc else {}
    purposes_in, purposes_out = cash_purposes(movements, deposit)
    outcomes: list[SleeveOutcome] = []
    for sl in account.sleeves:
        d = deltas.get(sl.sleeve_id, 0.0)
        outcomes.append(
            rebalance_sleeve(
                account,
                sl,
                ref,
                mode=mode,
                inflow=max(d, 0.0),
                outflow=max(-d, 0.0),
                purpose_in=purposes_in.get(sl.sleeve_id, ""),
                purpose_out=purposes_out.get(sl.sleeve_id, ""),
                keep_shares=keep.get(sl.sleeve_id),
            )
        )
    return outcomes


# --------------------------------------------------------------------------------------------
# Cash between sleeves

_ACCOUNT, _WITHDRAWAL = "@account", "@withdrawal"  # the ends of a movement that are no sleeve


def cash_movements(
    aid: str,
    states: list[SleeveState],
    alloc: Allocation | None,
    unallocated: float,
    withdrawal: float,
) -> list[CashMovement]:
    """The allocation as movements: sources (sleeves giving, unallocated cash) paid to sinks
    (sleeves receiving, the withdrawal, cash left unallocated) in order, each explained."""
    if alloc is None:
        return []
    desc = _sleeve_descriptions(states, unallocated)
    sources: list[list] = []  # [sleeve id or tag, amount]
    sinks: list[list] = []
    for s in states:
        d = alloc.deltas[s.sleeve_id]
        if d < 0:
            sources.append([s.sleeve_id, -d])
        elif d > 0:
            sinks.append([s.sleeve_id, d])
    if unallocated > 0.005:
        sources.append([_ACCOUNT, round(unallocated, 2)])
    if withdrawal > 0:
        sinks.append([_WITHDRAWAL, round(withdrawal, 2)])
    if alloc.unallocated_after > 0.005:
        sinks.append([_ACCOUNT, alloc.unallocated_after])
    out: list[CashMovement] = []
    i = j = 0
    while i < len(sources) and j < len(sinks):
        amt = round(min(sources[i][1], sinks[j][1]), 2)
        src, dst = sources[i][0], sinks[j][0]
        if amt >= 0.01 and not (src == _ACCOUNT and dst == _ACCOUNT):
            out.append(_movement(aid, src, dst, amt, desc))
        sources[i][1] = round(sources[i][1] - amt, 2)
        sinks[j][1] = round(sinks[j][1] - amt, 2)
        if sources[i][1] < 0.01:
            i += 1
        if sinks[j][1] < 0.01:
            j += 1
    return out


def _sleeve_descriptions(states: list[SleeveState], unallocated: float) -> dict[str, str]:
    """How a movement's sentence names each sleeve: its weight, target and band."""
    before = sum(s.value for s in states) + unallocated
    total = before if before > 0 else 1.0
    return {
        s.sleeve_id: (
            f"sleeve {s.sleeve_id} ({s.value / total:.2%} of the account"
            + (
                f", target {s.target:.2%}, band {s.lo:.2%}–{min(s.hi, 1.0):.2%})"
                if math.isfinite(s.hi)
                else ")"
            )
        )
        for s in states
    }


def _movement(aid: str, src: str, dst: str, amt: float, desc: dict[str, str]) -> CashMovement:
    """One movement of ``amt`` from ``src`` to ``dst`` with its purpose and sentence."""
    purpose = "rebalance"
    if dst == _WITHDRAWAL:
        purpose = "withdrawal"
        text = (
            f"Pay {money(amt)} of the withdrawal from unallocated account cash."
            if src == _ACCOUNT
            else f"Pay {money(amt)} of the withdrawal from {desc[src]}."
        )
    elif src == _ACCOUNT:
        purpose = "unallocated"
        text = f"Give {money(amt)} of unallocated account cash to {desc[dst]}."
    elif dst == _ACCOUNT:
        purpose = "unallocated"
        text = f"Keep {money(amt)} from {desc[src]} as unallocated account cash."
    else:
        text = f"Move {money(amt)} from {desc[src]} to {desc[dst]}."
    return CashMovement(
        aid,
        None if src == _ACCOUNT else src,
        None if dst in (_ACCOUNT, _WITHDRAWAL) else dst,
        Decimal(repr(float(amt))).quantize(CENT),
        text,
        purpose,
    )


def cash_purposes(
    movements: list[CashMovement], deposit: float
) -> tuple[dict[str, str], dict[str, str]]:
    """Per sleeve, what its cash received and its cash paid out are for (the trades'
    sentences quote them)."""
    pin: dict[str, list[str]] = {}
    pout: dict[str, list[str]] = {}
    for m in movements:
        if m.to_sleeve is not None:
            src = "unallocated account cash" if m.from_sleeve is None else f"sleeve {m.from_sleeve}"
            if m.from_sleeve is None and deposit:
                src = "the deposit"
            pin.setdefault(m.to_sleeve, []).append(f"{money(float(m.amount))} from {src}")
        if m.from_sleeve is not None:
            dst = (
                "the withdrawal"
                if m.purpose == "withdrawal"
                else "account cash"
                if m.to_sleeve is None
                else f"sleeve {m.to_sleeve}"
            )
            pout.setdefault(m.from_sleeve, []).append(f"{money(float(m.amount))} for {dst}")
    return (
        {k: "cash received (" + "; ".join(v) + ")" for k, v in pin.items()},
        {k: "cash to pay out (" + "; ".join(v) + ")" for k, v in pout.items()},
    )


# --------------------------------------------------------------------------------------------
# Result assembly


def assemble_result(
    account: Account,
    ref: Reference,
    req: Request,
    outcomes: list[SleeveOutcome],
    movements: list[CashMovement],
    unalloc_after: float,
    withdrawal: float,
) -> RebalanceResult:
    """The result of the sleeves' outcomes: trades, sleeve results, drift reports (built
    when first read: nothing changes the plans once the result is assembled), notices and
    the summary."""
    before, after, m = _drift_reports(account, ref, outcomes, unalloc_after)
    trades: list[Trade] = []
    notices: list[Notice] = []
    for o in outcomes:
        trades.extend(o.trades)
        notices.extend(o.notices)
    if unalloc_after < -0.005:
        notices.append(
            Notice(
                "withdrawal_shortfall",
                f"the withdrawal of {money(withdrawal)} is {money(-unalloc_after)} short: the "
                "sleeves cannot raise more (restricted holdings or reserves)",
            )
        )
    plans = [o.plan for o in outcomes]
    summary = _summary(
        trades,
        account_value=sum(p.value for p in plans) + account.cash,
        cash_before=sum(p.cash_before for p in plans) + account.cash,
        cash_after=sum(o.cash_after for o in outcomes) + unalloc_after,
        maxima=m,
    )
    return RebalanceResult(
        account_id=account.account_id,
        request=req,
        trades=tuple(trades),
        sleeves=tuple(_sleeve_results(outcomes, ref)),
        cash_movements=tuple(movements),
        unallocated_cash_after=cents(unalloc_after),
        drift_before=before,
        drift_after=after,
        notices=tuple(notices),
        summary=summary,
    )


def _drift_reports(
    account: Account, ref: Reference, outcomes: list[SleeveOutcome], unalloc_after: float
) -> tuple[AccountDrift, AccountDrift, DriftMaxima]:
    """The drift reports before and after the trades (deferred) and their largest drifts.
    Asset-class targets are at the post-flow totals: what the rebalance aims at."""
    plans = [o.plan for o in outcomes]
    targets: SleeveTargets | None = sleeve_targets(account, ref)
    weights = sleeve_weights(plans, targets, account.cash)
    m = drift_maxima(account, outcomes, weights, targets, unalloc_after)
    args_before = (
        account,
        plans,
        [p.value for p in plans],
        [p.cash_before for p in plans],
        account.cash,
        targets,
        m.class_targets,
        m.group_values_before,
    )
    args_after = (
        account,
        plans,
        [p.total for p in plans],
        [o.cash_after for o in outcomes],
        unalloc_after,
        targets,
        m.class_targets,
        m.group_values_after,
    )
    aid = account.account_id
    before = AccountDrift.deferred(aid, (drift_item_list, args_before))
    after = AccountDrift.deferred(aid, (drift_item_list, args_after))
    return before, after, m


def _sleeve_results(outcomes: list[SleeveOutcome], ref: Reference) -> list[SleeveResult]:
    """Each sleeve's trades, cash, values and projected holdings and weights."""
    secs = ref.securities
    out: list[SleeveResult] = []
    for o in outcomes:
        p = o.plan
        tot = p.total if p.total > 0 else 1.0
        post_w = {s: q * secs[s].price / tot for s, q in o.post_qty.items()}
        post_w["CASH"] = o.cash_after / tot
        out.append(
            SleeveResult(  # positional (a dozen keywords cost more than the rest)
                p.sleeve.sleeve_id,
                p.model.model_id,
                tuple(o.trades),
                cents(p.cash_before),
                cents(p.inflow),
                cents(p.outflow),
                cents(o.cash_after),
                cents(p.value),
                cents(p.total),
                o.post_qty,
                post_w,
            )
        )
    return out


def _summary(
    trades: list[Trade],
    *,
    account_value: float,
    cash_before: float,
    cash_after: float,
    maxima: DriftMaxima,
) -> Summary:
    """Counts and values of the trades, turnover, cash and the largest drifts."""
    # one pass; int 0 starts the sums exactly as sum() does
    buy_v: float = 0
    sell_v: float = 0
    buy_n = sell_n = 0
    buy = Side.BUY
    for t in trades:
        if t.side is buy:
            buy_v += float(t.estimated_value)
            buy_n += 1
        elif t.side is Side.SELL:
            sell_v += float(t.estimated_value)
            sell_n += 1
    return Summary(
        trade_count=len(trades),
        buy_count=buy_n,
        sell_count=sell_n,
        buy_value=cents(buy_v),
        sell_value=cents(sell_v),
        turnover=(buy_v + sell_v) / 2 / account_value if account_value > 0 else 0.0,
        account_value=cents(account_value),
        cash_before=cents(cash_before),
        cash_after=cents(cash_after),
        max_drift_before=maxima.max_before,
        max_drift_after=maxima.max_after,
        max_security_drift_before=maxima.security_before,
        max_security_drift_after=maxima.security_after,
    )
