"""Integration test of the two background loops, on real PostgreSQL and real HTTP (the
custodian stand-in served by uvicorn on a free port): they wait out an unavailable custodian,
then gather the approved trades into blocks, send every block once and share its fills."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import pytest
from ballast_common.db import Database
from ballast_common.outbox import pending_messages
from ballast_common.testing import unit_of_work
from custodian_gateway import repository as repo
from custodian_gateway.settings import Settings
from custodian_gateway.workers import execution_poller, order_sender

pytestmark = pytest.mark.integration


async def _until(check: Callable[[], Awaitable[bool]]) -> None:
    async with asyncio.timeout(10):
        while not await check():
            await asyncio.sleep(0.05)


async def test_loops_ride_out_an_outage_then_send_and_poll(
    db: Database, custodian: Any, served: str, kit: Any
) -> None:
    settings = Settings(
        custodian_url=served,
        send_interval_s=0.05,
        poll_interval_s=0.05,
        max_backoff_s=0.2,
        send_batch_size=3,
        reset_check_interval_s=0.1,
        block_window_s=0.1,
        block_account_id=kit.BLOCK_ACCOUNT,
    )
    runtime = SimpleNamespace(settings=settings, uow=lambda: unit_of_work(db, "custodian-gateway"))
    custodian.unavailable = True
    tasks = [
        asyncio.create_task(order_sender(runtime)),
        asyncio.create_task(execution_poller(runtime)),
    ]
    try:
        payloads = [kit.approved(kit.trades(5, quantity="2"), f"ACC-{i}") for i in range(4)]
        await kit.approve(db, *payloads)
        # the blocks are made, and the sender meets a 503 and backs off
        await _until(lambda: _async(custodian.refused_while_down >= 2))
        assert custodian.orders == {}
        custodian.unavailable = False

        # 20 trades of 4 accounts: one buy block and one sell block
        await _until(lambda: _async(len(custodian.orders) == 2))
        ids = list(custodian.orders)
        for cid in ids:
            custodian.fill(cid, custodian.orders[cid]["quantity"], "50.5")

        async def all_filled() -> bool:
            async with db.sessions() as session:
                return (await repo.allocation_counts(session, kit.TENANT)).get("filled") == 20

        await _until(all_filled)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    assert all(custodian.times_submitted(cid) == 1 for cid in ids)
    assert sorted(o["quantity"] for o in custodian.orders.values()) == ["16", "24"]
    async with db.sessions() as session:
        messages = await pending_messages(session, 100)
    fills = [json.loads(m.value)["payload"] for m in messages if m.topic == "fills-received"]
    assert sorted(f["trade_id"] for f in fills) == sorted(
        str(t.trade_id) for p in payloads for t in p.trades
    )
    assert {f["client_order_id"] for f in fills} == set(ids)


async def _async(value: bool) -> bool:
    return value
