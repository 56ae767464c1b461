"""rebalance-svc's tests hand events to its consumers and run the chunks a run requested
through the real consumer machinery (inbox, attempts, dead letters), as an instance of the
service would."""

from __future__ import annotations

import json
from datetime import datetime

from ballast_common import testing
from ballast_common.contracts.envelope import Envelope
from ballast_common.contracts.events import ModelChangedV1, ProposalRejectedV1
from ballast_common.outbox import outbox
from pydantic import BaseModel
from rebalance_svc.handlers import subscriptions
from rebalance_svc.settings import Settings
from sqlalchemy import select, text

CHUNKS = "rebalance-chunk-requested"


async def deliver(
    db, payload: BaseModel, key: str, at: datetime | None = None, *, run_chunks: bool = True
) -> Envelope:
    """Hand one event to rebalance-svc's consumer. Before a model change the trades still in
    flight are declined (each version starts from the same holdings); after it, the chunks
    it requested run, as the chunk consumer would (unless `run_chunks` is False)."""
    if isinstance(payload, ModelChangedV1):
        await decline_trades_in_flight(db)
    [sent] = await testing.deliver(
        db, subscriptions(Settings()), testing.envelope(payload, key=key, time=at)
    )
    if run_chunks:
        await process_requested_chunks(db)
    return sent


async def process_requested_chunks(db, settings: Settings | None = None) -> int:
    """Process every chunk request in the outbox not processed yet; returns how many ran."""
    consumer = testing.service_consumer(
        db, "rebalance-svc", subscriptions(settings or Settings()), lane="chunks"
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
                text("SELECT event_id FROM inbox WHERE consumer = :group"),
                {"group": consumer.group},
            )
        }
    ran = 0
    for row_id, key, value, headers in rows:
        if json.loads(value)["id"] in done:
            continue
        record = testing.consumer_record(value, row_id, topic=CHUNKS, key=key, headers=headers)
        await consumer.process([record])
        ran += 1
    return ran


async def decline_trades_in_flight(db) -> int:
    """Decline (proposal-rejected) every proposal whose trades are still in flight, as a
    person would: the holdings stay as they are, and the next run may trade the accounts."""
    async with db.sessions() as s:
        rows = (
            await s.execute(text("SELECT DISTINCT proposal_id, account_id FROM trades_in_flight"))
        ).all()
    declined = [
        ProposalRejectedV1(
            proposal_id=proposal_id, account_id=account_id, rejected_by="test", reason="test"
        )
        for proposal_id, account_id in rows
    ]
    if declined:
        await testing.deliver(db, subscriptions(Settings()), *declined)
    return len(declined)
