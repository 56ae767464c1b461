"""The book file set: CSV files, one folder per as-of date, that `ballast book load` loads.

This module is the one definition of every file's columns. The services that load a file
check its rows against it (in SQL, on the staged rows) and the command line uses it to say
which service takes which file. `docs/book-files.md` describes the same files for people.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Literal

from ballast_engine.tax.model import DEFAULT_RELIEF_METHOD, RELIEF_METHOD_NAMES

ColumnKind = Literal["id", "text", "decimal", "date", "bool", "choice"]


@dataclass(frozen=True)
class CsvColumn:
    """One column: its kind says which values are valid (checked on every row)."""

    name: str
    kind: ColumnKind = "text"
    required: bool = True  # the column must be in the header and the value non-empty
    max_length: int = 200  # id and text
    scale: int = 8  # decimal: most digits after the point
    minimum: Literal["any", "zero", "positive"] = "any"  # decimal: smallest value allowed
    choices: tuple[str, ...] = ()  # choice: the values allowed (lower case)
    help: str = ""


@dataclass(frozen=True)
class CsvFile:
    """One file of the set: its columns, and the columns no two rows may share."""

    name: str
    columns: tuple[CsvColumn, ...]
    unique: tuple[str, ...] = ()
    help: str = ""
    required: bool = False
    owners: tuple[str, ...] = field(default=())  # the services that load it

    def column(self, name: str) -> CsvColumn:
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(f"{self.name} has no column {name!r}")


def _id(name: str, required: bool = True, help: str = "", max_length: int = 64) -> CsvColumn:
    return CsvColumn(name, "id", required=required, max_length=max_length, help=help)


def _money(
    name: str, minimum: Literal["any", "zero", "positive"] = "any", **kw: object
) -> CsvColumn:
    return CsvColumn(name, "decimal", scale=2, minimum=minimum, **kw)  # type: ignore[arg-type]


def _flag(name: str, help: str = "") -> CsvColumn:
    return CsvColumn(name, "bool", required=False, help=help)


TRUE_WORDS = ("true", "yes", "1", "y")
FALSE_WORDS = ("false", "no", "0", "n")
DIGITS_BEFORE_POINT = 18  # a decimal has at most this many digits before the point

ValueChecker = Callable[[str], "str | None"]
_PLAIN_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
_ISO_DATE = re.compile(r"[1-9][0-9]{3}-[0-9]{2}-[0-9]{2}")


def value_checker(column: CsvColumn) -> ValueChecker:
    """A function telling what is wrong with one raw value of `column` (None: nothing), in
    the words of the book load's row checks; for checking files in Python (a custodian's
    daily files), where the book load checks staged rows in SQL. Decimals are plain: no
    exponent (as documented)."""
    problem = _slow_checker(column)
    kind = column.kind
    if kind == "id":
        longest = column.max_length

        def check_id(value: str) -> str | None:
            if value and len(value) <= longest and value == value.strip():
                return None
            return problem(value)

        return check_id
    if kind == "decimal":
        fast = re.compile(rf"-?[0-9]{{1,{DIGITS_BEFORE_POINT}}}(?:\.[0-9]{{0,{column.scale}}})?")
        least = column.minimum

        def check_decimal(value: str) -> str | None:
            if fast.fullmatch(value) is not None and (
                least == "any"
                or (value[0] != "-" and (least == "zero" or value.strip("+-.0")))
                or (least == "zero" and not value.strip("+-.0"))
            ):
                return None
            return problem(value)

        return check_decimal
    if kind == "date":
        valid: set[str] = set()  # the few distinct dates of a file, checked once each

        def check_date(value: str) -> str | None:
            if value in valid:
                return None
            found = problem(value)
            if found is None and len(valid) < 100_000:
                valid.add(value)
            return found

        return check_date
    return problem


def _slow_checker(column: CsvColumn) -> ValueChecker:
    """Every check of one column, each problem named (see `value_checker`)."""
    words = frozenset(TRUE_WORDS + FALSE_WORDS)
    choices = frozenset(column.choices)

    def check(raw: str) -> str | None:
        value = raw.strip()
        if not value:
            return "is empty" if column.required else None
        kind = column.kind
        if kind == "id":
            if len(raw) > column.max_length or raw != value:
                return (
                    f"must be 1 to {column.max_length} characters without leading or "
                    "trailing spaces"
                )
        elif kind == "text":
            if len(value) > column.max_length:
                return f"is longer than {column.max_length} characters"
        elif kind == "decimal":
            return _decimal_problem(column, value)
        elif kind == "date":
            if _ISO_DATE.fullmatch(value) is None:
                return "is not a date (YYYY-MM-DD)"
            try:
                date.fromisoformat(value)
            except ValueError:
                return "is not a date (YYYY-MM-DD)"
        elif kind == "bool":
            if value.lower() not in words:
                return "must be true or false"
        elif kind == "choice" and value.lower() not in choices:
            return "must be one of " + ", ".join(column.choices)
        return None

    return check


def _decimal_problem(column: CsvColumn, value: str) -> str | None:
    if _PLAIN_NUMBER.fullmatch(value) is None:
        return "is not a number"
    whole, _, fraction = value.lstrip("+-").partition(".")
    if len(fraction) > column.scale or len(whole.lstrip("0")) > DIGITS_BEFORE_POINT:
        return (
            f"must have at most {DIGITS_BEFORE_POINT} digits before the point "
            f"and {column.scale} after"
        )
    nonzero = bool(value.strip("+-.0"))
    if column.minimum == "positive" and (value[0] == "-" or not nonzero):
        return "must be greater than 0"
    if column.minimum == "zero" and value[0] == "-" and nonzero:
        return "must not be negative"
    return None


SECURITIES = CsvFile(
    "securities.csv",
    (
        _id("symbol", max_length=16),
        CsvColumn("name"),
        CsvColumn("asset_class", max_length=64),
        CsvColumn("sector", max_length=64),
        _flag("fractional_eligible", "fractional shares may be traded (default no)"),
        CsvColumn("cusip", required=False, max_length=12),
    ),
    unique=("symbol",),
    help="securities new to the security master, or whose description changed",
    owners=("model-hub-svc",),
)

PRICES = CsvFile(
    "prices.csv",
    (
        _id("symbol", max_length=16),
        CsvColumn("price", "decimal", scale=6, minimum="positive"),
    ),
    unique=("symbol",),
    required=True,
    help="the closing price of every security held, as of the folder's date",
    owners=("model-hub-svc", "taxlot-svc"),
)

HOUSEHOLDS = CsvFile(
    "households.csv",
    (
        _id("household_id"),
        CsvColumn("name"),
        _id("tenant", required=False, help="the firm (default: the load's tenant)"),
    ),
    unique=("household_id",),
    required=True,
    help="the families accounts belong to (wash sales are checked across a household)",
    owners=("account-svc",),
)

ACCOUNTS = CsvFile(
    "accounts.csv",
    (
        _id("account_id"),
        _id("household_id"),
        CsvColumn("name"),
        _id("tenant", required=False, help="the firm (default: the load's tenant)"),
        CsvColumn("account_type", "choice", required=False, choices=("taxable", "ira")),
        _id("model_id", required=False, help="the model an SMA follows; empty for a UMA"),
        _flag("auto_approve", "proposals go out without a person (default yes)"),
        _money("min_trade_value", "zero", required=False),
        _flag("fractional", "trade fractional shares where the security allows"),
        CsvColumn("cash_target", "decimal", required=False, scale=6, minimum="zero"),
        _money("cash_reserve", "zero", required=False),
        CsvColumn(
            "relief_method",
            "choice",
            required=False,
            choices=RELIEF_METHOD_NAMES,
            help=f"default {DEFAULT_RELIEF_METHOD}",
        ),
        CsvColumn("short_term_rate", "decimal", required=False, scale=6, minimum="zero"),
        CsvColumn("long_term_rate", "decimal", required=False, scale=6, minimum="zero"),
        _money("gain_budget", "zero", required=False),
        _flag("avoid_short_term_gains"),
        _flag("harvest", "harvest tax losses"),
        CsvColumn(
            "rebalance_range",
            "choice",
            required=False,
            choices=("target", "band", "interior"),
            help="UMA: where a strategic rebalance stops",
        ),
        CsvColumn("interior_pct", "decimal", required=False, scale=4, minimum="zero"),
    ),
    unique=("account_id",),
    required=True,
    help="one row per account; settings columns are optional (empty: the defaults)",
    owners=("account-svc", "taxlot-svc"),
)

SLEEVES = CsvFile(
    "sleeves.csv",
    (
        _id("account_id"),
        _id("sleeve_id"),
        _id("model_id"),
        CsvColumn("weight", "decimal", scale=8, minimum="positive"),
        CsvColumn("band_kind", "choice", required=False, choices=("absolute", "relative")),
        CsvColumn("band_width", "decimal", scale=8, minimum="zero"),
    ),
    unique=("account_id", "sleeve_id"),
    help="a UMA's sleeves: the models it holds, their weights (adding up to 1) and bands",
    owners=("account-svc",),
)

RESTRICTIONS = CsvFile(
    "restrictions.csv",
    (
        _id("account_id"),
        CsvColumn("kind", "choice", choices=("do_not_buy", "do_not_sell", "do_not_hold")),
        CsvColumn("scope", "choice", choices=("security", "sector", "asset_class", "list")),
        CsvColumn("value", max_length=128),
        CsvColumn(
            "source",
            "choice",
            required=False,
            choices=("firm", "advisor", "client", "compliance"),
        ),
        CsvColumn("reason", max_length=500),
    ),
    unique=("account_id", "kind", "scope", "value"),
    help="do-not-buy, do-not-sell and do-not-hold instructions",
    owners=("account-svc",),
)

CASH = CsvFile(
    "cash.csv",
    (
        _id("account_id"),
        _money("amount"),
        _id(
            "sleeve_id",
            required=False,
            help="UMA: the sleeve holding it (empty: the account's own)",
        ),
    ),
    unique=("account_id", "sleeve_id"),
    required=True,
    help="each account's cash as of the folder's date (a UMA's per sleeve: the rows add up)",
    owners=("taxlot-svc",),
)

POSITIONS = CsvFile(
    "positions.csv",
    (
        _id("account_id"),
        _id("symbol", max_length=16),
        CsvColumn("quantity", "decimal", scale=8, minimum="positive"),
    ),
    unique=("account_id", "symbol"),
    required=True,
    help="shares held per account and security; must equal the sum of the security's lots",
    owners=("taxlot-svc",),
)

LOTS = CsvFile(
    "lots.csv",
    (
        _id("account_id"),
        _id("symbol", max_length=16),
        _id("lot_id"),
        CsvColumn("quantity", "decimal", scale=8, minimum="positive"),
        CsvColumn("acquired_on", "date"),
        CsvColumn("cost_basis", "decimal", scale=4, minimum="zero", help="total, not per share"),
        _id("sleeve_id", required=False, help="UMA: the sleeve that holds the lot"),
    ),
    unique=("account_id", "lot_id"),
    required=True,
    help="the tax lots of every position",
    owners=("taxlot-svc",),
)

BOOK_FILES: tuple[CsvFile, ...] = (
    SECURITIES,
    PRICES,
    HOUSEHOLDS,
    ACCOUNTS,
    SLEEVES,
    RESTRICTIONS,
    CASH,
    POSITIONS,
    LOTS,
)
BY_NAME = {f.name: f for f in BOOK_FILES}


def files_of(service: str) -> tuple[CsvFile, ...]:
    """The files a service loads."""
    return tuple(f for f in BOOK_FILES if service in f.owners)
