"""Pure rule: how a done block's filled quantity is shared among its allocations.

No I/O here. Every allocation gets the block's average price; the shares go pro rata to
what each allocation asked, with fair rounding (the largest remainder method):

1. The unit is one share when the block's allocations asked whole shares, else the ledger's
   smallest quantity (10^-8 share). Every ask and the filled quantity are whole units.
2. Each allocation first gets its exact pro-rata share `filled x asked / total asked`
   rounded down to the unit.
3. The units left over go one each, in this order: the largest fractional remainder of the
   exact share first; on equal remainders the larger ask first; then the smaller trade id.

So the allocations add up to exactly the filled quantity, none is below zero or above its
ask (a remainder unit only goes to an allocation whose exact share was not yet reached), a
fully filled block gives everyone exactly what they asked, and the same input always gives
the same result, whatever the order of the asks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from custodian_gateway.tables import QUANTITY_SCALE

WHOLE_SHARE = Decimal(1)
SMALLEST_QUANTITY = Decimal(1).scaleb(-QUANTITY_SCALE)


class AllocationProblem(Exception):
    """The filled quantity cannot be shared under the rule (more than asked, not in units)."""


@dataclass(frozen=True)
class Ask:
    """What one allocation asked of the block; `trade_id` breaks the last ties."""

    trade_id: str
    quantity: Decimal


def share_unit(whole_shares: bool) -> Decimal:
    """The unit a block's fills are shared in."""
    return WHOLE_SHARE if whole_shares else SMALLEST_QUANTITY


def units_of(quantity: Decimal, unit: Decimal, what: str) -> int:
    """`quantity` as a whole number of `unit`s; AllocationProblem if it is not one."""
    if not quantity.is_finite():
        raise AllocationProblem(f"{what} {quantity} is not a finite number")
    count, rest = divmod(quantity, unit)
    if rest != 0:
        raise AllocationProblem(f"{what} {quantity:f} is not a whole number of {unit:f} shares")
    return int(count)


def allocate(filled: Decimal, asks: Sequence[Ask], unit: Decimal) -> list[Decimal]:
    """The filled quantity of each allocation, in the order of `asks`.

    Raises AllocationProblem if `filled` is negative, more than the asks add up to, or not
    a whole number of `unit`s, or if an ask is not positive or not in whole units.
    """
    if not asks:
        raise AllocationProblem("a block without allocations cannot be allocated")
    asked = [units_of(a.quantity, unit, f"trade {a.trade_id} quantity") for a in asks]
    if any(n <= 0 for n in asked):
        raise AllocationProblem("every allocation must ask a positive quantity")
    total = sum(asked)
    available = units_of(filled, unit, "filled quantity")
    if available < 0:
        raise AllocationProblem(f"filled quantity {filled:f} is negative")
    if available > total:
        raise AllocationProblem(
            f"overfill: {filled:f} filled but the allocations asked {total * unit:f}"
        )
    # Exact shares as integers: base units and the remainder's numerator over `total`.
    base = [available * n // total for n in asked]
    remainders = [available * n % total for n in asked]
    left = available - sum(base)
    order = sorted(range(len(asks)), key=lambda i: (-remainders[i], -asked[i], asks[i].trade_id))
    for i in order[:left]:
        base[i] += 1
    return [n * unit for n in base]
