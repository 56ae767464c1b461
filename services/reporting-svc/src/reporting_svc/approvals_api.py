"""Approvals on screen: the dashboard's proposal routes, forwarded to account-svc.

Decisions belong to account-svc (the one truth); the dashboard calls only this service's
origin, so these routes pass each request on with the caller's own bearer token (account-svc
checks it, the role and the tenant again) and hand its answer back unchanged: status, body
(problem+json included) and the headers a caller acts on. Nothing is decided or stored here.
account-svc unreachable, too slow or not configured: 503 problem+json naming it."""

from __future__ import annotations

import asyncio
import uuid
import weakref
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import httpx
from ballast_common.app import Runtime, get_runtime
from ballast_common.auth import CanDecideProposals, CanRead
from ballast_common.errors import BallastError
from ballast_common.pagination import Offset
from ballast_common.telemetry import current_trace_headers
from fastapi import APIRouter, Depends, Query, Request, Response

from reporting_svc.settings import Settings

ACCOUNT_SVC = "account-svc"
# What a caller acts on in account-svc's answer; everything else is account-svc's business.
PASSED_BACK_HEADERS = ("content-type", "retry-after", "idempotent-replayed", "www-authenticate")
PASSED_ON_HEADERS = ("authorization", "idempotency-key", "content-type", "accept")

_clients: weakref.WeakSet[httpx.AsyncClient] = weakref.WeakSet()


@dataclass
class ServiceUnavailable(BallastError):
    retry_after_s: int = 2
    status = 503
    title = "Service unavailable"

    def response_headers(self) -> dict[str, str] | None:
        return {"Retry-After": str(self.retry_after_s)}


class AccountSvc:
    """account-svc's REST API as the dashboard's routes reach it: one client per app."""

    def __init__(
        self, client: httpx.AsyncClient | None, timeout_s: float, retry_after_s: int = 2
    ) -> None:
        self.client = client
        self.timeout_s = timeout_s
        self.retry_after_s = retry_after_s

    @classmethod
    def from_settings(cls, settings: Settings) -> AccountSvc:
        timeout_s, retry_after_s = settings.account_svc_timeout_s, settings.retry_after_s
        if not settings.account_svc_url:
            return cls(None, timeout_s, retry_after_s)
        client = httpx.AsyncClient(
            base_url=settings.account_svc_url,
            timeout=httpx.Timeout(timeout_s),
            follow_redirects=False,
        )
        _clients.add(client)
        return cls(client, timeout_s, retry_after_s)

    async def forward(
        self, request: Request, method: str, path: str, params: dict[str, Any] | None = None
    ) -> Response:
        """`request` sent on to account-svc's `path`; its answer as this route's."""
        if self.client is None:
            raise ServiceUnavailable(
                f"{ACCOUNT_SVC} is not configured here (REPORTING_SVC_ACCOUNT_SVC_URL), so "
                "proposals cannot be read or decided through the dashboard",
                retry_after_s=self.retry_after_s,
            )
        headers = {h: request.headers[h] for h in PASSED_ON_HEADERS if h in request.headers}
        headers.update(current_trace_headers())
        content = await request.body() if method == "POST" else None
        query = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            answer = await self.client.request(
                method, path, params=query, content=content, headers=headers
            )
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise ServiceUnavailable(
                f"{ACCOUNT_SVC} cannot be reached ({type(exc).__name__}), so the request "
                "was not sent; retry shortly",
                retry_after_s=self.retry_after_s,
            ) from None
        except httpx.TransportError as exc:  # sent, and no whole answer came back
            raise ServiceUnavailable(
                f"{ACCOUNT_SVC} did not answer ({type(exc).__name__}; at most "
                f"{self.timeout_s:g} s per request): the request may or may not have been "
                "applied, so look at the proposal before retrying",
                retry_after_s=self.retry_after_s,
            ) from None
        kept = {h: answer.headers[h] for h in PASSED_BACK_HEADERS if h in answer.headers}
        return Response(answer.content, status_code=answer.status_code, headers=kept)


def account_svc(request: Request) -> AccountSvc:
    """The app's forwarder to account-svc, made on first use from the service's settings."""
    forwarder = getattr(request.app.state, "account_svc", None)
    if forwarder is None:
        settings = get_runtime(request).settings
        assert isinstance(settings, Settings)
        forwarder = request.app.state.account_svc = AccountSvc.from_settings(settings)
    assert isinstance(forwarder, AccountSvc)
    return forwarder


async def close_account_svc_clients(runtime: Runtime) -> None:
    """A background task: closes the forwarders' clients when the service stops."""
    try:
        await asyncio.Event().wait()
    finally:
        for client in list(_clients):
            await client.aclose()


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
