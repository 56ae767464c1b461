"""The simulated custodian's order book: in memory, driven by an injectable clock.

Every accepted order gets its executions planned at acceptance (split, price, reject, delay),
each with a due time. Executions are *released* (given the next sequence number) only once the
clock has passed their due time, so the public sequence is gap-free and increasing and no
execution is visible before its latency has elapsed.

Random decisions use one generator per order, seeded from ``(seed, client_order_id)``: the same
order gets the same fate whatever the order of arrival.
"""

from __future__ import annotations

import heapq
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from itertools import count
from typing import Literal

from custodian_sim.settings import SimSettings

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


@dataclass
class Order:
    """An accepted order and what has been released for it so far."""

    request: OrderRequest
    received_at: datetime
    times_submitted: int = 1
    filled_quantity: Decimal = Decimal(0)
    rejected: bool = False
    reject_reason: str | None = None
    planned_executions: int = 0
    released_executions: int = 0

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


@dataclass(order=True)
class _Planned:
    due: datetime
    tiebreak: int
    client_order_id: str = field(compare=False)
    piece: int = field(compare=False)
    kind: Literal["fill", "reject"] = field(compare=False)
    quantity: Decimal = field(compare=False)
    price: Decimal | None = field(compare=False)
    reason: str | None = field(compare=False)


@dataclass(frozen=True)
class SubmitResult:
    accepted: list[str]
    duplicates: list[str]


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
    """All simulator state. Not thread-safe: use it from one event loop."""

    def __init__(self, settings: SimSettings, clock: Clock = utc_now) -> None:
        self.settings = settings
        self.clock = clock
        self.reset()

    def reset(self) -> None:
        """Forget every order and execution."""
        self.orders: dict[str, Order] = {}
        self.executions: list[Execution] = []
        self._pending: list[_Planned] = []
        self._tiebreak = count()
        self.duplicate_submissions = 0

    # -- submission ---------------------------------------------------------------------------

    def submit(self, requests: list[OrderRequest]) -> SubmitResult:
        """Accept new orders and count resubmissions; all-or-nothing on conflict."""
        seen_in_batch: dict[str, OrderRequest] = {}
        for req in requests:
            prior = self.orders.get(req.client_order_id)
            earlier = prior.request if prior else seen_in_batch.get(req.client_order_id)
            if earlier is not None:
                diffs = _differences(earlier, req)
                if diffs:
                    raise OrderConflictError(req.client_order_id, diffs)
            else:
                seen_in_batch[req.client_order_id] = req

        now = self.clock()
        accepted: list[str] = []
        duplicates: list[str] = []
        for req in requests:
            existing = self.orders.get(req.client_order_id)
            if existing is not None:
                existing.times_submitted += 1
                self.duplicate_submissions += 1
                duplicates.append(req.client_order_id)
                continue
            order = Order(request=req, received_at=now)
            self.orders[req.client_order_id] = order
            self._plan(order, now)
            accepted.append(req.client_order_id)
        return SubmitResult(accepted=accepted, duplicates=duplicates)

    def _delay(self, rng: random.Random) -> timedelta:
        s = self.settings
        return timedelta(milliseconds=s.latency_ms + rng.uniform(0, s.latency_jitter_ms))

    def _plan(self, order: Order, now: datetime) -> None:
        s = self.settings
        req = order.request
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
            self._push(due, req.client_order_id, 0, "reject", req.quantity, None, reason)
            order.planned_executions = 1
            return
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
        for i, (qty, when) in enumerate(zip(parts, dues, strict=True)):
            if cancel_rest and i == len(parts) - 1:
                reason = "rest of the order cancelled: no more liquidity (simulated)"
                self._push(when, req.client_order_id, i, "reject", qty, None, reason)
            else:
                self._push(when, req.client_order_id, i, "fill", qty, price, None)
        order.planned_executions = len(parts)

    def _push(
        self,
        due: datetime,
        client_order_id: str,
        piece: int,
        kind: Literal["fill", "reject"],
        quantity: Decimal,
        price: Decimal | None,
        reason: str | None,
    ) -> None:
        heapq.heappush(
            self._pending,
            _Planned(
                due=due,
                tiebreak=next(self._tiebreak),
                client_order_id=client_order_id,
                piece=piece,
                kind=kind,
                quantity=quantity,
                price=price,
                reason=reason,
            ),
        )

    # -- release and queries ------------------------------------------------------------------

    def release_due(self) -> int:
        """Give sequence numbers to every planned execution whose time has come."""
        now = self.clock()
        released = 0
        while self._pending and self._pending[0].due <= now:
            p = heapq.heappop(self._pending)
            order = self.orders[p.client_order_id]
            req = order.request
            seq = len(self.executions) + 1
            self.executions.append(
                Execution(
                    seq=seq,
                    execution_id=f"{p.client_order_id}-x{p.piece + 1}",
                    client_order_id=p.client_order_id,
                    account_id=req.account_id,
                    symbol=req.symbol,
                    side=req.side,
                    kind=p.kind,
                    quantity=p.quantity,
                    price=p.price,
                    reason=p.reason,
                    executed_at=p.due,
                )
            )
            if p.kind == "reject":
                order.rejected = True
                order.reject_reason = p.reason
            else:
                order.filled_quantity += p.quantity
            order.released_executions += 1
            released += 1
        return released

    def executions_after(self, after: int, limit: int) -> tuple[list[Execution], int]:
        """Released executions with ``seq > after``, at most ``limit``, and the next cursor."""
        self.release_due()
        page = self.executions[after : after + limit]
        last_seq = page[-1].seq if page else after
        return page, last_seq

    def get_order(self, client_order_id: str) -> Order | None:
        self.release_due()
        return self.orders.get(client_order_id)

    def stats(self) -> dict[str, object]:
        self.release_due()
        by_times = Counter(o.times_submitted for o in self.orders.values())
        return {
            "orders_received": len(self.orders),
            "duplicate_submissions": self.duplicate_submissions,
            "fills": sum(1 for e in self.executions if e.kind == "fill"),
            "rejects": sum(1 for e in self.executions if e.kind == "reject"),
            "pending_executions": len(self._pending),
            "last_seq": len(self.executions),
            "orders_by_times_submitted": {str(k): by_times[k] for k in sorted(by_times)},
        }


def _differences(a: OrderRequest, b: OrderRequest) -> list[str]:
    return [
        name
        for name in ("account_id", "symbol", "side", "quantity")
        if getattr(a, name) != getattr(b, name)
    ]
