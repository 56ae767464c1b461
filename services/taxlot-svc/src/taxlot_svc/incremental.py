"""The incremental path: a fill dated on or after everything its household has applied is
applied by the tax engine to the STORED state of its security in the household (its open
lots, the loss sales a purchase could still wash, the lot names used), and only what the
engine changed is written back. That is what a replay of the household would do for that
fill (``test_book.py`` checks it); a late fill replays instead (:mod:`taxlot_svc.replays`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal

from ballast_engine.tax import Change, Disposal, Identity, Lot, TaxLedger
from ballast_engine.tax.model import WASH_WINDOW_DAYS
from sqlmodel.ext.asyncio.session import AsyncSession

from taxlot_svc import repository as repo
from taxlot_svc.book import (
    AccountFacts,
    Input,
    SymbolState,
    apply_input,
    disposal_of,
    gain_rows,
    lot_of,
    lot_rows,
    restore_ledger,
)


@dataclass(slots=True)
class Applied:
    """What applying one input changed."""

    ledger: TaxLedger
    changes: list[Change]
    disposals: list[Disposal]  # created by this input
    touched: set[str] = field(default_factory=set)  # accounts whose lots or sales changed
    state: tuple[date, int] | None = None  # the household's new (last day, seq)


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
    accounts = [f.account_id for f in members]
    symbols = list(identity.members(symbol)) if identity is not None else [symbol]
    lots = [lot_of(r) for r in await repo.symbol_lots(session, accounts, symbols)]
    since = on - timedelta(days=WASH_WINDOW_DAYS)
    losses: list[Disposal] = []
    ids: dict[int, int] = {}
    names: dict[str, set[str]] = {a: set() for a in accounts}
    for lot in lots:
        names[lot.account].add(lot.lot_id)
    for row in await repo.symbol_sales(session, accounts, symbols):
        names[row.account_id].add(row.lot_id)  # the engine never reuses a lot's name
        if (
            row.sold_on >= since
            and row.cause == "fill"
            and row.account_type == "taxable"
            and row.proceeds < row.cost_basis
            and row.washed_quantity < row.quantity
        ):
            d = disposal_of(row)
            ids[id(d)] = row.id
            losses.append(d)
    state = SymbolState(household, members, symbol, lots, losses, names, last_day, seq, identity)
    return state, ids


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
    before = {(lot.account, lot.lot_id): lot for lot in state.lots}
    wash_before = {id(d): (d.adjustment, d.washed_quantity, d.permanent) for d in state.open_losses}
    ledger = restore_ledger(state)
    apply_input(ledger, item)  # all-or-nothing: raises before changing anything
    after = {
        (lot.account, lot.lot_id): lot for sym in state.symbols for lot in ledger.lots(symbol=sym)
    }
    gone = [k for k, lot in before.items() if after.get(k) != lot]
    fresh = [lot for k, lot in after.items() if before.get(k) != lot]
    touched = {k[0] for k in gone} | {lot.account for lot in fresh}
    await repo.delete_lot_keys(session, gone)
    origins = {lot.purchase_id: _origin_of(lot) for lot in fresh}
    origins[item.trade_id] = origin
    await repo.add_lots(session, lot_rows(fresh, origins))
    for d in state.open_losses:
        if (d.adjustment, d.washed_quantity, d.permanent) != wash_before[id(d)]:
            await repo.update_gain_wash(
                session, ids[id(d)], d.adjustment, d.washed_quantity, d.permanent
            )
            touched.add(d.account)
    fill_ids = {item.trade_id: item.ref} if origin[0] == "fill" else {}
    await repo.add_realized_gains(session, gain_rows(ledger.disposals, fill_ids))
    touched |= {d.account for d in ledger.disposals}
    new_last = max(last_day, item.on) if last_day is not None else item.on
    if write_state:
        await repo.set_household_states(session, {household: (new_last, ledger.seq)})
    return Applied(
        ledger,
        list(ledger.journal),
        list(ledger.disposals),
        touched,
        (new_last, ledger.seq),
    )


def _origin_of(lot: Lot) -> tuple[str, str | None]:
    """Cause and fill id of a lot's purchase (a lot split or changed by this fill keeps the
    origin of the purchase it came from): opening lots' purchases are ``opening:...``,
    fills' are their fill ids."""
    if lot.purchase_id.startswith("opening:"):
        return ("opening-balance", None)
    return ("fill", lot.purchase_id)


def fill_cash(changes: list[Change], disposals: list[Disposal], item: Input) -> Decimal:
    """Cash a fill moves: a buy pays its lot's basis before any wash-sale adjustment
    (price x quantity + fees); a sell receives its net proceeds."""
    if item.side == "buy":
        cause = item.cause
        return -sum((c.basis for c in changes if c.kind == "open" and c.cause == cause), Decimal(0))
    return sum((d.proceeds for d in disposals if d.sale_id == item.trade_id), Decimal(0))
