"""The outbox relay: publishes committed outbox rows in order and marks them, across restarts.

Each message carries the trace context of the code that wrote it (its `traceparent`
header), so the consumer's span is that code's child: one model change stays one trace, with
no extra producer span per message (a fan-out publishes hundreds of thousands).
"""

from __future__ import annotations

import asyncio
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
        idle_poll_max_s: float = 2.0,
    ) -> None:
        self._db = db
        self._publisher = publisher
        self._prefix = topic_prefix
        self._poll_interval_s = poll_interval_s
        self._batch_size = batch_size
        self._idle_poll_max_s = max(idle_poll_max_s, poll_interval_s)
        self._wake = asyncio.Event()
        self._lock_busy = False

    def wake(self) -> None:
        """Called after a commit that wrote events, so they go out without waiting a poll."""
        self._wake.set()

    def next_pause(self, published: int, pause: float) -> float:
        """The next fallback poll after `pause`: at once or soon while there is work or
        another relay holds the lock, doubling up to the idle maximum while nothing is pending
        (a local commit wakes the relay whatever the pause)."""
        if published >= self._batch_size:
            return 0.0
        if published or self._lock_busy:
            return self._poll_interval_s
        return min(max(pause * 2, self._poll_interval_s), self._idle_poll_max_s)

    async def run(self) -> None:
        backoff = 0.2
        pause = 0.0
        while True:
            self._wake.clear()  # before reading, so a commit during the read still wakes us
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
            pause = self.next_pause(published, pause)
            if pause:
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=pause)
                except TimeoutError:
                    continue
                pause = 0.0  # woken by a commit: poll eagerly again

    async def publish_once(self) -> int:
        """Publish one batch of pending rows; returns how many were published."""
        async with self._db.sessions() as session, session.begin():
            self._lock_busy = not await take_relay_lock(session, self._db.schema)
            if self._lock_busy:
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
