"""The SQL of opening accounts as a workflow: steps added, worked out and checked for a whole
set of accounts in one statement each (a set is a SELECT of account ids), and the task list
one page per statement."""

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ARRAY,
    Row,
    String,
    Text,
    and_,
    case,
    cast,
    column,
    exists,
    func,
    literal,
    or_,
    text,
    update,
)
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from account_svc.account_opening_schemas import AUTOMATIC_STEPS, STEPS
from account_svc.tables import Account, AccountOpeningStep

OPENING, ACTIVE = "opening", "active"
PENDING, DONE, EXCEPTION = "pending", "done", "exception"
_ACCOUNTS = Account.__table__  # type: ignore[attr-defined]
_STEPS = AccountOpeningStep.__table__  # type: ignore[attr-defined]


def account_ids(ids: Sequence[str]) -> Any:
    """These account ids as a SELECT (for the set-based statements): an unnest of one array
    parameter, joined by the statements to the accounts' primary key (a SELECT of accounts
    WHERE account_id = ANY(...) here got planned as a scan per opening account)."""
    return select(func.unnest(literal(list(ids), ARRAY(String))).label("account_id"))


async def add_steps(
    session: AsyncSession, tenant: str, ids: Sequence[str], actor: str, now: datetime
) -> None:
    """Every step of every account given, pending (one INSERT ... SELECT)."""
    await session.execute(
        text(
            "INSERT INTO account_opening_steps "
            "(account_id, step, tenant, status, note, updated_by, updated_at) "
            "SELECT a.id, s.step, :tenant, :pending, NULL, :actor, :now "
            "FROM unnest(CAST(:ids AS text[])) a(id) CROSS JOIN unnest(CAST(:steps AS text[])) "
            "s(step)"
        ),
        {
            "tenant": tenant,
            "pending": PENDING,
            "actor": actor,
            "now": now,
            "ids": list(ids),
            "steps": list(STEPS),
        },
    )


async def settle_automatic_steps(
    session: AsyncSession, accounts: Any, actor: str, now: datetime
) -> int:
    """Work out the automatic step of the opening accounts among `accounts` from the accounts
    as they are (investment_profile: done when a model or a strategy is set, else pending),
    changing only the steps that move (one UPDATE ... FROM); returns how many moved."""
    assert AUTOMATIC_STEPS == ("investment_profile",)  # the CASEs below are its rule
    a, s = _ACCOUNTS, _STEPS
    has_model = a.c.model_id.is_not(None)
    has_strategy = func.jsonb_typeof(a.c.strategy) == "object"
    sleeves = cast(func.jsonb_array_length(a.c.strategy["sleeves"]), Text)
    worked_out = (
        select(
            a.c.account_id,
            case((or_(has_model, has_strategy), DONE), else_=PENDING).label("status"),
            case(
                (has_model, "follows model " + a.c.model_id),
                (has_strategy, "follows a strategy of " + sleeves + " sleeve(s)"),
                else_="no model or strategy set",
            ).label("note"),
        )
        .where(a.c.status == OPENING, a.c.account_id.in_(accounts))
        .subquery()
    )
    stmt = (
        update(s)
        .where(
            s.c.account_id == worked_out.c.account_id,
            s.c.step == "investment_profile",
            or_(s.c.status != worked_out.c.status, s.c.note.is_distinct_from(worked_out.c.note)),
        )
        .values(
            status=worked_out.c.status, note=worked_out.c.note, updated_by=actor, updated_at=now
        )
    )
    result = await session.execute(stmt)
    return int(result.rowcount)  # type: ignore[attr-defined]


async def open_accounts_with_every_step_done(
    session: AsyncSession, accounts: Any, now: datetime
) -> list[str]:
    """Make active the opening accounts among `accounts` whose steps are all done (one
    UPDATE; accounts already in the session see their new status); returns their ids."""
    a, s = _ACCOUNTS, _STEPS
    not_done = exists().where(s.c.account_id == a.c.account_id, s.c.status != DONE)
    has_steps = exists().where(s.c.account_id == a.c.account_id)
    stmt = (
        update(Account)
        .where(and_(a.c.account_id.in_(accounts), a.c.status == OPENING, has_steps, ~not_done))
        .values(status=ACTIVE, updated_at=now)
        .returning(a.c.account_id)
        .execution_options(synchronize_session="fetch")
    )
    return sorted((await session.execute(stmt)).scalars())


async def steps_of(session: AsyncSession, account_id: str) -> list[AccountOpeningStep]:
    """The account's steps, in the order of the catalogue."""
    rows = await session.exec(
        select(AccountOpeningStep).where(AccountOpeningStep.account_id == account_id)
    )
    order = list(STEPS)
    return sorted(rows, key=lambda r: order.index(r.step) if r.step in order else len(order))


async def get_step(
    session: AsyncSession, account_id: str, step: str, *, for_update: bool = False
) -> AccountOpeningStep | None:
    stmt = select(AccountOpeningStep).where(
        AccountOpeningStep.account_id == account_id, AccountOpeningStep.step == step
    )
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.exec(stmt)).first()


async def save(session: AsyncSession, row: AccountOpeningStep) -> None:
    session.add(row)
    await session.flush()


_TASK_COLUMNS: tuple[Any, ...] = (
    column("task_id", String),
    column("kind", String),
    column("account_id", String),
    column("account_name", String),
    column("step", String),
    column("note", String),
    column("raised_by", String),
    column("since"),
    column("missing", ARRAY(String)),
)


async def tasks_page(
    session: AsyncSession,
    tenant: str,
    *,
    kind: str | None,
    account_id: str | None,
    overdue_before: datetime,
    limit: int,
    offset: int,
) -> list[Row[Any]]:
    """A page of the tenant's open work, oldest first: steps in exception of accounts still
    opening, and accounts opening since before `overdue_before`; each with the account's
    steps not done (computed for the page's rows only). One statement."""
    stmt = text(
        "SELECT t.task_id, t.kind, t.account_id, t.account_name, t.step, t.note, t.raised_by, "
        "t.since, ARRAY(SELECT m.step FROM account_opening_steps m "
        "WHERE m.account_id = t.account_id AND m.status <> :done "
        "ORDER BY array_position(CAST(:steps AS text[]), CAST(m.step AS text))) AS missing "
        "FROM ("
        "SELECT 'exception:' || s.account_id || ':' || s.step AS task_id, 'exception' AS kind, "
        "s.account_id, a.name AS account_name, s.step, s.note, s.updated_by AS raised_by, "
        "s.updated_at AS since FROM account_opening_steps s "
        "JOIN accounts a ON a.account_id = s.account_id "
        "WHERE s.tenant = :tenant AND s.status = :exception AND a.status = :opening "
        "AND CAST(:kind AS text) IS DISTINCT FROM 'overdue' "
        "AND (CAST(:account_id AS text) IS NULL OR s.account_id = :account_id) "
        "UNION ALL "
        "SELECT 'overdue:' || a.account_id, 'overdue', a.account_id, a.name, NULL, NULL, NULL, "
        "a.created_at FROM accounts a "
        "WHERE a.tenant = :tenant AND a.status = :opening AND a.created_at < :overdue_before "
        "AND CAST(:kind AS text) IS DISTINCT FROM 'exception' "
        "AND (CAST(:account_id AS text) IS NULL OR a.account_id = :account_id) "
        "ORDER BY since, task_id LIMIT :limit OFFSET :offset) t "
        "ORDER BY t.since, t.task_id"
    ).columns(*_TASK_COLUMNS)
    params = {
        "tenant": tenant,
        "kind": kind,
        "account_id": account_id,
        "overdue_before": overdue_before,
        "done": DONE,
        "exception": EXCEPTION,
        "opening": OPENING,
        "steps": list(STEPS),
        "limit": limit,
        "offset": offset,
    }
    return list(await session.execute(stmt, params))
