"""taxlot-svc's REST routes: parse, call the service layer, return."""

from typing import Annotated

from ballast_common.app import ReadSession, UoW
from fastapi import APIRouter, Path, Query

from taxlot_svc import service
from taxlot_svc.schemas import (
    ACCOUNT_ID_PATTERN,
    BatchResult,
    GainsOut,
    HoldingsBatchIn,
    HoldingsIn,
    HoldingsOut,
    LotsOut,
)

router = APIRouter()
AccountId = Annotated[str, Path(pattern=ACCOUNT_ID_PATTERN)]


@router.post(
    "/accounts/{account_id}/holdings",
    tags=["holdings"],
    summary="Record an account's opening balance (once): cash and positions with their lots",
    status_code=201,
    response_model=HoldingsOut,
)
async def post_holdings(account_id: AccountId, body: HoldingsIn, uow: UoW) -> HoldingsOut:
    return await service.open_account(uow, account_id, body)


@router.post(
    "/holdings:batch",
    tags=["holdings"],
    summary="Opening balances of up to 2,000 accounts, all or nothing",
    status_code=201,
    response_model=BatchResult,
)
async def post_holdings_batch(body: HoldingsBatchIn, uow: UoW) -> BatchResult:
    return await service.open_accounts(uow, body.accounts)


@router.get("/accounts/{account_id}/holdings", tags=["holdings"], response_model=HoldingsOut)
async def get_holdings(account_id: str, session: ReadSession) -> HoldingsOut:
    return await service.holdings(session, account_id)


@router.get("/accounts/{account_id}/lots", tags=["lots"], response_model=LotsOut)
async def get_lots(
    account_id: str,
    session: ReadSession,
    symbol: Annotated[str | None, Query(max_length=16)] = None,
) -> LotsOut:
    return await service.lots(session, account_id, symbol)


@router.get("/accounts/{account_id}/realized-gains", tags=["lots"], response_model=GainsOut)
async def get_realized_gains(account_id: str, session: ReadSession) -> GainsOut:
    return await service.realized_gains(session, account_id)
