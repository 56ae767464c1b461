"""Adapters: each turns one custodian's files into the canonical rows of
`contracts/custodian_files.py`, and the registry that finds one by custodian name.

A custodian's format is mostly data (`CustodianFormat`): its file names, its column names, its
date format, its codes for a column's values and which values it writes negative. The
canonical format (`BALLAST`) is the identity; another custodian is a small file
(`northwind.py`). A format that needs more overrides `adapt`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime

from ballast_common.contracts.book_files import CsvFile
from ballast_common.contracts.custodian_files import BY_NAME, CUSTODIAN_FILES

ISO_DATE = "%Y-%m-%d"
# What `adapt` found wrong: (canonical column, message); its checks are then not run.
Conversion = list[tuple[str, str]]


@dataclass(frozen=True)
class FileLayout:
    """One file as the custodian writes it: its name (`{date}` is the business date in the
    format's `file_date_format`) and the header name of each canonical column."""

    canonical: str
    name: str
    columns: Mapping[str, str]  # canonical column -> the custodian's header name


@dataclass(frozen=True)
class SignedColumn:
    """A column the custodian writes negative for some types (of the `type` column): the
    canonical value is its absolute value, and its sign must agree with the type."""

    column: str
    negative_for: frozenset[str]


@dataclass(frozen=True)
class CustodianFormat:
    """How one custodian writes the file set; `adapt` makes a row canonical."""

    name: str
    layouts: tuple[FileLayout, ...]
    date_format: str = ISO_DATE  # of date values
    date_shown: str = "YYYY-MM-DD"  # the same, for people
    file_date_format: str = ISO_DATE  # of `{date}` in file names
    codes: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # column -> code -> value
    signed: tuple[SignedColumn, ...] = ()

    def layout(self, canonical: str) -> FileLayout:
        for layout in self.layouts:
            if layout.canonical == canonical:
                return layout
        raise KeyError(f"{self.name} has no layout for {canonical}")

    def file_name(self, canonical: str, business_date: date) -> str:
        """The name the custodian gives the file of `canonical` on `business_date`."""
        return self.layout(canonical).name.format(
            date=business_date.strftime(self.file_date_format)
        )

    def date_of_name(self, name: str) -> tuple[str, date] | None:
        """The canonical file and business date a file name stands for, if it is one of the
        custodian's names for some date."""
        if not any("{date}" in layout.name for layout in self.layouts):
            return None
        for layout in self.layouts:
            head, _, tail = layout.name.partition("{date}")
            pattern = re.escape(head) + "(.+)" + re.escape(tail)
            found = re.fullmatch(pattern, name, flags=re.IGNORECASE)
            if found:
                try:
                    day = datetime.strptime(found.group(1), self.file_date_format).date()
                except ValueError:
                    continue
                return layout.canonical, day
        return None

    def header_names(self, canonical: str) -> dict[str, str]:
        """The custodian's header name (lower case) -> canonical column."""
        return {raw.lower(): column for column, raw in self.layout(canonical).columns.items()}

    def is_identity(self, canonical: str) -> bool:
        """Whether rows of `canonical` need no conversion at all."""
        file = BY_NAME[canonical]
        has_dates = any(c.kind == "date" for c in file.columns)
        columns = {c.name for c in file.columns}
        return (
            (self.date_format == ISO_DATE or not has_dates)
            and not (columns & set(self.codes))
            and not any(s.column in columns for s in self.signed)
        )

    def adapt(self, file: CsvFile, row: list[str], present: frozenset[str]) -> Conversion:
        """Make `row` (values in `file`'s column order, "" where not given) canonical in
        place; returns what could not be converted."""
        problems: Conversion = []
        for i, column in enumerate(file.columns):
            value = row[i]
            if not value or column.name not in present:
                continue
            codes = self.codes.get(column.name)
            if codes is not None:
                code = codes.get(value.strip().lower())
                if code is None:
                    shown = ", ".join(sorted(codes))
                    problems.append((column.name, f"is not a code of {self.name} ({shown})"))
                else:
                    row[i] = code
            elif column.kind == "date" and self.date_format != ISO_DATE:
                converted = self._iso(value.strip())
                if converted is None:
                    problems.append((column.name, f"is not a date ({self.date_shown})"))
                else:
                    row[i] = converted
        # a sign cannot be checked against an unknown type: the type's problem is enough
        known_type = not any(name == "type" for name, _ in problems)
        for signed in self.signed:
            problems += self._unsign(file, row, signed, known_type)
        return problems

    def encode(self, canonical: str, row: Mapping[str, str]) -> list[str]:
        """A canonical row as the custodian writes it, in its header's order (the reverse of
        `adapt`: for generating its files)."""
        layout = self.layout(canonical)
        file = BY_NAME[canonical]
        kind = row.get("type", "")
        out = []
        for name in layout.columns:
            value = row.get(name, "")
            if value and file.column(name).kind == "date" and self.date_format != ISO_DATE:
                value = date.fromisoformat(value).strftime(self.date_format)
            codes = self.codes.get(name)
            if value and codes is not None:
                value = next(c for c, v in codes.items() if v == value).upper()
            for signed in self.signed:
                if value and signed.column == name and kind in signed.negative_for:
                    value = "-" + value
            out.append(value)
        return out

    def header(self, canonical: str) -> list[str]:
        """The custodian's header of a file."""
        return list(self.layout(canonical).columns.values())

    def _unsign(
        self, file: CsvFile, row: list[str], signed: SignedColumn, known_type: bool
    ) -> Conversion:
        names = [c.name for c in file.columns]
        if signed.column not in names or "type" not in names:
            return []
        at = names.index(signed.column)
        value = row[at].strip()
        if not value:
            return []
        kind = row[names.index("type")].strip().lower()
        negative = value.startswith("-")
        if not known_type:
            row[at] = value.removeprefix("-")
            return []
        if kind in signed.negative_for:
            if not negative:
                return [(signed.column, f"must be negative for a {kind}")]
            row[at] = value[1:]
        elif negative:
            return [(signed.column, f"must not be negative for a {kind}")]
        return []

    def _iso(self, value: str) -> str | None:
        cache = _DATE_CACHE.setdefault(self.date_format, {})
        if value in cache:
            return cache[value]
        try:
            converted: str | None = datetime.strptime(value, self.date_format).date().isoformat()
        except ValueError:
            converted = None
        if len(cache) < 100_000:
            cache[value] = converted
        return converted


_DATE_CACHE: dict[str, dict[str, str | None]] = {}


def _canonical_layouts() -> tuple[FileLayout, ...]:
    return tuple(
        FileLayout(f.name, f.name, {c.name: c.name for c in f.columns}) for f in CUSTODIAN_FILES
    )


BALLAST = CustodianFormat("ballast", _canonical_layouts())

ADAPTERS: dict[str, CustodianFormat] = {}


def register(custodian: str, adapter: CustodianFormat) -> None:
    """Make `adapter` the one that reads `custodian`'s files."""
    ADAPTERS[custodian.lower()] = adapter


def adapter_for(custodian: str) -> CustodianFormat:
    """The adapter of `custodian` (KeyError naming those known)."""
    try:
        return ADAPTERS[custodian.lower()]
    except KeyError:
        known = ", ".join(sorted(ADAPTERS))
        raise KeyError(f"no adapter for custodian {custodian!r} (known: {known})") from None


register("ballast", BALLAST)
