"""Response bodies of rebalance-svc's REST API."""

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class RunOut(BaseModel):
    run_id: str
    started_by: str | None = Field(
        default=None, description="who started it (the token's subject); null: an event did"
    )
    trigger: str = Field(description="model-change, scan, interval-scan, harvest, ...")
    kind: str = Field(description="rebalance, scan or harvest")
    model_id: str = Field(description="the changed model; '*' for a scan or a harvest")
    model_version: int
    rebalance_out_of_tolerance: bool
    started_at: datetime
    finished_at: datetime | None = Field(description="when its last chunk was done")
    complete: bool
    accounts: int = Field(description="accounts the run covers")
    chunks: int
    chunks_done: int = Field(description="completed or failed")
    chunks_failed: int
    accounts_evaluated: int
    accounts_out_of_tolerance: int
    accounts_skipped: int
    proposals: int
    trades: int
    skipped: dict[str, str] = Field(
        default_factory=dict,
        description="why accounts were not rebalanced (the first 1,000 by account id)",
    )


class ReadModelStatus(BaseModel):
    securities: int
    models: int
    accounts: int
    accounts_with_holdings: int
    uma_sleeves: int = 0
    security_lists: int = 0
    equivalence_sets: int = 0
    runs: int
    trades_in_flight: int = Field(
        description="trades proposed and not settled yet: their accounts wait for them"
    )


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
