"""custodian-gateway's rules: approved trades become allocations, allocations gather into
block orders (one per firm, security, side and custodian), blocks go to the custodian, and
when a block is done its fills are shared among its allocations as fills-received and
order-rejected events.

Every block is persisted, with its client order id, before anything is sent. Sending marks
blocks sent in the same transaction that locked them, after the custodian acknowledged them;
a crash in between resends the same client order ids, which the custodian deduplicates.
Executions are stored once (by execution id) in the transaction that applies them to their
block and advances the poll cursor; the transaction in which a block becomes done also
shares its fills (see allocation.py) and publishes one event per allocation and outcome.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from ballast_common.auth import Permission, Principal
from ballast_common.consumer import Delivery
from ballast_common.contracts.envelope import Envelope
from ballast_common.contracts.events import FillsReceivedV1, OrderRejectedV1, TradesApprovedV1
from ballast_common.errors import NotFound, PermanentMessageError
from ballast_common.telemetry import context_from_headers, current_trace_headers, tracer
from ballast_common.uow import Cause, UnitOfWork
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, SpanKind
from pydantic import TypeAdapter, ValidationError
from sqlalchemy import Row
from sqlmodel.ext.asyncio.session import AsyncSession

from custodian_gateway import repository as repo
from custodian_gateway.allocation import AllocationProblem, Ask, allocate, share_unit
from custodian_gateway.custodian import (
    AllocationBooking,
    CustodianClient,
    CustodianOrder,
    CustodianRefused,
    OrderRequest,
    RawExecution,
)
from custodian_gateway.orders import (
    ALLOCATION_STATUSES,
    BOOKING_STATUSES,
    DONE_STATUSES,
    ORDER_STATUSES,
    ExecutionProblem,
    OrderProgress,
    allocation_fill_id,
    apply_fill,
    apply_reject,
    canonical,
    check_scale,
)
from custodian_gateway.tables import (
    PRICE_SCALE,
    QUANTITY_SCALE,
    Allocation,
    Execution,
    Order,
    PollCursor,
)

log = logging.getLogger(__name__)

DEFAULT_CUSTODIAN = "default"
MAX_SPAN_LINKS = 64
# What the custodian accepts (see tools/custodian-sim): refuse earlier, with a clear reason.
_IDENTIFIER = re.compile(r"^\S(.*\S)?$")
_SYMBOL = re.compile(r"^[A-Za-z0-9.\-/]{1,32}$")
_DATETIME: TypeAdapter[datetime] = TypeAdapter(datetime)
_LONG_AGO = datetime.min.replace(tzinfo=UTC)


def _now() -> datetime:
    return datetime.now(UTC)


def _fmt(value: Decimal) -> str:
    return format(canonical(value), "f")


def _stored_context(traceparent: str | None, tracestate: str | None) -> Context | None:
    """A stored W3C trace context (None: start a new trace)."""
    if not traceparent:
        return None
    carrier = {"traceparent": traceparent}
    if tracestate:
        carrier["tracestate"] = tracestate
    return context_from_headers(carrier)


def _trace_context(order: Order) -> Context | None:
    return _stored_context(order.traceparent, order.tracestate)


# --- trades-approved -> allocations ---------------------------------------------------------


async def record_approved_trades(
    uow: UnitOfWork, deliveries: Sequence[Delivery], custodian: str
) -> list[uuid.UUID]:
    """Store every approved trade of the batch as a pending allocation, in one statement;
    trades already stored are left alone. Returns the trade ids stored by this call."""
    rows = repo.NewAllocations([], [], [], [], [], [], [], [], [], [], [], [], [])
    current = current_trace_headers()
    for delivery in deliveries:
        payload: TradesApprovedV1 = delivery.payload
        _check_approved(payload)
        trace_headers = _trace_of(delivery.envelope, current)
        for t in payload.trades:
            rows.trade_ids.append(t.trade_id)
            rows.proposal_ids.append(payload.proposal_id)
            rows.account_ids.append(payload.account_id)
            rows.tenants.append(delivery.envelope.tenant)
            rows.symbols.append(t.symbol)
            rows.sides.append(t.side)
            rows.quantities.append(t.quantity)
            rows.reference_prices.append(t.estimated_price)
            rows.lot_ids.append(list(t.lot_ids))
            rows.sleeve_ids.append(t.sleeve_id)
            rows.traceparents.append(trace_headers.get("traceparent"))
            rows.tracestates.append(trace_headers.get("tracestate"))
            rows.approval_event_ids.append(delivery.envelope.id)
    created = await repo.insert_allocations(uow.session, custodian, rows)
    if len(created) < len(rows.trade_ids):
        log.info(
            "approved trades already stored were skipped",
            extra={"skipped": len(rows.trade_ids) - len(created), "stored": len(created)},
        )
    return created


def _trace_of(envelope: Envelope, current: dict[str, str]) -> dict[str, str]:
    """The trace an approved trade's fill continues: the consumer span when it is in the
    event's trace, else the event's own (a batch's span continues only its first event)."""
    theirs = (envelope.traceparent or "").split("-")
    ours = current.get("traceparent", "").split("-")
    if len(theirs) > 1 and (len(ours) < 2 or ours[1] != theirs[1]):
        headers = {"traceparent": envelope.traceparent or ""}
        if envelope.tracestate:
            headers["tracestate"] = envelope.tracestate
        return headers
    return current


def _check_approved(payload: TradesApprovedV1) -> None:
    where = (
        f"trades-approved for account {payload.account_id[:140]!r} (proposal {payload.proposal_id})"
    )
    if len(payload.account_id) > 128 or not _IDENTIFIER.match(payload.account_id):
        raise PermanentMessageError(
            f"{where}: account_id is not a valid custodian account id "
            "(1-128 characters, no leading or trailing spaces)"
        )
    seen: set[Any] = set()
    for i, t in enumerate(payload.trades):
        if t.trade_id in seen:
            raise PermanentMessageError(f"{where}: trades[{i}].trade_id {t.trade_id} appears twice")
        seen.add(t.trade_id)
        if not _SYMBOL.match(t.symbol):
            raise PermanentMessageError(
                f"{where}: trades[{i}].symbol {t.symbol!r} is not a valid custodian symbol "
                "(1-32 of A-Z, a-z, 0-9, '.', '-', '/')"
            )
        try:
            check_scale(t.quantity, QUANTITY_SCALE, f"trades[{i}].quantity")
            check_scale(t.estimated_price, PRICE_SCALE, f"trades[{i}].estimated_price")
        except ValueError as exc:
            raise PermanentMessageError(f"{where}: {exc}") from None


# --- blocker: pending allocations -> block orders -------------------------------------------


@dataclass
class BlockOutcome:
    blocks: list[repo.NewBlock] = field(default_factory=list)
    allocations: int = 0
    # Seconds until the pending allocations are due to be blocked (None: none pending).
    wait_s: float | None = None
    full: bool = False  # the step gathered as many as it may: more may be pending


async def block_pending(
    uow: UnitOfWork,
    *,
    custodian: str,
    block_account: str,
    window_s: float,
    max_wait_s: float,
    limit: int,
) -> BlockOutcome:
    """Once no approved trade has arrived for `window_s` (the fan-out has gathered), or the
    oldest has waited `max_wait_s`, gather up to `limit` pending allocations into block
    orders (persisted as new orders, ready to send)."""
    ages = await repo.pending_ages_s(uow.session, custodian)
    if ages is None:
        return BlockOutcome()
    oldest, newest = ages
    if newest < window_s and oldest < max_wait_s:
        return BlockOutcome(wait_s=min(window_s - newest, max_wait_s - oldest))
    blocks = await repo.block_pending_allocations(uow.session, custodian, block_account, limit)
    count = sum(b.allocation_count for b in blocks)
    if blocks:
        log.info(
            "approved trades blocked",
            extra={"blocks": len(blocks), "allocations": count, "custodian": custodian},
        )
    return BlockOutcome(blocks=blocks, allocations=count, full=count >= limit)


# --- order sender ---------------------------------------------------------------------------


@dataclass
class SendOutcome:
    claimed: int = 0
    sent: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    unacknowledged: list[str] = field(default_factory=list)
    possible_resends: int = 0  # of the orders sent, those marked as possibly sent before


@dataclass
class SendMemory:
    """What one sender process knows of earlier attempts to send: orders whose POST went
    out without an answer (it may have reached the custodian), and when the process started
    (an older unsent order may have been POSTed by a process that died before recording
    it). Such orders go out marked as possible resends; marking one too many is harmless."""

    started_at: datetime = field(default_factory=_now)
    unanswered: set[str] = field(default_factory=set)

    def possibly_sent(self, order: Order) -> bool:
        return order.created_at < self.started_at or order.client_order_id in self.unanswered


async def send_new_orders(
    uow: UnitOfWork,
    client: CustodianClient,
    batch_size: int,
    custodian: str = DEFAULT_CUSTODIAN,
    memory: SendMemory | None = None,
) -> SendOutcome:
    """Send one batch of new block orders and mark them sent, in `uow`'s transaction.

    Raises CustodianUnavailable when the custodian cannot take them now: the caller rolls
    back (the orders stay new) and retries later with the same client order ids, then marked
    as possible resends (`memory`).
    """
    orders = await repo.claim_new_orders(uow.session, custodian, batch_size)
    outcome = SendOutcome(claimed=len(orders))
    if not orders:
        return outcome
    memory = memory if memory is not None else SendMemory(started_at=_LONG_AGO)
    resends = {o.client_order_id for o in orders if memory.possibly_sent(o)}
    memory.unanswered.update(o.client_order_id for o in orders)
    parent = _trace_context(orders[0])
    links = _links(orders[1:])
    with tracer().start_as_current_span(
        "custodian send orders",
        context=parent,
        kind=SpanKind.CLIENT,
        links=links,
        attributes={"ballast.orders": len(orders), "http.request.method": "POST"},
    ) as span:
        acknowledged, refused = await _submit(client, orders, resends)
        span.set_attribute("ballast.orders_acknowledged", len(acknowledged))
        span.set_attribute("ballast.orders_refused", len(refused))
        span.set_attribute("ballast.possible_resends", len(resends))
    await _record_answers(uow, orders, acknowledged, refused, outcome)
    memory.unanswered.difference_update(outcome.sent)
    memory.unanswered.difference_update(outcome.refused)
    outcome.possible_resends = len(resends & set(outcome.sent))
    return outcome


async def _record_answers(
    uow: UnitOfWork,
    orders: Sequence[Order],
    acknowledged: set[str],
    refused: Sequence[tuple[Order, str]],
    outcome: SendOutcome,
) -> None:
    """Mark the acknowledged orders sent; reject and share the refused ones."""
    by_id = {o.client_order_id: o for o in orders}
    outcome.sent = [i for i in by_id if i in acknowledged]
    await repo.mark_sent(uow.session, outcome.sent)
    for order, detail in refused:
        log.error(
            "custodian refused an order",
            extra={"client_order_id": order.client_order_id, "detail": detail},
        )
        order.status = "rejected"
        order.reject_reason = f"custodian refused the order: {detail}"
        order.updated_at = _now()
        outcome.refused.append(order.client_order_id)
    await _share_done_blocks(uow, [order for order, _ in refused])
    refused_ids = set(outcome.refused)
    outcome.unacknowledged = [i for i in by_id if i not in acknowledged and i not in refused_ids]
    if outcome.unacknowledged:
        log.warning(
            "custodian did not acknowledge some orders; they stay as they were and will be "
            "sent again",
            extra={"client_order_ids": outcome.unacknowledged[:20]},
        )


def _links(orders: Sequence[Order]) -> list[Link]:
    return _links_to((o.traceparent, o.tracestate) for o in orders)


def _member_links(order: Order, members: Sequence[Row[Any]]) -> list[Link]:
    """Links from a block's span to the other traces its trades were approved in."""
    own = (order.traceparent or "").split("-")[1:2]
    return _links_to(
        (m.traceparent, m.tracestate)
        for m in members
        if m.traceparent and m.traceparent.split("-")[1:2] != own
    )


def _links_to(contexts: Iterable[tuple[str | None, str | None]]) -> list[Link]:
    """Span links to stored trace contexts, one per trace, at most MAX_SPAN_LINKS."""
    links: list[Link] = []
    seen: set[str] = set()
    for traceparent, tracestate in contexts:
        ctx = _stored_context(traceparent, tracestate)
        trace_id = (traceparent or "").split("-")[1:2]
        if ctx is None or not trace_id or trace_id[0] in seen:
            continue
        seen.add(trace_id[0])
        span_context = trace.get_current_span(ctx).get_span_context()
        if span_context.is_valid:
            links.append(Link(span_context))
        if len(links) >= MAX_SPAN_LINKS:
            break
    return links


async def _submit(
    client: CustodianClient, orders: Sequence[Order], possible_resends: set[str]
) -> tuple[set[str], list[tuple[Order, str]]]:
    """POST the orders; if the custodian refuses the batch, find the culprits one by one."""
    headers = current_trace_headers()
    requests = [_request(o, o.client_order_id in possible_resends) for o in orders]
    try:
        ack = await client.submit_orders(requests, headers=headers)
    except CustodianRefused as exc:
        if len(orders) == 1:
            return set(), [(orders[0], exc.detail)]
        log.warning(
            "custodian refused a batch; sending its orders one by one",
            extra={"orders": len(orders), "detail": exc.detail},
        )
        acknowledged: set[str] = set()
        refused: list[tuple[Order, str]] = []
        for order in orders:
            ok, bad = await _submit(client, [order], possible_resends)
            acknowledged |= ok
            refused += bad
        return acknowledged, refused
    return set(ack.accepted) | set(ack.duplicates), []


def _request(order: Order, possible_resend: bool = False) -> OrderRequest:
    return OrderRequest(
        client_order_id=order.client_order_id,
        account_id=order.account_id,
        symbol=order.symbol,
        side=order.side,
        quantity=_fmt(order.quantity),
        reference_price=_fmt(order.reference_price),
        possible_resend=possible_resend,
    )


# --- booking each account's share at the custodian ------------------------------------------


@dataclass
class BookingOutcome:
    claimed: int = 0
    booked: int = 0
    refused: int = 0
    duplicates: int = 0  # the custodian had them already (sent before, answer lost)
    unanswered: int = 0  # left pending: the answer did not name them


async def send_bookings(
    uow: UnitOfWork,
    client: CustodianClient,
    batch_size: int,
    custodian: str = DEFAULT_CUSTODIAN,
) -> BookingOutcome:
    """Tell the custodian one batch of filled shares (account, fill, a sell's lots) and
    store its answers, in `uow`'s transaction. Raises CustodianUnavailable when it cannot
    take them now: the caller rolls back, they stay pending and go again later with the same
    fill ids, which the custodian recognises (nothing is booked twice)."""
    rows = await repo.claim_pending_bookings(uow.session, custodian, batch_size)
    outcome = BookingOutcome(claimed=len(rows))
    if not rows:
        return outcome
    bookings = [_booking(row) for row in rows]
    with tracer().start_as_current_span(
        "custodian book allocations",
        kind=SpanKind.CLIENT,
        attributes={"ballast.allocations": len(bookings), "http.request.method": "POST"},
    ):
        answers = await _book(client, bookings)
    trade_ids: list[uuid.UUID] = []
    statuses: list[str] = []
    reasons: list[str | None] = []
    refusals: list[str] = []
    for row, booking in zip(rows, bookings, strict=True):
        answer = answers.get(booking.fill_id)
        if answer is None:
            outcome.unanswered += 1
            continue
        status, reason, duplicate = answer
        trade_ids.append(row.trade_id)
        statuses.append(status)
        reasons.append(reason)
        outcome.duplicates += duplicate
        if status == "booked":
            outcome.booked += 1
        else:
            outcome.refused += 1
            refusals.append(f"{booking.account_id} {booking.fill_id}: {reason}")
    blocks = [row.client_order_id for row in rows]
    await repo.record_bookings(uow.session, blocks, trade_ids, statuses, reasons)
    if refusals:
        # a break between the custodian's book and ours: reconciliation will find it
        log.error(
            "custodian refused allocations",
            extra={"refused": len(refusals), "first": refusals[:10]},
        )
    if outcome.unanswered:
        log.warning(
            "custodian did not answer for some allocations; they stay pending",
            extra={"unanswered": outcome.unanswered},
        )
    return outcome


def _booking(row: Row[Any]) -> AllocationBooking:
    return AllocationBooking(
        fill_id=allocation_fill_id(row.trade_id),
        client_order_id=row.client_order_id,
        account_id=row.account_id,
        symbol=row.symbol,
        side=row.side,
        quantity=_fmt(row.filled_quantity),
        price=_fmt(row.average_price),
        executed_at=row.executed_at.isoformat(),
        lot_ids=list(row.lot_ids) if row.side == "sell" else [],
    )


async def _book(
    client: CustodianClient, bookings: Sequence[AllocationBooking]
) -> dict[str, tuple[str, str | None, bool]]:
    """POST the bookings: fill id -> (booked or refused, reason, duplicate). If the custodian
    refuses the request's content, its allocations go one by one, so only the bad one is
    refused."""
    try:
        ack = await client.book_allocations(bookings, headers=current_trace_headers())
    except CustodianRefused as exc:
        if len(bookings) == 1:
            detail = f"custodian refused the allocation: {exc.detail}"
            return {bookings[0].fill_id: ("refused", detail, False)}
        log.warning(
            "custodian refused a batch of allocations; sending them one by one",
            extra={"allocations": len(bookings), "detail": exc.detail},
        )
        answers: dict[str, tuple[str, str | None, bool]] = {}
        for booking in bookings:
            answers.update(await _book(client, [booking]))
        return answers
    return {r.fill_id: (r.outcome, r.reason, r.duplicate) for r in ack.results}


# --- settling sent orders after a restart ---------------------------------------------------


@dataclass
class SettleOutcome:
    checked: int = 0  # orders asked about
    known: int = 0  # the custodian knows them: their executions come through the cursor
    resent: list[str] = field(default_factory=list)  # unknown: sent again, same id
    refused: list[str] = field(default_factory=list)  # unknown, and refused when sent again
    # unknown but partially filled here: not sent again (see settle_sent_orders)
    unknown_partially_filled: list[str] = field(default_factory=list)
    last_client_order_id: str | None = None  # where the next chunk starts (None: done)


async def settle_sent_orders(
    uow: UnitOfWork,
    client: CustodianClient,
    custodian: str,
    *,
    after: str = "",
    limit: int = 500,
    concurrency: int = 8,
) -> SettleOutcome:
    """Ask the custodian about one chunk of the orders it should be working (sent or partly
    filled, ids after `after`) and settle each: a known order is left to the execution
    cursor; an unknown `sent` one is sent again with the same client order id, marked as a
    possible resend, and stays sent. An unknown partly filled order is not sent again (the
    whole quantity again could execute twice at a custodian whose execution ids differ): it
    is logged for a person. Orders another worker holds locked are skipped."""
    orders = await repo.orders_awaiting_executions(uow.session, custodian, after, limit)
    outcome = SettleOutcome(checked=len(orders))
    if not orders:
        return outcome
    outcome.last_client_order_id = orders[-1].client_order_id if len(orders) >= limit else None
    views = await _ask_custodian(client, [o.client_order_id for o in orders], concurrency)
    unknown = [o for o in orders if views[o.client_order_id] is None]
    outcome.known = len(orders) - len(unknown)
    lost = [o for o in unknown if o.status == "sent"]
    outcome.unknown_partially_filled = [o.client_order_id for o in unknown if o.status != "sent"]
    if outcome.unknown_partially_filled:
        log.error(
            "partly filled orders are unknown to the custodian; not sent again (their "
            "executions so far are applied here): an operator must settle them",
            extra={"client_order_ids": outcome.unknown_partially_filled[:20]},
        )
    if lost:
        acknowledged, refused = await _submit(client, lost, {o.client_order_id for o in lost})
        sent = SendOutcome(claimed=len(lost))
        await _record_answers(uow, lost, acknowledged, refused, sent)
        outcome.resent, outcome.refused = sent.sent, sent.refused
        log.warning(
            "orders unknown to the custodian sent again as possible resends",
            extra={"resent": sent.sent[:20], "refused": sent.refused[:20], "count": len(lost)},
        )
    return outcome


async def _ask_custodian(
    client: CustodianClient, client_order_ids: Sequence[str], concurrency: int
) -> dict[str, CustodianOrder | None]:
    """The custodian's view of each order, at most `concurrency` requests at a time."""
    gate = asyncio.Semaphore(concurrency)

    async def ask(client_order_id: str) -> CustodianOrder | None:
        async with gate:
            return await client.order(client_order_id)

    answers = await asyncio.gather(*(ask(i) for i in client_order_ids))
    return dict(zip(client_order_ids, answers, strict=True))


# --- execution poller -----------------------------------------------------------------------


@dataclass
class PollOutcome:
    locked: bool = True  # False: another poller holds the cursor
    received: int = 0  # executions on the page
    new: int = 0  # not seen before
    fills: int = 0
    rejects: int = 0
    orphans: int = 0
    invalid: int = 0
    blocks_done: int = 0  # blocks that became done (and were allocated) on this page
    cursor: int = 0
    page_full: bool = False
    awaiting: bool = False  # sent orders still wait for executions (poll them promptly)


async def poll_executions(
    uow: UnitOfWork, client: CustodianClient, page_size: int, custodian: str = DEFAULT_CUSTODIAN
) -> PollOutcome:
    """Fetch the next page of executions and apply it, all in `uow`'s transaction; blocks
    it completes are allocated and their events published in the same transaction."""
    cursor = await repo.lock_cursor(uow.session, custodian)
    if cursor is None:
        return PollOutcome(locked=False)
    start = cursor.last_seq
    page = await client.executions_after(start, page_size)
    outcome = PollOutcome(
        received=len(page.executions), page_full=len(page.executions) >= page_size
    )
    fresh = _fresh(page.executions, start)
    known = await repo.known_execution_ids(uow.session, (e.execution_id for e in fresh))
    fresh = [e for e in fresh if e.execution_id not in known]
    outcome.new = len(fresh)
    orders = await repo.orders_for_update(
        uow.session,
        custodian,
        {str(e.client_order_id) for e in fresh if e.client_order_id is not None},
    )
    rows = []
    done: dict[str, Order] = {}
    for execution in fresh:
        order = orders.get(str(execution.client_order_id))
        row = _execution_row(execution)
        if order is None:
            row["outcome"] = "orphan"
            row["problem"] = f"unknown client_order_id {execution.client_order_id!r}"
            outcome.orphans += 1
            log.warning(
                "execution for an unknown order stored as an orphan",
                extra={
                    "execution_id": execution.execution_id,
                    "client_order_id": execution.client_order_id,
                },
            )
        else:
            try:
                kind = _apply(order, execution, row)
            except ExecutionProblem as exc:
                row["outcome"] = "invalid"
                row["problem"] = str(exc)
                outcome.invalid += 1
                log.error(
                    "execution cannot be applied to its order; stored as invalid",
                    extra={
                        "execution_id": execution.execution_id,
                        "client_order_id": order.client_order_id,
                        "problem": str(exc),
                    },
                )
            else:
                row["outcome"] = "applied"
                if kind == "fill":
                    outcome.fills += 1
                else:
                    outcome.rejects += 1
                if order.status in DONE_STATUSES:
                    done[order.client_order_id] = order
        rows.append(row)
    await repo.insert_executions(uow.session, rows)
    outcome.blocks_done = await _share_done_blocks(uow, list(done.values()))
    seen_max = max((e.seq for e in page.executions), default=start)
    cursor.last_seq = max(start, page.last_seq, seen_max)
    if cursor.last_seq != start:
        cursor.updated_at = _now()
    outcome.cursor = cursor.last_seq
    if not outcome.page_full:
        outcome.awaiting = await repo.has_open_orders(uow.session, custodian)
    return outcome


def _fresh(executions: Sequence[RawExecution], after: int) -> list[RawExecution]:
    """Executions past the cursor, in sequence order, each id once; gaps are reported."""
    ordered = sorted((e for e in executions if e.seq > after), key=lambda e: e.seq)
    out: list[RawExecution] = []
    ids: set[str] = set()
    expected = after + 1
    for e in ordered:
        if e.seq != expected:
            log.warning(
                "custodian execution sequence has a gap",
                extra={"expected_seq": expected, "got_seq": e.seq},
            )
        expected = e.seq + 1
        if e.execution_id not in ids:
            ids.add(e.execution_id)
            out.append(e)
    return out


def _apply(order: Order, execution: RawExecution, row: dict[str, Any]) -> str:
    """Apply one execution to its (locked) block order. Returns its kind."""
    kind = execution.kind
    if kind not in ("fill", "reject"):
        raise ExecutionProblem(f"unknown execution kind {kind!r}")
    for name in ("account_id", "symbol", "side"):
        reported = getattr(execution, name)
        if reported is not None and str(reported) != getattr(order, name):
            raise ExecutionProblem(
                f"execution {name} {reported!r} differs from the order's {getattr(order, name)!r}"
            )
    progress = OrderProgress(
        quantity=order.quantity,
        status=order.status,  # type: ignore[arg-type]
        filled_quantity=order.filled_quantity,
        filled_notional=order.filled_notional,
        reject_reason=order.reject_reason,
        whole_shares=order.whole_shares,
    )
    if kind == "fill":
        quantity = _exact(execution.quantity, "quantity")
        price = _exact(execution.price, "price")
        executed_at = row["executed_at"]
        if executed_at is None:
            raise ExecutionProblem(f"fill has no valid executed_at: {execution.executed_at!r}")
        after = apply_fill(progress, quantity, price)
        if order.last_fill_at is None or executed_at > order.last_fill_at:
            order.last_fill_at = executed_at
    else:
        after = apply_reject(progress, None if execution.reason is None else str(execution.reason))
    order.status = after.status
    order.filled_quantity = after.filled_quantity
    order.filled_notional = after.filled_notional
    order.average_price = after.average_price
    order.reject_reason = after.reject_reason
    order.updated_at = _now()
    return kind


# --- sharing a done block among its allocations ---------------------------------------------


async def _share_done_blocks(uow: UnitOfWork, orders: Sequence[Order]) -> int:
    """Share each done block's fills among its allocations (pro rata, fair rounding, the
    block's average price), store the shares in one statement and publish per allocation
    one fills-received (its filled part) and one order-rejected (its unfilled part).
    Returns the number of blocks allocated."""
    if not orders:
        return 0
    rows = await repo.allocations_to_share(uow.session, [o.client_order_id for o in orders])
    by_block: dict[str, list[Row[Any]]] = {}
    for row in rows:
        by_block.setdefault(row.client_order_id, []).append(row)
    shares = repo.AllocationShares([], [], [], [], [])
    allocated = 0
    now = _now()
    for order in orders:
        members = by_block.get(order.client_order_id, [])
        if not members:
            log.warning(
                "done block has no open allocations to share (already allocated?)",
                extra={"client_order_id": order.client_order_id},
            )
            continue
        with tracer().start_as_current_span(
            "allocate block",
            context=_trace_context(order),
            links=_member_links(order, members),
            attributes={
                "ballast.client_order_id": order.client_order_id,
                "ballast.allocations": len(members),
                "ballast.filled_quantity": _fmt(order.filled_quantity),
            },
        ):
            try:
                filled = allocate(
                    order.filled_quantity,
                    [Ask(str(m.trade_id), m.quantity) for m in members],
                    share_unit(order.whole_shares),
                )
            except AllocationProblem as exc:
                # Executions are checked before they count, so this means stored data
                # disagree (the block's allocations do not add up to it): leave it for a
                # person, unallocated and visible in /stats, rather than guess.
                log.error(
                    "done block cannot be allocated; left unallocated",
                    extra={"client_order_id": order.client_order_id, "problem": str(exc)},
                )
                continue
            _publish_shares(uow, order, members, filled, shares)
        order.allocated_at = now
        order.updated_at = now
        allocated += 1
    await repo.record_shares(uow.session, shares)
    return allocated


def _publish_shares(
    uow: UnitOfWork,
    order: Order,
    members: Sequence[Row[Any]],
    filled: Sequence[Decimal],
    shares: repo.AllocationShares,
) -> None:
    price = order.average_price
    executed_at = order.last_fill_at or order.updated_at
    for member, quantity in zip(members, filled, strict=True):
        remainder = member.quantity - quantity
        status = "filled" if remainder == 0 else "rejected" if quantity == 0 else "partially_filled"
        reason = None
        if remainder > 0:
            reason = (
                f"{_fmt(remainder)} of {_fmt(member.quantity)} not filled: block order "
                f"{order.client_order_id} ({order.symbol} {order.side}, "
                f"{_fmt(order.filled_quantity)} of {_fmt(order.quantity)} filled) ended "
                f"{order.status}: {order.reject_reason or 'no reason given'}"
            )
        shares.trade_ids.append(member.trade_id)
        shares.statuses.append(status)
        shares.filled.append(quantity)
        shares.prices.append(price if quantity > 0 else None)
        shares.reasons.append(reason)
        # The allocation's events follow from the trades-approved event that carried its
        # trade, in the trace it was approved in (the block's span when that is the same).
        cause = Cause(member.approval_event_id, member.traceparent, member.tracestate)
        if quantity > 0:
            assert price is not None  # a block with fills has an average price
            uow.publish(
                FillsReceivedV1(
                    fill_id=allocation_fill_id(member.trade_id),
                    client_order_id=order.client_order_id,
                    trade_id=member.trade_id,
                    proposal_id=member.proposal_id,
                    account_id=member.account_id,
                    symbol=member.symbol,
                    side=member.side,
                    quantity=canonical(quantity),
                    price=canonical(price),
                    executed_at=executed_at,
                    lot_ids=list(member.lot_ids),
                    sleeve_id=member.sleeve_id,
                ),
                key=member.account_id,
                tenant=member.tenant,
                cause=cause,
            )
        if reason is not None:
            uow.publish(
                OrderRejectedV1(
                    client_order_id=order.client_order_id,
                    trade_id=member.trade_id,
                    proposal_id=member.proposal_id,
                    account_id=member.account_id,
                    symbol=member.symbol,
                    side=member.side,
                    quantity=canonical(remainder),
                    reason=reason,
                ),
                key=member.account_id,
                tenant=member.tenant,
                cause=cause,
            )


def _exact(value: Any, name: str) -> Decimal:
    """A decimal string or integer from the custodian; floats are refused as inexact."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ExecutionProblem(f"{name} must be a decimal string, got {value!r}")
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise ExecutionProblem(f"{name} {value!r} is not a decimal number") from None
    if not number.is_finite():
        raise ExecutionProblem(f"{name} {value!r} is not a finite number")
    return number


def _execution_row(e: RawExecution) -> dict[str, Any]:
    """The storable columns of an execution; values that do not fit are kept only in `raw`."""

    def text(value: Any, limit: int) -> str | None:
        return None if value is None else str(value)[:limit]

    def number(value: Any, places: int) -> Decimal | None:
        try:
            d = _exact(value, "value")
            check_scale(d, places, "value")
        except (ExecutionProblem, ValueError):
            return None
        return d if abs(d) < Decimal(10) ** (24 - places) else None

    executed_at: datetime | None
    try:
        executed_at = _DATETIME.validate_python(e.executed_at) if e.executed_at else None
    except ValidationError:
        executed_at = None
    if executed_at is not None and executed_at.tzinfo is None:
        executed_at = executed_at.replace(tzinfo=UTC)
    return {
        "execution_id": e.execution_id,
        "seq": e.seq,
        "client_order_id": text(e.client_order_id, 200),
        "account_id": text(e.account_id, 200),
        "symbol": text(e.symbol, 64),
        "side": text(e.side, 16),
        "kind": text(e.kind, 16),
        "quantity": number(e.quantity, QUANTITY_SCALE),
        "price": number(e.price, PRICE_SCALE),
        "reason": text(e.reason, 2000),
        "executed_at": executed_at,
        "raw": e.model_dump(mode="json"),
        "received_at": _now(),
        "problem": None,
    }


async def check_custodian_restart(
    uow: UnitOfWork, client: CustodianClient, custodian: str = DEFAULT_CUSTODIAN
) -> bool:
    """If the custodian's sequence went backwards (it restarted and lost its memory), rewind
    the cursor to 0; executions already stored are recognised by id and not applied twice."""
    cursor = await repo.lock_cursor(uow.session, custodian)
    if cursor is None:
        return False
    last = await client.last_seq()
    if last >= cursor.last_seq:
        return False
    log.warning(
        "custodian execution sequence went backwards (restarted?); rewinding the cursor",
        extra={"cursor": cursor.last_seq, "custodian_last_seq": last},
    )
    cursor.last_seq = 0
    cursor.updated_at = _now()
    return True


# --- reads ----------------------------------------------------------------------------------


@dataclass
class BlockView:
    order: Order
    allocations: list[Allocation]
    executions: list[Execution]


async def get_order(
    session: AsyncSession,
    tenant: str,
    client_order_id: str,
    *,
    allocation_limit: int = 1000,
    allocation_offset: int = 0,
) -> BlockView:
    """The tenant's block order with a page of its allocations and all its executions."""
    order = await repo.get_order(session, tenant, client_order_id)
    if order is None:
        raise NotFound(f"no order with client_order_id {client_order_id!r}")
    allocations = await repo.list_allocations(
        session,
        tenant,
        client_order_id=client_order_id,
        limit=allocation_limit,
        offset=allocation_offset,
    )
    executions = await repo.executions_of(session, tenant, client_order_id)
    return BlockView(order, allocations, executions)


async def get_allocation(session: AsyncSession, tenant: str, trade_id: uuid.UUID) -> Allocation:
    """The tenant's allocation of an approved trade (its block, status and share)."""
    allocation = await repo.get_allocation(session, tenant, trade_id)
    if allocation is None:
        raise NotFound(f"no approved trade with trade_id {trade_id}")
    return allocation


async def stats(
    session: AsyncSession, caller: Principal, custodian: str = DEFAULT_CUSTODIAN
) -> dict[str, Any]:
    """The caller's tenant's blocks and allocations by status and its blocks' executions by
    outcome; the custodian's own facts (executions of no known block, the poll cursor),
    which belong to no tenant, only to callers with the operations permission."""
    tenant = caller.tenant
    blocks = await repo.order_counts(session, tenant)
    allocations = await repo.allocation_counts(session, tenant)
    bookings = await repo.booking_counts(session, tenant)
    executions = await repo.execution_counts(session, tenant)
    operator = caller.can(Permission.OPERATE)
    cursor = await repo.get_cursor(session, custodian)

    def count(outcome: str | None = None, kind: str | None = None) -> int:
        return sum(
            n
            for (o, k), n in executions.items()
            if (outcome is None or o == outcome) and (kind is None or k == kind)
        )

    return {
        "blocks": {
            "total": sum(blocks.values()),
            "by_status": {s: blocks.get(s, 0) for s in ORDER_STATUSES},
            "sent_more_than_once": await repo.orders_sent_more_than_once(session, tenant),
            "done_unallocated": await repo.done_orders_unallocated(session, tenant),
        },
        "allocations": {
            "total": sum(allocations.values()),
            "by_status": {s: allocations.get(s, 0) for s in ALLOCATION_STATUSES},
            "booking": {s: bookings.get(s, 0) for s in BOOKING_STATUSES},
        },
        "executions": {
            "total": count(),
            "fills": count("applied", "fill"),
            "rejects": count("applied", "reject"),
            "invalid": count("invalid"),
            "overfills": await repo.refused_overfills(session, tenant),
            **({"orphans": await repo.orphan_executions(session)} if operator else {}),
        },
        "cursor": _cursor_view(cursor) if operator else None,
    }


def _cursor_view(cursor: PollCursor | None) -> dict[str, Any]:
    return {
        "last_seq": cursor.last_seq if cursor else 0,
        "updated_at": cursor.updated_at.isoformat() if cursor else None,
    }
