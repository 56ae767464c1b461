"""Trade files in, Form 8949 and open-lot rows out: parsing and formatting of the CSV the
``ballast taxlot`` command reads and writes (strings in, strings out; no file access).

Input columns: ``account,household,account_type,date,symbol,side,quantity,price`` and
optionally ``fees``, ``lot`` (a buy names its lot; a sell names the lots to relieve,
separated by ``;``) and ``sleeve``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation

from ballast_engine.tax.errors import TaxInputError
from ballast_engine.tax.ledger import TaxLedger
from ballast_engine.tax.model import ZERO, AccountType, Disposal, Fill, LedgerAccount, Lot, Side

REQUIRED = ("account", "household", "account_type", "date", "symbol", "side", "quantity", "price")
OPTIONAL = ("fees", "lot", "sleeve")
FORM8949_COLUMNS = (
    "account",
    "symbol",
    "quantity",
    "date_acquired",
    "date_sold",
    "proceeds",
    "cost_basis",
    "code",
    "adjustment",
    "gain_loss",
    "term",
)
LOT_COLUMNS = ("account", "symbol", "quantity", "date_acquired", "cost_basis")


@dataclass(frozen=True, slots=True)
class TradeFile:
    trades: list[Fill]
    accounts: list[LedgerAccount]


def _number(raw: str, name: str, ref: str, *, positive: bool) -> Decimal:
    text = raw.strip()
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise TaxInputError(f"not a number: {raw!r}", ref=ref, field=name) from None
    if not value.is_finite():
        raise TaxInputError(f"not a finite number: {raw!r}", ref=ref, field=name)
    if positive and value <= 0:
        raise TaxInputError(f"must be positive, got {text}", ref=ref, field=name)
    if value < 0:
        raise TaxInputError(f"must not be negative, got {text}", ref=ref, field=name)
    return value


def parse_trades(text: str, *, today: date | None = None) -> TradeFile:
    """Parse a trades CSV into trades and accounts.

    Args:
        text: the file's content.
        today: dates after it are rejected (default: the system date).

    Raises:
        TaxInputError: naming the row (data rows count from 1; the line in the file is given
            too) and the field of the first problem found.
    """
    today = today or date.today()
    reader = csv.DictReader(io.StringIO(text))
    reader.fieldnames = _header(reader)
    trades: list[Fill] = []
    accounts: dict[str, LedgerAccount] = {}
    for n, row in enumerate(reader, start=1):
        ref = f"row {n} (line {reader.line_num})"
        if None in row:
            raise TaxInputError("more fields than columns in the header", ref=ref)
        values = {k: (v or "").strip() for k, v in row.items()}
        trade, account = _trade(values, n, ref, today)
        _check_same_account(accounts.setdefault(account.account_id, account), account, ref)
        trades.append(trade)
    return TradeFile(trades, list(accounts.values()))


def _header(reader: csv.DictReader[str]) -> list[str]:
    """The header row's column names, checked: the required ones, no unknown ones."""
    header = [h.strip() for h in (reader.fieldnames or [])]
    if not header:
        raise TaxInputError("empty file: expected a header row", ref="header")
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise TaxInputError(f"missing column(s) {', '.join(missing)}", ref="header")
    unknown = [c for c in header if c not in REQUIRED + OPTIONAL]
    if unknown:
        raise TaxInputError(f"unknown column(s) {', '.join(unknown)}", ref="header")
    return header


def _trade(values: dict[str, str], n: int, ref: str, today: date) -> tuple[Fill, LedgerAccount]:
    """One data row as a trade and the account it names; raises on the first bad field."""
    for col in ("account", "household", "symbol"):
        if not values[col]:
            raise TaxInputError("must not be empty", ref=ref, field=col)
    try:
        kind = AccountType(values["account_type"].lower())
    except ValueError:
        raise TaxInputError(
            f"unknown account type {values['account_type']!r} (taxable or ira)",
            ref=ref,
            field="account_type",
        ) from None
    try:
        on = date.fromisoformat(values["date"])
    except ValueError:
        raise TaxInputError(
            f"not an ISO date (YYYY-MM-DD): {values['date']!r}", ref=ref, field="date"
        ) from None
    if on > today:
        raise TaxInputError(f"date {on} is in the future", ref=ref, field="date")
    try:
        side = Side(values["side"].lower())
    except ValueError:
        raise TaxInputError(
            f"unknown side {values['side']!r} (buy or sell)", ref=ref, field="side"
        ) from None
    quantity = _number(values["quantity"], "quantity", ref, positive=True)
    price = _number(values["price"], "price", ref, positive=False)
    fees = _number(values.get("fees") or "0", "fees", ref, positive=False)
    lots = tuple(p.strip() for p in values.get("lot", "").split(";") if p.strip())
    if side is Side.BUY and len(lots) > 1:
        raise TaxInputError("a buy names at most one lot", ref=ref, field="lot")
    account = LedgerAccount(values["account"], values["household"], kind)
    trade = Fill(
        trade_id=f"row{n}",
        account=account.account_id,
        on=on,
        symbol=values["symbol"],
        side=side,
        quantity=quantity,
        price=price,
        fees=fees,
        lot_ids=lots,
        sleeve=values.get("sleeve", ""),
        ref=ref,
    )
    return trade, account


def _check_same_account(known: LedgerAccount, account: LedgerAccount, ref: str) -> None:
    """A row's account is in the household and of the type its earlier rows said."""
    if known.household != account.household:
        raise TaxInputError(
            f"account {account.account_id} is in household {known.household} on an "
            f"earlier row, {account.household} here",
            ref=ref,
            field="household",
        )
    if known.account_type != account.account_type:
        raise TaxInputError(
            f"account {account.account_id} is {known.account_type} on an earlier row, "
            f"{account.account_type} here",
            ref=ref,
            field="account_type",
        )


def fmt_qty(value: Decimal) -> str:
    """A quantity without exponent or trailing zeros (100, 12.5)."""
    if value == 0:
        return "0"
    return format(value.normalize(), "f")


def fmt_money(value: Decimal) -> str:
    return f"{value + ZERO:.2f}"


def form8949_rows(disposals: Iterable[Disposal]) -> list[dict[str, str]]:
    """Form 8949 rows of the taxable disposals, by date sold then account then sale order."""
    rows = []
    for d in sorted(
        (d for d in disposals if d.reportable), key=lambda d: (d.sold, d.account, d.seq)
    ):
        rows.append(
            {
                "account": d.account,
                "symbol": d.symbol,
                "quantity": fmt_qty(d.quantity),
                "date_acquired": d.holding_start.isoformat(),
                "date_sold": d.sold.isoformat(),
                "proceeds": fmt_money(d.proceeds),
                "cost_basis": fmt_money(d.cost_basis),
                "code": d.code,
                "adjustment": fmt_money(d.adjustment),
                "gain_loss": fmt_money(d.gain_loss),
                "term": d.term.value,
            }
        )
    return rows


def lot_rows(lots: Iterable[Lot]) -> list[dict[str, str]]:
    """Open-lot rows: the holding-period start and basis include wash-sale adjustments."""
    return [
        {
            "account": lot.account,
            "symbol": lot.symbol,
            "quantity": fmt_qty(lot.quantity),
            "date_acquired": lot.holding_start.isoformat(),
            "cost_basis": fmt_money(lot.cost_basis),
        }
        for lot in sorted(
            lots, key=lambda lot: (lot.account, lot.symbol, lot.acquired, lot.seq, lot.lot_id)
        )
    ]


def to_csv(columns: Iterable[str], rows: Iterable[dict[str, str]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def form8949_csv(ledger: TaxLedger) -> str:
    return to_csv(FORM8949_COLUMNS, form8949_rows(ledger.disposals))


def lots_csv(ledger: TaxLedger) -> str:
    return to_csv(LOT_COLUMNS, lot_rows(ledger.lots()))
