"""Wash sales at the custodian: a loss sale's replacement (same account, same security, bought
within 30 days before or after) carries the disallowed loss in its basis, as taxlot-svc's
ledger (the tax engine's TaxLedger) books it, so the custodian's lots and the ledger's agree
lot by lot: a harvest then a replacement reconciles clean. The same fills go through the
engine's ledger here, and each whole lot's quantity and basis are compared."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

from ballast_engine.tax import AccountType, Fill, LedgerAccount, Side, TaxLedger

from .conftest import SimFactory
from .test_custody import allocation, book, files, load, lots_of, write_book

TAXABLE, IRA = "T1", "R1"
BOOK_DAY = "2026-01-02"
OPENING = {  # account -> (lot, quantity, basis, acquired): XYZ bought at 300, now at 200
    TAXABLE: [("H1", "10", "3000", "2025-03-03"), ("H2", "10", "2900", "2025-06-02")],
    IRA: [("I1", "10", "3000", "2025-03-03")],
}
WASH_BOOK: dict[str, list[list[str]]] = {
    "accounts.csv": [
        ["account_id", "household_id", "name", "account_type"],
        [TAXABLE, "H", "Taxable", "taxable"],
        [IRA, "HR", "IRA", "ira"],
    ],
    "cash.csv": [["account_id", "amount"], [TAXABLE, "100000"], [IRA, "100000"]],
    "prices.csv": [["symbol", "price"], ["XYZ", "200"]],
    "positions.csv": [
        ["account_id", "symbol", "quantity"],
        [TAXABLE, "XYZ", "20"],
        [IRA, "XYZ", "10"],
    ],
    "lots.csv": [
        ["account_id", "symbol", "lot_id", "quantity", "acquired_on", "cost_basis"],
        *(
            [a, "XYZ", lot, q, acquired, basis]
            for a, lots in OPENING.items()
            for lot, q, basis, acquired in lots
        ),
    ],
}  # fmt: skip


def trade(
    fill_id: str, side: str, quantity: str, price: str, day: str, account: str = TAXABLE, **kw: Any
) -> dict[str, Any]:
    a = allocation(fill_id, side, quantity, account=account, symbol="XYZ", price=price, **kw)
    a["executed_at"] = f"{day}T15:00:00+00:00"
    return a


def ledger_lots(trades: list[dict[str, Any]], account: str) -> dict[str, tuple[str, str]]:
    """The engine's ledger after the same fills: each whole lot's (quantity, basis), its
    wash-sale pieces (`<lot>/<n>`) summed, as reconciliation compares them."""
    ledger = TaxLedger(
        [
            LedgerAccount(TAXABLE, "H"),
            LedgerAccount(IRA, "HR", account_type=AccountType.IRA),
        ]
    )
    opening = sorted(
        ((acquired, holder, lot, quantity, basis) for holder, lots in OPENING.items()
         for lot, quantity, basis, acquired in lots)
    )  # fmt: skip
    for acquired, holder, lot, quantity, basis in opening:
        ledger.apply(
            Fill(
                f"open-{lot}",
                holder,
                date.fromisoformat(acquired),
                "XYZ",
                Side.BUY,
                Decimal(quantity),
                Decimal(basis) / Decimal(quantity),
                lot_ids=(lot,),
            )
        )
    for t in trades:
        buy = t["side"] == "buy"
        ledger.apply(
            Fill(
                t["fill_id"],
                t["account_id"],
                date.fromisoformat(t["executed_at"][:10]),
                "XYZ",
                Side.BUY if buy else Side.SELL,
                Decimal(t["quantity"]),
                Decimal(t["price"]),
                lot_ids=(f"fill-{t['fill_id']}",) if buy else tuple(t["lot_ids"]),
            )
        )
    whole: dict[str, tuple[Decimal, Decimal]] = {}
    for lot in ledger.lots(account):
        name = lot.lot_id.split("/", 1)[0]
        quantity, basis = whole.get(name, (Decimal(0), Decimal(0)))
        whole[name] = (quantity + lot.quantity, basis + lot.cost_basis)
    return {name: (_plain(q), _plain(b)) for name, (q, b) in whole.items()}


def _plain(value: Decimal) -> str:
    return format(value.normalize(), "f")


async def custodian_lots(
    sim: SimFactory, tmp_path: Path, trades: list[dict[str, Any]], day: str
) -> dict[str, dict[str, tuple[str, str]]]:
    async with sim() as c:
        loaded = await load(c, write_book(tmp_path, BOOK_DAY, **WASH_BOOK))
        assert loaded.status_code == 201, loaded.text
        for t in trades:  # one request each, as the gateway books fills as they come
            [result] = await book(c, t)
            assert result["outcome"] == "booked", result
        folder = await files(c, tmp_path / "out", day)
    return {account: lots_of(folder, account) for account in OPENING}


async def test_a_harvest_then_a_replacement_within_the_window_reconciles_clean(
    sim: SimFactory, tmp_path: Path
) -> None:
    trades = [
        trade("S1", "sell", "10", "200", "2026-01-05", lots=("H1",)),  # loss 1000
        trade("B1", "buy", "10", "210", "2026-01-20"),  # 15 days later: washes it all
    ]
    ours = await custodian_lots(sim, tmp_path, trades, "2026-01-20")
    assert ours[TAXABLE] == {"H2": ("10", "2900"), "fill-B1": ("10", "3100")}
    assert ours[TAXABLE] == ledger_lots(trades, TAXABLE)


async def test_a_loss_matches_shares_bought_before_then_after_first_bought_first(
    sim: SimFactory, tmp_path: Path
) -> None:
    trades = [
        trade("B0", "buy", "4", "205", "2026-01-05"),  # bought before the loss sale
        trade("S1", "sell", "10", "200", "2026-01-06", lots=("H1",)),  # loss 1000 on 10
        trade("B1", "buy", "3", "190", "2026-01-07"),  # after: 3 more of the loss shares
        trade("S2", "sell", "5", "199.37", "2026-01-08", lots=("H2",)),  # loss 1003.15 on 5
        trade("B2", "buy", "7", "195", "2026-02-05"),  # 28 days after S1: its last 3, then S2's 4
        trade("B3", "buy", "5", "195", "2026-03-20"),  # outside every window
    ]
    ours = await custodian_lots(sim, tmp_path, trades, "2026-03-20")
    expected = ledger_lots(trades, TAXABLE)
    assert ours[TAXABLE] == expected
    # not vacuous: each buy within a window carries part of a loss, the last none
    assert expected["fill-B0"] == ("4", "1220")
    assert expected["fill-B3"] == ("5", "975")
    assert Decimal(expected["fill-B2"][1]) > 7 * 195


async def test_an_ira_loss_does_not_wash_and_a_gain_never_does(
    sim: SimFactory, tmp_path: Path
) -> None:
    trades = [
        trade("S1", "sell", "10", "200", "2026-01-05", IRA, lots=("I1",)),
        trade("B1", "buy", "10", "210", "2026-01-06", IRA),
        trade("S2", "sell", "5", "400", "2026-01-07", lots=("H2",)),  # a gain
        trade("B2", "buy", "5", "390", "2026-01-08"),
    ]
    ours = await custodian_lots(sim, tmp_path, trades, "2026-01-08")
    assert ours[IRA] == {"fill-B1": ("10", "2100")} == ledger_lots(trades, IRA)
    assert ours[TAXABLE]["fill-B2"] == ("5", "1950")
    assert ours[TAXABLE] == ledger_lots(trades, TAXABLE)


async def test_a_restart_keeps_the_losses_not_matched_yet(sim: SimFactory, tmp_path: Path) -> None:
    store = str(tmp_path / "restart" / "book.sqlite3")
    async with sim(store_path=store) as c:
        await load(c, write_book(tmp_path, BOOK_DAY, **WASH_BOOK))
        await book(c, trade("S1", "sell", "10", "200", "2026-01-05", lots=("H1",)))
    async with sim(store_path=store) as c:  # the restarted process
        await book(c, trade("B1", "buy", "6", "210", "2026-01-10"))
        await book(c, trade("B2", "buy", "6", "210", "2026-01-11"))
        folder = await files(c, tmp_path / "out", "2026-01-11")
    assert lots_of(folder, TAXABLE) == {
        "H2": ("10", "2900"),
        "fill-B1": ("6", "1860"),  # 6 of the 10 loss shares: 600 disallowed
        "fill-B2": ("6", "1660"),  # the other 4: 400
    }
