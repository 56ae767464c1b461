"""The pure rules of inheritance (model_hub_svc.model_rules), no database: a child's effective
weights always sum to its parent's total, reweighted and added targets take exactly the
weight given, and untouched inherited targets keep their parent proportions."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from model_hub_svc.model_rules import (
    OverrideProblem,
    Target,
    effective_targets,
    implied_weights,
    limit_problems,
)
from model_hub_svc.schemas import LimitsIn, OverridesIn, ReweightIn, TargetIn

PLACES = Decimal("0.0000000001")


@st.composite
def families(draw: st.DrawFn) -> tuple[list[Target], OverridesIn]:
    """A parent of 2-12 targets summing to 1 and overrides of it (any of them may be
    impossible: taking more weight than they leave)."""
    units = draw(st.lists(st.integers(min_value=1, max_value=10_000), min_size=2, max_size=12))
    total = sum(units)
    weights = [(Decimal(u) / total).quantize(PLACES) for u in units]
    weights[0] += 1 - sum(weights)
    parent = [Target(symbol=f"S{i}", weight=w) for i, w in enumerate(weights)]
    roles = draw(
        st.lists(
            st.sampled_from(["keep", "remove", "reweight"]),
            min_size=len(parent),
            max_size=len(parent),
        )
    )
    fraction = st.integers(min_value=0, max_value=10**10).map(lambda n: Decimal(n) * PLACES)
    reweight = [
        ReweightIn(symbol=t.symbol, weight=(draw(fraction) / 4).quantize(PLACES))
        for t, role in zip(parent, roles, strict=True)
        if role == "reweight"
    ]
    added = draw(
        st.lists(fraction.map(lambda w: max((w / 8).quantize(PLACES), PLACES)), max_size=3)
    )
    return parent, OverridesIn(
        remove=[t.symbol for t, role in zip(parent, roles, strict=True) if role == "remove"],
        reweight=reweight,
        add=[TargetIn(symbol=f"N{i}", weight=w) for i, w in enumerate(added)],
    )


@settings(max_examples=200, deadline=None)
@given(family=families())
def test_effective_weights_sum_to_the_parents_and_keep_what_the_child_set(family):
    parent, overrides = family
    try:
        child = effective_targets(parent, overrides)
    except OverrideProblem as problem:
        assert problem.problems[0].field == "overrides"
        return
    weights = {t.symbol: t.weight for t in child}
    assert sum(weights.values()) == sum(t.weight for t in parent)
    assert all(w is not None and w >= 0 for w in weights.values())
    assert not set(overrides.remove) & set(weights)
    for r in overrides.reweight:
        assert weights[r.symbol] == r.weight
    for a in overrides.add:
        assert weights[a.symbol] == a.weight
    reweighted = {r.symbol for r in overrides.reweight}
    untouched = [t for t in parent if t.symbol not in set(overrides.remove) | reweighted]
    if untouched:
        held = sum((t.weight or Decimal(0) for t in untouched), Decimal(0))
        given = sum((r.weight for r in overrides.reweight), Decimal(0)) + sum(
            (a.weight or Decimal(0) for a in overrides.add), Decimal(0)
        )
        scale = (sum(t.weight or Decimal(0) for t in parent) - given) / held
        rest_taker = max(sorted(t.symbol for t in untouched), key=lambda s: weights[s])
        for t in untouched:
            if t.symbol != rest_taker:  # the others: pro rata, to 10 decimals
                assert abs(weights[t.symbol] - (t.weight or 0) * scale) <= PLACES


def test_inherited_targets_keep_the_parents_settings():
    parent = [
        Target(symbol="A", weight=Decimal("0.5"), band_kind="relative", band_width=Decimal("0.1")),
        Target(symbol="B", weight=Decimal("0.5"), hold=True, replacement="C"),
    ]
    [a, b] = effective_targets(
        parent, OverridesIn(reweight=[ReweightIn(symbol="A", weight=Decimal("0.4"))])
    )
    assert (a.weight, a.band_kind, a.band_width) == (Decimal("0.4"), "relative", Decimal("0.1"))
    assert (b.weight, b.hold, b.replacement) == (Decimal("0.6"), True, "C")


@pytest.mark.parametrize(
    ("limits", "overrides", "message"),
    [
        (
            LimitsIn(max_reweight_points=Decimal("2")),
            OverridesIn(reweight=[ReweightIn(symbol="A", weight=Decimal("0.525"))]),
            "reweights A by 2.5 points; the parent allows 2.0",
        ),
        (
            LimitsIn(max_reweight_points=Decimal("2.25")),
            OverridesIn(reweight=[ReweightIn(symbol="A", weight=Decimal("0.47"))]),
            "reweights A by 3.0 points; the parent allows 2.25",
        ),
    ],
)
def test_limit_messages_say_the_points_both_ways(limits, overrides, message):
    parent = [Target(symbol="A", weight=Decimal("0.5")), Target(symbol="B", weight=Decimal("0.5"))]
    assert [p.message for p in limit_problems(parent, limits, overrides)] == [message]


def test_a_reweight_within_the_limit_passes():
    parent = [Target(symbol="A", weight=Decimal("0.5")), Target(symbol="B", weight=Decimal("0.5"))]
    within = OverridesIn(reweight=[ReweightIn(symbol="A", weight=Decimal("0.52"))])
    assert limit_problems(parent, LimitsIn(max_reweight_points=Decimal("2")), within) == []


def test_a_share_models_implied_weights_sum_to_one():
    targets = [
        Target(symbol="A", weight=None, shares=Decimal("1")),
        Target(symbol="B", weight=None, shares=Decimal("2")),
    ]
    implied = implied_weights(targets, {"A": Decimal("30"), "B": Decimal("10")})
    assert implied == {"A": Decimal("0.6"), "B": Decimal("0.4")}
    thirds = implied_weights(targets, {"A": Decimal("10"), "B": Decimal("10")})
    assert sum(thirds.values()) == 1
