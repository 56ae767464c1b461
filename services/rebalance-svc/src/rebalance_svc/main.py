"""rebalance-svc: drift detection and rebalancing, from a read model fed by events."""

from pathlib import Path

from ballast_common.app import ServiceSpec, create_app

from rebalance_svc.api import router
from rebalance_svc.handlers import harvest_loop, scan_loop, subscriptions
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
    routers=[router],
    subscriptions=subscriptions(settings),
    background=[scan_loop, harvest_loop],
)

app = create_app(spec, settings)
