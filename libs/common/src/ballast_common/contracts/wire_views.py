"""Light views of large payloads, for consumers that store what they read as it travels.

A holdings snapshot carries every lot of an account; the contract makes a Decimal of each
number and a model of each lot. A consumer that only stores the lots again (rebalance-svc's
and reporting-svc's read models) decodes into these instead (`Subscription(view=...)`): lots
stay plain dicts and their numbers the decimal text they travel as, checked against the
contract's wire form of a decimal (`contracts.types`), sign included.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, NotRequired

from pydantic import StringConstraints
from typing_extensions import TypedDict

# Digits and an optional point; one that may not be negative may still be a negative zero (a
# Decimal's "-0.00" is >= 0).
UnsignedText = Annotated[str, StringConstraints(pattern=r"^(\d+(\.\d+)?|-0+(\.0+)?)$")]
SignedText = Annotated[str, StringConstraints(pattern=r"^-?\d+(\.\d+)?$")]


class LotView(TypedDict):
    """One lot of a holdings snapshot (v2), its numbers as text."""

    lot_id: str
    quantity: UnsignedText
    acquired: date
    cost_basis: UnsignedText
    wash_adjustment: NotRequired[SignedText]
    sleeve_id: NotRequired[str | None]
