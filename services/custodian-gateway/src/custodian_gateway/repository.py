"""All of custodian-gateway's SQL."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, update
from sqlalchemy.dialects.postgresql import insert
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from custodian_gateway.tables import Execution, Order, PollCursor


def _now() -> datetime:
    return datetime.now(UTC)


# --- orders ---------------------------------------------------------------------------------


async def insert_orders(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> list[str]:
    """Insert new orders; a trade (or client order id) already stored is left alone.
    Returns the client order ids actually inserted."""
    if not rows:
        return []
    stmt = (
        insert(Order)
        .values(list(rows))
        .on_conflict_do_nothing()
        .returning(col(Order.client_order_id))
    )
    result = await session.execute(stmt)
    return [r[0] for r in result]


async def claim_new_orders(session: AsyncSession, limit: int) -> list[Order]:
    """Lock up to `limit` unsent orders, oldest first, skipping ones another sender holds."""
    stmt = (
        select(Order)
        .where(Order.status == "new")
        .order_by(col(Order.created_at), col(Order.client_order_id))
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list(await session.exec(stmt))


async def mark_sent(session: AsyncSession, client_order_ids: Sequence[str]) -> int:
    """Mark orders sent (only those still new: an execution may already have moved one on,
    in which case it just gets its send recorded)."""
    if not client_order_ids:
        return 0
    now = _now()
    result = await session.execute(
        update(Order)
        .where(col(Order.client_order_id).in_(list(client_order_ids)))
        .values(
            status=func.coalesce(
                func.nullif(Order.status, "new"),
                "sent",
            ),
            times_sent=col(Order.times_sent) + 1,
            sent_at=func.coalesce(col(Order.sent_at), now),
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def orders_for_update(
    session: AsyncSession, client_order_ids: Iterable[str]
) -> dict[str, Order]:
    ids = sorted(set(client_order_ids))
    if not ids:
        return {}
    stmt = (
        select(Order)
        .where(col(Order.client_order_id).in_(ids))
        .order_by(col(Order.client_order_id))
        .with_for_update()
    )
    return {o.client_order_id: o for o in await session.exec(stmt)}


async def get_order(session: AsyncSession, client_order_id: str) -> Order | None:
    return await session.get(Order, client_order_id)


async def list_orders(
    session: AsyncSession,
    *,
    account_id: str | None,
    status: str | None,
    limit: int,
    offset: int,
) -> list[Order]:
    stmt = select(Order)
    if account_id is not None:
        stmt = stmt.where(Order.account_id == account_id)
    if status is not None:
        stmt = stmt.where(Order.status == status)
    stmt = (
        stmt.order_by(col(Order.created_at), col(Order.client_order_id)).limit(limit).offset(offset)
    )
    return list(await session.exec(stmt))


async def order_counts(session: AsyncSession) -> dict[str, int]:
    rows = await session.exec(select(Order.status, func.count()).group_by(Order.status))
    return {status: int(n) for status, n in rows}


async def orders_sent_more_than_once(session: AsyncSession) -> int:
    stmt = select(func.count()).select_from(Order).where(col(Order.times_sent) > 1)
    return int((await session.exec(stmt)).one())


# --- executions -----------------------------------------------------------------------------


async def known_execution_ids(session: AsyncSession, execution_ids: Iterable[str]) -> set[str]:
    ids = list(set(execution_ids))
    if not ids:
        return set()
    stmt = select(Execution.execution_id).where(col(Execution.execution_id).in_(ids))
    return set(await session.exec(stmt))


async def insert_executions(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> int:
    if not rows:
        return 0
    stmt = (
        insert(Execution)
        .values(list(rows))
        .on_conflict_do_nothing()
        .returning(col(Execution.execution_id))
    )
    return len((await session.execute(stmt)).all())


async def executions_of(session: AsyncSession, client_order_id: str) -> list[Execution]:
    stmt = (
        select(Execution)
        .where(Execution.client_order_id == client_order_id)
        .order_by(col(Execution.seq))
    )
    return list(await session.exec(stmt))


async def execution_counts(session: AsyncSession) -> dict[tuple[str, str | None], int]:
    stmt = select(Execution.outcome, Execution.kind, func.count()).group_by(
        col(Execution.outcome), col(Execution.kind)
    )
    return {(outcome, kind): int(n) for outcome, kind, n in await session.exec(stmt)}


# --- poll cursor ----------------------------------------------------------------------------


async def lock_cursor(session: AsyncSession, name: str) -> PollCursor | None:
    """The cursor row, locked for this transaction; None if another poller holds it."""
    await session.execute(
        insert(PollCursor).values(name=name, last_seq=0, updated_at=_now()).on_conflict_do_nothing()
    )
    stmt = select(PollCursor).where(PollCursor.name == name).with_for_update(skip_locked=True)
    return (await session.exec(stmt)).first()


async def get_cursor(session: AsyncSession, name: str) -> PollCursor | None:
    return await session.get(PollCursor, name)
