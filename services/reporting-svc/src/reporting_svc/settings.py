from decimal import Decimal

from ballast_common.settings import ServiceSettings, service_config


class Settings(ServiceSettings):
    model_config = service_config("REPORTING_SVC_")

    # Drift tolerance for accounts no rebalance run has measured yet (a run's own tolerance,
    # from drift-detected, wins once there is one).
    default_tolerance: Decimal = Decimal("0.01")
