"""Request and response bodies of cash requests (POST/GET /cash-requests)."""

import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Literal

from ballast_common.contracts.types import (
    MAX_AMOUNT,
    Money,
    Omittable,
    RequestBody,
    RequestDecimal,
)
from pydantic import BaseModel, Field

from rebalance_svc.schemas import RunOut

CashKind = Literal["withdrawal", "deposit"]
CashStatus = Literal["waiting", "started", "proposed", "done", "failed"]
PositiveMoneyIn = Annotated[
    Decimal, RequestDecimal("a positive amount of money", places=2, gt=0, lt=MAX_AMOUNT)
]
MAX_REQUESTS = 10_000


class CashRequestIn(RequestBody):
    account_id: str = Field(min_length=1, max_length=64)
    kind: CashKind = Field(description="withdrawal: raise the cash (sells); deposit: invest it")
    amount: PositiveMoneyIn
    on: Omittable[date] = Field(
        default=None, description="the day it is raised or invested (default: today, UTC)"
    )
    sleeve_id: Omittable[str] = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="a UMA's sleeve it comes from or goes to (default: the strategy decides)",
    )
    note: Omittable[str] = Field(default=None, max_length=500)


class CashRequestsIn(RequestBody):
    requests: list[CashRequestIn] = Field(
        min_length=1, max_length=MAX_REQUESTS, description="one per account at most"
    )


class CashRequestOut(BaseModel):
    request_id: uuid.UUID
    account_id: str
    kind: CashKind
    amount: Money
    on: date = Field(description="the day it is due")
    sleeve_id: str | None
    note: str | None
    status: CashStatus = Field(
        description="waiting (for its day), started (in run_id), proposed (proposal_id), done "
        "(its trades settled, or none were needed), failed (reason)"
    )
    run_id: uuid.UUID | None
    proposal_id: uuid.UUID | None
    reason: str | None = Field(
        description="why it failed, or what the engine noted (e.g. a shortfall)"
    )
    requested_by: str
    requested_at: datetime
    updated_at: datetime


class CashRequestsAccepted(BaseModel):
    run: RunOut | None = Field(description="the run of the requests due today (none: no such)")
    requests: list[CashRequestOut] = Field(description="every request of the body, in its order")
