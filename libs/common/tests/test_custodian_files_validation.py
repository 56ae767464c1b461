"""Every check of a custodian's daily file set: each bad input is named by file, line, column
and reason, on a small canonical set written by hand (the generator's sets are tested in
test_custodian_files.py)."""

from __future__ import annotations

import csv
import hashlib
import io
from datetime import date
from pathlib import Path

import pytest
from ballast_common.custodian_files import BALLAST, Report, check_file_set

DAY = date(2026, 12, 4)

GOOD = {
    "prices.csv": (
        "symbol,price,as_of\n"
        "AAA,10.5,2026-12-04\n"
        "BBB,20,2026-12-04\n"
    ),
    "cash.csv": (
        "account_id,amount\n"
        "A1,100.00\n"
        "A2,-5.25\n"
    ),
    "positions.csv": (
        "account_id,symbol,quantity\n"
        "A1,AAA,15\n"
        "A1,BBB,2.5\n"
        "A2,AAA,1\n"
    ),
    "lots.csv": (
        "account_id,symbol,lot_id,quantity,acquired_on,cost_basis\n"
        "A1,AAA,L1,10,2020-01-02,100\n"
        "A1,AAA,L2,5,2026-12-04,52.5\n"
        "A1,BBB,L3,2.5,2022-05-06,50.1234\n"
        "A2,AAA,L1,1,2023-01-01,9\n"
    ),
    "transactions.csv": (
        "transaction_id,account_id,type,symbol,quantity,amount,price,trade_date,settle_date,"
        "lot_id,description\n"
        "T1,A1,buy,AAA,5,52.50,10.5,2026-12-04,2026-12-05,L2,\n"
        "T2,A1,sell,BBB,1,20.00,20,2026-12-04,2026-12-05,L3,\n"
        "T3,A2,deposit,,,100.00,,2026-12-04,2026-12-04,,\n"
        "T4,A2,dividend,AAA,,1.25,,2026-12-04,2026-12-04,,\"paid, in cash\"\n"
    ),
    "corporate_actions.csv": (
        "action_id,type,symbol,effective_date,numerator,denominator,new_symbol\n"
        "CA1,split,AAA,2026-12-10,2,1,\n"
        "CA2,symbol-change,BBB,2026-12-04,,,BBB2\n"
    ),
}  # fmt: skip


def manifest_of(folder: Path, names: list[str], day: str = "2026-12-04") -> str:
    lines = ["file,business_date,rows,sha256"]
    for name in names:
        data = (folder / name).read_bytes()
        records = csv.reader(io.StringIO(data.decode("utf-8", "replace"), newline=""))
        rows = sum(1 for row in records if row) - 1
        lines.append(f"{name},{day},{rows},{hashlib.sha256(data).hexdigest()}")
    return "\n".join(lines) + "\n"


def write_set(
    root: Path,
    changes: dict[str, str | None] | None = None,
    *,
    manifest: bool = True,
    folder_date: str = "2026-12-04",
) -> Path:
    """The good set with `changes` (file -> content; None: left out), its manifest made
    from what was written."""
    folder = root / "ballast" / folder_date
    folder.mkdir(parents=True)
    files = {**GOOD, **(changes or {})}
    for name, content in files.items():
        if content is not None:
            (folder / name).write_text(content, encoding="utf-8", newline="")
    if manifest:
        names = [n for n, c in files.items() if c is not None and n != "manifest.csv"]
        (folder / "manifest.csv").write_text(manifest_of(folder, names))
    return folder


def check(folder: Path, **kw: object) -> Report:
    return check_file_set(folder, BALLAST, DAY, **kw)  # type: ignore[arg-type]


def replaced(name: str, old: str, new: str) -> dict[str, str | None]:
    assert old in GOOD[name], old
    return {name: GOOD[name].replace(old, new, 1)}


def found(report: Report) -> list[tuple[str, int, str, str]]:
    return [(p.file, p.line, p.column, p.message) for p in report.problems]


def test_the_good_set_is_valid_and_counted(tmp_path):
    report = check(write_set(tmp_path))
    assert found(report) == [] and report.valid
    rows = {f.kind: (f.rows, f.manifest_rows) for f in report.files.values()}
    assert rows["lots.csv"] == (4, 4) and rows["transactions.csv"] == (4, 4)
    assert rows["manifest.csv"] == (6, None)
    assert report.unverified_lot_references == 0  # T2 relieves L3, still open (partly sold)


# (changes, the problem expected: file, line, column, the start of its message)
CASES = [
    pytest.param(
        replaced("lots.csv", ",cost_basis\n", "\n"),
        ("lots.csv", 1, "", "required column 'cost_basis' is missing"),
        id="required column",
    ),
    pytest.param(
        replaced("cash.csv", "account_id,amount\n", "account_id,amount,colour\n"),
        ("cash.csv", 1, "colour", "'colour' is not a column of this file"),
        id="unknown column",
    ),
    pytest.param(
        replaced("cash.csv", "account_id,amount\n", "account_id,Amount,amount\n"),
        ("cash.csv", 1, "amount", "column 'amount' appears twice"),
        id="column twice",
    ),
    pytest.param(
        replaced("lots.csv", "A1,BBB,L3,2.5,", "A1,BBB,L3,2.123456789,"),
        ("lots.csv", 4, "quantity", "quantity must have at most 18 digits before the point and 8"),
        id="too many decimals",
    ),
    pytest.param(
        replaced("lots.csv", ",50.1234\n", ",50.12345\n"),
        ("lots.csv", 4, "cost_basis", "cost_basis must have at most 18 digits before the point"),
        id="basis decimals",
    ),
    pytest.param(
        replaced("prices.csv", "BBB,20,", "BBB,2e1,"),
        ("prices.csv", 3, "price", "price is not a number"),
        id="no exponent",
    ),
    pytest.param(
        replaced("cash.csv", "A2,-5.25", "A2,1,000.00"),
        ("cash.csv", 3, "", "has 3 values; the header names 2"),
        id="thousands separator",
    ),
    pytest.param(
        replaced("lots.csv", "2022-05-06", "2022-02-30"),
        ("lots.csv", 4, "acquired_on", "acquired_on is not a date (YYYY-MM-DD)"),
        id="not a date",
    ),
    pytest.param(
        replaced("lots.csv", "2022-05-06", "05/06/2022"),
        ("lots.csv", 4, "acquired_on", "acquired_on is not a date (YYYY-MM-DD)"),
        id="another date format",
    ),
    pytest.param(
        replaced("positions.csv", "A2,AAA,1\n", "A2,AAA,-1\n"),
        ("positions.csv", 4, "quantity", "quantity must be greater than 0"),
        id="negative position",
    ),
    pytest.param(
        replaced("transactions.csv", ",100.00,", ",-100.00,"),
        ("transactions.csv", 4, "amount", "amount must not be negative"),
        id="negative amount",
    ),
    pytest.param(
        replaced("transactions.csv", "T2,A1,sell,BBB,1,", "T2,A1,sell,BBB,-1,"),
        ("transactions.csv", 3, "quantity", "quantity must be greater than 0"),
        id="negative sell quantity",
    ),
    pytest.param(
        replaced("lots.csv", "A2,AAA,L1,1,", "A1,AAA,L1,1,"),
        ("lots.csv", 5, "lot_id", "the same account_id, lot_id as line 2"),
        id="duplicate lot",
    ),
    pytest.param(
        replaced("positions.csv", "A2,AAA,1\n", "A2,AAA,1\nA1,AAA,15\n"),
        ("positions.csv", 5, "symbol", "the same account_id, symbol as line 2"),
        id="duplicate position",
    ),
    pytest.param(
        replaced("positions.csv", "A1,AAA,15", "A1,AAA,16"),
        ("positions.csv", 2, "quantity", "quantity is 16 but the lots of A1 AAA in lots.csv add"),
        id="lots do not add up",
    ),
    pytest.param(
        replaced("lots.csv", "A2,AAA,L1,1,", "A2,BBB,L1,1,"),
        ("lots.csv", 5, "symbol", "A2 holds no BBB in positions.csv"),
        id="lot without position",
    ),
    pytest.param(
        replaced("lots.csv", "2026-12-04,52.5", "2026-12-05,52.5"),
        ("lots.csv", 3, "acquired_on", "acquired_on is 2026-12-05, after the business date"),
        id="lot acquired later",
    ),
    pytest.param(
        replaced("prices.csv", "BBB,20,2026-12-04\n", ""),
        ("positions.csv", 3, "symbol", "BBB has no price in prices.csv"),
        id="no price",
    ),
    pytest.param(
        replaced("cash.csv", "A2,-5.25\n", ""),
        ("positions.csv", 4, "account_id", "A2 has no row in cash.csv"),
        id="no cash row",
    ),
    pytest.param(
        replaced("transactions.csv", "2026-12-05,L2,", "2026-12-05,L9,"),
        ("transactions.csv", 2, "lot_id", "L9 is opened here but is not a lot of A1 in lots.csv"),
        id="buy of an unknown lot",
    ),
    pytest.param(
        replaced(
            "transactions.csv",
            "T2,A1,sell,BBB,1,20.00,20,2026-12-04,2026-12-05,L3",
            "T2,A1,sell,BBB,1,20.00,20,2026-12-04,2026-12-05,L1",
        ),
        ("transactions.csv", 3, "lot_id", "L1 is a lot of AAA, not of BBB"),
        id="lot of another security",
    ),
    pytest.param(
        replaced("transactions.csv", "T3,A2,deposit,,", "T3,A2,deposit,AAA,"),
        ("transactions.csv", 4, "symbol", "symbol is not used by a deposit"),
        id="column a type does not use",
    ),
    pytest.param(
        replaced("transactions.csv", "2026-12-05,L2,", "2026-12-05,,"),
        ("transactions.csv", 2, "lot_id", "lot_id is required for a buy"),
        id="column a type needs",
    ),
    pytest.param(
        replaced("transactions.csv", "T3,A2,deposit", "T3,A2,loan"),
        ("transactions.csv", 4, "type", "type must be one of buy, sell, dividend"),
        id="unknown type",
    ),
    pytest.param(
        replaced("transactions.csv", "T3,A2,", "T3,A9,"),
        ("transactions.csv", 4, "account_id", "A9 has no row in cash.csv"),
        id="unknown account",
    ),
    pytest.param(
        replaced(
            "transactions.csv",
            "T2,A1,sell,BBB,1,20.00,20,2026-12-04,2026-12-05",
            "T2,A1,sell,BBB,1,20.00,20,2026-12-05,2026-12-06",
        ),
        ("transactions.csv", 3, "trade_date", "trade_date is 2026-12-05, after the business"),
        id="trade after the business date",
    ),
    pytest.param(
        replaced("transactions.csv", "2026-12-04,2026-12-05,L3", "2026-12-04,2026-12-03,L3"),
        ("transactions.csv", 3, "settle_date", "settle_date is 2026-12-03, before 2026-12-04"),
        id="settles before trade",
    ),
    pytest.param(
        replaced(
            "transactions.csv",
            "T3,A2,deposit",
            "T2,A1,sell,BBB,1,20.00,20,2026-12-04,2026-12-05,L3,\nT3,A2,deposit",
        ),
        ("transactions.csv", 4, "lot_id", "the same transaction_id, lot_id as line 3"),
        id="duplicate transaction",
    ),
    pytest.param(
        replaced("transactions.csv", "T2,A1,sell", "T1,A1,sell"),
        ("transactions.csv", 3, "transaction_id", "T1 is line 2's transaction, of another"),
        id="one transaction id for two transactions",
    ),
    pytest.param(
        replaced(
            "corporate_actions.csv",
            "CA1,split,AAA,2026-12-10,2,1",
            "CA1,reverse-split,AAA,2026-12-10,2,1",
        ),
        ("corporate_actions.csv", 2, "numerator", "a reverse-split gives fewer new shares"),
        id="reverse split ratio",
    ),
    pytest.param(
        replaced("corporate_actions.csv", ",,,BBB2\n", ",,,\n"),
        ("corporate_actions.csv", 3, "new_symbol", "new_symbol is required for a symbol-change"),
        id="symbol change without the new symbol",
    ),
    pytest.param(
        replaced("prices.csv", "AAA,10.5,2026-12-04", "AAA,10.5,2026-12-03"),
        ("prices.csv", 2, "as_of", "as_of is 2026-12-03, not the folder's date 2026-12-04"),
        id="row of another day",
    ),
    pytest.param(
        replaced("cash.csv", "A1,100.00\n", 'A1,"100.00"x\n'),
        ("cash.csv", 2, "", "is not valid CSV"),
        id="broken quoting",
    ),
]


@pytest.mark.parametrize(("changes", "expected"), CASES)
def test_each_bad_row_is_named_by_file_line_column_and_reason(tmp_path, changes, expected):
    report = check(write_set(tmp_path, changes))
    assert not report.valid
    assert any(p[:3] == expected[:3] and p[3].startswith(expected[3]) for p in found(report)), (
        found(report)
    )


def test_lines_count_from_the_header_and_across_quoted_line_breaks(tmp_path):
    content = GOOD["transactions.csv"].replace('"paid, in cash"', '"paid,\nin cash"')
    content += "T5,A2,fee,,,-1.00,,2026-12-04,2026-12-04,,\n"
    report = check(write_set(tmp_path, {"transactions.csv": content}))
    # T4 spans lines 5 and 6: T5 is on line 7
    assert found(report) == [("transactions.csv", 7, "amount", "amount must not be negative")]


def test_a_line_that_is_not_utf8_is_named(tmp_path):
    folder = write_set(tmp_path, manifest=False)
    (folder / "cash.csv").write_bytes(b"account_id,amount\nA1,100.00\nA\xe92,-5.25\n")
    (folder / "manifest.csv").write_text(manifest_of(folder, list(GOOD)))
    report = check(folder)
    assert ("cash.csv", 3, "", "is not UTF-8") in found(report)


def test_a_byte_order_mark_and_crlf_line_ends_are_fine(tmp_path):
    crlf = "\ufeff" + GOOD["lots.csv"].replace("\n", "\r\n")
    report = check(write_set(tmp_path, {"lots.csv": crlf}))
    assert found(report) == []


def test_a_sell_of_a_lot_not_in_todays_lots_is_checked_against_the_lots_known_before(tmp_path):
    changes = replaced("transactions.csv", "2026-12-05,L3,", "2026-12-05,L7,")
    folder = write_set(tmp_path, changes)
    assert check(folder).unverified_lot_references == 1 and check(folder).valid
    assert check(folder, previous_lots={("A1", "L7")}).valid
    report = check(folder, previous_lots={("A2", "L7")})
    assert [p[:3] for p in found(report)] == [("transactions.csv", 3, "lot_id")]
    assert (
        "L7 is relieved here but is a lot of A1 neither in lots.csv" in report.problems[0].message
    )


def test_a_lot_bought_and_sold_the_same_day_needs_no_lot_row(tmp_path):
    content = GOOD["transactions.csv"] + (
        "T5,A1,buy,AAA,3,31.50,10.5,2026-12-04,2026-12-05,L8,\n"
        "T6,A1,sell,AAA,3,31.50,10.5,2026-12-04,2026-12-05,L8,\n"
    )
    assert check(write_set(tmp_path, {"transactions.csv": content})).valid


def test_unknown_securities_are_reported_apart_not_as_problems(tmp_path):
    report = check(write_set(tmp_path), known_symbols={"AAA"})
    assert report.valid
    unknown = report.unknown_securities
    assert set(unknown) == {"BBB", "BBB2"}
    assert unknown["BBB"].first_seen == "prices.csv:3" and unknown["BBB"].rows == 4
    assert unknown["BBB2"].first_seen == "corporate_actions.csv:3"
    assert check(write_set(tmp_path / "x")).unknown_securities == {}  # none given: not checked


def test_a_missing_manifest_is_a_problem_and_the_rest_is_still_checked(tmp_path):
    changes = replaced("positions.csv", "A1,AAA,15", "A1,AAA,16")
    report = check(write_set(tmp_path, changes, manifest=False))
    problems = found(report)
    assert ("manifest.csv", 0, "", "is missing (a required file of the set)") in problems
    assert any(p[:2] == ("positions.csv", 2) for p in problems)


def test_a_file_the_manifest_lists_that_is_not_there_is_missing(tmp_path):
    folder = write_set(tmp_path)
    (folder / "corporate_actions.csv").unlink()
    report = check(folder)
    assert found(report) == [
        ("corporate_actions.csv", 0, "", "is missing (the manifest lists it with 2 rows)")
    ]


def test_an_optional_file_may_be_left_out(tmp_path):
    assert check(write_set(tmp_path, {"corporate_actions.csv": None})).valid


def test_a_required_file_left_out_is_missing(tmp_path):
    report = check(write_set(tmp_path, {"transactions.csv": None}))
    assert found(report) == [("transactions.csv", 0, "", "is missing (a required file of the set)")]


def test_an_empty_file_is_a_problem(tmp_path):
    folder = write_set(tmp_path)
    (folder / "cash.csv").write_text("")
    problems = found(check(folder))
    assert ("cash.csv", 0, "", "is empty: its first line must name the columns") in problems
    assert any(p[:2] == ("cash.csv", 0) and "manifest says 2; the file is truncated" in p[3]
               for p in problems)  # fmt: skip


def test_a_truncated_file_is_found_by_its_rows_and_digest(tmp_path):
    folder = write_set(tmp_path)
    lots = folder / "lots.csv"
    lots.write_bytes(lots.read_bytes()[:-30])  # cut inside the last row
    problems = found(check(folder))
    messages = [p[3] for p in problems if p[:2] == ("lots.csv", 0)]
    assert any("has 3 rows but the manifest says 4; the file is truncated" in m for m in messages)
    assert any("its SHA-256 is not the manifest's" in m for m in messages)
    # what the cut rows miss is not blamed on the other files
    assert all(p[0] == "lots.csv" for p in problems), problems


def test_a_file_changed_after_the_manifest_is_found_by_its_digest(tmp_path):
    folder = write_set(tmp_path)
    cash = folder / "cash.csv"
    cash.write_text(cash.read_text().replace("100.00", "100.01"))
    assert [p[:2] for p in found(check(folder))] == [("cash.csv", 0)]


def test_a_file_not_in_the_manifest_and_a_manifest_of_another_day(tmp_path):
    folder = write_set(tmp_path, manifest=False)
    names = [n for n in GOOD if n != "cash.csv"]
    (folder / "manifest.csv").write_text(manifest_of(folder, names, day="2026-12-03"))
    problems = found(check(folder))
    assert ("cash.csv", 0, "", "is not in the manifest (manifest.csv)") in problems
    assert (
        "manifest.csv",
        2,
        "business_date",
        "business_date is 2026-12-03, not the folder's date 2026-12-04",
    ) in problems


def test_the_manifest_rows_are_checked_too(tmp_path):
    folder = write_set(tmp_path)
    text = (folder / "manifest.csv").read_text().splitlines()
    text[1] = text[1].rsplit(",", 1)[0] + ",abc"
    text.append("notes.csv,2026-12-04,1," + "0" * 64)
    (folder / "manifest.csv").write_text("\n".join(text) + "\n")
    problems = found(check(folder))
    assert ("manifest.csv", 2, "sha256", "sha256 must be 64 hexadecimal digits") in problems
    assert ("manifest.csv", 8, "file", "file names notes.csv, not a file of the set") in problems


def test_a_csv_file_that_is_not_of_the_set_is_refused(tmp_path):
    folder = write_set(tmp_path)
    (folder / "postions.csv").write_text("a\n")
    (folder / "README.txt").write_text("not a csv: ignored")
    problems = found(check(folder))
    assert len(problems) == 1 and problems[0][:3] == ("postions.csv", 0, "")
    assert problems[0][3].startswith("is not a file of the ballast file set")


def test_problems_kept_are_capped_but_all_are_counted(tmp_path):
    rows = "".join(f"A1,S{i},-1\n" for i in range(50))
    report = check(
        write_set(tmp_path, {"positions.csv": "account_id,symbol,quantity\n" + rows}), limit=10
    )
    assert len(report.problems) == 10 and report.problem_count > 50
    assert report.files["positions.csv"].problems >= 50
