"""custodian-gateway: approved trades become block orders at the custodian; executions are
shared back among the trades as fills-received / order-rejected."""

from pathlib import Path

from ballast_common.app import ServiceSpec, create_app

from custodian_gateway.api import router
from custodian_gateway.handlers import subscriptions
from custodian_gateway.settings import Settings
from custodian_gateway.tables import metadata
from custodian_gateway.workers import Wakeups, background_loops

settings = Settings()
wakeups = Wakeups()
spec = ServiceSpec(
    name="custodian-gateway",
    schema="custodian_gateway",
    settings_type=Settings,
    metadata=metadata,
    migrations_dir=Path(__file__).parent / "migrations",
    description=(
        "Gathers approved trades into block orders (one per security and side per custodian, "
        "persisted before sending, idempotent by client order id) and shares each block's "
        "fills among its trades pro rata as fills-received / order-rejected."
    ),
    routers=[router],
    subscriptions=subscriptions(settings, wakeups),
    background=background_loops(wakeups),
)

app = create_app(spec, settings)
