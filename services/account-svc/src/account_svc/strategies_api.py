"""REST routes of reusable strategies: parse, call the service layer, return."""

from typing import Annotated

from ballast_common.app import ReadSession, UoW
from ballast_common.auth import CanManageAccounts, CanRead
from ballast_common.openapi import CREATES_RESOURCE
from ballast_common.pagination import Offset, Page
from fastapi import APIRouter, Path, Query

from account_svc import strategies
from account_svc.rules import IDENTIFIER_PATTERN
from account_svc.strategies_schemas import ReusableStrategyIn, ReusableStrategyOut

router = APIRouter()
Limit = Annotated[int, Query(ge=1, le=5000)]
TAG = "strategies"


@router.put(
    "/strategies/{strategy_id}",
    tags=[TAG],
    response_model=ReusableStrategyOut,
    summary="Create or change a reusable UMA strategy; a new version goes to every account "
    "following it",
    openapi_extra=CREATES_RESOURCE,
)
async def put_strategy(
    strategy_id: Annotated[str, Path(min_length=1, max_length=64, pattern=IDENTIFIER_PATTERN)],
    body: ReusableStrategyIn,
    uow: UoW,
    caller: CanManageAccounts,
) -> ReusableStrategyOut:
    return await strategies.put_strategy(uow, caller.tenant, caller.subject, strategy_id, body)


@router.get("/strategies", tags=[TAG], response_model=Page[ReusableStrategyOut], summary="By id")
async def list_strategies(
    session: ReadSession, caller: CanRead, limit: Limit = 100, offset: Offset = 0
) -> Page[ReusableStrategyOut]:
    rows = await strategies.list_strategies(session, caller.tenant, limit + 1, offset)
    return Page[ReusableStrategyOut].of(rows, limit, offset)


@router.get("/strategies/{strategy_id}", tags=[TAG], response_model=ReusableStrategyOut)
async def get_strategy(
    strategy_id: str, session: ReadSession, caller: CanRead
) -> ReusableStrategyOut:
    return await strategies.get_strategy(session, caller.tenant, strategy_id)
