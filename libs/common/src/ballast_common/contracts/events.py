"""Payload models, one class per (event type, version). Consumers ignore unknown fields.

Changing a published version incompatibly (removing or retyping a field, adding a required
one) fails `tests/test_contracts.py`: add a new version instead.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Literal

from ballast_engine.tax.model import DEFAULT_RELIEF_METHOD, RELIEF_METHOD_NAMES, ReliefMethod
from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, WithJsonSchema

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
# The engine's relief methods, in a JSON Schema as an inline string enum (as they were
# published) rather than a reference to a definition.
ReliefMethodField = Annotated[
    ReliefMethod, WithJsonSchema({"enum": list(RELIEF_METHOD_NAMES), "type": "string"})
]


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


Percent = Annotated[
    Decimal,
    Field(ge=0, le=100, allow_inf_nan=False),
    PlainSerializer(lambda d: format(d, "f"), return_type=str, when_used="json"),
    WithJsonSchema(
        {"type": "string", "pattern": r"^\d+(\.\d+)?$", "description": "a percent, 0-100"}
    ),
]


class BandV1(Payload):
    """A tolerance around a target weight: absolute (target ± width points) or relative
    (target ± width × target)."""

    kind: Literal["absolute", "relative"] = "absolute"
    width: Weight


class ModelTargetV1(Payload):
    symbol: str
    weight: Weight
    shares: Quantity | None = Field(
        default=None, description="a share-based model: shares per model unit"
    )
    hold: bool = Field(default=False, description="hold what is held, do not buy more")
    replacement: str | None = Field(
        default=None, description="buy-list replacement bought instead of a held target"
    )
    band: BandV1 | None = Field(
        default=None, description="per-security band (overrides the account's)"
    )
    tax_loss_proxies: list[str] = Field(
        default_factory=list,
        description="harvest replacements (not substantially identical)",
    )
    factor_exposures: dict[str, SignedWeight] = Field(
        default_factory=dict,
        description="a direct index: the name's exposure to each factor of the model's risk "
        "model (a factor left out: 0)",
    )


class RiskModelV1(Payload):
    """A direct index's risk model: factors, their yearly covariance, the names' specific
    volatility."""

    factors: list[str] = Field(default_factory=list, description="factor names, in order")
    covariance: list[list[SignedWeight]] = Field(
        default_factory=list,
        description="yearly factor covariance, one row per factor (square, symmetric)",
    )
    specific_volatility: Weight = Field(
        default=Decimal("0.25"), description="yearly specific volatility of every name"
    )


class OptimizerSettingsV1(Payload):
    """The manager's plain-English optimizer settings (no solver weight among them)."""

    tax_sensitivity: Literal["low", "medium", "high"] = "medium"
    tracking_tolerance: Weight = Field(
        default=Decimal("0.01"),
        description="yearly tracking error accepted (0.01: stay within about 1% of the index)",
    )
    gain_budget: NonNegativeMoney | None = Field(
        default=None, description="net realized gains a year (an account's own budget wins)"
    )
    harvesting: bool = True
    tilts: dict[str, SignedWeight] = Field(
        default_factory=dict, description="factor -> target active exposure"
    )
    exclusion_rule: Literal["pro_rata", "sector", "equivalence"] = Field(
        default="pro_rata", description="where an excluded name's index weight goes"
    )
    sector_bound: Weight | None = Field(
        default=None, description="sector weight within ± this of the index (null: 2x tolerance)"
    )


class DirectIndexV1(Payload):
    """A model that is a direct index: sleeves following it go through the optimizer."""

    risk_model: RiskModelV1
    settings: OptimizerSettingsV1 = Field(default_factory=OptimizerSettingsV1)


class ModelParentV1(Payload):
    """The parent model version an effective child model version is derived from."""

    model_id: str
    version: int = Field(ge=1)


class ModelChangedV1(Payload):
    """A model manager published a new version of a model."""

    model_id: str
    name: str
    version: int = Field(ge=1)
    targets: list[ModelTargetV1] = Field(min_length=1)
    changed_by: str
    kind: Literal["weights", "shares"] = "weights"
    swap_back: bool = Field(
        default=False, description="swap back from a proxy after the wash-sale window"
    )
    parent: ModelParentV1 | None = Field(
        default=None, description="the parent this version is derived from (a child model)"
    )
    direct_index: DirectIndexV1 | None = Field(
        default=None, description="a direct index: its risk model and optimizer settings"
    )


class EquivalenceSetChangedV1(Payload):
    """An equivalence set was defined, changed or removed: securities that substitute for
    one another (holding one counts toward another's target). `identical` sets are also
    substantially identical for wash sales."""

    set_id: str = Field(min_length=1, max_length=64)
    name: str
    members: list[str] = Field(description="symbols; empty when removed")
    identical: bool = Field(default=False, description="substantially identical securities")
    removed: bool = False
    version: int = Field(ge=1)


# --- account-svc ----------------------------------------------------------------------------


class RebalanceSettingsV1(Payload):
    """An account's rebalance settings (the engine's sleeve settings). A null field means
    "rebalance-svc's default" (its REBALANCE_SVC_* settings, else the engine's)."""

    min_trade_value: NonNegativeMoney | None = None
    min_trade_shares: Quantity | None = None
    min_opening_trade_value: NonNegativeMoney | None = None
    fractional: bool | None = None
    share_decimals: int | None = Field(default=None, ge=0, le=8)
    cash_target: Weight | None = Field(default=None, description="cash weight of the sleeve")
    cash_reserve: NonNegativeMoney | None = Field(default=None, description="dollars never spent")
    cash_band: BandV1 | None = None
    security_band: BandV1 | None = None
    freed_cash: Literal["cash", "pro_rata", "sector"] | None = None


class RestrictionV1(Payload):
    """Do-not-buy / do-not-sell / do-not-hold on a security, sector, asset class or named list."""

    kind: Literal["do_not_buy", "do_not_sell", "do_not_hold"]
    scope: Literal["security", "sector", "asset_class", "list"]
    value: str = Field(description="the symbol, sector, asset class or list id")
    source: str = Field(description="whose instruction: firm, advisor, client, compliance")
    reason: str
    set_by: str = Field(description="who set it")
    symbols: list[str] = Field(
        default_factory=list, description="scope list: the list's members when published"
    )


class TaxSettingsV1(Payload):
    """How an account's sales are taxed and limited, and when losses are harvested (the
    defaults are what an account that never set them gets)."""

    relief_method: ReliefMethodField = Field(default=DEFAULT_RELIEF_METHOD, title="Relief Method")
    short_term_rate: Weight = Decimal("0.37")
    long_term_rate: Weight = Decimal("0.20")
    gain_budget: NonNegativeMoney | None = Field(
        default=None, description="net realized gains allowed this calendar year (null: none)"
    )
    gain_budget_mode: Literal["hard", "warn"] = "hard"
    avoid_short_term_gains: bool = False
    harvest: bool = False
    harvest_min_loss_percent: Percent = Field(
        default=Decimal("10"), description="harvest a lot when its loss is this percent of basis"
    )
    harvest_min_loss_dollars: NonNegativeMoney = Field(
        default=Decimal("100"), description="... and at least this many dollars"
    )


class SleeveV1(Payload):
    """One model of a UMA's strategy, in its own sleeve."""

    sleeve_id: str
    model_id: str
    weight: Weight
    band: BandV1


class StrategyV1(Payload):
    """A UMA's strategy: its sleeves and where a strategic rebalance stops a moved model."""

    sleeves: list[SleeveV1] = Field(min_length=1)
    rebalance_range: Literal["target", "band", "interior"] = "target"
    interior_pct: Percent = Field(
        default=Decimal("50"), description="interior range: percent of the band left to target"
    )


class AccountChangedV1(Payload):
    """An account was opened or its model, status, approval policy, rebalance settings,
    restrictions, tax settings or strategy changed (the account's whole state each time).

    An SMA follows `model_id`; a UMA has a `strategy` (sleeves) and no `model_id`."""

    account_id: str
    household_id: str
    name: str
    account_type: Literal["taxable", "ira"]
    model_id: str | None
    status: Literal["active", "suspended", "closed"]
    auto_approve: bool
    rebalance_settings: RebalanceSettingsV1 | None = None
    restrictions: list[RestrictionV1] = Field(default_factory=list)
    tax_settings: TaxSettingsV1 | None = None
    strategy: StrategyV1 | None = None


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


CashMovementPurpose = Literal["rebalance", "unallocated", "withdrawal"]


class CashMovementV1(Payload):
    """Cash a UMA's strategic rebalance moves inside the account: between two sleeves, or
    between a sleeve and the account's own cash (null). The account's cash stays the same."""

    from_sleeve: str | None = Field(
        default=None, description="the sleeve the cash leaves; null: the account's own cash"
    )
    to_sleeve: str | None = Field(
        default=None, description="the sleeve the cash goes to; null: the account's own cash"
    )
    amount: NonNegativeMoney = Field(description="in cents")
    purpose: CashMovementPurpose = Field(
        default="rebalance",
        description="rebalance: between sleeves; unallocated: to or from the account's own "
        "cash; withdrawal: gathered in the account's own cash to be paid out",
    )


class TradesApprovedV1(Payload):
    """Proposed trades were approved (automatically by policy, or by a person)."""

    proposal_id: uuid.UUID
    account_id: str
    approved_by: str
    trades: list[TradeV1] = Field(min_length=1)
    cash_movements: list[CashMovementV1] = Field(
        default_factory=list,
        description="the proposal's planned cash movements between a UMA's sleeves: the book "
        "of record books them when the trades are approved",
    )


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


RunTrigger = Literal[
    "model-change", "scan", "interval-scan", "harvest", "interval-harvest", "manual"
]
RunKind = Literal["rebalance", "scan", "harvest"]


class RebalanceChunkRequestedV1(Payload):
    """One chunk of a run's accounts, for any instance of rebalance-svc to process.

    A run (a model change, a scan, a harvest) is split into chunks of a few hundred accounts
    keyed to partitions; each chunk is one transaction, idempotent by (run, chunk).
    """

    run_id: uuid.UUID
    chunk: int = Field(ge=0, description="0-based index of this chunk in its run")
    chunks: int = Field(ge=1, description="how many chunks the run has")
    kind: RunKind = Field(
        description="rebalance: rebalance every account; scan: measure drift (and rebalance "
        "out-of-tolerance accounts when rebalance_out_of_tolerance); harvest: tax-loss harvest"
    )
    trigger: RunTrigger
    model_id: str = Field(description="the changed model, or '*' for a scan or harvest")
    model_version: int = Field(ge=0)
    account_ids: list[str] = Field(min_length=1, max_length=5000)
    rebalance_out_of_tolerance: bool = False


class RebalanceChunkCompletedV1(Payload):
    """A chunk of a run was processed (or failed after its attempts). A run is complete when
    all `chunks` of it have completed or failed; its totals are the sums over its chunks."""

    run_id: uuid.UUID
    chunk: int = Field(ge=0)
    chunks: int = Field(ge=1)
    kind: RunKind
    trigger: RunTrigger
    model_id: str
    model_version: int = Field(ge=0)
    status: Literal["completed", "failed"]
    accounts: int = Field(ge=0, description="accounts in the chunk")
    accounts_evaluated: int = Field(ge=0)
    accounts_out_of_tolerance: int = Field(ge=0)
    accounts_skipped: int = Field(ge=0, description="not rebalanced, each with a reason")
    proposals: int = Field(ge=0)
    trades: int = Field(ge=0)
    error: str | None = Field(default=None, description="why the chunk failed")


class ProposalMetricsV1(Payload):
    """A proposal's figures, from what the engine had (estimated prices, before the trades)."""

    account_value: Money = Field(
        description="before the trades: holdings at estimated prices + cash"
    )
    buy_value: NonNegativeMoney
    sell_value: NonNegativeMoney
    turnover_percent: Percent = Field(description="(buy + sell) / (2 x account value) x 100")
    estimated_tax: Money = Field(description="sum of the sells' estimated_tax (negative: saving)")
    drift_before_percent: Percent = Field(
        description="largest |weight - target| of a security, in points"
    )
    drift_after_percent: Percent = Field(
        description="the same after the proposed trades (estimated)"
    )
    tracking_error_before_percent: Percent | None = Field(
        default=None, description="direct-index sleeves only"
    )
    tracking_error_after_percent: Percent | None = None


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
    cash_movements: list[CashMovementV1] = Field(
        default_factory=list,
        description="a UMA's strategic rebalance: the cash it moves between the sleeves (and "
        "the account's own cash) to fund the trades; none for an SMA",
    )
    metrics: ProposalMetricsV1 | None = None
    notes: list[str] = Field(
        default_factory=list,
        description="account-level notes: the engine's notices, the optimizer's explanation "
        "(bounds that gave way and why, a fallback to the rules)",
    )


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


class TradingHoldChangedV1(Payload):
    """Whether an account may be traded, as the book of record's reconciliation with the
    custodian says: held while it has an unresolved break whose policy is to suspend."""

    account_id: str
    held: bool
    reason: str | None = Field(
        default=None,
        max_length=500,
        description="why it is held, in words (the first break's kind and lot); null when released",
    )
    custodian: str | None = Field(default=None, description="the custodian whose files said so")
    business_date: date | None = Field(default=None, description="the files' business day")


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


class RealizedYearV1(Payload):
    """Gains realized so far in a calendar year (after wash-sale adjustments)."""

    year: int
    short_term: Money
    long_term: Money


class SleeveCashV1(Payload):
    """The cash one sleeve of a UMA holds in the book of record."""

    sleeve_id: str | None = Field(
        default=None, description="the sleeve; null: the account's own cash, in no sleeve"
    )
    amount: Money = Field(description="negative: the sleeve spent more than it held")


HoldingsCause = Literal[
    "opening-balance",
    "fills",
    "corporate-action",
    "household-change",
    "sleeve-transfer",
    "custodian-day",  # the custodian's transactions of a day reconciled (dividends, transfers...)
    "reconciliation",  # the custodian's figure accepted: a break resolved, or the accept policy
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
    realized_this_year: RealizedYearV1 | None = Field(
        default=None, description="for yearly gain budgets: realized gains of as_of's year"
    )
    sleeve_cash: list[SleeveCashV1] = Field(
        default_factory=list,
        description="a UMA's cash per sleeve: each sleeve's and the account's own (sleeve_id "
        "null), adding up to cash; empty when the book keeps the account's cash whole",
    )


CorporateActionType = Literal[
    "split",
    "reverse-split",
    "symbol-change",
    "cash-merger",
    "stock-merger",
    "spin-off",
    "cash-dividend",
]


class CorporateActionRecordedV1(Payload):
    """The book of record applied a corporate action to every account holding the security.
    Models and restriction lists follow symbol changes and mergers."""

    action_id: str
    type: CorporateActionType
    symbol: str
    on: date
    new_symbol: str | None = Field(
        default=None,
        description="symbol-change, stock-merger: the new security; spin-off: the spun-off one",
    )
    numerator: int | None = Field(default=None, description="splits: new shares per ...")
    denominator: int | None = Field(default=None, description="... this many old shares")
    ratio: Decimal | None = Field(
        default=None, description="stock-merger, spin-off: new shares per old share"
    )
    cash_per_share: Money | None = Field(
        default=None, description="cash-merger, cash-dividend: cash per share"
    )
    basis_percent: Decimal | None = Field(
        default=None, description="spin-off: share of basis that moves to the new shares"
    )
    accounts_affected: int = Field(ge=0)


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
