"""`ballast custodian check DIR`: the report, JSON for machines, and the exit statuses (0 a
valid set, 1 problems found, 2 a wrong argument or a folder that cannot be checked)."""

from __future__ import annotations

import csv
import io
import json
from decimal import Decimal

import pytest
from ballast_cli import custodian
from ballast_cli.main import main
from ballast_common.custodian_files import NORTHWIND
from ballast_common.custodian_files.generator import generate
from ballast_engine.commands import EXIT_BAD_INPUT, EXIT_OK, EXIT_PROBLEMS


def ballast(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_:
        main(list(argv))
    code = exit_.value.code
    assert isinstance(code, int)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_a_valid_set_exits_0_with_each_files_counts(tmp_path, capsys):
    made = generate(tmp_path, accounts=20, seed=2)
    code, out, err = ballast(capsys, "custodian", "check", str(made.folder))
    assert code == EXIT_OK and err == ""
    assert out.splitlines()[0].endswith(": valid")
    lots = next(line for line in out.splitlines() if line.strip().startswith("lots.csv"))
    assert lots.split()[1:3] == [f"{made.rows['lots.csv']:,}"] * 2  # rows, and the manifest's


def test_problems_exit_1_grouped_by_file_and_capped(tmp_path, capsys):
    made = generate(tmp_path, accounts=30, seed=2)
    positions = made.folder / "positions.csv"
    rows = list(csv.reader(positions.open(newline="")))
    # every position one share more: its lots no longer add up (and the digest differs)
    for row in rows[1:]:
        row[2] = str(Decimal(row[2]) + 1)
    with positions.open("w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)
    code, out, err = ballast(capsys, "custodian", "check", str(made.folder))
    assert code == EXIT_PROBLEMS
    assert err.splitlines()[-1].startswith("ballast custodian check: error: ")
    section = out.split("\npositions.csv:\n", 1)[1].splitlines()
    shown = [line for line in section if line.startswith("  positions.csv:")]
    assert len(shown) == custodian.SHOWN_PER_FILE
    assert shown[0].startswith("  positions.csv: its SHA-256 is not the manifest's")
    assert shown[1].startswith("  positions.csv:2 quantity: quantity is ")
    bad = made.rows["positions.csv"] + 1  # each position, and the digest
    assert f"  ... and {bad - custodian.SHOWN_PER_FILE:,} more" in section


def test_json_for_machines(tmp_path, capsys):
    made = generate(tmp_path, accounts=10, seed=2, breaks=("lot_sum",))
    securities = tmp_path / "securities.csv"
    securities.write_text("symbol,name\n" + "".join(f"S{i:03d},x\n" for i in range(400)))
    code, out, _ = ballast(
        capsys, "custodian", "check", str(made.folder), "--json", "--securities", str(securities)
    )
    report = json.loads(out)
    assert code == EXIT_PROBLEMS and report["valid"] is False and report["problem_count"] == 1
    problem = report["problems"][0]
    assert (problem["file"], problem["column"]) == ("positions.csv", "quantity")
    assert problem["line"] > 1 and "add up to" in problem["message"]
    unknown = {u["symbol"] for u in report["unknown_securities"]}
    assert "S030N" in unknown and all(s >= "S400" for s in unknown - {"S030N"})
    assert {f["kind"] for f in report["files"]} >= {"lots.csv", "manifest.csv"}


def test_the_second_custodian_is_found_by_its_folder_name(tmp_path, capsys):
    made = generate(tmp_path, accounts=10, seed=2, custodian="northwind", adapter=NORTHWIND)
    code, out, _ = ballast(capsys, "custodian", "check", str(made.folder))
    assert code == EXIT_OK and "(northwind format)" in out and "NWC_LOT_20261204.csv" in out


def test_the_previous_days_lots_are_what_a_sell_may_relieve(tmp_path, capsys):
    before = generate(tmp_path, accounts=5, seed=2)
    made = generate(tmp_path / "next", accounts=5, seed=2)
    transactions = made.folder / "transactions.csv"
    # a sell of a lot gone from today's lots: known the day before, or not
    with transactions.open("a") as f:
        f.write("TX1,C0000001,sell,S001,1,10.00,,2026-12-04,2026-12-05,L000001,\n")
        f.write("TX2,C0000001,sell,S001,1,10.00,,2026-12-04,2026-12-05,NOPE,\n")
    for name in ("lots.csv", "positions.csv"):
        (made.folder / name).write_text(
            "".join(
                line
                for line in (made.folder / name).read_text().splitlines(keepends=True)
                if not line.startswith("C0000001,")
            )
        )
    (made.folder / "manifest.csv").unlink()
    previous = str(before.folder)
    _, out, _ = ballast(capsys, "custodian", "check", str(made.folder), "--json")
    assert json.loads(out)["unverified_lot_references"] >= 2
    _, out, _ = ballast(
        capsys, "custodian", "check", str(made.folder), "--json", "--previous", previous
    )
    messages = [p["message"] for p in json.loads(out)["problems"]]
    assert any(m.startswith("NOPE is relieved here") for m in messages)
    assert not any(m.startswith("L000001 is relieved here") for m in messages)


@pytest.mark.parametrize(
    ("make", "argv", "message"),
    [
        (None, ("{tmp}/missing",), "is not a folder"),
        ("ballast/latest", ("{dir}",), "name the folder by its business date"),
        ("acme/2026-12-04", ("{dir}",), "no adapter for custodian 'acme'"),
        ("ballast/2026-12-04", ("{dir}", "--securities", "{tmp}/none.csv"), "cannot be read"),
        ("ballast/2026-12-04", ("{dir}", "--previous", "{tmp}/none"), "is not a folder"),
    ],
)
def test_a_folder_that_cannot_be_checked_exits_2(tmp_path, capsys, make, argv, message):
    folder = tmp_path / (make or "x")
    if make:
        folder.mkdir(parents=True)
    args = [a.format(tmp=tmp_path, dir=folder) for a in argv]
    code, _, err = ballast(capsys, "custodian", "check", *args)
    assert code == EXIT_BAD_INPUT
    assert err.startswith("ballast custodian check: error: ") and message in err


def test_a_named_format_reads_any_folder(tmp_path, capsys):
    made = generate(tmp_path, accounts=3, seed=2, custodian="acme")
    code, _, _ = ballast(capsys, "custodian", "check", str(made.folder), "--format", "ballast")
    assert code == EXIT_OK


@pytest.mark.parametrize(
    "argv", [("--date", "someday"), ("--format", "nope"), ("--limit", "x"), ()]
)
def test_a_wrong_argument_exits_2(tmp_path, capsys, argv):
    folder = () if not argv else (str(tmp_path),)
    code, _, err = ballast(capsys, "custodian", "check", *folder, *argv)
    assert code == EXIT_BAD_INPUT and err.startswith("usage: ")


def test_progress_is_a_line_on_large_files_only():
    out = io.StringIO()
    line = custodian.ProgressLine(out, every_s=0.0)
    line("small.csv", 10, 100, 1)
    assert out.getvalue() == ""
    big = custodian.PROGRESS_BYTES * 2
    line("lots.csv", big // 2, big, 12_345)
    line("lots.csv", big, big, 24_690)
    assert out.getvalue().splitlines() == [
        "checking lots.csv: 50% (12,345 rows)",
        "checking lots.csv: 100% (24,690 rows)",
    ]
