"""Simulator settings, read from the environment with the ``SIM_`` prefix."""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def default_store_path() -> str:
    """``custodian-sim/book.sqlite3`` under the state folder (BALLAST_STATE_DIR, else .state)."""
    state = Path(os.environ.get("BALLAST_STATE_DIR") or ".state")
    return str(state / "custodian-sim" / "book.sqlite3")


def default_files_dir() -> str:
    """``custodian-sim/files`` under the state folder: where the daily files are written."""
    state = Path(os.environ.get("BALLAST_STATE_DIR") or ".state")
    return str(state / "custodian-sim" / "files")


class SimSettings(BaseSettings):
    """How the simulated custodian behaves (every field is ``SIM_<NAME>`` in the environment)."""

    model_config = SettingsConfigDict(env_prefix="SIM_", extra="ignore")

    latency_ms: Annotated[float, Field(ge=0)] = 50.0
    """Base delay between acceptance and each execution."""
    latency_jitter_ms: Annotated[float, Field(ge=0)] = 20.0
    """Each delay gets an extra uniform random 0..jitter ms."""
    partial_fill_probability: Annotated[float, Field(ge=0, le=1)] = 0.3
    """Chance that an order is filled in more than one piece."""
    max_fills: Annotated[int, Field(ge=1, le=100)] = 3
    """Most pieces a partially filled order is split into."""
    slippage_bps: Annotated[Decimal, Field(ge=0, lt=10_000)] = Decimal(0)
    """Adverse price move applied to every fill (buys pay more, sells get less)."""
    reject_probability: Annotated[float, Field(ge=0, le=1)] = 0.0
    """Chance that an order is rejected outright."""
    cancel_rest_probability: Annotated[float, Field(ge=0, le=1)] = 0.0
    """Chance that an order filled in pieces has its last piece rejected instead (the rest
    cancelled): it ends partially filled, then rejected."""
    reject_symbols: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Symbols always rejected (comma-separated in the environment)."""
    seed: int = 7
    """Seed of the per-order random decisions (split, reject, latency)."""
    max_orders_per_request: Annotated[int, Field(ge=1)] = 5000
    store_path: Annotated[str, Field(min_length=1)] = Field(default_factory=default_store_path)
    """The SQLite file the book is kept in (survives restarts); ``:memory:`` keeps it in the
    process only (unit tests)."""
    files_dir: Annotated[str, Field(min_length=1)] = Field(default_factory=default_files_dir)
    """Where `POST /files/{date}` writes a day's set: `<files_dir>/<custodian>/<date>/`."""
    custodian_name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")] = "ballast"
    """The custodian's name: the daily files' parent folder, which names their format."""
    max_allocations_per_request: Annotated[int, Field(ge=1)] = 5000
    log_level: str = "INFO"
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 8009
    fix_port: Annotated[int | None, Field(ge=0, le=65535)] = None
    """Where the FIX 4.4 acceptor listens (on `host`); unset: no FIX session (0: any free
    port, for tests)."""
    fix_sender_comp_id: Annotated[str, Field(min_length=1, max_length=64)] = "CUSTODIAN"
    """Our SenderCompID(49): the gateway's CUSTODIAN_GATEWAY_FIX_TARGET_COMP_ID."""
    fix_target_comp_id: Annotated[str, Field(min_length=1, max_length=64)] = "BALLAST"
    """The initiator's SenderCompID: the gateway's CUSTODIAN_GATEWAY_FIX_SENDER_COMP_ID."""
    fix_heartbeat_s: Annotated[int, Field(ge=1, le=3600)] = 30
    """HeartBtInt until the initiator's Logon says its own (which the session then keeps)."""
    fix_store_path: str | None = None
    """The FIX session's sequence numbers and sent messages (a SQLite file); default: beside
    the book, `<store_path>.fix-session`; in memory when the book is."""

    def fix_session_store(self) -> str | None:
        """The FIX session store's file (None: in memory, with a book kept in memory)."""
        if self.fix_store_path:
            return self.fix_store_path
        if self.store_path == ":memory:":
            return None
        return f"{self.store_path}.fix-session"

    @field_validator("reject_symbols", mode="before")
    @classmethod
    def _split_symbols(cls, value: object) -> object:
        if isinstance(value, str):
            return [s.strip().upper() for s in value.split(",") if s.strip()]
        if isinstance(value, list | tuple):
            return [str(s).strip().upper() for s in value if str(s).strip()]
        return value
