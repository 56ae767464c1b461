"""The custodian file set's definition, its adapters (the second custodian's format) and the
generator: a generated set checks clean, in either format, and each seeded break is where it
says."""

from __future__ import annotations

import csv
import hashlib
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from ballast_common.contracts.book_files import CsvColumn, value_checker
from ballast_common.contracts.custodian_files import (
    CORPORATE_ACTION_RULES,
    CORPORATE_ACTION_TYPES,
    CUSTODIAN_FILES,
    TRANSACTION_RULES,
    TRANSACTION_TYPES,
)
from ballast_common.custodian_files import (
    ADAPTERS,
    BALLAST,
    NORTHWIND,
    adapter_for,
    check_file_set,
    read_lot_keys,
)
from ballast_common.custodian_files.generator import BREAKS, generate
from ballast_common.custodian_files.validation import shares, units
from hypothesis import given
from hypothesis import strategies as st

DAY = date(2026, 12, 4)


def test_every_type_has_its_rule_and_every_rule_names_columns_of_its_file():
    assert set(TRANSACTION_RULES) == set(TRANSACTION_TYPES)
    assert set(CORPORATE_ACTION_RULES) == set(CORPORATE_ACTION_TYPES)
    files = {f.name: {c.name for c in f.columns} for f in CUSTODIAN_FILES}
    for rules, name in ((TRANSACTION_RULES, "transactions.csv"),
                        (CORPORATE_ACTION_RULES, "corporate_actions.csv")):  # fmt: skip
        for rule in rules.values():
            assert set(rule.required) | set(rule.optional) <= files[name]
    for f in CUSTODIAN_FILES:
        assert set(f.unique) <= files[f.name]


def test_every_adapter_maps_every_canonical_column():
    for adapter in ADAPTERS.values():
        for f in CUSTODIAN_FILES:
            assert set(adapter.layout(f.name).columns) == {c.name for c in f.columns}


def test_the_registry_finds_an_adapter_by_custodian_name_and_names_those_it_knows():
    assert adapter_for("Northwind") is NORTHWIND and adapter_for("ballast") is BALLAST
    with pytest.raises(KeyError, match=r"no adapter for custodian 'acme' \(known: ballast"):
        adapter_for("acme")


@given(
    st.decimals(min_value=Decimal("-1e17"), max_value=Decimal("1e17"), places=8, allow_nan=False)
)
def test_a_plain_decimal_within_its_scale_passes_and_sums_exactly(value):
    text = format(value, "f")
    assert value_checker(CsvColumn("q", "decimal", scale=8))(text) is None
    assert Decimal(shares(units(text))) == value
    positive = value_checker(CsvColumn("q", "decimal", scale=8, minimum="positive"))(text)
    assert (positive is None) == (value > 0)


@pytest.mark.parametrize(
    ("kind", "value", "problem"),
    [
        ("decimal", "1e3", "is not a number"),
        ("decimal", "1,000", "is not a number"),
        ("decimal", "1.123456789", "must have at most 18 digits before the point and 8 after"),
        ("decimal", "1" * 19, "must have at most 18 digits before the point and 8 after"),
        ("decimal", " 12.5 ", None),
        ("decimal", "", "is empty"),
        ("id", " A1", "must be 1 to 200 characters without leading or trailing spaces"),
        ("date", "2026-02-29", "is not a date (YYYY-MM-DD)"),
        ("date", "20261204", "is not a date (YYYY-MM-DD)"),
        ("date", "2028-02-29", None),
        ("choice", "SELL", None),
        ("choice", "short", "must be one of buy, sell"),
    ],
)
def test_value_checks_speak_the_book_loads_words(kind, value, problem):
    column = CsvColumn("c", kind, choices=("buy", "sell"))  # type: ignore[arg-type]
    assert value_checker(column)(value) == problem


# --- the second custodian ---------------------------------------------------------------------

NORTHWIND_FILES = {
    "NWC_PRC_20261204.csv": "Ticker,ClosePx,AsOf\nAAA,10.5,12/04/2026\nBBB,20,12/04/2026\n",
    "NWC_CSH_20261204.csv": "AcctNo,CashBal\nA1,100.00\n",
    "NWC_POS_20261204.csv": "AcctNo,Ticker,Qty\nA1,AAA,15\nA1,BBB,1\n",
    "NWC_LOT_20261204.csv": (
        "AcctNo,Ticker,LotRef,Qty,OpenDate,TotalCost\n"
        "A1,AAA,L1,10,01/02/2020,100\n"
        "A1,AAA,L2,5,12/04/2026,52.50\n"
        "A1,BBB,L3,1,05/06/2022,20\n"
    ),
    "NWC_TXN_20261204.csv": (
        "TxnRef,AcctNo,TxnCode,Ticker,Qty,NetAmt,TradeDate,SettleDate,LotRef\n"
        "T1,A1,BY,AAA,5,-52.50,12/04/2026,12/05/2026,L2\n"
        "T2,A1,SL,BBB,-1,20.00,12/04/2026,12/05/2026,L3\n"
        "T3,A1,WD,,,-10.00,12/04/2026,12/04/2026,\n"
    ),
}


def northwind_set(root: Path, changes: dict[str, str] | None = None) -> Path:
    folder = root / "northwind" / "2026-12-04"
    folder.mkdir(parents=True)
    files = {**NORTHWIND_FILES, **(changes or {})}
    control = ["FileName,AsOf,RecordCount,SHA256"]
    for name, content in files.items():
        (folder / name).write_text(content, newline="")
        rows = content.count("\n") - 1
        digest = hashlib.sha256(content.encode()).hexdigest()
        control.append(f"{name},12/04/2026,{rows},{digest}")
    (folder / "NWC_CTL_20261204.csv").write_text("\n".join(control) + "\n")
    return folder


def problems(folder: Path) -> list[tuple[str, int, str, str]]:
    report = check_file_set(folder, NORTHWIND, DAY)
    return [(p.file, p.line, p.column, p.message) for p in report.problems]


def test_the_second_custodians_files_check_clean(tmp_path):
    report = check_file_set(northwind_set(tmp_path), NORTHWIND, DAY)
    assert report.valid, report.problems
    assert report.files["transactions.csv"].name == "NWC_TXN_20261204.csv"
    assert report.files["transactions.csv"].rows == 3


@pytest.mark.parametrize(
    ("name", "old", "new", "expected"),
    [
        ("NWC_LOT_20261204.csv", "05/06/2022", "2022-05-06",
         ("NWC_LOT_20261204.csv", 4, "OpenDate", "OpenDate is not a date (MM/DD/YYYY)")),
        ("NWC_TXN_20261204.csv", "SL,BBB,-1", "SL,BBB,1",
         ("NWC_TXN_20261204.csv", 3, "Qty", "Qty must be negative for a sell")),
        ("NWC_TXN_20261204.csv", "BY,AAA,5", "BY,AAA,-5",
         ("NWC_TXN_20261204.csv", 2, "Qty", "Qty must not be negative for a buy")),
        ("NWC_TXN_20261204.csv", "WD,,,-10.00", "WD,,,10.00",
         ("NWC_TXN_20261204.csv", 4, "NetAmt", "NetAmt must be negative for a withdrawal")),
        ("NWC_TXN_20261204.csv", "T3,A1,WD", "T3,A1,XX",
         ("NWC_TXN_20261204.csv", 4, "TxnCode", "TxnCode is not a code of northwind (by, cd")),
        ("NWC_POS_20261204.csv", "A1,AAA,15", "A1,AAA,14",
         ("NWC_POS_20261204.csv", 2, "Qty",
          "Qty is 14 but the lots of A1 AAA in NWC_LOT_20261204.csv add up to 15")),
        ("NWC_POS_20261204.csv", "AcctNo,Ticker,Qty", "AcctNo,Ticker,Quantity",
         ("NWC_POS_20261204.csv", 1, "Quantity", "'Quantity' is not a column of this file")),
    ],
)  # fmt: skip
def test_the_second_custodians_problems_name_its_own_files_and_columns(
    tmp_path, name, old, new, expected
):
    assert old in NORTHWIND_FILES[name]
    folder = northwind_set(tmp_path, {name: NORTHWIND_FILES[name].replace(old, new)})
    found = problems(folder)
    assert any(p[:3] == expected[:3] and p[3].startswith(expected[3]) for p in found), found


def test_a_file_of_another_day_is_named_by_its_date(tmp_path):
    folder = northwind_set(tmp_path)
    (folder / "NWC_POS_20261204.csv").rename(folder / "NWC_POS_20261203.csv")
    found = problems(folder)
    assert (
        "NWC_POS_20261203.csv",
        0,
        "",
        "is the positions.csv of 2026-12-03, not of the folder's date 2026-12-04",
    ) in found
    assert (
        "NWC_POS_20261204.csv",
        0,
        "",
        "is missing (the manifest lists it with 2 rows)",
    ) in found


def test_encoding_a_row_for_a_custodian_and_adapting_it_back_is_the_same_row():
    row = {"transaction_id": "T9", "account_id": "A1", "type": "sell", "symbol": "AAA",
           "quantity": "3", "amount": "31.50", "trade_date": "2026-12-04",
           "settle_date": "2026-12-05", "lot_id": "L1"}  # fmt: skip
    from ballast_common.contracts.custodian_files import TRANSACTIONS

    raw = NORTHWIND.encode("transactions.csv", row)
    assert raw[2:5] == ["SL", "AAA", "-3"] and raw[7] == "12/04/2026"
    header = NORTHWIND.header_names("transactions.csv")
    by_canonical = {header[h.lower()]: v for h, v in zip(NORTHWIND.header("transactions.csv"), raw,
                                                          strict=True)}  # fmt: skip
    values = [by_canonical.get(c.name, "") for c in TRANSACTIONS.columns]
    present = frozenset(c.name for c in TRANSACTIONS.columns)
    assert NORTHWIND.adapt(TRANSACTIONS, values, present) == []
    assert dict(zip([c.name for c in TRANSACTIONS.columns], values, strict=True)) == {
        **{c.name: "" for c in TRANSACTIONS.columns},
        **row,
    }


# --- the generator ----------------------------------------------------------------------------


@pytest.mark.parametrize("adapter", [BALLAST, NORTHWIND], ids=lambda a: a.name)
def test_a_generated_set_checks_clean_in_either_format(tmp_path, adapter):
    made = generate(tmp_path, accounts=120, seed=7, custodian=adapter.name, adapter=adapter)
    report = check_file_set(made.folder, adapter, made.business_date, known_symbols=set())
    assert report.valid, report.problems[:5]
    assert made.folder == tmp_path / adapter.name / "2026-12-04"
    assert {f.kind: f.rows for f in report.files.values() if f.kind != "manifest.csv"} == made.rows
    assert made.rows["cash.csv"] == 120 and made.rows["lots.csv"] > 2 * made.rows["positions.csv"]
    kinds = {row[2] for row in _rows(made.folder / adapter.file_name("transactions.csv", DAY))}
    assert len(kinds) >= 6  # most types of transaction appear
    assert report.unverified_lot_references == 0


def test_the_same_seed_gives_the_same_files(tmp_path):
    first = generate(tmp_path / "a", accounts=30, seed=3)
    again = generate(tmp_path / "b", accounts=30, seed=3)
    other = generate(tmp_path / "c", accounts=30, seed=4)
    manifest = "manifest.csv"
    assert (first.folder / manifest).read_bytes() == (again.folder / manifest).read_bytes()
    assert (first.folder / manifest).read_bytes() != (other.folder / manifest).read_bytes()


def test_seeded_breaks_are_where_they_say(tmp_path):
    clean = generate(tmp_path / "clean", accounts=40, seed=5)
    made = generate(tmp_path / "broken", accounts=40, seed=5, breaks=BREAKS[:3])
    by_kind = {b.kind: b for b in made.breaks}
    report = check_file_set(made.folder, BALLAST, DAY)
    lot_sum = by_kind["lot_sum"]
    # only the lot_sum break is a problem of the files; the others are for reconciliation
    assert [(p.file, p.column) for p in report.problems] == [("positions.csv", "quantity")]
    assert f"lots of {lot_sum.account_id} {lot_sum.symbol}" in report.problems[0].message
    lots = {(r[0], r[2]): r for r in _rows(made.folder / "lots.csv")}
    missing = by_kind["missing_lot"]
    assert (missing.account_id, missing.lot_id) not in lots
    basis = by_kind["basis_error"]
    assert lots[(basis.account_id, basis.lot_id)][5] in basis.detail
    assert read_lot_keys(made.folder, BALLAST, DAY) == set(lots)
    assert (missing.account_id, missing.lot_id) in read_lot_keys(clean.folder, BALLAST, DAY)


def test_a_truncated_set_fails_on_its_manifest(tmp_path):
    made = generate(tmp_path, accounts=40, seed=5, breaks=("truncated",))
    report = check_file_set(made.folder, BALLAST, DAY)
    messages = [(p.file, p.line, p.message) for p in report.problems]
    assert ("lots.csv", 0) in {m[:2] for m in messages}
    assert any("the file is truncated" in m[2] for m in messages)


def test_unknown_breaks_are_refused():
    with pytest.raises(ValueError, match="unknown break"):
        generate(Path("/nonexistent"), accounts=3, breaks=("late",))


def _rows(path: Path) -> list[list[str]]:
    with path.open(newline="") as f:
        return list(csv.reader(f))[1:]


def test_an_unknown_code_is_one_problem_not_also_a_wrong_sign(tmp_path):
    name = "NWC_TXN_20261204.csv"
    folder = northwind_set(tmp_path, {name: NORTHWIND_FILES[name].replace("T3,A1,WD", "T3,A1,XX")})
    assert [p[:3] for p in problems(folder)] == [(name, 4, "TxnCode")]
