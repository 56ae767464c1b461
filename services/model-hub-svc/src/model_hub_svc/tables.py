"""model-hub-svc's tables: the security master and versioned models."""

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from ballast_common.audit import define_audit_records
from ballast_common.book_loads import define_book_loads
from sqlalchemy import ARRAY, Column, DateTime, Numeric, String
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel


def _now() -> datetime:
    return datetime.now(UTC)


class Table(SQLModel, registry=registry()):
    """Base of this service's tables; its metadata holds only them."""


class Security(Table, table=True):
    __tablename__ = "securities"

    symbol: str = Field(primary_key=True, max_length=16)
    name: str
    asset_class: str
    sector: str
    price: Decimal = Field(sa_column=Column(Numeric(20, 6), nullable=False))
    fractional_eligible: bool = False
    cusip: str | None = Field(default=None, max_length=12)
    updated_at: datetime = Field(
        default_factory=_now, sa_column=Column(DateTime(timezone=True), nullable=False)
    )


class Model(Table, table=True):
    __tablename__ = "models"

    model_id: str = Field(primary_key=True, max_length=64)
    tenant: str = Field(max_length=64)
    name: str
    current_version: int
    updated_at: datetime = Field(
        default_factory=_now, sa_column=Column(DateTime(timezone=True), nullable=False)
    )


class ModelTarget(Table, table=True):
    __tablename__ = "model_targets"

    model_id: str = Field(primary_key=True, max_length=64)
    version: int = Field(primary_key=True)
    symbol: str = Field(primary_key=True, max_length=16)
    # null on a share model published without weights
    weight: Decimal | None = Field(default=None, sa_column=Column(Numeric(12, 10)))
    shares: Decimal | None = Field(default=None, sa_column=Column(Numeric(20, 8)))
    hold: bool = False
    replacement: str | None = Field(default=None, max_length=16)
    band_kind: str | None = Field(default=None, max_length=8)
    band_width: Decimal | None = Field(default=None, sa_column=Column(Numeric(10, 8)))
    tax_loss_proxies: list[str] | None = Field(default=None, sa_column=Column(JSONB))
    # a direct index: {factor: exposure as a decimal string}
    factor_exposures: dict[str, str] | None = Field(default=None, sa_column=Column(JSONB))


class ModelVersion(Table, table=True):
    __tablename__ = "model_versions"

    model_id: str = Field(primary_key=True, max_length=64)
    version: int = Field(primary_key=True)
    changed_by: str
    created_at: datetime = Field(
        default_factory=_now, sa_column=Column(DateTime(timezone=True), nullable=False)
    )
    kind: str = Field(default="weights", max_length=8)
    swap_back: bool = False
    # a child model: the parent version its targets derive from, and its own overrides
    parent_model_id: str | None = Field(default=None, max_length=64, index=True)
    parent_version: int | None = None
    overrides: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONB))
    # a parent: what its children may change
    limits: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONB))
    # the asset allocation the model's asset-class weights must keep to
    allocation_id: str | None = Field(default=None, max_length=64)
    # a direct index: its risk model and optimizer settings (DirectIndexIn as JSON)
    direct_index: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONB))


class EquivalenceSet(Table, table=True):
    """Securities that substitute for one another; a security is in one set at most."""

    __tablename__ = "equivalence_sets"

    set_id: str = Field(primary_key=True, max_length=64)
    tenant: str = Field(max_length=64)
    name: str
    members: list[str] = Field(sa_column=Column(ARRAY(String), nullable=False))
    identical: bool = False
    removed: bool = False
    version: int
    changed_by: str
    updated_at: datetime = Field(
        default_factory=_now, sa_column=Column(DateTime(timezone=True), nullable=False)
    )


class Allocation(Table, table=True):
    """An asset allocation: asset-class weights, versioned (ids unique platform-wide)."""

    __tablename__ = "allocations"

    allocation_id: str = Field(primary_key=True, max_length=64)
    tenant: str = Field(max_length=64)
    name: str
    current_version: int
    updated_at: datetime = Field(
        default_factory=_now, sa_column=Column(DateTime(timezone=True), nullable=False)
    )


class AllocationVersion(Table, table=True):
    __tablename__ = "allocation_versions"

    allocation_id: str = Field(primary_key=True, max_length=64)
    version: int = Field(primary_key=True)
    name: str
    # asset class -> weight (decimal strings)
    weights: dict[str, str] = Field(sa_column=Column(JSONB, nullable=False))
    changed_by: str
    created_at: datetime = Field(
        default_factory=_now, sa_column=Column(DateTime(timezone=True), nullable=False)
    )


metadata = Table.metadata
book_loads = define_book_loads(metadata)
audit_records = define_audit_records(metadata)
