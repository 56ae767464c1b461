"""Request and response bodies of model-hub-svc's REST API."""

from datetime import datetime
from decimal import Decimal

from ballast_common.contracts.types import Price, Weight
from pydantic import BaseModel, Field


class SecurityIn(BaseModel):
    symbol: str = Field(min_length=1, max_length=16, pattern=r"^[A-Z0-9.\-]+$")
    name: str = Field(min_length=1)
    asset_class: str = Field(min_length=1)
    sector: str = Field(min_length=1)
    price: Price
    fractional_eligible: bool = False
    cusip: str | None = Field(default=None, min_length=9, max_length=9)


class SecuritiesIn(BaseModel):
    securities: list[SecurityIn] = Field(min_length=1, max_length=10000)


class SecurityOut(SecurityIn):
    updated_at: datetime


class TargetIn(BaseModel):
    symbol: str = Field(min_length=1, max_length=16)
    weight: Weight


class ModelIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    tenant: str = Field(default="demo", min_length=1, max_length=64)
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


class EquivalenceSetIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    tenant: str = Field(default="demo", min_length=1, max_length=64)
    members: list[str] = Field(min_length=2, max_length=500)
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
