"""The Kafka adapter: an idempotent producer, topic administration, and the publisher port.

Unsafe aiokafka defaults are overridden on purpose: acks=all with idempotence on the
producer; consumers (see consumer.py) commit offsets manually after the database commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Message:
    topic: str  # full topic name, prefix included
    key: str
    value: bytes
    headers: dict[str, str] = field(default_factory=dict)


class Publisher(Protocol):
    """The port the outbox relay publishes through."""

    async def publish(self, messages: Sequence[Message]) -> None:
        """Deliver every message durably, in order per key, or raise."""


class KafkaPublisher:
    """Publisher over a real Kafka broker: idempotent, acks=all, per-key ordering."""

    def __init__(self, bootstrap_servers: str, client_id: str) -> None:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap_servers,
            client_id=client_id,
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
            request_timeout_ms=30000,
            max_batch_size=256 * 1024,
        )
        self.bootstrap_servers = bootstrap_servers

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def publish(self, messages: Sequence[Message]) -> None:
        futures = [
            await self._producer.send(
                m.topic,
                m.value,
                key=m.key.encode("utf-8"),
                headers=[(k, v.encode("utf-8")) for k, v in m.headers.items()],
            )
            for m in messages
        ]
        await asyncio.gather(*futures)

    async def check(self) -> None:
        """Raise unless the broker answers a metadata request."""
        await asyncio.wait_for(self._producer.client.fetch_all_metadata(), timeout=5)


async def ensure_topics(
    bootstrap_servers: str, topics: Iterable[str], partitions: int, replication: int = 1
) -> None:
    """Create the topics that do not exist yet."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = sorted(set(topics) - existing)
        if not missing:
            return
        # Another service may create the same topic at the same moment: that is fine.
        with contextlib.suppress(TopicAlreadyExistsError):
            await admin.create_topics(
                [
                    NewTopic(t, num_partitions=partitions, replication_factor=replication)
                    for t in missing
                ]
            )
        log.info("created topics", extra={"topics": missing})
    finally:
        await admin.close()
