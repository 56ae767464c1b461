"""rebalance-svc's REST routes: runs and the state of its read model."""

from typing import Annotated

from ballast_common.app import ReadSession
from ballast_common.errors import NotFound
from fastapi import APIRouter, Query

from rebalance_svc import repository as repo
from rebalance_svc.schemas import ReadModelStatus, RunOut

router = APIRouter()


@router.get("/runs", tags=["runs"], response_model=list[RunOut])
async def list_runs(
    session: ReadSession,
    model_id: str | None = None,
    model_version: int | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[RunOut]:
    runs = await repo.list_runs(session, model_id, model_version, limit)
    return [RunOut.model_validate(r, from_attributes=True) for r in runs]


@router.get("/runs/{run_id}", tags=["runs"], response_model=RunOut)
async def get_run(run_id: str, session: ReadSession) -> RunOut:
    run = await repo.get_run(session, run_id)
    if run is None:
        raise NotFound(f"no run {run_id}")
    return RunOut.model_validate(run, from_attributes=True)


@router.get(
    "/read-model",
    tags=["runs"],
    response_model=ReadModelStatus,
    summary="How much of the book this service knows (from events)",
)
async def read_model(session: ReadSession) -> ReadModelStatus:
    return ReadModelStatus(**await repo.read_model_counts(session))
