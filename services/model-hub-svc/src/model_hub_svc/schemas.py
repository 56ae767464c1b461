"""Request and response bodies of model-hub-svc's REST API.

Request bodies refuse unknown fields; prices and weights are decimal strings with at most the
decimals this service stores (prices 6, weights 10), so a model is published as it is stored.
"""

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from ballast_common.contracts.types import (
    DecimalIn,
    FractionIn,
    NonNegativeMoneyIn,
    PercentIn,
    Price,
    PriceIn,
    QuantityIn,
    RequestBody,
    WeightIn,
)
from pydantic import BaseModel, Field


class SecurityIn(RequestBody):
    symbol: str = Field(min_length=1, max_length=16, pattern=r"^[A-Z0-9.\-]+$")
    name: str = Field(min_length=1, max_length=200)
    asset_class: str = Field(min_length=1, max_length=64)
    sector: str = Field(min_length=1, max_length=64)
    price: PriceIn
    fractional_eligible: bool = False
    cusip: str | None = Field(default=None, min_length=9, max_length=9)


class SecuritiesIn(RequestBody):
    securities: list[SecurityIn] = Field(min_length=1, max_length=10000)


class SecurityOut(BaseModel):
    symbol: str
    name: str
    asset_class: str
    sector: str
    price: Price
    fractional_eligible: bool
    cusip: str | None
    updated_at: datetime


Symbol = Annotated[str, Field(min_length=1, max_length=16)]
FactorName = Annotated[str, Field(min_length=1, max_length=32)]
MAX_FACTORS = 20


class RiskModelIn(RequestBody):
    """A direct index's risk model: factor names, their yearly covariance (square and
    symmetric, one row per factor), and the names' yearly specific volatility."""

    factors: list[FactorName] = Field(default_factory=list, max_length=MAX_FACTORS)
    covariance: list[list[DecimalIn]] = Field(default_factory=list, max_length=MAX_FACTORS)
    specific_volatility: DecimalIn = Field(default=Decimal("0.25"))


class OptimizerSettingsIn(RequestBody):
    """The manager's plain-English optimizer settings (docs/optimizer.md's calibration table
    turns them into solver weights; no weight is set here)."""

    tax_sensitivity: Literal["low", "medium", "high"] = "medium"
    tracking_tolerance: DecimalIn = Field(
        default=Decimal("0.01"), description="yearly tracking error accepted, 0.0005 to 0.2"
    )
    gain_budget: NonNegativeMoneyIn | None = Field(
        default=None, description="net realized gains a year (an account's own budget wins)"
    )
    harvesting: bool = True
    tilts: dict[FactorName, DecimalIn] = Field(
        default_factory=dict, max_length=MAX_FACTORS, description="factor -> active exposure"
    )
    exclusion_rule: Literal["pro_rata", "sector", "equivalence"] = "pro_rata"
    sector_bound: FractionIn | None = Field(
        default=None, description="sector weights within ± this of the index (null: 2x tolerance)"
    )


class DirectIndexIn(RequestBody):
    """The model is a direct index: sleeves following it go through the optimizer."""

    risk_model: RiskModelIn
    settings: OptimizerSettingsIn = Field(default_factory=OptimizerSettingsIn)


class BandIn(RequestBody):
    """absolute: target ± width (weight points, 0.01 = 1 point); relative: target ± width ×
    target (the shape of account-svc's rebalance settings' bands)."""

    kind: Literal["absolute", "relative"] = "absolute"
    width: FractionIn


class TargetIn(RequestBody):
    symbol: Symbol
    weight: WeightIn | None = Field(
        default=None, description="required on a weights model; optional on a share model"
    )
    shares: QuantityIn | None = Field(
        default=None, description="a share model: shares per model unit (> 0)"
    )
    hold: bool = Field(default=False, description="keep what is held, buy no more")
    replacement: Symbol | None = Field(
        default=None, description="a held target's buy-list replacement, bought instead"
    )
    band: BandIn | None = Field(default=None, description="overrides the account's band")
    tax_loss_proxies: list[Symbol] = Field(
        default_factory=list,
        max_length=20,
        description="bought in its place when a loss is harvested (not substantially identical)",
    )
    factor_exposures: dict[FactorName, DecimalIn] = Field(
        default_factory=dict,
        max_length=MAX_FACTORS,
        description="a direct index: exposure to each factor of its risk model (left out: 0)",
    )


class ReweightIn(RequestBody):
    symbol: Symbol
    weight: WeightIn


class OverridesIn(RequestBody):
    """What a child changes of its parent's current targets (see docs/models.md)."""

    remove: list[Symbol] = Field(default_factory=list, max_length=2000)
    reweight: list[ReweightIn] = Field(default_factory=list, max_length=2000)
    add: list[TargetIn] = Field(default_factory=list, max_length=2000)


class LimitsIn(RequestBody):
    """What the children of this model may change (a child outside them is refused)."""

    max_reweight_points: PercentIn | None = Field(
        default=None,
        description="per security, |child - parent| weight in percentage points (2 = 2 points)",
    )
    max_added: int | None = Field(default=None, ge=0, le=2000)
    may_remove: bool = True
    locked: list[Symbol] = Field(
        default_factory=list, max_length=2000, description="may not be removed or reweighted"
    )
    allowed_additions: list[Symbol] | None = Field(
        default=None, max_length=2000, description="the securities a child may add (null: any)"
    )


class ModelIn(RequestBody):
    """A model: its own targets, or a parent (`parent_model_id`) and `overrides` of it."""

    name: str = Field(min_length=1, max_length=200)
    kind: Literal["weights", "shares"] = "weights"
    targets: list[TargetIn] | None = Field(default=None, min_length=1, max_length=2000)
    swap_back: bool = Field(
        default=False, description="swap back from a tax-loss proxy after the wash-sale window"
    )
    parent_model_id: str | None = Field(default=None, min_length=1, max_length=64)
    overrides: OverridesIn | None = None
    limits: LimitsIn | None = None
    allocation_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="an asset allocation the model's asset-class weights keep to",
    )
    direct_index: DirectIndexIn | None = Field(
        default=None, description="a direct index: its risk model and optimizer settings"
    )


class BandOut(BaseModel):
    kind: str
    width: Decimal


class TargetOut(BaseModel):
    symbol: str
    weight: Decimal | None
    shares: Decimal | None = None
    hold: bool = False
    replacement: str | None = None
    band: BandOut | None = None
    tax_loss_proxies: list[str] = []
    factor_exposures: dict[str, Decimal] = {}


class ParentOut(BaseModel):
    model_id: str
    version: int


class ModelOut(BaseModel):
    model_id: str
    tenant: str
    name: str
    version: int
    changed_by: str
    created_at: datetime
    kind: str = "weights"
    swap_back: bool = False
    parent: ParentOut | None = Field(
        default=None, description="a child: the parent version its effective targets derive from"
    )
    overrides: OverridesIn | None = None
    limits: LimitsIn | None = None
    allocation_id: str | None = None
    direct_index: DirectIndexIn | None = None
    targets: list[TargetOut] = Field(description="a child's effective targets")


class ChildOutsideLimits(BaseModel):
    model_id: str
    problem: str


class ModelPublished(ModelOut):
    created: bool = Field(description="false if the model equals the current version")
    children_changed: list[str] = Field(
        default=[], description="children (and theirs) given a new effective version"
    )
    children_outside_limits: list[ChildOutsideLimits] = Field(
        default=[],
        description="children the new version would break, kept at their last effective version",
    )


class ModelSummary(BaseModel):
    model_id: str
    tenant: str
    name: str
    current_version: int
    updated_at: datetime


class EquivalenceSetIn(RequestBody):
    name: str = Field(min_length=1, max_length=200)
    members: list[Annotated[str, Field(min_length=1, max_length=16)]] = Field(
        min_length=2, max_length=500
    )
    identical: bool = Field(
        default=False,
        description="the members are substantially identical (a loss on one is washed by "
        "buying another), e.g. two S&P 500 index funds",
    )


class EquivalenceSetOut(BaseModel):
    set_id: str
    tenant: str
    name: str
    members: list[str]
    identical: bool
    removed: bool
    version: int
    changed_by: str
    updated_at: datetime


class EquivalenceSetPublished(EquivalenceSetOut):
    created: bool = Field(description="false if nothing changed")


AssetClass = Annotated[str, Field(min_length=1, max_length=64)]


class AllocationIn(RequestBody):
    name: str = Field(min_length=1, max_length=200)
    weights: dict[AssetClass, WeightIn] = Field(
        min_length=1, max_length=100, description="asset class -> weight; they sum to 1"
    )


class AllocationOut(BaseModel):
    allocation_id: str
    tenant: str
    name: str
    version: int
    weights: dict[str, Decimal]
    changed_by: str
    created_at: datetime


class AllocationPublished(AllocationOut):
    created: bool = Field(description="false if it equals the current version")
