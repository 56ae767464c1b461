from decimal import Decimal

from ballast_common.settings import ServiceSettings, service_config
from pydantic import Field


class Settings(ServiceSettings):
    model_config = service_config("REBALANCE_SVC_")

    # A security within this much (absolute weight) of its target is not traded.
    security_tolerance: Decimal = Decimal("0.005")
    # Cash within this much (absolute weight) of its target is left alone, not invested.
    cash_band: Decimal = Decimal("0.02")
    # Trades smaller than this (in dollars) are not proposed.
    min_trade_value: Decimal = Decimal("25")
    # Drift scan every this many seconds (0: off; POST /scans runs one on demand).
    scan_interval_seconds: float = 0.0
    # Whether the interval scan also rebalances the accounts out of tolerance.
    scan_rebalance: bool = False
    # Accounts per chunk of a run: each chunk is one message, one transaction, on any instance.
    chunk_size: int = Field(default=100, ge=1, le=5000)
    # How often a chunk that fails is tried before it is dead-lettered (and counted failed).
    chunk_attempts: int = Field(default=2, ge=1, le=10)
    # Tax-loss harvesting every this many seconds (0: off; POST /harvests runs one on demand).
    harvest_interval_seconds: float = 0.0
    # Cash requests: every this many seconds, those due by today start (0: off).
    cash_sweep_interval_seconds: float = Field(default=60.0, ge=0)
