"""The engine's entry points: ``rebalance`` (one account), ``rebalance_book`` (many) and
``measure_drift`` / ``project`` helpers."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import fields, replace
from decimal import Decimal

from ballast_engine.errors import EngineError, EngineInputError, NegativeQuantityError, SettingError
from ballast_engine.model import (
    Account,
    AccountDrift,
    AccountFailure,
    Book,
    BookResult,
    CashMovement,
    DriftItem,
    DriftLevel,
    Holding,
    Notice,
    RebalanceInput,
    RebalanceRange,
    RebalanceResult,
    Reference,
    Request,
    RequestKind,
    Scope,
    Side,
    SleeveResult,
    Summary,
    Trade,
)
from ballast_engine.strategic import (
    Allocation,
    SleeveState,
    allocate,
    apply_strategy,
    implicit_strategy,
)
from ballast_engine.tactical import (
    BUY_ONLY,
    CENT,
    FULL,
    SELL_ONLY,
    Member,
    SleeveOutcome,
    SleevePlan,
    _apply_restrictions,
    money,
    plan_sleeve,
    post_values,
    rebalance_sleeve,
)
from ballast_engine.validate import check_account

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


def _dec(x: float) -> Decimal:
    r = round(float(x), 2) + 0.0
    if -1e12 < r < 1e12:
        # r is the double nearest a whole number of cents and doubles this small are far
        # closer together than a cent: "%.2f" gives exactly those cents, the same Decimal
        # as below (a test compares the two)
        return Decimal(format(r, ".2f"))
    return Decimal(repr(r)).quantize(CENT)


def _sleeve_value(sleeve, ref: Reference) -> float:
    secs = ref.securities
    return sleeve.cash + sum(h.quantity * secs[h.symbol].price for h in sleeve.holdings)


def _capacity(
    account: Account, sleeve, ref: Reference, keep: Mapping[str, float] | None = None
) -> float:
    """Most cash a sleeve can give: cash above its reserve plus holdings it may sell
    (``keep``: shares the tax-aware sell cap keeps)."""
    restrictions = account.restrictions + sleeve.restrictions
    cap = sleeve.cash - sleeve.settings.cash_reserve
    for h in sleeve.holdings:
        p = ref.securities[h.symbol].price
        if restrictions:
            m = Member(h.symbol, p, h.quantity, 1.0, False)
            _apply_restrictions(m, restrictions, ref)
            if m.dns is not None:
                continue
        if keep and h.symbol in keep:
            cap += max(h.quantity - keep[h.symbol], 0.0) * p
            continue
        cap += h.quantity * p
    return max(cap, 0.0)


def _check_request(req: Request, account_id: str) -> None:
    if not math.isfinite(req.amount) or req.amount < 0:
        raise NegativeQuantityError(
            f"request amount must be ≥ 0, got {req.amount!r}", account=account_id, field="amount"
        )
    if req.kind is RequestKind.REBALANCE and req.amount:
        raise SettingError(
            "a rebalance request takes no amount (use raise_cash or invest_cash)",
            account=account_id,
            field="amount",
        )


def rebalance(inp: RebalanceInput) -> RebalanceResult:
    """Propose the trades of one account.

    Args:
        inp: the account, the reference data (security master, models, strategies, lists,
            equivalence sets) and the request (rebalance, raise cash, invest cash).

    Returns:
        Trades per sleeve with reasons and explanations, cash moved between sleeves,
        projected holdings and weights, drift before and after, notices and a summary.

    Raises:
        EngineInputError: a typed subclass naming account, sleeve, security and field when
            the input is invalid (unknown or unpriced security, weights not summing to 100%,
            negative quantity, band wider than its target allows, ...).
    """
    account, ref, req = inp.account, inp.reference, inp.request
    check_account(ref, account)
    _check_request(req, account.account_id)
    try:
        if account.tax is not None or req.kind is RequestKind.HARVEST:
            from ballast_engine.taxaware import rebalance_tax_aware

            return rebalance_tax_aware(account, ref, req)
        return _rebalance(account, ref, req)
    except EngineInputError as exc:
        raise exc.located(account=account.account_id) from None


def _rebalance(
    account: Account,
    ref: Reference,
    req: Request,
    keep: Mapping[str, Mapping[str, float]] | None = None,
) -> RebalanceResult:
    """``keep``: per sleeve, shares of each security the tax-aware sell cap keeps."""
    keep = keep or {}
    aid = account.account_id
    withdrawal = req.amount if req.kind is RequestKind.RAISE_CASH else 0.0
    deposit = req.amount if req.kind is RequestKind.INVEST_CASH else 0.0
    mode = {
        RequestKind.REBALANCE: FULL,
        RequestKind.RAISE_CASH: SELL_ONLY,
        RequestKind.INVEST_CASH: BUY_ONLY,
    }[req.kind]
    unallocated = account.cash + deposit
    pool = unallocated - withdrawal
    strategy = ref.strategies.get(account.strategy_id) if account.strategy_id else None
    strategic = strategy is not None and req.scope is not Scope.TACTICAL
    if req.scope is Scope.STRATEGIC and strategy is None:
        raise SettingError(
            "strategic scope needs an account with a strategy", account=aid, field="scope"
        )

    states = [
        SleeveState(
            sl.sleeve_id,
            sl.model_id,
            _sleeve_value(sl, ref),
            _capacity(account, sl, ref, keep.get(sl.sleeve_id))
            if (withdrawal or strategic)
            else 0.0,
        )
        for sl in account.sleeves
    ]
    alloc: Allocation | None = None
    if strategic or abs(pool) > 0.005:
        if strategic:
            apply_strategy(states, strategy)
        else:
            implicit_strategy(states)
        alloc = allocate(
            states,
            pool=pool,
            rebalance_range=strategy.rebalance_range if strategic else _TARGET,  # type: ignore[union-attr]
            allow_give=mode != BUY_ONLY,
            allow_receive=mode != SELL_ONLY,
            move_models=strategic,
        )
    deltas = alloc.deltas if alloc else {}
    movements = _movements(aid, states, alloc, unallocated, withdrawal) if alloc else []
    purposes_in, purposes_out = _purposes(movements, deposit, withdrawal)

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
    unalloc_after = alloc.unallocated_after if alloc else pool
    return _result(
        account, ref, req, outcomes, states, strategic, movements, unalloc_after, alloc, withdrawal
    )


_TARGET = RebalanceRange()


def _movements(
    aid: str,
    states: list[SleeveState],
    alloc: Allocation | None,
    unallocated: float,
    withdrawal: float,
) -> list[CashMovement]:
    if alloc is None:
        return []
    before = sum(s.value for s in states) + unallocated
    total = before if before > 0 else 1.0
    desc = {
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
    acct, wd = "@account", "@withdrawal"
    sources: list[list] = []  # [sleeve id or tag, amount]
    sinks: list[list] = []
    for s in states:
        d = alloc.deltas[s.sleeve_id]
        if d < 0:
            sources.append([s.sleeve_id, -d])
        elif d > 0:
            sinks.append([s.sleeve_id, d])
    if unallocated > 0.005:
        sources.append([acct, round(unallocated, 2)])
    if withdrawal > 0:
        sinks.append([wd, round(withdrawal, 2)])
    if alloc.unallocated_after > 0.005:
        sinks.append([acct, alloc.unallocated_after])
    out: list[CashMovement] = []
    i = j = 0
    while i < len(sources) and j < len(sinks):
        amt = round(min(sources[i][1], sinks[j][1]), 2)
        src, dst = sources[i][0], sinks[j][0]
        if amt >= 0.01 and not (src == acct and dst == acct):
            purpose = "rebalance"
            if dst == wd:
                purpose = "withdrawal"
                text = (
                    f"Pay {money(amt)} of the withdrawal from unallocated account cash."
                    if src == acct
                    else f"Pay {money(amt)} of the withdrawal from {desc[src]}."
                )
            elif src == acct:
                purpose = "unallocated"
                text = f"Give {money(amt)} of unallocated account cash to {desc[dst]}."
            elif dst == acct:
                purpose = "unallocated"
                text = f"Keep {money(amt)} from {desc[src]} as unallocated account cash."
            else:
                text = f"Move {money(amt)} from {desc[src]} to {desc[dst]}."
            out.append(
                CashMovement(
                    aid,
                    None if src == acct else src,
                    None if dst in (acct, wd) else dst,
                    Decimal(repr(float(amt))).quantize(CENT),
                    text,
                    purpose,
                )
            )
        sources[i][1] = round(sources[i][1] - amt, 2)
        sinks[j][1] = round(sinks[j][1] - amt, 2)
        if sources[i][1] < 0.01:
            i += 1
        if sinks[j][1] < 0.01:
            j += 1
    return out


def _purposes(
    movements: list[CashMovement], deposit: float, withdrawal: float
) -> tuple[dict[str, str], dict[str, str]]:
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
    del withdrawal
    return (
        {k: "cash received (" + "; ".join(v) + ")" for k, v in pin.items()},
        {k: "cash to pay out (" + "; ".join(v) + ")" for k, v in pout.items()},
    )


# --------------------------------------------------------------------------------------------
# Drift


def _asset_class_targets(plans: list[SleevePlan], sleeve_weights: list[float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for plan, sw in zip(plans, sleeve_weights, strict=True):
        tot = plan.total if plan.total > 0 else 1.0
        for g in plan.groups:
            if g.target > 0:
                out[g.asset_class] = out.get(g.asset_class, 0.0) + sw * g.target / tot
    return out


_SECURITY = DriftLevel.SECURITY


def drift_items(
    account: Account,
    plans: list[SleevePlan],
    values: list[float],  # sleeve group-level values to measure (per plan, per group)
    cash: list[float],
    unallocated: float,
    sleeve_targets: dict[str, tuple[float, float, float]] | None,
    class_targets: dict[str, float],
    group_values: list[list[float]],
) -> AccountDrift:
    """Drift items given sleeve values/cash and per-group values (before or after trades)."""
    return AccountDrift(
        account.account_id,
        tuple(
            _drift_item_list(
                account,
                plans,
                values,
                cash,
                unallocated,
                sleeve_targets,
                class_targets,
                group_values,
            )
        ),
    )


def _drift_pass(
    account: Account,
    outcomes: list[SleeveOutcome],
    sleeve_weights: list[float],
    sleeve_targets: dict[str, tuple[float, float, float]] | None,
    unalloc_after: float,
) -> tuple[dict[str, float], list[list[float]], list[list[float]], float, float]:
    """What ``_result`` needs from every group, in one pass: the asset-class targets (as
    ``_asset_class_targets``), the group values before and after the trades, and the
    ``max_abs_drift()`` of the drift reports before and after, computed with the same
    arithmetic as the items ``_drift_item_list`` builds (a test keeps the two in step)."""
    plans = [o.plan for o in outcomes]
    tot_b = sum(p.value for p in plans) + account.cash
    pos_b = tot_b if tot_b > 0 else 1.0
    tot_a = sum(p.total for p in plans) + unalloc_after
    pos_a = tot_a if tot_a > 0 else 1.0
    ct: dict[str, float] = {}
    cls_b: dict[str, float] = {}
    cls_a: dict[str, float] = {}
    best_b = best_a = 0.0
    all_b: list[list[float]] = []
    all_a: list[list[float]] = []
    for o, sw in zip(outcomes, sleeve_weights, strict=True):
        plan = o.plan
        ptot = plan.total if plan.total > 0 else 1.0
        sv_b, sv_a = plan.value, plan.total
        stot_b = sv_b if sv_b > 0 else 1.0
        stot_a = sv_a if sv_a > 0 else 1.0
        gv_b: list[float] = []
        # post-trade group values: from _finish (same arithmetic), else computed here
        gv_a = o.group_post if o.group_post is not None else post_values(plan.groups)
        for g, pv in zip(plan.groups, gv_a, strict=True):
            target = g.target
            ac = g.asset_class
            if target > 0:
                ct[ac] = ct.get(ac, 0.0) + sw * target / ptot
            v = g.value
            gv_b.append(v)
            tp = target / ptot
            if v > 0 or target > 0:
                d = abs(v / stot_b - tp)
                if d > best_b:
                    best_b = d
                cls_b[ac] = cls_b.get(ac, 0.0) + v
            if pv > 0 or target > 0:
                d = abs(pv / stot_a - tp)
                if d > best_a:
                    best_a = d
                cls_a[ac] = cls_a.get(ac, 0.0) + pv
        all_b.append(gv_b)
        all_a.append(gv_a)
        cash_t = plan.cash_target / ptot
        d = abs(plan.cash_before / stot_b - cash_t)
        if d > best_b:
            best_b = d
        d = abs(o.cash_after / stot_a - cash_t)
        if d > best_a:
            best_a = d
        if sleeve_targets is not None:
            t = sleeve_targets[plan.sleeve.sleeve_id][0]
            d = abs(sv_b / pos_b - t)
            if d > best_b:
                best_b = d
            d = abs(sv_a / pos_a - t)
            if d > best_a:
                best_a = d
    for ac in set(cls_b) | set(ct):
        d = abs(cls_b.get(ac, 0.0) / pos_b - ct.get(ac, 0.0))
        if d > best_b:
            best_b = d
    for ac in set(cls_a) | set(ct):
        d = abs(cls_a.get(ac, 0.0) / pos_a - ct.get(ac, 0.0))
        if d > best_a:
            best_a = d
    if abs(account.cash) > 0.005:
        d = abs(account.cash / pos_b - 0.0)
        if d > best_b:
            best_b = d
    if abs(unalloc_after) > 0.005:
        d = abs(unalloc_after / pos_a - 0.0)
        if d > best_a:
            best_a = d
    return ct, all_b, all_a, best_b, best_a


def _drift_item_list(
    account: Account,
    plans: list[SleevePlan],
    values: list[float],
    cash: list[float],
    unallocated: float,
    sleeve_targets: dict[str, tuple[float, float, float]] | None,
    class_targets: dict[str, float],
    group_values: list[list[float]],
) -> list[DriftItem]:
    items: list[DriftItem] = []
    add = items.append
    acct_total = sum(values) + unallocated
    acct_pos = acct_total if acct_total > 0 else 1.0
    classes: dict[str, float] = {}
    security = _SECURITY
    for plan, sv, c, gv in zip(plans, values, cash, group_values, strict=True):
        sid = plan.sleeve.sleeve_id
        stot = sv if sv > 0 else 1.0
        ptot = plan.total if plan.total > 0 else 1.0
        for g, v in zip(plan.groups, gv, strict=True):
            target = g.target
            if v <= 0 and target <= 0:
                continue
            add(DriftItem(security, g.key, sid, v / stot, target / ptot, g.lo / ptot, g.hi / ptot))
            ac = g.asset_class
            classes[ac] = classes.get(ac, 0.0) + v
        items.append(
            DriftItem(
                DriftLevel.CASH,
                "cash",
                sid,
                c / stot,
                plan.cash_target / ptot,
                plan.cash_lo / ptot,
                plan.cash_hi / ptot,
            )
        )
        if sleeve_targets is not None:
            t, lo, hi = sleeve_targets[sid]
            items.append(
                DriftItem(DriftLevel.SLEEVE, plan.model.model_id, sid, sv / acct_pos, t, lo, hi)
            )
    lo_w, hi_w = account.asset_class_band.bounds(0.0)
    width = hi_w
    for ac in sorted(set(classes) | set(class_targets)):
        t = class_targets.get(ac, 0.0)
        lo, hi = account.asset_class_band.bounds(t)
        items.append(
            DriftItem(
                DriftLevel.ASSET_CLASS,
                ac,
                None,
                classes.get(ac, 0.0) / acct_pos,
                t,
                max(lo, 0.0),
                hi,
            )
        )
    if abs(unallocated) > 0.005:
        items.append(
            DriftItem(DriftLevel.CASH, "unallocated", None, unallocated / acct_pos, 0.0, 0.0, width)
        )
    del lo_w
    return items


def _sleeve_targets(
    account: Account, ref: Reference
) -> dict[str, tuple[float, float, float]] | None:
    if not account.strategy_id:
        return None
    strat = ref.strategies[account.strategy_id]
    by_model = {e.model_id: e for e in strat.entries}
    out = {}
    for sl in account.sleeves:
        e = by_model[sl.model_id]
        lo, hi = e.band.bounds(e.weight)
        out[sl.sleeve_id] = (e.weight, lo, hi)
    return out


def measure_drift(account: Account, reference: Reference) -> AccountDrift:
    """Drift of one account at security, sleeve, asset-class and cash level.

    Security targets are the *effective* ones the rebalancer aims at (restrictions,
    equivalents, hold/replacement and the freed-cash policy applied); bands as configured.
    """
    check_account(reference, account)
    plans = [plan_sleeve(account, sl, reference) for sl in account.sleeves]
    return _drift_from_plans(account, reference, plans)


def _drift_from_plans(account: Account, ref: Reference, plans: list[SleevePlan]) -> AccountDrift:
    values = [p.value for p in plans]
    tot = sum(values) + account.cash
    st = _sleeve_targets(account, ref)
    sw = (
        [st[p.sleeve.sleeve_id][0] for p in plans]
        if st
        else [v / tot if tot > 0 else 0.0 for v in values]
    )
    ct = _asset_class_targets(plans, sw)
    return drift_items(
        account,
        plans,
        values,
        [p.cash_before for p in plans],
        account.cash,
        st,
        ct,
        [[g.value for g in p.groups] for p in plans],
    )


# --------------------------------------------------------------------------------------------
# Result assembly


def _result(
    account: Account,
    ref: Reference,
    req: Request,
    outcomes: list[SleeveOutcome],
    states: list[SleeveState],
    strategic: bool,
    movements: list[CashMovement],
    unalloc_after: float,
    alloc: Allocation | None,
    withdrawal: float,
) -> RebalanceResult:
    plans = [o.plan for o in outcomes]
    st = _sleeve_targets(account, ref)
    values_before = [p.value for p in plans]
    tot_before = sum(values_before) + account.cash
    sw_before = (
        [st[p.sleeve.sleeve_id][0] for p in plans]
        if st
        else [v / tot_before if tot_before > 0 else 0.0 for v in values_before]
    )
    # asset-class targets at the post-flow totals (what the rebalance aims at), group values
    # before and after and the largest drifts, in one pass; the drift reports themselves are
    # built when first read (nothing changes the plans once the result is assembled)
    ct, gv_before, gv_after, max_before, max_after = _drift_pass(
        account, outcomes, sw_before, st, unalloc_after
    )
    args_before = (
        account,
        plans,
        values_before,
        [p.cash_before for p in plans],
        account.cash,
        st,
        ct,
        gv_before,
    )
    before = AccountDrift.deferred(account.account_id, (_drift_item_list, args_before))
    args_after = (
        account,
        plans,
        [p.total for p in plans],
        [o.cash_after for o in outcomes],
        unalloc_after,
        st,
        ct,
        gv_after,
    )
    after = AccountDrift.deferred(account.account_id, (_drift_item_list, args_after))

    trades: list[Trade] = []
    notices: list[Notice] = []
    sleeves: list[SleeveResult] = []
    secs = ref.securities
    for o in outcomes:
        p = o.plan
        trades.extend(o.trades)
        notices.extend(o.notices)
        tot = p.total if p.total > 0 else 1.0
        post_w = {s: q * secs[s].price / tot for s, q in o.post_qty.items()}
        post_w["CASH"] = o.cash_after / tot
        sleeves.append(
            SleeveResult(  # positional (a dozen keywords cost more than the rest)
                p.sleeve.sleeve_id,
                p.model.model_id,
                tuple(o.trades),
                _dec(p.cash_before),
                _dec(p.inflow),
                _dec(p.outflow),
                _dec(o.cash_after),
                _dec(p.value),
                _dec(p.total),
                o.post_qty,
                post_w,
            )
        )
    if unalloc_after < -0.005:
        notices.append(
            Notice(
                "withdrawal_shortfall",
                f"the withdrawal of {money(withdrawal)} is {money(-unalloc_after)} short: the "
                "sleeves cannot raise more (restricted holdings or reserves)",
            )
        )
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
    acct_value = tot_before
    summary = Summary(
        trade_count=len(trades),
        buy_count=buy_n,
        sell_count=sell_n,
        buy_value=_dec(buy_v),
        sell_value=_dec(sell_v),
        turnover=(buy_v + sell_v) / 2 / acct_value if acct_value > 0 else 0.0,
        account_value=_dec(acct_value),
        cash_before=_dec(sum(p.cash_before for p in plans) + account.cash),
        cash_after=_dec(sum(o.cash_after for o in outcomes) + unalloc_after),
        max_drift_before=max_before,
        max_drift_after=max_after,
    )
    del states, strategic, alloc
    return RebalanceResult(
        account_id=account.account_id,
        request=req,
        trades=tuple(trades),
        sleeves=tuple(sleeves),
        cash_movements=tuple(movements),
        unallocated_cash_after=_dec(unalloc_after),
        drift_before=before,
        drift_after=after,
        notices=tuple(notices),
        summary=summary,
    )


# --------------------------------------------------------------------------------------------
# Books and projections


def rebalance_book(book: Book) -> BookResult:
    """Rebalance every account of a book; a bad account is reported and skipped.

    Returns:
        ``BookResult`` with one ``RebalanceResult`` per good account (in book order) and one
        ``AccountFailure`` per account whose input was invalid.
    """
    results: list[RebalanceResult] = []
    failures: list[AccountFailure] = []
    for acct in book.accounts:
        try:
            results.append(rebalance(RebalanceInput(acct, book.reference, book.request)))
        except EngineInputError as exc:
            failures.append(
                AccountFailure(acct.account_id, exc.one_line(), exc.code, exc.to_dict())
            )
        except EngineError as exc:  # pragma: no cover - defensive
            failures.append(AccountFailure(acct.account_id, str(exc), "engine_error", {}))
    return BookResult(tuple(results), tuple(failures))


def project(inp: RebalanceInput, result: RebalanceResult) -> Account:
    """The account as it would be after the proposed trades and cash movements
    (the withdrawal paid out, the deposit received), at the same prices."""
    by_sleeve = {s.sleeve_id: s for s in result.sleeves}
    sleeves = []
    for sl in inp.account.sleeves:
        sr = by_sleeve[sl.sleeve_id]
        holdings = tuple(Holding(sym, q) for sym, q in sr.projected_holdings.items())
        cash = sl.cash + float(sr.cash_in) - float(sr.cash_out)
        for t in sr.trades:
            v = float(t.quantity) * t.price
            cash += -v if t.side is Side.BUY else v
        sleeves.append(replace(sl, holdings=holdings, cash=cash))
    return replace(inp.account, sleeves=tuple(sleeves), cash=float(result.unallocated_cash_after))
