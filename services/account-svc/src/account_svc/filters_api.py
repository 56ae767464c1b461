"""Routes of filters (saved queries that route proposals) and of bulk approval."""

from typing import Annotated

from ballast_common.app import ReadSession, UoW
from ballast_common.auth import CanDecideProposals, CanManageAccounts, CanRead
from ballast_common.openapi import CREATES_RESOURCE
from ballast_common.pagination import Offset, Page
from fastapi import APIRouter, Path, Query, Response

from account_svc import filters
from account_svc.filters_schemas import (
    MAX_FILTERS,
    BulkApproval,
    BulkApprovalOut,
    FilterIn,
    FilterOrder,
    FilterOut,
)
from account_svc.schemas import AccountOut

router = APIRouter()
FilterId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")]
Limit = Annotated[int, Query(ge=1, le=5000)]


@router.get(
    "/filters",
    tags=["filters"],
    response_model=Page[FilterOut],
    summary="The caller's tenant's filters, in evaluation order",
)
async def list_filters(
    session: ReadSession,
    caller: CanRead,
    limit: Annotated[int, Query(ge=1, le=MAX_FILTERS)] = MAX_FILTERS,
    offset: Offset = 0,
) -> Page[FilterOut]:
    rows = await filters.list_filters(session, caller.tenant, limit + 1, offset)
    return Page[FilterOut].of(rows, limit, offset)


@router.put(
    "/filters/order",
    tags=["filters"],
    response_model=list[FilterOut],
    summary="Set the evaluation order: every filter's id, each once",
)
async def order_filters(body: FilterOrder, uow: UoW, caller: CanManageAccounts) -> list[FilterOut]:
    return await filters.order_filters(uow, caller.tenant, caller.subject, body.filter_ids)


@router.put(
    "/filters/{filter_id}",
    tags=["filters"],
    response_model=FilterOut,
    summary="Create a filter (evaluated after the others) or replace one (its version goes up)",
    openapi_extra=CREATES_RESOURCE,
)
async def put_filter(
    filter_id: FilterId, body: FilterIn, uow: UoW, caller: CanManageAccounts
) -> FilterOut:
    return await filters.put_filter(uow, caller.tenant, caller.subject, filter_id, body)


@router.get("/filters/{filter_id}", tags=["filters"], response_model=FilterOut)
async def get_filter(filter_id: str, session: ReadSession, caller: CanRead) -> FilterOut:
    return await filters.get_filter(session, caller.tenant, filter_id)


@router.delete("/filters/{filter_id}", tags=["filters"], status_code=204)
async def delete_filter(filter_id: str, uow: UoW, caller: CanManageAccounts) -> Response:
    await filters.delete_filter(uow, caller.tenant, caller.subject, filter_id)
    return Response(status_code=204)


@router.get(
    "/filters/{filter_id}/accounts",
    tags=["filters"],
    response_model=Page[AccountOut],
    summary="The accounts the filter selects now, by id, with how many (total)",
)
async def filter_accounts(
    filter_id: str, session: ReadSession, caller: CanRead, limit: Limit = 100, offset: Offset = 0
) -> Page[AccountOut]:
    accounts, total = await filters.filter_accounts(
        session, caller.tenant, filter_id, limit, offset
    )
    return Page[AccountOut].counted(accounts, limit, offset, total)


@router.post(
    "/proposals/approve",
    tags=["approvals"],
    response_model=BulkApprovalOut,
    summary="Approve in bulk: the pending latest proposals of a filter's accounts, or the "
    "proposals named; the others listed with why",
)
async def approve_in_bulk(
    body: BulkApproval, uow: UoW, caller: CanDecideProposals
) -> BulkApprovalOut:
    return await filters.approve_in_bulk(uow, caller.tenant, caller.subject, body)
