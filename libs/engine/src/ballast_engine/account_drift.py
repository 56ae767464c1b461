"""One account's drift report: every security group, sleeve cash, sleeve (against the
strategy), asset class and unallocated cash, each with its weight, target and band.

``measure_drift`` reports an account as it stands; the core builds the reports before and
after a rebalance from the same plans (``drift_item_list``), and ``drift_maxima`` gives their
largest drifts without building them. The whole-book scan (``ballast_engine.drift``) uses the
same targets (``sleeve_targets``, ``asset_class_targets``).
"""

from __future__ import annotations

from dataclasses import dataclass

from ballast_engine.model import Account, AccountDrift, DriftItem, DriftLevel, Reference
from ballast_engine.tactical import SleeveOutcome, SleevePlan, plan_sleeve, post_values
from ballast_engine.validate import check_account

SleeveTargets = dict[str, tuple[float, float, float]]  # sleeve id -> (target, lo, hi)

_SECURITY = DriftLevel.SECURITY


def sleeve_targets(account: Account, ref: Reference) -> SleeveTargets | None:
    """Each sleeve's strategy weight and band in the account (``None``: no strategy)."""
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


def sleeve_weights(
    plans: list[SleevePlan], targets: SleeveTargets | None, unallocated: float
) -> list[float]:
    """Each sleeve's weight in the account: its strategy weight, else its share of the
    account's value (sleeve values before cash flows plus ``unallocated`` cash)."""
    values = [p.value for p in plans]
    tot = sum(values) + unallocated
    if targets:
        return [targets[p.sleeve.sleeve_id][0] for p in plans]
    return [v / tot if tot > 0 else 0.0 for v in values]


def asset_class_targets(plans: list[SleevePlan], weights: list[float]) -> dict[str, float]:
    """Account-level asset-class targets: each sleeve's group targets times its weight."""
    out: dict[str, float] = {}
    for plan, sw in zip(plans, weights, strict=True):
        tot = plan.total if plan.total > 0 else 1.0
        for g in plan.groups:
            if g.target > 0:
                out[g.asset_class] = out.get(g.asset_class, 0.0) + sw * g.target / tot
    return out


def drift_items(
    account: Account,
    plans: list[SleevePlan],
    values: list[float],  # sleeve group-level values to measure (per plan, per group)
    cash: list[float],
    unallocated: float,
    targets: SleeveTargets | None,
    class_targets: dict[str, float],
    group_values: list[list[float]],
) -> AccountDrift:
    """Drift items given sleeve values/cash and per-group values (before or after trades)."""
    return AccountDrift(
        account.account_id,
        tuple(
            drift_item_list(
                account, plans, values, cash, unallocated, targets, class_targets, group_values
            )
        ),
    )


def drift_item_list(
    account: Account,
    plans: list[SleevePlan],
    values: list[float],
    cash: list[float],
    unallocated: float,
    targets: SleeveTargets | None,
    class_targets: dict[str, float],
    group_values: list[list[float]],
) -> list[DriftItem]:
    """The items of a drift report: per sleeve its groups, cash and strategy weight, then the
    asset classes and unallocated cash of the account."""
    items: list[DriftItem] = []
    acct_total = sum(values) + unallocated
    acct_pos = acct_total if acct_total > 0 else 1.0
    classes: dict[str, float] = {}
    for plan, sv, c, gv in zip(plans, values, cash, group_values, strict=True):
        _add_sleeve_items(items, classes, plan, sv, c, gv)
        if targets is not None:
            sid = plan.sleeve.sleeve_id
            t, lo, hi = targets[sid]
            items.append(
                DriftItem(DriftLevel.SLEEVE, plan.model.model_id, sid, sv / acct_pos, t, lo, hi)
            )
    _add_account_items(items, account, classes, class_targets, unallocated, acct_pos)
    return items


def _add_sleeve_items(
    items: list[DriftItem],
    classes: dict[str, float],
    plan: SleevePlan,
    sleeve_value: float,
    cash: float,
    group_values: list[float],
) -> None:
    """A sleeve's group and cash items; its group values added to ``classes``."""
    add = items.append
    security = _SECURITY
    sid = plan.sleeve.sleeve_id
    stot = sleeve_value if sleeve_value > 0 else 1.0
    ptot = plan.total if plan.total > 0 else 1.0
    for g, v in zip(plan.groups, group_values, strict=True):
        target = g.target
        if v <= 0 and target <= 0:
            continue
        add(DriftItem(security, g.key, sid, v / stot, target / ptot, g.lo / ptot, g.hi / ptot))
        ac = g.asset_class
        classes[ac] = classes.get(ac, 0.0) + v
    add(
        DriftItem(
            DriftLevel.CASH,
            "cash",
            sid,
            cash / stot,
            plan.cash_target / ptot,
            plan.cash_lo / ptot,
            plan.cash_hi / ptot,
        )
    )


def _add_account_items(
    items: list[DriftItem],
    account: Account,
    classes: dict[str, float],
    class_targets: dict[str, float],
    unallocated: float,
    acct_pos: float,
) -> None:
    """The asset-class items and the unallocated-cash item of the account."""
    width = account.asset_class_band.bounds(0.0)[1]
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


@dataclass(slots=True)
class DriftMaxima:
    """What result assembly needs from every group, in one pass: the asset-class targets
    (as ``asset_class_targets``), the group values before and after the trades, and the
    ``max_abs_drift()`` of the reports before and after, of every level and of the security
    level alone."""

    class_targets: dict[str, float]
    group_values_before: list[list[float]]
    group_values_after: list[list[float]]
    max_before: float
    max_after: float
    security_before: float = 0.0
    security_after: float = 0.0


def drift_maxima(
    account: Account,
    outcomes: list[SleeveOutcome],
    weights: list[float],
    targets: SleeveTargets | None,
    unalloc_after: float,
) -> DriftMaxima:
    """The largest drifts before and after the trades, computed with the same arithmetic as
    the items ``drift_item_list`` builds (a test keeps the two in step), without them."""
    plans = [o.plan for o in outcomes]
    tot_b = sum(p.value for p in plans) + account.cash
    pos_b = tot_b if tot_b > 0 else 1.0
    tot_a = sum(p.total for p in plans) + unalloc_after
    pos_a = tot_a if tot_a > 0 else 1.0
    ct: dict[str, float] = {}
    cls_b: dict[str, float] = {}
    cls_a: dict[str, float] = {}
    best = [0.0, 0.0, 0.0, 0.0]  # before, after; security level only: before, after
    all_b: list[list[float]] = []
    all_a: list[list[float]] = []
    for o, sw in zip(outcomes, weights, strict=True):
        gv_b, gv_a = _sleeve_maxima(o, sw, ct, cls_b, cls_a, best)
        all_b.append(gv_b)
        all_a.append(gv_a)
        if targets is not None:
            plan = o.plan
            t = targets[plan.sleeve.sleeve_id][0]
            best[0] = max(best[0], abs(plan.value / pos_b - t))
            best[1] = max(best[1], abs(plan.total / pos_a - t))
    for ac in set(cls_b) | set(ct):
        best[0] = max(best[0], abs(cls_b.get(ac, 0.0) / pos_b - ct.get(ac, 0.0)))
    for ac in set(cls_a) | set(ct):
        best[1] = max(best[1], abs(cls_a.get(ac, 0.0) / pos_a - ct.get(ac, 0.0)))
    if abs(account.cash) > 0.005:
        best[0] = max(best[0], abs(account.cash / pos_b - 0.0))
    if abs(unalloc_after) > 0.005:
        best[1] = max(best[1], abs(unalloc_after / pos_a - 0.0))
    return DriftMaxima(ct, all_b, all_a, best[0], best[1], best[2], best[3])


def _sleeve_maxima(
    o: SleeveOutcome,
    sw: float,
    ct: dict[str, float],
    cls_b: dict[str, float],
    cls_a: dict[str, float],
    best: list[float],
) -> tuple[list[float], list[float]]:
    """One sleeve's part of ``drift_maxima``: its groups' asset-class targets and values
    (added to ``ct``, ``cls_b``, ``cls_a``) and drifts (``best``: every level's before and
    after, then the security level's); returns its group values before and after the trades."""
    plan = o.plan
    best_b, best_a = best[2], best[3]  # the groups' (security level) drifts first
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
    best[2], best[3] = best_b, best_a
    cash_t = plan.cash_target / ptot
    best[0] = max(best[0], best_b, abs(plan.cash_before / stot_b - cash_t))
    best[1] = max(best[1], best_a, abs(o.cash_after / stot_a - cash_t))
    return gv_b, gv_a


def measure_drift(account: Account, reference: Reference) -> AccountDrift:
    """Drift of one account at security, sleeve, asset-class and cash level.

    Security targets are the *effective* ones the rebalancer aims at (restrictions,
    equivalents, hold/replacement and the freed-cash policy applied); bands as configured.
    """
    check_account(reference, account)
    plans = [plan_sleeve(account, sl, reference) for sl in account.sleeves]
    return drift_from_plans(account, reference, plans)


def drift_from_plans(account: Account, ref: Reference, plans: list[SleevePlan]) -> AccountDrift:
    """The drift report of an account as its sleeve plans see it (before any trade)."""
    targets = sleeve_targets(account, ref)
    ct = asset_class_targets(plans, sleeve_weights(plans, targets, account.cash))
    return drift_items(
        account,
        plans,
        [p.value for p in plans],
        [p.cash_before for p in plans],
        account.cash,
        targets,
        ct,
        [[g.value for g in p.groups] for p in plans],
    )
