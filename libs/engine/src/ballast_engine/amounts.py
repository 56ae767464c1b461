"""Amounts at the engine's edges: floats to exact ``Decimal`` money and quantities, share
increments, and how amounts read in sentences. Shared by the core, the tax-aware layer and
harvesting, so each conversion is written once."""

from __future__ import annotations

import math
from decimal import Decimal

CENT = Decimal("0.01")


def cents(x: float) -> Decimal:
    """``x`` dollars rounded to cents, as ``Decimal(repr(round(x, 2))).quantize(CENT)``
    gives it (value and exponent), only faster below $1e12."""
    r = round(float(x), 2) + 0.0
    if -1e12 < r < 1e12:
        # r is the double nearest a whole number of cents and doubles this small are far
        # closer together than a cent: "%.2f" gives exactly those cents, the same Decimal
        # as below (a test compares the two)
        return Decimal(format(r, ".2f"))
    return Decimal(repr(r)).quantize(CENT)


def decimal_of(x: float) -> Decimal:
    """The float as the tax engine's exact ``Decimal`` (its shortest repr; a whole number
    without exponent)."""
    d = Decimal(repr(float(x)))
    return d.quantize(Decimal(1)) if d == d.to_integral_value() else d


def share_unit(sleeve_fractional: bool, security_fractional: bool, decimals: int) -> float:
    """The share increment of a trade: ``10**-decimals`` when both the sleeve and the
    security allow fractions, else a whole share."""
    return 10.0**-decimals if (sleeve_fractional and security_fractional) else 1.0


def floor_to_unit(x: float, unit: float) -> float:
    """``x`` shares rounded down to whole increments of ``unit`` (a hair of float error
    forgiven)."""
    if unit == 1.0:
        return float(math.floor(x + 1e-9))
    return math.floor(x / unit + 1e-9) * unit


def floor_decimal(x: Decimal, unit: Decimal) -> Decimal:
    """``x`` rounded down to whole increments of ``unit``, exactly."""
    return (x / unit).to_integral_value(rounding="ROUND_FLOOR") * unit


def usd(x: Decimal) -> str:
    """An amount as a sentence shows it: ``$1,234.50``, ``-$3.00``."""
    return f"-${-x:,.2f}" if x < 0 else f"${x:,.2f}"


def number_text(q: Decimal) -> str:
    """A quantity without exponent or trailing zeros (``12.5``, ``100``)."""
    return format(q.normalize(), "f")


def shares_text(q: Decimal) -> str:
    """A share count as a sentence shows it: ``1 share``, ``12.5 shares``."""
    return number_text(q) + (" share" if q == 1 else " shares")
