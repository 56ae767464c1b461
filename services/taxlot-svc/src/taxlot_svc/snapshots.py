"""``holdings-reconciled`` (v2): an account's cash, positions with their lots, household and
recent loss sales.

Opening balances publish theirs at once. Every other change (fills, household changes,
corporate actions, sleeve transfers) only *requests* a snapshot of the accounts it touched
(``pending_snapshots``, in the change's transaction); the snapshot loop publishes one
event per pending account with the state at that moment and every fill id the requests
carried. So a consumed batch of 500 fills of 50 accounts gives 50 events, not 500, and a
snapshot always shows committed state: the loop claims requests with ``SKIP LOCKED`` and a
transaction changing an account must update its request row, which waits for the claim.
Each event follows from the latest request's cause (for fills, the last fill's event) and
continues the trace that request was made in.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from ballast_common.app import Runtime
from ballast_common.contracts.events import (
    HoldingsReconciledV2,
    LossSaleV1,
    LotV1,
    PositionV2,
    RealizedYearV1,
    SleeveCashV1,
)
from ballast_common.uow import Cause, UnitOfWork
from ballast_engine.tax import Term
from ballast_engine.tax.model import WASH_WINDOW_DAYS, money
from pydantic import TypeAdapter
from sqlmodel.ext.asyncio.session import AsyncSession

from taxlot_svc import repository as repo
from taxlot_svc.book import disposal_of_record, own_cash
from taxlot_svc.replays import facts_of

log = logging.getLogger(__name__)
ZERO = Decimal(0)
BATCH = 500
IDLE_S = 0.05  # between polls while snapshots are being requested
IDLE_MAX_S = 0.5  # the longest pause once none has been requested for a while


def positions_v2(lots: Sequence[Any]) -> list[PositionV2]:
    """Positions (sums of their lots) with the lots, by symbol. ``lots`` are lot rows or
    row mappings (``symbol``, ``lot_id``, ``quantity``, ``cost_basis``, ``holding_start``,
    ``wash_adjustment``, ``sleeve``), in acquisition order."""
    by_symbol: dict[str, list[Any]] = defaultdict(list)
    for lot in lots:
        by_symbol[_get(lot, "symbol")].append(lot)
    out = []
    for symbol in sorted(by_symbol):
        mine = by_symbol[symbol]
        out.append(
            PositionV2(
                symbol=symbol,
                quantity=sum((_get(x, "quantity") for x in mine), ZERO),
                cost_basis=sum((_get(x, "cost_basis") for x in mine), ZERO),
                lots=[
                    LotV1(
                        lot_id=_get(x, "lot_id"),
                        quantity=_get(x, "quantity"),
                        acquired=_get(x, "holding_start"),
                        cost_basis=_get(x, "cost_basis"),
                        # in cents: the engine's 0 and the stored 0.00 read alike
                        wash_adjustment=money(_get(x, "wash_adjustment")),
                        sleeve_id=_get(x, "sleeve") or None,
                    )
                    for x in mine
                ],
            )
        )
    return out


POSITIONS = TypeAdapter(list[PositionV2])  # the positions contract (tests check JSON with it)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One holdings-reconciled to publish: the event without its positions, and the
    positions as the database wrote them (``repository.position_documents``)."""

    event: HoldingsReconciledV2
    positions_json: str | None
    tenant: str

    def payload_json(self) -> bytes:
        """The event's JSON with the positions spliced in as the database wrote them: the
        event the model writes with its positions (a test holds the two equal), without a
        Python object per lot (an account holds hundreds)."""
        written = self.event.__pydantic_serializer__.to_json(self.event)
        positions = (self.positions_json or "[]").encode()
        return written.replace(_NO_POSITIONS, b'"positions":' + positions, 1)

    def publish(self, uow: UnitOfWork, cause: Cause | None = None) -> None:
        uow.publish_json(
            HoldingsReconciledV2,
            self.payload_json(),
            key=self.event.account_id,
            tenant=self.tenant,
            cause=cause,
        )


_NO_POSITIONS = b'"positions":[]'


def loss_sales(rows: Sequence[Any]) -> list[LossSaleV1]:
    """Recent loss sales with unmatched shares, one per sale and security: the shares no
    replacement absorbed and the loss they still carry, per share (cents). ``rows`` are
    realized-gain records (columns by name)."""
    sums: dict[tuple[str, date, str], tuple[Decimal, Decimal]] = {}
    for r in rows:
        quantity = r["quantity"] - r["washed_quantity"]
        loss = (r["cost_basis"] - r["proceeds"]) - r["adjustment"]
        if quantity <= 0:
            continue
        key = (r["symbol"], r["sold_on"], r["fill_id"])
        q, lo = sums.get(key, (ZERO, ZERO))
        sums[key] = (q + quantity, lo + loss)
    return [
        LossSaleV1(symbol=s, sold_on=d, quantity=q, loss_per_share=money(max(lo, ZERO) / q))
        for (s, d, _f), (q, lo) in sorted(sums.items())
    ]


def realized_year(year: int, rows: Sequence[Any]) -> RealizedYearV1:
    """Gains realized in ``year`` (taxable sales, after wash-sale adjustments), by term;
    ``rows`` are realized-gain records (columns by name)."""
    st = lt = ZERO
    for row in rows:
        d = disposal_of_record(row)
        if not d.reportable or d.sold.year != year:
            continue
        if d.term is Term.SHORT:
            st += d.gain_loss
        else:
            lt += d.gain_loss
    return RealizedYearV1(year=year, short_term=st, long_term=lt)


def sleeve_cash_v1(cash: Decimal, named: Mapping[str, Decimal]) -> list[SleeveCashV1]:
    """A UMA's cash per sleeve: the account's own (what no named sleeve holds) first, then
    each named sleeve's; none when the account's cash is kept whole."""
    if not named:
        return []
    return [SleeveCashV1(sleeve_id=None, amount=own_cash(cash, named))] + [
        SleeveCashV1(sleeve_id=sleeve, amount=named[sleeve]) for sleeve in sorted(named)
    ]


def _get(x: Any, name: str) -> Any:
    return x[name] if isinstance(x, dict) else getattr(x, name)


async def build(
    session: AsyncSession,
    requests: Sequence[tuple[str, str, list[str], str | None]],
) -> list[Snapshot]:
    """The snapshot of each requested (account, cause, fill ids, action id); accounts
    without a ledger are skipped."""
    accounts = sorted({r[0] for r in requests})
    books = {b.account_id: b for b in await repo.books(session, accounts, for_update=False)}
    if not books:
        return []
    documents = await repo.position_documents(session, sorted(books))
    sleeve_cash = await repo.sleeve_cash_of(session, sorted(books))
    earliest = min(b.as_of for b in books.values()) - timedelta(days=WASH_WINDOW_DAYS)
    losses: dict[str, list[Any]] = defaultdict(list)
    for row in await repo.recent_loss_sales(session, sorted(books), earliest):
        losses[row["account_id"]].append(row)
    years = [b.as_of.year for b in books.values()]
    realized: dict[str, list[Any]] = defaultdict(list)
    first, last = date(min(years), 1, 1), date(max(years), 12, 31)
    for row in await repo.realized_between(session, sorted(books), first, last):
        realized[row["account_id"]].append(row)
    facts = await facts_of(session, sorted(books))
    out = []
    for account, cause, fill_ids, action_id in requests:
        book = books.get(account)
        if book is None:
            continue
        since = book.as_of - timedelta(days=WASH_WINDOW_DAYS)
        event = HoldingsReconciledV2(
            account_id=account,
            household_id=facts[account].household,
            as_of=book.as_of,
            cash=book.cash,
            positions=[],  # spliced in as the database wrote them
            cause=cause,
            fill_ids=fill_ids,
            action_id=action_id,
            recent_loss_sales=loss_sales(
                [r for r in losses.get(account, []) if r["sold_on"] >= since]
            ),
            realized_this_year=realized_year(book.as_of.year, realized.get(account, [])),
            sleeve_cash=sleeve_cash_v1(book.cash, sleeve_cash.get(account, {})),
        )
        out.append(Snapshot(event, documents.get(account), book.tenant))
    return out


async def publish_pending(uow: UnitOfWork, limit: int = BATCH) -> int:
    """Publish the snapshots requested so far (up to ``limit`` accounts), each following from
    its request's cause in its trace; returns how many requests were claimed."""
    claimed = await repo.take_pending_snapshots(uow.session, limit)
    if not claimed:
        return 0
    requests = [
        (r["account_id"], r["cause"], list(r["fill_ids"] or []), r["action_id"]) for r in claimed
    ]
    causes = {
        r["account_id"]: Cause(r["cause_event_id"], r["traceparent"], r["tracestate"])
        for r in claimed
    }
    for snapshot in await build(uow.session, requests):
        snapshot.publish(uow, causes[snapshot.event.account_id])
    return len(claimed)


def next_pause(claimed: int, pause: float) -> float:
    """How long to wait before the next poll: none while full batches keep coming, IDLE_S
    while requests come, doubling up to IDLE_MAX_S while none do (an idle service rests)."""
    if claimed >= BATCH:
        return 0.0
    if claimed:
        return IDLE_S
    return min(max(pause * 2, IDLE_S), IDLE_MAX_S)


async def snapshot_loop(runtime: Runtime) -> None:
    """Publish requested snapshots as they come (a background task of the service)."""
    pause = 0.0
    while True:
        async with runtime.uow() as uow:
            claimed = await publish_pending(uow)
        pause = next_pause(claimed, pause)
        if pause:
            await asyncio.sleep(pause)
