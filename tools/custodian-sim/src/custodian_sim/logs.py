"""JSON log lines carrying the W3C trace context of the request being served."""

from __future__ import annotations

import json
import logging
import re
import sys
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime

_TRACEPARENT = re.compile(
    r"^(?P<version>[0-9a-f]{2})-(?P<trace_id>[0-9a-f]{32})-(?P<span_id>[0-9a-f]{16})"
    r"-(?P<flags>[0-9a-f]{2})(?P<rest>-.*)?$"
)


@dataclass(frozen=True)
class TraceParent:
    """The parts of a W3C ``traceparent`` header."""

    trace_id: str
    span_id: str
    sampled: bool


def parse_traceparent(header: str | None) -> TraceParent | None:
    """Parse a ``traceparent`` header; ``None`` when absent or invalid (as the spec says)."""
    if not header:
        return None
    m = _TRACEPARENT.match(header.strip())
    if m is None:
        return None
    version = m["version"]
    if version == "ff" or (version == "00" and m["rest"] is not None):
        return None
    if m["trace_id"] == "0" * 32 or m["span_id"] == "0" * 16:
        return None
    return TraceParent(m["trace_id"], m["span_id"], bool(int(m["flags"], 16) & 1))


current_trace: ContextVar[TraceParent | None] = ContextVar("current_trace", default=None)

_RESERVED = set(vars(logging.makeLogRecord({})))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, trace ids and any extras."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        trace = current_trace.get()
        if trace is not None:
            line["trace_id"] = trace.trace_id
            line["parent_span_id"] = trace.span_id
        for key, value in vars(record).items():
            if key not in _RESERVED and key not in line:
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure_logging(level: str) -> logging.Logger:
    """Give the ``custodian_sim`` logger one JSON handler on stderr (idempotent)."""
    logger = logging.getLogger("custodian_sim")
    logger.setLevel(level.upper())
    if not any(getattr(h, "_custodian_sim", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        handler._custodian_sim = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    return logger
