"""Filters: saved queries over accounts and their latest proposal that route proposals (in
service.receive_proposals), kept with their history; and proposals approved in bulk."""

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from ballast_common import audit
from ballast_common.audit import AuditEntry
from ballast_common.errors import FieldProblem, InvalidInput, NotFound
from ballast_common.uow import Cause, UnitOfWork
from sqlmodel.ext.asyncio.session import AsyncSession

from account_svc import filters_repository, service
from account_svc.filter_conditions import Condition, validate_conditions
from account_svc.filters_schemas import (
    MAX_FILTERS,
    BulkApproval,
    BulkApprovalOut,
    FilterIn,
    FilterOut,
    SkippedProposal,
)
from account_svc.schemas import AccountOut
from account_svc.tables import Filter, Proposal

APPROVALS_PER_STATEMENT = 5000  # proposals approved (and announced) per UPDATE
FILTER_ORDER_SUBJECT = "filters"


def _out(row: Filter) -> FilterOut:
    return FilterOut.model_validate(row, from_attributes=True)


def _doc(row: Filter) -> dict[str, Any]:
    return row.model_dump(exclude={"updated_at"})


def conditions_of(row: Filter) -> list[Condition]:
    """A stored filter's conditions."""
    return [Condition.model_validate(c) for c in row.conditions]


async def put_filter(
    uow: UnitOfWork, tenant: str, actor: str, filter_id: str, body: FilterIn
) -> FilterOut:
    """Create a filter of the tenant (evaluated after the others) or replace one (its place
    in the order stays; its version goes up); 422 naming the condition's field."""
    problems = validate_conditions(body.conditions, "conditions")
    if problems:
        raise InvalidInput(f"invalid filter: {problems[0].field}: {problems[0].message}", problems)
    session = uow.session
    row = await filters_repository.get_filter(session, tenant, filter_id, for_update=True)
    conditions = [c.model_dump(mode="json") for c in body.conditions]
    now = datetime.now(UTC)
    if row is None:
        position = await filters_repository.next_position(session, tenant)
        if len(await filters_repository.list_filters(session, tenant)) >= MAX_FILTERS:
            raise InvalidInput(
                f"a tenant has at most {MAX_FILTERS} filters",
                [FieldProblem("filter_id", f"at most {MAX_FILTERS} filters")],
            )
        before = None
        row = Filter(
            tenant=tenant,
            filter_id=filter_id,
            name=body.name,
            position=position,
            action=body.action,
            conditions=conditions,
            enabled=body.enabled,
            updated_by=actor,
            updated_at=now,
        )
    else:
        before = _doc(row)
        row.name, row.action, row.conditions = body.name, body.action, conditions
        row.enabled, row.updated_by, row.updated_at = body.enabled, actor, now
        row.version += 1
    await filters_repository.save_filter(session, row)
    action = "create" if before is None else "update"
    entry = AuditEntry(actor, action, "filter", filter_id, before, _doc(row))
    await audit.append(session, tenant, [entry])
    return _out(row)


async def get_filter(session: AsyncSession, tenant: str, filter_id: str) -> FilterOut:
    """A filter of the tenant (another tenant's answers as unknown)."""
    return _out(await _filter(session, tenant, filter_id))


async def _filter(session: AsyncSession, tenant: str, filter_id: str) -> Filter:
    row = await filters_repository.get_filter(session, tenant, filter_id)
    if row is None:
        raise NotFound(f"no filter {filter_id}")
    return row


async def list_filters(
    session: AsyncSession, tenant: str, limit: int, offset: int
) -> list[FilterOut]:
    """A page of the tenant's filters in evaluation order."""
    rows = await filters_repository.list_filters(session, tenant, limit=limit, offset=offset)
    return [_out(r) for r in rows]


async def delete_filter(uow: UnitOfWork, tenant: str, actor: str, filter_id: str) -> None:
    """Delete a filter of the tenant (its history stays in the audit trail)."""
    row = await filters_repository.get_filter(uow.session, tenant, filter_id, for_update=True)
    if row is None:
        raise NotFound(f"no filter {filter_id}")
    before = _doc(row)
    await filters_repository.delete_filter(uow.session, tenant, filter_id)
    await audit.append(
        uow.session, tenant, [AuditEntry(actor, "delete", "filter", filter_id, before, None)]
    )


async def order_filters(
    uow: UnitOfWork, tenant: str, actor: str, filter_ids: Sequence[str]
) -> list[FilterOut]:
    """Set the evaluation order: every filter of the tenant, each once."""
    rows = await filters_repository.list_filters(uow.session, tenant, for_update=True)
    known = {r.filter_id for r in rows}
    problems: list[FieldProblem] = []
    seen: set[str] = set()
    for i, filter_id in enumerate(filter_ids):
        if filter_id in seen:
            problems.append(FieldProblem(f"filter_ids[{i}]", f"{filter_id} appears twice"))
        elif filter_id not in known:
            problems.append(FieldProblem(f"filter_ids[{i}]", f"no filter {filter_id}"))
        seen.add(filter_id)
    missing = sorted(known - seen)
    if missing:
        problems.append(FieldProblem("filter_ids", f"missing filters: {', '.join(missing)}"))
    if problems:
        raise InvalidInput(f"invalid order: {problems[0].field}: {problems[0].message}", problems)
    before = [r.filter_id for r in rows]
    await filters_repository.set_positions(uow.session, tenant, filter_ids)
    entry = AuditEntry(
        actor, "order", "filter-order", FILTER_ORDER_SUBJECT, before, list(filter_ids)
    )
    await audit.append(uow.session, tenant, [entry])
    uow.session.expire_all()
    return [_out(r) for r in await filters_repository.list_filters(uow.session, tenant)]


async def filter_accounts(
    session: AsyncSession, tenant: str, filter_id: str, limit: int, offset: int
) -> tuple[list[AccountOut], int]:
    """A page of the accounts a filter of the tenant selects now, and how many it selects."""
    row = await _filter(session, tenant, filter_id)
    accounts, total = await filters_repository.selected_accounts_page(
        session, tenant, conditions_of(row), limit, offset
    )
    return [service.view(a) for a in accounts], total


def approval_skip_reason(status: str, account_status: str) -> str | None:
    """Why a proposal cannot be approved now (None: it can)."""
    if status != "pending":
        return f"proposal is {status}"
    if account_status != "active":
        return f"account is {account_status}: trades cannot go out"
    return None


async def approve_in_bulk(
    uow: UnitOfWork, tenant: str, actor: str, body: BulkApproval
) -> BulkApprovalOut:
    """Approve, in one transaction, the pending proposals selected (a filter's accounts'
    latest, or the ids given) of the tenant's active accounts; each approval is audited and
    announced as one decision would be; the others are listed with why."""
    if (body.filter_id is None) == (body.proposal_ids is None):
        raise InvalidInput(
            "give either filter_id or proposal_ids",
            [FieldProblem("filter_id", "exactly one of filter_id and proposal_ids")],
        )
    session = uow.session
    skipped: list[SkippedProposal] = []
    if body.filter_id is not None:
        row = await filters_repository.get_filter(session, tenant, body.filter_id)
        if row is None:
            raise InvalidInput(
                f"no filter {body.filter_id}", [FieldProblem("filter_id", "unknown filter")]
            )
        states = await filters_repository.pending_latest_proposals(
            session, tenant, conditions_of(row)
        )
        wanted: list[str] = list(states)
    else:
        wanted = list(dict.fromkeys(body.proposal_ids or []))
        states = await filters_repository.proposal_states(session, tenant, wanted)
    approvable: list[str] = []
    for proposal_id in wanted:
        state = states.get(proposal_id)
        reason = "no such proposal" if state is None else approval_skip_reason(*state[:2])
        if reason is None:
            approvable.append(proposal_id)
        else:
            skipped.append(SkippedProposal(proposal_id=proposal_id, reason=reason))
    now = datetime.now(UTC)
    approved = 0
    for start in range(0, len(approvable), APPROVALS_PER_STATEMENT):
        chunk = approvable[start : start + APPROVALS_PER_STATEMENT]
        rows = await filters_repository.approve_proposals(session, chunk, actor, body.note, now)
        entries: list[AuditEntry] = []
        for proposal in rows:
            after = service.decision_doc(proposal)
            before = {
                **after,
                "status": "pending",
                "decided_by": None,
                "decided_at": None,
                "decision_note": states[proposal.proposal_id][2],
            }
            entries.append(
                AuditEntry(actor, "approve", "proposal", proposal.proposal_id, before, after)
            )
            service.announce_approval(uow, proposal, tenant, cause=_cause(proposal))
        await audit.append(session, tenant, entries)
        approved += len(rows)
    return BulkApprovalOut(approved=approved, skipped=skipped)


def _cause(proposal: Proposal) -> Cause:
    return Cause(proposal.cause_event_id, proposal.traceparent, proposal.tracestate)
