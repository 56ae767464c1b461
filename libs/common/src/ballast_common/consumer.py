"""Kafka consumers that keep money safe.

A batch of records is handled in ONE database transaction with one inbox insert, so a
redelivered event has no second effect. Offsets are committed only after the transaction
commits. A record that cannot be processed goes to the consumer's dead-letter topic (through
the outbox, in the same transaction) and the consumer carries on; a transient failure
(database or broker unavailable) rolls the batch back and retries it with backoff, losing
nothing.

Handlers come in two shapes. `Subscription(topic, handler)` handles one event at a time;
`Subscription.batch(topic, handler)` gets every new event of its topic in the batch at once
(`list[Delivery]`), so it can read and write with one statement per batch instead of one per
event. A subscription with a `lane` gets a consumer of its own (group `<service>.<lane>`)
with its own batch size: a lane of batch size 1 gives each message its own transaction.
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

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaConnectionError
from opentelemetry import trace
from opentelemetry.trace import Link, Span, SpanKind
from pydantic import BaseModel, ValidationError, create_model
from sqlalchemy.exc import DBAPIError, OperationalError

from ballast_common.bus import KafkaConnection
from ballast_common.contracts.envelope import (
    Envelope,
    EnvelopeError,
    decode_carefully,
    decode_envelope,
)
from ballast_common.contracts.events import DeadLetterV1
from ballast_common.contracts.registry import DEAD_LETTER_TOPIC_PREFIX, contract_for
from ballast_common.errors import PermanentMessageError, TransientError
from ballast_common.inbox import record_first_deliveries, record_first_delivery
from ballast_common.metrics import CONSUMER_RETRIES, EVENTS_CONSUMED
from ballast_common.outbox import OutgoingMessage
from ballast_common.problems import unavailable_dependency
from ballast_common.telemetry import context_from_headers, kafka_headers_to_dict, tracer
from ballast_common.uow import UnitOfWork

log = logging.getLogger(__name__)
MAX_SPAN_LINKS = 64  # links from a batch's span to the other records' producers

Handler = Callable[[UnitOfWork, Envelope, Any], Awaitable[None]]


@dataclass(frozen=True)
class Delivery:
    """One new event handed to a batch handler; `raw` is the message's bytes as published
    (the envelope's JSON), when the consumer has them."""

    envelope: Envelope
    payload: Any
    raw: bytes | None = None


BatchHandler = Callable[[UnitOfWork, Sequence[Delivery]], Awaitable[None]]
DeadLetterHook = Callable[[UnitOfWork, Envelope, Any, str], Awaitable[None]]


@dataclass(frozen=True)
class Subscription:
    """A service handles `event_type` (its topic) with `handler(uow, envelope, payload)`,
    or, made with `Subscription.batch`, with `batch_handler(uow, deliveries)`.

    - `lane`: a consumer of its own for this topic, with `batch_size` records per
      transaction (e.g. 1 for heavy work such as a rebalance chunk);
    - `attempts`: how often a record that fails (neither transient nor a
      PermanentMessageError) is tried before it is dead-lettered;
    - `on_dead_letter(uow, envelope, payload, reason)`: runs in the transaction that writes
      the dead letter, so the service can record the failure in its own state;
    - `view`: a model the payload is decoded into instead of the contract's (every version
      of the topic): the fields the handler uses, unknown fields ignored, so a large payload
      (a snapshot's lots) costs only what is read. The envelope is checked as always, the
      type and version must be a known contract, and a payload whose view fields are
      invalid is dead-lettered naming them. The handler always gets the view (a payload
      decoded with the contract, as the shared test kit does, is turned into it).
    """

    event_type: str
    handler: Handler | None = None
    batch_handler: BatchHandler | None = None
    lane: str | None = None
    batch_size: int | None = None
    attempts: int = 1
    on_dead_letter: DeadLetterHook | None = None
    view: type[BaseModel] | None = None

    def __post_init__(self) -> None:
        if (self.handler is None) == (self.batch_handler is None):
            raise ValueError(f"{self.event_type}: give exactly one of handler, batch_handler")
        if self.attempts < 1:
            raise ValueError(f"{self.event_type}: attempts must be at least 1")

    @classmethod
    def batch(cls, event_type: str, handler: BatchHandler, **options: Any) -> Subscription:
        return cls(event_type, batch_handler=handler, **options)

    def decode(self, raw: bytes | None) -> tuple[Envelope, Any]:
        """Envelope and payload of a message: the payload as the contract's model, or as the
        view; raises EnvelopeError naming the problem."""
        if self.view is None:
            return decode_envelope(raw)
        return decode_view(raw, self.view)

    async def deliver(self, uow: UnitOfWork, deliveries: Sequence[Delivery]) -> None:
        if self.view is not None:
            deliveries = [self._as_view(d) for d in deliveries]
        if self.batch_handler is not None:
            await self.batch_handler(uow, deliveries)
            return
        assert self.handler is not None
        for delivery in deliveries:
            uow.causation = delivery.envelope
            try:
                await self.handler(uow, delivery.envelope, delivery.payload)
            finally:
                uow.causation = None

    def _as_view(self, delivery: Delivery) -> Delivery:
        assert self.view is not None
        if isinstance(delivery.payload, self.view):
            return delivery
        payload = delivery.payload
        if isinstance(payload, BaseModel):
            payload = payload.model_dump(mode="json")
        return Delivery(delivery.envelope, self.view.model_validate(payload), delivery.raw)


_VIEW_ENVELOPES: dict[type[BaseModel], type[Envelope]] = {}


def decode_view(raw: bytes | None, view: type[BaseModel]) -> tuple[Envelope, BaseModel]:
    """Parse bytes into (envelope, payload as ``view``) in one pass from the JSON; raise
    EnvelopeError naming the problem (not JSON, the envelope's field, an unknown type or
    version, the view's field)."""
    if raw is None:
        raise EnvelopeError("message has no value")
    model = _VIEW_ENVELOPES.get(view)
    if model is None:
        model = create_model(f"{view.__name__}Envelope", __base__=Envelope, payload=(view, ...))
        _VIEW_ENVELOPES[view] = model
    try:
        typed: Any = model.model_validate_json(raw)
    except ValidationError:
        return decode_carefully(raw, view)
    if contract_for(typed.type, typed.version) is None:
        raise EnvelopeError(f"unknown event type/version {typed.type} v{typed.version}")
    return typed, typed.payload


class _IsolateFailures(Exception):
    """A record of the batch failed permanently: redo the batch one savepoint per record."""


# lock not available: another try will do (the rest of what is worth retrying is the rule
# of `problems.unavailable_dependency`, the same that answers 503 to a request)
_RETRYABLE_STATES = {"55P03"}


def is_transient(exc: BaseException) -> bool:
    """Whether another try may succeed: a dependency down or restarting (the database in
    recovery, a connection lost or closed, Kafka unreachable), a race lost (serialization,
    deadlock, a lock not available), a timeout. A `PermanentMessageError` never is."""
    if isinstance(exc, PermanentMessageError):
        return False
    if isinstance(exc, TransientError | OperationalError | KafkaConnectionError | OSError):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    if unavailable_dependency(exc) is not None:
        return True
    if _sqlstate(getattr(exc, "orig", None) or exc) in _RETRYABLE_STATES:
        return True
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
        self._subscriptions = {s.event_type: s for s in subscriptions}
        self._uow_factory = uow_factory
        self._prefix = topic_prefix

    @property
    def topics(self) -> list[str]:
        return [self._prefix + t for t in self._subscriptions]

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
            first_time = await record_first_deliveries(uow.session, self.group, ids)
            # Consecutive new events of one topic go to their handler together.
            group: list[tuple[ConsumerRecord[bytes, bytes], Delivery]] = []
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
                if group and group[0][1].envelope.type != envelope.type:
                    await self._handle_together(uow, group)
                    group = []
                group.append((record, Delivery(envelope, payload, record.value)))
                outcomes.append("processed")
            if group:
                await self._handle_together(uow, group)
        return outcomes

    async def _handle_together(
        self, uow: UnitOfWork, group: Sequence[tuple[ConsumerRecord[bytes, bytes], Delivery]]
    ) -> None:
        with self._span([r for r, _ in group], [d.envelope for _, d in group]) as span:
            try:
                await self._handle(uow, [d for _, d in group])
            except Exception as exc:
                if is_transient(exc):
                    raise
                span.record_exception(exc)
                raise _IsolateFailures from exc

    async def _process_isolated(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> list[str]:
        async with self._uow_factory() as uow:
            return [await self._process_one(uow, record) for record in records]

    async def _process_one(self, uow: UnitOfWork, record: ConsumerRecord[bytes, bytes]) -> str:
        item = self._decode(record)
        if isinstance(item, Exception):
            self._dead_letter(uow, record, item)
            return "dead_lettered"
        envelope, payload = item
        subscription = self._subscriptions[envelope.type]
        with self._span([record], [envelope]) as span:
            # Events queued by earlier records (dead letters included) are written first,
            # so rolling back this record's savepoint cannot lose them.
            await uow.flush_events()
            for attempt in range(1, subscription.attempts + 1):
                savepoint = await uow.session.begin_nested()
                try:
                    if not await record_first_delivery(uow.session, self.group, envelope.id):
                        await savepoint.rollback()
                        span.set_attribute("ballast.duplicate", True)
                        return "duplicate"
                    await self._handle(uow, [Delivery(envelope, payload, record.value)])
                    await savepoint.commit()
                    return "processed"
                except Exception as exc:
                    uow.discard_events()
                    if savepoint.is_active:
                        await savepoint.rollback()
                    if is_transient(exc):
                        raise
                    span.record_exception(exc)
                    final = isinstance(exc, PermanentMessageError)
                    if final or attempt == subscription.attempts:
                        await self._give_up(uow, record, envelope, payload, exc, attempt)
                        return "dead_lettered"
                    log.warning(
                        "message failed; trying again",
                        extra={"topic": record.topic, "attempt": attempt, "error": repr(exc)},
                    )
        raise AssertionError("unreachable: the last attempt returns")

    async def _give_up(
        self,
        uow: UnitOfWork,
        record: ConsumerRecord[bytes, bytes],
        envelope: Envelope,
        payload: Any,
        exc: Exception,
        attempts: int,
    ) -> None:
        """Dead-letter the record, and let its subscription note the failure in its state."""
        self._dead_letter(uow, record, exc, attempts)
        hook = self._subscriptions[envelope.type].on_dead_letter
        if hook is not None:
            await hook(uow, envelope, payload, _reason(exc))
            await uow.flush_events()

    def _decode(self, record: ConsumerRecord[bytes, bytes]) -> tuple[Envelope, Any] | Exception:
        topic = self._logical(record.topic)
        subscription = self._subscriptions.get(topic)
        try:
            if subscription is not None:
                envelope, payload = subscription.decode(record.value)
            else:
                envelope, payload = decode_envelope(record.value)
        except EnvelopeError as exc:
            return exc
        if envelope.type != topic or subscription is None:
            return EnvelopeError(f"event type {envelope.type!r} does not belong on {topic!r}")
        return envelope, payload

    async def _handle(self, uow: UnitOfWork, deliveries: Sequence[Delivery]) -> None:
        await self._subscriptions[deliveries[0].envelope.type].deliver(uow, deliveries)
        await uow.flush_events()

    def _span(
        self, records: Sequence[ConsumerRecord[bytes, bytes]], envelopes: Sequence[Envelope]
    ) -> AbstractContextManager[Span]:
        """One consumer span: child of the first record's producer, linked to the others'."""
        first = records[0]
        attributes: dict[str, Any] = {
            "messaging.system": "kafka",
            "messaging.destination.name": first.topic,
            "messaging.consumer.group.name": self.group,
            "messaging.kafka.partition": first.partition,
            "messaging.kafka.offset": first.offset,
            "ballast.event_id": str(envelopes[0].id),
        }
        if len(records) > 1:
            attributes["messaging.batch.message_count"] = len(records)
        links = []
        for record in records[1 : 1 + MAX_SPAN_LINKS]:
            context = trace.get_current_span(
                context_from_headers(kafka_headers_to_dict(record.headers))
            ).get_span_context()
            if context.is_valid:
                links.append(Link(context))
        return tracer().start_as_current_span(
            f"{self._logical(first.topic)} process",
            context=context_from_headers(kafka_headers_to_dict(first.headers)),
            kind=SpanKind.CONSUMER,
            links=links,
            attributes=attributes,
        )

    def _dead_letter(
        self,
        uow: UnitOfWork,
        record: ConsumerRecord[bytes, bytes],
        exc: BaseException,
        attempts: int = 1,
    ) -> None:
        log.warning(
            "dead-lettering message",
            extra={
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
                "error": str(exc),
                "attempts": attempts,
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
        error = _reason(exc)
        if attempts > 1:
            error = f"{error} (after {attempts} attempts)"
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
        connection: KafkaConnection | str,
        batch_size: int = 500,
        max_backoff_s: float = 30.0,
    ) -> None:
        self._processor = processor
        self._connection = KafkaConnection.of(connection)
        self._batch_size = batch_size
        self._max_backoff_s = max_backoff_s
        self.assigned = asyncio.Event()

    async def run(self) -> None:
        consumer = AIOKafkaConsumer(
            **self._connection.client_options(),
            group_id=self._processor.group,
            client_id=self._processor.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            max_poll_records=self._batch_size,
        )
        consumer.subscribe(self._processor.topics, listener=_JoinListener(self.assigned))
        await consumer.start()
        try:
            while True:
                batches = await consumer.getmany(timeout_ms=500, max_records=self._batch_size)
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


class _JoinListener(ConsumerRebalanceListener):
    """Sets `joined` once the consumer is in its group, whether or not it got partitions
    (more replicas than partitions leave some idle, and they are still ready)."""

    def __init__(self, joined: asyncio.Event) -> None:
        self._joined = joined

    async def on_partitions_revoked(self, revoked: Any) -> None:
        return None

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self._joined.set()


def _tp_order(tp: TopicPartition) -> tuple[str, int]:
    return tp.topic, tp.partition


def _reason(exc: BaseException) -> str:
    return str(exc) or "".join(traceback.format_exception_only(exc)).strip()
