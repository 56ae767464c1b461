from decimal import Decimal

from ballast_common.settings import ServiceSettings, service_config


class Settings(ServiceSettings):
    model_config = service_config("REPORTING_SVC_")

    # Drift tolerance for accounts no rebalance run has measured yet (a run's own tolerance,
    # from drift-detected, wins once there is one).
    default_tolerance: Decimal = Decimal("0.01")

    # Webhooks out (docs/webhooks.md). A failed delivery is tried again after
    # base * 2^(n-1) seconds (n: attempts so far), capped, each delay drawn within
    # +-jitter of it; after `webhook_max_attempts` it is `failed`.
    webhook_retry_base_s: float = 30.0
    webhook_retry_cap_s: float = 6 * 3600.0
    webhook_retry_jitter: float = 0.2
    webhook_max_attempts: int = 12
    webhook_timeout_s: float = 10.0  # one POST, connect to last byte
    webhook_concurrency: int = 16  # POSTs in flight per replica
    webhook_claim_batch: int = 32  # deliveries one claim takes
    webhook_poll_interval_s: float = 5.0  # besides the wake-up on new deliveries
    webhook_secret_grace_s: float = 24 * 3600.0  # a rotated secret keeps signing this long
    # Deliver to private, loopback and link-local addresses too (a local receiver in tests or
    # a demo); off in a deployment, where they would reach the platform's own network.
    webhook_allow_private_destinations: bool = False

    # Approvals on screen: the dashboard's proposal routes forward to account-svc (the one
    # truth of decisions) with the caller's token. Empty: not configured (503 naming it).
    account_svc_url: str = ""
    account_svc_timeout_s: float = 10.0  # one forwarded request, connect to last byte

    # Exceptions on screen: the dashboard's reconciliation breaks, file-set exceptions and
    # unknown securities forward to taxlot-svc (the one truth of them) with the caller's
    # token. Empty: not configured (503 naming it).
    taxlot_svc_url: str = ""
    taxlot_svc_timeout_s: float = 10.0  # one forwarded request, connect to last byte
