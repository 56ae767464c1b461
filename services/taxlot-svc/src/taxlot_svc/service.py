"""taxlot-svc's rules: opening balances, applying fills, and the views of the book."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Literal

from ballast_common.contracts.events import FillsReceivedV1, HoldingsReconciledV1, PositionV1
from ballast_common.errors import (
    Conflict,
    FieldProblem,
    InvalidInput,
    NotFound,
    PermanentMessageError,
)
from ballast_common.uow import UnitOfWork
from sqlmodel.ext.asyncio.session import AsyncSession

from taxlot_svc import repository as repo
from taxlot_svc.lots import LotState, OversellError, purchase, relieve_position
from taxlot_svc.opening import PlannedLot, check_account_id, plan_opening
from taxlot_svc.schemas import (
    AccountHoldingsIn,
    BatchResult,
    GainOut,
    GainsOut,
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
    books = [
        {"account_id": a, "tenant": body.tenant, "cash": body.cash, "as_of": body.as_of}
        for a, body, _ in plans
    ]
    created = await repo.create_books(uow.session, books)
    taken = [a for a, _, _ in plans if a not in created]
    if taken:  # another request opened them since we looked: nothing of this one stays
        verb = "has" if len(taken) == 1 else "have"
        raise Conflict(f"account {', '.join(taken[:10])} already {verb} a ledger")
    lots: list[dict[str, Any]] = []
    entries: list[dict[str, Any]] = []
    for account_id, body, planned in plans:
        entries.append(_entry(account_id, OPENING, None, "cash", amount=body.cash))
        for lot in planned:
            lots.append(
                {
                    "account_id": account_id,
                    "lot_id": lot.lot_id,
                    "symbol": lot.symbol,
                    "quantity": lot.quantity,
                    "cost_basis": lot.cost_basis,
                    "acquired_on": lot.acquired_on,
                    "holding_start": lot.acquired_on,
                    "cause": OPENING,
                    "fill_id": None,
                }
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
    await repo.add_lots(uow.session, lots)
    await repo.add_ledger_entries(uow.session, entries)
    for account_id, body, planned in plans:
        uow.publish(
            HoldingsReconciledV1(
                account_id=account_id,
                as_of=body.as_of,
                cash=body.cash,
                positions=_positions_of(planned),
                cause=OPENING,
            ),
            key=account_id,
            tenant=body.tenant,
        )


def _positions_of(planned: Sequence[PlannedLot]) -> list[PositionV1]:
    totals: dict[str, tuple[Decimal, Decimal]] = {}
    for lot in planned:
        quantity, basis = totals.get(lot.symbol, (Decimal(0), Decimal(0)))
        totals[lot.symbol] = (quantity + lot.quantity, basis + lot.cost_basis)
    return [PositionV1(symbol=s, quantity=q, cost_basis=b) for s, (q, b) in sorted(totals.items())]


# --- fills ----------------------------------------------------------------------------------


async def apply_fill(
    uow: UnitOfWork, fill: FillsReceivedV1, event_id: uuid.UUID | None = None
) -> FillOutcome:
    """Apply one fill to the book once: a buy opens a lot and spends cash; a sell relieves
    lots FIFO, records the realized gains and adds the proceeds. Publishes the account's
    holdings. A fill seen before (by fill id, whatever the event id) has no effect.

    Raises PermanentMessageError (ledger unchanged) for an account without a ledger, a sell
    larger than the open position, or a fill id seen before with different terms.
    """
    session = uow.session
    what = f"fill {fill.fill_id} ({fill.side} {fill.quantity} {fill.symbol} @ {fill.price})"
    book = await repo.get_book(session, fill.account_id, for_update=True)
    if book is None:
        raise PermanentMessageError(
            f"{what}: account {fill.account_id} has no ledger (no opening balance was recorded)"
        )
    day = _utc_date(fill.executed_at)
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
    if fill.side == "buy":
        cash_change = await _apply_buy(uow, fill, day)
    else:
        cash_change = await _apply_sell(uow, fill, day)
    await repo.record_fill_cash(session, fill.fill_id, cash_change)
    cash = book.cash + cash_change
    if cash < 0 <= book.cash:
        # The custodian executed it, so the book records it; a debit balance is worth a look.
        log.warning(
            "cash went negative",
            extra={"account_id": fill.account_id, "fill_id": fill.fill_id, "cash": str(cash)},
        )
    as_of = max(book.as_of, day)
    await repo.set_cash(session, fill.account_id, cash, as_of)
    await repo.add_ledger_entries(
        session, [_entry(fill.account_id, FILL, fill.fill_id, "cash", amount=cash_change)]
    )
    positions = await repo.positions(session, fill.account_id)
    uow.publish(
        HoldingsReconciledV1(
            account_id=fill.account_id,
            as_of=as_of,
            cash=cash,
            positions=[PositionV1(symbol=s, quantity=q, cost_basis=b) for s, q, b in positions],
            cause="fills",
            fill_ids=[fill.fill_id],
        ),
        key=fill.account_id,
        tenant=book.tenant,
    )
    return "applied"


async def _apply_buy(uow: UnitOfWork, fill: FillsReceivedV1, day: date) -> Decimal:
    lot = purchase(
        lot_id=f"fill-{fill.fill_id}",
        account=fill.account_id,
        symbol=fill.symbol,
        quantity=fill.quantity,
        price=fill.price,
        on=day,
    )
    await repo.add_lots(
        uow.session,
        [
            {
                "account_id": fill.account_id,
                "lot_id": lot.lot_id,
                "symbol": lot.symbol,
                "quantity": lot.quantity,
                "cost_basis": lot.cost_basis,
                "acquired_on": lot.acquired_on,
                "holding_start": lot.holding_start,
                "cause": FILL,
                "fill_id": fill.fill_id,
            }
        ],
    )
    await repo.add_ledger_entries(
        uow.session,
        [
            _entry(
                fill.account_id,
                FILL,
                fill.fill_id,
                "lot-open",
                symbol=lot.symbol,
                lot_id=lot.lot_id,
                quantity=lot.quantity,
                amount=lot.cost_basis,
            )
        ],
    )
    return -lot.cost_basis


async def _apply_sell(uow: UnitOfWork, fill: FillsReceivedV1, day: date) -> Decimal:
    session = uow.session
    rows = await repo.open_lots(session, fill.account_id, fill.symbol)
    states = [
        LotState(
            lot_id=r.lot_id,
            symbol=r.symbol,
            quantity=r.quantity,
            cost_basis=r.cost_basis,
            acquired_on=r.acquired_on,
            holding_start=r.holding_start,
            seq=r.seq or 0,
        )
        for r in rows
    ]
    try:
        plan = relieve_position(
            account=fill.account_id,
            symbol=fill.symbol,
            lots=states,
            quantity=fill.quantity,
            price=fill.price,
            sold_on=day,
            sale_id=fill.fill_id,
        )
    except OversellError as exc:
        raise PermanentMessageError(f"fill {fill.fill_id}: {exc}") from exc
    await repo.delete_lots(session, fill.account_id, plan.closed)
    for lot in plan.reduced:
        await repo.update_lot(session, fill.account_id, lot.lot_id, lot.quantity, lot.cost_basis)
    await repo.add_realized_gains(
        session,
        [
            {
                "account_id": fill.account_id,
                "fill_id": fill.fill_id,
                "lot_id": g.lot_id,
                "symbol": g.symbol,
                "quantity": g.quantity,
                "proceeds": g.proceeds,
                "cost_basis": g.cost_basis,
                "gain": g.gain,
                "term": g.term,
                "acquired_on": g.acquired_on,
                "holding_start": g.holding_start,
                "sold_on": g.sold_on,
            }
            for g in plan.gains
        ],
    )
    await repo.add_ledger_entries(
        session,
        [
            _entry(
                fill.account_id,
                FILL,
                fill.fill_id,
                "lot-relieve",
                symbol=g.symbol,
                lot_id=g.lot_id,
                quantity=-g.quantity,
                amount=-g.cost_basis,
            )
            for g in plan.gains
        ],
    )
    return plan.proceeds


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


async def realized_gains(session: AsyncSession, account_id: str) -> GainsOut:
    await _book(session, account_id)
    rows = await repo.realized_gains(session, account_id)
    short = sum((r.gain for r in rows if r.term == "short"), Decimal(0))
    long = sum((r.gain for r in rows if r.term == "long"), Decimal(0))
    return GainsOut(
        account_id=account_id,
        short_term=short,
        long_term=long,
        total=short + long,
        gains=[GainOut.model_validate(r, from_attributes=True) for r in rows],
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
