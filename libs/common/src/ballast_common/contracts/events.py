"""Payload models, one class per (event type, version). Consumers ignore unknown fields.

Changing a published version incompatibly (removing or retyping a field, adding a required
one) fails `tests/test_contracts.py`: add a new version instead.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ballast_common.contracts.types import (
    Money,
    NonNegativeMoney,
    PositiveQuantity,
    Price,
    Quantity,
    SignedWeight,
    Weight,
)

Side = Literal["buy", "sell"]


class Payload(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


# --- model-hub-svc --------------------------------------------------------------------------


class SecurityV1(Payload):
    symbol: str = Field(min_length=1, max_length=16)
    name: str
    asset_class: str
    sector: str
    price: Price
    fractional_eligible: bool = False
    cusip: str | None = None


class SecuritiesChangedV1(Payload):
    """Securities added to or updated in the security master (prices included)."""

    securities: list[SecurityV1] = Field(min_length=1)


class ModelTargetV1(Payload):
    symbol: str
    weight: Weight


class ModelChangedV1(Payload):
    """A model manager published a new version of a model."""

    model_id: str
    name: str
    version: int = Field(ge=1)
    targets: list[ModelTargetV1] = Field(min_length=1)
    changed_by: str


# --- account-svc ----------------------------------------------------------------------------


class AccountChangedV1(Payload):
    """An account was opened or its model, status or approval policy changed."""

    account_id: str
    household_id: str
    name: str
    account_type: Literal["taxable", "ira"]
    model_id: str | None
    status: Literal["active", "suspended", "closed"]
    auto_approve: bool


class TradeV1(Payload):
    trade_id: uuid.UUID
    symbol: str
    side: Side
    quantity: PositiveQuantity
    estimated_price: Price
    estimated_value: NonNegativeMoney
    reason: str = Field(description="reason code: drift, model-change, restriction, cash-need...")
    explanation: str = Field(description="a plain-English sentence a client could read")
    sleeve_id: str | None = Field(default=None, description="the sleeve the trade belongs to")
    lot_ids: list[str] = Field(
        default_factory=list, description="sells: the tax lots to relieve, in order (empty: method)"
    )
    estimated_tax: Money | None = Field(
        default=None, description="sells: estimated tax on the realized gain (negative: saving)"
    )


class TradesApprovedV1(Payload):
    """Proposed trades were approved (automatically by policy, or by a person)."""

    proposal_id: uuid.UUID
    account_id: str
    approved_by: str
    trades: list[TradeV1] = Field(min_length=1)


class ProposalRejectedV1(Payload):
    """A person rejected proposed trades; none of them will be sent."""

    proposal_id: uuid.UUID
    account_id: str
    rejected_by: str
    reason: str


# --- rebalance-svc --------------------------------------------------------------------------


class SecurityDriftV1(Payload):
    symbol: str
    target_weight: Weight
    current_weight: Weight
    drift: SignedWeight


class DriftDetectedV1(Payload):
    """An account's drift from its model was measured by a rebalance run."""

    run_id: uuid.UUID
    account_id: str
    model_id: str
    model_version: int
    total_value: Money
    max_abs_drift: Weight
    tolerance: Weight
    out_of_tolerance: bool
    securities: list[SecurityDriftV1]


class TradesProposedV1(Payload):
    """A rebalance run proposes trades for one account."""

    proposal_id: uuid.UUID
    run_id: uuid.UUID
    account_id: str
    model_id: str
    model_version: int
    trades: list[TradeV1] = Field(min_length=1)
    cash_before: Money
    cash_after_estimated: Money


# --- custodian-gateway ----------------------------------------------------------------------


class FillsReceivedV1(Payload):
    """The custodian executed (part of) an order."""

    fill_id: str = Field(description="the custodian's execution id, unique")
    client_order_id: str
    trade_id: uuid.UUID
    proposal_id: uuid.UUID
    account_id: str
    symbol: str
    side: Side
    quantity: PositiveQuantity
    price: Price
    executed_at: datetime
    fees: NonNegativeMoney = Field(
        default=Decimal("0"), description="commission and fees; adjust basis or proceeds"
    )
    lot_ids: list[str] = Field(
        default_factory=list, description="sells: the tax lots the order named, in order"
    )
    sleeve_id: str | None = None


class OrderRejectedV1(Payload):
    """The custodian rejected an order; nothing of it was executed."""

    client_order_id: str
    trade_id: uuid.UUID
    proposal_id: uuid.UUID
    account_id: str
    symbol: str
    side: Side
    quantity: PositiveQuantity
    reason: str


# --- taxlot-svc -----------------------------------------------------------------------------


class PositionV1(Payload):
    symbol: str
    quantity: Quantity
    cost_basis: NonNegativeMoney


class HoldingsReconciledV1(Payload):
    """The book of record's holdings of an account after a change (opening balance, fills)."""

    account_id: str
    as_of: date
    cash: Money
    positions: list[PositionV1]
    cause: Literal["opening-balance", "fills"]
    fill_ids: list[str] = Field(default_factory=list)


class LotV1(Payload):
    lot_id: str
    quantity: PositiveQuantity
    acquired: date = Field(description="start of the holding period (wash sales carry it back)")
    cost_basis: NonNegativeMoney = Field(description="total basis, wash-sale adjustments included")
    wash_adjustment: Money = Field(default=Decimal("0"), description="disallowed loss added")
    sleeve_id: str | None = None


class PositionV2(Payload):
    symbol: str
    quantity: Quantity
    cost_basis: NonNegativeMoney
    lots: list[LotV1] = Field(default_factory=list)


class LossSaleV1(Payload):
    """A recent sale at a loss whose shares no replacement has absorbed yet (wash-sale window)."""

    symbol: str
    sold_on: date
    quantity: PositiveQuantity = Field(description="shares of the sale not yet matched")
    loss_per_share: NonNegativeMoney


HoldingsCause = Literal[
    "opening-balance", "fills", "corporate-action", "household-change", "sleeve-transfer"
]


class HoldingsReconciledV2(Payload):
    """The book of record of an account after a change: cash, positions with their tax lots,
    and the recent loss sales a purchase in the household could still wash."""

    account_id: str
    household_id: str | None = None
    as_of: date
    cash: Money
    positions: list[PositionV2]
    cause: HoldingsCause
    fill_ids: list[str] = Field(default_factory=list)
    action_id: str | None = Field(default=None, description="the corporate action, if that")
    recent_loss_sales: list[LossSaleV1] = Field(default_factory=list)


# --- every consumer -------------------------------------------------------------------------


class DeadLetterV1(Payload):
    """A message a consumer could not process, with where it came from and why."""

    consumer_group: str
    original_topic: str
    partition: int
    offset: int
    key: str | None
    value: str | None = Field(description="the original value, UTF-8 text if it decoded")
    value_base64: str | None = Field(description="the original bytes when they were not UTF-8")
    error_type: str
    error: str
    failed_at: datetime
