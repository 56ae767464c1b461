"""A break resolved by a person (`POST /breaks/{id}/resolve`, issue 11 item 3) against the real
PostgreSQL: kept with its note in the audit trail, the account released when no open break
suspends it any more (and only then, even when its last two are resolved at once)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import date
from typing import Any

import httpx
import pytest
from ballast_common import book_loads as loads
from ballast_common.auth import Role
from ballast_common.book_loads import LoadOptions
from ballast_common.db import Database
from ballast_common.testing import bearer, outbox_events, unit_of_work
from taxlot_svc import custodian_day
from taxlot_svc.book_load import SPEC as BOOK_SPEC
from taxlot_svc.settings import Settings

pytestmark = pytest.mark.integration

TENANT = "acme"  # the `client` fixture's tenant
DAY = date(2026, 12, 4)
SPEC = custodian_day.spec(Settings())


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


@pytest.fixture
async def day(taxlot_db: Database) -> dict[str, Any]:
    """Account X of a run with lots L1, L2, L3 in the ledger; a custodian's day with a quantity
    break of L1, L2 missing (both suspend X) and a basis break of L3 (flagged)."""
    run = uuid.uuid4().hex[:6]
    x, sym = f"RX-{run}", f"R{run.upper()}"
    book = {
        "prices.csv": csv("symbol,price", [f"{sym},10"]),
        "accounts.csv": csv("account_id,household_id,name", [f"{x},RH-{run},x"]),
        "cash.csv": csv("account_id,amount", [f"{x},100.00"]),
        "positions.csv": csv("account_id,symbol,quantity", [f"{x},{sym},30"]),
        "lots.csv": csv(
            "account_id,symbol,lot_id,quantity,acquired_on,cost_basis",
            [f"{x},{sym},L{n},10,2024-01-0{n},100.00" for n in (1, 2, 3)],
        ),
    }
    await load(taxlot_db, BOOK_SPEC, f"book-{run}", date(2026, 11, 30), book)
    custodian = f"rcust{run}"
    lots = [f"{x},{sym},L1,9,2024-01-01,100.00", f"{x},{sym},L3,10,2024-01-03,150.00"]
    files = {
        "cash.csv": csv("account_id,amount", [f"{x},100.00"]),
        "positions.csv": csv("account_id,symbol,quantity", [f"{x},{sym},19"]),
        "lots.csv": csv("account_id,symbol,lot_id,quantity,acquired_on,cost_basis", lots),
    }
    result = await load(taxlot_db, SPEC, f"{custodian}-{DAY}-abc123", DAY, files)
    assert result["accounts_held"] == 1
    return {"account": x, "custodian": custodian}


async def breaks(client: httpx.AsyncClient, account: str) -> dict[str, dict[str, Any]]:
    page = (await client.get(f"/accounts/{account}/breaks")).json()
    return {b["kind"]: b for b in page["breaks"]}


async def releases(db: Database, account: str) -> list[Any]:
    events = await outbox_events(db, "trading-hold-changed", account)
    return [e.payload for e in events if not e.payload.held]


def resolve(client: httpx.AsyncClient, break_id: int, note: str = "ours is right") -> Any:
    body = {"resolution": "keep-ours", "note": note}
    return client.post(f"/breaks/{break_id}/resolve", json=body)


async def test_the_last_suspending_break_resolved_releases_the_account(
    client: httpx.AsyncClient, taxlot_db: Database, day: dict[str, Any]
) -> None:
    account = day["account"]
    found = await breaks(client, account)
    assert {k: b["policy"] for k, b in found.items()} == {
        "quantity": "suspend",
        "missing": "suspend",
        "basis": "flag",
    }

    first = await resolve(client, found["quantity"]["id"], "the custodian's count is wrong")
    assert first.status_code == 200, first.text
    kept = first.json()
    assert (kept["status"], kept["account_released"]) == ("resolved", False)
    assert kept["resolution"]["resolution"] == "keep-ours"
    assert kept["resolution"]["note"] == "the custodian's count is wrong"
    assert kept["resolution"]["resolved_by"] == f"admin@{TENANT}"
    assert kept["ours"]["quantity"] == "10" and kept["theirs"]["quantity"] == "9"
    # a flagged break resolved releases nothing: another break still suspends the account
    flagged = await resolve(client, found["basis"]["id"])
    assert flagged.json()["account_released"] is False
    assert await releases(taxlot_db, account) == []

    last = await resolve(client, found["missing"]["id"], "sold yesterday, their file is late")
    assert last.status_code == 200, last.text
    assert last.json()["account_released"] is True
    [released] = await releases(taxlot_db, account)
    assert (released.custodian, released.business_date) == (day["custodian"], DAY)
    assert {b["status"] for b in (await breaks(client, account)).values()} == {"resolved"}
    open_ = await client.get("/breaks", params={"status": "open", "account_id": account})
    assert open_.json()["breaks"] == []

    # who, when and why, in the audit trail
    audit = await client.get(
        "/audit",
        params={"subject_type": "reconciliation-break", "subject_id": found["missing"]["id"]},
    )
    [record] = audit.json()["items"]
    assert (record["actor"], record["action"]) == (f"admin@{TENANT}", "resolve")
    assert record["before"]["status"] == "open"
    assert record["after"]["resolution"]["note"] == "sold yesterday, their file is late"

    again = await resolve(client, found["missing"]["id"])
    assert again.status_code == 409
    assert "is resolved: only an open break is resolved" in again.json()["detail"]


async def test_two_last_breaks_resolved_at_once_release_the_account_once(
    client: httpx.AsyncClient, taxlot_db: Database, day: dict[str, Any]
) -> None:
    found = await breaks(client, day["account"])
    answers = await asyncio.gather(
        resolve(client, found["quantity"]["id"]), resolve(client, found["missing"]["id"])
    )
    assert [a.status_code for a in answers] == [200, 200]
    assert sorted(a.json()["account_released"] for a in answers) == [False, True]
    assert len(await releases(taxlot_db, day["account"])) == 1


async def test_bad_requests_are_named(
    client: httpx.AsyncClient, taxlot_db: Database, day: dict[str, Any]
) -> None:
    break_id = (await breaks(client, day["account"]))["quantity"]["id"]
    unknown = {"resolution": "accept-everything", "note": "n"}
    response = await client.post(f"/breaks/{break_id}/resolve", json=unknown)
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == ["resolution"]
    response = await client.post(f"/breaks/{break_id}/resolve", json={"resolution": "keep-ours"})
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == ["note"]
    assert (await resolve(client, 2**62)).status_code == 404
    # another tenant's break is not found, and stays open
    other = bearer("other-tenant", [Role.OPERATIONS])
    response = await client.post(
        f"/breaks/{break_id}/resolve",
        json={"resolution": "keep-ours", "note": "n"},
        headers=other,
    )
    assert response.status_code == 404
    # reading is not enough to resolve
    reader = bearer(TENANT, [Role.SPONSOR])
    response = await client.post(
        f"/breaks/{break_id}/resolve",
        json={"resolution": "keep-ours", "note": "n"},
        headers=reader,
    )
    assert response.status_code == 403
    assert (await breaks(client, day["account"]))["quantity"]["status"] == "open"
    assert await releases(taxlot_db, day["account"]) == []
