"""The SQL of cash requests (table `cash_requests`): one statement per batch of requests."""

import uuid
from collections.abc import Mapping, Sequence
from datetime import date
from decimal import Decimal
from typing import Any, NamedTuple

from ballast_common.bulk import insert_rows
from sqlalchemy import Table, text
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from rebalance_svc.tables import CashRequest

CASH_REQUESTS: Table = CashRequest.__table__  # type: ignore[attr-defined]
IN_PROGRESS = ("started", "proposed")  # an account has at most one of these at a time


class AccountFacts(NamedTuple):
    """What a cash request is checked against: the account's value (cash plus its priced
    holdings; None: no holdings reconciled yet), its sleeves, and whether it is busy (a cash
    request of it in progress, or trades proposed to it not settled yet)."""

    value: Decimal | None
    sleeves: list[str]
    busy: bool


async def account_facts(
    session: AsyncSession, tenant: str, account_ids: Sequence[str]
) -> dict[str, AccountFacts]:
    """Facts of those of `account_ids` that are `tenant`'s accounts, in one statement."""
    rows = await session.execute(
        text(
            "WITH asked AS (SELECT DISTINCT unnest(CAST(:ids AS text[])) AS account_id), "
            "invested AS (SELECT h.account_id, sum(h.quantity * s.price) AS value "
            "  FROM asked JOIN holdings h ON h.account_id = asked.account_id "
            "  JOIN securities s ON s.symbol = h.symbol GROUP BY h.account_id), "
            "sleeves_of AS (SELECT sl.account_id, array_agg(sl.sleeve_id ORDER BY sl.position) "
            "  AS ids FROM asked JOIN sleeves sl ON sl.account_id = asked.account_id "
            "  GROUP BY sl.account_id), "
            "busy AS (SELECT r.account_id FROM asked "
            "  JOIN cash_requests r ON r.account_id = asked.account_id "
            "  WHERE r.status IN ('started', 'proposed') "
            "  UNION SELECT t.account_id FROM asked "
            "  JOIN trades_in_flight t ON t.account_id = asked.account_id) "
            "SELECT a.account_id, c.amount + coalesce(i.value, 0), "
            "coalesce(sl.ids, CAST('{}' AS text[])), b.account_id IS NOT NULL "
            "FROM asked JOIN accounts a ON a.account_id = asked.account_id "
            "LEFT JOIN cash c ON c.account_id = a.account_id "
            "LEFT JOIN invested i ON i.account_id = a.account_id "
            "LEFT JOIN sleeves_of sl ON sl.account_id = a.account_id "
            "LEFT JOIN busy b ON b.account_id = a.account_id "
            "WHERE a.tenant = :tenant"
        ),
        {"tenant": tenant, "ids": list(account_ids)},
    )
    return {
        account_id: AccountFacts(value, list(sleeves), busy)
        for account_id, value, sleeves, busy in rows
    }


async def add_requests(session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert the requests in one statement."""
    await insert_rows(session, CASH_REQUESTS, rows)


async def claim_due(session: AsyncSession, today: date) -> list[tuple[uuid.UUID, str, str]]:
    """Mark `started` the waiting requests due by `today` (the oldest of an account, and only
    for an account not busy: no cash request in progress, no trade in flight); returns
    (request, tenant, account) of each. One
    sweeper at a time (a transaction-level advisory lock; another sweeping now: nothing), and
    rows being changed by others are skipped, not waited for."""
    locked = await session.scalar(text("SELECT pg_try_advisory_xact_lock(hashtext('cash-sweep'))"))
    if not locked:
        return []
    rows = await session.execute(
        text(
            "WITH ready AS (SELECT r.request_id, r.account_id, r.due_on, r.requested_at "
            "  FROM cash_requests r WHERE r.status = 'waiting' AND r.due_on <= :today "
            "  AND r.account_id NOT IN (SELECT b.account_id FROM cash_requests b "
            "    WHERE b.status IN ('started', 'proposed') "
            "    UNION SELECT t.account_id FROM trades_in_flight t) "
            "  FOR UPDATE OF r SKIP LOCKED), "
            "due AS (SELECT DISTINCT ON (account_id) request_id FROM ready "
            "  ORDER BY account_id, due_on, requested_at) "
            "UPDATE cash_requests c SET status = 'started', updated_at = clock_timestamp() "
            "FROM due WHERE c.request_id = due.request_id AND c.status = 'waiting' "
            "RETURNING c.request_id, c.tenant, c.account_id"
        ),
        {"today": today},
    )
    return [(r, t, a) for r, t, a in rows]


async def set_run(session: AsyncSession, request_ids: Sequence[uuid.UUID], run_id: str) -> None:
    """The run the requests started in."""
    await session.execute(
        text(
            "UPDATE cash_requests SET run_id = CAST(:run AS uuid) "
            "WHERE request_id = ANY(CAST(:ids AS uuid[]))"
        ),
        {"run": run_id, "ids": list(request_ids)},
    )


class CashAsk(NamedTuple):
    kind: str  # withdrawal, deposit
    amount: Decimal
    sleeve_id: str | None


async def asks_of_run(
    session: AsyncSession, run_id: str, account_ids: Sequence[str]
) -> dict[str, CashAsk]:
    """What each of these accounts asked in the run (its started request)."""
    rows = await session.execute(
        text(
            "SELECT account_id, kind, amount, sleeve_id FROM cash_requests "
            "WHERE run_id = CAST(:run AS uuid) AND account_id = ANY(CAST(:ids AS text[])) "
            "AND status = 'started'"
        ),
        {"run": run_id, "ids": list(account_ids)},
    )
    return {a: CashAsk(k, amount, sleeve) for a, k, amount, sleeve in rows}


class Outcome(NamedTuple):
    account_id: str
    status: str  # proposed, done, failed
    proposal_id: str | None
    reason: str | None


async def record_outcomes(session: AsyncSession, run_id: str, outcomes: Sequence[Outcome]) -> None:
    """Each account's outcome in the run, on its started request, in one statement."""
    if not outcomes:
        return
    await session.execute(
        text(
            "UPDATE cash_requests c SET status = o.status, proposal_id = o.proposal_id, "
            "reason = o.reason, updated_at = clock_timestamp() "
            "FROM unnest(CAST(:accounts AS text[]), CAST(:statuses AS text[]), "
            "  CAST(:proposals AS uuid[]), CAST(:reasons AS text[])) "
            "  AS o(account_id, status, proposal_id, reason) "
            "WHERE c.run_id = CAST(:run AS uuid) AND c.account_id = o.account_id "
            "AND c.status = 'started'"
        ),
        {
            "run": run_id,
            "accounts": [o.account_id for o in outcomes],
            "statuses": [o.status for o in outcomes],
            "proposals": [o.proposal_id for o in outcomes],
            "reasons": [o.reason for o in outcomes],
        },
    )


async def fail_started(
    session: AsyncSession, run_id: str, account_ids: Sequence[str], reason: str
) -> None:
    """The started requests of these accounts in the run failed, for `reason`."""
    await session.execute(
        text(
            "UPDATE cash_requests SET status = 'failed', reason = :reason, "
            "updated_at = clock_timestamp() WHERE run_id = CAST(:run AS uuid) "
            "AND account_id = ANY(CAST(:ids AS text[])) AND status = 'started'"
        ),
        {"run": run_id, "ids": list(account_ids), "reason": reason},
    )


async def fail_proposed(session: AsyncSession, failures: Mapping[uuid.UUID, str]) -> None:
    """Proposed requests whose proposal will not be traded (proposal -> why) failed."""
    if not failures:
        return
    await session.execute(
        text(
            "UPDATE cash_requests c SET status = 'failed', reason = f.reason, "
            "updated_at = clock_timestamp() "
            "FROM unnest(CAST(:proposals AS uuid[]), CAST(:reasons AS text[])) "
            "  AS f(proposal_id, reason) "
            "WHERE c.proposal_id = f.proposal_id AND c.status = 'proposed'"
        ),
        {"proposals": list(failures), "reasons": list(failures.values())},
    )


async def finish_settled(session: AsyncSession, account_ids: Sequence[str]) -> None:
    """Proposed requests of these accounts whose proposal has no trade in flight any more
    (all filled and in the book of record) are done."""
    await session.execute(
        text(
            "UPDATE cash_requests c SET status = 'done', updated_at = clock_timestamp() "
            "WHERE c.account_id = ANY(CAST(:ids AS text[])) AND c.status = 'proposed' "
            "AND NOT EXISTS (SELECT 1 FROM trades_in_flight t "
            "  WHERE t.proposal_id = c.proposal_id)"
        ),
        {"ids": list(dict.fromkeys(account_ids))},
    )


async def list_requests(
    session: AsyncSession,
    tenant: str,
    *,
    account_id: str | None,
    status: str | None,
    run_id: uuid.UUID | None,
    limit: int,
    offset: int,
) -> list[CashRequest]:
    """The tenant's requests, newest first, filtered by account, status and run."""
    stmt = select(CashRequest).where(col(CashRequest.tenant) == tenant)
    if account_id is not None:
        stmt = stmt.where(col(CashRequest.account_id) == account_id)
    if status is not None:
        stmt = stmt.where(col(CashRequest.status) == status)
    if run_id is not None:
        stmt = stmt.where(col(CashRequest.run_id) == run_id)
    stmt = stmt.order_by(col(CashRequest.requested_at).desc(), col(CashRequest.request_id))
    return list(await session.exec(stmt.limit(limit).offset(offset)))


async def get_request(
    session: AsyncSession, tenant: str, request_id: uuid.UUID
) -> CashRequest | None:
    """The request, if it is the tenant's."""
    row = await session.get(CashRequest, request_id)
    return row if row is not None and row.tenant == tenant else None
