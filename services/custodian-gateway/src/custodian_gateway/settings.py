"""custodian-gateway's settings (env prefix `CUSTODIAN_GATEWAY_`, shared `BALLAST_*`)."""

from ballast_common.settings import ServiceSettings, service_config
from pydantic import Field


class Settings(ServiceSettings):
    model_config = service_config("CUSTODIAN_GATEWAY_")

    # Base URL of the custodian (the simulator in tools/custodian-sim by default).
    custodian_url: str = "http://127.0.0.1:8009"
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
    # Longest back-off while the custodian is unavailable.
    max_backoff_s: float = Field(default=10.0, gt=0)
    # How often, while idle, the poller checks that the custodian's sequence did not restart.
    reset_check_interval_s: float = Field(default=5.0, gt=0)
