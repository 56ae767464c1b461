"""Response bodies of custodian-gateway's REST API (decimals as strings)."""

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from ballast_common.contracts.types import Price, Quantity
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


class OrderOut(BaseModel):
    client_order_id: str
    trade_id: uuid.UUID
    proposal_id: uuid.UUID
    account_id: str
    tenant: str
    symbol: str
    side: str
    quantity: Quantity
    reference_price: Price
    status: str
    filled_quantity: Quantity
    average_price: Price | None
    reject_reason: str | None
    times_sent: int
    sent_at: datetime | None
    created_at: datetime
    updated_at: datetime

    _decimals = field_validator("quantity", "reference_price", "filled_quantity", "average_price")(
        _canonical
    )


class OrderDetail(OrderOut):
    executions: list[ExecutionOut]


class OrdersPage(BaseModel):
    orders: list[OrderOut]
    limit: int
    offset: int
    next_offset: int | None = Field(description="pass as offset for the next page; null at the end")


class Stats(BaseModel):
    orders: dict[str, Any]
    executions: dict[str, int]
    cursor: dict[str, Any]
