"""Tactical rebalance of one sleeve (one model).

The sleeve is first *planned* (``plan_sleeve``): model weights become dollar targets for
*groups* (a model security together with the equivalent securities the sleeve holds),
restrictions, "hold" entries and do-not-sell floors adjust those targets, and the freed-cash
policy places the weight a restriction frees. ``trade_sleeve`` then decides the trades:

1. sales forced by do-not-hold restrictions and by holdings outside the model;
2. groups outside their weight range go back to target (groups inside are left alone);
3. cash: buys never take cash below its target; cash below its range (or below the reserve,
   or short of a withdrawal / an outflow to another sleeve) is raised by selling the most
   overweight groups first (water-filling toward ``λ × target``); cash above its range is
   invested in the most underweight groups first;
4. rounding: buys and sells round *down* to the share increment (sales that close a
   position sell it all), trades below the minimums are dropped, buys are trimmed if
   rounding would overspend, sales are added (rounded up) if cash is still short;
5. leftover cash above target buys whole increments of the most underweight groups as long
   as each purchase brings the group closer to its target.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from decimal import Decimal

from ballast_engine.model import (
    DRIFT_EPS,
    Account,
    Band,
    FreedCashPolicy,
    Holding,
    Model,
    Notice,
    Reason,
    Reference,
    Restriction,
    RestrictionKind,
    RestrictionScope,
    Settings,
    Side,
    Sleeve,
    Trade,
)
from ballast_engine.validate import ref_index

INF = math.inf
CENT = Decimal("0.01")
_EPS_DOLLARS = 1e-7  # dollar amounts closer than this are equal

FULL = "full"
BUY_ONLY = "buy_only"
SELL_ONLY = "sell_only"


@dataclass(slots=True)
class Member:
    symbol: str
    price: float
    qty: float
    unit: float  # share increment (1 for whole shares)
    in_model: bool
    dnb: Restriction | None = None
    dns: Restriction | None = None
    dnh: Restriction | None = None
    forced: Reason | None = None  # sold entirely (restriction / not in model)
    conflict: bool = False
    trade: float = 0.0  # signed shares

    @property
    def value(self) -> float:
        return self.qty * self.price


@dataclass(slots=True)
class Group:
    key: str
    members: list[Member]
    in_model: bool
    sector: str | None
    asset_class: str
    band: Band
    target: float = 0.0  # effective target, dollars
    model_target: float = 0.0  # target before restriction adjustments
    value: float = 0.0  # current value of all members
    keep: float = 0.0  # value after forced sales
    floor: float = 0.0  # dollars that may not be sold
    cap: float = INF  # highest post-trade value (current value when nothing can be bought)
    buy: Member | None = None
    hold_symbol: str | None = None  # the model marks this group's security "hold"
    replacement: str | None = None
    replaces: list[str] = field(default_factory=list)
    freed_in: float = 0.0
    lo: float = 0.0
    hi: float = INF
    post: float = 0.0
    why: Reason | None = None


@dataclass(slots=True)
class SleevePlan:
    account_id: str
    sleeve: Sleeve
    model: Model
    settings: Settings
    groups: list[Group]
    value: float  # sleeve value before cash flows
    total: float  # sleeve value after cash flows (what targets are computed on)
    cash_before: float
    inflow: float
    outflow: float
    cash0: float  # cash after flows, before trades
    cash_target: float  # dollars
    cash_lo: float
    cash_hi: float
    hard_floor: float  # cash never spent below this (the reserve)
    notices: list[Notice]
    purpose_in: str
    purpose_out: str


@dataclass(slots=True)
class SleeveOutcome:
    plan: SleevePlan
    trades: list[Trade]
    cash_after: float
    post_qty: dict[str, float]
    notices: list[Notice]


# --------------------------------------------------------------------------------------------
# Planning


def _matches(r: Restriction, symbol: str, ref: Reference) -> bool:
    if r.scope is RestrictionScope.SECURITY:
        return r.value == symbol
    sec = ref.securities.get(symbol)
    if r.scope is RestrictionScope.SECTOR:
        return sec is not None and sec.sector == r.value
    if r.scope is RestrictionScope.ASSET_CLASS:
        return sec is not None and sec.asset_class == r.value
    lst = ref.lists.get(r.value)
    return lst is not None and symbol in lst


def _apply_restrictions(m: Member, restrictions: tuple[Restriction, ...], ref: Reference) -> None:
    for r in restrictions:
        if _matches(r, m.symbol, ref):
            if r.kind is RestrictionKind.DO_NOT_BUY:
                m.dnb = m.dnb or r
            elif r.kind is RestrictionKind.DO_NOT_SELL:
                m.dns = m.dns or r
            else:
                m.dnh = m.dnh or r


def model_weights(model: Model, ref: Reference) -> tuple[dict[str, float], float]:
    """Security weights and the model's own cash weight (share-based models use prices)."""
    if model.kind == "weights":
        return {e.symbol: e.weight for e in model.entries}, model.cash_weight
    vals = {
        e.symbol: e.shares * float(ref.securities[e.symbol].price or 0.0) for e in model.entries
    }
    mv = sum(vals.values()) + model.cash
    return {s: v / mv for s, v in vals.items()}, model.cash / mv


def describe_restriction(r: Restriction) -> str:
    what = {
        RestrictionScope.SECURITY: "",
        RestrictionScope.SECTOR: f" (sector {r.value})",
        RestrictionScope.ASSET_CLASS: f" (asset class {r.value})",
        RestrictionScope.LIST: f" (list {r.value})",
    }[r.scope]
    kind = r.kind.value.replace("_", "-")
    return f"the {r.source}'s {kind} restriction{what}"


def plan_sleeve(
    account: Account,
    sleeve: Sleeve,
    ref: Reference,
    *,
    inflow: float = 0.0,
    outflow: float = 0.0,
    purpose_in: str = "",
    purpose_out: str = "",
) -> SleevePlan:
    """Targets, groups and ranges of one sleeve (inputs must be validated)."""
    st = sleeve.settings
    model = ref.models[sleeve.model_id]
    idx = ref_index(ref)
    secs = ref.securities
    restrictions = account.restrictions + sleeve.restrictions
    notices: list[Notice] = []
    dec_unit = 10.0**-st.share_decimals

    def member(sym: str, qty: float, in_model: bool) -> Member:
        sec = secs[sym]
        unit = dec_unit if (st.fractional and sec.fractional) else 1.0
        m = Member(sym, float(sec.price), qty, unit, in_model)
        if restrictions:
            _apply_restrictions(m, restrictions, ref)
        return m

    held = {h.symbol: h.quantity for h in sleeve.holdings}
    weights, model_cash = model_weights(model, ref)
    sec_value = sum(q * float(secs[s].price) for s, q in held.items())
    value = sec_value + sleeve.cash
    total = value + inflow - outflow
    cash0 = sleeve.cash + inflow - outflow
    cash_frac = max(st.cash_target, model_cash)
    cash_target = max(cash_frac * total, st.cash_reserve)
    investable = max(total - cash_target, 0.0)
    wsum = sum(weights.values())
    scale = investable / wsum if wsum > 0 else 0.0

    groups: list[Group] = []
    by_eq: dict[int, Group] = {}
    by_sym: dict[str, Group] = {}
    eq_of = idx.eq_of

    def new_group(sym: str, in_model: bool, band: Band) -> Group:
        sec = secs[sym]
        g = Group(sym, [], in_model, sec.sector, sec.asset_class, band)
        groups.append(g)
        return g

    for e in model.entries:
        sym = e.symbol
        eqi = eq_of.get(sym)
        g = by_eq.get(eqi) if eqi is not None else None
        if g is None:
            g = new_group(sym, True, e.band or st.security_band)
            if eqi is not None:
                by_eq[eqi] = g
        m = member(sym, held.get(sym, 0.0), True)
        g.members.append(m)
        by_sym[sym] = g
        t = weights[sym] * scale
        g.target += t
        if e.hold:
            g.hold_symbol = sym
            g.replacement = e.replacement
    # replacements (buy list) get a group of their own when not already in one
    for e in model.entries:
        r = e.replacement
        if r is not None and r not in by_sym:
            eqi = eq_of.get(r)
            g = by_eq.get(eqi) if eqi is not None else None
            if g is None:
                g = new_group(r, True, e.band or st.security_band)
                if eqi is not None:
                    by_eq[eqi] = g
            g.members.append(member(r, held.get(r, 0.0), True))
            by_sym[r] = g
    # held securities outside the model: join their equivalence group, else their own group
    for sym, qty in held.items():
        if sym in by_sym:
            continue
        eqi = eq_of.get(sym)
        g = by_eq.get(eqi) if eqi is not None else None
        if g is None:
            g = new_group(sym, False, st.security_band)
        g.members.append(member(sym, qty, False))
        by_sym[sym] = g
    # equivalents not held and not in the model: possible substitutes for a restricted member
    for eqi, g in by_eq.items():
        if not g.in_model:
            continue
        for sym in idx.eq_members[eqi]:
            if sym not in by_sym:
                p = secs[sym].price
                if p is not None and math.isfinite(p) and p > 0:
                    g.members.append(member(sym, 0.0, False))
                    by_sym[sym] = g

    # restrictions, forced sales, floors, caps and buy candidates
    for g in groups:
        gval = keep = floor = 0.0
        for m in g.members:
            v = m.qty * m.price
            gval += v
            if m.qty > 0:
                if m.dnh is not None or not g.in_model:
                    if m.dns is not None:
                        if m.dnh is not None:
                            m.conflict = True
                            notices.append(
                                Notice(
                                    "restriction_conflict",
                                    f"{m.symbol} is under {describe_restriction(m.dnh)} and "
                                    f"{describe_restriction(m.dns)}; it is kept as is and needs a "
                                    "decision",
                                    sleeve.sleeve_id,
                                    m.symbol,
                                )
                            )
                        else:
                            notices.append(
                                Notice(
                                    "kept_do_not_sell",
                                    f"{m.symbol} is not in model {model.model_id} but "
                                    f"{describe_restriction(m.dns)} keeps it",
                                    sleeve.sleeve_id,
                                    m.symbol,
                                )
                            )
                        floor += v
                        keep += v
                    else:
                        m.forced = Reason.RESTRICTION if m.dnh is not None else Reason.NOT_IN_MODEL
                else:
                    keep += v
                    if m.dns is not None:
                        floor += v
        g.value, g.keep, g.floor = gval, keep, floor
        if g.in_model:
            for m in g.members:
                if m.dnb is None and m.dnh is None and m.symbol != g.hold_symbol:
                    if g.hold_symbol is not None and g.replacement is not None:
                        break  # the buy-list replacement takes the place of a hold security
                    g.buy = m
                    break
        g.cap = INF if g.buy is not None else keep
        g.model_target = g.target

    # the part of a target a group cannot reach goes to the replacement or is freed
    freed: list[tuple[float, str | None]] = []
    for g in groups:
        if g.in_model and g.cap < g.target:
            short = g.target - g.cap
            g.target = g.cap
            if g.hold_symbol is not None and g.replacement is not None:
                rg = by_sym[g.replacement]
                rg.target += short
                rg.replaces.append(g.hold_symbol)
            else:
                freed.append((short, g.sector))
    for g in groups:  # a replacement that cannot be bought frees its share too
        if g.replaces and g.cap < g.target:
            freed.append((g.target - g.cap, g.sector))
            g.target = g.cap
    if freed:
        policy = st.freed_cash
        for amount, sector in freed:
            if amount <= 0:
                continue
            eligible: list[Group] = []
            if policy is not FreedCashPolicy.CASH:
                eligible = [g for g in groups if g.buy is not None and g.target > 0]
                if policy is FreedCashPolicy.SECTOR:
                    same = [g for g in eligible if g.sector == sector and sector is not None]
                    eligible = same or eligible
            tot = sum(g.target for g in eligible)
            if tot > 0:
                for g in eligible:
                    add = amount * g.target / tot
                    g.target += add
                    g.freed_in += add
            else:
                cash_target += amount
    # do-not-sell holdings more than one share above their target keep their value and the
    # excess is taken from the others (less than a share is rounding: ignoring it keeps a
    # rebalanced sleeve stable)
    excess = 0.0
    floored: set[int] = set()
    for g in groups:
        if g.floor > g.target:
            step = max((m.price * m.unit for m in g.members if m.dns is not None), default=0.0)
            if g.floor > g.target + step:
                excess += g.floor - g.target
                g.target = g.floor
                floored.add(id(g))
    if excess > 0:
        # taken from positions that can be bought back later (taking it from a hold or
        # do-not-buy position would shrink it for good and shift the targets again), in
        # proportion to their targets (not to current holdings, so the result is stable)
        take = 0.0
        for _ in range(3):
            room = [
                g for g in groups if g.buy is not None and g.target > 1e-9 and id(g) not in floored
            ]
            tot = sum(g.target for g in room)
            want = excess - take
            if tot <= 0 or want <= _EPS_DOLLARS:
                break
            for g in room:
                cut = min(want * g.target / tot, g.target)
                g.target -= cut
                take += cut
        rest = excess - take
        if rest > _EPS_DOLLARS:
            cash_target = max(cash_target - rest, st.cash_reserve)
            notices.append(
                Notice(
                    "do_not_sell_above_target",
                    f"do-not-sell holdings exceed their targets by ${rest:,.2f} more than the rest "
                    "of the model can give up; the sleeve's cash target is reduced",
                    sleeve.sleeve_id,
                )
            )

    tot_pos = total if total > 0 else 1.0
    for g in groups:
        t = g.target / tot_pos
        lo, hi = g.band.bounds(t)
        g.lo = max(lo, 0.0) * tot_pos
        g.hi = hi * tot_pos
    cw = cash_target / tot_pos
    clo, chi = st.cash_band.bounds(cw)
    return SleevePlan(
        account_id=account.account_id,
        sleeve=sleeve,
        model=model,
        settings=st,
        groups=groups,
        value=value,
        total=total,
        cash_before=sleeve.cash,
        inflow=inflow,
        outflow=outflow,
        cash0=cash0,
        cash_target=cash_target,
        cash_lo=min(max(clo, 0.0) * tot_pos, cash_target),
        cash_hi=max(chi * tot_pos, cash_target),
        hard_floor=st.cash_reserve,
        notices=notices,
        purpose_in=purpose_in,
        purpose_out=purpose_out,
    )


# --------------------------------------------------------------------------------------------
# Water-filling


def _fill(
    slopes: list[float], starts: list[float], stops: list[float], amount: float
) -> list[float]:
    """Allocate ``amount`` as ``slope_i × clip(x − start_i, 0, stop_i − start_i)`` with the
    smallest common level ``x`` (exact, by walking the sorted breakpoints)."""
    n = len(slopes)
    out = [0.0] * n
    if amount <= 0 or n == 0:
        return out
    cap_total = sum(s * (b - a) for s, a, b in zip(slopes, starts, stops, strict=True))
    if cap_total <= amount:
        return [s * (b - a) for s, a, b in zip(slopes, starts, stops, strict=True)]
    events = sorted(
        [(a, i, 1) for i, a in enumerate(starts)] + [(b, i, -1) for i, b in enumerate(stops)]
    )
    x = events[0][0]
    slope = 0.0
    filled = 0.0
    for pos, i, kind in events:
        if pos > x:
            gain = slope * (pos - x)
            if filled + gain >= amount:
                x += (amount - filled) / slope if slope > 0 else 0.0
                break
            filled += gain
            x = pos
        slope += slopes[i] * kind
    for i in range(n):
        out[i] = slopes[i] * min(max(x - starts[i], 0.0), stops[i] - starts[i])
    return out


def _buy_fill(groups: list[Group], amount: float, why: Reason | None) -> float:
    """Buy ``amount`` into the most underweight groups first (relative to target)."""
    cand = [
        g for g in groups if g.buy is not None and g.target > 0 and g.post < min(g.target, g.cap)
    ]
    if not cand or amount <= _EPS_DOLLARS:
        return 0.0
    alloc = _fill(
        [g.target for g in cand],
        [g.post / g.target for g in cand],
        [min(g.target, g.cap) / g.target for g in cand],
        amount,
    )
    spent = 0.0
    for g, a in zip(cand, alloc, strict=True):
        if a > _EPS_DOLLARS:
            g.post += a
            spent += a
            if g.why is None:
                g.why = why
    return spent


def _sell_fill(groups: list[Group], amount: float, why: Reason) -> float:
    """Sell ``amount`` from the most overweight groups first (relative to target)."""
    raised = 0.0
    if amount <= _EPS_DOLLARS:
        return 0.0
    # positions without a target go first, whole
    for g in groups:
        if g.target <= 0 and g.post > g.floor + _EPS_DOLLARS and raised < amount:
            a = min(g.post - g.floor, amount - raised)
            g.post -= a
            raised += a
            if g.why is None:
                g.why = why
    cand = [g for g in groups if g.target > 0 and g.post > g.floor + _EPS_DOLLARS]
    if not cand or raised >= amount:
        return raised
    alloc = _fill(
        [g.target for g in cand],
        [-g.post / g.target for g in cand],
        [-g.floor / g.target for g in cand],
        amount - raised,
    )
    for g, a in zip(cand, alloc, strict=True):
        if a > _EPS_DOLLARS:
            g.post -= a
            raised += a
            if g.why is None:
                g.why = why
    return raised


# --------------------------------------------------------------------------------------------
# Trading


def _floor_units(shares: float, unit: float) -> float:
    if unit == 1.0:
        return float(math.floor(shares + 1e-9))
    return math.floor(shares / unit + 1e-9) * unit


def _ceil_units(shares: float, unit: float) -> float:
    if unit == 1.0:
        return float(math.ceil(shares - 1e-9))
    return math.ceil(shares / unit - 1e-9) * unit


def out_of_range(g: Group) -> bool:
    tol = _EPS_DOLLARS + DRIFT_EPS * abs(g.target)
    return g.keep < g.lo - tol or g.keep > g.hi + tol


def trade_sleeve(plan: SleevePlan, mode: str = FULL) -> SleeveOutcome:
    """Decide the trades of one planned sleeve (``mode``: full, buy_only or sell_only)."""
    groups = plan.groups
    notices = list(plan.notices)
    cash = plan.cash0
    forced_any = False
    for g in groups:
        if mode == BUY_ONLY:
            g.post = g.value
            g.keep = g.value
            for m in g.members:
                m.forced = None
        else:
            g.post = g.keep
            for m in g.members:
                if m.forced is not None and m.qty > 0:
                    forced_any = True
                    cash += m.qty * m.price
        g.why = None

    tc = plan.cash_target
    eps = _EPS_DOLLARS
    if mode == FULL:
        out_any = False
        for g in groups:
            if out_of_range(g):
                out_any = True
                target = min(max(g.target, g.floor), g.cap)
                if abs(target - g.post) > eps:
                    g.post = target
                    g.why = Reason.DRIFT
        triggered = (
            out_any
            or forced_any
            or cash < plan.cash_lo - eps
            or cash > plan.cash_hi + eps
            or cash < plan.hard_floor - eps
        )
        if not triggered:
            return _finish(plan, mode, notices, triggered=False)
        buys = sells = 0.0
        for g in groups:
            d = g.post - g.keep
            if d > 0:
                buys += d
            else:
                sells -= d
        end = cash + sells - buys
        if buys > 0 and end < tc - eps:
            avail = cash + sells - tc
            buyers = [g for g in groups if g.post > g.keep]
            for g in buyers:
                g.post = g.keep
                g.why = None
            if avail > eps:  # refill with what is available, most underweight first
                _buy_fill(buyers, avail, Reason.DRIFT)
            buys = sum(g.post - g.keep for g in groups if g.post > g.keep)
            end = cash + sells - buys
        if end < plan.cash_lo - eps or end < plan.hard_floor - eps:
            _sell_fill(groups, tc - end, Reason.CASH_NEED)
        elif end > plan.cash_hi + eps:
            _buy_fill(groups, end - tc, Reason.INVEST_CASH)
    elif mode == SELL_ONLY:
        if cash < tc - eps:
            _sell_fill(groups, tc - cash, Reason.CASH_NEED)
    else:  # BUY_ONLY
        if cash > tc + eps:
            _buy_fill(groups, cash - tc, Reason.INVEST_CASH)
    return _finish(plan, mode, notices, triggered=True)


def _finish(
    plan: SleevePlan, mode: str, notices: list[Notice], *, triggered: bool
) -> SleeveOutcome:
    st = plan.settings
    groups = plan.groups
    sid = plan.sleeve.sleeve_id
    cash = plan.cash0
    min_val, min_sh, min_open = st.min_trade_value, st.min_trade_shares, st.min_opening_trade_value

    # group dollar changes -> member share trades (rounded down)
    for g in groups:
        for m in g.members:
            m.trade = 0.0
            if m.forced is not None and triggered:
                m.trade = -m.qty
        if not triggered:
            continue
        d = g.post - g.keep
        if d < -_EPS_DOLLARS:
            left = -d
            # sell equivalents outside the model first, then model members, and the member
            # buys would go to last (so rounding can be topped up with it)
            for m in sorted(g.members, key=lambda m: (m is g.buy, m.in_model)):
                if left <= _EPS_DOLLARS:
                    break
                if m.forced is not None or m.dns is not None or m.qty <= 0:
                    continue
                mv = m.qty * m.price
                take = min(left, mv)
                left -= take
                sh = take / m.price
                if sh >= m.qty * (1 - 1e-9) - 1e-12:
                    m.trade = -m.qty
                else:
                    m.trade = -min(_floor_units(sh, m.unit), m.qty)
        elif d > _EPS_DOLLARS and g.buy is not None:
            m = g.buy
            m.trade = _floor_units(d / m.price, m.unit)

    def meets_min(m: Member, sh: float, buying: bool) -> bool:
        """Whether a trade of ``sh`` shares (not closing the position) meets the minimums."""
        val = sh * m.price
        if sh <= 0 or sh < min_sh - 1e-12 or val < max(min_val, 0.01) - 1e-9:
            return False
        return not (buying and m.qty <= 0 and val < min_open - 1e-9)

    def is_close(m: Member) -> bool:
        return m.trade < 0 and -m.trade >= m.qty - 1e-12

    skipped: list[Member] = []
    for g in groups:
        for m in g.members:
            if m.trade == 0.0 or is_close(m):
                continue
            if not meets_min(m, abs(m.trade), m.trade > 0):
                skipped.append(m)
                m.trade = 0.0

    def cash_end() -> float:
        c = cash
        for g in groups:
            for m in g.members:
                if m.trade:
                    c -= m.trade * m.price
        return c

    end = cash_end()
    # cash must end at or above the reserve and the lower edge of its range
    hard = max(plan.hard_floor, plan.cash_lo) if triggered else plan.hard_floor
    member_group = {m.symbol: g for g in groups for m in g.members}

    def post_value(g: Group) -> float:
        return sum((m.qty + m.trade) * m.price for m in g.members)

    # never overspend: trim buys, most over target first
    if end < hard - _EPS_DOLLARS:
        for _ in range(10_000):
            buys = [m for g in groups for m in g.members if m.trade > 0]
            if end >= hard - _EPS_DOLLARS or not buys:
                break
            m = max(
                buys,
                key=lambda m: post_value(member_group[m.symbol]) - member_group[m.symbol].target,
            )
            k = _ceil_units((hard - end) / m.price, m.unit)
            new = m.trade - k
            if new <= 0 or not meets_min(m, new, True):
                new = 0.0
            end += (m.trade - new) * m.price
            m.trade = new
    # still short: sell more, most overweight first. The reserve, a withdrawal or an outflow
    # may take any sellable position; the rest of the cash range only positions that can be
    # bought back or stay at or above their target (else their freed weight moves targets)
    reserve = plan.hard_floor
    if end < hard - _EPS_DOLLARS and mode != BUY_ONLY and triggered:
        for _ in range(10_000):
            if end >= hard - _EPS_DOLLARS:
                break
            strict = end < reserve - _EPS_DOLLARS
            cands = []
            for g in groups:
                for m in g.members:
                    if m.dns is not None or m.qty + m.trade <= 1e-12 or m.trade > 0:
                        continue
                    if not strict:
                        need1 = hard - end
                        a = min(_ceil_units(need1 / m.price, m.unit), m.qty + m.trade) * m.price
                        over = post_value(g) - g.target
                        if g.buy is None and over - a < -1e-7:
                            continue  # cannot be bought back: never below its target
                        if abs(over - a) - abs(over) - min(a, need1) > 1e-9:
                            continue  # the sale would add more drift than it removes
                    cands.append(m)
            if not cands:
                break
            m = max(
                cands,
                key=lambda m: (
                    post_value(member_group[m.symbol]) - member_group[m.symbol].target,
                    m is not member_group[m.symbol].buy,
                ),
            )
            g = member_group[m.symbol]
            k = _ceil_units((hard - end) / m.price, m.unit)
            remaining = m.qty + m.trade
            new = m.trade - min(k, remaining)
            if -new < m.qty - 1e-12 and not meets_min(m, -new, False):
                need = max(_ceil_units(min_sh, m.unit), _ceil_units(min_val / m.price, m.unit))
                new = -min(max(-new, need), m.qty)
            if -new > m.qty - m.unit * 1e-6:
                new = -m.qty
            end -= (new - m.trade) * m.price
            m.trade = new
            if g.why is None:
                g.why = Reason.CASH_NEED
        if end < reserve - _EPS_DOLLARS:
            notices.append(
                Notice(
                    "cash_shortfall",
                    f"could not raise enough cash: ${hard - end:,.2f} short of the reserve or "
                    "withdrawal "
                    "(remaining holdings are restricted)",
                    sid,
                )
            )

    # leftover cash: buy whole increments that bring a group closer to its target, most
    # underweight first (two passes over the candidates sorted by shortfall)
    if triggered and mode != SELL_ONLY and end - plan.cash_target > _EPS_DOLLARS:
        tc = plan.cash_target
        topup: list[tuple[float, int, Group, Member, float]] = []
        for i, g in enumerate(groups):
            bm = g.buy
            if bm is None or g.cap < INF or bm.trade < 0:
                continue
            pv = post_value(g)
            if g.target - pv <= _EPS_DOLLARS:
                continue
            topup.append((pv - g.target, i, g, bm, pv))
        topup.sort(key=lambda c: (c[0], c[1]))
        post = {i: pv for _, i, _, _, pv in topup}
        for _pass in range(2):
            for _, i, g, m, _pv in topup:
                left = end - tc
                if left <= _EPS_DOLLARS:
                    break
                unit_cost = m.price * m.unit
                if unit_cost > left + 1e-9:
                    continue
                pv = post[i]
                short = g.target - pv
                if short <= _EPS_DOLLARS:
                    continue
                k = max(_floor_units(short / m.price, m.unit), m.unit)
                need = 0.0
                if m.trade == 0.0:
                    need = max(
                        _ceil_units(min_sh, m.unit),
                        _ceil_units(max(min_val, 0.01) / m.price, m.unit),
                        _ceil_units(min_open / m.price, m.unit) if m.qty <= 0 else 0.0,
                    )
                    k = max(k, need)
                k = min(k, _floor_units(left / m.price, m.unit))
                if k <= 0 or k < need - 1e-12:
                    continue
                over = pv + k * m.price - g.target
                # stay closer to target than before and less than one share (of the cheapest
                # member a later rebalance could sell) above it
                step = min(
                    (
                        x.price * x.unit
                        for x in g.members
                        if x.dns is None and (x.qty > 0 or x is m)
                    ),
                    default=unit_cost,
                )
                if abs(over) >= short - 1e-9 or over >= step - 1e-6:
                    continue
                m.trade += k
                end -= k * m.price
                post[i] = pv + k * m.price
                if g.why is None:
                    g.why = Reason.INVEST_CASH

    for m in skipped:
        if m.trade == 0.0:
            notices.append(
                Notice(
                    "below_minimum",
                    f"a trade in {m.symbol} was smaller than the sleeve's minimum trade size and "
                    "was not proposed",
                    sid,
                    m.symbol,
                )
            )
    trades = _build_trades(plan, end)
    post_qty: dict[str, float] = {}
    for g in groups:
        for m in g.members:
            q = m.qty + m.trade
            if q > 1e-12:
                post_qty[m.symbol] = q
    return SleeveOutcome(plan, trades, end, post_qty, notices)


# --------------------------------------------------------------------------------------------
# Explanations


def money(x: float) -> str:
    return f"${x:,.2f}"


def _qty_text(q: float, decimals: int) -> str:
    if abs(q - round(q)) < 1e-9:
        n = round(q)
        return f"{n:,} share" + ("" if n == 1 else "s")
    return f"{q:,.{decimals}f}".rstrip("0").rstrip(".") + " shares"


def _build_trades(plan: SleevePlan, cash_after: float) -> list[Trade]:
    trades: list[Trade] = []
    sid = plan.sleeve.sleeve_id
    aid = plan.account_id
    model_id = plan.model.model_id
    dec = plan.settings.share_decimals
    total = plan.total if plan.total > 0 else 1.0
    before_total = plan.value if plan.value > 0 else 1.0
    for g in plan.groups:
        if not any(m.trade for m in g.members):
            continue
        w0 = g.value / before_total
        w1 = sum((m.qty + m.trade) * m.price for m in g.members) / total
        t = g.target / total
        for m in g.members:
            if not m.trade:
                continue
            side = Side.BUY if m.trade > 0 else Side.SELL
            q = abs(m.trade)
            closes = side is Side.SELL and q >= m.qty - 1e-12
            if q == round(q):
                qd = Decimal(round(q))
            elif closes:
                qd = Decimal(repr(q))
            else:
                qd = Decimal(f"{q:.{dec}f}")
            val = q * m.price
            opens = side is Side.BUY and m.qty <= 0
            est = Decimal(repr(float(val))).quantize(CENT)
            val_text = f"${est:,}"
            qt = _qty_text(q, max(dec, 6) if m.unit == 1.0 and q != round(q) else dec)
            verb = "Buy" if side is Side.BUY else "Sell"
            head = f"{verb} {qt} of {m.symbol} (about {val_text})"
            equiv = (
                f"; {m.symbol} counts toward the target of {g.key} (equivalent securities)"
                if m.symbol != g.key
                else ""
            )
            if m.forced is Reason.RESTRICTION and side is Side.SELL:
                reason = Reason.RESTRICTION
                text = (
                    f"Sell all {qt} of {m.symbol} (about {val_text}): it falls under "
                    f"{describe_restriction(m.dnh)}."
                )
            elif m.forced is Reason.NOT_IN_MODEL and side is Side.SELL:
                reason = Reason.NOT_IN_MODEL
                text = (
                    f"Sell all {qt} of {m.symbol} (about {val_text}): it is not in model "
                    f"{model_id} and not equivalent to any security in it."
                )
            elif side is Side.BUY and g.replaces and m.symbol not in g.replaces:
                reason = Reason.REPLACEMENT
                text = (
                    f"{head} as the buy-list replacement for {', '.join(g.replaces)}, which "
                    f"model {model_id} holds but no longer buys; weight {w0:.2%} -> {w1:.2%} "
                    f"(target {t:.2%}){equiv}."
                )
            elif g.why is Reason.CASH_NEED and side is Side.SELL:
                reason = Reason.CASH_NEED
                purpose = plan.purpose_out or "the sleeve's cash target and reserve"
                text = (
                    f"{head} to raise cash for {purpose}, taken from the most overweight "
                    f"positions first; weight {w0:.2%} -> {w1:.2%} (target {t:.2%}){equiv}."
                )
            elif g.why is Reason.INVEST_CASH and side is Side.BUY:
                reason = Reason.INVEST_CASH
                purpose = plan.purpose_in or "cash above the sleeve's cash target"
                text = (
                    f"{head} to invest {purpose} in the most underweight positions first; "
                    f"weight {w0:.2%} -> {w1:.2%} (target {t:.2%}){equiv}."
                )
            elif side is Side.SELL and plan.outflow > 0:
                reason = Reason.CASH_NEED
                text = (
                    f"{head} to raise {plan.purpose_out or 'cash to pay out'}; weight "
                    f"{w0:.2%} -> {w1:.2%} (target {t:.2%}){equiv}."
                )
            elif side is Side.BUY and plan.inflow > 0:
                reason = Reason.INVEST_CASH
                text = (
                    f"{head} to invest {plan.purpose_in or 'cash received'}; weight "
                    f"{w0:.2%} -> {w1:.2%} (target {t:.2%}){equiv}."
                )
            else:
                reason = Reason.DRIFT
                lo, hi = g.lo / total, g.hi / total
                freed = ", including weight freed by restrictions" if g.freed_in > 1e-9 else ""
                text = (
                    f"{head} to bring it from {w0:.2%} to {w1:.2%} of sleeve {sid}, "
                    f"target {t:.2%}{freed} (allowed range {lo:.2%}–{hi:.2%}){equiv}."
                )
            trades.append(
                Trade(
                    account_id=aid,
                    sleeve_id=sid,
                    symbol=m.symbol,
                    side=side,
                    quantity=qd,
                    price=m.price,
                    estimated_value=est,
                    reason=reason,
                    explanation=text,
                    opens_position=opens,
                    closes_position=closes,
                )
            )
    return trades


# --------------------------------------------------------------------------------------------
# One sleeve, end to end


def _capped_sold_below_target(out: SleeveOutcome) -> bool:
    """A position that cannot be bought back (hold / do-not-buy) was sold below its target
    (whole-share rounding of a cash need): its freed weight changes the targets, so the
    sleeve is settled once more on the projected holdings."""
    for g in out.plan.groups:
        if g.buy is None and any(m.trade < 0 and m.forced is None for m in g.members):
            post = sum((m.qty + m.trade) * m.price for m in g.members)
            if post < g.target - 1e-7:
                return True
    return False


def _merge(first: SleeveOutcome, second: SleeveOutcome) -> SleeveOutcome:
    plan = first.plan
    final = second.post_qty
    why2 = {m.symbol: g.why for g in second.plan.groups for m in g.members}
    for g in plan.groups:
        for m in g.members:
            m.trade = final.get(m.symbol, 0.0) - m.qty
            if abs(m.trade) < 1e-12:
                m.trade = 0.0
            if m.trade and g.why is None:
                g.why = why2.get(m.symbol)
    seen = {(n.code, n.symbol) for n in first.notices}
    notices = first.notices + [n for n in second.notices if (n.code, n.symbol) not in seen]
    trades = _build_trades(plan, second.cash_after)
    return SleeveOutcome(plan, trades, second.cash_after, dict(final), notices)


def rebalance_sleeve(
    account: Account,
    sleeve: Sleeve,
    ref: Reference,
    *,
    mode: str = FULL,
    inflow: float = 0.0,
    outflow: float = 0.0,
    purpose_in: str = "",
    purpose_out: str = "",
) -> SleeveOutcome:
    """Plan and trade one sleeve (inputs must be validated); see the module docstring."""
    plan = plan_sleeve(
        account,
        sleeve,
        ref,
        inflow=inflow,
        outflow=outflow,
        purpose_in=purpose_in,
        purpose_out=purpose_out,
    )
    out = trade_sleeve(plan, mode)
    for _ in range(3):
        if mode == BUY_ONLY or not _capped_sold_below_target(out):
            break
        projected = replace(
            sleeve,
            holdings=tuple(Holding(s, q) for s, q in out.post_qty.items()),
            cash=out.cash_after,
        )
        again = trade_sleeve(plan_sleeve(account, projected, ref), mode)
        if not again.trades:
            break
        out = _merge(out, again)
    return out
