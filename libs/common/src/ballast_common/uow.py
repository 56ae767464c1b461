"""The unit of work: one database transaction holding a state change and its events."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType

from pydantic import BaseModel
from sqlmodel.ext.asyncio.session import AsyncSession

from ballast_common.contracts.envelope import Envelope
from ballast_common.contracts.registry import contract_of_type
from ballast_common.outbox import OutgoingMessage, add_to_outbox
from ballast_common.telemetry import current_trace_headers


@dataclass(frozen=True, slots=True)
class Cause:
    """What an event published later follows from, kept with the work that waits for it:
    the causing event's id (None when a request, not an event, asked) and the W3C trace
    context to continue. An `Envelope` serves as a cause directly."""

    id: uuid.UUID | None
    traceparent: str | None = None
    tracestate: str | None = None

    @classmethod
    def here(cls, event_id: uuid.UUID | None = None) -> Cause:
        """`event_id` with the trace context of the current span (none outside a span)."""
        headers = current_trace_headers()
        return cls(event_id, headers.get("traceparent"), headers.get("tracestate"))


class UnitOfWork:
    """Owns one transaction. `publish` puts events in the outbox of that same transaction.

    Use as `async with runtime.uow() as uow:`; it commits on a clean exit and rolls back
    on an exception. Route handlers get one per request, consumers one per batch.
    """

    def __init__(
        self,
        session: AsyncSession,
        source: str,
        on_commit: Callable[[], None] | None = None,
    ) -> None:
        self.session = session
        self.source = source
        self.causation: Envelope | None = None
        self._pending: list[OutgoingMessage] = []
        self._wrote_events = False
        self._on_commit = on_commit

    async def __aenter__(self) -> UnitOfWork:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc_type is None:
                await self.commit()
            else:
                await self.rollback()
        finally:
            await self.session.close()

    def publish(
        self,
        payload: BaseModel,
        *,
        key: str,
        tenant: str | None = None,
        cause: Envelope | Cause | None = None,
    ) -> uuid.UUID:
        """Queue an event for the outbox (written when this unit of work flushes); returns
        its id.

        `cause` is the event this one follows from (a batch handler names it; a one-at-a-time
        handler's event is taken by default; work done later names a stored `Cause`). The new
        event continues the cause's trace.
        """
        return self.publish_json(
            type(payload),
            payload.__pydantic_serializer__.to_json(payload),
            key=key,
            tenant=tenant,
            cause=cause,
        )

    def publish_json(
        self,
        payload_type: type[BaseModel],
        payload_json: bytes,
        *,
        key: str,
        tenant: str | None = None,
        cause: Envelope | Cause | None = None,
    ) -> uuid.UUID:
        """`publish` for a payload already serialized, byte for byte as its model would
        serialize it (a hot path that builds many events from arrays; its tests hold it to
        the model's output)."""
        cause = cause or self.causation
        contract = contract_of_type(payload_type)
        trace = current_trace_headers()
        if cause is not None and cause.traceparent and not _same_trace(trace, cause):
            trace = {"traceparent": cause.traceparent, "tracestate": cause.tracestate or ""}
        event_id = uuid.uuid4()
        # The envelope's JSON written directly around the payload's (the payload is checked by
        # its model; the rest is ours): every event of a fan-out goes through here.
        meta = {
            "id": str(event_id),
            "type": contract.type,
            "version": contract.version,
            "time": datetime.now(UTC).isoformat(),
            "tenant": tenant or (cause.tenant if isinstance(cause, Envelope) else "default"),
            "key": key,
            "source": self.source,
            "causation_id": str(cause.id) if cause is not None and cause.id else None,
            "traceparent": trace.get("traceparent"),
            "tracestate": trace.get("tracestate") or None,
        }
        value = b"".join(
            (
                json.dumps(meta, separators=(",", ":")).encode()[:-1],
                b',"payload":',
                payload_json,
                b"}",
            )
        )
        headers = {
            "event-type": contract.type,
            "event-version": str(contract.version),
            "event-id": meta["id"],
            "content-type": "application/json",
        }
        if meta["traceparent"]:
            headers["traceparent"] = meta["traceparent"]
        if meta["tracestate"]:
            headers["tracestate"] = meta["tracestate"]
        self._pending.append(OutgoingMessage(contract.topic, key, value, headers))
        return event_id

    def publish_raw(self, message: OutgoingMessage) -> None:
        """Queue a message that is not an envelope (a dead letter)."""
        self._pending.append(message)

    async def flush_events(self) -> None:
        pending, self._pending = self._pending, []
        if pending:
            await add_to_outbox(self.session, pending)
            self._wrote_events = True

    def discard_events(self) -> None:
        self._pending.clear()

    async def commit(self) -> None:
        await self.flush_events()
        await self.session.commit()
        if self._wrote_events and self._on_commit:
            self._on_commit()

    async def rollback(self) -> None:
        self._pending.clear()
        await self.session.rollback()


def _same_trace(headers: dict[str, str], cause: Envelope | Cause) -> bool:
    """Whether the current trace context is the cause's trace (W3C: version-traceid-...)."""
    current = headers.get("traceparent", "").split("-")
    theirs = (cause.traceparent or "").split("-")
    return len(current) > 1 and len(theirs) > 1 and current[1] == theirs[1]


def new_id() -> uuid.UUID:
    return uuid.uuid4()
