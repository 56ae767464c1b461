"""Request and response bodies of model-hub-svc's REST API.

Request bodies refuse unknown fields; prices and weights are decimal strings with at most the
decimals this service stores (prices 6, weights 10), so a model is published as it is stored.
"""

from datetime import datetime
from decimal import Decimal
from typing import Annotated

from ballast_common.contracts.types import Price, PriceIn, RequestBody, WeightIn
from pydantic import BaseModel, Field


class SecurityIn(RequestBody):
    symbol: str = Field(min_length=1, max_length=16, pattern=r"^[A-Z0-9.\-]+$")
    name: str = Field(min_length=1, max_length=200)
    asset_class: str = Field(min_length=1, max_length=64)
    sector: str = Field(min_length=1, max_length=64)
    price: PriceIn
    fractional_eligible: bool = False
    cusip: str | None = Field(default=None, min_length=9, max_length=9)


class SecuritiesIn(RequestBody):
    securities: list[SecurityIn] = Field(min_length=1, max_length=10000)


class SecurityOut(BaseModel):
    symbol: str
    name: str
    asset_class: str
    sector: str
    price: Price
    fractional_eligible: bool
    cusip: str | None
    updated_at: datetime


class TargetIn(RequestBody):
    symbol: str = Field(min_length=1, max_length=16)
    weight: WeightIn


class ModelIn(RequestBody):
    name: str = Field(min_length=1, max_length=200)
    targets: list[TargetIn] = Field(min_length=1, max_length=2000)


class TargetOut(BaseModel):
    symbol: str
    weight: Decimal


class ModelOut(BaseModel):
    model_id: str
    tenant: str
    name: str
    version: int
    changed_by: str
    created_at: datetime
    targets: list[TargetOut]


class ModelPublished(ModelOut):
    created: bool = Field(description="false if the targets equal the current version's")


class ModelSummary(BaseModel):
    model_id: str
    tenant: str
    name: str
    current_version: int
    updated_at: datetime


class EquivalenceSetIn(RequestBody):
    name: str = Field(min_length=1, max_length=200)
    members: list[Annotated[str, Field(min_length=1, max_length=16)]] = Field(
        min_length=2, max_length=500
    )
    identical: bool = Field(
        default=False,
        description="the members are substantially identical (a loss on one is washed by "
        "buying another), e.g. two S&P 500 index funds",
    )


class EquivalenceSetOut(BaseModel):
    set_id: str
    tenant: str
    name: str
    members: list[str]
    identical: bool
    removed: bool
    version: int
    changed_by: str
    updated_at: datetime


class EquivalenceSetPublished(EquivalenceSetOut):
    created: bool = Field(description="false if nothing changed")
