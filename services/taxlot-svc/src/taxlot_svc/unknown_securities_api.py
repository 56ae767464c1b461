"""taxlot-svc's routes of unknown securities (docs/custodian-files.md, *Unknown securities*):
symbols of a custodian's files the security master does not know, in the shape of the
transfer exceptions (`kind` `unknown-security`)."""

from datetime import date, datetime
from typing import Annotated, Any, Literal

from ballast_common.app import ReadSession, UoW
from ballast_common.auth import CanOperate, CanRead
from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from taxlot_svc import unknown_securities
from taxlot_svc.custodian_monitor_api import ResolutionIn
from taxlot_svc.reconciliation_repository import UnknownFilter

router = APIRouter(tags=["transfer monitoring"])


class UnknownSecurityOut(BaseModel):
    """A symbol of a custodian's files the security master does not know; while `open`, the
    accounts holding it at the custodian are held from trading."""

    id: int
    custodian: str
    business_date: date = Field(description="the first day it was found")
    kind: Literal["unknown-security"]
    status: Literal["open", "resolved"]
    detail: str
    problems: list[str]
    deadline: datetime | None
    opened_at: datetime
    resolved_at: datetime | None
    resolved_by: str | None = Field(
        description="`securities-changed` (the security master added it), else who"
    )
    resolution: str | None
    symbol: str
    cusip: str | None = Field(description="as the custodian's prices file gave it")
    name: str | None
    first_file: str
    first_line: int
    rows: int = Field(description="rows naming it in the latest day that found it")
    last_business_date: date
    accounts_held: int = Field(description="accounts it holds from trading now")


class UnknownSecuritiesOut(BaseModel):
    exceptions: list[UnknownSecurityOut]
    next_after: int | None = Field(description="pass as `after` for the next page (None: last)")


class ResolvedUnknownSecurityOut(UnknownSecurityOut):
    accounts_released: int = Field(description="accounts nothing holds any more, released")


@router.get(
    "/custodian-days/unknown-securities",
    summary="Symbols of the custodians' files the security master does not know",
    response_model=UnknownSecuritiesOut,
)
async def get_unknown_securities(
    session: ReadSession,
    caller: CanRead,
    status: Annotated[Literal["open", "resolved"] | None, Query()] = None,
    custodian: Annotated[str | None, Query(max_length=64)] = None,
    business_date: date | None = None,
    symbol: Annotated[str | None, Query(max_length=16)] = None,
    after: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    where = UnknownFilter(status, custodian, business_date, symbol)
    return await unknown_securities.page(session, caller.tenant, where, after, limit)


@router.post(
    "/custodian-days/unknown-securities/{exception_id}/resolve",
    summary="Resolve an unknown security by hand (releases the accounts it alone held)",
    response_model=ResolvedUnknownSecurityOut,
)
async def post_unknown_security_resolution(
    exception_id: Annotated[int, Path(ge=1, le=2**63 - 1)],
    body: ResolutionIn,
    uow: UoW,
    caller: CanOperate,
) -> dict[str, Any]:
    return await unknown_securities.resolve(
        uow, caller.tenant, exception_id, caller.subject, body.resolution
    )
