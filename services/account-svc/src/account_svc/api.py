"""account-svc's REST routes: parse, call the service layer, return."""

from typing import Annotated, Literal

from ballast_common.app import ReadSession, UoW
from fastapi import APIRouter, Header, Query

from account_svc import repository as repo
from account_svc import service
from account_svc.schemas import (
    AccountIn,
    AccountOut,
    AccountPatch,
    AccountsIn,
    Decision,
    ProposalOut,
)

router = APIRouter()
Actor = Annotated[str, Header(alias="X-Actor", description="who makes the change")]


@router.post("/accounts", tags=["accounts"], status_code=201, response_model=AccountOut)
async def open_account(body: AccountIn, uow: UoW) -> AccountOut:
    return (await service.open_accounts(uow, [body]))[0]


@router.post(
    "/accounts:batch", tags=["accounts"], status_code=201, summary="Open many accounts, all or none"
)
async def open_accounts(body: AccountsIn, uow: UoW) -> dict[str, int]:
    return {"opened": len(await service.open_accounts(uow, body.accounts))}


@router.get("/accounts", tags=["accounts"], response_model=list[AccountOut])
async def list_accounts(
    session: ReadSession,
    household_id: str | None = None,
    model_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[AccountOut]:
    rows = await repo.list_accounts(
        session, household_id=household_id, model_id=model_id, limit=limit, offset=offset
    )
    return [AccountOut.model_validate(r, from_attributes=True) for r in rows]


@router.get("/accounts/{account_id}", tags=["accounts"], response_model=AccountOut)
async def get_account(account_id: str, session: ReadSession) -> AccountOut:
    return await service.get_account(session, account_id)


@router.patch("/accounts/{account_id}", tags=["accounts"], response_model=AccountOut)
async def change_account(account_id: str, body: AccountPatch, uow: UoW) -> AccountOut:
    return await service.change_account(uow, account_id, body)


@router.get("/proposals", tags=["approvals"], response_model=list[ProposalOut])
async def list_proposals(
    session: ReadSession,
    status: Literal["pending", "approved", "rejected"] | None = None,
    account_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[ProposalOut]:
    rows = await repo.list_proposals(
        session, status=status, account_id=account_id, limit=limit, offset=offset
    )
    return [ProposalOut.model_validate(r, from_attributes=True) for r in rows]


@router.post("/proposals/{proposal_id}/approve", tags=["approvals"], response_model=ProposalOut)
async def approve(
    proposal_id: str,
    body: Decision,
    uow: UoW,
    actor: Actor = "api",
    tenant: Annotated[str, Header(alias="X-Tenant")] = "demo",
) -> ProposalOut:
    return await service.decide(uow, proposal_id, True, actor, body.note, tenant)


@router.post("/proposals/{proposal_id}/reject", tags=["approvals"], response_model=ProposalOut)
async def reject(
    proposal_id: str,
    body: Decision,
    uow: UoW,
    actor: Actor = "api",
    tenant: Annotated[str, Header(alias="X-Tenant")] = "demo",
) -> ProposalOut:
    return await service.decide(uow, proposal_id, False, actor, body.note, tenant)
