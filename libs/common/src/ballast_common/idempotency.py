"""Idempotency keys on mutating REST calls, with Stripe's semantics, safe against crashes.

A client that sends `Idempotency-Key: <key>` on a POST, PUT, PATCH or DELETE may retry the
call with the same key as often as it likes: the first request runs, and every retry gets
the first response back (status and body, plus `Idempotent-Replayed: true`) without running
again. Reusing a key for a different request (method, path, query or body) is refused with
422; a retry that arrives while the first request still runs gets 409. Only a success is
remembered: an error response (4xx or 5xx) changes nothing, so a retry runs again.

- **The claim lives in the request's own transaction.** `claim_key` (a dependency of every
  route: it runs after routing, so each route's body limit holds) inserts the key's row in a
  transaction that the request's unit of work joins (`app._request_uow`), and
  `IdempotencyMiddleware` stores the response in that same transaction before it commits. A
  request that dies (a crash, kill -9, a lost connection) takes its claim with it, and a
  retry runs; a request that committed has its answer stored with its effects. A retry that
  comes while the first runs waits `WAIT_FOR_RUNNING` for the row, then gets 409. (A route
  that opens units of work of its own, as book loads do, commits them apart from the claim:
  such routes are idempotent by their own ids.)
- **Keys are scoped** per tenant and principal (the bearer token's `tenant` and `sub`): one
  client's key never answers another's request.
- **Requests are compared canonically**: a JSON body as canonical JSON (keys sorted, no
  whitespace), query parameters sorted.

Keys live in each service's schema (`idempotency_keys`, the key column holding a digest of
scope and key) and are forgotten after `KEEP_FOR` (24 hours, as Stripe keeps them).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode

from fastapi import Request
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
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncTransaction
from starlette.datastructures import Headers
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ballast_common.auth import Principal, principal_of_request
from ballast_common.common_tables import common_metadata
from ballast_common.problems import problem_response

log = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MUTATING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
MAX_KEY_LENGTH = 255
KEEP_FOR = timedelta(hours=24)
WAIT_FOR_RUNNING = timedelta(seconds=1)
SCOPE_KEY = "ballast.idempotency"  # the request's KeyedRequest in the ASGI scope
LOCK_NOT_AVAILABLE = "55P03"
EXPIRED_PER_CLAIM = 100  # expired keys deleted by each new claim

idempotency_keys = Table(
    "idempotency_keys",
    common_metadata,
    # sha256 of the client's scope and key (see `scoped_key`)
    Column("key", String(MAX_KEY_LENGTH), primary_key=True),
    Column("fingerprint", String(64), nullable=False),
    Column("method", String(10), nullable=False),
    Column("path", String(2000), nullable=False),
    # Null only in rows an earlier version left behind when its request died.
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


def canonical_body(body: bytes) -> bytes:
    """A JSON body as canonical JSON (sorted keys, no whitespace); other bodies as they are."""
    try:
        document = json.loads(body)
    except ValueError:
        return body
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8", "surrogatepass"
    )


def canonical_query(query: str) -> str:
    return urlencode(sorted(parse_qsl(query, keep_blank_values=True)))


def _digest(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def fingerprint(method: str, path: str, query: str, body: bytes) -> str:
    """What makes two requests the same request: method, path, query and body, canonically."""
    return _digest(
        method.encode(),
        path.encode(),
        canonical_query(query).encode(),
        canonical_body(body),
    )


def scoped_key(principal: Principal | None, key: str) -> str:
    """The stored form of a client's key: a digest of its tenant, principal and key."""
    tenant, subject = (principal.tenant, principal.subject) if principal else ("", "")
    return _digest(
        tenant.encode(),
        subject.encode("utf-8", "surrogatepass"),
        key.encode("utf-8", "surrogateescape"),
    )


class IdempotentAnswer(Exception):
    """Raised by `claim_key` when the answer is known without running the request."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


@dataclass
class KeyedRequest:
    """One request with an idempotency key, and the transaction holding its claim."""

    key: str
    connect: Callable[[], Any]  # opens an AsyncConnection on the service's schema
    connection: AsyncConnection | None = None
    transaction: AsyncTransaction | None = None

    scoped: str = ""  # the key scoped to its caller, known once the caller is (`claim`)

    async def claim(self, scoped: str, print_: str, method: str, path: str) -> StoredRequest | None:
        """Claim the key in a new transaction (kept open); None if claimed, else what the
        earlier request left (the transaction is then closed)."""
        self.scoped = scoped
        self.connection = await self.connect()
        try:
            self.transaction = await self.connection.begin()
            earlier = await _claim(self.connection, self.scoped, print_, method, path)
        except BaseException:
            await self.abandon()
            raise
        if earlier is not None:
            await self.abandon()
        return earlier

    async def finish(self, status_code: int, content_type: str | None, body: bytes) -> None:
        """Store the response with the request's effects and commit them together."""
        assert self.connection is not None and self.transaction is not None
        try:
            await self.connection.execute(
                update(idempotency_keys)
                .where(idempotency_keys.c.key == self.scoped)
                .values(
                    status_code=status_code,
                    content_type=content_type,
                    response_body=body,
                    completed_at=func.now(),
                )
            )
            await self.transaction.commit()
        finally:
            await self.abandon()

    async def abandon(self) -> None:
        """Roll back whatever is still open (the claim with it) and return the connection."""
        connection, self.connection, self.transaction = self.connection, None, None
        if connection is None:
            return
        try:
            await connection.rollback()
            await connection.close()
        except Exception:  # a broken connection: the server has dropped the claim already
            log.warning("could not roll back a keyed request's transaction", exc_info=True)
            await connection.invalidate()


async def _claim(
    connection: AsyncConnection, scoped: str, print_: str, method: str, path: str
) -> StoredRequest | None:
    keys = idempotency_keys.c
    await connection.execute(
        text(f"SET LOCAL lock_timeout = '{int(WAIT_FOR_RUNNING.total_seconds() * 1000)}ms'")
    )
    new = insert(idempotency_keys).values(key=scoped, fingerprint=print_, method=method, path=path)
    # An expired row, or one whose request died before this version, is taken over.
    claim = new.on_conflict_do_update(
        index_elements=[keys.key],
        set_={
            "fingerprint": new.excluded.fingerprint,
            "method": new.excluded.method,
            "path": new.excluded.path,
            "status_code": None,
            "content_type": None,
            "response_body": None,
            "created_at": func.now(),
            "completed_at": None,
        },
        where=or_(keys.created_at < func.now() - KEEP_FOR, keys.status_code.is_(None)),
    ).returning(keys.key)
    try:
        claimed = (await connection.execute(claim)).first() is not None
    except DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) == LOCK_NOT_AVAILABLE:
            raise KeyInUse from exc
        raise
    await connection.execute(text("SET LOCAL lock_timeout TO DEFAULT"))
    if claimed:
        expired = (
            select(keys.key)
            .where(keys.created_at < func.now() - KEEP_FOR)
            .limit(EXPIRED_PER_CLAIM)
            .with_for_update(skip_locked=True)
        )
        await connection.execute(delete(idempotency_keys).where(keys.key.in_(expired)))
        return None
    row = (
        await connection.execute(
            select(
                keys.fingerprint,
                keys.method,
                keys.path,
                keys.status_code,
                keys.content_type,
                keys.response_body,
            ).where(keys.key == scoped)
        )
    ).one()
    return StoredRequest(*row)


class KeyInUse(Exception):
    """Another request with the same key holds it (it is still running)."""


def keyed_request(request: Request) -> KeyedRequest | None:
    """The request's idempotency claim, if it sent a key."""
    keyed = request.scope.get(SCOPE_KEY)
    return keyed if isinstance(keyed, KeyedRequest) else None


def request_connection(request: Request) -> AsyncConnection | None:
    """The connection whose transaction holds the request's claim: its unit of work joins it."""
    keyed = keyed_request(request)
    return keyed.connection if keyed is not None else None


async def claim_key(request: Request) -> None:
    """A dependency of every route (after `authenticate`): claim the request's key, scoped to
    its caller, or answer from the earlier one."""
    keyed = keyed_request(request)
    if keyed is None or keyed.connection is not None:
        return
    path = request.url.path
    print_ = fingerprint(request.method, path, request.url.query, await request.body())
    try:
        scoped = scoped_key(principal_of_request(request), keyed.key)
        earlier = await keyed.claim(scoped, print_, request.method, path)
    except KeyInUse:
        raise IdempotentAnswer(
            problem(
                409,
                "Request in progress",
                f"a request with {HEADER} {keyed.key!r} is still being processed; retry later",
                path,
            )
        ) from None
    if earlier is not None:
        raise IdempotentAnswer(_answer_retry(keyed.key, earlier, print_, path))


def _answer_retry(key: str, earlier: StoredRequest, print_: str, path: str) -> Response:
    if earlier.fingerprint != print_:
        return problem(
            422,
            "Idempotency key reused",
            f"{HEADER} {key!r} was first used for a different request "
            f"({earlier.method} {earlier.path}); use a new key for a new request",
            path,
        )
    return Response(
        earlier.response_body or b"",
        status_code=earlier.status_code or 200,
        media_type=earlier.content_type,
        headers={REPLAYED_HEADER: "true"},
    )


def problem(status: int, title: str, detail: str, path: str) -> JSONResponse:
    body = {
        "type": f"https://ballast.dev/problems/{title.lower().replace(' ', '-')}",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": path,
        "errors": [{"field": HEADER, "message": detail}],
    }
    return problem_response(status, body)


class IdempotencyMiddleware:
    """Holds a keyed request's transaction: stores a success's response in it and commits, or
    rolls it back (the claim with it) on an error, before the client sees the answer."""

    def __init__(
        self,
        app: ASGIApp,
        connect: Callable[[Scope], Any],
        on_failure: Callable[[Scope, BaseException], Response],
        after_commit: Callable[[Scope], None] | None = None,
    ) -> None:
        self.app = app
        self.connect = connect
        self.on_failure = on_failure  # the answer when the commit fails (e.g. a 503)
        self.after_commit = after_commit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in MUTATING_METHODS:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        key = headers.get(HEADER)
        if key is None:
            await self.app(scope, receive, send)
            return
        if not 0 < len(key) <= MAX_KEY_LENGTH or not key.isprintable():
            detail = f"{HEADER} must be 1 to {MAX_KEY_LENGTH} printable characters"
            response = problem(400, "Invalid idempotency key", detail, scope["path"])
            await response(scope, receive, send)
            return
        keyed = KeyedRequest(key, lambda: self.connect(scope))
        scope[SCOPE_KEY] = keyed
        held: list[Message] = []

        async def hold_until_settled(message: Message) -> None:
            if keyed.connection is None:  # nothing claimed (a replay, a 404, ...)
                await send(message)
                return
            held.append(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                for settled in await self._settle(scope, keyed, held):
                    await send(settled)

        try:
            await self.app(scope, receive, hold_until_settled)
        finally:
            await keyed.abandon()

    async def _settle(
        self, scope: Scope, keyed: KeyedRequest, held: list[Message]
    ) -> list[Message]:
        start = held[0]
        status = int(start["status"])
        if status >= 400:
            await keyed.abandon()
            return held
        content_type = Headers(raw=start.get("headers", [])).get("content-type")
        body = b"".join(m.get("body", b"") for m in held if m["type"] == "http.response.body")
        try:
            await keyed.finish(status, content_type, body)
        except Exception as exc:
            log.exception("could not commit a keyed request", extra={"path": scope["path"]})
            failure = self.on_failure(scope, exc)
            return [
                {
                    "type": "http.response.start",
                    "status": failure.status_code,
                    "headers": failure.raw_headers,
                },
                {"type": "http.response.body", "body": failure.body},
            ]
        if self.after_commit is not None:
            self.after_commit(scope)
        return held
