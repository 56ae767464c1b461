"""Seeding the custodial book from a book file set (docs/book-files.md): `accounts.csv`,
`cash.csv`, `prices.csv`, `positions.csv` and `lots.csv` of one folder, the folder's name
its as-of date.

Each file is read once, as a stream: its header against the file's columns
(`contracts/book_files.py`, the one definition), every value with the same checks as the
other readers (`value_checker`), and the good rows staged in the store in chunks. The rules
across rows and files (repeats, every account has cash, lots add up to their position, a
price for every symbol held) are then checked in SQL on the staged rows. Nothing is applied
unless everything passed; a problem names its file, line and column. Other columns of the
book's files (households, models, settings) are checked but not kept: a custodian holds
accounts, cash and lots.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

from ballast_common.contracts.book_files import (
    ACCOUNTS,
    CASH,
    LOTS,
    POSITIONS,
    PRICES,
    CsvFile,
    value_checker,
)

from custodian_sim.store import BookStore

BOOK_FILES: tuple[CsvFile, ...] = (ACCOUNTS, CASH, PRICES, POSITIONS, LOTS)
CHUNK_ROWS = 10_000
MAX_PROBLEMS = 1000


@dataclass(frozen=True)
class FileProblem:
    """One bad row (line > 0) or file (line 0) of the book file set."""

    file: str
    line: int
    column: str
    message: str

    def __str__(self) -> str:
        at = f"{self.file}:{self.line}" if self.line else self.file
        return f"{at} {self.column}: {self.message}".replace(" :", ":")


@dataclass
class Problems:
    """The problems found, the first MAX_PROBLEMS kept, all counted."""

    kept: list[FileProblem] = field(default_factory=list)
    count: int = 0

    def add(self, file: str, line: int, column: str, message: str) -> None:
        self.count += 1
        if len(self.kept) < MAX_PROBLEMS:
            self.kept.append(FileProblem(file, line, column, message))


def digest_of(folder: Path) -> str:
    """The SHA-256 of the set's files (names and bytes, in a fixed order): the same set
    gives the same digest."""
    digest = hashlib.sha256()
    for file in BOOK_FILES:
        path = folder / file.name
        digest.update(file.name.encode() + b"\0")
        if path.is_file():
            with path.open("rb") as data:
                digest.update(hashlib.file_digest(data, "sha256").digest())
    return digest.hexdigest()


def _units(value: str, places: int) -> int:
    """A checked plain decimal as an exact integer of 10^-places."""
    return int(Decimal(value).scaleb(places))


# The staged values of a good row: (line, named values) -> the staging table's row.
Stager = Callable[[int, dict[str, str]], tuple[Any, ...]]

_STAGERS: dict[str, tuple[str, Stager]] = {
    ACCOUNTS.name: (
        "stage_accounts",
        lambda n, v: (n, v["account_id"], v.get("account_type") or "taxable"),
    ),
    CASH.name: (
        "stage_cash",
        lambda n, v: (n, v["account_id"], v.get("sleeve_id", ""), _units(v["amount"], 2)),
    ),
    PRICES.name: ("stage_prices", lambda n, v: (n, v["symbol"], v["price"])),
    POSITIONS.name: (
        "stage_positions",
        lambda n, v: (n, v["account_id"], v["symbol"], _units(v["quantity"], 8)),
    ),
    LOTS.name: (
        "stage_lots",
        lambda n, v: (
            n,
            v["account_id"],
            v["symbol"],
            v["lot_id"],
            _units(v["quantity"], 8),
            _units(v["cost_basis"], 4),
            v["acquired_on"],
        ),
    ),
}


def stage_book(store: BookStore, folder: Path, as_of: date) -> Problems:
    """Read every file of the set into the store's staging tables (inside the caller's
    transaction) and check them; the problems found (none: the staged book may be applied)."""
    problems = Problems()
    store.start_staging()
    for file in BOOK_FILES:
        path = folder / file.name
        if not path.is_file():
            problems.add(file.name, 0, "", "is missing (a required file of the book set)")
            continue
        table, stager = _STAGERS[file.name]
        chunk: list[tuple[Any, ...]] = []
        for line, values in _good_rows(file, path, as_of, problems):
            chunk.append(stager(line, values))
            if len(chunk) >= CHUNK_ROWS:
                store.stage(table, chunk)
                chunk = []
        store.stage(table, chunk)
    if problems.count == 0:
        for file, line, column, message in store.staged_problems(MAX_PROBLEMS):
            problems.add(file, line, column, message)
    return problems


def _good_rows(
    file: CsvFile, path: Path, as_of: date, problems: Problems
) -> Iterator[tuple[int, dict[str, str]]]:
    """The rows of one file whose values are all valid, as (line, column -> value); the
    others are named in `problems`."""
    name = file.name
    with path.open(encoding="utf-8-sig", newline="") as f:
        rows = csv.reader(f, strict=True)
        try:
            header = next(rows, None)
        except (csv.Error, UnicodeDecodeError) as exc:
            problems.add(name, 1, "", f"the header cannot be read ({exc})")
            return
        if header is None:
            problems.add(name, 0, "", "is empty: its first line must name the columns")
            return
        columns = _header(file, header, problems)
        if columns is None:
            return
        checks = [(i, c.name, value_checker(c)) for i, c in columns]
        day = as_of.isoformat()
        end = rows.line_num
        try:
            for row in rows:
                line, end = end + 1, rows.line_num
                if not row:
                    continue
                if len(row) != len(header):
                    width = f"has {len(row)} values; the header names {len(header)}"
                    problems.add(name, line, "", width)
                    continue
                values: dict[str, str] = {}
                good = True
                for i, column, check in checks:
                    found = check(row[i])
                    if found is not None:
                        problems.add(name, line, column, f"{column} {found}")
                        good = False
                    values[column] = row[i].strip()
                if good and file is LOTS and values["acquired_on"] > day:
                    late = f"acquired_on is {values['acquired_on']}, after the book's date {day}"
                    problems.add(name, line, "acquired_on", late)
                    good = False
                if good:
                    yield line, values
        except (csv.Error, UnicodeDecodeError) as exc:
            problems.add(name, rows.line_num, "", f"cannot be read ({exc}); the rest is not read")


def _header(file: CsvFile, header: list[str], problems: Problems) -> list[tuple[int, Any]] | None:
    """Each known column's position and definition; None when a required one is missing."""
    known = {c.name: c for c in file.columns}
    found: list[tuple[int, Any]] = []
    seen: set[str] = set()
    for i, raw in enumerate(header):
        key = raw.strip().lower()
        if key not in known:
            shown = ", ".join(known)
            problems.add(file.name, 1, raw, f"{raw!r} is not a column of {file.name} ({shown})")
        elif key in seen:
            problems.add(file.name, 1, raw, f"column {raw!r} appears twice")
        else:
            seen.add(key)
            found.append((i, known[key]))
    missing = [c.name for c in file.columns if c.required and c.name not in seen]
    for name in missing:
        problems.add(file.name, 1, name, f"required column {name!r} is missing")
    return None if missing else found
