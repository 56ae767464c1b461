"""taxlot-svc's rules: opening balances, applying fills, and the views of the book."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Literal

from ballast_common.contracts.events import FillsReceivedV1, HoldingsReconciledV2
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
from taxlot_svc.book import identity_of, journal_entries, singleton_household
from taxlot_svc.incremental import apply_in_order, fill_cash
from taxlot_svc.opening import PlannedLot, check_account_id, plan_opening
from taxlot_svc.replays import (
    facts_of,
    members_of,
    rebuild,
    request_restated,
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
from taxlot_svc.snapshots import positions_v2, realized_year

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
    # The exclusive write lock first: no consumer changes any household meanwhile, and the
    # households read below cannot change before this transaction ends.
    await repo.lock_writes(session, exclusive=True)
    await _refuse_actions_inside_openings(session, plans)
    books = [
        {"account_id": a, "tenant": body.tenant, "cash": body.cash, "as_of": body.as_of}
        for a, body, _ in plans
    ]
    created = await repo.create_books(session, books)
    taken = [a for a, _, _ in plans if a not in created]
    if taken:  # another request opened them since we looked: nothing of this one stays
        verb = "has" if len(taken) == 1 else "have"
        raise Conflict(f"account {', '.join(taken[:10])} already {verb} a ledger")
    facts = await facts_of(session, [a for a, _, _ in plans])
    households = sorted({f.household for f in facts.values()})
    members = await members_of(session, households)
    with_history = await repo.households_known(session, households)
    inputs: list[dict[str, Any]] = []
    entries: list[dict[str, Any]] = []
    fresh: dict[str, list[book.Input]] = {h: [] for h in households if h not in with_history}
    seq = 0
    for account_id, body, planned in plans:
        entries.append(_entry(account_id, OPENING, None, "cash", amount=body.cash))
        household = facts[account_id].household
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
            if household in fresh:
                seq += 1
                fresh[household].append(
                    book.Input(
                        seq=seq,
                        account_id=account_id,
                        kind=book.OPENING,
                        ref=lot.lot_id,
                        on=lot.acquired_on,
                        symbol=lot.symbol,
                        side="buy",
                        quantity=lot.quantity,
                        price=Decimal(0),
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
    # Households without history replay from the inputs in hand; the others (an account
    # joining a household that already traded) from everything stored.
    try:
        replayed = await rebuild(session, households, members=members, known_inputs=fresh)
    except TaxError as exc:
        raise InvalidInput(
            f"opening balance: {exc}", [FieldProblem("positions", str(exc))]
        ) from exc
    lots_by_account: dict[str, list[dict[str, Any]]] = {}
    for row in replayed.lot_rows:
        lots_by_account.setdefault(row["account_id"], []).append(row)
    opened = {a for a, _, _ in plans}
    for account_id, body, _ in plans:
        mine = sorted(
            lots_by_account.get(account_id, []), key=lambda r: (r["acquired_on"], r["seq"])
        )
        uow.publish(
            HoldingsReconciledV2(
                account_id=account_id,
                household_id=facts[account_id].household,
                as_of=body.as_of,
                cash=body.cash,
                positions=positions_v2(mine),
                cause=OPENING,
                realized_this_year=realized_year(body.as_of.year, []),
            ),
            key=account_id,
            tenant=body.tenant,
        )
    others = [a for a in replayed.changed() if a not in opened]
    if others:
        await repo.add_ledger_entries(
            session, replayed.restatements("opening-balance", None, exclude=opened)
        )
        await request_restated(session, others, cause="household-change")


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
    uow: UnitOfWork, fill: FillsReceivedV1, event_id: uuid.UUID | None = None
) -> FillOutcome:
    """Apply one fill to the book once: a buy opens a lot and spends cash (price x quantity
    + fees); a sell relieves the lots it names, or by the account's relief method (in its
    sleeve), records the realized gains and adds the proceeds (less fees). Wash sales
    across the household adjust losses and replacement lots. A fill dated on or after
    everything the household applied takes the incremental path; an earlier one (late)
    replays the household's security in date order. Requests holdings-reconciled of the
    account and of other accounts a wash sale changed (coalesced per account). A fill
    seen before (by fill id, whatever the event id) has no effect.

    Raises PermanentMessageError (nothing changed) for an account without a ledger, a sell
    larger than the open position (or than the lots it names, or, for a late fill, than
    the position on its date), a fill id seen before with different terms.
    """
    session = uow.session
    what = f"fill {fill.fill_id} ({fill.side} {fill.quantity} {fill.symbol} @ {fill.price})"
    # Locks: the write lock (shared), then the household's; the household is read again
    # under its lock (another consumer may have moved the account meanwhile).
    guess = await repo.lock_writes_reading_household(session, fill.account_id)
    household = guess or singleton_household(fill.account_id)
    await repo.lock_households(session, [household])
    while True:
        context = await repo.fill_context(session, fill.account_id, household)
        if context is None:
            raise PermanentMessageError(
                f"{what}: account {fill.account_id} has no ledger (no opening balance was recorded)"
            )
        now = context.household_id or singleton_household(fill.account_id)
        if now == household:
            break
        household = now
        await repo.lock_households(session, [household])
    facts = book.AccountFacts(fill.account_id, household, context.account_type or "taxable")
    lot_ids = list(fill.lot_ids)
    bad = [x for x in lot_ids if not x or ";" in x]
    if bad:
        raise PermanentMessageError(f"{what}: lot_ids must be lot ids, got {bad!r}")
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
    method: str | None = None
    if fill.side == "sell" and not lot_ids:
        method = context.method or book.DEFAULT_METHOD
    sleeve = fill.sleeve_id or ""
    row = _input_row(
        fill.account_id,
        book.FILL,
        fill.fill_id,
        day,
        fill.symbol,
        fill.side,
        fill.quantity,
        fill.price,
        fees=fill.fees,
        lot_ids=";".join(lot_ids),
        method=method,
        sleeve=sleeve,
    )
    item = book.Input(
        seq=0,
        account_id=fill.account_id,
        kind=book.FILL,
        ref=fill.fill_id,
        on=day,
        symbol=fill.symbol,
        side=fill.side,
        quantity=fill.quantity,
        price=fill.price,
        fees=fill.fees,
        lot_ids=tuple(lot_ids),
        method=method,
        sleeve=sleeve,
    )
    last_day, seq = context.last_day, context.seq or 0
    late = last_day is not None and day < last_day
    entries: list[dict[str, Any]] = []
    touched: set[str] = {fill.account_id}
    new_state: tuple[str, date, int] | None = None
    try:
        if not late:
            if household == singleton_household(fill.account_id):
                members = [facts]  # an account account-svc has not placed: alone
            else:
                members = (await members_of(session, [household]))[household]
            applied = await apply_in_order(
                session,
                household,
                members,
                item,
                last_day,
                seq,
                ("fill", fill.fill_id),
                write_state=False,  # with the cash, below
                identity=identity_of(context.identical_sets or []),
            )
            if applied.state is not None:
                new_state = (household, *applied.state)
            await repo.add_tax_inputs(session, [row])
            changes, disposals = applied.changes, applied.disposals
            touched |= applied.touched
        else:
            await repo.add_tax_inputs(session, [row])
            # Only the fill's security (and those corporate actions link it to) can change.
            replayed = await rebuild(session, [household], [fill.symbol])
            replay = replayed.replays[household]
            changes = replay.changes(item.cause)
            disposals = replay.disposals_of(fill.fill_id)
            # A late fill: its security was replayed in date order; the lots and gains of
            # later trades may have changed with it.
            entries.append(
                _entry(
                    fill.account_id, FILL, fill.fill_id, "replay", symbol=fill.symbol, amount=ZERO
                )
            )
            entries += replayed.restatements(FILL, fill.fill_id, exclude={fill.account_id})
            touched |= set(replayed.changed())
    except TaxError as exc:
        raise PermanentMessageError(f"account {fill.account_id}: {what}: {exc}") from exc
    cash_change = fill_cash(changes, disposals, item)
    entries = journal_entries(changes, FILL, fill.fill_id) + entries
    entries.append(_entry(fill.account_id, FILL, fill.fill_id, "cash", amount=cash_change))
    cash = context.cash + cash_change
    if cash < 0 <= context.cash:
        # The custodian executed it, so the book records it; a debit balance is worth a look.
        log.warning(
            "cash went negative",
            extra={"account_id": fill.account_id, "fill_id": fill.fill_id, "cash": str(cash)},
        )
    as_of = max(context.as_of, day)
    await repo.add_ledger_entries(session, entries)
    await repo.finish_fill(
        session, fill.account_id, fill.fill_id, cash, as_of, cash_change, new_state
    )
    # Other accounts of the household whose lots or loss sales the fill changed (a wash
    # sale): their snapshot names no fill (the fill is not theirs).
    await request_restated(session, touched - {fill.account_id}, cause="fills")
    return "applied"


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
    sleeve: str = "",
    to_sleeve: str | None = None,
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
        "sleeve": sleeve,
        "to_sleeve": to_sleeve,
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
