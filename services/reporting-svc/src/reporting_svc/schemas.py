"""Response bodies of reporting-svc's REST API. Decimals travel as strings."""

import uuid
from datetime import date, datetime
from typing import Literal

from ballast_common.contracts.types import Money, Quantity, RequestBody, SignedWeight, Weight
from pydantic import BaseModel, Field, field_validator

from reporting_svc.webhooks import EVENT_TYPES, WebhookEventType, check_url

TradeStatus = Literal["proposed", "approved", "partially_filled", "filled", "rejected", "declined"]


class LastMeasured(BaseModel):
    """What the latest rebalance run measured (drift-detected)."""

    run_id: uuid.UUID
    max_abs_drift: Weight
    out_of_tolerance: bool
    measured_at: datetime


class AccountOverview(BaseModel):
    account_id: str
    name: str
    household_id: str
    account_type: str
    model_id: str | None
    model_name: str | None
    model_version: int | None
    status: str
    auto_approve: bool
    market_value: Money | None = Field(
        description="cash plus priced positions; null before the first holdings snapshot"
    )
    securities_value: Money | None = Field(
        default=None, description="the priced positions' value (market value less cash)"
    )
    cash: Money | None
    holdings_as_of: date | None
    positions: int = Field(default=0, description="securities held (non-zero quantity)")
    max_drift: Weight | None = Field(
        description="the engine's latest verdict (drift-detected): largest |weight - target| "
        "it measured; null until a run measured the account"
    )
    tolerance: Weight = Field(description="the verdict's tolerance (or the default before one)")
    out_of_tolerance: bool = Field(description="the verdict's; false before one")
    unpriced_positions: int = Field(description="held securities the security master lacks")
    last_measured: LastMeasured | None
    held: bool = Field(
        default=False,
        description="held from trading by the custodian's reconciliation (trading-hold-changed)",
    )
    held_reason: str | None = Field(default=None, description="why it is held, in words")
    held_since: datetime | None = Field(default=None, description="when the hold began")
    held_by_custodian: str | None = Field(
        default=None, description="the custodian whose files hold (or last released) it"
    )


class SleeveOut(BaseModel):
    sleeve_id: str
    model_id: str
    weight: Weight


class AccountSummary(AccountOverview):
    tenant: str | None
    sleeves: list[SleeveOut] = Field(
        description="a UMA's sleeves; its targets are sleeve weight x model target"
    )
    trades_by_status: dict[str, int]
    fills_reflected: list[str] = Field(description="fill ids the current snapshot reflects")


class HoldingLine(BaseModel):
    kind: Literal["security", "cash"]
    symbol: str
    name: str | None
    sector: str | None
    asset_class: str | None
    quantity: Quantity | None
    price: Money | None
    cost_basis: Money | None
    market_value: Money | None
    weight: SignedWeight | None = Field(
        description="share of the market value (negative for a cash overdraft)"
    )
    target_weight: Weight
    difference: SignedWeight | None = Field(description="weight - target weight")


class Holdings(BaseModel):
    account_id: str
    model_id: str | None
    model_version: int | None
    as_of: date | None
    market_value: Money
    cash: Money
    max_drift: Weight | None
    lines: list[HoldingLine]


class TradeOut(BaseModel):
    trade_id: uuid.UUID
    proposal_id: uuid.UUID
    run_id: uuid.UUID | None
    model_id: str | None
    model_version: int | None
    symbol: str
    side: str
    quantity: Quantity | None
    estimated_price: Money | None
    estimated_value: Money | None
    reason: str | None
    explanation: str | None
    status: TradeStatus
    approved_by: str | None
    proposed_at: datetime | None
    approved_at: datetime | None
    filled_quantity: Quantity
    average_price: Money | None
    rejected_reason: str | None
    declined_by: str | None = Field(default=None, description="who rejected the proposal")
    declined_reason: str | None = None
    sleeve_id: str | None = None
    lot_ids: list[str] | None = Field(default=None, description="sells: the tax lots relieved")
    estimated_tax: Money | None = Field(
        default=None, description="sells: estimated tax on the gain (negative: a saving)"
    )
    fills: int
    fills_reflected: int


class ChunkFailure(BaseModel):
    chunk: int
    accounts: int
    error: str | None


class RunProgress(BaseModel):
    run_id: uuid.UUID
    model_id: str = Field(description="the changed model, or '*' for a scan or a harvest")
    model_version: int
    kind: Literal["rebalance", "scan", "harvest"] | None = Field(
        default=None, description="null until the first chunk of the run is reported"
    )
    trigger: str | None = Field(
        default=None,
        description="model-change, scan, interval-scan, harvest, interval-harvest or manual",
    )
    chunks: int | None = Field(
        default=None, description="chunks in the run; null until the first is reported"
    )
    chunks_completed: int = 0
    chunks_failed: int = 0
    failed_chunks: list[ChunkFailure] = Field(default_factory=list)
    accounts: int = Field(default=0, description="accounts in the reported chunks")
    accounts_evaluated: int = 0
    accounts_skipped: int = 0
    expected_proposals: int = Field(default=0, description="proposals the chunks made")
    expected_trades: int = Field(default=0, description="trades the chunks proposed")
    accounts_measured: int
    accounts_out_of_tolerance: int
    proposals: int
    proposals_approved: int
    trades: int
    trades_filled: int
    trades_partially_filled: int
    trades_rejected: int = Field(description="rejected by the custodian")
    trades_declined: int = Field(description="their proposal was rejected by a person")
    estimated_tax: Money | None = Field(
        description="estimated tax of the run's sells (negative: saved); none without lots"
    )
    trades_open: int = Field(description="proposed or approved, nothing filled or rejected yet")
    trades_awaiting_approval: int
    fills: int
    fills_reflected: int = Field(description="fills a holdings snapshot has reflected")
    complete: bool = Field(
        description="every chunk reported, every proposal and trade they announced seen, every "
        "trade filled, rejected or declined, and every fill reflected in holdings"
    )
    progress: float = Field(description="share of the run's work done, 0..1, for display")
    first_event_at: datetime
    last_event_at: datetime
    last_reconciled_at: datetime | None


class Summary(BaseModel):
    accounts: int
    models: int
    securities: int
    accounts_out_of_tolerance: int = Field(description="by the engine's latest verdicts")
    accounts_measured: int = Field(default=0, description="accounts with a verdict")
    runs: int
    proposals: int
    trades: int
    trades_by_status: dict[str, int]
    fills: int
    fills_reflected: int
    total_market_value: Money


class RunAccount(BaseModel):
    account_id: str
    name: str | None
    total_value: Money | None
    max_abs_drift: Weight | None = Field(description="as measured by the run")
    out_of_tolerance: bool | None
    trades: int
    trades_filled: int
    trades_rejected: int
    trades_declined: int
    trades_open: int
    fills: int
    fills_reflected: int


class ModelOut(BaseModel):
    model_id: str
    name: str
    version: int
    changed_by: str
    changed_at: datetime
    securities: int
    accounts: int


class LotLine(BaseModel):
    """One open tax lot, valued at the security master's price."""

    lot_id: str
    symbol: str
    sleeve_id: str | None
    quantity: Quantity
    acquired: date = Field(description="start of the holding period (wash sales carry it back)")
    term: Literal["short", "long"] = Field(description="on the `on` date: held > 1 year = long")
    cost_basis: Money = Field(description="wash-sale adjustments included")
    wash_adjustment: Money
    price: Money | None
    market_value: Money | None
    unrealized_gain: Money | None = Field(description="market value minus basis; none unpriced")


class Lots(BaseModel):
    account_id: str
    on: date
    lots: list[LotLine]
    unrealized_short_term: Money = Field(description="over priced lots")
    unrealized_long_term: Money
    unpriced_lots: int


# --- webhooks (docs/webhooks.md) --------------------------------------------------------------


class WebhookIn(RequestBody):
    """A subscription: where to send which events."""

    url: str = Field(
        max_length=2048,
        description="http or https; no credentials in it (every request is signed)",
        examples=["https://platform.example.com/ballast/webhooks"],
    )
    event_types: list[WebhookEventType] = Field(min_length=1, max_length=len(EVENT_TYPES))
    description: str = Field(default="", max_length=500)

    @field_validator("url")
    @classmethod
    def _sendable(cls, url: str) -> str:
        return check_url(url)


class WebhookOut(BaseModel):
    id: uuid.UUID
    url: str
    event_types: list[str]
    description: str
    created_by: str
    created_at: datetime
    previous_secret_expires_at: datetime | None = Field(
        description="until then the secret before the last rotation signs alongside"
    )


class WebhookCreated(WebhookOut):
    secret: str = Field(description="whsec_...: verify signatures with it; shown only now")


class WebhookSecret(BaseModel):
    id: uuid.UUID
    secret: str = Field(description="the new whsec_... secret; shown only now")
    previous_secret_expires_at: datetime | None = Field(
        description="the secret it replaces keeps signing alongside until then"
    )


class WebhookAttemptOut(BaseModel):
    attempted_at: datetime
    status_code: int | None = Field(description="the receiver's answer; null if none came")
    error: str | None = Field(description="why it did not count as delivered")
    duration_ms: int


class WebhookDeliveryOut(BaseModel):
    id: uuid.UUID
    subscription_id: uuid.UUID
    webhook_id: uuid.UUID = Field(description="the event's id, sent as `webhook-id`")
    event_type: str
    status: Literal["pending", "delivered", "failed", "cancelled"]
    attempts: int = Field(description="attempts since it was (re)queued")
    next_attempt_at: datetime | None
    created_at: datetime
    delivered_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    attempt_log: list[WebhookAttemptOut] = Field(description="every attempt, oldest first")
