"""taxlot-svc's REST routes: parse, call the service layer, return."""

from datetime import date
from typing import Annotated, Any, Literal

from ballast_common.app import ReadSession, UoW
from ballast_common.auth import (
    CanLoadBooks,
    CanManageAccounts,
    CanManagePlatform,
    CanOperate,
    CanRead,
)
from ballast_common.openapi import CREATES_RESOURCE
from fastapi import APIRouter, Body, Path, Query, Response
from fastapi.exceptions import RequestValidationError
from pydantic import TypeAdapter, ValidationError

from taxlot_svc import custodian_day, service, taxes, transfers
from taxlot_svc.schemas import (
    ACCOUNT_ID_PATTERN,
    MAX_BATCH_BYTES,
    BatchResult,
    BreakResolutionIn,
    BreaksOut,
    CorporateActionIn,
    CorporateActionOut,
    GainsOut,
    HoldingsBatchIn,
    HoldingsIn,
    HoldingsOut,
    LotsOut,
    ReconciliationOut,
    ResolvedBreakOut,
    SleeveCashTransferIn,
    SleeveCashTransferOut,
    SleeveTransferIn,
    SleeveTransferOut,
    TaxSettingsOut,
    UnrealizedOut,
    WashSaleBlocksOut,
)

router = APIRouter()
_ACTION = TypeAdapter(CorporateActionIn)


def parse_action(body: dict[str, Any]) -> CorporateActionIn:
    """Validate a corporate action, naming fields without the union's tag (``numerator``,
    not ``split.numerator``; an unknown or missing ``type`` is ``type``)."""
    try:
        return _ACTION.validate_python(body)
    except ValidationError as exc:
        errors = []
        for err in exc.errors():
            if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
                loc: tuple[int | str, ...] = ("type",)
            else:
                loc = tuple(err["loc"][1:])
            errors.append({**err, "loc": ("body", *loc)})
        raise RequestValidationError(errors) from exc


AccountId = Annotated[str, Path(pattern=ACCOUNT_ID_PATTERN)]
HouseholdId = Annotated[str, Path(min_length=1, max_length=80)]
Year = Annotated[int | None, Query(ge=1900, le=2999, description="calendar year of the sale")]


@router.post(
    "/accounts/{account_id}/holdings",
    tags=["holdings"],
    summary="Record an account's opening balance (once): cash and positions with their lots",
    status_code=201,
    response_model=HoldingsOut,
    openapi_extra=CREATES_RESOURCE,
)
async def post_holdings(
    account_id: AccountId, body: HoldingsIn, uow: UoW, caller: CanLoadBooks
) -> HoldingsOut:
    return await service.load_holdings(uow, caller.tenant, caller.subject, account_id, body)


@router.post(
    "/holdings:batch",
    tags=["holdings"],
    summary="Opening balances of up to 2,000 accounts, all or nothing",
    status_code=201,
    response_model=BatchResult,
    max_body_size=MAX_BATCH_BYTES,
)
async def post_holdings_batch(body: HoldingsBatchIn, uow: UoW, caller: CanLoadBooks) -> BatchResult:
    return await service.load_holdings_batch(uow, caller.tenant, caller.subject, body.accounts)


@router.get("/accounts/{account_id}/holdings", tags=["holdings"], response_model=HoldingsOut)
async def get_holdings(account_id: str, session: ReadSession, caller: CanRead) -> HoldingsOut:
    return await service.holdings(session, caller.tenant, account_id)


@router.get("/accounts/{account_id}/lots", tags=["lots"], response_model=LotsOut)
async def get_lots(
    account_id: str,
    session: ReadSession,
    caller: CanRead,
    symbol: Annotated[str | None, Query(max_length=16)] = None,
) -> LotsOut:
    return await service.lots(session, caller.tenant, account_id, symbol)


@router.get(
    "/accounts/{account_id}/tax-settings",
    tags=["tax"],
    summary="The relief method and rates in use (read-only: set in account-svc, from "
    "account-changed)",
    response_model=TaxSettingsOut,
)
async def get_tax_settings(
    account_id: AccountId, session: ReadSession, caller: CanRead
) -> TaxSettingsOut:
    return await taxes.tax_settings(session, caller.tenant, account_id)


@router.get(
    "/accounts/{account_id}/realized-gains",
    tags=["tax"],
    summary="Realized gains by lot, wash-sale adjusted (code W), with short/long totals",
    response_model=GainsOut,
)
async def get_realized_gains(
    account_id: str, session: ReadSession, caller: CanRead, year: Year = None
) -> GainsOut:
    return await taxes.realized_gains(session, caller.tenant, account_id, year)


@router.get(
    "/accounts/{account_id}/form8949.csv",
    tags=["tax"],
    summary="Form 8949 rows (columns of `ballast taxlot form8949`)",
    response_class=Response,
    responses={200: {"content": {"text/csv": {}}}},
)
async def get_form8949(
    account_id: str, session: ReadSession, caller: CanRead, year: Year = None
) -> Response:
    text = await taxes.form8949_csv(session, caller.tenant, account_id, year)
    return Response(text, media_type="text/csv; charset=utf-8")


@router.get(
    "/accounts/{account_id}/unrealized",
    tags=["tax"],
    summary="Unrealized gain/loss per open lot",
    response_model=UnrealizedOut,
)
async def get_unrealized(
    account_id: str,
    session: ReadSession,
    caller: CanRead,
    prices: Annotated[
        Literal["from-last-fill", "security-master"],
        Query(description="last fill price (else security master), or security master"),
    ] = "security-master",
    on: Annotated[date | None, Query(description="day the terms are judged (today)")] = None,
) -> UnrealizedOut:
    return await taxes.unrealized(session, caller.tenant, account_id, prices, on)


@router.get(
    "/households/{household_id}/wash-sale-blocks",
    tags=["tax"],
    summary="Before the fact: what the household may not buy, which lots not sell at a loss",
    response_model=WashSaleBlocksOut,
)
async def get_wash_sale_blocks(
    household_id: HouseholdId,
    session: ReadSession,
    caller: CanRead,
    on: Annotated[date | None, Query(description="day of the intended trade (today)")] = None,
) -> WashSaleBlocksOut:
    return await taxes.wash_sale_blocks(session, caller.tenant, household_id, on)


@router.post(
    "/corporate-actions",
    tags=["corporate actions"],
    summary="Apply a corporate action (once per action id) to every account holding it",
    description="Corporate actions are platform-wide reference data, like the security "
    "master: an action applies to every account holding the security, of every tenant, so "
    "only a platform operator (platform:write) records one.",
    status_code=201,
    response_model=CorporateActionOut,
)
async def post_corporate_action(
    body: Annotated[
        dict[str, Any],
        Body(
            description="an action: `type` is split, reverse-split, symbol-change, "
            "cash-merger, stock-merger, spin-off or cash-dividend (schemas: CorporateActionIn)"
        ),
    ],
    uow: UoW,
    response: Response,
    caller: CanManagePlatform,
) -> CorporateActionOut:
    result = await service.apply_corporate_action(
        uow, caller.tenant, caller.subject, parse_action(body)
    )
    if result.repeated:
        response.status_code = 200
    return result


@router.post(
    "/accounts/{account_id}/sleeve-transfers",
    tags=["lots"],
    summary="Move shares between sleeves of the account (no taxable event), once per id",
    status_code=201,
    response_model=SleeveTransferOut,
)
async def post_sleeve_transfer(
    account_id: AccountId,
    body: SleeveTransferIn,
    uow: UoW,
    response: Response,
    caller: CanManageAccounts,
) -> SleeveTransferOut:
    result = await transfers.transfer_shares(uow, caller.tenant, caller.subject, account_id, body)
    if result.repeated:
        response.status_code = 200
    return result


@router.post(
    "/accounts/{account_id}/sleeve-cash-transfers",
    tags=["lots"],
    summary="Move cash between sleeves of the account (its cash stays), once per id",
    status_code=201,
    response_model=SleeveCashTransferOut,
)
async def post_sleeve_cash_transfer(
    account_id: AccountId,
    body: SleeveCashTransferIn,
    uow: UoW,
    response: Response,
    caller: CanManageAccounts,
) -> SleeveCashTransferOut:
    result = await transfers.transfer_cash(uow, caller.tenant, caller.subject, account_id, body)
    if result.repeated:
        response.status_code = 200
    return result


BreakStatus = Annotated[Literal["open"] | None, Query(description="only breaks in this status")]
After = Annotated[
    int, Query(ge=0, le=2**63 - 1, description="the `next_after` of the previous page")
]
PageSize = Annotated[int, Query(ge=1, le=1000)]
Custodian = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]


@router.get(
    "/reconciliations/{custodian}/{business_date}",
    tags=["reconciliation"],
    summary="A custodian's day reconciled: lots compared, matched, breaks by kind",
    response_model=ReconciliationOut,
)
async def get_reconciliation(
    custodian: Custodian, business_date: date, session: ReadSession, caller: CanRead
) -> dict[str, Any]:
    return await custodian_day.reconciliation(session, caller.tenant, custodian, business_date)


@router.get(
    "/breaks",
    tags=["reconciliation"],
    summary="Reconciliation breaks, in the order found (paged)",
    response_model=BreaksOut,
)
async def get_breaks(
    session: ReadSession,
    caller: CanRead,
    status: BreakStatus = None,
    account_id: Annotated[str | None, Query(pattern=ACCOUNT_ID_PATTERN)] = None,
    custodian: Annotated[str | None, Query(max_length=64)] = None,
    business_date: date | None = None,
    after: After = 0,
    limit: PageSize = 100,
) -> dict[str, Any]:
    where = custodian_day.BreakFilter(status, account_id, custodian, business_date)
    return await custodian_day.breaks(session, caller.tenant, where, after, limit)


@router.get(
    "/accounts/{account_id}/breaks",
    tags=["reconciliation"],
    summary="An account's reconciliation breaks (paged)",
    response_model=BreaksOut,
)
async def get_account_breaks(
    account_id: AccountId,
    session: ReadSession,
    caller: CanRead,
    status: BreakStatus = None,
    after: After = 0,
    limit: PageSize = 100,
) -> dict[str, Any]:
    where = custodian_day.BreakFilter(status, account_id)
    return await custodian_day.account_breaks(session, caller.tenant, where, after, limit)


BreakId = Annotated[int, Path(ge=1, le=2**63 - 1)]


@router.post(
    "/breaks/{break_id}/resolve",
    tags=["reconciliation"],
    summary="Resolve an open break by hand (keep ours, with a note); releases the account's "
    "hold when no open break suspends it any more",
    response_model=ResolvedBreakOut,
)
async def resolve_break(
    break_id: BreakId, body: BreakResolutionIn, uow: UoW, caller: CanOperate
) -> ResolvedBreakOut:
    return await custodian_day.resolve_break(uow, caller.tenant, caller.subject, break_id, body)
