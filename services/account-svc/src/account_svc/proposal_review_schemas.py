"""Request and response bodies of reviewing one proposal: its edit and the pending counts."""

import uuid

from ballast_common.contracts.types import QuantityIn, RequestBody
from pydantic import BaseModel, Field

MAX_EDITED_TRADES = 1000


class TradeQuantity(RequestBody):
    trade_id: uuid.UUID
    quantity: QuantityIn = Field(
        description="the new quantity: positive, whole shares unless the trade had fractions"
    )


class ProposalEdit(RequestBody):
    """Changes to a pending proposal's trades; it stays pending until approved."""

    trades: list[TradeQuantity] = Field(default_factory=list, max_length=MAX_EDITED_TRADES)
    remove: list[uuid.UUID] = Field(
        default_factory=list,
        max_length=MAX_EDITED_TRADES,
        description="trades to drop (not all of them: reject the proposal instead)",
    )
    note: str | None = Field(default=None, max_length=1000)


class PendingProposals(BaseModel):
    """How many of the tenant's proposals wait for a decision, per what routed them."""

    routed_by: str | None = Field(
        description='the filter ("filter:<id>@<version>") or "auto_approve" rule that held '
        "them; null: received before filters routed proposals"
    )
    proposals: int
