"""account-svc's rules: opening and changing accounts, and approving proposed trades."""

from collections.abc import Sequence
from datetime import UTC, datetime

from ballast_common.contracts.events import (
    AccountChangedV1,
    ModelChangedV1,
    TradesApprovedV1,
    TradesProposedV1,
    TradeV1,
)
from ballast_common.errors import (
    Conflict,
    FieldProblem,
    InvalidInput,
    NotFound,
    PermanentMessageError,
)
from ballast_common.uow import UnitOfWork
from sqlmodel.ext.asyncio.session import AsyncSession

from account_svc import repository as repo
from account_svc.schemas import AccountIn, AccountOut, AccountPatch, ProposalOut
from account_svc.tables import Account, Proposal

AUTO_APPROVER = "policy:auto-approve"


async def open_accounts(uow: UnitOfWork, items: Sequence[AccountIn]) -> list[AccountOut]:
    """Open accounts, all or none: ids must be new and models known to the model hub."""
    ids = [a.account_id for a in items]
    seen: set[str] = set()
    for i, account_id in enumerate(ids):
        if account_id in seen:
            raise InvalidInput(
                f"account {account_id} appears more than once",
                [FieldProblem(f"accounts[{i}].account_id", "duplicate")],
            )
        seen.add(account_id)
    taken = await repo.existing_account_ids(uow.session, ids)
    if taken:
        first = sorted(taken)[0]
        raise Conflict(
            f"account {first} already exists",
            [FieldProblem("account_id", f"{a} already exists") for a in sorted(taken)],
        )
    await _check_models(uow.session, [a.model_id for a in items])
    accounts = [Account(**a.model_dump(), status="active") for a in items]
    await repo.add_accounts(uow.session, accounts)
    for account in accounts:
        _announce(uow, account)
    return [_view(a) for a in accounts]


async def change_account(uow: UnitOfWork, account_id: str, patch: AccountPatch) -> AccountOut:
    account = await _account(uow.session, account_id, for_update=True)
    changes = patch.model_dump(exclude_unset=True)
    if "model_id" in changes:
        await _check_models(uow.session, [changes["model_id"]])
    for field, value in changes.items():
        setattr(account, field, value)
    account.updated_at = datetime.now(UTC)
    await repo.save(uow.session, account)
    _announce(uow, account)
    return _view(account)


async def get_account(session: AsyncSession, account_id: str) -> AccountOut:
    return _view(await _account(session, account_id))


async def remember_model(uow: UnitOfWork, event: ModelChangedV1) -> None:
    await repo.upsert_known_model(uow.session, event.model_id, event.name, event.version)


async def receive_proposal(uow: UnitOfWork, event: TradesProposedV1, tenant: str) -> None:
    """Record proposed trades; approve them at once where the account's policy allows."""
    account = await repo.get_account(uow.session, event.account_id)
    if account is None:
        raise PermanentMessageError(f"trades proposed for unknown account {event.account_id}")
    if await repo.get_proposal(uow.session, str(event.proposal_id)) is not None:
        return  # the same proposal again: already recorded
    proposal = Proposal(
        proposal_id=str(event.proposal_id),
        account_id=event.account_id,
        run_id=str(event.run_id),
        model_id=event.model_id,
        model_version=event.model_version,
        status="pending",
        trades=[t.model_dump(mode="json") for t in event.trades],
    )
    if account.status == "active" and account.auto_approve:
        _decide(proposal, "approved", AUTO_APPROVER, "account policy approves automatically")
        _announce_approval(uow, proposal, tenant)
    elif account.status != "active":
        proposal.decision_note = f"waiting: account is {account.status}"
    await repo.save(uow.session, proposal)


async def decide(
    uow: UnitOfWork, proposal_id: str, approve: bool, actor: str, note: str | None, tenant: str
) -> ProposalOut:
    proposal = await repo.get_proposal(uow.session, proposal_id, for_update=True)
    if proposal is None:
        raise NotFound(f"no proposal {proposal_id}")
    if proposal.status != "pending":
        raise Conflict(
            f"proposal {proposal_id} was already {proposal.status} by {proposal.decided_by}"
        )
    account = await _account(uow.session, proposal.account_id)
    if approve and account.status != "active":
        raise Conflict(f"account {account.account_id} is {account.status}: trades cannot go out")
    _decide(proposal, "approved" if approve else "rejected", actor, note)
    await repo.save(uow.session, proposal)
    if approve:
        _announce_approval(uow, proposal, account.tenant)
    return ProposalOut.model_validate(proposal, from_attributes=True)


def _decide(proposal: Proposal, status: str, actor: str, note: str | None) -> None:
    proposal.status = status
    proposal.decided_by = actor
    proposal.decided_at = datetime.now(UTC)
    proposal.decision_note = note


def _announce_approval(uow: UnitOfWork, proposal: Proposal, tenant: str) -> None:
    uow.publish(
        TradesApprovedV1(
            proposal_id=proposal.proposal_id,
            account_id=proposal.account_id,
            approved_by=proposal.decided_by or "",
            trades=[TradeV1.model_validate(t) for t in proposal.trades],
        ),
        key=proposal.account_id,
        tenant=tenant,
    )


def _announce(uow: UnitOfWork, account: Account) -> None:
    uow.publish(
        AccountChangedV1(
            account_id=account.account_id,
            household_id=account.household_id,
            name=account.name,
            account_type=account.account_type,
            model_id=account.model_id,
            status=account.status,
            auto_approve=account.auto_approve,
        ),
        key=account.account_id,
        tenant=account.tenant,
    )


async def _check_models(session: AsyncSession, model_ids: Sequence[str | None]) -> None:
    wanted = sorted({m for m in model_ids if m})
    if not wanted:
        return
    known = await repo.known_model_ids(session, wanted)
    unknown = [m for m in wanted if m not in known]
    if unknown:
        raise InvalidInput(
            f"unknown model {unknown[0]}: publish it in model-hub-svc first",
            [FieldProblem("model_id", f"unknown model {m}") for m in unknown],
        )


async def _account(session: AsyncSession, account_id: str, *, for_update: bool = False) -> Account:
    account = await repo.get_account(session, account_id, for_update=for_update)
    if account is None:
        raise NotFound(f"no account {account_id}")
    return account


def _view(account: Account) -> AccountOut:
    return AccountOut.model_validate(account, from_attributes=True)
