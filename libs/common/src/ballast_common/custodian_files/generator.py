"""A custodian's daily file set for N accounts, generated (seeded) for tests, demos and
benchmarks, in any registered custodian's format, with optional seeded breaks.

About 10 positions an account and 2.5 lots a position (25 lots an account), a few
transactions of every type, a few corporate actions. Written as a stream: no account is kept
once its rows are out. The same seed gives the same files.

Breaks (each in one account, chosen by the seed, named in `GeneratedSet.breaks`):
- `missing_lot`: a lot left out, its position reduced to match (a valid set; reconciliation
  with the book finds it);
- `basis_error`: a lot's cost basis 10% off (a valid set; reconciliation finds it);
- `lot_sum`: a lot left out but its position not reduced (the check finds it);
- `truncated`: the lots file cut after the manifest was written (the check finds it);
- `late_file`: the whole set held back (written under `root/.late/`, `GeneratedSet.late`):
  it arrives after its deadline when the test calls `GeneratedSet.deliver()` (transfer
  monitoring finds it missing until then).

The set is consistent with its day: the first account has a dividend and a deposit, the
corporate action effective on the day (a symbol change) shows in the lots, and, with
`book=True`, the book of the day before is written too (`GeneratedSet.book`, the book file
set of `ballast book load`: accounts, cash, positions, lots, prices) from which the day's
transactions and actions lead to the day's files: a ledger loaded from it reconciles clean
(but for the seeded breaks).
"""

from __future__ import annotations

import csv
import random
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

from ballast_common.contracts.custodian_files import (
    CASH,
    CORPORATE_ACTIONS,
    LOTS,
    POSITIONS,
    PRICES,
    TRANSACTIONS,
)
from ballast_common.custodian_files.adapters import BALLAST, CustodianFormat
from ballast_common.custodian_files.writer import CsvOut, write_manifest

BREAKS = ("missing_lot", "basis_error", "lot_sum", "truncated", "late_file")
RENAMED = ("S030", "S030N")  # the corporate action effective on the day: a symbol change
LATE = ".late"
BOOK_HEADERS = {
    "prices.csv": ("symbol", "price"),
    "accounts.csv": ("account_id", "household_id", "name"),
    "cash.csv": ("account_id", "amount"),
    "positions.csv": ("account_id", "symbol", "quantity"),
    "lots.csv": ("account_id", "symbol", "lot_id", "quantity", "acquired_on", "cost_basis"),
}
DEFAULT_DATE = date(2026, 12, 4)
SYMBOLS = 500
_CENT = Decimal("0.01")


@dataclass(frozen=True)
class Break:
    """A break the generator seeded: where, and what it changed."""

    kind: str
    account_id: str
    symbol: str
    lot_id: str
    detail: str


@dataclass
class GeneratedSet:
    folder: Path
    custodian: str
    business_date: date
    accounts: int
    rows: dict[str, int] = field(default_factory=dict)  # canonical file -> rows written
    breaks: list[Break] = field(default_factory=list)
    book: Path | None = None  # the book of the day before (`book=True`)
    late: Path | None = None  # where a held-back set is delivered to (`late_file`)

    def deliver(self) -> Path:
        """A held-back set moved to its place (`root/<custodian>/<date>/`); returns it."""
        assert self.late is not None, "the set was not held back"
        self.late.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(self.folder), str(self.late))
        self.folder, self.late = self.late, None
        return self.folder


class _Book:
    """The book file set of the day before, written as the accounts are generated."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self._files = {n: (folder / n).open("w", newline="") for n in BOOK_HEADERS}
        self._writers = {n: csv.writer(f, lineterminator="\n") for n, f in self._files.items()}
        for name, header in BOOK_HEADERS.items():
            self._writers[name].writerow(header)

    def write(self, name: str, row: dict[str, str]) -> None:
        self._writers[name].writerow([row[c] for c in BOOK_HEADERS[name]])

    def close(self) -> None:
        for f in self._files.values():
            f.close()


def account_id(n: int) -> str:
    return f"C{n:07d}"


def prices(seed: int) -> dict[str, Decimal]:
    """The universe's closes: symbol -> price."""
    rng = random.Random(f"prices-{seed}")
    return {f"S{i:03d}": Decimal(rng.randint(500, 60_000)) * _CENT for i in range(SYMBOLS)}


def generate(
    root: Path,
    *,
    accounts: int,
    business_date: date = DEFAULT_DATE,
    seed: int = 1,
    custodian: str = "ballast",
    adapter: CustodianFormat = BALLAST,
    breaks: Sequence[str] = (),
    book: bool = False,
) -> GeneratedSet:
    """Write a file set for `accounts` accounts in `root/<custodian>/<YYYY-MM-DD>/` (and
    the book of the day before in `root/book/<YYYY-MM-DD>/` with `book`)."""
    unknown = [b for b in breaks if b not in BREAKS]
    if unknown:
        raise ValueError(f"unknown break(s) {', '.join(unknown)}; breaks are {', '.join(BREAKS)}")
    if len(breaks) > accounts:
        raise ValueError("one account per break: give at least as many accounts as breaks")
    place = root / custodian / business_date.isoformat()
    folder = root / LATE / custodian / business_date.isoformat() if "late_file" in breaks else place
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    closes = prices(seed)
    symbols = list(closes)
    day = business_date.isoformat()
    broken = dict(zip(rng.sample(range(accounts), len(breaks)), breaks, strict=True))
    result = GeneratedSet(folder, custodian, business_date, accounts)
    if folder != place:
        result.late = place
        result.breaks.append(Break("late_file", "", "", "", "the set is held back: deliver()"))
    before = business_date - timedelta(days=1)
    books = _Book(root / "book" / before.isoformat()) if book else None
    if books is not None:
        result.book = books.folder
        for symbol, price in closes.items():
            books.write("prices.csv", {"symbol": symbol, "price": str(price)})
        # the security master knows the announced symbol before the day
        books.write("prices.csv", {"symbol": RENAMED[1], "price": str(closes[RENAMED[0]])})
    out = {
        f.name: CsvOut(folder, adapter, f.name, business_date)
        for f in (PRICES, CASH, POSITIONS, LOTS, TRANSACTIONS, CORPORATE_ACTIONS)
    }
    for symbol, price in closes.items():
        out[PRICES.name].write({"symbol": symbol, "price": str(price), "as_of": day})
    new_close = {"symbol": RENAMED[1], "price": str(closes[RENAMED[0]]), "as_of": day}
    out[PRICES.name].write(new_close)
    for n in range(accounts):
        _account(rng, n, out, closes, symbols, business_date, broken.get(n), result, books)
    _corporate_actions(out[CORPORATE_ACTIONS.name], business_date)
    if books is not None:
        books.close()
    for f in out.values():
        f.close()
        result.rows[f.canonical] = f.rows
    write_manifest(folder, adapter, business_date, out.values())
    if "truncated" in breaks:
        result.breaks.append(_truncate(out[LOTS.name].path))
    return result


def _account(
    rng: random.Random,
    n: int,
    out: dict[str, CsvOut],
    closes: dict[str, Decimal],
    symbols: list[str],
    business_date: date,
    broken: str | None,
    result: GeneratedSet,
    books: _Book | None = None,
) -> None:
    account = account_id(n)
    day = business_date.isoformat()
    cash = rng.randint(0, 5_000_000) * _CENT
    out[CASH.name].write({"account_id": account, "amount": str(cash), "as_of": day})
    transactions = out[TRANSACTIONS.name]
    lot_number = 0
    held = rng.sample(symbols, rng.randint(6, 14))
    if held[0] == RENAMED[0]:  # the security changing its symbol today is not traded today
        held.append(held.pop(0))
    moved = Decimal(0)  # the cash the day's transactions moved
    for position, symbol in enumerate(held):
        price = closes[symbol]
        lots: list[dict[str, str]] = []
        for _ in range(rng.randint(1, 4)):
            lot_number += 1
            quantity = Decimal(rng.randint(1, 500))
            if rng.random() < 0.1:
                quantity += Decimal(rng.randint(1, 999)) / 1000
            # (more than 30 days ago: no sale of the day is a wash sale)
            acquired = business_date - timedelta(days=rng.randint(31, 1800))
            basis = (quantity * price * Decimal(rng.uniform(0.5, 1.5))).quantize(_CENT)
            lots.append(
                {
                    "account_id": account,
                    "symbol": symbol,
                    "lot_id": f"L{lot_number:06d}",
                    "quantity": str(quantity),
                    "acquired_on": acquired.isoformat(),
                    "cost_basis": str(basis),
                    "as_of": day,
                }
            )
        opening = [dict(lot) for lot in lots]  # the book of the day before
        if position == 0:
            moved += _trades(rng, account, lots, price, business_date, transactions)
        total = sum(Decimal(lot["quantity"]) for lot in lots)
        if position == 1 and broken in ("missing_lot", "lot_sum", "basis_error"):
            result.breaks.append(_break(broken, lots))
            if broken == "missing_lot":
                total = sum(Decimal(lot["quantity"]) for lot in lots)
        shown = RENAMED[1] if symbol == RENAMED[0] else symbol  # the action shows in the lots
        if total > 0:
            out[POSITIONS.name].write(
                {"account_id": account, "symbol": shown, "quantity": str(total), "as_of": day}
            )
        for lot in lots:
            out[LOTS.name].write({**lot, "symbol": shown})
        if books is not None:
            _book_position(books, account, symbol, opening)
    moved += _cash_movements(rng, account, held[0], business_date, transactions)
    if n == 0:  # the first account always has a dividend and a deposit
        _transaction(transactions, account, "dividend", held[0], day, day, {"amount": "12.34"})
        _transaction(transactions, account, "deposit", "", day, day, {"amount": "1000.00"})
        moved += Decimal("1012.34")
    if books is not None:
        name = f"generated {account}"
        books.write(
            "accounts.csv", {"account_id": account, "household_id": f"H{account}", "name": name}
        )
        books.write("cash.csv", {"account_id": account, "amount": str(cash - moved)})


def _book_position(books: _Book, account: str, symbol: str, lots: list[dict[str, str]]) -> None:
    total = sum(Decimal(lot["quantity"]) for lot in lots)
    books.write("positions.csv", {"account_id": account, "symbol": symbol, "quantity": str(total)})
    for lot in lots:
        books.write("lots.csv", lot)


def _break(kind: str, lots: list[dict[str, str]]) -> Break:
    """Apply a break to a position's lots (in place); the position has no trades today."""
    lot = lots[-1]
    if kind == "basis_error":
        right = Decimal(lot["cost_basis"])
        lot["cost_basis"] = str((right * Decimal("1.1")).quantize(_CENT))
        detail = f"cost basis {lot['cost_basis']} instead of {right}"
    else:
        lots.pop()
        detail = f"lot of {lot['quantity']} left out" + (
            ", its position reduced" if kind == "missing_lot" else ", its position not reduced"
        )
    return Break(kind, lot["account_id"], lot["symbol"], lot["lot_id"], detail)


def _trades(
    rng: random.Random,
    account: str,
    lots: list[dict[str, str]],
    price: Decimal,
    business_date: date,
    out: CsvOut,
) -> Decimal:
    """Today's trades in a position: sometimes a buy (a new lot), a partial sell of a lot (it
    stays, smaller) or a lot transferred in; returns the cash they moved."""
    day = business_date.isoformat()
    settle = (business_date + timedelta(days=1)).isoformat()
    symbol = lots[0]["symbol"]
    draw = rng.random()
    if draw < 0.3:
        kind = "buy" if draw < 0.2 else "transfer_in"
        quantity = Decimal(rng.randint(1, 100))
        amount = (quantity * price).quantize(_CENT)
        lot_id = f"{lots[-1]['lot_id']}B"
        acquired = day if kind == "buy" else lots[-1]["acquired_on"]
        lots.append(
            {
                **lots[-1],
                "lot_id": lot_id,
                "quantity": str(quantity),
                "acquired_on": acquired,
                "cost_basis": str(amount),
            }
        )
        trade = {"quantity": str(quantity), "lot_id": lot_id}
        if kind == "buy":
            trade |= {"amount": str(amount), "price": str(price)}
        _transaction(out, account, kind, symbol, day, settle if kind == "buy" else day, trade)
        return -amount if kind == "buy" else Decimal(0)
    if draw < 0.5:
        lot = max(lots, key=lambda x: Decimal(x["quantity"]))
        held = Decimal(lot["quantity"])
        if held < 2:
            return Decimal(0)
        sold = Decimal(rng.randint(1, int(held) - 1))
        basis = Decimal(lot["cost_basis"])
        lot["quantity"] = str(held - sold)
        lot["cost_basis"] = str((basis * (held - sold) / held).quantize(_CENT))
        amount = (sold * price).quantize(_CENT)
        trade = {"quantity": str(sold), "lot_id": lot["lot_id"], "amount": str(amount)}
        _transaction(out, account, "sell", symbol, day, settle, trade | {"price": str(price)})
        return amount
    return Decimal(0)


def _cash_movements(
    rng: random.Random, account: str, symbol: str, business_date: date, out: CsvOut
) -> Decimal:
    """Sometimes a dividend, a fee, a deposit or a withdrawal; returns the cash moved."""
    day = business_date.isoformat()
    draw = rng.random()
    cents = rng.randint(100, 1_000_000) * _CENT
    amount = str(cents)
    if draw < 0.15:
        _transaction(out, account, "dividend", symbol, day, day, {"amount": amount})
        return cents
    if draw < 0.25:
        _transaction(out, account, "fee", "", day, day, {"amount": amount})
        return -cents
    if draw < 0.3:
        _transaction(out, account, "deposit", "", day, day, {"amount": amount})
        return cents
    if draw < 0.35:
        _transaction(out, account, "withdrawal", "", day, day, {"amount": amount})
        return -cents
    return Decimal(0)


def _transaction(
    out: CsvOut,
    account: str,
    kind: str,
    symbol: str,
    trade_date: str,
    settle_date: str,
    more: dict[str, str],
) -> None:
    number = out.rows + 1
    out.write(
        {
            "transaction_id": f"T{trade_date.replace('-', '')}{number:08d}",
            "account_id": account,
            "type": kind,
            "symbol": symbol,
            "trade_date": trade_date,
            "settle_date": settle_date,
            **more,
        }
    )


def _corporate_actions(out: CsvOut, business_date: date) -> None:
    """The day's corporate actions, named by the day (`CA1-20261204`): a split and a dividend
    announced for a week later, a symbol change effective on the day."""
    later = (business_date + timedelta(days=7)).isoformat()
    day = business_date.isoformat()
    ids = [f"CA{n}-{business_date:%Y%m%d}" for n in (1, 2, 3)]
    base = {"effective_date": later}
    out.write({**base, "action_id": ids[0], "type": "split", "symbol": "S010", "numerator": "2",
               "denominator": "1"})  # fmt: skip
    out.write({**base, "action_id": ids[1], "type": "cash-dividend", "symbol": "S020",
               "cash_per_share": "0.42"})  # fmt: skip
    out.write({"action_id": ids[2], "type": "symbol-change", "symbol": "S030",
               "new_symbol": "S030N", "effective_date": day})  # fmt: skip


def _truncate(path: Path) -> Break:
    """Cut a file after the manifest was written: its last tenth of lines (at least one) gone,
    as a transfer cut short would leave it."""
    with path.open("rb") as f:
        lines = sum(1 for _ in f)
    kept = max(1, lines - max(1, (lines - 1) // 10))
    with path.open("r+b") as f:
        for _ in range(kept):
            f.readline()
        f.truncate(f.tell())
    return Break("truncated", "", "", "", f"{path.name}: {lines - kept} of its {lines} lines cut")
