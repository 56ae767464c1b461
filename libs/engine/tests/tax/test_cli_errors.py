"""Bad input: one clear line naming the row and field, non-zero exit, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from ballast_engine.cli import main

HEADER = "account,household,account_type,date,symbol,side,quantity,price\n"
BUY = "A,H,taxable,2024-01-02,X,buy,10,100\n"


def run(tmp_path: Path, body: str, *extra: str) -> tuple[int, Path]:
    trades = tmp_path / "trades.csv"
    trades.write_text(body)
    out = tmp_path / "out.csv"
    with pytest.raises(SystemExit) as info:
        main(["taxlot", "form8949", str(trades), "--out", str(out), *extra])
    code = info.value.code
    assert isinstance(code, int)
    return code, out


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            HEADER + BUY + "A,H,taxable,2024-02-01,X,sell,11,90\n",
            "row 2 (line 3), field 'quantity': cannot relieve 11 shares: the open position is 10",
        ),
        (
            HEADER + BUY + "A,H,taxable,2024-02-01,Y,sell,1,90\n",
            "row 2 (line 3), field 'quantity': cannot sell 1 Y: no open position in account A",
        ),
        (
            HEADER + "A,H,taxable,2024-01-02,X,hold,10,100\n",
            "row 1 (line 2), field 'side': unknown side 'hold' (buy or sell)",
        ),
        (
            HEADER + BUY + "A,H,taxable,2024-01-03,X,buy,-5,100\n",
            "row 2 (line 3), field 'quantity': must be positive, got -5",
        ),
        (
            HEADER + "A,H,taxable,2999-01-02,X,buy,10,100\n",
            "row 1 (line 2), field 'date': date 2999-01-02 is in the future",
        ),
        (
            HEADER + "A,H,taxable,2024-01-02,X,buy,10,1O0\n",
            "row 1 (line 2), field 'price': not a number: '1O0'",
        ),
        (
            HEADER + "A,H,taxable,2024-13-02,X,buy,10,100\n",
            "row 1 (line 2), field 'date': not an ISO date (YYYY-MM-DD): '2024-13-02'",
        ),
        (
            HEADER + "A,H,roth,2024-01-02,X,buy,10,100\n",
            "row 1 (line 2), field 'account_type': unknown account type 'roth' (taxable or ira)",
        ),
        (
            HEADER + BUY + "A,H2,taxable,2024-01-03,X,buy,1,100\n",
            "row 2 (line 3), field 'household': account A is in household H on an earlier row",
        ),
        (
            HEADER + "A,H,taxable,2024-01-02,X,buy,NaN,100\n",
            "row 1 (line 2), field 'quantity': not a finite number: 'NaN'",
        ),
        (
            "account,household,date,symbol,side,quantity,price\n" + "A,H,2024-01-02,X,buy,1,1\n",
            "header: missing column(s) account_type",
        ),
        (
            HEADER.strip()
            + ",lot\n"
            + "A,H,taxable,2024-01-02,X,buy,10,100,a\n"
            + "A,H,taxable,2024-02-01,X,sell,1,100,b\n",
            "row 2 (line 3), field 'lot': lot 'b' is not open in this position",
        ),
    ],
)
def test_bad_input_is_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], body: str, expected: str
) -> None:
    code, out = run(tmp_path, body)
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(f"ballast taxlot form8949: error: {tmp_path / 'trades.csv'}: ")
    assert expected in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["taxlot", "lots", str(tmp_path / "nope.csv")])
    assert info.value.code == 2
    assert capsys.readouterr().err == (
        f"ballast taxlot lots: error: {tmp_path / 'nope.csv'}: cannot read the file: "
        "No such file or directory\n"
    )


def test_unknown_method_is_rejected_by_argparse(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text(HEADER + BUY)
    with pytest.raises(SystemExit) as info:
        main(["taxlot", "lots", str(tmp_path / "t.csv"), "--method", "average"])
    assert info.value.code == 2


def test_an_out_file_that_cannot_be_written_is_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "t.csv").write_text(HEADER + BUY)
    with pytest.raises(SystemExit) as info:
        main(["taxlot", "lots", str(tmp_path / "t.csv"), "--out", str(tmp_path / "no" / "o.csv")])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"ballast taxlot lots: error: cannot write {tmp_path / 'no' / 'o.csv'}")
