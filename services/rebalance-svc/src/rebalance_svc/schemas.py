"""Response bodies of rebalance-svc's REST API."""

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class RunOut(BaseModel):
    run_id: str
    trigger: str
    model_id: str
    model_version: int
    started_at: datetime
    finished_at: datetime
    accounts_evaluated: int
    accounts_out_of_tolerance: int
    proposals: int
    trades: int
    skipped: dict[str, str]


class ReadModelStatus(BaseModel):
    securities: int
    models: int
    accounts: int
    accounts_with_holdings: int
    uma_sleeves: int = 0
    security_lists: int = 0
    equivalence_sets: int = 0
    runs: int


class ScanIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rebalance: bool = Field(
        default=False, description="also rebalance the accounts out of tolerance"
    )


class HarvestIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    accounts: list[str] | None = Field(
        default=None,
        max_length=100_000,
        description="harvest these accounts (each must have harvesting on); default: every "
        "account with harvesting on",
    )
