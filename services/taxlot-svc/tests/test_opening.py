"""Unit tests of opening-balance checks: every problem named by its path."""

from datetime import date
from decimal import Decimal
from typing import Any

from taxlot_svc.opening import check_account_id, plan_opening
from taxlot_svc.schemas import HoldingsIn

TODAY = date(2026, 11, 22)


def body(**overrides: Any) -> HoldingsIn:
    data: dict[str, Any] = {
        "as_of": "2026-11-20",
        "cash": "1000.50",
        "positions": [
            {
                "symbol": "AAPL",
                "quantity": "10",
                "cost_basis": "1500.00",
                "acquired_on": "2024-01-02",
            }
        ],
    }
    data.update(overrides)
    return HoldingsIn.model_validate(data)


def fields(problems: list[Any]) -> list[str]:
    return [p.field for p in problems]


def test_one_lot_per_simple_position() -> None:
    lots, problems = plan_opening(body(), TODAY)
    assert problems == []
    assert [(lot.lot_id, lot.symbol, lot.quantity, lot.cost_basis) for lot in lots] == [
        ("opening-AAPL-1", "AAPL", Decimal("10"), Decimal("1500.00"))
    ]


def test_several_lots_per_position() -> None:
    positions = [
        {
            "symbol": "MSFT",
            "quantity": "7",
            "lots": [
                {"quantity": "3", "cost_basis": "900", "acquired_on": "2023-05-01"},
                {"quantity": "4", "cost_basis": "1600.25", "acquired_on": "2026-01-01"},
            ],
        }
    ]
    lots, problems = plan_opening(body(positions=positions), TODAY)
    assert problems == []
    assert [(lot.lot_id, lot.quantity, lot.acquired_on) for lot in lots] == [
        ("opening-MSFT-1", Decimal("3"), date(2023, 5, 1)),
        ("opening-MSFT-2", Decimal("4"), date(2026, 1, 1)),
    ]


def test_every_problem_is_named_with_the_prefix() -> None:
    positions = [
        {"symbol": "AAPL", "quantity": "-1", "cost_basis": "0", "acquired_on": "2024-01-01"},
        {"symbol": "AAPL", "quantity": "1", "cost_basis": "10.001", "acquired_on": "2026-11-21"},
        {"symbol": "bad sym", "quantity": "1"},
    ]
    lots, problems = plan_opening(
        body(cash="-5", positions=positions), TODAY, prefix="accounts[3]."
    )
    assert lots == []
    assert fields(problems) == [
        "accounts[3].cash",
        "accounts[3].positions[0].quantity",
        "accounts[3].positions[0].cost_basis",
        "accounts[3].positions[1].symbol",
        "accounts[3].positions[1].cost_basis",
        "accounts[3].positions[1].acquired_on",
        "accounts[3].positions[2].symbol",
        "accounts[3].positions[2].cost_basis",
        "accounts[3].positions[2].acquired_on",
    ]
    assert "must be positive" in problems[1].message
    assert "cents" in problems[4].message
    assert "later than as_of" in problems[5].message


def test_lots_must_agree_with_the_position_totals() -> None:
    positions = [
        {
            "symbol": "MSFT",
            "quantity": "8",
            "cost_basis": "100.00",
            "lots": [{"quantity": "3", "cost_basis": "100", "acquired_on": "2023-05-01"}],
        },
        {"symbol": "IBM", "lots": []},
    ]
    _, problems = plan_opening(body(positions=positions), TODAY)
    assert fields(problems) == ["positions[0].quantity", "positions[1].lots"]


def test_as_of_in_the_future_is_refused() -> None:
    _, problems = plan_opening(body(as_of="2026-12-01", positions=[]), TODAY)
    assert fields(problems) == ["as_of"]


def test_account_id_pattern() -> None:
    assert check_account_id("ACC-001.x_y", "account_id") == []
    assert fields(check_account_id("no spaces", "accounts[0].account_id")) == [
        "accounts[0].account_id"
    ]
