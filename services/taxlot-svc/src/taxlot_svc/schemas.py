"""Request and response bodies of taxlot-svc's REST API.

Request bodies refuse unknown fields. Incoming numbers are decimal strings (or JSON integers)
of bounded size; the rules on them (signs, cents, dates) are checked by
:mod:`taxlot_svc.opening` so every problem is reported at once, named by its path
(``accounts[3].positions[1].quantity``).
"""

from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Literal, TypeAlias

from ballast_common.contracts.events import ReliefMethodField
from ballast_common.contracts.types import (
    DecimalIn,
    Money,
    NonNegativeDecimalIn,
    NonNegativeMoney,
    PercentIn,
    PositiveDecimalIn,
    Quantity,
    RequestBody,
)
from pydantic import BaseModel, Field, PlainSerializer

ACCOUNT_ID_PATTERN = r"^[A-Za-z0-9_.\-]{1,64}$"
MAX_BATCH_ACCOUNTS = 2000
# Holdings batches are the largest bodies this service takes.
MAX_BATCH_BYTES = 64 * 1024 * 1024

Number: TypeAlias = DecimalIn
Exact = Annotated[Decimal, PlainSerializer(lambda v: format(v, "f"), return_type=str)]
SYMBOL = r"^[A-Z0-9.\-]{1,16}$"
Symbol = Annotated[str, Field(pattern=SYMBOL)]
PositiveNumber: TypeAlias = PositiveDecimalIn
NonNegativeNumber: TypeAlias = NonNegativeDecimalIn
Rate = Annotated[Decimal, Field(ge=0, le=1, allow_inf_nan=False)]


SLEEVE_ID_PATTERN = ACCOUNT_ID_PATTERN
SleeveId = Annotated[str, Field(pattern=SLEEVE_ID_PATTERN)]


class LotIn(RequestBody):
    quantity: Number
    cost_basis: Number = Field(description="total basis of the lot, in cents")
    acquired_on: date
    sleeve_id: SleeveId | None = Field(
        default=None, description="UMA: the sleeve holding the lot (default: the position's)"
    )


class PositionIn(RequestBody):
    symbol: str
    sleeve_id: SleeveId | None = Field(
        default=None, description="UMA: the sleeve holding the position's lots"
    )
    quantity: Number | None = Field(default=None, description="required unless lots are given")
    cost_basis: Number | None = Field(default=None, description="required unless lots are given")
    acquired_on: date | None = Field(default=None, description="required unless lots are given")
    lots: list[LotIn] | None = Field(
        default=None, max_length=10000, description="several lots of this position"
    )


class SleeveCashIn(RequestBody):
    sleeve_id: SleeveId
    amount: Number = Field(description="in cents, not negative")


class HoldingsIn(RequestBody):
    """An opening balance. A UMA states each lot's sleeve and may state each sleeve's cash:
    sleeves are all or nothing (once a lot or cash names a sleeve, every lot must)."""

    as_of: date
    cash: Number = Field(description="the account's cash, its sleeves' included")
    sleeve_cash: list[SleeveCashIn] = Field(
        default_factory=list,
        max_length=100,
        description="UMA: the part of cash each sleeve holds; the rest is the account's own",
    )
    positions: list[PositionIn] = Field(default_factory=list, max_length=10000)


class AccountHoldingsIn(HoldingsIn):
    account_id: str = Field(min_length=1, max_length=64)


class HoldingsBatchIn(RequestBody):
    accounts: list[AccountHoldingsIn] = Field(min_length=1, max_length=MAX_BATCH_ACCOUNTS)


class PositionOut(BaseModel):
    symbol: str
    quantity: Quantity
    cost_basis: NonNegativeMoney


class SleeveCashOut(BaseModel):
    sleeve_id: str | None = Field(description="null: the account's own cash, in no sleeve")
    amount: Money


class HoldingsOut(BaseModel):
    account_id: str
    tenant: str
    as_of: date
    cash: Money
    sleeve_cash: list[SleeveCashOut] = Field(
        default_factory=list,
        description="a UMA's cash per sleeve, adding up to cash (empty: kept whole)",
    )
    positions: list[PositionOut]
    updated_at: datetime


class BatchResult(BaseModel):
    accounts: int
    lots: int


class LotOut(BaseModel):
    lot_id: str
    symbol: str
    quantity: Quantity
    cost_basis: NonNegativeMoney
    acquired_on: date
    holding_start: date
    cause: str = Field(description="opening-balance | fill")
    fill_id: str | None
    wash_adjustment: NonNegativeMoney = Field(
        default=Decimal(0), description="disallowed wash-sale loss included in the basis"
    )
    replacement: bool = Field(
        default=False, description="these shares already absorbed one wash-sale loss"
    )
    sleeve: str = Field(default="", description="the sleeve holding the lot ('' = none)")


class LotsOut(BaseModel):
    account_id: str
    lots: list[LotOut]


class GainOut(BaseModel):
    fill_id: str = Field(description="the sale: a fill id, or a corporate action's id")
    cause: str = Field(default="fill", description="fill | corporate-action")
    lot_id: str
    symbol: str
    quantity: Quantity
    proceeds: NonNegativeMoney
    cost_basis: NonNegativeMoney
    gain: Money = Field(description="proceeds - cost_basis, before any wash-sale adjustment")
    term: str = Field(description="short | long")
    acquired_on: date
    holding_start: date = Field(description="Form 8949 date acquired (wash-sale adjusted)")
    sold_on: date
    code: str = Field(default="", description="'W' when a wash sale disallowed (part of) a loss")
    adjustment: NonNegativeMoney = Field(default=Decimal(0), description="loss disallowed")
    permanent: NonNegativeMoney = Field(
        default=Decimal(0), description="part of the adjustment lost for good (IRA replacement)"
    )
    washed_quantity: Quantity = Field(default=Decimal(0))
    gain_loss: Money = Field(description="proceeds - cost_basis + adjustment (Form 8949 (h))")
    reportable: bool = Field(default=True, description="false in an IRA")


class GainsOut(BaseModel):
    account_id: str
    year: int | None = None
    short_term: Money = Field(description="reportable short-term gain/loss after adjustments")
    long_term: Money
    total: Money
    disallowed: NonNegativeMoney = Decimal(0)
    permanently_disallowed: NonNegativeMoney = Decimal(0)
    estimated_tax: Money | None = Field(
        default=None, description="at the account's rates, when both are set"
    )
    gains: list[GainOut]


class TaxSettingsOut(BaseModel):
    """An account's relief method and rates as taxlot-svc uses them. They are set in
    account-svc (``PUT /accounts/{id}/tax-settings`` there) and arrive here with
    ``account-changed``; this service only reads them."""

    account_id: str
    method: ReliefMethodField = Field(
        title="Method", description="lot relief for sells that name no lot"
    )
    short_term_rate: Rate | None = Field(default=None, description="0.37 = 37%")
    long_term_rate: Rate | None = None
    source: Literal["account-changed", "default"] = Field(
        description="account-changed: as account-svc last stated them; default: account-svc "
        "has not described the account yet (fifo, no rates: no tax estimate)"
    )
    set_in: str = Field(
        default="account-svc: PUT /accounts/{account_id}/tax-settings",
        description="where the settings are changed",
    )
    updated_at: datetime | None = None


class LotValueOut(BaseModel):
    lot_id: str
    symbol: str
    quantity: Quantity
    cost_basis: NonNegativeMoney
    holding_start: date
    price: Exact
    market_value: Money
    unrealized: Money
    term: str = Field(description="short | long if sold today")


class UnrealizedOut(BaseModel):
    account_id: str
    on: date
    prices: str = Field(description="from-last-fill | security-master")
    short_term: Money
    long_term: Money
    total: Money
    lots: list[LotValueOut]
    unpriced: list[str] = Field(description="symbols held without a price (left out)")


class BuyBlockOut(BaseModel):
    symbols: list[str]
    until: date
    quantity: Quantity
    loss: NonNegativeMoney
    sales: list[str]
    reason: str


class SellBlockOut(BaseModel):
    account_id: str
    lot_id: str
    symbol: str
    washable_quantity: Quantity
    until: date
    purchases: list[str]
    reason: str


class WashSaleBlocksOut(BaseModel):
    household_id: str
    on: date
    accounts: list[str]
    buy_blocks: list[BuyBlockOut] = Field(
        description="what no account of the household may buy now without washing a loss"
    )
    sell_blocks: list[SellBlockOut] = Field(
        description="lots that recent household purchases would wash if sold at a loss"
    )


class _ActionBase(RequestBody):
    action_id: str = Field(min_length=1, max_length=200)
    symbol: Symbol
    on: date = Field(description="effective date (ex-date)")


class _Fractions(RequestBody):
    cash_price: NonNegativeNumber = Field(
        default=Decimal(0), description="cash in lieu per NEW share for fractions"
    )
    share_quantum: PositiveNumber = Field(
        default=Decimal(1), description="smallest holdable share (1 = whole shares)"
    )


class SplitIn(_ActionBase, _Fractions):
    type: Literal["split", "reverse-split"]
    numerator: int = Field(gt=0, le=1_000_000, description="new shares ...")
    denominator: int = Field(gt=0, le=1_000_000, description="... for this many old shares")


class SymbolChangeIn(_ActionBase):
    type: Literal["symbol-change"]
    new_symbol: Symbol


class CashMergerIn(_ActionBase):
    type: Literal["cash-merger"]
    cash_per_share: NonNegativeNumber


class StockMergerIn(_ActionBase, _Fractions):
    type: Literal["stock-merger"]
    new_symbol: Symbol
    ratio: PositiveNumber = Field(description="new shares per old share")


class SpinOffIn(_ActionBase, _Fractions):
    type: Literal["spin-off"]
    new_symbol: Symbol
    ratio: PositiveNumber = Field(description="new shares per share held")
    basis_percent: PercentIn


class CashDividendIn(_ActionBase):
    type: Literal["cash-dividend"]
    per_share: NonNegativeNumber


CorporateActionIn = Annotated[
    SplitIn | SymbolChangeIn | CashMergerIn | StockMergerIn | SpinOffIn | CashDividendIn,
    Field(discriminator="type"),
]


class ActionAccountOut(BaseModel):
    account_id: str
    cash_change: Money
    realized_lots: int = Field(description="lots (partly) sold by the action")


class CorporateActionOut(BaseModel):
    action_id: str
    type: str
    symbol: str
    on: date
    repeated: bool = Field(default=False, description="true: applied before, nothing changed")
    accounts: list[ActionAccountOut]


class SleeveTransferIn(RequestBody):
    """Move shares of one security between sleeves of an account: no taxable event, the
    lots keep their basis and dates."""

    transfer_id: str = Field(min_length=1, max_length=200, description="idempotency key")
    symbol: Symbol
    quantity: PositiveNumber
    from_sleeve: str = Field(default="", max_length=64, description="'' = no sleeve")
    to_sleeve: str = Field(default="", max_length=64)
    lot_ids: list[Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^;]+$")]] = Field(
        default_factory=list, description="lots to move (FIFO otherwise)"
    )
    on: date | None = Field(default=None, description="effective date (default today)")


class SleeveTransferOut(BaseModel):
    transfer_id: str
    account_id: str
    symbol: str
    quantity: Quantity
    from_sleeve: str
    to_sleeve: str
    on: date
    moved: list[LotOut]
    repeated: bool = False


class SleeveCashTransferIn(RequestBody):
    """Move cash between sleeves of an account (or between a sleeve and the account's own
    cash, ``''``): the account's cash does not change."""

    transfer_id: str = Field(min_length=1, max_length=200, description="idempotency key")
    amount: PositiveNumber = Field(description="in cents")
    from_sleeve: Annotated[str, Field(pattern=r"^([A-Za-z0-9_.\-]{1,64})?$")] = Field(
        default="", description="'' = the account's own cash"
    )
    to_sleeve: Annotated[str, Field(pattern=r"^([A-Za-z0-9_.\-]{1,64})?$")] = Field(
        default="", description="'' = the account's own cash"
    )


class SleeveCashTransferOut(BaseModel):
    transfer_id: str
    account_id: str
    amount: Money
    from_sleeve: str
    to_sleeve: str
    cash: Money = Field(description="the account's cash (unchanged)")
    sleeve_cash: list[SleeveCashOut]
    repeated: bool = False


class BreakCountsOut(BaseModel):
    missing: int
    extra: int
    quantity: int
    basis: int
    date: int
    cash: int


class ReconciliationOut(BaseModel):
    """A custodian's day reconciled: accounts and lots compared, lots matched, breaks."""

    custodian: str
    business_date: date
    load_id: str
    accounts: int
    lots_compared: int
    matched: int
    breaks: BreakCountsOut
    accounts_with_breaks: int
    reconciled_at: datetime


BreakResolution = Literal["keep-ours", "accept-custodian"]


class ResolutionOut(BaseModel):
    resolution: BreakResolution
    note: str
    resolved_by: str = Field(
        description="who resolved it (the token's `sub`; `policy`: the accept policy)"
    )
    resolved_at: datetime


class BreakOut(BaseModel):
    """One difference between the custodian and the ledger; `ours`/`theirs` hold each side's
    quantity, cost_basis and acquired_on (a cash break: cash), decimals as strings."""

    id: int
    custodian: str
    business_date: date
    account_id: str
    kind: Literal["missing", "extra", "quantity", "basis", "date", "cash"]
    symbol: str | None
    lot_id: str | None
    ours: dict[str, str] | None
    theirs: dict[str, str] | None
    policy: Literal["suspend", "flag", "accept"]
    status: str
    load_id: str
    found_at: datetime
    resolved: ResolutionOut | None = Field(
        default=None, description="how, by whom, when and why it was resolved (if it was)"
    )


class BreakResolutionIn(RequestBody):
    """How a person resolves an open break, and why (kept in the audit trail)."""

    resolution: BreakResolution = Field(
        description="keep-ours: the ledger's figure stands and the break is closed; "
        "accept-custodian: the ledger is adjusted to the custodian's figure"
    )
    note: str = Field(min_length=1, max_length=1000, description="why, in words")


class AdjustmentOut(BaseModel):
    """A ledger entry of an accepted break (cause `reconciliation:<break id>`)."""

    account_id: str
    cause: str
    kind: str = Field(description="lot-open | lot-relieve | lot-adjust | cash")
    symbol: str | None
    lot_id: str | None
    quantity: Decimal | None = Field(description="shares opened, relieved or added (signed)")
    amount: Decimal = Field(description="basis opened, relieved or added; cash added (signed)")


class ResolvedBreakOut(BreakOut):
    """The break, now resolved; `account_released` when it was the account's last open
    break that held it from trading (trading-hold-changed published); `adjustments`: the
    ledger entries of an accepted figure."""

    resolution: ResolutionOut
    account_released: bool
    adjustments: list[AdjustmentOut] = Field(default_factory=list)


class BreaksOut(BaseModel):
    breaks: list[BreakOut]
    next_after: int | None = Field(description="pass as `after` for the next page (None: last)")
