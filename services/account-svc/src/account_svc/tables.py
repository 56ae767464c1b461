"""account-svc's tables: households, accounts, the models they may follow, trade proposals to
approve, and the book loads (files staged and applied)."""

import uuid
from datetime import UTC, datetime
from typing import Any

from ballast_common.audit import define_audit_records
from ballast_common.book_loads import define_book_loads
from sqlalchemy import Column, DateTime, Index, Text, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel


def _now() -> datetime:
    return datetime.now(UTC)


def _timestamp() -> Any:
    return Field(default_factory=_now, sa_column=Column(DateTime(timezone=True), nullable=False))


class Table(SQLModel, registry=registry()):
    """Base of this service's tables; its metadata holds only them."""


class Household(Table, table=True):
    """A family whose accounts are managed together (wash sales are checked across it)."""

    __tablename__ = "households"

    household_id: str = Field(primary_key=True, max_length=64)
    tenant: str = Field(max_length=64, index=True)
    name: str
    created_at: datetime = _timestamp()
    updated_at: datetime = _timestamp()


class Account(Table, table=True):
    __tablename__ = "accounts"

    account_id: str = Field(primary_key=True, max_length=64)
    tenant: str = Field(max_length=64, index=True)
    household_id: str = Field(max_length=64, index=True)
    name: str
    account_type: str = Field(max_length=16)  # taxable | ira
    model_id: str | None = Field(default=None, max_length=64, index=True)
    status: str = Field(default="active", max_length=16)  # active | suspended | closed
    auto_approve: bool = True
    # the engine's settings; a missing key means rebalance-svc's default (schemas.py)
    rebalance_settings: dict[str, Any] = Field(
        default_factory=dict,
        sa_column=Column(JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    )
    # [{kind, scope, value, source, reason, set_by, set_at}]
    restrictions: list[dict[str, Any]] = Field(
        default_factory=list,
        sa_column=Column(JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    )
    # None: the defaults of TaxSettings
    tax_settings: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONB))
    # a UMA's sleeves and rebalance range; None for an SMA
    strategy: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONB))
    created_at: datetime = _timestamp()
    updated_at: datetime = _timestamp()


class SecurityList(Table, table=True):
    """A named list of securities (an ESG screen, a firm's do-not-trade list) that
    restrictions may refer to (scope "list")."""

    __tablename__ = "security_lists"

    tenant: str = Field(primary_key=True, max_length=64)  # each tenant names its own lists
    list_id: str = Field(primary_key=True, max_length=64)
    name: str
    symbols: list[str] = Field(sa_column=Column(JSONB, nullable=False))
    updated_by: str
    updated_at: datetime = _timestamp()


class RestrictionChange(Table, table=True):
    """A restriction or list member changed by something other than a person's PUT (today: a
    corporate action): what it was, what it became (None: dropped) and why."""

    __tablename__ = "restriction_history"

    change_id: int | None = Field(default=None, primary_key=True)
    tenant: str = Field(max_length=64)  # the account's or the list's
    account_id: str | None = Field(default=None, max_length=64, index=True)  # None: a list
    list_id: str | None = Field(default=None, max_length=64, index=True)
    change: str = Field(max_length=16)  # replaced | merged | dropped | list-replaced | list-dropped
    before: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONB))
    after: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONB))
    changed_by: str  # e.g. corporate-action:<action id>
    note: str
    changed_at: datetime = _timestamp()


class KnownModel(Table, table=True):
    """Models published by model-hub-svc (from model-changed): accounts may follow only these."""

    __tablename__ = "known_models"

    model_id: str = Field(primary_key=True, max_length=64)
    tenant: str = Field(max_length=64, index=True)  # the model's (its model-changed envelope's)
    name: str
    version: int


class Proposal(Table, table=True):
    """Trades proposed for an account, and the decision taken on them."""

    __tablename__ = "proposals"
    # the order lists page in: a tenant's first page walks it, probing each account's tenant
    __table_args__ = (Index("ix_proposals_received_at", "received_at", "proposal_id"),)

    proposal_id: str = Field(primary_key=True, max_length=36)
    account_id: str = Field(max_length=64, index=True)
    run_id: str = Field(max_length=36)
    model_id: str = Field(max_length=64)
    model_version: int
    status: str = Field(max_length=16, index=True)  # pending | approved | rejected
    trades: list[dict[str, Any]] = Field(sa_column=Column(JSONB, nullable=False))
    # A UMA's planned cash movements between sleeves: announced with the approval, so the
    # book of record books them only when the trades are approved.
    cash_movements: list[dict[str, Any]] = Field(
        default_factory=list,
        sa_column=Column(JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    )
    received_at: datetime = _timestamp()
    decided_by: str | None = None
    decided_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    decision_note: str | None = None
    # What the proposal follows from (its trades-proposed event and that event's W3C trace
    # context): a decision taken later, by a person, is published with this cause.
    cause_event_id: uuid.UUID | None = None
    traceparent: str | None = Field(default=None, max_length=64)
    tracestate: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


metadata = Table.metadata
book_loads = define_book_loads(metadata)
audit_records = define_audit_records(metadata)
