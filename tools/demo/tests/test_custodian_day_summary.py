"""The demo's custodian's day as figures, terminal rows and JSON, from what taxlot-svc's
reconciliation answers (unit tests: no services)."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from ballast_cli.book import Outcome
from ballast_cli.custodian import TAXLOT
from ballast_demo import __main__ as demo
from ballast_demo.custodian_day import DayClosed, break_in_words, day_closed, day_rows
from ballast_demo.driver import Urls
from rich.console import Console

DAY = date(2026, 12, 4)
CLEAN = {k: 0 for k in ("missing", "extra", "quantity", "basis", "date", "cash")}


def applied(**changes: Any) -> Outcome:
    result = {
        "custodian": "ballast",
        "business_date": DAY.isoformat(),
        "load_id": "ballast-2026-12-04-0123456789abcdef",
        "accounts": 1000,
        "lots_compared": 24_512,
        "matched": 24_512,
        "breaks": dict(CLEAN),
        "accounts_with_breaks": 0,
        "accounts_held": 0,
        "accounts_released": 0,
        **changes,
    }
    return Outcome(load_id=result["load_id"], applied={TAXLOT: result})


def found(kind: str, policy: str, **sides: Any) -> dict[str, Any]:
    return {
        "kind": kind,
        "account_id": "ACC-7",
        "symbol": "MSFT",
        "lot_id": "MSFT-2",
        "policy": policy,
        "ours": None,
        "theirs": None,
        **sides,
    }


def test_a_clean_day_has_no_breaks_and_holds_nobody() -> None:
    day = day_closed(applied(), [], "/x/ballast/2026-12-04", 1.23456)
    assert (day.lots_compared, day.matched, day.lot_breaks, day.accounts_held) == (
        24_512,
        24_512,
        0,
        0,
    )
    assert day.elapsed_s == 1.235
    rows = dict(day_rows(day))
    assert rows["  lots compared"] == "24,512"
    assert rows["  lot breaks"] == "0"
    assert rows["  breaks by kind"] == "none"
    assert rows["  accounts held from trading"] == "0"
    assert "  first break" not in rows
    assert "  allocations the custodian refused" not in rows
    assert rows["Elapsed: files asked for to day reconciled"] == "1.2 s"


def test_breaks_are_counted_by_kind_and_the_holding_break_is_put_in_words_first() -> None:
    breaks = {**CLEAN, "quantity": 1, "basis": 2, "cash": 1}
    first = [
        found("basis", "flag", ours={"cost_basis": "100.00"}, theirs={"cost_basis": "90.00"}),
        found("quantity", "suspend", ours={"quantity": "12"}, theirs={"quantity": "10"}),
    ]
    outcome = applied(breaks=breaks, matched=24_510, accounts_with_breaks=2, accounts_held=1)
    day = day_closed(outcome, first, "/x", 0.5, allocations_refused=2)
    assert day.lot_breaks == 3  # cash is not a lot's
    rows = dict(day_rows(day))
    assert rows["  allocations the custodian refused"] == "2"
    assert rows["  breaks by kind"] == "quantity 1, basis 2, cash 1"
    assert rows["  accounts held from trading"] == "1"
    assert rows["  first break"] == (
        "quantity break of lot MSFT-2 (MSFT) in ACC-7: here 12, at the custodian 10 (suspend)"
    )


def test_a_break_with_one_side_missing_and_a_cash_break_in_words() -> None:
    missing = found("missing", "suspend", ours={"quantity": "5"})
    assert break_in_words(missing).endswith("here 5, at the custodian nothing (suspend)")
    cash = {**found("cash", "flag", ours={"cash": "10.00"}, theirs={"cash": "9.00"})}
    cash.update(symbol=None, lot_id=None)
    assert break_in_words(cash) == "cash break in ACC-7: here 10.00, at the custodian 9.00 (flag)"


def test_the_day_in_the_json_result() -> None:
    day = day_closed(applied(repeated=True), [], "/x/ballast/2026-12-04", 2.0)
    figures = json.loads(json.dumps(day.as_json()))
    assert figures["business_date"] == "2026-12-04"
    assert figures["lots_compared"] == 24_512 and figures["breaks"] == CLEAN
    assert figures["repeated"] is True and figures["elapsed_s"] == 2.0
    assert ("  (reconciled before: not applied again)", "") in day_rows(day)


def summary_result(day: DayClosed) -> dict[str, Any]:
    run = {
        "run_id": "00000000-0000-0000-0000-000000000001",
        "accounts_evaluated": 10,
        "accounts_skipped": 0,
        "proposals": 4,
        "trades": 8,
    }
    return {
        "run": run,
        "progress": {"fills": 8, "trades_rejected": 0, "estimated_tax": "12.50"},
        "elapsed_s": 2.0,
        "events_processed": 100,
        "custodian": {"orders_received": 8},
        "accounts_following": 10,
        "accounts_in_book": 10,
        "umas": 0,
        "restricted": 0,
        "harvest": {},
        "day": day,
    }


@pytest.mark.parametrize("held", [0, 2])
def test_the_terminal_summary_shows_the_day(
    held: int, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    breaks = {**CLEAN, "missing": held}
    first = [found("missing", "suspend", ours={"quantity": "5"})] if held else []
    day = day_closed(applied(breaks=breaks, accounts_held=held), first, "/x", 3.0)
    screen = Console(record=True, width=200)
    monkeypatch.setattr(demo, "console", screen)
    demo.show_summary(summary_result(day), Urls.on_port_base(8000), tmp_path / "t", "tok")
    text = screen.export_text()
    assert "The custodian's day" in text
    assert "ballast 2026-12-04" in text
    assert "lots compared" in text and "24,512" in text
    if held:
        assert "missing break of lot MSFT-2 (MSFT) in ACC-7" in text
        assert "2 account(s) held from trading" in text
    else:
        assert "first break" not in text and "held from trading:" not in text
