"""Request and response bodies of bulk changes (bulk_changes_api.py)."""

from datetime import datetime
from typing import Annotated, Any, Literal

from ballast_common.contracts.types import RequestBody
from pydantic import BaseModel, Field

from account_svc.filter_conditions import Condition
from account_svc.rules import IDENTIFIER_PATTERN
from account_svc.schemas import (
    MAX_ATTRIBUTES,
    AdvisorId,
    AttributeName,
    AttributeValue,
    ChangeableStatus,
    Identifier,
    ModelId,
    RebalanceSettings,
    RestrictionIn,
    RestrictionKind,
    RestrictionScope,
    TaxSettings,
)

MAX_SELECTED_IDS = 100_000
AccountId = Annotated[str, Field(min_length=1, max_length=64, pattern=IDENTIFIER_PATTERN)]


class Selection(RequestBody):
    """Which of the caller's accounts: exactly one of a saved filter, conditions, or ids."""

    filter_id: str | None = Field(default=None, min_length=1, max_length=64)
    conditions: list[Condition] | None = Field(
        default=None, description="as a filter's: the accounts matching all of them"
    )
    account_ids: list[AccountId] | None = Field(
        default=None, min_length=1, max_length=MAX_SELECTED_IDS
    )


class AddRestriction(RequestBody):
    kind: Literal["add_restriction"]
    restriction: RestrictionIn = Field(
        description="added where the account has no restriction of this kind on this value"
    )


class RemoveRestriction(RequestBody):
    kind: Literal["remove_restriction"]
    restriction_kind: RestrictionKind
    scope: RestrictionScope
    value: str = Field(min_length=1, max_length=128)


class SetRebalanceSettings(RequestBody):
    kind: Literal["set_rebalance_settings"]
    settings: RebalanceSettings = Field(
        description="only the settings given change (null: back to rebalance-svc's default)"
    )


class SetTaxSettings(RequestBody):
    kind: Literal["set_tax_settings"]
    settings: TaxSettings = Field(description="only the settings given change")


class SetModel(RequestBody):
    kind: Literal["set_model"]
    model_id: ModelId


class SetStatus(RequestBody):
    kind: Literal["set_status"]
    status: ChangeableStatus


class SetAttributes(RequestBody):
    kind: Literal["set_attributes"]
    attributes: dict[AttributeName, AttributeValue | None] = Field(
        default_factory=dict,
        max_length=MAX_ATTRIBUTES,
        description="only the attributes given change (null: removed)",
    )
    advisor_id: AdvisorId | None = Field(default=None, description="null: no advisor")


Change = Annotated[
    AddRestriction
    | RemoveRestriction
    | SetRebalanceSettings
    | SetTaxSettings
    | SetModel
    | SetStatus
    | SetAttributes,
    Field(discriminator="kind"),
]


class BulkChangeIn(RequestBody):
    selection: Selection
    change: Change
    note: str = Field(min_length=1, max_length=1000, description="why: kept with the change")


class ExemptionIn(RequestBody):
    account_id: str = Identifier
    reason: str = Field(min_length=1, max_length=1000)


class BulkChangeCounts(BaseModel):
    selected: int
    exempted: int
    changing: int = Field(description="not exempted, and the change makes a difference")
    unchanged: int = Field(description="not exempted, and already as the change asks")
    with_problems: int = Field(description="not exempted, and the change cannot apply")


class BulkChangeOut(BaseModel):
    bulk_change_id: str
    kind: str
    change: dict[str, Any]
    selection: dict[str, Any]
    note: str
    status: Literal["previewed", "applied", "cancelled"]
    counts: BulkChangeCounts
    created_by: str
    created_at: datetime
    applied_by: str | None
    applied_at: datetime | None
    cancelled_by: str | None
    cancelled_at: datetime | None
    changed: int | None = Field(description="accounts the apply changed")
    changed_since_preview: int | None = Field(
        description="selected accounts changed by someone else between preview and apply: the "
        "change was applied to them as they were at the apply"
    )
    changed_since_preview_ids: list[str] = Field(description="the first of them, by id")
    warnings: list[str] = Field(default_factory=list)


class ProblemOut(BaseModel):
    field: str
    message: str


class BulkChangeAccountOut(BaseModel):
    account_id: str
    before: dict[str, Any] = Field(description="the fields the change touches, before")
    after: dict[str, Any] = Field(description="... and after it")
    changing: bool
    problems: list[ProblemOut]
    exempted: bool
    exempted_by: str | None
    exempted_at: datetime | None
    exemption_reason: str | None


class FieldChangeOut(BaseModel):
    field: str = Field(description="e.g. rebalance_settings.min_trade_value, restrictions")
    before: Any
    after: Any


class SettingsChangeOut(BaseModel):
    seq: int = Field(description="the audit record's place in the tenant's chain")
    at: datetime
    by: str
    action: str
    bulk_change_id: str | None = Field(description="the bulk change that made it, if one did")
    request_id: str | None = Field(description="the trace id of the request or event")
    changes: list[FieldChangeOut]
