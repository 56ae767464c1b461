"""The custodian's daily files: the canonical CSV file set a custodian delivers per business
day, in a folder `<custodian>/<YYYY-MM-DD>/`.

This module is the one definition of every file's columns (the same `CsvFile` and
`CsvColumn` vocabulary as the book file set, `book_files.py`) and of the rules that depend on
a row's type. An adapter (`ballast_common.custodian_files`) turns a custodian's own files into
these canonical rows; `docs/custodian-files.md` describes the same files for people.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import get_args

from ballast_common.contracts.book_files import CsvColumn, CsvFile
from ballast_common.contracts.events import CorporateActionType


def _id(name: str, required: bool = True, help: str = "", max_length: int = 64) -> CsvColumn:
    return CsvColumn(name, "id", required=required, max_length=max_length, help=help)


def _symbol(name: str = "symbol", required: bool = True, help: str = "") -> CsvColumn:
    return _id(name, required=required, max_length=16, help=help)


def _as_of() -> CsvColumn:
    return CsvColumn(
        "as_of", "date", required=False, help="the business date; when given, the folder's date"
    )


POSITIONS = CsvFile(
    "positions.csv",
    (
        _id("account_id"),
        _symbol(),
        CsvColumn("quantity", "decimal", scale=8, minimum="positive"),
        _as_of(),
    ),
    unique=("account_id", "symbol"),
    required=True,
    help="shares held per account and security at the close; the sum of the security's lots",
)

LOTS = CsvFile(
    "lots.csv",
    (
        _id("account_id"),
        _symbol(),
        _id("lot_id", help="the custodian's lot id, unique within the account"),
        CsvColumn("quantity", "decimal", scale=8, minimum="positive"),
        CsvColumn("acquired_on", "date", help="on or before the business date"),
        CsvColumn("cost_basis", "decimal", scale=4, minimum="zero", help="total, not per share"),
        _as_of(),
    ),
    unique=("account_id", "lot_id"),
    required=True,
    help="the open tax lots of every position",
)

CASH = CsvFile(
    "cash.csv",
    (
        _id("account_id"),
        CsvColumn("amount", "decimal", scale=2, help="negative for a debit balance"),
        _as_of(),
    ),
    unique=("account_id",),
    required=True,
    help="one row per account the custodian holds: its cash at the close",
)

PRICES = CsvFile(
    "prices.csv",
    (
        _symbol(),
        CsvColumn("price", "decimal", scale=6, minimum="positive"),
        _as_of(),
        CsvColumn("cusip", required=False, max_length=12, help="CUSIP or ISIN"),
        CsvColumn("name", required=False, help="the security's name"),
    ),
    unique=("symbol",),
    required=True,
    help="the close of every security held or traded",
)

TRANSACTION_TYPES = (
    "buy",
    "sell",
    "dividend",
    "fee",
    "deposit",
    "withdrawal",
    "transfer_in",
    "transfer_out",
)

TRANSACTIONS = CsvFile(
    "transactions.csv",
    (
        _id("transaction_id", help="the custodian's id of the transaction"),
        _id("account_id"),
        CsvColumn("type", "choice", choices=TRANSACTION_TYPES),
        _symbol(required=False),
        CsvColumn(
            "quantity", "decimal", required=False, scale=8, minimum="positive", help="shares"
        ),
        CsvColumn(
            "amount",
            "decimal",
            required=False,
            scale=2,
            minimum="zero",
            help="the cash moved; its direction is the type's",
        ),
        CsvColumn("price", "decimal", required=False, scale=6, minimum="positive"),
        CsvColumn("trade_date", "date", help="on or before the business date"),
        CsvColumn("settle_date", "date", help="on or after the trade date"),
        _id("lot_id", required=False, help="the lot a trade or a transfer opens or relieves"),
        CsvColumn("description", required=False, max_length=200),
    ),
    unique=("transaction_id", "lot_id"),
    required=True,
    help="the day's transactions; a sell relieving several lots has one row per lot",
)

CORPORATE_ACTION_TYPES: tuple[str, ...] = get_args(CorporateActionType)

CORPORATE_ACTIONS = CsvFile(
    "corporate_actions.csv",
    (
        _id("action_id", help="the custodian's id of the action"),
        CsvColumn("type", "choice", choices=CORPORATE_ACTION_TYPES),
        _symbol(),
        CsvColumn("effective_date", "date", help="the ex-date or the date it takes effect"),
        _symbol("new_symbol", required=False, help="the new or the spun-off security"),
        CsvColumn("numerator", "decimal", required=False, scale=0, minimum="positive"),
        CsvColumn("denominator", "decimal", required=False, scale=0, minimum="positive"),
        CsvColumn("ratio", "decimal", required=False, scale=8, minimum="positive"),
        CsvColumn("cash_per_share", "decimal", required=False, scale=6, minimum="positive"),
        CsvColumn("basis_percent", "decimal", required=False, scale=6, minimum="zero"),
    ),
    unique=("action_id",),
    help="corporate actions announced or effective (the file may be left out on a quiet day)",
)

MANIFEST = CsvFile(
    "manifest.csv",
    (
        CsvColumn("file", max_length=200, help="a file's name as delivered"),
        CsvColumn("business_date", "date", help="the folder's date"),
        CsvColumn("rows", "decimal", scale=0, minimum="zero", help="rows after the header"),
        _id("sha256", help="the SHA-256 of the file's bytes, in hex"),
    ),
    unique=("file",),
    required=True,
    help="every other file of the set: its rows and digest, so a truncated file is found",
)

# In the order they are checked: each file may rely on those before it.
CUSTODIAN_FILES: tuple[CsvFile, ...] = (
    MANIFEST,
    PRICES,
    CASH,
    POSITIONS,
    LOTS,
    TRANSACTIONS,
    CORPORATE_ACTIONS,
)
BY_NAME = {f.name: f for f in CUSTODIAN_FILES}


@dataclass(frozen=True)
class TypeRule:
    """The columns a row of one type needs, and those it may have (beyond `always`)."""

    required: tuple[str, ...]
    optional: tuple[str, ...] = ()


TRANSACTION_ALWAYS = (
    "transaction_id",
    "account_id",
    "type",
    "trade_date",
    "settle_date",
    "description",
)
_TRADE = TypeRule(("symbol", "quantity", "amount", "lot_id"), ("price",))
_IN_KIND = TypeRule(("symbol", "quantity", "lot_id"))
TRANSACTION_RULES: dict[str, TypeRule] = {
    "buy": _TRADE,  # opens the lot (in lots.csv)
    "sell": _TRADE,  # relieves the lot (versus purchase)
    "dividend": TypeRule(("symbol", "amount"), ("quantity", "price")),
    "fee": TypeRule(("amount",), ("symbol",)),
    "deposit": TypeRule(("amount",)),
    "withdrawal": TypeRule(("amount",)),
    "transfer_in": _IN_KIND,  # shares delivered in kind: opens the lot
    "transfer_out": _IN_KIND,  # shares delivered out: relieves the lot
}
OPENS_LOT = frozenset({"buy", "transfer_in"})
RELIEVES_LOT = frozenset({"sell", "transfer_out"})

CORPORATE_ACTION_ALWAYS = ("action_id", "type", "symbol", "effective_date")
_SPLIT = TypeRule(("numerator", "denominator"))
CORPORATE_ACTION_RULES: dict[str, TypeRule] = {
    "split": _SPLIT,  # numerator > denominator: new shares per old shares
    "reverse-split": _SPLIT,  # numerator < denominator
    "symbol-change": TypeRule(("new_symbol",)),
    "cash-merger": TypeRule(("cash_per_share",)),
    "stock-merger": TypeRule(("new_symbol", "ratio"), ("cash_per_share",)),
    "spin-off": TypeRule(("new_symbol", "ratio", "basis_percent")),
    "cash-dividend": TypeRule(("cash_per_share",)),
}
