"""Idempotency keys on mutating REST calls, with Stripe's semantics.

A client that sends `Idempotency-Key: <key>` on a POST, PUT, PATCH or DELETE may retry the
call with the same key as often as it likes: the first request runs, and every retry gets
the first response back (status and body, plus `Idempotent-Replayed: true`) without running
again. Reusing a key for a different request (method, path, query or body) is refused with
422; a retry that arrives while the first request still runs gets 409. Only a success is
remembered: an error response (4xx or 5xx) changed nothing (every request is all or
nothing), so a retry with the same key runs again, e.g. once a model the request named has
been published.

The key is claimed in a transaction of its own before the request runs (a concurrent
request with the same key waits on the claim's row, then sees it); the response is stored
right after. Keys live in each service's schema (`idempotency_keys`) and are forgotten after
`KEEP_FOR` (24 hours, as Stripe keeps them); the SQL lives here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import (
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    delete,
    func,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from ballast_common.common_tables import common_metadata

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MUTATING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
MAX_KEY_LENGTH = 255
KEEP_FOR = timedelta(hours=24)
PROBLEM_JSON = "application/problem+json"

idempotency_keys = Table(
    "idempotency_keys",
    common_metadata,
    Column("key", String(MAX_KEY_LENGTH), primary_key=True),
    Column("fingerprint", String(64), nullable=False),
    Column("method", String(10), nullable=False),
    Column("path", String(2000), nullable=False),
    # Null while the first request runs.
    Column("status_code", Integer, nullable=True),
    Column("content_type", String(200), nullable=True),
    Column("response_body", LargeBinary, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("completed_at", DateTime(timezone=True), nullable=True),
    Index("ix_idempotency_keys_created_at", "created_at"),
)


@dataclass(frozen=True)
class StoredRequest:
    """What an earlier request with the same key left behind."""

    fingerprint: str
    method: str
    path: str
    status_code: int | None
    content_type: str | None
    response_body: bytes | None

    @property
    def finished(self) -> bool:
        return self.status_code is not None


def fingerprint(method: str, path: str, query: str, body: bytes) -> str:
    digest = hashlib.sha256()
    for part in (method.encode(), path.encode(), query.encode(), body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


async def claim(
    session: AsyncSession, key: str, print_: str, method: str, path: str
) -> StoredRequest | None:
    """Claim `key` for a new request; None if claimed, else what the earlier request left."""
    claimed = await session.execute(
        insert(idempotency_keys)
        .values(key=key, fingerprint=print_, method=method, path=path)
        .on_conflict_do_nothing()
        .returning(idempotency_keys.c.key)
    )
    if claimed.first() is not None:
        await session.execute(
            delete(idempotency_keys).where(idempotency_keys.c.created_at < func.now() - KEEP_FOR)
        )
        return None
    row = (
        await session.execute(
            select(
                idempotency_keys.c.fingerprint,
                idempotency_keys.c.method,
                idempotency_keys.c.path,
                idempotency_keys.c.status_code,
                idempotency_keys.c.content_type,
                idempotency_keys.c.response_body,
            ).where(idempotency_keys.c.key == key)
        )
    ).one()
    return StoredRequest(*row)


async def complete(
    session: AsyncSession, key: str, status_code: int, content_type: str | None, body: bytes
) -> None:
    await session.execute(
        update(idempotency_keys)
        .where(idempotency_keys.c.key == key)
        .values(
            status_code=status_code,
            content_type=content_type,
            response_body=body,
            completed_at=func.now(),
        )
    )


async def release(session: AsyncSession, key: str) -> None:
    """Forget a claim whose request failed, so a retry runs again."""
    await session.execute(delete(idempotency_keys).where(idempotency_keys.c.key == key))


def _problem(status: int, title: str, detail: str, path: str) -> JSONResponse:
    body = {
        "type": f"https://ballast.dev/problems/{title.lower().replace(' ', '-')}",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": path,
        "errors": [{"field": HEADER, "message": detail}],
    }
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON)


def install(app: FastAPI, sessions: Callable[[Request], Any]) -> None:
    """Honour `Idempotency-Key` on the app's mutating routes. `sessions(request)` gives the
    async context manager of a database session (the service's schema)."""

    @app.middleware("http")
    async def idempotent_requests(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        key = request.headers.get(HEADER)
        if key is None or request.method not in MUTATING_METHODS:
            return await call_next(request)
        path = request.url.path
        if not 0 < len(key) <= MAX_KEY_LENGTH or not key.isprintable():
            return _problem(
                400,
                "Invalid idempotency key",
                f"{HEADER} must be 1 to {MAX_KEY_LENGTH} printable characters",
                path,
            )
        print_ = fingerprint(request.method, path, request.url.query, await request.body())
        async with sessions(request) as session, session.begin():
            earlier = await claim(session, key, print_, request.method, path)
        if earlier is not None:
            return _answer_retry(key, earlier, print_, path)
        try:
            response = await call_next(request)
        except BaseException:
            await _release(sessions, request, key)
            raise
        if response.status_code >= 400:
            await _release(sessions, request, key)
            return response
        body = b"".join([chunk async for chunk in response.body_iterator])  # type: ignore[attr-defined]
        async with sessions(request) as session, session.begin():
            await complete(session, key, response.status_code, response.media_type, body)
        return Response(
            body,
            status_code=response.status_code,
            headers=dict(response.headers),
            media_type=response.media_type,
        )


def _answer_retry(key: str, earlier: StoredRequest, print_: str, path: str) -> Response:
    if earlier.fingerprint != print_:
        return _problem(
            422,
            "Idempotency key reused",
            f"{HEADER} {key!r} was first used for a different request "
            f"({earlier.method} {earlier.path}); use a new key for a new request",
            path,
        )
    if not earlier.finished:
        return _problem(
            409,
            "Request in progress",
            f"a request with {HEADER} {key!r} is still being processed; retry later",
            path,
        )
    return Response(
        earlier.response_body or b"",
        status_code=earlier.status_code or 200,
        media_type=earlier.content_type,
        headers={REPLAYED_HEADER: "true"},
    )


async def _release(sessions: Callable[[Request], Any], request: Request, key: str) -> None:
    async with sessions(request) as session, session.begin():
        await release(session, key)
