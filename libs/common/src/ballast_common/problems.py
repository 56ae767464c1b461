"""What a service answers when a request fails: RFC 9457 problem+json bodies, and 503 with
Retry-After (not 500) while the database or Kafka cannot be reached."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import asyncpg
from aiokafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"


def problem_response(
    status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


# --- 503 while a dependency is down -----------------------------------------------------------

# SQLSTATEs that say the database is unreachable or refusing work for now: connection
# exceptions (08), insufficient resources (53), shutting down or starting (57P01-57P03),
# and a transaction that lost a race and is worth retrying (40001, 40P01).
UNAVAILABLE_SQLSTATE_CLASSES = ("08", "53")
UNAVAILABLE_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "40001", "40P01"})
# What may carry an unreachable dependency: these are answered by `failure_response`.
DEPENDENCY_ERRORS: tuple[type[Exception], ...] = (
    DBAPIError,
    PoolTimeoutError,
    OSError,  # e.g. ConnectionRefusedError while connecting to PostgreSQL
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    KafkaError,
)


def unavailable_dependency(exc: BaseException) -> str | None:
    """Which dependency an error says is unreachable ("the database", "Kafka"), else None."""
    for cause in _causes(exc):
        if isinstance(cause, KafkaConnectionError | KafkaTimeoutError) or (
            isinstance(cause, KafkaError) and cause.retriable
        ):
            return "Kafka"
        if isinstance(cause, PoolTimeoutError) or (
            isinstance(cause, DBAPIError) and cause.connection_invalidated
        ):
            return "the database"
        sqlstate = getattr(cause, "sqlstate", None)
        if isinstance(sqlstate, str) and (
            sqlstate[:2] in UNAVAILABLE_SQLSTATE_CLASSES or sqlstate in UNAVAILABLE_SQLSTATES
        ):
            return "the database"
        if isinstance(cause, asyncpg.InterfaceError) and "closed" in str(cause):
            return "the database"
        if isinstance(cause, ConnectionError | TimeoutError):
            return "the database"
    return None


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """`exc`, what it wraps (`orig`, causes, contexts) and a group's members."""
    pending: list[BaseException] = [exc]
    seen: set[int] = set()
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        for inner in (getattr(current, "orig", None), current.__cause__, current.__context__):
            if isinstance(inner, BaseException):
                pending.append(inner)


def failure_response(path: str, exc: BaseException, retry_after_s: int) -> JSONResponse:
    """503 with Retry-After when a dependency is unreachable; otherwise 500 (logged)."""
    dependency = unavailable_dependency(exc)
    if dependency is None:
        log.error("unhandled error", exc_info=exc, extra={"path": path})
        return problem_response(
            500,
            {
                "type": "https://ballast.dev/problems/internal-error",
                "title": "Internal error",
                "status": 500,
                "detail": "The service failed to handle this request; it has been logged.",
                "instance": path,
            },
        )
    log.warning(
        "dependency unavailable",
        extra={"path": path, "dependency": dependency, "error": repr(exc)[:500]},
    )
    return problem_response(
        503,
        {
            "type": "https://ballast.dev/problems/service-unavailable",
            "title": "Service unavailable",
            "status": 503,
            "detail": f"{dependency} cannot be reached right now, so the request was not "
            f"completed; retry after {retry_after_s} seconds",
            "instance": path,
        },
        headers={"Retry-After": str(retry_after_s)},
    )
