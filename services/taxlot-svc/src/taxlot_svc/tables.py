"""taxlot-svc's tables: the book of record of cash, open lots, applied fills, the ledger of
every change and the realized gains.

Positions are not stored: a position is the sum of its open lots (quantity and basis), so
it can never disagree with them. Quantities and prices are unconstrained ``numeric`` (exact,
whatever scale arrives); money is ``numeric(20, 2)``: every amount is rounded to cents
before it is written.
"""

from datetime import UTC, date, datetime
from decimal import Decimal
from uuid import UUID

from sqlalchemy import BigInteger, Column, Date, DateTime, Identity, Index, Numeric, func
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel


def _now() -> datetime:
    return datetime.now(UTC)


def _money(nullable: bool = False) -> Column[Decimal]:
    return Column(Numeric(20, 2), nullable=nullable)


def _timestamp() -> Column[datetime]:
    return Column(DateTime(timezone=True), nullable=False, server_default=func.now())


def _exact(nullable: bool = False) -> Column[Decimal]:
    return Column(Numeric(), nullable=nullable)


class Table(SQLModel, registry=registry()):
    """Base of this service's tables; its metadata holds only them."""


class AccountBook(Table, table=True):
    """One row per account with a ledger: its cash. Exists from the opening balance on."""

    __tablename__ = "account_books"

    account_id: str = Field(primary_key=True, max_length=64)
    tenant: str = Field(max_length=64)
    cash: Decimal = Field(sa_column=_money())
    as_of: date = Field(sa_column=Column(Date, nullable=False))
    opened_at: datetime = Field(default_factory=_now, sa_column=_timestamp())
    updated_at: datetime = Field(default_factory=_now, sa_column=_timestamp())


class OpenLot(Table, table=True):
    """An open tax lot. Fully relieved lots are deleted (their history is in the ledger and
    the realized gains); a partly relieved lot keeps its id with the rest of its shares."""

    __tablename__ = "lots"
    __table_args__ = (Index("ix_lots_account_symbol", "account_id", "symbol"),)

    account_id: str = Field(primary_key=True, max_length=64)
    lot_id: str = Field(primary_key=True, max_length=200)
    # Arrival order: breaks ties between lots acquired on the same day (FIFO).
    seq: int | None = Field(
        default=None, sa_column=Column(BigInteger, Identity(always=False), nullable=False)
    )
    symbol: str = Field(max_length=16)
    quantity: Decimal = Field(sa_column=_exact())
    cost_basis: Decimal = Field(sa_column=_money())
    acquired_on: date = Field(sa_column=Column(Date, nullable=False))
    holding_start: date = Field(sa_column=Column(Date, nullable=False))
    cause: str = Field(max_length=32, description="opening-balance | fill")
    fill_id: str | None = Field(default=None, max_length=200)
    opened_at: datetime = Field(default_factory=_now, sa_column=_timestamp())


class AppliedFill(Table, table=True):
    """Every fill applied to the book, once, keyed by the custodian's fill id."""

    __tablename__ = "applied_fills"

    fill_id: str = Field(primary_key=True, max_length=200)
    account_id: str = Field(max_length=64, index=True)
    symbol: str = Field(max_length=16)
    side: str = Field(max_length=4)
    quantity: Decimal = Field(sa_column=_exact())
    price: Decimal = Field(sa_column=_exact())
    cash_change: Decimal = Field(sa_column=_money())
    executed_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    event_id: UUID
    client_order_id: str = Field(max_length=200)
    applied_at: datetime = Field(default_factory=_now, sa_column=_timestamp())


class LedgerEntry(Table, table=True):
    """One change to the book with its cause: cash moved, a lot opened, a lot relieved."""

    __tablename__ = "ledger_entries"
    __table_args__ = (Index("ix_ledger_entries_account", "account_id", "id"),)

    id: int | None = Field(
        default=None,
        sa_column=Column(BigInteger, Identity(always=False), primary_key=True),
    )
    account_id: str = Field(max_length=64)
    cause: str = Field(max_length=32, description="opening-balance | fill")
    fill_id: str | None = Field(default=None, max_length=200)
    kind: str = Field(max_length=16, description="cash | lot-open | lot-relieve")
    symbol: str | None = Field(default=None, max_length=16)
    lot_id: str | None = Field(default=None, max_length=200)
    quantity: Decimal | None = Field(default=None, sa_column=_exact(nullable=True))
    amount: Decimal = Field(sa_column=_money(), description="cash change, or basis moved")
    recorded_at: datetime = Field(default_factory=_now, sa_column=_timestamp())


class RealizedGain(Table, table=True):
    """The sale of (part of) one lot: quantity, proceeds, basis, gain and term."""

    __tablename__ = "realized_gains"
    __table_args__ = (Index("ix_realized_gains_account", "account_id", "sold_on"),)

    id: int | None = Field(
        default=None,
        sa_column=Column(BigInteger, Identity(always=False), primary_key=True),
    )
    account_id: str = Field(max_length=64)
    fill_id: str = Field(max_length=200)
    lot_id: str = Field(max_length=200)
    symbol: str = Field(max_length=16)
    quantity: Decimal = Field(sa_column=_exact())
    proceeds: Decimal = Field(sa_column=_money())
    cost_basis: Decimal = Field(sa_column=_money())
    gain: Decimal = Field(sa_column=_money())
    term: str = Field(max_length=5, description="short | long")
    acquired_on: date = Field(sa_column=Column(Date, nullable=False))
    holding_start: date = Field(sa_column=Column(Date, nullable=False))
    sold_on: date = Field(sa_column=Column(Date, nullable=False))
    recorded_at: datetime = Field(default_factory=_now, sa_column=_timestamp())


metadata = Table.metadata
