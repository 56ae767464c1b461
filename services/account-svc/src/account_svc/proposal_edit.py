"""Reviewing a pending proposal: a person lowers or raises quantities or removes trades
before approving it. The edited trades are what the approval announces; the edit is kept in
the audit trail with the trades before and after and who made it."""

from collections.abc import Sequence
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from ballast_common import audit
from ballast_common.audit import AuditEntry, AuditRecordOut
from ballast_common.contracts.events import TradeV1
from ballast_common.errors import Conflict, FieldProblem, InvalidInput, NotFound
from ballast_common.uow import UnitOfWork
from sqlmodel.ext.asyncio.session import AsyncSession

from account_svc import proposal_review_repository
from account_svc.ports import AccountRepository
from account_svc.proposal_review_schemas import PendingProposals, ProposalEdit, TradeQuantity
from account_svc.repository import PostgresAccountRepository
from account_svc.schemas import ProposalOut
from account_svc.tables import Proposal

CENT = Decimal("0.01")
FIGURE_PLACES = Decimal("0.0001")  # the proposal's figures: Numeric(20, 4)


def edited_trades(
    trades: Sequence[dict[str, Any]],
    changes: Sequence[TradeQuantity],
    removed: Sequence[Any],
) -> list[dict[str, Any]]:
    """The trades after the edit, in their order; InvalidInput naming every field that breaks
    a rule (unknown trade, not positive, fractions of a whole-share trade, all removed)."""
    by_id = {str(t["trade_id"]): t for t in trades}
    problems: list[FieldProblem] = []
    quantities: dict[str, Decimal] = {}
    for i, change in enumerate(changes):
        trade_id = str(change.trade_id)
        trade = by_id.get(trade_id)
        if trade is None:
            problems.append(FieldProblem(f"trades[{i}].trade_id", f"no trade {trade_id} here"))
        elif trade_id in quantities:
            problems.append(FieldProblem(f"trades[{i}].trade_id", "this trade is listed twice"))
        elif change.quantity <= 0:
            quantities[trade_id] = change.quantity
            problems.append(
                FieldProblem(
                    f"trades[{i}].quantity", "must be positive (list the trade in remove instead)"
                )
            )
        elif not _whole(change.quantity) and _whole(Decimal(trade["quantity"])):
            quantities[trade_id] = change.quantity
            problems.append(
                FieldProblem(
                    f"trades[{i}].quantity",
                    f"{change.quantity} is not whole shares, as the trade was proposed",
                )
            )
        else:
            quantities[trade_id] = change.quantity
    dropped: set[str] = set()
    for j, trade_ref in enumerate(removed):
        trade_id = str(trade_ref)
        if trade_id not in by_id:
            problems.append(FieldProblem(f"remove[{j}]", f"no trade {trade_id} here"))
        elif trade_id in quantities:
            problems.append(FieldProblem(f"remove[{j}]", "also in trades: change it or remove it"))
        elif trade_id in dropped:
            problems.append(FieldProblem(f"remove[{j}]", "this trade is listed twice"))
        dropped.add(trade_id)
    if not changes and not removed:
        problems.append(FieldProblem("trades", "nothing to change: give trades or remove"))
    elif not problems and dropped >= by_id.keys():
        problems.append(FieldProblem("remove", "removes every trade: reject the proposal instead"))
    if problems:
        raise InvalidInput("the proposal's trades cannot be edited so", problems)
    return [
        _with_quantity(t, quantities[str(t["trade_id"])])
        if str(t["trade_id"]) in quantities
        else dict(t)
        for t in trades
        if str(t["trade_id"]) not in dropped
    ]


def _whole(quantity: Decimal) -> bool:
    return quantity == quantity.to_integral_value()


def _with_quantity(trade: dict[str, Any], quantity: Decimal) -> dict[str, Any]:
    """The trade at a new quantity, valued at its estimated price. A sell keeps its named lots
    and a pro rata share of its estimated tax when lowered (the lots still cover it); raised,
    the custodian's method relieves lots and the tax is not known."""
    proposed = Decimal(trade["quantity"])
    changed = {
        **trade,
        "quantity": quantity,
        "estimated_value": (quantity * Decimal(trade["estimated_price"])).quantize(
            CENT, ROUND_HALF_EVEN
        ),
    }
    if trade["side"] == "sell" and quantity > proposed:
        changed["lot_ids"] = []
        changed["estimated_tax"] = None
    elif trade["side"] == "sell" and trade.get("estimated_tax") is not None:
        changed["estimated_tax"] = (Decimal(trade["estimated_tax"]) * quantity / proposed).quantize(
            CENT, ROUND_HALF_EVEN
        )
    return TradeV1.model_validate(changed).model_dump(mode="json")


def _refigure(proposal: Proposal) -> None:
    """The proposal's figures from its edited trades (drift after is no longer estimated)."""
    buys = sells = Decimal(0)
    taxes: list[Decimal | None] = []
    for trade in proposal.trades:
        value = Decimal(trade["estimated_value"])
        if trade["side"] == "buy":
            buys += value
        else:
            sells += value
            tax = trade.get("estimated_tax")
            taxes.append(None if tax is None else Decimal(tax))
    # at the columns' scale, so the answer is what a read gives back
    proposal.buy_value = buys.quantize(FIGURE_PLACES)
    proposal.sell_value = sells.quantize(FIGURE_PLACES)
    known = [t for t in taxes if t is not None]
    tax = sum(known, Decimal(0)).quantize(FIGURE_PLACES)
    proposal.estimated_tax = tax if len(known) == len(taxes) else None
    if proposal.account_value:
        turnover = (buys + sells) / (2 * proposal.account_value) * 100
        proposal.turnover_percent = turnover.quantize(FIGURE_PLACES, ROUND_HALF_EVEN)
    proposal.drift_after_percent = None


def _edit_doc(proposal: Proposal) -> dict[str, Any]:
    """What an edit changes of a proposal, with what it is about."""
    return proposal.model_dump(
        include={
            "account_id",
            "status",
            "trades",
            "buy_value",
            "sell_value",
            "estimated_tax",
            "turnover_percent",
        }
    )


async def edit_proposal(
    uow: UnitOfWork,
    repo: AccountRepository,
    tenant: str,
    actor: str,
    proposal_id: str,
    edit: ProposalEdit,
) -> ProposalOut:
    """Change the quantities of, or remove, trades of a pending proposal of the tenant's
    accounts, and record who did it; it stays pending until approved."""
    proposal = await repo.get_proposal(tenant, proposal_id, for_update=True)
    if proposal is None:
        raise NotFound(f"no proposal {proposal_id}")
    if proposal.status != "pending":
        raise Conflict(
            f"proposal {proposal_id} was already {proposal.status} by {proposal.decided_by}: "
            "only a pending proposal can be edited"
        )
    before = _edit_doc(proposal)
    proposal.trades = edited_trades(proposal.trades, edit.trades, edit.remove)
    _refigure(proposal)
    await repo.save(proposal)
    after = {**_edit_doc(proposal), "note": edit.note}
    await repo.append_audit(
        tenant, [AuditEntry(actor, "edit", "proposal", proposal_id, before, after)]
    )
    return ProposalOut.model_validate(proposal, from_attributes=True)


async def get_proposal(session: AsyncSession, tenant: str, proposal_id: str) -> ProposalOut:
    """One proposal of the tenant's accounts."""
    proposal = await PostgresAccountRepository(session).get_proposal(tenant, proposal_id)
    if proposal is None:
        raise NotFound(f"no proposal {proposal_id}")
    return ProposalOut.model_validate(proposal, from_attributes=True)


async def proposal_history(
    session: AsyncSession, tenant: str, proposal_id: str, limit: int, offset: int
) -> list[AuditRecordOut]:
    """A page of a proposal's decisions and edits, in order (another tenant's: not found)."""
    if await PostgresAccountRepository(session).get_proposal(tenant, proposal_id) is None:
        raise NotFound(f"no proposal {proposal_id}")
    return await audit.read(
        session,
        tenant,
        subject_type="proposal",
        subject_id=proposal_id,
        after=None,
        limit=limit,
        offset=offset,
    )


async def pending_proposals(
    session: AsyncSession, tenant: str, limit: int, offset: int
) -> list[PendingProposals]:
    """How many of the tenant's proposals wait for a decision, per what routed them."""
    rows = await proposal_review_repository.pending_by_route(session, tenant, limit, offset)
    return [PendingProposals.model_validate(r) for r in rows]
