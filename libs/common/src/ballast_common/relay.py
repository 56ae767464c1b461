"""The outbox relay: publishes committed outbox rows in order and marks them, across restarts.

Each message carries the trace context of the code that wrote it (its `traceparent`
header), so the consumer's span is that code's child: one model change stays one trace, with
no extra producer span per message (a fan-out publishes hundreds of thousands).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from ballast_common.bus import Message, Publisher
from ballast_common.db import Database
from ballast_common.metrics import EVENTS_PUBLISHED, OUTBOX_BACKLOG
from ballast_common.outbox import mark_published, pending_messages, take_relay_lock

log = logging.getLogger(__name__)


class OutboxRelay:
    """Moves outbox rows to the bus. Rows are marked only after the broker acknowledged them,
    so a crash in between republishes (consumers' inboxes absorb the duplicate)."""

    def __init__(
        self,
        db: Database,
        publisher: Publisher,
        topic_prefix: str = "",
        poll_interval_s: float = 0.2,
        batch_size: int = 1000,
    ) -> None:
        self._db = db
        self._publisher = publisher
        self._prefix = topic_prefix
        self._poll_interval_s = poll_interval_s
        self._batch_size = batch_size
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Called after a commit that wrote events, so they go out without waiting a poll."""
        self._wake.set()

    async def run(self) -> None:
        backoff = 0.2
        while True:
            try:
                published = await self.publish_once()
                backoff = 0.2
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("outbox relay failed; retrying", extra={"retry_in_s": backoff})
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            if published < self._batch_size:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self._poll_interval_s)

    async def publish_once(self) -> int:
        """Publish one batch of pending rows; returns how many were published."""
        async with self._db.sessions() as session, session.begin():
            if not await take_relay_lock(session, self._db.schema):
                return 0
            rows = await pending_messages(session, self._batch_size)
            if not rows:
                OUTBOX_BACKLOG.set(0)
                return 0
            messages = [
                Message(self._prefix + row.topic, row.key, row.value, row.headers) for row in rows
            ]
            await self._publisher.publish(messages)
            await mark_published(session, [r.id for r in rows])
        for row in rows:
            EVENTS_PUBLISHED.labels(row.topic).inc()
        return len(rows)
