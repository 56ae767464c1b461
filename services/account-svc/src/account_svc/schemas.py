"""Request and response bodies of account-svc's REST API.

Request bodies forbid unknown fields, so a misspelt setting is a 422 naming it rather than a
setting silently left at its default. Decimals travel as strings, with no more decimals than
rebalance-svc keeps (fractions 8, percentages 4, money 2).
"""

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from ballast_common.contracts.events import ReliefMethodField
from ballast_common.contracts.types import (
    FractionIn,
    NonNegativeMoneyIn,
    Omittable,
    PercentIn,
    QuantityIn,
    RequestBody,
)
from ballast_engine.tax.model import DEFAULT_RELIEF_METHOD
from pydantic import BaseModel, Field, StrictBool, StrictInt, StringConstraints

from account_svc.filter_conditions import ATTRIBUTE_NAME_PATTERN
from account_svc.rules import (
    IDENTIFIER_PATTERN,
    MAX_FRACTION,
    MAX_PERCENT,
    MAX_RESTRICTIONS,
    MAX_SLEEVES,
    SYMBOL_PATTERN,
)

MAX_ATTRIBUTES = 50
MAX_ATTRIBUTE_TEXT = 200
AccountType = Literal["taxable", "ira"]
# opening: opened as a workflow (account_opening.py), active once its steps are done; an
# account never becomes opening again, and account-changed says suspended for it
AccountStatus = Literal["opening", "active", "suspended", "closed"]
ChangeableStatus = Literal["active", "suspended", "closed"]  # what a person may set
Identifier = Field(min_length=1, max_length=64, pattern=IDENTIFIER_PATTERN)
ModelId = Annotated[str, Field(min_length=1, max_length=64)]
Fraction = Annotated[FractionIn, Field(le=MAX_FRACTION)]
Percent = Annotated[PercentIn, Field(le=MAX_PERCENT)]


class Band(RequestBody):
    """absolute: target ± width (weight points); relative: target ± width × target."""

    kind: Literal["absolute", "relative"] = "absolute"
    width: Fraction


class RebalanceSettings(RequestBody):
    """The engine's per-sleeve settings for this account (every sleeve of a UMA uses them).
    A null field means rebalance-svc's default: its REBALANCE_SVC_* setting where it has one
    (min trade $25, security band ±0.5 points, cash band ±2 points), else the engine's (0, whole
    shares, 3 decimals, no cash target or reserve, freed cash pro rata)."""

    min_trade_value: NonNegativeMoneyIn | None = Field(
        default=None, description="smallest trade in dollars (sales closing a position exempt)"
    )
    min_trade_shares: QuantityIn | None = Field(default=None, description="smallest trade, shares")
    min_opening_trade_value: NonNegativeMoneyIn | None = Field(
        default=None, description="smallest buy that opens a new position, dollars"
    )
    fractional: bool | None = Field(
        default=None, description="trade fractional shares where the security allows it"
    )
    share_decimals: int | None = Field(default=None, ge=0, le=8)
    cash_target: Annotated[Fraction, Field(lt=MAX_FRACTION)] | None = Field(
        default=None, description="cash weight the account aims to hold"
    )
    cash_reserve: NonNegativeMoneyIn | None = Field(default=None, description="dollars never spent")
    cash_band: Band | None = Field(default=None, description="no rebalance while cash is inside")
    security_band: Band | None = Field(
        default=None, description="no trade while a position is inside target ± band"
    )
    freed_cash: Literal["cash", "pro_rata", "sector"] | None = Field(
        default=None, description="what to do with weight a restriction frees"
    )


RestrictionKind = Literal["do_not_buy", "do_not_sell", "do_not_hold"]
RestrictionScope = Literal["security", "sector", "asset_class", "list"]
RestrictionSource = Literal["firm", "advisor", "client", "compliance"]


class RestrictionIn(RequestBody):
    kind: RestrictionKind
    scope: RestrictionScope
    value: str = Field(
        min_length=1, max_length=128, description="symbol, sector, asset class or list id"
    )
    source: RestrictionSource = Field(default="client", description="whose instruction it is")
    reason: str = Field(min_length=1, max_length=500)


class RestrictionOut(BaseModel):
    """A restriction as stored: `set_by` is who set it (the token's subject of the request,
    `book-load:<id>` or the corporate action that moved it)."""

    kind: RestrictionKind
    scope: RestrictionScope
    value: str
    source: RestrictionSource
    reason: str
    set_by: str
    set_at: datetime


class RestrictionsIn(RequestBody):
    restrictions: list[RestrictionIn] = Field(max_length=MAX_RESTRICTIONS)


class RestrictionsOut(BaseModel):
    restrictions: list[RestrictionOut]


class TaxSettings(RequestBody):
    """How the account's sales are taxed and limited, and when losses are harvested."""

    relief_method: ReliefMethodField = Field(default=DEFAULT_RELIEF_METHOD, title="Relief Method")
    short_term_rate: Fraction = Decimal("0.37")
    long_term_rate: Fraction = Decimal("0.20")
    gain_budget: NonNegativeMoneyIn | None = Field(
        default=None, description="net realized gains allowed this calendar year (null: none)"
    )
    gain_budget_mode: Literal["hard", "warn"] = Field(
        default="hard", description="hard: sales stop at the budget; warn: they only warn"
    )
    avoid_short_term_gains: bool = False
    harvest: bool = Field(default=False, description="harvest tax losses")
    harvest_min_loss_percent: Percent = Field(
        default=Decimal("10"), description="a lot is harvested at a loss of this percent ..."
    )
    harvest_min_loss_dollars: NonNegativeMoneyIn = Field(
        default=Decimal("100"), description="... and at least this many dollars"
    )


class SleeveIn(RequestBody):
    sleeve_id: str = Identifier
    model_id: ModelId
    weight: Fraction = Field(description="the model's target weight in the account")
    band: Band = Field(
        default_factory=lambda: Band(kind="relative", width=Decimal("0.1")),
        description="how far the sleeve may drift before a strategic rebalance moves cash",
    )


class Strategy(RequestBody):
    """A UMA's sleeves (one model each) and where a strategic rebalance stops a moved model."""

    sleeves: list[SleeveIn] = Field(min_length=1, max_length=MAX_SLEEVES)
    rebalance_range: Literal["target", "band", "interior"] = "target"
    interior_pct: Percent = Field(
        default=Decimal("50"),
        description="interior: the distance left to target, in percent of the band",
    )


AttributeName = Annotated[str, StringConstraints(pattern=ATTRIBUTE_NAME_PATTERN)]
AttributeValue = (
    StrictBool
    | StrictInt
    | Annotated[float, Field(strict=True, allow_inf_nan=False)]
    | Annotated[str, Field(max_length=MAX_ATTRIBUTE_TEXT)]
)
Attributes = Annotated[
    dict[AttributeName, AttributeValue],
    Field(
        max_length=MAX_ATTRIBUTES,
        description="ancillary fields filters may test (e.g. discretionary, client_tier): "
        f"at most {MAX_ATTRIBUTES}, names {ATTRIBUTE_NAME_PATTERN}, values text, numbers or "
        "booleans",
    ),
]
AdvisorId = Annotated[str, Field(min_length=1, max_length=64, pattern=IDENTIFIER_PATTERN)]


class AccountIn(RequestBody):
    """An account to open; its tenant is the caller's (the bearer token's)."""

    account_id: str = Identifier
    household_id: str = Identifier
    name: str = Field(min_length=1, max_length=200)
    account_type: AccountType = "taxable"
    model_id: ModelId | None = None
    auto_approve: bool = True
    rebalance_settings: RebalanceSettings | None = None
    tax_settings: TaxSettings | None = None
    strategy: Strategy | None = Field(default=None, description="a UMA: its sleeves")
    restrictions: list[RestrictionIn] = Field(default_factory=list, max_length=MAX_RESTRICTIONS)
    advisor_id: AdvisorId | None = None
    attributes: Attributes = Field(default_factory=dict)
    status: Literal["active", "opening"] = Field(
        default="active",
        description="opening: opened as a workflow, active (and traded) only once its opening "
        "steps are done (GET /accounts/{id}/opening); suspended in account-changed meanwhile",
    )


class AccountsIn(RequestBody):
    accounts: list[AccountIn] = Field(min_length=1, max_length=5000)


class AccountPatch(RequestBody):
    """Fields to change; absent fields stay as they are (model_id null: no model)."""

    name: Omittable[str] = Field(default=None, min_length=1, max_length=200)
    model_id: ModelId | None = None
    status: Omittable[ChangeableStatus] = None
    auto_approve: Omittable[bool] = None
    advisor_id: AdvisorId | None = None
    attributes: Omittable[Attributes] = None


class AccountOut(BaseModel):
    account_id: str
    tenant: str
    household_id: str
    name: str
    account_type: AccountType
    model_id: str | None
    auto_approve: bool
    status: AccountStatus
    rebalance_settings: RebalanceSettings
    tax_settings: TaxSettings
    strategy: Strategy | None
    restrictions: list[RestrictionOut]
    created_at: datetime
    updated_at: datetime
    advisor_id: str | None = None
    attributes: dict[str, Any] = Field(default_factory=dict)


class SecurityListIn(RequestBody):
    name: str = Field(min_length=1, max_length=200)
    symbols: list[Annotated[str, Field(pattern=SYMBOL_PATTERN)]] = Field(max_length=5000)


class SecurityListOut(BaseModel):
    list_id: str
    name: str
    symbols: list[str]
    updated_by: str
    updated_at: datetime


class RestrictionChangeOut(BaseModel):
    """A change to a restriction or list member made by the system (a corporate action)."""

    change_id: int
    account_id: str | None
    list_id: str | None
    change: Literal["replaced", "merged", "dropped", "list-replaced", "list-dropped"]
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    changed_by: str
    note: str
    changed_at: datetime


class ProposalOut(BaseModel):
    proposal_id: str
    account_id: str
    run_id: str
    model_id: str
    model_version: int
    status: Literal["pending", "approved", "rejected"]
    trades: list[dict[str, Any]]
    cash_movements: list[dict[str, Any]] = Field(
        default_factory=list,
        description="a UMA's planned cash movements between sleeves, booked when approved",
    )
    received_at: datetime
    decided_by: str | None
    decided_at: datetime | None
    decision_note: str | None
    routed_by: str | None = Field(
        default=None,
        description='what routed it: "filter:<id>@<version>" or "auto_approve" (null: before '
        "filters routed proposals)",
    )
    routing_action: Literal["trade", "review", "suspend", "auto_approve"] | None = None
    account_value: Decimal | None = None
    cash_before: Decimal | None = None
    buy_value: Decimal | None = None
    sell_value: Decimal | None = None
    turnover_percent: Decimal | None = None
    estimated_tax: Decimal | None = None
    drift_before_percent: Decimal | None = None
    drift_after_percent: Decimal | None = None
    tracking_error_before_percent: Decimal | None = Field(
        default=None, description="a direct-index sleeve's yearly tracking error, in percent"
    )
    tracking_error_after_percent: Decimal | None = None
    notes: list[str] = Field(
        default_factory=list,
        description="account-level notes: the engine's notices, the optimizer's explanation",
    )


class Decision(RequestBody):
    note: str | None = Field(default=None, max_length=1000)


class KnownModelOut(BaseModel):
    """A model accounts may follow: account-svc heard of it (model-changed)."""

    model_id: str
    name: str
    version: int
