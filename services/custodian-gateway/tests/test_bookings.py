"""Each filled share of a done block is told to the custodian once (POST /allocations):
pending in the transaction that shares the block, then booked or refused with the
custodian's reason; kept pending while the custodian is down; a batch the custodian refuses
goes one by one, so only the bad allocation is refused."""

from __future__ import annotations

from typing import Any

import pytest
from ballast_common.db import Database
from ballast_common.testing import unit_of_work
from custodian_gateway import repository as repo
from custodian_gateway import service
from custodian_gateway.custodian import CustodianClient, CustodianUnavailable
from custodian_gateway.orders import allocation_fill_id
from sqlalchemy import text

pytestmark = pytest.mark.integration


async def _filled(db: Database, client: CustodianClient, custodian: Any, kit: Any) -> None:
    """Two filled blocks: MSFT buys of ACC-1, NOBODY-2 and ACC-3, an AMD sell of ACC-1 naming
    lots L1 and L2; an IBM block rejected (nothing to book)."""
    for account in ("ACC-1", "NOBODY-2", "ACC-3"):
        await kit.approve(db, kit.approved(kit.trades(1, symbol="MSFT", side="buy"), account))
    sell = kit.trades(1, symbol="AMD", side="sell", quantity="7")
    sell[0] = sell[0].model_copy(update={"lot_ids": ["L1", "L2"]})
    await kit.approve(db, kit.approved(sell, "ACC-1"))
    await kit.approve(db, kit.approved(kit.trades(1, symbol="IBM", side="buy"), "ACC-1"))
    await kit.block(db)
    async with unit_of_work(db, "test") as uow:
        await service.send_new_orders(uow, client, 10, kit.CUSTODIAN)
    for cid, order in custodian.orders.items():
        if order["symbol"] == "IBM":
            custodian.reject(cid, "not tradable")
        else:
            custodian.fill(cid, order["quantity"], "10.125")
    async with unit_of_work(db, "test") as uow:
        await service.poll_executions(uow, client, 100, kit.CUSTODIAN)


async def _counts(db: Database, kit: Any) -> dict[str, int]:
    async with db.sessions() as session:
        return await repo.booking_counts(session, kit.TENANT)


async def test_filled_shares_are_booked_once_with_a_sells_lots(
    db: Database, client: CustodianClient, custodian: Any, kit: Any
) -> None:
    await _filled(db, client, custodian, kit)
    assert await _counts(db, kit) == {"pending": 4}  # the rejected IBM share has nothing

    custodian.unavailable = True
    with pytest.raises(CustodianUnavailable):
        async with unit_of_work(db, "test") as uow:
            await service.send_bookings(uow, client, 100, kit.CUSTODIAN)
    assert await _counts(db, kit) == {"pending": 4}  # kept for the next try
    custodian.unavailable = False

    async with unit_of_work(db, "test") as uow:
        outcome = await service.send_bookings(uow, client, 100, kit.CUSTODIAN)
    assert (outcome.claimed, outcome.booked, outcome.refused) == (4, 3, 1)
    assert await _counts(db, kit) == {"booked": 3, "refused": 1}
    async with unit_of_work(db, "test") as uow:
        assert (await service.send_bookings(uow, client, 100, kit.CUSTODIAN)).claimed == 0
    assert custodian.booking_posts == 1  # nothing sent again once recorded

    async with db.sessions() as session:
        allocations = await repo.list_allocations(session, kit.TENANT, limit=10, offset=0)
    by_account = {(a.account_id, a.symbol): a for a in allocations}
    sold = by_account[("ACC-1", "AMD")]
    booked = custodian.bookings[allocation_fill_id(sold.trade_id)]
    assert booked["lot_ids"] == ["L1", "L2"] and booked["side"] == "sell"
    assert (booked["quantity"], booked["price"]) == ("7", "10.125")
    assert booked["client_order_id"] == sold.client_order_id
    bought = custodian.bookings[allocation_fill_id(by_account[("ACC-1", "MSFT")].trade_id)]
    assert bought["lot_ids"] == [] and bought["account_id"] == "ACC-1"
    nobody = by_account[("NOBODY-2", "MSFT")]
    assert (nobody.booking_status, nobody.booking_reason) == (
        "refused",
        "account NOBODY-2 is not held",
    )
    assert by_account[("ACC-1", "IBM")].booking_status is None


async def test_a_batch_the_custodian_refuses_goes_one_by_one(
    db: Database, client: CustodianClient, custodian: Any, kit: Any
) -> None:
    await _filled(db, client, custodian, kit)
    custodian.refuse_symbols = {"AMD"}
    async with unit_of_work(db, "test") as uow:
        outcome = await service.send_bookings(uow, client, 100, kit.CUSTODIAN)
    assert (outcome.booked, outcome.refused) == (2, 2)
    async with db.sessions() as session:
        amd = await repo.list_allocations(
            session, kit.TENANT, account_id="ACC-1", limit=10, offset=0
        )
    reasons = {a.symbol: a.booking_reason for a in amd}
    assert reasons["AMD"] == "custodian refused the allocation: symbol AMD unknown"
    assert reasons["MSFT"] is None


async def test_a_block_larger_than_a_batch_is_booked_over_several_and_then_leaves_the_queue(
    db: Database, client: CustodianClient, custodian: Any, kit: Any
) -> None:
    """The queue holds blocks; a batch takes up to its size of a block's shares, the block
    stays due until every share is answered, and no share is sent twice."""
    await _filled(db, client, custodian, kit)  # MSFT: 3 shares, AMD: 1

    async def due() -> int:
        async with db.sessions() as session:
            found = await session.execute(
                text("SELECT count(*) FROM bookings_due WHERE client_order_id = ANY(:ids)"),
                {"ids": list(custodian.orders)},
            )
            return int(found.scalar_one())

    assert await due() == 2
    claimed = []
    for _ in range(4):
        async with unit_of_work(db, "test") as uow:
            claimed.append((await service.send_bookings(uow, client, 2, kit.CUSTODIAN)).claimed)
    assert claimed == [2, 2, 0, 0]
    assert await due() == 0
    assert await _counts(db, kit) == {"booked": 3, "refused": 1}
    assert len(custodian.bookings) == 4 and custodian.booking_posts == 2
