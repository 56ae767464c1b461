"""rebalance-svc's read model (fed by events) and its record of rebalance runs."""

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Column, DateTime, Numeric
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel


def _now() -> datetime:
    return datetime.now(UTC)


def _timestamp() -> Any:
    return Field(default_factory=_now, sa_column=Column(DateTime(timezone=True), nullable=False))


def _decimal(precision: int = 20, scale: int = 6) -> Any:
    return Field(sa_column=Column(Numeric(precision, scale), nullable=False))


class Table(SQLModel, registry=registry()):
    """Base of this service's tables; its metadata holds only them."""


class Security(Table, table=True):
    __tablename__ = "securities"

    symbol: str = Field(primary_key=True, max_length=16)
    asset_class: str
    sector: str
    price: Decimal = _decimal()
    fractional_eligible: bool = False


class Model(Table, table=True):
    __tablename__ = "models"

    model_id: str = Field(primary_key=True, max_length=64)
    name: str
    version: int
    targets: dict[str, str] = Field(sa_column=Column(JSONB, nullable=False))  # symbol -> weight


class Account(Table, table=True):
    __tablename__ = "accounts"

    account_id: str = Field(primary_key=True, max_length=64)
    tenant: str = Field(max_length=64)
    model_id: str | None = Field(default=None, max_length=64, index=True)
    status: str = Field(max_length=16)


class Holding(Table, table=True):
    __tablename__ = "holdings"

    account_id: str = Field(primary_key=True, max_length=64)
    symbol: str = Field(primary_key=True, max_length=16)
    quantity: Decimal = _decimal()


class Cash(Table, table=True):
    __tablename__ = "cash"

    account_id: str = Field(primary_key=True, max_length=64)
    amount: Decimal = _decimal(20, 2)
    updated_at: datetime = _timestamp()


class Run(Table, table=True):
    """One rebalance run: a model change fanned out over the accounts that follow it."""

    __tablename__ = "runs"

    run_id: str = Field(primary_key=True, max_length=36)
    trigger: str  # e.g. "model-changed"
    model_id: str = Field(max_length=64, index=True)
    model_version: int
    started_at: datetime = _timestamp()
    finished_at: datetime = _timestamp()
    accounts_evaluated: int = 0
    accounts_out_of_tolerance: int = 0
    proposals: int = 0
    trades: int = 0
    # account id -> why it was not rebalanced (no holdings yet, suspended, bad data...)
    skipped: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSONB, nullable=False))


class Scenario(Table, table=True):
    """Everything the engine was given for one account in one run: replays to the same trades
    with `ballast engine rebalance` (download it from GET /runs/{run_id}/scenarios/{account})."""

    __tablename__ = "scenarios"

    run_id: str = Field(primary_key=True, max_length=36)
    account_id: str = Field(primary_key=True, max_length=64)
    scenario: dict[str, Any] = Field(sa_column=Column(JSONB, nullable=False))


metadata = Table.metadata
