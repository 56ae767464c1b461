"""Integration test of the two background loops, on real PostgreSQL and real HTTP (the
custodian stand-in served by uvicorn on a free port): they wait out an unavailable custodian,
then send every order once and turn its fills into events."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import pytest
import uvicorn
from ballast_common import plumbing
from ballast_common.db import Database
from ballast_common.testing import unit_of_work
from custodian_gateway import repository as repo
from custodian_gateway.handlers import on_trades_approved
from custodian_gateway.orders import client_order_id_for
from custodian_gateway.settings import Settings
from custodian_gateway.workers import execution_poller, order_sender

pytestmark = pytest.mark.integration


@pytest.fixture
async def served(custodian: Any) -> AsyncIterator[str]:
    server = uvicorn.Server(
        uvicorn.Config(custodian.app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    await task


async def _until(check: Callable[[], Awaitable[bool]]) -> None:
    async with asyncio.timeout(10):
        while not await check():
            await asyncio.sleep(0.05)


async def test_loops_ride_out_an_outage_then_send_and_poll(
    db: Database,
    custodian: Any,
    served: str,
    trade_factory: Any,
    approved_factory: Any,
    envelope_factory: Any,
) -> None:
    settings = Settings(
        custodian_url=served,
        send_interval_s=0.05,
        poll_interval_s=0.05,
        max_backoff_s=0.2,
        send_batch_size=3,
        reset_check_interval_s=0.1,
    )
    runtime = SimpleNamespace(settings=settings, uow=lambda: unit_of_work(db, "custodian-gateway"))
    custodian.unavailable = True
    tasks = [
        asyncio.create_task(order_sender(runtime)),
        asyncio.create_task(execution_poller(runtime)),
    ]
    try:
        payload = approved_factory(trade_factory(5, quantity="2"))
        async with unit_of_work(db, "test") as uow:
            await on_trades_approved(uow, envelope_factory(payload), payload)
        await asyncio.sleep(0.3)  # the loops meet a 503 and back off
        assert custodian.orders == {}
        custodian.unavailable = False

        ids = [client_order_id_for(t.trade_id) for t in payload.trades]
        await _until(lambda: _async(len(custodian.orders) == 5))
        for cid in ids:
            custodian.fill(cid, "2", "50.5")

        async def all_filled() -> bool:
            async with db.sessions() as session:
                return (await repo.order_counts(session)).get("filled") == 5

        await _until(all_filled)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    assert all(custodian.times_submitted(cid) == 1 for cid in ids)
    async with db.sessions() as session:
        messages = await plumbing.pending_messages(session, 100)
    fills = [json.loads(m.value)["payload"] for m in messages if m.topic == "fills-received"]
    assert sorted(f["client_order_id"] for f in fills) == sorted(ids)


async def _async(value: bool) -> bool:
    return value
