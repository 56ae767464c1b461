"""Approvals on screen: the dashboard's proposal routes, forwarded to account-svc.

Decisions belong to account-svc (the one truth); the dashboard calls only this service's
origin, so these routes pass each request on with the caller's own bearer token (account-svc
checks it, the role and the tenant again) and hand its answer back unchanged: status, body
(problem+json included) and the headers a caller acts on. Nothing is decided or stored here.
account-svc unreachable, too slow or not configured: 503 problem+json naming it."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from ballast_common.auth import CanDecideProposals, CanRead
from ballast_common.pagination import Offset
from fastapi import APIRouter, Depends, Query, Request, Response

from reporting_svc.forwarding import Forwarder, close_forwarder_clients, forwarder_of
from reporting_svc.settings import Settings

ACCOUNT_SVC = "account-svc"


class AccountSvc(Forwarder):
    """account-svc's REST API as the dashboard's approval routes reach it."""

    service = ACCOUNT_SVC
    setting = "REPORTING_SVC_ACCOUNT_SVC_URL"
    needed_for = "proposals cannot be read or decided"

    @classmethod
    def url_and_timeout(cls, settings: Settings) -> tuple[str, float]:
        return settings.account_svc_url, settings.account_svc_timeout_s


account_svc = forwarder_of(AccountSvc, "account_svc")
close_account_svc_clients = close_forwarder_clients  # (closes every forwarder's client)

AccountSvcDep = Annotated[AccountSvc, Depends(account_svc)]
ProposalId = uuid.UUID  # a path parameter: never anything that could change account-svc's path
Limit = Annotated[int, Query(ge=1, le=1000)]
FORWARDED = "Forwarded to account-svc with the caller's token; its answer passed back as is."

router = APIRouter(prefix="/approvals", tags=["approvals"])


@router.get(
    "/proposals",
    summary="Proposals of the tenant (default: pending), oldest first",
    description=FORWARDED + " account-svc: GET /proposals.",
)
async def list_proposals(
    request: Request,
    account_svc: AccountSvcDep,
    caller: CanRead,
    status: Literal["pending", "approved", "rejected"] | None = "pending",
    account_id: Annotated[str | None, Query(max_length=64)] = None,
    routed_by: Annotated[str | None, Query(max_length=100)] = None,
    held: bool | None = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> Response:
    params = {
        "status": status,
        "account_id": account_id,
        "routed_by": routed_by,
        "held": None if held is None else str(held).lower(),
        "limit": limit,
        "offset": offset,
    }
    return await account_svc.forward(request, "GET", "/proposals", params)


@router.get(
    "/counts",
    summary="How many proposals wait for a decision, per filter that held them",
    description=FORWARDED + " account-svc: GET /proposal-counts.",
)
async def pending_counts(
    request: Request, account_svc: AccountSvcDep, caller: CanRead, offset: Offset = 0
) -> Response:
    return await account_svc.forward(request, "GET", "/proposal-counts", {"offset": offset})


@router.post(
    "/proposals/approve",
    summary="Approve many pending proposals at once: {proposal_ids} or {filter_id}, note",
    description=FORWARDED + " account-svc: POST /proposals/approve.",
)
async def approve_many(
    request: Request, account_svc: AccountSvcDep, caller: CanDecideProposals
) -> Response:
    return await account_svc.forward(request, "POST", "/proposals/approve")


@router.get(
    "/proposals/{proposal_id}",
    summary="One proposal with its trades",
    description=FORWARDED + " account-svc: GET /proposals/{proposal_id}.",
)
async def get_proposal(
    proposal_id: ProposalId, request: Request, account_svc: AccountSvcDep, caller: CanRead
) -> Response:
    return await account_svc.forward(request, "GET", f"/proposals/{proposal_id}")


@router.get(
    "/proposals/{proposal_id}/history",
    summary="The proposal's decisions and edits: who, when, before and after",
    description=FORWARDED + " account-svc: GET /proposals/{proposal_id}/history.",
)
async def get_history(
    proposal_id: ProposalId,
    request: Request,
    account_svc: AccountSvcDep,
    caller: CanRead,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Response:
    params = {"limit": limit, "offset": offset}
    return await account_svc.forward(request, "GET", f"/proposals/{proposal_id}/history", params)


async def _decide(
    action: Literal["approve", "reject", "edit"],
    proposal_id: ProposalId,
    request: Request,
    account_svc: AccountSvc,
) -> Response:
    return await account_svc.forward(request, "POST", f"/proposals/{proposal_id}/{action}")


@router.post(
    "/proposals/{proposal_id}/approve",
    summary="Approve a pending proposal: {note}",
    description=FORWARDED + " account-svc: POST /proposals/{proposal_id}/approve.",
)
async def approve(
    proposal_id: ProposalId,
    request: Request,
    account_svc: AccountSvcDep,
    caller: CanDecideProposals,
) -> Response:
    return await _decide("approve", proposal_id, request, account_svc)


@router.post(
    "/proposals/{proposal_id}/reject",
    summary="Reject a pending proposal: {note}",
    description=FORWARDED + " account-svc: POST /proposals/{proposal_id}/reject.",
)
async def reject(
    proposal_id: ProposalId,
    request: Request,
    account_svc: AccountSvcDep,
    caller: CanDecideProposals,
) -> Response:
    return await _decide("reject", proposal_id, request, account_svc)


@router.post(
    "/proposals/{proposal_id}/edit",
    summary="Edit a pending proposal: {trades: [{trade_id, quantity}], remove: [trade_id], note}",
    description=FORWARDED + " account-svc: POST /proposals/{proposal_id}/edit.",
)
async def edit(
    proposal_id: ProposalId,
    request: Request,
    account_svc: AccountSvcDep,
    caller: CanDecideProposals,
) -> Response:
    return await _decide("edit", proposal_id, request, account_svc)
