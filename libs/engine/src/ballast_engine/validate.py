"""Input checks and the per-reference index (equivalence sets, lists, validated models).

Everything here raises typed ``EngineInputError`` subclasses naming account, sleeve,
security and field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ballast_engine.derived import DerivedValues
from ballast_engine.errors import (
    BandError,
    NegativeQuantityError,
    SettingError,
    UnknownSecurityError,
    UnpricedSecurityError,
    WeightSumError,
)
from ballast_engine.model import (
    WEIGHT_TOLERANCE,
    Account,
    Band,
    Holding,
    Model,
    ModelEntry,
    RangeKind,
    Reference,
    RestrictionScope,
    Security,
    Settings,
    Sleeve,
    Strategy,
)


@dataclass(slots=True)
class RefIndex:
    """Lookups derived once per ``Reference`` (kept beside it, see ``ref_index``)."""

    eq_of: dict[str, int]  # symbol -> index of its equivalence set
    eq_members: list[tuple[str, ...]]
    validated_models: set[str]
    validated_strategies: set[str]
    priced_models: set[str]
    # speed caches (reference data does not change within a batch)
    priced_symbols: set[str] = field(default_factory=set)  # in the master, usable price
    valid_settings: set[Settings] = field(default_factory=set)  # Settings already checked
    templates: dict[str, Any] = field(default_factory=dict)  # per-model planning data
    decimal_prices: dict[str, Any] = field(default_factory=dict)  # tax engine's exact prices


_INDEXES = DerivedValues()  # one RefIndex per live Reference


def ref_index(ref: Reference) -> RefIndex:
    """The lookups of ``ref``, worked out on first use and kept while ``ref`` lives (a book
    shares one reference over thousands of accounts)."""
    index: RefIndex = _INDEXES.value(ref, (_new_index, (ref,)))
    return index


def _new_index(ref: Reference) -> RefIndex:
    eq_of: dict[str, int] = {}
    members: list[tuple[str, ...]] = []
    for i, es in enumerate(ref.equivalence_sets):
        for sym in es.members:
            if sym in eq_of:
                raise SettingError(
                    f"security is in two equivalence sets ({members[eq_of[sym]]!r} and "
                    f"{es.set_id!r}); a security may belong to one set only",
                    security=sym,
                    field="equivalence_sets",
                )
            if sym not in ref.securities:
                raise UnknownSecurityError(
                    f"equivalence set {es.set_id!r} names a security missing from the "
                    "security master",
                    security=sym,
                    field="equivalence_sets",
                )
            eq_of[sym] = i
        members.append(es.members)
    return RefIndex(eq_of, members, set(), set(), set())


def price_of(sec: Security, *, account: str | None, sleeve: str | None) -> float:
    p = sec.price
    if p is None or not math.isfinite(p) or p <= 0:
        raise UnpricedSecurityError(
            f"has no usable price ({p!r}); a positive price is required",
            account=account,
            sleeve=sleeve,
            security=sec.symbol,
            field="price",
        )
    return float(p)


def security(
    ref: Reference, symbol: str, *, account: str | None, sleeve: str | None, field: str
) -> Security:
    sec = ref.securities.get(symbol)
    if sec is None:
        raise UnknownSecurityError(
            "is not in the security master",
            account=account,
            sleeve=sleeve,
            security=symbol,
            field=field,
        )
    return sec


def check_band(band: Band, target: float, *, what: str, strict: bool, **where: str | None) -> None:
    if not math.isfinite(band.width) or band.width < 0:
        raise BandError(f"{what} band width must be ≥ 0, got {band.width!r}", **where)
    if not strict:
        return
    lo, hi = band.bounds(target)
    if lo < -1e-12 or hi > 1 + 1e-12:
        raise BandError(
            f"{what} band {band.kind.value} ±{band.width:g} around target {target:.4%} "
            f"gives {lo:.4%}–{hi:.4%}, outside 0–100%: the band is wider than the target allows",
            **where,
        )


def check_model(ref: Reference, model: Model, *, account: str | None, sleeve: str | None) -> None:
    """Validate a model once per reference: kind, entries, weights (or shares) and bands."""
    idx = ref_index(ref)
    if model.model_id in idx.validated_models:
        return
    where = {"account": account, "sleeve": sleeve}
    if model.kind not in ("weights", "shares"):
        raise SettingError(
            f"model {model.model_id!r} kind must be 'weights' or 'shares', got {model.kind!r}",
            field="kind",
            **where,
        )
    if not model.entries:
        raise SettingError(f"model {model.model_id!r} has no entries", field="entries", **where)
    seen: set[str] = set()
    for e in model.entries:
        if e.symbol in seen:
            raise SettingError(
                f"model {model.model_id!r} lists the security twice",
                security=e.symbol,
                field="entries",
                **where,
            )
        seen.add(e.symbol)
        _check_model_entry(ref, model, e, where)
    if model.kind == "weights":
        _check_weights_total(model, where)
    else:
        if model.cash < 0:
            raise NegativeQuantityError(
                f"model {model.model_id!r} cash is negative", field="cash", **where
            )
        if sum(e.shares for e in model.entries) <= 0:
            raise WeightSumError(
                f"share-based model {model.model_id!r} has no shares", field="shares", **where
            )
    idx.validated_models.add(model.model_id)


def _check_model_entry(
    ref: Reference, model: Model, e: ModelEntry, where: dict[str, str | None]
) -> None:
    """One model line: a known security, a finite weight and share count ≥ 0, a replacement
    only for a "hold" security, a band its target allows."""
    security(ref, e.symbol, field=f"models.{model.model_id}.entries", **where)
    for name, val in (("weight", e.weight), ("shares", e.shares)):
        if not math.isfinite(val):
            raise SettingError(
                f"model {model.model_id!r} {name} is not a number",
                security=e.symbol,
                field=name,
                **where,
            )
        if val < 0:
            raise NegativeQuantityError(
                f"model {model.model_id!r} {name} is negative ({val:g})",
                security=e.symbol,
                field=name,
                **where,
            )
    if e.replacement is not None:
        security(ref, e.replacement, field="replacement", **where)
        if not e.hold:
            raise SettingError(
                f"model {model.model_id!r}: a replacement is only meaningful for a 'hold' security",
                security=e.symbol,
                field="replacement",
                **where,
            )
    if e.band is not None:
        check_band(
            e.band,
            e.weight if model.kind == "weights" else 0.0,
            what=f"model {model.model_id!r} security",
            strict=model.kind == "weights",
            security=e.symbol,
            **where,
        )


def _check_weights_total(model: Model, where: dict[str, str | None]) -> None:
    """A weight model's cash weight is in [0, 1) and its weights add up to 100%."""
    if not 0 <= model.cash_weight < 1:
        raise SettingError(
            f"model {model.model_id!r} cash_weight must be in [0, 1), got {model.cash_weight!r}",
            field="cash_weight",
            **where,
        )
    total = sum(e.weight for e in model.entries) + model.cash_weight
    if abs(total - 1.0) > WEIGHT_TOLERANCE:
        raise WeightSumError(
            f"model {model.model_id!r} weights (with cash) add up to {total:.6%}, not "
            f"100% (tolerance ±{WEIGHT_TOLERANCE:.2%})",
            field="weight",
            **where,
        )


def check_strategy(ref: Reference, strat: Strategy, *, account: str | None) -> None:
    idx = ref_index(ref)
    if strat.strategy_id in idx.validated_strategies:
        return
    if not strat.entries:
        raise SettingError(
            f"strategy {strat.strategy_id!r} has no models", account=account, field="entries"
        )
    seen: set[str] = set()
    for e in strat.entries:
        if e.model_id in seen:
            raise SettingError(
                f"strategy {strat.strategy_id!r} lists model {e.model_id!r} twice",
                account=account,
                field="entries",
            )
        seen.add(e.model_id)
        if e.model_id not in ref.models:
            raise SettingError(
                f"strategy {strat.strategy_id!r} refers to unknown model {e.model_id!r}",
                account=account,
                field="model_id",
            )
        if not math.isfinite(e.weight) or e.weight < 0:
            raise NegativeQuantityError(
                f"strategy {strat.strategy_id!r} weight of model {e.model_id!r} must be ≥ 0",
                account=account,
                field="weight",
            )
        check_band(
            e.band,
            e.weight,
            what=f"strategy {strat.strategy_id!r} model {e.model_id!r}",
            strict=True,
            account=account,
            field="band",
        )
    total = sum(e.weight for e in strat.entries)
    if abs(total - 1.0) > WEIGHT_TOLERANCE:
        raise WeightSumError(
            f"strategy {strat.strategy_id!r} model weights add up to {total:.6%}, not 100%",
            account=account,
            field="weight",
        )
    rr = strat.rebalance_range
    if rr.kind is RangeKind.INTERIOR and not 0 <= rr.interior_pct <= 100:
        raise SettingError(
            f"strategy {strat.strategy_id!r} interior_pct must be within 0–100, got "
            f"{rr.interior_pct!r}",
            account=account,
            field="interior_pct",
        )
    idx.validated_strategies.add(strat.strategy_id)


def check_settings(s: Settings, *, account: str, sleeve: str) -> None:
    where = {"account": account, "sleeve": sleeve}
    for name in ("min_trade_value", "min_trade_shares", "min_opening_trade_value", "cash_reserve"):
        v = getattr(s, name)
        if not math.isfinite(v) or v < 0:
            raise NegativeQuantityError(f"setting must be ≥ 0, got {v!r}", field=name, **where)
    if not 0 <= s.cash_target < 1:
        raise SettingError(
            f"cash_target must be in [0, 1), got {s.cash_target!r}", field="cash_target", **where
        )
    if not 0 <= s.share_decimals <= 8:
        raise SettingError(
            f"share_decimals must be within 0–8, got {s.share_decimals!r}",
            field="share_decimals",
            **where,
        )
    check_band(s.cash_band, s.cash_target, what="cash", strict=False, field="cash_band", **where)
    check_band(s.security_band, 0.0, what="security", strict=False, field="security_band", **where)


def _check_settings_once(idx: RefIndex, s: Settings, *, account: str, sleeve: str) -> None:
    """``check_settings``, skipped for settings equal to ones already found valid."""
    try:
        if s in idx.valid_settings:
            return
    except TypeError:  # unhashable (a caller's odd field type): just check
        check_settings(s, account=account, sleeve=sleeve)
        return
    check_settings(s, account=account, sleeve=sleeve)
    idx.valid_settings.add(s)


def check_account(ref: Reference, account: Account) -> None:
    """Validate one account against the reference; raises the first problem found."""
    aid = account.account_id
    idx = ref_index(ref)
    strat = _check_account_settings(ref, account)
    seen_sleeves: set[str] = set()
    seen_models: set[str] = set()
    for sl in account.sleeves:
        sid = sl.sleeve_id
        if sid in seen_sleeves:
            raise SettingError("sleeve id used twice", account=aid, sleeve=sid, field="sleeve_id")
        seen_sleeves.add(sid)
        model = ref.models.get(sl.model_id)
        if model is None:
            raise SettingError(
                f"unknown model {sl.model_id!r}", account=aid, sleeve=sid, field="model_id"
            )
        check_model(ref, model, account=aid, sleeve=sid)
        if strat is not None:
            _check_sleeve_in_strategy(strat, sl, seen_models, account=aid)
        seen_models.add(sl.model_id)
        _check_settings_once(idx, sl.settings, account=aid, sleeve=sid)
        if not math.isfinite(sl.cash):
            raise SettingError("cash is not a number", account=aid, sleeve=sid, field="cash")
        for r in sl.restrictions:
            _check_restriction(ref, r.scope, r.value, account=aid, sleeve=sid)
        if model.model_id not in idx.priced_models:  # prices are reference data: once
            _check_model_prices(ref, model, account=aid, sleeve=sid)
            idx.priced_models.add(model.model_id)
        _check_holdings(ref, idx, sl, account=aid)
    if strat is not None:
        for e in strat.entries:
            if e.model_id not in seen_models and e.weight > 0:
                raise SettingError(
                    f"strategy {strat.strategy_id!r} has model {e.model_id!r} but no sleeve "
                    "follows it",
                    account=aid,
                    field="sleeves",
                )


def _check_account_settings(ref: Reference, account: Account) -> Strategy | None:
    """The account's own fields: sleeves, cash, restrictions, strategy (returned) and
    asset-class band."""
    aid = account.account_id
    if not account.sleeves:
        raise SettingError("account has no sleeves", account=aid, field="sleeves")
    if not math.isfinite(account.cash):
        raise SettingError("cash is not a number", account=aid, field="cash")
    for r in account.restrictions:
        _check_restriction(ref, r.scope, r.value, account=aid, sleeve=None)
    strat = None
    if account.strategy_id is not None:
        strat = ref.strategies.get(account.strategy_id)
        if strat is None:
            raise SettingError(
                f"unknown strategy {account.strategy_id!r}", account=aid, field="strategy_id"
            )
        check_strategy(ref, strat, account=aid)
    check_band(
        account.asset_class_band,
        0.0,
        what="asset class",
        strict=False,
        account=aid,
        field="asset_class_band",
    )
    return strat


def _check_sleeve_in_strategy(
    strat: Strategy, sl: Sleeve, seen_models: set[str], *, account: str
) -> None:
    """A sleeve of a strategy account follows one of its models, and no other sleeve does."""
    if sl.model_id in seen_models:
        raise SettingError(
            f"two sleeves follow model {sl.model_id!r}; a strategy needs one sleeve per model",
            account=account,
            sleeve=sl.sleeve_id,
            field="model_id",
        )
    if all(e.model_id != sl.model_id for e in strat.entries):
        raise SettingError(
            f"model {sl.model_id!r} is not part of strategy {strat.strategy_id!r}",
            account=account,
            sleeve=sl.sleeve_id,
            field="model_id",
        )


def _check_model_prices(ref: Reference, model: Model, *, account: str, sleeve: str) -> None:
    """Every security of the model (and each replacement) is known and priced."""
    for e in model.entries:
        price_of(
            security(ref, e.symbol, account=account, sleeve=sleeve, field="model"),
            account=account,
            sleeve=sleeve,
        )
        if e.replacement is not None:
            price_of(ref.securities[e.replacement], account=account, sleeve=sleeve)


def _check_holdings(ref: Reference, idx: RefIndex, sl: Sleeve, *, account: str) -> None:
    """A sleeve's holdings: each security once, known and priced, a quantity ≥ 0 and lots
    that add up to it."""
    sid = sl.sleeve_id
    held: set[str] = set()
    priced = idx.priced_symbols
    for h in sl.holdings:
        sym = h.symbol
        q = h.quantity
        if sym in priced and sym not in held and not h.lots and 0 <= q < math.inf:
            held.add(sym)  # the common case: known, priced, valid quantity, no lots
            continue
        if h.symbol in held:
            raise SettingError(
                "security held twice in the same sleeve; merge the holdings",
                account=account,
                sleeve=sid,
                security=h.symbol,
                field="holdings",
            )
        held.add(h.symbol)
        if not math.isfinite(h.quantity) or h.quantity < 0:
            raise NegativeQuantityError(
                f"quantity must be ≥ 0, got {h.quantity!r}",
                account=account,
                sleeve=sid,
                security=h.symbol,
                field="quantity",
            )
        sec = security(ref, h.symbol, account=account, sleeve=sid, field="holdings")
        price_of(sec, account=account, sleeve=sid)
        priced.add(sym)
        if h.lots:
            _check_lots(h, account=account, sleeve=sid)


def _check_lots(h: Holding, *, account: str, sleeve: str) -> None:
    """A holding's tax lots: no negative quantity, and they add up to the holding."""
    for lot in h.lots:
        if lot.quantity < 0:
            raise NegativeQuantityError(
                f"tax lot {lot.lot_id!r} quantity is negative",
                account=account,
                sleeve=sleeve,
                security=h.symbol,
                field="lots.quantity",
            )
    lot_total = sum(lot.quantity for lot in h.lots)
    if abs(lot_total - h.quantity) > 1e-6 * max(1.0, h.quantity):
        raise SettingError(
            f"tax lots add up to {lot_total:g} shares but the holding is {h.quantity:g}",
            account=account,
            sleeve=sleeve,
            security=h.symbol,
            field="lots",
        )


def _check_restriction(
    ref: Reference, scope: RestrictionScope, value: str, *, account: str, sleeve: str | None
) -> None:
    if scope is RestrictionScope.LIST and value not in ref.lists:
        raise SettingError(
            f"restriction refers to unknown list {value!r}",
            account=account,
            sleeve=sleeve,
            field="restrictions",
        )
