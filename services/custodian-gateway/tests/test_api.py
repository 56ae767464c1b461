"""Integration tests of the REST API on real PostgreSQL (the app without its lifespan: no
Kafka, no background loops; routes read through the runtime's database)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from ballast_common.db import Database
from ballast_common.testing import api_client, unit_of_work
from custodian_gateway import repository as repo
from custodian_gateway import service
from custodian_gateway.custodian import CustodianClient
from custodian_gateway.main import spec

pytestmark = pytest.mark.integration


@pytest.fixture
async def api(db: Database) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(spec, db, tenant="acme") as http:
        yield http


async def _book(db: Database, client: CustodianClient, custodian: Any, kit: Any) -> list[str]:
    """Three blocks (MSFT, AAPL, IBM buys of ACC-1 and ACC-2), two sent; MSFT filled, AAPL
    partly filled, IBM still new. Returns the blocks' ids, oldest first."""
    for account in ("ACC-1", "ACC-2"):
        trades = [t for s in ("MSFT", "AAPL") for t in kit.trades(1, symbol=s, quantity="4")]
        await kit.approve(db, kit.approved(trades, account))
    await kit.block(db)
    await kit.approve(db, kit.approved(kit.trades(1, symbol="IBM", side="buy"), "ACC-1"))
    await kit.block(db)
    async with db.sessions() as session:
        ids = [
            o.client_order_id
            for o in await repo.list_orders(session, kit.TENANT, limit=10, offset=0)
        ]
    async with unit_of_work(db, "test") as uow:
        await service.send_new_orders(uow, client, 2, kit.CUSTODIAN)  # one block stays new
    symbols = {custodian.orders[i]["symbol"]: i for i in ids[:2]}
    custodian.fill(symbols["MSFT"], "3", "10.25")
    custodian.fill(symbols["MSFT"], "5", "10.75")
    custodian.fill(symbols["AAPL"], "1", "10")
    async with unit_of_work(db, "test") as uow:
        await service.poll_executions(uow, client, 100, kit.CUSTODIAN)
    return ids


async def test_blocks_are_listed_filtered_and_paged(
    db: Database, api: httpx.AsyncClient, client: CustodianClient, custodian: Any, kit: Any
) -> None:
    ids = await _book(db, client, custodian, kit)
    page = (await api.get("/orders", params={"limit": 2})).json()
    assert [o["client_order_id"] for o in page["items"]] == ids[:2]
    assert page["next_offset"] == 2
    rest = (await api.get("/orders", params={"limit": 2, "offset": 2})).json()
    assert [o["client_order_id"] for o in rest["items"]] == ids[2:]
    assert rest["next_offset"] is None

    new = (await api.get("/orders", params={"status": "new"})).json()["items"]
    assert [o["symbol"] for o in new] == ["IBM"]
    filled = (await api.get("/orders", params={"status": "filled"})).json()["items"]
    assert [o["symbol"] for o in filled] == ["MSFT"]
    msft = filled[0]
    assert (msft["filled_quantity"], msft["quantity"], msft["average_price"]) == (
        "8",
        "8",
        "10.5625",
    )
    assert (msft["times_sent"], msft["allocation_count"], msft["account_id"]) == (
        1,
        2,
        kit.BLOCK_ACCOUNT,
    )
    assert msft["allocated_at"] is not None
    aapl = (await api.get("/orders", params={"symbol": "AAPL"})).json()["items"]
    assert [o["status"] for o in aapl] == ["partially_filled"]


async def test_one_block_with_its_allocations_and_executions(
    db: Database, api: httpx.AsyncClient, client: CustodianClient, custodian: Any, kit: Any
) -> None:
    ids = await _book(db, client, custodian, kit)
    msft = next(i for i in ids[:2] if custodian.orders[i]["symbol"] == "MSFT")
    response = await api.get(f"/orders/{msft}")
    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["filled_quantity"], body["quantity"]) == ("filled", "8", "8")
    assert [(e["quantity"], e["price"], e["outcome"]) for e in body["executions"]] == [
        ("3", "10.25", "applied"),
        ("5", "10.75", "applied"),
    ]
    assert sorted(a["account_id"] for a in body["allocations"]["items"]) == ["ACC-1", "ACC-2"]
    assert {
        (a["status"], a["filled_quantity"], a["average_price"])
        for a in body["allocations"]["items"]
    } == {("filled", "4", "10.5625")}
    assert body["allocations"]["next_offset"] is None
    # a page of allocations
    first = (await api.get(f"/orders/{msft}", params={"allocation_limit": 1})).json()
    assert len(first["allocations"]["items"]) == 1 and first["allocations"]["next_offset"] == 1
    second = (
        await api.get(f"/orders/{msft}", params={"allocation_limit": 1, "allocation_offset": 1})
    ).json()
    assert second["allocations"]["next_offset"] is None
    assert {
        first["allocations"]["items"][0]["trade_id"],
        second["allocations"]["items"][0]["trade_id"],
    } == {a["trade_id"] for a in body["allocations"]["items"]}

    # a trade's allocation, on its own
    trade_id = body["allocations"]["items"][0]["trade_id"]
    trade = (await api.get(f"/trades/{trade_id}")).json()
    assert (trade["client_order_id"], trade["status"], trade["filled_quantity"]) == (
        msft,
        "filled",
        "4",
    )


async def test_allocations_are_listed_by_account_and_status(
    db: Database, api: httpx.AsyncClient, client: CustodianClient, custodian: Any, kit: Any
) -> None:
    ids = await _book(db, client, custodian, kit)
    acc1 = (await api.get("/allocations", params={"account_id": "ACC-1"})).json()
    assert sorted(a["symbol"] for a in acc1["items"]) == ["AAPL", "IBM", "MSFT"]
    blocked = (await api.get("/allocations", params={"status": "blocked"})).json()["items"]
    assert sorted(a["symbol"] for a in blocked) == ["AAPL", "AAPL", "IBM"]
    of_block = (await api.get("/allocations", params={"client_order_id": ids[2]})).json()
    assert [a["symbol"] for a in of_block["items"]] == ["IBM"]
    paged = (await api.get("/allocations", params={"limit": 2})).json()
    assert len(paged["items"]) == 2 and paged["next_offset"] == 2


@pytest.mark.parametrize(
    "path", ["/orders/BAL-nope", "/trades/6f1c1f9e-0d51-4b8e-9b1e-2f0c6f0f9a11"]
)
async def test_unknown_order_or_trade_is_a_404_problem(
    db: Database, api: httpx.AsyncClient, path: str
) -> None:
    response = await api.get(path)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert path.rsplit("/", 1)[1] in response.json()["detail"]


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/orders", {"status": "done"}, "status"),
        ("/orders", {"limit": 0}, "limit"),
        ("/orders", {"offset": -1}, "offset"),
        ("/allocations", {"status": "sent"}, "status"),
        ("/orders/BLK-1", {"allocation_limit": 0}, "allocation_limit"),
    ],
)
async def test_bad_query_is_a_422_naming_the_field(
    db: Database, api: httpx.AsyncClient, path: str, params: dict[str, Any], field: str
) -> None:
    response = await api.get(path, params=params)
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == [f"query.{field}"]


async def test_a_trade_id_that_is_not_a_uuid_is_a_422(db: Database, api: httpx.AsyncClient) -> None:
    response = await api.get("/trades/not-a-uuid")
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == ["path.trade_id"]


async def test_stats(
    db: Database, api: httpx.AsyncClient, client: CustodianClient, custodian: Any, kit: Any
) -> None:
    await _book(db, client, custodian, kit)
    await kit.approve(db, kit.approved(kit.trades(1, symbol="AMD"), "ACC-3"))  # not yet blocked
    custodian.fill("BAL-unknown", "1", "1")
    async with unit_of_work(db, "test") as uow:
        await service.poll_executions(uow, client, 100, kit.CUSTODIAN)
    body = (await api.get("/stats")).json()
    assert body["blocks"] == {
        "total": 3,
        "by_status": {"new": 1, "sent": 0, "partially_filled": 1, "filled": 1, "rejected": 0},
        "sent_more_than_once": 0,
        "done_unallocated": 0,
    }
    assert body["allocations"] == {
        "total": 6,
        "by_status": {
            "pending": 1,
            "blocked": 3,
            "filled": 2,
            "partially_filled": 0,
            "rejected": 0,
        },
        # the two filled shares are to be told to the custodian
        "booking": {"pending": 2, "booked": 0, "refused": 0},
    }
    assert body["executions"] == {  # the tenant's blocks'; orphans: the custodian's
        "total": 3,
        "fills": 3,
        "rejects": 0,
        "orphans": 1,
        "invalid": 0,
        "overfills": 0,
    }
    assert body["cursor"]["last_seq"] == 4
