"""The custodial book: seeded from a book file set (whole or not at all), allocations booked
(versus purchase: the named lots in order; FIFO without names; refusals named, the rest of
the batch booked; idempotent by fill id), and the day's files, which the custodian files
check accepts."""

from __future__ import annotations

import csv
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from ballast_common.custodian_files import BALLAST, check_file_set

from .conftest import SimFactory

DAY = "2026-01-05"  # the fake clock's day
EXECUTED = f"{DAY}T15:00:00+00:00"

BOOK: dict[str, list[list[str]]] = {
    "accounts.csv": [["account_id", "household_id", "name"], ["A1", "H1", "Alice"],
                     ["A2", "H2", "Bob"]],
    "cash.csv": [["account_id", "amount"], ["A1", "10000.00"], ["A2", "500"]],
    "prices.csv": [["symbol", "price"], ["AAPL", "190"], ["MSFT", "400.25"]],
    "positions.csv": [["account_id", "symbol", "quantity"], ["A1", "AAPL", "30"],
                      ["A1", "MSFT", "5"], ["A2", "AAPL", "10"]],
    "lots.csv": [
        ["account_id", "symbol", "lot_id", "quantity", "acquired_on", "cost_basis"],
        ["A1", "AAPL", "L1", "10", "2020-01-10", "1000.00"],
        ["A1", "AAPL", "L2", "10", "2019-05-01", "900.0001"],
        ["A1", "AAPL", "L3", "10", "2021-03-01", "1500"],
        ["A1", "MSFT", "M1", "5", "2022-01-01", "1250.50"],
        ["A2", "AAPL", "B1", "10", "2023-01-01", "1700"],
    ],
}  # fmt: skip


def write_book(root: Path, as_of: str = "2026-01-02", **changes: list[list[str]]) -> Path:
    folder = root / "books" / as_of
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in {**BOOK, **changes}.items():
        with (folder / name).open("w", newline="") as f:
            csv.writer(f).writerows(rows)
    return folder


def allocation(
    fill_id: str,
    side: str,
    quantity: str,
    *,
    account: str = "A1",
    symbol: str = "AAPL",
    price: str = "200",
    lots: tuple[str, ...] = (),
) -> dict[str, Any]:
    return {
        "fill_id": fill_id,
        "client_order_id": "BLK-1",
        "account_id": account,
        "symbol": symbol,
        "side": side,
        "quantity": quantity,
        "price": price,
        "executed_at": EXECUTED,
        "lot_ids": list(lots),
    }


async def load(client: httpx.AsyncClient, folder: Path) -> httpx.Response:
    return await client.post("/book", json={"folder": str(folder)})


async def book(client: httpx.AsyncClient, *allocations: dict[str, Any]) -> list[dict[str, Any]]:
    response = await client.post("/allocations", json={"allocations": list(allocations)})
    assert response.status_code == 200, response.text
    return list(response.json()["results"])


async def files(client: httpx.AsyncClient, root: Path, day: str = DAY) -> Path:
    response = await client.post(f"/files/{day}", json={"root": str(root)})
    assert response.status_code == 201, response.text
    return Path(response.json()["folder"])


def rows(folder: Path, name: str) -> list[dict[str, str]]:
    with (folder / name).open(newline="") as f:
        return list(csv.DictReader(f))


def lots_of(folder: Path, account: str = "A1") -> dict[str, tuple[str, str]]:
    """lot id -> (quantity, cost basis) of one account in the day's lots.csv."""
    return {
        r["lot_id"]: (r["quantity"], r["cost_basis"])
        for r in rows(folder, "lots.csv")
        if r["account_id"] == account
    }


def cash_of(folder: Path, account: str = "A1") -> str:
    return next(r["amount"] for r in rows(folder, "cash.csv") if r["account_id"] == account)


def assert_valid(folder: Path, day: str = DAY) -> None:
    report = check_file_set(folder, BALLAST, date.fromisoformat(day))
    assert report.valid, [str(p) for p in report.problems]


async def test_a_sell_relieves_exactly_the_named_lots_in_their_order(
    sim: SimFactory, tmp_path: Path
) -> None:
    async with sim() as c:
        assert (await load(c, write_book(tmp_path))).status_code == 201
        results = await book(c, allocation("F-1", "sell", "15", lots=("L3", "L1")))
        folder = await files(c, tmp_path / "out")
    assert results == [{"fill_id": "F-1", "outcome": "booked", "reason": None, "duplicate": False}]
    # L3 (named first) closes; L1 gives up 5 of 10 and half its basis; L2 (oldest) untouched
    assert lots_of(folder) == {"L1": ("5", "500"), "L2": ("10", "900.0001"), "M1": ("5", "1250.5")}
    assert cash_of(folder) == "13000.00"
    sold = [(r["lot_id"], r["quantity"], r["amount"]) for r in rows(folder, "transactions.csv")]
    assert sold == [("L3", "10", "2000.00"), ("L1", "5", "1000.00")]
    assert_valid(folder)


async def test_a_piece_the_ledger_split_off_a_lot_relieves_that_lot(
    sim: SimFactory, tmp_path: Path
) -> None:
    # the ledger moved 4 of L3 to another sleeve as L3/s2: the custodian holds L3 whole
    async with sim() as c:
        await load(c, write_book(tmp_path))
        results = await book(c, allocation("F-1", "sell", "4", lots=("L3/s2",)))
        refused = await book(c, allocation("F-2", "sell", "1", lots=("L9/s2",)))
        folder = await files(c, tmp_path / "out")
    assert results[0]["outcome"] == "booked", results
    assert refused[0]["outcome"] == "refused"
    assert refused[0]["reason"] == "lot L9/s2 is not a lot of account A1"
    assert lots_of(folder)["L3"] == ("6", "900")
    sold = [(r["lot_id"], r["quantity"]) for r in rows(folder, "transactions.csv")]
    assert sold == [("L3", "4")]


async def test_a_sell_naming_no_lot_relieves_the_oldest_first(
    sim: SimFactory, tmp_path: Path
) -> None:
    async with sim() as c:
        await load(c, write_book(tmp_path))
        await book(c, allocation("F-1", "sell", "15", price="190.005"))
        folder = await files(c, tmp_path / "out")
    # FIFO: L2 (2019) whole, then 5 of L1 (2020); L3 (2021) untouched
    assert lots_of(folder) == {"L1": ("5", "500"), "L3": ("10", "1500"), "M1": ("5", "1250.5")}
    # proceeds 2850.075 -> 2850.08 (cents, half to even), shared by quantity
    assert cash_of(folder) == "12850.08"
    sold = [(r["lot_id"], r["amount"]) for r in rows(folder, "transactions.csv")]
    assert sold == [("L2", "1900.05"), ("L1", "950.03")]
    assert_valid(folder)


async def test_refusals_are_named_and_the_rest_of_the_batch_is_booked(
    sim: SimFactory, tmp_path: Path
) -> None:
    async with sim() as c:
        await load(c, write_book(tmp_path))
        results = await book(
            c,
            allocation("F-1", "sell", "5", lots=("L9",)),
            allocation("F-2", "sell", "5", lots=("M1",)),
            allocation("F-3", "sell", "25", lots=("L1", "L2")),
            allocation("F-4", "sell", "31"),
            allocation("F-5", "buy", "1", account="NOBODY"),
            allocation("F-6", "sell", "5", lots=("L1",)),
        )
        stats = (await c.get("/stats")).json()
        folder = await files(c, tmp_path / "out")
    reasons = {r["fill_id"]: r["reason"] for r in results if r["outcome"] == "refused"}
    assert reasons == {
        "F-1": "lot L9 is not a lot of account A1",
        "F-2": "lot M1 is a lot of MSFT, not of AAPL",
        "F-3": "cannot relieve 25 AAPL: the named lots hold 20",
        "F-4": "cannot relieve 31 AAPL: account A1 holds 30",
        "F-5": "account NOBODY is not held at this custodian",
    }
    assert results[-1]["outcome"] == "booked"
    assert stats["allocations_booked"] == 1 and stats["allocations_refused"] == 5
    assert lots_of(folder)["L1"] == ("5", "500")  # only F-6 was booked
    assert [r["transaction_id"] for r in rows(folder, "transactions.csv")] == ["F-6"]
    assert_valid(folder)


async def test_a_buy_opens_the_lot_taxlot_names_and_a_later_sell_can_name_it(
    sim: SimFactory, tmp_path: Path
) -> None:
    async with sim() as c:
        await load(c, write_book(tmp_path))
        await book(
            c,
            allocation("F-B", "buy", "3", account="A2", symbol="MSFT", price="401.333"),
            allocation("F-S", "sell", "1", account="A2", symbol="MSFT", lots=("fill-F-B",)),
        )
        folder = await files(c, tmp_path / "out")
    lots = [r for r in rows(folder, "lots.csv") if r["lot_id"] == "fill-F-B"]
    # basis 3 x 401.333 = 1204.00 (cents, half to even); 2 of 3 shares left: 802.67
    assert [(r["quantity"], r["cost_basis"], r["acquired_on"]) for r in lots] == [
        ("2", "802.67", DAY)
    ]
    assert cash_of(folder, "A2") == "-504.00"  # 500 - 1204.00 + 200.00
    positions = {
        (r["account_id"], r["symbol"]): r["quantity"] for r in rows(folder, "positions.csv")
    }
    assert positions[("A2", "MSFT")] == "2"
    types = [(r["type"], r["lot_id"]) for r in rows(folder, "transactions.csv")]
    assert types == [("buy", "fill-F-B"), ("sell", "fill-F-B")]
    assert_valid(folder)


async def test_an_allocation_sent_again_is_recognised_by_its_fill_id(
    sim: SimFactory, tmp_path: Path
) -> None:
    batch = [allocation("F-1", "sell", "5", lots=("L1",)), allocation("F-2", "sell", "99")]
    async with sim() as c:
        await load(c, write_book(tmp_path))
        first = await book(c, *batch)
        again = await book(c, *batch)
        other = await book(c, allocation("F-1", "sell", "6", lots=("L1",)))
        stats = (await c.get("/stats")).json()
        folder = await files(c, tmp_path / "out")
    assert [r["outcome"] for r in first] == ["booked", "refused"]
    assert [(r["outcome"], r["reason"]) for r in again] == [
        (r["outcome"], r["reason"]) for r in first
    ]
    assert all(r["duplicate"] for r in again)
    assert other[0]["outcome"] == "refused"
    assert other[0]["reason"] == "fill_id F-1 was received before with other terms " \
        "(differs in: quantity)"  # fmt: skip
    assert stats["allocations_booked"] == 1 and stats["allocations_received_again"] == 2
    assert lots_of(folder)["L1"] == ("5", "500")  # relieved once


async def test_allocations_that_break_the_contract_are_a_422_naming_the_field(
    sim: SimFactory, tmp_path: Path
) -> None:
    async with sim() as c:
        response = await c.post(
            "/allocations",
            json={"allocations": [allocation("F-" + "x" * 58, "buy", "1.5", price=2.5)]},
        )
    assert response.status_code == 422
    fields = {e["field"] for e in response.json()["errors"]}
    assert fields == {"allocations[0].fill_id", "allocations[0].price"}


async def test_a_book_is_loaded_whole_recognised_again_and_a_second_one_refused(
    sim: SimFactory, tmp_path: Path
) -> None:
    folder = write_book(tmp_path)
    async with sim() as c:
        first = await load(c, folder)
        again = await load(c, folder)
        prices = [["symbol", "price"], ["AAPL", "191"], ["MSFT", "400.25"]]
        other = await load(c, write_book(tmp_path / "other", **{"prices.csv": prices}))
        shown = (await c.get("/book")).json()
    assert first.status_code == 201 and first.json()["accounts"] == 2
    assert first.json()["lots"] == 5 and first.json()["as_of"] == "2026-01-02"
    assert again.status_code == 200 and again.json()["already_loaded"] is True
    assert again.json()["load_id"] == first.json()["load_id"] == shown["load_id"]
    assert other.status_code == 409


async def test_a_bad_book_is_refused_whole_with_every_bad_row_named(
    sim: SimFactory, tmp_path: Path
) -> None:
    lots = [list(r) for r in BOOK["lots.csv"]]
    lots[2][3] = "10.5x"  # L2's quantity
    lots[4][4] = "2027-01-01"  # M1 acquired after the book's date
    cash = [["account_id", "amount"], ["A1", "1"], ["A9", "2"]]
    folder = write_book(tmp_path, **{"lots.csv": lots, "cash.csv": cash})
    async with sim() as c:
        response = await load(c, folder)
        assert (await c.get("/book")).status_code == 404
        stats = (await c.get("/stats")).json()
    assert response.status_code == 422
    problems = {(e["file"], e["line"], e["column"]) for e in response.json()["errors"]}
    assert problems == {("lots.csv", 3, "quantity"), ("lots.csv", 5, "acquired_on")}
    assert stats["accounts"] == 0
    # once the values are right, the rules across files are checked
    lots[2][3], lots[4][4] = "10", "2022-01-01"
    write_book(tmp_path, **{"lots.csv": lots, "cash.csv": cash})
    async with sim() as c:
        response = await load(c, folder)
    problems = {(e["file"], e["line"], e["message"]) for e in response.json()["errors"]}
    assert problems == {
        ("accounts.csv", 3, "A2 has no row in cash.csv (every account has one)"),
        ("cash.csv", 3, "A9 is not an account of accounts.csv"),
    }


async def test_files_need_a_book_and_a_day_it_knows(sim: SimFactory, tmp_path: Path) -> None:
    async with sim(files_dir=str(tmp_path / "default")) as c:
        none = await c.post(f"/files/{DAY}", json={"root": str(tmp_path)})
        await load(c, write_book(tmp_path))
        early = await c.post("/files/2026-01-01", json={"root": str(tmp_path)})
        quiet = await files(c, tmp_path / "out", "2026-01-02")
        default = await c.post(f"/files/{DAY}")
    assert default.status_code == 201
    assert Path(default.json()["folder"]) == tmp_path / "default" / "ballast" / DAY
    assert_valid(tmp_path / "default" / "ballast" / DAY)
    assert none.status_code == 409
    assert early.status_code == 422 and "before the book's date" in early.json()["detail"]
    assert quiet.parts[-2:] == ("ballast", "2026-01-02")
    assert rows(quiet, "transactions.csv") == []
    assert_valid(quiet, "2026-01-02")


async def test_each_day_shows_the_book_as_it_stood_at_that_close(
    sim: SimFactory, tmp_path: Path, clock: Any
) -> None:
    async with sim() as c:
        await load(c, write_book(tmp_path))
        await book(c, allocation("F-1", "sell", "10", lots=("L1",)))
        later = allocation("F-2", "sell", "10", lots=("L2",))
        later["executed_at"] = "2026-01-06T15:00:00Z"
        await book(c, later)
        day1 = await files(c, tmp_path / "out")
        day2 = await files(c, tmp_path / "out", "2026-01-06")
    assert set(lots_of(day1)) == {"L2", "L3", "M1"}
    assert set(lots_of(day2)) == {"L3", "M1"}
    assert cash_of(day1) == "12000.00" and cash_of(day2) == "14000.00"
    assert_valid(day1)
    previous = {(r["account_id"], r["lot_id"]) for r in rows(day1, "lots.csv")}
    report = check_file_set(day2, BALLAST, date(2026, 1, 6), previous_lots=previous)
    assert report.valid and report.unverified_lot_references == 0


def test_prices_and_money_are_exact(tmp_path: Path) -> None:
    from custodian_sim.custody import money, prorate

    assert money(Decimal("2850.075")) == Decimal("2850.08")
    assert money(Decimal("0.125")) == Decimal("0.12")
    assert prorate(Decimal("900.0001"), Decimal(10), Decimal(10)) == Decimal("900.0001")
    assert prorate(Decimal("1000"), Decimal(1), Decimal(3)) == Decimal("333.33")
