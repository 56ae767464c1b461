"""The custodian's figure accepted survives a replay of the household (issue 11 item 3),
against the real PostgreSQL: the accept statements write an `adjust` input that the replay
applies in order with the fills, so a late fill (dated before the adjustment) keeps the
custodian's lots, a replay from scratch gives exactly the stored lots, and the next day
reconciles clean."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
from ballast_common import book_loads as loads
from ballast_common.book_loads import LoadOptions
from ballast_common.contracts.events import FillsReceivedV1
from ballast_common.db import Database
from ballast_common.testing import delivery, unit_of_work
from sqlalchemy import text
from taxlot_svc import custodian_day, replays
from taxlot_svc.book_load import SPEC as BOOK_SPEC
from taxlot_svc.handlers import on_fills_received
from taxlot_svc.settings import Settings

pytestmark = pytest.mark.integration

TENANT = "acme"  # the `client` fixture's tenant
DAY, NEXT_DAY = date(2026, 12, 4), date(2026, 12, 7)
LATE = date(2026, 12, 2)  # a fill dated before the day whose figures were accepted
LOTS_HEADER = "account_id,symbol,lot_id,quantity,acquired_on,cost_basis"
ALL_ACCEPT = Settings(break_policies={k: "accept" for k in custodian_day.BREAK_KINDS})
LOT_COLUMNS = (
    "lot_id, symbol, quantity, cost_basis, acquired_on, holding_start, seq, wash_adjustment,"
    " replacement, purchase_id, sleeve, cause, fill_id"
)


def csv(header: str, rows: list[str]) -> bytes:
    return ("\n".join([header, *rows]) + "\n").encode()


async def _one_chunk(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def load(db: Database, spec: Any, load_id: str, as_of: date, files: dict[str, bytes]) -> Any:
    for name, content in files.items():
        async with unit_of_work(db, "taxlot-svc") as uow:
            await loads.stage_file(uow.session, spec, TENANT, load_id, name, _one_chunk(content))
    async with unit_of_work(db, "taxlot-svc") as uow:
        return await loads.apply(uow, spec, load_id, LoadOptions(as_of=as_of, tenant=TENANT))


def custodian_files(x: str, sym: str, lots: list[str], cash: str = "100.00") -> dict[str, bytes]:
    total = sum(Decimal(r.split(",")[3]) for r in lots)
    return {
        "cash.csv": csv("account_id,amount", [f"{x},{cash}"]),
        "positions.csv": csv("account_id,symbol,quantity", [f"{x},{sym},{total}"]),
        "lots.csv": csv(LOTS_HEADER, lots),
    }


@pytest.fixture
async def book(taxlot_db: Database) -> dict[str, Any]:
    """Account X (household H) with lots L1..L5 of a security (10 shares each, basis 100.00,
    acquired 2024-01-0n) and 100.00 cash."""
    run = uuid.uuid4().hex[:6]
    x, sym = f"RX-{run}", f"R{run.upper()}"
    files = {
        "prices.csv": csv("symbol,price", [f"{sym},10"]),
        "accounts.csv": csv("account_id,household_id,name", [f"{x},RH-{run},x"]),
        "cash.csv": csv("account_id,amount", [f"{x},100.00"]),
        "positions.csv": csv("account_id,symbol,quantity", [f"{x},{sym},50"]),
        "lots.csv": csv(
            LOTS_HEADER, [f"{x},{sym},L{n},10,2024-01-0{n},100.00" for n in range(1, 6)]
        ),
    }
    await load(taxlot_db, BOOK_SPEC, f"book-{run}", date(2026, 11, 30), files)
    return {"account": x, "symbol": sym, "household": f"RH-{run}", "custodian": f"rcust{run}"}


async def lots_of(client: httpx.AsyncClient, account: str) -> dict[str, tuple[str, ...]]:
    found = (await client.get(f"/accounts/{account}/lots")).json()["lots"]
    return {
        lot["lot_id"]: (
            lot["quantity"],
            lot["cost_basis"],
            lot["acquired_on"],
            lot["holding_start"],
        )
        for lot in found
    }


async def stored_lots(db: Database, account: str) -> list[tuple[Any, ...]]:
    async with db.sessions() as session:
        rows = await session.execute(
            text(f"SELECT {LOT_COLUMNS} FROM lots WHERE account_id = :a ORDER BY lot_id"),
            {"a": account},
        )
        return [tuple(r) for r in rows]


async def adjust_inputs(db: Database, account: str) -> list[tuple[Any, ...]]:
    async with db.sessions() as session:
        rows = await session.execute(
            text(
                "SELECT ref, trade_on, method, lot_name, quantity, fees, acquired_on"
                " FROM tax_inputs WHERE account_id = :a AND kind = 'adjust' ORDER BY id"
            ),
            {"a": account},
        )
        return [tuple(r) for r in rows]


async def late_buy(db: Database, account: str, sym: str) -> str:
    """A buy of 2 shares at 10 dated LATE, through the handler as the consumer would."""
    fill_id = f"late-{uuid.uuid4().hex[:8]}"
    payload = FillsReceivedV1(
        fill_id=fill_id,
        client_order_id=f"co-{fill_id}",
        trade_id=uuid.uuid4(),
        proposal_id=uuid.uuid4(),
        account_id=account,
        symbol=sym,
        side="buy",
        quantity=Decimal(2),
        price=Decimal(10),
        executed_at=datetime(LATE.year, LATE.month, LATE.day, 15, 0, tzinfo=UTC),
    )
    async with unit_of_work(db, "taxlot-svc") as uow:
        await on_fills_received(uow, [delivery(payload, tenant=TENANT)])
    return fill_id


async def replayed_late(db: Database, account: str, fill_id: str) -> bool:
    async with db.sessions() as session:
        found = await session.execute(
            text(
                "SELECT 1 FROM ledger_entries WHERE account_id = :a AND fill_id = :f"
                " AND kind = 'replay'"
            ),
            {"a": account, "f": fill_id},
        )
        return found.first() is not None


async def test_accepted_quantity_and_basis_survive_a_late_fill_and_reconcile_clean(
    client: httpx.AsyncClient, taxlot_db: Database, book: dict[str, Any]
) -> None:
    x, sym, custodian = book["account"], book["symbol"], book["custodian"]
    # the custodian: L1 one share less (the same basis), L3 another basis; the rest as ours
    theirs = [
        f"{x},{sym},L1,9,2024-01-01,100.00",
        f"{x},{sym},L2,10,2024-01-02,100.00",
        f"{x},{sym},L3,10,2024-01-03,150.00",
        f"{x},{sym},L4,10,2024-01-04,100.00",
        f"{x},{sym},L5,10,2024-01-05,100.00",
    ]
    spec = custodian_day.spec(Settings())
    result = await load(
        taxlot_db, spec, f"{custodian}-{DAY}-aaa101", DAY, custodian_files(x, sym, theirs)
    )
    assert {k: n for k, n in result["breaks"].items() if n} == {"quantity": 1, "basis": 1}
    page = (await client.get(f"/accounts/{x}/breaks", params={"status": "open"})).json()
    ids = {b["kind"]: b["id"] for b in page["breaks"]}
    for kind in ("quantity", "basis"):
        body = {"resolution": "accept-custodian", "note": f"{kind}: theirs"}
        response = await client.post(f"/breaks/{ids[kind]}/resolve", json=body)
        assert response.status_code == 200, response.text

    accepted = await lots_of(client, x)
    assert accepted["L1"] == ("9", "100.00", "2024-01-01", "2024-01-01")
    assert accepted["L3"] == ("10", "150.00", "2024-01-03", "2024-01-03")
    # what a replay needs, dated the custodian's day, in the order accepted
    assert await adjust_inputs(taxlot_db, x) == [
        (f"reconciliation:{ids['quantity']}", DAY, "quantity", "L1", 9, Decimal("100.00"), None),
        (f"reconciliation:{ids['basis']}", DAY, "basis", "L3", 0, Decimal("150.00"), None),
    ]

    # a fill dated before the adjustments arrives: the household is replayed
    fill_id = await late_buy(taxlot_db, x, sym)
    assert await replayed_late(taxlot_db, x, fill_id)
    after = await lots_of(client, x)
    assert {k: v for k, v in after.items() if k != f"fill-{fill_id}"} == accepted
    assert after[f"fill-{fill_id}"] == ("2", "20.00", LATE.isoformat(), LATE.isoformat())

    # the next day, the custodian's lots (with the late fill's) and cash: nothing to find
    theirs.append(f"{x},{sym},fill-{fill_id},2,{LATE},20.00")
    files = custodian_files(x, sym, theirs, cash="80.00")
    nxt = await load(taxlot_db, spec, f"{custodian}-{NEXT_DAY}-aaa102", NEXT_DAY, files)
    assert sum(nxt["breaks"].values()) == 0
    assert (nxt["lots_compared"], nxt["matched"]) == (6, 6)


async def test_a_replay_from_scratch_gives_the_lots_the_accept_policy_wrote(
    client: httpx.AsyncClient, taxlot_db: Database, book: dict[str, Any]
) -> None:
    """Every kind of lot break accepted by the policy, then the household replayed from its
    inputs alone: the same lots, field by field, as the accept statements left."""
    x, sym, custodian, household = (
        book["account"],
        book["symbol"],
        book["custodian"],
        book["household"],
    )
    theirs = [
        f"{x},{sym},L1,12,2024-01-01,120.50",  # quantity and basis
        f"{x},{sym},L3,10,2024-01-03,150.00",  # basis
        f"{x},{sym},L4,10,2023-06-01,100.00",  # date
        f"{x},{sym},L5,10,2024-01-05,100.00",  # as ours
        f"{x},{sym},L9,5,2024-02-01,55.25",  # extra; L2 missing
    ]
    spec = custodian_day.spec(ALL_ACCEPT)
    result = await load(
        taxlot_db, spec, f"{custodian}-{DAY}-bbb201", DAY, custodian_files(x, sym, theirs)
    )
    assert {k: n for k, n in result["accepted"].items() if n} == {
        "quantity": 1,
        "basis": 2,
        "date": 1,
        "missing": 1,
        "extra": 1,
    }
    written = await stored_lots(taxlot_db, x)
    assert [(r[0], r[2], r[3], r[4]) for r in written] == [
        ("L1", 12, Decimal("120.50"), date(2024, 1, 1)),
        ("L3", 10, Decimal("150.00"), date(2024, 1, 3)),
        ("L4", 10, Decimal("100.00"), date(2023, 6, 1)),
        ("L5", 10, Decimal("100.00"), date(2024, 1, 5)),
        ("L9", 5, Decimal("55.25"), date(2024, 2, 1)),
    ]
    assert [m for _, _, m, *_ in await adjust_inputs(taxlot_db, x)] == [
        "close",
        "open",
        "date",
        "basis",
        "basis",
        "quantity",
    ]
    async with unit_of_work(taxlot_db, "taxlot-svc") as uow:
        state = await uow.session.execute(
            text("SELECT last_day FROM households WHERE household_id = :h"), {"h": household}
        )
        assert state.scalar_one() == DAY  # an input dated before the day now replays
        replayed = await replays.rebuild(uow.session, [household])
    assert replayed.changed() == []
    assert await stored_lots(taxlot_db, x) == written

    # a late fill replays the security again: still the custodian's, and clean the next day
    fill_id = await late_buy(taxlot_db, x, sym)
    assert await replayed_late(taxlot_db, x, fill_id)
    again = await stored_lots(taxlot_db, x)
    # all the same but the sequence number of L9: the late buy now comes before its opening
    assert [(*r[:6], *r[7:]) for r in again if r[0] != f"fill-{fill_id}"] == [
        (*r[:6], *r[7:]) for r in written
    ]
    theirs.append(f"{x},{sym},fill-{fill_id},2,{LATE},20.00")
    files = custodian_files(x, sym, theirs, cash="80.00")
    nxt = await load(taxlot_db, spec, f"{custodian}-{NEXT_DAY}-bbb202", NEXT_DAY, files)
    assert sum(nxt["breaks"].values()) == 0 and sum(nxt["accepted"].values()) == 0
