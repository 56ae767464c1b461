"""Corporate actions on the book: applied once per action id, all or nothing, to every
account holding the security on its date, by replaying the households concerned with the
tax engine (which owns the rules: split ratios, cash in lieu, merger basis, spin-off basis
allocation, dividends).

The cash an action brings (cash merger, cash in lieu, dividend) is credited once, when the
action is recorded. Each affected account gets ``holdings-reconciled`` (cause
``corporate-action`` with the action id), and the action is announced once, in the same
transaction, as ``corporate-action-recorded`` (not on a repeat). The request holds the
exclusive write lock, so no fill of any household is applied meanwhile.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from ballast_common.contracts.events import CorporateActionRecordedV1
from ballast_common.errors import Conflict, FieldProblem, InvalidInput
from ballast_common.uow import UnitOfWork
from ballast_engine.tax import TaxError

from taxlot_svc import repository as repo
from taxlot_svc.book import cash_entry, journal_entries
from taxlot_svc.replays import facts_of, rebuild, request_restated
from taxlot_svc.schemas import (
    ActionAccountOut,
    CorporateActionIn,
    CorporateActionOut,
    SplitIn,
)

CAUSE = "corporate-action"
# Every corporate-action-recorded has this key, so consumers see actions in the order they
# were recorded (a symbol change FB -> META before a later split of META).
EVENT_KEY = "corporate-actions"
EVENT_TENANT = "global"  # an action concerns a security, whoever holds it
FUTURE_SLACK = timedelta(days=1)


def _invalid(field: str, message: str) -> InvalidInput:
    return InvalidInput(f"{field}: {message}", [FieldProblem(field, message)])


async def apply_corporate_action(
    uow: UnitOfWork, body: CorporateActionIn, today: date | None = None
) -> CorporateActionOut:
    """Apply a corporate action once. A repeat with the same terms returns the first
    result (``repeated``); the same id with other terms is a 409.

    Raises InvalidInput (422, naming the field) for a future date, a reverse split that is
    not one, a security no account holds on the date, or an action that would also hit
    opening balances already stated after it.
    """
    session = uow.session
    terms = body.model_dump(mode="json")
    day = today or datetime.now(UTC).date()
    if body.on > day + FUTURE_SLACK:
        raise _invalid("on", f"{body.on} is in the future")
    if isinstance(body, SplitIn):
        if body.type == "reverse-split" and body.numerator >= body.denominator:
            raise _invalid(
                "numerator",
                f"a reverse split gives fewer shares: {body.numerator} for "
                f"{body.denominator} is not one",
            )
        if body.numerator == body.denominator:
            raise _invalid("numerator", "a split must change the number of shares")
    await repo.lock_writes(session, exclusive=True)
    existing = await repo.get_corporate_action(session, body.action_id)
    if existing is not None:
        return _repeat(existing.terms, existing.result, terms)
    accounts = sorted(await repo.accounts_trading(session, body.symbol))
    if not accounts:
        raise _invalid("symbol", f"{body.symbol} is not held by any account")
    stated = await repo.opening_lots_before(session, body.symbol, body.on)
    if stated:
        account, as_of, lot = stated[0]
        raise _invalid(
            "on",
            f"account {account}'s opening balance as of {as_of} already reflects actions on "
            f"{body.symbol} up to that date (lot {lot} was acquired before {body.on})",
        )
    facts = await facts_of(session, accounts)
    households = sorted({f.household for f in facts.values()})
    if not await repo.add_corporate_action(
        session,
        {
            "action_id": body.action_id,
            "kind": body.type,
            "symbol": body.symbol,
            "effective_on": body.on,
            "terms": terms,
            "result": {},
        },
    ):
        raise Conflict(f"corporate action {body.action_id} is being applied by another request")
    try:
        replayed = await rebuild(session, households)
    except TaxError as exc:
        raise _invalid(exc.field or "action_id", exc.describe()) from exc
    cause = f"action {body.action_id}"
    out: list[ActionAccountOut] = []
    restated: list[str] = []
    books = {b.account_id: b for b in await repo.books(session, replayed.accounts)}
    for _household, replay in sorted(replayed.replays.items()):
        if body.action_id not in replay.applied_actions:
            continue
        changes = replay.changes(cause)
        for account in sorted({c.account for c in changes}):
            row = books.get(account)
            if row is None:  # pragma: no cover - lots exist only in accounts with a ledger
                continue
            disposals = replay.disposals_of(body.action_id, account)
            cash_change = sum((d.proceeds for d in disposals), Decimal("0.00"))
            cash_change += replay.income_of(body.action_id, account)
            entries = journal_entries(
                [c for c in changes if c.account == account], CAUSE, body.action_id
            )
            if cash_change:
                entries.append(cash_entry(account, CAUSE, body.action_id, cash_change))
            await repo.add_ledger_entries(session, entries)
            cash = row.cash + cash_change
            as_of = max(row.as_of, body.on)
            await repo.set_cash(session, account, cash, as_of)
            restated.append(account)
            out.append(
                ActionAccountOut(
                    account_id=account, cash_change=cash_change, realized_lots=len(disposals)
                )
            )
    if not out:
        raise _invalid("symbol", f"{body.symbol} is not held by any account on {body.on}")
    await repo.add_ledger_entries(
        session, replayed.restatements(CAUSE, body.action_id, exclude=restated)
    )
    changed = set(restated) | set(replayed.changed())
    await request_restated(session, changed, cause=CAUSE, action_id=body.action_id)
    result = CorporateActionOut(
        action_id=body.action_id, type=body.type, symbol=body.symbol, on=body.on, accounts=out
    )
    await repo.set_corporate_action_result(session, body.action_id, result.model_dump(mode="json"))
    uow.publish(recorded_event(terms, len(out)), key=EVENT_KEY, tenant=EVENT_TENANT)
    return result


def recorded_event(terms: dict[str, Any], accounts_affected: int) -> CorporateActionRecordedV1:
    """``corporate-action-recorded`` of an action's terms (as recorded, JSON values):
    models, restriction lists and the security master follow it."""
    kind = terms["type"]
    cash = terms.get("cash_per_share") if kind == "cash-merger" else terms.get("per_share")
    return CorporateActionRecordedV1(
        action_id=terms["action_id"],
        type=kind,
        symbol=terms["symbol"],
        on=date.fromisoformat(str(terms["on"])),
        new_symbol=terms.get("new_symbol"),
        numerator=terms.get("numerator"),
        denominator=terms.get("denominator"),
        ratio=_decimal(terms.get("ratio")),
        cash_per_share=_decimal(cash),
        basis_percent=_decimal(terms.get("basis_percent")),
        accounts_affected=accounts_affected,
    )


def _decimal(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def _repeat(
    stored_terms: dict[str, Any], stored_result: dict[str, Any], terms: dict[str, Any]
) -> CorporateActionOut:
    if stored_terms != terms:
        raise Conflict(
            f"corporate action {terms['action_id']} was applied with other terms",
            [FieldProblem("action_id", "already applied with other terms")],
        )
    result = CorporateActionOut.model_validate(stored_result)
    return result.model_copy(update={"repeated": True})
