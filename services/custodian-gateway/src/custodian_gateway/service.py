"""custodian-gateway's rules: approved trades become orders, orders go to the custodian,
the custodian's executions come back as fills-received / order-rejected events.

Every order is persisted, with its client order id, before anything is sent. Sending marks
orders sent in the same transaction that locked them, after the custodian acknowledged them;
a crash in between resends the same client order ids, which the custodian deduplicates.
Executions are stored once (by execution id) in the transaction that applies them to their
order, publishes their events and advances the poll cursor.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from ballast_common.contracts.events import FillsReceivedV1, OrderRejectedV1, TradesApprovedV1
from ballast_common.errors import NotFound, PermanentMessageError
from ballast_common.telemetry import context_from_headers, current_trace_headers, tracer
from ballast_common.uow import UnitOfWork
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, SpanKind
from pydantic import TypeAdapter, ValidationError
from sqlmodel.ext.asyncio.session import AsyncSession

from custodian_gateway import repository as repo
from custodian_gateway.custodian import (
    CustodianClient,
    CustodianRefused,
    OrderRequest,
    RawExecution,
)
from custodian_gateway.orders import (
    ORDER_STATUSES,
    ExecutionProblem,
    OrderProgress,
    apply_fill,
    apply_reject,
    canonical,
    check_scale,
    client_order_id_for,
)
from custodian_gateway.tables import PRICE_SCALE, QUANTITY_SCALE, Execution, Order

log = logging.getLogger(__name__)

CURSOR_NAME = "custodian"
MAX_SPAN_LINKS = 64
# What the custodian accepts (see tools/custodian-sim): refuse earlier, with a clear reason.
_IDENTIFIER = re.compile(r"^\S(.*\S)?$")
_SYMBOL = re.compile(r"^[A-Za-z0-9.\-/]{1,32}$")
_DATETIME: TypeAdapter[datetime] = TypeAdapter(datetime)


def _now() -> datetime:
    return datetime.now(UTC)


def _fmt(value: Decimal) -> str:
    return format(canonical(value), "f")


def _trace_context(order: Order) -> Context | None:
    """The stored trace context of the work that created `order` (None: start a new trace)."""
    if not order.traceparent:
        return None
    carrier = {"traceparent": order.traceparent}
    if order.tracestate:
        carrier["tracestate"] = order.tracestate
    return context_from_headers(carrier)


# --- trades-approved -> orders --------------------------------------------------------------


async def record_approved_trades(
    uow: UnitOfWork, payload: TradesApprovedV1, tenant: str
) -> list[str]:
    """Persist one new order per approved trade; trades already ordered are left alone.
    Returns the client order ids created by this call."""
    _check_approved(payload)
    trace_headers = current_trace_headers()
    now = _now()
    rows = [
        {
            "client_order_id": client_order_id_for(t.trade_id),
            "trade_id": t.trade_id,
            "proposal_id": payload.proposal_id,
            "account_id": payload.account_id,
            "tenant": tenant,
            "symbol": t.symbol,
            "side": t.side,
            "quantity": t.quantity,
            "reference_price": t.estimated_price,
            "lot_ids": list(t.lot_ids),
            "sleeve_id": t.sleeve_id,
            "status": "new",
            "filled_quantity": Decimal(0),
            "filled_notional": Decimal(0),
            "times_sent": 0,
            "traceparent": trace_headers.get("traceparent"),
            "tracestate": trace_headers.get("tracestate"),
            "created_at": now,
            "updated_at": now,
        }
        for t in payload.trades
    ]
    created = await repo.insert_orders(uow.session, rows)
    if len(created) < len(rows):
        log.info(
            "trades already ordered were skipped",
            extra={"proposal_id": str(payload.proposal_id), "skipped": len(rows) - len(created)},
        )
    return created


def _check_approved(payload: TradesApprovedV1) -> None:
    if len(payload.account_id) > 128 or not _IDENTIFIER.match(payload.account_id):
        raise PermanentMessageError(
            f"account_id {payload.account_id[:140]!r} is not a valid custodian account id "
            "(1-128 characters, no leading or trailing spaces)"
        )
    seen: set[Any] = set()
    for i, t in enumerate(payload.trades):
        if t.trade_id in seen:
            raise PermanentMessageError(f"trades[{i}].trade_id {t.trade_id} appears twice")
        seen.add(t.trade_id)
        if not _SYMBOL.match(t.symbol):
            raise PermanentMessageError(
                f"trades[{i}].symbol {t.symbol!r} is not a valid custodian symbol "
                "(1-32 of A-Z, a-z, 0-9, '.', '-', '/')"
            )
        try:
            check_scale(t.quantity, QUANTITY_SCALE, f"trades[{i}].quantity")
            check_scale(t.estimated_price, PRICE_SCALE, f"trades[{i}].estimated_price")
        except ValueError as exc:
            raise PermanentMessageError(str(exc)) from None


# --- order sender ---------------------------------------------------------------------------


@dataclass
class SendOutcome:
    claimed: int = 0
    sent: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    unacknowledged: list[str] = field(default_factory=list)


async def send_new_orders(uow: UnitOfWork, client: CustodianClient, batch_size: int) -> SendOutcome:
    """Send one batch of new orders and mark them sent, in `uow`'s transaction.

    Raises CustodianUnavailable when the custodian cannot take them now: the caller rolls
    back (the orders stay new) and retries later with the same client order ids.
    """
    orders = await repo.claim_new_orders(uow.session, batch_size)
    outcome = SendOutcome(claimed=len(orders))
    if not orders:
        return outcome
    parent = _trace_context(orders[0])
    links = _links(orders[1:])
    with tracer().start_as_current_span(
        "custodian send orders",
        context=parent,
        kind=SpanKind.CLIENT,
        links=links,
        attributes={"ballast.orders": len(orders), "http.request.method": "POST"},
    ) as span:
        acknowledged, refused = await _submit(client, orders)
        span.set_attribute("ballast.orders_acknowledged", len(acknowledged))
        span.set_attribute("ballast.orders_refused", len(refused))
    by_id = {o.client_order_id: o for o in orders}
    outcome.sent = [i for i in by_id if i in acknowledged]
    await repo.mark_sent(uow.session, outcome.sent)
    for order, reason in refused:
        _refuse(uow, order, reason)
        outcome.refused.append(order.client_order_id)
    outcome.unacknowledged = [
        i for i in by_id if i not in acknowledged and i not in set(outcome.refused)
    ]
    if outcome.unacknowledged:
        log.warning(
            "custodian did not acknowledge some orders; they stay new and will be resent",
            extra={"client_order_ids": outcome.unacknowledged[:20]},
        )
    return outcome


def _links(orders: Sequence[Order]) -> list[Link]:
    links: list[Link] = []
    seen: set[str] = set()
    for order in orders:
        ctx = _trace_context(order)
        if ctx is None or order.traceparent in seen:
            continue
        seen.add(order.traceparent or "")
        span_context = trace.get_current_span(ctx).get_span_context()
        if span_context.is_valid:
            links.append(Link(span_context))
        if len(links) >= MAX_SPAN_LINKS:
            break
    return links


async def _submit(
    client: CustodianClient, orders: Sequence[Order]
) -> tuple[set[str], list[tuple[Order, str]]]:
    """POST the orders; if the custodian refuses the batch, find the culprits one by one."""
    headers = current_trace_headers()
    try:
        ack = await client.submit_orders([_request(o) for o in orders], headers=headers)
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
            ok, bad = await _submit(client, [order])
            acknowledged |= ok
            refused += bad
        return acknowledged, refused
    return set(ack.accepted) | set(ack.duplicates), []


def _request(order: Order) -> OrderRequest:
    return OrderRequest(
        client_order_id=order.client_order_id,
        account_id=order.account_id,
        symbol=order.symbol,
        side=order.side,
        quantity=_fmt(order.quantity),
        reference_price=_fmt(order.reference_price),
    )


def _refuse(uow: UnitOfWork, order: Order, detail: str) -> None:
    reason = f"custodian refused the order: {detail}"
    log.error(
        "custodian refused an order",
        extra={"client_order_id": order.client_order_id, "detail": detail},
    )
    order.status = "rejected"
    order.reject_reason = reason
    order.updated_at = _now()
    _publish_rejected(uow, order, order.quantity, reason)


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
    cursor: int = 0
    page_full: bool = False


async def poll_executions(uow: UnitOfWork, client: CustodianClient, page_size: int) -> PollOutcome:
    """Fetch the next page of executions and apply it, all in `uow`'s transaction."""
    cursor = await repo.lock_cursor(uow.session, CURSOR_NAME)
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
        uow.session, {str(e.client_order_id) for e in fresh if e.client_order_id is not None}
    )
    rows = []
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
                kind = _apply(uow, order, execution, row)
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
        rows.append(row)
    await repo.insert_executions(uow.session, rows)
    seen_max = max((e.seq for e in page.executions), default=start)
    cursor.last_seq = max(start, page.last_seq, seen_max)
    if cursor.last_seq != start:
        cursor.updated_at = _now()
    outcome.cursor = cursor.last_seq
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


def _apply(uow: UnitOfWork, order: Order, execution: RawExecution, row: dict[str, Any]) -> str:
    """Apply one execution to its (locked) order and publish its event. Returns its kind."""
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
    )
    if kind == "fill":
        quantity = _exact(execution.quantity, "quantity")
        price = _exact(execution.price, "price")
        executed_at = row["executed_at"]
        if executed_at is None:
            raise ExecutionProblem(f"fill has no valid executed_at: {execution.executed_at!r}")
        after = apply_fill(progress, quantity, price)
    else:
        after = apply_reject(progress, None if execution.reason is None else str(execution.reason))
    order.status = after.status
    order.filled_quantity = after.filled_quantity
    order.filled_notional = after.filled_notional
    order.average_price = after.average_price
    order.reject_reason = after.reject_reason
    order.updated_at = _now()
    if kind == "fill":
        with tracer().start_as_current_span(
            "fills-received create",
            context=_trace_context(order),
            kind=SpanKind.PRODUCER,
            attributes={
                "ballast.client_order_id": order.client_order_id,
                "ballast.execution_id": execution.execution_id,
            },
        ):
            uow.publish(
                FillsReceivedV1(
                    fill_id=execution.execution_id,
                    client_order_id=order.client_order_id,
                    trade_id=order.trade_id,
                    proposal_id=order.proposal_id,
                    account_id=order.account_id,
                    symbol=order.symbol,
                    side=order.side,
                    quantity=canonical(quantity),
                    price=canonical(price),
                    executed_at=executed_at,
                    lot_ids=list(order.lot_ids),
                    sleeve_id=order.sleeve_id,
                ),
                key=order.account_id,
                tenant=order.tenant,
            )
    else:
        _publish_rejected(uow, order, progress.remaining, after.reject_reason or "rejected")
    return kind


def _publish_rejected(uow: UnitOfWork, order: Order, quantity: Decimal, reason: str) -> None:
    with tracer().start_as_current_span(
        "order-rejected create",
        context=_trace_context(order),
        kind=SpanKind.PRODUCER,
        attributes={"ballast.client_order_id": order.client_order_id},
    ):
        uow.publish(
            OrderRejectedV1(
                client_order_id=order.client_order_id,
                trade_id=order.trade_id,
                proposal_id=order.proposal_id,
                account_id=order.account_id,
                symbol=order.symbol,
                side=order.side,
                quantity=canonical(quantity),
                reason=reason,
            ),
            key=order.account_id,
            tenant=order.tenant,
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


async def check_custodian_restart(uow: UnitOfWork, client: CustodianClient) -> bool:
    """If the custodian's sequence went backwards (it restarted and lost its memory), rewind
    the cursor to 0; executions already stored are recognised by id and not applied twice."""
    cursor = await repo.lock_cursor(uow.session, CURSOR_NAME)
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


async def get_order(session: AsyncSession, client_order_id: str) -> tuple[Order, list[Execution]]:
    order = await repo.get_order(session, client_order_id)
    if order is None:
        raise NotFound(f"no order with client_order_id {client_order_id!r}")
    return order, await repo.executions_of(session, client_order_id)


async def stats(session: AsyncSession) -> dict[str, Any]:
    by_status = await repo.order_counts(session)
    executions = await repo.execution_counts(session)
    cursor = await repo.get_cursor(session, CURSOR_NAME)

    def count(outcome: str | None = None, kind: str | None = None) -> int:
        return sum(
            n
            for (o, k), n in executions.items()
            if (outcome is None or o == outcome) and (kind is None or k == kind)
        )

    return {
        "orders": {
            "total": sum(by_status.values()),
            "by_status": {s: by_status.get(s, 0) for s in ORDER_STATUSES},
            "sent_more_than_once": await repo.orders_sent_more_than_once(session),
        },
        "executions": {
            "total": count(),
            "fills": count("applied", "fill"),
            "rejects": count("applied", "reject"),
            "orphans": count("orphan"),
            "invalid": count("invalid"),
        },
        "cursor": {
            "last_seq": cursor.last_seq if cursor else 0,
            "updated_at": cursor.updated_at.isoformat() if cursor else None,
        },
    }
