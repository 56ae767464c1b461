"""account-svc's tables: households, accounts, the models they may follow, trade proposals to
approve, and the book loads (files staged and applied)."""

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from ballast_common.audit import define_audit_records
from ballast_common.book_loads import define_book_loads
from sqlalchemy import Column, DateTime, Index, Numeric, Text, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel


def _now() -> datetime:
    return datetime.now(UTC)


def _timestamp() -> Any:
    return Field(default_factory=_now, sa_column=Column(DateTime(timezone=True), nullable=False))


def _metric() -> Any:
    return Field(default=None, sa_column=Column(Numeric(20, 4), nullable=True))


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
    # filters test attributes by containment (@>): a GIN index serves them over the book
    __table_args__ = (
        Index(
            "ix_accounts_attributes",
            "attributes",
            postgresql_using="gin",
            postgresql_ops={"attributes": "jsonb_path_ops"},
        ),
    )

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
    advisor_id: str | None = Field(default=None, max_length=64, index=True)
    # ancillary fields filters test (discretionary, client_tier...): name -> text|number|bool
    attributes: dict[str, Any] = Field(
        default_factory=dict,
        sa_column=Column(JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    )


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
    __table_args__ = (
        Index("ix_proposals_received_at", "received_at", "proposal_id"),
        # an account's latest proposal (filters test it): one probe per account
        Index("ix_proposals_account_latest", "account_id", "received_at", "proposal_id"),
    )

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
    # What the proposal weighs (its event's metrics, else what its trades give): filters
    # test them. None: not known.
    account_value: Decimal | None = _metric()
    cash_before: Decimal | None = _metric()
    buy_value: Decimal | None = _metric()
    sell_value: Decimal | None = _metric()
    turnover_percent: Decimal | None = _metric()
    estimated_tax: Decimal | None = _metric()
    drift_before_percent: Decimal | None = _metric()
    drift_after_percent: Decimal | None = _metric()
    # a direct-index sleeve's yearly tracking error against its index, in percent
    tracking_error_before_percent: Decimal | None = _metric()
    tracking_error_after_percent: Decimal | None = _metric()
    # account-level notes (the engine's notices, the optimizer's explanation)
    notes: list[str] = Field(
        default_factory=list,
        sa_column=Column(JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    )
    # what decided it: "filter:<id>@<version>" or "auto_approve"; the filter's action or
    # "auto_approve" (None: received before filters routed proposals)
    routed_by: str | None = Field(default=None, max_length=100, index=True)
    routing_action: str | None = Field(default=None, max_length=16)


class Filter(Table, table=True):
    """A saved query over accounts and their latest proposal with what to do with a proposal
    it selects; a tenant's enabled filters are evaluated in `position` order, first match wins."""

    __tablename__ = "filters"

    tenant: str = Field(primary_key=True, max_length=64)
    filter_id: str = Field(primary_key=True, max_length=64)
    name: str = Field(max_length=200)
    position: int
    action: str = Field(max_length=16)  # trade | review | suspend
    # [{field, op, value}] (filter_conditions.Condition)
    conditions: list[dict[str, Any]] = Field(sa_column=Column(JSONB, nullable=False))
    enabled: bool = True
    version: int = 1
    updated_by: str
    updated_at: datetime = _timestamp()


metadata = Table.metadata
book_loads = define_book_loads(metadata)
audit_records = define_audit_records(metadata)


class BulkChange(Table, table=True):
    """One change to many accounts of a tenant (bulk_changes.py): previewed on a frozen
    selection, then applied all or nothing, or cancelled."""

    __tablename__ = "bulk_changes"

    bulk_change_id: str = Field(primary_key=True, max_length=36)
    tenant: str = Field(max_length=64, index=True)
    kind: str = Field(max_length=32)
    change: dict[str, Any] = Field(sa_column=Column(JSONB, nullable=False))
    # as asked; a filter's conditions as they were at the preview
    selection: dict[str, Any] = Field(sa_column=Column(JSONB, nullable=False))
    note: str
    status: str = Field(max_length=16)  # previewed | applied | cancelled
    created_by: str
    created_at: datetime = _timestamp()
    applied_by: str | None = None
    applied_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    cancelled_by: str | None = None
    cancelled_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    changed: int | None = None  # accounts the apply changed
    changed_since_preview: int | None = None  # selected accounts changed between preview and apply
    changed_since_preview_ids: list[str] = Field(
        default_factory=list,
        sa_column=Column(JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    )


class BulkChangeAccount(Table, table=True):
    """An account a bulk change selected: what the change does to it (the columns it touches,
    before and after), what stops it, and its exemption."""

    __tablename__ = "bulk_change_accounts"

    bulk_change_id: str = Field(primary_key=True, max_length=36)
    account_id: str = Field(primary_key=True, max_length=64)
    tenant: str = Field(max_length=64)
    seen_updated_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    before: dict[str, Any] = Field(
        default_factory=dict,
        sa_column=Column(JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    )
    after: dict[str, Any] = Field(
        default_factory=dict,
        sa_column=Column(JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    )
    # [{field, message}]: why the change cannot be applied to this account
    problems: list[dict[str, Any]] = Field(
        default_factory=list,
        sa_column=Column(JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    )
    exempted_by: str | None = None
    exempted_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    exemption_reason: str | None = None


class ReusableStrategy(Table, table=True):
    """A UMA strategy of a tenant that many accounts follow (strategies.py): sleeves of models
    with weights and bands, and a rebalance range; each change is a new version."""

    __tablename__ = "strategies"

    tenant: str = Field(primary_key=True, max_length=64)
    strategy_id: str = Field(primary_key=True, max_length=64)
    name: str
    version: int
    strategy: dict[str, Any] = Field(sa_column=Column(JSONB, nullable=False))  # schemas.Strategy
    updated_by: str
    updated_at: datetime = _timestamp()


class StrategyFollower(Table, table=True):
    """An account that follows a reusable strategy: its `strategy` is that strategy's."""

    __tablename__ = "strategy_followers"
    __table_args__ = (Index("ix_strategy_followers_strategy", "tenant", "strategy_id"),)

    account_id: str = Field(primary_key=True, max_length=64)
    tenant: str = Field(max_length=64)
    strategy_id: str = Field(max_length=64)
    version: int  # the version the account's strategy is


class AccountOpeningStep(Table, table=True):
    """A step of opening an account as a workflow (account_opening_schemas.STEPS): pending,
    done, or in exception (with a note, routed to the task list)."""

    __tablename__ = "account_opening_steps"
    __table_args__ = (
        # the task list: a tenant's steps in exception
        Index("ix_account_opening_steps_tenant_status", "tenant", "status"),
    )

    account_id: str = Field(primary_key=True, max_length=64)
    step: str = Field(primary_key=True, max_length=32)
    tenant: str = Field(max_length=64)
    status: str = Field(max_length=16)  # pending | done | exception
    note: str | None = None
    updated_by: str
    updated_at: datetime = _timestamp()


# the task list's overdue openings: a tenant's accounts still opening, oldest first
Index(
    "ix_accounts_opening",
    Account.__table__.c.tenant,  # type: ignore[attr-defined]
    Account.__table__.c.created_at,  # type: ignore[attr-defined]
    postgresql_where=text("status = 'opening'"),
)
