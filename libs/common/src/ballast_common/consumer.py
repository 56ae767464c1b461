"""Kafka consumers that keep money safe.

A batch of records is handled in ONE database transaction; each record in its own savepoint
with an inbox row, so a redelivered event has no second effect. Offsets are committed only
after the transaction commits. A record that cannot be processed goes to the consumer's
dead-letter topic (through the outbox, in the same transaction) and the consumer carries on;
a transient failure (database or broker unavailable) rolls the batch back and retries it
with backoff, losing nothing.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import traceback
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaConnectionError
from opentelemetry.trace import Span, SpanKind
from sqlalchemy.exc import DBAPIError, OperationalError

from ballast_common import plumbing
from ballast_common.contracts.envelope import Envelope, EnvelopeError, decode_envelope
from ballast_common.contracts.events import DeadLetterV1
from ballast_common.contracts.registry import DEAD_LETTER_TOPIC_PREFIX
from ballast_common.errors import TransientError
from ballast_common.metrics import CONSUMER_RETRIES, EVENTS_CONSUMED
from ballast_common.plumbing import OutgoingMessage
from ballast_common.telemetry import context_from_headers, kafka_headers_to_dict, tracer
from ballast_common.uow import UnitOfWork

log = logging.getLogger(__name__)

Handler = Callable[[UnitOfWork, Envelope, Any], Awaitable[None]]


@dataclass(frozen=True)
class Subscription:
    """A service handles `event_type` (its topic) with `handler(uow, envelope, payload)`."""

    event_type: str
    handler: Handler


class _IsolateFailures(Exception):
    """A record of the batch failed permanently: redo the batch one savepoint per record."""


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, TransientError | OperationalError | KafkaConnectionError | OSError):
        return True
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        # serialization failure, deadlock, lock not available: another try will do
        return _sqlstate(exc.orig) in {"40001", "40P01", "55P03"}
    return isinstance(exc, TimeoutError)


def _sqlstate(error: BaseException | None) -> str | None:
    for candidate in (error, getattr(error, "__cause__", None)):
        code = getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)
        if code:
            return str(code)
    return None


def dead_letter_topic(group: str) -> str:
    return DEAD_LETTER_TOPIC_PREFIX + group


class BatchProcessor:
    """Handles one batch of records in one unit of work. No Kafka client in here, so unit
    tests drive it with hand-made records."""

    def __init__(
        self,
        group: str,
        subscriptions: Sequence[Subscription],
        uow_factory: Callable[[], UnitOfWork],
        topic_prefix: str = "",
        dead_letters: str | None = None,
    ) -> None:
        self.group = group
        # Logical name (the relay adds the prefix): dlq.<service> by default dlq.<group>.
        self.dead_letters = dead_letters or dead_letter_topic(group)
        self._handlers = {s.event_type: s.handler for s in subscriptions}
        self._uow_factory = uow_factory
        self._prefix = topic_prefix

    @property
    def topics(self) -> list[str]:
        return [self._prefix + t for t in self._handlers]

    async def process(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> dict[str, int]:
        """Handle a batch; returns counts by outcome: processed, duplicate, dead_lettered.

        Fast path: one transaction, one inbox insert for the batch, no savepoints. If a record
        fails permanently, that transaction is rolled back and the batch is handled again with
        a savepoint per record, so only the failing record is dead-lettered.
        """
        try:
            outcomes = await self._process_together(records)
        except _IsolateFailures:
            outcomes = await self._process_isolated(records)
        counts = {"processed": 0, "duplicate": 0, "dead_lettered": 0}
        for record, outcome in zip(records, outcomes, strict=True):
            counts[outcome] += 1
            EVENTS_CONSUMED.labels(self._logical(record.topic), outcome).inc()
        return counts

    async def _process_together(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> list[str]:
        outcomes: list[str] = []
        async with self._uow_factory() as uow:
            decoded = [self._decode(record) for record in records]
            ids = [d[0].id for d in decoded if not isinstance(d, Exception)]
            first_time = await plumbing.record_first_deliveries(uow.session, self.group, ids)
            for record, item in zip(records, decoded, strict=True):
                if isinstance(item, Exception):
                    self._dead_letter(uow, record, item)
                    outcomes.append("dead_lettered")
                    continue
                envelope, payload = item
                if envelope.id not in first_time:
                    outcomes.append("duplicate")
                    continue
                first_time.discard(envelope.id)  # a second copy in this batch is a duplicate
                with self._span(record, envelope) as span:
                    try:
                        await self._handle(uow, envelope, payload)
                    except Exception as exc:
                        if is_transient(exc):
                            raise
                        span.record_exception(exc)
                        raise _IsolateFailures from exc
                outcomes.append("processed")
        return outcomes

    async def _process_isolated(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> list[str]:
        async with self._uow_factory() as uow:
            return [await self._process_one(uow, record) for record in records]

    async def _process_one(self, uow: UnitOfWork, record: ConsumerRecord[bytes, bytes]) -> str:
        item = self._decode(record)
        if isinstance(item, Exception):
            self._dead_letter(uow, record, item)
            return "dead_lettered"
        envelope, payload = item
        with self._span(record, envelope) as span:
            # Events queued by earlier records (dead letters included) are written first,
            # so rolling back this record's savepoint cannot lose them.
            await uow.flush_events()
            savepoint = await uow.session.begin_nested()
            try:
                if not await plumbing.record_first_delivery(uow.session, self.group, envelope.id):
                    await savepoint.rollback()
                    span.set_attribute("ballast.duplicate", True)
                    return "duplicate"
                await self._handle(uow, envelope, payload)
                await savepoint.commit()
                return "processed"
            except Exception as exc:
                uow.discard_events()
                if savepoint.is_active:
                    await savepoint.rollback()
                if is_transient(exc):
                    raise
                span.record_exception(exc)
                self._dead_letter(uow, record, exc)
                return "dead_lettered"

    def _decode(self, record: ConsumerRecord[bytes, bytes]) -> tuple[Envelope, Any] | Exception:
        topic = self._logical(record.topic)
        try:
            envelope, payload = decode_envelope(record.value)
        except EnvelopeError as exc:
            return exc
        if envelope.type != topic or topic not in self._handlers:
            return EnvelopeError(f"event type {envelope.type!r} does not belong on {topic!r}")
        return envelope, payload

    async def _handle(self, uow: UnitOfWork, envelope: Envelope, payload: Any) -> None:
        uow.causation = envelope
        try:
            await self._handlers[envelope.type](uow, envelope, payload)
            await uow.flush_events()
        finally:
            uow.causation = None

    def _span(
        self, record: ConsumerRecord[bytes, bytes], envelope: Envelope
    ) -> AbstractContextManager[Span]:
        return tracer().start_as_current_span(
            f"{self._logical(record.topic)} process",
            context=context_from_headers(kafka_headers_to_dict(record.headers)),
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": "kafka",
                "messaging.destination.name": record.topic,
                "messaging.consumer.group.name": self.group,
                "messaging.kafka.partition": record.partition,
                "messaging.kafka.offset": record.offset,
                "ballast.event_id": str(envelope.id),
            },
        )

    def _dead_letter(
        self, uow: UnitOfWork, record: ConsumerRecord[bytes, bytes], exc: BaseException
    ) -> None:
        log.warning(
            "dead-lettering message",
            extra={
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
                "error": str(exc),
            },
        )
        value_text: str | None = None
        value_b64: str | None = None
        if record.value is not None:
            try:
                value_text = record.value.decode("utf-8")
            except UnicodeDecodeError:
                value_b64 = base64.b64encode(record.value).decode("ascii")
        key = record.key.decode("utf-8", "replace") if record.key else None
        error = str(exc) or "".join(traceback.format_exception_only(exc)).strip()
        letter = DeadLetterV1(
            consumer_group=self.group,
            original_topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=key,
            value=value_text,
            value_base64=value_b64,
            error_type=type(exc).__name__,
            error=error,
            failed_at=datetime.now(UTC),
        )
        uow.publish_raw(
            OutgoingMessage(
                topic=self.dead_letters,
                key=key or f"{record.topic}:{record.partition}:{record.offset}",
                value=letter.model_dump_json().encode("utf-8"),
                headers={"content-type": "application/json", "error-type": type(exc).__name__},
            )
        )

    def _logical(self, topic: str) -> str:
        return topic[len(self._prefix) :] if topic.startswith(self._prefix) else topic


class KafkaConsumerLoop:
    """Polls Kafka, hands batches to a BatchProcessor, commits offsets after the database."""

    def __init__(
        self,
        processor: BatchProcessor,
        bootstrap_servers: str,
        batch_size: int = 500,
        max_backoff_s: float = 30.0,
    ) -> None:
        self._processor = processor
        self._bootstrap = bootstrap_servers
        self._batch_size = batch_size
        self._max_backoff_s = max_backoff_s
        self.assigned = asyncio.Event()

    async def run(self) -> None:
        consumer = AIOKafkaConsumer(
            *self._processor.topics,
            bootstrap_servers=self._bootstrap,
            group_id=self._processor.group,
            client_id=self._processor.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            max_poll_records=self._batch_size,
        )
        await consumer.start()
        try:
            while True:
                batches = await consumer.getmany(timeout_ms=500, max_records=self._batch_size)
                if consumer.assignment():
                    self.assigned.set()
                records = [r for tp in sorted(batches, key=_tp_order) for r in batches[tp]]
                if not records:
                    continue
                await self._process_with_retry(records)
                await consumer.commit(
                    {tp: recs[-1].offset + 1 for tp, recs in batches.items() if recs}
                )
        finally:
            await consumer.stop()

    async def _process_with_retry(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
        delay = 0.2
        while True:
            try:
                await self._processor.process(records)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not is_transient(exc):
                    raise
                CONSUMER_RETRIES.labels(self._processor.group).inc()
                log.warning(
                    "transient failure; retrying batch",
                    extra={"error": repr(exc), "retry_in_s": delay, "records": len(records)},
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._max_backoff_s)


def _tp_order(tp: TopicPartition) -> tuple[str, int]:
    return tp.topic, tp.partition
