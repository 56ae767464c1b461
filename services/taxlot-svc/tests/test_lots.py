"""Unit tests of the pure lot arithmetic (buys, FIFO relief, gains and terms)."""

from datetime import date
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from taxlot_svc.lots import LotState, OversellError, purchase, relieve_position

D = Decimal


def lot(lot_id: str, qty: str, basis: str, acquired: date, seq: int = 0) -> LotState:
    return LotState(lot_id, "AAPL", D(qty), D(basis), acquired, acquired, seq)


def test_purchase_basis_is_quantity_times_price_in_cents() -> None:
    bought = purchase(
        lot_id="fill-1",
        account="A1",
        symbol="MSFT",
        quantity=D("3"),
        price=D("101.335"),
        on=date(2026, 1, 5),
    )
    assert bought.cost_basis == D("304.00")  # 304.005 rounds half-even to 304.00
    assert bought.quantity == D("3")
    assert bought.acquired_on == bought.holding_start == date(2026, 1, 5)


def test_sell_relieves_oldest_lot_first_and_splits_the_last() -> None:
    lots = [
        lot("new", "10", "1500.00", date(2026, 3, 1)),
        lot("old", "10", "1000.00", date(2024, 1, 2)),
    ]
    plan = relieve_position(
        account="A1",
        symbol="AAPL",
        lots=lots,
        quantity=D("15"),
        price=D("200"),
        sold_on=date(2026, 6, 1),
        sale_id="f9",
    )
    assert [(g.lot_id, g.quantity) for g in plan.gains] == [("old", D("10")), ("new", D("5"))]
    old, new = plan.gains
    assert (old.proceeds, old.cost_basis, old.gain, old.term) == (
        D("2000.00"),
        D("1000.00"),
        D("1000.00"),
        "long",
    )
    assert (new.proceeds, new.cost_basis, new.gain, new.term) == (
        D("1000.00"),
        D("750.00"),
        D("250.00"),
        "short",
    )
    assert plan.closed == ["old"]
    assert [(r.lot_id, r.quantity, r.cost_basis) for r in plan.reduced] == [
        ("new", D("5"), D("750.00"))
    ]
    assert plan.proceeds == D("3000.00")


def test_same_day_lots_relieve_in_arrival_order() -> None:
    day = date(2026, 2, 2)
    lots = [lot("b", "1", "20.00", day, seq=2), lot("a", "1", "10.00", day, seq=1)]
    plan = relieve_position(
        account="A1",
        symbol="AAPL",
        lots=lots,
        quantity=D("1"),
        price=D("15"),
        sold_on=day,
    )
    assert [g.lot_id for g in plan.gains] == ["a"]


@pytest.mark.parametrize(
    ("sold", "term"),
    [(date(2026, 3, 15), "short"), (date(2026, 3, 16), "long")],
)
def test_long_term_only_after_more_than_one_year(sold: date, term: str) -> None:
    plan = relieve_position(
        account="A1",
        symbol="AAPL",
        lots=[lot("x", "1", "100.00", date(2025, 3, 15))],
        quantity=D("1"),
        price=D("90"),
        sold_on=sold,
    )
    assert plan.gains[0].term == term
    assert plan.gains[0].gain == D("-10.00")


def test_oversell_names_account_symbol_and_quantities() -> None:
    with pytest.raises(OversellError) as err:
        relieve_position(
            account="A7",
            symbol="AAPL",
            lots=[lot("x", "4", "400.00", date(2025, 1, 1))],
            quantity=D("5"),
            price=D("100"),
            sold_on=date(2026, 1, 1),
        )
    message = str(err.value)
    assert "A7" in message and "AAPL" in message and "5" in message and "4" in message


def test_sell_with_no_lots_is_an_oversell() -> None:
    with pytest.raises(OversellError, match="open position of 0"):
        relieve_position(
            account="A1",
            symbol="AAPL",
            lots=[],
            quantity=D("1"),
            price=D("1"),
            sold_on=date(2026, 1, 1),
        )


quantities = st.decimals(min_value=D("0.001"), max_value=D("500"), places=3)
bases = st.decimals(min_value=D("0.01"), max_value=D("100000"), places=2)


@settings(max_examples=150, deadline=None)
@given(
    lots=st.lists(st.tuples(quantities, bases, st.integers(0, 900)), min_size=1, max_size=8),
    fraction=st.decimals(min_value=D("0.001"), max_value=D("1"), places=3),
    price=st.decimals(min_value=D("0.01"), max_value=D("5000"), places=4),
)
def test_relief_conserves_quantity_and_basis(
    lots: list[tuple[Decimal, Decimal, int]], fraction: Decimal, price: Decimal
) -> None:
    states = [
        LotState(
            f"l{i}", "AAPL", q, b, date.fromordinal(738000 + d), date.fromordinal(738000 + d), i
        )
        for i, (q, b, d) in enumerate(lots)
    ]
    held = sum((s.quantity for s in states), D(0))
    sold = max(D("0.001"), (held * fraction).quantize(D("0.001")))
    sold = min(sold, held)
    plan = relieve_position(
        account="A1",
        symbol="AAPL",
        lots=states,
        quantity=sold,
        price=price,
        sold_on=date(2027, 1, 1),
    )
    by_id = {s.lot_id: s for s in states}
    assert sum((g.quantity for g in plan.gains), D(0)) == sold
    for g in plan.gains:
        assert g.gain == g.proceeds - g.cost_basis
    # Every relieved lot is either closed or reduced, and its basis is split without loss.
    reduced = {r.lot_id: r for r in plan.reduced}
    for g in plan.gains:
        before = by_id[g.lot_id]
        rest = reduced.get(g.lot_id)
        if rest is None:
            assert g.lot_id in plan.closed
            assert (g.quantity, g.cost_basis) == (before.quantity, before.cost_basis)
        else:
            assert rest.quantity + g.quantity == before.quantity
            assert rest.cost_basis + g.cost_basis == before.cost_basis
    # FIFO: no untouched lot is older than a relieved one.
    relieved = {g.lot_id for g in plan.gains}
    newest_relieved = max((by_id[i].acquired_on, by_id[i].seq) for i in relieved)
    for s in states:
        if s.lot_id not in relieved:
            assert (s.acquired_on, s.seq) > newest_relieved
    assert plan.proceeds == (sold * price).quantize(D("0.01"), rounding="ROUND_HALF_EVEN")
