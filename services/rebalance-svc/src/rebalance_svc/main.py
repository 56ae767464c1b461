"""rebalance-svc: drift detection and rebalancing, from a read model fed by events."""

from pathlib import Path

from ballast_common.app import ServiceSpec, create_app

from rebalance_svc.api import router
from rebalance_svc.cash_api import router as cash_router
from rebalance_svc.handlers import cash_sweep_loop, harvest_loop, scan_loop, subscriptions
from rebalance_svc.settings import Settings
from rebalance_svc.tables import metadata

settings = Settings()
spec = ServiceSpec(
    name="rebalance-svc",
    schema="rebalance",
    settings_type=Settings,
    metadata=metadata,
    migrations_dir=Path(__file__).parent / "migrations",
    description="Drift and rebalancing. Publishes drift-detected and trades-proposed.",
    routers=[router, cash_router],
    subscriptions=subscriptions(settings),
    background=[scan_loop, harvest_loop, cash_sweep_loop],
)

app = create_app(spec, settings)
