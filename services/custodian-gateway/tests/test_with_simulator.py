"""Contract check against the real custodian simulator (tools/custodian-sim) in process:
approved trades of many accounts go in as block orders, partial fills and rejects come back,
and every block's fills are shared among its trades so that every quantity adds up exactly."""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from ballast_common.db import Database
from ballast_common.outbox import pending_messages
from ballast_common.testing import unit_of_work
from custodian_gateway import repository as repo
from custodian_gateway import service
from custodian_gateway.custodian import CustodianClient

sim_main = pytest.importorskip("custodian_sim.main")
sim_settings = pytest.importorskip("custodian_sim.settings")

pytestmark = pytest.mark.integration
Sim = tuple[CustodianClient, httpx.AsyncClient, "Clock"]


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def make_sim(tmp_path: Path) -> Callable[..., Any]:
    """`async with make_sim(**settings) as (client, http, clock)`: a fresh simulator (its
    book in a store file of the test's own)."""

    @asynccontextmanager
    async def make(**overrides: Any) -> AsyncIterator[Sim]:
        clock = Clock()
        options: dict[str, Any] = {
            "latency_ms": 10,
            "latency_jitter_ms": 0,
            "partial_fill_probability": 1.0,
            "max_fills": 4,
            "reject_symbols": ["XREJ"],
            "store_path": str(tmp_path / f"sim-{uuid.uuid4().hex[:8]}.sqlite3"),
        }
        settings = sim_settings.SimSettings(**(options | overrides))
        app = sim_main.create_app(settings, clock)
        transport = httpx.ASGITransport(app=app)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://sim") as http:
                yield CustodianClient(http), http, clock
        finally:
            app.state.book.close()

    return make


async def _block_and_send(db: Database, client: CustodianClient, kit: Any) -> None:
    await kit.block(db)
    async with unit_of_work(db, "test") as uow:
        await service.send_new_orders(uow, client, 2, kit.CUSTODIAN)
        await service.send_new_orders(uow, client, 10, kit.CUSTODIAN)


async def _poll_everything(db: Database, sim: Sim, kit: Any) -> None:
    client, _, clock = sim
    clock.now += timedelta(seconds=5)  # every planned execution is due
    while True:
        async with unit_of_work(db, "test") as uow:
            outcome = await service.poll_executions(uow, client, 3, kit.CUSTODIAN)
        if not outcome.page_full:
            return


async def _events(db: Database) -> list[tuple[str, dict[str, Any]]]:
    async with db.sessions() as session:
        messages = await pending_messages(session, 10_000)
    return [(m.topic, json.loads(m.value)["payload"]) for m in messages]


async def test_many_accounts_go_through_the_simulator_as_blocks(
    db: Database, make_sim: Callable[..., Any], kit: Any
) -> None:
    payloads = [
        kit.approved(
            kit.trades(1, quantity=str(3 + i), side="buy")
            + kit.trades(1, symbol="XREJ", quantity="3", side="sell"),
            f"ACC-SIM-{i}",
        )
        for i in range(12)
    ]
    await kit.approve(db, *payloads)
    async with make_sim() as sim:
        client, http, _ = sim
        for _ in range(2):  # a restarted gateway finds nothing new to block or send
            await _block_and_send(db, client, kit)
        await _poll_everything(db, sim, kit)
        stats = (await http.get("/stats")).json()

    assert stats["orders_received"] == 2  # 24 trades: one MSFT buy block, one XREJ sell block
    assert stats["orders_by_times_submitted"] == {"1": 2}
    async with db.sessions() as session:
        orders = {
            o.symbol: o for o in await repo.list_orders(session, kit.TENANT, limit=10, offset=0)
        }
        allocations = await repo.list_allocations(session, kit.TENANT, limit=100, offset=0)
        gateway = await service.stats(session, kit.OPERATOR, kit.CUSTODIAN)
    assert (orders["MSFT"].status, orders["MSFT"].quantity) == ("filled", Decimal(102))
    assert orders["XREJ"].status == "rejected"
    events = await _events(db)
    fills = [p for t, p in events if t == "fills-received"]
    rejects = [p for t, p in events if t == "order-rejected"]
    assert stats["fills"] > 1  # the block was split by the custodian...
    assert len(fills) == 12  # ...and each trade got one fill at the block's average price
    assert {f["price"] for f in fills} == {format(orders["MSFT"].average_price.normalize(), "f")}
    asked = {a.trade_id: a.quantity for a in allocations}
    assert all(Decimal(f["quantity"]) == asked[uuid.UUID(f["trade_id"])] for f in fills)
    assert len(rejects) == 12 and {r["quantity"] for r in rejects} == {"3"}
    assert gateway["cursor"]["last_seq"] == stats["last_seq"]
    assert gateway["executions"]["orphans"] == gateway["executions"]["invalid"] == 0
    assert gateway["allocations"]["by_status"]["filled"] == 12
    assert gateway["allocations"]["by_status"]["rejected"] == 12


async def test_a_block_the_simulator_fills_in_part_then_cancels_is_shared_pro_rata(
    db: Database, make_sim: Callable[..., Any], kit: Any
) -> None:
    asked = {f"ACC-{i}": Decimal(q) for i, q in enumerate(("100", "250", "7", "43", "600"))}
    await kit.approve(
        db,
        *(
            kit.approved(kit.trades(1, quantity=str(q), side="sell"), account)
            for account, q in asked.items()
        ),
    )
    async with make_sim(cancel_rest_probability=1.0) as sim:
        await _block_and_send(db, sim[0], kit)
        await _poll_everything(db, sim, kit)

    async with db.sessions() as session:
        (order,) = await repo.list_orders(session, kit.TENANT, limit=10, offset=0)
    assert order.status == "rejected" and 0 < order.filled_quantity < 1000
    filled = order.filled_quantity
    got: dict[str, Decimal] = defaultdict(Decimal)
    rest: dict[str, Decimal] = defaultdict(Decimal)
    for topic, payload in await _events(db):
        if topic == "fills-received":
            got[payload["account_id"]] += Decimal(payload["quantity"])
            assert Decimal(payload["price"]) == order.average_price
        else:
            rest[payload["account_id"]] += Decimal(payload["quantity"])
            assert "rest of the order cancelled" in payload["reason"]
            assert order.client_order_id in payload["reason"]
    assert sum(got.values()) == filled
    for account, quantity in asked.items():
        assert got[account] + rest[account] == quantity
        assert got[account] == got[account].to_integral_value()
        assert abs(got[account] - filled * quantity / 1000) < 1  # pro rata, within a share
