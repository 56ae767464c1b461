"""Unit tests of the pure rule that shares a done block's fills among its allocations."""

from decimal import Decimal
from fractions import Fraction

import pytest
from custodian_gateway.allocation import (
    SMALLEST_QUANTITY,
    WHOLE_SHARE,
    AllocationProblem,
    Ask,
    allocate,
    share_unit,
    units_of,
)
from hypothesis import given, settings
from hypothesis import strategies as st


def _asks(*quantities: str) -> list[Ask]:
    return [Ask(f"t{i:02d}", Decimal(q)) for i, q in enumerate(quantities)]


def test_fully_filled_gives_everyone_what_they_asked() -> None:
    asks = _asks("100", "37", "1", "250")
    assert allocate(Decimal(388), asks, WHOLE_SHARE) == [Decimal(q) for q in (100, 37, 1, 250)]


def test_nothing_filled_gives_nothing() -> None:
    assert allocate(Decimal(0), _asks("5", "7"), WHOLE_SHARE) == [0, 0]


def test_pro_rata_rounds_down_then_largest_remainder_first() -> None:
    # 10 of 30 asked: exact shares 3.333.., 3.333.., 3.333.. -> 3, 3, 3 and 1 left over.
    # Equal remainders and equal asks: the smaller trade id gets it.
    assert allocate(Decimal(10), _asks("10", "10", "10"), WHOLE_SHARE) == [4, 3, 3]
    # 7 of 12: exact 3.5 (6 asked), 2.333.. (4), 1.1666.. (2) -> 3, 2, 1 and 1 left:
    # the largest remainder (0.5) gets it.
    assert allocate(Decimal(7), _asks("6", "4", "2"), WHOLE_SHARE) == [4, 2, 1]


def test_equal_remainders_go_to_the_larger_ask_first() -> None:
    # 3 of 6 asked (half each): 2 of 4 and 0.5 of 1 and 0.5 of 1 -> 2, 0, 0 and 1 left; the two
    # remainders are equal (0.5), the asks are equal, so the smaller trade id wins.
    assert allocate(Decimal(3), _asks("4", "1", "1"), WHOLE_SHARE) == [2, 1, 0]
    # remainders 1/2 each: 5 asked by one, 1 by the others: 3.5 vs 0.5 -> the larger ask first
    assert allocate(Decimal(4), _asks("1", "7"), WHOLE_SHARE) == [0, 4]
    assert allocate(Decimal(4), [Ask("b", Decimal(7)), Ask("a", Decimal(1))], WHOLE_SHARE) == [
        4,
        0,
    ]


def test_fractional_allocations_share_in_the_smallest_quantity() -> None:
    shares = allocate(Decimal("1"), _asks("1.5", "1.5", "1.5"), SMALLEST_QUANTITY)
    assert shares == [Decimal("0.33333334"), Decimal("0.33333333"), Decimal("0.33333333")]
    assert sum(shares) == 1


def test_the_order_of_the_asks_does_not_change_anyones_share() -> None:
    asks = _asks("13", "7", "7", "29", "1")
    reverse = list(reversed(asks))
    forward = allocate(Decimal(23), asks, WHOLE_SHARE)
    backward = allocate(Decimal(23), reverse, WHOLE_SHARE)
    # 23 of 57: exact 5.24, 2.82, 2.82, 11.70, 0.40 -> 5, 2, 2, 11, 0 and 3 left over, which go
    # to the remainders .82, .82 and .70
    assert forward == [5, 3, 3, 12, 0]
    assert dict(zip(asks, forward, strict=True)) == dict(zip(reverse, backward, strict=True))


@pytest.mark.parametrize(
    ("filled", "quantities", "unit", "message"),
    [
        ("11", ("5", "5"), WHOLE_SHARE, "overfill: 11 filled but the allocations asked 10"),
        ("2.5", ("5", "5"), WHOLE_SHARE, "filled quantity 2.5 is not a whole number of 1"),
        ("-1", ("5",), WHOLE_SHARE, "negative"),
        ("1", ("1.5",), WHOLE_SHARE, "trade t00 quantity 1.5 is not a whole number"),
        ("1", ("0",), WHOLE_SHARE, "positive"),
    ],
)
def test_what_cannot_be_shared_is_refused(
    filled: str, quantities: tuple[str, ...], unit: Decimal, message: str
) -> None:
    with pytest.raises(AllocationProblem, match=message):
        allocate(Decimal(filled), _asks(*quantities), unit)


def test_a_block_needs_allocations() -> None:
    with pytest.raises(AllocationProblem, match="without allocations"):
        allocate(Decimal(1), [], WHOLE_SHARE)


def test_units() -> None:
    assert share_unit(True) == 1 and share_unit(False) == Decimal("1E-8")
    assert units_of(Decimal("0.00000003"), SMALLEST_QUANTITY, "q") == 3
    with pytest.raises(AllocationProblem, match="not a finite number"):
        units_of(Decimal("NaN"), WHOLE_SHARE, "q")


@st.composite
def blocks(draw: st.DrawFn) -> tuple[Decimal, list[Ask], Decimal]:
    whole = draw(st.booleans())
    unit = share_unit(whole)
    sizes = draw(
        st.lists(
            st.integers(min_value=1, max_value=10**9 if whole else 10**12), min_size=1, max_size=40
        )
    )
    asks = [Ask(draw(st.uuids()).hex, Decimal(n) * unit) for n in sizes]
    filled_units = draw(st.integers(min_value=0, max_value=sum(sizes)))
    return Decimal(filled_units) * unit, asks, unit


@settings(max_examples=300, deadline=None)
@given(block=blocks(), data=st.data())
def test_allocation_properties(
    block: tuple[Decimal, list[Ask], Decimal], data: st.DataObject
) -> None:
    """The shares add up to the filled quantity exactly; none is negative or above its ask;
    each is whole units; each is within one unit of its exact pro-rata share; the result does
    not depend on the order of the asks; a fully filled block gives everyone their ask."""
    filled, asks, unit = block
    shares = allocate(filled, asks, unit)
    total = sum((a.quantity for a in asks), Decimal(0))
    assert sum(shares, Decimal(0)) == filled
    for ask, share in zip(asks, shares, strict=True):
        assert 0 <= share <= ask.quantity
        assert share % unit == 0
        exact = Fraction(filled) * Fraction(ask.quantity) / Fraction(total)
        assert abs(Fraction(share) - exact) < Fraction(unit)
    shuffled = data.draw(st.permutations(list(range(len(asks)))))
    again = allocate(filled, [asks[i] for i in shuffled], unit)
    assert [again[shuffled.index(i)] for i in range(len(asks))] == shares
    assert allocate(total, asks, unit) == [a.quantity for a in asks]
