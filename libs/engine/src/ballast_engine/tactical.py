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
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from decimal import Decimal
from typing import Any

from ballast_engine.model import (
    DRIFT_EPS,
    TRADE_FIELDS,
    Account,
    Band,
    BandKind,
    FreedCashPolicy,
    Holding,
    Model,
    ModelEntry,
    Notice,
    Reason,
    Reference,
    Restriction,
    RestrictionKind,
    RestrictionScope,
    Security,
    Settings,
    Side,
    Sleeve,
    Trade,
)
from ballast_engine.validate import ref_index

INF = math.inf
_ABSOLUTE = BandKind.ABSOLUTE
CENT = Decimal("0.01")
_EPS_DOLLARS = 1e-7  # dollar amounts closer than this are equal

FULL = "full"
BUY_ONLY = "buy_only"
SELL_ONLY = "sell_only"


@dataclass(slots=True)
class Member:
    """One security of a group: its holding, restrictions and the trade decided."""

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
    keep_qty: float = 0.0  # shares that may not be sold (tax-aware sell cap), 0 = none

    @property
    def value(self) -> float:
        return self.qty * self.price


@dataclass(slots=True)
class Group:
    """A model security with its equivalents (or a holding outside the model): one target."""

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
    replaces: tuple[str, ...] = ()  # hold securities this buy-list replacement stands for
    freed_in: float = 0.0
    lo: float = 0.0
    hi: float = INF
    post: float = 0.0
    why: Reason | None = None


@dataclass(slots=True)
class SleevePlan:
    """A planned sleeve: its groups with targets and ranges, its cash and its limits."""

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
    """A traded sleeve: its trades, cash and holdings after them, and notices."""

    plan: SleevePlan
    trades: list[Trade]
    cash_after: float
    post_qty: dict[str, float]
    notices: list[Notice]
    group_post: list[float] | None = None  # each group's value after the trades, if known


def post_values(groups: list[Group]) -> list[float]:
    """Each group's value after its members' trades (``sum`` over the members)."""
    out = []
    for g in groups:
        ms = g.members
        if len(ms) == 1:
            m = ms[0]
            out.append(0.0 + (m.qty + m.trade) * m.price)  # = sum() of one term
        else:
            out.append(sum((m.qty + m.trade) * m.price for m in ms))
    return out


# --------------------------------------------------------------------------------------------
# Planning


def _matches(r: Restriction, symbol: str, ref: Reference) -> bool:
    """Whether the restriction covers ``symbol`` (by security, sector, asset class or list)."""
    if r.scope is RestrictionScope.SECURITY:
        return r.value == symbol
    sec = ref.securities.get(symbol)
    if r.scope is RestrictionScope.SECTOR:
        return sec is not None and sec.sector == r.value
    if r.scope is RestrictionScope.ASSET_CLASS:
        return sec is not None and sec.asset_class == r.value
    lst = ref.lists.get(r.value)
    return lst is not None and symbol in lst


def apply_restrictions(m: Member, restrictions: tuple[Restriction, ...], ref: Reference) -> None:
    """Mark the first restriction of each kind in ``restrictions`` that matches the member."""
    for r in restrictions:
        if _matches(r, m.symbol, ref):
            if r.kind is RestrictionKind.DO_NOT_BUY:
                m.dnb = m.dnb or r
            elif r.kind is RestrictionKind.DO_NOT_SELL:
                m.dns = m.dns or r
            else:
                m.dnh = m.dnh or r


_apply_restrictions = apply_restrictions  # its old name, still used by rebalance-svc's tests


# restrictions on one security by symbol, and the wider ones, each with its place in the list
_RestrictionIndex = tuple[dict[str, list[tuple[int, Restriction]]], list[tuple[int, Restriction]]]


def _restriction_index(restrictions: tuple[Restriction, ...]) -> _RestrictionIndex:
    """The restrictions on one security by its symbol, and the wider ones (sector, asset
    class, list), each with its place in ``restrictions``: a member is matched against its
    own and the wider ones only (an account may carry dozens of wash-sale do-not-buys)."""
    by_symbol: dict[str, list[tuple[int, Restriction]]] = {}
    wider: list[tuple[int, Restriction]] = []
    for i, r in enumerate(restrictions):
        if r.scope is RestrictionScope.SECURITY:
            by_symbol.setdefault(r.value, []).append((i, r))
        else:
            wider.append((i, r))
    return by_symbol, wider


def _apply_indexed_restrictions(m: Member, index: _RestrictionIndex, ref: Reference) -> None:
    """``apply_restrictions`` with the restrictions indexed (``_restriction_index``): the
    first match of each kind, in the restrictions' order, binds."""
    own = index[0].get(m.symbol, [])
    wider = [(i, r) for i, r in index[1] if _matches(r, m.symbol, ref)]
    for _i, r in sorted(own + wider, key=_place) if own and wider else own or wider:
        if r.kind is RestrictionKind.DO_NOT_BUY:
            m.dnb = m.dnb or r
        elif r.kind is RestrictionKind.DO_NOT_SELL:
            m.dns = m.dns or r
        else:
            m.dnh = m.dnh or r


def _place(item: tuple[int, Restriction]) -> int:
    """The restriction's place in its list (a sort key)."""
    return item[0]


def _dns_step(g: Group) -> float:
    """One share of the group's do-not-sell holding: a floor less than this above the target
    is rounding."""
    return max((m.price * m.unit for m in g.members if m.dns is not None), default=0.0)


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
    """The restriction in words, for notices and trade explanations."""
    what = {
        RestrictionScope.SECURITY: "",
        RestrictionScope.SECTOR: f" (sector {r.value})",
        RestrictionScope.ASSET_CLASS: f" (asset class {r.value})",
        RestrictionScope.LIST: f" (list {r.value})",
    }[r.scope]
    kind = r.kind.value.replace("_", "-")
    return f"the {r.source}'s {kind} restriction{what}"


@dataclass(slots=True)
class _ModelTemplate:
    """What planning needs from a model, computed once per reference (prices are
    reference data): weights, the model's cash weight and one row per entry."""

    model: Model
    weights: dict[str, float]
    model_cash: float
    wsum: float
    rows: list[tuple[ModelEntry, str, float, Security, float, int | None]]
    replacing: tuple[ModelEntry, ...]  # the entries with a buy-list replacement
    symbols: frozenset[str]  # the model's securities


def _template(model: Model, ref: Reference) -> _ModelTemplate:
    """The model's planning template, kept per reference (made again when prices change)."""
    idx = ref_index(ref)
    tpl: _ModelTemplate | None = idx.templates.get(model.model_id)
    secs = ref.securities
    # the same model object and the same security objects (a Security is immutable: a new
    # price is a new object); else the model's rows are made again
    if tpl is not None and tpl.model is model and all(secs.get(r[1]) is r[3] for r in tpl.rows):
        return tpl
    weights, model_cash = model_weights(model, ref)
    rows = [
        (
            e,
            e.symbol,
            weights[e.symbol],
            secs[e.symbol],
            float(secs[e.symbol].price),
            idx.eq_of.get(e.symbol),
        )
        for e in model.entries
    ]
    tpl = _ModelTemplate(
        model,
        weights,
        model_cash,
        sum(weights.values()),
        rows,
        tuple(e for e in model.entries if e.replacement is not None),
        frozenset(e.symbol for e in model.entries),
    )
    idx.templates[model.model_id] = tpl
    return tpl


@dataclass(slots=True)
class _Planning:
    """One sleeve's planning in progress: the groups made so far and how members are made."""

    ref: Reference
    settings: Settings
    held: dict[str, float]  # symbol -> shares held
    restrictions: tuple[Restriction, ...]
    restriction_index: _RestrictionIndex
    eq_of: dict[str, int]  # symbol -> its equivalence set (``RefIndex``)
    dec_unit: float  # a fractional share increment
    notices: list[Notice]
    groups: list[Group] = field(default_factory=list)
    pending: list[Group] = field(default_factory=list)  # groups _settle_groups still settles
    by_eq: dict[int, Group] = field(default_factory=dict)
    by_sym: dict[str, Group] = field(default_factory=dict)

    def member(self, sym: str, qty: float, in_model: bool) -> Member:
        """A member for ``sym`` with its share increment and the restrictions on it."""
        sec = self.ref.securities[sym]
        unit = self.dec_unit if (self.settings.fractional and sec.fractional) else 1.0
        m = Member(sym, float(sec.price), qty, unit, in_model)
        if self.restrictions:
            _apply_indexed_restrictions(m, self.restriction_index, self.ref)
        return m

    def new_group(self, sym: str, in_model: bool, band: Band) -> Group:
        """An empty group named after ``sym``, left for ``_settle_groups``."""
        sec = self.ref.securities[sym]
        g = Group(sym, [], in_model, sec.sector, sec.asset_class, band)
        self.groups.append(g)
        self.pending.append(g)
        return g

    def equivalence_group(self, sym: str, eqi: int | None, band: Band) -> Group:
        """The model group of ``sym``'s equivalence set ``eqi`` (made when there is none)."""
        g = self.by_eq.get(eqi) if eqi is not None else None
        if g is None:
            g = self.new_group(sym, True, band)
            if eqi is not None:
                self.by_eq[eqi] = g
        return g


def _held_shares(sleeve: Sleeve, ref: Reference) -> tuple[dict[str, float], float]:
    """Shares held by symbol, and their value (as ``sum()``: an int 0 first)."""
    secs = ref.securities
    held: dict[str, float] = {}
    sec_value: float = 0
    for h in sleeve.holdings:  # (validated: one holding per symbol)
        held[h.symbol] = q = h.quantity
        sec_value += q * float(secs[h.symbol].price)
    return held, sec_value


def _add_model_groups(
    p: _Planning, tpl: _ModelTemplate, scale: float, keep_shares: Mapping[str, float] | None
) -> None:
    """A group per model security (or equivalence set) with its dollar target."""
    held, groups, by_sym = p.held, p.groups, p.by_sym
    restrictions, security_band = p.restrictions, p.settings.security_band
    frac_ok, dec_unit = p.settings.fractional, p.dec_unit
    for e, sym, w, sec, price, eqi in tpl.rows:
        if (
            eqi is None
            and not restrictions
            and not e.hold
            and not (keep_shares and sym in keep_shares)
        ):
            # the common case (one unrestricted model security, no equivalents), settled here
            # exactly as _settle_groups would settle it
            qty = held.get(sym, 0.0)
            m = Member(sym, price, qty, dec_unit if frac_ok and sec.fractional else 1.0, True)
            ng = Group(sym, [m], True, sec.sector, sec.asset_class, e.band or security_band)
            ng.target = ng.model_target = 0.0 + w * scale
            v = 0.0 + qty * price
            ng.value = v
            ng.keep = v if qty > 0 else 0.0
            ng.buy = m
            groups.append(ng)
            by_sym[sym] = ng
            continue
        g = p.equivalence_group(sym, eqi, e.band or security_band)
        g.members.append(p.member(sym, held.get(sym, 0.0), True))
        by_sym[sym] = g
        g.target += w * scale
        if e.hold:
            g.hold_symbol = sym
            g.replacement = e.replacement


def _add_replacement_groups(p: _Planning, tpl: _ModelTemplate) -> None:
    """Buy-list replacements join their equivalence group, else get a group of their own."""
    for e in tpl.replacing:
        r = e.replacement
        if r is not None and r not in p.by_sym:
            g = p.equivalence_group(r, p.eq_of.get(r), e.band or p.settings.security_band)
            g.members.append(p.member(r, p.held.get(r, 0.0), True))
            p.by_sym[r] = g


def _add_outside_groups(p: _Planning, tpl: _ModelTemplate) -> None:
    """Held securities outside the model join their equivalence group, else their own."""
    held, by_sym, by_eq = p.held, p.by_sym, p.by_eq
    if held.keys() <= tpl.symbols:
        return  # every holding is a model security: all are in by_sym already
    eq_of = p.eq_of
    for sym, qty in held.items():
        if sym in by_sym:
            continue
        eqi = eq_of.get(sym)
        g = by_eq.get(eqi) if eqi is not None else None
        if g is None:
            g = p.new_group(sym, False, p.settings.security_band)
        g.members.append(p.member(sym, qty, False))
        by_sym[sym] = g


def _add_substitutes(p: _Planning) -> None:
    """Equivalents neither held nor in the model: substitutes for a restricted member."""
    if not p.by_eq:
        return
    secs, eq_members, by_sym = p.ref.securities, ref_index(p.ref).eq_members, p.by_sym
    for eqi, g in p.by_eq.items():
        if not g.in_model:
            continue
        for sym in eq_members[eqi]:
            if sym not in by_sym:
                price = secs[sym].price
                if price is not None and math.isfinite(price) and price > 0:
                    g.members.append(p.member(sym, 0.0, False))
                    by_sym[sym] = g


def _kept_notice(m: Member, model_id: str, sleeve_id: str) -> Notice:
    """Why a holding to be sold is kept: a do-not-sell restriction (marks a conflict)."""
    assert m.dns is not None
    if m.dnh is not None:
        m.conflict = True
        return Notice(
            "restriction_conflict",
            f"{m.symbol} is under {describe_restriction(m.dnh)} and "
            f"{describe_restriction(m.dns)}; it is kept as is and needs a decision",
            sleeve_id,
            m.symbol,
        )
    return Notice(
        "kept_do_not_sell",
        f"{m.symbol} is not in model {model_id} but {describe_restriction(m.dns)} keeps it",
        sleeve_id,
        m.symbol,
    )


def _settle_group(
    g: Group,
    keep_shares: Mapping[str, float] | None,
    notices: list[Notice],
    model_id: str,
    sid: str,
) -> None:
    """A group's value, forced sales, floor, cap and the member it buys."""
    gval = keep = floor = 0.0
    for m in g.members:
        v = m.qty * m.price
        gval += v
        if keep_shares and m.qty > 0 and m.dns is None and m.symbol in keep_shares:
            m.keep_qty = min(max(keep_shares[m.symbol], 0.0), m.qty)
            if m.keep_qty > 0:  # tax sell cap: these shares stay (a partial do-not-sell)
                kv = m.keep_qty * m.price
                floor += kv
                if m.dnh is not None or not g.in_model:
                    keep += kv
        if m.qty > 0:
            if m.dnh is not None or not g.in_model:
                if m.dns is not None:
                    notices.append(_kept_notice(m, model_id, sid))
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


def _settle_groups(
    p: _Planning, keep_shares: Mapping[str, float] | None, model_id: str, sid: str
) -> None:
    """Settle every group the fast path of ``_add_model_groups`` left (``_settle_group``)."""
    for g in p.pending:
        _settle_group(g, keep_shares, p.notices, model_id, sid)


def _shift_unreachable(
    adjustable: list[Group], by_sym: dict[str, Group]
) -> list[tuple[float, str | None]]:
    """The part of a target a group cannot reach goes to its replacement, else is freed
    (returned as amount and sector)."""
    freed: list[tuple[float, str | None]] = []
    for g in adjustable:
        if g.in_model and g.cap < g.target:
            short = g.target - g.cap
            g.target = g.cap
            if g.hold_symbol is not None and g.replacement is not None:
                rg = by_sym[g.replacement]
                rg.target += short
                rg.replaces = (*rg.replaces, g.hold_symbol)
            else:
                freed.append((short, g.sector))
    for g in adjustable:  # a replacement that cannot be bought frees its share too
        if g.replaces and g.cap < g.target:
            freed.append((g.target - g.cap, g.sector))
            g.target = g.cap
    return freed


def _place_freed(
    groups: list[Group],
    freed: list[tuple[float, str | None]],
    policy: FreedCashPolicy,
    cash_target: float,
) -> float:
    """Spread freed weight over the groups the policy names; returns the cash target (which
    takes what no group can)."""
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
    return cash_target


def _raise_to_floors(groups: list[Group], floored: set[int]) -> float:
    """Lift targets more than one share below a do-not-sell floor to it (less than a share
    is rounding: ignoring it keeps a rebalanced sleeve stable); returns the dollars added."""
    added = 0.0
    for g in groups:
        if g.floor > g.target and g.floor > g.target + _dns_step(g):
            added += g.floor - g.target
            g.target = g.floor
            floored.add(id(g))
    return added


def _take_excess(groups: list[Group], excess: float, floored: set[int]) -> float:
    """Take ``excess`` from the targets of positions that can be bought back later, in
    proportion to their targets; returns the dollars taken."""
    # not from a hold or do-not-buy position (it would shrink for good and shift the targets
    # again); not from current holdings (the result is stable). A cut that leaves a position
    # more than a share below its own do-not-sell floor is undone down to the floor and taken
    # from the others: else the targets would add up to more than the sleeve, and a sleeve
    # short of its reserve would sell a do-not-buy position a little more on every rebalance
    take = 0.0
    for _ in range(len(groups) + 1):
        room = [g for g in groups if g.buy is not None and g.target > 1e-9 and id(g) not in floored]
        tot = sum(g.target for g in room)
        want = excess - take
        if tot <= 0 or want <= _EPS_DOLLARS:
            break
        for g in room:
            cut = min(want * g.target / tot, g.target)
            g.target -= cut
            take += cut
        for g in room:
            if g.floor > g.target and g.floor > g.target + _dns_step(g):
                take -= g.floor - g.target
                g.target = g.floor
                floored.add(id(g))
    return take


def _keep_do_not_sell(p: _Planning, cash_target: float, sid: str) -> float:
    """Do-not-sell holdings above their targets keep their value, taken from the others;
    returns the cash target (which gives up what the others cannot)."""
    floored: set[int] = set()
    excess = _raise_to_floors(p.groups, floored)
    if excess > 0:
        rest = excess - _take_excess(p.groups, excess, floored)
        if rest > _EPS_DOLLARS:
            cash_target = max(cash_target - rest, p.settings.cash_reserve)
            p.notices.append(
                Notice(
                    "do_not_sell_above_target",
                    f"do-not-sell holdings exceed their targets by ${rest:,.2f} more than the rest "
                    "of the model can give up; the sleeve's cash target is reduced",
                    sid,
                )
            )
    return cash_target


def _set_ranges(groups: list[Group], tot_pos: float) -> None:
    """Each group's dollar range around its target (``g.band.bounds``, inline)."""
    for g in groups:
        t = g.target / tot_pos
        band = g.band
        width = band.width
        if band.kind is _ABSOLUTE:
            lo, hi = t - width, t + width
        else:
            lo, hi = t * (1.0 - width), t * (1.0 + width)
        g.lo = (lo if lo >= 0.0 else 0.0) * tot_pos  # max(lo, 0.0)
        g.hi = hi * tot_pos


def _adjust_targets(p: _Planning, cash_target: float, sid: str) -> float:
    """Move the targets restrictions and floors make unreachable; returns the cash target."""
    # groups settled on creation can be bought, replace nothing and have no floor: when there
    # are only such groups there is nothing to do
    if not p.pending:
        return cash_target
    groups = p.groups
    freed = _shift_unreachable(groups, p.by_sym)
    if freed:
        cash_target = _place_freed(groups, freed, p.settings.freed_cash, cash_target)
    return _keep_do_not_sell(p, cash_target, sid)


def plan_sleeve(
    account: Account,
    sleeve: Sleeve,
    ref: Reference,
    *,
    inflow: float = 0.0,
    outflow: float = 0.0,
    purpose_in: str = "",
    purpose_out: str = "",
    keep_shares: Mapping[str, float] | None = None,
) -> SleevePlan:
    """Targets, groups and ranges of one sleeve (inputs must be validated).

    ``keep_shares`` (symbol -> shares) is the tax-aware sell cap: that many shares of a
    holding may not be sold (a gain budget, "avoid short-term gains", wash-sale avoidance);
    they count as a floor like a do-not-sell holding, so freed cash and buys shrink.
    """
    st = sleeve.settings
    model = ref.models[sleeve.model_id]
    tpl = _template(model, ref)
    held, sec_value = _held_shares(sleeve, ref)
    value = sec_value + sleeve.cash
    total = value + inflow - outflow
    cash_target = max(max(st.cash_target, tpl.model_cash) * total, st.cash_reserve)
    investable = max(total - cash_target, 0.0)
    scale = investable / tpl.wsum if tpl.wsum > 0 else 0.0

    restrictions = account.restrictions + sleeve.restrictions
    p = _Planning(
        ref,
        st,
        held,
        restrictions,
        _restriction_index(restrictions),
        ref_index(ref).eq_of,
        10.0**-st.share_decimals,
        [],
    )
    _add_model_groups(p, tpl, scale, keep_shares)
    _add_replacement_groups(p, tpl)
    _add_outside_groups(p, tpl)
    _add_substitutes(p)
    sid = sleeve.sleeve_id
    _settle_groups(p, keep_shares, model.model_id, sid)
    cash_target = _adjust_targets(p, cash_target, sid)

    tot_pos = total if total > 0 else 1.0
    _set_ranges(p.groups, tot_pos)
    clo, chi = st.cash_band.bounds(cash_target / tot_pos)
    return SleevePlan(
        account_id=account.account_id,
        sleeve=sleeve,
        model=model,
        settings=st,
        groups=p.groups,
        value=value,
        total=total,
        cash_before=sleeve.cash,
        inflow=inflow,
        outflow=outflow,
        cash0=sleeve.cash + inflow - outflow,
        cash_target=cash_target,
        cash_lo=min(max(clo, 0.0) * tot_pos, cash_target),
        cash_hi=max(chi * tot_pos, cash_target),
        hard_floor=st.cash_reserve,
        notices=p.notices,
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
    """``shares`` rounded down to the share increment."""
    if unit == 1.0:
        return float(math.floor(shares + 1e-9))
    return math.floor(shares / unit + 1e-9) * unit


def _ceil_units(shares: float, unit: float) -> float:
    """``shares`` rounded up to the share increment."""
    if unit == 1.0:
        return float(math.ceil(shares - 1e-9))
    return math.ceil(shares / unit - 1e-9) * unit


def out_of_range(g: Group) -> bool:
    """Whether the group's value after forced sales is outside its weight range."""
    tol = _EPS_DOLLARS + DRIFT_EPS * abs(g.target)
    return g.keep < g.lo - tol or g.keep > g.hi + tol


def _keep_cash_in_range(plan: SleevePlan, cash: float, buys: float, sells: float) -> None:
    """Full mode, after drift: buys that would take cash below target are refilled with what
    is available; cash still outside its range is raised or invested (water-filling)."""
    groups, tc, eps = plan.groups, plan.cash_target, _EPS_DOLLARS
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


def trade_sleeve(plan: SleevePlan, mode: str = FULL) -> SleeveOutcome:
    """Decide the trades of one planned sleeve (``mode``: full, buy_only or sell_only)."""
    groups = plan.groups
    notices = list(plan.notices)
    cash = plan.cash0
    forced_any = False
    if mode == BUY_ONLY:
        for g in groups:
            g.post = g.value
            g.keep = g.value
            for m in g.members:
                m.forced = None
            g.why = None
    else:
        # forced sales; in full mode, in the same pass, groups outside their range go back
        # to target and the buys and sells that takes are added up
        full = mode == FULL
        out_any = False
        buys = sells = 0.0
        for g in groups:
            keep = g.keep
            g.post = keep
            for m in g.members:
                if m.forced is not None and m.qty > 0:
                    forced_any = True
                    cash += (m.qty - m.keep_qty) * m.price
            g.why = None
            if not full:
                continue
            tol = _EPS_DOLLARS + DRIFT_EPS * abs(g.target)  # out_of_range(g), inline
            if keep < g.lo - tol or keep > g.hi + tol:
                out_any = True
                target = min(max(g.target, g.floor), g.cap)
                if abs(target - keep) > _EPS_DOLLARS:
                    g.post = target
                    g.why = Reason.DRIFT
            d = g.post - keep
            if d > 0:
                buys += d
            else:
                sells -= d

    tc = plan.cash_target
    eps = _EPS_DOLLARS
    if mode == FULL:
        triggered = (
            out_any
            or forced_any
            or cash < plan.cash_lo - eps
            or cash > plan.cash_hi + eps
            or cash < plan.hard_floor - eps
        )
        if not triggered:
            return _finish(plan, mode, notices, triggered=False)
        _keep_cash_in_range(plan, cash, buys, sells)
    elif mode == SELL_ONLY:
        if cash < tc - eps:
            _sell_fill(groups, tc - cash, Reason.CASH_NEED)
    else:  # BUY_ONLY
        if cash > tc + eps:
            _buy_fill(groups, cash - tc, Reason.INVEST_CASH)
    return _finish(plan, mode, notices, triggered=True)


def _meets_min(m: Member, sh: float, buying: bool, st: Settings) -> bool:
    """Whether a trade of ``sh`` shares (not closing the position) meets the minimums."""
    val = sh * m.price
    if sh <= 0 or sh < st.min_trade_shares - 1e-12 or val < max(st.min_trade_value, 0.01) - 1e-9:
        return False
    return not (buying and m.qty <= 0 and val < st.min_opening_trade_value - 1e-9)


def _post_value(g: Group) -> float:
    """The group's value after its members' trades (as ``sum()``)."""
    ms = g.members
    if len(ms) == 1:
        m = ms[0]
        return 0.0 + (m.qty + m.trade) * m.price  # = sum() of one term
    return sum((m.qty + m.trade) * m.price for m in ms)


def _round_sale(g: Group, left: float) -> None:
    """Sell ``left`` dollars of the group in shares, rounded down (sales that close a
    position sell all that may be sold)."""
    # sell equivalents outside the model first, then model members, and the member buys
    # would go to last (so rounding can be topped up with it)
    floor = math.floor
    ms = g.members
    if len(ms) > 1:
        ms = sorted(ms, key=lambda m: (m is g.buy, m.in_model))
    for m in ms:
        if left <= _EPS_DOLLARS:
            break
        if m.forced is not None or m.dns is not None or m.qty <= 0:
            continue
        sellable = m.qty - m.keep_qty
        mv = sellable * m.price
        take = min(left, mv)
        left -= take
        sh = take / m.price
        if sh >= sellable * (1 - 1e-9) - 1e-12:
            m.trade = -sellable
        else:
            unit = m.unit  # -min(_floor_units(sh, unit), sellable), inline
            fl = float(floor(sh + 1e-9)) if unit == 1.0 else floor(sh / unit + 1e-9) * unit
            m.trade = -(fl if fl <= sellable else sellable)


def _round_to_shares(plan: SleevePlan, triggered: bool, skipped: list[Member]) -> float:
    """Dollar changes become member share trades (rounded down), trades below the minimums
    are dropped into ``skipped`` (sales that close a position are exempt); returns the cash
    left, one pass per group."""
    st = plan.settings
    floor = math.floor
    min_sh_t = st.min_trade_shares - 1e-12  # as in _meets_min
    min_val_t = max(st.min_trade_value, 0.01) - 1e-9
    min_open_t = st.min_opening_trade_value - 1e-9
    end = plan.cash0
    for g in plan.groups:
        for m in g.members:
            m.trade = 0.0
            if m.forced is not None and triggered:
                m.trade = -(m.qty - m.keep_qty)
        if not triggered:
            continue
        d = g.post - g.keep
        if d < -_EPS_DOLLARS:
            _round_sale(g, -d)
        elif d > _EPS_DOLLARS and g.buy is not None:
            m = g.buy
            unit = m.unit  # _floor_units(d / m.price, unit), inline
            sh = d / m.price
            m.trade = float(floor(sh + 1e-9)) if unit == 1.0 else floor(sh / unit + 1e-9) * unit
        for m in g.members:
            tr = m.trade
            if tr == 0.0:
                continue
            if not (tr < 0 and -tr >= m.qty - 1e-12):  # not a close: _meets_min, inline
                sh = abs(tr)
                val = sh * m.price
                if (
                    sh <= 0
                    or sh < min_sh_t
                    or val < min_val_t
                    or (tr > 0 and m.qty <= 0 and val < min_open_t)
                ):
                    skipped.append(m)
                    m.trade = 0.0
                    continue
            end -= tr * m.price
    return end


def _trim_buys(groups: list[Group], end: float, hard: float, st: Settings) -> float:
    """Never overspend: trim buys, most over target first, until cash is back at ``hard``;
    returns the cash left."""
    for _ in range(10_000):
        if end >= hard - _EPS_DOLLARS:
            break
        # the buy whose group ends furthest above its target (the first of equals)
        best: Member | None = None
        best_over = 0.0
        for g in groups:
            for x in g.members:
                if x.trade > 0:
                    over = _post_value(g) - g.target
                    if best is None or over > best_over:
                        best, best_over = x, over
        if best is None:
            break
        m = best
        k = _ceil_units((hard - end) / m.price, m.unit)
        new = m.trade - k
        if new <= 0 or not _meets_min(m, new, True, st):
            new = 0.0
        end += (m.trade - new) * m.price
        m.trade = new
    return end


def _sale_would_hurt(g: Group, m: Member, over: float, need: float) -> bool:
    """Whether selling ``m`` toward ``need`` dollars takes a position that cannot be bought
    back below its target, or adds more drift than it removes."""
    # a = min(_ceil_units(need / price, unit), left) * price, inline
    price, unit = m.price, m.unit
    if unit == 1.0:
        cu = float(math.ceil(need / price - 1e-9))
    else:
        cu = math.ceil(need / price / unit - 1e-9) * unit
    left = m.qty - m.keep_qty + m.trade
    a = (cu if cu <= left else left) * price
    if g.buy is None and over - a < -1e-7:
        return True
    return abs(over - a) - abs(over) - (a if a <= need else need) > 1e-9


def _next_sale(groups: list[Group], need: float, strict: bool) -> tuple[Member, Group] | None:
    """The member to sell next: its group most over its target, members it would not buy
    first (the first of equals); ``strict``: any sellable member (the reserve is short)."""
    best: tuple[Member, Group] | None = None
    best_key = (0.0, False)
    for g in groups:
        for m in g.members:
            if m.dns is not None or m.qty - m.keep_qty + m.trade <= 1e-12 or m.trade > 0:
                continue
            over = (
                0.0 + (m.qty + m.trade) * m.price  # _post_value(g) of one member
                if len(g.members) == 1
                else _post_value(g)
            ) - g.target
            if not strict and _sale_would_hurt(g, m, over, need):
                continue
            key = (over, m is not g.buy)
            if best is None or key > best_key:
                best, best_key = (m, g), key
    return best


def _sell_for_cash(plan: SleevePlan, end: float, hard: float) -> float:
    """Still short of ``hard``: sell more, most overweight first; returns the cash left."""
    # the reserve, a withdrawal or an outflow may take any sellable position; the rest of the
    # cash range only positions that can be bought back or stay at or above their target
    # (else their freed weight moves targets)
    st = plan.settings
    reserve = plan.hard_floor
    for _ in range(10_000):
        if end >= hard - _EPS_DOLLARS:
            break
        found = _next_sale(plan.groups, hard - end, end < reserve - _EPS_DOLLARS)
        if found is None:
            break
        m, g = found
        k = _ceil_units((hard - end) / m.price, m.unit)
        sellable = m.qty - m.keep_qty
        remaining = sellable + m.trade
        new = m.trade - min(k, remaining)
        if -new < m.qty - 1e-12 and not _meets_min(m, -new, False, st):
            need = max(
                _ceil_units(st.min_trade_shares, m.unit),
                _ceil_units(st.min_trade_value / m.price, m.unit),
            )
            new = -min(max(-new, need), sellable)
        if -new > sellable - m.unit * 1e-6:
            new = -sellable
        end -= (new - m.trade) * m.price
        m.trade = new
        if g.why is None:
            g.why = Reason.CASH_NEED
    return end


def _top_up_candidates(groups: list[Group]) -> list[tuple[float, int, Group, Member, float]]:
    """Groups below target that may buy: (shortfall, index, group, member, value after the
    trades so far), most underweight first."""
    topup: list[tuple[float, int, Group, Member, float]] = []
    for i, g in enumerate(groups):
        bm = g.buy
        if bm is None or g.cap < INF or bm.trade < 0:
            continue
        # _post_value(g), inline for one member
        pv = 0.0 + (bm.qty + bm.trade) * bm.price if len(g.members) == 1 else _post_value(g)
        if g.target - pv <= _EPS_DOLLARS:
            continue
        topup.append((pv - g.target, i, g, bm, pv))
    topup.sort()  # by shortfall, then index (unique: the rest is never compared)
    return topup


def _top_up_shares(g: Group, m: Member, pv: float, left: float, st: Settings) -> float:
    """Shares of ``m`` that bring its group (worth ``pv``) closer to target with ``left``
    dollars, meet the minimums and end less than one share above target; 0 if none."""
    short = g.target - pv
    if short <= _EPS_DOLLARS:
        return 0.0
    price, unit = m.price, m.unit
    # k = max(_floor_units(short / price, unit), unit), inline
    if unit == 1.0:
        k = float(math.floor(short / price + 1e-9))
    else:
        k = math.floor(short / price / unit + 1e-9) * unit
    if k < unit:
        k = unit
    need = 0.0
    if m.trade == 0.0:
        need = max(
            _ceil_units(st.min_trade_shares, m.unit),
            _ceil_units(max(st.min_trade_value, 0.01) / m.price, m.unit),
            _ceil_units(st.min_opening_trade_value / m.price, m.unit) if m.qty <= 0 else 0.0,
        )
        k = max(k, need)
    # k = min(k, _floor_units(left / price, unit)), inline
    if unit == 1.0:
        fl = float(math.floor(left / price + 1e-9))
    else:
        fl = math.floor(left / price / unit + 1e-9) * unit
    if fl < k:
        k = fl
    if k <= 0 or k < need - 1e-12:
        return 0.0
    over = pv + k * m.price - g.target
    # closer to target than before and less than one share (of the cheapest member a later
    # rebalance could sell) above it
    unit_cost = m.price * m.unit
    step = (
        unit_cost  # one member (m): its own increment either way
        if len(g.members) == 1
        else min(
            (
                x.price * x.unit
                for x in g.members
                if x.dns is None and (x.qty + x.trade > 1e-12 or x is m)
            ),
            default=unit_cost,
        )
    )
    if abs(over) >= short - 1e-9 or over >= step - 1e-6:
        return 0.0
    return k


def _invest_leftover(plan: SleevePlan, end: float) -> float:
    """Leftover cash buys whole increments that bring a group closer to its target, most
    underweight first (two passes); returns the cash left."""
    tc = plan.cash_target
    st = plan.settings
    topup = _top_up_candidates(plan.groups)
    post = {i: pv for _, i, _, _, pv in topup}
    for _pass in range(2):
        for _, i, g, m, _pv in topup:
            left = end - tc
            if left <= _EPS_DOLLARS:
                break
            if m.price * m.unit > left + 1e-9:
                continue
            pv = post[i]
            k = _top_up_shares(g, m, pv, left, st)
            if k == 0.0:
                continue
            m.trade += k
            end -= k * m.price
            post[i] = pv + k * m.price
            if g.why is None:
                g.why = Reason.INVEST_CASH
    return end


def _positions_after(groups: list[Group]) -> tuple[dict[str, float], list[float]]:
    """Shares held after the trades by symbol, and each group's value after them (as
    ``post_values(groups)``, in the same pass)."""
    post_qty: dict[str, float] = {}
    group_post: list[float] = []
    for g in groups:
        ms = g.members
        if len(ms) == 1:
            m = ms[0]
            q = m.qty + m.trade
            if q > 1e-12:
                post_qty[m.symbol] = q
            group_post.append(0.0 + q * m.price)
            continue
        for m in ms:
            q = m.qty + m.trade
            if q > 1e-12:
                post_qty[m.symbol] = q
        group_post.append(sum((m.qty + m.trade) * m.price for m in ms))
    return post_qty, group_post


def _finish(
    plan: SleevePlan, mode: str, notices: list[Notice], *, triggered: bool
) -> SleeveOutcome:
    """Round the planned dollar changes to trades that keep cash in range (steps 4 and 5)."""
    sid = plan.sleeve.sleeve_id
    skipped: list[Member] = []
    end = _round_to_shares(plan, triggered, skipped)
    # cash must end at or above the reserve and the lower edge of its range
    hard = max(plan.hard_floor, plan.cash_lo) if triggered else plan.hard_floor
    if end < hard - _EPS_DOLLARS:
        end = _trim_buys(plan.groups, end, hard, plan.settings)
    if end < hard - _EPS_DOLLARS and mode != BUY_ONLY and triggered:
        end = _sell_for_cash(plan, end, hard)
        if end < plan.hard_floor - _EPS_DOLLARS:
            notices.append(
                Notice(
                    "cash_shortfall",
                    f"could not raise enough cash: ${hard - end:,.2f} short of the reserve or "
                    "withdrawal (remaining holdings are restricted)",
                    sid,
                )
            )
    if triggered and mode != SELL_ONLY and end - plan.cash_target > _EPS_DOLLARS:
        end = _invest_leftover(plan, end)
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
    post_qty, group_post = _positions_after(plan.groups)
    return SleeveOutcome(plan, trades, end, post_qty, notices, group_post)


# --------------------------------------------------------------------------------------------
# Explanations


def money(x: float) -> str:
    """Dollars as text: ``$1,234.50``."""
    return f"${x:,.2f}"


def _qty_text(q: float, decimals: int) -> str:
    """A share quantity as text ('1 share', '2.5 shares')."""
    if abs(q - round(q)) < 1e-9:
        n = round(q)
        return f"{n:,} share" + ("" if n == 1 else "s")
    return f"{q:,.{decimals}f}".rstrip("0").rstrip(".") + " shares"


# the Trade fields _build_trades passes (by position, see TRADE_FIELDS); the rest keep defaults
_TRADE_HEAD = TRADE_FIELDS[: TRADE_FIELDS.index("closes_position") + 1]


def _trade_factory() -> Callable[..., Trade]:
    """``new_trade(head..., opens, closes, make)``: a ``Trade`` whose explanation is deferred
    (``make`` = (function, arguments) writes it on first read), every other slot set straight
    through its descriptor (fields after the head get their defaults). It equals the trade
    ``Trade(...)`` builds with the sentence (a test checks) and is about twice as fast."""
    names = [f.name for f in fields(Trade)]
    rest = fields(Trade)[len(_TRADE_HEAD) :]
    plain = all(f.default is not MISSING and (f.init or f.name == "_explain") for f in rest)
    if (
        not plain
        or tuple(names[: len(_TRADE_HEAD)]) != _TRADE_HEAD
        or "_explain" not in names
        or "__slots__" not in vars(Trade)
    ):

        def eager(*a: Any) -> Trade:  # not the expected class any more: build it whole
            *head, opens, closes, make = a
            return Trade(*head, make[0](*make[1]), opens, closes)

        return eager
    env: dict[str, Any] = {"_new": object.__new__, "_cls": Trade}
    given = [n for n in _TRADE_HEAD if n != "explanation"] + ["_explain"]
    body = ["    o = _new(_cls)"]
    for name in given:
        env[f"set{name}"] = vars(Trade)[name].__set__
        body.append(f"    set{name}(o, {name})")
    for f in rest:
        if f.name != "_explain":
            env[f"set{f.name}"], env[f"default{f.name}"] = vars(Trade)[f.name].__set__, f.default
            body.append(f"    set{f.name}(o, default{f.name})")
    src = f"def new_trade({', '.join(given)}):\n" + "\n".join(body) + "\n    return o\n"
    exec(src, env)  # straight-line code: a loop over the fields costs as much as the checks
    return env["new_trade"]  # type: ignore[no-any-return,unused-ignore]


_new_trade = _trade_factory()
_BUY, _SELL = Side.BUY, Side.SELL
_R_RESTRICTION, _R_NOT_IN_MODEL = Reason.RESTRICTION, Reason.NOT_IN_MODEL
_R_CASH_NEED, _R_INVEST_CASH = Reason.CASH_NEED, Reason.INVEST_CASH
_R_REPLACEMENT, _R_DRIFT = Reason.REPLACEMENT, Reason.DRIFT
_DECIMALS: dict[int, str] = {}  # share decimals -> format spec of a quantity


def _sentence(kind: int, q: float, qdec: int, sym: str, est: Decimal, *rest: Any) -> str:
    """The plain-English explanation of one trade (``kind`` and ``rest`` as ``_build_trades``
    records them: 0 do-not-hold sale, 1 not in model, 2 replacement, 3 cash need, 4 invest
    cash, 5 cash to pay out, 6 cash received, 7 drift)."""
    qt = _qty_text(q, qdec)
    val_text = f"${est:,}"
    if kind == 0:
        return (
            f"Sell all {qt} of {sym} (about {val_text}): it falls under "
            f"{describe_restriction(rest[0])}."
        )
    if kind == 1:
        return (
            f"Sell all {qt} of {sym} (about {val_text}): it is not in model "
            f"{rest[0]} and not equivalent to any security in it."
        )
    verb, key, w0, w1, t, *extra = rest
    head = f"{verb} {qt} of {sym} (about {val_text})"
    equiv = (
        f"; {sym} counts toward the target of {key} (equivalent securities)" if sym != key else ""
    )
    if kind == 2:
        return (
            f"{head} as the buy-list replacement for {', '.join(extra[0])}, which "
            f"model {extra[1]} holds but no longer buys; weight {w0:.2%} -> {w1:.2%} "
            f"(target {t:.2%}){equiv}."
        )
    if kind == 3:
        return (
            f"{head} to raise cash for {extra[0]}, taken from the most overweight "
            f"positions first; weight {w0:.2%} -> {w1:.2%} (target {t:.2%}){equiv}."
        )
    if kind == 4:
        return (
            f"{head} to invest {extra[0]} in the most underweight positions first; "
            f"weight {w0:.2%} -> {w1:.2%} (target {t:.2%}){equiv}."
        )
    if kind == 5:
        return (
            f"{head} to raise {extra[0] or 'cash to pay out'}; weight "
            f"{w0:.2%} -> {w1:.2%} (target {t:.2%}){equiv}."
        )
    if kind == 6:
        return (
            f"{head} to invest {extra[0] or 'cash received'}; weight "
            f"{w0:.2%} -> {w1:.2%} (target {t:.2%}){equiv}."
        )
    sid, g_lo, g_hi, total, freed_in = extra
    lo, hi = g_lo / total, g_hi / total
    freed = ", including weight freed by restrictions" if freed_in else ""
    return (
        f"{head} to bring it from {w0:.2%} to {w1:.2%} of sleeve {sid}, "
        f"target {t:.2%}{freed} (allowed range {lo:.2%}–{hi:.2%}){equiv}."
    )


def _quantity(q: float, closes: bool, qfmt: str) -> tuple[Decimal, bool]:
    """A trade's shares as a Decimal (a sale that closes a position keeps every digit), and
    whether they are whole."""
    rq = round(q)
    if q == rq:
        return Decimal(rq), True
    return (Decimal(repr(q)) if closes else Decimal(format(q, qfmt))), False


def _build_trades(plan: SleevePlan, cash_after: float) -> list[Trade]:
    """The trades of the members' decided share changes, each with its reason."""
    trades: list[Trade] = []
    sid = plan.sleeve.sleeve_id
    aid = plan.account_id
    model_id = plan.model.model_id
    dec = plan.settings.share_decimals
    total = plan.total if plan.total > 0 else 1.0
    before_total = plan.value if plan.value > 0 else 1.0
    qfmt = _DECIMALS.get(dec) or _DECIMALS.setdefault(dec, f".{dec}f")
    outflow, inflow = plan.outflow > 0, plan.inflow > 0
    for g in plan.groups:
        members = g.members
        if len(members) == 1:
            m = members[0]
            if not m.trade:
                continue
            w1 = (0.0 + (m.qty + m.trade) * m.price) / total  # = sum() of one term
        else:
            if not any(m.trade for m in members):
                continue
            w1 = sum((m.qty + m.trade) * m.price for m in members) / total
        w0 = g.value / before_total
        t = g.target / total
        for m in members:
            if not m.trade:
                continue
            side = _BUY if m.trade > 0 else _SELL
            q = abs(m.trade)
            closes = side is _SELL and q >= m.qty - 1e-12
            qd, whole = _quantity(q, closes, qfmt)
            val = q * m.price
            opens = side is _BUY and m.qty <= 0
            est = Decimal(repr(val)).quantize(CENT)  # val is a float already
            qdec = max(dec, 6) if m.unit == 1.0 and not whole else dec
            sym = m.symbol
            verb = "Buy" if side is _BUY else "Sell"
            # the reason now; the sentence (see _sentence) when it is first read
            args: tuple[Any, ...]
            if m.forced is _R_RESTRICTION and side is _SELL:
                reason = _R_RESTRICTION
                args = (0, q, qdec, sym, est, m.dnh)
            elif m.forced is _R_NOT_IN_MODEL and side is _SELL:
                reason = _R_NOT_IN_MODEL
                args = (1, q, qdec, sym, est, model_id)
            elif side is _BUY and g.replaces and sym not in g.replaces:
                reason = _R_REPLACEMENT
                args = (2, q, qdec, sym, est, verb, g.key, w0, w1, t, g.replaces, model_id)
            elif g.why is _R_CASH_NEED and side is _SELL:
                reason = _R_CASH_NEED
                purpose = plan.purpose_out or "the sleeve's cash target and reserve"
                args = (3, q, qdec, sym, est, verb, g.key, w0, w1, t, purpose)
            elif g.why is _R_INVEST_CASH and side is _BUY:
                reason = _R_INVEST_CASH
                purpose = plan.purpose_in or "cash above the sleeve's cash target"
                args = (4, q, qdec, sym, est, verb, g.key, w0, w1, t, purpose)
            elif side is _SELL and outflow:
                reason = _R_CASH_NEED
                args = (5, q, qdec, sym, est, verb, g.key, w0, w1, t, plan.purpose_out)
            elif side is _BUY and inflow:
                reason = _R_INVEST_CASH
                args = (6, q, qdec, sym, est, verb, g.key, w0, w1, t, plan.purpose_in)
            else:
                reason = _R_DRIFT
                freed = g.freed_in > 1e-9
                args = (7, q, qdec, sym, est, verb, g.key, w0, w1, t, sid, g.lo, g.hi, total, freed)
            trades.append(
                _new_trade(
                    aid, sid, sym, side, qd, m.price, est, reason, opens, closes, (_sentence, args)
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
    """The first outcome's plan traded to the second's holdings (one set of trades)."""
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
    keep_shares: Mapping[str, float] | None = None,
) -> SleeveOutcome:
    """Plan and trade one sleeve (inputs must be validated); see the module docstring.
    ``keep_shares``: the tax-aware sell cap (see ``plan_sleeve``)."""
    plan = plan_sleeve(
        account,
        sleeve,
        ref,
        inflow=inflow,
        outflow=outflow,
        purpose_in=purpose_in,
        purpose_out=purpose_out,
        keep_shares=keep_shares,
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
        again = trade_sleeve(plan_sleeve(account, projected, ref, keep_shares=keep_shares), mode)
        if not again.trades:
            break
        out = _merge(out, again)
    return out
