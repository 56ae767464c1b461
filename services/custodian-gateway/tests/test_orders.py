"""Unit tests of the pure order rules (no I/O)."""

import uuid
from decimal import Decimal

import pytest
from custodian_gateway.orders import (
    ExecutionProblem,
    OrderProgress,
    allocation_fill_id,
    apply_fill,
    apply_reject,
    check_scale,
)
from hypothesis import given, settings
from hypothesis import strategies as st


def test_the_fill_id_of_an_allocation_is_derived_from_its_trade() -> None:
    trade = uuid.UUID("c2f1d9e0-1a2b-4c3d-8e4f-5a6b7c8d9e0f")
    assert allocation_fill_id(trade) == "F-c2f1d9e01a2b4c3d8e4f5a6b7c8d9e0f"
    assert allocation_fill_id(uuid.UUID(str(trade))) == allocation_fill_id(trade)
    assert allocation_fill_id(uuid.uuid4()) != allocation_fill_id(trade)
    # its lot at the custodian and in the ledger, "fill-<fill id>", fits the daily files' ids
    assert len("fill-" + allocation_fill_id(trade)) <= 64


def test_partial_fills_then_complete() -> None:
    order = OrderProgress(quantity=Decimal("10"), status="sent")
    first = apply_fill(order, Decimal("3.3333"), Decimal("100.10"))
    assert first.status == "partially_filled"
    assert first.remaining == Decimal("6.6667")
    second = apply_fill(first, Decimal("3.3333"), Decimal("100.20"))
    assert second.status == "partially_filled"
    last = apply_fill(second, Decimal("3.3334"), Decimal("100.30"))
    assert last.status == "filled"
    assert last.filled_quantity == Decimal("10")
    assert last.filled_notional == Decimal("3.3333") * Decimal("100.10") + Decimal(
        "3.3333"
    ) * Decimal("100.20") + Decimal("3.3334") * Decimal("100.30")
    assert last.average_price == Decimal("100.20000100")
    assert order.status == "sent"  # the input is not changed


def test_a_fill_on_a_new_order_counts() -> None:
    """An execution may arrive before the send was recorded (crash between send and mark)."""
    after = apply_fill(OrderProgress(quantity=Decimal(5), status="new"), Decimal(5), Decimal(2))
    assert after.status == "filled"
    assert after.average_price == Decimal("2")


def test_no_average_price_before_a_fill() -> None:
    assert OrderProgress(quantity=Decimal(1), status="sent").average_price is None


def test_overfill_is_refused() -> None:
    order = apply_fill(OrderProgress(quantity=Decimal(10), status="sent"), Decimal(6), Decimal(1))
    with pytest.raises(ExecutionProblem, match="overfill"):
        apply_fill(order, Decimal("4.00000001"), Decimal(1))


@pytest.mark.parametrize(
    ("quantity", "price", "message"),
    [
        ("0", "1", "quantity must be positive"),
        ("-1", "1", "quantity must be positive"),
        ("1", "0", "price must be positive"),
        ("0.000000001", "1", "more than 8 decimal places"),
        ("1", "1.123456789", "more than 8 decimal places"),
    ],
)
def test_bad_fills_are_refused(quantity: str, price: str, message: str) -> None:
    order = OrderProgress(quantity=Decimal(10), status="sent")
    with pytest.raises(ExecutionProblem, match=message):
        apply_fill(order, Decimal(quantity), Decimal(price))


def test_fill_after_reject_or_complete_fill_is_refused() -> None:
    rejected = apply_reject(OrderProgress(quantity=Decimal(10), status="sent"), "halted")
    with pytest.raises(ExecutionProblem, match="already rejected"):
        apply_fill(rejected, Decimal(1), Decimal(1))
    filled = apply_fill(OrderProgress(quantity=Decimal(1), status="sent"), Decimal(1), Decimal(1))
    with pytest.raises(ExecutionProblem, match="already completely filled"):
        apply_fill(filled, Decimal(1), Decimal(1))


def test_reject_of_the_rest_after_a_partial_fill() -> None:
    partial = apply_fill(OrderProgress(quantity=Decimal(10), status="sent"), Decimal(4), Decimal(3))
    rejected = apply_reject(partial, "market closed")
    assert rejected.status == "rejected"
    assert rejected.reject_reason == "market closed"
    assert rejected.filled_quantity == Decimal(4)
    assert rejected.remaining == Decimal(6)
    assert apply_reject(OrderProgress(Decimal(1), "sent"), None).reject_reason


@pytest.mark.parametrize("status", ["filled", "rejected"])
def test_reject_of_a_finished_order_is_refused(status: str) -> None:
    with pytest.raises(ExecutionProblem, match=f"already {status}"):
        apply_reject(OrderProgress(quantity=Decimal(1), status=status), "late")  # type: ignore[arg-type]


def test_check_scale() -> None:
    check_scale(Decimal("1.10000000000"), 8, "q")  # trailing zeros do not count
    check_scale(Decimal("1E+3"), 0, "q")
    with pytest.raises(ValueError, match=r"q 0\.123 has more than 2 decimal places"):
        check_scale(Decimal("0.123"), 2, "q")
    with pytest.raises(ValueError, match="not a finite number"):
        check_scale(Decimal("NaN"), 2, "q")


@settings(max_examples=150, deadline=None)
@given(
    units=st.lists(st.integers(min_value=1, max_value=10**6), min_size=1, max_size=12),
    places=st.integers(min_value=0, max_value=8),
    prices=st.lists(st.integers(min_value=1, max_value=10**8), min_size=12, max_size=12),
)
def test_partial_fills_sum_exactly(units: list[int], places: int, prices: list[int]) -> None:
    """However an order is split, the fills add up to exactly its quantity; only the last
    one completes it; the average price is the exact weighted average, rounded once."""
    parts = [Decimal(u).scaleb(-places) for u in units]
    fill_prices = [Decimal(p).scaleb(-4) for p in prices[: len(parts)]]
    total = sum(parts, Decimal(0))
    progress = OrderProgress(quantity=total, status="sent")
    for i, (qty, price) in enumerate(zip(parts, fill_prices, strict=True)):
        progress = apply_fill(progress, qty, price)
        expected = "filled" if i == len(parts) - 1 else "partially_filled"
        assert progress.status == expected
    assert progress.filled_quantity == total
    assert progress.remaining == 0
    notional = sum((q * p for q, p in zip(parts, fill_prices, strict=True)), Decimal(0))
    assert progress.filled_notional == notional
    assert progress.average_price == (notional / total).quantize(Decimal("1E-8"))
    assert min(fill_prices) <= progress.average_price <= max(fill_prices)
