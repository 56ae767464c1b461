"""The chaos suite's verdict catches what it claims to: a differing account, an order executed
twice, a trade left open, a fill missing from the book of record (no services needed)."""

from __future__ import annotations

import copy
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def _chaos() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ballast_chaos", ROOT / "bench/chaos/chaos.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


chaos = _chaos()
BOOK = chaos.make_book(6, 3)

CLEAN_CUSTODIAN: dict[str, Any] = {
    **dict.fromkeys(chaos.DUPLICATE_COUNTS, 0),
    "gateway_executions_not_seen": 0,
    "blocks": 2,
}
CLEAN_OPEN = {"allocations_open": 0, "blocks_open": 0, "trades_in_flight": 0}


def _outcome(fault: str = "taxlot-svc") -> Any:
    book = [
        {
            "cash": "100.00",
            "sleeve_cash": {},
            "positions": {"AAPL": ["10", "2000.00"], "MSFT": ["3", "1200.00"]},
        }
        for _ in BOOK.accounts
    ]
    return chaos.Outcome(
        fault=fault,
        run={"run_id": "r", "accounts_evaluated": 2, "proposals": 2, "trades": 5},
        settled=True,
        timings={"change_to_settled_s": 3.0, "kill_to_settled_s": 2.0},
        kill={"stage": "fills", "at": 2, "observed": 3, "of": 5},
        open=dict(CLEAN_OPEN),
        custodian=dict(CLEAN_CUSTODIAN),
        book=book,
        book_vs_fills=[],
    )


def test_an_identical_outcome_passes() -> None:
    result = chaos.verdict(_outcome("baseline"), _outcome(), BOOK.accounts)
    assert (result["result"], result["duplicates"], result["lost"]) == ("pass", 0, 0)
    assert result["differing_accounts"] == 0 and result["time_to_recover_s"] == 2.0
    assert "fills 3/5" in chaos.table([result])


def test_a_different_cost_basis_or_cash_is_a_differing_account() -> None:
    disturbed = _outcome()
    disturbed.book[1] = copy.deepcopy(disturbed.book[1])
    disturbed.book[1]["positions"]["AAPL"] = ["10", "2000.01"]
    disturbed.book[2] = {**disturbed.book[2], "cash": "99.99"}
    result = chaos.verdict(_outcome("baseline"), disturbed, BOOK.accounts)
    assert (result["result"], result["differing_accounts"]) == ("FAIL", 2)
    assert "AAPL" in result["differences"][0] and "cash" in result["differences"][1]


def test_an_order_executed_twice_and_an_open_trade_fail() -> None:
    disturbed = _outcome()
    disturbed.custodian["orders_overexecuted"] = 1
    disturbed.open["allocations_open"] = 2
    disturbed.book_vs_fills = ["A AAPL: holds 10, opening + fills 12"]
    result = chaos.verdict(_outcome("baseline"), disturbed, BOOK.accounts)
    assert (result["result"], result["duplicates"], result["lost"]) == ("FAIL", 1, 3)


def test_a_run_that_does_not_settle_fails_even_with_nothing_counted() -> None:
    disturbed = _outcome()
    disturbed.settled = False
    disturbed.open["trades_in_flight"] = 2  # another view of open trades: not counted as lost
    result = chaos.verdict(_outcome("baseline"), disturbed, BOOK.accounts)
    assert (result["result"], result["lost"]) == ("FAIL", 0)


def test_a_simulator_restart_is_judged_like_any_other_fault() -> None:
    # the simulator keeps its book in a store of its own now (issue 11): no excuse left
    disturbed = _outcome("custodian-sim")
    disturbed.open["blocks_open"] = 4
    disturbed.settled = False
    result = chaos.verdict(_outcome("baseline"), disturbed, BOOK.accounts)
    assert result["result"] == "FAIL" and result["expected_failure"] is None


def test_kill_points_are_seeded_and_within_the_run() -> None:
    points = [chaos.kill_point(7, fault, 20, 248) for fault in chaos.FAULTS]
    assert points == [chaos.kill_point(7, fault, 20, 248) for fault in chaos.FAULTS]
    for point in points:
        assert 1 <= point.at <= (20 if point.stage == "proposals" else 248)
    assert len({p.stage for p in points}) > 1
    assert chaos.kill_point(7, "custodian-sim", 20, 248).stage == "fills"
