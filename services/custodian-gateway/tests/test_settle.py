"""Settling what was sent after a restart of either side (real PostgreSQL, the custodian
double): orders the custodian does not know are sent again with the same client order id,
marked as possible resends; orders it knows are left to the execution cursor; and the
sender marks an order it may have sent before."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest
from ballast_common.db import Database
from ballast_common.testing import unit_of_work
from custodian_gateway import repository as repo
from custodian_gateway import service
from custodian_gateway.custodian import CustodianClient, CustodianUnavailable
from custodian_gateway.settings import Settings
from custodian_gateway.tables import Order
from custodian_gateway.workers import custodian_client, execution_poller

pytestmark = pytest.mark.integration
SYMBOLS = ("MSFT", "AAPL", "NVDA", "AMZN", "META", "TSLA", "AMD")


async def _orders(db: Database, kit: Any) -> dict[str, Order]:
    async with db.sessions() as session:
        found = await repo.list_orders(session, kit.TENANT, limit=1000, offset=0)
    return {o.client_order_id: o for o in found}


async def _sent_blocks(db: Database, client: CustodianClient, kit: Any, count: int) -> list[str]:
    """`count` blocks (one symbol each) approved, blocked and sent; their ids."""
    await kit.approve(
        db,
        *(
            kit.approved(kit.trades(1, symbol=s, quantity="10", side="buy"), f"ACC-{s}")
            for s in SYMBOLS[:count]
        ),
    )
    await kit.block(db)
    async with unit_of_work(db, kit.SOURCE) as uow:
        outcome = await service.send_new_orders(uow, client, 100, kit.CUSTODIAN)
    assert len(outcome.sent) == count and outcome.possible_resends == 0
    return sorted(outcome.sent)


async def _poll(db: Database, client: CustodianClient, kit: Any) -> None:
    async with unit_of_work(db, kit.SOURCE) as uow:
        await service.poll_executions(uow, client, 100, kit.CUSTODIAN)


async def _settle(db: Database, client: CustodianClient, kit: Any, **options: Any) -> Any:
    async with unit_of_work(db, kit.SOURCE) as uow:
        return await service.settle_sent_orders(uow, client, kit.CUSTODIAN, **options)


async def test_orders_the_custodian_forgot_are_sent_again_with_the_same_id(
    db: Database, custodian: Any, client: CustodianClient, kit: Any
) -> None:
    known, lost, partly = await _sent_blocks(db, client, kit, 3)
    custodian.fill(partly, "4", "10")
    await _poll(db, client, kit)
    terms = dict(custodian.orders)
    custodian.restart()  # the custodian lost its state...
    custodian.orders[known] = terms[known]  # ...but for one order

    outcome = await _settle(db, client, kit)

    assert (outcome.checked, outcome.known) == (3, 1)
    assert outcome.resent == [lost] and outcome.refused == []
    assert outcome.unknown_partially_filled == [partly]  # not sent whole again
    assert outcome.last_client_order_id is None
    (resend,) = custodian.submissions
    assert (resend.ids, resend.possible_resends) == ([lost], [lost])
    assert custodian.orders[lost] == terms[lost] | {"possible_resend": True}
    orders = await _orders(db, kit)
    assert (orders[lost].status, orders[lost].times_sent) == ("sent", 2)
    assert (orders[known].times_sent, orders[partly].times_sent) == (1, 1)
    assert orders[partly].status == "partially_filled"

    again = await _settle(db, client, kit)  # settled: a second pass sends nothing
    assert (again.checked, again.known, again.resent) == (3, 2, [])
    assert len(custodian.submissions) == 1


async def test_settling_goes_through_the_orders_a_chunk_at_a_time(
    db: Database, custodian: Any, client: CustodianClient, kit: Any
) -> None:
    ids = await _sent_blocks(db, client, kit, 7)
    custodian.restart()
    seen: list[str] = []
    after = ""
    chunks = 0
    while True:
        outcome = await _settle(db, client, kit, after=after, limit=3, concurrency=2)
        chunks += 1
        seen += outcome.resent
        if outcome.last_client_order_id is None:
            break
        after = outcome.last_client_order_id
    assert chunks == 3 and seen == ids
    assert sorted(custodian.status_requests) == ids  # each asked about once
    assert sorted(custodian.orders) == ids
    assert all(s.ids == s.possible_resends for s in custodian.submissions)


async def test_a_custodian_unavailable_while_settling_changes_nothing(
    db: Database, custodian: Any, client: CustodianClient, kit: Any
) -> None:
    ids = await _sent_blocks(db, client, kit, 2)
    custodian.restart()
    custodian.unavailable = True
    with pytest.raises(CustodianUnavailable):
        await _settle(db, client, kit)
    assert {o.times_sent for o in (await _orders(db, kit)).values()} == {1}
    custodian.unavailable = False
    assert (await _settle(db, client, kit)).resent == ids


async def test_the_sender_marks_orders_it_may_have_sent_before(
    db: Database, custodian: Any, client: CustodianClient, kit: Any, lossy: Any
) -> None:
    await kit.approve(db, kit.approved(kit.trades(1, quantity="5", side="buy"), "ACC-1"))
    await kit.block(db)
    memory = service.SendMemory(started_at=datetime.now(UTC) - timedelta(hours=1))
    lossy.lose = True  # the custodian takes the order, the answer is lost
    with pytest.raises(CustodianUnavailable):
        async with unit_of_work(db, kit.SOURCE) as uow:
            await service.send_new_orders(uow, client, 10, kit.CUSTODIAN, memory)
    lossy.lose = False
    async with unit_of_work(db, kit.SOURCE) as uow:
        outcome = await service.send_new_orders(uow, client, 10, kit.CUSTODIAN, memory)
    (cid,) = outcome.sent
    assert outcome.possible_resends == 1 and memory.unanswered == set()
    first, second = custodian.submissions
    assert (first.possible_resends, second.possible_resends) == ([], [cid])

    # An order made before this sender started may have been sent by its predecessor.
    await kit.approve(db, kit.approved(kit.trades(1, quantity="5", side="sell"), "ACC-2"))
    await kit.block(db)
    restarted = service.SendMemory()
    async with unit_of_work(db, kit.SOURCE) as uow:
        outcome = await service.send_new_orders(uow, client, 10, kit.CUSTODIAN, restarted)
    assert outcome.possible_resends == 1
    assert custodian.submissions[-1].possible_resends == outcome.sent


def _runtime(db: Database, settings: Settings) -> Any:
    return SimpleNamespace(settings=settings, uow=lambda: unit_of_work(db, "custodian-gateway"))


async def _until(check: Callable[[], Any], timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not await check():
            await asyncio.sleep(0.02)


async def test_the_poller_settles_on_start_and_when_the_custodian_sequence_goes_back(
    db: Database, custodian: Any, served: str, kit: Any
) -> None:
    async with custodian_client(Settings(custodian_url=served)) as client:
        first, second = await _sent_blocks(db, client, kit, 2)
    terms = dict(custodian.orders)
    custodian.restart()  # lost while the gateway was down
    settings = Settings(
        custodian_url=served,
        custodian_id=kit.CUSTODIAN,
        poll_interval_s=0.05,
        idle_poll_max_s=0.2,
        reset_check_interval_s=0.1,
    )
    task = asyncio.create_task(execution_poller(_runtime(db, settings)))
    try:

        async def resent_both() -> bool:
            return sorted(custodian.orders) == [first, second]

        await _until(resent_both)  # on start
        assert all(s.possible_resends == s.ids for s in custodian.submissions)
        custodian.fill(first, "10", "12.5")
        custodian.fill(second, "3", "12.5")

        async def applied() -> bool:
            orders = await _orders(db, kit)
            return orders[first].status == "filled" and orders[second].filled_quantity == 3

        await _until(applied)
        custodian.restart()  # its sequence (2) is now below the cursor (2 -> 0)
        custodian.orders[second] = terms[second]
        custodian.fill(second, "7", "12.5")  # the rest, under the new sequence

        async def filled() -> bool:
            return (await _orders(db, kit))[second].status == "filled"

        await _until(filled)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    orders = await _orders(db, kit)
    assert orders[second].filled_quantity == Decimal(10)
    assert [o.times_sent for o in orders.values()] == [2, 2]
