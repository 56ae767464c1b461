"""`ballast custodian check DIR`: check a custodian's daily file set (docs/custodian-files.md)
offline, with the same validation the ingest runs, and print the report.

DIR is `<custodian>/<YYYY-MM-DD>/`: the custodian's name picks its adapter, the folder's name
is the business date (`--custodian`, `--format` and `--date` override them). Exit status 0:
the set is valid; 1: it has problems (each named by file, line, column and reason); 2: a
wrong argument or a folder that cannot be checked.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections.abc import Iterable
from datetime import date
from pathlib import Path
from typing import TextIO

from ballast_common.custodian_files import (
    ADAPTERS,
    CustodianFormat,
    Problem,
    Report,
    adapter_for,
    check_file_set,
    read_lot_keys,
)
from ballast_engine.commands import EXIT_OK, EXIT_PROBLEMS, CommandError, error, runs

SHOWN_PER_FILE = 20
PROGRESS_BYTES = 8 << 20  # files larger than this get a progress line
PROGRESS_EVERY_S = 1.0


class ProgressLine:
    """A progress line on stderr for large files: a line rewritten in place on a terminal,
    a line every few seconds otherwise."""

    def __init__(self, out: TextIO = sys.stderr, every_s: float = PROGRESS_EVERY_S) -> None:
        self.out = out
        self.every_s = every_s
        self.last = 0.0
        self.tty = out.isatty()

    def __call__(self, name: str, done: int, total: int, rows: int) -> None:
        if total < PROGRESS_BYTES:
            return
        now = time.monotonic()
        finished = done >= total
        if not finished and now - self.last < (self.every_s if self.tty else 5 * self.every_s):
            return
        self.last = now
        percent = 100 * done // max(total, 1)
        text = f"checking {name}: {percent}% ({rows:,} rows)"
        if self.tty:
            self.out.write("\r" + text.ljust(60) + ("\n" if finished else ""))
        else:
            self.out.write(text + "\n")
        self.out.flush()


def symbols_of(path: Path) -> set[str]:
    """The symbols the security master knows, from a CSV file with a `symbol` column (a book's
    securities.csv, an export of the security master)."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            rows = csv.reader(f)
            header = [h.strip().lower() for h in next(rows, [])]
            if "symbol" not in header:
                raise CommandError(f"{path}: no 'symbol' column in its first line")
            at = header.index("symbol")
            return {row[at].strip() for row in rows if len(row) > at and row[at].strip()}
    except OSError as exc:
        raise CommandError(f"{path}: cannot be read ({exc.strerror})") from None


def _date_of(folder: Path, given: date | None) -> date:
    if given is not None:
        return given
    name = folder.resolve().name
    try:
        return date.fromisoformat(name) if len(name) == 10 else _no_date(folder)
    except ValueError:
        return _no_date(folder)


def _no_date(folder: Path) -> date:
    raise CommandError(
        f"{folder}: name the folder by its business date (YYYY-MM-DD) or give --date"
    )


def _adapter(custodian: str, format_name: str | None) -> CustodianFormat:
    try:
        return adapter_for(format_name or custodian)
    except KeyError as exc:
        raise CommandError(f"{exc.args[0]}; give --format") from None


def check_folder(args: argparse.Namespace) -> Report:
    """The report of the file set the arguments name (CommandError: it cannot be checked)."""
    folder: Path = args.folder
    if not folder.is_dir():
        raise CommandError(f"{folder} is not a folder (a file set is <custodian>/<YYYY-MM-DD>/)")
    business_date = _date_of(folder, args.date)
    custodian = args.custodian or folder.resolve().parent.name
    adapter = _adapter(custodian, args.format)
    known = symbols_of(args.securities) if args.securities else None
    previous = None
    if args.previous is not None:
        if not args.previous.is_dir():
            raise CommandError(f"{args.previous} is not a folder")
        try:
            previous = read_lot_keys(args.previous, adapter, _date_of(args.previous, None))
        except (OSError, ValueError) as exc:
            raise CommandError(f"--previous: {exc}") from None
    return check_file_set(
        folder,
        adapter,
        business_date,
        custodian=custodian,
        known_symbols=known,
        previous_lots=previous,
        progress=None if args.json else ProgressLine(),
        limit=max(args.limit, 1),
    )


def render(report: Report, shown_per_file: int = SHOWN_PER_FILE) -> Iterable[str]:
    """The report for people: each file's counts, then its problems, a few of each file."""
    state = "valid" if report.valid else f"{report.problem_count:,} problem(s)"
    yield (
        f"{report.custodian} {report.business_date.isoformat()} ({report.adapter} format), "
        f"{report.folder}: {state}"
    )
    yield ""
    yield f"  {'file':<28} {'rows':>11} {'manifest':>11} {'bytes':>13} {'problems':>9}"
    for f in report.files.values():
        manifest = "-" if f.manifest_rows is None else f"{f.manifest_rows:,}"
        rows = f"{f.rows:,}" if f.present else "missing"
        yield f"  {f.name:<28} {rows:>11} {manifest:>11} {f.size:>13,} {f.problems:>9,}"
    by_file: dict[str, list[Problem]] = {}
    for p in report.problems:
        by_file.setdefault(p.file, []).append(p)
    counted = {f.name: f.problems for f in report.files.values()}
    for name, problems in by_file.items():
        yield ""
        yield f"{name}:"
        problems.sort(key=lambda p: p.line)
        for p in problems[:shown_per_file]:
            yield f"  {p}"
        more = (counted.get(name) or len(problems)) - min(len(problems), shown_per_file)
        if more > 0:
            yield f"  ... and {more:,} more"
    kept = len(report.problems)
    if report.problem_count > kept:
        yield ""
        yield f"(only the first {kept:,} problems were kept; --limit keeps more)"
    if report.securities_checked:
        yield ""
        unknown = list(report.unknown_securities.values())
        if unknown:
            yield f"unknown securities ({len(unknown)}), for the security master:"
            for u in unknown[:shown_per_file]:
                yield f"  {u.symbol} first in {u.first_seen} ({u.rows:,} row(s))"
            if len(unknown) > shown_per_file:
                yield f"  ... and {len(unknown) - shown_per_file:,} more"
        else:
            yield "unknown securities: none"
    if report.unverified_lot_references:
        yield ""
        yield (
            f"{report.unverified_lot_references:,} lot(s) relieved today are not in today's "
            "lots and were not checked against the lots known before (--previous DIR)"
        )


# --- the command --------------------------------------------------------------------------


def register(areas: argparse._SubParsersAction) -> None:
    custodian = areas.add_parser("custodian", help="the custodian's daily files")
    cmds = custodian.add_subparsers(dest="custodian_cmd", metavar="COMMAND", required=True)
    check = cmds.add_parser(
        "check",
        help="check a custodian's daily file set offline",
        description="Check a custodian's daily file set (docs/custodian-files.md) with the "
        "ingest's validation and print the report: exit 0 valid, 1 problems found, 2 a "
        "folder that cannot be checked.",
    )
    check.add_argument("folder", metavar="DIR", type=Path, help="e.g. custodian/ballast/2026-12-04")
    check.add_argument("--date", type=date.fromisoformat, help="default: the folder's name")
    check.add_argument("--custodian", help="default: the name of DIR's parent folder")
    check.add_argument(
        "--format",
        choices=sorted(ADAPTERS),
        help="the adapter to read the files with (default: the custodian's)",
    )
    check.add_argument(
        "--securities",
        type=Path,
        metavar="FILE",
        help="a CSV with a symbol column: the securities known (others are reported as "
        "unknown securities)",
    )
    check.add_argument(
        "--previous",
        type=Path,
        metavar="DIR",
        help="the previous business day's folder: the lots a sell may relieve",
    )
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.add_argument(
        "--limit", type=int, default=1000, help="problems kept in the report (default 1000)"
    )
    runs(check, _run_check)


def _run_check(args: argparse.Namespace) -> int:
    report = check_folder(args)
    if args.json:
        json.dump(report.as_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        for line in render(report):
            print(line)
    if report.valid:
        return EXIT_OK
    error(args, f"{report.problem_count:,} problem(s) in the file set")
    return EXIT_PROBLEMS
