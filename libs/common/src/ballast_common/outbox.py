"""The transactional outbox every service has in its own schema: events written in the
transaction of the change they announce, and the relay's reads and marks (SQL lives here)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Identity,
    Index,
    LargeBinary,
    String,
    Table,
    func,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession

from ballast_common.bulk import driver_connection
from ballast_common.common_tables import common_metadata

outbox = Table(
    "outbox",
    common_metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("topic", String(200), nullable=False),
    Column("key", String(200), nullable=False),
    Column("value", LargeBinary, nullable=False),
    Column("headers", JSONB, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("published_at", DateTime(timezone=True), nullable=True),
    # The relay only ever reads unpublished rows, in id order.
    Index("ix_outbox_unpublished", "id", postgresql_where=text("published_at IS NULL")),
)


@dataclass(frozen=True)
class OutgoingMessage:
    topic: str  # logical topic, without the deployment's prefix
    key: str
    value: bytes
    headers: dict[str, str]


@dataclass(frozen=True)
class PendingMessage:
    id: int
    topic: str
    key: str
    value: bytes
    headers: dict[str, str]


async def add_to_outbox(session: AsyncSession, messages: Sequence[OutgoingMessage]) -> None:
    # One prepared statement executed for every message (the driver pipelines them): as
    # fast as an `unnest` for small events and twice as fast for a book of record's
    # snapshots of tens of kilobytes, whose arrays `unnest` would copy again.
    if not messages:
        return
    connection = await driver_connection(session)
    await connection.executemany(
        'INSERT INTO "outbox" (topic, key, value, headers) VALUES ($1, $2, $3, $4::jsonb)',
        [(m.topic, m.key, m.value, json.dumps(m.headers, separators=(",", ":"))) for m in messages],
    )


async def take_relay_lock(session: AsyncSession, schema: str) -> bool:
    """One relay per schema at a time keeps per-key order across replicas."""
    row = await session.execute(
        text("SELECT pg_try_advisory_xact_lock(hashtext(:name))"), {"name": f"outbox:{schema}"}
    )
    return bool(row.scalar())


async def pending_messages(session: AsyncSession, limit: int) -> list[PendingMessage]:
    rows = await session.execute(
        select(outbox.c.id, outbox.c.topic, outbox.c.key, outbox.c.value, outbox.c.headers)
        .where(outbox.c.published_at.is_(None))
        .order_by(outbox.c.id)
        .limit(limit)
    )
    return [PendingMessage(*row) for row in rows]


async def mark_published(session: AsyncSession, ids: Sequence[int]) -> None:
    await session.execute(
        update(outbox).where(outbox.c.id.in_(list(ids))).values(published_at=func.now())
    )


async def unpublished_count(session: AsyncSession) -> int:
    row = await session.execute(
        select(func.count()).select_from(outbox).where(outbox.c.published_at.is_(None))
    )
    return int(row.scalar_one())
