"""holdings-reconciled names what it follows from and stays in its trace, although the
snapshot loop publishes it later, outside any consumer: the request keeps the causing event
and the trace context (real PostgreSQL, fills through the real batch consumer)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from aiokafka.structs import ConsumerRecord
from ballast_common.consumer import BatchProcessor, Subscription
from ballast_common.contracts.envelope import Envelope
from ballast_common.contracts.events import AccountChangedV1, FillsReceivedV1
from ballast_common.db import Database
from ballast_common.outbox import pending_messages
from ballast_common.telemetry import current_trace_headers, tracer
from ballast_common.testing import consumer_records, envelope, unit_of_work
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from taxlot_svc import replays, service, snapshots, taxes
from taxlot_svc.handlers import on_fills_received
from taxlot_svc.schemas import AccountHoldingsIn

pytestmark = pytest.mark.integration

SOURCE = "taxlot-svc"


@pytest.fixture(scope="module", autouse=True)
def traced() -> None:
    """Spans are recorded (an SDK tracer provider, as every service installs one)."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(TracerProvider())


def trace_id(traceparent: str | None) -> str:
    assert traceparent, "no trace context"
    return traceparent.split("-")[1]


def a_trace() -> str:
    """A new trace's W3C traceparent, as a producer in another service would send it."""
    with tracer().start_as_current_span("upstream", context=None):
        return current_trace_headers()["traceparent"]


def a_fill(fill_id: str, account: str, symbol: str, side: str, quantity: str) -> FillsReceivedV1:
    return FillsReceivedV1(
        fill_id=fill_id,
        client_order_id=f"BLK-{fill_id}",
        trade_id=uuid.uuid4(),
        proposal_id=uuid.uuid4(),
        account_id=account,
        symbol=symbol,
        side=side,
        quantity=Decimal(quantity),
        price=Decimal("8"),
        executed_at=datetime(2026, 3, 2, 15, tzinfo=UTC),
    )


def delivered(
    fills: list[FillsReceivedV1], traceparent: str
) -> tuple[list[Envelope], list[ConsumerRecord[bytes, bytes]]]:
    """The fills as the gateway's events in one trace, and as the records carrying them."""
    envelopes = [
        envelope(f, tenant="acme", source="custodian-gateway", traceparent=traceparent)
        for f in fills
    ]
    return envelopes, consumer_records(envelopes)


async def open_household(db: Database, accounts: list[str], symbol: str) -> None:
    """One household: a taxable account and an IRA, each holding 100 at 10 a share."""
    for account, kind in zip(accounts, ("taxable", "ira"), strict=True):
        changed = AccountChangedV1(
            account_id=account,
            household_id=f"H-{accounts[0]}",
            name=account,
            account_type=kind,
            model_id=None,
            status="active",
            auto_approve=True,
        )
        async with unit_of_work(db, SOURCE) as uow:
            await taxes.account_changed(uow, changed)
    bodies = [
        AccountHoldingsIn.model_validate(
            {
                "account_id": account,
                "as_of": "2026-01-30",
                "cash": "1000.00",
                "positions": [
                    {
                        "symbol": symbol,
                        "quantity": "100",
                        "cost_basis": "1000",
                        "acquired_on": "2025-12-01",
                    }
                ],
            }
        )
        for account in accounts
    ]
    async with unit_of_work(db, SOURCE) as uow:
        await service.open_accounts(uow, "acme", bodies, today=date(2026, 12, 6))


async def published(db: Database, accounts: list[str]) -> dict[str, dict[str, Any]]:
    """Run the snapshot loop once; each account's latest holdings-reconciled envelope."""
    async with unit_of_work(db, SOURCE) as uow:
        await snapshots.publish_pending(uow, limit=100_000)
    async with db.sessions() as session:
        pending = await pending_messages(session, 1_000_000)
    latest: dict[str, dict[str, Any]] = {}
    for message in pending:
        if message.topic == "holdings-reconciled" and message.key in accounts:
            envelope = json.loads(message.value)
            if envelope["payload"]["cause"] != "opening-balance":
                latest[message.key] = envelope
    return latest


async def test_a_snapshot_follows_from_the_fill_that_asked_for_it_in_that_fills_trace(
    taxlot_db: Database,
) -> None:
    run = uuid.uuid4().hex[:6]
    symbol = f"C{run[:4].upper()}"
    seller, buyer = accounts = [f"T{run}-1", f"I{run}-2"]
    await open_household(taxlot_db, accounts, symbol)
    consumer = BatchProcessor(
        f"taxlot-causes-{run}",
        [Subscription.batch("fills-received", on_fills_received)],
        lambda: unit_of_work(taxlot_db, SOURCE),
    )

    # Two loss sales of the taxable account, in one batch of one trace.
    first_trace = a_trace()
    sales, records = delivered(
        [
            a_fill(f"s{run}-1", seller, symbol, "sell", "20"),
            a_fill(f"s{run}-2", seller, symbol, "sell", "10"),
        ],
        first_trace,
    )
    assert (await consumer.process(records))["processed"] == 2
    after_sales = await published(taxlot_db, accounts)
    assert set(after_sales) == {seller}
    snapshot = after_sales[seller]
    assert snapshot["payload"]["fill_ids"] == [f"s{run}-1", f"s{run}-2"]
    assert snapshot["causation_id"] == str(sales[-1].id)  # the account's last fill
    assert trace_id(snapshot["traceparent"]) == trace_id(first_trace)

    # The IRA buys within 30 days, in another trace: its own snapshot follows from its fill,
    # and the seller's (restated: the wash sale changed its loss) from the same fill.
    second_trace = a_trace()
    [buy], records = delivered([a_fill(f"b{run}-1", buyer, symbol, "buy", "20")], second_trace)
    assert (await consumer.process(records))["processed"] == 1
    after_buy = await published(taxlot_db, accounts)
    assert after_buy[buyer]["payload"]["fill_ids"] == [f"b{run}-1"]
    assert after_buy[seller]["payload"]["fill_ids"] == []
    for account in accounts:
        assert after_buy[account]["causation_id"] == str(buy.id), account
        assert trace_id(after_buy[account]["traceparent"]) == trace_id(second_trace), account

    # A request made by REST (no event) names no cause and continues the request's trace.
    with tracer().start_as_current_span("POST /transfers", context=None) as span:
        async with unit_of_work(taxlot_db, SOURCE) as uow:
            await replays.request_restated(uow.session, [seller], cause="sleeve-transfer")
    restated = (await published(taxlot_db, accounts))[seller]
    assert restated["payload"]["cause"] == "sleeve-transfer"
    assert restated["causation_id"] is None
    assert trace_id(restated["traceparent"]) == f"{span.get_span_context().trace_id:032x}"


async def test_a_later_request_for_a_pending_snapshot_names_the_later_cause(
    taxlot_db: Database,
) -> None:
    """Requests coalesce: the snapshot names every fill and follows from the latest."""
    run = uuid.uuid4().hex[:6]
    symbol = f"K{run[:4].upper()}"
    accounts = [f"T{run}-1", f"I{run}-2"]
    account = accounts[0]
    await open_household(taxlot_db, accounts, symbol)
    consumer = BatchProcessor(
        f"taxlot-causes-{run}",
        [Subscription.batch("fills-received", on_fills_received)],
        lambda: unit_of_work(taxlot_db, SOURCE),
    )
    [early], records = delivered([a_fill(f"e{run}", account, symbol, "buy", "1")], a_trace())
    await consumer.process(records)
    later_trace = a_trace()
    [later], records = delivered([a_fill(f"l{run}", account, symbol, "buy", "2")], later_trace)
    await consumer.process(records)
    snapshot = (await published(taxlot_db, accounts))[account]
    assert snapshot["payload"]["fill_ids"] == [f"e{run}", f"l{run}"]
    assert snapshot["causation_id"] == str(later.id) != str(early.id)
    assert trace_id(snapshot["traceparent"]) == trace_id(later_trace)
