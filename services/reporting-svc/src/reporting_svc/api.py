"""reporting-svc's REST routes (JSON) and the dashboard page."""

import uuid
from datetime import UTC, date, datetime
from pathlib import Path as FsPath
from typing import Annotated, Literal

from ballast_common.app import ReadSession, RuntimeDep
from ballast_common.auth import CanRead, public
from ballast_common.pagination import Offset, Page
from fastapi import APIRouter, Path, Query
from fastapi.responses import FileResponse

from reporting_svc import service
from reporting_svc.repository import SortKey
from reporting_svc.schemas import (
    AccountOverview,
    AccountSummary,
    Holdings,
    Lots,
    ModelOut,
    RunAccount,
    RunProgress,
    Summary,
    TradeOut,
)
from reporting_svc.settings import Settings

STATIC_DIR = FsPath(__file__).parent / "static"

router = APIRouter()
AccountId = Annotated[str, Path(min_length=1, max_length=64)]


def _settings(runtime: RuntimeDep) -> Settings:
    settings = runtime.settings
    assert isinstance(settings, Settings)
    return settings


@router.get("/", include_in_schema=False)
@public
async def dashboard() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html")


@router.get(
    "/summary",
    tags=["reports"],
    response_model=Summary,
    summary="The caller's tenant's book in numbers (securities: the platform's master)",
)
async def get_summary(session: ReadSession, caller: CanRead) -> Summary:
    return await service.summary(session, caller.tenant)


@router.get(
    "/accounts",
    tags=["accounts"],
    response_model=Page[AccountOverview],
    summary="Accounts from their stored valuations, filtered and sorted (with a total)",
)
async def list_accounts(
    session: ReadSession,
    runtime: RuntimeDep,
    caller: CanRead,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Offset = 0,
    model_id: Annotated[str | None, Query(max_length=64)] = None,
    out_of_tolerance: bool | None = None,
    status: Literal["active", "suspended", "closed"] | None = None,
    search: Annotated[str | None, Query(max_length=64, description="in id or name")] = None,
    sort: SortKey = "account_id",
    order: Literal["asc", "desc"] = "asc",
) -> Page[AccountOverview]:
    return await service.list_accounts(
        session,
        caller.tenant,
        _settings(runtime).default_tolerance,
        limit=limit,
        offset=offset,
        model_id=model_id,
        out_of_tolerance=out_of_tolerance,
        status=status,
        search=search,
        sort=sort,
        descending=order == "desc",
    )


@router.get("/accounts/{account_id}", tags=["accounts"], response_model=AccountSummary)
async def get_account(
    account_id: AccountId, session: ReadSession, runtime: RuntimeDep, caller: CanRead
) -> AccountSummary:
    tolerance = _settings(runtime).default_tolerance
    return await service.account_summary(session, caller.tenant, account_id, tolerance)


@router.get("/accounts/{account_id}/holdings", tags=["accounts"], response_model=Holdings)
async def get_holdings(account_id: AccountId, session: ReadSession, caller: CanRead) -> Holdings:
    return await service.holdings(session, caller.tenant, account_id)


@router.get("/accounts/{account_id}/lots", tags=["accounts"], response_model=Lots)
async def get_lots(
    account_id: AccountId,
    session: ReadSession,
    caller: CanRead,
    on: Annotated[
        date | None, Query(description="value terms on this date (default: today, UTC)")
    ] = None,
) -> Lots:
    return await service.lots(session, caller.tenant, account_id, on or datetime.now(UTC).date())


@router.get("/accounts/{account_id}/trades", tags=["accounts"], response_model=Page[TradeOut])
async def get_trades(
    account_id: AccountId,
    session: ReadSession,
    caller: CanRead,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    offset: Offset = 0,
) -> Page[TradeOut]:
    trades = await service.trades(session, caller.tenant, account_id, limit + 1, offset)
    return Page[TradeOut].of(trades, limit, offset)


@router.get(
    "/runs",
    tags=["runs"],
    response_model=Page[RunProgress],
    summary="The tenant's runs, newest first",
)
async def list_runs(
    session: ReadSession,
    caller: CanRead,
    model_id: Annotated[str | None, Query(max_length=64)] = None,
    model_version: Annotated[int | None, Query(ge=0, le=2**31 - 1)] = None,
    kind: Literal["rebalance", "scan", "harvest"] | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 20,
    offset: Offset = 0,
) -> Page[RunProgress]:
    runs = await service.runs(
        session,
        caller.tenant,
        model_id=model_id,
        model_version=model_version,
        kind=kind,
        limit=limit + 1,
        offset=offset,
    )
    return Page[RunProgress].of(runs, limit, offset)


@router.get("/runs/{run_id}", tags=["runs"], response_model=RunProgress)
async def get_run(run_id: uuid.UUID, session: ReadSession, caller: CanRead) -> RunProgress:
    return await service.run(session, caller.tenant, run_id)


@router.get("/runs/{run_id}/accounts", tags=["runs"], response_model=Page[RunAccount])
async def get_run_accounts(
    run_id: uuid.UUID,
    session: ReadSession,
    caller: CanRead,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    offset: Offset = 0,
) -> Page[RunAccount]:
    members = await service.run_accounts(session, caller.tenant, run_id, limit + 1, offset)
    return Page[RunAccount].of(members, limit, offset)


@router.get(
    "/models", tags=["reports"], response_model=Page[ModelOut], summary="The tenant's models, by id"
)
async def list_models(
    session: ReadSession,
    caller: CanRead,
    limit: Annotated[int, Query(ge=1, le=1000)] = 500,
    offset: Offset = 0,
) -> Page[ModelOut]:
    models = await service.models(session, caller.tenant, limit + 1, offset)
    return Page[ModelOut].of(models, limit, offset)
