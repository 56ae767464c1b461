"""reporting-svc's read models, fed only by events (schema `reporting`).

Every row is written by an idempotent upsert: the same event applied twice leaves the same
state, and events arriving out of order across topics converge to the same state.

Reports never recompute the book: each account's valuation and drift verdict is stored in
`account_valuations`, and the counts a summary or a run's progress shows are kept in
`book_tallies` and `run_tallies` by statement-level triggers on the tables they count
(migration fba27cd91b78), a row per database backend (`slot`) so that concurrent
transactions rarely wait on one another; a report sums a table's few slots.
"""

import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    ARRAY,
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

MONEY = Numeric(24, 6)
QTY = Numeric(24, 8)
WEIGHT = Numeric(14, 10)


def _ts(nullable: bool = False) -> "Column[datetime]":
    return Column(DateTime(timezone=True), nullable=nullable)


def _zero() -> "Column[int]":
    return Column(Integer, nullable=False, server_default=text("0"))


class Table(SQLModel, registry=registry()):
    """Base of this service's tables; its metadata holds only them."""


class Security(Table, table=True):
    """From securities-changed."""

    __tablename__ = "securities"

    symbol: str = Field(primary_key=True, max_length=16)
    name: str
    asset_class: str
    sector: str
    price: Decimal = Field(sa_column=Column(MONEY, nullable=False))
    changed_at: datetime = Field(sa_column=_ts())


class Model(Table, table=True):
    """From model-changed: the newest version seen of each model."""

    __tablename__ = "models"

    model_id: str = Field(primary_key=True, max_length=64)
    # the tenant whose model-changed announced it (None: stored before tenants were kept)
    tenant: str | None = Field(default=None, max_length=64, index=True)
    name: str
    version: int
    changed_by: str
    changed_at: datetime = Field(sa_column=_ts())


class ModelTarget(Table, table=True):
    """The targets of each model's newest version."""

    __tablename__ = "model_targets"

    model_id: str = Field(primary_key=True, max_length=64)
    symbol: str = Field(primary_key=True, max_length=16)
    weight: Decimal = Field(sa_column=Column(WEIGHT, nullable=False))


class Account(Table, table=True):
    """From account-changed."""

    __tablename__ = "accounts"
    __table_args__ = (
        Index("ix_accounts_model", "model_id"),
        Index("ix_accounts_tenant", "tenant", "account_id"),
    )

    account_id: str = Field(primary_key=True, max_length=64)
    household_id: str = Field(max_length=64)
    name: str
    account_type: str = Field(max_length=16)
    model_id: str | None = Field(default=None, max_length=64)
    status: str = Field(max_length=16)
    auto_approve: bool
    tenant: str = Field(max_length=64)
    changed_at: datetime = Field(sa_column=_ts())


class AccountSleeve(Table, table=True):
    """A UMA's sleeves (account-changed strategy): the account's targets are each sleeve's
    weight times its model's targets. Replaced with the account."""

    __tablename__ = "account_sleeves"
    __table_args__ = (Index("ix_account_sleeves_model", "model_id"),)

    account_id: str = Field(primary_key=True, max_length=64)
    sleeve_id: str = Field(primary_key=True, max_length=64)
    model_id: str = Field(max_length=64)
    weight: Decimal = Field(sa_column=Column(WEIGHT, nullable=False))


class HoldingsSnapshot(Table, table=True):
    """From holdings-reconciled: the newest snapshot of an account's book of record."""

    __tablename__ = "holdings"

    account_id: str = Field(primary_key=True, max_length=64)
    as_of: date = Field(sa_column=Column(Date, nullable=False))
    cash: Decimal = Field(sa_column=Column(MONEY, nullable=False))
    cause: str = Field(max_length=32)
    # The fills this snapshot reflects (earlier snapshots' fills are in reconciled_fills).
    fill_ids: list[str] = Field(sa_column=Column(ARRAY(String), nullable=False))
    event_id: uuid.UUID
    event_time: datetime = Field(sa_column=_ts())


class Position(Table, table=True):
    """The positions of the snapshot in `holdings` (replaced with it)."""

    __tablename__ = "positions"
    __table_args__ = (Index("ix_positions_symbol", "symbol"),)

    account_id: str = Field(primary_key=True, max_length=64)
    symbol: str = Field(primary_key=True, max_length=16)
    quantity: Decimal = Field(sa_column=Column(QTY, nullable=False))
    cost_basis: Decimal = Field(sa_column=Column(MONEY, nullable=False))


class AccountLots(Table, table=True):
    """The tax lots of the snapshot in `holdings`, one JSON array per account (replaced with
    it; holdings-reconciled v2). They are read one account at a time, so a snapshot writes
    one row, not one per lot. Each lot: lot_id, symbol, quantity, acquired, cost_basis,
    wash_adjustment, sleeve_id; numbers as decimal text."""

    __tablename__ = "account_lots"

    account_id: str = Field(primary_key=True, max_length=64)
    lots: list[dict[str, Any]] = Field(sa_column=Column(JSON, nullable=False))


class ReconciledFill(Table, table=True):
    """Every fill id a holdings snapshot has reflected: the fill reached the book of record."""

    __tablename__ = "reconciled_fills"

    fill_id: str = Field(primary_key=True, max_length=128)
    account_id: str = Field(max_length=64)
    reconciled_at: datetime = Field(sa_column=_ts())


class Run(Table, table=True):
    """A rebalance run (model change, scan, harvest), known from drift-detected,
    trades-proposed and rebalance-chunk-completed. Its totals are the sums over its chunks
    (`run_chunks`); kind, trigger and model come from the chunks once one arrived."""

    __tablename__ = "runs"
    __table_args__ = (
        Index("ix_runs_model", "model_id", "model_version"),
        Index("ix_runs_first_event", "first_event_at"),
        Index("ix_runs_tenant_first_event", "tenant", "first_event_at"),
    )

    run_id: uuid.UUID = Field(primary_key=True)
    # whose run it is: the tenant its chunk reports were published for (before one arrived,
    # that of its first drift or proposal event)
    tenant: str | None = Field(default=None, max_length=64)
    model_id: str = Field(max_length=64)
    model_version: int
    kind: str | None = Field(default=None, max_length=16)
    trigger: str | None = Field(default=None, max_length=32)
    # Null until the first chunk-completed says how many chunks the run has.
    chunks: int | None = None
    chunks_completed: int = Field(default=0, sa_column=_zero())
    chunks_failed: int = Field(default=0, sa_column=_zero())
    accounts: int = Field(default=0, sa_column=_zero())
    accounts_evaluated: int = Field(default=0, sa_column=_zero())
    accounts_skipped: int = Field(default=0, sa_column=_zero())
    expected_proposals: int = Field(default=0, sa_column=_zero())
    expected_trades: int = Field(default=0, sa_column=_zero())
    first_event_at: datetime = Field(sa_column=_ts())
    last_event_at: datetime = Field(sa_column=_ts())


class RunChunk(Table, table=True):
    """One chunk of a run as rebalance-chunk-completed reported it (a completed report
    replaces a failed one; anything else is a duplicate)."""

    __tablename__ = "run_chunks"

    run_id: uuid.UUID = Field(primary_key=True)
    chunk: int = Field(primary_key=True)
    chunks: int
    status: str = Field(max_length=16)
    accounts: int
    accounts_evaluated: int
    accounts_out_of_tolerance: int
    accounts_skipped: int
    proposals: int
    trades: int
    error: str | None = None
    reported_at: datetime = Field(sa_column=_ts())


class RunDrift(Table, table=True):
    """Drift of one account measured by one run."""

    __tablename__ = "run_drift"
    __table_args__ = (Index("ix_run_drift_by_drift", "run_id", "max_abs_drift", "account_id"),)

    run_id: uuid.UUID = Field(primary_key=True)
    account_id: str = Field(primary_key=True, max_length=64)
    total_value: Decimal = Field(sa_column=Column(MONEY, nullable=False))
    max_abs_drift: Decimal = Field(sa_column=Column(WEIGHT, nullable=False))
    tolerance: Decimal = Field(sa_column=Column(WEIGHT, nullable=False))
    out_of_tolerance: bool
    measured_at: datetime = Field(sa_column=_ts())


class AccountValuation(Table, table=True):
    """Each account's value and the engine's latest drift verdict, kept current by events:
    holdings-reconciled and securities-changed revalue it, drift-detected sets the verdict,
    account-changed the name, model and status the account list filters and sorts on (null
    until account-changed: only such accounts are listed)."""

    __tablename__ = "account_valuations"
    # The account list reads one tenant's rows in one of these orders.
    __table_args__ = (
        Index("ix_account_valuations_tenant", "tenant", "account_id"),
        Index("ix_account_valuations_name", "tenant", "name", "account_id"),
        Index("ix_account_valuations_model", "tenant", "model_id", "account_id"),
        Index("ix_account_valuations_status", "tenant", "status", "account_id"),
        Index("ix_account_valuations_market_value", "tenant", "market_value", "account_id"),
        Index("ix_account_valuations_cash", "tenant", "cash", "account_id"),
        Index("ix_account_valuations_drift", "tenant", "max_abs_drift", "account_id"),
    )

    account_id: str = Field(primary_key=True, max_length=64)
    # copied from account-changed with name, model and status (null until then)
    tenant: str | None = Field(default=None, max_length=64)
    name: str | None = None
    model_id: str | None = Field(default=None, max_length=64)
    status: str | None = Field(default=None, max_length=16)
    holdings_as_of: date | None = Field(default=None, sa_column=Column(Date, nullable=True))
    cash: Decimal | None = Field(default=None, sa_column=Column(MONEY, nullable=True))
    securities_value: Decimal | None = Field(default=None, sa_column=Column(MONEY, nullable=True))
    # cash plus priced positions; null before the first holdings snapshot
    market_value: Decimal | None = Field(default=None, sa_column=Column(MONEY, nullable=True))
    positions: int = Field(default=0, sa_column=_zero())
    unpriced_positions: int = Field(default=0, sa_column=_zero())
    drift_run_id: uuid.UUID | None = None
    max_abs_drift: Decimal | None = Field(default=None, sa_column=Column(WEIGHT, nullable=True))
    tolerance: Decimal | None = Field(default=None, sa_column=Column(WEIGHT, nullable=True))
    out_of_tolerance: bool = Field(
        default=False, sa_column=Column(Boolean, nullable=False, server_default=text("false"))
    )
    measured_at: datetime | None = Field(default=None, sa_column=_ts(True))
    updated_at: datetime = Field(sa_column=_ts())


class AccountHold(Table, table=True):
    """From trading-hold-changed: whether the custodian's reconciliation holds the account
    from trading, why and since when; the newest event by its time wins."""

    __tablename__ = "account_holds"

    account_id: str = Field(primary_key=True, max_length=64)
    tenant: str | None = Field(default=None, max_length=64, index=True)
    held: bool
    reason: str | None = None
    custodian: str | None = Field(default=None, max_length=64)
    business_date: date | None = Field(default=None, sa_column=Column(Date, nullable=True))
    # when the current hold began (the first hold event after a release); null when released
    held_since: datetime | None = Field(default=None, sa_column=_ts(True))
    changed_at: datetime = Field(sa_column=_ts())


class Proposal(Table, table=True):
    """A set of trades for one account; run details arrive with trades-proposed."""

    __tablename__ = "proposals"
    __table_args__ = (Index("ix_proposals_run", "run_id", "account_id"),)

    proposal_id: uuid.UUID = Field(primary_key=True)
    account_id: str = Field(max_length=64)
    run_id: uuid.UUID | None = None
    model_id: str | None = Field(default=None, max_length=64)
    model_version: int | None = None
    cash_before: Decimal | None = Field(default=None, sa_column=Column(MONEY, nullable=True))
    cash_after_estimated: Decimal | None = Field(
        default=None, sa_column=Column(MONEY, nullable=True)
    )
    proposed_at: datetime | None = Field(default=None, sa_column=_ts(True))
    approved_by: str | None = None
    approved_at: datetime | None = Field(default=None, sa_column=_ts(True))
    # A person declined the proposal (proposal-rejected); its trades never go out.
    declined_by: str | None = None
    declined_reason: str | None = None
    declined_at: datetime | None = Field(default=None, sa_column=_ts(True))


class Trade(Table, table=True):
    """One trade and what became of it. `status` is derived from the facts in the row, its
    proposal and the fills: rejected (by the custodian), declined (the proposal, by a person),
    filled, partially_filled, approved or proposed."""

    __tablename__ = "trades"
    __table_args__ = (
        Index("ix_trades_account", "account_id"),
        Index("ix_trades_proposal", "proposal_id"),
        Index("ix_trades_run", "run_id", "account_id"),
    )

    trade_id: uuid.UUID = Field(primary_key=True)
    proposal_id: uuid.UUID
    # The proposal's run, copied on each refresh so a run's tallies follow its trades.
    run_id: uuid.UUID | None = None
    account_id: str = Field(max_length=64)
    symbol: str = Field(max_length=16)
    side: str = Field(max_length=4)
    # Unknown while only fills of the trade have been seen.
    quantity: Decimal | None = Field(default=None, sa_column=Column(QTY, nullable=True))
    estimated_price: Decimal | None = Field(default=None, sa_column=Column(MONEY, nullable=True))
    estimated_value: Decimal | None = Field(default=None, sa_column=Column(MONEY, nullable=True))
    reason: str | None = None
    explanation: str | None = None
    sleeve_id: str | None = Field(default=None, max_length=64)
    # Tax-aware sells: the lots they relieve and the estimated tax (negative: a saving).
    lot_ids: list[str] | None = Field(default=None, sa_column=Column(ARRAY(String), nullable=True))
    estimated_tax: Decimal | None = Field(default=None, sa_column=Column(MONEY, nullable=True))
    proposed_at: datetime | None = Field(default=None, sa_column=_ts(True))
    approved_at: datetime | None = Field(default=None, sa_column=_ts(True))
    rejected_reason: str | None = None
    rejected_at: datetime | None = Field(default=None, sa_column=_ts(True))
    filled_quantity: Decimal = Field(default=Decimal(0), sa_column=Column(QTY, nullable=False))
    average_price: Decimal | None = Field(default=None, sa_column=Column(MONEY, nullable=True))
    # Fills received for the trade, those a holdings snapshot reflected, and when last.
    fills: int = Field(default=0, sa_column=_zero())
    fills_reflected: int = Field(default=0, sa_column=_zero())
    reconciled_at: datetime | None = Field(default=None, sa_column=_ts(True))
    status: str = Field(max_length=20)
    updated_at: datetime = Field(sa_column=_ts())


class Fill(Table, table=True):
    """Every fill received, once."""

    __tablename__ = "fills"
    __table_args__ = (
        Index("ix_fills_trade", "trade_id"),
        Index("ix_fills_proposal", "proposal_id"),
    )

    fill_id: str = Field(primary_key=True, max_length=128)
    trade_id: uuid.UUID
    proposal_id: uuid.UUID
    account_id: str = Field(max_length=64)
    symbol: str = Field(max_length=16)
    side: str = Field(max_length=4)
    quantity: Decimal = Field(sa_column=Column(QTY, nullable=False))
    price: Decimal = Field(sa_column=Column(MONEY, nullable=False))
    executed_at: datetime = Field(sa_column=_ts())


def _count() -> "Column[int]":
    return Column(BigInteger, nullable=False, server_default=text("0"))


def _sum() -> "Column[Decimal]":
    return Column(MONEY, nullable=False, server_default=text("0"))


class BookTally(Table, table=True):
    """Counts over the whole book for the summary, one row per slot (sum the slots)."""

    __tablename__ = "book_tallies"

    slot: int = Field(sa_column=Column(SmallInteger, primary_key=True))
    # Of the accounts account-changed named (those listed): how many, how many the engine
    # measured, how many its latest verdict calls out of tolerance; and every valued
    # account's market value.
    accounts: int = Field(sa_column=_count())
    accounts_measured: int = Field(sa_column=_count())
    accounts_out_of_tolerance: int = Field(sa_column=_count())
    market_value: Decimal = Field(sa_column=_sum())
    proposals: int = Field(sa_column=_count())
    proposals_approved: int = Field(sa_column=_count())
    trades: int = Field(sa_column=_count())
    trades_proposed: int = Field(sa_column=_count())
    trades_approved: int = Field(sa_column=_count())
    trades_partially_filled: int = Field(sa_column=_count())
    trades_filled: int = Field(sa_column=_count())
    trades_rejected: int = Field(sa_column=_count())
    trades_declined: int = Field(sa_column=_count())
    taxed_trades: int = Field(sa_column=_count())
    estimated_tax: Decimal = Field(sa_column=_sum())
    fills: int = Field(sa_column=_count())
    fills_reflected: int = Field(sa_column=_count())
    last_reconciled_at: datetime | None = Field(default=None, sa_column=_ts(True))


class RunTally(Table, table=True):
    """Counts of one run for its progress, one row per slot (sum the slots)."""

    __tablename__ = "run_tallies"

    run_id: uuid.UUID = Field(primary_key=True)
    slot: int = Field(sa_column=Column(SmallInteger, primary_key=True))
    accounts_measured: int = Field(sa_column=_count())
    accounts_out_of_tolerance: int = Field(sa_column=_count())
    proposals: int = Field(sa_column=_count())
    proposals_approved: int = Field(sa_column=_count())
    trades: int = Field(sa_column=_count())
    trades_proposed: int = Field(sa_column=_count())
    trades_approved: int = Field(sa_column=_count())
    trades_partially_filled: int = Field(sa_column=_count())
    trades_filled: int = Field(sa_column=_count())
    trades_rejected: int = Field(sa_column=_count())
    trades_declined: int = Field(sa_column=_count())
    taxed_trades: int = Field(sa_column=_count())
    estimated_tax: Decimal = Field(sa_column=_sum())
    fills: int = Field(sa_column=_count())
    fills_reflected: int = Field(sa_column=_count())
    last_reconciled_at: datetime | None = Field(default=None, sa_column=_ts(True))


class WebhookSubscription(Table, table=True):
    """A tenant's endpoint for webhooks of some event types (docs/webhooks.md)."""

    __tablename__ = "webhook_subscriptions"
    __table_args__ = (Index("ix_webhook_subscriptions_tenant", "tenant", "created_at"),)

    id: uuid.UUID = Field(primary_key=True)
    tenant: str = Field(max_length=64)
    url: str = Field(max_length=2048)
    event_types: list[str] = Field(sa_column=Column(ARRAY(String(64)), nullable=False))
    description: str = Field(max_length=500)
    secret: str = Field(max_length=100)  # whsec_<base64>: HMAC needs it in the clear
    # the secret before the last rotation, signing alongside until `previous_secret_until`
    previous_secret: str | None = Field(default=None, max_length=100)
    previous_secret_until: datetime | None = Field(default=None, sa_column=_ts(True))
    created_by: str = Field(max_length=200)
    created_at: datetime = Field(sa_column=_ts())
    deleted_at: datetime | None = Field(default=None, sa_column=_ts(True))


class WebhookDelivery(Table, table=True):
    """One event for one subscription: its body as signed and sent, and where it stands
    (pending, delivered, failed, cancelled)."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("subscription_id", "message_id", name="uq_webhook_deliveries_message"),
        Index("ix_webhook_deliveries_subscription", "subscription_id", "created_at"),
        Index(
            "ix_webhook_deliveries_due",
            "next_attempt_at",
            postgresql_where=text("status = 'pending'"),
        ),
    )

    id: uuid.UUID = Field(primary_key=True)
    subscription_id: uuid.UUID = Field(
        sa_column=Column(ForeignKey("webhook_subscriptions.id"), nullable=False)
    )
    tenant: str = Field(max_length=64)
    message_id: uuid.UUID  # the event's envelope id: the `webhook-id` a receiver dedupes on
    event_type: str = Field(max_length=64)
    body: str = Field(sa_column=Column(Text, nullable=False))
    status: str = Field(max_length=16)
    attempts: int  # since it was (re)queued
    next_attempt_at: datetime | None = Field(default=None, sa_column=_ts(True))
    created_at: datetime = Field(sa_column=_ts())
    last_attempt_at: datetime | None = Field(default=None, sa_column=_ts(True))
    last_status_code: int | None = None
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    delivered_at: datetime | None = Field(default=None, sa_column=_ts(True))


class WebhookAttempt(Table, table=True):
    """The delivery log: one POST of a delivery and what came of it."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (Index("ix_webhook_attempts_delivery", "delivery_id", "id"),)

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True))
    delivery_id: uuid.UUID = Field(
        sa_column=Column(ForeignKey("webhook_deliveries.id"), nullable=False)
    )
    attempted_at: datetime = Field(sa_column=_ts())
    status_code: int | None = None
    error: str | None = Field(default=None, sa_column=Column(Text))
    duration_ms: int


metadata = Table.metadata
