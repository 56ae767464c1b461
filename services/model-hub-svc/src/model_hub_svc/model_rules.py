"""The pure rules of a model's targets: the manager's per-target settings, a child's effective
targets (its parent's with its overrides applied) and the parent's customization limits.
No storage here; docs/models.md states the rules in words."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

from ballast_common.contracts.events import BandV1, ModelTargetV1
from ballast_common.errors import FieldProblem

from model_hub_svc.schemas import (
    BandOut,
    DirectIndexIn,
    LimitsIn,
    OverridesIn,
    TargetIn,
    TargetOut,
)
from model_hub_svc.tables import ModelTarget

WEIGHT_PLACES = Decimal("0.0000000001")  # the model_targets column's scale
POINT = Decimal(100)  # a weight of 0.01 is one percentage point


@dataclass(frozen=True)
class Target:
    """One target of a model version with the manager's settings, as stored."""

    symbol: str
    weight: Decimal | None
    shares: Decimal | None = None
    hold: bool = False
    replacement: str | None = None
    band_kind: str | None = None
    band_width: Decimal | None = None
    tax_loss_proxies: tuple[str, ...] = ()
    factor_exposures: tuple[tuple[str, Decimal], ...] = ()  # a direct index's, by factor name

    @classmethod
    def given(cls, t: TargetIn) -> Target:
        return cls(
            symbol=t.symbol,
            weight=t.weight,
            shares=t.shares,
            hold=t.hold,
            replacement=t.replacement,
            band_kind=t.band.kind if t.band else None,
            band_width=t.band.width if t.band else None,
            tax_loss_proxies=tuple(t.tax_loss_proxies),
            factor_exposures=tuple(sorted(t.factor_exposures.items())),
        )

    @classmethod
    def stored(cls, row: ModelTarget) -> Target:
        return cls(
            symbol=row.symbol,
            weight=row.weight,
            shares=row.shares,
            hold=row.hold,
            replacement=row.replacement,
            band_kind=row.band_kind,
            band_width=row.band_width,
            tax_loss_proxies=tuple(row.tax_loss_proxies or ()),
            factor_exposures=tuple(
                sorted((f, Decimal(v)) for f, v in (row.factor_exposures or {}).items())
            ),
        )

    def row(self, model_id: str, version: int) -> ModelTarget:
        return ModelTarget(
            model_id=model_id,
            version=version,
            symbol=self.symbol,
            weight=self.weight,
            shares=self.shares,
            hold=self.hold,
            replacement=self.replacement,
            band_kind=self.band_kind,
            band_width=self.band_width,
            tax_loss_proxies=list(self.tax_loss_proxies) or None,
            factor_exposures=self._exposures_doc() or None,
        )

    def out(self) -> TargetOut:
        return TargetOut(
            symbol=self.symbol,
            weight=self.weight,
            shares=self.shares,
            hold=self.hold,
            replacement=self.replacement,
            band=self._band(BandOut),
            tax_loss_proxies=list(self.tax_loss_proxies),
            factor_exposures=dict(self.factor_exposures),
        )

    def event(self, implied_weight: Decimal | None = None) -> ModelTargetV1:
        """The target in model-changed (a share model's weight: the one its shares imply)."""
        return ModelTargetV1(
            symbol=self.symbol,
            weight=self.weight if self.weight is not None else implied_weight or Decimal(0),
            shares=self.shares,
            hold=self.hold,
            replacement=self.replacement,
            band=self._band(BandV1),
            tax_loss_proxies=list(self.tax_loss_proxies),
            factor_exposures=dict(self.factor_exposures),
        )

    def _exposures_doc(self) -> dict[str, str]:
        return {f: format(v.normalize(), "f") for f, v in self.factor_exposures}

    def _band(self, kind: Any) -> Any:
        if self.band_kind is None:
            return None
        return kind(kind=self.band_kind, width=self.band_width)

    def settings_doc(self) -> dict[str, Any]:
        """The settings beyond symbol and weight that differ from the defaults."""
        doc: dict[str, Any] = {}
        if self.shares is not None:
            doc["shares"] = _plain(self.shares)
        if self.hold:
            doc["hold"] = True
        if self.replacement is not None:
            doc["replacement"] = self.replacement
        if self.band_kind is not None:
            doc["band"] = {"kind": self.band_kind, "width": _plain(self.band_width)}
        if self.tax_loss_proxies:
            doc["tax_loss_proxies"] = list(self.tax_loss_proxies)
        if self.factor_exposures:
            doc["factor_exposures"] = self._exposures_doc()
        return doc

    def doc(self) -> Any:
        """The target as the audit trail records it: its weight alone when it has no
        settings (as before settings existed), else every field that is set."""
        weight = None if self.weight is None else str(self.weight.quantize(WEIGHT_PLACES))
        settings = self.settings_doc()
        return weight if not settings else {"weight": weight, **settings}


def _plain(value: Decimal | None) -> str | None:
    """A decimal without trailing zeros (as stored or as given, the same text)."""
    return None if value is None else format(value.normalize(), "f")


def duplicates(values: Sequence[str]) -> list[tuple[int, str]]:
    """(index, value) of each value seen before in `values`."""
    seen: set[str] = set()
    out = []
    for i, value in enumerate(values):
        if value in seen:
            out.append((i, value))
        seen.add(value)
    return out


def referenced_symbols(targets: Iterable[TargetIn]) -> set[str]:
    """Every security the targets name: their own, replacements and proxies."""
    out: set[str] = set()
    for t in targets:
        out.add(t.symbol)
        out.update(t.tax_loss_proxies)
        if t.replacement is not None:
            out.add(t.replacement)
    return out


def target_problems(
    targets: Sequence[TargetIn], kind: str, prefix: str, known: set[str]
) -> list[FieldProblem]:
    """What is wrong with the targets' symbols and settings, each problem naming its field."""
    problems = [
        FieldProblem(f"{prefix}[{i}].symbol", f"security {s} appears more than once in the model")
        for i, s in duplicates([t.symbol for t in targets])
    ]
    for i, t in enumerate(targets):
        at = f"{prefix}[{i}]"
        if t.symbol not in known:
            problems.append(FieldProblem(f"{at}.symbol", f"unknown security {t.symbol}"))
        if kind == "weights":
            if t.weight is None:
                problems.append(FieldProblem(f"{at}.weight", "a weights model needs a weight"))
            if t.shares is not None:
                problems.append(
                    FieldProblem(f"{at}.shares", "shares are for a share model (kind: shares)")
                )
        elif t.shares is None or t.shares <= 0:
            problems.append(FieldProblem(f"{at}.shares", "a share model needs shares > 0"))
        if t.replacement is not None:
            if t.replacement == t.symbol:
                problems.append(
                    FieldProblem(f"{at}.replacement", f"{t.symbol} cannot replace itself")
                )
            elif t.replacement not in known:
                problems.append(
                    FieldProblem(f"{at}.replacement", f"unknown security {t.replacement}")
                )
            if not t.hold:
                problems.append(
                    FieldProblem(
                        f"{at}.replacement",
                        "a replacement is bought instead of a held target: set hold",
                    )
                )
        repeated = {j for j, _ in duplicates(t.tax_loss_proxies)}
        for j, proxy in enumerate(t.tax_loss_proxies):
            field = f"{at}.tax_loss_proxies[{j}]"
            if proxy == t.symbol:
                problems.append(FieldProblem(field, f"{t.symbol} cannot be its own proxy"))
            elif proxy not in known:
                problems.append(FieldProblem(field, f"unknown security {proxy}"))
            elif j in repeated:
                problems.append(FieldProblem(field, f"proxy {proxy} appears more than once"))
    return problems


def weight_problems(
    targets: Sequence[TargetIn], kind: str, tolerance: Decimal
) -> list[FieldProblem]:
    """Weights of a weights model sum to 1; a share model gives weights for all or none."""
    given = [t.weight for t in targets if t.weight is not None]
    if kind == "shares":
        if not given:
            return []
        if len(given) < len(targets):
            i = next(i for i, t in enumerate(targets) if t.weight is None)
            return [
                FieldProblem(
                    f"targets[{i}].weight", "a share model gives weights for every target or none"
                )
            ]
    elif len(given) < len(targets):
        return []  # named by target_problems
    total = sum(given, Decimal(0))
    if abs(total - 1) > tolerance:
        return [
            FieldProblem("targets", f"model weights sum to {total * 100:.6f}%, not 100%"),
        ]
    return []


def implied_weights(targets: Sequence[Target], prices: dict[str, Decimal]) -> dict[str, Decimal]:
    """A share model's weights: shares x price over the model's value (the engine's rule)."""
    values = {
        t.symbol: (t.shares or Decimal(0)) * prices.get(t.symbol, Decimal(0)) for t in targets
    }
    total = sum(values.values(), Decimal(0))
    if total <= 0:
        return {s: Decimal(0) for s in values}
    return spread_rest({s: (v / total).quantize(WEIGHT_PLACES) for s, v in values.items()}, 1)


def spread_rest(weights: dict[str, Decimal], total: Decimal | int) -> dict[str, Decimal]:
    """Give the rounding rest (to `total`) to the largest weight."""
    if not weights:
        return weights
    largest = max(sorted(weights), key=lambda s: weights[s])
    out = dict(weights)
    out[largest] += Decimal(total) - sum(out.values(), Decimal(0))
    return out


def allocation_problems(
    weights: dict[str, Decimal],
    asset_class_of: dict[str, str],
    allocation_id: str,
    allocation: dict[str, Decimal],
    tolerance: Decimal,
) -> list[FieldProblem]:
    """Each asset class whose weight in the model (its targets' weights by the master's asset
    class) is further than `tolerance` from the allocation's."""
    by_class: dict[str, Decimal] = {}
    for symbol, weight in weights.items():
        cls = asset_class_of.get(symbol, "unclassified")
        by_class[cls] = by_class.get(cls, Decimal(0)) + weight
    return [
        FieldProblem(
            "allocation_id",
            f"asset class {cls} weighs {_points(by_class.get(cls, Decimal(0)) * POINT)}% in the "
            f"model and {_points(allocation.get(cls, Decimal(0)) * POINT)}% in allocation "
            f"{allocation_id} (tolerance {_points(tolerance * POINT)} points)",
        )
        for cls in sorted(set(by_class) | set(allocation))
        if abs(by_class.get(cls, Decimal(0)) - allocation.get(cls, Decimal(0))) > tolerance
    ]


# --- inheritance ------------------------------------------------------------------------------


class OverrideProblem(Exception):
    """Overrides that cannot apply to the parent's targets (a 422, or at a cascade a child
    kept at its last effective version)."""

    def __init__(self, problems: list[FieldProblem]) -> None:
        super().__init__(problems[0].message)
        self.problems = problems


def effective_targets(
    parent: Sequence[Target], overrides: OverridesIn, *, strict: bool = True
) -> list[Target]:
    """The parent's targets with a child's overrides applied: removed targets go, reweighted
    ones take their new weight, added ones come in with theirs, and the weight this frees (or
    takes) is spread over the untouched inherited targets pro rata to their parent weights,
    so the child's weights sum to the parent's total. Inherited targets keep the parent's
    settings. `strict`: removing a security the parent does not hold is refused (when the
    parent itself changed, such a removal simply has nothing left to do)."""
    by_symbol = {t.symbol: t for t in parent}
    problems: list[FieldProblem] = []
    if any(t.weight is None for t in parent):
        raise OverrideProblem(
            [FieldProblem("parent_model_id", "a child inherits from a weights model only")]
        )
    removed: set[str] = set()
    for i, symbol in enumerate(overrides.remove):
        if symbol in by_symbol:
            removed.add(symbol)
        elif strict:
            problems.append(
                FieldProblem(f"overrides.remove[{i}]", f"the parent has no target {symbol}")
            )
    reweighted: dict[str, Decimal] = {}
    for i, r in enumerate(overrides.reweight):
        field = f"overrides.reweight[{i}].symbol"
        if r.symbol not in by_symbol:
            problems.append(FieldProblem(field, f"the parent has no target {r.symbol}"))
        elif r.symbol in removed or r.symbol in reweighted:
            problems.append(FieldProblem(field, f"{r.symbol} is already removed or reweighted"))
        else:
            reweighted[r.symbol] = r.weight
    for i, a in enumerate(overrides.add):
        if a.symbol in by_symbol:
            problems.append(
                FieldProblem(
                    f"overrides.add[{i}].symbol",
                    f"the parent holds {a.symbol} already: reweight it instead",
                )
            )
        if a.weight is None or a.weight <= 0:
            problems.append(
                FieldProblem(f"overrides.add[{i}].weight", "an addition needs a weight > 0")
            )
    if problems:
        raise OverrideProblem(problems)
    untouched = {
        t.symbol: t.weight or Decimal(0)
        for t in parent
        if t.symbol not in removed and t.symbol not in reweighted
    }
    freed = sum((by_symbol[s].weight or Decimal(0) for s in removed), Decimal(0))
    taken = sum(
        (w - (by_symbol[s].weight or Decimal(0)) for s, w in reweighted.items()), Decimal(0)
    )
    added = sum((a.weight or Decimal(0) for a in overrides.add), Decimal(0))
    change = freed - taken - added  # what the untouched targets receive (or give up)
    held = sum(untouched.values(), Decimal(0))
    if change != 0 and (held == 0 or held + change < 0):
        raise OverrideProblem(
            [
                FieldProblem(
                    "overrides",
                    f"the overrides take {_points(-change * POINT)} points more than they free, "
                    f"and the untouched inherited targets hold {_points(held * POINT)}",
                )
            ]
        )
    spread = {
        s: (w + change * w / held).quantize(WEIGHT_PLACES) if held else w
        for s, w in untouched.items()
    }
    if change != 0:
        spread = spread_rest(spread, held + change)
    out = [
        replace(t, weight=spread[t.symbol] if t.symbol in spread else reweighted[t.symbol])
        for t in parent
        if t.symbol not in removed
    ]
    out += [Target.given(a) for a in overrides.add]
    return sorted(out, key=lambda t: t.symbol)


def limit_problems(
    parent: Sequence[Target], limits: LimitsIn | None, overrides: OverridesIn
) -> list[FieldProblem]:
    """How a child's overrides break its parent's customization limits (none: [])."""
    if limits is None:
        return []
    weights = {t.symbol: t.weight or Decimal(0) for t in parent}
    locked = set(limits.locked)
    problems = []
    for i, symbol in enumerate(overrides.remove):
        field = f"overrides.remove[{i}]"
        if symbol in locked:
            problems.append(FieldProblem(field, f"removes {symbol}, which the parent locks"))
        elif not limits.may_remove:
            problems.append(FieldProblem(field, f"removes {symbol}; the parent allows no removals"))
    for i, r in enumerate(overrides.reweight):
        field = f"overrides.reweight[{i}].weight"
        points = abs(r.weight - weights.get(r.symbol, Decimal(0))) * POINT
        if r.symbol in locked:
            problems.append(FieldProblem(field, f"reweights {r.symbol}, which the parent locks"))
        elif limits.max_reweight_points is not None and points > limits.max_reweight_points:
            problems.append(
                FieldProblem(
                    field,
                    f"reweights {r.symbol} by {_points(points)} points; the parent allows "
                    f"{_points(limits.max_reweight_points)}",
                )
            )
    if limits.max_added is not None and len(overrides.add) > limits.max_added:
        problems.append(
            FieldProblem(
                "overrides.add",
                f"adds {len(overrides.add)} securities; the parent allows {limits.max_added}",
            )
        )
    if limits.allowed_additions is not None:
        allowed = set(limits.allowed_additions)
        for i, a in enumerate(overrides.add):
            if a.symbol not in allowed:
                problems.append(
                    FieldProblem(
                        f"overrides.add[{i}].symbol",
                        f"adds {a.symbol}, which is not among the parent's allowed additions "
                        f"({', '.join(limits.allowed_additions) or 'none'})",
                    )
                )
    return problems


def limits_problems_of_parent(
    limits: LimitsIn, symbols: set[str], known: set[str]
) -> list[FieldProblem]:
    """A parent's limits name its own targets as locked and known securities as additions."""
    problems = [
        FieldProblem(f"limits.locked[{i}]", f"{s} is not a target of this model")
        for i, s in enumerate(limits.locked)
        if s not in symbols
    ]
    problems += [
        FieldProblem(f"limits.allowed_additions[{i}]", f"unknown security {s}")
        for i, s in enumerate(limits.allowed_additions or [])
        if s not in known
    ]
    return problems


def _points(value: Decimal) -> str:
    """A number of points with one decimal at least: 4 -> 4.0, 2.25 -> 2.25."""
    text = f"{value.quantize(Decimal('0.01')):f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


# --- corporate actions: a security renamed (symbol change, stock merger) or bought out ------


def renamed_targets(
    targets: Sequence[Target], symbol: str, new: str | None, ratio: Decimal, kind: str
) -> list[TargetIn]:
    """The targets with `new` in place of `symbol` (weights and shares add up if the model
    holds `new` already; shares times the merger's `ratio`), or without it (None: its weight
    spread pro rata over the others); replacements and proxies naming it follow."""
    old = next(t for t in targets if t.symbol == symbol)
    rest = {t.symbol: t for t in targets if t.symbol != symbol}
    if new is not None:
        shares = None if old.shares is None else old.shares * ratio
        if new in rest:
            kept = rest[new]
            rest[new] = replace(
                kept,
                weight=_add(kept.weight, old.weight),
                shares=_add(kept.shares, shares),
            )
        else:
            rest[new] = replace(old, symbol=new, shares=shares)
    elif kind == "weights" and rest:
        freed = old.weight or Decimal(0)
        held = sum((t.weight or Decimal(0) for t in rest.values()), Decimal(0))
        weights = {
            s: ((t.weight or Decimal(0)) * (1 + freed / held)).quantize(WEIGHT_PLACES)
            for s, t in rest.items()
        }
        weights = spread_rest(weights, held + freed) if held else weights
        rest = {s: replace(t, weight=weights[s]) for s, t in rest.items()}
    return [_target_in(t, symbol, new) for _, t in sorted(rest.items())]


def renamed_overrides(overrides: OverridesIn, symbol: str, new: str | None) -> OverridesIn | None:
    """A child's overrides with `new` in place of `symbol` (None: without it); None when
    they do not name it."""
    named = (
        symbol in overrides.remove
        or any(r.symbol == symbol for r in overrides.reweight)
        or any(symbol in referenced_symbols([a]) for a in overrides.add)
    )
    if not named:
        return None
    remove = [new if s == symbol else s for s in overrides.remove]
    reweight = [
        r.model_copy(update={"symbol": new}) if r.symbol == symbol else r
        for r in overrides.reweight
    ]
    return OverridesIn(
        remove=[s for s in remove if s is not None],
        reweight=[r for r in reweight if r.symbol is not None],
        add=[
            _target_in(Target.given(a), symbol, new)
            for a in overrides.add
            if new is not None or a.symbol != symbol
        ],
    )


def renamed_limits(limits: dict[str, Any] | None, symbol: str, new: str | None) -> LimitsIn | None:
    if limits is None:
        return None
    given = LimitsIn.model_validate(limits)
    allowed = given.allowed_additions
    return given.model_copy(
        update={
            "locked": _renamed(given.locked, symbol, new),
            "allowed_additions": None if allowed is None else _renamed(allowed, symbol, new),
        }
    )


def _renamed(symbols: Sequence[str], symbol: str, new: str | None) -> list[str]:
    out = [new if s == symbol else s for s in symbols]
    return list(dict.fromkeys(s for s in out if s is not None))


def _add(a: Decimal | None, b: Decimal | None) -> Decimal | None:
    return None if a is None and b is None else (a or Decimal(0)) + (b or Decimal(0))


def _target_in(t: Target, symbol: str, new: str | None) -> TargetIn:
    replacement = new if t.replacement == symbol else t.replacement
    proxies = [p for p in _renamed(t.tax_loss_proxies, symbol, new) if p != t.symbol]
    band = None if t.band_kind is None else {"kind": t.band_kind, "width": t.band_width}
    return TargetIn.model_validate(
        {
            "symbol": new if t.symbol == symbol else t.symbol,
            "weight": t.weight,
            "shares": t.shares,
            "hold": t.hold,
            "replacement": replacement if replacement != t.symbol else None,
            "band": band,
            "tax_loss_proxies": proxies,
            "factor_exposures": {f: format(v, "f") for f, v in t.factor_exposures},
        }
    )


# --- direct indexes -------------------------------------------------------------------------

TOLERANCE_RANGE = (Decimal("0.0005"), Decimal("0.2"))  # the optimizer's (docs/optimizer.md)
MAX_TILT = Decimal(2)
SYMMETRY_TOLERANCE = Decimal("1e-9")


def direct_index_problems(
    direct_index: DirectIndexIn | None, targets: Sequence[TargetIn], prefix: str = "direct_index"
) -> list[FieldProblem]:
    """What is wrong with a direct index's risk model, settings and the targets' factor
    exposures, each problem naming its field (a target's exposures need a direct index)."""
    if direct_index is None:
        return [
            FieldProblem(f"targets[{i}].factor_exposures", "factor exposures need a direct_index")
            for i, t in enumerate(targets)
            if t.factor_exposures
        ][:1]
    risk, settings = direct_index.risk_model, direct_index.settings
    factors = risk.factors
    known = ", ".join(factors) or "no factors"
    at = f"{prefix}.risk_model"
    problems = [
        FieldProblem(f"{at}.factors[{i}]", f"factor {f} appears more than once")
        for i, f in duplicates(factors)
    ]
    k = len(factors)
    cov = risk.covariance
    if len(cov) != k or any(len(row) != k for row in cov):
        shape = f"{len(cov)} rows of {sorted({len(r) for r in cov}) or [0]} values"
        problems.append(
            FieldProblem(
                f"{at}.covariance",
                f"not square: {k} factors need {k} rows of {k} values, got {shape}",
            )
        )
    else:
        for i in range(k):
            if cov[i][i] < 0:
                problems.append(
                    FieldProblem(f"{at}.covariance[{i}][{i}]", "a variance cannot be negative")
                )
            for j in range(i + 1, k):
                if abs(cov[i][j] - cov[j][i]) > SYMMETRY_TOLERANCE:
                    problems.append(
                        FieldProblem(
                            f"{at}.covariance[{i}][{j}]",
                            f"not symmetric: {cov[i][j]} here, {cov[j][i]} at [{j}][{i}]",
                        )
                    )
    if not Decimal(0) <= risk.specific_volatility <= Decimal(5):
        problems.append(
            FieldProblem(f"{at}.specific_volatility", "a yearly volatility between 0 and 5")
        )
    low, high = TOLERANCE_RANGE
    if not low <= settings.tracking_tolerance <= high:
        problems.append(
            FieldProblem(
                f"{prefix}.settings.tracking_tolerance",
                f"out of range: a yearly tracking error between {low} and {high} "
                f"(0.01 = about 1%), got {settings.tracking_tolerance}",
            )
        )
    for name, tilt in settings.tilts.items():
        field = f"{prefix}.settings.tilts.{name}"
        if name not in factors:
            problems.append(FieldProblem(field, f"unknown factor {name} (the model has {known})"))
        elif abs(tilt) > MAX_TILT:
            problems.append(FieldProblem(field, f"a tilt is an exposure within ±{MAX_TILT}"))
    for i, t in enumerate(targets):
        for name in t.factor_exposures:
            if name not in factors:
                problems.append(
                    FieldProblem(
                        f"targets[{i}].factor_exposures.{name}",
                        f"unknown factor {name} (the model has {known})",
                    )
                )
    return problems
