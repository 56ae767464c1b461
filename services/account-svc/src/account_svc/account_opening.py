"""Opening an account as a workflow: an account opened with status `opening` has steps
(account_opening_schemas.STEPS), people mark the manual ones done or in exception, the
automatic ones follow the account (service.settle_opening), and the account becomes active,
and is announced so, in the transaction that completes its last step. Exceptions and openings
that take too long are the tenant's task list."""

from datetime import UTC, datetime, timedelta
from typing import Any

from ballast_common.audit import AuditEntry
from ballast_common.errors import Conflict, FieldProblem, InvalidInput, NotFound
from ballast_common.uow import UnitOfWork
from sqlmodel.ext.asyncio.session import AsyncSession

from account_svc import account_opening_repository as repo
from account_svc import service
from account_svc.account_opening_schemas import (
    STEPS,
    OpeningOut,
    StepOut,
    StepOutcome,
    TaskKind,
    TaskOut,
)
from account_svc.repository import PostgresAccountRepository
from account_svc.tables import Account, AccountOpeningStep

STEP_ACTION = "opening-step"  # the audit action of a step marked by a person


async def get_opening(session: AsyncSession, tenant: str, account_id: str) -> OpeningOut:
    """The tenant's account's opening steps and what is missing."""
    account = await _account(PostgresAccountRepository(session), tenant, account_id)
    return await _view(session, account)


async def mark_step(
    uow: UnitOfWork, tenant: str, actor: str, account_id: str, step: str, body: StepOutcome
) -> OpeningOut:
    """A person marks a manual step of an opening account done or in exception (with a note);
    when it was the last step not done, the account opens in this transaction."""
    _check_step(step, body)
    accounts = PostgresAccountRepository(uow.session)
    account = await _account(accounts, tenant, account_id, for_update=True)
    row = await repo.get_step(uow.session, account_id, step, for_update=True)
    if row is None:
        raise NotFound(_not_a_workflow(account_id))
    if account.status != service.OPENING_STATUS:
        raise Conflict(
            f"account {account_id} is {account.status}: its opening is over, its steps can no "
            "longer change",
            [FieldProblem("step", f"the account is {account.status}")],
        )
    before = _step_doc(row)
    row.status, row.note, row.updated_by = body.outcome, body.note, actor
    row.updated_at = datetime.now(UTC)
    await repo.save(uow.session, row)
    await accounts.append_audit(
        tenant, [AuditEntry(actor, STEP_ACTION, "account", account_id, before, _step_doc(row))]
    )
    opened = await service.settle_opening(uow, tenant, actor, repo.account_ids([account_id]))
    if opened:  # the account in the session has its new status
        await service.announce_accounts(uow, accounts, [account])
    return await _view(uow.session, account)


async def tasks(
    session: AsyncSession,
    tenant: str,
    *,
    overdue_days: int,
    kind: TaskKind | None,
    account_id: str | None,
    limit: int,
    offset: int,
) -> list[TaskOut]:
    """A page of the tenant's open work, oldest first: steps in exception (with their note)
    of accounts still opening, and accounts opening for more than `overdue_days` days."""
    now = datetime.now(UTC)
    rows = await repo.tasks_page(
        session,
        tenant,
        kind=kind,
        account_id=account_id,
        overdue_before=now - timedelta(days=overdue_days),
        limit=limit,
        offset=offset,
    )
    return [
        TaskOut(
            task_id=r.task_id,
            kind=r.kind,
            account_id=r.account_id,
            account_name=r.account_name,
            step=r.step,
            note=r.note,
            raised_by=r.raised_by,
            since=r.since,
            age_days=(now - r.since).days,
            missing=list(r.missing),
        )
        for r in rows
    ]


def _check_step(step: str, body: StepOutcome) -> None:
    """A manual step of the catalogue; an exception says what is wrong (422 naming the field)."""
    if step not in STEPS:
        raise InvalidInput(
            f"unknown opening step {step}",
            [FieldProblem("step", f"not a step; the steps are {', '.join(STEPS)}")],
        )
    kind, description = STEPS[step]
    if kind == "automatic":
        raise InvalidInput(
            f"{step} is automatic: it cannot be marked by hand",
            [
                FieldProblem(
                    "step",
                    f"{step} is automatic ({description}): it is done when the account has a "
                    "model (PATCH model_id) or a strategy (PUT strategy)",
                )
            ],
        )
    if body.outcome == "exception" and not (body.note or "").strip():
        raise InvalidInput(
            "an exception needs a note saying what is wrong",
            [FieldProblem("note", "required for an exception")],
        )


async def _account(
    accounts: PostgresAccountRepository, tenant: str, account_id: str, *, for_update: bool = False
) -> Account:
    account = await accounts.get_account(tenant, account_id, for_update=for_update)
    if account is None:
        raise NotFound(f"no account {account_id}")
    return account


async def _view(session: AsyncSession, account: Account) -> OpeningOut:
    rows = await repo.steps_of(session, account.account_id)
    if not rows:
        raise NotFound(_not_a_workflow(account.account_id))
    steps = [
        StepOut(
            step=r.step,
            kind=STEPS[r.step][0],
            description=STEPS[r.step][1],
            status=r.status,  # type: ignore[arg-type]
            note=r.note,
            updated_by=r.updated_by,
            updated_at=r.updated_at,
        )
        for r in rows
        if r.step in STEPS
    ]
    return OpeningOut(
        account_id=account.account_id,
        status=account.status,
        opening_since=account.created_at,
        steps=steps,
        missing=[s.step for s in steps if s.status != repo.DONE],
    )


def _not_a_workflow(account_id: str) -> str:
    return f"account {account_id} was not opened as a workflow: it has no opening steps"


def _step_doc(row: AccountOpeningStep) -> dict[str, Any]:
    return {"step": row.step, "status": row.status, "note": row.note}
