"""account-svc's rules: opening and changing accounts, and approving proposed trades."""

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol

from ballast_common import audit
from ballast_common.audit import AuditEntry, AuditRecordOut
from ballast_common.book_loads import StagedLoad
from ballast_common.consumer import Delivery
from ballast_common.contracts.envelope import Envelope
from ballast_common.contracts.events import (
    AccountChangedV1,
    CashMovementV1,
    CorporateActionRecordedV1,
    ModelChangedV1,
    ProposalRejectedV1,
    RebalanceSettingsV1,
    RestrictionV1,
    StrategyV1,
    TaxSettingsV1,
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
from ballast_common.uow import Cause, UnitOfWork
from sqlmodel.ext.asyncio.session import AsyncSession

from account_svc import account_opening_repository, repository, rules
from account_svc.ports import AccountRepository, ProposalRouter
from account_svc.repository import PostgresAccountRepository
from account_svc.schemas import (
    AccountIn,
    AccountOut,
    AccountPatch,
    KnownModelOut,
    ProposalOut,
    RebalanceSettings,
    RestrictionIn,
    RestrictionOut,
    SecurityListIn,
    SecurityListOut,
    Strategy,
    TaxSettings,
)
from account_svc.tables import Account, Filter, Proposal, RestrictionChange, SecurityList

OPENED_STATUS = "active"  # an account opened over REST or from the book files
OPENING_STATUS = "opening"  # opened as a workflow: active once its opening steps are done
CLOSED_STATUS = "closed"
# account-changed knows active | suspended | closed: an opening account is suspended there, so
# no service downstream trades it (account-svc alone knows it is opening)
WIRE_STATUS = {OPENING_STATUS: "suspended"}
AUTO_APPROVER = "policy:auto-approve"
AUTO_APPROVAL_NOTE = "account policy approves automatically"
AUTO_APPROVE_ROUTE = "auto_approve"  # routed_by / routing_action when no filter selected it
NO_REASON = "no reason given"
RENAMING_ACTIONS = ("symbol-change", "stock-merger")  # the new symbol replaces the old one
REMOVING_ACTIONS = ("cash-merger",)  # the security is gone: it leaves lists and restrictions

log = logging.getLogger(__name__)


async def open_accounts(
    uow: UnitOfWork, repo: AccountRepository, tenant: str, actor: str, items: Sequence[AccountIn]
) -> list[AccountOut]:
    """Open accounts of the tenant, all or none: ids new, households not another tenant's,
    models the tenant's as announced by the model hub."""
    ids = [a.account_id for a in items]
    seen: set[str] = set()
    for i, account_id in enumerate(ids):
        if account_id in seen:
            raise InvalidInput(
                f"account {account_id} appears more than once",
                [FieldProblem(f"accounts[{i}].account_id", "duplicate")],
            )
        seen.add(account_id)
    taken = await repo.existing_account_ids(ids)
    if taken:
        first = sorted(taken)[0]
        raise Conflict(
            f"account {first} already exists",
            [FieldProblem("account_id", f"{a} already exists") for a in sorted(taken)],
        )
    await _check_households(repo, tenant, [a.household_id for a in items], len(items) > 1)
    await _check_models(repo, tenant, [a.model_id for a in items])
    now = datetime.now(UTC)
    opening = [a.account_id for a in items if a.status == OPENING_STATUS]
    accounts: list[Account] = []
    for i, item in enumerate(items):
        prefix = f"accounts[{i}]." if len(items) > 1 else ""
        if item.strategy is not None:
            if item.model_id is not None:
                raise InvalidInput(
                    f"account {item.account_id}: a UMA (with a strategy) has no model_id",
                    [FieldProblem(f"{prefix}model_id", "must be null when strategy is given")],
                )
            await check_strategy(repo, tenant, item.strategy, prefix + "strategy.")
        await _check_restrictions(repo, tenant, item.restrictions, prefix + "restrictions")
        accounts.append(
            Account(
                **item.model_dump(
                    exclude={
                        "rebalance_settings",
                        "tax_settings",
                        "strategy",
                        "restrictions",
                        "status",
                    }
                ),
                tenant=tenant,
                status=item.status,
                rebalance_settings=_settings_doc(item.rebalance_settings),
                tax_settings=_doc(item.tax_settings),
                strategy=_doc(item.strategy),
                restrictions=_restriction_docs(item.restrictions, actor, now),
            )
        )
    await repo.add_accounts(accounts)
    await repo.append_audit(
        tenant,
        [
            AuditEntry(actor, _opening_action(a), "account", a.account_id, None, _doc_of(a))
            for a in accounts
        ],
    )
    if opening:
        await account_opening_repository.add_steps(uow.session, tenant, opening, actor, now)
        await settle_opening(uow, tenant, actor, account_opening_repository.account_ids(opening))
    await announce_accounts(uow, repo, accounts)
    return [view(a) for a in accounts]


async def change_account(
    uow: UnitOfWork,
    repo: AccountRepository,
    tenant: str,
    account_id: str,
    patch: AccountPatch,
    *,
    actor: str,
) -> AccountOut:
    """Change an account's name, model, status or approval policy and announce it."""
    account = await _account(repo, tenant, account_id, for_update=True)
    before = _doc_of(account)
    changes = patch.model_dump(exclude_unset=True)
    if account.status == OPENING_STATUS and changes.get("status") not in (None, CLOSED_STATUS):
        await _refuse_status_while_opening(uow, account_id, changes["status"])
    if "model_id" in changes:
        if account.strategy is not None and changes["model_id"] is not None:
            raise Conflict(
                f"account {account_id} is a UMA: change its strategy's sleeves, or "
                f"DELETE /accounts/{account_id}/strategy before giving it a model",
                [FieldProblem("model_id", "the account has a strategy")],
            )
        await _check_models(repo, tenant, [changes["model_id"]])
    for field, value in changes.items():
        setattr(account, field, value)
    return await _changed(uow, repo, account, actor, "change", before)


async def set_rebalance_settings(
    uow: UnitOfWork,
    repo: AccountRepository,
    tenant: str,
    account_id: str,
    settings: RebalanceSettings,
    *,
    actor: str,
) -> RebalanceSettings:
    """Replace the account's rebalance settings (null fields: rebalance-svc's defaults)."""
    account = await _account(repo, tenant, account_id, for_update=True)
    before = _doc_of(account)
    account.rebalance_settings = _settings_doc(settings)
    changed = await _changed(uow, repo, account, actor, "set-rebalance-settings", before)
    return changed.rebalance_settings


async def set_tax_settings(
    uow: UnitOfWork,
    repo: AccountRepository,
    tenant: str,
    account_id: str,
    settings: TaxSettings,
    *,
    actor: str,
) -> TaxSettings:
    """Replace the account's tax settings."""
    account = await _account(repo, tenant, account_id, for_update=True)
    before = _doc_of(account)
    account.tax_settings = _doc(settings)
    return (await _changed(uow, repo, account, actor, "set-tax-settings", before)).tax_settings


async def set_restrictions(
    uow: UnitOfWork,
    repo: AccountRepository,
    tenant: str,
    actor: str,
    account_id: str,
    items: Sequence[RestrictionIn],
) -> list[RestrictionOut]:
    """Replace the account's restrictions, set by `actor`. One that is unchanged and was set
    by the same actor keeps when it was set."""
    account = await _account(repo, tenant, account_id, for_update=True)
    await _check_restrictions(repo, tenant, items, "restrictions")
    before = _doc_of(account)
    now = datetime.now(UTC)
    kept = {_restriction_key(r): r for r in account.restrictions}
    docs: list[dict[str, Any]] = []
    for doc in _restriction_docs(items, actor, now):
        old = kept.get(_restriction_key(doc))
        same = old is not None and all(old[k] == doc[k] for k in ("source", "reason", "set_by"))
        docs.append(old if old is not None and same else doc)
    account.restrictions = docs
    return (await _changed(uow, repo, account, actor, "set-restrictions", before)).restrictions


async def set_strategy(
    uow: UnitOfWork,
    repo: AccountRepository,
    tenant: str,
    account_id: str,
    strategy: Strategy,
    *,
    actor: str,
) -> Strategy:
    """Make the account a UMA following the strategy's sleeves (its model_id is cleared)."""
    account = await _account(repo, tenant, account_id, for_update=True)
    await check_strategy(repo, tenant, strategy, "")
    before = _doc_of(account)
    account.strategy = _doc(strategy)
    account.model_id = None
    view = await _changed(uow, repo, account, actor, "set-strategy", before)
    assert view.strategy is not None
    return view.strategy


async def clear_strategy(
    uow: UnitOfWork, repo: AccountRepository, tenant: str, account_id: str, *, actor: str
) -> AccountOut:
    """The account stops being a UMA; it follows no model until one is given (PATCH)."""
    account = await _account(repo, tenant, account_id, for_update=True)
    if account.strategy is None:
        raise NotFound(f"account {account_id} has no strategy")
    before = _doc_of(account)
    account.strategy = None
    return await _changed(uow, repo, account, actor, "clear-strategy", before)


async def put_security_list(
    uow: UnitOfWork, tenant: str, actor: str, list_id: str, body: SecurityListIn
) -> SecurityListOut:
    """Create or replace a named list of the tenant; every account restricted by it is
    announced again (its account-changed carries the list's new members)."""
    repo = PostgresAccountRepository(uow.session)
    symbols = sorted(set(body.symbols))
    row = await repository.get_security_list(uow.session, tenant, list_id, for_update=True)
    before = None if row is None else _doc_of(row)
    if row is None:
        row = SecurityList(
            tenant=tenant, list_id=list_id, name=body.name, symbols=symbols, updated_by=actor
        )
    else:
        row.name, row.symbols, row.updated_by = body.name, symbols, actor
        row.updated_at = datetime.now(UTC)
    await repo.save(row)
    action = "create" if before is None else "update"
    await repo.append_audit(
        tenant, [AuditEntry(actor, action, "security-list", list_id, before, _doc_of(row))]
    )
    restricted = await repository.accounts_restricted_by_lists(uow.session, [(tenant, list_id)])
    await announce_accounts(uow, repo, restricted)
    return SecurityListOut.model_validate(row, from_attributes=True)


async def get_security_list(session: AsyncSession, tenant: str, list_id: str) -> SecurityListOut:
    """A named list of the tenant (another tenant's answers as unknown)."""
    row = await repository.get_security_list(session, tenant, list_id)
    if row is None:
        raise NotFound(f"no security list {list_id}")
    return SecurityListOut.model_validate(row, from_attributes=True)


# --- corporate actions ------------------------------------------------------------------------


async def follow_corporate_action(uow: UnitOfWork, action: CorporateActionRecordedV1) -> list[str]:
    """Keep restrictions and security lists true to a corporate action; returns the ids of the
    accounts announced again (their instructions changed).

    - symbol change, stock merger: the new symbol replaces the old one in every restriction of
      scope security (a restriction of the same kind already on the new symbol absorbs it) and
      in every security list;
    - cash merger: the symbol leaves every list, and restrictions of scope security on it are
      dropped;
    - others (splits, spin-offs, dividends): nothing to do here.
    Every change is kept in the restriction history (`changed_by` corporate-action:<id>).
    Applying the same action again changes nothing: the old symbol is gone by then."""
    if action.type not in RENAMING_ACTIONS + REMOVING_ACTIONS:
        return []
    new_symbol: str | None = None
    if action.type in RENAMING_ACTIONS:
        if not action.new_symbol:
            raise PermanentMessageError(
                f"corporate action {action.action_id}: {action.type} of {action.symbol} "
                "has no new_symbol"
            )
        new_symbol = action.new_symbol
        if new_symbol == action.symbol:
            return []
    repo = PostgresAccountRepository(uow.session)
    actor = f"corporate-action:{action.action_id}"
    if new_symbol is None:
        note = (
            f"{action.symbol} was bought out for cash ({action.type} {action.action_id} on "
            f"{action.on.isoformat()}): it is no longer a security"
        )
    else:
        note = (
            f"{action.symbol} became {new_symbol} ({action.type} {action.action_id} on "
            f"{action.on.isoformat()})"
        )
    now = datetime.now(UTC)
    history: list[RestrictionChange] = []
    changed: dict[str, Account] = {}
    audited: dict[str, list[AuditEntry]] = {}  # by tenant
    for account in await repository.accounts_restricting_security(uow.session, action.symbol):
        docs, changes = restrictions_after_action(account.restrictions, action.symbol, new_symbol)
        if not changes:
            continue
        before = _doc_of(account)
        account.restrictions = docs
        audited.setdefault(account.tenant, []).append(
            AuditEntry(
                actor, "set-restrictions", "account", account.account_id, before, _doc_of(account)
            )
        )
        changed[account.account_id] = account
        history.extend(
            RestrictionChange(
                tenant=account.tenant,
                account_id=account.account_id,
                change=change,
                before=before,
                after=after,
                changed_by=actor,
                note=note,
                changed_at=now,
            )
            for change, before, after in changes
        )
    lists = await repository.security_lists_holding(uow.session, action.symbol)
    for row in lists:
        before = _doc_of(row)
        row.symbols = list_after_action(row.symbols, action.symbol, new_symbol)
        row.updated_by, row.updated_at = actor, now
        await repo.save(row)
        audited.setdefault(row.tenant, []).append(
            AuditEntry(actor, "update", "security-list", row.list_id, before, _doc_of(row))
        )
        history.append(
            RestrictionChange(
                tenant=row.tenant,
                list_id=row.list_id,
                change="list-dropped" if new_symbol is None else "list-replaced",
                before={"symbol": action.symbol},
                after={"symbol": new_symbol} if new_symbol is not None else None,
                changed_by=actor,
                note=note,
                changed_at=now,
            )
        )
    for account in await repository.accounts_restricted_by_lists(
        uow.session, [(r.tenant, r.list_id) for r in lists]
    ):
        changed.setdefault(account.account_id, account)
    accounts = [changed[a] for a in sorted(changed)]
    for account in accounts:
        account.updated_at = now
        await repo.save(account)
    await repository.add_restriction_changes(uow.session, history)
    for tenant in sorted(audited):  # one order of tenants' chains: no two followers deadlock
        await repo.append_audit(tenant, audited[tenant])
    await announce_accounts(uow, repo, accounts)
    if history:
        log.info(
            "corporate action followed in restrictions and lists",
            extra={
                "action_id": action.action_id,
                "type": action.type,
                "symbol": action.symbol,
                "new_symbol": new_symbol,
                "accounts": len(accounts),
                "lists": len(lists),
                "dropped": sum(c.change == "dropped" for c in history),
            },
        )
    return [a.account_id for a in accounts]


RestrictionDoc = dict[str, Any]


def restrictions_after_action(
    docs: Sequence[RestrictionDoc], symbol: str, new_symbol: str | None
) -> tuple[list[RestrictionDoc], list[tuple[str, RestrictionDoc, RestrictionDoc | None]]]:
    """An account's restrictions after `symbol` became `new_symbol` (None: bought out for
    cash), in their order, and each change as (change, before, after): `replaced` (the same
    instruction on the new symbol), `merged` (the account already had that kind on the new
    symbol: that one stays, `after`), `dropped` (cash merger)."""
    existing = {
        _restriction_key(d): d
        for d in docs
        if not (d["scope"] == "security" and d["value"] == symbol)
    }
    out: list[RestrictionDoc] = []
    changes: list[tuple[str, RestrictionDoc, RestrictionDoc | None]] = []
    for doc in docs:
        if doc["scope"] != "security" or doc["value"] != symbol:
            out.append(doc)
            continue
        if new_symbol is None:
            changes.append(("dropped", doc, None))
            continue
        key = (doc["kind"], "security", new_symbol)
        if key in existing:
            changes.append(("merged", doc, existing[key]))
            continue
        moved = {**doc, "value": new_symbol}
        existing[key] = moved
        out.append(moved)
        changes.append(("replaced", doc, moved))
    return out, changes


def list_after_action(symbols: Sequence[str], symbol: str, new_symbol: str | None) -> list[str]:
    """A list's members after `symbol` became `new_symbol` (None: it leaves the list)."""
    members = set(symbols) - {symbol}
    if new_symbol is not None and symbol in symbols:
        members.add(new_symbol)
    return sorted(members)


async def restriction_history(
    session: AsyncSession, tenant: str, account_id: str, limit: int, offset: int
) -> list[RestrictionChange]:
    """A page of an account's restriction changes (the account must be the tenant's)."""
    await _account(PostgresAccountRepository(session), tenant, account_id)
    return await repository.restriction_history(session, tenant, account_id, limit, offset)


async def list_history(
    session: AsyncSession, tenant: str, list_id: str, limit: int, offset: int
) -> list[RestrictionChange]:
    """A page of a security list's member changes (the list must be the tenant's)."""
    if await repository.get_security_list(session, tenant, list_id) is None:
        raise NotFound(f"no security list {list_id}")
    return await repository.list_history(session, tenant, list_id, limit, offset)


async def get_account(repo: AccountRepository, tenant: str, account_id: str) -> AccountOut:
    """An account of the tenant as the API shows it."""
    return view(await _account(repo, tenant, account_id))


async def known_models(
    session: AsyncSession, tenant: str, limit: int, offset: int
) -> list[KnownModelOut]:
    """The tenant's models accounts may name (account-svc learns them from model-changed)."""
    return [
        KnownModelOut.model_validate(m, from_attributes=True)
        for m in await repository.known_models(session, tenant, limit, offset)
    ]


async def remember_model(uow: UnitOfWork, tenant: str, event: ModelChangedV1) -> None:
    """Note a model of the tenant published by model-hub-svc (its accounts may follow only
    these)."""
    await PostgresAccountRepository(uow.session).upsert_known_model(
        tenant, event.model_id, event.name, event.version
    )


async def receive_proposals(
    uow: UnitOfWork,
    repo: AccountRepository,
    deliveries: Sequence[Delivery],
    router: ProposalRouter | None = None,
) -> int:
    """Record a batch of proposed trades (a repeated proposal is ignored), each routed by the
    first enabled filter of its account's tenant that selects it (`router`; None: no filters),
    else by the account's auto-approve policy; returns how many proposals were new."""
    firsts: dict[str, Delivery] = {}
    for delivery in deliveries:
        firsts.setdefault(str(delivery.payload.proposal_id), delivery)
    account_ids = sorted({d.payload.account_id for d in firsts.values()})
    policies = await repo.approval_policies(account_ids)
    unknown = [a for a in account_ids if a not in policies]
    if unknown:  # the framework then takes the batch one by one: only these are dead letters
        raise PermanentMessageError(f"trades proposed for unknown account {', '.join(unknown)}")
    proposals = [_proposal(d.payload, d.envelope) for d in firsts.values()]
    # the accounts' tenants are their events' (a filter applies only where both agree: the
    # statement that evaluates them compares the account's own tenant)
    tenants = sorted({d.envelope.tenant for d in firsts.values()})
    filters = await router.enabled_filters(tenants) if router is not None else []
    matches = (
        await router.first_matching_filters(proposals, filters)
        if router is not None and filters
        else {}
    )
    suspending: dict[str, Filter] = {}  # account id -> the filter suspending it
    for proposal in proposals:
        index = matches.get(proposal.proposal_id)
        chosen = filters[index] if index is not None else None
        route_proposal(proposal, *policies[proposal.account_id], chosen)
        if chosen is not None and chosen.action == "suspend":
            suspending.setdefault(proposal.account_id, chosen)
    for proposal in proposals:  # an account suspended by this batch approves nothing of it
        if proposal.account_id in suspending and proposal.status == "approved":
            proposal.status, proposal.decided_by, proposal.decided_at = "pending", None, None
            proposal.decision_note = "waiting: account is suspended"
    new = await repo.insert_new_proposals(proposals)
    audited: dict[str, list[AuditEntry]] = {}  # by tenant
    for proposal, delivery in zip(proposals, firsts.values(), strict=True):
        if proposal.proposal_id not in new:
            continue
        tenant = delivery.envelope.tenant
        if proposal.status == "approved":
            announce_approval(uow, proposal, tenant, cause=delivery.envelope)
            actor, action = proposal.decided_by or AUTO_APPROVER, "approve"
        elif proposal.routing_action in ("review", "suspend"):
            actor, action = _routing_actor(proposal), "hold"
        else:
            continue
        audited.setdefault(tenant, []).append(
            AuditEntry(
                actor, action, "proposal", proposal.proposal_id, None, decision_doc(proposal)
            )
        )
    accounts_of_new = {p.account_id for p in proposals if p.proposal_id in new}
    suspended_by = {a: f for a, f in suspending.items() if a in accounts_of_new}
    if suspended_by and router is not None:
        suspended = await router.suspend_accounts(sorted(suspended_by), datetime.now(UTC))
        for account in suspended:
            after = _doc_of(account)
            before = {**after, "status": OPENED_STATUS}
            chosen = suspended_by[account.account_id]
            audited.setdefault(account.tenant, []).append(
                AuditEntry(
                    f"filter:{chosen.filter_id}",
                    "suspend",
                    "account",
                    account.account_id,
                    before,
                    after,
                )
            )
        causes = {p.account_id: d.envelope for p, d in zip(proposals, firsts.values(), strict=True)}
        await announce_accounts(uow, repo, suspended, causes)
    for tenant in sorted(audited):
        await repo.append_audit(tenant, audited[tenant])
    return len(new)


def route_proposal(
    proposal: Proposal, status: str, auto_approve: bool, chosen: Filter | None
) -> None:
    """Decide a new proposal: by the filter that selected it (trade: approved when the account
    is active; review: held; suspend: held, and the account is suspended), else by the
    account's policy (approved when active and auto_approve)."""
    if chosen is None:
        proposal.routed_by = proposal.routing_action = AUTO_APPROVE_ROUTE
        approve = auto_approve
        actor, note = AUTO_APPROVER, AUTO_APPROVAL_NOTE
    else:
        proposal.routed_by = f"filter:{chosen.filter_id}@{chosen.version}"
        proposal.routing_action = chosen.action
        approve = chosen.action == "trade"
        actor, note = f"filter:{chosen.filter_id}", f"approved by filter {chosen.name}"
    if chosen is not None and chosen.action in ("review", "suspend"):
        proposal.decision_note = f"held for review by filter {chosen.name}"
        if chosen.action == "suspend":
            proposal.decision_note = f"held: account suspended by filter {chosen.name}"
    elif status != "active":
        proposal.decision_note = f"waiting: account is {status}"
    elif approve:
        _decide(proposal, "approved", actor, note)


def _routing_actor(proposal: Proposal) -> str:
    """`filter:<id>` of a proposal's routed_by `filter:<id>@<version>`."""
    return (proposal.routed_by or AUTO_APPROVE_ROUTE).rsplit("@", 1)[0]


def _proposal(event: TradesProposedV1, cause: Envelope) -> Proposal:
    """The proposal as recorded (pending until routed), with the event it came in (its
    cause) and its metrics: the event's, else what its trades give."""
    buys = [t.estimated_value for t in event.trades if t.side == "buy"]
    sells = [t for t in event.trades if t.side == "sell"]
    taxes = [t.estimated_tax for t in sells if t.estimated_tax is not None]
    metrics = event.metrics
    return Proposal(
        proposal_id=str(event.proposal_id),
        account_id=event.account_id,
        run_id=str(event.run_id),
        model_id=event.model_id,
        model_version=event.model_version,
        status="pending",
        trades=[t.model_dump(mode="json") for t in event.trades],
        cash_movements=[m.model_dump(mode="json") for m in event.cash_movements],
        cause_event_id=cause.id,
        traceparent=cause.traceparent,
        tracestate=cause.tracestate,
        cash_before=event.cash_before,
        buy_value=metrics.buy_value if metrics else sum(buys, Decimal(0)),
        sell_value=metrics.sell_value
        if metrics
        else sum((t.estimated_value for t in sells), Decimal(0)),
        estimated_tax=(
            metrics.estimated_tax
            if metrics
            else (sum(taxes, Decimal(0)) if taxes or not sells else None)
        ),
        account_value=metrics.account_value if metrics else None,
        turnover_percent=metrics.turnover_percent if metrics else None,
        drift_before_percent=metrics.drift_before_percent if metrics else None,
        drift_after_percent=metrics.drift_after_percent if metrics else None,
        tracking_error_before_percent=metrics.tracking_error_before_percent if metrics else None,
        tracking_error_after_percent=metrics.tracking_error_after_percent if metrics else None,
        notes=list(event.notes),
    )


async def decide(
    uow: UnitOfWork,
    repo: AccountRepository,
    tenant: str,
    actor: str,
    proposal_id: str,
    approve: bool,
    note: str | None,
) -> ProposalOut:
    """Approve or reject a pending proposal of the tenant's accounts and announce it."""
    proposal = await repo.get_proposal(tenant, proposal_id, for_update=True)
    if proposal is None:
        raise NotFound(f"no proposal {proposal_id}")
    if proposal.status != "pending":
        raise Conflict(
            f"proposal {proposal_id} was already {proposal.status} by {proposal.decided_by}"
        )
    account = await _account(repo, tenant, proposal.account_id)
    if approve and account.status != "active":
        raise Conflict(f"account {account.account_id} is {account.status}: trades cannot go out")
    before = decision_doc(proposal)
    _decide(proposal, "approved" if approve else "rejected", actor, note)
    await repo.save(proposal)
    await repo.append_audit(
        tenant,
        [
            AuditEntry(
                actor,
                "approve" if approve else "reject",
                "proposal",
                proposal_id,
                before,
                decision_doc(proposal),
            )
        ],
    )
    cause = Cause(proposal.cause_event_id, proposal.traceparent, proposal.tracestate)
    if approve:
        announce_approval(uow, proposal, account.tenant, cause=cause)
    else:
        uow.publish(
            ProposalRejectedV1(
                proposal_id=proposal.proposal_id,
                account_id=proposal.account_id,
                rejected_by=actor,
                reason=note or NO_REASON,
            ),
            key=proposal.account_id,
            tenant=account.tenant,
            cause=cause,
        )
    return ProposalOut.model_validate(proposal, from_attributes=True)


def _decide(proposal: Proposal, status: str, actor: str, note: str | None) -> None:
    proposal.status = status
    proposal.decided_by = actor
    proposal.decided_at = datetime.now(UTC)
    proposal.decision_note = note


def announce_approval(
    uow: UnitOfWork, proposal: Proposal, tenant: str, cause: Envelope | Cause | None = None
) -> None:
    uow.publish(
        TradesApprovedV1(
            proposal_id=proposal.proposal_id,
            account_id=proposal.account_id,
            approved_by=proposal.decided_by or "",
            trades=[TradeV1.model_validate(t) for t in proposal.trades],
            cash_movements=[CashMovementV1.model_validate(m) for m in proposal.cash_movements],
        ),
        key=proposal.account_id,
        tenant=tenant,
        cause=cause,
    )


async def _changed(
    uow: UnitOfWork,
    repo: AccountRepository,
    account: Account,
    actor: str,
    action: str,
    before: dict[str, Any],
) -> AccountOut:
    account.updated_at = datetime.now(UTC)
    await repo.save(account)
    await repo.append_audit(
        account.tenant,
        [AuditEntry(actor, action, "account", account.account_id, before, _doc_of(account))],
    )
    if account.status == OPENING_STATUS:  # an automatic step may follow the change
        accounts = account_opening_repository.account_ids([account.account_id])
        await settle_opening(uow, account.tenant, actor, accounts)
    await announce_accounts(uow, repo, [account])
    return view(account)


def _opening_action(account: Account) -> str:
    """The audit action of an account opened: `open`, or `start-opening` as a workflow (it is
    audited `open` when its steps are done)."""
    return "start-opening" if account.status == OPENING_STATUS else "open"


async def settle_opening(uow: UnitOfWork, tenant: str, actor: str, accounts: Any) -> list[str]:
    """The one place an opening moves on: work out the automatic steps of the opening accounts
    among `accounts` (a SELECT of account ids) as they are now, and open those whose steps are
    all done (status active, audited `open` by `actor`); returns the ids opened. The caller
    announces the accounts it changed (those opened are among them)."""
    now = datetime.now(UTC)
    session = uow.session
    await account_opening_repository.settle_automatic_steps(session, accounts, actor, now)
    opened = await account_opening_repository.open_accounts_with_every_step_done(
        session, accounts, now
    )
    if opened:
        before, after = {"status": OPENING_STATUS}, {"status": OPENED_STATUS}
        entries = [AuditEntry(actor, "open", "account", a, before, after) for a in opened]
        await PostgresAccountRepository(session).append_audit(tenant, entries)
        log.info("accounts opened", extra={"tenant": tenant, "accounts": len(opened)})
    return opened


async def missing_opening_steps(session: AsyncSession, account_id: str) -> list[str]:
    """The account's opening steps not done yet, in their order."""
    steps = await account_opening_repository.steps_of(session, account_id)
    return [s.step for s in steps if s.status != account_opening_repository.DONE]


async def _refuse_status_while_opening(uow: UnitOfWork, account_id: str, status: str) -> None:
    missing = await missing_opening_steps(uow.session, account_id)
    open_steps = ", ".join(missing) or "none"
    raise Conflict(
        f"account {account_id} is opening: it becomes active by itself when its opening steps "
        f"are done (not done: {open_steps}); it may only be closed meanwhile",
        [FieldProblem("status", f"cannot become {status} while opening; open steps: {open_steps}")],
    )


class AccountState(Protocol):
    """What account-changed is made of: an Account, or a row read from the accounts table."""

    @property
    def account_id(self) -> str: ...
    @property
    def tenant(self) -> str: ...
    @property
    def household_id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def account_type(self) -> str: ...
    @property
    def model_id(self) -> str | None: ...
    @property
    def status(self) -> str: ...
    @property
    def auto_approve(self) -> bool: ...
    @property
    def rebalance_settings(self) -> dict[str, Any]: ...
    @property
    def restrictions(self) -> list[dict[str, Any]]: ...
    @property
    def tax_settings(self) -> dict[str, Any] | None: ...
    @property
    def strategy(self) -> dict[str, Any] | None: ...


async def announce_accounts(
    uow: UnitOfWork,
    repo: AccountRepository,
    accounts: Sequence[AccountState],
    causes: Mapping[str, Envelope] | None = None,
) -> None:
    """Publish each account's whole state (list restrictions carry the members of their
    tenant's lists: one read per tenant of the accounts), following from its event in
    `causes` where a consumed event made the change."""
    wanted: dict[str, set[str]] = {}
    for account in accounts:
        lists_named = {r["value"] for r in account.restrictions if r["scope"] == "list"}
        wanted.setdefault(account.tenant, set()).update(lists_named)
    lists = {
        tenant: await repo.security_lists(tenant, sorted(ids)) if ids else {}
        for tenant, ids in wanted.items()
    }
    for account in accounts:
        event = account_event(account, lists[account.tenant])
        cause = causes.get(account.account_id) if causes else None
        uow.publish(event, key=account.account_id, tenant=account.tenant, cause=cause)


def account_event(account: AccountState, lists: dict[str, list[str]]) -> AccountChangedV1:
    """The account's whole state as account-changed (list restrictions carry the members)."""
    return AccountChangedV1(
        account_id=account.account_id,
        household_id=account.household_id,
        name=account.name,
        account_type=account.account_type,
        model_id=account.model_id,
        status=WIRE_STATUS.get(account.status, account.status),
        auto_approve=account.auto_approve,
        rebalance_settings=RebalanceSettingsV1.model_validate(account.rebalance_settings),
        restrictions=[
            RestrictionV1(
                kind=r["kind"],
                scope=r["scope"],
                value=r["value"],
                source=r["source"],
                reason=r["reason"],
                set_by=r["set_by"],
                symbols=lists.get(r["value"], []) if r["scope"] == "list" else [],
            )
            for r in account.restrictions
        ],
        tax_settings=TaxSettingsV1.model_validate(account.tax_settings or {}),
        strategy=StrategyV1.model_validate(account.strategy) if account.strategy else None,
    )


async def check_strategy(
    repo: AccountRepository, tenant: str, strategy: Strategy, prefix: str
) -> None:
    """The rules the engine would reject a UMA for, named by field before they are stored."""
    problems: list[FieldProblem] = []
    sleeve_ids: set[str] = set()
    model_ids: set[str] = set()
    for i, sleeve in enumerate(strategy.sleeves):
        where = f"{prefix}sleeves[{i}]"
        if sleeve.sleeve_id in sleeve_ids:
            problems.append(FieldProblem(f"{where}.sleeve_id", f"{sleeve.sleeve_id} used twice"))
        if sleeve.model_id in model_ids:
            problems.append(
                FieldProblem(f"{where}.model_id", rules.model_has_two_sleeves(sleeve.model_id))
            )
        sleeve_ids.add(sleeve.sleeve_id)
        model_ids.add(sleeve.model_id)
        band = sleeve.band
        lo, hi = rules.band_bounds(band.kind, band.width, sleeve.weight)
        if lo < -rules.BAND_EPS or hi > 1 + rules.BAND_EPS:
            problems.append(
                FieldProblem(
                    f"{where}.band.width",
                    rules.band_too_wide(band.kind, band.width, sleeve.weight, lo, hi),
                )
            )
    total = sum((s.weight for s in strategy.sleeves), Decimal(0))
    if abs(total - 1) > rules.WEIGHT_TOLERANCE:
        problems.append(FieldProblem(f"{prefix}sleeves", rules.weights_do_not_add_up(total)))
    known = await repo.known_model_ids(tenant, sorted(model_ids))
    for i, sleeve in enumerate(strategy.sleeves):
        if sleeve.model_id not in known:
            problems.append(
                FieldProblem(f"{prefix}sleeves[{i}].model_id", rules.unknown_model(sleeve.model_id))
            )
    if problems:
        raise InvalidInput(
            f"invalid strategy: {problems[0].field}: {problems[0].message}", problems
        )


async def _check_restrictions(
    repo: AccountRepository, tenant: str, items: Sequence[RestrictionIn], field: str
) -> None:
    problems: list[FieldProblem] = []
    seen: set[tuple[str, str, str]] = set()
    for i, r in enumerate(items):
        key = (r.kind, r.scope, r.value)
        if key in seen:
            problems.append(FieldProblem(f"{field}[{i}]", rules.restriction_twice(*key)))
        seen.add(key)
        if r.scope == "security" and not re.fullmatch(rules.SYMBOL_PATTERN, r.value):
            problems.append(FieldProblem(f"{field}[{i}].value", rules.not_a_symbol(r.value)))
    wanted = sorted({r.value for r in items if r.scope == "list"})
    known = await repo.security_lists(tenant, wanted)
    for i, r in enumerate(items):
        if r.scope == "list" and r.value not in known:
            problems.append(FieldProblem(f"{field}[{i}].value", rules.unknown_list(r.value)))
    if problems:
        raise InvalidInput(
            f"invalid restrictions: {problems[0].field}: {problems[0].message}", problems
        )


def _restriction_key(r: dict[str, Any]) -> tuple[str, str, str]:
    return r["kind"], r["scope"], r["value"]


def _restriction_docs(
    items: Iterable[RestrictionIn], actor: str, now: datetime
) -> list[dict[str, Any]]:
    return [
        {
            "kind": r.kind,
            "scope": r.scope,
            "value": r.value,
            "source": r.source,
            "reason": r.reason,
            "set_by": actor,
            "set_at": now.isoformat(),
        }
        for r in items
    ]


def _settings_doc(settings: RebalanceSettings | None) -> dict[str, Any]:
    return settings.model_dump(mode="json", exclude_none=True) if settings else {}


def _doc(model: TaxSettings | Strategy | None) -> dict[str, Any] | None:
    return model.model_dump(mode="json") if model is not None else None


async def _check_households(
    repo: AccountRepository, tenant: str, household_ids: Sequence[str], many: bool
) -> None:
    """A household of another tenant is refused: its accounts are not the caller's to join."""
    taken = await repo.households_of_other_tenants(tenant, sorted(set(household_ids)))
    if taken:
        raise InvalidInput(
            f"household {sorted(taken)[0]} is another tenant's: choose another household id",
            [
                FieldProblem(
                    f"accounts[{i}].household_id" if many else "household_id",
                    f"household {h} is another tenant's",
                )
                for i, h in enumerate(household_ids)
                if h in taken
            ],
        )


async def _check_models(
    repo: AccountRepository, tenant: str, model_ids: Sequence[str | None]
) -> None:
    wanted = sorted({m for m in model_ids if m})
    if not wanted:
        return
    known = await repo.known_model_ids(tenant, wanted)
    unknown = [m for m in wanted if m not in known]
    if unknown:
        raise InvalidInput(
            f"unknown model {unknown[0]}: publish it in model-hub-svc first",
            [FieldProblem("model_id", rules.unknown_model(m)) for m in unknown],
        )


async def _account(
    repo: AccountRepository, tenant: str, account_id: str, *, for_update: bool = False
) -> Account:
    """The tenant's account; another tenant's answers exactly as an unknown one (404)."""
    account = await repo.get_account(tenant, account_id, for_update=for_update)
    if account is None:
        raise NotFound(f"no account {account_id}")
    return account


def _doc_of(row: Account | SecurityList) -> dict[str, Any]:
    """A row as the audit trail keeps it (when it changed is the record's own time)."""
    return row.model_dump(exclude={"created_at", "updated_at"})


def decision_doc(proposal: Proposal) -> dict[str, Any]:
    """What a decision changes of a proposal, with what it is about."""
    return proposal.model_dump(
        include={
            "account_id",
            "run_id",
            "model_id",
            "model_version",
            "status",
            "decided_by",
            "decided_at",
            "decision_note",
            "routed_by",
            "routing_action",
        }
    )


async def record_book_load(
    repo: AccountRepository, staged: StagedLoad, counts: dict[str, int]
) -> None:
    """One audit record sums an applied book load up (a load may open the whole book)."""
    summary = {"as_of": staged.as_of, "rows": staged.rows, **counts}
    actor = f"book-load:{staged.load_id}"
    entry = AuditEntry(actor, "apply", "book-load", staged.load_id, None, summary)
    await repo.append_audit(staged.tenant, [entry])


async def account_audit_trail(
    session: AsyncSession, tenant: str, account_id: str, after: int | None, limit: int, offset: int
) -> list[AuditRecordOut]:
    """A page of the audit records of one of the tenant's accounts (another's: not found)."""
    await _account(PostgresAccountRepository(session), tenant, account_id)
    return await audit.read(
        session,
        tenant,
        subject_type="account",
        subject_id=account_id,
        after=after,
        limit=limit,
        offset=offset,
    )


def view(account: Account) -> AccountOut:
    return AccountOut(
        account_id=account.account_id,
        tenant=account.tenant,
        household_id=account.household_id,
        name=account.name,
        account_type=account.account_type,  # type: ignore[arg-type]
        model_id=account.model_id,
        auto_approve=account.auto_approve,
        status=account.status,  # type: ignore[arg-type]
        rebalance_settings=RebalanceSettings.model_validate(account.rebalance_settings),
        tax_settings=TaxSettings.model_validate(account.tax_settings or {}),
        strategy=Strategy.model_validate(account.strategy) if account.strategy else None,
        restrictions=[RestrictionOut.model_validate(r) for r in account.restrictions],
        created_at=account.created_at,
        updated_at=account.updated_at,
        advisor_id=account.advisor_id,
        attributes=account.attributes,
    )
