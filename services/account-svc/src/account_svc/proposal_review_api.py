"""Routes for reviewing one proposal: read it, edit it, its history; pending counts."""

from typing import Annotated

from ballast_common.app import ReadSession, UoW
from ballast_common.audit import AuditLimit, AuditRecordOut
from ballast_common.auth import CanDecideProposals, CanRead
from ballast_common.pagination import Offset, Page
from fastapi import APIRouter, Query

from account_svc import proposal_edit
from account_svc.proposal_review_schemas import PendingProposals, ProposalEdit
from account_svc.repository import PostgresAccountRepository
from account_svc.schemas import ProposalOut

router = APIRouter()


@router.get(
    "/proposal-counts",
    tags=["approvals"],
    response_model=Page[PendingProposals],
    summary="How many proposals wait for a decision, per filter (routed_by) that held them",
)
async def pending_proposal_counts(
    session: ReadSession,
    caller: CanRead,
    limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
    offset: Offset = 0,
) -> Page[PendingProposals]:
    counts = await proposal_edit.pending_proposals(session, caller.tenant, limit + 1, offset)
    return Page[PendingProposals].of(counts, limit, offset)


@router.get("/proposals/{proposal_id}", tags=["approvals"], response_model=ProposalOut)
async def get_proposal(proposal_id: str, session: ReadSession, caller: CanRead) -> ProposalOut:
    return await proposal_edit.get_proposal(session, caller.tenant, proposal_id)


@router.post(
    "/proposals/{proposal_id}/edit",
    tags=["approvals"],
    response_model=ProposalOut,
    summary="Change quantities of, or remove, a pending proposal's trades (it stays pending)",
)
async def edit_proposal(
    proposal_id: str, body: ProposalEdit, uow: UoW, caller: CanDecideProposals
) -> ProposalOut:
    repo = PostgresAccountRepository(uow.session)
    return await proposal_edit.edit_proposal(
        uow, repo, caller.tenant, caller.subject, proposal_id, body
    )


@router.get(
    "/proposals/{proposal_id}/history",
    tags=["approvals"],
    response_model=Page[AuditRecordOut],
    summary="The proposal's decisions and edits: who, when, before and after, in order",
)
async def get_proposal_history(
    proposal_id: str,
    session: ReadSession,
    caller: CanRead,
    limit: AuditLimit = 100,
    offset: Offset = 0,
) -> Page[AuditRecordOut]:
    records = await proposal_edit.proposal_history(
        session, caller.tenant, proposal_id, limit + 1, offset
    )
    return Page[AuditRecordOut].of(records, limit, offset)
