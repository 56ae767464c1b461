"""Response bodies of custodian-gateway's REST API (decimals as strings)."""

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from ballast_common.contracts.types import Price, Quantity
from ballast_common.pagination import Page
from pydantic import BaseModel, Field, field_validator

from custodian_gateway.orders import canonical


def _canonical(value: Decimal | None) -> Decimal | None:
    return None if value is None else canonical(value)


class ExecutionOut(BaseModel):
    execution_id: str
    seq: int
    kind: str | None
    quantity: Quantity | None
    price: Price | None
    reason: str | None
    executed_at: datetime | None
    outcome: str = Field(description="applied, orphan (unknown order) or invalid")
    problem: str | None
    received_at: datetime

    _decimals = field_validator("quantity", "price")(_canonical)


class AllocationOut(BaseModel):
    trade_id: uuid.UUID
    proposal_id: uuid.UUID
    account_id: str
    tenant: str
    custodian: str
    symbol: str
    side: str
    quantity: Quantity = Field(description="what the trade asked")
    reference_price: Price
    lot_ids: list[str]
    sleeve_id: str | None
    status: str = Field(
        description="pending (waiting for a block), blocked (its block is not done), filled, "
        "partially_filled (the rest rejected) or rejected"
    )
    client_order_id: str | None = Field(description="its block order; null while pending")
    filled_quantity: Quantity = Field(description="its share of the block's fills")
    average_price: Price | None = Field(description="the block's average price")
    reject_reason: str | None
    created_at: datetime
    updated_at: datetime

    _decimals = field_validator("quantity", "reference_price", "filled_quantity", "average_price")(
        _canonical
    )


class OrderOut(BaseModel):
    client_order_id: str
    custodian: str
    tenant: str
    account_id: str = Field(description="the account the block is placed under at the custodian")
    symbol: str
    side: str
    whole_shares: bool
    quantity: Quantity
    reference_price: Price
    allocation_count: int
    status: str
    filled_quantity: Quantity
    average_price: Price | None
    reject_reason: str | None
    times_sent: int
    sent_at: datetime | None
    allocated_at: datetime | None
    created_at: datetime
    updated_at: datetime

    _decimals = field_validator("quantity", "reference_price", "filled_quantity", "average_price")(
        _canonical
    )


class OrderDetail(OrderOut):
    allocations: Page[AllocationOut] = Field(
        description="a page of the block's allocations (next: allocation_offset=next_offset)"
    )
    executions: list[ExecutionOut]


class Stats(BaseModel):
    blocks: dict[str, Any] = Field(description="the caller's tenant's block orders")
    allocations: dict[str, Any] = Field(description="the caller's tenant's allocations")
    executions: dict[str, int] = Field(
        description="executions of the tenant's blocks by outcome; `orphans` (executions of "
        "no known block, of no tenant) only for callers with the `operations` permission"
    )
    cursor: dict[str, Any] | None = Field(
        description="the custodian's poll cursor (of no tenant): for callers with the "
        "`operations` permission, else null"
    )
