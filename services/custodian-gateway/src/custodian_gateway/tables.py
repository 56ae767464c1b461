"""custodian-gateway's tables: block orders, their allocations, the custodian's executions,
the poll cursors (one per custodian)."""

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    ARRAY,
    BigInteger,
    Column,
    DateTime,
    Index,
    Numeric,
    String,
    Text,
    text,
)
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
    """A block order: the approved trades of one security, side, firm and custodian gathered
    into one custodian order under the block account, persisted (with its client order id)
    before it is sent. Its allocations (one per trade) say who gets what of its fills."""

    __tablename__ = "orders"

    client_order_id: str = Field(primary_key=True, max_length=64)
    custodian: str = Field(max_length=64, index=True)
    tenant: str = Field(max_length=64)
    # The account the order is placed under at the custodian (the block/omnibus account).
    account_id: str = Field(max_length=128)
    symbol: str = Field(max_length=32)
    side: str = Field(max_length=4)
    # True: every allocation asked whole shares, so fills must be whole shares too.
    whole_shares: bool = True
    quantity: Decimal = Field(sa_column=Column(Numeric(24, QUANTITY_SCALE), nullable=False))
    reference_price: Decimal = Field(sa_column=Column(Numeric(24, PRICE_SCALE), nullable=False))
    allocation_count: int = 0
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
    last_fill_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    # When the block was done and its fills allocated to its allocations.
    allocated_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    # W3C trace context of the block's first allocation; the send continues it.
    traceparent: str | None = Field(default=None, max_length=64)
    tracestate: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    created_at: datetime = Field(
        default_factory=_now, sa_column=Column(DateTime(timezone=True), nullable=False)
    )
    updated_at: datetime = Field(
        default_factory=_now, sa_column=Column(DateTime(timezone=True), nullable=False)
    )


class Allocation(Table, table=True):
    """One approved trade: waits (pending) for a block, is part of one (blocked), and gets
    its share of the block's fills when the block is done (filled, partially_filled or
    rejected)."""

    __tablename__ = "allocations"
    __table_args__ = (
        # Only the allocations still waiting for a block: the blocker's queue.
        Index(
            "ix_allocations_waiting",
            "custodian",
            "created_at",
            postgresql_where=text("client_order_id IS NULL"),
        ),
        # No index names a column the later steps change (shares, bookings): with room on
        # the page (fillfactor, set by the migration) those rewrites touch no index.
    )

    trade_id: uuid.UUID = Field(primary_key=True)
    proposal_id: uuid.UUID
    account_id: str = Field(max_length=128, index=True)
    tenant: str = Field(max_length=64)
    custodian: str = Field(max_length=64)
    symbol: str = Field(max_length=32)
    side: str = Field(max_length=4)
    quantity: Decimal = Field(sa_column=Column(Numeric(24, QUANTITY_SCALE), nullable=False))
    reference_price: Decimal = Field(sa_column=Column(Numeric(24, PRICE_SCALE), nullable=False))
    # Sells: the tax lots the trade named (carried to its fill for the book of record).
    lot_ids: list[str] = Field(
        default_factory=list, sa_column=Column(ARRAY(String), nullable=False, server_default="{}")
    )
    sleeve_id: str | None = Field(default=None, max_length=64)
    # pending, blocked, filled, partially_filled (the rest rejected), rejected
    status: str = Field(max_length=20)
    client_order_id: str | None = Field(default=None, max_length=64, index=True)
    filled_quantity: Decimal = Field(
        default=Decimal(0), sa_column=Column(Numeric(24, QUANTITY_SCALE), nullable=False)
    )
    # The block's average price, which every allocation of the block gets.
    average_price: Decimal | None = Field(
        default=None, sa_column=Column(Numeric(24, PRICE_SCALE), nullable=True)
    )
    reject_reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    # W3C trace context of the work that approved the trade; its fill continues it.
    traceparent: str | None = Field(default=None, max_length=64)
    tracestate: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    # The trades-approved event that carried the trade: its fill's causation id.
    approval_event_id: uuid.UUID | None = None
    # Telling the custodian which account gets the fill (and, for a sell, which lots to
    # relieve): pending (to send), booked, refused (the custodian said why); NULL: nothing
    # to tell (nothing filled, or shared before this was kept).
    booking_status: str | None = Field(default=None, max_length=16)
    booking_reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    booked_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    created_at: datetime = Field(
        default_factory=_now, sa_column=Column(DateTime(timezone=True), nullable=False)
    )
    updated_at: datetime = Field(
        default_factory=_now, sa_column=Column(DateTime(timezone=True), nullable=False)
    )


class BookingDue(Table, table=True):
    """A done block with shares still to be told to the custodian: the booking sender's
    queue, one row per block (not per allocation), gone once every share is answered."""

    __tablename__ = "bookings_due"
    __table_args__ = (Index("ix_bookings_due_custodian", "custodian", "due_at"),)

    client_order_id: str = Field(primary_key=True, max_length=64)
    custodian: str = Field(max_length=64)
    due_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


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
