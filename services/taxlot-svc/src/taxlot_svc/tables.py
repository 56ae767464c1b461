"""taxlot-svc's tables: the book of record of cash, open lots, applied fills, the ledger of
every change and the realized gains; the household inputs the lots are replayed from (tax
inputs, corporate actions), each account's household and relief method, and prices.

``lots`` and ``realized_gains`` are DERIVED from ``tax_inputs`` and ``corporate_actions``
by the tax engine: a fill dated on or after the household's last day is applied to the
stored lots (the incremental path); a late fill, a household change or a corporate action
rewrites them from a replay of the household's inputs (see :mod:`taxlot_svc.book`).

Positions are not stored: a position is the sum of its open lots (quantity and basis), so
it can never disagree with them. Quantities and prices are unconstrained ``numeric`` (exact,
whatever scale arrives); money is ``numeric(20, 2)``: every amount is rounded to cents
before it is written.
"""

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from ballast_common.audit import define_audit_records
from ballast_common.book_loads import define_book_loads
from ballast_engine.tax.model import RELIEF_METHOD_NAMES
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Identity,
    Index,
    LargeBinary,
    Numeric,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel
from sqlmodel.sql.sqltypes import AutoString


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


class SleeveCash(Table, table=True):
    """The cash a named sleeve of a UMA holds. The account's own cash (no sleeve: what no
    sleeve holds) is the book's cash less every sleeve's, so the account's cash is always
    the sum of its parts. Accounts whose cash is kept whole (SMAs) have no rows."""

    __tablename__ = "sleeve_cash"

    account_id: str = Field(primary_key=True, max_length=64)
    sleeve: str = Field(primary_key=True, max_length=64)
    amount: Decimal = Field(sa_column=_money())
    updated_at: datetime = Field(default_factory=_now, sa_column=_timestamp())


class ApprovedCashMovements(Table, table=True):
    """A proposal whose planned cash movements between sleeves were booked (once per
    proposal: its ledger entries name the proposal), and the trades-approved that brought
    them."""

    __tablename__ = "approved_cash_movements"

    proposal_id: UUID = Field(primary_key=True)
    account_id: str = Field(max_length=64)
    event_id: UUID
    booked_at: datetime = Field(default_factory=_now, sa_column=_timestamp())


class OpenLot(Table, table=True):
    """An open tax lot. Fully relieved lots are deleted (their history is in the ledger and
    the realized gains); a partly relieved lot keeps its id with the rest of its shares."""

    __tablename__ = "lots"
    __table_args__ = (Index("ix_lots_account_symbol", "account_id", "symbol"),)

    account_id: str = Field(primary_key=True, max_length=64)
    lot_id: str = Field(primary_key=True, max_length=200)
    # The engine's order of the lot within its household (breaks ties between lots acquired
    # on the same day).
    seq: int = Field(sa_column=Column(BigInteger, nullable=False))
    symbol: str = Field(max_length=16)
    quantity: Decimal = Field(sa_column=_exact())
    cost_basis: Decimal = Field(sa_column=_money())
    acquired_on: date = Field(sa_column=Column(Date, nullable=False))
    holding_start: date = Field(sa_column=Column(Date, nullable=False))
    cause: str = Field(max_length=32, description="opening-balance | fill")
    fill_id: str | None = Field(default=None, max_length=200)
    opened_at: datetime = Field(default_factory=_now, sa_column=_timestamp())
    wash_adjustment: Decimal = Field(
        default=Decimal(0),
        sa_column=Column(Numeric(20, 2), nullable=False, server_default=text("0")),
    )
    replacement: bool = Field(
        default=False, sa_column=Column(Boolean, nullable=False, server_default=text("false"))
    )
    # The purchase the shares came from (shares of one purchase never replace each other).
    purchase_id: str = Field(max_length=200)
    sleeve: str = Field(default="", max_length=64, description="'' = the account's own")


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
    sleeve: str = Field(
        default="",
        sa_column=Column(AutoString(length=64), nullable=False, server_default=text("''")),
        description="cash entries: the sleeve whose cash moved ('' = the account's own)",
    )
    recorded_at: datetime = Field(default_factory=_now, sa_column=_timestamp())


class RealizedGain(Table, table=True):
    """The sale of (part of) one lot: quantity, proceeds, basis, gain and term."""

    __tablename__ = "realized_gains"
    __table_args__ = (
        Index("ix_realized_gains_account", "account_id", "sold_on"),
        Index("ix_realized_gains_account_symbol", "account_id", "symbol"),
    )

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
    # The wash-sale rule (code W): loss disallowed, shares matched, part lost for good (IRA).
    adjustment: Decimal = Field(
        default=Decimal(0),
        sa_column=Column(Numeric(20, 2), nullable=False, server_default=text("0")),
    )
    washed_quantity: Decimal = Field(
        default=Decimal(0), sa_column=Column(Numeric(), nullable=False, server_default=text("0"))
    )
    permanent: Decimal = Field(
        default=Decimal(0),
        sa_column=Column(Numeric(20, 2), nullable=False, server_default=text("0")),
    )
    account_type: str = Field(
        default="taxable",
        sa_column=Column(AutoString(length=8), nullable=False, server_default=text("'taxable'")),
    )
    cause: str = Field(
        default="fill",
        sa_column=Column(AutoString(length=32), nullable=False, server_default=text("'fill'")),
        description="fill | corporate-action",
    )
    seq: int = Field(
        default=0, sa_column=Column(BigInteger, nullable=False, server_default=text("0"))
    )


class AccountInfo(Table, table=True):
    """An account's household and type, from account-svc's ``account-changed``. An account
    not (yet) known here is a household of its own, taxable."""

    __tablename__ = "accounts"

    account_id: str = Field(primary_key=True, max_length=64)
    household_id: str = Field(max_length=64, index=True)
    account_type: str = Field(max_length=8, description="taxable | ira")
    # the tenant whose account-changed named it (None: not said, e.g. from a book load)
    tenant: str | None = Field(default=None, max_length=64)
    updated_at: datetime = Field(default_factory=_now, sa_column=_timestamp())


class TaxSettings(Table, table=True):
    """An account's lot-relief method (for sells that name no lot) and tax rates, as
    account-svc last stated them in ``account-changed`` (``tax_settings``)."""

    __tablename__ = "tax_settings"

    account_id: str = Field(primary_key=True, max_length=64)
    method: str = Field(max_length=8, description=" | ".join(RELIEF_METHOD_NAMES))
    short_term_rate: Decimal | None = Field(default=None, sa_column=_exact(nullable=True))
    long_term_rate: Decimal | None = Field(default=None, sa_column=_exact(nullable=True))
    updated_at: datetime = Field(default_factory=_now, sa_column=_timestamp())


class TaxInput(Table, table=True):
    """What the lots of an account are replayed from: each opening lot and each fill, with
    the relief method in force when a sell arrived (so a later method change does not
    rewrite past sales), each sleeve transfer, and each custodian's figure accepted (kind
    ``adjust``, ref ``reconciliation:<break id>``, ``method`` its adjustment: quantity |
    scale | basis | date | open | close). ``id`` is the arrival order (it breaks ties
    within a day)."""

    __tablename__ = "tax_inputs"
    __table_args__ = (
        Index("ix_tax_inputs_account", "account_id", "id"),
        UniqueConstraint("account_id", "kind", "ref", name="uq_tax_inputs_ref"),
    )

    id: int | None = Field(
        default=None,
        sa_column=Column(BigInteger, Identity(always=False), primary_key=True),
    )
    account_id: str = Field(max_length=64)
    kind: str = Field(max_length=8, description="opening | fill | move | adjust")
    ref: str = Field(max_length=200, description="fill id, opening lot id, or transfer id")
    trade_on: date = Field(sa_column=Column(Date, nullable=False))
    symbol: str = Field(max_length=16)
    side: str = Field(max_length=4)
    quantity: Decimal = Field(sa_column=_exact())
    price: Decimal = Field(sa_column=_exact())
    fees: Decimal = Field(sa_column=_exact())
    lot_name: str | None = Field(default=None, max_length=200)
    lot_ids: str = Field(default="", description="lots named by a sell, ';'-separated")
    method: str | None = Field(default=None, max_length=8)
    sleeve: str = Field(default="", max_length=64, description="a fill's sleeve; a move's source")
    to_sleeve: str | None = Field(default=None, max_length=64, description="a move's target")
    acquired_on: date | None = Field(
        default=None,
        sa_column=Column(Date, nullable=True),
        description="an adjustment's acquisition date (date, open)",
    )
    recorded_at: datetime = Field(default_factory=_now, sa_column=_timestamp())


class HouseholdState(Table, table=True):
    """What the incremental path needs of a household: the last day applied (a fill dated
    earlier is late and replays) and the engine's sequence counter."""

    __tablename__ = "households"

    household_id: str = Field(primary_key=True, max_length=80)
    last_day: date | None = Field(default=None, sa_column=Column(Date, nullable=True))
    seq: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    updated_at: datetime = Field(default_factory=_now, sa_column=_timestamp())


class PendingSnapshot(Table, table=True):
    """An account whose ``holdings-reconciled`` is due: changes of a consumed batch are
    coalesced here and published by the snapshot loop (one event per account)."""

    __tablename__ = "pending_snapshots"

    account_id: str = Field(primary_key=True, max_length=64)
    cause: str = Field(max_length=32)
    fill_ids: list[str] = Field(sa_column=Column(JSONB, nullable=False))
    action_id: str | None = Field(default=None, max_length=200)
    # What the snapshot follows from (the latest request's): the event that asked for it
    # (none for a REST request) and the W3C trace context it continues.
    cause_event_id: UUID | None = None
    traceparent: str | None = Field(default=None, max_length=64)
    tracestate: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    requested_at: datetime = Field(default_factory=_now, sa_column=_timestamp())


class CorporateActionRecord(Table, table=True):
    """A corporate action, applied once (by id); ``terms`` is the request, ``result`` what
    its first application did (returned again on a repeat)."""

    __tablename__ = "corporate_actions"

    action_id: str = Field(primary_key=True, max_length=200)
    kind: str = Field(max_length=16)
    symbol: str = Field(max_length=16, index=True)
    effective_on: date = Field(sa_column=Column(Date, nullable=False))
    terms: dict[str, Any] = Field(sa_column=Column(JSONB, nullable=False))
    result: dict[str, Any] = Field(sa_column=Column(JSONB, nullable=False))
    recorded_at: datetime = Field(default_factory=_now, sa_column=_timestamp())


class EquivalenceSetRecord(Table, table=True):
    """An equivalence set as model-hub-svc last described it (``equivalence-set-changed``,
    newest version wins). Only sets marked ``identical`` (and not removed) matter here: their
    members are substantially identical for the wash-sale rule."""

    __tablename__ = "equivalence_sets"

    set_id: str = Field(primary_key=True, max_length=64)
    name: str = Field(sa_column=Column(AutoString, nullable=False))
    members: list[str] = Field(sa_column=Column(JSONB, nullable=False))
    identical: bool = Field(sa_column=Column(Boolean, nullable=False))
    removed: bool = Field(sa_column=Column(Boolean, nullable=False))
    version: int = Field(sa_column=Column(BigInteger, nullable=False))
    updated_at: datetime = Field(default_factory=_now, sa_column=_timestamp())


class SecurityPrice(Table, table=True):
    """The security master's last price of each symbol (from ``securities-changed``)."""

    __tablename__ = "prices"

    symbol: str = Field(primary_key=True, max_length=16)
    price: Decimal = Field(sa_column=_exact())
    updated_at: datetime = Field(default_factory=_now, sa_column=_timestamp())


class ReconciliationBreak(Table, table=True):
    """A difference between the custodian's day and the ledger, lot by lot or in cash, with
    the policy its kind carries (``suspend`` | ``flag`` | ``accept``) and its status."""

    __tablename__ = "reconciliation_breaks"
    __table_args__ = (
        Index("ix_reconciliation_breaks_status_account", "tenant", "status", "account_id", "id"),
        Index("ix_reconciliation_breaks_account", "account_id", "id"),
        Index("ix_reconciliation_breaks_load", "tenant", "load_id", "kind"),
    )

    id: int | None = Field(
        default=None,
        sa_column=Column(BigInteger, Identity(always=False), primary_key=True),
    )
    tenant: str = Field(max_length=64)
    custodian: str = Field(max_length=64)
    business_date: date = Field(sa_column=Column(Date, nullable=False))
    account_id: str = Field(max_length=64)
    kind: str = Field(max_length=16, description="missing | extra | quantity | basis | date | cash")
    symbol: str | None = Field(default=None, max_length=16)
    lot_id: str | None = Field(default=None, max_length=200)
    # what each side holds, decimals as strings (None: the side has nothing)
    ours: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONB, nullable=True))
    theirs: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONB, nullable=True))
    policy: str = Field(max_length=16, description="suspend | flag | accept")
    # open | superseded (a later day's comparison of the account replaced it)
    status: str = Field(max_length=16, description="open | superseded | resolved")
    load_id: str = Field(max_length=64)
    found_at: datetime = Field(default_factory=_now, sa_column=_timestamp())
    # how it was resolved (keep-ours | accept-custodian), by whom (`policy`: the accept
    # policy when its day was reconciled), when and why
    resolution: str | None = Field(default=None, max_length=32)
    resolved_by: str | None = Field(default=None, max_length=200)
    resolved_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    resolution_note: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


class Reconciliation(Table, table=True):
    """One custodian's day reconciled against the ledger: what was compared and found."""

    __tablename__ = "reconciliations"

    tenant: str = Field(primary_key=True, max_length=64)
    custodian: str = Field(primary_key=True, max_length=64)
    business_date: date = Field(sa_column=Column(Date, primary_key=True))
    load_id: str = Field(max_length=64)
    accounts: int = Field(sa_column=Column(BigInteger, nullable=False))
    lots_compared: int = Field(sa_column=Column(BigInteger, nullable=False))
    matched: int = Field(sa_column=Column(BigInteger, nullable=False))
    breaks: dict[str, int] = Field(sa_column=Column(JSONB, nullable=False), description="by kind")
    accounts_with_breaks: int = Field(sa_column=Column(BigInteger, nullable=False))
    reconciled_at: datetime = Field(default_factory=_now, sa_column=_timestamp())


metadata = Table.metadata

# Book loads staged and applied (ballast_common.book_loads; see taxlot_svc.book_load).
book_loads = define_book_loads(metadata)
# Custodian days uploaded and reconciled (ballast_common.book_loads; see taxlot_svc.custodian_day).
custodian_day_loads = define_book_loads(metadata, "custodian_day_loads")

# The audit trail of corporate actions, sleeve transfers and opening balances.
audit_records = define_audit_records(metadata)


class CustodianAccount(Table, table=True):
    """An account a custodian holds, as the custodian's most recent reconciled day listed it
    (its cash.csv): the accounts a transfer exception of that custodian holds from trading."""

    __tablename__ = "custodian_accounts"

    tenant: str = Field(primary_key=True, max_length=64)
    custodian: str = Field(primary_key=True, max_length=64)
    account_id: str = Field(primary_key=True, max_length=64)
    business_date: date = Field(sa_column=Column(Date, nullable=False))


class TransferException(Table, table=True):
    """A custodian's file set that is missing after its deadline, arrived late, or arrived
    empty, truncated or invalid (see taxlot_svc.custodian_monitor); open until the set
    arrives or a person resolves it."""

    __tablename__ = "transfer_exceptions"
    __table_args__ = (
        # one open exception of a kind per custodian day: the monitor's insert is idempotent
        Index(
            "ux_transfer_exceptions_open",
            "tenant",
            "custodian",
            "business_date",
            "kind",
            unique=True,
            postgresql_where=text("status = 'open'"),
        ),
        Index("ix_transfer_exceptions_tenant", "tenant", "status", "id"),
    )

    id: int | None = Field(
        default=None,
        sa_column=Column(BigInteger, Identity(always=False), primary_key=True),
    )
    tenant: str = Field(max_length=64)
    custodian: str = Field(max_length=64)
    business_date: date = Field(sa_column=Column(Date, nullable=False))
    kind: str = Field(max_length=16, description="missing | late | empty | truncated | invalid")
    status: str = Field(max_length=16, description="open | resolved")
    detail: str = Field(sa_column=Column(Text, nullable=False))
    problems: list[str] = Field(sa_column=Column(JSONB, nullable=False))
    deadline: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    opened_at: datetime = Field(default_factory=_now, sa_column=_timestamp())
    resolved_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    resolved_by: str | None = Field(default=None, max_length=200)
    resolution: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


class UnknownSecurity(Table, table=True):
    """A symbol of a custodian's files that the security master does not know (taxlot-svc
    knows securities from ``securities-changed``): an exception for the security master, open
    until ``securities-changed`` brings the symbol or a person resolves it. While open, the
    accounts holding it (``unknown_security_accounts``) are held from trading."""

    __tablename__ = "unknown_securities"
    __table_args__ = (
        # one open exception per custodian and symbol: a later day refreshes it
        Index(
            "ux_unknown_securities_open",
            "tenant",
            "custodian",
            "symbol",
            unique=True,
            postgresql_where=text("status = 'open'"),
        ),
        Index("ix_unknown_securities_tenant", "tenant", "status", "id"),
        Index("ix_unknown_securities_symbol", "symbol", "status"),
    )

    id: int | None = Field(
        default=None,
        sa_column=Column(BigInteger, Identity(always=False), primary_key=True),
    )
    tenant: str = Field(max_length=64)
    custodian: str = Field(max_length=64)
    business_date: date = Field(sa_column=Column(Date, nullable=False))
    symbol: str = Field(max_length=16)
    cusip: str | None = Field(default=None, max_length=12)
    name: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    first_file: str = Field(max_length=64)
    first_line: int = Field(sa_column=Column(BigInteger, nullable=False))
    rows: int = Field(sa_column=Column(BigInteger, nullable=False))
    last_business_date: date = Field(sa_column=Column(Date, nullable=False))
    load_id: str = Field(max_length=64)
    status: str = Field(max_length=16, description="open | resolved")
    opened_at: datetime = Field(default_factory=_now, sa_column=_timestamp())
    resolved_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    resolved_by: str | None = Field(default=None, max_length=200)
    resolution: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


class UnknownSecurityAccount(Table, table=True):
    """An account whose custodian's latest day has a position in a security the security
    master does not know (held from trading while its exception is open)."""

    __tablename__ = "unknown_security_accounts"

    tenant: str = Field(primary_key=True, max_length=64)
    custodian: str = Field(primary_key=True, max_length=64)
    symbol: str = Field(primary_key=True, max_length=16)
    account_id: str = Field(primary_key=True, max_length=64)
    business_date: date = Field(sa_column=Column(Date, nullable=False))


class CustodianTransaction(Table, table=True):
    """A row of a custodian's transactions.csv, taken once by (custodian, transaction id, lot
    id) (see taxlot_svc.custodian_ingest): what the ingest did with it (``outcome``) and
    why it did not apply it (``reason``)."""

    __tablename__ = "custodian_transactions"
    __table_args__ = (Index("ix_custodian_transactions_load", "tenant", "load_id", "outcome"),)

    tenant: str = Field(primary_key=True, max_length=64)
    custodian: str = Field(primary_key=True, max_length=64)
    transaction_id: str = Field(primary_key=True, max_length=64)
    lot_id: str = Field(primary_key=True, max_length=64, description="'' when the row names none")
    account_id: str = Field(max_length=64)
    type: str = Field(max_length=16)
    symbol: str | None = Field(default=None, max_length=16)
    quantity: Decimal | None = Field(default=None, sa_column=_exact(nullable=True))
    amount: Decimal | None = Field(default=None, sa_column=_money(nullable=True))
    price: Decimal | None = Field(default=None, sa_column=_exact(nullable=True))
    trade_date: date = Field(sa_column=Column(Date, nullable=False))
    business_date: date = Field(sa_column=Column(Date, nullable=False))
    load_id: str = Field(max_length=64)
    line: int = Field(sa_column=Column(BigInteger, nullable=False))
    # cash | transfer | ours (Ballast's own fill did it) | trade (applied as a fill) |
    # mismatch | no-ledger | refused | pending (while the day is applied)
    outcome: str = Field(max_length=16)
    reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    taken_at: datetime = Field(default_factory=_now, sa_column=_timestamp())


class CustodianDayFile(Table, table=True):
    """A file of a custodian's day as delivered (kept for audit, also of refused sets): its
    digest, and the digest the set's manifest gave it. Every version is kept."""

    __tablename__ = "custodian_day_files"
    __table_args__ = (
        Index("ix_custodian_day_files_day", "tenant", "custodian", "business_date", "name", "id"),
    )

    id: int | None = Field(
        default=None,
        sa_column=Column(BigInteger, Identity(always=False), primary_key=True),
    )
    tenant: str = Field(max_length=64)
    custodian: str = Field(max_length=64)
    business_date: date = Field(sa_column=Column(Date, nullable=False))
    name: str = Field(max_length=128)
    size: int = Field(sa_column=Column(BigInteger, nullable=False))
    sha256: str = Field(max_length=64)
    manifest_sha256: str | None = Field(default=None, max_length=64)
    received_by: str = Field(max_length=200)
    received_at: datetime = Field(default_factory=_now, sa_column=_timestamp())


class CustodianDayFileChunk(Table, table=True):
    """The bytes of a kept file, in order (a file of any size is stored and served in
    chunks, never held whole)."""

    __tablename__ = "custodian_day_file_chunks"

    file_id: int = Field(sa_column=Column(BigInteger, primary_key=True))
    n: int = Field(sa_column=Column(BigInteger, primary_key=True))
    content: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
