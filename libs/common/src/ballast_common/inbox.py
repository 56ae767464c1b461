"""The inbox every service has in its own schema: the events each consumer group processed,
recorded in the transaction of their effect, so a redelivery has none (SQL lives here)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import Column, DateTime, String, Table, func
from sqlalchemy.dialects.postgresql import UUID, insert
from sqlalchemy.ext.asyncio import AsyncSession

from ballast_common.bulk import insert_columns
from ballast_common.common_tables import common_metadata

inbox = Table(
    "inbox",
    common_metadata,
    Column("consumer", String(200), primary_key=True),
    Column("event_id", UUID(as_uuid=True), primary_key=True),
    Column("processed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)


async def record_first_delivery(session: AsyncSession, consumer: str, event_id: uuid.UUID) -> bool:
    """Insert the event into the inbox; False if this consumer already processed it."""
    result = await session.execute(
        insert(inbox)
        .values(consumer=consumer, event_id=event_id)
        .on_conflict_do_nothing()
        .returning(inbox.c.event_id)
    )
    return result.first() is not None


async def record_first_deliveries(
    session: AsyncSession, consumer: str, event_ids: Sequence[uuid.UUID]
) -> set[uuid.UUID]:
    """Insert the events into the inbox at once; returns the ids not processed before."""
    unique = list(dict.fromkeys(event_ids))
    if not unique:
        return set()
    inserted = await insert_columns(
        session,
        inbox,
        {"consumer": [consumer] * len(unique), "event_id": unique},
        on_conflict="DO NOTHING",
        returning="event_id",
    )
    return {row[0] for row in inserted}
