"""rebalance-svc's read model (fed by events) and its record of rebalance runs."""

import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Boolean, Column, DateTime, Numeric, Text, text
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
    # the tenant whose model-changed announced it (None: stored before tenants were kept)
    tenant: str | None = Field(default=None, max_length=64)
    name: str
    version: int
    targets: dict[str, str] = Field(sa_column=Column(JSONB, nullable=False))  # symbol -> weight
    kind: str = Field(  # weights, or shares: a share-based model (targets' `shares`)
        default="weights",
        sa_column=Column(Text, nullable=False, server_default=text("'weights'")),
    )
    # symbol -> the manager's settings of that target, only those it set (ModelTargetV1 as
    # JSON without symbol and weight: shares, hold, replacement, band, tax_loss_proxies)
    target_settings: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        sa_column=Column(JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    )
    swap_back: bool = Field(  # harvests swap proxies back after the wash-sale window
        default=False,
        sa_column=Column(Boolean, nullable=False, server_default=text("false")),
    )
    # ModelParentV1 as JSON: the parent version this effective child version derives from
    parent: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONB, nullable=True))
    # a direct index (direct_index.direct_index_doc): risk model, settings, factor exposures
    direct_index: dict[str, Any] | None = Field(
        default=None, sa_column=Column(JSONB, nullable=True)
    )


def _jsonb(default: Any, server_default: str) -> Any:
    return Field(
        default_factory=default,
        sa_column=Column(JSONB, nullable=False, server_default=text(server_default)),
    )


class Account(Table, table=True):
    """An account as account-svc last announced it: an SMA follows `model_id`; a UMA has
    sleeves (table `sleeves`) and a rebalance range."""

    __tablename__ = "accounts"

    account_id: str = Field(primary_key=True, max_length=64)
    tenant: str = Field(max_length=64)
    model_id: str | None = Field(default=None, max_length=64, index=True)
    status: str = Field(max_length=16)
    household_id: str | None = Field(default=None, max_length=64)
    account_type: str | None = Field(default=None, max_length=16)
    # RebalanceSettingsV1 as JSON; a missing or null field: this service's default
    rebalance_settings: dict[str, Any] = _jsonb(dict, "'{}'::jsonb")
    # [RestrictionV1 as JSON] (list members are kept in `security_lists`)
    restrictions: list[dict[str, Any]] = _jsonb(list, "'[]'::jsonb")
    # TaxSettingsV1 as JSON (None: never set, the contract's defaults)
    tax_settings: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONB))
    # UMA: where a strategic rebalance stops a moved model (None for an SMA)
    rebalance_range: str | None = Field(default=None, max_length=16)
    interior_pct: Decimal | None = Field(default=None, sa_column=Column(Numeric(7, 4)))


class Sleeve(Table, table=True):
    """One sleeve of a UMA: the model it follows, its target weight in the account, its band."""

    __tablename__ = "sleeves"

    account_id: str = Field(primary_key=True, max_length=64)
    sleeve_id: str = Field(primary_key=True, max_length=64)
    position: int  # order in the strategy (holdings without a sleeve go to the first match)
    model_id: str = Field(max_length=64, index=True)
    weight: Decimal = _decimal(10, 8)
    band_kind: str = Field(max_length=16)
    band_width: Decimal = _decimal(10, 8)


class SecurityList(Table, table=True):
    """A named security list (e.g. an ESG screen), as the last account-changed carried it."""

    __tablename__ = "security_lists"

    list_id: str = Field(primary_key=True, max_length=128)
    symbols: list[str] = Field(sa_column=Column(JSONB, nullable=False))


class EquivalenceSet(Table, table=True):
    """An equivalence set as model-hub-svc last announced it (equivalence-set-changed): the
    newest version wins; a removed set stays as a tombstone so a late older version cannot
    bring it back."""

    __tablename__ = "equivalence_sets"

    set_id: str = Field(primary_key=True, max_length=64)
    name: str
    members: list[str] = Field(sa_column=Column(JSONB, nullable=False))
    identical: bool = False
    removed: bool = False
    version: int
    # when model-hub-svc announced this version (the envelope's time): a symbol claimed by
    # two live sets (a member moving between sets, events of two keys in flight) stays in
    # the newer one
    changed_at: datetime = _timestamp()


class Holding(Table, table=True):
    __tablename__ = "holdings"

    account_id: str = Field(primary_key=True, max_length=64)
    symbol: str = Field(primary_key=True, max_length=16)
    quantity: Decimal = _decimal()
    # [LotV1 as JSON: lot_id, quantity, acquired, cost_basis, wash_adjustment, sleeve_id]
    lots: list[dict[str, Any]] = _jsonb(list, "'[]'::jsonb")
    # the latest `acquired` of its lots (None without lots): the wash-sale window's search
    # for recent purchases reads only the positions with one
    last_acquired: date | None = None


class Cash(Table, table=True):
    __tablename__ = "cash"

    account_id: str = Field(primary_key=True, max_length=64)
    amount: Decimal = _decimal(20, 2)
    updated_at: datetime = _timestamp()
    household_id: str | None = Field(default=None, max_length=64)
    # Gains realized in `realized_year` so far (holdings-reconciled v2), for gain budgets.
    realized_year: int | None = None
    realized_short_term: Decimal | None = Field(
        default=None, sa_column=Column(Numeric(20, 2), nullable=True)
    )
    realized_long_term: Decimal | None = Field(
        default=None, sa_column=Column(Numeric(20, 2), nullable=True)
    )
    # A UMA's cash per sleeve as the book of record keeps it ([SleeveCashV1 as JSON:
    # sleeve_id (null: the account's own), amount]); null: the book sent none.
    sleeve_cash: list[dict[str, Any]] | None = Field(
        default=None, sa_column=Column(JSONB(none_as_null=True), nullable=True)
    )


class LossSale(Table, table=True):
    """A recent loss sale (holdings-reconciled v2) a purchase in the household could still
    wash; replaced with each holdings-reconciled of the account."""

    __tablename__ = "loss_sales"

    account_id: str = Field(primary_key=True, max_length=64)
    seq: int = Field(primary_key=True)
    household_id: str | None = Field(default=None, max_length=64, index=True)
    symbol: str = Field(max_length=16)
    sold_on: date
    quantity: Decimal = _decimal()
    loss_per_share: Decimal = _decimal()


class TradeInFlight(Table, table=True):
    """A trade rebalance-svc proposed that is not settled yet: until its fills are in the book
    of record (or it is rejected, or its proposal declined) its account is not traded again."""

    __tablename__ = "trades_in_flight"

    trade_id: uuid.UUID = Field(primary_key=True)
    account_id: str = Field(max_length=64, index=True)
    proposal_id: uuid.UUID = Field(index=True)
    run_id: uuid.UUID
    quantity: Decimal = _decimal(24, 8)
    settled_quantity: Decimal = Field(
        default=Decimal(0), sa_column=Column(Numeric(24, 8), nullable=False)
    )
    proposed_at: datetime = _timestamp()


class TradingHold(Table, table=True):
    """An account taxlot-svc holds from trading (trading-hold-changed): a run skips it with
    the reason until it is released."""

    __tablename__ = "trading_holds"

    account_id: str = Field(primary_key=True, max_length=64)
    reason: str = Field(max_length=500)
    custodian: str | None = Field(default=None, max_length=64)
    business_date: date | None = None
    held_at: datetime = _timestamp()


class FillMark(Table, table=True):
    """A fill of one of our trades, seen on fills-received and/or named by holdings-reconciled
    (the two may come in either order); it settles its quantity once both are seen."""

    __tablename__ = "fill_marks"

    fill_id: str = Field(primary_key=True, max_length=200)
    trade_id: uuid.UUID | None = None
    quantity: Decimal | None = Field(default=None, sa_column=Column(Numeric(24, 8)))
    received: bool = False
    reconciled: bool = False


class Run(Table, table=True):
    """One run: a model change fanned out over the accounts that follow it (or have a sleeve
    on it), a drift scan of the whole book or a tax-loss harvest (model_id "*"). Its accounts
    are split into chunks (`run_chunks`); the totals here are the sums of the chunks done."""

    __tablename__ = "runs"

    run_id: str = Field(primary_key=True, max_length=36)
    # whose accounts it covers (None: a run of every tenant's, started before runs were each
    # tenant's, which no tenant's caller sees)
    tenant: str | None = Field(default=None, max_length=64, index=True)
    started_by: str | None = Field(default=None, max_length=200)  # the caller's subject
    trigger: str = Field(max_length=32)  # model-change, scan, interval-scan, harvest, ...
    kind: str = Field(max_length=16)  # rebalance, scan, harvest
    model_id: str = Field(max_length=64, index=True)
    model_version: int
    rebalance_out_of_tolerance: bool = False  # a scan that rebalances what is out of band
    started_at: datetime = _timestamp()
    # set when the last chunk is done (or at once for a run without accounts)
    finished_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    accounts: int = 0  # accounts the run covers
    chunks: int = 0
    chunks_done: int = 0  # completed or failed
    chunks_failed: int = 0
    accounts_evaluated: int = 0
    accounts_out_of_tolerance: int = 0
    accounts_skipped: int = 0
    proposals: int = 0
    trades: int = 0


class RunChunk(Table, table=True):
    """One chunk of a run, processed once (by whichever instance took it)."""

    __tablename__ = "run_chunks"

    run_id: str = Field(primary_key=True, max_length=36)
    chunk: int = Field(primary_key=True)
    status: str = Field(max_length=16)  # processing (in its transaction), completed, failed
    accounts: int
    accounts_evaluated: int = 0
    accounts_out_of_tolerance: int = 0
    proposals: int = 0
    trades: int = 0
    # account id -> why it was not rebalanced (no holdings yet, suspended, bad data...)
    skipped: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSONB, nullable=False))
    error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    finished_at: datetime = _timestamp()


class Scenario(Table, table=True):
    """Everything the engine was given for one account in one run: replays to the same trades
    with `ballast engine rebalance` (download it from GET /runs/{run_id}/scenarios/{account}).
    The account's part; the reference its chunk shared (securities, models, lists, sets) is
    kept once per chunk in `scenario_references` (`chunk`; null: a scenario stored whole)."""

    __tablename__ = "scenarios"

    run_id: str = Field(primary_key=True, max_length=36)
    account_id: str = Field(primary_key=True, max_length=64)
    chunk: int | None = None
    scenario: dict[str, Any] = Field(sa_column=Column(JSONB, nullable=False))


class ScenarioReference(Table, table=True):
    """The engine's reference one chunk of a run gave all its accounts."""

    __tablename__ = "scenario_references"

    run_id: str = Field(primary_key=True, max_length=36)
    chunk: int = Field(primary_key=True)
    reference: dict[str, Any] = Field(sa_column=Column(JSONB, nullable=False))


class CashRequest(Table, table=True):
    """A withdrawal or deposit asked of one account (POST /cash-requests): waiting for its
    day, then started in a run (trigger `cash`) whose outcome for the account it follows."""

    __tablename__ = "cash_requests"

    request_id: uuid.UUID = Field(primary_key=True)
    tenant: str = Field(max_length=64)
    account_id: str = Field(max_length=64, index=True)
    kind: str = Field(max_length=16)  # withdrawal, deposit
    amount: Decimal = _decimal(20, 2)
    due_on: date
    sleeve_id: str | None = Field(default=None, max_length=64)
    note: str | None = Field(default=None, max_length=500)
    # waiting (for its day), started (in run_id), proposed (proposal_id), done, failed (reason)
    status: str = Field(max_length=16, index=True)
    run_id: uuid.UUID | None = Field(default=None, index=True)
    proposal_id: uuid.UUID | None = Field(default=None, index=True)
    reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    requested_by: str = Field(max_length=200)
    requested_at: datetime = _timestamp()
    updated_at: datetime = _timestamp()


metadata = Table.metadata
