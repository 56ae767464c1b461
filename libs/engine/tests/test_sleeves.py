"""The one rule that splits a UMA's position into sleeves (`ballast_engine.sleeves`): worked
examples of each step, and the property that every share lands in exactly one sleeve."""

from __future__ import annotations

from decimal import Decimal

import pytest
from ballast_engine.model import EquivalenceSet
from ballast_engine.sleeves import (
    SleeveModel,
    SleeveShare,
    equivalents_by_symbol,
    home_sleeve,
    split_position,
)
from hypothesis import given
from hypothesis import strategies as st

SLEEVES = [
    SleeveModel("growth", {"EQ1", "EQ2"}),
    SleeveModel("income", {"BND", "EQ2"}),
    SleeveModel("intl", {"VEA"}),
]
EQUIVALENTS = equivalents_by_symbol(
    [EquivalenceSet("total", ("ITOT", "VTI")), EquivalenceSet("intl", ("IEFA", "VEA"))]
)


def _split(
    symbol: str, quantity: str, *lots: tuple[str | None, str]
) -> list[tuple[str, str, tuple[int, ...]]]:
    parts = split_position(
        symbol,
        Decimal(quantity),
        [(sleeve, Decimal(shares)) for sleeve, shares in lots],
        SLEEVES,
        EQUIVALENTS,
    )
    return [(p.sleeve_id, str(p.shares), p.lots) for p in parts]


def test_the_home_sleeve_is_the_first_whose_model_holds_the_symbol() -> None:
    assert home_sleeve("EQ2", SLEEVES, EQUIVALENTS) == "growth"  # both hold it: the first
    assert home_sleeve("BND", SLEEVES, EQUIVALENTS) == "income"


def test_else_the_first_whose_model_holds_an_equivalent_else_the_first_sleeve() -> None:
    assert home_sleeve("IEFA", SLEEVES, EQUIVALENTS) == "intl"  # VEA's equivalent
    assert home_sleeve("ITOT", SLEEVES, EQUIVALENTS) == "growth"  # no model holds VTI either
    assert home_sleeve("XYZ", SLEEVES) == "growth"


def test_a_uma_without_sleeves_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one sleeve"):
        home_sleeve("EQ1", [])


def test_lots_naming_a_sleeve_stay_there_the_rest_goes_home() -> None:
    # 10 shares in an income lot (although growth's model holds EQ1 first), 25 in a growth
    # lot, 5 in a lot naming no sleeve and 2 in no lot at all: 32 go home to growth
    assert _split("EQ1", "42", ("income", "10"), ("growth", "25"), (None, "5")) == [
        ("growth", "32", (1, 2)),
        ("income", "10", (0,)),
    ]


def test_a_lot_naming_a_sleeve_the_account_does_not_have_is_loose() -> None:
    assert _split("VEA", "7", ("gone", "7")) == [("intl", "7", (0,))]


def test_lots_that_hold_the_whole_position_leave_nothing_to_send_home() -> None:
    assert _split("BND", "30", ("intl", "30"), (None, "4")) == [("intl", "30", (0,))]


def test_lots_claiming_more_than_the_position_are_not_trusted() -> None:
    assert _split("EQ2", "10", ("income", "8"), ("intl", "8")) == [("growth", "10", (0, 1))]


def test_a_position_of_no_shares_is_in_no_sleeve() -> None:
    assert split_position("EQ1", Decimal(0), [("growth", Decimal(1))], SLEEVES) == []


def test_sleeves_come_in_strategy_order() -> None:
    parts = split_position(
        "EQ2", Decimal(3), [("intl", Decimal(1)), ("income", Decimal(1))], SLEEVES
    )
    assert parts == [
        SleeveShare("growth", Decimal(1), ()),
        SleeveShare("income", Decimal(1), (1,)),
        SleeveShare("intl", Decimal(1), (0,)),
    ]


SLEEVE_NAMES = st.sampled_from(["growth", "income", "intl", "gone", None])
SHARES = st.decimals(min_value=Decimal("0.001"), max_value=Decimal(500), places=3)


@given(
    st.sampled_from(["EQ1", "EQ2", "BND", "VEA", "IEFA", "ITOT", "XYZ"]),
    SHARES,
    st.lists(st.tuples(SLEEVE_NAMES, SHARES), max_size=8),
)
def test_every_share_lands_in_exactly_one_sleeve(
    symbol: str, quantity: Decimal, lots: list[tuple[str | None, Decimal]]
) -> None:
    parts = split_position(symbol, quantity, lots, SLEEVES, EQUIVALENTS)
    assert sum(p.shares for p in parts) == quantity
    assert all(p.shares > 0 for p in parts)
    ids = [p.sleeve_id for p in parts]
    order = [s.sleeve_id for s in SLEEVES]
    assert ids == sorted(set(ids), key=order.index)  # each sleeve once, in strategy order
    taken = [i for p in parts for i in p.lots]
    assert len(taken) == len(set(taken))  # a lot in at most one sleeve
    home = home_sleeve(symbol, SLEEVES, EQUIVALENTS)
    named = sum((s for n, s in lots if n in order), Decimal(0))
    if named > quantity:  # lots not trusted: the whole position and its lots go home
        assert parts == [SleeveShare(home, quantity, tuple(range(len(lots))))]
        return
    lots_of = {p.sleeve_id: p.lots for p in parts}
    for i, (name, _) in enumerate(lots):  # a lot naming a sleeve is in it, the others home
        if name in order:
            assert i in lots_of[name]
        elif named < quantity:
            assert i in lots_of[home]
    for p in parts:  # a sleeve's shares are its lots', and the rest in its home sleeve
        own = sum((s for n, s in lots if n == p.sleeve_id), Decimal(0))
        assert p.shares == own + (quantity - named if p.sleeve_id == home else 0)
