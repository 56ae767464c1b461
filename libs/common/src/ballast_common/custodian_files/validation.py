"""Checking a custodian's daily file set (`docs/custodian-files.md`), one streamed pass per
file, naming every bad row by file, line, column and reason.

Each file is read once, row by row, through its custodian's adapter; the only state kept
across files is what the cross-checks need, in dicts keyed by tuples of the row's strings
(prices' symbols, cash's accounts, positions' quantities, lots' keys and sums). Quantities are
summed exactly, as integers of 1e-8 shares. Unknown securities (given the security master's
symbols) are not problems of the files: they are reported apart, for the security master.
"""

from __future__ import annotations

import csv
import hashlib
import re
import time
from collections.abc import Callable, Container, Iterator
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

from ballast_common.contracts.book_files import CsvFile, value_checker
from ballast_common.contracts.custodian_files import (
    BY_NAME,
    CASH,
    CORPORATE_ACTION_ALWAYS,
    CORPORATE_ACTION_RULES,
    CORPORATE_ACTIONS,
    CUSTODIAN_FILES,
    LOTS,
    MANIFEST,
    OPENS_LOT,
    POSITIONS,
    PRICES,
    RELIEVES_LOT,
    TRANSACTION_ALWAYS,
    TRANSACTION_RULES,
    TRANSACTIONS,
    TypeRule,
)
from ballast_common.custodian_files.adapters import CustodianFormat

QUANTITY_SCALE = 8
_UNIT = 10**QUANTITY_SCALE
_SYMBOL_BITS = 24  # a lot's entry: its line, then its symbol's index in these low bits
_SYMBOL_MASK = (1 << _SYMBOL_BITS) - 1
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
PROGRESS_ROWS = 65_536  # rows between two progress calls
DEFAULT_LIMIT = 1000

# (file as delivered, bytes read, bytes in all, rows so far)
Progress = Callable[[str, int, int, int], None]
LotKey = tuple[str, str]  # (account_id, lot_id)


@dataclass(frozen=True)
class Problem:
    """One bad row (line > 0) or file (line 0), named as the custodian delivered it."""

    file: str
    line: int
    column: str
    message: str

    def where(self) -> str:
        at = f"{self.file}:{self.line}" if self.line else self.file
        return f"{at} {self.column}".rstrip()

    def __str__(self) -> str:
        return f"{self.where()}: {self.message}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "message": self.message,
        }


@dataclass
class FileSummary:
    """What was found of one file of the set."""

    kind: str  # the canonical file (`positions.csv`, ...)
    name: str  # its name as the custodian writes it
    present: bool = False
    rows: int = 0
    size: int = 0
    problems: int = 0
    manifest_rows: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class UnknownSecurity:
    """A symbol the security master does not know: where it was first seen, in how many rows."""

    symbol: str
    first_seen: str
    rows: int = 1


@dataclass
class Report:
    """The outcome of checking one file set."""

    custodian: str
    adapter: str
    business_date: date
    folder: str
    files: dict[str, FileSummary] = field(default_factory=dict)  # canonical name -> summary
    problems: list[Problem] = field(default_factory=list)  # the first `limit`
    problem_count: int = 0
    unknown_securities: dict[str, UnknownSecurity] = field(default_factory=dict)
    securities_checked: bool = False
    # lots relieved by a sell or transfer out that are not in today's lots.csv and were not
    # checked against the lots known before (none were given)
    unverified_lot_references: int = 0
    seconds: float = 0.0

    @property
    def valid(self) -> bool:
        return self.problem_count == 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "custodian": self.custodian,
            "adapter": self.adapter,
            "business_date": self.business_date.isoformat(),
            "folder": self.folder,
            "valid": self.valid,
            "files": [f.as_dict() for f in self.files.values()],
            "problem_count": self.problem_count,
            "problems": [p.as_dict() for p in self.problems],
            "problems_truncated": self.problem_count > len(self.problems),
            "unknown_securities": [u.__dict__ for u in self.unknown_securities.values()]
            if self.securities_checked
            else None,
            "unverified_lot_references": self.unverified_lot_references,
            "seconds": round(self.seconds, 3),
        }


def _at(file: CsvFile, *names: str) -> tuple[int, ...]:
    columns = [c.name for c in file.columns]
    return tuple(columns.index(n) for n in names)


def units(value: str) -> int:
    """A valid quantity as an exact integer of 1e-8 shares."""
    if "." not in value:
        return int(value) * _UNIT
    whole, _, fraction = value.strip().partition(".")
    part = int(fraction.ljust(QUANTITY_SCALE, "0"))
    amount = int(whole) * _UNIT if whole.strip("+-") else 0
    return amount - part if whole.startswith("-") else amount + part


def shares(amount: int) -> str:
    """Units of 1e-8 shares as a plain decimal."""
    return format(Decimal(amount).scaleb(-QUANTITY_SCALE).normalize(), "f")


class _Reader:
    """The decoded lines of one file, its SHA-256 and bytes read as they go; lines that are
    not UTF-8 are kept (with replacement characters) and named."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.digest = hashlib.sha256()
        self.bytes_read = 0
        self.lines = 0
        self.not_utf8: list[int] = []

    def __iter__(self) -> Iterator[str]:
        update = self.digest.update
        for chunk in self._raw:
            update(chunk)
            self.bytes_read += len(chunk)
            self.lines += 1
            if self.lines == 1 and chunk.startswith(b"\xef\xbb\xbf"):
                chunk = chunk[3:]
            try:
                yield chunk.decode("utf-8")
            except UnicodeDecodeError:
                self.not_utf8.append(self.lines)
                yield chunk.decode("utf-8", "replace")

    def drain(self) -> None:
        """Read what is left (for the digest) after a row the CSV reader could not take."""
        for _ in self:
            pass


RowHandler = Callable[[int, list[str], "set[str] | None"], None]


class _FileSetCheck:
    def __init__(
        self,
        folder: Path,
        adapter: CustodianFormat,
        business_date: date,
        custodian: str,
        known_symbols: Container[str] | None,
        previous_lots: Container[LotKey] | None,
        progress: Progress | None,
        limit: int,
    ) -> None:
        self.folder = folder
        self.adapter = adapter
        self.day = business_date.isoformat()
        self.known = known_symbols
        self.previous_lots = previous_lots
        self.progress = progress
        self.limit = limit
        self.report = Report(
            custodian,
            adapter.name,
            business_date,
            str(folder),
            securities_checked=known_symbols is not None,
        )
        self.names = {f.name: adapter.file_name(f.name, business_date) for f in CUSTODIAN_FILES}
        self.summary: FileSummary = FileSummary("", "")
        self.raw_names: list[str] = []  # the header names of the file being checked
        self.raw_names_of: dict[str, list[str]] = {}  # canonical file -> its header names
        self.digest = ""  # of the file just read
        # What the cross-checks keep, each None while its file is missing or unreadable.
        # The manifest: file name (lower case) -> (line, rows, sha256)
        self.manifest: dict[str, tuple[int, int | None, str | None]] | None = None
        self.prices: set[str] | None = None
        self.cash: dict[str, int] | None = None
        # (account, symbol) -> [quantity (None: not a number), line, its lots' sum (None:
        # a lot's quantity was not a number)], in units of 1e-8 shares
        self.positions: dict[tuple[str, str], list[int | None]] | None = None
        self.lots: dict[LotKey, int] | None = None
        self.symbols: dict[str, int] = {}
        self.symbol_names: list[str] = []
        self.accounts: dict[str, str] = {}
        self.seen: dict[tuple[str, ...], int] = {}
        self.transactions: dict[str, tuple[int, tuple[str, str, str]]] = {}
        self.opened: dict[LotKey, int] = {}  # lots opened by today's transactions -> line
        self.relieved: dict[LotKey, int] = {}  # lots relieved by them -> line

    # --- reporting --------------------------------------------------------------------------

    def problem(self, line: int, column: str, message: str, name: str | None = None) -> None:
        report = self.report
        report.problem_count += 1
        if name is None:
            name = self.summary.name
            self.summary.problems += 1
        if len(report.problems) < self.limit:
            report.problems.append(Problem(name, line, column, message))

    def column_problem(self, line: int, at: int, message: str) -> None:
        """A problem of a value: the message follows the column's name."""
        raw = self.raw_names[at]
        self.problem(line, raw, f"{raw} {message}")

    def row_problem(self, line: int, at: int, message: str) -> None:
        """A problem of a row's values together, said in full, at the column to look at."""
        self.problem(line, self.raw_names[at], message)

    def security(self, symbol: str, line: int) -> None:
        if self.known is None or not symbol or symbol in self.known:
            return
        unknown = self.report.unknown_securities.get(symbol)
        if unknown is None:
            where = f"{self.summary.name}:{line}"
            self.report.unknown_securities[symbol] = UnknownSecurity(symbol, where)
        else:
            unknown.rows += 1

    # --- the file set -----------------------------------------------------------------------

    def run(self) -> Report:
        started = time.perf_counter()
        present = {p.name: p for p in sorted(self.folder.iterdir()) if p.is_file()}
        by_lower = {n.lower(): p for n, p in present.items()}
        for file in CUSTODIAN_FILES:
            name = self.names[file.name]
            self.report.files[file.name] = FileSummary(file.name, name)
        self.unexpected(present)
        handlers: dict[str, RowHandler] = {
            MANIFEST.name: self.manifest_row,
            PRICES.name: self.price_row,
            CASH.name: self.cash_row,
            POSITIONS.name: self.position_row,
            LOTS.name: self.lot_row,
            TRANSACTIONS.name: self.transaction_row,
            CORPORATE_ACTIONS.name: self.corporate_action_row,
        }
        for file in CUSTODIAN_FILES:
            self.summary = self.report.files[file.name]
            path = by_lower.get(self.summary.name.lower())
            if path is None:
                self.missing(file)
                continue
            self.summary.name = path.name
            self.seen = {}
            if not self.scan(file, path, handlers[file.name]):
                self.forget(file)
            if file is not MANIFEST:
                self.against_manifest()
        self.summary = self.report.files[POSITIONS.name]
        self.lots_add_up()
        self.summary = self.report.files[TRANSACTIONS.name]
        self.lot_references()
        self.report.seconds = time.perf_counter() - started
        return self.report

    def unexpected(self, present: dict[str, Path]) -> None:
        expected = {n.lower() for n in self.names.values()}
        for name in present:
            if name.startswith(".") or not name.lower().endswith(".csv"):
                continue
            if name.lower() in expected:
                continue
            dated = self.adapter.date_of_name(name)
            if dated is not None and dated[1].isoformat() != self.day:
                message = (
                    f"is the {dated[0]} of {dated[1].isoformat()}, not of the folder's date "
                    f"{self.day}"
                )
            else:
                names = ", ".join(self.names.values())
                message = f"is not a file of the {self.adapter.name} file set ({names})"
            self.problem(0, "", message, name)

    def missing(self, file: CsvFile) -> None:
        name = self.summary.name
        listed = self.manifest.get(name.lower()) if self.manifest is not None else None
        if listed is not None:
            self.summary.manifest_rows = listed[1]
            self.problem(0, "", f"is missing (the manifest lists it with {listed[1]} rows)")
        elif file.required:
            self.problem(0, "", "is missing (a required file of the set)")

    def forget(self, file: CsvFile) -> None:
        """Cross-checks stop relying on a file whose rows could not all be read."""
        if file is MANIFEST:
            self.manifest = None
        elif file is PRICES:
            self.prices = None
        elif file is CASH:
            self.cash = None
        elif file is POSITIONS:
            self.positions = None
        elif file is LOTS:
            self.lots = None

    def against_manifest(self) -> None:
        summary = self.summary
        if self.manifest is None:
            return
        entry = self.manifest.get(summary.name.lower())
        if entry is None:
            manifest = self.names[MANIFEST.name]
            self.problem(0, "", f"is not in the manifest ({manifest})")
            return
        _, rows, digest = entry
        summary.manifest_rows = rows
        if rows is not None and rows != summary.rows:
            cut = "; the file is truncated" if summary.rows < rows else ""
            self.problem(0, "", f"has {summary.rows} rows but the manifest says {rows}{cut}")
            if summary.rows < rows:
                # what its rows miss is not a problem of the other files
                self.forget(BY_NAME[summary.kind])
        if digest is not None and digest != self.digest:
            self.problem(
                0,
                "",
                "its SHA-256 is not the manifest's: the file is not the one the custodian "
                "sent (changed or truncated)",
            )

    # --- one file ---------------------------------------------------------------------------

    def scan(self, file: CsvFile, path: Path, handle: RowHandler) -> bool:
        """Read one file, check every row's values and hand each row to `handle`; False when
        its rows could not be read (no header, a required column missing)."""
        summary = self.summary
        summary.present = True
        summary.size = path.stat().st_size
        self.digest = ""
        if file is MANIFEST:
            self.manifest = {}
        elif file is PRICES:
            self.prices = set()
        elif file is CASH:
            self.cash = {}
        elif file is POSITIONS:
            self.positions = {}
        elif file is LOTS:
            self.lots = {}
        with path.open("rb") as raw:
            reader = _Reader(raw)
            usable = self._rows(file, reader, handle)
            reader.drain()
        self.digest = reader.digest.hexdigest()
        for line in reader.not_utf8[:20]:
            self.problem(line, "", "is not UTF-8")
        if len(reader.not_utf8) > 20:
            self.problem(0, "", f"has {len(reader.not_utf8) - 20} more lines that are not UTF-8")
        if self.progress is not None:
            self.progress(summary.name, reader.bytes_read, summary.size, summary.rows)
        return usable

    def _rows(self, file: CsvFile, reader: _Reader, handle: RowHandler) -> bool:
        summary = self.summary
        rows = csv.reader(reader, strict=True)
        try:
            header = next(rows, None)
        except csv.Error as exc:
            self.problem(1, "", f"the header is not valid CSV ({exc})")
            return False
        if header is None or not any(h.strip() for h in header):
            self.problem(0, "", "is empty: its first line must name the columns")
            return False
        order, usable = self.header(file, header)
        width = len(header)
        identity = order == list(range(len(file.columns))) and width == len(file.columns)
        present = frozenset(c.name for c, i in zip(file.columns, order, strict=True) if i >= 0)
        checks = [
            (j, value_checker(c))
            for j, (c, i) in enumerate(zip(file.columns, order, strict=True))
            if i >= 0
        ]
        adapt = not self.adapter.is_identity(file.name)
        as_of = _at(file, "as_of")[0] if "as_of" in present else -1
        column_names = [c.name for c in file.columns]
        progress, end = self.progress, rows.line_num
        try:
            for row in rows:
                line, end = end + 1, rows.line_num
                if not row:
                    continue
                summary.rows += 1
                if progress is not None and summary.rows % PROGRESS_ROWS == 0:
                    progress(summary.name, reader.bytes_read, summary.size, summary.rows)
                if not usable:
                    continue
                if len(row) != width:
                    self.problem(line, "", f"has {len(row)} values; the header names {width}")
                    continue
                values = row if identity else [row[i] if i >= 0 else "" for i in order]
                bad: set[str] | None = None
                if adapt:
                    for name, message in self.adapter.adapt(file, values, present):
                        bad = bad or set()
                        bad.add(name)
                        self.column_problem(line, column_names.index(name), message)
                for j, check in checks:
                    found = check(values[j])
                    if found is not None and not (bad and column_names[j] in bad):
                        bad = bad or set()
                        bad.add(column_names[j])
                        self.column_problem(line, j, found)
                if (
                    as_of >= 0
                    and values[as_of]
                    and values[as_of].strip() != self.day
                    and not (bad and "as_of" in bad)
                ):
                    self.column_problem(
                        line, as_of, f"is {values[as_of]}, not the folder's date {self.day}"
                    )
                handle(line, values, bad)
        except csv.Error as exc:
            self.problem(rows.line_num, "", f"is not valid CSV ({exc}); the rest is not read")
        return usable

    def header(self, file: CsvFile, header: list[str]) -> tuple[list[int], bool]:
        """Each canonical column's position in the header (-1: absent); False when a
        required column is missing."""
        names = self.adapter.header_names(file.name)
        layout = self.adapter.layout(file.name)
        position: dict[str, int] = {}
        for i, raw in enumerate(header):
            key = raw.strip().lower()
            canonical = names.get(key)
            if canonical is None:
                columns = ", ".join(layout.columns.values())
                self.problem(1, raw, f"{raw!r} is not a column of this file (columns: {columns})")
            elif canonical in position:
                self.problem(1, raw, f"column {raw!r} appears twice")
            else:
                position[canonical] = i
        usable = True
        for c in file.columns:
            if c.required and c.name not in position:
                self.problem(1, "", f"required column {layout.columns[c.name]!r} is missing")
                usable = False
        self.raw_names = [
            header[position[c.name]].strip() if c.name in position else layout.columns[c.name]
            for c in file.columns
        ]
        self.raw_names_of[file.name] = self.raw_names
        return [position.get(c.name, -1) for c in file.columns], usable

    def unique(self, line: int, file: CsvFile, key: tuple[str, ...]) -> bool:
        """Whether `key` is new in the file; a repeat is named with its first line."""
        first = self.seen.setdefault(key, line)
        if first == line:
            return True
        self.repeated(line, file, first)
        return False

    def repeated(self, line: int, file: CsvFile, first: int) -> None:
        at = _at(file, *file.unique)
        names = ", ".join(self.raw_names[i] for i in at)
        self.problem(line, self.raw_names[at[-1]], f"the same {names} as line {first}")

    def account(self, account: str) -> str:
        return self.accounts.setdefault(account, account)

    def symbol_index(self, symbol: str) -> int:
        index = self.symbols.get(symbol)
        if index is None:
            index = self.symbols[symbol] = len(self.symbol_names)
            self.symbol_names.append(symbol)
        return index

    # --- each file's rows -------------------------------------------------------------------

    _M_FILE, _M_DATE, _M_ROWS, _M_SHA = _at(MANIFEST, "file", "business_date", "rows", "sha256")

    def manifest_row(self, line: int, v: list[str], bad: set[str] | None) -> None:
        name = v[self._M_FILE].strip()
        if not self.unique(line, MANIFEST, (name.lower(),)) or self.manifest is None:
            return
        when = v[self._M_DATE].strip()
        if not (bad and "business_date" in bad) and when != self.day:
            self.column_problem(line, self._M_DATE, f"is {when}, not the folder's date {self.day}")
        digest = v[self._M_SHA].strip()
        if not (bad and "sha256" in bad) and _SHA256.fullmatch(digest) is None:
            self.column_problem(line, self._M_SHA, "must be 64 hexadecimal digits")
            digest = ""
        if name and name.lower() not in {n.lower() for n in self.names.values()}:
            self.column_problem(line, self._M_FILE, f"names {name}, not a file of the set")
        rows = None if bad and "rows" in bad else int(v[self._M_ROWS])
        self.manifest[name.lower()] = (line, rows, digest.lower() or None)

    _P_SYMBOL, _P_PRICE = _at(PRICES, "symbol", "price")

    def price_row(self, line: int, v: list[str], bad: set[str] | None) -> None:
        symbol = v[self._P_SYMBOL]
        if bad and "symbol" in bad:
            return
        self.security(symbol, line)
        if self.unique(line, PRICES, (symbol,)) and self.prices is not None:
            self.prices.add(symbol)

    _C_ACCOUNT = _at(CASH, "account_id")[0]

    def cash_row(self, line: int, v: list[str], bad: set[str] | None) -> None:
        account = v[self._C_ACCOUNT]
        if bad and "account_id" in bad:
            return
        if self.unique(line, CASH, (account,)) and self.cash is not None:
            self.cash[self.account(account)] = line

    _S_ACCOUNT, _S_SYMBOL, _S_QUANTITY = _at(POSITIONS, "account_id", "symbol", "quantity")

    def position_row(self, line: int, v: list[str], bad: set[str] | None) -> None:
        if bad and ("account_id" in bad or "symbol" in bad):
            return
        account, symbol = self.account(v[self._S_ACCOUNT]), v[self._S_SYMBOL]
        self.security(symbol, line)
        if self.prices is not None and symbol not in self.prices:
            self.row_problem(line, self._S_SYMBOL, f"{symbol} has no price in prices.csv")
        if self.cash is not None and account not in self.cash:
            self.row_problem(
                line, self._S_ACCOUNT, f"{account} has no row in cash.csv (every account has one)"
            )
        if self.positions is None:
            return
        key = (account, symbol)
        first = self.positions.get(key)
        if first is not None:
            self.repeated(line, POSITIONS, first[1] or 0)
            return
        quantity = None if bad and "quantity" in bad else units(v[self._S_QUANTITY])
        self.positions[key] = [quantity, line, 0]

    _L_ACCOUNT, _L_SYMBOL, _L_LOT, _L_QUANTITY, _L_ACQUIRED = _at(
        LOTS, "account_id", "symbol", "lot_id", "quantity", "acquired_on"
    )

    def lot_row(self, line: int, v: list[str], bad: set[str] | None) -> None:
        if bad and ("account_id" in bad or "symbol" in bad or "lot_id" in bad):
            return
        account, symbol = self.account(v[self._L_ACCOUNT]), v[self._L_SYMBOL]
        acquired = v[self._L_ACQUIRED].strip()
        if acquired > self.day and not (bad and "acquired_on" in bad):
            self.column_problem(
                line, self._L_ACQUIRED, f"is {acquired}, after the business date {self.day}"
            )
        if self.lots is not None:
            key = (account, v[self._L_LOT])
            first = self.lots.get(key)
            if first is not None:
                self.repeated(line, LOTS, first >> _SYMBOL_BITS)
                return
            self.lots[key] = (line << _SYMBOL_BITS) | self.symbol_index(symbol)
        if self.positions is None:
            return
        position = self.positions.get((account, symbol))
        if position is None:
            self.row_problem(line, self._L_SYMBOL, f"{account} holds no {symbol} in positions.csv")
        elif position[2] is not None:
            position[2] = (
                None if bad and "quantity" in bad else position[2] + units(v[self._L_QUANTITY])
            )

    def lots_add_up(self) -> None:
        """Each position's quantity is the sum of its lots."""
        if self.positions is None or self.lots is None:
            return
        at = _at(POSITIONS, "quantity")[0]
        self.raw_names = self.raw_names_of[POSITIONS.name]
        lots = self.names[LOTS.name]
        for key, (quantity, line, total) in self.positions.items():
            if quantity is None or total is None:
                continue
            if total != quantity:
                self.column_problem(
                    line or 0,
                    at,
                    f"is {shares(quantity)} but the lots of {key[0]} {key[1]} in {lots} add "
                    f"up to {shares(total)}",
                )

    _T: ClassVar[dict[str, int]] = {c.name: i for i, c in enumerate(TRANSACTIONS.columns)}

    def transaction_row(self, line: int, v: list[str], bad: set[str] | None) -> None:
        t = self._T
        account, lot = self.account(v[t["account_id"]]), v[t["lot_id"]]
        transaction = v[t["transaction_id"]]
        if not self.unique(line, TRANSACTIONS, (transaction, lot)):
            return
        kind = v[t["type"]].strip().lower()
        what = (account, kind, v[t["symbol"]])
        first = self.transactions.setdefault(transaction, (line, what))
        if first[1] != what:
            self.row_problem(
                line,
                t["transaction_id"],
                f"{transaction} is line {first[0]}'s transaction, of another account, type or "
                "symbol (a transaction's rows differ only by lot)",
            )
        if not (bad and "type" in bad):
            self.type_rule(line, v, bad, TRANSACTIONS, TRANSACTION_RULES[kind], kind)
        if self.cash is not None and not (bad and "account_id" in bad) and account not in self.cash:
            self.row_problem(line, t["account_id"], f"{account} has no row in cash.csv")
        trade, settle = v[t["trade_date"]].strip(), v[t["settle_date"]].strip()
        if not (bad and ("trade_date" in bad or "settle_date" in bad)):
            if trade > self.day:
                self.column_problem(
                    line, t["trade_date"], f"is {trade}, after the business date {self.day}"
                )
            if settle < trade:
                self.column_problem(line, t["settle_date"], f"is {settle}, before {trade}")
        symbol = v[t["symbol"]]
        if not (bad and "symbol" in bad):
            self.security(symbol, line)
        if not lot or (bad and ("lot_id" in bad or "symbol" in bad or "type" in bad)):
            return
        if kind in OPENS_LOT:
            self.opened.setdefault((account, lot), line)
        elif kind in RELIEVES_LOT:
            self.relieved.setdefault((account, lot), line)
        else:
            return
        entry = self.lots.get((account, lot)) if self.lots is not None else None
        if entry is not None and symbol and self.symbol_names[entry & _SYMBOL_MASK] != symbol:
            held = self.symbol_names[entry & _SYMBOL_MASK]
            self.row_problem(line, t["lot_id"], f"{lot} is a lot of {held}, not of {symbol}")

    def type_rule(
        self,
        line: int,
        v: list[str],
        bad: set[str] | None,
        file: CsvFile,
        rule: TypeRule,
        kind: str,
    ) -> None:
        """The columns a row's type needs are given, and those it does not use are empty."""
        always = TRANSACTION_ALWAYS if file is TRANSACTIONS else CORPORATE_ACTION_ALWAYS
        for j, column in enumerate(file.columns):
            name = column.name
            if name in always or (bad and name in bad):
                continue
            given = bool(v[j].strip())
            if name in rule.required and not given:
                self.column_problem(line, j, f"is required for a {kind}")
            elif given and name not in rule.required and name not in rule.optional:
                self.column_problem(line, j, f"is not used by a {kind}")

    def lot_references(self) -> None:
        """A lot a transaction opens is in lots.csv (or relieved again today); one it
        relieves is in lots.csv, opened today, or among the lots known before."""
        if self.lots is None or TRANSACTIONS.name not in self.raw_names_of:
            return
        at = _at(TRANSACTIONS, "lot_id")[0]
        self.raw_names = self.raw_names_of[TRANSACTIONS.name]
        lots_file = self.names[LOTS.name]
        for key, line in self.opened.items():
            if key not in self.lots and key not in self.relieved:
                self.row_problem(
                    line, at, f"{key[1]} is opened here but is not a lot of {key[0]} in {lots_file}"
                )
        for key, line in self.relieved.items():
            if key in self.lots or key in self.opened:
                continue
            if self.previous_lots is None:
                self.report.unverified_lot_references += 1
            elif key not in self.previous_lots:
                self.row_problem(
                    line,
                    at,
                    f"{key[1]} is relieved here but is a lot of {key[0]} neither in {lots_file} "
                    "nor in the lots known before",
                )

    _A: ClassVar[dict[str, int]] = {c.name: i for i, c in enumerate(CORPORATE_ACTIONS.columns)}

    def corporate_action_row(self, line: int, v: list[str], bad: set[str] | None) -> None:
        a = self._A
        if not self.unique(line, CORPORATE_ACTIONS, (v[a["action_id"]],)):
            return
        for name in ("symbol", "new_symbol"):
            if not (bad and name in bad):
                self.security(v[a[name]], line)
        if bad and "type" in bad:
            return
        kind = v[a["type"]].strip().lower()
        self.type_rule(line, v, bad, CORPORATE_ACTIONS, CORPORATE_ACTION_RULES[kind], kind)
        numerator, denominator = v[a["numerator"]], v[a["denominator"]]
        if kind not in ("split", "reverse-split") or not (numerator and denominator):
            return
        if bad and ("numerator" in bad or "denominator" in bad):
            return
        more = Decimal(numerator) > Decimal(denominator)
        if more != (kind == "split"):
            word = "more" if kind == "split" else "fewer"
            self.row_problem(
                line, a["numerator"], f"a {kind} gives {word} new shares than old ones"
            )


def check_file_set(
    folder: Path,
    adapter: CustodianFormat,
    business_date: date,
    *,
    custodian: str | None = None,
    known_symbols: Container[str] | None = None,
    previous_lots: Container[LotKey] | None = None,
    progress: Progress | None = None,
    limit: int = DEFAULT_LIMIT,
) -> Report:
    """Check one custodian's file set of `business_date` in `folder`, every file streamed."""
    check = _FileSetCheck(
        folder,
        adapter,
        business_date,
        custodian or adapter.name,
        known_symbols,
        previous_lots,
        progress,
        limit,
    )
    return check.run()


def read_lot_keys(folder: Path, adapter: CustodianFormat, business_date: date) -> set[LotKey]:
    """The (account_id, lot_id) of every row of a file set's lots file (unchecked): the lots
    known before, for checking the next day's set."""
    name = adapter.file_name(LOTS.name, business_date)
    names = adapter.header_names(LOTS.name)
    keys: set[LotKey] = set()
    with (folder / name).open(encoding="utf-8-sig", newline="") as f:
        rows = csv.reader(f)
        header = [names.get(h.strip().lower(), "") for h in next(rows, [])]
        if "account_id" not in header or "lot_id" not in header:
            raise ValueError(f"{folder / name} has no account and lot id columns")
        account, lot = header.index("account_id"), header.index("lot_id")
        for row in rows:
            if len(row) == len(header):
                keys.add((row[account], row[lot]))
    return keys
