"""custodian-gateway: approved trades become custodian orders; executions become fills."""

from pathlib import Path

from ballast_common.app import ServiceSpec, create_app
from ballast_common.consumer import Subscription

from custodian_gateway.api import router
from custodian_gateway.handlers import on_trades_approved
from custodian_gateway.settings import Settings
from custodian_gateway.tables import metadata
from custodian_gateway.workers import execution_poller, order_sender

spec = ServiceSpec(
    name="custodian-gateway",
    schema="custodian_gateway",
    settings_type=Settings,
    metadata=metadata,
    migrations_dir=Path(__file__).parent / "migrations",
    description=(
        "Turns approved trades into custodian orders (persisted before sending, idempotent by "
        "client order id) and the custodian's executions into fills-received / order-rejected."
    ),
    routers=[router],
    subscriptions=[Subscription("trades-approved", on_trades_approved)],
    background=[order_sender, execution_poller],
)

app = create_app(spec)
