"""Bulk changes: one change (a restriction, settings, a model, a status, attributes) to many of
a tenant's accounts, previewed on a frozen selection, applied all or nothing with exemptions.

A preview keeps the selected accounts with what the change makes of each (the columns it
touches before and after) and why it cannot apply to some. An account may be exempted
(who, when, why) while the change is previewed. Applying works the outcome out again on the
accounts as they are then, refuses (422, nothing changed) while an account not exempted
cannot take it, else changes them in one statement, records each in the audit trail (action
`bulk-change:<id>`) and announces each (account-changed), a thousand at a time."""

import json
import re
import uuid
from datetime import UTC, datetime
from typing import Any

from ballast_common.audit import AuditEntry
from ballast_common.errors import Conflict, FieldProblem, InvalidInput, NotFound
from ballast_common.uow import UnitOfWork
from pydantic import TypeAdapter
from sqlalchemy.sql import Select
from sqlmodel.ext.asyncio.session import AsyncSession

from account_svc import bulk_changes_repository as repo
from account_svc import rules
from account_svc.bulk_changes_schemas import (
    AddRestriction,
    BulkChangeAccountOut,
    BulkChangeCounts,
    BulkChangeIn,
    BulkChangeOut,
    Change,
    ExemptionIn,
    ProblemOut,
    RemoveRestriction,
    Selection,
    SetAttributes,
    SetModel,
    SetRebalanceSettings,
    SetStatus,
    SetTaxSettings,
)
from account_svc.filter_conditions import Condition, validate_conditions
from account_svc.filters_repository import accounts_selected, get_filter
from account_svc.repository import PostgresAccountRepository
from account_svc.schemas import MAX_ATTRIBUTES, TaxSettings
from account_svc.service import announce_accounts, settle_opening
from account_svc.tables import BulkChange, BulkChangeAccount

PAGE = 1000  # accounts audited and announced at a time
MOST_NAMED = 100  # accounts named in an answer (problems, unknown ids, changed since preview)
PREVIEWED, APPLIED, CANCELLED = "previewed", "applied", "cancelled"
SUBJECT = "bulk-change"
ACTION_PREFIX = "bulk-change:"  # the action of an account's audit record a bulk change made
_CHANGE = TypeAdapter[Change](Change)


def audit_action(bulk_change_id: str) -> str:
    return ACTION_PREFIX + bulk_change_id


def bulk_change_of_action(action: str) -> str | None:
    """The bulk change an account's audit record comes from (None: another path)."""
    return action.removeprefix(ACTION_PREFIX) if action.startswith(ACTION_PREFIX) else None


async def preview(uow: UnitOfWork, tenant: str, actor: str, body: BulkChangeIn) -> BulkChangeOut:
    """Freeze the selection and work out what the change makes of each account; nothing of
    the accounts changes yet."""
    session = uow.session
    now = datetime.now(UTC)
    selected, selection_doc = await _selection(session, tenant, body.selection)
    kind, params = await _plan(session, tenant, actor, body.change, now)
    row = BulkChange(
        bulk_change_id=str(uuid.uuid4()),
        tenant=tenant,
        kind=kind,
        change=body.change.model_dump(mode="json", exclude_unset=True) | {"kind": kind},
        selection=selection_doc,
        note=body.note,
        status=PREVIEWED,
        created_by=actor,
        created_at=now,
    )
    await repo.add_bulk_change(session, row)
    count = await repo.freeze_selection(session, row.bulk_change_id, tenant, selected)
    if count == 0:
        raise InvalidInput(
            "the selection selects none of your accounts",
            [FieldProblem("selection", "selects no account")],
        )
    await repo.work_out_outcomes(session, row.bulk_change_id, kind, params, exempted_too=True)
    summary = {
        "kind": kind,
        "change": row.change,
        "selection": selection_doc,
        "note": row.note,
        "selected": count,
    }
    await _audit(uow, tenant, actor, "preview", row.bulk_change_id, None, summary)
    return await _view(session, row)


async def get(session: AsyncSession, tenant: str, bulk_change_id: str) -> BulkChangeOut:
    """The tenant's bulk change with its counts."""
    return await _view(session, await _bulk_change(session, tenant, bulk_change_id))


async def list_bulk_changes(
    session: AsyncSession, tenant: str, limit: int, offset: int
) -> list[BulkChangeOut]:
    """A page of the tenant's bulk changes, newest first, with their counts."""
    rows = await repo.list_bulk_changes(session, tenant, limit, offset)
    counted = await repo.counts(session, [r.bulk_change_id for r in rows])
    return [_out(r, counted.get(r.bulk_change_id, repo.Counts())) for r in rows]


async def accounts(
    session: AsyncSession,
    tenant: str,
    bulk_change_id: str,
    *,
    with_problems: bool | None,
    exempted: bool | None,
    limit: int,
    offset: int,
) -> list[BulkChangeAccountOut]:
    """A page of the bulk change's accounts with their before, after, problems, exemption."""
    await _bulk_change(session, tenant, bulk_change_id)
    rows = await repo.account_outcomes(
        session,
        bulk_change_id,
        with_problems=with_problems,
        exempted=exempted,
        limit=limit,
        offset=offset,
    )
    return [_account_out(r) for r in rows]


async def exempt(
    uow: UnitOfWork, tenant: str, actor: str, bulk_change_id: str, body: ExemptionIn
) -> BulkChangeAccountOut:
    """Leave one selected account out of a previewed bulk change, recording who and why."""
    row = await _bulk_change(uow.session, tenant, bulk_change_id, for_update=True)
    _still_previewed(row, "exempt an account")
    outcome = await repo.get_account_outcome(uow.session, bulk_change_id, body.account_id)
    if outcome is None:
        raise InvalidInput(
            f"account {body.account_id} is not selected by bulk change {bulk_change_id}",
            [FieldProblem("account_id", "not selected by this bulk change")],
        )
    if outcome.exempted_at is not None:
        raise Conflict(
            f"account {body.account_id} was already exempted by {outcome.exempted_by} at "
            f"{outcome.exempted_at.isoformat()}: lift that exemption first to give another reason"
        )
    outcome.exempted_by, outcome.exempted_at = actor, datetime.now(UTC)
    outcome.exemption_reason = body.reason
    await repo.save(uow.session, outcome)
    exemption = {"account_id": body.account_id, "reason": body.reason}
    await _audit(uow, tenant, actor, "exempt", bulk_change_id, None, exemption)
    return _account_out(outcome)


async def lift_exemption(
    uow: UnitOfWork, tenant: str, actor: str, bulk_change_id: str, account_id: str
) -> BulkChangeAccountOut:
    """The account is back in the previewed bulk change."""
    row = await _bulk_change(uow.session, tenant, bulk_change_id, for_update=True)
    _still_previewed(row, "lift an exemption")
    outcome = await repo.get_account_outcome(uow.session, bulk_change_id, account_id)
    if outcome is None or outcome.exempted_at is None:
        raise NotFound(f"account {account_id} is not exempted from bulk change {bulk_change_id}")
    before = {
        "account_id": account_id,
        "reason": outcome.exemption_reason,
        "exempted_by": outcome.exempted_by,
    }
    outcome.exempted_by = outcome.exempted_at = outcome.exemption_reason = None
    await repo.save(uow.session, outcome)
    await _audit(uow, tenant, actor, "lift-exemption", bulk_change_id, before, None)
    return _account_out(outcome)


async def apply(uow: UnitOfWork, tenant: str, actor: str, bulk_change_id: str) -> BulkChangeOut:
    """Apply a previewed bulk change to its frozen selection minus the exempted accounts, all
    or nothing, in this transaction."""
    session = uow.session
    row = await _bulk_change(session, tenant, bulk_change_id, for_update=True)
    _still_previewed(row, "apply it")
    now = datetime.now(UTC)
    locked = await repo.lock_selected_accounts(session, bulk_change_id, MOST_NAMED)
    change = _CHANGE.validate_python(row.change)
    kind, params = await _plan(session, tenant, actor, change, now)
    await repo.work_out_outcomes(session, bulk_change_id, kind, params, exempted_too=False)
    failing, named = await repo.problems_of_unexempted(session, bulk_change_id, MOST_NAMED)
    if failing:
        raise InvalidInput(
            f"{failing} account(s) cannot take the change, e.g. {named[0][0]}: "
            f"{named[0][1][0]['message']}; nothing was applied: exempt them or start a bulk "
            "change with another selection",
            [
                FieldProblem(f"accounts[{account_id}].{p['field']}", p["message"])
                for account_id, problems in named
                for p in problems
            ],
        )
    changed = await repo.apply_to_accounts(session, bulk_change_id, kind, now)
    await settle_opening(uow, tenant, actor, repo.changed_account_ids(bulk_change_id))
    await _record_and_announce(uow, tenant, actor, bulk_change_id)
    before = {"status": row.status}
    row.status, row.applied_by, row.applied_at = APPLIED, actor, now
    row.changed = changed
    row.changed_since_preview = locked.changed_since_preview
    row.changed_since_preview_ids = locked.changed_since_preview_ids
    await repo.save(session, row)
    after = {
        "status": APPLIED,
        "changed": changed,
        "changed_since_preview": locked.changed_since_preview,
    }
    await _audit(uow, tenant, actor, "apply", bulk_change_id, before, after)
    return await _view(session, row)


async def cancel(uow: UnitOfWork, tenant: str, actor: str, bulk_change_id: str) -> BulkChangeOut:
    """Drop a previewed bulk change: it can no longer be applied."""
    row = await _bulk_change(uow.session, tenant, bulk_change_id, for_update=True)
    _still_previewed(row, "cancel it")
    row.status, row.cancelled_by, row.cancelled_at = CANCELLED, actor, datetime.now(UTC)
    await repo.save(uow.session, row)
    await _audit(
        uow, tenant, actor, "cancel", bulk_change_id, {"status": PREVIEWED}, {"status": CANCELLED}
    )
    return await _view(uow.session, row)


async def _record_and_announce(
    uow: UnitOfWork, tenant: str, actor: str, bulk_change_id: str
) -> None:
    """An audit record (the columns the change touched, before and after: a whole account
    per record would cost several times more to hash) and an account-changed for every
    account changed, a page at a time."""
    account_repo = PostgresAccountRepository(uow.session)
    action = audit_action(bulk_change_id)
    last = ""
    while page := await repo.changed_accounts_page(uow.session, bulk_change_id, last, PAGE):
        entries = [
            AuditEntry(actor, action, "account", a.account_id, a.touched_before, a.touched_after)
            for a in page
        ]
        await account_repo.append_audit(tenant, entries)
        await announce_accounts(uow, account_repo, page)
        await uow.flush_events()
        last = page[-1].account_id


async def _selection(
    session: AsyncSession, tenant: str, selection: Selection
) -> tuple[Select[Any], dict[str, Any]]:
    """The accounts a selection names, as a select of account_id, and the selection as kept
    (a filter with its conditions of now)."""
    given = [
        name
        for name in ("filter_id", "conditions", "account_ids")
        if getattr(selection, name) is not None
    ]
    if len(given) != 1:
        raise InvalidInput(
            "a selection is exactly one of filter_id, conditions or account_ids",
            [
                FieldProblem(
                    "selection",
                    "give one of filter_id, conditions, account_ids; given: "
                    + (", ".join(given) or "none"),
                )
            ],
        )
    if selection.account_ids is not None:
        unknown = await repo.unknown_account_ids(session, tenant, selection.account_ids, MOST_NAMED)
        if unknown:
            raise InvalidInput(
                f"no account {unknown[0][1]}",
                [
                    FieldProblem(f"selection.account_ids[{i}]", f"no account {a}")
                    for i, a in unknown
                ],
            )
        ids = sorted(set(selection.account_ids))
        return repo.accounts_of_ids(tenant, ids), {"account_ids": len(ids)}
    if selection.filter_id is not None:
        saved = await get_filter(session, tenant, selection.filter_id)
        if saved is None:
            raise InvalidInput(
                f"no filter {selection.filter_id}",
                [FieldProblem("selection.filter_id", f"no filter {selection.filter_id}")],
            )
        conditions = [Condition.model_validate(d) for d in saved.conditions]
        doc = {"filter_id": selection.filter_id, "conditions": saved.conditions}
        return accounts_selected(tenant, conditions), doc
    conditions = selection.conditions or []
    problems = validate_conditions(conditions, "selection.conditions")
    if problems:
        raise InvalidInput(
            f"invalid selection: {problems[0].field}: {problems[0].message}", problems
        )
    doc = {"conditions": [c.model_dump(mode="json") for c in conditions]}
    return accounts_selected(tenant, conditions), doc


async def _plan(
    session: AsyncSession, tenant: str, actor: str, change: Change, now: datetime
) -> tuple[str, dict[str, Any]]:
    """The change checked (422 naming `change.<field>`), as its kind and the parameters its
    SQL takes."""
    account_repo = PostgresAccountRepository(session)
    match change:
        case AddRestriction(restriction=r):
            if r.scope == "security" and not re.fullmatch(rules.SYMBOL_PATTERN, r.value):
                _refuse("change.restriction.value", rules.not_a_symbol(r.value))
            if r.scope == "list" and not await account_repo.security_lists(tenant, [r.value]):
                _refuse("change.restriction.value", rules.unknown_list(r.value))
            key = {"kind": r.kind, "scope": r.scope, "value": r.value}
            doc = key | {
                "source": r.source,
                "reason": r.reason,
                "set_by": actor,
                "set_at": now.isoformat(),
            }
            message = f"the account has {rules.MAX_RESTRICTIONS} restrictions, the most it may have"
            return "add_restriction", {
                "key": json.dumps(key),
                "doc": json.dumps(doc),
                "most": rules.MAX_RESTRICTIONS,
                "message": message,
            }
        case RemoveRestriction():
            key = {"kind": change.restriction_kind, "scope": change.scope, "value": change.value}
            return "remove_restriction", {"key": json.dumps(key)}
        case SetRebalanceSettings(settings=settings) | SetTaxSettings(settings=settings):
            given = settings.model_fields_set
            if not given:
                _refuse("change.settings", "names no setting to change")
            patch = {k: v for k, v in settings.model_dump(mode="json").items() if k in given}
            if isinstance(change, SetRebalanceSettings):
                return "set_rebalance_settings", {"patch": json.dumps(patch)}
            defaults = TaxSettings().model_dump(mode="json")
            return "set_tax_settings", {
                "patch": json.dumps(patch),
                "defaults": json.dumps(defaults),
            }
        case SetModel(model_id=model_id):
            if not await account_repo.known_model_ids(tenant, [model_id]):
                _refuse("change.model_id", rules.unknown_model(model_id))
            return "set_model", {"model_id": model_id, "message": rules.UMA_HAS_NO_MODEL}
        case SetStatus(status=status):
            message = (
                f"the account is opening: it cannot become {status} before its opening steps "
                "are done (it may be closed)"
            )
            return "set_status", {"status": status, "message": message}
        case SetAttributes():
            set_advisor = "advisor_id" in change.model_fields_set
            if not change.attributes and not set_advisor:
                _refuse("change", "names no attribute and no advisor_id to change")
            return "set_attributes", {
                "patch": json.dumps(change.attributes),
                "set_advisor": set_advisor,
                "advisor_id": change.advisor_id,
                "most": MAX_ATTRIBUTES,
                "message": f"the account would have more than {MAX_ATTRIBUTES} attributes",
            }
    raise AssertionError(f"unknown kind of change {change!r}")


def _refuse(field: str, message: str) -> None:
    raise InvalidInput(f"invalid change: {field}: {message}", [FieldProblem(field, message)])


def _still_previewed(row: BulkChange, what: str) -> None:
    if row.status != PREVIEWED:
        by = row.applied_by if row.status == APPLIED else row.cancelled_by
        raise Conflict(
            f"bulk change {row.bulk_change_id} was already {row.status} by {by}: cannot {what}"
        )


async def _bulk_change(
    session: AsyncSession, tenant: str, bulk_change_id: str, *, for_update: bool = False
) -> BulkChange:
    row = await repo.get_bulk_change(session, tenant, bulk_change_id, for_update=for_update)
    if row is None:
        raise NotFound(f"no bulk change {bulk_change_id}")
    return row


async def _audit(
    uow: UnitOfWork,
    tenant: str,
    actor: str,
    action: str,
    bulk_change_id: str,
    before: Any,
    after: Any,
) -> None:
    entry = AuditEntry(actor, action, SUBJECT, bulk_change_id, before, after)
    await PostgresAccountRepository(uow.session).append_audit(tenant, [entry])


async def _view(session: AsyncSession, row: BulkChange) -> BulkChangeOut:
    counted = await repo.counts(session, [row.bulk_change_id])
    return _out(row, counted.get(row.bulk_change_id, repo.Counts()))


def _out(row: BulkChange, counts: repo.Counts) -> BulkChangeOut:
    warnings = []
    if row.changed_since_preview:
        warnings.append(
            f"{row.changed_since_preview} selected account(s) changed between the preview and "
            "the apply (e.g. " + ", ".join(row.changed_since_preview_ids[:5]) + "): the change "
            "was applied to them as they were at the apply"
        )
    return BulkChangeOut(
        bulk_change_id=row.bulk_change_id,
        kind=row.kind,
        change=row.change,
        selection=row.selection,
        note=row.note,
        status=row.status,  # type: ignore[arg-type]
        counts=BulkChangeCounts(**vars(counts)),
        created_by=row.created_by,
        created_at=row.created_at,
        applied_by=row.applied_by,
        applied_at=row.applied_at,
        cancelled_by=row.cancelled_by,
        cancelled_at=row.cancelled_at,
        changed=row.changed,
        changed_since_preview=row.changed_since_preview,
        changed_since_preview_ids=row.changed_since_preview_ids,
        warnings=warnings,
    )


def _account_out(row: BulkChangeAccount) -> BulkChangeAccountOut:
    return BulkChangeAccountOut(
        account_id=row.account_id,
        before=row.before,
        after=row.after,
        changing=row.exempted_at is None and row.before != row.after,
        problems=[ProblemOut(**p) for p in row.problems],
        exempted=row.exempted_at is not None,
        exempted_by=row.exempted_by,
        exempted_at=row.exempted_at,
        exemption_reason=row.exemption_reason,
    )
