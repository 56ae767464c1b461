"""rebalance-svc's REST routes: runs and the state of its read model."""

from typing import Annotated, Any

from ballast_common.app import ReadSession, RuntimeDep, UoW
from ballast_common.auth import CanRead, CanStartRuns
from ballast_common.errors import NotFound
from ballast_common.pagination import Offset, Page
from fastapi import APIRouter, Query

from rebalance_svc import repository as repo
from rebalance_svc import service
from rebalance_svc.schemas import HarvestIn, ReadModelStatus, RunOut, ScanIn
from rebalance_svc.settings import Settings

router = APIRouter()


@router.get(
    "/runs", tags=["runs"], response_model=Page[RunOut], summary="The tenant's runs, newest first"
)
async def list_runs(
    session: ReadSession,
    caller: CanRead,
    model_id: Annotated[str | None, Query(max_length=64)] = None,
    model_version: Annotated[int | None, Query(ge=0, le=2**31 - 1)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Offset = 0,
) -> Page[RunOut]:
    runs = await repo.list_runs(
        session, model_id, model_version, limit + 1, offset, tenant=caller.tenant
    )
    return Page[RunOut].of([service.run_view(r) for r in runs], limit, offset)


@router.get("/runs/{run_id}", tags=["runs"], response_model=RunOut)
async def get_run(run_id: str, session: ReadSession, caller: CanRead) -> RunOut:
    return await service.run_with_skipped(session, run_id, tenant=caller.tenant)


@router.get(
    "/runs/{run_id}/scenarios/{account_id}",
    tags=["runs"],
    summary="The engine's input for one account of a run (replay: ballast engine rebalance)",
)
async def get_scenario(
    run_id: str, account_id: str, session: ReadSession, caller: CanRead
) -> dict[str, Any]:
    scenario = await repo.get_scenario(session, run_id, account_id, tenant=caller.tenant)
    if scenario is None:
        raise NotFound(f"no scenario of account {account_id} in run {run_id}")
    return scenario


@router.post(
    "/scans",
    tags=["runs"],
    status_code=202,
    response_model=RunOut,
    summary="Scan the tenant's accounts for drift (vectorized); optionally rebalance those out "
    "of band",
    description="Starts a run over the caller's tenant's accounts, split into chunks that "
    "every instance works on; follow it with GET /runs/{run_id} until `complete`.",
)
async def run_scan(
    uow: UoW, runtime: RuntimeDep, caller: CanStartRuns, body: ScanIn | None = None
) -> RunOut:
    settings = runtime.settings
    assert isinstance(settings, Settings)
    rebalance = body.rebalance if body is not None else False
    run = await service.start_scan(
        uow,
        settings,
        rebalance=rebalance,
        trigger="scan",
        tenant=caller.tenant,
        started_by=caller.subject,
    )
    return service.run_view(run)


@router.post(
    "/harvests",
    tags=["runs"],
    status_code=202,
    response_model=RunOut,
    summary="Harvest tax losses in the tenant's accounts that have harvesting on (or those named)",
    description="Starts a run over the caller's tenant's accounts, split into chunks; follow "
    "it with GET /runs/{run_id}.",
)
async def run_harvest(
    uow: UoW, runtime: RuntimeDep, caller: CanStartRuns, body: HarvestIn | None = None
) -> RunOut:
    settings = runtime.settings
    assert isinstance(settings, Settings)
    accounts = body.accounts if body is not None else None
    run = await service.start_harvest(
        uow, settings, accounts, tenant=caller.tenant, started_by=caller.subject
    )
    return service.run_view(run)


@router.get(
    "/read-model",
    tags=["runs"],
    response_model=ReadModelStatus,
    summary="How much of the tenant's book this service knows (from events)",
    description="Securities, security lists and equivalence sets are platform-wide reference "
    "data (counted for every tenant); the rest counts the caller's tenant's rows.",
)
async def read_model(session: ReadSession, caller: CanRead) -> ReadModelStatus:
    return ReadModelStatus(**await repo.read_model_counts(session, caller.tenant))
