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
