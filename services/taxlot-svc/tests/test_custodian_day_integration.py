"""A custodian's day reconciled against the ledger (docs/custodian-files.md, Reconciliation),
against the real PostgreSQL: a small ledger loaded from files, then custodian days that
match it, that break it once per kind, and that are wrong."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import date
from decimal import Decimal
from typing import Any

import httpx
import pytest
from ballast_common import book_loads as loads
from ballast_common.book_loads import LoadOptions
from ballast_common.db import Database
from ballast_common.errors import Conflict, InvalidInput
from ballast_common.testing import outbox_events, unit_of_work
from sqlalchemy import text
from taxlot_svc import custodian_day
from taxlot_svc.book_load import SPEC as BOOK_SPEC
from taxlot_svc.settings import Settings

pytestmark = pytest.mark.integration

TENANT = "acme"
LEDGER_AS_OF = date(2026, 11, 30)
DAY = date(2026, 12, 4)
SPEC = custodian_day.spec(Settings())


def csv(header: str, rows: list[str]) -> bytes:
    return ("\n".join([header, *rows]) + "\n").encode()


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    for i in range(0, len(data), 700):
        yield data[i : i + 700]


async def stage(db: Database, spec: Any, load_id: str, files: dict[str, bytes]) -> None:
    for name, content in files.items():
        async with unit_of_work(db, "taxlot-svc") as uow:
            await loads.stage_file(uow.session, spec, TENANT, load_id, name, _chunks(content))


async def apply(db: Database, spec: Any, load_id: str, as_of: date) -> dict[str, Any]:
    async with unit_of_work(db, "taxlot-svc") as uow:
        return await loads.apply(uow, spec, load_id, LoadOptions(as_of=as_of, tenant=TENANT))


async def problems(db: Database, load_id: str, as_of: date = DAY) -> list[tuple[str, int, str]]:
    async with db.sessions() as session, session.begin():
        found = await loads.validate(
            session, SPEC, load_id, LoadOptions(as_of=as_of, tenant=TENANT)
        )
    return [(p["file"], p["line"], p["message"]) for p in found["problems"]]


async def breaks_of(db: Database, load_id: str) -> list[dict[str, Any]]:
    async with db.sessions() as s:
        result = await s.execute(
            text(
                "SELECT account_id, kind, symbol, lot_id, ours, theirs, policy, status"
                " FROM reconciliation_breaks WHERE load_id = :load ORDER BY account_id, kind"
            ),
            {"load": load_id},
        )
        return [dict(r._mapping) for r in result]


class Ledger:
    """Two accounts of one run, loaded with taxlot-svc's book load; X1's lot L4 is in two
    pieces, as a wash sale leaves a lot."""

    def __init__(self) -> None:
        run = uuid.uuid4().hex[:6]
        self.run = run
        self.x1, self.x2 = f"X1-{run}", f"X2-{run}"
        self.aaa, self.bbb, self.ccc = (f"{s}{run.upper()}" for s in ("A", "B", "C"))
        self.custodian = f"cust{run}"

    def book(self) -> dict[str, bytes]:
        lots = [
            f"{self.x1},{self.aaa},L1,10,2024-01-02,1000.00",
            f"{self.x1},{self.aaa},L2,5,2025-06-01,600.50",
            f"{self.x1},{self.bbb},L3,3.5,2023-03-03,350.00",
            f"{self.x1},{self.bbb},L4,2,2024-02-02,20.00",
            f"{self.x2},{self.ccc},M1,40,2020-05-05,4000.00",
        ]
        return {
            "prices.csv": csv(
                "symbol,price", [f"{s},12.5" for s in (self.aaa, self.bbb, self.ccc)]
            ),
            "accounts.csv": csv(
                "account_id,household_id,name",
                [f"{self.x1},H-{self.run},one", f"{self.x2},H2-{self.run},two"],
            ),
            "cash.csv": csv("account_id,amount", [f"{self.x1},1000.00", f"{self.x2},25.50"]),
            "positions.csv": csv(
                "account_id,symbol,quantity",
                [
                    f"{self.x1},{self.aaa},15",
                    f"{self.x1},{self.bbb},5.5",
                    f"{self.x2},{self.ccc},40",
                ],
            ),
            "lots.csv": csv("account_id,symbol,lot_id,quantity,acquired_on,cost_basis", lots),
        }

    def day(
        self,
        lots: list[tuple[str, str, str, str, str, str]],
        cash: dict[str, str],
        as_of: str = DAY.isoformat(),
    ) -> dict[str, bytes]:
        positions: dict[tuple[str, str], Decimal] = {}
        for account, symbol, _, quantity, _, _ in lots:
            positions[account, symbol] = positions.get((account, symbol), Decimal(0)) + Decimal(
                quantity
            )
        return {
            "cash.csv": csv(
                "account_id,amount,as_of", [f"{a},{c},{as_of}" for a, c in cash.items()]
            ),
            "positions.csv": csv(
                "account_id,symbol,quantity,as_of",
                [f"{a},{s},{q},{as_of}" for (a, s), q in positions.items()],
            ),
            "lots.csv": csv(
                "account_id,symbol,lot_id,quantity,acquired_on,cost_basis,as_of",
                [",".join([*lot, as_of]) for lot in lots],
            ),
        }

    def matching_lots(self) -> list[tuple[str, str, str, str, str, str]]:
        return [
            (self.x1, self.aaa, "L1", "10", "2024-01-02", "1000.00"),
            (self.x1, self.aaa, "L2", "5", "2025-06-01", "600.50"),
            (self.x1, self.bbb, "L3", "3.5", "2023-03-03", "350.00"),
            (self.x1, self.bbb, "L4", "2", "2024-02-02", "20.00"),
            (self.x2, self.ccc, "M1", "40", "2020-05-05", "4000.00"),
        ]

    def load_id(self, digest: str = "abc123", day: date = DAY) -> str:
        return f"{self.custodian}-{day.isoformat()}-{digest}"


@pytest.fixture
async def ledger(taxlot_db: Database) -> Ledger:
    book = Ledger()
    await stage(taxlot_db, BOOK_SPEC, f"book-{book.run}", book.book())
    await apply(taxlot_db, BOOK_SPEC, f"book-{book.run}", LEDGER_AS_OF)
    async with taxlot_db.sessions() as s, s.begin():
        # L4 in two pieces of 1 share and 10.00 basis each
        await s.execute(
            text(
                "INSERT INTO lots (account_id, lot_id, seq, symbol, quantity, cost_basis,"
                " acquired_on, holding_start, cause, purchase_id, sleeve)"
                " SELECT account_id, 'L4/' || n, seq, symbol, 1, 10.00, acquired_on,"
                " holding_start, cause, purchase_id, sleeve FROM lots, generate_series(1, 2) n"
                " WHERE account_id = :a AND lot_id = 'L4'"
            ),
            {"a": book.x1},
        )
        await s.execute(
            text("DELETE FROM lots WHERE account_id = :a AND lot_id = 'L4'"), {"a": book.x1}
        )
    return book


async def test_a_day_that_matches_the_ledger_has_no_breaks(
    taxlot_db: Database, ledger: Ledger
) -> None:
    load_id = ledger.load_id()
    files = ledger.day(ledger.matching_lots(), {ledger.x1: "1000.00", ledger.x2: "25.50"})
    await stage(taxlot_db, SPEC, load_id, files)
    result = await apply(taxlot_db, SPEC, load_id, DAY)
    assert result["accounts"] == 2
    assert result["lots_compared"] == 5  # L4's pieces summed back to one lot
    assert result["matched"] == 5
    assert result["accounts_with_breaks"] == 0
    assert set(result["breaks"].values()) == {0}
    assert await breaks_of(taxlot_db, load_id) == []


async def test_one_break_of_each_kind_is_found_with_its_policy(
    taxlot_db: Database, ledger: Ledger
) -> None:
    x1, x2 = ledger.x1, ledger.x2
    lots = [
        (x1, ledger.aaa, "L1", "9", "2024-01-02", "1000.00"),  # quantity
        (x1, ledger.aaa, "L2", "5", "2025-06-01", "600.00"),  # basis, 0.50 apart
        (x1, ledger.bbb, "L3", "3.5", "2023-03-03", "350.01"),  # 0.01 apart: a match
        (x1, ledger.bbb, "L4", "2", "2024-02-03", "20.00"),  # date (of the pieces' lot)
        # M1 left out: missing
        (x2, ledger.ccc, "E1", "4", "2026-12-01", "50.00"),  # extra
    ]
    load_id = ledger.load_id()
    await stage(taxlot_db, SPEC, load_id, ledger.day(lots, {x1: "1000.01", x2: "25.52"}))
    result = await apply(taxlot_db, SPEC, load_id, DAY)

    assert result["breaks"] == {
        "missing": 1,
        "extra": 1,
        "quantity": 1,
        "basis": 1,
        "date": 1,
        "cash": 1,
    }
    assert (result["lots_compared"], result["matched"], result["accounts_with_breaks"]) == (6, 1, 2)
    found = {(b["account_id"], b["kind"]): b for b in await breaks_of(taxlot_db, load_id)}
    assert {k: (b["lot_id"], b["policy"]) for k, b in found.items()} == {
        (x1, "quantity"): ("L1", "suspend"),
        (x1, "basis"): ("L2", "flag"),
        (x1, "date"): ("L4", "flag"),
        (x2, "missing"): ("M1", "suspend"),
        (x2, "extra"): ("E1", "suspend"),
        (x2, "cash"): (None, "flag"),
    }
    assert {b["status"] for b in found.values()} == {"open"}
    assert found[x1, "quantity"]["ours"] == {
        "quantity": "10",
        "cost_basis": "1000",
        "acquired_on": "2024-01-02",
    }
    assert found[x1, "quantity"]["theirs"]["quantity"] == "9"
    assert found[x1, "date"]["ours"]["quantity"] == "2"  # the pieces summed
    assert found[x2, "missing"]["theirs"] is None
    assert found[x2, "extra"]["ours"] is None
    assert found[x2, "cash"]["ours"] == {"cash": "25.50"}
    assert found[x2, "cash"]["theirs"] == {"cash": "25.52"}

    again = await apply(taxlot_db, SPEC, load_id, DAY)  # the same day, applied again
    assert again["repeated"] is True
    assert {k: v for k, v in again.items() if k != "repeated"} == {
        k: v for k, v in result.items() if k != "repeated"
    }
    assert len(await breaks_of(taxlot_db, load_id)) == 6

    other = ledger.load_id("def456")  # other files for the same day
    await stage(taxlot_db, SPEC, other, ledger.day(lots, {x1: "1000.00", x2: "25.50"}))
    with pytest.raises(Conflict, match="reconciled already"):
        await apply(taxlot_db, SPEC, other, DAY)
    assert await breaks_of(taxlot_db, other) == []


async def test_policies_come_from_settings(taxlot_db: Database, ledger: Ledger) -> None:
    spec = custodian_day.spec(Settings(break_policies={"basis": "suspend", "cash": "accept"}))
    lots = ledger.matching_lots()
    lots[1] = (ledger.x1, ledger.aaa, "L2", "5", "2025-06-01", "1.00")
    load_id = ledger.load_id()
    await stage(taxlot_db, spec, load_id, ledger.day(lots, {ledger.x1: "0", ledger.x2: "25.50"}))
    await apply(taxlot_db, spec, load_id, DAY)
    assert {(b["kind"], b["policy"]) for b in await breaks_of(taxlot_db, load_id)} == {
        ("basis", "suspend"),
        ("cash", "accept"),
    }


async def test_a_wrong_day_is_refused_naming_the_problem(
    taxlot_db: Database, ledger: Ledger
) -> None:
    cash = {ledger.x1: "1000.00", ledger.x2: "25.50"}
    bad_id = f"{ledger.custodian}-{ledger.run}"
    await stage(taxlot_db, SPEC, bad_id, ledger.day(ledger.matching_lots(), cash))
    [(file, _, message)] = await problems(taxlot_db, bad_id)
    assert file == "load_id" and "<custodian>-<YYYY-MM-DD>" in message

    other_day = ledger.load_id(day=date(2026, 12, 3))
    await stage(taxlot_db, SPEC, other_day, ledger.day(ledger.matching_lots(), cash))
    assert [p[2] for p in await problems(taxlot_db, other_day)] == [
        "names 2026-12-03, but the load is as of 2026-12-04"
    ]

    stale = ledger.load_id("01d0e5")
    files = ledger.day(ledger.matching_lots(), cash, as_of="2026-12-03")
    files["lots.csv"] += f"{ledger.run}Z,{ledger.aaa},L9,1,2024-01-01,1.00,2026-12-04\n".encode()
    await stage(taxlot_db, SPEC, stale, files)
    found = await problems(taxlot_db, stale)
    assert ("cash.csv", 2, "as_of 2026-12-03 is not the business date 2026-12-04") in found
    assert ("lots.csv", 7, f"account {ledger.run}Z has no row in cash.csv") in found
    with pytest.raises(InvalidInput, match="nothing was applied"):
        await apply(taxlot_db, SPEC, stale, DAY)
    assert await breaks_of(taxlot_db, stale) == []


async def test_rest_upload_apply_and_read_the_breaks(
    client: httpx.AsyncClient, ledger: Ledger
) -> None:
    lots = ledger.matching_lots()[:-1]  # M1 missing
    load_id = ledger.load_id()
    for name, content in ledger.day(lots, {ledger.x1: "1000.00", ledger.x2: "25.50"}).items():
        response = await client.put(
            f"/custodian-days/{load_id}/files/{name}",
            content=content,
            headers={"content-type": "text/csv"},
        )
        assert response.status_code == 201, response.text
    applied = await client.post(f"/custodian-days/{load_id}/apply", json={"as_of": "2026-12-04"})
    assert applied.status_code == 200, applied.text
    assert applied.json()["breaks"]["missing"] == 1

    summary = (await client.get(f"/reconciliations/{ledger.custodian}/2026-12-04")).json()
    assert (summary["load_id"], summary["lots_compared"], summary["matched"]) == (load_id, 5, 4)
    page = (await client.get("/breaks", params={"status": "open", "account_id": ledger.x2})).json()
    assert [(b["kind"], b["lot_id"], b["policy"]) for b in page["breaks"]] == [
        ("missing", "M1", "suspend")
    ]
    assert page["next_after"] is None
    mine = (await client.get(f"/accounts/{ledger.x1}/breaks")).json()
    assert mine["breaks"] == []
    missing = await client.get(f"/reconciliations/{ledger.custodian}/2026-12-05")
    assert missing.status_code == 404
    wrong = await client.put(
        f"/custodian-days/{load_id}-2/files/accounts.csv",
        content=b"account_id\n",
        headers={"content-type": "text/csv"},
    )
    assert wrong.status_code == 404 and "cash.csv" in wrong.json()["detail"]


async def _holds(db: Database, *accounts: str) -> list[tuple[str, bool, str | None]]:
    """The trading-hold-changed events published for these accounts, in order."""
    found = []
    for account_id in accounts:
        for event in await outbox_events(db, "trading-hold-changed", account_id):
            payload = event.payload
            found.append((payload.account_id, payload.held, payload.reason))
    return found


async def test_a_suspending_break_holds_the_account_until_a_clean_day_releases_it(
    taxlot_db: Database, ledger: Ledger
) -> None:
    x1, x2 = ledger.x1, ledger.x2
    lots = ledger.matching_lots()
    lots[0] = (x1, ledger.aaa, "L1", "9", "2024-01-02", "1000.00")  # a quantity break
    cash = {x1: "1000.00", x2: "25.50"}
    first = await apply_day(taxlot_db, ledger, ledger.day(lots, cash), DAY)
    assert (first["accounts_held"], first["accounts_released"]) == (1, 0)
    assert await _holds(taxlot_db, x1, x2) == [
        (x1, True, f"quantity break of lot L1 ({ledger.aaa}): here 10, at the custodian 9")
    ]

    next_day = date(2026, 12, 7)
    clean = ledger.day(ledger.matching_lots(), cash, as_of=next_day.isoformat())
    second = await apply_day(taxlot_db, ledger, clean, next_day)
    assert (second["accounts_held"], second["accounts_released"]) == (0, 1)
    assert (await _holds(taxlot_db, x1))[-1] == (x1, False, None)
    assert {b["status"] for b in await breaks_of(taxlot_db, ledger.load_id())} == {"superseded"}


async def apply_day(
    db: Database, ledger: Ledger, files: dict[str, bytes], day: date
) -> dict[str, Any]:
    load_id = ledger.load_id(day=day)
    await stage(db, SPEC, load_id, files)
    return await apply(db, SPEC, load_id, day)
