"""account-svc's REST routes: parse, call the service layer, return."""

from typing import Annotated, Literal

from ballast_common.app import ReadSession, UoW
from ballast_common.audit import (
    AfterQuery,
    AuditLimit,
    AuditRecordOut,
)
from ballast_common.auth import CanDecideProposals, CanManageAccounts, CanRead
from ballast_common.errors import NotFound
from ballast_common.openapi import CREATES_RESOURCE
from ballast_common.pagination import Offset, Page
from fastapi import APIRouter, Path, Query

from account_svc import repository, service, strategies
from account_svc.repository import PostgresAccountRepository
from account_svc.schemas import (
    AccountIn,
    AccountOut,
    AccountPatch,
    AccountsIn,
    Decision,
    KnownModelOut,
    ProposalOut,
    RebalanceSettings,
    RestrictionChangeOut,
    RestrictionsIn,
    RestrictionsOut,
    SecurityListIn,
    SecurityListOut,
    Strategy,
    TaxSettings,
)
from account_svc.strategies_schemas import AccountStrategyIn

router = APIRouter()
Limit = Annotated[int, Query(ge=1, le=5000)]


@router.post("/accounts", tags=["accounts"], status_code=201, response_model=AccountOut)
async def open_account(body: AccountIn, uow: UoW, caller: CanManageAccounts) -> AccountOut:
    repo = PostgresAccountRepository(uow.session)
    return (await service.open_accounts(uow, repo, caller.tenant, caller.subject, [body]))[0]


@router.post(
    "/accounts:batch", tags=["accounts"], status_code=201, summary="Open many accounts, all or none"
)
async def open_accounts(body: AccountsIn, uow: UoW, caller: CanManageAccounts) -> dict[str, int]:
    repo = PostgresAccountRepository(uow.session)
    opened = await service.open_accounts(uow, repo, caller.tenant, caller.subject, body.accounts)
    return {"opened": len(opened)}


@router.get(
    "/accounts",
    tags=["accounts"],
    response_model=Page[AccountOut],
    summary="Accounts; model_id: SMAs following the model and UMAs with a sleeve on it",
)
async def list_accounts(
    session: ReadSession,
    caller: CanRead,
    household_id: str | None = None,
    model_id: str | None = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[AccountOut]:
    rows = await repository.list_accounts(
        session,
        caller.tenant,
        household_id=household_id,
        model_id=model_id,
        limit=limit + 1,
        offset=offset,
    )
    return Page[AccountOut].of([service.view(r) for r in rows], limit, offset)


@router.get("/accounts/{account_id}", tags=["accounts"], response_model=AccountOut)
async def get_account(account_id: str, session: ReadSession, caller: CanRead) -> AccountOut:
    return await service.get_account(PostgresAccountRepository(session), caller.tenant, account_id)


@router.patch("/accounts/{account_id}", tags=["accounts"], response_model=AccountOut)
async def change_account(
    account_id: str, body: AccountPatch, uow: UoW, caller: CanManageAccounts
) -> AccountOut:
    return await service.change_account(
        uow,
        PostgresAccountRepository(uow.session),
        caller.tenant,
        account_id,
        body,
        actor=caller.subject,
    )


@router.get(
    "/accounts/{account_id}/rebalance-settings",
    tags=["account settings"],
    response_model=RebalanceSettings,
)
async def get_rebalance_settings(
    account_id: str, session: ReadSession, caller: CanRead
) -> RebalanceSettings:
    repo = PostgresAccountRepository(session)
    return (await service.get_account(repo, caller.tenant, account_id)).rebalance_settings


@router.put(
    "/accounts/{account_id}/rebalance-settings",
    tags=["account settings"],
    response_model=RebalanceSettings,
    summary="Replace the rebalance settings (absent or null fields: rebalance-svc's defaults)",
)
async def put_rebalance_settings(
    account_id: str, body: RebalanceSettings, uow: UoW, caller: CanManageAccounts
) -> RebalanceSettings:
    return await service.set_rebalance_settings(
        uow,
        PostgresAccountRepository(uow.session),
        caller.tenant,
        account_id,
        body,
        actor=caller.subject,
    )


@router.get(
    "/accounts/{account_id}/restrictions", tags=["account settings"], response_model=RestrictionsOut
)
async def get_restrictions(
    account_id: str, session: ReadSession, caller: CanRead
) -> RestrictionsOut:
    account = await service.get_account(
        PostgresAccountRepository(session), caller.tenant, account_id
    )
    return RestrictionsOut(restrictions=account.restrictions)


@router.put(
    "/accounts/{account_id}/restrictions",
    tags=["account settings"],
    response_model=RestrictionsOut,
    summary="Replace the restrictions (do-not-buy/sell/hold on a security, sector or list)",
)
async def put_restrictions(
    account_id: str, body: RestrictionsIn, uow: UoW, caller: CanManageAccounts
) -> RestrictionsOut:
    repo = PostgresAccountRepository(uow.session)
    return RestrictionsOut(
        restrictions=await service.set_restrictions(
            uow, repo, caller.tenant, caller.subject, account_id, body.restrictions
        )
    )


@router.get(
    "/accounts/{account_id}/restriction-history",
    tags=["account settings"],
    response_model=Page[RestrictionChangeOut],
    summary="Restrictions changed by corporate actions (replaced, merged, dropped), oldest first",
)
async def get_restriction_history(
    account_id: str, session: ReadSession, caller: CanRead, limit: Limit = 500, offset: Offset = 0
) -> Page[RestrictionChangeOut]:
    rows = await service.restriction_history(session, caller.tenant, account_id, limit + 1, offset)
    changes = [RestrictionChangeOut.model_validate(r, from_attributes=True) for r in rows]
    return Page[RestrictionChangeOut].of(changes, limit, offset)


@router.get(
    "/accounts/{account_id}/tax-settings", tags=["account settings"], response_model=TaxSettings
)
async def get_tax_settings(account_id: str, session: ReadSession, caller: CanRead) -> TaxSettings:
    repo = PostgresAccountRepository(session)
    return (await service.get_account(repo, caller.tenant, account_id)).tax_settings


@router.put(
    "/accounts/{account_id}/tax-settings",
    tags=["account settings"],
    response_model=TaxSettings,
    summary="Replace the tax settings (absent fields: the documented defaults)",
)
async def put_tax_settings(
    account_id: str, body: TaxSettings, uow: UoW, caller: CanManageAccounts
) -> TaxSettings:
    return await service.set_tax_settings(
        uow,
        PostgresAccountRepository(uow.session),
        caller.tenant,
        account_id,
        body,
        actor=caller.subject,
    )


@router.get("/accounts/{account_id}/strategy", tags=["account settings"], response_model=Strategy)
async def get_strategy(account_id: str, session: ReadSession, caller: CanRead) -> Strategy:
    account = await service.get_account(
        PostgresAccountRepository(session), caller.tenant, account_id
    )
    if account.strategy is None:
        raise NotFound(f"account {account_id} has no strategy (it is not a UMA)")
    return account.strategy


@router.put(
    "/accounts/{account_id}/strategy",
    tags=["account settings"],
    response_model=Strategy,
    summary="Make the account a UMA: its own sleeves (model, weight, band) and range, or a "
    "reusable strategy to follow (strategy_id)",
)
async def put_strategy(
    account_id: str, body: AccountStrategyIn, uow: UoW, caller: CanManageAccounts
) -> Strategy:
    return await strategies.set_account_strategy(
        uow,
        PostgresAccountRepository(uow.session),
        caller.tenant,
        account_id,
        body,
        actor=caller.subject,
    )


@router.delete(
    "/accounts/{account_id}/strategy",
    tags=["account settings"],
    response_model=AccountOut,
    summary="The account stops being a UMA (it follows no model until PATCHed one)",
)
async def delete_strategy(account_id: str, uow: UoW, caller: CanManageAccounts) -> AccountOut:
    return await strategies.clear_account_strategy(
        uow, PostgresAccountRepository(uow.session), caller.tenant, account_id, actor=caller.subject
    )


@router.get(
    "/models",
    tags=["accounts"],
    response_model=Page[KnownModelOut],
    summary="The models of the caller's tenant accounts may follow (as model-hub-svc announced "
    "them), by id",
)
async def list_models(
    session: ReadSession, caller: CanRead, limit: Limit = 500, offset: Offset = 0
) -> Page[KnownModelOut]:
    models = await service.known_models(session, caller.tenant, limit + 1, offset)
    return Page[KnownModelOut].of(models, limit, offset)


@router.get(
    "/security-lists",
    tags=["security lists"],
    response_model=Page[SecurityListOut],
    summary="The caller's tenant's lists, by id",
)
async def list_security_lists(
    session: ReadSession, caller: CanRead, limit: Limit = 500, offset: Offset = 0
) -> Page[SecurityListOut]:
    rows = await repository.list_security_lists(session, caller.tenant, limit + 1, offset)
    lists = [SecurityListOut.model_validate(r, from_attributes=True) for r in rows]
    return Page[SecurityListOut].of(lists, limit, offset)


@router.get("/security-lists/{list_id}", tags=["security lists"], response_model=SecurityListOut)
async def get_security_list(list_id: str, session: ReadSession, caller: CanRead) -> SecurityListOut:
    return await service.get_security_list(session, caller.tenant, list_id)


@router.get(
    "/security-lists/{list_id}/history",
    tags=["security lists"],
    response_model=Page[RestrictionChangeOut],
    summary="Members changed by corporate actions, oldest first",
)
async def get_security_list_history(
    list_id: str, session: ReadSession, caller: CanRead, limit: Limit = 500, offset: Offset = 0
) -> Page[RestrictionChangeOut]:
    rows = await service.list_history(session, caller.tenant, list_id, limit + 1, offset)
    changes = [RestrictionChangeOut.model_validate(r, from_attributes=True) for r in rows]
    return Page[RestrictionChangeOut].of(changes, limit, offset)


@router.put(
    "/security-lists/{list_id}",
    tags=["security lists"],
    response_model=SecurityListOut,
    summary="Create or replace a named list of the caller's tenant (e.g. an ESG screen) that "
    "its accounts' restrictions may name",
    openapi_extra=CREATES_RESOURCE,
)
async def put_security_list(
    list_id: Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")],
    body: SecurityListIn,
    uow: UoW,
    caller: CanManageAccounts,
) -> SecurityListOut:
    return await service.put_security_list(uow, caller.tenant, caller.subject, list_id, body)


@router.get(
    "/proposals", tags=["approvals"], response_model=Page[ProposalOut], summary="Oldest first"
)
async def list_proposals(
    session: ReadSession,
    caller: CanRead,
    status: Literal["pending", "approved", "rejected"] | None = None,
    account_id: str | None = None,
    routed_by: Annotated[
        str | None,
        Query(description='"filter:<id>@<version>" or "auto_approve": what routed them'),
    ] = None,
    held: Annotated[
        bool, Query(description="pending proposals a filter held (review or suspend)")
    ] = False,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[ProposalOut]:
    rows = await repository.list_proposals(
        session,
        caller.tenant,
        status=status,
        account_id=account_id,
        limit=limit + 1,
        offset=offset,
        routed_by=routed_by,
        held=held,
    )
    proposals = [ProposalOut.model_validate(r, from_attributes=True) for r in rows]
    return Page[ProposalOut].of(proposals, limit, offset)


@router.post("/proposals/{proposal_id}/approve", tags=["approvals"], response_model=ProposalOut)
async def approve(
    proposal_id: str, body: Decision, uow: UoW, caller: CanDecideProposals
) -> ProposalOut:
    repo = PostgresAccountRepository(uow.session)
    return await service.decide(
        uow, repo, caller.tenant, caller.subject, proposal_id, True, body.note
    )


@router.post("/proposals/{proposal_id}/reject", tags=["approvals"], response_model=ProposalOut)
async def reject(
    proposal_id: str, body: Decision, uow: UoW, caller: CanDecideProposals
) -> ProposalOut:
    repo = PostgresAccountRepository(uow.session)
    return await service.decide(
        uow, repo, caller.tenant, caller.subject, proposal_id, False, body.note
    )


@router.get(
    "/accounts/{account_id}/audit",
    tags=["audit"],
    response_model=Page[AuditRecordOut],
    summary="An account's audit trail, in order",
)
async def list_account_audit_records(
    account_id: str,
    session: ReadSession,
    caller: CanRead,
    after: AfterQuery = None,
    limit: AuditLimit = 100,
    offset: Offset = 0,
) -> Page[AuditRecordOut]:
    records = await service.account_audit_trail(
        session, caller.tenant, account_id, after, limit + 1, offset
    )
    return Page[AuditRecordOut].of(records, limit, offset)
