"""All of custodian-gateway's SQL. What the REST routes read is one tenant's (`tenant`):
allocations and block orders carry their tenant (a block never mixes tenants); executions
are the tenant's through their block order."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Row, func, text, update
from sqlalchemy import select as select_columns
from sqlalchemy.dialects.postgresql import insert
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from custodian_gateway.tables import Allocation, Execution, Order, PollCursor


def _now() -> datetime:
    return datetime.now(UTC)


# --- allocations (approved trades) ----------------------------------------------------------


@dataclass
class NewAllocations:
    """Approved trades to store, column by column (one array per column: one statement)."""

    trade_ids: list[uuid.UUID]
    proposal_ids: list[uuid.UUID]
    account_ids: list[str]
    tenants: list[str]
    symbols: list[str]
    sides: list[str]
    quantities: list[Decimal]
    reference_prices: list[Decimal]
    lot_ids: list[list[str]]
    sleeve_ids: list[str | None]
    traceparents: list[str | None]
    tracestates: list[str | None]
    approval_event_ids: list[uuid.UUID]


_INSERT_ALLOCATIONS = text(
    """
    INSERT INTO allocations (
        trade_id, proposal_id, account_id, tenant, custodian, symbol, side, quantity,
        reference_price, lot_ids, sleeve_id, status, filled_quantity, traceparent, tracestate,
        approval_event_id, created_at, updated_at)
    SELECT t.trade_id, t.proposal_id, t.account_id, t.tenant, :custodian, t.symbol, t.side,
        t.quantity, t.reference_price,
        ARRAY(SELECT jsonb_array_elements_text(t.lot_ids::jsonb))::varchar[],
        t.sleeve_id, 'pending', 0, t.traceparent, t.tracestate, t.approval_event_id, now(),
        now()
    FROM unnest(
        CAST(:trade_ids AS uuid[]), CAST(:proposal_ids AS uuid[]), CAST(:account_ids AS text[]),
        CAST(:tenants AS text[]), CAST(:symbols AS text[]), CAST(:sides AS text[]),
        CAST(:quantities AS numeric[]), CAST(:reference_prices AS numeric[]),
        CAST(:lot_ids AS text[]), CAST(:sleeve_ids AS text[]), CAST(:traceparents AS text[]),
        CAST(:tracestates AS text[]), CAST(:approval_event_ids AS uuid[])
    ) AS t(trade_id, proposal_id, account_id, tenant, symbol, side, quantity, reference_price,
           lot_ids, sleeve_id, traceparent, tracestate, approval_event_id)
    ON CONFLICT (trade_id) DO NOTHING
    RETURNING trade_id
    """
)


async def insert_allocations(
    session: AsyncSession, custodian: str, rows: NewAllocations
) -> list[uuid.UUID]:
    """Insert approved trades as pending allocations, all in one statement; a trade already
    stored is left alone. Returns the trade ids actually inserted."""
    if not rows.trade_ids:
        return []
    result = await session.execute(
        _INSERT_ALLOCATIONS,
        {
            "custodian": custodian,
            "trade_ids": rows.trade_ids,
            "proposal_ids": rows.proposal_ids,
            "account_ids": rows.account_ids,
            "tenants": rows.tenants,
            "symbols": rows.symbols,
            "sides": rows.sides,
            "quantities": rows.quantities,
            "reference_prices": rows.reference_prices,
            "lot_ids": [json.dumps(lots) for lots in rows.lot_ids],
            "sleeve_ids": rows.sleeve_ids,
            "traceparents": rows.traceparents,
            "tracestates": rows.tracestates,
            "approval_event_ids": rows.approval_event_ids,
        },
    )
    return [r[0] for r in result]


async def pending_ages_s(session: AsyncSession, custodian: str) -> tuple[float, float] | None:
    """Seconds since the oldest and since the newest allocation still waiting for a block
    was stored (None: none is waiting)."""
    result = await session.execute(
        text(
            "SELECT extract(epoch FROM clock_timestamp() - min(created_at)), "
            "extract(epoch FROM clock_timestamp() - max(created_at)) FROM allocations "
            "WHERE client_order_id IS NULL AND custodian = :custodian"
        ),
        {"custodian": custodian},
    )
    oldest, newest = result.one()
    return None if oldest is None else (float(oldest), float(newest))


@dataclass(frozen=True)
class NewBlock:
    client_order_id: str
    tenant: str
    symbol: str
    side: str
    quantity: Decimal
    allocation_count: int


# Claims pending allocations (skipping those another gateway holds), makes one block per
# firm, security, side and share unit, persists it as a new order under the block account
# and links its allocations, in one statement. Id: BLK- and the block's smallest trade id.
_BLOCK_PENDING = text(
    """
    WITH claimed AS (
        SELECT trade_id, tenant, symbol, side, quantity, reference_price,
               quantity = trunc(quantity) AS whole_shares, traceparent, tracestate, created_at
        FROM allocations
        WHERE client_order_id IS NULL AND custodian = :custodian
        ORDER BY created_at, trade_id
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
    ), keyed AS (
        -- each allocation with its block's id (a window, so the UPDATE below joins on the
        -- primary key alone: joining the blocks on four columns was a nested loop)
        SELECT c.*, 'BLK-' || replace(min(trade_id::text) OVER (
                   PARTITION BY tenant, symbol, side, whole_shares), '-', '') AS client_order_id
        FROM claimed c
    ), blocks AS (
        SELECT client_order_id, tenant, symbol, side, whole_shares,
               sum(quantity) AS quantity,
               round(sum(quantity * reference_price) / sum(quantity), 8) AS reference_price,
               count(*) AS allocation_count,
               (array_agg(traceparent ORDER BY created_at, trade_id))[1] AS traceparent,
               (array_agg(tracestate ORDER BY created_at, trade_id))[1] AS tracestate
        FROM keyed
        GROUP BY client_order_id, tenant, symbol, side, whole_shares
    ), inserted AS (
        INSERT INTO orders (
            client_order_id, custodian, tenant, account_id, symbol, side, whole_shares,
            quantity, reference_price, allocation_count, status, filled_quantity,
            filled_notional, times_sent, traceparent, tracestate, created_at, updated_at)
        SELECT b.client_order_id, :custodian, b.tenant, :block_account, b.symbol, b.side,
               b.whole_shares, b.quantity, b.reference_price, b.allocation_count, 'new', 0, 0,
               0, b.traceparent, b.tracestate, now(), now()
        FROM blocks b
        RETURNING client_order_id
    ), linked AS (
        UPDATE allocations a
        SET status = 'blocked', client_order_id = k.client_order_id, updated_at = now()
        FROM keyed k
        WHERE a.trade_id = k.trade_id
    )
    SELECT b.client_order_id, b.tenant, b.symbol, b.side, b.quantity, b.allocation_count
    FROM blocks b JOIN inserted i USING (client_order_id)
    ORDER BY b.client_order_id
    """
)


async def block_pending_allocations(
    session: AsyncSession, custodian: str, block_account: str, limit: int
) -> list[NewBlock]:
    """Gather up to `limit` pending allocations (oldest first) into new block orders."""
    result = await session.execute(
        _BLOCK_PENDING,
        {"custodian": custodian, "block_account": block_account, "limit": limit},
    )
    return [NewBlock(*row) for row in result]


async def allocations_to_share(
    session: AsyncSession, client_order_ids: Sequence[str]
) -> list[Row[Any]]:
    """The still-open allocations of these blocks, by block and trade id (plain rows)."""
    if not client_order_ids:
        return []
    a = Allocation
    columns = [
        a.client_order_id,
        a.trade_id,
        a.proposal_id,
        a.account_id,
        a.tenant,
        a.symbol,
        a.side,
        a.quantity,
        a.lot_ids,
        a.sleeve_id,
        a.traceparent,
        a.tracestate,
        a.approval_event_id,
    ]
    stmt = (
        select_columns(*(col(c) for c in columns))
        .where(col(a.client_order_id).in_(list(client_order_ids)), col(a.status) == "blocked")
        .order_by(col(a.client_order_id), col(a.trade_id))
    )
    return list((await session.execute(stmt)).all())


# The shares, and each block with a filled share queued for the booking sender.
_RECORD_SHARES = text(
    """
    WITH shared AS (
        UPDATE allocations a
        SET status = v.status, filled_quantity = v.filled_quantity,
            average_price = v.average_price, reject_reason = v.reject_reason,
            updated_at = now(),
            booking_status = CASE WHEN v.filled_quantity > 0 THEN 'pending' END
        FROM unnest(
            CAST(:trade_ids AS uuid[]), CAST(:statuses AS text[]), CAST(:filled AS numeric[]),
            CAST(:prices AS numeric[]), CAST(:reasons AS text[])
        ) AS v(trade_id, status, filled_quantity, average_price, reject_reason)
        WHERE a.trade_id = v.trade_id
        RETURNING a.client_order_id, a.custodian, a.booking_status
    ), due AS (
        INSERT INTO bookings_due (client_order_id, custodian, due_at)
        SELECT DISTINCT client_order_id, custodian, now() FROM shared
        WHERE booking_status = 'pending'
        ON CONFLICT (client_order_id) DO NOTHING
    )
    SELECT count(*) FROM shared
    """
)


@dataclass
class AllocationShares:
    """What each allocation of done blocks got, column by column."""

    trade_ids: list[uuid.UUID]
    statuses: list[str]
    filled: list[Decimal]
    prices: list[Decimal | None]
    reasons: list[str | None]


async def record_shares(session: AsyncSession, shares: AllocationShares) -> int:
    """Store the allocations' shares of their done blocks, in one statement."""
    if not shares.trade_ids:
        return 0
    result = await session.execute(
        _RECORD_SHARES,
        {
            "trade_ids": shares.trade_ids,
            "statuses": shares.statuses,
            "filled": shares.filled,
            "prices": shares.prices,
            "reasons": shares.reasons,
        },
    )
    return int(result.scalar_one())


# The shares still to be told to the custodian, from the oldest due blocks (a block another
# sender holds is skipped, so replicas never send the same shares). The queue holds blocks,
# not shares: a block's rows are few and its shares are read by the block's index.
_CLAIM_BOOKINGS = text(
    """
    WITH due AS (
        SELECT client_order_id FROM bookings_due
        WHERE custodian = :custodian
        ORDER BY due_at
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
    )
    SELECT a.trade_id, a.client_order_id, a.account_id, a.symbol, a.side, a.filled_quantity,
           a.average_price, a.lot_ids, coalesce(o.last_fill_at, o.updated_at) AS executed_at
    FROM due JOIN allocations a USING (client_order_id) JOIN orders o USING (client_order_id)
    WHERE a.booking_status = 'pending'
    ORDER BY a.client_order_id, a.trade_id
    LIMIT :limit
    """
)


async def claim_pending_bookings(
    session: AsyncSession, custodian: str, limit: int
) -> list[Row[Any]]:
    """Lock the oldest due blocks and read up to `limit` of their shares still to send."""
    result = await session.execute(_CLAIM_BOOKINGS, {"custodian": custodian, "limit": limit})
    return list(result.all())


# The answers; a block none of whose shares waits any longer leaves the queue.
_RECORD_BOOKINGS = text(
    """
    WITH answered AS (
        UPDATE allocations a
        SET booking_status = v.status, booking_reason = v.reason, booked_at = now(),
            updated_at = now()
        FROM unnest(
            CAST(:trade_ids AS uuid[]), CAST(:statuses AS text[]), CAST(:reasons AS text[])
        ) AS v(trade_id, status, reason)
        WHERE a.trade_id = v.trade_id
        RETURNING a.trade_id
    ), settled AS (
        DELETE FROM bookings_due d
        WHERE d.client_order_id = ANY(CAST(:blocks AS text[]))
          AND NOT EXISTS (
              SELECT 1 FROM allocations a
              WHERE a.client_order_id = d.client_order_id AND a.booking_status = 'pending'
                AND a.trade_id <> ALL(CAST(:trade_ids AS uuid[])))
    )
    SELECT count(*) FROM answered
    """
)


async def record_bookings(
    session: AsyncSession,
    blocks: Sequence[str],
    trade_ids: Sequence[uuid.UUID],
    statuses: Sequence[str],
    reasons: Sequence[str | None],
) -> int:
    """Store what the custodian answered for each booking (booked or refused) and take the
    claimed blocks with nothing left to send off the queue, in one statement."""
    if not blocks:
        return 0
    result = await session.execute(
        _RECORD_BOOKINGS,
        {
            "blocks": sorted(set(blocks)),
            "trade_ids": list(trade_ids),
            "statuses": list(statuses),
            "reasons": list(reasons),
        },
    )
    return int(result.scalar_one())


async def booking_counts(session: AsyncSession, tenant: str) -> dict[str, int]:
    """The tenant's allocations by booking status (those with one)."""
    rows = await session.exec(
        select(Allocation.booking_status, func.count())
        .where(Allocation.tenant == tenant, col(Allocation.booking_status).is_not(None))
        .group_by(col(Allocation.booking_status))
    )
    return {str(status): int(n) for status, n in rows}


async def get_allocation(
    session: AsyncSession, tenant: str, trade_id: uuid.UUID
) -> Allocation | None:
    """The tenant's allocation of an approved trade."""
    stmt = select(Allocation).where(Allocation.trade_id == trade_id, Allocation.tenant == tenant)
    return (await session.exec(stmt)).first()


async def list_allocations(
    session: AsyncSession,
    tenant: str,
    *,
    account_id: str | None = None,
    status: str | None = None,
    client_order_id: str | None = None,
    limit: int,
    offset: int,
) -> list[Allocation]:
    """A page of the tenant's allocations, oldest first."""
    stmt = select(Allocation).where(Allocation.tenant == tenant)
    if account_id is not None:
        stmt = stmt.where(Allocation.account_id == account_id)
    if status is not None:
        stmt = stmt.where(Allocation.status == status)
    if client_order_id is not None:
        stmt = stmt.where(Allocation.client_order_id == client_order_id)
    stmt = (
        stmt.order_by(col(Allocation.created_at), col(Allocation.trade_id))
        .limit(limit)
        .offset(offset)
    )
    return list(await session.exec(stmt))


async def allocation_counts(session: AsyncSession, tenant: str) -> dict[str, int]:
    """The tenant's allocations by status."""
    rows = await session.exec(
        select(Allocation.status, func.count())
        .where(Allocation.tenant == tenant)
        .group_by(Allocation.status)
    )
    return {status: int(n) for status, n in rows}


# --- block orders ---------------------------------------------------------------------------


async def claim_new_orders(session: AsyncSession, custodian: str, limit: int) -> list[Order]:
    """Lock up to `limit` unsent orders, oldest first, skipping ones another sender holds."""
    stmt = (
        select(Order)
        .where(Order.status == "new", Order.custodian == custodian)
        .order_by(col(Order.created_at), col(Order.client_order_id))
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list(await session.exec(stmt))


async def orders_awaiting_executions(
    session: AsyncSession, custodian: str, after: str, limit: int
) -> list[Order]:
    """Lock up to `limit` orders of `custodian` that wait at it (sent or partially filled)
    with ids after `after`, in id order, skipping ones another worker holds."""
    stmt = (
        select(Order)
        .where(
            Order.custodian == custodian,
            col(Order.status).in_(("sent", "partially_filled")),
            col(Order.client_order_id) > after,
        )
        .order_by(col(Order.client_order_id))
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
    session: AsyncSession, custodian: str, client_order_ids: Iterable[str]
) -> dict[str, Order]:
    ids = sorted(set(client_order_ids))
    if not ids:
        return {}
    stmt = (
        select(Order)
        .where(col(Order.client_order_id).in_(ids), Order.custodian == custodian)
        .order_by(col(Order.client_order_id))
        .with_for_update()
    )
    return {o.client_order_id: o for o in await session.exec(stmt)}


async def get_order(session: AsyncSession, tenant: str, client_order_id: str) -> Order | None:
    """The tenant's block order."""
    stmt = select(Order).where(Order.client_order_id == client_order_id, Order.tenant == tenant)
    return (await session.exec(stmt)).first()


async def list_orders(
    session: AsyncSession,
    tenant: str,
    *,
    status: str | None = None,
    symbol: str | None = None,
    limit: int,
    offset: int,
) -> list[Order]:
    """A page of the tenant's block orders, oldest first."""
    stmt = select(Order).where(Order.tenant == tenant)
    if status is not None:
        stmt = stmt.where(Order.status == status)
    if symbol is not None:
        stmt = stmt.where(Order.symbol == symbol)
    stmt = (
        stmt.order_by(col(Order.created_at), col(Order.client_order_id)).limit(limit).offset(offset)
    )
    return list(await session.exec(stmt))


async def order_counts(session: AsyncSession, tenant: str) -> dict[str, int]:
    """The tenant's block orders by status."""
    rows = await session.exec(
        select(Order.status, func.count()).where(Order.tenant == tenant).group_by(Order.status)
    )
    return {status: int(n) for status, n in rows}


async def orders_sent_more_than_once(session: AsyncSession, tenant: str) -> int:
    stmt = (
        select(func.count())
        .select_from(Order)
        .where(Order.tenant == tenant, col(Order.times_sent) > 1)
    )
    return int((await session.exec(stmt)).one())


async def done_orders_unallocated(session: AsyncSession, tenant: str) -> int:
    """The tenant's done (filled or rejected) orders whose fills were not shared among
    allocations."""
    stmt = (
        select(func.count())
        .select_from(Order)
        .where(
            Order.tenant == tenant,
            col(Order.status).in_(["filled", "rejected"]),
            col(Order.allocated_at).is_(None),
        )
    )
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


def _of_tenants_block(tenant: str) -> Any:
    """Executions of one of the tenant's block orders."""
    return (
        select(Order.client_order_id)
        .where(col(Order.client_order_id) == col(Execution.client_order_id), Order.tenant == tenant)
        .exists()
    )


async def executions_of(
    session: AsyncSession, tenant: str, client_order_id: str
) -> list[Execution]:
    """The executions of the tenant's block order, in sequence."""
    stmt = (
        select(Execution)
        .where(Execution.client_order_id == client_order_id, _of_tenants_block(tenant))
        .order_by(col(Execution.seq))
    )
    return list(await session.exec(stmt))


async def execution_counts(session: AsyncSession, tenant: str) -> dict[tuple[str, str | None], int]:
    """Executions of the tenant's block orders by outcome and kind."""
    stmt = (
        select(Execution.outcome, Execution.kind, func.count())
        .where(_of_tenants_block(tenant))
        .group_by(col(Execution.outcome), col(Execution.kind))
    )
    return {(outcome, kind): int(n) for outcome, kind, n in await session.exec(stmt)}


async def orphan_executions(session: AsyncSession) -> int:
    """Executions the custodian reported for no known block order (of no tenant)."""
    stmt = select(func.count()).select_from(Execution).where(Execution.outcome == "orphan")
    return int((await session.exec(stmt)).one())


async def refused_overfills(session: AsyncSession, tenant: str) -> int:
    """Executions of the tenant's block orders refused because they would have filled more
    than their order asked."""
    stmt = (
        select(func.count())
        .select_from(Execution)
        .where(
            Execution.outcome == "invalid",
            col(Execution.problem).startswith("overfill"),
            _of_tenants_block(tenant),
        )
    )
    return int((await session.exec(stmt)).one())


# --- poll cursor ----------------------------------------------------------------------------


async def has_open_orders(session: AsyncSession, custodian: str) -> bool:
    """Whether an order of `custodian` was sent and still waits for executions."""
    stmt = select_columns(
        select(Order.client_order_id)
        .where(col(Order.status).in_(("sent", "partially_filled")), Order.custodian == custodian)
        .exists()
    )
    return bool((await session.execute(stmt)).scalar())


async def lock_cursor(session: AsyncSession, name: str) -> PollCursor | None:
    """The cursor row, locked for this transaction; None if another poller holds it."""
    await session.execute(
        insert(PollCursor).values(name=name, last_seq=0, updated_at=_now()).on_conflict_do_nothing()
    )
    stmt = select(PollCursor).where(PollCursor.name == name).with_for_update(skip_locked=True)
    return (await session.exec(stmt)).first()


async def get_cursor(session: AsyncSession, name: str) -> PollCursor | None:
    return await session.get(PollCursor, name)
