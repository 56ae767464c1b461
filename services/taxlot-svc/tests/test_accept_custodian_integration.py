"""The custodian's figure accepted (issue 11 item 1) against the real PostgreSQL: by a person
(`accept-custodian`) and by the `accept` policy when a day is reconciled; a ledger adjustment
per kind journalled with cause `reconciliation:<break id>`, audited, the holdings published;
and symbols the security master does not know kept as exceptions that hold their accounts."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import date
from decimal import Decimal
from typing import Any

import httpx
import pytest
from ballast_common import book_loads as loads
from ballast_common.auth import Role
from ballast_common.book_loads import LoadOptions
from ballast_common.contracts.events import SecuritiesChangedV1
from ballast_common.db import Database
from ballast_common.testing import bearer, outbox_events, unit_of_work
from sqlalchemy import text
from taxlot_svc import custodian_day, handlers, snapshots
from taxlot_svc.book_load import SPEC as BOOK_SPEC
from taxlot_svc.settings import Settings

pytestmark = pytest.mark.integration

TENANT = "acme"  # the `client` fixture's tenant
DAY, NEXT_DAY = date(2026, 12, 4), date(2026, 12, 7)
LOTS_HEADER = "account_id,symbol,lot_id,quantity,acquired_on,cost_basis"
ALL_ACCEPT = Settings(break_policies={k: "accept" for k in custodian_day.BREAK_KINDS})


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


def custodian_files(x: str, sym: str, lots: list[str], cash: str = "120.50") -> dict[str, bytes]:
    total = sum(Decimal(r.split(",")[3]) for r in lots)
    return {
        "cash.csv": csv("account_id,amount", [f"{x},{cash}"]),
        "positions.csv": csv("account_id,symbol,quantity", [f"{x},{sym},{total}"]),
        "lots.csv": csv(LOTS_HEADER, lots),
    }


# the custodian's lots: L1 one share less (the same basis), L2 absent, L3 another basis, L4 another
# date, L5 as ours, L9 a lot we do not have; and 20.50 more cash
def their_lots(x: str, sym: str) -> list[str]:
    return [
        f"{x},{sym},L1,9,2024-01-01,100.00",
        f"{x},{sym},L3,10,2024-01-03,150.00",
        f"{x},{sym},L4,10,2023-06-01,100.00",
        f"{x},{sym},L5,10,2024-01-05,100.00",
        f"{x},{sym},L9,5,2024-02-01,55.25",
    ]


@pytest.fixture
async def book(taxlot_db: Database) -> dict[str, Any]:
    """Account X with lots L1..L5 of a security (10 shares each, basis 100.00, acquired
    2024-01-0n) and 100.00 cash."""
    run = uuid.uuid4().hex[:6]
    x, sym = f"AX-{run}", f"A{run.upper()}"
    files = {
        "prices.csv": csv("symbol,price", [f"{sym},10"]),
        "accounts.csv": csv("account_id,household_id,name", [f"{x},AH-{run},x"]),
        "cash.csv": csv("account_id,amount", [f"{x},100.00"]),
        "positions.csv": csv("account_id,symbol,quantity", [f"{x},{sym},50"]),
        "lots.csv": csv(
            LOTS_HEADER, [f"{x},{sym},L{n},10,2024-01-0{n},100.00" for n in range(1, 6)]
        ),
    }
    await load(taxlot_db, BOOK_SPEC, f"book-{run}", date(2026, 11, 30), files)
    return {"account": x, "symbol": sym, "custodian": f"acust{run}", "run": run}


async def lots_of(client: httpx.AsyncClient, account: str) -> dict[str, tuple[str, str, str, str]]:
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


async def breaks_by_kind(client: httpx.AsyncClient, account: str) -> dict[str, dict[str, Any]]:
    page = (await client.get(f"/accounts/{account}/breaks", params={"status": "open"})).json()
    return {b["kind"]: b for b in page["breaks"]}


def accept(client: httpx.AsyncClient, break_id: int, note: str = "custodian is right") -> Any:
    body = {"resolution": "accept-custodian", "note": note}
    return client.post(f"/breaks/{break_id}/resolve", json=body)


async def ledger(db: Database, account: str) -> list[tuple[str, str, str | None, Any, Any]]:
    async with db.sessions() as session:
        rows = await session.execute(
            text(
                "SELECT cause, kind, lot_id, quantity, amount FROM ledger_entries"
                " WHERE account_id = :a AND cause LIKE 'reconciliation:%' ORDER BY id"
            ),
            {"a": account},
        )
        return [tuple(r) for r in rows]


async def published_holdings(db: Database, account: str) -> list[Any]:
    async with unit_of_work(db, "taxlot-svc") as uow:
        await snapshots.publish_pending(uow, limit=100_000)
    return [e.payload for e in await outbox_events(db, "holdings-reconciled", account)]


async def test_a_person_accepts_each_kind_and_the_ledger_becomes_the_custodians(
    client: httpx.AsyncClient, taxlot_db: Database, book: dict[str, Any]
) -> None:
    x, sym, custodian = book["account"], book["symbol"], book["custodian"]
    files = custodian_files(x, sym, their_lots(x, sym))
    result = await load(
        taxlot_db, custodian_day.spec(Settings()), f"{custodian}-{DAY}-aaa111", DAY, files
    )
    assert result["breaks"] == {
        "missing": 1,
        "extra": 1,
        "quantity": 1,
        "basis": 1,
        "date": 1,
        "cash": 1,
    }
    assert result["accounts_held"] == 1
    found = await breaks_by_kind(client, x)

    answers = {}
    for kind in ("quantity", "missing", "extra", "basis", "date", "cash"):
        response = await accept(client, found[kind]["id"], f"{kind}: theirs")
        assert response.status_code == 200, response.text
        answers[kind] = response.json()
    assert {k: a["status"] for k, a in answers.items()} == dict.fromkeys(answers, "resolved")
    # released with the last break that suspended it (extra), not before
    assert [k for k, a in answers.items() if a["account_released"]] == ["extra"]

    assert await lots_of(client, x) == {
        "L1": ("9", "100.00", "2024-01-01", "2024-01-01"),
        "L3": ("10", "150.00", "2024-01-03", "2024-01-03"),
        "L4": ("10", "100.00", "2023-06-01", "2023-06-01"),
        "L5": ("10", "100.00", "2024-01-05", "2024-01-05"),
        "L9": ("5", "55.25", "2024-02-01", "2024-02-01"),
    }
    holdings = (await client.get(f"/accounts/{x}/holdings")).json()
    assert Decimal(holdings["cash"]) == Decimal("120.50")

    ids = {k: found[k]["id"] for k in found}
    assert await ledger(taxlot_db, x) == [
        (f"reconciliation:{ids['quantity']}", "lot-adjust", "L1", Decimal(-1), Decimal("0.00")),
        (f"reconciliation:{ids['missing']}", "lot-relieve", "L2", Decimal(10), Decimal("100.00")),
        (f"reconciliation:{ids['extra']}", "lot-open", "L9", Decimal(5), Decimal("55.25")),
        (f"reconciliation:{ids['basis']}", "lot-adjust", "L3", Decimal(0), Decimal("50.00")),
        (f"reconciliation:{ids['date']}", "lot-adjust", "L4", Decimal(0), Decimal("0.00")),
        (f"reconciliation:{ids['cash']}", "cash", None, None, Decimal("20.50")),
    ]
    assert answers["quantity"]["adjustments"] == [
        {
            "account_id": x,
            "cause": f"reconciliation:{ids['quantity']}",
            "kind": "lot-adjust",
            "symbol": sym,
            "lot_id": "L1",
            "quantity": "-1",
            "amount": "0.00",
        }
    ]
    resolved = answers["cash"]["resolution"]
    assert (resolved["resolution"], resolved["note"]) == ("accept-custodian", "cash: theirs")

    # who, when, why: the audit trail and the break itself
    audit = await client.get(
        "/audit", params={"subject_type": "reconciliation-break", "subject_id": ids["extra"]}
    )
    [record] = audit.json()["items"]
    assert (record["actor"], record["action"]) == (f"admin@{TENANT}", "resolve")
    assert record["after"]["resolution"]["resolution"] == "accept-custodian"
    listed = (await client.get(f"/accounts/{x}/breaks")).json()["breaks"]
    assert {b["resolved"]["resolution"] for b in listed} == {"accept-custodian"}
    assert {b["resolved"]["resolved_by"] for b in listed} == {f"admin@{TENANT}"}

    # the new holdings published, as a reconciliation
    [snapshot] = [h for h in await published_holdings(taxlot_db, x) if h.cause == "reconciliation"]
    assert snapshot.cash == Decimal("120.50")
    [position] = snapshot.positions
    assert (position.symbol, position.quantity) == (sym, Decimal(44))

    # accepted once: again is a 409 and changes nothing
    again = await accept(client, ids["quantity"])
    assert again.status_code == 409
    assert "only an open break is resolved" in again.json()["detail"]
    assert len(await ledger(taxlot_db, x)) == 6

    # the next day, the custodian's files as they were: nothing to find, nothing held
    files = custodian_files(x, sym, their_lots(x, sym))
    nxt = await load(
        taxlot_db, custodian_day.spec(Settings()), f"{custodian}-{NEXT_DAY}-bbb222", NEXT_DAY, files
    )
    assert sum(nxt["breaks"].values()) == 0
    assert (nxt["lots_compared"], nxt["matched"]) == (5, 5)


async def test_the_accept_policy_adjusts_the_ledger_when_the_day_is_reconciled(
    client: httpx.AsyncClient, taxlot_db: Database, book: dict[str, Any]
) -> None:
    x, sym, custodian = book["account"], book["symbol"], book["custodian"]
    files = custodian_files(x, sym, their_lots(x, sym))
    load_id = f"{custodian}-{DAY}-ccc333"
    result = await load(taxlot_db, custodian_day.spec(ALL_ACCEPT), load_id, DAY, files)
    assert result["accepted"] == {
        "missing": 1,
        "extra": 1,
        "quantity": 1,
        "basis": 1,
        "date": 1,
        "cash": 1,
    }
    assert result["accounts_held"] == 0
    assert await breaks_by_kind(client, x) == {}
    listed = (await client.get(f"/accounts/{x}/breaks")).json()["breaks"]
    assert {(b["status"], b["resolved"]["resolved_by"]) for b in listed} == {("resolved", "policy")}
    assert await lots_of(client, x) == {
        "L1": ("9", "100.00", "2024-01-01", "2024-01-01"),
        "L3": ("10", "150.00", "2024-01-03", "2024-01-03"),
        "L4": ("10", "100.00", "2023-06-01", "2023-06-01"),
        "L5": ("10", "100.00", "2024-01-05", "2024-01-05"),
        "L9": ("5", "55.25", "2024-02-01", "2024-02-01"),
    }
    assert len(await ledger(taxlot_db, x)) == 6
    assert await outbox_events(taxlot_db, "trading-hold-changed", x) == []
    audit = await client.get(
        "/audit", params={"subject_type": "reconciliation", "subject_id": load_id}
    )
    [record] = audit.json()["items"]
    assert (record["actor"], record["action"]) == ("policy", "accept-custodian")
    assert record["after"]["accepted"]["quantity"] == 1
    assert any(h.cause == "reconciliation" for h in await published_holdings(taxlot_db, x))

    files = custodian_files(x, sym, their_lots(x, sym))
    nxt = await load(
        taxlot_db, custodian_day.spec(ALL_ACCEPT), f"{custodian}-{NEXT_DAY}-ddd444", NEXT_DAY, files
    )
    assert sum(nxt["breaks"].values()) == 0 and sum(nxt["accepted"].values()) == 0


async def test_a_break_whose_lot_changed_since_is_not_adjusted(
    client: httpx.AsyncClient, taxlot_db: Database, book: dict[str, Any]
) -> None:
    x, sym, custodian = book["account"], book["symbol"], book["custodian"]
    files = custodian_files(x, sym, their_lots(x, sym))
    await load(taxlot_db, custodian_day.spec(Settings()), f"{custodian}-{DAY}-eee555", DAY, files)
    found = await breaks_by_kind(client, x)
    async with taxlot_db.sessions() as session, session.begin():
        await session.execute(
            text("UPDATE lots SET quantity = 7 WHERE account_id = :a AND lot_id = 'L1'"),
            {"a": x},
        )
    response = await accept(client, found["quantity"]["id"])
    assert response.status_code == 409
    assert "changed since the break was found" in response.json()["detail"]
    assert (await lots_of(client, x))["L1"][0] == "7"
    assert (await breaks_by_kind(client, x))["quantity"]["status"] == "open"
    assert await ledger(taxlot_db, x) == []


async def test_another_tenant_cannot_accept(
    client: httpx.AsyncClient, taxlot_db: Database, book: dict[str, Any]
) -> None:
    x, sym, custodian = book["account"], book["symbol"], book["custodian"]
    files = custodian_files(x, sym, their_lots(x, sym))
    await load(taxlot_db, custodian_day.spec(Settings()), f"{custodian}-{DAY}-fff666", DAY, files)
    found = await breaks_by_kind(client, x)
    other = bearer("other-tenant", [Role.OPERATIONS])
    body = {"resolution": "accept-custodian", "note": "n"}
    response = await client.post(f"/breaks/{found['cash']['id']}/resolve", json=body, headers=other)
    assert response.status_code == 404
    assert (await breaks_by_kind(client, x))["cash"]["status"] == "open"
    assert await ledger(taxlot_db, x) == []
    response = await client.post(
        f"/breaks/{found['cash']['id']}/resolve", json={"resolution": "x", "note": "n"}
    )
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == ["resolution"]


async def test_an_unknown_security_is_an_exception_that_holds_its_accounts(
    client: httpx.AsyncClient, taxlot_db: Database, book: dict[str, Any]
) -> None:
    x, sym, custodian = book["account"], book["symbol"], book["custodian"]
    unknown = f"U{book['run'].upper()}"
    lots = [f"{x},{sym},L{n},10,2024-01-0{n},100.00" for n in range(1, 6)]
    lots.append(f"{x},{unknown},U1,3,2024-03-01,30.00")
    files = {
        "prices.csv": csv(
            "symbol,price,cusip,name", [f"{sym},10,,", f"{unknown},10,US0000000001,Unknown Co"]
        ),
        "cash.csv": csv("account_id,amount", [f"{x},100.00"]),
        "positions.csv": csv("account_id,symbol,quantity", [f"{x},{sym},50", f"{x},{unknown},3"]),
        "lots.csv": csv(LOTS_HEADER, lots),
    }
    spec = custodian_day.spec(ALL_ACCEPT)  # even accepting, no lot is opened in it
    result = await load(taxlot_db, spec, f"{custodian}-{DAY}-aab777", DAY, files)
    assert result["unknown_securities"] == 1
    assert result["accepted"]["extra"] == 0 and result["accounts_held"] == 1
    page = (
        await client.get(
            "/custodian-days/unknown-securities", params={"status": "open", "symbol": unknown}
        )
    ).json()
    [exception] = page["exceptions"]
    assert exception["kind"] == "unknown-security"
    assert (exception["custodian"], exception["business_date"]) == (custodian, DAY.isoformat())
    assert (exception["cusip"], exception["name"]) == ("US0000000001", "Unknown Co")
    assert (exception["first_file"], exception["first_line"]) == ("positions.csv", 3)
    assert (exception["rows"], exception["accounts_held"]) == (3, 1)
    assert "is not in the security master" in exception["detail"]
    [hold] = [e.payload for e in await outbox_events(taxlot_db, "trading-hold-changed", x)]
    assert hold.held and unknown in (hold.reason or "")
    assert "U1" not in await lots_of(client, x)
    # another tenant does not see it
    other = bearer("other-tenant", [Role.OPERATIONS])
    theirs = await client.get(
        "/custodian-days/unknown-securities", params={"symbol": unknown}, headers=other
    )
    assert theirs.json()["exceptions"] == []

    # the security master brings it: resolved, and the account released
    async with unit_of_work(taxlot_db, "taxlot-svc") as uow:
        event = SecuritiesChangedV1.model_validate(
            {
                "securities": [
                    {
                        "symbol": unknown,
                        "name": "Unknown Co",
                        "asset_class": "equity",
                        "sector": "industrials",
                        "price": "10",
                    }
                ]
            }
        )
        await handlers.on_securities_changed(uow, None, event)  # type: ignore[arg-type]
    page = (
        await client.get("/custodian-days/unknown-securities", params={"symbol": unknown})
    ).json()
    [exception] = page["exceptions"]
    assert (exception["status"], exception["resolved_by"]) == ("resolved", "securities-changed")
    events = [e.payload for e in await outbox_events(taxlot_db, "trading-hold-changed", x)]
    assert [e.held for e in events] == [True, False]


async def test_a_person_resolves_an_unknown_security(
    client: httpx.AsyncClient, taxlot_db: Database, book: dict[str, Any]
) -> None:
    x, sym, custodian = book["account"], book["symbol"], book["custodian"]
    unknown = f"V{book['run'].upper()}"
    lots = [f"{x},{sym},L{n},10,2024-01-0{n},100.00" for n in range(1, 6)]
    files = {
        "cash.csv": csv("account_id,amount", [f"{x},100.00"]),
        "positions.csv": csv("account_id,symbol,quantity", [f"{x},{sym},50", f"{x},{unknown},2"]),
        "lots.csv": csv(LOTS_HEADER, [*lots, f"{x},{unknown},V1,2,2024-03-01,20.00"]),
    }
    await load(taxlot_db, custodian_day.spec(Settings()), f"{custodian}-{DAY}-abc888", DAY, files)
    [exception] = (
        await client.get("/custodian-days/unknown-securities", params={"symbol": unknown})
    ).json()["exceptions"]
    assert (exception["cusip"], exception["name"]) == (None, None)
    # the extra lot kept ours: still held, by the unknown security
    extra = (await breaks_by_kind(client, x))["extra"]
    kept = await client.post(
        f"/breaks/{extra['id']}/resolve", json={"resolution": "keep-ours", "note": "n"}
    )
    assert kept.json()["account_released"] is False
    reader = bearer(TENANT, [Role.SPONSOR])
    url = f"/custodian-days/unknown-securities/{exception['id']}/resolve"
    denied = await client.post(url, json={"resolution": "a test symbol"}, headers=reader)
    assert denied.status_code == 403
    done = await client.post(url, json={"resolution": "a test symbol"})
    assert done.status_code == 200, done.text
    assert (done.json()["status"], done.json()["accounts_released"]) == ("resolved", 1)
    assert done.json()["resolved_by"] == f"admin@{TENANT}"
    again = await client.post(url, json={"resolution": "a test symbol"})
    assert again.status_code == 409
    events = [e.payload for e in await outbox_events(taxlot_db, "trading-hold-changed", x)]
    assert [e.held for e in events][-1] is False
