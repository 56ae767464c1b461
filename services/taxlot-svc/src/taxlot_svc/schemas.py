"""Request and response bodies of taxlot-svc's REST API.

Incoming numbers are plain Decimals (JSON strings or numbers); the rules on them (signs,
cents, dates) are checked by :mod:`taxlot_svc.opening` so every problem is reported at
once, named by its path (``accounts[3].positions[1].quantity``).
"""

from datetime import date, datetime
from decimal import Decimal
from typing import Annotated

from ballast_common.contracts.types import Money, NonNegativeMoney, Quantity
from pydantic import BaseModel, Field

ACCOUNT_ID_PATTERN = r"^[A-Za-z0-9_.\-]{1,64}$"
MAX_BATCH_ACCOUNTS = 2000

Number = Annotated[Decimal, Field(allow_inf_nan=False)]


class LotIn(BaseModel):
    quantity: Number
    cost_basis: Number = Field(description="total basis of the lot, in cents")
    acquired_on: date


class PositionIn(BaseModel):
    symbol: str
    quantity: Number | None = Field(default=None, description="required unless lots are given")
    cost_basis: Number | None = Field(default=None, description="required unless lots are given")
    acquired_on: date | None = Field(default=None, description="required unless lots are given")
    lots: list[LotIn] | None = Field(
        default=None, max_length=10000, description="several lots of this position"
    )


class HoldingsIn(BaseModel):
    tenant: str = Field(default="demo", min_length=1, max_length=64)
    as_of: date
    cash: Number
    positions: list[PositionIn] = Field(default_factory=list, max_length=10000)


class AccountHoldingsIn(HoldingsIn):
    account_id: str = Field(min_length=1, max_length=64)


class HoldingsBatchIn(BaseModel):
    accounts: list[AccountHoldingsIn] = Field(min_length=1, max_length=MAX_BATCH_ACCOUNTS)


class PositionOut(BaseModel):
    symbol: str
    quantity: Quantity
    cost_basis: NonNegativeMoney


class HoldingsOut(BaseModel):
    account_id: str
    tenant: str
    as_of: date
    cash: Money
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


class LotsOut(BaseModel):
    account_id: str
    lots: list[LotOut]


class GainOut(BaseModel):
    fill_id: str
    lot_id: str
    symbol: str
    quantity: Quantity
    proceeds: NonNegativeMoney
    cost_basis: NonNegativeMoney
    gain: Money
    term: str = Field(description="short | long")
    acquired_on: date
    holding_start: date
    sold_on: date


class GainsOut(BaseModel):
    account_id: str
    short_term: Money
    long_term: Money
    total: Money
    gains: list[GainOut]
