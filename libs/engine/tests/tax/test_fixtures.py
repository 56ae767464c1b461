"""Worked examples (IRS Publication 550 wash sales and others) as CSV fixtures.

Each directory under fixtures/ holds trades.csv and the expected form8949[.METHOD].csv and
lots[.METHOD].csv (no suffix: fifo); args.txt adds command-line options. Every case runs
through the `ballast` command line and through the library API.
"""

from __future__ import annotations

import csv
import io
import shlex
from datetime import date
from pathlib import Path

import pytest
from ballast_engine.cli import main
from ballast_engine.tax import EquivalenceSet, Fill, Identity, ReliefMethod, replay
from ballast_engine.tax.tradefile import form8949_csv, lots_csv, parse_trades

FIXTURES = Path(__file__).parent / "fixtures"


def _cases() -> list[tuple[str, str, str]]:
    cases = []
    for case in sorted(p for p in FIXTURES.iterdir() if p.is_dir()):
        for expected in sorted(case.glob("*.csv")):
            if expected.name == "trades.csv":
                continue
            kind, _, rest = expected.name.partition(".")
            method = rest[: -len("csv")].rstrip(".") or "fifo"
            cases.append((case.name, kind, method))
    return cases


CASES = _cases()


def _extra_args(case: str) -> list[str]:
    args = FIXTURES / case / "args.txt"
    return shlex.split(args.read_text()) if args.exists() else []


def _expected(case: str, kind: str, method: str) -> str:
    suffix = "" if method == "fifo" else f".{method}"
    return (FIXTURES / case / f"{kind}{suffix}.csv").read_text()


def test_every_case_has_both_outputs() -> None:
    names = {(c, k) for c, k, _ in CASES}
    cases = {c for c, _, _ in CASES}
    assert len(cases) >= 12
    for case in cases:
        assert (case, "form8949") in names and (case, "lots") in names, case


@pytest.mark.parametrize(("case", "kind", "method"), CASES)
def test_cli_reproduces_worked_example(case: str, kind: str, method: str, tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    argv = ["taxlot", kind, str(FIXTURES / case / "trades.csv"), "--method", method]
    argv += ["--out", str(out), *_extra_args(case)]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    assert out.read_text() == _expected(case, kind, method)


@pytest.mark.parametrize(("case", "kind", "method"), CASES)
def test_library_reproduces_worked_example(case: str, kind: str, method: str) -> None:
    parsed = parse_trades((FIXTURES / case / "trades.csv").read_text(), today=date(2026, 11, 1))
    extra = _extra_args(case)
    sets = [
        EquivalenceSet(f"s{i}", tuple(extra[i + 1].split(",")), identical=True)
        for i in range(len(extra))
        if extra[i] == "--identical"
    ]
    trades = parsed.trades
    if _distinct_days(trades):
        trades = trades[::-1]  # the order in which days arrive must not matter
    ledger = replay(
        trades, parsed.accounts, identity=Identity.from_sets(sets), method=ReliefMethod(method)
    )
    render = form8949_csv if kind == "form8949" else lots_csv
    assert render(ledger) == _expected(case, kind, method)


def _distinct_days(trades: list[Fill]) -> bool:
    days = [t.on for t in trades]
    return len(set(days)) == len(days)


def test_cli_writes_to_stdout_without_out(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["taxlot", "form8949", str(FIXTURES / "pub550_example1" / "trades.csv")])
    assert exit_info.value.code == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert rows == [
        {
            "account": "A",
            "symbol": "X",
            "quantity": "100",
            "date_acquired": "2024-01-10",
            "date_sold": "2024-06-03",
            "proceeds": "750.00",
            "cost_basis": "1000.00",
            "code": "W",
            "adjustment": "250.00",
            "gain_loss": "0.00",
            "term": "short",
        }
    ]
