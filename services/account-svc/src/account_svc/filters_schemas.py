"""Request and response bodies of filters and bulk approval."""

from datetime import datetime
from typing import Annotated, Literal

from ballast_common.contracts.types import RequestBody
from pydantic import BaseModel, Field

from account_svc.filter_conditions import MAX_CONDITIONS, Condition

FilterAction = Literal["trade", "review", "suspend"]
MAX_BULK_PROPOSALS = 10_000
MAX_FILTERS = 500  # of a tenant: each is a WHEN of the statement that routes a batch


class FilterIn(RequestBody):
    """A filter: when ALL its conditions hold for an account and its latest proposal (none:
    always), `action` decides the proposal, unless an earlier filter decided it."""

    name: str = Field(min_length=1, max_length=200)
    action: FilterAction = Field(
        description="trade: approve (active accounts); review: hold for a person; suspend: "
        "hold and suspend the account"
    )
    conditions: list[Condition] = Field(default_factory=list, max_length=MAX_CONDITIONS)
    enabled: bool = True


class FilterOut(BaseModel):
    filter_id: str
    name: str
    position: int = Field(description="evaluation order, first is 0")
    action: FilterAction
    conditions: list[Condition]
    enabled: bool
    version: int = Field(description="1 when created, +1 at each change")
    updated_by: str
    updated_at: datetime


class FilterOrder(RequestBody):
    """Every filter of the caller's tenant, each once, in the order they are evaluated."""

    filter_ids: list[str] = Field(max_length=MAX_FILTERS)


class BulkApproval(RequestBody):
    """What to approve: the pending latest proposals of the accounts a filter selects now,
    or the proposals named (exactly one of the two)."""

    filter_id: str | None = Field(default=None, min_length=1, max_length=64)
    proposal_ids: list[Annotated[str, Field(min_length=1, max_length=64)]] | None = Field(
        default=None, min_length=1, max_length=MAX_BULK_PROPOSALS
    )
    note: str | None = Field(default=None, max_length=1000)


class SkippedProposal(BaseModel):
    proposal_id: str
    reason: str


class BulkApprovalOut(BaseModel):
    approved: int
    skipped: list[SkippedProposal]
