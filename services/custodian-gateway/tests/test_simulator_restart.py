"""kill -9 of a real custodian simulator process mid-flow (orders accepted, executions still
to come), restarted on the same store: the gateway's loops go on, and every block ends
filled exactly once, every trade gets exactly what it asked, nothing is executed twice."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest
from ballast_common.db import Database
from ballast_common.testing import outbox_events, unit_of_work
from custodian_gateway import repository as repo
from custodian_gateway import service
from custodian_gateway.settings import Settings
from custodian_gateway.workers import Wakeups, execution_poller, order_sender

pytest.importorskip("custodian_sim.main")
pytestmark = pytest.mark.integration

SYMBOLS = ("MSFT", "AAPL", "NVDA", "AMZN", "META", "TSLA", "AMD", "NFLX")
ACCOUNTS = 6
SIM_ENV = {
    # pieces 0.4-1.2 s apart: the kill falls between the executions of most blocks
    "SIM_LATENCY_MS": "400",
    "SIM_LATENCY_JITTER_MS": "800",
    "SIM_PARTIAL_FILL_PROBABILITY": "1.0",
    "SIM_MAX_FILLS": "4",
    "SIM_SEED": "11",
    "SIM_LOG_LEVEL": "WARNING",
}


@pytest.fixture
async def simulator(simulator_process: Callable[..., Awaitable[Any]]) -> Any:
    return await simulator_process(SIM_ENV)


async def test_a_simulator_killed_mid_flow_and_restarted_fills_every_order_exactly_once(
    db: Database, simulator: Any, kit: Any
) -> None:
    settings = Settings(
        custodian_url=simulator.url,
        custodian_id=kit.CUSTODIAN,
        block_account_id=kit.BLOCK_ACCOUNT,
        block_window_s=0.05,
        send_interval_s=0.05,
        poll_interval_s=0.05,
        idle_poll_max_s=0.5,
        max_backoff_s=0.5,
        reset_check_interval_s=0.5,
        http_timeout_s=2,
    )
    wakeups = Wakeups()
    runtime = SimpleNamespace(settings=settings, uow=lambda: unit_of_work(db, kit.SOURCE))
    loops = [
        asyncio.create_task(order_sender(runtime, wakeups)),
        asyncio.create_task(execution_poller(runtime, wakeups)),
    ]
    payloads = [
        kit.approved(
            [
                trade
                for s, side in ((0, "buy"), (1, "sell"), (2, "buy"))
                for trade in kit.trades(
                    1, symbol=SYMBOLS[(a + s) % len(SYMBOLS)], quantity=str(5 + a), side=side
                )
            ],
            f"ACC-R{a}",
        )
        for a in range(ACCOUNTS)
    ]
    try:
        await kit.approve(db, *payloads)
        wakeups.wake_sender()

        async def mid_flow() -> dict[str, Any] | None:
            stats = await simulator.get("/stats")
            blocks = await _block_count(db, kit)
            working = stats["pending_executions"] > 0 and stats["fills"] > 0
            return stats if blocks and stats["orders_received"] == blocks and working else None

        before = await kit.until(mid_flow, 30, "orders accepted, some executions still to come")
        released_before = await simulator.executions()
        await simulator.kill()
        await simulator.start()  # the same store, as a supervisor would restart it

        async def settled() -> bool:
            async with db.sessions() as session:
                counts = await repo.allocation_counts(session, kit.TENANT)
            return set(counts) == {"filled"}

        await kit.until(settled, 60, "every allocation filled")
    finally:
        for task in loops:
            task.cancel()
        await asyncio.gather(*loops, return_exceptions=True)

    after = await simulator.get("/stats")
    executions = await simulator.executions()
    assert before["pending_executions"] > 0  # the kill came with executions still to come
    # the sequence went on: what was released before the kill kept its numbers, no gaps
    assert executions[: len(released_before)] == released_before
    assert [e["seq"] for e in executions] == list(range(1, len(executions) + 1))
    ids = [e["execution_id"] for e in executions]
    assert len(ids) == len(set(ids))
    assert after["orders_received"] == before["orders_received"]  # no order forgotten
    assert after["pending_executions"] == 0 and after["rejects"] == 0

    async with db.sessions() as session:
        orders = await repo.list_orders(session, kit.TENANT, limit=1000, offset=0)
        allocations = await repo.list_allocations(session, kit.TENANT, limit=1000, offset=0)
        stats = await service.stats(session, kit.OPERATOR, kit.CUSTODIAN)
    executed: Counter[str] = Counter()
    for e in executions:
        executed[e["client_order_id"]] += Decimal(e["quantity"])
    assert {o.client_order_id: o.quantity for o in orders} == dict(executed)
    assert all(o.status == "filled" and o.filled_quantity == o.quantity for o in orders)
    assert len(allocations) == 3 * ACCOUNTS
    assert all(a.filled_quantity == a.quantity for a in allocations)
    assert stats["executions"]["total"] == len(executions)
    assert stats["executions"]["invalid"] == stats["executions"]["orphans"] == 0
    assert stats["cursor"]["last_seq"] == len(executions)
    fills = await outbox_events(db, "fills-received")
    assert len(fills) == len(allocations)  # one fill per trade, none twice
    assert len({f.payload.fill_id for f in fills}) == len(allocations)


async def _block_count(db: Database, kit: Any) -> int:
    async with db.sessions() as session:
        return sum((await repo.order_counts(session, kit.TENANT)).values())
