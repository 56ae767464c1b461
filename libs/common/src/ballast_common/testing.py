"""The test kit every package's tests share: a service's schema on the real database, real
envelopes for contract payloads, Kafka records as the consumer polls them, events handed to
a service's subscriptions through the real consumer scaffold, and an in-memory unit of work
for unit tests with fakes.

Tests only: no module under a package's src/ imports it (libs/common/tests/test_testing_kit.py
fails if one does).
"""

from __future__ import annotations

import asyncio
import copy
import re
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from functools import cache
from pathlib import Path
from types import SimpleNamespace, TracebackType
from typing import Any, Generic, TypeVar, cast
from uuid import UUID, uuid4

import httpx
from aiokafka.structs import ConsumerRecord
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlmodel.ext.asyncio.session import AsyncSession

from ballast_common.app import ServiceSpec, create_app, migrate_as_owner
from ballast_common.auth import LocalIssuer, Role, local_issuer
from ballast_common.bus import Message
from ballast_common.consumer import BatchProcessor, Delivery, Subscription, dead_letter_topic
from ballast_common.contracts.envelope import Envelope, decode_envelope
from ballast_common.contracts.registry import TOPICS, contract_for, contract_of_payload
from ballast_common.db import Database, async_url
from ballast_common.outbox import OutgoingMessage, outbox
from ballast_common.settings import ServiceSettings
from ballast_common.tenancy import AppRole
from ballast_common.uow import UnitOfWork

# --- the database -----------------------------------------------------------------------------


async def migrated_database(spec: ServiceSpec, url: str) -> Database:
    """A Database for `spec`'s schema in `url`, migrated to head by the owner (`url`'s
    role) and reached as the service's own role, as deployed: DML on its schema only, under
    the tenant policies (tenancy.py)."""
    return Database(await app_role_url(spec, url), spec.schema, pool_size=2)


async def app_role_url(spec: ServiceSpec, owner_url: str) -> str:
    """Migrate `spec`'s schema as the owner and return the URL of its own application role
    (`test_<service>`): the role a deployment runs the service as, under the tenant
    policies (tenancy.py)."""
    role = "test_" + re.sub(r"[^a-z0-9]+", "_", spec.name.lower())
    url = make_url(async_url(owner_url)).set(username=role, password=role)
    await migrate_as_owner(spec, owner_url, AppRole(role, role))
    return url.render_as_string(hide_password=False)


def unit_of_work(db: Database, source: str) -> UnitOfWork:
    """A unit of work on `db`, publishing as `source`."""
    return UnitOfWork(db.sessions(), source)


async def outbox_events(db: Database, topic: str, key: str | None = None) -> list[Delivery]:
    """The events of `topic` (and `key`) in the outbox, oldest first, decoded as a consumer
    receives them."""
    query = select(outbox.c.value).where(outbox.c.topic == topic).order_by(outbox.c.id)
    if key is not None:
        query = query.where(outbox.c.key == key)
    async with db.sessions() as session:
        values = (await session.execute(query)).scalars().all()
    return [Delivery(*decode_envelope(value)) for value in values]


async def eventually(
    what: str,
    check: Callable[[], Awaitable[Any]],
    timeout_s: float = 120.0,
    every_s: float = 0.2,
) -> Any:
    """Poll `check` until it answers something truthy, and return that; an AssertionError
    naming `what` after `timeout_s` (a condition waited for, never a fixed sleep)."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout_s:.0f} s")
        await asyncio.sleep(every_s)


# --- callers ------------------------------------------------------------------------------------

TEST_TENANT = "demo"
# What tests call as unless they say: an admin of the tenant who also runs the platform
# (writes the security master, equivalence sets, corporate actions).
TEST_ROLES: tuple[Role, ...] = (Role.ADMIN, Role.PLATFORM_OPERATOR)


@cache
def issuer_for_tests() -> LocalIssuer:
    """One local token issuer for the test process, its keys in a folder of its own."""
    return local_issuer(Path(tempfile.mkdtemp(prefix="ballast-test-issuer-")))


def bearer(
    tenant: str = TEST_TENANT,
    roles: Iterable[Role | str] = TEST_ROLES,
    subject: str | None = None,
) -> dict[str, str]:
    """An `Authorization` header with a token of the test issuer."""
    roles = list(roles)
    subject = subject or f"{Role(roles[0]).value}@{tenant}"
    return {"Authorization": f"Bearer {issuer_for_tests().issue(tenant, roles, subject)}"}


def with_test_issuer(settings: ServiceSettings) -> ServiceSettings:
    """`settings` checking tokens against the test issuer (unless they name a JWKS)."""
    if settings.auth_jwks:
        return settings
    return settings.model_copy(update={"auth_jwks": str(issuer_for_tests().jwks_path)})


@asynccontextmanager
async def api_client(
    spec: ServiceSpec,
    db: Database,
    settings: ServiceSettings | None = None,
    *,
    tenant: str = TEST_TENANT,
    roles: Iterable[Role | str] = TEST_ROLES,
) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for `spec`'s app on `db`, calling as `roles` of `tenant` (TEST_ROLES
    of the test tenant by default), without the app's lifespan: no Kafka and no relay, so
    what a request publishes stays in the outbox."""
    settings = with_test_issuer(settings or spec.settings_type())
    app = create_app(spec, settings)
    app.state.runtime = SimpleNamespace(
        db=db, settings=settings, uow=lambda: unit_of_work(db, spec.name)
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url=f"http://{spec.name}", headers=bearer(tenant, roles)
    ) as client:
        yield client


# --- envelopes and records --------------------------------------------------------------------


def example(event_type: str, /, *, contract_version: int = 1, **changes: Any) -> Any:
    """The contract's example payload of `event_type` with some fields changed, validated by
    the contract."""
    contract = contract_for(event_type, contract_version)
    if contract is None:
        raise ValueError(f"no contract {event_type} v{contract_version}")
    return contract.payload.model_validate({**contract.example, **changes})


def envelope(
    payload: BaseModel,
    *,
    key: str | None = None,
    tenant: str = "demo",
    source: str = "test",
    time: datetime | None = None,
    event_id: UUID | None = None,
    causation_id: UUID | None = None,
    traceparent: str | None = None,
) -> Envelope:
    """`payload` in a new envelope as a producer writes it: type and version from its
    contract, key by its topic's rule unless given."""
    contract = contract_of_payload(payload)
    return Envelope(
        id=event_id or uuid4(),
        type=contract.type,
        version=contract.version,
        tenant=tenant,
        key=key if key is not None else TOPICS[contract.type].key_of(payload),
        source=source,
        causation_id=causation_id,
        traceparent=traceparent,
        payload=payload.model_dump(mode="json"),
        **({"time": time} if time is not None else {}),
    )


def delivery(payload: BaseModel, **fields: Any) -> Delivery:
    """`payload` as a consumer hands it to a batch handler, in a new envelope (`fields` as
    for `envelope`)."""
    return Delivery(envelope(payload, **fields), payload)


def consumer_record(
    message: Envelope | bytes | None,
    offset: int = 0,
    *,
    topic: str | None = None,
    key: str | bytes | None = None,
    headers: Mapping[str, str] | None = None,
    partition: int = 0,
) -> ConsumerRecord[bytes, bytes]:
    """A Kafka record as the consumer polls it. An envelope gives the topic, the key and
    (unless `headers` are given) its trace context in the headers, as the relay sends it;
    raw bytes (or no value) need `topic`."""
    if isinstance(message, Envelope):
        value: bytes | None = message.to_bytes()
        topic = topic or message.type
        key = message.key if key is None else key
        if headers is None:
            headers = {
                name: text
                for name, text in (
                    ("traceparent", message.traceparent),
                    ("tracestate", message.tracestate),
                )
                if text
            }
    else:
        value = message
    if topic is None:
        raise ValueError("a record of raw bytes needs its topic")
    raw_key = key.encode() if isinstance(key, str) else key
    return ConsumerRecord(
        topic=topic,
        partition=partition,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=raw_key,
        value=value,
        checksum=None,
        serialized_key_size=len(raw_key or b""),
        serialized_value_size=len(value or b""),
        headers=[(name, text.encode()) for name, text in (headers or {}).items()],
    )


def consumer_records(
    messages: Iterable[Envelope | bytes | None], first_offset: int = 0, **fields: Any
) -> list[ConsumerRecord[bytes, bytes]]:
    """One record per message, at consecutive offsets (`fields` as for `consumer_record`)."""
    return [
        consumer_record(message, first_offset + n, **fields) for n, message in enumerate(messages)
    ]


# --- delivering events to a service -----------------------------------------------------------


def service_consumer(
    db: Database,
    service: str,
    subscriptions: Iterable[Subscription],
    *,
    lane: str | None = None,
) -> BatchProcessor:
    """The consumer an instance of `service` runs for `lane` (None: its main consumer), as the
    app factory builds it: its group, that lane's subscriptions, its dead-letter topic."""
    return BatchProcessor(
        service if lane is None else f"{service}.{lane}",
        [s for s in subscriptions if s.lane == lane],
        lambda: unit_of_work(db, service),
        dead_letters=dead_letter_topic(service),
    )


async def deliver(
    db: Database,
    subscriptions: Iterable[Subscription],
    *events: Envelope | BaseModel,
    source: str = "test",
) -> list[Envelope]:
    """Hand events (envelopes, or payloads put in new envelopes) to their subscriptions in one
    unit of work, decoded from their bytes as the consumer does, consecutive events of one
    topic together as one batch. No inbox (the same envelope twice reaches its handler
    twice) and no dead letters (a handler's error is raised); `service_consumer` has both.
    Returns the envelopes."""
    by_topic = {s.event_type: s for s in subscriptions}
    envelopes = [e if isinstance(e, Envelope) else envelope(e) for e in events]
    missing = sorted({e.type for e in envelopes} - set(by_topic))
    if missing:
        raise ValueError(f"no subscription to {', '.join(missing)}")
    decoded = [Delivery(*by_topic[e.type].decode(e.to_bytes())) for e in envelopes]
    async with unit_of_work(db, source) as uow:
        for batch in _runs_of_one_topic(decoded):
            await by_topic[batch[0].envelope.type].deliver(uow, batch)
            await uow.flush_events()
    return envelopes


def _runs_of_one_topic(deliveries: Sequence[Delivery]) -> list[list[Delivery]]:
    runs: list[list[Delivery]] = []
    for item in deliveries:
        if runs and runs[-1][0].envelope.type == item.envelope.type:
            runs[-1].append(item)
        else:
            runs.append([item])
    return runs


# --- a unit of work without a database --------------------------------------------------------


class InMemoryPublisher:
    """A fake publisher for unit tests: keeps what it was given, per topic, in order."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.fail_next: Exception | None = None

    async def publish(self, messages: Sequence[Message]) -> None:
        if self.fail_next is not None:
            error, self.fail_next = self.fail_next, None
            raise error
        self.messages.extend(messages)

    def on_topic(self, topic: str) -> list[Message]:
        return [m for m in self.messages if m.topic == topic]


class InMemoryUnitOfWork(UnitOfWork):
    """A unit of work for unit tests with in-memory fakes of a service's repository: events
    published in it reach `committed` (what the outbox would hold) when it commits, and a
    rollback returns each fake given to it to its state at the start, as a transaction would.
    It has no session: a rule that still needs one fails loudly."""

    def __init__(
        self,
        source: str,
        *fakes: object,
        committed: list[OutgoingMessage] | None = None,
    ) -> None:
        super().__init__(cast(AsyncSession, None), source)
        self.committed: list[OutgoingMessage] = [] if committed is None else committed
        self._fakes = fakes
        self._states = [copy.deepcopy(vars(fake)) for fake in fakes]
        self._flushed: list[OutgoingMessage] = []

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            await self.commit()
        else:
            await self.rollback()

    async def flush_events(self) -> None:
        self._flushed.extend(self._pending)
        self._pending.clear()

    async def commit(self) -> None:
        await self.flush_events()
        self.committed.extend(self._flushed)
        self._flushed.clear()

    async def rollback(self) -> None:
        self._pending.clear()
        self._flushed.clear()
        for fake, state in zip(self._fakes, self._states, strict=True):
            vars(fake).clear()
            vars(fake).update(state)


def committed_events(
    messages: Iterable[OutgoingMessage], topic: str, key: str | None = None
) -> list[Delivery]:
    """The events of `topic` (and `key`) among committed messages, decoded as a consumer
    receives them (the in-memory counterpart of `outbox_events`)."""
    return [
        Delivery(*decode_envelope(m.value))
        for m in messages
        if m.topic == topic and (key is None or m.key == key)
    ]


# --- one port test, two backends ------------------------------------------------------------

Repository = TypeVar("Repository")


class InMemoryBackend(Generic[Repository]):
    """A service's rules on an in-memory fake of its repository port, for a port test that
    runs on both backends: each `transaction` is an InMemoryUnitOfWork over the fake."""

    def __init__(self, source: str, repository: Repository) -> None:
        self.source = source
        self.repository = repository
        self.committed: list[OutgoingMessage] = []

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[tuple[UnitOfWork, Repository]]:
        uow = InMemoryUnitOfWork(self.source, self.repository, committed=self.committed)
        async with uow:
            yield uow, self.repository

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[Repository]:
        yield self.repository

    async def announced(self, topic: str, key: str | None = None) -> list[Any]:
        """The payloads of `topic` (and `key`) committed so far, oldest first."""
        return [e.payload for e in committed_events(self.committed, topic, key)]


class PostgresBackend(Generic[Repository]):
    """A service's rules on its Postgres adapter (`adapter(session)`), each `transaction` a
    unit of work on real PostgreSQL; the counterpart of InMemoryBackend."""

    def __init__(
        self, db: Database, source: str, adapter: Callable[[AsyncSession], Repository]
    ) -> None:
        self.db = db
        self.source = source
        self.adapter = adapter

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[tuple[UnitOfWork, Repository]]:
        async with unit_of_work(self.db, self.source) as uow:
            yield uow, self.adapter(uow.session)

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[Repository]:
        async with self.db.sessions() as session:
            yield self.adapter(session)

    async def announced(self, topic: str, key: str | None = None) -> list[Any]:
        """The payloads of `topic` (and `key`) in the outbox, oldest first."""
        return [e.payload for e in await outbox_events(self.db, topic, key)]
