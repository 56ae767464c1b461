"""The simulated custodian's order book: its rules, kept in its store (store.py), driven by
an injectable clock.

Every accepted order gets its executions planned at acceptance (split, price, reject, delay),
each with a due time, and stored with the order in one transaction. Executions are *released*
(given the next sequence number) only once the clock has passed their due time, so the public
sequence is gap-free and increasing and no execution is visible before its latency has
elapsed. Everything is in the store, so a restarted simulator goes on where it stopped.

Random decisions use one generator per order, seeded from ``(seed, client_order_id)``: the same
order gets the same fate whatever the order of arrival.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Literal, cast

from custodian_sim.settings import SimSettings
from custodian_sim.store import BookStore, PlannedExecution, ReleasedExecution, StoredOrder

Side = Literal["buy", "sell"]
Clock = Callable[[], datetime]

CENT = Decimal("0.01")
BPS = Decimal(10_000)


def utc_now() -> datetime:
    """The real clock."""
    return datetime.now(UTC)


class OrderConflictError(Exception):
    """A client order id was reused for an order with different terms."""

    def __init__(self, client_order_id: str, differences: list[str]) -> None:
        self.client_order_id = client_order_id
        self.differences = differences
        super().__init__(
            f"client_order_id {client_order_id!r} was already used for a different order "
            f"(differs in: {', '.join(differences)})"
        )


@dataclass(frozen=True)
class OrderRequest:
    """One order as submitted."""

    client_order_id: str
    account_id: str
    symbol: str
    side: Side
    quantity: Decimal
    reference_price: Decimal
    # Marked by the sender as a possible resend (FIX PossResend): it may have sent it before.
    possible_resend: bool = False


@dataclass
class Order:
    """An accepted order and what has been released for it so far."""

    request: OrderRequest
    received_at: datetime
    times_submitted: int = 1
    filled_quantity: Decimal = Decimal(0)
    filled_value: Decimal = Decimal(0)  # quantity x price of its fills
    rejected: bool = False
    reject_reason: str | None = None
    released_executions: int = 0
    possible_resends: int = 0
    # its rest was cancelled (by a cancel request, or after fills), not the order rejected
    canceled: bool = False
    channel: str = "http"  # how it came: http or fix

    @property
    def status(self) -> str:
        if self.rejected:
            return "rejected"
        if self.filled_quantity == 0:
            return "accepted"
        if self.filled_quantity < self.request.quantity:
            return "partially_filled"
        return "filled"


@dataclass(frozen=True)
class Execution:
    """A released fill or reject."""

    seq: int
    execution_id: str
    client_order_id: str
    account_id: str
    symbol: str
    side: Side
    kind: Literal["fill", "reject"]
    quantity: Decimal
    price: Decimal | None
    reason: str | None
    executed_at: datetime


@dataclass(frozen=True)
class SubmitResult:
    accepted: list[str]
    duplicates: list[str]


@dataclass(frozen=True)
class CancelResult:
    """What a cancel request did: `canceled` (the rest will be reported as cancelled),
    `unknown` (no such order) or `too_late` (nothing of it is left to execute)."""

    outcome: Literal["canceled", "unknown", "too_late"]
    order: Order | None


def split_quantity(quantity: Decimal, pieces: int, rng: random.Random) -> list[Decimal]:
    """Split ``quantity`` into up to ``pieces`` positive parts that sum to it exactly.

    A whole-share quantity splits into whole shares; a fractional one splits in units of its
    own last decimal place. Fewer parts are returned when the quantity has too few units.
    """
    if not quantity.is_finite() or quantity <= 0:
        raise ValueError(f"quantity must be a positive finite decimal, got {quantity}")
    exponent = 0
    if quantity != quantity.to_integral_value():
        exp = quantity.normalize().as_tuple().exponent
        assert isinstance(exp, int)  # finite, checked above
        exponent = exp
    unit = Decimal(1).scaleb(exponent)
    units = int(quantity.scaleb(-exponent))
    pieces = max(1, min(pieces, units))
    cuts = sorted(rng.sample(range(1, units), pieces - 1)) if pieces > 1 else []
    bounds = [0, *cuts, units]
    return [(bounds[i + 1] - bounds[i]) * unit for i in range(pieces)]


def fill_price(reference_price: Decimal, side: Side, slippage_bps: Decimal) -> Decimal:
    """The reference price moved against the client by ``slippage_bps``, rounded to cents."""
    move = reference_price * slippage_bps / BPS
    raw = reference_price + move if side == "buy" else reference_price - move
    price = raw.quantize(CENT, rounding=ROUND_HALF_UP)
    return max(price, CENT)


class OrderBook:
    """All simulator state, kept in ``store``. Not thread-safe: use it from one event loop."""

    def __init__(
        self, settings: SimSettings, clock: Clock = utc_now, store: BookStore | None = None
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.store = store or BookStore(settings.store_path)

    def reset(self) -> None:
        """Forget every order and execution."""
        self.store.reset()

    def close(self) -> None:
        self.store.close()

    # -- submission ---------------------------------------------------------------------------

    def submit(self, requests: list[OrderRequest], channel: str = "http") -> SubmitResult:
        """Accept new orders and count resubmissions, in one transaction; all-or-nothing on
        conflict. `channel` says how they came (http or fix)."""
        with self.store.transaction():
            known = self.store.orders_by_id([r.client_order_id for r in requests])
            seen_in_batch: dict[str, OrderRequest] = {}
            for req in requests:
                prior = known.get(req.client_order_id)
                earlier = _terms(prior) if prior else seen_in_batch.get(req.client_order_id)
                if earlier is not None:
                    diffs = _differences(earlier, req)
                    if diffs:
                        raise OrderConflictError(req.client_order_id, diffs)
                else:
                    seen_in_batch[req.client_order_id] = req

            now = self.clock()
            accepted: list[str] = []
            accepted_ids: set[str] = set()
            duplicates: list[tuple[str, bool]] = []
            new_orders: list[StoredOrder] = []
            planned: list[PlannedExecution] = []
            for req in requests:
                if req.client_order_id in known or req.client_order_id in accepted_ids:
                    duplicates.append((req.client_order_id, req.possible_resend))
                    continue
                new_orders.append(_stored(req, now, channel))
                planned += self._plan(req, now)
                accepted.append(req.client_order_id)
                accepted_ids.add(req.client_order_id)
            self.store.insert_orders(new_orders, planned)
            self.store.count_resubmissions(duplicates)
        return SubmitResult(accepted=accepted, duplicates=[coid for coid, _ in duplicates])

    def _delay(self, rng: random.Random) -> timedelta:
        s = self.settings
        return timedelta(milliseconds=s.latency_ms + rng.uniform(0, s.latency_jitter_ms))

    def _plan(self, req: OrderRequest, now: datetime) -> list[PlannedExecution]:
        """The order's executions: split, price, reject and delays, drawn from its own seed."""
        s = self.settings
        rng = random.Random(f"{s.seed}:{req.client_order_id}")
        due = now + self._delay(rng)
        reject_draw = rng.random()
        split_draw = rng.random()
        reason: str | None = None
        if req.symbol.upper() in s.reject_symbols:
            reason = f"symbol {req.symbol} is not tradable at this custodian"
        elif reject_draw < s.reject_probability:
            reason = "rejected by the custodian (simulated random reject)"
        if reason is not None:
            return [
                PlannedExecution(req.client_order_id, 0, due, "reject", req.quantity, None, reason)
            ]
        pieces = 1
        if s.max_fills > 1 and split_draw < s.partial_fill_probability:
            pieces = rng.randint(2, s.max_fills)
        price = fill_price(req.reference_price, req.side, s.slippage_bps)
        parts = split_quantity(req.quantity, pieces, rng)
        dues = [due]
        for _ in parts[1:]:
            dues.append(dues[-1] + self._delay(rng))
        # Drawn last, so the other decisions stay what they were without this setting.
        cancel_rest = (
            len(parts) > 1
            and s.cancel_rest_probability > 0
            and rng.random() < s.cancel_rest_probability
        )
        planned = []
        for i, (qty, when) in enumerate(zip(parts, dues, strict=True)):
            if cancel_rest and i == len(parts) - 1:
                reason = "rest of the order cancelled: no more liquidity (simulated)"
                planned.append(
                    PlannedExecution(req.client_order_id, i, when, "reject", qty, None, reason)
                )
            else:
                planned.append(
                    PlannedExecution(req.client_order_id, i, when, "fill", qty, price, None)
                )
        return planned

    def cancel(self, client_order_id: str, cancel_id: str) -> CancelResult:
        """Cancel what is left of an order: its executions not yet released become one
        reject, due now, naming the cancel request (one transaction)."""
        now = self.clock()
        self.store.release_due(now)
        with self.store.transaction():
            rest = self.store.unreleased_pieces(client_order_id)
            if rest:
                reason = f"canceled at the client's request ({cancel_id})"
                self.store.replace_unreleased(
                    client_order_id,
                    PlannedExecution(
                        client_order_id,
                        rest[0].piece,
                        now,
                        "reject",
                        sum((p.quantity for p in rest), Decimal(0)),
                        None,
                        reason,
                        cancel_id,
                    ),
                )
        order = self.get_order(client_order_id)
        if order is None:
            return CancelResult("unknown", None)
        return CancelResult("canceled" if rest else "too_late", order)

    # -- release and queries ------------------------------------------------------------------

    def release_due(self) -> int:
        """Give sequence numbers to every planned execution whose time has come."""
        return self.store.release_due(self.clock())

    def executions_after(self, after: int, limit: int) -> tuple[list[Execution], int]:
        """Released executions with ``seq > after``, at most ``limit``, and the next cursor."""
        self.release_due()
        page = [_execution(e) for e in self.store.executions_after(after, limit)]
        last_seq = page[-1].seq if page else after
        return page, last_seq

    def get_order(self, client_order_id: str) -> Order | None:
        self.release_due()
        found = self.store.order_with_executions(client_order_id)
        if found is None:
            return None
        stored, released = found
        order = Order(
            request=_terms(stored),
            received_at=stored.received_at,
            times_submitted=stored.times_submitted,
            released_executions=len(released),
            possible_resends=stored.possible_resends,
            channel=stored.channel,
        )
        for e in released:
            if e.kind == "reject":
                order.rejected = True
                order.reject_reason = e.reason
                order.canceled = e.cancel_id is not None or order.filled_quantity > 0
            else:
                order.filled_quantity += e.quantity
                order.filled_value += e.quantity * (e.price or Decimal(0))
        return order

    def stats(self) -> dict[str, Any]:
        self.release_due()
        return self.store.stats()


def _terms(stored: StoredOrder) -> OrderRequest:
    return OrderRequest(
        client_order_id=stored.client_order_id,
        account_id=stored.account_id,
        symbol=stored.symbol,
        side=cast(Side, stored.side),
        quantity=stored.quantity,
        reference_price=stored.reference_price,
    )


def _stored(req: OrderRequest, now: datetime, channel: str) -> StoredOrder:
    return StoredOrder(
        client_order_id=req.client_order_id,
        account_id=req.account_id,
        symbol=req.symbol,
        side=req.side,
        quantity=req.quantity,
        reference_price=req.reference_price,
        received_at=now,
        times_submitted=1,
        possible_resends=int(req.possible_resend),
        channel=channel,
    )


def _execution(e: ReleasedExecution) -> Execution:
    return Execution(
        seq=e.seq,
        execution_id=f"{e.client_order_id}-x{e.piece + 1}",
        client_order_id=e.client_order_id,
        account_id=e.account_id,
        symbol=e.symbol,
        side=cast(Side, e.side),
        kind=cast(Literal["fill", "reject"], e.kind),
        quantity=e.quantity,
        price=e.price,
        reason=e.reason,
        executed_at=e.executed_at,
    )


def _differences(a: OrderRequest, b: OrderRequest) -> list[str]:
    return [
        name
        for name in ("account_id", "symbol", "side", "quantity")
        if getattr(a, name) != getattr(b, name)
    ]
