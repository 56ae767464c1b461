"""taxlot-svc's rules: opening balances, applying fills, and the views of the book."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Literal

from ballast_common.contracts.events import FillsReceivedV1, HoldingsReconciledV1
from ballast_common.errors import (
    Conflict,
    FieldProblem,
    InvalidInput,
    NotFound,
    PermanentMessageError,
)
from ballast_common.uow import UnitOfWork
from ballast_engine.tax import TaxError
from sqlmodel.ext.asyncio.session import AsyncSession

from taxlot_svc import book
from taxlot_svc import repository as repo
from taxlot_svc.book import journal_entries
from taxlot_svc.opening import PlannedLot, check_account_id, plan_opening
from taxlot_svc.replays import (
    Replays,
    facts_of,
    members_of,
    positions_after,
    positions_v1,
    publish_restated,
    rebuild,
)
from taxlot_svc.schemas import (
    AccountHoldingsIn,
    BatchResult,
    HoldingsIn,
    HoldingsOut,
    LotOut,
    LotsOut,
    PositionOut,
)

log = logging.getLogger(__name__)

OPENING = "opening-balance"
FILL = "fill"
FillOutcome = Literal["applied", "duplicate"]
ZERO = Decimal(0)


# --- opening balances -----------------------------------------------------------------------


async def open_account(
    uow: UnitOfWork, account_id: str, body: HoldingsIn, today: date | None = None
) -> HoldingsOut:
    """Record an account's opening balance (once) and announce its holdings."""
    problems = check_account_id(account_id, "account_id")
    planned, more = plan_opening(body, today or _today())
    problems += more
    if problems:
        raise InvalidInput(_summary(problems), problems)
    await _open(uow, [(account_id, body, planned)])
    return await holdings(uow.session, account_id)


async def open_accounts(
    uow: UnitOfWork, accounts: Sequence[AccountHoldingsIn], today: date | None = None
) -> BatchResult:
    """Opening balances of many accounts: all are recorded, or none (422/409 naming why)."""
    day = today or _today()
    problems: list[FieldProblem] = []
    plans: list[tuple[str, HoldingsIn, list[PlannedLot]]] = []
    first_seen: dict[str, int] = {}
    for i, account in enumerate(accounts):
        prefix = f"accounts[{i}]."
        problems += check_account_id(account.account_id, f"{prefix}account_id")
        if account.account_id in first_seen:
            problems.append(
                FieldProblem(
                    f"{prefix}account_id",
                    f"{account.account_id} already given at "
                    f"accounts[{first_seen[account.account_id]}]",
                )
            )
        first_seen.setdefault(account.account_id, i)
        planned, more = plan_opening(account, day, prefix)
        problems += more
        plans.append((account.account_id, account, planned))
    if problems:
        raise InvalidInput(_summary(problems), problems)
    existing = await repo.existing_accounts(uow.session, list(first_seen))
    if existing:
        raise Conflict(
            f"{len(existing)} account(s) already have a ledger: {', '.join(sorted(existing)[:10])}",
            [
                FieldProblem(f"accounts[{first_seen[a]}].account_id", "already has a ledger")
                for a in sorted(existing, key=first_seen.__getitem__)
            ],
        )
    await _open(uow, plans)
    return BatchResult(accounts=len(plans), lots=sum(len(p) for _, _, p in plans))


async def _open(uow: UnitOfWork, plans: Sequence[tuple[str, HoldingsIn, list[PlannedLot]]]) -> None:
    session = uow.session
    await _refuse_actions_inside_openings(session, plans)
    facts = await facts_of(session, [a for a, _, _ in plans])
    households = sorted({f.household for f in facts.values()})
    await repo.lock_households(session, households)
    books = [
        {"account_id": a, "tenant": body.tenant, "cash": body.cash, "as_of": body.as_of}
        for a, body, _ in plans
    ]
    created = await repo.create_books(session, books)
    taken = [a for a, _, _ in plans if a not in created]
    if taken:  # another request opened them since we looked: nothing of this one stays
        verb = "has" if len(taken) == 1 else "have"
        raise Conflict(f"account {', '.join(taken[:10])} already {verb} a ledger")
    inputs: list[dict[str, Any]] = []
    entries: list[dict[str, Any]] = []
    for account_id, body, planned in plans:
        entries.append(_entry(account_id, OPENING, None, "cash", amount=body.cash))
        for lot in planned:
            # Price 0 and the basis as fees: the engine books exactly this basis.
            inputs.append(
                _input_row(
                    account_id,
                    book.OPENING,
                    lot.lot_id,
                    lot.acquired_on,
                    lot.symbol,
                    "buy",
                    lot.quantity,
                    Decimal(0),
                    fees=lot.cost_basis,
                    lot_name=lot.lot_id,
                )
            )
            entries.append(
                _entry(
                    account_id,
                    OPENING,
                    None,
                    "lot-open",
                    symbol=lot.symbol,
                    lot_id=lot.lot_id,
                    quantity=lot.quantity,
                    amount=lot.cost_basis,
                )
            )
    await repo.add_tax_inputs(session, inputs)
    await repo.add_ledger_entries(session, entries)
    replayed = await _rebuild(session, households, "opening balance")
    for account_id, body, _ in plans:
        uow.publish(
            HoldingsReconciledV1(
                account_id=account_id,
                as_of=body.as_of,
                cash=body.cash,
                positions=positions_v1(replayed.after.get(account_id, [])),
                cause=OPENING,
            ),
            key=account_id,
            tenant=body.tenant,
        )
    opened = {a for a, _, _ in plans}
    await publish_restated(uow, replayed, exclude=opened, cause="opening-balance")


async def _refuse_actions_inside_openings(
    session: AsyncSession, plans: Sequence[tuple[str, HoldingsIn, list[PlannedLot]]]
) -> None:
    """An opening balance states holdings as of its date, after every corporate action up
    to that date: a recorded action dated after a lot's acquisition and on or before the
    opening date would be applied a second time by the replay, so it is refused."""
    symbols = sorted({lot.symbol for _, _, planned in plans for lot in planned})
    actions = await repo.actions_on(session, symbols) if symbols else []
    if not actions:
        return
    problems: list[FieldProblem] = []
    batch = len(plans) > 1
    for i, (_account, body, planned) in enumerate(plans):
        prefix = f"accounts[{i}]." if batch else ""
        index = {p.symbol: j for j, p in enumerate(body.positions)}
        for action in actions:
            if not action.effective_on <= body.as_of:
                continue
            if any(
                lot.symbol == action.symbol and lot.acquired_on < action.effective_on
                for lot in planned
            ):
                problems.append(
                    FieldProblem(
                        f"{prefix}positions[{index[action.symbol]}].symbol",
                        f"corporate action {action.action_id} ({action.kind} of "
                        f"{action.symbol} on {action.effective_on}) falls between a lot's "
                        f"acquisition and as_of {body.as_of}: state the opening balance as "
                        f"of a date before {action.effective_on}",
                    )
                )
    if problems:
        raise InvalidInput(_summary(problems), problems)


# --- fills ----------------------------------------------------------------------------------


async def apply_fill(
    uow: UnitOfWork,
    fill: FillsReceivedV1,
    event_id: uuid.UUID | None = None,
    *,
    fees: Decimal = Decimal(0),
    lot_ids: Sequence[str] = (),
) -> FillOutcome:
    """Apply one fill to the book once: a buy opens a lot and spends cash (price x quantity
    + fees); a sell relieves the lots it names, or by the account's relief method, records
    the realized gains and adds the proceeds (less fees). The household is replayed by the
    tax engine, so wash sales across its accounts adjust the losses and the replacement
    lots, and a fill dated before fills already applied is placed in date order. Publishes
    the account's holdings, and those of other accounts of the household a wash sale
    changed. A fill seen before (by fill id, whatever the event id) has no effect.

    Raises PermanentMessageError (nothing changed) for an account without a ledger, a sell
    larger than the open position (or than the lots it names, or, for a late fill, than
    the position on its date), a fill id seen before with different terms.
    """
    session = uow.session
    what = f"fill {fill.fill_id} ({fill.side} {fill.quantity} {fill.symbol} @ {fill.price})"
    book_row = await repo.get_book(session, fill.account_id, for_update=True)
    if book_row is None:
        raise PermanentMessageError(
            f"{what}: account {fill.account_id} has no ledger (no opening balance was recorded)"
        )
    if fees < 0:
        raise PermanentMessageError(f"{what}: fees must not be negative, got {fees}")
    day = _utc_date(fill.executed_at)
    facts = (await facts_of(session, [fill.account_id]))[fill.account_id]
    await repo.lock_households(session, [facts.household])
    first = await repo.record_fill(
        session,
        {
            "fill_id": fill.fill_id,
            "account_id": fill.account_id,
            "symbol": fill.symbol,
            "side": fill.side,
            "quantity": fill.quantity,
            "price": fill.price,
            "cash_change": Decimal(0),
            "executed_at": fill.executed_at,
            "event_id": event_id or uuid.uuid4(),
            "client_order_id": fill.client_order_id,
        },
    )
    if not first:
        await _check_same_fill(session, fill, what)
        log.info("fill already applied", extra={"fill_id": fill.fill_id})
        return "duplicate"
    method: str | None = None
    if fill.side == "sell":
        held = sum(
            (q for _, q, _ in await repo.positions(session, fill.account_id, fill.symbol)),
            Decimal(0),
        )
        if fill.quantity > held:
            raise PermanentMessageError(
                f"fill {fill.fill_id}: sell of {fill.quantity} {fill.symbol} in account "
                f"{fill.account_id} exceeds the open position of {held} {fill.symbol}"
            )
        if not lot_ids:
            settings = await repo.get_tax_settings(session, fill.account_id)
            method = settings.method if settings is not None else book.DEFAULT_METHOD
    members = (await members_of(session, [facts.household]))[facts.household]
    last = await repo.last_input_day(session, [f.account_id for f in members])
    await repo.add_tax_inputs(
        session,
        [
            _input_row(
                fill.account_id,
                book.FILL,
                fill.fill_id,
                day,
                fill.symbol,
                fill.side,
                fill.quantity,
                fill.price,
                fees=fees,
                lot_ids=";".join(lot_ids),
                method=method,
            )
        ],
    )
    # Only the fill's security (and those corporate actions link it to) can change.
    replayed = await _rebuild(
        session, [facts.household], f"account {fill.account_id}: {what}", [fill.symbol]
    )
    replay = replayed.replays[facts.household]
    cause = f"trade {fill.fill_id}"
    changes = replay.changes(cause)
    if fill.side == "buy":
        opened = [c for c in changes if c.kind == "open"]
        cash_change = -sum((c.basis for c in opened), Decimal(0))  # price x quantity + fees
    else:
        cash_change = sum((d.proceeds for d in replay.disposals_of(fill.fill_id)), Decimal(0))
    entries: list[dict[str, Any]] = []
    if last is not None and day < last:
        # A late fill: its security was replayed in date order from the start; the lots
        # and gains of later trades may have changed with it.
        entries.append(
            _entry(fill.account_id, FILL, fill.fill_id, "replay", symbol=fill.symbol, amount=ZERO)
        )
    entries += journal_entries(changes, FILL, fill.fill_id)
    entries.append(_entry(fill.account_id, FILL, fill.fill_id, "cash", amount=cash_change))
    # Lots of other accounts of the household the fill changed (wash sales).
    entries += replayed.restatements(FILL, fill.fill_id, exclude={fill.account_id})
    await repo.record_fill_cash(session, fill.fill_id, cash_change)
    cash = book_row.cash + cash_change
    if cash < 0 <= book_row.cash:
        # The custodian executed it, so the book records it; a debit balance is worth a look.
        log.warning(
            "cash went negative",
            extra={"account_id": fill.account_id, "fill_id": fill.fill_id, "cash": str(cash)},
        )
    as_of = max(book_row.as_of, day)
    await repo.set_cash(session, fill.account_id, cash, as_of)
    await repo.add_ledger_entries(session, entries)
    uow.publish(
        HoldingsReconciledV1(
            account_id=fill.account_id,
            as_of=as_of,
            cash=cash,
            positions=await positions_after(session, replayed, fill.account_id),
            cause="fills",
            fill_ids=[fill.fill_id],
        ),
        key=fill.account_id,
        tenant=book_row.tenant,
    )
    # Other accounts of the household whose lots the fill changed (a wash sale).
    await publish_restated(
        uow, replayed, exclude={fill.account_id}, cause="fills", fill_ids=[fill.fill_id]
    )
    return "applied"


async def _rebuild(
    session: AsyncSession,
    households: Sequence[str],
    what: str,
    symbols: Sequence[str] | None = None,
) -> Replays:
    try:
        return await rebuild(session, households, symbols)
    except TaxError as exc:
        raise PermanentMessageError(f"{what}: {exc}") from exc


def _input_row(
    account_id: str,
    kind: str,
    ref: str,
    on: date,
    symbol: str,
    side: str,
    quantity: Decimal,
    price: Decimal,
    *,
    fees: Decimal = Decimal(0),
    lot_name: str | None = None,
    lot_ids: str = "",
    method: str | None = None,
) -> dict[str, Any]:
    return {
        "account_id": account_id,
        "kind": kind,
        "ref": ref,
        "trade_on": on,
        "symbol": symbol,
        "side": side,
        "quantity": quantity,
        "price": price,
        "fees": fees,
        "lot_name": lot_name,
        "lot_ids": lot_ids,
        "method": method,
    }


async def _check_same_fill(session: AsyncSession, fill: FillsReceivedV1, what: str) -> None:
    before = await repo.get_fill(session, fill.fill_id)
    assert before is not None
    same = (
        before.account_id == fill.account_id
        and before.symbol == fill.symbol
        and before.side == fill.side
        and before.quantity == fill.quantity
        and before.price == fill.price
    )
    if not same:
        raise PermanentMessageError(
            f"{what}: fill id already applied with different terms ({before.side} "
            f"{before.quantity} {before.symbol} @ {before.price} in account {before.account_id})"
        )


# --- views ----------------------------------------------------------------------------------


async def holdings(session: AsyncSession, account_id: str) -> HoldingsOut:
    book = await _book(session, account_id)
    rows = await repo.positions(session, account_id)
    return HoldingsOut(
        account_id=account_id,
        tenant=book.tenant,
        as_of=book.as_of,
        cash=book.cash,
        positions=[PositionOut(symbol=s, quantity=q, cost_basis=b) for s, q, b in rows],
        updated_at=book.updated_at,
    )


async def lots(session: AsyncSession, account_id: str, symbol: str | None = None) -> LotsOut:
    await _book(session, account_id)
    rows = await repo.open_lots(session, account_id, symbol)
    return LotsOut(
        account_id=account_id,
        lots=[LotOut.model_validate(r, from_attributes=True) for r in rows],
    )


async def _book(session: AsyncSession, account_id: str) -> Any:
    book = await repo.get_book(session, account_id)
    if book is None:
        raise NotFound(f"account {account_id} has no ledger")
    return book


# --- helpers --------------------------------------------------------------------------------


def _entry(
    account_id: str,
    cause: str,
    fill_id: str | None,
    kind: str,
    *,
    amount: Decimal,
    symbol: str | None = None,
    lot_id: str | None = None,
    quantity: Decimal | None = None,
) -> dict[str, Any]:
    return {
        "account_id": account_id,
        "cause": cause,
        "fill_id": fill_id,
        "kind": kind,
        "symbol": symbol,
        "lot_id": lot_id,
        "quantity": quantity,
        "amount": amount,
    }


def _utc_date(moment: datetime) -> date:
    if moment.tzinfo is None:
        return moment.date()
    return moment.astimezone(UTC).date()


def _today() -> date:
    return datetime.now(UTC).date()


def _summary(problems: Sequence[FieldProblem]) -> str:
    head = "; ".join(f"{p.field}: {p.message}" for p in problems[:3])
    more = len(problems) - 3
    return head + (f" (+{more} more)" if more > 0 else "")
