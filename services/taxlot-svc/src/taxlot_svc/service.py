"""taxlot-svc's rules: opening balances, applying fills, and the views of the book."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Literal, TypeAlias

from ballast_common.audit import AuditEntry
from ballast_common.contracts.envelope import Envelope
from ballast_common.contracts.events import FillsReceivedV1, HoldingsReconciledV2
from ballast_common.errors import (
    Conflict,
    FieldProblem,
    InvalidInput,
    NotFound,
    PermanentMessageError,
)
from ballast_common.uow import Cause, UnitOfWork
from ballast_engine.tax import Identity, TaxError
from sqlmodel.ext.asyncio.session import AsyncSession

from taxlot_svc import actions, book
from taxlot_svc import repository as repo
from taxlot_svc.book import identity_of, journal_entries, own_cash, singleton_household
from taxlot_svc.incremental import (
    Applied,
    HouseholdInputs,
    InputRefused,
    apply_in_date_order,
    apply_in_order,
    fill_cash,
    load_states,
    write_applied,
)
from taxlot_svc.opening import (
    PlannedLot,
    action_cutoff,
    action_problem,
    check_account_id,
    plan_opening,
)
from taxlot_svc.replays import (
    facts_of,
    members_of,
    rebuild,
    request_restated,
)
from taxlot_svc.schemas import (
    AccountHoldingsIn,
    BatchResult,
    CorporateActionIn,
    CorporateActionOut,
    HoldingsIn,
    HoldingsOut,
    LotOut,
    LotsOut,
    PositionOut,
    SleeveCashOut,
)
from taxlot_svc.snapshots import positions_v2, realized_year, sleeve_cash_v1

log = logging.getLogger(__name__)

OPENING = "opening-balance"
FILL = "fill"
FillOutcome = Literal["applied", "duplicate"]
# What a fill follows from: its event (id and trace context), or an event id in the current
# trace, or nothing (a new id in the current trace).
FillCause: TypeAlias = Envelope | Cause | uuid.UUID | None
ZERO = Decimal(0)


def _cause_of(event: FillCause, here: Cause) -> Cause:
    """A fill's cause with the trace to continue: its event's, else ``here``'s (the current
    span's)."""
    if event is None or isinstance(event, uuid.UUID):
        return Cause(event or uuid.uuid4(), here.traceparent, here.tracestate)
    if not event.traceparent:
        return Cause(event.id, here.traceparent, here.tracestate)
    return Cause(event.id, event.traceparent, event.tracestate)


# --- opening balances -----------------------------------------------------------------------


async def open_account(
    uow: UnitOfWork, tenant: str, account_id: str, body: HoldingsIn, today: date | None = None
) -> HoldingsOut:
    """Record an account's opening balance (once) for `tenant` and announce its holdings."""
    problems = check_account_id(account_id, "account_id")
    planned, more = plan_opening(body, today or _today())
    problems += more
    if problems:
        raise InvalidInput(_summary(problems), problems)
    await _open(uow, tenant, [(account_id, body, planned)])
    return await holdings(uow.session, tenant, account_id)


async def open_accounts(
    uow: UnitOfWork,
    tenant: str,
    accounts: Sequence[AccountHoldingsIn],
    today: date | None = None,
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
    await _open(uow, tenant, plans)
    return BatchResult(accounts=len(plans), lots=sum(len(p) for _, _, p in plans))


async def _open(
    uow: UnitOfWork, tenant: str, plans: Sequence[tuple[str, HoldingsIn, list[PlannedLot]]]
) -> None:
    session = uow.session
    # The exclusive write lock first: no consumer changes any household meanwhile, and the
    # households read below cannot change before this transaction ends.
    await repo.lock_writes(session, exclusive=True)
    await _refuse_actions_inside_openings(session, plans)
    theirs = await repo.accounts_of_other_tenants(session, [a for a, _, _ in plans], tenant)
    if theirs:  # account-svc named it for another tenant: not the caller's to open
        raise Conflict(f"account {', '.join(sorted(theirs)[:10])} is another tenant's")
    books = [
        {"account_id": a, "tenant": tenant, "cash": body.cash, "as_of": body.as_of}
        for a, body, _ in plans
    ]
    created = await repo.create_books(session, books)
    taken = [a for a, _, _ in plans if a not in created]
    if taken:  # another request opened them since we looked: nothing of this one stays
        verb = "has" if len(taken) == 1 else "have"
        raise Conflict(f"account {', '.join(taken[:10])} already {verb} a ledger")
    await repo.add_sleeve_cash(
        session,
        {(a, part.sleeve_id): part.amount for a, body, _ in plans for part in body.sleeve_cash},
    )
    facts = await facts_of(session, [a for a, _, _ in plans])
    households = sorted({f.household for f in facts.values()})
    members = await members_of(session, households)
    with_history = await repo.households_known(session, households)
    inputs: list[dict[str, Any]] = []
    entries: list[dict[str, Any]] = []
    fresh: dict[str, list[book.Input]] = {h: [] for h in households if h not in with_history}
    seq = 0
    for account_id, body, planned in plans:
        sleeves = {part.sleeve_id: part.amount for part in body.sleeve_cash}
        own = own_cash(body.cash, sleeves)
        entries.append(_entry(account_id, OPENING, None, "cash", amount=own))
        for part in body.sleeve_cash:
            entries.append(
                _entry(account_id, OPENING, None, "cash", amount=part.amount, sleeve=part.sleeve_id)
            )
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
                    sleeve=lot.sleeve,
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
                        sleeve=lot.sleeve,
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
                sleeve_cash=sleeve_cash_v1(
                    body.cash, {part.sleeve_id: part.amount for part in body.sleeve_cash}
                ),
            ),
            key=account_id,
            tenant=tenant,
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
            cutoff = action_cutoff(action.effective_on, body.as_of)
            if cutoff is None:
                continue
            if any(lot.symbol == action.symbol and lot.acquired_on < cutoff for lot in planned):
                problems.append(
                    FieldProblem(
                        f"{prefix}positions[{index[action.symbol]}].symbol",
                        action_problem(
                            action.action_id,
                            action.kind,
                            action.symbol,
                            action.effective_on,
                            body.as_of,
                        ),
                    )
                )
    if problems:
        raise InvalidInput(_summary(problems), problems)


# --- fills ----------------------------------------------------------------------------------


async def apply_fill(
    uow: UnitOfWork, fill: FillsReceivedV1, event: FillCause = None
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
    [outcome] = await apply_fills(uow, [(fill, event)])
    return outcome


@dataclass(slots=True)
class _Arrival:
    """A fill of a batch: its place in the batch (arrival order), its event (id and trace)
    and trade date."""

    index: int
    fill: FillsReceivedV1
    cause: Cause
    day: date

    @property
    def event_id(self) -> uuid.UUID:
        assert self.cause.id is not None
        return self.cause.id

    @property
    def what(self) -> str:
        f = self.fill
        return f"fill {f.fill_id} ({f.side} {f.quantity} {f.symbol} @ {f.price})"

    def refused(self, error: Exception) -> PermanentMessageError:
        return PermanentMessageError(f"account {self.fill.account_id}: {self.what}: {error}")


@dataclass
class _Batch:
    """What a batch of fills writes, gathered to be written with one statement per table."""

    contexts: dict[str, Any]
    inputs: list[dict[str, Any]] = field(default_factory=list)
    entries: list[dict[str, Any]] = field(default_factory=list)
    cash_changes: dict[str, Decimal] = field(default_factory=dict)
    books: dict[str, tuple[Decimal, date]] = field(default_factory=dict)
    # What fills in named sleeves moved: the cash of (account, sleeve).
    sleeve_changes: dict[tuple[str, str], Decimal] = field(default_factory=dict)
    fills_of: dict[str, list[str]] = field(default_factory=dict)
    # The event of each account's last fill (arrival order): its snapshot's cause and trace.
    causes: dict[str, Cause] = field(default_factory=dict)
    # Accounts whose lots or loss sales a fill changed, with that fill's event.
    touched: dict[str, Cause] = field(default_factory=dict)
    states: dict[str, tuple[date, int]] = field(default_factory=dict)
    # fill id -> the lot a buy opens, when not `fill-<fill id>` (a custodian's own lot id)
    lot_names: dict[str, str] = field(default_factory=dict)

    def touch(self, accounts: Iterable[str], arrival: _Arrival) -> None:
        self.touched.update(dict.fromkeys(accounts, arrival.cause))

    def settle(
        self,
        arrival: _Arrival,
        item: book.Input,
        changes: list[Any],
        disposals: list[Any],
        extra: list[dict[str, Any]],
    ) -> None:
        """A fill's journal, cash (its sleeve's) and as-of, in the order the fills are
        applied."""
        fill = arrival.fill
        cash_change = fill_cash(changes, disposals, item)
        self.entries += journal_entries(changes, FILL, fill.fill_id) + extra
        self.entries.append(
            _entry(
                fill.account_id, FILL, fill.fill_id, "cash", amount=cash_change, sleeve=item.sleeve
            )
        )
        self.cash_changes[fill.fill_id] = cash_change
        if item.sleeve:
            key = (fill.account_id, item.sleeve)
            self.sleeve_changes[key] = self.sleeve_changes.get(key, ZERO) + cash_change
        context = self.contexts[fill.account_id]
        cash, as_of = self.books.get(fill.account_id, (context.cash, context.as_of))
        self.books[fill.account_id] = (cash + cash_change, max(as_of, arrival.day))

    async def write(self, session: AsyncSession) -> None:
        await repo.add_tax_inputs(session, self.inputs)
        await repo.add_ledger_entries(session, self.entries)
        # Each snapshot continues the trace of the fill that asked for it.
        snapshots = {
            account: (fill_ids, self.causes[account]) for account, fill_ids in self.fills_of.items()
        }
        await repo.finish_fills(
            session, self.cash_changes, self.books, snapshots, self.states, self.sleeve_changes
        )
        for account, (cash, _) in sorted(self.books.items()):
            if cash < 0 <= self.contexts[account].cash:
                # The custodian executed it, so the book records it; a debit balance is
                # worth a look.
                log.warning("cash went negative", extra={"account_id": account, "cash": str(cash)})
        # Other accounts of a household whose lots or loss sales a fill changed (a wash
        # sale): their snapshot names no fill (the fills are not theirs).
        others = {a: e for a, e in self.touched.items() if a not in self.fills_of}
        await request_restated(session, others, cause="fills", caused_by=others)


async def apply_fills(
    uow: UnitOfWork,
    fills: Sequence[tuple[FillsReceivedV1, FillCause]],
    lot_names: dict[str, str] | None = None,
) -> list[FillOutcome]:
    """Apply a batch of fills (see :func:`apply_fill`) in one transaction, with one
    statement per table for the batch: the households' locks taken once, in sorted order;
    every account's context read at once; each household's fills applied in date order by
    the engine to the state read for all of them at once (households with a late fill
    apply theirs one by one, replaying as a single fill does); cash settled per sleeve (a
    fill's sleeve's); one holdings-reconciled request per account, following from its last
    fill's event in that event's trace. ``lot_names`` names the lot a buy opens (fill id ->
    lot id; default ``fill-<fill id>``). Returns each fill's outcome, in the batch's order.

    Raises PermanentMessageError for the first bad fill (the consumer then redoes the
    batch one fill at a time, so only that one is dead-lettered)."""
    session = uow.session
    here = Cause.here()
    arrivals = [
        _Arrival(i, f, _cause_of(event, here), _utc_date(f.executed_at))
        for i, (f, event) in enumerate(fills)
    ]
    for arrival in arrivals:
        bad = [x for x in arrival.fill.lot_ids if not x or ";" in x]
        if bad:
            raise PermanentMessageError(f"{arrival.what}: lot_ids must be lot ids, got {bad!r}")
    contexts = await lock_and_read_contexts(session, sorted({a.fill.account_id for a in arrivals}))
    for arrival in arrivals:
        if arrival.fill.account_id not in contexts:
            raise PermanentMessageError(
                f"{arrival.what}: account {arrival.fill.account_id} has no ledger (no opening "
                "balance was recorded)"
            )
    outcomes, fresh = await _record_fills(session, arrivals)
    if not fresh:
        return outcomes
    batch = _Batch(contexts, lot_names=dict(lot_names or {}))
    groups: dict[str, list[_Arrival]] = {}
    for arrival in sorted(fresh, key=lambda a: (a.day, a.index)):  # the order they apply in
        groups.setdefault(contexts[arrival.fill.account_id].locked, []).append(arrival)
        batch.fills_of.setdefault(arrival.fill.account_id, [])
    for arrival in fresh:  # a snapshot names its fills in arrival order
        batch.fills_of[arrival.fill.account_id].append(arrival.fill.fill_id)
        batch.causes[arrival.fill.account_id] = arrival.cause
    identity = identity_of(next(iter(contexts.values())).identical_sets or [])
    late = {
        household
        for household, mine in groups.items()
        if (last := contexts[mine[0].fill.account_id].last_day) is not None and mine[0].day < last
    }
    for household in sorted(late):
        await _apply_one_by_one(session, batch, household, groups[household], identity)
    await _apply_in_date_order(
        session, batch, {h: xs for h, xs in groups.items() if h not in late}, identity
    )
    await batch.write(session)
    return outcomes


async def lock_and_read_contexts(session: AsyncSession, accounts: list[str]) -> dict[str, Any]:
    """The write lock (shared), then the households' locks in sorted order, then every
    account's context read under them; an account another consumer moved meanwhile gets its
    new household locked too, and its context read again."""
    guesses = await repo.lock_writes_reading_households(session, accounts)
    households = {a: guesses.get(a) or singleton_household(a) for a in accounts}
    locked = set(households.values())
    await repo.lock_households(session, sorted(locked))
    while True:
        contexts = await repo.fill_contexts(session, households)
        moved = {
            a: now
            for a, c in contexts.items()
            if (now := c.household_id or singleton_household(a)) != households[a]
        }
        if not moved:
            return contexts
        households.update(moved)
        await repo.lock_households(session, sorted(set(moved.values()) - locked))
        locked |= set(moved.values())


async def _record_fills(
    session: AsyncSession, arrivals: Sequence[_Arrival]
) -> tuple[list[FillOutcome], list[_Arrival]]:
    """Record the batch's fills as applied (once per fill id): the outcome of each, and
    the fills to apply. A fill id seen before with other terms is refused."""
    outcomes: list[FillOutcome] = ["applied"] * len(arrivals)
    first: dict[str, _Arrival] = {}
    candidates: list[_Arrival] = []
    for arrival in arrivals:
        seen = first.get(arrival.fill.fill_id)
        if seen is not None:
            _check_same_fill(seen.fill, arrival.fill, arrival.what)
            outcomes[arrival.index] = "duplicate"
            continue
        first[arrival.fill.fill_id] = arrival
        candidates.append(arrival)
    inserted = await repo.record_fills(
        session,
        [
            {
                "fill_id": a.fill.fill_id,
                "account_id": a.fill.account_id,
                "symbol": a.fill.symbol,
                "side": a.fill.side,
                "quantity": a.fill.quantity,
                "price": a.fill.price,
                "executed_at": a.fill.executed_at,
                "event_id": a.event_id,
                "client_order_id": a.fill.client_order_id,
            }
            for a in candidates
        ],
    )
    repeated = [a for a in candidates if a.fill.fill_id not in inserted]
    stored = await repo.get_fills(session, [a.fill.fill_id for a in repeated])
    for arrival in repeated:
        _check_same_fill(stored[arrival.fill.fill_id], arrival.fill, arrival.what)
        log.info("fill already applied", extra={"fill_id": arrival.fill.fill_id})
        outcomes[arrival.index] = "duplicate"
    return outcomes, [a for a in candidates if a.fill.fill_id in inserted]


def _fill_input(
    arrival: _Arrival, context: Any, lot_name: str | None = None
) -> tuple[book.Input, dict[str, Any]]:
    """A fill as the engine's input (``seq``: its place in the batch) and as its row."""
    fill = arrival.fill
    if fill.side != "buy":
        lot_name = None
    lot_ids = list(fill.lot_ids)
    method: str | None = None
    if fill.side == "sell" and not lot_ids:
        method = context.method or book.DEFAULT_METHOD
    sleeve = fill.sleeve_id or ""
    row = _input_row(
        fill.account_id,
        book.FILL,
        fill.fill_id,
        arrival.day,
        fill.symbol,
        fill.side,
        fill.quantity,
        fill.price,
        fees=fill.fees,
        lot_name=lot_name,
        lot_ids=";".join(lot_ids),
        method=method,
        sleeve=sleeve,
    )
    item = book.Input(
        seq=arrival.index,
        account_id=fill.account_id,
        kind=book.FILL,
        ref=fill.fill_id,
        on=arrival.day,
        symbol=fill.symbol,
        side=fill.side,
        quantity=fill.quantity,
        price=fill.price,
        fees=fill.fees,
        lot_name=lot_name,
        lot_ids=tuple(lot_ids),
        method=method,
        sleeve=sleeve,
    )
    return item, row


async def _apply_in_date_order(
    session: AsyncSession,
    batch: _Batch,
    groups: dict[str, list[_Arrival]],
    identity: Identity,
) -> None:
    """Households whose fills are all in date order: their state read at once, each
    household's fills applied by the engine, what changed written at once."""
    if not groups:
        return
    contexts = batch.contexts
    placed = [h for h in groups if not _alone(h, groups[h])]
    members = await members_of(session, placed) if placed else {}
    wanted: list[HouseholdInputs] = []
    for household, mine in groups.items():
        context = contexts[mine[0].fill.account_id]
        if household not in members:  # an account account-svc has not placed: alone
            account = mine[0].fill.account_id
            members[household] = [
                book.AccountFacts(account, household, context.account_type or "taxable")
            ]
        wanted.append(
            HouseholdInputs(
                household,
                members[household],
                sorted({a.fill.symbol for a in mine}),
                mine[0].day,
                context.last_day,
                context.seq or 0,
            )
        )
    states = await load_states(session, wanted, identity)
    written: list[tuple[Applied, dict[int, int], list[book.Input]]] = []
    for household, mine in groups.items():
        state, ids = states[household]
        made = [
            (a, *_fill_input(a, contexts[a.fill.account_id], batch.lot_names.get(a.fill.fill_id)))
            for a in mine
        ]
        try:
            applied = apply_in_date_order(state, [item for _, item, _ in made])
        except InputRefused as refused:
            arrival = next(a for a, item, _ in made if item is refused.item)
            raise arrival.refused(refused.error) from refused.error
        changes: dict[str, list[Any]] = {}
        for change in applied.changes:
            changes.setdefault(change.cause, []).append(change)
        disposals: dict[str, list[Any]] = {}
        for disposal in applied.disposals:
            disposals.setdefault(disposal.sale_id, []).append(disposal)
        for arrival, item, row in made:
            batch.inputs.append(row)
            batch.settle(
                arrival,
                item,
                changes.get(item.cause, []),
                disposals.get(item.trade_id, []),
                [],
            )
        batch.touch(applied.touched, mine[-1])
        assert applied.state is not None
        batch.states[household] = applied.state
        written.append((applied, ids, [item for _, item, _ in made]))
    await write_applied(session, written, "fill")


def _alone(household: str, mine: Sequence[_Arrival]) -> bool:
    return household == singleton_household(mine[0].fill.account_id)


async def _apply_one_by_one(
    session: AsyncSession,
    batch: _Batch,
    household: str,
    mine: Sequence[_Arrival],
    identity: Identity,
) -> None:
    """A household with a late fill: its fills one at a time in date order, as single
    fills are applied (a late one replays the household's security family)."""
    for arrival in mine:
        fill = arrival.fill
        context = batch.contexts[fill.account_id]
        item, row = _fill_input(arrival, context, batch.lot_names.get(fill.fill_id))
        last_day, seq = await repo.household_state(session, household)
        entries: list[dict[str, Any]] = []
        try:
            if last_day is None or arrival.day >= last_day:
                if _alone(household, mine):
                    facts = book.AccountFacts(
                        fill.account_id, household, context.account_type or "taxable"
                    )
                    members = [facts]
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
                    identity=identity,
                )
                await repo.add_tax_inputs(session, [row])
                changes, disposals = applied.changes, applied.disposals
                batch.touch(applied.touched, arrival)
            else:
                await repo.add_tax_inputs(session, [row])
                # Only the fill's security (and those corporate actions link it to) can change.
                replayed = await rebuild(session, [household], [fill.symbol])
                replay = replayed.replays[household]
                changes = replay.changes(item.cause)
                disposals = replay.disposals_of(fill.fill_id)
                # A late fill: its security was replayed in date order; the lots and gains
                # of later trades may have changed with it.
                entries.append(
                    _entry(
                        fill.account_id,
                        FILL,
                        fill.fill_id,
                        "replay",
                        symbol=fill.symbol,
                        amount=ZERO,
                    )
                )
                entries += replayed.restatements(FILL, fill.fill_id, exclude={fill.account_id})
                batch.touch(replayed.changed(), arrival)
        except TaxError as exc:
            raise arrival.refused(exc) from exc
        batch.settle(arrival, item, changes, disposals, entries)


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


def _check_same_fill(before: Any, fill: FillsReceivedV1, what: str) -> None:
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


async def holdings(session: AsyncSession, tenant: str, account_id: str) -> HoldingsOut:
    """The account's cash and positions (404 unless it has a ledger of `tenant`)."""
    book = await _book(session, tenant, account_id)
    rows = await repo.positions(session, account_id)
    named = (await repo.sleeve_cash_of(session, [account_id])).get(account_id, {})
    return HoldingsOut(
        account_id=account_id,
        tenant=book.tenant,
        as_of=book.as_of,
        cash=book.cash,
        sleeve_cash=[
            SleeveCashOut(sleeve_id=part.sleeve_id, amount=part.amount)
            for part in sleeve_cash_v1(book.cash, named)
        ],
        positions=[PositionOut(symbol=s, quantity=q, cost_basis=b) for s, q, b in rows],
        updated_at=book.updated_at,
    )


async def lots(
    session: AsyncSession, tenant: str, account_id: str, symbol: str | None = None
) -> LotsOut:
    """The account's open lots (404 unless it has a ledger of `tenant`)."""
    await _book(session, tenant, account_id)
    rows = await repo.open_lots(session, account_id, symbol)
    return LotsOut(
        account_id=account_id,
        lots=[LotOut.model_validate(r, from_attributes=True) for r in rows],
    )


async def _book(session: AsyncSession, tenant: str, account_id: str) -> Any:
    book = await repo.get_book(session, account_id, tenant=tenant)
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
    sleeve: str = "",
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
        "sleeve": sleeve,
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


# --- changes recorded in the audit trail ---------------------------------------------------


async def load_holdings(
    uow: UnitOfWork, tenant: str, actor: str, account_id: str, body: HoldingsIn
) -> HoldingsOut:
    """`open_account`, recorded in the tenant's audit trail as made by `actor`."""
    opened = await open_account(uow, tenant, account_id, body)
    await repo.append_audit(
        uow.session, tenant, [AuditEntry(actor, "open", "holdings", account_id, None, body)]
    )
    return opened


async def load_holdings_batch(
    uow: UnitOfWork, tenant: str, actor: str, accounts: Sequence[AccountHoldingsIn]
) -> BatchResult:
    """`open_accounts`, each opening recorded in the tenant's audit trail (one statement)."""
    result = await open_accounts(uow, tenant, accounts)
    await repo.append_audit(
        uow.session,
        tenant,
        [
            AuditEntry(
                actor, "open", "holdings", a.account_id, None, a.model_dump(exclude={"account_id"})
            )
            for a in accounts
        ],
    )
    return result


async def apply_corporate_action(
    uow: UnitOfWork, tenant: str, actor: str, action: CorporateActionIn
) -> CorporateActionOut:
    """Apply a corporate action once; the first application is recorded in the caller's
    tenant's audit trail (with how many accounts it changed)."""
    result = await actions.apply_corporate_action(uow, action)
    if not result.repeated:
        after = {"action": action, "accounts_changed": len(result.accounts)}
        await repo.append_audit(
            uow.session,
            tenant,
            [AuditEntry(actor, "apply", "corporate-action", action.action_id, None, after)],
        )
    return result
