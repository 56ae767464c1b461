"""rebalance-svc's REST routes of cash requests: withdrawals and deposits per account."""

import uuid
from typing import Annotated

from ballast_common.app import ReadSession, RuntimeDep, UoW
from ballast_common.auth import CanRead, CanStartRuns
from ballast_common.pagination import Offset, Page
from fastapi import APIRouter, Query

from rebalance_svc import cash_requests, service
from rebalance_svc.cash_schemas import (
    CashRequestOut,
    CashRequestsAccepted,
    CashRequestsIn,
    CashStatus,
)
from rebalance_svc.settings import Settings

router = APIRouter(tags=["cash requests"])


@router.post(
    "/cash-requests",
    status_code=202,
    response_model=CashRequestsAccepted,
    summary="Withdraw or deposit cash in accounts (today: one run, trigger cash; later: waits)",
    description="All or none: a request naming an unknown account or sleeve, a withdrawal "
    "larger than the account's value, or an account twice is a 422 naming the field "
    "(`requests[i].amount`). Follow the run with GET /runs/{run_id} and each request with "
    "GET /cash-requests/{request_id}.",
)
async def request_cash(
    body: CashRequestsIn, uow: UoW, runtime: RuntimeDep, caller: CanStartRuns
) -> CashRequestsAccepted:
    settings = runtime.settings
    assert isinstance(settings, Settings)
    accepted = await cash_requests.request_cash(
        uow, settings, body.requests, tenant=caller.tenant, requested_by=caller.subject
    )
    return CashRequestsAccepted(
        run=service.run_view(accepted.run) if accepted.run is not None else None,
        requests=[cash_requests.view(r) for r in accepted.requests],
    )


@router.get(
    "/cash-requests",
    response_model=Page[CashRequestOut],
    summary="The tenant's cash requests, newest first",
)
async def list_cash_requests(
    session: ReadSession,
    caller: CanRead,
    account_id: Annotated[str | None, Query(max_length=64)] = None,
    status: CashStatus | None = None,
    run_id: uuid.UUID | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Offset = 0,
) -> Page[CashRequestOut]:
    views = await cash_requests.list_views(
        session,
        caller.tenant,
        account_id=account_id,
        status=status,
        run_id=run_id,
        limit=limit + 1,
        offset=offset,
    )
    return Page[CashRequestOut].of(views, limit, offset)


@router.get("/cash-requests/{request_id}", response_model=CashRequestOut)
async def get_cash_request(
    request_id: uuid.UUID, session: ReadSession, caller: CanRead
) -> CashRequestOut:
    return await cash_requests.get_view(session, caller.tenant, request_id)
