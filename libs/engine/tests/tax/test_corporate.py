"""Corporate actions on lots, applied once per action id across the ledger's accounts."""

from __future__ import annotations

from datetime import date
from decimal import Decimal as D

import pytest
from ballast_engine.tax import (
    AccountType,
    CashDividend,
    CashMerger,
    CorporateActionError,
    Fill,
    LedgerAccount,
    Side,
    SpinOff,
    Split,
    StockMerger,
    SymbolChange,
    TaxLedger,
    replay,
)

ON = date(2025, 6, 2)


def book(*positions: tuple[str, str, str, date]) -> TaxLedger:
    """positions: (quantity, price, symbol, acquired) bought in taxable account A."""
    trades = [
        Fill(f"b{i}", "A", acquired, sym, Side.BUY, D(qty), D(price))
        for i, (qty, price, sym, acquired) in enumerate(positions)
    ]
    return replay(trades, [LedgerAccount("A", "H"), LedgerAccount("I", "H", AccountType.IRA)])


def lots_of(led: TaxLedger) -> list[tuple[str, D, D, date]]:
    return [(x.symbol, x.quantity, x.cost_basis, x.holding_start) for x in led.lots()]


def test_forward_split_keeps_basis_and_dates() -> None:
    led = book(("10", "100", "X", date(2020, 1, 2)))
    assert led.apply_action(Split("s1", "X", ON, 2, 1)) == []
    assert lots_of(led) == [("X", D(20), D("1000.00"), date(2020, 1, 2))]


def test_three_for_two_split_pays_fraction_in_cash() -> None:
    led = book(("5", "200", "X", date(2020, 1, 2)))
    (cash,) = led.apply_action(Split("s1", "X", ON, 3, 2, cash_price=D(40)))
    assert lots_of(led) == [("X", D(7), D("933.33"), date(2020, 1, 2))]
    assert (cash.quantity, cash.proceeds, cash.cost_basis) == (D("0.5"), D("20.00"), D("66.67"))
    assert cash.term.value == "long" and cash.cause == "action s1"


def test_reverse_split_with_cash_in_lieu() -> None:
    led = book(("25", "100", "X", date(2025, 1, 2)))
    (cash,) = led.apply_action(Split("r1", "X", ON, 1, 10, cash_price=D(900)))
    assert lots_of(led) == [("X", D(2), D("2000.00"), date(2025, 1, 2))]
    assert (cash.proceeds, cash.cost_basis, cash.gain_loss) == (
        D("450.00"),
        D("500.00"),
        D("-50.00"),
    )


def test_reverse_split_fractional_account_keeps_small_fractions() -> None:
    led = book(("10", "30", "X", date(2025, 1, 2)))
    led.apply_action(Split("r1", "X", ON, 1, 3, cash_price=D(90), share_quantum=D("0.001")))
    (lot,) = led.lots()
    assert lot.quantity == D("3.333")
    (cash,) = led.disposals
    assert cash.proceeds == D("0.03")  # 0.000333... shares at 90
    assert lot.cost_basis + cash.cost_basis == D("300.00")


def test_symbol_change_is_idempotent_and_needs_a_holder() -> None:
    led = book(("10", "100", "X", date(2020, 1, 2)))
    action = SymbolChange("c1", "X", ON, "XN")
    led.apply_action(action)
    led.apply_action(action)  # repeated delivery: no-op
    assert lots_of(led) == [("XN", D(10), D("1000.00"), date(2020, 1, 2))]
    with pytest.raises(CorporateActionError, match="action c2: X is not held"):
        led.apply_action(SymbolChange("c2", "X", ON, "XN2"))


def test_cash_merger_is_a_sale() -> None:
    led = book(("10", "100", "X", date(2020, 1, 2)), ("10", "150", "X", date(2025, 1, 2)))
    disposals = led.apply_action(CashMerger("m1", "X", ON, D(120)))
    assert [(d.proceeds, d.cost_basis, d.gain_loss, d.term.value) for d in disposals] == [
        (D("1200.00"), D("1000.00"), D("200.00"), "long"),
        (D("1200.00"), D("1500.00"), D("-300.00"), "short"),
    ]
    assert led.lots() == []
    assert led.apply_action(CashMerger("m1", "X", ON, D(120))) == disposals  # applied once


def test_stock_merger_carries_basis_at_ratio() -> None:
    led = book(("15", "100", "X", date(2020, 1, 2)), ("4", "10", "Y", date(2021, 1, 4)))
    (cash,) = led.apply_action(StockMerger("m2", "X", ON, "Y", D("0.5"), cash_price=D(210)))
    assert lots_of(led) == [
        ("Y", D(7), D("1400.00"), date(2020, 1, 2)),
        ("Y", D(4), D("40.00"), date(2021, 1, 4)),
    ]
    assert (cash.symbol, cash.proceeds, cash.cost_basis) == ("Y", D("105.00"), D("100.00"))


def test_spin_off_allocates_basis_and_carries_holding_period() -> None:
    led = book(("10", "100", "X", date(2020, 1, 2)))
    (cash,) = led.apply_action(
        SpinOff("sp1", "X", ON, "S", ratio=D("0.25"), basis_percent=D(20), cash_price=D(30))
    )
    assert sorted(lots_of(led)) == [
        ("S", D(2), D("160.00"), date(2020, 1, 2)),
        ("X", D(10), D("800.00"), date(2020, 1, 2)),
    ]
    assert (cash.proceeds, cash.cost_basis, cash.term.value) == (D("15.00"), D("40.00"), "long")


def test_cash_dividend_books_income_only() -> None:
    led = book(("10", "100", "X", date(2020, 1, 2)))
    led.apply(Fill("i1", "I", date(2021, 1, 2), "X", Side.BUY, D(3), D(100)))
    led.apply_action(CashDividend("d1", "X", ON, D("0.255")))
    assert sorted((i.account, i.amount) for i in led.income) == [("A", D("2.55")), ("I", D("0.76"))]
    assert lots_of(led)[0] == ("X", D(10), D("1000.00"), date(2020, 1, 2))


@pytest.mark.parametrize(
    ("action", "message"),
    [
        (Split("bad1", "X", ON, 0, 1), "split ratio must be positive"),
        (SpinOff("bad2", "X", ON, "S", D(1), D(120)), "basis percent must be within 0..100"),
        (StockMerger("bad3", "X", ON, "X", D(1)), "new symbol must differ"),
        (CashMerger("bad4", "X", ON, D(-1)), "cash per share must not be negative"),
    ],
)
def test_invalid_action_is_rejected_without_change(action: object, message: str) -> None:
    led = book(("10", "100", "X", date(2020, 1, 2)))
    before = (lots_of(led), len(led.journal))
    with pytest.raises(CorporateActionError, match=message) as info:
        led.apply_action(action)
    assert (lots_of(led), len(led.journal)) == before
    assert f"action {getattr(action, 'action_id')}" in str(info.value)  # noqa: B009


def test_unknown_action_type_is_rejected() -> None:
    led = book(("10", "100", "X", date(2020, 1, 2)))
    with pytest.raises(CorporateActionError, match="unknown corporate action dict"):
        led.apply_action({"action_id": "z", "symbol": "X"})
