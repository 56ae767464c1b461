"""REST routes of bulk changes and of an account's settings history: parse, call, return."""

from typing import Annotated

from ballast_common.app import ReadSession, UoW
from ballast_common.auth import CanManageAccounts, CanRead
from ballast_common.pagination import Offset, Page
from fastapi import APIRouter, Query

from account_svc import bulk_changes
from account_svc.bulk_changes_schemas import (
    BulkChangeAccountOut,
    BulkChangeIn,
    BulkChangeOut,
    ExemptionIn,
    SettingsChangeOut,
)
from account_svc.settings_history import settings_history

router = APIRouter()
Limit = Annotated[int, Query(ge=1, le=5000)]
TAG = "bulk changes"


@router.post(
    "/bulk-changes",
    tags=[TAG],
    status_code=201,
    response_model=BulkChangeOut,
    summary="Preview a change to the selected accounts (nothing changes until it is applied)",
)
async def preview_bulk_change(
    body: BulkChangeIn, uow: UoW, caller: CanManageAccounts
) -> BulkChangeOut:
    return await bulk_changes.preview(uow, caller.tenant, caller.subject, body)


@router.get("/bulk-changes", tags=[TAG], response_model=Page[BulkChangeOut], summary="Newest first")
async def list_bulk_changes(
    session: ReadSession, caller: CanRead, limit: Limit = 100, offset: Offset = 0
) -> Page[BulkChangeOut]:
    rows = await bulk_changes.list_bulk_changes(session, caller.tenant, limit + 1, offset)
    return Page[BulkChangeOut].of(rows, limit, offset)


@router.get("/bulk-changes/{bulk_change_id}", tags=[TAG], response_model=BulkChangeOut)
async def get_bulk_change(
    bulk_change_id: str, session: ReadSession, caller: CanRead
) -> BulkChangeOut:
    return await bulk_changes.get(session, caller.tenant, bulk_change_id)


@router.get(
    "/bulk-changes/{bulk_change_id}/accounts",
    tags=[TAG],
    response_model=Page[BulkChangeAccountOut],
    summary="The selected accounts by id: before and after, problems, exemption",
)
async def list_bulk_change_accounts(
    bulk_change_id: str,
    session: ReadSession,
    caller: CanRead,
    with_problems: bool | None = None,
    exempted: bool | None = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[BulkChangeAccountOut]:
    rows = await bulk_changes.accounts(
        session,
        caller.tenant,
        bulk_change_id,
        with_problems=with_problems,
        exempted=exempted,
        limit=limit + 1,
        offset=offset,
    )
    return Page[BulkChangeAccountOut].of(rows, limit, offset)


@router.post(
    "/bulk-changes/{bulk_change_id}/exemptions",
    tags=[TAG],
    status_code=201,
    response_model=BulkChangeAccountOut,
    summary="Leave an account out of a previewed bulk change (who and why are recorded)",
)
async def exempt_account(
    bulk_change_id: str, body: ExemptionIn, uow: UoW, caller: CanManageAccounts
) -> BulkChangeAccountOut:
    return await bulk_changes.exempt(uow, caller.tenant, caller.subject, bulk_change_id, body)


@router.delete(
    "/bulk-changes/{bulk_change_id}/exemptions/{account_id}",
    tags=[TAG],
    response_model=BulkChangeAccountOut,
    summary="Lift an exemption: the account is in the previewed bulk change again",
)
async def lift_exemption(
    bulk_change_id: str, account_id: str, uow: UoW, caller: CanManageAccounts
) -> BulkChangeAccountOut:
    return await bulk_changes.lift_exemption(
        uow, caller.tenant, caller.subject, bulk_change_id, account_id
    )


@router.post(
    "/bulk-changes/{bulk_change_id}/apply",
    tags=[TAG],
    response_model=BulkChangeOut,
    summary="Apply to the previewed accounts but the exempted ones, all or nothing",
)
async def apply_bulk_change(
    bulk_change_id: str, uow: UoW, caller: CanManageAccounts
) -> BulkChangeOut:
    return await bulk_changes.apply(uow, caller.tenant, caller.subject, bulk_change_id)


@router.post(
    "/bulk-changes/{bulk_change_id}/cancel",
    tags=[TAG],
    response_model=BulkChangeOut,
    summary="Drop a previewed bulk change",
)
async def cancel_bulk_change(
    bulk_change_id: str, uow: UoW, caller: CanManageAccounts
) -> BulkChangeOut:
    return await bulk_changes.cancel(uow, caller.tenant, caller.subject, bulk_change_id)


@router.get(
    "/accounts/{account_id}/settings-history",
    tags=["account settings"],
    response_model=Page[SettingsChangeOut],
    summary="Every change of the account, newest first: who, when, each field before and "
    "after, and the bulk change or request that made it (from the audit trail)",
)
async def get_settings_history(
    account_id: str, session: ReadSession, caller: CanRead, limit: Limit = 100, offset: Offset = 0
) -> Page[SettingsChangeOut]:
    rows = await settings_history(session, caller.tenant, account_id, limit + 1, offset)
    return Page[SettingsChangeOut].of(rows, limit, offset)
