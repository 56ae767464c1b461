from __future__ import annotations

import random
from decimal import Decimal

import pytest
from custodian_sim.book import fill_price, split_quantity
from custodian_sim.logs import parse_traceparent
from custodian_sim.settings import SimSettings
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

quantities = st.one_of(
    st.integers(min_value=1, max_value=10**9).map(Decimal),
    st.decimals(
        min_value=Decimal("0.000001"),
        max_value=Decimal(10**6),
        places=6,
        allow_nan=False,
        allow_infinity=False,
    ),
)


@settings(max_examples=300, deadline=None)
@given(quantity=quantities, pieces=st.integers(1, 5), seed=st.integers(0, 2**32))
def test_split_sums_exactly_and_keeps_whole_shares_whole(
    quantity: Decimal, pieces: int, seed: int
) -> None:
    parts = split_quantity(quantity, pieces, random.Random(seed))
    assert sum(parts) == quantity
    assert 1 <= len(parts) <= pieces
    assert all(p > 0 for p in parts)
    if quantity == quantity.to_integral_value():
        assert all(p == p.to_integral_value() for p in parts)
        assert len(parts) == min(pieces, int(quantity))


def test_split_of_fractional_quantity_uses_its_last_decimal_place() -> None:
    parts = split_quantity(Decimal("0.30"), 3, random.Random(1))
    assert parts == [Decimal("0.1")] * 3
    parts = split_quantity(Decimal("1E+2"), 3, random.Random(1))  # 100 whole shares
    assert all(p == p.to_integral_value() for p in parts) and sum(parts) == 100


@pytest.mark.parametrize("bad", [Decimal(0), Decimal(-1), Decimal("NaN"), Decimal("Infinity")])
def test_split_refuses_non_positive_or_non_finite(bad: Decimal) -> None:
    with pytest.raises(ValueError, match="positive finite"):
        split_quantity(bad, 2, random.Random(0))


def test_fill_price_never_goes_below_a_cent() -> None:
    assert fill_price(Decimal("0.001"), "sell", Decimal(9999)) == Decimal("0.01")
    assert fill_price(Decimal("10"), "buy", Decimal(100)) == Decimal("10.10")


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", ("4bf92f35", True)),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", ("4bf92f35", False)),
        ("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", ("4bf92f35", True)),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", None),
        ("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", None),
        ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", None),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", None),
        ("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", None),
        ("garbage", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_traceparent(header: str | None, expected: tuple[str, bool] | None) -> None:
    got = parse_traceparent(header)
    if expected is None:
        assert got is None
    else:
        assert got is not None
        assert got.trace_id.startswith(expected[0]) and got.sampled is expected[1]


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIM_REJECT_SYMBOLS", "gme, amc ,")
    monkeypatch.setenv("SIM_LATENCY_MS", "5")
    monkeypatch.setenv("SIM_SLIPPAGE_BPS", "2.5")
    s = SimSettings()
    assert s.reject_symbols == ["GME", "AMC"]
    assert s.latency_ms == 5
    assert s.slippage_bps == Decimal("2.5")
    assert s.seed == 7 and s.partial_fill_probability == 0.3 and s.max_fills == 3


def test_settings_refuse_nonsense(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIM_PARTIAL_FILL_PROBABILITY", "1.5")
    with pytest.raises(ValidationError, match="partial_fill_probability"):
        SimSettings()
