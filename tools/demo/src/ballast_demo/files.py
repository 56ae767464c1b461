"""The demo book as a book file set (docs/book-files.md): one folder, named by its as-of date,
that `ballast book load` loads."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping, Sequence
from datetime import date
from decimal import Decimal
from pathlib import Path

from ballast_demo.book import SECURITIES, Account, OpeningLot, home_sleeve

PLAIN_LOT_BASIS = Decimal("0.85")  # a position without lots: one lot at 85% of today's value
PLAIN_LOT_DATE = "2024-03-15"


def write_book(
    accounts: Sequence[Account],
    root: Path,
    as_of: date,
    more_securities: Mapping[str, tuple[str, str, str, str]] | None = None,
) -> Path:
    """Write the accounts (and the security master, with `more_securities`: symbol -> name,
    asset class, sector, price) as `root/<as_of>/*.csv`; returns the folder."""
    securities = {**SECURITIES, **(more_securities or {})}
    folder = root / as_of.isoformat()
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.csv"):
        old.unlink()
    _write(
        folder / "securities.csv",
        ("symbol", "name", "asset_class", "sector", "fractional_eligible"),
        (
            (s, n, a, sec, str(a != "Fixed Income").lower())
            for s, (n, a, sec, _) in securities.items()
        ),
    )
    _write(folder / "prices.csv", ("symbol", "price"), ((s, v[3]) for s, v in securities.items()))
    households: dict[str, str] = {}
    for a in accounts:
        households.setdefault(a.household_id, a.name.rsplit(" ", 1)[0] + " household")
    _write(folder / "households.csv", ("household_id", "name", "tenant"),
           ((h, n, "demo") for h, n in households.items()))  # fmt: skip
    tax_columns = ("relief_method", "short_term_rate", "long_term_rate", "gain_budget",
                   "avoid_short_term_gains", "harvest")  # fmt: skip
    _write(
        folder / "accounts.csv",
        ("account_id", "household_id", "name", "tenant", "account_type", "model_id",
         "auto_approve", "rebalance_range", *tax_columns),
        (
            (a.account_id, a.household_id, a.name, "demo", a.account_type, a.model_id or "",
             "true", "target" if a.is_uma else "",
             *(_text((a.tax_settings or {}).get(c)) for c in tax_columns))
            for a in accounts
        ),
    )  # fmt: skip
    _write(
        folder / "sleeves.csv",
        ("account_id", "sleeve_id", "model_id", "weight", "band_kind", "band_width"),
        ((a.account_id, i, m, w, "absolute", "0.05") for a in accounts for i, m, w in a.sleeves),
    )
    _write(
        folder / "restrictions.csv",
        ("account_id", "kind", "scope", "value", "source", "reason"),
        (
            (a.account_id, r["kind"], r["scope"], r["value"], r["source"], r["reason"])
            for a in accounts
            for r in a.restrictions
        ),
    )
    _write(
        folder / "cash.csv",
        ("account_id", "amount", "sleeve_id"),
        (row for a in accounts for row in _cash_rows(a)),
    )
    _write(
        folder / "positions.csv",
        ("account_id", "symbol", "quantity"),
        ((a.account_id, s, q) for a in accounts for s, q in a.positions.items()),
    )
    _write(
        folder / "lots.csv",
        ("account_id", "symbol", "lot_id", "quantity", "acquired_on", "cost_basis", "sleeve_id"),
        (
            (
                a.account_id,
                s,
                f"{s}-{n}",
                lot.quantity,
                lot.acquired_on,
                lot.cost_basis,
                lot.sleeve or home_sleeve(a, s),
            )
            for a in accounts
            for s, q in a.positions.items()
            for n, lot in enumerate(_lots(a, s, q), 1)
        ),
    )
    return folder


def _lots(account: Account, symbol: str, quantity: Decimal) -> list[OpeningLot]:
    if symbol in account.lots:
        return account.lots[symbol]
    price = Decimal(SECURITIES[symbol][3])
    basis = (quantity * price * PLAIN_LOT_BASIS).quantize(Decimal("0.01"))
    return [OpeningLot(quantity, basis, PLAIN_LOT_DATE)]


def _cash_rows(account: Account) -> list[tuple[str, Decimal, str]]:
    """An SMA's cash in one row; a UMA's per sleeve (and what no sleeve holds, if any)."""
    if not account.sleeve_cash:
        return [(account.account_id, account.cash, "")]
    own = account.cash - sum(account.sleeve_cash.values(), Decimal(0))
    rows = [(account.account_id, amount, s) for s, amount in account.sleeve_cash.items()]
    return ([(account.account_id, own, "")] if own else []) + rows


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _write(path: Path, header: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
