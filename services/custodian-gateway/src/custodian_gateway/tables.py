"""custodian-gateway's tables: orders, the custodian's executions, the poll cursor."""

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ARRAY, BigInteger, Column, DateTime, Numeric, String, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

QUANTITY_SCALE = 8  # decimal places of quantities (orders, fills)
PRICE_SCALE = 8  # decimal places of prices


def _now() -> datetime:
    return datetime.now(UTC)


class Table(SQLModel, registry=registry()):
    """Base of this service's tables; its metadata holds only them."""


class Order(Table, table=True):
    """One order per approved trade, persisted (with its client order id) before it is sent."""

    __tablename__ = "orders"

    client_order_id: str = Field(primary_key=True, max_length=64)
    trade_id: uuid.UUID = Field(unique=True)
    proposal_id: uuid.UUID = Field(index=True)
    account_id: str = Field(max_length=128, index=True)
    tenant: str = Field(max_length=64)
    symbol: str = Field(max_length=32)
    side: str = Field(max_length=4)
    quantity: Decimal = Field(sa_column=Column(Numeric(24, QUANTITY_SCALE), nullable=False))
    reference_price: Decimal = Field(sa_column=Column(Numeric(24, PRICE_SCALE), nullable=False))
    # Sells: the tax lots the trade named (carried to its fills for the book of record).
    lot_ids: list[str] = Field(
        default_factory=list, sa_column=Column(ARRAY(String), nullable=False, server_default="{}")
    )
    sleeve_id: str | None = Field(default=None, max_length=64)
    # new, sent, partially_filled, filled, rejected
    status: str = Field(max_length=20, index=True)
    filled_quantity: Decimal = Field(
        default=Decimal(0), sa_column=Column(Numeric(24, QUANTITY_SCALE), nullable=False)
    )
    # Sum of quantity x price over the fills: exact, so the average price never drifts.
    filled_notional: Decimal = Field(
        default=Decimal(0),
        sa_column=Column(Numeric(48, QUANTITY_SCALE + PRICE_SCALE), nullable=False),
    )
    average_price: Decimal | None = Field(
        default=None, sa_column=Column(Numeric(24, PRICE_SCALE), nullable=True)
    )
    reject_reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    times_sent: int = 0
    sent_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    # W3C trace context of the work that created the order; sends and fills continue it.
    traceparent: str | None = Field(default=None, max_length=64)
    tracestate: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    created_at: datetime = Field(
        default_factory=_now, sa_column=Column(DateTime(timezone=True), nullable=False)
    )
    updated_at: datetime = Field(
        default_factory=_now, sa_column=Column(DateTime(timezone=True), nullable=False)
    )


class Execution(Table, table=True):
    """Every execution the custodian reported, once. `outcome` says what it did here."""

    __tablename__ = "executions"

    execution_id: str = Field(primary_key=True, max_length=200)
    seq: int = Field(sa_column=Column(BigInteger, nullable=False, index=True))
    client_order_id: str | None = Field(default=None, max_length=200, index=True)
    account_id: str | None = Field(default=None, max_length=200)
    symbol: str | None = Field(default=None, max_length=64)
    side: str | None = Field(default=None, max_length=16)
    kind: str | None = Field(default=None, max_length=16)
    quantity: Decimal | None = Field(
        default=None, sa_column=Column(Numeric(24, QUANTITY_SCALE), nullable=True)
    )
    price: Decimal | None = Field(
        default=None, sa_column=Column(Numeric(24, PRICE_SCALE), nullable=True)
    )
    reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    executed_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    # applied (changed its order, event published), orphan (unknown order), invalid
    outcome: str = Field(max_length=16, index=True)
    problem: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    raw: dict[str, Any] = Field(sa_column=Column(JSONB, nullable=False))
    received_at: datetime = Field(
        default_factory=_now, sa_column=Column(DateTime(timezone=True), nullable=False)
    )


class PollCursor(Table, table=True):
    """The last custodian execution sequence number processed, per custodian."""

    __tablename__ = "poll_cursor"

    name: str = Field(primary_key=True, max_length=64)
    last_seq: int = Field(sa_column=Column(BigInteger, nullable=False))
    updated_at: datetime = Field(
        default_factory=_now, sa_column=Column(DateTime(timezone=True), nullable=False)
    )


metadata = Table.metadata
