"""Integration tests of the REST API on real PostgreSQL (the app without its lifespan: no
Kafka, no background loops; routes read through the runtime's database)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from ballast_common.app import create_app
from ballast_common.db import Database
from ballast_common.testing import unit_of_work
from custodian_gateway import service
from custodian_gateway.custodian import CustodianClient
from custodian_gateway.handlers import on_trades_approved
from custodian_gateway.main import spec
from custodian_gateway.orders import client_order_id_for
from custodian_gateway.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture
async def api(db: Database) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(spec, Settings())
    app.state.runtime = SimpleNamespace(db=db)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
        yield http


async def _book(
    db: Database, client: CustodianClient, custodian: Any, factories: tuple[Any, Any, Any]
) -> list[str]:
    trades, approved, envelope = factories
    ids = []
    for account in ("ACC-1", "ACC-2"):
        payload = approved(trades(2, quantity="4"), account_id=account)
        async with unit_of_work(db, "test") as uow:
            await on_trades_approved(uow, envelope(payload), payload)
        # Listed (and sent) oldest first; one message's orders by client order id.
        ids += sorted(client_order_id_for(t.trade_id) for t in payload.trades)
    async with unit_of_work(db, "test") as uow:
        await service.send_new_orders(uow, client, 3)  # one order stays new
    custodian.fill(ids[0], "1.5", "10.25")
    custodian.fill(ids[0], "2.5", "10.75")
    custodian.fill(ids[1], "1", "10")
    async with unit_of_work(db, "test") as uow:
        await service.poll_executions(uow, client, 100)
    return ids


@pytest.fixture
def factories(trade_factory: Any, approved_factory: Any, envelope_factory: Any) -> Any:
    return trade_factory, approved_factory, envelope_factory


async def test_orders_are_listed_filtered_and_paged(
    db: Database, api: httpx.AsyncClient, client: CustodianClient, custodian: Any, factories: Any
) -> None:
    ids = await _book(db, client, custodian, factories)
    page = (await api.get("/orders", params={"limit": 3})).json()
    assert [o["client_order_id"] for o in page["orders"]] == ids[:3]
    assert page["next_offset"] == 3
    rest = (await api.get("/orders", params={"limit": 3, "offset": 3})).json()
    assert [o["client_order_id"] for o in rest["orders"]] == ids[3:]
    assert rest["next_offset"] is None

    acc2 = (await api.get("/orders", params={"account_id": "ACC-2"})).json()["orders"]
    assert [o["client_order_id"] for o in acc2] == ids[2:]
    new = (await api.get("/orders", params={"status": "new"})).json()["orders"]
    assert [o["client_order_id"] for o in new] == [ids[3]]
    filled = (await api.get("/orders", params={"status": "filled"})).json()["orders"]
    assert filled[0]["client_order_id"] == ids[0]
    assert filled[0]["filled_quantity"] == "4"
    assert filled[0]["average_price"] == "10.5625"
    assert filled[0]["times_sent"] == 1


async def test_one_order_with_its_executions(
    db: Database, api: httpx.AsyncClient, client: CustodianClient, custodian: Any, factories: Any
) -> None:
    ids = await _book(db, client, custodian, factories)
    response = await api.get(f"/orders/{ids[1]}")
    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["filled_quantity"], body["quantity"]) == (
        "partially_filled",
        "1",
        "4",
    )
    assert [(e["quantity"], e["price"], e["outcome"]) for e in body["executions"]] == [
        ("1", "10", "applied")
    ]


async def test_unknown_order_is_a_404_problem(db: Database, api: httpx.AsyncClient) -> None:
    response = await api.get("/orders/BAL-nope")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert "BAL-nope" in response.json()["detail"]


@pytest.mark.parametrize(
    ("params", "field"),
    [({"status": "done"}, "status"), ({"limit": 0}, "limit"), ({"offset": -1}, "offset")],
)
async def test_bad_query_is_a_422_naming_the_field(
    db: Database, api: httpx.AsyncClient, params: dict[str, Any], field: str
) -> None:
    response = await api.get("/orders", params=params)
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == [f"query.{field}"]


async def test_stats(
    db: Database, api: httpx.AsyncClient, client: CustodianClient, custodian: Any, factories: Any
) -> None:
    await _book(db, client, custodian, factories)
    custodian.fill("BAL-unknown", "1", "1")
    async with unit_of_work(db, "test") as uow:
        await service.poll_executions(uow, client, 100)
    body = (await api.get("/stats")).json()
    assert body["orders"] == {
        "total": 4,
        "by_status": {"new": 1, "sent": 1, "partially_filled": 1, "filled": 1, "rejected": 0},
        "sent_more_than_once": 0,
    }
    assert body["executions"] == {"total": 4, "fills": 3, "rejects": 0, "orphans": 1, "invalid": 0}
    assert body["cursor"]["last_seq"] == 4
