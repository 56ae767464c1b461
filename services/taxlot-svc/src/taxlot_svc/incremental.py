"""The incremental path: a fill dated on or after everything its household has applied is
applied by the tax engine to the STORED state of its security in the household (its open
lots, the loss sales a purchase could still wash, the lot names used), and only what the
engine changed is written back. That is what a replay of the household would do for that
fill (``test_book.py`` checks it); a late fill replays instead (:mod:`taxlot_svc.replays`).

A batch of fills goes the same way, household by household: the state of every security
the household's fills touch is read at once for all households of the batch, the fills
are applied in date order to one ledger per household, and what changed is written back
with one statement per table for the whole batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal

from ballast_engine.tax import Change, Disposal, Identity, Lot, TaxError, TaxLedger
from ballast_engine.tax.model import WASH_WINDOW_DAYS
from sqlmodel.ext.asyncio.session import AsyncSession

from taxlot_svc import repository as repo
from taxlot_svc.book import (
    RECONCILIATION,
    AccountFacts,
    Input,
    SymbolState,
    apply_input,
    disposal_of_record,
    gain_rows,
    lot_of_record,
    lot_rows,
    restore_ledger,
)


@dataclass(slots=True)
class Applied:
    """What applying inputs in date order to a household's stored state changed."""

    ledger: TaxLedger
    changes: list[Change]  # the engine's journal, in order (each change names its input)
    disposals: list[Disposal]  # created by these inputs
    touched: set[str] = field(default_factory=set)  # accounts whose lots or sales changed
    state: tuple[date, int] | None = None  # the household's new (last day, seq)
    gone: list[tuple[str, str]] = field(default_factory=list)  # (account, lot) replaced
    fresh: list[Lot] = field(default_factory=list)  # lots new or changed
    washed: list[Disposal] = field(default_factory=list)  # stored loss sales now matched more


class InputRefused(Exception):
    """The engine refused one input of a household's batch (nothing of the batch counts)."""

    def __init__(self, item: Input, error: TaxError) -> None:
        super().__init__(str(error))
        self.item = item
        self.error = error


def apply_in_date_order(state: SymbolState, items: Sequence[Input]) -> Applied:
    """Apply a household's inputs, none dated before its last day, to its stored ``state``
    (the securities of every input and those identical to them), in date order (arrival
    order, ``seq``, within a day): what a replay of the household gives for them
    (``test_book.py`` checks it). Pure. Raises InputRefused naming the input the engine
    refused."""
    before = {(lot.account, lot.lot_id): lot for lot in state.lots}
    wash_before = {id(d): (d.adjustment, d.washed_quantity, d.permanent) for d in state.open_losses}
    ledger = restore_ledger(state)
    last = state.last_day
    for item in sorted(items, key=lambda i: (i.on, i.seq)):
        try:
            apply_input(ledger, item)  # all-or-nothing: raises before changing anything
        except TaxError as exc:
            raise InputRefused(item, exc) from exc
        last = item.on if last is None else max(last, item.on)
    after = {(lot.account, lot.lot_id): lot for lot in ledger.lots()}
    # The ledger keeps the lots it did not touch as they were restored: the same objects.
    gone = [k for k, lot in before.items() if not _same(after.get(k), lot)]
    fresh = [lot for k, lot in after.items() if not _same(before.get(k), lot)]
    washed = [
        d
        for d in state.open_losses
        if (d.adjustment, d.washed_quantity, d.permanent) != wash_before[id(d)]
    ]
    touched = {k[0] for k in gone} | {lot.account for lot in fresh}
    touched |= {d.account for d in washed} | {d.account for d in ledger.disposals}
    assert last is not None
    return Applied(
        ledger,
        list(ledger.journal),
        list(ledger.disposals),
        touched,
        (last, ledger.seq),
        gone,
        fresh,
        washed,
    )


async def load_state(
    session: AsyncSession,
    household: str,
    members: list[AccountFacts],
    symbol: str,
    on: date,
    last_day: date | None,
    seq: int,
    identity: Identity | None = None,
) -> tuple[SymbolState, dict[int, int]]:
    """The household's stored state of ``symbol`` (and the securities ``identity`` makes
    substantially identical to it) for a fill on ``on``; also the row id of each restored
    loss sale (keyed by ``id()`` of its Disposal)."""
    states = await load_states(
        session, [HouseholdInputs(household, members, [symbol], on, last_day, seq)], identity
    )
    return states[household]


@dataclass(slots=True)
class HouseholdInputs:
    """What the state of a household is read for: its members, the securities of its inputs,
    the earliest input's date, its last day and sequence counter."""

    household: str
    members: list[AccountFacts]
    symbols: list[str]
    first_day: date
    last_day: date | None
    seq: int


async def load_states(
    session: AsyncSession, wanted: Sequence[HouseholdInputs], identity: Identity | None
) -> dict[str, tuple[SymbolState, dict[int, int]]]:
    """The stored state of several households at once (two statements in all): per
    household, the open lots and the loss sales a purchase could still wash, of its
    inputs' securities and those identical to them, the lot names used, and the row id of
    each restored loss sale (keyed by ``id()`` of its Disposal)."""
    accounts: list[str] = []
    symbols: list[str] = []
    household_of: dict[str, str] = {}
    for w in wanted:
        family = sorted({m for s in w.symbols for m in (identity.members(s) if identity else (s,))})
        for f in w.members:
            household_of[f.account_id] = w.household
            for sym in family:
                accounts.append(f.account_id)
                symbols.append(sym)
    lots: dict[str, list[Lot]] = {w.household: [] for w in wanted}
    names: dict[str, set[str]] = {a: set() for a in household_of}
    for row in await repo.lots_of_pairs(session, accounts, symbols):
        lot = lot_of_record(row)
        lots[household_of[lot.account]].append(lot)
        names[lot.account].add(lot.lot_id)
    since = {w.household: w.first_day - timedelta(days=WASH_WINDOW_DAYS) for w in wanted}
    losses: dict[str, list[Disposal]] = {w.household: [] for w in wanted}
    ids: dict[str, dict[int, int]] = {w.household: {} for w in wanted}
    for row in await repo.sales_of_pairs(session, accounts, symbols):
        account = row["account_id"]
        names[account].add(row["lot_id"])  # the engine never reuses a lot's name
        household = household_of[account]
        if (
            row["sold_on"] >= since[household]
            and row["cause"] == "fill"
            and row["account_type"] == "taxable"
            and row["proceeds"] < row["cost_basis"]
            and row["washed_quantity"] < row["quantity"]
        ):
            d = disposal_of_record(row)
            ids[household][id(d)] = row["id"]
            losses[household].append(d)
    out: dict[str, tuple[SymbolState, dict[int, int]]] = {}
    for w in wanted:
        mine = {f.account_id: names[f.account_id] for f in w.members}
        state = SymbolState(
            w.household,
            w.members,
            w.symbols[0],
            lots[w.household],
            losses[w.household],
            mine,
            w.last_day,
            w.seq,
            identity,
        )
        out[w.household] = (state, ids[w.household])
    return out


async def write_applied(
    session: AsyncSession,
    applied: Sequence[tuple[Applied, dict[int, int], Sequence[Input]]],
    origin: str,
) -> None:
    """Write back what applying inputs changed, for several households at once (one
    statement per table): lots replaced, loss sales matched further, new realized gains.
    ``origin`` is the cause of the lots the inputs open: "fill" (the lot's fill id) or
    another cause (no fill id)."""
    gone: list[tuple[str, str]] = []
    lots: list[dict[str, object]] = []
    washed: list[tuple[int, Decimal, Decimal, Decimal]] = []
    gains: list[dict[str, object]] = []
    for result, ids, items in applied:
        gone += result.gone
        origins = {lot.purchase_id: _origin_of(lot) for lot in result.fresh}
        fill_ids: dict[str, str] = {}
        for item in items:
            if origin == "fill":
                origins[item.trade_id] = ("fill", item.ref)
                fill_ids[item.trade_id] = item.ref
            else:
                origins[item.trade_id] = (origin, None)
        lots += lot_rows(result.fresh, origins)
        washed += [
            (ids[id(d)], d.adjustment, d.washed_quantity, d.permanent) for d in result.washed
        ]
        gains += gain_rows(result.disposals, fill_ids)
    await repo.delete_lot_keys(session, gone)
    await repo.add_lots(session, lots)
    await repo.update_gains_wash(session, washed)
    await repo.add_realized_gains(session, gains)


async def apply_in_order(
    session: AsyncSession,
    household: str,
    members: list[AccountFacts],
    item: Input,
    last_day: date | None,
    seq: int,
    origin: tuple[str, str | None],
    *,
    write_state: bool = True,
    identity: Identity | None = None,
) -> Applied:
    """Apply one fill (or sleeve transfer) in date order to the stored lots and write back
    what changed; ``identity`` says which securities are substantially identical (the
    identical equivalence sets in force now). Raises the engine's ``TaxError`` (nothing
    written) if it cannot apply."""
    state, ids = await load_state(
        session, household, members, item.symbol, item.on, last_day, seq, identity
    )
    try:
        applied = apply_in_date_order(state, [item])
    except InputRefused as refused:
        raise refused.error from None
    await write_applied(session, [(applied, ids, [item])], origin[0])
    if write_state:
        assert applied.state is not None
        await repo.set_household_states(session, {household: applied.state})
    return applied


def _same(a: Lot | None, b: Lot | None) -> bool:
    return a is b or a == b


def _origin_of(lot: Lot) -> tuple[str, str | None]:
    """Cause and fill id of a lot's purchase (a lot split or changed by this fill keeps the
    origin of the purchase it came from): opening lots' purchases are ``opening:...``,
    lots the custodian's figure opened ``reconciliation:<break id>``, fills' their fill
    ids."""
    if lot.purchase_id.startswith("opening:"):
        return ("opening-balance", None)
    if lot.purchase_id.startswith(RECONCILIATION + ":"):
        return (RECONCILIATION, None)  # opened by the custodian's figure accepted
    return ("fill", lot.purchase_id)


def fill_cash(changes: list[Change], disposals: list[Disposal], item: Input) -> Decimal:
    """Cash a fill moves: a buy pays its lot's basis before any wash-sale adjustment
    (price x quantity + fees); a sell receives its net proceeds."""
    if item.side == "buy":
        cause = item.cause
        return -sum((c.basis for c in changes if c.kind == "open" and c.cause == cause), Decimal(0))
    return sum((d.proceeds for d in disposals if d.sale_id == item.trade_id), Decimal(0))
