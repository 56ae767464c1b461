"""An idle gateway polls less and less often (real PostgreSQL, the custodian double over real
HTTP), yet approved trades still go out, and their fills come back, at once: the trades
handler wakes the order sender, and sent orders wake the execution poller."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from itertools import pairwise
from types import SimpleNamespace
from typing import Any

import pytest
from ballast_common.consumer import Delivery
from ballast_common.db import Database
from ballast_common.testing import unit_of_work
from custodian_gateway import repository as repo
from custodian_gateway.handlers import on_trades_approved
from custodian_gateway.settings import Settings
from custodian_gateway.workers import Wakeups, execution_poller, order_sender

pytestmark = pytest.mark.integration


async def _until(check: Callable[[], bool], timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not check():
            await asyncio.sleep(0.01)


def _runtime(db: Database, settings: Settings) -> Any:
    return SimpleNamespace(settings=settings, uow=lambda: unit_of_work(db, "custodian-gateway"))


async def _stop(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_an_idle_poller_backs_off_to_the_idle_maximum(
    db: Database, custodian: Any, served: str
) -> None:
    settings = Settings(custodian_url=served, poll_interval_s=0.05, idle_poll_max_s=0.4)
    task = asyncio.create_task(execution_poller(_runtime(db, settings)))
    try:
        await _until(lambda: len(custodian.execution_polls) >= 7)
    finally:
        await _stop([task])
    gaps = [b - a for a, b in pairwise(custodian.execution_polls)]
    # pauses of 0.05, 0.1, 0.2, 0.4, 0.4, 0.4 s (a fixed interval would be 0.05 s each)
    assert gaps[0] >= 0.05
    assert all(gap >= 0.4 for gap in gaps[3:6])
    assert custodian.execution_polls[6] - custodian.execution_polls[0] >= 1.55


async def test_trades_arriving_at_an_idle_gateway_go_out_and_fill_at_once(
    db: Database, custodian: Any, served: str, kit: Any
) -> None:
    settings = Settings(
        custodian_url=served,
        send_interval_s=0.05,
        poll_interval_s=0.05,
        idle_poll_max_s=30.0,
        block_window_s=0.05,
        block_account_id=kit.BLOCK_ACCOUNT,
        custodian_id=kit.CUSTODIAN,
    )
    wakeups = Wakeups()
    runtime = _runtime(db, settings)
    tasks = [
        asyncio.create_task(order_sender(runtime, wakeups)),
        asyncio.create_task(execution_poller(runtime, wakeups)),
    ]
    try:
        # both loops have been idle for ~6.4 s: their next pauses are 6.4 s, so what arrives
        # within the bounds below was woken, not polled (bounds wide for a loaded machine)
        await _until(lambda: len(custodian.execution_polls) >= 8, timeout_s=20.0)
        arrived = time.monotonic()
        payload = kit.approved(kit.trades(3, quantity="4"), "ACC-1")
        async with unit_of_work(db, kit.SOURCE) as uow:
            await on_trades_approved(settings, wakeups)(
                uow, [Delivery(kit.envelope(payload, kit.TENANT), payload)]
            )
        await _until(lambda: len(custodian.orders) == 2, timeout_s=5.0)
        assert time.monotonic() - arrived < 4.0

        filled_at = time.monotonic()
        for client_order_id, order in list(custodian.orders.items()):
            custodian.fill(client_order_id, order["quantity"], "10")
        async with asyncio.timeout(5.0):
            while True:
                async with db.sessions() as session:
                    counts = await repo.allocation_counts(session, kit.TENANT)
                if counts.get("filled") == 3:
                    break
                await asyncio.sleep(0.02)
        assert time.monotonic() - filled_at < 4.0
    finally:
        await _stop(tasks)
