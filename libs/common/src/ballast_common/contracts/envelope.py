"""The envelope every event travels in, on Kafka and in the outbox."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class EnvelopeError(Exception):
    """A message that is not a valid Ballast envelope, or whose payload breaks its contract."""


class Envelope(BaseModel):
    """Metadata common to all events; `payload` is validated against (type, version)."""

    model_config = ConfigDict(extra="ignore")

    id: uuid.UUID = Field(default_factory=uuid.uuid4, description="unique event id")
    type: str = Field(description="event type, equal to the logical topic name")
    version: int = Field(ge=1, description="contract version of the payload")
    time: datetime = Field(default_factory=lambda: datetime.now(UTC))
    tenant: str = Field(min_length=1, description="the firm the event belongs to")
    key: str = Field(min_length=1, description="partition key: account id or model id")
    source: str = Field(description="the service that produced the event")
    causation_id: uuid.UUID | None = Field(
        default=None, description="id of the event that caused this one"
    )
    traceparent: str | None = Field(default=None, description="W3C trace context")
    tracestate: str | None = None
    payload: dict[str, Any]

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode("utf-8")


def decode_envelope(raw: bytes | None) -> tuple[Envelope, BaseModel]:
    """Parse bytes into (envelope, typed payload); raise EnvelopeError naming the problem."""
    from ballast_common.contracts.registry import contract_for

    if raw is None:
        raise EnvelopeError("message has no value")
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EnvelopeError(f"message is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise EnvelopeError("message is not a JSON object")
    try:
        envelope = Envelope.model_validate(data)
    except ValidationError as exc:
        raise EnvelopeError(f"invalid envelope: {_describe(exc)}") from exc
    contract = contract_for(envelope.type, envelope.version)
    if contract is None:
        raise EnvelopeError(f"unknown event type/version {envelope.type} v{envelope.version}")
    try:
        payload = contract.payload.model_validate(envelope.payload)
    except ValidationError as exc:
        raise EnvelopeError(
            f"invalid {envelope.type} v{envelope.version} payload: {_describe(exc)}"
        ) from exc
    return envelope, payload


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        parts.append(f"{loc}: {err['msg']}")
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")
