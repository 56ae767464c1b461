"""Routes of account opening as a workflow and of the task list: parse, call, return."""

from typing import Annotated

from ballast_common.app import ReadSession, RuntimeDep, UoW
from ballast_common.auth import CanManageAccounts, CanRead
from ballast_common.pagination import Offset, Page
from fastapi import APIRouter, Query

from account_svc import account_opening
from account_svc.account_opening_schemas import OpeningOut, StepOutcome, TaskKind, TaskOut
from account_svc.settings import Settings

router = APIRouter()
TAG = "account opening"


@router.get(
    "/accounts/{account_id}/opening",
    tags=[TAG],
    response_model=OpeningOut,
    summary="An account opened as a workflow: its steps and what is missing",
)
async def get_opening(account_id: str, session: ReadSession, caller: CanRead) -> OpeningOut:
    return await account_opening.get_opening(session, caller.tenant, account_id)


@router.post(
    "/accounts/{account_id}/opening/steps/{step}",
    tags=[TAG],
    response_model=OpeningOut,
    summary="Mark a manual step done or in exception (note required); the last step done "
    "opens the account",
)
async def mark_step(
    account_id: str, step: str, body: StepOutcome, uow: UoW, caller: CanManageAccounts
) -> OpeningOut:
    return await account_opening.mark_step(
        uow, caller.tenant, caller.subject, account_id, step, body
    )


@router.get(
    "/tasks",
    tags=[TAG],
    response_model=Page[TaskOut],
    summary="The tenant's open work, oldest first: opening steps in exception, and accounts "
    "opening for longer than ACCOUNT_SVC_OPENING_OVERDUE_DAYS",
)
async def list_tasks(
    session: ReadSession,
    runtime: RuntimeDep,
    caller: CanRead,
    kind: TaskKind | None = None,
    account_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Offset = 0,
) -> Page[TaskOut]:
    settings = runtime.settings
    assert isinstance(settings, Settings)
    rows = await account_opening.tasks(
        session,
        caller.tenant,
        overdue_days=settings.opening_overdue_days,
        kind=kind,
        account_id=account_id,
        limit=limit + 1,
        offset=offset,
    )
    return Page[TaskOut].of(rows, limit, offset)
