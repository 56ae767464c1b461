"""custodian-gateway's settings (env prefix `CUSTODIAN_GATEWAY_`, shared `BALLAST_*`)."""

from typing import Literal

from ballast_common.settings import ServiceSettings, service_config
from pydantic import Field


class Settings(ServiceSettings):
    model_config = service_config("CUSTODIAN_GATEWAY_")

    # Base URL of the custodian (the simulator in tools/custodian-sim by default).
    custodian_url: str = "http://127.0.0.1:8009"
    # Name of that custodian: approved trades are allocated to it, and its blocks and poll
    # cursor carry the name (a second custodian is a second name, not new code).
    custodian_id: str = Field(default="default", min_length=1, max_length=64)
    # The account block orders are placed under at the custodian (the omnibus account).
    block_account_id: str = Field(
        default="BALLAST-BLOCK", min_length=1, max_length=128, pattern=r"^\S(.*\S)?$"
    )
    # Approved trades are blocked once none has arrived for this long (the fan-out has
    # gathered: one order per security and side for all of it)...
    block_window_s: float = Field(default=0.25, ge=0, le=60)
    # ...or once the oldest has waited this long, while a long fan-out still streams in.
    block_max_wait_s: float = Field(default=5.0, ge=0, le=600)
    # Most approved trades gathered by one blocking step (one statement, one transaction).
    block_max_allocations: int = Field(default=50_000, ge=1, le=1_000_000)
    # Timeout of every HTTP call to the custodian.
    http_timeout_s: float = Field(default=5.0, gt=0)
    # Most orders sent in one POST /orders.
    send_batch_size: int = Field(default=500, ge=1, le=5000)
    # Pause of the order sender when it found less than a full batch.
    send_interval_s: float = Field(default=0.2, gt=0)
    # Pause of the execution poller when a page was not full.
    poll_interval_s: float = Field(default=0.2, gt=0)
    # Most executions asked for per GET /executions.
    poll_page_size: int = Field(default=1000, ge=1, le=5000)
    # Longest pause of the order sender and the execution poller while there is nothing to
    # do: they poll less and less often when idle, and wake at once when approved trades
    # arrive or orders go out.
    idle_poll_max_s: float = Field(default=5.0, gt=0, le=600)
    # Longest back-off while the custodian is unavailable.
    max_backoff_s: float = Field(default=10.0, gt=0)
    # How often, while idle, the poller checks that the custodian's sequence did not restart.
    reset_check_interval_s: float = Field(default=5.0, gt=0)
    # Settling sent orders (on start, and when the custodian's sequence went back): orders
    # asked about per transaction, and status requests in flight at once.
    settle_chunk_size: int = Field(default=500, ge=1, le=5000)
    status_check_concurrency: int = Field(default=8, ge=1, le=100)
    # Telling the custodian each account's share of a block (and a sell's lots): most
    # allocations per POST /allocations, and the sender's pause while there are few.
    booking_batch_size: int = Field(default=500, ge=1, le=5000)
    booking_interval_s: float = Field(default=0.2, gt=0)
    # How block orders go to the custodian: its HTTP API, or a FIX 4.4 session (docs/fix.md;
    # allocations are booked over HTTP either way).
    order_protocol: Literal["http", "fix"] = "http"
    # The FIX session: the custodian's acceptor, the comp ids, the heartbeat interval, where
    # the session keeps its sequence numbers and journal, and how long an OrderStatusRequest
    # or OrderCancelRequest may wait for its answer.
    fix_host: str = "127.0.0.1"
    fix_port: int = Field(default=9878, ge=1, le=65535)
    fix_sender_comp_id: str = Field(default="BALLAST", min_length=1, max_length=64)
    fix_target_comp_id: str = Field(default="CUSTODIAN", min_length=1, max_length=64)
    fix_heartbeat_s: int = Field(default=30, ge=1, le=3600)
    fix_store_dir: str = ".state/custodian-gateway/fix"
    fix_request_timeout_s: float = Field(default=5.0, gt=0)
