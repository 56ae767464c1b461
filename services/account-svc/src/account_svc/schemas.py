"""Request and response bodies of account-svc's REST API."""

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

AccountType = Literal["taxable", "ira"]
AccountStatus = Literal["active", "suspended", "closed"]
Identifier = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")


class AccountIn(BaseModel):
    account_id: str = Identifier
    tenant: str = Field(default="demo", min_length=1, max_length=64)
    household_id: str = Identifier
    name: str = Field(min_length=1, max_length=200)
    account_type: AccountType = "taxable"
    model_id: str | None = None
    auto_approve: bool = True


class AccountsIn(BaseModel):
    accounts: list[AccountIn] = Field(min_length=1, max_length=5000)


class AccountPatch(BaseModel):
    """Fields to change; absent fields stay as they are."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    model_id: str | None = None
    status: AccountStatus | None = None
    auto_approve: bool | None = None


class AccountOut(AccountIn):
    status: AccountStatus
    created_at: datetime
    updated_at: datetime


class ProposalOut(BaseModel):
    proposal_id: str
    account_id: str
    run_id: str
    model_id: str
    model_version: int
    status: Literal["pending", "approved", "rejected"]
    trades: list[dict[str, Any]]
    received_at: datetime
    decided_by: str | None
    decided_at: datetime | None
    decision_note: str | None


class Decision(BaseModel):
    note: str | None = Field(default=None, max_length=1000)
