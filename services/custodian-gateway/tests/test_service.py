"""Integration tests of custodian-gateway's service functions on real PostgreSQL, with an
in-memory stand-in of the remote custodian."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest
from ballast_common import plumbing
from ballast_common.db import Database
from ballast_common.errors import PermanentMessageError
from ballast_common.telemetry import tracer
from ballast_common.testing import unit_of_work
from custodian_gateway import repository as repo
from custodian_gateway import service
from custodian_gateway.custodian import CustodianClient, CustodianUnavailable
from custodian_gateway.handlers import on_trades_approved
from custodian_gateway.orders import client_order_id_for
from custodian_gateway.tables import Order
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

pytestmark = pytest.mark.integration
SOURCE = "custodian-gateway"


async def _approve(db: Database, payload: Any, envelope: Any) -> None:
    async with unit_of_work(db, SOURCE) as uow:
        uow.causation = envelope
        with tracer().start_as_current_span("trades-approved process"):
            await on_trades_approved(uow, envelope, payload)


async def _orders(db: Database, **filters: Any) -> list[Order]:
    async with db.sessions() as session:
        return await repo.list_orders(
            session,
            account_id=filters.get("account_id"),
            status=filters.get("status"),
            limit=1000,
            offset=0,
        )


async def _events(db: Database) -> list[tuple[str, str, dict[str, Any]]]:
    """(topic, key, envelope) of every outbox message, in order."""
    async with db.sessions() as session:
        pending = await plumbing.pending_messages(session, 10_000)
    return [(m.topic, m.key, json.loads(m.value)) for m in pending]


async def _send_all(db: Database, client: CustodianClient, batch: int) -> list[service.SendOutcome]:
    outcomes: list[service.SendOutcome] = []
    while True:
        async with unit_of_work(db, SOURCE) as uow:
            outcome = await service.send_new_orders(uow, client, batch)
        if outcome.claimed == 0:
            return outcomes
        outcomes.append(outcome)


async def _poll_all(db: Database, client: CustodianClient, page: int) -> list[service.PollOutcome]:
    outcomes: list[service.PollOutcome] = []
    while True:
        async with unit_of_work(db, SOURCE) as uow:
            outcome = await service.poll_executions(uow, client, page)
        outcomes.append(outcome)
        if not outcome.page_full:
            return outcomes


def _trace_id(traceparent: str | None) -> str:
    assert traceparent, "no trace context"
    return traceparent.split("-")[1]


# --- trades-approved ------------------------------------------------------------------------


async def test_approved_trades_become_new_orders_once(
    db: Database, trade_factory: Any, approved_factory: Any, envelope_factory: Any, spans: Any
) -> None:
    payload = approved_factory(trade_factory(3), account_id="ACC-7")
    await _approve(db, payload, envelope_factory(payload, tenant="acme"))
    # The same trades again (a redelivery under a new event id, or a second approval).
    await _approve(db, payload, envelope_factory(payload, tenant="acme"))

    orders = await _orders(db)
    assert len(orders) == 3
    expected = {client_order_id_for(t.trade_id): t for t in payload.trades}
    assert {o.client_order_id for o in orders} == set(expected)
    for order in orders:
        trade = expected[order.client_order_id]
        assert order.trade_id == trade.trade_id
        assert order.proposal_id == payload.proposal_id
        assert (order.account_id, order.tenant, order.status) == ("ACC-7", "acme", "new")
        assert (order.symbol, order.side) == (trade.symbol, trade.side)
        assert order.quantity == trade.quantity
        assert order.reference_price == trade.estimated_price
        assert order.filled_quantity == 0 and order.times_sent == 0 and order.sent_at is None
        assert order.traceparent and order.traceparent.startswith("00-")
    assert await _events(db) == []


@pytest.mark.parametrize(
    ("account_id", "symbol", "quantity", "message"),
    [
        (" ACC-1", "MSFT", "1", "account_id"),
        ("ACC-1", "MS FT", "1", "symbol"),
        ("ACC-1", "MSFT", "0.000000001", "trades\\[1\\].quantity 0.000000001 has more than 8"),
    ],
)
async def test_trades_the_custodian_cannot_take_are_refused_whole(
    db: Database,
    trade_factory: Any,
    approved_factory: Any,
    envelope_factory: Any,
    account_id: str,
    symbol: str,
    quantity: str,
    message: str,
) -> None:
    good = trade_factory(1)
    bad = trade_factory(1, symbol=symbol, quantity=quantity)
    payload = approved_factory(good + bad, account_id=account_id)
    with pytest.raises(PermanentMessageError, match=message):
        await _approve(db, payload, envelope_factory(payload))
    assert await _orders(db) == []


# --- order sender ---------------------------------------------------------------------------


async def test_sender_sends_each_order_once_and_marks_it(
    db: Database,
    custodian: Any,
    client: CustodianClient,
    trade_factory: Any,
    approved_factory: Any,
    envelope_factory: Any,
    spans: InMemorySpanExporter,
) -> None:
    for account in ("ACC-1", "ACC-2"):
        payload = approved_factory(trade_factory(3), account_id=account)
        await _approve(db, payload, envelope_factory(payload))
    outcomes = await _send_all(db, client, batch=4)

    assert [o.claimed for o in outcomes] == [4, 2]
    orders = await _orders(db)
    assert len(orders) == 6
    assert all(o.status == "sent" and o.times_sent == 1 and o.sent_at for o in orders)
    assert sorted(custodian.orders) == sorted(o.client_order_id for o in orders)
    assert all(custodian.times_submitted(o.client_order_id) == 1 for o in orders)
    sent = custodian.orders[orders[0].client_order_id]
    assert sent["quantity"] == "10" and sent["reference_price"] == "415.2"
    # The POST continues the trace of the batch's first order.
    first_batch = custodian.submissions[0]
    first_order = next(o for o in orders if o.client_order_id == first_batch.ids[0])
    assert _trace_id(first_batch.traceparent) == _trace_id(first_order.traceparent)
    send_spans = [s for s in spans.get_finished_spans() if s.name == "custodian send orders"]
    assert send_spans and dict(send_spans[-1].attributes or {})["ballast.orders"] == 2
    # Nothing is left to send.
    assert await _send_all(db, client, batch=4) == []


async def test_a_resend_after_a_crash_uses_the_same_client_order_ids(
    db: Database,
    custodian: Any,
    client: CustodianClient,
    lossy: Any,
    trade_factory: Any,
    approved_factory: Any,
    envelope_factory: Any,
) -> None:
    payload = approved_factory(trade_factory(3))
    await _approve(db, payload, envelope_factory(payload))
    lossy.lose = True  # the custodian takes the orders, but we never learn it
    with pytest.raises(CustodianUnavailable):
        async with unit_of_work(db, SOURCE) as uow:
            await service.send_new_orders(uow, client, 10)
    assert {o.status for o in await _orders(db)} == {"new"}
    assert len(custodian.orders) == 3

    lossy.lose = False
    (outcome,) = await _send_all(db, client, batch=10)
    assert len(outcome.sent) == 3
    ids = {client_order_id_for(t.trade_id) for t in payload.trades}
    assert [set(s.ids) for s in custodian.submissions] == [ids, ids]
    assert len(custodian.orders) == 3  # the custodian saw duplicates, not new orders
    orders = await _orders(db)
    assert all(o.status == "sent" and o.times_sent == 1 for o in orders)


async def test_an_unavailable_custodian_loses_nothing(
    db: Database,
    custodian: Any,
    client: CustodianClient,
    trade_factory: Any,
    approved_factory: Any,
    envelope_factory: Any,
) -> None:
    payload = approved_factory(trade_factory(2))
    await _approve(db, payload, envelope_factory(payload))
    custodian.unavailable = True
    with pytest.raises(CustodianUnavailable, match="503"):
        async with unit_of_work(db, SOURCE) as uow:
            await service.send_new_orders(uow, client, 10)
    assert {o.status for o in await _orders(db)} == {"new"}
    custodian.unavailable = False
    await _send_all(db, client, batch=10)
    assert {o.status for o in await _orders(db)} == {"sent"}


async def test_an_order_the_custodian_refuses_is_rejected_and_the_rest_go_out(
    db: Database,
    custodian: Any,
    client: CustodianClient,
    trade_factory: Any,
    approved_factory: Any,
    envelope_factory: Any,
) -> None:
    custodian.refuse_symbols = {"XBAD"}
    payload = approved_factory(trade_factory(2) + trade_factory(1, symbol="XBAD"))
    await _approve(db, payload, envelope_factory(payload))
    (outcome,) = await _send_all(db, client, batch=10)
    assert len(outcome.sent) == 2 and len(outcome.refused) == 1

    rejected = await _orders(db, status="rejected")
    assert [o.symbol for o in rejected] == ["XBAD"]
    assert "symbol XBAD unknown" in (rejected[0].reject_reason or "")
    assert len(await _orders(db, status="sent")) == 2
    ((topic, key, envelope),) = await _events(db)
    assert (topic, key) == ("order-rejected", payload.account_id)
    assert envelope["payload"]["client_order_id"] == rejected[0].client_order_id
    assert envelope["payload"]["quantity"] == "10"
    assert _trace_id(envelope["traceparent"]) == _trace_id(rejected[0].traceparent)


# --- execution poller -----------------------------------------------------------------------


async def test_poller_turns_executions_into_events_and_order_updates_once(
    db: Database,
    custodian: Any,
    client: CustodianClient,
    trade_factory: Any,
    approved_factory: Any,
    envelope_factory: Any,
) -> None:
    trades = trade_factory(3, quantity="10")
    # the sell names the lots to relieve; its fills must carry them to the book of record
    trades[1] = trades[1].model_copy(update={"lot_ids": ["L-7", "L-3"], "sleeve_id": "core"})
    payload = approved_factory(trades, account_id="ACC-9")
    await _approve(db, payload, envelope_factory(payload, tenant="acme"))
    await _send_all(db, client, batch=10)
    a, b, c = (client_order_id_for(t.trade_id) for t in payload.trades)
    custodian.fill(a, "3.5", "100.10")
    custodian.fill(b, "10", "99.99")
    custodian.fill(a, "6.5", "100.20")
    custodian.reject(c, "symbol halted")
    custodian.fill("BAL-from-someone-else", "1", "5")  # an orphan
    custodian.fill(b, "1", "99.99")  # an overfill: stored, not applied

    outcomes = await _poll_all(db, client, page=2)
    assert [o.received for o in outcomes] == [2, 2, 2, 0]
    assert sum(o.fills for o in outcomes) == 3
    assert sum(o.rejects for o in outcomes) == 1
    assert sum(o.orphans for o in outcomes) == 1
    assert sum(o.invalid for o in outcomes) == 1
    assert outcomes[-1].cursor == 6

    orders = {o.client_order_id: o for o in await _orders(db)}
    assert (orders[a].status, orders[a].filled_quantity) == ("filled", Decimal("10"))
    assert orders[a].average_price == Decimal("100.165")  # (3.5*100.10 + 6.5*100.20) / 10
    assert (orders[b].status, orders[b].average_price) == ("filled", Decimal("99.99"))
    assert (orders[c].status, orders[c].reject_reason) == ("rejected", "symbol halted")

    events = await _events(db)
    assert [(t, k) for t, k, _ in events] == [
        ("fills-received", "ACC-9"),
        ("fills-received", "ACC-9"),
        ("fills-received", "ACC-9"),
        ("order-rejected", "ACC-9"),
    ]
    first = events[0][2]
    assert first["tenant"] == "acme" and first["source"] == SOURCE
    assert first["payload"] == {
        "fill_id": custodian.executions[0]["execution_id"],
        "client_order_id": a,
        "trade_id": str(payload.trades[0].trade_id),
        "proposal_id": str(payload.proposal_id),
        "account_id": "ACC-9",
        "symbol": "MSFT",
        "side": "buy",
        "quantity": "3.5",
        "price": "100.1",
        "executed_at": first["payload"]["executed_at"],
        "fees": "0",
        "lot_ids": [],
        "sleeve_id": None,
    }
    sell_fill = events[1][2]["payload"]
    assert (sell_fill["client_order_id"], sell_fill["side"]) == (b, "sell")
    assert (sell_fill["lot_ids"], sell_fill["sleeve_id"]) == (["L-7", "L-3"], "core")
    assert datetime.fromisoformat(first["payload"]["executed_at"]) == datetime.fromisoformat(
        custodian.executions[0]["executed_at"]
    )
    assert events[3][2]["payload"]["quantity"] == "10"
    assert events[3][2]["payload"]["reason"] == "symbol halted"
    # Each event continues the trace of the order it is about.
    for _, _, envelope in events:
        order = orders[envelope["payload"]["client_order_id"]]
        assert _trace_id(envelope["traceparent"]) == _trace_id(order.traceparent)

    async with db.sessions() as session:
        stats = await service.stats(session)
        _, orphan_execs = await service.get_order(session, a)
    assert stats["executions"] == {
        "total": 6,
        "fills": 3,
        "rejects": 1,
        "orphans": 1,
        "invalid": 1,
    }
    assert stats["cursor"]["last_seq"] == 6
    assert [e.outcome for e in orphan_execs] == ["applied", "applied"]

    # Replaying every page (the cursor rewound) has no second effect.
    async with unit_of_work(db, SOURCE) as uow:
        cursor = await repo.lock_cursor(uow.session, service.CURSOR_NAME)
        assert cursor is not None
        cursor.last_seq = 0
    replay = await _poll_all(db, client, page=4)
    assert sum(o.received for o in replay) == 6
    assert sum(o.new for o in replay) == 0
    assert len(await _events(db)) == 4
    again = {o.client_order_id: o for o in await _orders(db)}
    assert again[a].filled_quantity == Decimal("10") and again[b].filled_quantity == Decimal("10")


async def test_partial_fills_on_one_page_and_the_next(
    db: Database,
    custodian: Any,
    client: CustodianClient,
    trade_factory: Any,
    approved_factory: Any,
    envelope_factory: Any,
) -> None:
    payload = approved_factory(trade_factory(1, quantity="1"))
    await _approve(db, payload, envelope_factory(payload))
    await _send_all(db, client, batch=10)
    (cid,) = (client_order_id_for(t.trade_id) for t in payload.trades)
    custodian.fill(cid, "0.3333", "10")
    await _poll_all(db, client, page=10)
    (order,) = await _orders(db)
    assert (order.status, order.filled_quantity) == ("partially_filled", Decimal("0.3333"))
    custodian.fill(cid, "0.3333", "11")
    custodian.fill(cid, "0.3334", "12")
    await _poll_all(db, client, page=10)
    (order,) = await _orders(db)
    assert (order.status, order.filled_quantity) == ("filled", Decimal("1"))
    assert order.average_price == Decimal("11.0001")  # (3.333 + 3.6663 + 4.0008) / 1
    quantities = [e["payload"]["quantity"] for _, _, e in await _events(db)]
    assert quantities == ["0.3333", "0.3333", "0.3334"]


async def test_executions_that_break_the_contract_are_stored_not_applied(
    db: Database,
    custodian: Any,
    client: CustodianClient,
    trade_factory: Any,
    approved_factory: Any,
    envelope_factory: Any,
) -> None:
    payload = approved_factory(trade_factory(1, quantity="5"))
    await _approve(db, payload, envelope_factory(payload))
    await _send_all(db, client, batch=10)
    (cid,) = (client_order_id_for(t.trade_id) for t in payload.trades)
    custodian.fill(cid, 2.5, "10")  # a float quantity is not exact
    custodian._add(cid, "cancel")  # an unknown kind
    custodian._add(cid, "fill", quantity="1", price="10", symbol="AAPL")  # not this order's
    custodian.fill(cid, "5", "10")
    (outcome,) = await _poll_all(db, client, page=10)
    assert (outcome.invalid, outcome.fills) == (3, 1)
    async with db.sessions() as session:
        order, executions = await service.get_order(session, cid)
    assert order.status == "filled"
    problems = [e.problem for e in executions if e.outcome == "invalid"]
    assert "quantity must be a decimal string" in (problems[0] or "")
    assert "unknown execution kind 'cancel'" in (problems[1] or "")
    assert "symbol 'AAPL' differs" in (problems[2] or "")


async def test_a_restarted_custodian_rewinds_the_cursor(
    db: Database,
    custodian: Any,
    client: CustodianClient,
    trade_factory: Any,
    approved_factory: Any,
    envelope_factory: Any,
) -> None:
    payload = approved_factory(trade_factory(2, quantity="4"))
    await _approve(db, payload, envelope_factory(payload))
    await _send_all(db, client, batch=10)
    a, b = (client_order_id_for(t.trade_id) for t in payload.trades)
    custodian.fill(a, "1", "10")
    custodian.fill(a, "1", "10")
    await _poll_all(db, client, page=10)
    async with unit_of_work(db, SOURCE) as uow:
        assert await service.check_custodian_restart(uow, client) is False

    custodian.restart()
    custodian.orders[b] = {"account_id": "ACC-000123", "symbol": "MSFT", "side": "sell"}
    custodian.fill(b, "4", "20")
    async with unit_of_work(db, SOURCE) as uow:
        assert await service.check_custodian_restart(uow, client) is True
    await _poll_all(db, client, page=10)
    orders = {o.client_order_id: o for o in await _orders(db)}
    assert orders[b].status == "filled"
    assert orders[a].filled_quantity == Decimal("2")
