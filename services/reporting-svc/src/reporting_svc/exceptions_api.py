"""Exceptions on screen: the dashboard's reconciliation breaks, custodian file-set exceptions
and unknown securities, forwarded to taxlot-svc.

They belong to taxlot-svc (the book of record that reconciles each custodian's day); these
routes pass each request on with the caller's own bearer token (taxlot-svc checks it, the
role and the tenant again) and hand its answer back unchanged, problem+json included.
taxlot-svc unreachable, too slow or not configured: 503 problem+json naming it."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

from ballast_common.auth import CanOperate, CanRead
from fastapi import APIRouter, Depends, Path, Query, Request, Response

from reporting_svc.forwarding import Forwarder, forwarder_of
from reporting_svc.settings import Settings

TAXLOT_SVC = "taxlot-svc"


class TaxlotSvc(Forwarder):
    """taxlot-svc's REST API as the dashboard's exceptions routes reach it."""

    service = TAXLOT_SVC
    setting = "REPORTING_SVC_TAXLOT_SVC_URL"
    needed_for = "breaks and exceptions cannot be read or resolved"

    @classmethod
    def url_and_timeout(cls, settings: Settings) -> tuple[str, float]:
        return settings.taxlot_svc_url, settings.taxlot_svc_timeout_s


taxlot_svc = forwarder_of(TaxlotSvc, "taxlot_svc")
TaxlotSvcDep = Annotated[TaxlotSvc, Depends(taxlot_svc)]
Id = Annotated[int, Path(ge=1, le=2**63 - 1)]  # never anything that could change taxlot's path
After = Annotated[int, Query(ge=0, le=2**63 - 1)]
Limit = Annotated[int, Query(ge=1, le=1000)]
Status = Literal["open", "resolved"]
FORWARDED = "Forwarded to taxlot-svc with the caller's token; its answer passed back as is."

router = APIRouter(prefix="/custodian", tags=["exceptions"])


@router.get(
    "/breaks",
    summary="Reconciliation breaks (default: open), in the order found",
    description=FORWARDED + " taxlot-svc: GET /breaks.",
)
async def list_breaks(
    request: Request,
    taxlot: TaxlotSvcDep,
    caller: CanRead,
    status: Literal["open"] | None = "open",
    account_id: Annotated[str | None, Query(max_length=64)] = None,
    custodian: Annotated[str | None, Query(max_length=64)] = None,
    business_date: date | None = None,
    after: After = 0,
    limit: Limit = 100,
) -> Response:
    params = {
        "status": status,
        "account_id": account_id,
        "custodian": custodian,
        "business_date": business_date and business_date.isoformat(),
        "after": after,
        "limit": limit,
    }
    return await taxlot.forward(request, "GET", "/breaks", params)


@router.post(
    "/breaks/{break_id}/resolve",
    summary="Resolve a break: {resolution: keep-ours | accept-custodian, note}",
    description=FORWARDED + " taxlot-svc: POST /breaks/{break_id}/resolve.",
)
async def resolve_break(
    break_id: Id, request: Request, taxlot: TaxlotSvcDep, caller: CanOperate
) -> Response:
    return await taxlot.forward(request, "POST", f"/breaks/{break_id}/resolve")


@router.get(
    "/exceptions",
    summary="Exceptions of the custodians' file sets: missing, late, empty, truncated, invalid",
    description=FORWARDED + " taxlot-svc: GET /custodian-days/exceptions.",
)
async def list_exceptions(
    request: Request,
    taxlot: TaxlotSvcDep,
    caller: CanRead,
    status: Status | None = "open",
    custodian: Annotated[str | None, Query(max_length=64)] = None,
    business_date: date | None = None,
    kind: Literal["missing", "late", "empty", "truncated", "invalid"] | None = None,
    after: After = 0,
    limit: Limit = 100,
) -> Response:
    params = {
        "status": status,
        "custodian": custodian,
        "business_date": business_date and business_date.isoformat(),
        "kind": kind,
        "after": after,
        "limit": limit,
    }
    return await taxlot.forward(request, "GET", "/custodian-days/exceptions", params)


@router.post(
    "/exceptions/{exception_id}/resolve",
    summary="Resolve a file-set exception: {resolution: what was done}",
    description=FORWARDED + " taxlot-svc: POST /custodian-days/exceptions/{exception_id}/resolve.",
)
async def resolve_exception(
    exception_id: Id, request: Request, taxlot: TaxlotSvcDep, caller: CanOperate
) -> Response:
    path = f"/custodian-days/exceptions/{exception_id}/resolve"
    return await taxlot.forward(request, "POST", path)


@router.get(
    "/unknown-securities",
    summary="Symbols of the custodians' files the security master does not know",
    description=FORWARDED + " taxlot-svc: GET /custodian-days/unknown-securities.",
)
async def list_unknown_securities(
    request: Request,
    taxlot: TaxlotSvcDep,
    caller: CanRead,
    status: Status | None = "open",
    custodian: Annotated[str | None, Query(max_length=64)] = None,
    symbol: Annotated[str | None, Query(max_length=16)] = None,
    after: After = 0,
    limit: Limit = 100,
) -> Response:
    params = {
        "status": status,
        "custodian": custodian,
        "symbol": symbol,
        "after": after,
        "limit": limit,
    }
    return await taxlot.forward(request, "GET", "/custodian-days/unknown-securities", params)


@router.post(
    "/unknown-securities/{exception_id}/resolve",
    summary="Resolve an unknown security: {resolution: what was done}",
    description=FORWARDED
    + " taxlot-svc: POST /custodian-days/unknown-securities/{exception_id}/resolve.",
)
async def resolve_unknown_security(
    exception_id: Id, request: Request, taxlot: TaxlotSvcDep, caller: CanOperate
) -> Response:
    path = f"/custodian-days/unknown-securities/{exception_id}/resolve"
    return await taxlot.forward(request, "POST", path)
