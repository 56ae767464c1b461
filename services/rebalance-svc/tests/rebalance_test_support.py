"""rebalance-svc's tests run the chunks a run requested through the real consumer machinery
(inbox, attempts, dead letters), as an instance of the service would."""

from __future__ import annotations

import json

from aiokafka.structs import ConsumerRecord
from ballast_common.consumer import BatchProcessor
from ballast_common.plumbing import outbox
from ballast_common.testing import unit_of_work
from rebalance_svc.handlers import subscriptions
from rebalance_svc.settings import Settings
from sqlalchemy import select, text

CHUNKS = "rebalance-chunk-requested"


async def process_requested_chunks(db, settings: Settings | None = None) -> int:
    """Process every chunk request in the outbox not processed yet; returns how many ran."""
    lane = [s for s in subscriptions(settings or Settings()) if s.lane == "chunks"]
    processor = BatchProcessor(
        "rebalance-svc.chunks",
        lane,
        lambda: unit_of_work(db, "rebalance-svc"),
        dead_letters="dlq.rebalance-svc",  # as the app factory sets it
    )
    async with db.sessions() as s:
        rows = (
            await s.execute(
                select(outbox.c.id, outbox.c.key, outbox.c.value, outbox.c.headers)
                .where(outbox.c.topic == CHUNKS)
                .order_by(outbox.c.id)
            )
        ).all()
        done = {
            str(r[0])
            for r in await s.execute(
                text("SELECT event_id FROM inbox WHERE consumer = 'rebalance-svc.chunks'")
            )
        }
    ran = 0
    for row_id, key, value, headers in rows:
        if json.loads(value)["id"] in done:
            continue
        record = ConsumerRecord(
            topic=CHUNKS,
            partition=0,
            offset=row_id,
            timestamp=0,
            timestamp_type=0,
            key=key.encode(),
            value=value,
            checksum=None,
            serialized_key_size=len(key),
            serialized_value_size=len(value),
            headers=[(k, v.encode()) for k, v in headers.items()],
        )
        await processor.process([record])
        ran += 1
    return ran


async def decline_trades_in_flight(db) -> int:
    """Decline (proposal-rejected) every proposal whose trades are still in flight, as a
    person would: the holdings stay as they are, and the next run may trade the accounts."""
    from ballast_common.consumer import Delivery
    from ballast_common.contracts.envelope import Envelope
    from ballast_common.contracts.events import ProposalRejectedV1

    async with db.sessions() as s:
        rows = (
            await s.execute(text("SELECT DISTINCT proposal_id, account_id FROM trades_in_flight"))
        ).all()
    [declined] = [s for s in subscriptions(Settings()) if s.event_type == "proposal-rejected"]
    deliveries = []
    for proposal_id, account_id in rows:
        payload = ProposalRejectedV1(
            proposal_id=proposal_id, account_id=account_id, rejected_by="test", reason="test"
        )
        envelope = Envelope(
            type="proposal-rejected",
            version=1,
            tenant="demo",
            key=account_id,
            source="test",
            payload=payload.model_dump(mode="json"),
        )
        deliveries.append(Delivery(envelope, payload))
    if deliveries:
        async with unit_of_work(db, "test") as uow:
            await declined.deliver(uow, deliveries)
    return len(deliveries)
