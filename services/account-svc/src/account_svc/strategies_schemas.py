"""Request and response bodies of reusable strategies (strategies_api.py)."""

from datetime import datetime
from decimal import Decimal
from typing import Literal

from ballast_common.contracts.types import RequestBody
from pydantic import BaseModel, Field

from account_svc.rules import MAX_SLEEVES
from account_svc.schemas import Percent, SleeveIn, Strategy


class ReusableStrategyIn(Strategy):
    """A UMA strategy many accounts may follow: sleeves of models with weights and bands, and
    where a strategic rebalance stops a moved sleeve."""

    name: str = Field(min_length=1, max_length=200)


class ReusableStrategyOut(BaseModel):
    strategy_id: str
    name: str
    version: int = Field(description="1, then one more for every change")
    sleeves: list[SleeveIn]
    rebalance_range: Literal["target", "band", "interior"]
    interior_pct: Decimal
    followers: int = Field(description="accounts that follow it")
    updated_by: str
    updated_at: datetime


class AccountStrategyIn(RequestBody):
    """An account's strategy: a reusable one to follow (`strategy_id`), or its own sleeves
    (and range), exactly as before there were reusable strategies."""

    strategy_id: str | None = Field(default=None, min_length=1, max_length=64)
    sleeves: list[SleeveIn] | None = Field(default=None, min_length=1, max_length=MAX_SLEEVES)
    rebalance_range: Literal["target", "band", "interior"] = "target"
    interior_pct: Percent = Field(
        default=Decimal("50"),
        description="interior: the distance left to target, in percent of the band",
    )
