"""Sleeve transfers: shares move between sleeves of one account without a taxable event
(the engine's ``TaxLedger.move``: lots keep basis, dates and purchase; a partly moved lot
is split). A transfer is an input like a fill, so replays keep it.

Cash moves between sleeves too (or between a sleeve and the account's own cash): the
account's cash stays, the sleeves' cash moves, journalled as two cash entries. Over REST
(a person's transfer) and when proposed trades are approved (the rebalancer's planned
movements of a UMA's strategic rebalance, from trades-approved)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from ballast_common.audit import AuditEntry
from ballast_common.contracts.envelope import Envelope
from ballast_common.contracts.events import TradesApprovedV1
from ballast_common.errors import (
    Conflict,
    FieldProblem,
    InvalidInput,
    NotFound,
    PermanentMessageError,
)
from ballast_common.uow import Cause, UnitOfWork
from ballast_engine.tax import TaxError

from taxlot_svc import book
from taxlot_svc import repository as repo
from taxlot_svc.book import cash_entry, journal_entries, own_cash
from taxlot_svc.incremental import apply_in_order
from taxlot_svc.opening import CENTS, check_account_id, decimals
from taxlot_svc.replays import facts_of, members_of, rebuild, request_restated
from taxlot_svc.schemas import (
    LotOut,
    SleeveCashOut,
    SleeveCashTransferIn,
    SleeveCashTransferOut,
    SleeveTransferIn,
    SleeveTransferOut,
)
from taxlot_svc.service import lock_and_read_contexts
from taxlot_svc.snapshots import sleeve_cash_v1

CAUSE = "sleeve-transfer"
FUTURE_SLACK = timedelta(days=1)
SLEEVE_ID_LENGTH = 64  # sleeve_cash.sleeve, ledger_entries.sleeve


def _invalid(field: str, message: str) -> InvalidInput:
    return InvalidInput(f"{field}: {message}", [FieldProblem(field, message)])


async def _move_shares(
    uow: UnitOfWork, tenant: str, account_id: str, body: SleeveTransferIn
) -> SleeveTransferOut:
    """Move shares between sleeves, once per ``transfer_id`` (a repeat with the same terms
    returns the first result with ``repeated``; other terms are a 409)."""
    session = uow.session
    problems = check_account_id(account_id, "account_id")
    if problems:
        raise InvalidInput(problems[0].message, problems)
    today = datetime.now(UTC).date()
    day = body.on or today
    if day > today + FUTURE_SLACK:
        raise _invalid("on", f"{day} is in the future")
    if body.from_sleeve == body.to_sleeve:
        raise _invalid("to_sleeve", f"the shares are already in sleeve {body.to_sleeve!r}")
    await repo.lock_writes(session, exclusive=True)
    if await repo.get_book(session, account_id, tenant=tenant) is None:
        raise NotFound(f"account {account_id} has no ledger")
    terms = {
        "symbol": body.symbol,
        "quantity": body.quantity,
        "sleeve": body.from_sleeve,
        "to_sleeve": body.to_sleeve,
        "lot_ids": ";".join(body.lot_ids),
        "trade_on": day,
    }
    existing = await repo.get_input(session, account_id, book.MOVE, body.transfer_id)
    if existing is not None:
        if any(getattr(existing, k) != v for k, v in terms.items() if k != "trade_on") or (
            body.on is not None and existing.trade_on != body.on
        ):
            raise Conflict(
                f"transfer {body.transfer_id} was recorded with other terms",
                [FieldProblem("transfer_id", "already recorded with other terms")],
            )
        return await _result(uow, account_id, body, existing.trade_on, repeated=True)
    item = book.Input(
        seq=0,
        account_id=account_id,
        kind=book.MOVE,
        ref=body.transfer_id,
        on=day,
        symbol=body.symbol,
        side="move",
        quantity=body.quantity,
        price=body.quantity * 0,
        lot_ids=tuple(body.lot_ids),
        sleeve=body.from_sleeve,
        to_sleeve=body.to_sleeve,
    )
    household = (await facts_of(session, [account_id]))[account_id].household
    last_day, seq = await repo.household_state(session, household)
    row = {
        "account_id": account_id,
        "kind": book.MOVE,
        "ref": body.transfer_id,
        "side": "move",
        "price": item.price,
        "fees": item.price,
        "lot_name": None,
        "method": None,
        **terms,
    }
    try:
        if last_day is None or day >= last_day:
            members = (await members_of(session, [household]))[household]
            applied = await apply_in_order(
                session, household, members, item, last_day, seq, ("opening-balance", None)
            )
            changes = applied.changes
            await repo.add_tax_inputs(session, [row])
        else:
            await repo.add_tax_inputs(session, [row])
            replayed = await rebuild(session, [household], [body.symbol])
            changes = replayed.replays[household].changes(item.cause)
    except TaxError as exc:
        field = {"lot": "lot_ids"}.get(exc.field, exc.field or "quantity")
        raise _invalid(field, exc.problem) from exc
    await repo.add_ledger_entries(session, journal_entries(changes, CAUSE, body.transfer_id))
    await request_restated(session, [account_id], cause=CAUSE)
    return await _result(uow, account_id, body, day, repeated=False)


async def _result(
    uow: UnitOfWork, account_id: str, body: SleeveTransferIn, day: object, *, repeated: bool
) -> SleeveTransferOut:
    rows = await repo.open_lots(uow.session, account_id, body.symbol)
    moved = [r for r in rows if r.sleeve == body.to_sleeve]
    return SleeveTransferOut(
        transfer_id=body.transfer_id,
        account_id=account_id,
        symbol=body.symbol,
        quantity=body.quantity,
        from_sleeve=body.from_sleeve,
        to_sleeve=body.to_sleeve,
        on=day,  # type: ignore[arg-type]
        moved=[LotOut.model_validate(r, from_attributes=True) for r in moved],
        repeated=repeated,
    )


async def _move_cash(
    uow: UnitOfWork, tenant: str, account_id: str, body: SleeveCashTransferIn
) -> SleeveCashTransferOut:
    """Move cash between sleeves of an account, once per ``transfer_id`` (a repeat with the
    same terms returns the result with ``repeated``; other terms are a 409). The sleeve it
    leaves must hold the amount."""
    session = uow.session
    problems = check_account_id(account_id, "account_id")
    if problems:
        raise InvalidInput(problems[0].message, problems)
    if decimals(body.amount) > CENTS:
        raise _invalid("amount", f"must be in cents (at most 2 decimals), got {body.amount}")
    if body.from_sleeve == body.to_sleeve:
        raise _invalid("to_sleeve", f"the cash is already in {_name(body.to_sleeve)}")
    await repo.lock_writes(session, exclusive=True)
    book_row = await repo.get_book(session, account_id, tenant=tenant)
    if book_row is None:
        raise NotFound(f"account {account_id} has no ledger")
    done = await repo.cash_transfer_entries(session, account_id, CAUSE, body.transfer_id)
    if done:
        terms = [(body.from_sleeve, -body.amount), (body.to_sleeve, body.amount)]
        if [(e.sleeve, e.amount) for e in done] != terms:
            raise Conflict(
                f"transfer {body.transfer_id} was recorded with other terms",
                [FieldProblem("transfer_id", "already recorded with other terms")],
            )
        return await _cash_result(uow, account_id, body, repeated=True)
    named = (await repo.sleeve_cash_of(session, [account_id])).get(account_id, {})
    held = _cash_of(book_row.cash, named, body.from_sleeve)
    if held < body.amount:
        raise _invalid("amount", f"{_name(body.from_sleeve)} holds {held}, less than {body.amount}")
    moves = {body.from_sleeve: -body.amount, body.to_sleeve: body.amount}
    await repo.move_sleeve_cash(session, account_id, {k: v for k, v in moves.items() if k})
    await repo.add_ledger_entries(
        session,
        [cash_entry(account_id, CAUSE, body.transfer_id, v, sleeve=k) for k, v in moves.items()],
    )
    await request_restated(session, [account_id], cause=CAUSE)
    return await _cash_result(uow, account_id, body, repeated=False)


async def book_cash_movements(
    uow: UnitOfWork, approvals: Sequence[tuple[TradesApprovedV1, Envelope]]
) -> set[str]:
    """Book the cash movements between sleeves that approved proposals planned, once per
    proposal (its id names the transfers), the batch in one statement; returns the proposals
    booked now. A move is booked in full even when its source holds less at that moment:
    the sells that fund it may not have filled yet, so refusing or capping it would make a
    sleeve's cash depend on whether the fills or the approval came first."""
    firsts: dict[str, tuple[TradesApprovedV1, Envelope]] = {}
    for approval, event in approvals:
        if approval.cash_movements:
            firsts.setdefault(str(approval.proposal_id), (approval, event))
    if not firsts:
        return set()
    moves = [m for approval, _ in firsts.values() for m in _cash_moves(approval)]
    session = uow.session
    accounts = sorted({approval.account_id for approval, _ in firsts.values()})
    booked = await lock_and_read_contexts(session, accounts)
    for approval, _ in firsts.values():
        if approval.account_id not in booked:
            raise PermanentMessageError(
                f"trades-approved {approval.proposal_id}: account {approval.account_id} has no "
                "ledger (no opening balance was recorded), its cash movements cannot be booked"
            )
    causes = {approval.account_id: _cause(event) for approval, event in firsts.values()}
    return await repo.book_cash_movements(
        session,
        {p: (approval.account_id, _cause(event)) for p, (approval, event) in firsts.items()},
        moves,
        causes,
        CAUSE,
    )


def _cash_moves(approval: TradesApprovedV1) -> list[repo.CashMove]:
    """An approval's movements as cash entries: out of one sleeve, into the other (None and
    '' are the account's own cash). Raises PermanentMessageError naming a bad movement."""
    out = []
    for n, move in enumerate(approval.cash_movements):
        where = f"trades-approved {approval.proposal_id} cash_movements[{n}]"
        source, target = move.from_sleeve or "", move.to_sleeve or ""
        if decimals(move.amount) > CENTS:
            raise PermanentMessageError(f"{where}.amount: must be in cents, got {move.amount}")
        if source == target:
            raise PermanentMessageError(
                f"{where}.to_sleeve: the cash is already in {_name(target)}"
            )
        for field, sleeve in (("from_sleeve", source), ("to_sleeve", target)):
            if len(sleeve) > SLEEVE_ID_LENGTH:
                raise PermanentMessageError(
                    f"{where}.{field}: longer than {SLEEVE_ID_LENGTH} characters"
                )
        proposal = str(approval.proposal_id)
        out += [
            repo.CashMove(proposal, approval.account_id, source, -move.amount),
            repo.CashMove(proposal, approval.account_id, target, move.amount),
        ]
    return out


def _cause(event: Envelope) -> Cause:
    """What a booking follows from: the approval, in its trace (else the current one)."""
    if event.traceparent:
        return Cause(event.id, event.traceparent, event.tracestate)
    return Cause.here(event.id)


def _cash_of(cash: Decimal, named: dict[str, Decimal], sleeve: str) -> Decimal:
    """A sleeve's cash; the account's own ('') is what no named sleeve holds."""
    return named.get(sleeve, Decimal("0.00")) if sleeve else own_cash(cash, named)


def _name(sleeve: str) -> str:
    return f"sleeve {sleeve!r}" if sleeve else "the account's own cash"


async def _cash_result(
    uow: UnitOfWork, account_id: str, body: SleeveCashTransferIn, *, repeated: bool
) -> SleeveCashTransferOut:
    book_row = await repo.get_book(uow.session, account_id)
    named = (await repo.sleeve_cash_of(uow.session, [account_id])).get(account_id, {})
    return SleeveCashTransferOut(
        transfer_id=body.transfer_id,
        account_id=account_id,
        amount=body.amount,
        from_sleeve=body.from_sleeve,
        to_sleeve=body.to_sleeve,
        cash=book_row.cash,
        sleeve_cash=[
            SleeveCashOut(sleeve_id=part.sleeve_id, amount=part.amount)
            for part in sleeve_cash_v1(book_row.cash, named)
        ],
        repeated=repeated,
    )


async def transfer_shares(
    uow: UnitOfWork, tenant: str, actor: str, account_id: str, body: SleeveTransferIn
) -> SleeveTransferOut:
    """Move shares between the account's sleeves once; recorded in the audit trail."""
    result = await _move_shares(uow, tenant, account_id, body)
    if not result.repeated:
        await repo.append_audit(
            uow.session,
            tenant,
            [AuditEntry(actor, "transfer", "sleeve-transfer", body.transfer_id, None, result)],
        )
    return result


async def transfer_cash(
    uow: UnitOfWork, tenant: str, actor: str, account_id: str, body: SleeveCashTransferIn
) -> SleeveCashTransferOut:
    """Move cash between the account's sleeves once; recorded in the audit trail."""
    result = await _move_cash(uow, tenant, account_id, body)
    if not result.repeated:
        entry = AuditEntry(
            actor, "transfer", "sleeve-cash-transfer", body.transfer_id, None, result
        )
        await repo.append_audit(uow.session, tenant, [entry])
    return result
