"""Integration tests of custodian-gateway's service functions on real PostgreSQL, with an
in-memory stand-in of the remote custodian: approved trades become allocations, allocations
gather into block orders, blocks are sent once, and a done block's fills are shared among
its allocations."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest
from ballast_common.auth import Principal, Role
from ballast_common.consumer import Delivery
from ballast_common.contracts.envelope import Envelope
from ballast_common.db import Database
from ballast_common.errors import PermanentMessageError
from ballast_common.outbox import pending_messages
from ballast_common.telemetry import tracer
from ballast_common.testing import unit_of_work
from custodian_gateway import repository as repo
from custodian_gateway import service
from custodian_gateway.custodian import CustodianClient, CustodianUnavailable
from custodian_gateway.orders import allocation_fill_id
from custodian_gateway.tables import Allocation, Order
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import event

pytestmark = pytest.mark.integration
SOURCE = "custodian-gateway"
CUSTODIAN = "default"
BLOCK_ACCOUNT = "BLOCK-TEST"  # the conftest's kit uses the same names
TENANT = "acme"
OPERATOR = Principal("ops@acme", TENANT, frozenset({Role.OPERATIONS}))


async def _orders(db: Database, tenant: str = TENANT, **filters: Any) -> list[Order]:
    async with db.sessions() as session:
        return await repo.list_orders(
            session, tenant, status=filters.get("status"), limit=1000, offset=0
        )


async def _allocations(db: Database, **filters: Any) -> list[Allocation]:
    async with db.sessions() as session:
        return await repo.list_allocations(session, TENANT, limit=100_000, offset=0, **filters)


async def _events(db: Database) -> list[tuple[str, str, dict[str, Any]]]:
    """(topic, key, envelope) of every outbox message, in order."""
    async with db.sessions() as session:
        pending = await pending_messages(session, 100_000)
    return [(m.topic, m.key, json.loads(m.value)) for m in pending]


async def _send_all(db: Database, client: CustodianClient, batch: int) -> list[service.SendOutcome]:
    outcomes: list[service.SendOutcome] = []
    while True:
        async with unit_of_work(db, SOURCE) as uow:
            outcome = await service.send_new_orders(uow, client, batch, CUSTODIAN)
        if outcome.claimed == 0:
            return outcomes
        outcomes.append(outcome)


async def _poll_all(db: Database, client: CustodianClient, page: int) -> list[service.PollOutcome]:
    outcomes: list[service.PollOutcome] = []
    while True:
        async with unit_of_work(db, SOURCE) as uow:
            outcome = await service.poll_executions(uow, client, page, CUSTODIAN)
        outcomes.append(outcome)
        if not outcome.page_full:
            return outcomes


def _trace_id(traceparent: str | None) -> str:
    assert traceparent, "no trace context"
    return traceparent.split("-")[1]


@contextmanager
def _statements(db: Database) -> Iterator[list[str]]:
    """The SQL statements run on `db` inside the block."""
    seen: list[str] = []

    def note(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(" ".join(statement.split()))

    event.listen(db.engine.sync_engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", note)


async def _one_block(
    kit: Any, db: Database, client: CustodianClient, accounts: dict[str, str], symbol: str = "MSFT"
) -> tuple[Order, dict[str, Any]]:
    """Approve one buy of `symbol` per account (account -> quantity), block and send them;
    returns the block and each account's trade."""
    payloads = [
        kit.approved(kit.trades(1, symbol=symbol, quantity=q, side="buy"), account)
        for account, q in accounts.items()
    ]
    await kit.approve(db, *payloads)
    await kit.block(db)
    await _send_all(db, client, batch=10)
    (order,) = await _orders(db)
    return order, {p.account_id: p.trades[0] for p in payloads}


# --- trades-approved -> allocations ---------------------------------------------------------


async def test_a_batch_of_approved_trades_becomes_pending_allocations_in_one_statement(
    kit: Any,
    db: Database,
) -> None:
    first = kit.approved(kit.trades(3), "ACC-7")
    first.trades[1] = first.trades[1].model_copy(update={"lot_ids": ["L-7"], "sleeve_id": "core"})
    second = kit.approved(kit.trades(2, symbol="AAPL"), "ACC-8")
    with _statements(db) as statements:
        stored = await kit.approve(db, first, second)
    assert len(stored) == 5
    inserts = [s for s in statements if s.startswith("INSERT INTO allocations")]
    assert len(inserts) == 1, "the whole batch is one statement"
    # The same trades again (a redelivery under a new event id, or a second approval).
    assert await kit.approve(db, first) == []

    rows = {a.trade_id: a for a in await _allocations(db)}
    assert len(rows) == 5
    for payload in (first, second):
        for trade in payload.trades:
            a = rows[trade.trade_id]
            assert (a.account_id, a.proposal_id, a.tenant) == (
                payload.account_id,
                payload.proposal_id,
                "acme",
            )
            assert (a.custodian, a.status, a.client_order_id) == (CUSTODIAN, "pending", None)
            assert (a.symbol, a.side, a.quantity) == (trade.symbol, trade.side, trade.quantity)
            assert a.reference_price == trade.estimated_price
            assert (a.lot_ids, a.sleeve_id) == (trade.lot_ids, trade.sleeve_id)
            assert a.traceparent and a.traceparent.startswith("00-")
    assert await _orders(db) == []
    assert await _events(db) == []


@pytest.mark.parametrize(
    ("account_id", "symbol", "quantity", "message"),
    [
        (" ACC-1", "MSFT", "1", "account ' ACC-1'.*account_id is not a valid"),
        ("ACC-1", "MS FT", "1", "account 'ACC-1'.*trades\\[1\\].symbol 'MS FT'"),
        ("ACC-1", "MSFT", "0.000000001", "trades\\[1\\].quantity 0.000000001 has more than 8"),
    ],
)
async def test_trades_the_custodian_cannot_take_are_refused_whole(
    kit: Any, db: Database, account_id: str, symbol: str, quantity: str, message: str
) -> None:
    good = kit.approved(kit.trades(2), "ACC-GOOD")
    bad = kit.approved(kit.trades(1) + kit.trades(1, symbol=symbol, quantity=quantity), account_id)
    with pytest.raises(PermanentMessageError, match=message) as info:
        await kit.approve(db, good, bad)
    assert str(bad.proposal_id) in str(info.value)
    assert await _allocations(db) == []
    # redone one record at a time (as the consumer does), the good one is stored
    await kit.approve(db, good)
    with pytest.raises(PermanentMessageError):
        await kit.approve(db, bad)
    assert {a.account_id for a in await _allocations(db)} == {"ACC-GOOD"}


# --- blocking ---------------------------------------------------------------------------------


async def test_many_accounts_trades_in_one_security_become_one_block(
    kit: Any, db: Database
) -> None:
    buys = [
        kit.approved(kit.trades(1, quantity=str(10 + i), side="buy"), f"ACC-{i}") for i in range(6)
    ]
    # one price differs, so the block's reference price is the quantity-weighted average
    buys[0].trades[0] = buys[0].trades[0].model_copy(update={"estimated_price": Decimal("400")})
    sells = [
        kit.approved(kit.trades(1, symbol="AAPL", quantity="5", side="sell"), f"ACC-{i}")
        for i in range(3)
    ]
    fractional = kit.approved(kit.trades(1, quantity="2.5", side="buy"), "ACC-FRAC")
    other_firm = kit.approved(kit.trades(1, quantity="7", side="buy"), "ACC-OTHER")
    await kit.approve(db, *buys, *sells, fractional)
    await kit.approve(db, other_firm, tenant="globex")

    outcome = await kit.block(db)
    assert outcome.allocations == 11 and not outcome.full
    both = [*await _orders(db), *await _orders(db, "globex")]
    orders = {(o.tenant, o.symbol, o.side, o.whole_shares): o for o in both}
    assert set(orders) == {
        ("acme", "MSFT", "buy", True),
        ("acme", "AAPL", "sell", True),
        ("acme", "MSFT", "buy", False),  # fractional asks are shared in fractions: own block
        ("globex", "MSFT", "buy", True),  # a block never mixes firms
    }
    msft = orders[("acme", "MSFT", "buy", True)]
    assert (msft.quantity, msft.allocation_count, msft.status) == (Decimal(75), 6, "new")
    assert (msft.account_id, msft.custodian, msft.times_sent) == (BLOCK_ACCOUNT, CUSTODIAN, 0)
    # (10 x 400 + 65 x 415.20) / 75
    assert msft.reference_price == Decimal("413.17333333")
    trade_ids = [p.trades[0].trade_id for p in buys]
    assert msft.client_order_id == "BLK-" + min(trade_ids, key=str).hex
    members = await _allocations(db, client_order_id=msft.client_order_id)
    assert {a.trade_id for a in members} == set(trade_ids)
    assert {a.status for a in members} == {"blocked"}
    assert orders[("acme", "AAPL", "sell", True)].quantity == Decimal(15)
    assert await _allocations(db, status="pending") == []
    # Nothing is left to block.
    assert (await kit.block(db)).blocks == []


async def test_the_block_window_lets_a_fan_out_gather(kit: Any, db: Database) -> None:
    await kit.approve(db, kit.approved(kit.trades(2), "ACC-1"))
    waiting = await kit.block(db, window_s=30)
    assert waiting.blocks == [] and waiting.wait_s is not None and 29 < waiting.wait_s <= 30
    # trades still arriving: the oldest waits on (up to the longest wait)
    await kit.approve(db, kit.approved(kit.trades(2), "ACC-2"))
    assert (await kit.block(db, window_s=30)).blocks == []
    assert (await kit.block(db, window_s=30, max_wait_s=60)).wait_s <= 30
    # quiet for the window: everything that gathered goes out, one block per security and side
    blocked = await kit.block(db, window_s=0)
    assert sorted((b.side, b.allocation_count) for b in blocked.blocks) == [
        ("buy", 2),
        ("sell", 2),
    ]
    assert (await kit.block(db, window_s=30)).wait_s is None  # nothing pending
    # a fan-out that never pauses is blocked once its oldest trade has waited the longest wait
    await kit.approve(db, kit.approved(kit.trades(1), "ACC-3"))
    assert len((await kit.block(db, window_s=30, max_wait_s=0)).blocks) == 1


async def test_two_blockers_at_once_never_block_a_trade_twice(kit: Any, db: Database) -> None:
    await kit.approve(db, *(kit.approved(kit.trades(4), f"ACC-{i}") for i in range(5)))
    async with unit_of_work(db, SOURCE) as first, unit_of_work(db, SOURCE) as second:
        one = await service.block_pending(
            first,
            custodian=CUSTODIAN,
            block_account=BLOCK_ACCOUNT,
            window_s=0,
            max_wait_s=0,
            limit=12,
        )
        # the second replica skips what the first holds (and does not wait for it)
        two = await service.block_pending(
            second,
            custodian=CUSTODIAN,
            block_account=BLOCK_ACCOUNT,
            window_s=0,
            max_wait_s=0,
            limit=100,
        )
    assert one.allocations == 12 and one.full
    assert two.allocations == 8 and not two.full
    allocations = await _allocations(db)
    assert len(allocations) == 20 and {a.status for a in allocations} == {"blocked"}
    orders = await _orders(db)
    assert sum(o.allocation_count for o in orders) == 20
    for order in orders:
        members = await _allocations(db, client_order_id=order.client_order_id)
        assert sum(a.quantity for a in members) == order.quantity


# --- order sender ---------------------------------------------------------------------------


async def test_sender_sends_each_block_once_and_marks_it(
    kit: Any, db: Database, custodian: Any, client: CustodianClient, spans: InMemorySpanExporter
) -> None:
    for account in ("ACC-1", "ACC-2"):
        payload = kit.approved(
            [t for s in ("MSFT", "AAPL", "IBM") for t in kit.trades(1, symbol=s, side="buy")],
            account,
        )
        await kit.approve(db, payload)
    await kit.block(db)
    outcomes = await _send_all(db, client, batch=2)

    assert [o.claimed for o in outcomes] == [2, 1]
    orders = await _orders(db)
    assert len(orders) == 3
    assert all(o.status == "sent" and o.times_sent == 1 and o.sent_at for o in orders)
    assert sorted(custodian.orders) == sorted(o.client_order_id for o in orders)
    assert all(custodian.times_submitted(o.client_order_id) == 1 for o in orders)
    sent = custodian.orders[orders[0].client_order_id]
    assert sent["quantity"] == "20" and sent["reference_price"] == "415.2"
    assert sent["account_id"] == BLOCK_ACCOUNT
    # The POST continues the trace of the batch's first block.
    first_batch = custodian.submissions[0]
    first_order = next(o for o in orders if o.client_order_id == first_batch.ids[0])
    assert _trace_id(first_batch.traceparent) == _trace_id(first_order.traceparent)
    send_spans = [s for s in spans.get_finished_spans() if s.name == "custodian send orders"]
    assert send_spans and dict(send_spans[-1].attributes or {})["ballast.orders"] == 1
    # Nothing is left to send.
    assert await _send_all(db, client, batch=4) == []


async def test_a_resend_after_a_crash_uses_the_same_client_order_ids(
    kit: Any, db: Database, custodian: Any, client: CustodianClient, lossy: Any
) -> None:
    await kit.approve(db, *(kit.approved(kit.trades(2), f"ACC-{i}") for i in range(3)))
    await kit.block(db)
    lossy.lose = True  # the custodian takes the blocks, but we never learn it
    with pytest.raises(CustodianUnavailable):
        async with unit_of_work(db, SOURCE) as uow:
            await service.send_new_orders(uow, client, 10, CUSTODIAN)
    assert {o.status for o in await _orders(db)} == {"new"}
    assert len(custodian.orders) == 2

    lossy.lose = False
    assert (await kit.block(db)).blocks == []  # a restarted blocker finds nothing to re-block
    (outcome,) = await _send_all(db, client, batch=10)
    assert len(outcome.sent) == 2
    ids = {o.client_order_id for o in await _orders(db)}
    assert [set(s.ids) for s in custodian.submissions] == [ids, ids]
    assert len(custodian.orders) == 2  # the custodian saw duplicates, not new orders
    orders = await _orders(db)
    assert all(o.status == "sent" and o.times_sent == 1 for o in orders)


async def test_an_unavailable_custodian_loses_nothing(
    kit: Any, db: Database, custodian: Any, client: CustodianClient
) -> None:
    await kit.approve(db, kit.approved(kit.trades(2), "ACC-1"))
    await kit.block(db)
    custodian.unavailable = True
    with pytest.raises(CustodianUnavailable, match="503"):
        async with unit_of_work(db, SOURCE) as uow:
            await service.send_new_orders(uow, client, 10, CUSTODIAN)
    assert {o.status for o in await _orders(db)} == {"new"}
    custodian.unavailable = False
    await _send_all(db, client, batch=10)
    assert {o.status for o in await _orders(db)} == {"sent"}


async def test_a_block_the_custodian_refuses_rejects_its_allocations_and_the_rest_go_out(
    kit: Any, db: Database, custodian: Any, client: CustodianClient
) -> None:
    custodian.refuse_symbols = {"XBAD"}
    bad = [
        kit.approved(kit.trades(1, side="buy") + kit.trades(1, symbol="XBAD", quantity="3"), a)
        for a in ("ACC-1", "ACC-2")
    ]
    await kit.approve(db, *bad)
    await kit.block(db)
    (outcome,) = await _send_all(db, client, batch=10)
    assert len(outcome.sent) == 1 and len(outcome.refused) == 1

    (rejected,) = await _orders(db, status="rejected")
    assert rejected.symbol == "XBAD" and rejected.allocated_at is not None
    assert "symbol XBAD unknown" in (rejected.reject_reason or "")
    assert len(await _orders(db, status="sent")) == 1
    events = await _events(db)
    assert sorted((t, k) for t, k, _ in events) == [
        ("order-rejected", "ACC-1"),
        ("order-rejected", "ACC-2"),
    ]
    allocations = {a.trade_id: a for a in await _allocations(db, status="rejected")}
    for _, _, envelope in events:
        body = envelope["payload"]
        assert body["client_order_id"] == rejected.client_order_id
        assert body["quantity"] == "3"
        assert f"block order {rejected.client_order_id}" in body["reason"]
        assert "symbol XBAD unknown" in body["reason"]
        allocation = allocations[uuid.UUID(body["trade_id"])]
        assert _trace_id(envelope["traceparent"]) == _trace_id(allocation.traceparent)


# --- execution poller: a done block is shared -------------------------------------------------


async def test_a_filled_block_is_shared_at_its_average_price_once(
    kit: Any, db: Database, custodian: Any, client: CustodianClient
) -> None:
    trades = {"ACC-1": kit.trades(1, quantity="10", side="sell")}
    trades["ACC-1"][0] = trades["ACC-1"][0].model_copy(
        update={"lot_ids": ["L-7", "L-3"], "sleeve_id": "core"}
    )
    trades["ACC-2"] = kit.trades(1, quantity="30", side="sell")
    trades["ACC-3"] = kit.trades(1, quantity="60", side="sell")
    payloads = [kit.approved(t, a) for a, t in trades.items()]
    await kit.approve(db, *payloads)
    await kit.block(db)
    await _send_all(db, client, batch=10)
    (order,) = await _orders(db)
    cid = order.client_order_id
    custodian.fill(cid, "35", "100.10")
    custodian.fill("BAL-from-someone-else", "1", "5")  # an orphan
    (first,) = await _poll_all(db, client, page=10)
    assert (first.fills, first.orphans, first.blocks_done) == (1, 1, 0)
    assert await _events(db) == [], "nothing is shared before the block is done"
    custodian.fill(cid, "65", "100.20")
    custodian.fill(cid, "1", "100.20")  # an overfill: stored, refused, never shared
    outcomes = await _poll_all(db, client, page=1)
    assert sum(o.blocks_done for o in outcomes) == 1
    assert sum(o.invalid for o in outcomes) == 1

    (order,) = await _orders(db)
    assert (order.status, order.filled_quantity) == ("filled", Decimal(100))
    assert order.average_price == Decimal("100.165")  # (35 x 100.10 + 65 x 100.20) / 100
    events = await _events(db)
    assert sorted((t, k) for t, k, _ in events) == [
        ("fills-received", "ACC-1"),
        ("fills-received", "ACC-2"),
        ("fills-received", "ACC-3"),
    ]
    allocations = {a.account_id: a for a in await _allocations(db)}
    for _, key, envelope in events:
        trade = trades[key][0]
        assert envelope["tenant"] == "acme" and envelope["source"] == SOURCE
        assert envelope["payload"] == {
            "fill_id": allocation_fill_id(trade.trade_id),
            "client_order_id": cid,
            "trade_id": str(trade.trade_id),
            "proposal_id": str(allocations[key].proposal_id),
            "account_id": key,
            "symbol": "MSFT",
            "side": "sell",
            "quantity": format(trade.quantity.normalize(), "f"),
            "price": "100.165",
            "executed_at": envelope["payload"]["executed_at"],
            "fees": "0",
            "lot_ids": trade.lot_ids,
            "sleeve_id": trade.sleeve_id,
        }
        # the fill continues the trace its trade was approved in
        assert _trace_id(envelope["traceparent"]) == _trace_id(allocations[key].traceparent)
        executed_at = datetime.fromisoformat(envelope["payload"]["executed_at"])
        assert executed_at == datetime.fromisoformat(custodian.executions[2]["executed_at"])
    assert {a.status for a in allocations.values()} == {"filled"}
    assert all(a.filled_quantity == a.quantity for a in allocations.values())
    assert {a.average_price for a in allocations.values()} == {Decimal("100.165")}

    async with db.sessions() as session:
        stats = await service.stats(session, OPERATOR, CUSTODIAN)
        view = await service.get_order(session, TENANT, cid)
    assert stats["executions"] == {  # of the tenant's blocks; orphans: the custodian's
        "total": 3,
        "fills": 2,
        "rejects": 0,
        "orphans": 1,
        "invalid": 1,
        "overfills": 1,
    }
    assert stats["blocks"]["by_status"]["filled"] == 1
    assert stats["allocations"]["by_status"]["filled"] == 3
    assert stats["cursor"]["last_seq"] == 4
    assert [e.outcome for e in view.executions] == ["applied", "applied", "invalid"]
    assert "overfill" in (view.executions[2].problem or "")

    # Replaying every page (the cursor rewound) has no second effect.
    async with unit_of_work(db, SOURCE) as uow:
        cursor = await repo.lock_cursor(uow.session, CUSTODIAN)
        assert cursor is not None
        cursor.last_seq = 0
    replay = await _poll_all(db, client, page=4)
    assert sum(o.received for o in replay) == 4
    assert sum(o.new for o in replay) == 0
    assert len(await _events(db)) == 3
    (again,) = await _orders(db)
    assert again.filled_quantity == Decimal(100)


async def test_a_partially_filled_then_rejected_block_is_shared_pro_rata(
    kit: Any, db: Database, custodian: Any, client: CustodianClient
) -> None:
    accounts = {"ACC-A": "10", "ACC-B": "10", "ACC-C": "10", "ACC-D": "3"}
    order, trades = await _one_block(kit, db, client, accounts)
    custodian.fill(order.client_order_id, "12", "50")
    custodian.fill(order.client_order_id, "8", "51")
    custodian.reject(order.client_order_id, "rest cancelled: market closed")
    (outcome,) = await _poll_all(db, client, page=10)
    assert (outcome.fills, outcome.rejects, outcome.blocks_done) == (2, 1, 1)

    # 20 of 33: exact shares 6.06 (x3) and 1.818 -> 6, 6, 6, 1 and 1 left over: the largest
    # remainder (0.818 of ACC-D) gets it.
    expected = {"ACC-A": 6, "ACC-B": 6, "ACC-C": 6, "ACC-D": 2}
    allocations = {a.account_id: a for a in await _allocations(db)}
    assert {k: a.filled_quantity for k, a in allocations.items()} == expected
    assert {a.status for a in allocations.values()} == {"partially_filled"}
    assert {a.average_price for a in allocations.values()} == {Decimal("50.4")}
    events = await _events(db)
    fills = {k: e["payload"] for t, k, e in events if t == "fills-received"}
    rejects = {k: e["payload"] for t, k, e in events if t == "order-rejected"}
    assert {k: Decimal(f["quantity"]) for k, f in fills.items()} == expected
    assert {f["price"] for f in fills.values()} == {"50.4"}
    assert sum(Decimal(f["quantity"]) for f in fills.values()) == 20
    assert {k: r["quantity"] for k, r in rejects.items()} == {
        "ACC-A": "4",
        "ACC-B": "4",
        "ACC-C": "4",
        "ACC-D": "1",
    }
    for account, body in rejects.items():
        assert body["trade_id"] == str(trades[account].trade_id)
        assert f"block order {order.client_order_id}" in body["reason"]
        assert "rest cancelled: market closed" in body["reason"]
    # per account: its fill, then the reject of its rest (one account's events stay in order)
    for account in accounts:
        assert [t for t, k, _ in events if k == account] == ["fills-received", "order-rejected"]


async def test_each_share_of_a_block_names_the_approval_of_its_trade_and_continues_its_trace(
    kit: Any, db: Database, custodian: Any, client: CustodianClient, spans: InMemorySpanExporter
) -> None:
    """Trades approved in two traces go out in one block; each allocation's fill and reject
    follow from the trades-approved event that carried its trade, in that event's trace, and
    the block's allocation span links the other trace."""
    approvals: dict[str, Envelope] = {}
    for account, quantity in (("ACC-A", "10"), ("ACC-B", "30")):
        payload = kit.approved(kit.trades(1, quantity=quantity, side="buy"), account)
        approvals[account] = kit.envelope(payload)
        async with unit_of_work(db, SOURCE) as uow:
            with tracer().start_as_current_span("trades-approved process"):  # a trace each
                await service.record_approved_trades(
                    uow, [Delivery(approvals[account], payload)], CUSTODIAN
                )
    allocations = {a.account_id: a for a in await _allocations(db)}
    traces = {k: _trace_id(a.traceparent) for k, a in allocations.items()}
    assert traces["ACC-A"] != traces["ACC-B"]
    assert {k: a.approval_event_id for k, a in allocations.items()} == {
        k: e.id for k, e in approvals.items()
    }
    await kit.block(db)
    await _send_all(db, client, batch=10)
    (order,) = await _orders(db)
    custodian.fill(order.client_order_id, "20", "50")
    custodian.reject(order.client_order_id, "rest cancelled")
    await _poll_all(db, client, page=10)

    events = await _events(db)
    assert sorted((t, k) for t, k, _ in events) == [
        ("fills-received", "ACC-A"),
        ("fills-received", "ACC-B"),
        ("order-rejected", "ACC-A"),
        ("order-rejected", "ACC-B"),
    ]
    for _, account, envelope in events:
        assert envelope["causation_id"] == str(approvals[account].id)
        assert _trace_id(envelope["traceparent"]) == traces[account]
    [allocate] = [s for s in spans.get_finished_spans() if s.name == "allocate block"][-1:]
    own = allocate.context.trace_id if allocate.context else None
    linked = {link.context.trace_id for link in allocate.links}
    assert {own} | linked == {int(t, 16) for t in traces.values()} and own not in linked


async def test_a_block_rejected_outright_rejects_every_allocation_whole(
    kit: Any, db: Database, custodian: Any, client: CustodianClient
) -> None:
    order, _ = await _one_block(kit, db, client, {"ACC-A": "4", "ACC-B": "6"})
    custodian.reject(order.client_order_id, "symbol halted")
    await _poll_all(db, client, page=10)
    events = await _events(db)
    assert sorted((t, e["payload"]["quantity"]) for t, _, e in events) == [
        ("order-rejected", "4"),
        ("order-rejected", "6"),
    ]
    assert {a.status for a in await _allocations(db)} == {"rejected"}


async def test_an_overfill_is_refused_and_reported_never_spread(
    kit: Any, db: Database, custodian: Any, client: CustodianClient
) -> None:
    order, _ = await _one_block(kit, db, client, {"ACC-A": "4", "ACC-B": "6"})
    custodian.fill(order.client_order_id, "7", "20")
    custodian.fill(order.client_order_id, "4", "20")  # 11 of 10
    custodian.fill(order.client_order_id, "2.5", "20")  # not whole shares: cannot be shared
    (outcome,) = await _poll_all(db, client, page=10)
    assert (outcome.fills, outcome.invalid, outcome.blocks_done) == (1, 2, 0)
    (order,) = await _orders(db)
    assert (order.status, order.filled_quantity) == ("partially_filled", Decimal(7))
    async with db.sessions() as session:
        view = await service.get_order(session, TENANT, order.client_order_id)
        stats = await service.stats(session, OPERATOR, CUSTODIAN)
    problems = [e.problem for e in view.executions if e.outcome == "invalid"]
    assert "overfill: fill of 4 would make 11 filled of an order for 10" in (problems[0] or "")
    assert "not whole shares" in (problems[1] or "")
    assert (stats["executions"]["invalid"], stats["executions"]["overfills"]) == (2, 1)
    assert await _events(db) == []
    assert {a.status for a in await _allocations(db)} == {"blocked"}
    # the custodian's real rest completes it, and only the 10 ordered are shared
    custodian.fill(order.client_order_id, "3", "21")
    await _poll_all(db, client, page=10)
    fills = [e["payload"] for t, _, e in await _events(db) if t == "fills-received"]
    assert sorted(f["quantity"] for f in fills) == ["4", "6"]
    assert {f["price"] for f in fills} == {"20.3"}


async def test_fractional_asks_are_shared_in_fractions(
    kit: Any, db: Database, custodian: Any, client: CustodianClient
) -> None:
    order, _ = await _one_block(kit, db, client, {"ACC-A": "1.5", "ACC-B": "1.5", "ACC-C": "1.5"})
    assert order.whole_shares is False
    custodian.fill(order.client_order_id, "1", "10")
    custodian.reject(order.client_order_id, "no more")
    await _poll_all(db, client, page=10)
    fills = {k: e["payload"]["quantity"] for t, k, e in await _events(db) if t == "fills-received"}
    # 1/3 each to 8 places; the one unit left goes to the smallest trade id (all else equal)
    assert sorted(fills.values()) == ["0.33333333", "0.33333333", "0.33333334"]


async def test_partial_fills_on_one_page_and_the_next(
    kit: Any, db: Database, custodian: Any, client: CustodianClient
) -> None:
    order, _ = await _one_block(kit, db, client, {"ACC-A": "1", "ACC-B": "2"})
    cid = order.client_order_id
    custodian.fill(cid, "1", "10")
    await _poll_all(db, client, page=10)
    (order,) = await _orders(db)
    assert (order.status, order.filled_quantity) == ("partially_filled", Decimal(1))
    custodian.fill(cid, "1", "11")
    custodian.fill(cid, "1", "12.0001")
    await _poll_all(db, client, page=10)
    (order,) = await _orders(db)
    assert (order.status, order.filled_quantity) == ("filled", Decimal(3))
    assert order.average_price == Decimal("11.00003333")  # 33.0001 / 3, rounded once
    fills = [e["payload"] for t, _, e in await _events(db) if t == "fills-received"]
    assert sorted(f["quantity"] for f in fills) == ["1", "2"]
    assert {f["price"] for f in fills} == {"11.00003333"}


async def test_executions_that_break_the_contract_are_stored_not_applied(
    kit: Any, db: Database, custodian: Any, client: CustodianClient
) -> None:
    order, _ = await _one_block(kit, db, client, {"ACC-A": "5"})
    cid = order.client_order_id
    custodian.fill(cid, 2.5, "10")  # a float quantity is not exact
    custodian._add(cid, "cancel")  # an unknown kind
    custodian._add(cid, "fill", quantity="1", price="10", symbol="AAPL")  # not this order's
    custodian._add(cid, "fill", quantity="1", price="10", account_id="ACC-A")  # not its account
    custodian.fill(cid, "5", "10")
    (outcome,) = await _poll_all(db, client, page=10)
    assert (outcome.invalid, outcome.fills) == (4, 1)
    async with db.sessions() as session:
        view = await service.get_order(session, TENANT, cid)
    assert view.order.status == "filled"
    problems = [e.problem for e in view.executions if e.outcome == "invalid"]
    assert "quantity must be a decimal string" in (problems[0] or "")
    assert "unknown execution kind 'cancel'" in (problems[1] or "")
    assert "symbol 'AAPL' differs" in (problems[2] or "")
    assert "account_id 'ACC-A' differs" in (problems[3] or "")


async def test_a_restarted_custodian_rewinds_the_cursor(
    kit: Any, db: Database, custodian: Any, client: CustodianClient
) -> None:
    await kit.approve(db, kit.approved(kit.trades(2, quantity="4"), "ACC-1"))
    await kit.block(db)
    await _send_all(db, client, batch=10)
    a, b = sorted(await _orders(db), key=lambda o: o.side)  # buy, sell
    custodian.fill(a.client_order_id, "1", "10")
    custodian.fill(a.client_order_id, "1", "10")
    await _poll_all(db, client, page=10)
    async with unit_of_work(db, SOURCE) as uow:
        assert await service.check_custodian_restart(uow, client, CUSTODIAN) is False

    custodian.restart()
    custodian.orders[b.client_order_id] = {
        "account_id": BLOCK_ACCOUNT,
        "symbol": "MSFT",
        "side": "sell",
    }
    custodian.fill(b.client_order_id, "4", "20")
    async with unit_of_work(db, SOURCE) as uow:
        assert await service.check_custodian_restart(uow, client, CUSTODIAN) is True
    await _poll_all(db, client, page=10)
    orders = {o.client_order_id: o for o in await _orders(db)}
    assert orders[b.client_order_id].status == "filled"
    assert orders[a.client_order_id].filled_quantity == Decimal("2")
