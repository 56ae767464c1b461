"""What reporting-svc reads of holdings-reconciled and drift-detected: views its
subscriptions decode the payloads into instead of the contract (``Subscription(view=...)``),
for every version.

A snapshot carries every lot of the account; the contract makes a Decimal of each number
and a model of each lot. The view keeps the fields stored here, positions and lots as
plain dicts and their numbers as the decimal strings they travel as (checked against the
contract's pattern, their sign included), which the database turns into numbers.
Everything else of the payload (household, loss sales, realized gains, sleeve cash) is
not read.

A drift-detected event carries every security's drift; reporting stores only the account's
verdict, so the securities are not validated (webhooks send the payload as published).
"""

from __future__ import annotations

import uuid
from datetime import date
from typing import NotRequired

from ballast_common.contracts.events import HoldingsCause
from ballast_common.contracts.types import Money, Weight
from ballast_common.contracts.wire_views import LotView, UnsignedText
from pydantic import BaseModel, ConfigDict, Field
from typing_extensions import TypedDict


class PositionView(TypedDict):
    symbol: str
    quantity: UnsignedText
    cost_basis: UnsignedText
    lots: NotRequired[list[LotView]]  # none in v1


class HoldingsView(BaseModel):
    """holdings-reconciled (v1 and v2) as reporting-svc stores it."""

    model_config = ConfigDict(extra="ignore")

    account_id: str
    as_of: date
    cash: Money
    positions: list[PositionView]
    cause: HoldingsCause
    fill_ids: list[str] = Field(default_factory=list)


class DriftView(BaseModel):
    """drift-detected as reporting-svc stores it: the verdict, not each security's drift."""

    model_config = ConfigDict(extra="ignore")

    run_id: uuid.UUID
    account_id: str
    model_id: str
    model_version: int
    total_value: Money
    max_abs_drift: Weight
    tolerance: Weight
    out_of_tolerance: bool
