"""Pure order rules: client order ids and how executions move a (block) order's status.

No I/O here. Quantities and prices are exact Decimals; the average price is the exact
filled notional divided by the filled quantity, rounded once to PRICE_SCALE places.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Literal

from custodian_gateway.tables import PRICE_SCALE, QUANTITY_SCALE

OrderStatus = Literal["new", "sent", "partially_filled", "filled", "rejected"]
ORDER_STATUSES: tuple[OrderStatus, ...] = ("new", "sent", "partially_filled", "filled", "rejected")
DONE_STATUSES = frozenset({"filled", "rejected"})
AllocationStatus = Literal["pending", "blocked", "filled", "partially_filled", "rejected"]
ALLOCATION_STATUSES: tuple[AllocationStatus, ...] = (
    "pending",
    "blocked",
    "filled",
    "partially_filled",
    "rejected",
)
# An allocation's share told to the custodian: pending (to send), booked, refused.
BOOKING_STATUSES = ("pending", "booked", "refused")
# A block's client order id is "BLK-" and the smallest trade id of its allocations (32 hex
# digits; made by the repository's blocking statement): a trade is in one block only. Orders
# stored before block orders were one per trade: "BAL-" and the trade id.
_PRICE_QUANTUM = Decimal(1).scaleb(-PRICE_SCALE)


class ExecutionProblem(Exception):
    """An execution that cannot be applied to its order (overfill, fill after reject...)."""


def allocation_fill_id(trade_id: uuid.UUID) -> str:
    """The fill id of a trade's share of a block: `F-` and the trade id (a trade is in one
    block only, so it has one share). The same allocation always gets the same id; short
    enough that its lot's id, `fill-<fill id>`, fits the custodian files' 64 characters."""
    return f"F-{trade_id.hex}"


def canonical(value: Decimal) -> Decimal:
    """The same number without trailing zeros (10.00000000 -> 10), for the wire."""
    return value.normalize() if value.is_finite() else value


def decimal_places(value: Decimal) -> int:
    """How many decimal places `value` really has (trailing zeros do not count)."""
    exponent = value.normalize().as_tuple().exponent
    if not isinstance(exponent, int):
        raise ValueError(f"{value} is not a finite number")
    return max(0, -exponent)


def check_scale(value: Decimal, places: int, what: str) -> None:
    """Refuse values with more decimal places than the ledger keeps (no silent rounding)."""
    if not value.is_finite():
        raise ValueError(f"{what} {value} is not a finite number")
    if decimal_places(value) > places:
        raise ValueError(f"{what} {value:f} has more than {places} decimal places")


@dataclass(frozen=True)
class OrderProgress:
    """What an order has become at the custodian so far."""

    quantity: Decimal
    status: OrderStatus
    filled_quantity: Decimal = Decimal(0)
    filled_notional: Decimal = Decimal(0)
    reject_reason: str | None = None
    # Every allocation asked whole shares: a fill must be whole shares to be shared.
    whole_shares: bool = False

    @property
    def remaining(self) -> Decimal:
        return self.quantity - self.filled_quantity

    @property
    def average_price(self) -> Decimal | None:
        if self.filled_quantity == 0:
            return None
        return (self.filled_notional / self.filled_quantity).quantize(
            _PRICE_QUANTUM, rounding=ROUND_HALF_EVEN
        )


def apply_fill(progress: OrderProgress, quantity: Decimal, price: Decimal) -> OrderProgress:
    """The order after a fill of `quantity` at `price`; raises ExecutionProblem if impossible."""
    if quantity <= 0:
        raise ExecutionProblem(f"fill quantity must be positive, got {quantity}")
    if price <= 0:
        raise ExecutionProblem(f"fill price must be positive, got {price}")
    try:
        check_scale(quantity, QUANTITY_SCALE, "fill quantity")
        check_scale(price, PRICE_SCALE, "fill price")
    except ValueError as exc:
        raise ExecutionProblem(str(exc)) from None
    if progress.whole_shares and quantity != quantity.to_integral_value():
        raise ExecutionProblem(
            f"fill quantity {quantity:f} is not whole shares, but the order is for whole shares "
            "only (its allocations asked whole shares)"
        )
    if progress.status == "rejected":
        raise ExecutionProblem("fill for an order the custodian already rejected")
    if progress.status == "filled":
        raise ExecutionProblem(
            f"overfill: fill of {canonical(quantity):f} for an order that is already "
            "completely filled"
        )
    filled = progress.filled_quantity + quantity
    if filled > progress.quantity:
        raise ExecutionProblem(
            f"overfill: fill of {canonical(quantity):f} would make {canonical(filled):f} filled "
            f"of an order for {canonical(progress.quantity):f}"
        )
    return replace(
        progress,
        status="filled" if filled == progress.quantity else "partially_filled",
        filled_quantity=filled,
        filled_notional=progress.filled_notional + quantity * price,
    )


def apply_reject(progress: OrderProgress, reason: str | None) -> OrderProgress:
    """The order after the custodian rejected (the rest of) it."""
    if progress.status in ("filled", "rejected"):
        raise ExecutionProblem(f"reject for an order that is already {progress.status}")
    return replace(progress, status="rejected", reject_reason=reason or "rejected by the custodian")
