"""taxlot-svc's routes of transfer monitoring (docs/custodian-files.md): the exceptions of the
custodians' file sets, reported by the inbox watcher and resolved by people."""

from datetime import date, datetime
from typing import Annotated, Any, Literal

from ballast_common.app import ReadSession, RuntimeDep, UoW
from ballast_common.auth import CanOperate, CanRead
from ballast_common.contracts.types import RequestBody
from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from taxlot_svc import custodian_monitor
from taxlot_svc.repository import ExceptionFilter
from taxlot_svc.settings import Settings

router = APIRouter(tags=["transfer monitoring"])

CUSTODIAN_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
ExceptionKind = Literal["missing", "late", "empty", "truncated", "invalid"]
RejectedKind = Literal["empty", "truncated", "invalid"]


class TransferExceptionOut(BaseModel):
    """A custodian's file set missing after its deadline, late, or refused (empty, truncated,
    invalid); `open` ones hold the custodian's accounts from trading (but `late`)."""

    id: int
    custodian: str
    business_date: date
    kind: ExceptionKind
    status: Literal["open", "resolved"]
    detail: str
    problems: list[str] = Field(description="the first problems of a refused set")
    deadline: datetime | None = Field(description="when the day's set was due")
    opened_at: datetime
    resolved_at: datetime | None
    resolved_by: str | None = Field(description="`arrival` (the set came), else who resolved it")
    resolution: str | None


class TransferExceptionsOut(BaseModel):
    exceptions: list[TransferExceptionOut]
    next_after: int | None = Field(description="pass as `after` for the next page (None: last)")


class RejectedSetIn(RequestBody):
    """A file set the inbox watcher refused, with what its check found."""

    custodian: str = Field(pattern=CUSTODIAN_PATTERN)
    business_date: date
    kind: RejectedKind
    detail: str = Field(min_length=1, max_length=2000)
    problems: list[Annotated[str, Field(max_length=1000)]] = Field(
        default_factory=list, max_length=custodian_monitor.MAX_PROBLEMS
    )


class ResolutionIn(RequestBody):
    resolution: str = Field(min_length=1, max_length=2000, description="what was done, in words")


@router.get(
    "/custodian-days/exceptions",
    summary="Exceptions of the custodians' file sets: missing, late, empty, truncated, invalid",
    response_model=TransferExceptionsOut,
)
async def get_transfer_exceptions(
    session: ReadSession,
    caller: CanRead,
    status: Annotated[Literal["open", "resolved"] | None, Query()] = None,
    custodian: Annotated[str | None, Query(max_length=64)] = None,
    business_date: date | None = None,
    kind: ExceptionKind | None = None,
    after: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    where = ExceptionFilter(status, custodian, business_date, kind)
    return await custodian_monitor.exceptions(session, caller.tenant, where, after, limit)


@router.post(
    "/custodian-days/exceptions",
    status_code=201,
    summary="Report a file set the inbox watcher refused (holds the custodian's accounts)",
    response_model=TransferExceptionOut,
)
async def post_rejected_set(
    body: RejectedSetIn, uow: UoW, caller: CanOperate, runtime: RuntimeDep
) -> dict[str, Any]:
    settings = runtime.settings
    assert isinstance(settings, Settings)
    return await custodian_monitor.report_rejected(
        uow,
        settings,
        caller.tenant,
        body.custodian,
        body.business_date,
        body.kind,
        body.detail,
        body.problems,
    )


@router.post(
    "/custodian-days/exceptions/{exception_id}/resolve",
    summary="Resolve an open exception by hand (releases the custodian's accounts when last)",
    response_model=TransferExceptionOut,
)
async def post_resolution(
    exception_id: Annotated[int, Path(ge=1, le=2**63 - 1)],
    body: ResolutionIn,
    uow: UoW,
    caller: CanOperate,
) -> dict[str, Any]:
    return await custodian_monitor.resolve(
        uow, caller.tenant, exception_id, caller.subject, body.resolution
    )
