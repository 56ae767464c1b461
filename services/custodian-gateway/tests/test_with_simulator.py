"""Contract check against the real custodian simulator (tools/custodian-sim) in process:
orders go in, partial fills and rejects come back, and every quantity adds up exactly."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from ballast_common import plumbing
from ballast_common.db import Database
from ballast_common.testing import unit_of_work
from custodian_gateway import repository as repo
from custodian_gateway import service
from custodian_gateway.custodian import CustodianClient
from custodian_gateway.handlers import on_trades_approved

sim_main = pytest.importorskip("custodian_sim.main")
sim_settings = pytest.importorskip("custodian_sim.settings")

pytestmark = pytest.mark.integration


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def sim() -> AsyncIterator[tuple[CustodianClient, httpx.AsyncClient, Clock]]:
    clock = Clock()
    settings = sim_settings.SimSettings(
        latency_ms=10,
        latency_jitter_ms=0,
        partial_fill_probability=1.0,
        max_fills=4,
        reject_symbols=["XREJ"],
    )
    app = sim_main.create_app(settings, clock)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sim") as http:
        yield CustodianClient(http), http, clock


async def test_orders_round_trip_through_the_simulator(
    db: Database, sim: Any, trade_factory: Any, approved_factory: Any, envelope_factory: Any
) -> None:
    client, http, clock = sim
    payload = approved_factory(
        trade_factory(4, quantity="17") + trade_factory(1, symbol="XREJ", quantity="3"),
        account_id="ACC-SIM",
    )
    async with unit_of_work(db, "test") as uow:
        await on_trades_approved(uow, envelope_factory(payload), payload)
    for _ in range(2):  # the second send finds nothing new
        async with unit_of_work(db, "test") as uow:
            await service.send_new_orders(uow, client, 2)
            await service.send_new_orders(uow, client, 10)
    clock.now += timedelta(seconds=5)  # every planned execution is due
    while True:
        async with unit_of_work(db, "test") as uow:
            outcome = await service.poll_executions(uow, client, 3)
        if not outcome.page_full:
            break

    stats = (await http.get("/stats")).json()
    assert stats["orders_by_times_submitted"] == {"1": 5}
    async with db.sessions() as session:
        orders = await repo.list_orders(session, account_id=None, status=None, limit=10, offset=0)
        messages = await plumbing.pending_messages(session, 100)
        gateway = await service.stats(session)
    by_status = {o.symbol: o.status for o in orders}
    assert by_status == {"MSFT": "filled", "XREJ": "rejected"}
    assert all(o.filled_quantity == Decimal(17) for o in orders if o.symbol == "MSFT")
    fills = [m for m in messages if m.topic == "fills-received"]
    assert len(fills) == stats["fills"] > 4  # every order was split
    assert [m.topic for m in messages].count("order-rejected") == 1
    assert gateway["cursor"]["last_seq"] == stats["last_seq"]
    assert gateway["executions"]["orphans"] == gateway["executions"]["invalid"] == 0
